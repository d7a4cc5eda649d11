"""The training-plan generator: feature selection, honest target/feature ranking (never the test period),
routing, the plan file and its views, every job's overrides composing, and the CLI as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import UserError
from data.features import feature_names
from data.providers import load_candles
from data.splits import make_folds
from data.table import build_table
from tests.conftest import FAST_DATA, ROOT, make_cfg
from trainer import plan as planner

# Tiny synthetic data and a small probe: every plan below takes a few seconds on one thread.
SMALL = ["data.rows=8000", "trainer.num_threads=1", "plan.probe.n_estimators=40", "plan.auto_targets.folds=3"]
ONE_TARGET = ["plan.targets=[{type:direction,horizon:15}]", "plan.auto_targets.min_score=-1.0"]


def make_plan(*overrides: str) -> dict:
    args = [*SMALL, *overrides]
    return planner.build_plan(make_cfg(*args), args)


@pytest.fixture(scope="module")
def plan_args() -> list[str]:
    return [*SMALL, "plan.families=[lightgbm,lstm]", "plan.auto_features.top_n=4", "plan.routing.mode=symbol"]


@pytest.fixture(scope="module")
def plan(plan_args) -> dict:
    return planner.build_plan(make_cfg(*plan_args), plan_args)


def _select(job: dict) -> list[str] | None:
    found = [o.split("=", 1)[1] for o in job["overrides"] if o.startswith("features.select=")]
    return found[0].strip("[]").split(",") if found else None


def test_feature_select_trains_and_reloads_on_the_selected_features(tmp_path):
    cfg = make_cfg(
        "model=lightgbm", *FAST_DATA, "trainer.num_threads=1", "features.select=[atr,ret_1,rsi]", run_dir=tmp_path
    )
    assert feature_names(cfg.features) == ["ret_1", "rsi", "atr"]  # the sets' order, not the list's
    from trainer import load_model, train

    result = train(cfg)
    assert result.status == "completed"
    model = load_model(result.model_path)
    assert model.card["feature_names"] == ["ret_1", "rsi", "atr"]
    assert model.scaler.names == ["ret_1", "rsi", "atr"]
    evaluated = pd.read_parquet(tmp_path / "predictions_test.parquet")
    candles = load_candles(cfg.data, ["BTC"], cfg.seed).by_symbol["BTC"]
    out = pd.Series(model.predict_proba(candles)["p_up"].to_numpy(), index=candles["timestamp"])
    np.testing.assert_allclose(out.loc[evaluated["timestamp"]].to_numpy(), evaluated["p_up"].to_numpy(), rtol=0, atol=0)
    with pytest.raises(UserError, match=r"unknown feature\(s\) \['astrology'\]") as err:
        feature_names(make_cfg("features.select=[rsi,astrology]").features)
    assert err.value.where == "features.select"


def test_plan_file_structure_views_and_metadata(plan):
    assert plan["version"] == 1 and set(plan) >= {"plan_id", "metadata", "rankings", "jobs", "views"}
    meta = plan["metadata"]
    assert plan["plan_id"].endswith("_" + meta["config_hash"][:8])
    for key in ("run_id", "config_hash", "created_at", "data_fingerprint", "ranked_until"):
        assert meta[key], key
    assert "git_commit" in meta
    assert meta["data"]["symbols"] == ["BTC", "ETH"] and meta["data"]["candles"] == {"BTC": 8000, "ETH": 8000}
    assert meta["data"]["provider"] == "synthetic" and meta["data"]["timeframe"] == "1m"
    assert meta["settings"]["families"] == ["lightgbm", "lstm"]
    targets = plan["rankings"]["targets"]
    # servable targets first, by net expectancy then skill; the regression target last, never kept
    ranks = [(not t["servable"], -(t["expectancy_bps"] or 0.0), -t["score"]) for t in targets]
    assert ranks == sorted(ranks) and len(targets) == 4
    assert [t["servable"] for t in targets] == [True, True, True, False]
    kept = [t["name"] for t in targets if t["kept"]]
    assert len(kept) == 2 and all(len(t["fold_scores"]) == 3 for t in targets)

    jobs = plan["jobs"]
    ids = [j["id"] for j in jobs]
    assert len(set(ids)) == len(ids) == len(kept) * 2 * 2  # targets x families x symbols
    stages = [j["stage"] for j in jobs]
    assert stages == sorted(stages, key=["cpu", "gpu"].index) and set(stages) == {"cpu", "gpu"}
    for i, job in enumerate(jobs):
        assert job["id"] == f"{i:03d}_{job['family']}_{job['coin']}_{job['target_name']}"
        assert job["stage"] == {"lightgbm": "cpu", "lstm": "gpu"}[job["family"]]
        assert job["target_name"] in kept and job["target_name"].startswith(job["target_type"] + "_h")
    views = plan["views"]
    expected = {
        "by_target": {t: [j["id"] for j in jobs if j["target_name"] == t] for t in kept},
        "by_symbol": {s: [j["id"] for j in jobs if s in j["symbols"]] for s in ("BTC", "ETH")},
        "by_type": {t: [j["id"] for j in jobs if j["target_type"] == t] for t in {j["target_type"] for j in jobs}},
        "by_route": {"pooled": [], "symbol": ids},
        "by_stage": {s: [j["id"] for j in jobs if j["stage"] == s] for s in ("cpu", "gpu")},
    }
    assert views == expected
    for name, listed in views.items():  # every job appears in each view the right number of times
        flat = [i for group in listed.values() for i in group]
        assert sorted(flat) == sorted(ids), name


def test_every_jobs_overrides_compose_to_that_job(plan):
    for job in plan["jobs"]:
        cfg = make_cfg(*job["overrides"])
        assert cfg.model.name == job["family"] and cfg.model.stage == job["stage"]
        assert list(cfg.coin.symbols) == job["symbols"] and cfg.coin.name == job["coin"]
        assert f"{cfg.target.type}_h{cfg.target.horizon}" == job["target_name"]
        assert cfg.data.rows == 8000  # the data the plan ranked
        assert feature_names(cfg.features) == _select(job)


def test_auto_features_keep_top_n_valid_names_in_the_job_overrides(plan):
    candidates = plan["metadata"]["ranking"]["feature_candidates"]
    assert len(candidates) == 11
    for name, ranked in plan["rankings"]["features"].items():
        assert sorted(r["name"] for r in ranked) == sorted(candidates)
        assert sum(r["importance"] for r in ranked) == pytest.approx(1.0)
        importances = [r["importance"] for r in ranked]
        assert importances == sorted(importances, reverse=True)
        top = {r["name"] for r in ranked[:4]}
        for job_id in plan["views"]["by_target"][name]:
            job = next(j for j in plan["jobs"] if j["id"] == job_id)
            assert _select(job) == [c for c in candidates if c in top]


def test_noise_targets_rank_below_the_planted_signal(plan):
    signal = {t["name"]: t["score"] for t in plan["rankings"]["targets"]}
    assert signal["direction_h15"] > 0.01 and signal["direction_h5"] > 0.01
    noise_args = ("data.rows=20000", "data.signal_strength=0", "plan.families=[lightgbm]")
    noise = make_plan(*noise_args, "plan.auto_targets.enabled=false")  # keep all: only the scores matter here
    scores = {t["name"]: t["score"] for t in noise["rankings"]["targets"]}
    assert max(scores.values()) <= 0.01, scores
    assert all(signal[n] > scores[n] for n in scores if n.startswith("direction"))
    # with a floor nothing clears, the generator refuses to write an empty plan
    with pytest.raises(UserError, match="nothing to train") as err:
        make_plan(*noise_args, "plan.auto_targets.min_score=0.01")
    assert err.value.where == "plan.auto_targets.min_score"


def test_a_job_whose_test_period_the_plan_saw_is_refused(plan, tmp_path):
    from trainer import train

    job = plan["jobs"][0]
    bound = [o for o in job["overrides"] if o.startswith("plan.ranked_until=")]
    assert bound == [f"plan.ranked_until='{plan['metadata']['ranked_until']}'"]
    # the same job with a longer test period (an earlier cutoff) reaches back into the ranked time
    cfg = make_cfg(*job["overrides"], "split.train=0.3", "logger=none", run_dir=tmp_path)
    with pytest.raises(UserError, match="inside the period the training plan was ranked on") as err:
        train(cfg)
    assert err.value.where == "plan.ranked_until"


def _job_test_start(job: dict, *extra: str) -> pd.Timestamp:
    """The job's holdout test cutoff, computed as the pipeline computes it for that job."""
    cfg = make_cfg(*job["overrides"], *extra)
    candles = load_candles(cfg.data, list(cfg.coin.symbols), cfg.seed)
    table = build_table(candles.by_symbol, cfg.features, cfg.target, candles.step)
    window = int(cfg.model.window) if cfg.model.input == "sequence" else 1
    eligible = table.eligible_rows(window) & table.frame["label"].notna().to_numpy()
    fold = make_folds(cfg.split, table.frame["timestamp"], table.frame["purge_end"], eligible, table.step)[0]
    return pd.Timestamp(fold.cutoffs["test_start"])


def test_ranking_never_reads_the_holdout_test_period(plan, plan_args):
    until = pd.Timestamp(plan["metadata"]["ranked_until"])
    for t in plan["rankings"]["targets"]:
        assert pd.Timestamp(t["last_label_end"]) < until
    for job in plan["jobs"]:
        assert until <= _job_test_start(job), job["id"]
        # any selection the ranking could have made: the shortest warm-up starts the job's table earliest
        assert until <= _job_test_start(job, "features.select=[ret_1]"), job["id"]

    # Rewrite every candle at or after ranked_until: the rankings must not move by a single bit.
    real = planner.load_candles

    def rewritten(data, symbols, seed):
        candles = real(data, symbols, seed)
        rng = np.random.default_rng(7)
        for sym, c in candles.by_symbol.items():
            late = (c["timestamp"] >= until).to_numpy()
            walk = np.exp(np.cumsum(rng.normal(0, 0.01, late.sum())))
            c = c.copy()
            for col in ("open", "high", "low", "close"):
                c.loc[late, col] = c.loc[late, col].to_numpy() * walk
            c.loc[late, "volume"] = c.loc[late, "volume"].to_numpy() * rng.uniform(0.2, 5.0, late.sum())
            candles.by_symbol[sym] = c
        return candles

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planner, "load_candles", rewritten)
        again = planner.build_plan(make_cfg(*plan_args), plan_args)
    assert again["metadata"]["data_fingerprint"] != plan["metadata"]["data_fingerprint"]
    assert again["metadata"]["ranked_until"] == plan["metadata"]["ranked_until"]
    assert again["rankings"] == plan["rankings"]
    assert [j["overrides"] for j in again["jobs"]] == [j["overrides"] for j in plan["jobs"]]


def _rule_holds(route: dict, settings: dict) -> bool:
    """The auto rule, applied to the statistics the plan recorded."""
    pooled = (
        route["mean_label_correlation"] is not None
        and route["mean_label_correlation"] >= settings["routing"]["min_label_correlation"]
        and route["pooled_skill"] >= route["mean_symbol_skill"] - settings["routing"]["pooled_tolerance"]
    )
    return route["route"] == ("pooled" if pooled else "symbol")


@pytest.mark.parametrize("mode", ["pooled", "symbol"])
def test_forced_routing_yields_the_right_jobs(mode):
    p = make_plan(*ONE_TARGET, "plan.families=[lightgbm,lstm]", f"plan.routing.mode={mode}")
    assert p["rankings"]["routing"]["direction_h15"]["route"] == mode
    coins = {"pooled": [("BTC-ETH", ["BTC", "ETH"])], "symbol": [("BTC", ["BTC"]), ("ETH", ["ETH"])]}[mode]
    got = [(j["family"], j["coin"], j["symbols"], j["route"]) for j in p["jobs"]]
    assert got == [(f, c, s, mode) for f in ("lightgbm", "lstm") for c, s in coins]
    assert p["views"]["by_route"][mode] == [j["id"] for j in p["jobs"]]
    pooled = [j for j in p["jobs"] if j["route"] == "pooled"]
    for job in pooled:
        assert "coin.name=BTC-ETH" in job["overrides"] and "coin.symbols=[BTC,ETH]" in job["overrides"]
        assert job["id"] in p["views"]["by_symbol"]["BTC"] and job["id"] in p["views"]["by_symbol"]["ETH"]


def test_auto_routing_pools_correlated_coins_and_splits_independent_ones():
    common = [*ONE_TARGET, "plan.families=[lightgbm]", "plan.routing.pooled_tolerance=1.0"]
    together = make_plan(*common, "data.correlation=0.9")
    apart = make_plan(*common, "data.correlation=0.0", "data.signal_correlation=0.0")
    r_together = together["rankings"]["routing"]["direction_h15"]
    r_apart = apart["rankings"]["routing"]["direction_h15"]
    assert r_together["mean_label_correlation"] >= 0.3 > r_apart["mean_label_correlation"]
    assert abs(r_apart["mean_label_correlation"]) < 0.1
    assert r_together["route"] == "pooled" and [j["coin"] for j in together["jobs"]] == ["BTC-ETH"]
    assert r_apart["route"] == "symbol" and [j["coin"] for j in apart["jobs"]] == ["BTC", "ETH"]
    for p, r in ((together, r_together), (apart, r_apart)):
        assert set(r["symbol_skill"]) == {"BTC", "ETH"}
        assert _rule_holds(r, p["metadata"]["settings"])
    # With no tolerance the skill comparison decides too, exactly as recorded.
    strict = make_plan(
        *ONE_TARGET, "plan.families=[lightgbm]", "data.correlation=0.9", "plan.routing.pooled_tolerance=0.0"
    )
    assert _rule_holds(strict["rankings"]["routing"]["direction_h15"], strict["metadata"]["settings"])


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CANDLELAB_OUTPUT_DIR": str(tmp_path)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "trainer.plan", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_writes_the_plan_and_refuses_an_unknown_family(tmp_path):
    done = _cli(tmp_path, *SMALL, *ONE_TARGET, "plan.families=[lightgbm]")
    assert done.returncode == 0, done.stderr
    written = list((tmp_path / "plans").glob("*/master_training_plan.json"))
    assert len(written) == 1 and str(written[0]) in done.stdout
    p = json.loads(written[0].read_text())
    assert written[0].parent.name == p["plan_id"] and len(p["jobs"]) >= 1
    assert "direction_h15" in done.stdout and "jobs:" in done.stdout
    assert "target direction_h15: skill" in done.stderr  # progress goes through logging
    assert not list((tmp_path / "plans").rglob("*.tmp"))  # written atomically

    bad = _cli(tmp_path, "plan.families=[lightgbm,astrology]")
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith("(plan.families)")
    assert "astrology" in lines[0] and "Traceback" not in bad.stderr


def test_skill_is_zero_for_the_training_prior_and_one_for_a_perfect_call():
    from models.base import Task

    y_train = np.array([0, 0, 0, 1] * 25)
    y = np.array([0, 1, 1, 0] * 10)
    prior_up = (y_train.sum() + 1.0) / (len(y_train) + 2)
    assert planner._skill(Task("binary", 2), np.full(len(y), prior_up), y, y_train) == pytest.approx(0.0)
    assert planner._skill(Task("binary", 2), y.astype(float), y, y_train) == pytest.approx(1.0)
    r_train, r = np.array([0.1, 0.3, 0.2]), np.array([0.5, -0.2, 0.0, 0.4])
    assert planner._skill(Task("regression", None), np.full(len(r), 0.2), r, r_train) == pytest.approx(0.0)
    assert planner._skill(Task("regression", None), r, r, r_train) == pytest.approx(1.0)
