"""The training-plan generator: ``python -m trainer.plan [overrides...]`` writes master_training_plan.json,
the jobs (family x symbol route x target) a sweeper runs, CPU stage first, then GPU stage.

For every candidate target (``plan.targets``) the feature table is built exactly as the pipeline builds it
and a fast LightGBM probe is scored under purged k-fold CV with a task-independent skill,
``1 - loss_model / loss_prior`` (log loss against the training fold's class frequencies; MSE against its
mean for regression), averaged over folds. On each fold a classifier target is also traded as training will
trade it: a decision policy is chosen on the fold's validation rows (``trainer.evaluation.choose_policy``,
same costs, ``eval.policy`` settings) and trades the fold's held-out block once; ``expectancy_bps`` is the
mean net-of-cost return per trade over all folds' held-out trades (0 when the policies never trade; the
search tries ``plan.probe.policy_quantiles``; ``plan.probe.trading=false`` skips it and ranks on skill).
Only targets the runtime can serve (classifiers: it trades class probabilities) are ranked: by expectancy,
then skill; a regression target is scored but marked ``not servable`` and never kept. The best ``top_k``
servable targets with skill above ``min_score`` (and expectancy above ``min_expectancy_bps`` when set) are
kept; each keeps its ``top_n`` features by the probe's gain summed over the folds (the job's
``features.select``) and gets a route: one pooled model over the plan's symbols, or one model per symbol.

Honesty: choosing targets and features is itself fitting, so it reads only the time the following runs
may learn from. A row is ranked only when its timestamp and its label end (``purge_end``) lie before
``ranked_until``: the earliest holdout test cutoff (``split.train + split.val`` of the labelled time, as
``data.splits.holdout_cutoffs`` computes it; ``1 - split.test`` for walk_forward) that any job of the
plan can get. The bound covers every candidate target, the pooled table and each symbol's own, and the
most restrictive eligibility (every feature defined, the longest window of the plan's sequence families):
a job that selects fewer features or reads no window has more early rows and so a cutoff no earlier.
The plan records ``ranked_until`` and, per target, the last timestamp and label end the probe read.
"""

import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf

from core.errors import UserError
from core.runinfo import config_hash, data_fingerprint, git_commit, new_run_id, utc_now, write_json_atomic
from data.features import feature_names
from data.labels import TASKS, make_label, n_classes
from data.providers import Candles, load_candles
from data.scaling import Standardizer
from data.splits import purged_kfold
from data.table import FeatureTable, feature_frames, join_labels
from models.base import Task
from models.families import families as model_families
from models.lightgbm import booster_params
from trainer.backtest import backtest
from trainer.checks import check_config, check_number, check_numbers
from trainer.evaluation import causal_spread, choose_policy, trade_signals
from trainer.policy import DecisionPolicy

log = logging.getLogger("candlelab")

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
PLAN_FILE = "master_training_plan.json"
STAGES = ("cpu", "gpu")
ROUTES = ("pooled", "symbol")
# Keys a job sets itself: a plan-wide override of them would fight the job's own (or not compose).
_JOB_KEYS = ("model", "coin", "target", "features.select", "stage", "plan", "hydra")
# Where files are written: a plan's jobs never carry these (see the sweeper's override checks).
_WRITE_KEYS = ("paths", "registry.root", "data.cache_dir", "runtime")
_NUMBERS = {
    "plan.auto_targets.top_k": (int, 1, None, "[]"),
    "plan.auto_targets.min_score": (float, None, None, "[]"),
    "plan.auto_targets.min_expectancy_bps": (float, None, None, "[]"),
    "plan.auto_targets.folds": (int, 2, None, "[]"),
    "plan.auto_targets.embargo": (int, 0, None, "[]"),
    "plan.auto_features.top_n": (int, 1, None, "[]"),
    "plan.probe.n_estimators": (int, 1, None, "[]"),
    "plan.probe.learning_rate": (float, 0.0, None, "(]"),
    "plan.probe.num_leaves": (int, 2, None, "[]"),
    "plan.probe.min_child_samples": (int, 1, None, "[]"),
    "plan.probe.early_stopping_rounds": (int, 1, None, "[]"),
    "plan.probe.val": (float, 0.0, 1.0, "()"),
    "plan.probe.max_rows": (int, 100, None, "[]"),
    "plan.routing.min_label_correlation": (float, -1.0, 1.0, "[]"),
    "plan.routing.pooled_tolerance": (float, 0.0, None, "[]"),
}


@contextmanager
def _config_dir():
    """Hydra's config search path on conf/ (reused when a Hydra app of this checkout already set it)."""
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def compose_config(overrides: list[str]) -> DictConfig:
    """The real config tree with command-line overrides, as ``python train.py ...`` composes it."""
    with _config_dir():
        return compose(config_name="config", overrides=list(overrides))


@dataclass
class Candidate:
    index: int
    name: str  # <type>_h<horizon>
    spec: dict  # the plan entry: type, horizon and any other target keys
    target: DictConfig  # the composed target config
    task: Task


@dataclass
class ProbeResult:
    skill: float
    fold_skills: list[float]
    gain: np.ndarray  # summed over the folds
    rows: int
    last_timestamp: pd.Timestamp
    last_label_end: pd.Timestamp
    trades: dict | None = None  # the held-out trades of each fold's validation-chosen policy (classifiers)


def servable(task: Task) -> bool:
    """The runtime trades class probabilities: a regression target trains, but nothing can serve it."""
    return task.kind in ("binary", "multiclass")


def _hydra_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    text = str(value)
    if isinstance(value, (int, float)) or text.replace("_", "").replace("-", "").replace(".", "").isalnum():
        return text
    return "'" + text.replace("'", "\\'") + "'"


def _base_overrides(overrides: list[str]) -> list[str]:
    """The command line's overrides that every job carries (data, split, features, seed, ...)."""
    kept = []
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if any(key == k or key.startswith(k + ".") or key.startswith(k + "/") for k in _JOB_KEYS):
            if not key.startswith(("plan", "hydra")):
                log.warning("override %s is not passed to the jobs: the plan sets %s per job", item, key)
            continue
        if any(key == k or key.startswith(k + ".") for k in _WRITE_KEYS):
            # the sweeper refuses a plan choosing where files go: the command line running the plan sets them
            log.warning("override %s is not passed to the jobs: give it to the sweeper's command line", item)
            continue
        kept.append(item)
    return kept


def check_settings(cfg: DictConfig) -> None:
    """Plan settings a user can get wrong, refused before any data is loaded."""
    p = cfg.plan
    check_numbers(cfg, _NUMBERS)
    quantiles = p.probe.get("policy_quantiles")
    if quantiles is not None and (
        not isinstance(quantiles, ListConfig)
        or not quantiles
        or not all(isinstance(q, float) and 0.0 < q < 1.0 for q in quantiles)
    ):
        raise UserError(
            f"must be a list of quantiles in (0, 1) or null, got {quantiles!r}", "plan.probe.policy_quantiles"
        )
    for key in ("auto_targets.enabled", "auto_features.enabled", "probe.trading"):
        if not isinstance(OmegaConf.select(p, key), bool):
            raise UserError(f"must be true or false, got {OmegaConf.select(p, key)!r}", f"plan.{key}")
    if p.routing.mode not in ("auto", *ROUTES):
        raise UserError(f"must be auto, pooled or symbol, got {p.routing.mode!r}", "plan.routing.mode")
    symbols = list(p.symbols or [])
    if not symbols or len(set(map(str, symbols))) != len(symbols):
        raise UserError(f"need one or more distinct symbols, got {symbols}", "plan.symbols")
    known = {f["name"]: f for f in model_families()}
    chosen = list(p.families or [])
    unknown = [f for f in chosen if f not in known]
    if not chosen:
        raise UserError("no family given", "plan.families")
    if unknown:
        raise UserError(
            f"unknown family {', '.join(map(repr, unknown))}; available: {', '.join(known)}", "plan.families"
        )
    if len(set(chosen)) != len(chosen):
        raise UserError(f"a family is named twice in {chosen}", "plan.families")
    if not list(p.targets or []):
        raise UserError("no candidate target given", "plan.targets")
    if cfg.split.type == "purged_kfold":
        raise UserError(
            "a plan ranks on the time before the jobs' test period; purged_kfold tests every block "
            "(use holdout or walk_forward)",
            "split",
        )


def _candidates(cfg: DictConfig, base: list[str]) -> list[Candidate]:
    out, seen = [], {}
    for i, entry in enumerate(cfg.plan.targets):
        where = f"plan.targets[{i}]"
        if not isinstance(entry, DictConfig) or "type" not in entry or "horizon" not in entry:
            raise UserError(f"a candidate target needs type and horizon, got {entry!r}", where)
        spec = OmegaConf.to_container(entry, resolve=True)
        if spec["type"] not in TASKS:
            raise UserError(f"unknown target type {spec['type']!r}; available: {', '.join(TASKS)}", f"{where}.type")
        check_number(f"{where}.horizon", spec["horizon"], int, 1, None, "[]")
        name = f"{spec['type']}_h{spec['horizon']}"
        if name in seen:
            raise UserError(f"{name} is already plan.targets[{seen[name]}] (one candidate per type and horizon)", where)
        seen[name] = i
        try:
            target = compose_config([*base, *target_overrides(spec)]).target
        except HydraException as exc:
            raise UserError(str(exc).strip().splitlines()[0], where) from None
        task = Task(TASKS[spec["type"]], n_classes(target))
        out.append(Candidate(index=i, name=name, spec=spec, target=target, task=task))
    return out


def target_overrides(spec: dict) -> list[str]:
    extra = [f"target.{k}={_hydra_value(v)}" for k, v in spec.items() if k not in ("type", "horizon")]
    return [f"target={spec['type']}", f"target.horizon={spec['horizon']}", *extra]


def _fraction_before_test(split: DictConfig) -> float:
    if split.type == "walk_forward":
        return 1.0 - float(split.test)
    return float(split.train) + float(split.val)


def _earliest_test_start(
    table: FeatureTable,
    candles: dict[str, pd.DataFrame],
    target: DictConfig,
    step: pd.Timedelta,
    symbols: list[str],
    window: int,
    fraction: float,
) -> pd.Timestamp:
    """A lower bound on the test cutoff of any job on these symbols with this target.

    A job's cutoff is ``uniq(E)[int(len(uniq(E)) * fraction)]`` over its eligible timestamps E. E lies within
    the label-defined timestamps L (all candles) and contains the most restrictive eligible set (every
    feature defined, the longest window), so the cutoff is >= ``uniq(L)[int(len(uniq(E_min)) * fraction)]``.
    """
    labelled = [make_label(candles[s], target, step)["label"] for s in symbols]
    uniq_l = pd.DatetimeIndex(np.concatenate([lab.index[lab.notna().to_numpy()].to_numpy() for lab in labelled]))
    uniq_l = uniq_l.unique().sort_values()
    frame = table.frame
    e_min = table.eligible_rows(window) & frame["label"].notna().to_numpy() & frame["symbol"].isin(symbols).to_numpy()
    n_min = len(pd.DatetimeIndex(frame["timestamp"][e_min]).unique())
    if n_min < 3:
        raise UserError(f"too little data to plan: {n_min} labelled timestamps for {','.join(symbols)}", "data.rows")
    return uniq_l[int(n_min * fraction)]


def _evenly(rows: np.ndarray, limit: int | None) -> np.ndarray:
    if limit is None or len(rows) <= limit:
        return rows
    return rows[np.unique(np.linspace(0, len(rows) - 1, limit).round().astype(np.int64))]


def _skill(task: Task, pred: np.ndarray, y: np.ndarray, y_train: np.ndarray) -> float:
    """1 - loss_model / loss_prior: 0 = no better than the training prior, 1 = perfect."""
    if not task.is_classification:
        prior = float(np.mean((y - y_train.mean()) ** 2))
        return 1.0 - float(np.mean((y - pred) ** 2)) / prior if prior > 0 else 0.0
    k = task.n_classes
    proba = np.column_stack([1.0 - pred, pred]) if pred.ndim == 1 else pred
    yi = y.astype(np.int64)
    freq = (np.bincount(y_train.astype(np.int64), minlength=k) + 1.0) / (len(y_train) + k)  # Laplace: no log(0)
    model_loss = -np.mean(np.log(np.clip(proba[np.arange(len(yi)), yi], 1e-15, 1.0)))
    prior_loss = -np.mean(np.log(freq[yi]))
    return 1.0 - float(model_loss / prior_loss) if prior_loss > 0 else 0.0


def fit_probe(
    params: dict,
    probe: DictConfig,
    X: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    predict_val: bool = False,
):
    """One probe fit on train (early-stopped on val); returns test predictions and the gain per feature (and
    the validation predictions with ``predict_val``)."""
    dtrain = lgb.Dataset(X[train], label=y[train], free_raw_data=True)
    callbacks, valid = [], []
    if probe.get("early_stopping_rounds") and len(val):
        valid = [lgb.Dataset(X[val], label=y[val], reference=dtrain)]
        callbacks = [lgb.early_stopping(int(probe.early_stopping_rounds), first_metric_only=True, verbose=False)]
    booster = lgb.train(params, dtrain, num_boost_round=int(probe.n_estimators), valid_sets=valid, callbacks=callbacks)
    best = booster.best_iteration or booster.current_iteration()
    out = booster.predict(X[test], num_iteration=best), booster.feature_importance("gain", iteration=best)
    return (*out, booster.predict(X[val], num_iteration=best) if len(val) else None) if predict_val else out


def _as_proba(task: Task, pred: np.ndarray) -> np.ndarray:
    return np.column_stack([1.0 - pred, pred]) if task.kind == "binary" else pred


def fold_trades(
    trading: DictConfig,
    task: Task,
    frame: pd.DataFrame,
    candles: Candles,
    val: np.ndarray,
    test: np.ndarray,
    pred_val: np.ndarray | None,
    pred_test: np.ndarray,
) -> tuple[np.ndarray, dict]:
    """Net returns of one CV fold's held-out trades under the policy chosen on that fold's validation rows.

    ``trading`` holds ``eval`` and ``target`` as training composes them; ``candles`` end before the plan's
    ranking bound. Validation after the held-out block (the first fold) may read its prices, never the reverse."""
    test_start = frame["timestamp"].iloc[test].min()
    val_before = len(val) and frame["timestamp"].iloc[val].max() < test_start
    cut = test_start if val_before else max(c["timestamp"].iloc[-1] for c in candles.by_symbol.values()) + candles.step
    tcfg, horizon = trading.eval.trading, int(trading.target.horizon)
    if pred_val is None or not len(val):
        policy = DecisionPolicy(None, None, horizon, validation={"reason": "no validation rows"})
    else:
        policy = choose_policy(
            trading, task, _as_proba(task, pred_val), frame=frame, val_rows=val, candles=candles, test_start=cut
        )
    p_long, p_short = trade_signals(task, trading.target, _as_proba(task, pred_test), 0.0)
    side = policy.sides(p_long, p_short)
    if not side.any():
        return np.zeros(0), policy.to_dict()
    signals = frame.iloc[test][["symbol", "timestamp"]].reset_index(drop=True).assign(side=side)
    spread = causal_spread(frame, test, int(tcfg.spread_window)) if tcfg.spread_from_features else None
    if spread is not None:
        signals["spread"] = spread
    net = backtest(signals, candles.by_symbol, candles.step, horizon, tcfg).trades["net_return"].to_numpy()
    return net, policy.to_dict()


def probe_cv(
    table: FeatureTable,
    ranking: np.ndarray,
    task: Task,
    settings: DictConfig,
    embargo: pd.Timedelta,
    seed: int,
    threads: int,
    trading: DictConfig | None = None,
    candles: Candles | None = None,
) -> ProbeResult:
    """Purged k-fold CV of the probe over the ranking rows; scaler fit on each fold's training rows. With
    ``trading`` (eval + target config) and ``candles``, each fold's held-out block is also traded (fold_trades)."""
    frame = table.frame.iloc[np.flatnonzero(ranking)].reset_index(drop=True)
    probe = settings.probe
    folds = purged_kfold(
        frame["timestamp"],
        frame["purge_end"],
        np.ones(len(frame), dtype=bool),
        int(settings.auto_targets.folds),
        float(probe.val),
        embargo,
    )
    raw = frame[table.feature_names].to_numpy(np.float64)
    y = frame["label"].to_numpy()
    y = y.astype(np.int64) if task.is_classification else y.astype(np.float64)
    params = booster_params(
        OmegaConf.create(
            {
                "learning_rate": float(probe.learning_rate),
                "num_leaves": int(probe.num_leaves),
                "min_child_samples": int(probe.min_child_samples),
            }
        ),
        task,
        seed,
        threads,
    )
    skills, gain, nets, policies = [], np.zeros(len(table.feature_names)), [], []
    for fold in folds:
        train = _evenly(fold.rows["train"], probe.get("max_rows"))
        val, test = fold.rows["val"], fold.rows["test"]
        if len(train) < 50 or len(test) < 10:
            raise UserError(
                f"too little data to rank: {len(train)} training and {len(test)} test rows in "
                f"{fold.name} before the holdout test cutoff",
                "data.rows",
            )
        X = Standardizer.fit(raw[train], table.feature_names).transform(raw)
        if trading is None:
            pred, fold_gain = fit_probe(params, probe, X, y, train, val, test)
        else:
            pred, fold_gain, pred_val = fit_probe(params, probe, X, y, train, val, test, predict_val=True)
            net, policy = fold_trades(trading, task, frame, candles, val, test, pred_val, pred)
            nets.append(net)
            policies.append(
                {
                    "fold": fold.name,
                    "policy": policy,
                    "trades": int(len(net)),
                    "expectancy_bps": float(net.mean() * 1e4) if len(net) else None,
                }
            )
        skills.append(_skill(task, pred, y[test], y[train]))
        gain += fold_gain
    trades = None
    if trading is not None:
        net = np.concatenate(nets) if nets else np.zeros(0)
        trades = {
            "n_trades": int(len(net)),
            "expectancy_bps": float(net.mean() * 1e4) if len(net) else 0.0,
            "total_net_return": float(net.sum()),
            "folds": policies,
        }
    return ProbeResult(
        skill=float(np.mean(skills)),
        fold_skills=[float(s) for s in skills],
        gain=gain,
        rows=len(frame),
        last_timestamp=frame["timestamp"].max(),
        last_label_end=frame["purge_end"].max(),
        trades=trades,
    )


def _trading_config(cfg: DictConfig, target: DictConfig) -> DictConfig:
    """The evaluation settings (costs, policy search) with a candidate's target, as its training run has them;
    the policy search tries ``plan.probe.policy_quantiles`` (each pair is one backtest per fold)."""
    settings = OmegaConf.to_container(cfg.eval, resolve=True)
    quantiles = cfg.plan.probe.get("policy_quantiles")
    if quantiles is not None:
        settings["policy"]["quantiles"] = list(quantiles)
    return OmegaConf.create({"eval": settings, "target": OmegaConf.to_container(target, resolve=True)})


def _rank_key(res: ProbeResult, cand: Candidate) -> tuple:
    """Servable targets first; among them the higher net expectancy (when traded), then the higher skill."""
    return (
        0 if servable(cand.task) else 1,
        -(res.trades["expectancy_bps"] if res.trades else 0.0),
        -res.skill,
        cand.index,
    )


def _label_correlation(frame: pd.DataFrame, symbols: list[str]) -> tuple[dict, float | None]:
    """Pearson correlation of each pair of symbols' labels on their common timestamps."""
    wide = frame.pivot(index="timestamp", columns="symbol", values="label")
    pairs = {}
    for i, a in enumerate(symbols):
        for b in symbols[i + 1 :]:
            both = wide[[a, b]].dropna() if a in wide and b in wide else pd.DataFrame()
            corr = both[a].corr(both[b]) if len(both) > 2 else np.nan
            pairs[f"{a}-{b}"] = None if np.isnan(corr) else float(corr)
    values = [v for v in pairs.values() if v is not None]
    return pairs, float(np.mean(values)) if values else None


def _route(
    table: FeatureTable,
    ranking: np.ndarray,
    cand: Candidate,
    pooled: ProbeResult,
    cfg: DictConfig,
    embargo: pd.Timedelta,
    threads: int,
) -> dict:
    settings, symbols = cfg.plan, [str(s) for s in cfg.plan.symbols]
    rule = settings.routing
    if len(symbols) == 1:
        return {"route": "symbol", "reason": "one symbol: a pooled model would be the same model"}
    pairs, mean_corr = _label_correlation(table.frame.loc[ranking, ["timestamp", "symbol", "label"]], symbols)
    out = {"label_correlation": pairs, "mean_label_correlation": mean_corr, "pooled_skill": pooled.skill}
    if rule.mode != "auto":
        return {"route": str(rule.mode), "reason": f"routing.mode={rule.mode}", **out}
    per_symbol = {}
    for s in symbols:
        mine = ranking & (table.frame["symbol"] == s).to_numpy()
        per_symbol[s] = probe_cv(table, mine, cand.task, settings, embargo, int(cfg.seed), threads).skill
    mean_symbol = float(np.mean(list(per_symbol.values())))
    threshold, tolerance = float(rule.min_label_correlation), float(rule.pooled_tolerance)
    correlated = mean_corr is not None and mean_corr >= threshold
    pooled_ok = pooled.skill >= mean_symbol - tolerance
    corr_text = "n/a" if mean_corr is None else f"{mean_corr:.3f}"
    reason = (
        f"label correlation {corr_text} {'>=' if correlated else '<'} {threshold}; pooled skill "
        f"{pooled.skill:.4f} {'>=' if pooled_ok else '<'} mean per-symbol skill {mean_symbol:.4f} - {tolerance}"
    )
    return {
        "route": "pooled" if correlated and pooled_ok else "symbol",
        "reason": reason,
        **out,
        "symbol_skill": per_symbol,
        "mean_symbol_skill": mean_symbol,
    }


def _family_info(base: list[str], names: list[str]) -> dict[str, dict]:
    info = {}
    for name in names:
        model = compose_config([*base, f"model={name}"]).model
        window = int(model.window) if model.get("input") == "sequence" else 1
        info[name] = {"stage": str(model.stage), "tasks": list(model.get("tasks") or []), "window": window}
        if info[name]["stage"] not in STAGES:
            raise UserError(
                f"family {name} has stage {model.stage!r}; a plan runs cpu and gpu stages", f"conf/model/{name}.yaml"
            )
    return info


def _coin_overrides(symbols: list[str]) -> tuple[str, list[str]]:
    if len(symbols) == 1 and (CONF_DIR / "coin" / f"{symbols[0]}.yaml").is_file():
        return symbols[0], [f"coin={symbols[0]}"]
    name = "-".join(symbols)
    return name, [f"coin.name={name}", f"coin.symbols={_hydra_value(symbols)}"]


def _jobs(
    kept: list[Candidate], routing: dict, selected: dict, families: dict[str, dict], symbols: list[str], base: list[str]
) -> tuple[list[dict], list[dict]]:
    jobs, skipped = [], []
    for stage in STAGES:
        for cand in kept:
            route = routing[cand.name]["route"]
            coins = [symbols] if route == "pooled" else [[s] for s in symbols]
            for family, info in families.items():
                if info["stage"] != stage:
                    continue
                if info["tasks"] and cand.task.kind not in info["tasks"]:
                    skipped.append(
                        {
                            "family": family,
                            "target_name": cand.name,
                            "reason": f"{family} supports {', '.join(info['tasks'])}, not {cand.task.kind}",
                        }
                    )
                    continue
                for coin_symbols in coins:
                    coin, coin_args = _coin_overrides(coin_symbols)
                    features = selected.get(cand.name)
                    args = [*base, f"model={family}", *coin_args, *target_overrides(cand.spec)]
                    if features is not None:
                        args.append(f"features.select={_hydra_value(features)}")
                    jobs.append(
                        {
                            "id": f"{len(jobs):03d}_{family}_{coin}_{cand.name}",
                            "stage": stage,
                            "family": family,
                            "coin": coin,
                            "symbols": list(coin_symbols),
                            "route": route,
                            "target_name": cand.name,
                            "target_type": cand.spec["type"],
                            "features": features,
                            "overrides": args,
                        }
                    )
    return jobs, skipped


def verify_jobs(jobs: list[dict]) -> None:
    """Compose every job once and check it is the job it claims to be (a mismatch is a bug here)."""
    with _config_dir():
        for job in jobs:
            cfg = compose(config_name="config", overrides=job["overrides"])
            check_config(cfg)
            got = {
                "stage": str(cfg.model.stage),
                "family": str(cfg.model.name),
                "coin": str(cfg.coin.name),
                "symbols": [str(s) for s in cfg.coin.symbols],
                "target_name": f"{cfg.target.type}_h{cfg.target.horizon}",
            }
            want = {k: job[k] for k in got}
            if got != want:
                raise RuntimeError(f"job {job['id']} composes to {got}, not {want}")
            if job["features"] is not None and feature_names(cfg.features) != job["features"]:
                raise RuntimeError(f"job {job['id']} selects {feature_names(cfg.features)}, not {job['features']}")


def _views(jobs: list[dict], symbols: list[str]) -> dict:
    views = {
        "by_target": {},
        "by_symbol": {s: [] for s in symbols},
        "by_type": {},
        "by_route": {r: [] for r in ROUTES},
        "by_stage": {s: [] for s in STAGES},
    }
    for job in jobs:
        views["by_target"].setdefault(job["target_name"], []).append(job["id"])
        views["by_type"].setdefault(job["target_type"], []).append(job["id"])
        views["by_route"][job["route"]].append(job["id"])
        views["by_stage"][job["stage"]].append(job["id"])
        for s in job["symbols"]:
            views["by_symbol"][s].append(job["id"])
    return views


def plan_hash(cfg: DictConfig) -> str:
    """The training config's hash (which ignores ``plan``) combined with the plan settings."""
    blob = json.dumps(
        {"config": config_hash(cfg), "plan": OmegaConf.to_container(cfg.plan, resolve=True)},
        sort_keys=True,
        default=str,
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build_plan(cfg: DictConfig, overrides: list[str] = ()) -> dict:
    """Rank targets, features and routes on the data before the holdout test cutoff; return the plan.

    ``overrides`` are the command-line overrides ``cfg`` was composed with: the jobs carry those that are
    not the plan's own business (data, split, features, seed, ...), so each job trains on the data ranked.
    """
    started = time.perf_counter()
    check_settings(cfg)
    check_config(cfg)
    settings = cfg.plan
    symbols = [str(s) for s in settings.symbols]
    base = _base_overrides(list(overrides))
    candidates = _candidates(cfg, base)
    families = _family_info(base, [str(f) for f in settings.families])
    threads = int(cfg.trainer.num_threads or os.cpu_count() or 1)
    fraction = _fraction_before_test(cfg.split)
    embargo_candles = settings.auto_targets.embargo
    embargo_candles = int(cfg.split.embargo if embargo_candles is None else embargo_candles)

    candles = load_candles(cfg.data, symbols, int(cfg.seed))
    step = candles.step
    frames = feature_frames(candles.by_symbol, cfg.features)
    names = feature_names(cfg.features)
    window = max(info["window"] for info in families.values())
    tables = {c.name: join_labels(candles.by_symbol, frames, cfg.features, c.target, step) for c in candidates}
    # the bound first: every candidate is ranked on the same time, safe for every job the plan can emit
    symbol_sets = [symbols] + ([[s] for s in symbols] if len(symbols) > 1 else [])
    ranked_until = min(
        _earliest_test_start(tables[c.name], candles.by_symbol, c.target, step, subset, window, fraction)
        for c in candidates
        for subset in symbol_sets
    )
    log.info(
        "ranking on rows whose label ends before %s (the earliest holdout test cutoff of any job)",
        ranked_until.isoformat(),
    )

    embargo = embargo_candles * step
    # the probe's trades may read no price from the holdout test period on
    seen = dataclasses.replace(
        candles,
        by_symbol={s: c[c["timestamp"] < ranked_until].reset_index(drop=True) for s, c in candles.by_symbol.items()},
    )
    results, target_rows = {}, []
    for cand in candidates:
        t0 = time.perf_counter()
        frame = tables[cand.name].frame
        ranking = (frame["label"].notna() & (frame["purge_end"] < ranked_until)).to_numpy()
        if ranking.sum() < 100 * int(settings.auto_targets.folds):
            raise UserError(
                f"too little data to rank {cand.name}: {int(ranking.sum())} labelled rows before "
                f"{ranked_until.isoformat()}",
                "data.rows",
            )
        trading = _trading_config(cfg, cand.target) if servable(cand.task) and settings.probe.trading else None
        res = probe_cv(tables[cand.name], ranking, cand.task, settings, embargo, int(cfg.seed), threads, trading, seen)
        results[cand.name] = (res, ranking)
        log.info(
            "target %s: skill %.4f (folds %s), %s on %d rows, %.1fs",
            cand.name,
            res.skill,
            " ".join(f"{s:.4f}" for s in res.fold_skills),
            f"net expectancy {res.trades['expectancy_bps']:+.2f} bps over {res.trades['n_trades']} trades"
            if res.trades
            else "not traded"
            if servable(cand.task)
            else "not servable",
            res.rows,
            time.perf_counter() - t0,
        )

    order = sorted(candidates, key=lambda c: _rank_key(results[c.name][0], c))
    min_edge = settings.auto_targets.get("min_expectancy_bps")
    if settings.auto_targets.enabled:
        min_score = float(settings.auto_targets.min_score)
        kept = [
            c
            for c in order
            if servable(c.task)
            and results[c.name][0].skill > min_score
            and (min_edge is None or (results[c.name][0].trades or {}).get("expectancy_bps", 0.0) > float(min_edge))
        ]
        kept = kept[: int(settings.auto_targets.top_k)]
    else:
        kept = list(candidates)
    kept_names = {c.name for c in kept}
    for name in [n for n in tables if n not in kept_names]:
        del tables[name]  # only kept targets are routed
    for cand in order:
        res = results[cand.name][0]
        target_rows.append(
            {
                "name": cand.name,
                "type": cand.spec["type"],
                "horizon": int(cand.spec["horizon"]),
                "spec": cand.spec,
                "task": cand.task.kind,
                "score": res.skill,
                "fold_scores": res.fold_skills,
                "servable": servable(cand.task),
                "expectancy_bps": res.trades["expectancy_bps"] if res.trades else None,
                "probe_trades": res.trades,
                "rows": res.rows,
                "kept": cand.name in kept_names,
                "last_timestamp": res.last_timestamp.isoformat(),
                "last_label_end": res.last_label_end.isoformat(),
            }
        )

    feature_rankings, selected, routing = {}, {}, {}
    base_select = list(cfg.features.select) if cfg.features.get("select") is not None else None
    for cand in kept:
        res, ranking = results[cand.name]
        total = res.gain.sum()
        share = res.gain / total if total > 0 else np.full(len(names), 1.0 / len(names))
        ranked = sorted(zip(names, share), key=lambda kv: (-kv[1], names.index(kv[0])))
        feature_rankings[cand.name] = [{"name": n, "importance": float(v)} for n, v in ranked]
        if settings.auto_features.enabled:
            top = {n for n, _ in ranked[: int(settings.auto_features.top_n)]}
            selected[cand.name] = [n for n in names if n in top]
        else:
            selected[cand.name] = list(names) if base_select is not None else None
        routing[cand.name] = _route(tables[cand.name], ranking, cand, res, cfg, embargo, threads)
        log.info(
            "target %s: %d features, route %s (%s)",
            cand.name,
            len(selected[cand.name] or names),
            routing[cand.name]["route"],
            routing[cand.name]["reason"],
        )

    if not kept:
        best = target_rows[0] if target_rows else None
        raise UserError(
            f"no candidate target scored above min_score {settings.auto_targets.min_score}"
            + (f" (best: {best['name']} {best['score']:+.4f})" if best else "")
            + "; nothing to train, so no plan was written",
            "plan.auto_targets.min_score",
        )
    # every job carries the bound: the pipeline refuses a test period that starts inside the ranked time
    base = [*base, f"plan.ranked_until='{ranked_until.isoformat()}'"]
    jobs, skipped = _jobs(kept, routing, selected, families, symbols, base)
    verify_jobs(jobs)
    for job in jobs:
        del job["features"]  # the selection is in the overrides and in rankings.features
    created_at = utc_now()
    digest = plan_hash(cfg)
    plan_id = f"{datetime.fromisoformat(created_at).strftime('%Y%m%dT%H%M%S')}_{digest[:8]}"
    log.info("plan %s: %d jobs in %.1fs", plan_id, len(jobs), time.perf_counter() - started)
    return {
        "version": 1,
        "plan_id": plan_id,
        "metadata": {
            "run_id": new_run_id(),
            "git_commit": git_commit(Path(cfg.paths.root_dir)),
            "config_hash": digest,
            "training_config_hash": config_hash(cfg),
            "created_at": created_at,
            "data_fingerprint": data_fingerprint(candles.by_symbol),
            "ranked_until": ranked_until.isoformat(),
            "ranking": {
                "split": cfg.split.type,
                "fraction_before_test": fraction,
                "longest_window": window,
                "cv": "purged_kfold",
                "folds": int(settings.auto_targets.folds),
                "embargo_candles": embargo_candles,
                "seed": int(cfg.seed),
                "feature_candidates": names,
            },
            "data": {
                "provider": candles.provider,
                "symbols": symbols,
                "timeframe": candles.timeframe,
                "candles": {s: len(c) for s, c in candles.by_symbol.items()},
                "sources": candles.sources,
            },
            "base_overrides": base,
            "settings": OmegaConf.to_container(settings, resolve=True),
        },
        "rankings": {
            "targets": target_rows,
            "features": feature_rankings,
            "selected_features": selected,
            "routing": routing,
        },
        "jobs": jobs,
        "skipped": skipped,
        "views": _views(jobs, symbols),
    }


def plan_path(plan: dict, cfg: DictConfig) -> Path:
    if cfg.plan.get("output"):
        return Path(str(cfg.plan.output)).expanduser()
    return Path(cfg.paths.output_dir) / "plans" / plan["plan_id"] / PLAN_FILE


def write_plan(plan: dict, cfg: DictConfig) -> Path:
    path = plan_path(plan, cfg)
    write_json_atomic(path, plan)
    return path


def summary(plan: dict, path: Path) -> str:
    r = plan["rankings"]
    lines = [
        f"plan {plan['plan_id']}: ranked on labels ending before {plan['metadata']['ranked_until']}",
        "targets (net = mean net-of-cost return per held-out trade of the policy chosen on each fold's "
        "validation; skill = 1 - loss / prior loss; purged CV):",
    ]
    for t in r["targets"]:
        net = (
            "not servable (the runtime trades classifiers only)"
            if not t.get("servable")
            else "not traded (plan.probe.trading=false)"
            if t.get("expectancy_bps") is None
            else f"net {t['expectancy_bps']:+7.2f} bps over {t['probe_trades']['n_trades']:>5} trades"
        )
        lines.append(f"  {'kept' if t['kept'] else 'drop'}  {t['name']:<24} skill {t['score']:+.4f}  {net}")
    for name, chosen in r["selected_features"].items():
        lines.append(
            f"features {name}: "
            + ("all of features.sets" if chosen is None else f"{len(chosen)} [{', '.join(chosen)}]")
        )
    for name, route in r["routing"].items():
        lines.append(f"route {name}: {route['route']} ({route['reason']})")
    stages = ", ".join(f"{stage} {len(ids)}" for stage, ids in plan["views"]["by_stage"].items())
    lines.append(f"jobs: {len(plan['jobs'])} ({stages}); skipped {len(plan['skipped'])}")
    lines.append(f"plan file: {path}")
    return "\n".join(lines)


USAGE = """usage: python -m trainer.plan [key=value ...]
Ranks candidate targets and features on the time before the holdout test period and writes
<paths.output_dir>/plans/<plan_id>/master_training_plan.json (or plan.output). Settings: plan.* (conf/plan/
default.yaml), e.g. plan.symbols=[BTC,ETH] plan.families=[lightgbm,lstm] plan.auto_targets.top_k=3; the data,
split and features as for train.py (data.rows=50000 features=full). Exit codes: 0 written, 2 user error."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    os.environ.setdefault("CANDLELAB_ROOT", str(ROOT))
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(levelname)s] %(message)s", datefmt="%H:%M:%S")
    show_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        try:
            cfg = compose_config(argv)
        except HydraException as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(first, "command line") from None
        plan = build_plan(cfg, argv)
        path = write_plan(plan, cfg)
    except UserError as exc:
        if show_traceback:
            raise
        sys.stderr.write(exc.line() + "\n")
        return 2
    print(summary(plan, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
