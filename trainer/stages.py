"""The stages of one run, each handing typed state to the next:

``prepare`` (device, candles -> feature table, labels, purged folds, task) -> ``fit_folds`` (per fold: train-only
scaler, fit, out-of-sample predictions, decision policy, baselines) -> ``evaluate`` (pooled metrics,
significance, backtest, leakage checks with the shuffled-label control, gates, economics, verdict).

An extra data-parallel rank runs ``prepare``, ``fit_each_fold`` and ``fit_control``: the fits it joins."""

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import DictConfig

from callbacks.cancel import CancellationToken, Cancelled
from callbacks.progress import PhaseAlias, ProgressReporter
from core.devices import resolve_device
from core.errors import UserError
from data.features import all_feature_names, feature_names
from data.labels import TASKS, n_classes
from data.memory import budget_from, check_fits, release_freed, train_share
from data.providers import Candles, load_candles
from data.scaling import Standardizer
from data.splits import Fold, make_folds
from data.table import FeatureTable, feature_frames, join_labels
from models.base import CandleModel, FitContext, FitReport, Rows, Task
from models.nets import NetModel
from trainer.backtest import Backtest
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
from trainer.gates import economic_verdict, evaluate_gates, final_verdict
from trainer.importance import permutation_importance
from trainer.leakage import control_verdict, verify_split
from trainer.metrics import baseline_hits, baselines, calls, no_skill_rate, truths
from trainer.metrics import evaluate as score
from trainer.policy import DecisionPolicy
from trainer.resume import resume_checkpoint
from trainer.selection import n_trials as selection_trials

log = logging.getLogger("candlelab")

MIN_ROWS = {"train": 200, "val": 50, "test": 50}


@dataclass
class RunContext:
    """What the stages of one process's run share: where it writes, how it reports progress, how it stops."""

    run_dir: Path
    reporter: ProgressReporter
    token: CancellationToken
    config_hash: str  # a resumed checkpoint must come from a run of the same config
    logger: object | None = None  # a Lightning logger (nets log their curves to it)


@dataclass
class Prepared:
    """The data a run trains and evaluates on, and where it trains."""

    cfg: DictConfig
    device: DictConfig  # the resolved accelerator settings
    processes: int  # data-parallel ranks of each fit (1: one process)
    threads: int
    candles: Candles
    symbols: list[str]  # as the candles name them (a file may hold another market than configured)
    table: FeatureTable
    window: int  # candles of context per prediction (1 for tabular families)
    folds: list[Fold]
    n_labelled: int  # labelled rows after warm-up and window
    task: Task
    matrix: np.ndarray  # unscaled features of every row
    labels: np.ndarray  # the label of every row (NaN where none)
    segments: np.ndarray  # each row's run of consecutive candles (no window crosses one)
    aux: dict[str, np.ndarray]  # auxiliary targets of every row (forward return and volatility)

    @property
    def frame(self) -> pd.DataFrame:
        return self.table.frame

    def rows(self, fold: Fold, features: np.ndarray) -> dict[str, Rows]:
        """The fold's train/val/test rows over ``features`` (the matrix scaled for this fold)."""
        y_type = np.int64 if self.task.is_classification else np.float64
        return {
            k: Rows(
                features=features,
                rows=v,
                y=self.labels[v].astype(y_type),
                segments=self.segments,
                aux={name: self.aux[name][v] for name in self.aux},
            )
            for k, v in fold.rows.items()
        }

    def new_model(self) -> CandleModel:
        cfg = self.cfg
        return get_class(cfg.model._target_).from_config(
            cfg.model, len(self.table.feature_names), cfg.seed, self.threads, task=self.task
        )


@dataclass
class FittedFold:
    """One fold's fitted model with the scaler and rows it was fitted on."""

    index: int
    fold: Fold
    scaler: Standardizer
    rows: dict[str, Rows]  # train / val / test
    model: CandleModel
    report: FitReport


@dataclass
class FoldOutcome:
    """One fold's out-of-sample results."""

    fold: Fold
    proba: np.ndarray  # test predictions
    policy: DecisionPolicy | None  # chosen on the fold's validation rows (None without a trading evaluation)
    summary: dict  # the fold's entry in data_summary.folds
    baselines: dict  # naive calls from the fold's own training rows
    baseline_hits: dict


@dataclass
class Training:
    """Every fitted fold's outcome and the last fitted fold: the model the run saves, explains and refits as the
    shuffled-label control. A cancelled fit is the last fold, without an outcome."""

    outcomes: list[FoldOutcome]
    last: FittedFold

    @property
    def cancelled(self) -> bool:
        return self.last.report.cancelled


@dataclass
class Evaluation:
    """The pooled test evaluation of every fold and what the gates make of it."""

    proba: np.ndarray  # pooled test predictions, in fold order
    test_rows: np.ndarray
    test_y: np.ndarray
    fold_ids: np.ndarray  # which fold predicted each row
    test_metrics: dict
    baselines: dict
    per_symbol: dict
    importance: dict | None
    significance: dict  # hit_metric, overall, symbols, forward_looking (result.json's "evaluation")
    backtest: Backtest | None
    leakage: dict
    oracle: float | None
    gates: dict
    policy: dict | None
    economic: dict
    verdict: dict


def prepare(cfg: DictConfig, reporter: ProgressReporter, token: CancellationToken) -> Prepared:
    """Device and threads, candles, features, labels, the purged split and its checks, the task."""
    check_config(cfg)
    device = resolve_device(cfg.device, cfg.model.stage)
    processes = _processes(cfg, device)
    threads = int(cfg.trainer.num_threads or os.cpu_count() or 1)
    torch.set_num_threads(threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    candles, table = _load_table(cfg, reporter, token)
    window = int(cfg.model.window) if cfg.model.input == "sequence" else 1
    folds, n_labelled = _split_rows(cfg, table, window, candles)
    for fold in folds:  # every split says where it cut and how many rows each side holds
        log.info("split %s %s: %s", cfg.split.type, fold.name, fold.summary())
    reporter.emit(
        "split", metrics={"type": cfg.split.type, "folds": len(folds), **{k: len(v) for k, v in folds[-1].rows.items()}}
    )
    frame = table.frame
    return Prepared(
        cfg=cfg,
        device=device,
        processes=processes,
        threads=threads,
        candles=candles,
        symbols=list(candles.by_symbol),
        table=table,
        window=window,
        folds=folds,
        n_labelled=n_labelled,
        task=Task(
            TASKS[cfg.target.type],
            n_classes(cfg.target),
            cfg.target.get("class_weight") or cfg.model.get("class_weight"),
        ),
        matrix=table.matrix(),
        labels=frame["label"].to_numpy(),
        segments=table.segments(),
        aux={
            "forward_return": np.nan_to_num(frame["aux_forward_return"].to_numpy()),
            "forward_volatility": np.nan_to_num(frame["aux_forward_volatility"].to_numpy()),
        },
    )


def _processes(cfg: DictConfig, device: DictConfig) -> int:
    processes = int(device.processes)
    if processes > 1 and not issubclass(get_class(cfg.model._target_), NetModel):
        log.warning("device.strategy=ddp trains Lightning nets data-parallel; %s fits in one process", cfg.model.name)
        processes = 1
    if processes > 1 and cfg.data.provider in ("ccxt", "yfinance") and not cfg.data.get("end"):
        raise UserError(
            "every rank of a data-parallel run reads the candles itself: set data.end so they all read the same ones",
            "data.end",
        )
    return processes


def _load_table(cfg: DictConfig, reporter: ProgressReporter, token: CancellationToken) -> tuple[Candles, FeatureTable]:
    symbols = [str(s) for s in cfg.coin.symbols]
    reporter.emit("load", metrics={"provider": cfg.data.provider, "symbols": ",".join(symbols)})
    candles = load_candles(cfg.data, symbols, cfg.seed)
    check_fits(
        sum(map(len, candles.by_symbol.values())),
        len(candles.by_symbol),
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
    return candles, table


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


def fit_each_fold(prepared: Prepared, ctx: RunContext) -> Iterator[FittedFold]:
    """Fit each fold in turn (the scaler and the model refit on its training rows), one when asked for; a
    cancelled fit is the last one."""
    cfg = prepared.cfg
    resume = resume_checkpoint(cfg, ctx.run_dir, ctx.config_hash)
    if resume and len(prepared.folds) > 1:
        raise UserError("resume continues a holdout run; a multi-fold split retrains its folds", "resume")
    for i, fold in enumerate(prepared.folds):
        scaler = Standardizer.fit(prepared.matrix[fold.rows["train"]], prepared.table.feature_names)
        rows = prepared.rows(fold, scaler.transform(prepared.matrix))
        model = prepared.new_model()
        fit_ctx = FitContext(
            run_dir=ctx.run_dir,
            seed=cfg.seed,
            reporter=ctx.reporter,
            token=ctx.token,
            callbacks=cfg.callbacks,
            trainer=cfg.trainer,
            device=prepared.device,
            logger=ctx.logger,
            resume_from=resume,
            hooks=bool(cfg.callbacks.get("hooks", True)),
        )
        if i == 0 or prepared.processes == 1:  # later data-parallel fits decide a cancel together as they start
            ctx.token.raise_if_cancelled()
        ctx.reporter.emit("fit", metrics={"family": cfg.model.name, "device": prepared.device.name, "fold": fold.name})
        report = model.fit(rows["train"], rows["val"], fit_ctx)
        if report.cancelled:
            report.metrics["fold"] = fold.name
        yield FittedFold(index=i, fold=fold, scaler=scaler, rows=rows, model=model, report=report)
        if report.cancelled:
            return


def fit_folds(prepared: Prepared, ctx: RunContext) -> Training:
    """Every fold fitted and scored on its own test rows; stops at a cancelled fit."""
    outcomes = []
    for fitted in fit_each_fold(prepared, ctx):
        if fitted.report.cancelled:
            break
        outcomes.append(_fold_outcome(prepared, fitted))
    return Training(outcomes=outcomes, last=fitted)


def _fold_outcome(prepared: Prepared, fitted: FittedFold) -> FoldOutcome:
    cfg, task, fold, rows, model = prepared.cfg, prepared.task, fitted.fold, fitted.rows, fitted.model
    test, train = rows["test"], rows["train"]
    proba = model.predict_proba(test)
    policy = None
    if cfg.eval.trading.enabled:  # each fold's policy from its own validation rows, never its test rows
        val = rows["val"]
        policy = choose_policy(
            cfg,
            task,
            model.predict_proba(val),
            frame=prepared.frame,
            val_rows=val.rows,
            candles=prepared.candles,
            test_start=fold.cutoffs["test_start"],
        )
        log.info("policy %s: %s", fold.name, policy.describe())
    summary = {
        **fold.summary(),
        "policy": policy.to_dict() if policy else None,
        "training_metrics": dict(fitted.report.metrics),
        "test_metrics": score(task, proba, test.y, int(cfg.eval.ece_bins)),
    }
    # each fold's naive calls use that fold's own training rows (pooled like the predictions)
    persistence = prepared.frame["persistence"].to_numpy()[test.rows]
    return FoldOutcome(
        fold=fold,
        proba=proba,
        policy=policy,
        summary=summary,
        baselines=baselines(task, test.y, train.y, persistence),
        baseline_hits=baseline_hits(task, test.y, train.y, persistence, cfg.seed + fitted.index),
    )


def fit_control(prepared: Prepared, last: FittedFold, ctx: RunContext) -> CandleModel:
    """The same family, same pipeline, refit on the last fold with its training and validation labels (and
    auxiliary targets) permuted: it can learn nothing real, so anything that looks like skill in its test
    evaluation is a leak in the evaluation itself (see trainer.leakage.control_verdict)."""
    cfg = prepared.cfg
    ctx.reporter.emit("control", metrics={"family": cfg.model.name})
    rng = np.random.default_rng(cfg.seed + 7919)

    def permuted(rows: Rows) -> Rows:
        order = rng.permutation(len(rows.rows))
        aux = {k: v[order] for k, v in rows.aux.items()} if rows.aux else None
        return Rows(features=rows.features, rows=rows.rows, y=rows.y[order], aux=aux, segments=rows.segments)

    model = prepared.new_model()
    fit_ctx = FitContext(
        run_dir=ctx.run_dir / "control",
        seed=cfg.seed,
        reporter=PhaseAlias(ctx.reporter, {"fit": "control"}),
        token=ctx.token,
        callbacks=cfg.callbacks,
        trainer=cfg.trainer,
        device=prepared.device,
        logger=None,
    )
    report = model.fit(permuted(last.rows["train"]), permuted(last.rows["val"]), fit_ctx)
    if report.cancelled:
        raise Cancelled(ctx.token.reason or "cancelled")
    return model


def evaluate(prepared: Prepared, training: Training, ctx: RunContext) -> Evaluation:
    """Pool the folds' test predictions and judge them: metrics against baselines, significance, the backtest
    with each fold's policy, leakage checks (split, shuffled-label control, too good), gates, economics."""
    cfg, task, outcomes, last = prepared.cfg, prepared.task, training.outcomes, training.last
    proba, test_rows, test_y, fold_ids = _pooled_predictions(prepared, outcomes)

    ctx.reporter.emit("evaluate")
    test_metrics = score(task, proba, test_y, int(cfg.eval.ece_bins))
    hits = {k: np.concatenate([o.baseline_hits[k] for o in outcomes]) for k in outcomes[0].baseline_hits}
    base = _pooled_baselines(outcomes, task, hits)
    test_symbols = prepared.frame["symbol"].to_numpy()[test_rows]
    per_symbol = _per_symbol(prepared, proba, test_y, test_symbols)
    importance = last.model.feature_importance(prepared.table.feature_names) or permutation_importance(
        last.model, last.rows["val"], prepared.table.feature_names, cfg.seed
    )
    significance = significance_table(
        task,
        proba,
        test_y,
        symbols=test_symbols,
        base_hits=hits,
        per_symbol=per_symbol,
        overall=test_metrics,
        horizon=int(cfg.target.horizon),
        cfg=cfg,
    )
    backtest = _backtest(prepared, outcomes, proba, test_rows, fold_ids)
    if backtest is not None:
        _count_trades(significance, backtest)
    split_check = verify_split(prepared.folds, prepared.frame, int(cfg.split.embargo) * prepared.table.step)
    control = _shuffled_control(prepared, last, ctx) if cfg.eval.leakage.shuffled_control else None
    oracle = _oracle_accuracy(prepared.candles, prepared.frame, test_rows, cfg.target.type)
    leakage = leakage_summary(
        split_check,
        control,
        evaluation=significance,
        metrics=test_metrics,
        trading=backtest.metrics if backtest else None,
        timeframe=prepared.candles.timeframe,
        oracle=oracle,
        cfg=cfg,
    )
    significance["forward_looking"] = cfg.split.type != "purged_kfold"
    gates = evaluate_gates(
        cfg.eval.gates, {**significance, "leakage": leakage}, float(cfg.eval.significance.alpha), prepared.symbols
    )
    policy = outcomes[-1].policy.to_dict() if outcomes[-1].policy else None
    economic = _economic(prepared, backtest, policy)
    return Evaluation(
        proba=proba,
        test_rows=test_rows,
        test_y=test_y,
        fold_ids=fold_ids,
        test_metrics=test_metrics,
        baselines=base,
        per_symbol=per_symbol,
        importance=importance,
        significance=significance,
        backtest=backtest,
        leakage=leakage,
        oracle=oracle,
        gates=gates,
        policy=policy,
        economic=economic,
        verdict=final_verdict(gates, economic),
    )


def _pooled_predictions(
    prepared: Prepared, outcomes: list[FoldOutcome]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every fold's test predictions in fold order: probabilities, rows, labels, and the fold of each row."""
    proba = np.concatenate([o.proba for o in outcomes])
    test_rows = np.concatenate([o.fold.rows["test"] for o in outcomes])
    test_y = prepared.labels[test_rows].astype(np.int64 if prepared.task.is_classification else np.float64)
    fold_ids = np.concatenate([np.full(len(o.proba), i) for i, o in enumerate(outcomes)])
    return proba, test_rows, test_y, fold_ids


def _per_symbol(prepared: Prepared, proba: np.ndarray, test_y: np.ndarray, test_symbols: np.ndarray) -> dict:
    bins, per_symbol = int(prepared.cfg.eval.ece_bins), {}
    for sym in prepared.symbols:
        m = test_symbols == sym
        if m.any():
            per_symbol[sym] = score(prepared.task, proba[m], test_y[m], bins)
    return per_symbol


def _count_trades(significance: dict, backtest: Backtest) -> None:
    """The backtest's trade counts next to the hit rates, overall and per symbol."""
    significance["overall"]["trades"] = backtest.metrics["n_trades"]
    counts = backtest.trades["symbol"].value_counts() if len(backtest.trades) else {}
    for sym, row in significance["symbols"].items():
        row["trades"] = int(counts.get(sym, 0))


def _pooled_baselines(outcomes: list[FoldOutcome], task: Task, hits: dict) -> dict:
    """One fold's baselines as they are; several folds' pooled by test rows. Plus a random call's hit rate."""
    base = outcomes[0].baselines if len(outcomes) == 1 else _pool_baselines(outcomes)
    base["random"] = {("accuracy" if task.is_classification else "directional_accuracy"): float(hits["random"].mean())}
    return base


def _pool_baselines(outcomes: list[FoldOutcome]) -> dict:
    """Row-weighted pooling of per-fold baseline scores (each fold's calls from its own training rows)."""
    per_fold = [o.baselines for o in outcomes]
    weights = np.array([o.summary["rows"]["test"] for o in outcomes], dtype=np.float64)
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


def _backtest(
    prepared: Prepared, outcomes: list[FoldOutcome], proba: np.ndarray, test_rows: np.ndarray, fold_ids: np.ndarray
) -> Backtest | None:
    """The test period traded once, each fold's rows with that fold's policy (None without trading)."""
    cfg, task = prepared.cfg, prepared.task
    if not cfg.eval.trading.enabled:
        return None
    p_long, p_short = trade_signals(task, cfg.target, proba, round_trip_cost(cfg.eval.trading))
    sides = np.zeros(len(proba), dtype=np.int8)
    for i, outcome in enumerate(outcomes):
        mine = fold_ids == i
        sides[mine] = outcome.policy.sides(p_long[mine], p_short[mine])
    return trading_evaluation(
        cfg, task, proba, frame=prepared.frame, rows=test_rows, candles=prepared.candles, sides=sides
    )


def _economic(prepared: Prepared, backtest: Backtest | None, policy: dict | None) -> dict:
    """The tradeable half of the verdict: the test trades' economics at the number of trials behind the choice."""
    cfg = prepared.cfg
    trials = selection_trials(cfg.eval.get("selection"))
    stats = (
        economic_statistics(
            backtest.trades,
            prepared.symbols,
            trials["n_trials"],
            cfg.eval.get("selection"),
            cfg.eval.gates.get("economic") or {},
            cfg.seed,
        )
        if backtest
        else None
    )
    economic = economic_verdict(cfg.eval.gates, stats, policy, prepared.symbols)
    economic["n_trials_source"] = trials["source"]
    return economic


def _shuffled_control(prepared: Prepared, last: FittedFold, ctx: RunContext) -> dict:
    """The control refit (its folder removed afterwards) and its verdict on the last fold's test rows."""
    cfg, task, test = prepared.cfg, prepared.task, last.rows["test"]
    try:
        out = fit_control(prepared, last, ctx).predict_proba(test)
    finally:
        shutil.rmtree(ctx.run_dir / "control", ignore_errors=True)
    call, truth = calls(task, out), truths(task, test.y)
    signal = signal_score(task, cfg.target, out)
    forward = test.aux["forward_return"]
    trades = (
        ranked_trades(signal, prepared.frame, test.rows, prepared.candles, cfg) if cfg.eval.trading.enabled else None
    )
    leak = cfg.eval.leakage
    verdict = control_verdict(
        (call == truth).astype(np.float64),
        no_skill_rate(call, truth),
        signal,
        forward,
        int(cfg.target.horizon),
        float(leak.control_alpha),
        trades=trades,
        up_share=float(np.mean(forward > 0)),
        max_rank_corr=float(leak.control_max_rank_corr),
        max_win_edge=float(leak.control_max_win_edge),
    )
    verdict["family"] = cfg.model.name
    return verdict


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
