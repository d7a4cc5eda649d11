"""Config values a user can get wrong, checked before any work starts."""
from omegaconf import DictConfig

from data.errors import UserError


def _int_at_least(cfg: DictConfig, key: str, low: int) -> None:
    value = cfg
    for part in key.split("."):
        value = value.get(part) if isinstance(value, DictConfig) else None
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"{key} must be an integer >= {low}, got {value!r}", key)


def check_config(cfg: DictConfig) -> None:
    for key, low in (("target.horizon", 1), ("split.embargo", 0), ("data.rows", 2), ("model.window", 1),
                     ("model.hidden", 1), ("model.layers", 1), ("model.batch_size", 1), ("model.max_epochs", 1),
                     ("model.n_estimators", 1), ("callbacks.progress.every_n_batches", 1),
                     ("callbacks.cancel.check_every_n_batches", 1)):
        _int_at_least(cfg, key, low)
    if cfg.get("seed") is None or not isinstance(cfg.seed, int):
        raise UserError(f"seed must be an integer, got {cfg.get('seed')!r}", "seed")
    if cfg.model.get("input") not in ("tabular", "sequence"):
        raise UserError(f"model.input must be tabular or sequence, got {cfg.model.get('input')!r}", "model.input")
    if not cfg.model.get("_target_"):
        raise UserError("model config names no implementation (_target_)", f"conf/model/{cfg.model.get('name')}.yaml")
    dropout = cfg.model.get("dropout")
    if dropout is not None and not 0.0 <= float(dropout) < 1.0:
        raise UserError(f"model.dropout must lie in [0, 1), got {dropout}", "model.dropout")
    if cfg.target.type != "direction":
        raise UserError(f"unknown target type {cfg.target.type!r}; available: direction", "target.type")
