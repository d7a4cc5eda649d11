"""Records: each writes one artifact of a run (model folder, predictions, trades, plots, registry row, report,
logger) and fills its part of the ``RunResult``; a cancelled fit's record keeps what the fit reached."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from core.runinfo import data_fingerprint, utc_now
from data.labels import output_columns
from trainer import report as run_report
from trainer.gates import may_auto_promote
from trainer.loggers import log_run
from trainer.metrics import headline, hits, reliability_curve
from trainer.model_dir import save_model_dir
from trainer.registry import Registry
from trainer.result import Artifacts, DataSummary, ModelInfo, RunInfo, RunResult
from trainer.stages import Evaluation, FittedFold, Prepared, Training

log = logging.getLogger("candlelab")


def outcome(prepared: Prepared, training: Training, evaluation: Evaluation, run: RunInfo) -> RunResult:
    """The completed run's result before any file is written: metrics, data, evaluation and verdict."""
    cfg = prepared.cfg
    return RunResult(
        status="completed",
        training_metrics=training.last.report.metrics,
        test_metrics=evaluation.test_metrics,
        baselines=evaluation.baselines,
        artifacts=Artifacts(feature_importance=evaluation.importance, per_symbol_metrics=evaluation.per_symbol),
        model_info=model_info(prepared),
        data_summary=data_summary(prepared, training, evaluation),
        target=f"{cfg.target.type}_h{int(cfg.target.horizon)}",
        evaluation=evaluation.significance,
        trading=evaluation.backtest.metrics if evaluation.backtest is not None else None,
        leakage=evaluation.leakage,
        gates=evaluation.gates,
        policy=evaluation.policy,
        economic=evaluation.economic,
        verdict=evaluation.verdict,
        run=run,
    )


def model_info(prepared: Prepared) -> ModelInfo:
    cfg, device = prepared.cfg, prepared.device
    return ModelInfo(
        family=cfg.model.name,
        kind=cfg.model.kind,
        stage=cfg.stage.name,
        device=device.name,
        processes=prepared.processes,
        precision=str(device.precision),
    )


def data_summary(prepared: Prepared, training: Training, evaluation: Evaluation) -> DataSummary:
    cfg, candles, task, folds = prepared.cfg, prepared.candles, prepared.task, prepared.folds
    rows_per_split = {k: len(v) for k, v in folds[-1].rows.items()}
    if len(folds) > 1:
        rows_per_split["test_all_folds"] = int(len(evaluation.test_rows))
    test_y = evaluation.test_y
    return DataSummary(
        provider=candles.provider,
        symbols=prepared.symbols,
        timeframe=candles.timeframe,
        sources=candles.sources,
        candles={s: len(c) for s, c in candles.by_symbol.items()},
        labelled_rows=prepared.n_labelled,
        rows_per_split=rows_per_split,
        purged_or_embargoed_rows=prepared.n_labelled - sum(len(v) for v in folds[-1].rows.values())
        if len(folds) == 1
        else None,
        split=cfg.split.type,
        split_cutoffs=folds[-1].cutoffs,
        forward_looking=cfg.split.type != "purged_kfold",
        folds=[o.summary for o in training.outcomes],
        task=vars(task),
        quality={
            s: {**q, "outliers": q["outliers"][:20], "outliers_found": len(q["outliers"])}
            for s, q in candles.quality.items()
        },
        label_balance_test=(np.bincount(test_y, minlength=task.n_classes) / len(test_y)).tolist()
        if task.is_classification
        else None,
        oracle_accuracy=evaluation.oracle,
        fingerprint=data_fingerprint(candles.by_symbol),
    )


def model_card(prepared: Prepared, run: RunInfo) -> dict:
    """What a model folder says about itself, before the fit's outcome (status, metrics, verdict) is added."""
    cfg, candles = prepared.cfg, prepared.candles
    return {
        "family": cfg.model.name,
        "target_class": cfg.model._target_,
        "kind": cfg.model.kind,
        "stage": cfg.model.stage,
        "input": cfg.model.input,
        "window": prepared.window,
        "symbols": prepared.symbols,
        "feature_names": prepared.table.feature_names,
        "label": _label(prepared),
        "run_id": run.run_id,
        "config_hash": run.config_hash,
        "git_commit": run.git_commit,
        "seed": cfg.seed,
        "data": {
            "provider": candles.provider,
            "sources": candles.sources,
            "split": cfg.split.type,
            "cutoffs": prepared.folds[-1].cutoffs,
        },
    }


def _label(prepared: Prepared) -> dict:
    cfg = prepared.cfg
    return {
        "type": cfg.target.type,
        "horizon": int(cfg.target.horizon),
        "timeframe": prepared.candles.timeframe,
        "target": OmegaConf.to_container(cfg.target, resolve=True),
    }


def _save(prepared: Prepared, fitted: FittedFold, card: dict, config_yaml: str, path: Path) -> Path:
    feature_cfg = OmegaConf.to_container(prepared.cfg.features, resolve=True)
    return save_model_dir(
        path,
        fitted.model,
        card=card,
        config_yaml=config_yaml,
        scaler=fitted.scaler,
        feature_cfg=feature_cfg,
        label=_label(prepared),
    )


def cancelled_fit(
    prepared: Prepared, cancelled: FittedFold, run: RunInfo, *, reason: str, config_yaml: str, run_dir: Path
) -> RunResult:
    """A fit stopped by the token: keep what was reached (checkpoint or partial model), claim nothing more."""
    result = RunResult.ended(run, "cancelled", reason)
    result.training_metrics = cancelled.report.metrics
    result.model_info = model_info(prepared)
    if cancelled.report.checkpoint is not None:
        result.artifacts.checkpoint = cancelled.report.checkpoint
    else:  # trees: the rounds boosted so far, in the usual model-dir format, marked as partial
        card = model_card(prepared, run)
        card.update(status="cancelled", created_at=utc_now(), n_parameters=cancelled.model.n_parameters())
        result.artifacts.partial_model = str(_save(prepared, cancelled, card, config_yaml, run_dir / "partial_model"))
        result.model_info.n_parameters = card["n_parameters"]
    result.write(run_dir)
    return result


def model_folder(result: RunResult, prepared: Prepared, training: Training, *, config_yaml: str, run_dir: Path) -> Path:
    """``model/``: the last fold's model, scaler and card (with that fold's own test metrics)."""
    last, fold = training.last, training.outcomes[-1].summary
    result.model_info.n_parameters = last.model.n_parameters()
    card = model_card(prepared, result.run)
    card.update(
        status="completed",
        created_at=utc_now(),
        n_parameters=result.model_info.n_parameters,
        test_metrics=fold["test_metrics"],
        test_rows=fold["rows"]["test"],
        gates={"name": result.gates["name"], "passed": result.gates["passed"]},
        policy=result.policy,
        verdict=result.verdict["label"],
    )
    model_dir = _save(prepared, last, card, config_yaml, run_dir / "model")
    result.model_path = str(model_dir)
    return model_dir


def predictions(result: RunResult, prepared: Prepared, evaluation: Evaluation, run_dir: Path) -> pd.DataFrame:
    """``predictions_test.parquet``: every fold's test rows with the fold and the model's outputs."""
    frame = prepared.table.frame
    table = frame.iloc[evaluation.test_rows][["symbol", "timestamp", "t1", "label"]].assign(
        fold=evaluation.fold_ids, **dict(zip(output_columns(prepared.cfg.target), evaluation.proba.T))
    )
    path = run_dir / "predictions_test.parquet"
    table.to_parquet(path, index=False)
    result.artifacts.predictions = str(path)
    return table


def trades(result: RunResult, evaluation: Evaluation, run_dir: Path) -> None:
    """``trades_test.parquet``: the backtest's trades (none without a trading evaluation)."""
    if evaluation.backtest is None:
        return
    path = run_dir / "trades_test.parquet"
    evaluation.backtest.trades.to_parquet(path, index=False)
    result.artifacts.trades = str(path)


def plots(result: RunResult, prepared: Prepared, training: Training, evaluation: Evaluation, run_dir: Path) -> None:
    """``plots/``: reliability, confusion matrix, equity curve, feature importance, learning curves."""
    task, proba, y = prepared.task, evaluation.proba, evaluation.test_y
    curve = confusion = None
    if task.is_classification:  # binary: reliability of P(up); multiclass: of the top-label confidence
        conf, hit = (proba[:, 1], y) if task.kind == "binary" else (proba.max(1), hits(task, proba, y))
        curve = reliability_curve(conf, hit, int(prepared.cfg.eval.ece_bins))
        confusion = run_report.confusion_matrix(proba, y, task.n_classes)
    plot_files = run_report.make_plots(
        run_dir / "plots",
        prepared.cfg.model.name,
        curve=curve,
        history=training.last.report.history,
        confusion=confusion,
        class_names=[c.removeprefix("p_") for c in output_columns(prepared.cfg.target)],
        equity=evaluation.backtest.equity if evaluation.backtest is not None else None,
        importance=evaluation.importance,
    )
    result.artifacts.reliability = curve
    result.artifacts.confusion_matrix = confusion
    result.artifacts.plots = list(plot_files.values())
    result.artifacts.plot_files = plot_files


def checkpoints(result: RunResult, cfg: DictConfig, run_dir: Path) -> None:
    """Resumable checkpoints are for unfinished runs: the best weights live in model/ (unless kept on purpose)."""
    ckpt_dir = run_dir / "checkpoints"
    if ckpt_dir.exists() and not cfg.callbacks.checkpoint.keep:
        shutil.rmtree(ckpt_dir)
        result.training_metrics.pop("best_checkpoint", None)


def registry(result: RunResult, prepared: Prepared, symbol: str) -> None:
    """One registry row for this model (``symbol``: its slot's symbol); the gates' verdict decides whether it
    is promoted."""
    cfg, headline_metric = prepared.cfg, headline(prepared.task)
    run, data = result.run, result.data_summary
    record = {
        "family": cfg.model.name,
        "symbol": symbol,
        "timeframe": data.timeframe,
        "data_sources": data.sources,
        "target": result.target,
        "headline": headline_metric,
        "headline_value": result.test_metrics[headline_metric],
        "metrics": result.test_metrics,
        "gates": result.gates,
        "run_id": run.run_id,
        "run_dir": run.run_dir,
        "git_commit": run.git_commit,
        "config_hash": run.config_hash,
        "data_fingerprint": data.fingerprint,
        "economics": {
            "trading": result.trading,
            "policy": result.policy,
            "economic": result.economic,
            "verdict": result.verdict,
        },
    }
    auto = bool(cfg.registry.auto_promote) and may_auto_promote(cfg.eval.gates)
    if cfg.registry.auto_promote and not auto and result.gates["passed"]:
        log.warning(
            "gates %s passed, but they do not test baselines and leaks: not promoted automatically "
            "(python -m trainer.registry promote ... decides)",
            cfg.eval.gates.name,
        )
    row = Registry(cfg.registry.root).register(
        record, Path(result.model_path), auto_promote=auto, keep_candidates=cfg.registry.get("keep_candidates")
    )
    log.info(
        "registered %s v%s (%s)%s",
        row["model_id"],
        row["version"],
        row["stage"],
        ": promoted" if row.get("promoted") else "",
    )
    result.registry = {k: row.get(k) for k in ("model_id", "version", "slot", "stage", "promoted", "model_dir")}


def report(result: RunResult, run_dir: Path) -> None:
    """``report.md``: the verdict and numbers in words, linking the plots."""
    result.artifacts.report = str(run_report.write_report(run_dir, result))


def logger_outcome(result: RunResult, logger, predictions: pd.DataFrame, cfg: DictConfig) -> None:
    """The run's outcome in the experiment logger (W&B: plots, predictions table and the model folder too)."""
    if logger is None:
        return
    try:  # a dashboard that cannot take the outcome must not fail a finished, registered run
        log_run(logger, result, predictions, Path(result.model_path), cfg.coin.name)
    except Exception:
        log.exception("logging the run's outcome to %s failed; the run itself is complete", cfg.logger.name)
