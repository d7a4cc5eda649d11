"""Config values a user can get wrong, checked before any work starts."""

import re

from omegaconf import DictConfig, OmegaConf

from core.errors import UserError
from data.symbols import check_coin, check_name, check_symbols

# key -> (type, low, high, bounds): bounds "[]" inclusive both ends, "[)" high exclusive, "()" both
# exclusive, "(]" low exclusive. None = unbounded. A key absent from the config is not checked. A family's
# own keys (model.hidden, ...) are checked by the ranges its config declares (check_family_keys).
_NUMBERS = {
    "seed": (int, 0, None, "[]"),
    "target.horizon": (int, 1, None, "[]"),
    "split.train": (float, 0.0, 1.0, "()"),
    "split.val": (float, 0.0, 1.0, "()"),
    "split.embargo": (int, 0, None, "[]"),
    "split.folds": (int, 1, None, "[]"),
    "split.test": (float, 0.0, 1.0, "()"),
    "data.rows": (int, 2, None, "[]"),
    "data.max_bytes": (int, 1, None, "[]"),
    "data.signal_strength": (float, 0.0, None, "[]"),
    "data.signal_half_life": (float, 0.0, None, "(]"),
    "data.volatility": (float, 0.0, None, "(]"),
    "data.correlation": (float, 0.0, 1.0, "[)"),
    "data.signal_correlation": (float, 0.0, 1.0, "[]"),
    "trainer.num_threads": (int, 1, None, "[]"),
    "callbacks.progress.every_n_batches": (int, 1, None, "[]"),
    "callbacks.cancel.check_every_n_batches": (int, 1, None, "[]"),
    "eval.ece_bins": (int, 2, None, "[]"),
    "eval.significance.alpha": (float, 0.0, 1.0, "()"),
    "eval.significance.resamples": (int, 10, None, "[]"),
    "eval.significance.level": (float, 0.0, 1.0, "()"),
    "eval.significance.block": (int, 1, None, "[]"),
    "eval.trading.threshold": (float, 0.5, 1.0, "[]"),
    "eval.trading.fee_bps": (float, 0.0, None, "[]"),
    "eval.trading.slippage_bps": (float, 0.0, None, "[]"),
    "eval.trading.spread_bps": (float, 0.0, None, "[]"),
    "eval.trading.spread_window": (int, 1, None, "[]"),
    "eval.trading.periods_per_year": (float, 0.0, None, "(]"),
    "eval.leakage.control_alpha": (float, 0.0, 1.0, "()"),
    "eval.leakage.control_max_rank_corr": (float, 0.0, 1.0, "(]"),
    "eval.leakage.control_max_win_edge": (float, 0.0, 1.0, "(]"),
    "eval.leakage.too_good.oracle_margin": (float, 0.0, None, "[]"),
    "eval.leakage.too_good.max_win_rate": (float, 0.0, 1.0, "(]"),
    "eval.leakage.too_good.max_sharpe": (float, 0.0, None, "(]"),
    "eval.gates.min_accuracy": (float, 0.0, 1.0, "[]"),
    "eval.gates.max_ece": (float, 0.0, 1.0, "[]"),
    "eval.gates.min_trades": (int, 0, None, "[]"),
    "registry.keep_candidates": (int, 1, None, "[]"),
    "target.dead_zone": (float, 0.0, None, "[]"),
    "target.vol_window": (int, 2, None, "[]"),
    "target.bins": (int, 2, None, "[]"),
    "target.lookback": (int, 10, None, "[]"),
    "target.take_profit": (float, 0.0, None, "(]"),
    "target.stop_loss": (float, 0.0, None, "(]"),
}
_CHOICES = {
    "data.provider": ("synthetic", "files", "ccxt", "yfinance"),
    "split.type": ("holdout", "walk_forward", "purged_kfold"),
    "split.mode": ("expanding", "sliding"),
    "data.outliers": ("warn", "drop", "error", "off"),
    "target.type": ("direction", "direction3", "forward_return", "quantile", "triple_barrier"),
    "target.class_weight": ("balanced",),
    "model.input": ("tabular", "sequence"),
    "device.precision": ("auto", "32-true", "32", "16-mixed", "bf16-mixed", "64-true"),
    "device.strategy": ("auto", "ddp"),
    "device.data": ("auto", "gpu", "host"),
}


def _get(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return None
        node = node[part]
    return node


def check_number(key: str, value, kind, low, high, bounds: str) -> None:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not (is_int or (kind is float and isinstance(value, float))):
        raise UserError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}", key)
    too_low = low is not None and (value < low if bounds[0] == "[" else value <= low)
    too_high = high is not None and (value > high if bounds[1] == "]" else value >= high)
    if too_low or too_high:
        interval = f"{bounds[0]}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{bounds[1]}"
        raise UserError(f"{key} must lie in {interval}, got {value!r}", key)


def check_numbers(cfg: DictConfig, table: dict) -> None:
    """Every key of ``table`` (key -> (type, low, high, bounds)) present in ``cfg`` lies in its range."""
    for key, (kind, low, high, bounds) in table.items():
        value = _get(cfg, key)
        if value is not None:
            check_number(key, value, kind, low, high, bounds)


_RANGE = re.compile(
    r"(?P<kind>int|float)\s*(?:(?P<op>>=|>|<=|<)\s*(?P<bound>\S+)"
    r"|in\s*(?P<open>[\[(])\s*(?P<low>[^,\s]+)\s*,\s*(?P<high>[^\]\)\s]+)\s*(?P<close>[\])]))\Z"
)


def parse_range(text: str, where: str) -> tuple:
    """A family's key check as written in its config (``int >= 1``, ``float > 0``, ``float in [0, 1)``) ->
    (type, low, high, bounds) as ``check_number`` takes it."""
    m = _RANGE.fullmatch(str(text).strip())
    if m is None:
        raise UserError(f"key check {text!r} is not like 'int >= 1', 'float > 0' or 'float in [0, 1)'", where)
    kind = int if m["kind"] == "int" else float

    def number(value: str):
        try:
            return None if value in ("inf", "-inf") else kind(value)
        except ValueError:
            raise UserError(f"key check {text!r}: {value!r} is not a number", where) from None

    if m["op"] is None:
        return kind, number(m["low"]), number(m["high"]), m["open"] + m["close"]
    bound = number(m["bound"])
    return {
        ">=": (kind, bound, None, "[]"),
        ">": (kind, bound, None, "(]"),
        "<=": (kind, None, bound, "[]"),
        "<": (kind, None, bound, "[)"),
    }[m["op"]]


def check_family_keys(model: DictConfig) -> None:
    """The value ranges a family declares next to its keys (``checks:`` in conf/model/<family>.yaml)."""
    where = f"conf/model/{model.get('name')}.yaml"
    for key, text in (model.get("checks") or {}).items():
        kind, low, high, bounds = parse_range(text, f"{where}: checks.{key}")
        value = _get(model, str(key))
        if value is not None:
            check_number(f"model.{key}", value, kind, low, high, bounds)


def _check_devices(devices) -> None:
    """``device.devices``: a count (GPUs, or CPU processes under strategy=ddp) or a list of GPU ids."""
    if devices is None:
        return
    if OmegaConf.is_list(devices):
        ids = list(devices)
        if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise UserError(f"device.devices must be a count or a list of GPU ids, got {list(ids)!r}", "device.devices")
        return
    check_number("device.devices", devices, int, 1, None, "[]")


def check_config(cfg: DictConfig) -> None:
    check_numbers(cfg, _NUMBERS)
    check_family_keys(cfg.model)
    for key, allowed in _CHOICES.items():
        value = _get(cfg, key)
        if value is not None and str(value) not in allowed:
            raise UserError(f"{key} must be one of {', '.join(allowed)}, got {value!r}", key)
    _check_devices(_get(cfg, "device.devices"))
    if cfg.split.type == "holdout" and cfg.split.train + cfg.split.val >= 1.0:
        raise UserError(
            f"split.train + split.val must be below 1 to leave a test segment, got {cfg.split.train} + {cfg.split.val}",
            "split.train/split.val",
        )
    if not cfg.model.get("_target_"):
        raise UserError("model config names no implementation (_target_)", f"conf/model/{cfg.model.get('name')}.yaml")
    from data.labels import TASKS

    supported = list(cfg.model.get("tasks") or [])
    kind = TASKS.get(cfg.target.type)
    if supported and kind not in supported:
        raise UserError(
            f"model {cfg.model.name} supports {', '.join(supported)} targets, not {kind} (target={cfg.target.type})",
            "target",
        )
    from trainer.gates import required_symbols

    if cfg.get("eval") is not None and cfg.eval.get("gates") is not None:
        required_symbols(cfg.eval.gates, 1)  # 'all' or a positive number
    if not list(cfg.coin.get("symbols") or []):
        raise UserError("no symbols selected", "coin.symbols")
    check_coin(cfg.coin)
    if cfg.data.get("symbol_from_file") is not None and not isinstance(cfg.data.symbol_from_file, bool):
        raise UserError(
            f"data.symbol_from_file must be true or false, got {cfg.data.symbol_from_file!r}", "data.symbol_from_file"
        )
    if cfg.data.provider == "synthetic":
        import pandas as pd  # here, not at import: `train.py --help` loads this module and answers in < 1 s

        try:
            pd.Timestamp(str(cfg.data.start))
        except ValueError:
            raise UserError(f"data.start {cfg.data.start!r} is not a date", "data.start") from None
    if cfg.data.provider == "files":
        path = str(cfg.data.path)
        try:
            path.format(symbol="X")
        except (KeyError, IndexError, ValueError):
            raise UserError("data.path may hold no placeholder other than {symbol}", "data.path") from None


def check_name_overrides(argv: list[str]) -> None:
    """``coin.name=`` and ``coin.symbols=`` on the command line are names (see data.symbols), refused before
    Hydra makes a run folder from them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args = [
        a for a in argv if not a.startswith("-") and a.lstrip("+~").split("=", 1)[0] in ("coin.name", "coin.symbols")
    ]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except HydraException:
        return  # Hydra reports its own parse errors
    for o in overrides:
        if o.is_delete():
            continue
        try:
            values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
        except HydraException:
            continue  # an interval for a search: not names
        for value in values:
            if isinstance(value, list):
                check_symbols(value, o.key_or_group)
            else:
                check_name(value, o.key_or_group)
