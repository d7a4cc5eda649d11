"""One run from config to result: ``train`` places the run (folder, identity, stop file, logger, progress) and
runs its stages (trainer.stages: prepare -> fit_folds -> evaluate), then its records (trainer.records: model
folder, predictions, trades, plots, registry row, report, logger), which fill the ``RunResult`` whose
``to_json()`` is result.json. A run that is cancelled or fails still ends with its result.json. The CLI is a
thin layer over ``train``."""

import logging
from pathlib import Path
from typing import Callable

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from callbacks.cancel import CancellationToken, Cancelled, ImmediateStop
from callbacks.progress import ProgressEvent, ProgressReporter
from callbacks.sinks import build_sinks
from core.devices import is_worker, stop_workers
from core.errors import UserError
from core.runinfo import config_hash, new_run_id, write_json_atomic
from data.providers import named_symbols
from data.symbols import check_name, selection_name
from trainer import records, stages
from trainer.loggers import build_logger, close_logger
from trainer.metrics import headline
from trainer.result import RunInfo, RunResult
from trainer.stages import MIN_ROWS, Evaluation, Prepared, RunContext, Training

__all__ = ["MIN_ROWS", "create_run_dir", "registry_symbol", "resolve_run_dir", "run_name", "train"]

log = logging.getLogger("candlelab")


def resolve_run_dir(cfg: DictConfig, run_id: str) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    if cfg.paths.get("run_dir"):
        return Path(cfg.paths.run_dir)
    return Path(cfg.paths.output_dir) / "runs" / f"{run_id}_{cfg.model.name}_{run_name(cfg)}"


def run_name(cfg: DictConfig, symbols: list[str] | None = None) -> str:
    """What the symbols trained are called in folder and slot names (one symbol: itself; several: their coin
    group's name or BTC+ETH); refused unless every name is safe as a folder name."""
    check_name(cfg.coin.get("name"), "coin.name")
    return selection_name(cfg.coin.get("name"), symbols or named_symbols(cfg.data, list(cfg.coin.symbols)))


def create_run_dir(cfg: DictConfig) -> tuple[str, Path]:
    """A fresh run id and its folder. A folder placed by Hydra or ``paths.run_dir`` is used as given; a default
    one is created exclusively, so two runs never share one (on a collision the run takes a new id)."""
    while True:
        run_id = new_run_id()
        run_dir = resolve_run_dir(cfg, run_id)
        if HydraConfig.initialized() or cfg.paths.get("run_dir"):
            run_dir.mkdir(parents=True, exist_ok=True)
            return run_id, run_dir
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            run_dir.mkdir()
            return run_id, run_dir
        except FileExistsError:
            continue


def train(
    cfg: DictConfig,
    progress_callback: Callable[[ProgressEvent], None] | None = None,
    cancellation_token: CancellationToken | None = None,
) -> RunResult:
    """Run the whole pipeline for one family on the configured symbols; returns the ``RunResult`` whose
    ``to_json()`` is the run's result.json.

    ``progress_callback`` receives every ProgressEvent. ``cancellation_token`` (optional) stops the run
    cooperatively; SIGINT/SIGTERM and the stop file (``<run_dir>/STOP`` by default) are always honoured.
    """
    if is_worker(cfg.device):
        return _worker(cfg, resolve_run_dir(cfg, new_run_id()))
    run_id, run_dir = create_run_dir(cfg)
    token = _token(cfg, run_dir, cancellation_token)
    run = RunInfo.start(cfg, run_id, run_dir)
    write_json_atomic(run_dir / "run.json", run.to_json())
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    (run_dir / "config.yaml").write_text(config_yaml)
    logger = reporter = None
    try:
        with token.handle_signals():
            logger = build_logger(cfg, run_dir, run_id)
            reporter = ProgressReporter(build_sinks(run_dir, logger, progress_callback))
            ctx = RunContext(
                run_dir=run_dir, reporter=reporter, token=token, config_hash=run.config_hash, logger=logger
            )
            result = _run(cfg, ctx, run, config_yaml)
    except (Cancelled, ImmediateStop) as exc:
        result = RunResult.ended(run, "cancelled", token.reason or str(exc))
        result.training_metrics = {"cancelled_in_phase": reporter.phase if reporter else None}
        result.write(run_dir)
        _finish(reporter, logger, "cancelled", token.reason)
        return result
    except BaseException as exc:
        stop_workers()
        what = exc.line() if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        RunResult.ended(run, "failed", what).write(run_dir)
        _finish(reporter, logger, "failed", what)
        raise
    _finish(reporter, logger, "success" if result.status == "completed" else result.status, None)
    return result


def _run(cfg: DictConfig, ctx: RunContext, run: RunInfo, config_yaml: str) -> RunResult:
    prepared = stages.prepare(cfg, ctx.reporter, ctx.token)
    training = stages.fit_folds(prepared, ctx)
    if training.cancelled:
        reason = ctx.token.reason or "cancelled"
        return records.cancelled_fit(
            prepared, training.last, run, reason=reason, config_yaml=config_yaml, run_dir=ctx.run_dir
        )
    evaluation = stages.evaluate(prepared, training, ctx)
    ctx.reporter.emit("save")
    return _record(prepared, training, evaluation, ctx, run=run, config_yaml=config_yaml)


def _record(
    prepared: Prepared, training: Training, evaluation: Evaluation, ctx: RunContext, *, run: RunInfo, config_yaml: str
) -> RunResult:
    """Every artifact of a completed run, each filling its part of the result; result.json last."""
    cfg, run_dir = prepared.cfg, ctx.run_dir
    result = records.outcome(prepared, training, evaluation, run)
    records.model_folder(result, prepared, training, config_yaml=config_yaml, run_dir=run_dir)
    predictions = records.predictions(result, prepared, evaluation, run_dir)
    records.trades(result, evaluation, run_dir)
    records.plots(result, prepared, training, evaluation, run_dir)
    records.checkpoints(result, cfg, run_dir)
    result.run = run.finished()
    if cfg.registry.enabled:
        result.write(run_dir)  # a kill while registering leaves the run's result
        ctx.reporter.emit("register")
        records.registry(result, prepared, registry_symbol(cfg, result.data_summary.symbols))
    metric = headline(prepared.task)
    ctx.reporter.emit("done", metrics={metric: result.test_metrics[metric], "gates": result.gates["passed"]})
    result.run.phase_seconds = dict(ctx.reporter.phase_seconds)
    records.report(result, run_dir)
    result.write(run_dir)
    records.logger_outcome(result, ctx.logger, predictions, cfg)
    return result


def _token(cfg: DictConfig, run_dir: Path, given: CancellationToken | None) -> CancellationToken:
    """The run's cancellation token (the caller's, or a fresh one) with its stop file; a stop file an earlier
    run left in this folder is removed."""
    token = given or CancellationToken()
    if token.stop_file is None:
        token.stop_file = _stop_file(cfg, run_dir)
        if token.stop_file.exists() and token.stop_file.parent == run_dir:
            log.warning("removing a stale stop file from an earlier run: %s", token.stop_file)
            token.stop_file.unlink()
    return token


def _stop_file(cfg: DictConfig, run_dir: Path) -> Path:
    return Path(cfg.callbacks.cancel.get("stop_file") or run_dir / "STOP")


class _WorkerToken(CancellationToken):
    """An extra rank acts on a cancel only inside a fit, where all ranks decide together: leaving before its
    next fit would leave rank 0 waiting there for it."""

    def raise_if_cancelled(self) -> None:
        pass


def _worker(cfg: DictConfig, run_dir: Path) -> RunResult:
    """An extra rank of a data-parallel fit (``device.strategy=ddp``): it prepares the same data and joins
    every fit of the run, and writes nothing; rank 0 logs, evaluates, saves and registers. It ends with
    status ``worker`` (exit code 0) even when the fits were cancelled: rank 0 reports the cancellation."""
    run = RunInfo(config_hash=config_hash(cfg), run_dir=str(run_dir))
    token = _WorkerToken(stop_file=_stop_file(cfg, run_dir))
    ctx = RunContext(run_dir=run_dir, reporter=ProgressReporter([]), token=token, config_hash=run.config_hash)
    try:
        with token.handle_signals():
            prepared = stages.prepare(cfg, ctx.reporter, token)
            for fitted in stages.fit_each_fold(prepared, ctx):
                pass
            if cfg.eval.leakage.shuffled_control and not fitted.report.cancelled:
                stages.fit_control(prepared, fitted, ctx)  # rank 0 evaluates it and removes its folder
    except (Cancelled, ImmediateStop):
        pass
    return RunResult(status="worker", run=run)


def _finish(reporter: ProgressReporter | None, logger, status: str, reason: str | None) -> None:
    if reporter is not None:
        if status == "cancelled":
            reporter.emit("cancelled", metrics={"reason": reason})
        reporter.close()
    close_logger(logger, status)


def registry_symbol(cfg: DictConfig, symbols: list[str] | None = None) -> str:
    """The symbol part of a registry slot: the symbols trained (``symbols``, else those the config selects),
    marked when the candles are synthetic so a model of generated data can never take the slot a real
    market's model is served from."""
    name = run_name(cfg, symbols)
    return f"synthetic-{name}" if cfg.data.provider == "synthetic" else name
