"""What train.py needs around the pipeline: a run summary, and mapping user mistakes to one line + exit 2."""

import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from omegaconf import DictConfig

from core.errors import PlanIncomplete, UserError
from core.runinfo import hydra_mode
from trainer.checks import check_name_overrides
from trainer.help import list_groups_from_files

if TYPE_CHECKING:
    from trainer.result import RunResult

log = logging.getLogger("candlelab")

EXIT_USER_ERROR = 2
EXIT_CANCELLED = 3
EXIT_PLAN_INCOMPLETE = 4


def fmt(value) -> str:
    """The run report's number format; imported when a run reports (the report module loads matplotlib)."""
    from trainer.report import fmt as report_fmt

    return report_fmt(value)


class RunCancelled(Exception):
    """A single run that stopped on request (token, signal, stop file): exit code 3."""

    def __init__(self, result: "RunResult"):
        super().__init__(result.reason)
        self.result = result


# A cancelled single run returns normally to Hydra (an exception would make Hydra print "Error executing
# job"): ``guarded`` reads it here once the job is over.
_cancelled: list["RunResult"] = []


# Likewise a user error of a single run: returned to Hydra (which would print "Error executing job" above
# the one error line) and raised again by ``guarded``.
_refused: list[UserError] = []


def run(cfg: DictConfig) -> float:
    """Train, log where the run folder is and how the model did; return the metric a sweeper optimises."""
    try:
        return _train_and_report(cfg)
    except UserError as exc:
        if hydra_mode() == "MULTIRUN" or os.environ.get("CANDLELAB_TRACEBACK") == "1":
            raise
        _refused.append(exc)
        return math.nan


def _train_and_report(cfg: DictConfig) -> float:
    _refuse_bad_config(cfg)  # before torch and Lightning load: a config mistake answers in well under a second
    from trainer.pipeline import train  # torch and Lightning load only when a run starts, not for --help

    result = train(cfg)
    if result.status == "worker":  # an extra data-parallel rank: rank 0 reports the run
        return math.nan
    run_dir = result.run.run_dir
    if result.status == "cancelled":
        log.warning("run cancelled: %s (%s)", result.reason, run_dir)
        if hydra_mode() != "MULTIRUN":
            _cancelled.append(result)
        return math.nan
    m, b, d = result.test_metrics, result.baselines, result.data_summary
    oracle = d.oracle_accuracy
    log.info("run folder: %s", run_dir)
    log.info(
        "test (%d rows): %s",
        m["n"],
        " | ".join(f"{k} {fmt(v)}" for k, v in m.items() if k != "n" and not isinstance(v, (list, dict))),
    )
    if "majority_class" in b:
        log.info(
            "baselines: majority %.4f | persistence %.4f | oracle %s",
            b["majority_class"]["accuracy"],
            b["persistence"]["accuracy"],
            "n/a" if oracle is None else f"{oracle:.4f}",
        )
    else:
        log.info(
            "baselines: zero-forecast mae %.6f | persistence ic %s | oracle direction %s",
            b["zero"]["mae"],
            fmt(b["persistence"]["ic"]),
            "n/a" if oracle is None else f"{oracle:.4f}",
        )
    _log_verdict(result)
    key = cfg.eval.optimize
    if key == "auto":
        key = "ic" if d.task["kind"] == "regression" else "accuracy"
    value = objective(result, key)
    log.info("objective %s: %s", key, fmt(value))
    return value


def _refuse_bad_config(cfg: DictConfig) -> None:
    """The pipeline's own config checks, run first; a refused run folder still gets its failed result.json."""
    from trainer.checks import check_config

    try:
        check_config(cfg)
    except UserError as exc:
        from hydra.core.hydra_config import HydraConfig

        from core.runinfo import new_run_id
        from trainer.result import RunInfo, RunResult

        if HydraConfig.initialized() and os.environ.get("LOCAL_RANK", "0") == "0":  # rank 0 writes files
            run_dir = Path(HydraConfig.get().runtime.output_dir)
            run = RunInfo.start(cfg, new_run_id(), run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            RunResult.ended(run, "failed", exc.line()).write(run_dir)
        raise


def objective(result: "RunResult", key: str) -> float:
    """The number a sweeper optimises: a validation metric by path (`val/loss`, `val/acc`), averaged over the
    folds, or a test metric by name (`accuracy`). Searches rank trials on validation: picking on test leaks."""
    if key.startswith("val/"):
        values = [f["training_metrics"].get(key) for f in result.data_summary.folds]
        values = [float(v) for v in values if isinstance(v, (int, float))]
        if not values:
            log.warning("eval.optimize %s: the %s fit reports no such validation metric", key, result.model_info.family)
            return math.nan
        return sum(values) / len(values)
    value = result.test_metrics.get(key)
    return float(value) if value is not None else math.nan


def _log_verdict(result: "RunResult") -> None:
    overall = result.evaluation["overall"]
    sig = overall["significance"]
    log.info(
        "%s %.4f vs best baseline %s %.4f: p=%s, CI %s",
        result.evaluation["hit_metric"],
        overall["hit_rate"],
        overall["best_baseline"]["name"],
        overall["best_baseline"]["value"],
        "n/a" if sig.get("p_value") is None else f"{sig['p_value']:.2g}",
        [round(x, 4) for x in sig.get("ci") or []],
    )
    t = result.trading
    if t:
        log.info(
            "trading: %d trades | win rate %s | profit factor %s | return %s | sharpe %s | max drawdown %s",
            t["n_trades"],
            fmt(t["win_rate"]),
            fmt(t["profit_factor"]),
            fmt(t["total_return"]),
            fmt(t["sharpe"]),
            fmt(t["max_drawdown"]),
        )
    if result.verdict:
        from trainer.report import economic_lines, policy_line

        log.info("policy: %s", policy_line(result.policy))
        for line in economic_lines(result)[:-1]:
            log.info("%s", line)
    leak = result.leakage
    log.info(
        "leakage checks: %s",
        " | ".join(
            f"{k} {'not run' if leak[k] is None else ('pass' if leak[k]['passed'] else 'FAIL')}"
            for k in ("split", "shuffled_control", "too_good")
        ),
    )
    gates = result.gates
    log.info(
        "gates %s: %s%s",
        gates["name"],
        "PASSED" if gates["passed"] else "failed",
        "" if gates["passed"] else " (" + "; ".join(gates["reasons"]) + ")",
    )
    reg = result.registry
    if reg:
        log.info("registry: %s v%s %s", reg["model_id"], reg["version"], reg["stage"])
    log.info("report: %s", result.artifacts.report)
    if result.verdict:  # the last line: predictive or not, tradeable or not, and what failed by how much
        log.info("%s", economic_lines(result)[-1])


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
    """Run a Hydra main; user-caused errors end as `error: <what> (<where>)` with exit code 2, a cancelled run
    with exit code 3, a training plan with jobs that did not complete with exit code 4."""
    show_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    if show_traceback:  # the user asked for tracebacks: a user error is raised where it happened
        os.environ["CANDLELAB_TRACEBACK"] = "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let exceptions reach us instead of Hydra's own exit(1)
    try:
        _check_group_choices(sys.argv[1:], conf_dir)
        list_groups_from_files(sys.argv[1:], conf_dir)  # --help in < 1 s
        check_name_overrides(sys.argv[1:])  # Hydra names the run folder after coin.name
        main()
        if _refused:
            raise _refused.pop()
        if _cancelled:
            raise RunCancelled(_cancelled.pop())
        return 0
    except UserError as exc:
        if show_traceback:
            raise
        sys.stderr.write(exc.line() + "\n")  # the CLI's contract: one last line, exit code 2
        return EXIT_USER_ERROR
    except RunCancelled as exc:
        sys.stderr.write(f"cancelled: {exc.result.reason} ({exc.result.run.run_dir})\n")
        return EXIT_CANCELLED
    except PlanIncomplete as exc:
        sys.stderr.write(exc.line() + "\n")  # the summary table is above; plan_summary.json has every row
        return EXIT_PLAN_INCOMPLETE
    except Exception as exc:
        from hydra.errors import HydraException

        if show_traceback or not isinstance(exc, HydraException):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.stderr.write(f"error: {first} (command line)\n")
        return EXIT_USER_ERROR
