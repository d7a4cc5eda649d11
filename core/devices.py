"""device=auto|cpu|gpu -> Lightning accelerator settings (accelerator, devices, precision, strategy).

``precision: auto`` is bf16-mixed on a GPU that supports bfloat16, else 32-true. ``requested`` keeps what the
user asked for: tree families switch to their GPU modes only on an explicit ``device=gpu`` (under ``auto`` a
CPU-stage tree job stays on the CPU, where a plan's CPU stage runs them in parallel).

``strategy: ddp`` trains one net data-parallel over ``devices`` GPUs (or that many CPU processes). Lightning
starts the extra ranks by running the same command again; those processes join every fit of the run and
write nothing (see ``is_worker``): the main process evaluates, saves and registers."""

import logging
import os

import torch
from omegaconf import DictConfig, OmegaConf

from core import runinfo
from core.errors import UserError

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
    strategy = str(device.get("strategy", "auto"))
    devices = device.devices if use_gpu else 1
    if strategy == "ddp":
        devices = _ddp_devices(device.devices, use_gpu)
    elif use_gpu and _count(devices) > 1:
        raise UserError(
            f"device.devices={_show(devices)} needs device.strategy=ddp to train on several GPUs", "device.devices"
        )
    return OmegaConf.create(
        {
            "name": "gpu" if use_gpu else "cpu",
            "accelerator": "gpu" if use_gpu else "cpu",
            "devices": devices,
            "precision": precision,
            "strategy": strategy if use_gpu or strategy == "ddp" else "auto",
            "processes": _count(devices) if strategy == "ddp" else 1,
            "gpu": _single_gpu(devices) if use_gpu else None,
            "data": str(device.get("data", "auto")) if use_gpu else "host",
            "requested": name,
        }
    )


def _single_gpu(devices) -> str:
    """The torch device of a one-GPU fit (a plan pins job i to ``[i]``), and what rank 0 of a data-parallel
    fit and the tree families use: the first GPU a list names, else GPU 0."""
    return f"cuda:{int(devices[0])}" if OmegaConf.is_list(devices) else "cuda:0"


def _count(devices) -> int:
    return len(devices) if OmegaConf.is_list(devices) or isinstance(devices, list) else int(devices)


def _show(devices) -> str:
    return str(OmegaConf.to_container(devices) if OmegaConf.is_list(devices) else devices)


def _ddp_devices(devices, use_gpu: bool):
    """What Lightning gets as ``devices`` for a data-parallel fit: GPU count or ids; on the CPU a process count."""
    if not use_gpu and OmegaConf.is_list(devices):
        raise UserError(
            f"device.devices={_show(devices)} names GPUs, but this fit runs on the CPU: give the number of processes",
            "device.devices",
        )
    if _count(devices) > 1 and runinfo.hydra_mode() != "RUN":
        raise UserError(
            "device.strategy=ddp over several devices starts its extra processes by running the "
            "command again: only a single `python train.py ...` run can (not a -m sweep, not a "
            "call of trainer.train; a plan's GPU stage already puts one job on each GPU)",
            "device.strategy",
        )
    if OmegaConf.is_list(devices) and len(set(devices)) != len(devices):
        raise UserError(f"device.devices={_show(devices)} names a GPU twice", "device.devices")
    if use_gpu and not OmegaConf.is_list(devices) and int(devices) > torch.cuda.device_count():
        raise UserError(
            f"device.devices={devices} but {torch.cuda.device_count()} GPU(s) are visible", "device.devices"
        )
    return devices


def is_worker(device: DictConfig) -> bool:
    """Whether this process is an extra rank of a data-parallel fit (Lightning sets LOCAL_RANK/NODE_RANK for
    the processes it starts). Such a process joins the fits and leaves evaluation and every file to rank 0."""
    if str(device.get("strategy", "auto")) != "ddp":
        return False
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


_workers: list = []  # the processes Lightning started for data-parallel fits in this process


def remember_workers(processes) -> None:
    _workers.extend(p for p in processes if p not in _workers)


def stop_workers() -> None:
    """End the extra ranks after rank 0 failed: they would wait in their next fit for a rank 0 that never comes."""
    while _workers:
        proc = _workers.pop()
        if proc.poll() is None:
            proc.kill()


def tree_gpu(device: DictConfig | None) -> str | None:
    """The GPU (``cuda:<i>``) a tree family trains on: only when the user asked for device=gpu, else None."""
    if device is None or device.get("requested") != "gpu" or device.get("accelerator") != "gpu":
        return None
    return device.get("gpu") or "cuda:0"
