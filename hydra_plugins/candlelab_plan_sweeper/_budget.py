"""How many jobs a launcher runs at once, and the thread count that keeps jobs x threads <= cores."""

import os

from omegaconf import DictConfig

from core.errors import UserError


def cores_available(cores: int | None) -> int:
    if cores is None:
        return os.cpu_count() or 1
    if not isinstance(cores, int) or cores < 1:
        raise UserError(f"cores must be a positive integer or null, got {cores!r}", "hydra.sweeper.cores")
    return cores


def launcher_parallelism(launcher: DictConfig, cores: int, jobs: int) -> int:
    """Jobs the configured launcher runs at once: joblib `n_jobs` (-1 = all cores, -2 = all but one, as joblib
    counts); submitit starts every job of a batch at once (local processes, or cluster jobs up to
    `array_parallelism`); 1 for the basic (in-process) launcher."""
    if "n_jobs" in launcher:
        n_jobs = launcher.n_jobs
        if n_jobs is None:
            return 1
        n_jobs = int(n_jobs)
        return max(1, cores + 1 + n_jobs if n_jobs < 0 else n_jobs)
    if "array_parallelism" in launcher or "timeout_min" in launcher:  # submitit (local or slurm)
        limit = launcher.get("array_parallelism")
        return max(1, min(jobs, int(limit)) if limit else jobs)
    return 1


def thread_budget(cores: int, parallel_jobs: int) -> int:
    return max(1, cores // max(1, parallel_jobs))


def visible_gpus() -> int:
    import torch  # only when a GPU stage runs: the sweeper itself needs no torch

    return torch.cuda.device_count()
