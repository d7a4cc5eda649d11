"""Experiment loggers (Lightning logger objects, used by nets during fit and by every family for final metrics)."""

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from core.errors import UserError
from core.runinfo import hydra_mode

if TYPE_CHECKING:
    from trainer.result import RunResult

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
        return WandbLogger(
            project=cfg.logger.project,
            name=run_id,
            save_dir=str(run_dir),
            offline=offline,
            group=cfg.logger.get("group") or sweep_group(),
            job_type=cfg.model.name,
            tags=[cfg.model.name, cfg.coin.name, cfg.target.type],
            config=OmegaConf.to_container(cfg, resolve=True),
        )
    raise UserError(f"unknown logger {name!r}; choose csv, wandb or none", "logger")


def sweep_group() -> str | None:
    """Jobs of one Hydra multirun share a W&B group: the sweep folder's name."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().sweep.dir).name if hydra_mode() == "MULTIRUN" else None


def _scalars(prefix: str, metrics: dict) -> dict:
    return {
        f"{prefix}/{k}": v
        for k, v in (metrics or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def log_run(logger, result: "RunResult", predictions, model_dir: Path, coin: str, max_rows: int = 10_000) -> None:
    """The run's outcome: test and trading metrics, the gate verdict; for W&B also the plots, a predictions
    table (the last test rows of every symbol, ``max_rows`` in all) and the model dir as a versioned artifact
    named after the family and the coin selection."""
    metrics = {**_scalars("test", result.test_metrics), **_scalars("trading", result.trading)}
    metrics["gates/passed"] = int(bool(result.gates["passed"]))
    logger.log_metrics(metrics)
    if type(logger).__name__ != "WandbLogger":
        return
    import wandb

    run = logger.experiment
    run.summary.update(
        {
            **metrics,
            "gates/name": result.gates["name"],
            "registry/stage": (result.registry or {}).get("stage"),
        }
    )
    run.log({f"plots/{name}": wandb.Image(path) for name, path in result.artifacts.plot_files.items()})
    per_symbol = max(1, max_rows // max(1, predictions["symbol"].nunique()))
    table = predictions.groupby("symbol", sort=False).tail(per_symbol).astype({"timestamp": str, "t1": str})
    run.log({"predictions": wandb.Table(dataframe=table)})
    artifact = wandb.Artifact(
        f"model-{result.model_info.family}-{coin}",
        type="model",
        metadata={
            "run_id": result.run.run_id,
            "config_hash": result.run.config_hash,
            "gates_passed": result.gates["passed"],
        },
    )
    artifact.add_dir(str(model_dir))
    run.log_artifact(artifact)


def close_logger(logger, status: str) -> None:
    if logger is None:
        return
    try:
        logger.finalize(status)
    finally:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish(exit_code=0 if status == "success" else 1)
