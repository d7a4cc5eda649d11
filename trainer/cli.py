"""What train.py needs around the pipeline: a run summary, and mapping user mistakes to one line + exit 2."""
import logging
import math
import os
import sys
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from data.errors import UserError
from trainer.pipeline import train

log = logging.getLogger("candlelab")

EXIT_USER_ERROR = 2
EXIT_CANCELLED = 3


class RunCancelled(Exception):
    """A single run that stopped on request (token, signal, stop file): exit code 3."""

    def __init__(self, result: dict):
        super().__init__(result.get("reason"))
        self.result = result


def run(cfg: DictConfig) -> float:
    """Train, log where the run folder is and how the model did; return the metric a sweeper optimises."""
    result = train(cfg)
    run_dir = result["run"]["run_dir"]
    if result["status"] == "cancelled":
        log.warning("run cancelled: %s (%s)", result.get("reason"), run_dir)
        if not _in_multirun():
            raise RunCancelled(result)
        return math.nan
    m, b, d = result["test_metrics"], result["baselines"], result["data_summary"]
    oracle = d["oracle_accuracy"]
    log.info("run folder: %s", run_dir)
    log.info("test (%d rows): %s", m["n"], " | ".join(f"{k} {_fmt(v)}" for k, v in m.items() if k != "n"))
    if "majority_class" in b:
        log.info("baselines: majority %.4f | persistence %.4f | oracle %s", b["majority_class"]["accuracy"],
                 b["persistence"]["accuracy"], "n/a" if oracle is None else f"{oracle:.4f}")
    else:
        log.info("baselines: zero-forecast mae %.6f | persistence ic %s | oracle direction %s", b["zero"]["mae"],
                 _fmt(b["persistence"]["ic"]), "n/a" if oracle is None else f"{oracle:.4f}")
    key = cfg.eval.optimize
    if key == "auto":
        key = "ic" if d["task"]["kind"] == "regression" else "accuracy"
    value = m.get(key)
    return float(value) if value is not None else math.nan


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _check_group_choices(argv: list[str], conf_dir: Path) -> None:
    """Refuse `group=option` overrides naming an option that has no config file, before Hydra starts."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        group_dir = conf_dir / key
        if "." in key or key.startswith("hydra") or not group_dir.is_dir() or "(" in value:
            continue
        available = sorted(p.stem for p in group_dir.glob("*.yaml"))
        for option in (v.strip() for v in value.split(",")):
            if option and option not in available:
                raise UserError(f"unknown {key} {option!r}; available: {', '.join(available)}", f"{key}={option}")


def guarded(main: Callable[[], object], conf_dir: Path) -> int:
    """Run a Hydra main; user-caused errors end as `error: <what> (<where>)` with exit code 2."""
    show_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"   # let exceptions reach us instead of Hydra's own exit(1)
    try:
        _check_group_choices(sys.argv[1:], conf_dir)
        main()
        return 0
    except UserError as exc:
        if show_traceback:
            raise
        sys.stderr.write(exc.line() + "\n")   # the CLI's contract: one last line, exit code 2
        return EXIT_USER_ERROR
    except RunCancelled as exc:
        sys.stderr.write(f"cancelled: {exc.result.get('reason')} ({exc.result['run']['run_dir']})\n")
        return EXIT_CANCELLED
    except Exception as exc:
        from hydra.errors import HydraException
        if show_traceback or not isinstance(exc, HydraException):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.stderr.write(f"error: {first} (command line)\n")
        return EXIT_USER_ERROR
