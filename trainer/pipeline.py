"""The pipeline from candles to result: load -> features/labels -> purged split -> train-only scaler ->
fit -> evaluate on test -> model dir + result.json. The CLI is a thin layer over ``train``."""

import logging
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from callbacks.cancel import CancellationToken, Cancelled, ImmediateStop
from callbacks.progress import PhaseAlias, ProgressEvent, ProgressReporter
from callbacks.sinks import build_sinks
from core.devices import is_worker, resolve_device, stop_workers
from core.errors import UserError
from core.runinfo import config_hash, data_fingerprint, ended_result, git_commit, new_run_id, utc_now, write_json_atomic
from data.features import all_feature_names, feature_names
from data.labels import TASKS, n_classes, output_columns
from data.memory import budget_from, check_fits, release_freed, train_share
from data.providers import Candles, load_candles, named_symbols
from data.scaling import Standardizer
from data.splits import Fold, make_folds
from data.symbols import check_name, selection_name
from data.table import FeatureTable, feature_frames, join_labels
from models.base import FitContext, Rows, Task
from models.nets import NetModel
from trainer import report as run_report
from trainer.checks import check_config
from trainer.evaluation import (
    choose_policy,
    economic_statistics,
    leakage_summary,
    ranked_trades,
    round_trip_cost,
    signal_score,
    significance_table,
    trade_signals,
    trading_evaluation,
)
from trainer.gates import economic_verdict, evaluate_gates, final_verdict, may_auto_promote
from trainer.importance import permutation_importance
from trainer.leakage import control_verdict, verify_split
from trainer.loggers import build_logger, close_logger, log_run
from trainer.metrics import (
    baseline_hits,
    baselines,
    calls,
    evaluate,
    headline,
    hits,
    no_skill_rate,
    reliability_curve,
    truths,
)
from trainer.model_dir import save_model_dir
from trainer.registry import Registry
from trainer.resume import resume_checkpoint
from trainer.selection import n_trials as selection_trials

log = logging.getLogger("candlelab")

MIN_ROWS = {"train": 200, "val": 50, "test": 50}


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
) -> dict:
    """Run the whole pipeline for one family on the configured symbols; returns what result.json holds.

    ``progress_callback`` receives every ProgressEvent. ``cancellation_token`` (optional) stops the run
    cooperatively; SIGINT/SIGTERM and the stop file (``<run_dir>/STOP`` by default) are always honoured.
    """
    if is_worker(cfg.device):
        return _worker(cfg, resolve_run_dir(cfg, new_run_id()))
    run_id, run_dir = create_run_dir(cfg)
    token = cancellation_token or CancellationToken()
    if token.stop_file is None:
        token.stop_file = _stop_file(cfg, run_dir)
        if token.stop_file.exists() and token.stop_file.parent == run_dir:
            log.warning("removing a stale stop file from an earlier run: %s", token.stop_file)
            token.stop_file.unlink()
    run = {
        "run_id": run_id,
        "git_commit": git_commit(Path(cfg.paths.root_dir)),
        "config_hash": config_hash(cfg),
        "seed": cfg.seed,
        "started_at": utc_now(),
        "finished_at": None,
        "run_dir": str(run_dir),
    }
    write_json_atomic(run_dir / "run.json", run)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    (run_dir / "config.yaml").write_text(config_yaml)
    logger = reporter = None
    try:
        with token.handle_signals():
            logger = build_logger(cfg, run_dir, run_id)
            reporter = ProgressReporter(build_sinks(run_dir, logger, progress_callback))
            result = _run(cfg, run_dir, run, reporter, token, logger, config_yaml)
    except (Cancelled, ImmediateStop) as exc:
        result = ended_result(run, "cancelled", token.reason or str(exc))
        result["training_metrics"] = {
            "cancelled_in_phase": reporter._phase[0] if reporter and reporter._phase else None
        }
        write_json_atomic(run_dir / "result.json", result)
        _finish(reporter, logger, "cancelled", token.reason)
        return result
    except BaseException as exc:
        stop_workers()
        what = exc.line() if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        write_json_atomic(run_dir / "result.json", ended_result(run, "failed", what))
        _finish(reporter, logger, "failed", what)
        raise
    _finish(reporter, logger, "success" if result["status"] == "completed" else result["status"], None)
    return result


def _stop_file(cfg: DictConfig, run_dir: Path) -> Path:
    return Path(cfg.callbacks.cancel.get("stop_file") or run_dir / "STOP")


class _WorkerToken(CancellationToken):
    """An extra rank acts on a cancel only inside a fit, where all ranks decide together: leaving before its
    next fit would leave rank 0 waiting there for it."""

    def raise_if_cancelled(self) -> None:
        pass


def _worker(cfg: DictConfig, run_dir: Path) -> dict:
    """An extra rank of a data-parallel fit (``device.strategy=ddp``): it prepares the same data and joins
    every fit of the run, and writes nothing; rank 0 logs, evaluates, saves and registers. It ends with
    status ``worker`` (exit code 0) even when the fits were cancelled: rank 0 reports the cancellation."""
    run = {"run_id": None, "git_commit": None, "config_hash": config_hash(cfg), "run_dir": str(run_dir)}
    token = _WorkerToken(stop_file=_stop_file(cfg, run_dir))
    try:
        with token.handle_signals():
            _run(cfg, run_dir, run, ProgressReporter([]), token, None, "", worker=True)
    except (Cancelled, ImmediateStop):
        pass
    return {"status": "worker", "run": run}


def _finish(reporter: ProgressReporter | None, logger, status: str, reason: str | None) -> None:
    if reporter is not None:
        if status == "cancelled":
            reporter.emit("cancelled", metrics={"reason": reason})
        reporter.close()
    close_logger(logger, status)


def _split_rows(cfg: DictConfig, table: FeatureTable, window: int, candles: Candles) -> tuple[list[Fold], int]:
    frame = table.frame
    eligible = table.eligible_rows(window) & frame["label"].notna().to_numpy()
    where = "data.rows" if cfg.data.provider == "synthetic" else "data.path"
    if eligible.sum() < sum(MIN_ROWS.values()):
        raise UserError(
            f"too little data: {int(eligible.sum())} labelled rows after warm-up, window {window} and horizon "
            f"{cfg.target.horizon} (from {sum(map(len, candles.by_symbol.values()))} candles); "
            f"need at least {sum(MIN_ROWS.values())}",
            where,
        )
    folds = make_folds(cfg.split, frame["timestamp"], frame["purge_end"], eligible, table.step)
    ranked_until = cfg.get("plan", {}).get("ranked_until") if cfg.get("plan") is not None else None
    for fold in folds:
        short = {k: len(v) for k, v in fold.rows.items() if len(v) < MIN_ROWS[k]}
        if short:
            raise UserError(
                f"too little data after purge and embargo in {fold.name}: {short} rows, need at "
                f"least { {k: MIN_ROWS[k] for k in short} }",
                where,
            )
        if ranked_until and pd.Timestamp(fold.cutoffs["test_start"]) < pd.Timestamp(str(ranked_until)):
            raise UserError(
                f"{fold.name} tests from {fold.cutoffs['test_start']}, inside the period the training "
                f"plan was ranked on (labels ending before {ranked_until}): its choice of target and "
                f"features saw these rows; make a new plan with these data and split settings",
                "plan.ranked_until",
            )
    return folds, int(eligible.sum())


def _cancelled_fit(
    run_dir, run, token, report, model, card, config_yaml, scaler, feature_cfg, label, model_info
) -> dict:
    """A fit stopped by the token: keep what was reached (checkpoint or partial model), claim nothing more."""
    result = ended_result(run, "cancelled", token.reason or "cancelled")
    result["training_metrics"] = report.metrics
    result["model_info"] = model_info
    if report.checkpoint is not None:
        result["artifacts"]["checkpoint"] = report.checkpoint
    else:  # trees: the rounds boosted so far, in the usual model-dir format, marked as partial
        card.update(status="cancelled", created_at=utc_now(), n_parameters=model.n_parameters())
        partial = save_model_dir(run_dir / "partial_model", model, card, config_yaml, scaler, feature_cfg, label)
        result["artifacts"]["partial_model"] = str(partial)
        result["model_info"]["n_parameters"] = card["n_parameters"]
    write_json_atomic(run_dir / "result.json", result)
    return result


def _pool_baselines(per_fold: list[dict], reports: list[dict]) -> dict:
    """Row-weighted pooling of per-fold baseline scores (each fold's calls from its own training rows)."""
    weights = np.array([r["rows"]["test"] for r in reports], dtype=np.float64)
    pooled: dict = {}
    for name, first in per_fold[0].items():
        pooled[name] = {}
        for key, value in first.items():
            values = [b[name][key] for b in per_fold]
            if key in ("label", "undefined_rows"):
                pooled[name][key] = values if key == "label" else int(sum(values))
            elif all(isinstance(v, (int, float)) for v in values):
                pooled[name][key] = float(np.average(values, weights=weights))
            else:
                pooled[name][key] = None
    return pooled


def _oracle_accuracy(candles: Candles, frame: pd.DataFrame, rows: np.ndarray, target_type: str) -> float | None:
    """The Bayes-optimal direction call's accuracy on these rows: for `direction` against the label, for
    `forward_return` against the return's sign (compare with directional_accuracy). None where no exact
    oracle exists (real data; dead-zone, quantile and barrier labels)."""
    if candles.oracle_up is None or target_type not in ("direction", "forward_return"):
        return None
    oracle = pd.concat(
        [
            s.rename("oracle_up").rename_axis("timestamp").reset_index().assign(symbol=sym)
            for sym, s in candles.oracle_up.items()
        ]
    )
    test = frame.iloc[rows][["symbol", "timestamp", "label"]].merge(oracle, on=["symbol", "timestamp"], how="left")
    truth = test["label"].to_numpy() > 0 if target_type == "forward_return" else test["label"].astype(int) == 1
    return float(np.mean(test["oracle_up"].to_numpy(bool) == np.asarray(truth)))


def _run(
    cfg,
    run_dir: Path,
    run: dict,
    reporter: ProgressReporter,
    token: CancellationToken,
    logger,
    config_yaml: str,
    worker: bool = False,
) -> dict | None:
    check_config(cfg)
    device = resolve_device(cfg.device, cfg.model.stage)
    processes = int(device.processes)
    if processes > 1 and not issubclass(get_class(cfg.model._target_), NetModel):
        log.warning("device.strategy=ddp trains Lightning nets data-parallel; %s fits in one process", cfg.model.name)
        processes = 1
    if processes > 1 and cfg.data.provider in ("ccxt", "yfinance") and not cfg.data.get("end"):
        raise UserError(
            "every rank of a data-parallel run reads the candles itself: set data.end so they all read the same ones",
            "data.end",
        )
    threads = int(cfg.trainer.num_threads or os.cpu_count() or 1)
    torch.set_num_threads(threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    symbols = [str(s) for s in cfg.coin.symbols]

    reporter.emit("load", metrics={"provider": cfg.data.provider, "symbols": ",".join(symbols)})
    candles = load_candles(cfg.data, symbols, cfg.seed)
    symbols = list(candles.by_symbol)  # a file may say it holds another market than configured
    check_fits(
        sum(map(len, candles.by_symbol.values())),
        len(symbols),
        len(all_feature_names(cfg.features)),
        len(feature_names(cfg.features)),
        train_share(cfg.split),
        budget_from(cfg.trainer.get("memory_budget_gb")),
    )  # refused here, not by the OOM killer later
    token.raise_if_cancelled()

    reporter.emit("features", metrics={"candles": sum(map(len, candles.by_symbol.values()))})
    frames = feature_frames(candles.by_symbol, cfg.features)
    token.raise_if_cancelled()
    reporter.emit("labels", metrics={"type": cfg.target.type, "horizon": int(cfg.target.horizon)})
    table = join_labels(candles.by_symbol, frames, cfg.features, cfg.target, candles.step)
    del frames  # the table holds the features now: per-symbol copies would double them
    release_freed()
    token.raise_if_cancelled()

    window = int(cfg.model.window) if cfg.model.input == "sequence" else 1
    folds, n_labelled = _split_rows(cfg, table, window, candles)
    for fold in folds:  # every split says where it cut and how many rows each side holds
        log.info("split %s %s: %s", cfg.split.type, fold.name, fold.summary())
    reporter.emit(
        "split", metrics={"type": cfg.split.type, "folds": len(folds), **{k: len(v) for k, v in folds[-1].rows.items()}}
    )
    frame = table.frame
    y_all = frame["label"].to_numpy()
    raw = table.matrix()
    task = Task(
        TASKS[cfg.target.type], n_classes(cfg.target), cfg.target.get("class_weight") or cfg.model.get("class_weight")
    )
    y_type = np.int64 if task.is_classification else np.float64
    segments = table.segments()
    aux_all = {
        "forward_return": np.nan_to_num(frame["aux_forward_return"].to_numpy()),
        "forward_volatility": np.nan_to_num(frame["aux_forward_volatility"].to_numpy()),
    }
    feature_cfg = OmegaConf.to_container(cfg.features, resolve=True)
    label = {
        "type": cfg.target.type,
        "horizon": int(cfg.target.horizon),
        "timeframe": candles.timeframe,
        "target": OmegaConf.to_container(cfg.target, resolve=True),
    }
    card = {
        "family": cfg.model.name,
        "target_class": cfg.model._target_,
        "kind": cfg.model.kind,
        "stage": cfg.model.stage,
        "input": cfg.model.input,
        "window": window,
        "symbols": symbols,
        "feature_names": table.feature_names,
        "label": label,
        "run_id": run["run_id"],
        "config_hash": run["config_hash"],
        "git_commit": run["git_commit"],
        "seed": cfg.seed,
        "data": {
            "provider": candles.provider,
            "sources": candles.sources,
            "split": cfg.split.type,
            "cutoffs": folds[-1].cutoffs,
        },
    }
    model_info = {
        "family": cfg.model.name,
        "kind": cfg.model.kind,
        "stage": cfg.stage.name,
        "device": device.name,
        "processes": processes,
        "precision": str(device.precision),
    }
    resume = resume_checkpoint(cfg, run_dir, run["config_hash"])
    if resume and len(folds) > 1:
        raise UserError("resume continues a holdout run; a multi-fold split retrains its folds", "resume")

    outs, test_rows, fold_of_row, fold_reports, fold_baselines, fold_hits = [], [], [], [], [], []
    policies = []
    for i, fold in enumerate(folds):  # the scaler and the model are refit on each fold's training rows
        scaler = Standardizer.fit(raw[fold.rows["train"]], table.feature_names)
        X = scaler.transform(raw)
        split = {
            k: Rows(
                features=X,
                rows=v,
                y=y_all[v].astype(y_type),
                segments=segments,
                aux={name: aux_all[name][v] for name in aux_all},
            )
            for k, v in fold.rows.items()
        }
        model_args = (cfg.model, len(table.feature_names), cfg.seed, threads)
        model = get_class(cfg.model._target_).from_config(*model_args, task=task)
        ctx = FitContext(
            run_dir=run_dir,
            seed=cfg.seed,
            reporter=reporter,
            token=token,
            callbacks=cfg.callbacks,
            trainer=cfg.trainer,
            device=device,
            logger=logger,
            resume_from=resume,
            hooks=bool(cfg.callbacks.get("hooks", True)),
        )
        if i == 0 or processes == 1:  # later data-parallel fits decide a cancel together as they start
            token.raise_if_cancelled()
        reporter.emit("fit", metrics={"family": cfg.model.name, "device": device.name, "fold": fold.name})
        report = model.fit(split["train"], split["val"], ctx)
        if worker:  # an extra data-parallel rank only joins the fits
            if report.cancelled:
                return None
            continue
        if report.cancelled:
            report.metrics["fold"] = fold.name
            return _cancelled_fit(
                run_dir, run, token, report, model, card, config_yaml, scaler, feature_cfg, label, model_info
            )
        out = model.predict_proba(split["test"])
        if cfg.eval.trading.enabled:  # each fold's policy from its own validation rows, never its test rows
            policies.append(
                choose_policy(
                    cfg,
                    task,
                    model.predict_proba(split["val"]),
                    frame,
                    split["val"].rows,
                    candles,
                    fold.cutoffs["test_start"],
                )
            )
            log.info("policy %s: %s", fold.name, policies[-1].describe())
        outs.append(out)
        test_rows.append(split["test"].rows)
        fold_of_row.append(np.full(len(out), i))
        fold_reports.append(
            {
                **fold.summary(),
                "policy": policies[-1].to_dict() if policies else None,
                "training_metrics": dict(report.metrics),
                "test_metrics": evaluate(task, out, split["test"].y, int(cfg.eval.ece_bins)),
            }
        )
        # each fold's naive calls use that fold's own training rows (pooled below like the predictions)
        persistence = frame["persistence"].to_numpy()[split["test"].rows]
        fold_baselines.append(baselines(task, split["test"].y, split["train"].y, persistence))
        fold_hits.append(baseline_hits(task, split["test"].y, split["train"].y, persistence, cfg.seed + i))
    if worker:
        if cfg.eval.leakage.shuffled_control:
            _shuffled_control(
                cfg, task, model_args, split, reporter, token, run_dir, device, frame, candles, worker=True
            )
        return None
    # Pooled out-of-sample predictions of every fold; the model, scaler and importance of the last fold.
    proba = np.concatenate(outs)
    test = Rows(features=X, rows=np.concatenate(test_rows), y=y_all[np.concatenate(test_rows)].astype(y_type))
    fold_ids = np.concatenate(fold_of_row)

    reporter.emit("evaluate")
    bins = int(cfg.eval.ece_bins)
    test_metrics = evaluate(task, proba, test.y, bins)
    base = fold_baselines[0] if len(folds) == 1 else _pool_baselines(fold_baselines, fold_reports)
    base_hits = {k: np.concatenate([h[k] for h in fold_hits]) for k in fold_hits[0]}
    base["random"] = {
        ("accuracy" if task.is_classification else "directional_accuracy"): float(base_hits["random"].mean())
    }
    per_symbol = {}
    test_symbols = frame["symbol"].to_numpy()[test.rows]
    for sym in symbols:
        m = test_symbols == sym
        if m.any():
            per_symbol[sym] = evaluate(task, proba[m], test.y[m], bins)
    importance = model.feature_importance(table.feature_names) or permutation_importance(
        model, split["val"], table.feature_names, cfg.seed
    )
    horizon = int(cfg.target.horizon)
    evaluation = significance_table(
        task, proba, test.y, test_symbols, base_hits, per_symbol, test_metrics, horizon, cfg
    )
    backtest = None
    if cfg.eval.trading.enabled:  # the test period traded once, each fold's rows with that fold's policy
        p_long, p_short = trade_signals(task, cfg.target, proba, round_trip_cost(cfg.eval.trading))
        sides = np.zeros(len(proba), dtype=np.int8)
        for i, policy in enumerate(policies):
            mine = fold_ids == i
            sides[mine] = policy.sides(p_long[mine], p_short[mine])
        backtest = trading_evaluation(cfg, task, proba, frame, test.rows, candles, sides)
    if backtest is not None:
        evaluation["overall"]["trades"] = backtest.metrics["n_trades"]
        counts = backtest.trades["symbol"].value_counts() if len(backtest.trades) else {}
        for sym, row in evaluation["symbols"].items():
            row["trades"] = int(counts.get(sym, 0))
    split_check = verify_split(folds, frame, int(cfg.split.embargo) * table.step)
    control = (
        _shuffled_control(cfg, task, model_args, split, reporter, token, run_dir, device, frame, candles)
        if cfg.eval.leakage.shuffled_control
        else None
    )
    oracle = _oracle_accuracy(candles, frame, test.rows, cfg.target.type)
    evaluation["leakage"] = leakage_summary(
        split_check,
        control,
        evaluation,
        test_metrics,
        backtest.metrics if backtest else None,
        candles.timeframe,
        oracle,
        cfg,
    )
    evaluation["forward_looking"] = cfg.split.type != "purged_kfold"
    verdict = evaluate_gates(cfg.eval.gates, evaluation, float(cfg.eval.significance.alpha), symbols)
    trials = selection_trials(cfg.eval.get("selection"))
    policy = policies[-1].to_dict() if policies else None
    econ_stats = (
        economic_statistics(
            backtest.trades,
            symbols,
            trials["n_trials"],
            cfg.eval.get("selection"),
            cfg.eval.gates.get("economic") or {},
            cfg.seed,
        )
        if backtest
        else None
    )
    economic = economic_verdict(cfg.eval.gates, econ_stats, policy, symbols)
    economic["n_trials_source"] = trials["source"]
    run_verdict = final_verdict(verdict, economic)

    reporter.emit("save")
    model_info["n_parameters"] = model.n_parameters()
    # the card describes the saved model: the last fold's, with that fold's own test metrics
    card.update(
        status="completed",
        created_at=utc_now(),
        n_parameters=model_info["n_parameters"],
        test_metrics=fold_reports[-1]["test_metrics"],
        test_rows=fold_reports[-1]["rows"]["test"],
        gates={"name": verdict["name"], "passed": verdict["passed"]},
        policy=policy,
        verdict=run_verdict["label"],
    )
    model_dir = save_model_dir(run_dir / "model", model, card, config_yaml, scaler, feature_cfg, label)
    predictions = frame.iloc[test.rows][["symbol", "timestamp", "t1", "label"]].assign(
        fold=fold_ids, **dict(zip(output_columns(cfg.target), proba.T))
    )
    predictions.to_parquet(run_dir / "predictions_test.parquet", index=False)
    curve = confusion = None
    if task.is_classification:  # binary: reliability of P(up); multiclass: of the top-label confidence
        conf, hit = (proba[:, 1], test.y) if task.kind == "binary" else (proba.max(1), hits(task, proba, test.y))
        curve = reliability_curve(conf, hit, bins)
        confusion = run_report.confusion_matrix(proba, test.y, task.n_classes)
    if backtest is not None:
        backtest.trades.to_parquet(run_dir / "trades_test.parquet", index=False)
    plot_files = run_report.make_plots(
        run_dir / "plots",
        cfg.model.name,
        curve,
        report.history,
        confusion,
        [c.removeprefix("p_") for c in output_columns(cfg.target)],
        backtest.equity if backtest is not None else None,
        importance,
    )
    ckpt_dir = run_dir / "checkpoints"
    if ckpt_dir.exists() and not cfg.callbacks.checkpoint.keep:
        shutil.rmtree(ckpt_dir)  # the best weights live in model/; resumable checkpoints are for unfinished runs
        report.metrics.pop("best_checkpoint", None)

    rows_per_split = {k: len(v) for k, v in folds[-1].rows.items()}
    if len(folds) > 1:
        rows_per_split["test_all_folds"] = int(len(test.rows))
    result = {
        "status": "completed",
        "model_path": str(model_dir),
        "training_metrics": report.metrics,
        "test_metrics": test_metrics,
        "baselines": base,
        "artifacts": {
            "feature_importance": importance,
            "per_symbol_metrics": per_symbol,
            "reliability": curve,
            "confusion_matrix": confusion,
            "predictions": str(run_dir / "predictions_test.parquet"),
            "trades": str(run_dir / "trades_test.parquet") if backtest is not None else None,
            "plots": list(plot_files.values()),
            "plot_files": plot_files,
        },
        "model_info": model_info,
        "data_summary": {
            "provider": candles.provider,
            "symbols": symbols,
            "timeframe": candles.timeframe,
            "sources": candles.sources,
            "candles": {s: len(c) for s, c in candles.by_symbol.items()},
            "labelled_rows": n_labelled,
            "rows_per_split": rows_per_split,
            "purged_or_embargoed_rows": n_labelled - sum(len(v) for v in folds[-1].rows.values())
            if len(folds) == 1
            else None,  # multi-fold: see each fold's rows
            "split": cfg.split.type,
            "split_cutoffs": folds[-1].cutoffs,
            # purged k-fold trains most folds on data after their test block: fine for ranking, not a forecast
            "forward_looking": cfg.split.type != "purged_kfold",
            "folds": fold_reports,
            "task": vars(task),
            "quality": {
                s: {**q, "outliers": q["outliers"][:20], "outliers_found": len(q["outliers"])}
                for s, q in candles.quality.items()
            },
            "label_balance_test": (np.bincount(test.y, minlength=task.n_classes) / len(test.y)).tolist()
            if task.is_classification
            else None,
            "oracle_accuracy": oracle,
            "fingerprint": data_fingerprint(candles.by_symbol),
        },
        "target": f"{cfg.target.type}_h{horizon}",
        "evaluation": {k: v for k, v in evaluation.items() if k != "leakage"},
        "trading": backtest.metrics if backtest is not None else None,
        "leakage": evaluation["leakage"],
        "gates": verdict,
        "policy": policy,
        "economic": economic,
        "verdict": run_verdict,
        "registry": None,
        "run": {**run, "finished_at": utc_now()},
    }
    if cfg.registry.enabled:
        write_json_atomic(run_dir / "result.json", result)  # a kill while registering leaves the run's result
        reporter.emit("register")
        result["registry"] = _register(cfg, result, task, model_dir)
    reporter.emit("done", metrics={headline(task): test_metrics[headline(task)], "gates": verdict["passed"]})
    result["run"]["phase_seconds"] = dict(reporter.phase_seconds)
    result["artifacts"]["report"] = str(run_report.write_report(run_dir, result))
    write_json_atomic(run_dir / "result.json", result)
    if logger is not None:
        try:  # a dashboard that cannot take the outcome must not fail a finished, registered run
            log_run(logger, result, predictions, model_dir, cfg.coin.name)
        except Exception:
            log.exception("logging the run's outcome to %s failed; the run itself is complete", cfg.logger.name)
    return result


def registry_symbol(cfg: DictConfig, symbols: list[str] | None = None) -> str:
    """The symbol part of a registry slot: the symbols trained (``symbols``, else those the config selects),
    marked when the candles are synthetic so a model of generated data can never take the slot a real
    market's model is served from."""
    name = run_name(cfg, symbols)
    return f"synthetic-{name}" if cfg.data.provider == "synthetic" else name


def _register(cfg: DictConfig, result: dict, task: Task, model_dir: Path) -> dict:
    """One registry row for this model; the gates' verdict decides whether it is promoted."""
    run, data = result["run"], result["data_summary"]
    record = {
        "family": cfg.model.name,
        "symbol": registry_symbol(cfg, data["symbols"]),
        "timeframe": data["timeframe"],
        "data_sources": data["sources"],
        "target": result["target"],
        "headline": headline(task),
        "headline_value": result["test_metrics"][headline(task)],
        "metrics": result["test_metrics"],
        "gates": result["gates"],
        "run_id": run["run_id"],
        "run_dir": run["run_dir"],
        "git_commit": run["git_commit"],
        "config_hash": run["config_hash"],
        "data_fingerprint": data["fingerprint"],
        "economics": {k: result.get(k) for k in ("trading", "policy", "economic", "verdict")},
    }
    auto = bool(cfg.registry.auto_promote) and may_auto_promote(cfg.eval.gates)
    if cfg.registry.auto_promote and not auto and result["gates"]["passed"]:
        log.warning(
            "gates %s passed, but they do not test baselines and leaks: not promoted automatically "
            "(python -m trainer.registry promote ... decides)",
            cfg.eval.gates.name,
        )
    row = Registry(cfg.registry.root).register(
        record, model_dir, auto_promote=auto, keep_candidates=cfg.registry.get("keep_candidates")
    )
    log.info(
        "registered %s v%s (%s)%s",
        row["model_id"],
        row["version"],
        row["stage"],
        ": promoted" if row.get("promoted") else "",
    )
    return {k: row.get(k) for k in ("model_id", "version", "slot", "stage", "promoted", "model_dir")}


def _shuffled_control(
    cfg: DictConfig,
    task: Task,
    model_args: tuple,
    split: dict,
    reporter: ProgressReporter,
    token: CancellationToken,
    run_dir: Path,
    device,
    frame: pd.DataFrame,
    candles: Candles,
    worker: bool = False,
) -> dict | None:
    """The same family, same pipeline, refit on the last fold with its training and validation labels (and
    auxiliary targets) permuted: it can learn nothing real, so anything that looks like skill in its test
    evaluation is a leak in the evaluation itself (see trainer.leakage.control_verdict)."""
    reporter.emit("control", metrics={"family": cfg.model.name})
    rng = np.random.default_rng(cfg.seed + 7919)

    def permuted(rows: Rows) -> Rows:
        order = rng.permutation(len(rows.rows))
        aux = {k: v[order] for k, v in rows.aux.items()} if rows.aux else None
        return Rows(features=rows.features, rows=rows.rows, y=rows.y[order], aux=aux, segments=rows.segments)

    control_dir = run_dir / "control"
    model = get_class(cfg.model._target_).from_config(*model_args, task=task)
    ctx = FitContext(
        run_dir=control_dir,
        seed=cfg.seed,
        reporter=PhaseAlias(reporter, {"fit": "control"}),
        token=token,
        callbacks=cfg.callbacks,
        trainer=cfg.trainer,
        device=device,
        logger=None,
    )
    if worker:  # an extra data-parallel rank joins the control fit; rank 0 evaluates it and cleans up
        model.fit(permuted(split["train"]), permuted(split["val"]), ctx)
        return None
    try:
        report = model.fit(permuted(split["train"]), permuted(split["val"]), ctx)
        if report.cancelled:
            raise Cancelled(token.reason or "cancelled")
        out = model.predict_proba(split["test"])
    finally:
        shutil.rmtree(control_dir, ignore_errors=True)
    test = split["test"]
    call, truth = calls(task, out), truths(task, test.y)
    score = signal_score(task, cfg.target, out)
    forward = test.aux["forward_return"]
    trades = ranked_trades(score, frame, test.rows, candles, cfg) if cfg.eval.trading.enabled else None
    leak = cfg.eval.leakage
    verdict = control_verdict(
        (call == truth).astype(np.float64),
        no_skill_rate(call, truth),
        score,
        forward,
        int(cfg.target.horizon),
        float(leak.control_alpha),
        trades,
        float(np.mean(forward > 0)),
        float(leak.control_max_rank_corr),
        float(leak.control_max_win_edge),
    )
    verdict["family"] = cfg.model.name
    return verdict
