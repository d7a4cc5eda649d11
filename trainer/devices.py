"""device=auto|cpu|gpu -> Lightning accelerator settings (accelerator, devices, precision, strategy).

``precision: auto`` is bf16-mixed on a GPU that supports bfloat16, else 32-true. ``requested`` keeps what the
user asked for: tree families switch to their GPU modes only on an explicit ``device=gpu`` (under ``auto`` a
CPU-stage tree job stays on the CPU, where a plan's CPU stage runs them in parallel)."""
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
    precision = str(device.get("precision", "32-true"))
    if precision == "auto":
        precision = "bf16-mixed" if use_gpu and torch.cuda.is_bf16_supported() else "32-true"
    return OmegaConf.create({"name": "gpu" if use_gpu else "cpu", "accelerator": "gpu" if use_gpu else "cpu",
                             "devices": device.devices if use_gpu else 1, "precision": precision,
                             "strategy": str(device.get("strategy", "auto")) if use_gpu else "auto",
                             "data": str(device.get("data", "auto")) if use_gpu else "host",
                             "requested": name})


def tree_gpu(device: DictConfig | None) -> bool:
    """Whether a tree family should use its GPU mode: only when the user asked for device=gpu."""
    return device is not None and device.get("requested") == "gpu" and device.get("accelerator") == "gpu"
