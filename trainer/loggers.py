"""Experiment loggers (Lightning logger objects, used by nets during fit and by every family for final metrics)."""
import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from data.errors import UserError

log = logging.getLogger(__name__)


def build_logger(cfg: DictConfig, run_dir: Path, run_id: str):
    name = cfg.logger.name
    if name == "none":
        return None
    if name == "csv":
        from pytorch_lightning.loggers import CSVLogger
        return CSVLogger(save_dir=str(run_dir), name="logs", version="")
    if name == "wandb":
        from pytorch_lightning.loggers import WandbLogger
        os.environ.setdefault("WANDB_SILENT", "true")
        offline = cfg.logger.mode == "offline"
        return WandbLogger(project=cfg.logger.project, name=run_id, save_dir=str(run_dir), offline=offline,
                           config=OmegaConf.to_container(cfg, resolve=True))
    raise UserError(f"unknown logger {name!r}; choose csv, wandb or none", "logger")


def close_logger(logger, status: str) -> None:
    if logger is None:
        return
    try:
        logger.finalize(status)
    finally:
        if type(logger).__name__ == "WandbLogger":
            import wandb
            wandb.finish(exit_code=0 if status == "success" else 1)
