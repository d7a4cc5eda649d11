"""device=auto|cpu|gpu -> Lightning accelerator settings."""
import logging

import torch
from omegaconf import DictConfig, OmegaConf

from data.errors import UserError

log = logging.getLogger(__name__)


def resolve_device(device: DictConfig, family_stage: str) -> DictConfig:
    has_gpu = torch.cuda.is_available()
    name = device.name
    if name == "gpu" and not has_gpu:
        raise UserError("device=gpu but no CUDA GPU is visible to torch", "device")
    if name not in ("auto", "cpu", "gpu"):
        raise UserError(f"unknown device {name!r}; choose auto, cpu or gpu", "device")
    use_gpu = name == "gpu" or (name == "auto" and has_gpu)
    if name == "auto" and not has_gpu and family_stage == "gpu":
        log.warning("device=auto: no GPU visible, training this GPU-stage family on CPU")
    return OmegaConf.create({"name": "gpu" if use_gpu else "cpu", "accelerator": "gpu" if use_gpu else "cpu",
                             "devices": device.devices if use_gpu else 1, "precision": device.precision})
