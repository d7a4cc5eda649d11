"""What reads a model's economics: the registry ranks and promotes on them, the runtime trades exactly the
card's policy, the plan marks what the runtime cannot serve, and PBO measures selection over competing runs."""

import json
import math

import numpy as np
import pytest

from trainer.registry import Registry
from trainer.registry import main as registry_main
from trainer.result import RunResult
from trainer.selection import probability_of_backtest_overfitting

# ---------------------------------------------------------------- PBO


def test_pbo_hand_checked_two_configs_two_partitions():
    # A: block 0 [1, 3] (SR 1.414), block 1 [0, 2] (SR 0.707); B: block 0 [0, 1] (SR 0.707), block 1 [1, 4] (SR 1.179)
    overfit = np.array([[1.0, 0.0], [3.0, 1.0], [0.0, 1.0], [2.0, 4.0]])
    got = probability_of_backtest_overfitting(overfit, 2)
    # IS block 0 picks A, which is worst on block 1; IS block 1 picks B, worst on block 0: rank 1 of 2 both times
    assert got["pbo"] == 1.0 and got["median_logit"] == pytest.approx(math.log(0.5))
    assert (got["n_splits"], got["n_configurations"], got["n_periods"]) == (2, 2, 4)
    # B block 0 [2, 5] (SR 1.650): B is best in every half, in sample and out: never overfit
    honest = overfit.copy()
    honest[:2, 1] = [2.0, 5.0]
    got = probability_of_backtest_overfitting(honest, 2)
    assert got["pbo"] == 0.0 and got["median_logit"] == pytest.approx(math.log(2.0))


def test_pbo_noise_is_a_coin_flip_and_a_dominant_config_is_not_overfit():
    noise = [
        probability_of_backtest_overfitting(np.random.default_rng(seed).normal(0, 0.01, (256, 10)), 8)["pbo"]
        for seed in range(30)
    ]
    assert 0.4 < np.mean(noise) < 0.6
    rng = np.random.default_rng(7)
    returns = rng.normal(0, 0.01, (256, 10))
    returns[:, 3] += 0.005  # a real edge of half a standard deviation per period
    got = probability_of_backtest_overfitting(returns)  # default 16 partitions: C(16, 8) splits
    assert got["n_splits"] == 12870 and got["pbo"] < 0.02


def test_pbo_refuses_what_it_cannot_split():
    for matrix, s in (
        (np.zeros((64, 1)), 8),
        (np.zeros((10, 3)), 8),
        (np.zeros((64, 3)), 7),
        (np.full((64, 3), np.nan), 8),
    ):
        with pytest.raises(ValueError):
            probability_of_backtest_overfitting(matrix, s)


# ---------------------------------------------------------------- registry

TIERS = [
    {"tier": "0.50-0.55", "n": 400, "mean_confidence": 0.52, "observed": 0.51, "gap": -0.01},
    {"tier": "0.55-0.60", "n": 120, "mean_confidence": 0.57, "observed": 0.6, "gap": 0.03},
]


def _record(config: str, accuracy: float, passed: bool, dsr: float, net: float, pf: float, trades: int) -> dict:
    return {
        "family": "lightgbm",
        "symbol": "BTC",
        "timeframe": "1h",
        "target": "direction_h4",
        "headline": "accuracy",
        "headline_value": accuracy,
        "metrics": {"accuracy": accuracy, "auc": 0.55, "confidence_tiers": TIERS},
        "gates": {"passed": True, "reasons": []},
        "run_id": f"run-{config}",
        "run_dir": None,
        "git_commit": None,
        "config_hash": config,
        "data_fingerprint": "d",
        "economics": {
            "trading": {
                "total_return": net,
                "profit_factor": pf,
                "n_trades": trades,
                "win_rate": 0.5,
                "avg_trade_return": net / trades,
                "sharpe": 1.0,
            },
            "policy": {
                "long_threshold": 0.56,
                "short_threshold": None,
                "horizon": 4,
                "min_edge_bps": 0.0,
                "chosen_on": "validation",
                "validation": {"expectancy_bps": 6.5, "n_trades": 80},
            },
            "economic": {
                "passed": passed,
                "n_trials": 12,
                "dsr": {"dsr": dsr},
                "checks": {"profit_factor": {"value": pf, "limit": 1.0, "passed": pf > 1}},
            },
            "verdict": {
                "predictive": True,
                "tradeable": passed,
                "label": "tradeable" if passed else "predictive, not tradeable after costs",
            },
        },
    }


def _register(reg: Registry, record: dict) -> dict:
    store = reg.root.parent / record["run_id"]
    store.mkdir()
    (store / "model_card.json").write_text(json.dumps({"run_id": record["run_id"]}))
    return reg.register(record, store)


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path / "registry")
    rows = {}
    # the most accurate model loses money after costs: registered, never promoted, ranked last
    rows["lossy"] = _register(reg, _record("lossy", 0.61, False, 0.10, -0.42, 0.61, 300))
    rows["good"] = _register(reg, _record("good", 0.53, True, 0.97, 0.12, 1.35, 90))
    rows["better"] = _register(reg, _record("better", 0.52, True, 0.99, 0.08, 1.30, 70))
    return tmp_path / "registry", rows


def test_economic_checks_decide_promotion_not_accuracy(registry):
    root, rows = registry
    assert not rows["lossy"]["promoted"] and rows["lossy"]["stage"] == "candidate"  # gates passed, economics not
    assert rows["good"]["promoted"]
    assert rows["better"]["promoted"]  # higher DSR wins, though less accurate and a lower net return
    reg = Registry(root)
    assert reg.promoted("BTC/1h/direction_h4")["config_hash"] == "better"
    assert reg.get(rows["lossy"]["model_id"])["economics"]["policy"]["long_threshold"] == 0.56
    # a better-scoring model that failed its economic checks does not move the promoted one
    late = _register(reg, _record("late", 0.70, False, 0.999, 0.5, 3.0, 40))
    assert not late["promoted"] and reg.promoted("BTC/1h/direction_h4")["config_hash"] == "better"


def test_list_show_compare_print_the_economics(registry, capsys):
    root, rows = registry
    assert registry_main(["--root", str(root), "list"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[5:11] == ["headline", "net", "pf", "trades", "dsr", "econ"]
    assert "-42.00%" in out and "0.61" in out and "300" in out and "0.100" in out and "fail" in out
    assert "+12.00%" in out and "1.35" in out and "0.970" in out

    lossy = f"{rows['lossy']['model_id']}:{rows['lossy']['version']}"
    assert registry_main(["--root", str(root), "show", lossy]) == 0
    out = capsys.readouterr().out
    assert "economic          fail (trials 12, DSR 0.100)" in out
    assert "verdict           predictive, not tradeable after costs" in out
    assert "long p>=0.56, never short" not in out and "long p>=0.56, hold 4 candles" in out
    assert "6.50 bps/trade over 80 trades" in out and "net_return      -42.00%" in out
    # confidence tiers as a table, not a raw dict
    assert "'tier'" not in out and '"tier"' not in out
    assert any(line.split() == ["0.55-0.60", "120", "0.570", "0.600", "+0.030"] for line in out.splitlines())

    refs = [f"{r['model_id']}:{r['version']}" for r in (rows["lossy"], rows["good"], rows["better"])]
    assert registry_main(["--root", str(root), "compare", *refs]) == 0
    out = capsys.readouterr().out.splitlines()
    # best economic score first (DSR, then net return), whatever the accuracy says
    assert out[0].split()[1:] == [refs[2], refs[1], refs[0]]
    cells = {line.split()[0]: line.split()[1:] for line in out[2:]}
    assert cells["dsr"] == ["0.990", "0.970", "0.100"] and cells["net_return"] == ["+8.00%", "+12.00%", "-42.00%"]
    assert cells["profit_factor"] == ["1.30", "1.35", "0.61"] and cells["trades"] == ["70", "90", "300"]
    assert cells["accuracy"] == ["0.5200", "0.5300", "0.6100"]
    assert cells["confidence_tiers"][0] == "0.50:0.51/400"


def test_a_registry_created_before_economics_is_read_and_extended(tmp_path):
    import sqlite3

    root = tmp_path / "registry"
    Registry(root)
    with sqlite3.connect(root / "registry.db") as con:  # the older schema: no economics column
        con.execute("ALTER TABLE models DROP COLUMN economics_json")
    record = _record("old", 0.55, True, 0.9, 0.1, 1.2, 50)
    del record["economics"]
    row = _register(Registry(root), record)
    assert row["economics"] == {} and row["promoted"]  # no economic evidence recorded: the headline rule


# ---------------------------------------------------------------- runtime

SLOT = "synthetic-BTC/1m/direction_h15"
TRAIN = [
    "model=lightgbm",
    "data.rows=20000",
    "trainer.num_threads=1",
    "logger=none",
    "eval.leakage.shuffled_control=false",
    "eval.policy.mode=fixed",
    "eval.trading.threshold=0.51",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A LightGBM on synthetic candles whose card policy trades (fixed at 0.51), promoted by force."""
    from tests.conftest import make_cfg
    from trainer import train

    out = tmp_path_factory.mktemp("served")
    cfg = make_cfg(*TRAIN, f"paths.output_dir={out}", run_dir=out / "run")
    result = train(cfg)
    assert result.status == "completed"
    reg = result.registry
    Registry(out / "registry").promote(reg["model_id"], reg["version"], force=True)
    return out, cfg, result


def _serve_copy(result: RunResult, root, tmp, run_id: str, policy) -> None:
    """The trained model registered and promoted in a registry of its own, its card's policy replaced."""
    import shutil
    from pathlib import Path

    staged = tmp / f"model-{run_id}"
    shutil.copytree(Path(result.model_path), staged)
    card = json.loads((staged / "model_card.json").read_text())
    card["run_id"] = run_id
    if policy is None:
        card.pop("policy", None)
    else:
        card["policy"] = policy
    (staged / "model_card.json").write_text(json.dumps(card))
    reg = Registry(root)
    row = reg.register(
        {
            "family": "lightgbm",
            "symbol": "synthetic-BTC",
            "timeframe": "1m",
            "target": "direction_h15",
            "headline": "accuracy",
            "headline_value": 0.5,
            "metrics": {},
            "gates": {"passed": False},
            "run_id": run_id,
            "run_dir": None,
            "git_commit": None,
            "config_hash": run_id,
            "data_fingerprint": "d",
        },
        staged,
        auto_promote=False,
    )
    reg.promote(row["model_id"], row["version"], force=True)


def _runtime_sides(cfg, result, engine, n: int = 40):
    from pathlib import Path

    import pandas as pd

    from data.providers import load_candles

    evaluated = pd.read_parquet(Path(result.run.run_dir) / "predictions_test.parquet")
    candles = load_candles(cfg.data, ["BTC"], cfg.seed).by_symbol["BTC"]
    picks = evaluated.iloc[np.linspace(0, len(evaluated) - 1, n).astype(int)]
    position = pd.Index(candles["timestamp"])
    sides = [engine.on_candle("BTC", candles.iloc[: position.get_loc(ts) + 1]).side for ts in picks["timestamp"]]
    return np.array(sides), picks


def test_runtime_trades_exactly_the_cards_policy(served, tmp_path, caplog):
    from trainer.policy import DecisionPolicy
    from trainer.runtime.signals import SignalEngine, load_promoted

    out, cfg, result = served
    with caplog.at_level("INFO", logger="candlelab.runtime"):
        [model] = load_promoted(out / "registry", [SLOT])
    card = json.loads((model.model.directory / "model_card.json").read_text())
    assert model.policy == DecisionPolicy.from_dict(card["policy"]) and card["policy"] == result.policy
    assert (model.policy.long_threshold, model.policy.short_threshold) == (0.51, 0.51)
    messages = [r.getMessage() for r in caplog.records]
    assert any("did not pass its economic checks" in m for m in messages)  # forced promotion: warned
    assert any("expected net edge per trade" in m and "test period" in m for m in messages)
    engine = SignalEngine([model], max_per_hour=None, max_high_per_hour=None)
    got, picks = _runtime_sides(cfg, result, engine)
    want = model.policy.sides(picks["p_up"].to_numpy(), picks["p_down"].to_numpy())  # as the evaluation traded
    np.testing.assert_array_equal(got, want)
    assert (want != 0).sum() >= 5  # the comparison means something: the policy trades at these candles

    # another card policy on the same model: the runtime follows the card, not a threshold of its own
    root = tmp_path / "registry"
    _serve_copy(
        result, root, tmp_path, "run-long-only", {"long_threshold": 0.0, "short_threshold": None, "horizon": 15}
    )
    [long_only] = load_promoted(root, [SLOT])
    got, picks = _runtime_sides(cfg, result, SignalEngine([long_only], max_per_hour=None, max_high_per_hour=None))
    np.testing.assert_array_equal(got, np.where(picks["p_up"] > picks["p_down"], 1, 0))


def test_runtime_refuses_a_model_without_a_policy(served, tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    out, cfg, result = served
    root = tmp_path / "registry"
    _serve_copy(result, root, tmp_path, "run-no-policy", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.runtime",
            "mode=dry",
            "data.rows=20000",
            "logger=none",
            f"runtime.registry_root={root}",
            f"runtime.run_dir={tmp_path / 'session'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()
    assert len([line for line in last if line.startswith("error:")]) == 1 and "Traceback" not in proc.stderr
    assert last[-1].startswith("error: ") and "no decision policy" in last[-1]
    assert "retrain it with this version" in last[-1] and last[-1].endswith(f"({SLOT})")


# ---------------------------------------------------------------- plan


def test_plan_ranks_servable_targets_on_net_expectancy_and_marks_the_rest(tmp_path):
    from tests.conftest import make_cfg
    from trainer import plan as planner

    free = [
        "eval.trading.fee_bps=0",
        "eval.trading.slippage_bps=0",
        "eval.trading.spread_bps=0",
        "eval.trading.spread_from_features=false",
    ]
    args = [
        "data.rows=8000",
        "trainer.num_threads=1",
        "plan.probe.n_estimators=40",
        "plan.auto_targets.folds=3",
        "plan.routing.mode=pooled",
        "plan.families=[lightgbm]",
        "plan.auto_targets.min_score=-1.0",
        "plan.targets=[{type:forward_return,horizon:15},{type:direction,horizon:15}]",
        *free,
    ]
    plan = planner.build_plan(make_cfg(*args), args)
    rows = {t["name"]: t for t in plan["rankings"]["targets"]}
    regression, direction = rows["forward_return_h15"], rows["direction_h15"]
    # the regression target is scored, but nothing can serve it: marked, never kept (min_score lets any skill in)
    assert not regression["servable"] and not regression["kept"] and regression["expectancy_bps"] is None
    assert [t["name"] for t in plan["rankings"]["targets"]] == ["direction_h15", "forward_return_h15"]
    assert {j["target_name"] for j in plan["jobs"]} == {"direction_h15"}
    # the classifier is traded per fold with the policy its validation rows chose, after costs (none here)
    trades = direction["probe_trades"]
    assert direction["servable"] and direction["kept"] and trades["n_trades"] > 0
    assert len(trades["folds"]) == 3 and all(f["policy"]["chosen_on"] == "validation" for f in trades["folds"])
    assert sum(f["trades"] for f in trades["folds"]) == trades["n_trades"]
    assert direction["expectancy_bps"] == pytest.approx(trades["total_net_return"] / trades["n_trades"] * 1e4)
    text = planner.summary(plan, tmp_path / "plan.json")
    assert "forward_return_h15" in text and "not servable" in text and "bps over" in text
    # without probe trades servable targets still come first, ranked on skill
    quick = planner.build_plan(make_cfg(*args, "plan.probe.trading=false"), [*args, "plan.probe.trading=false"])
    first, last = quick["rankings"]["targets"]
    assert (first["name"], first["expectancy_bps"], first["kept"]) == ("direction_h15", None, True)
    assert not last["servable"] and "not traded" in planner.summary(quick, tmp_path / "quick.json")
    # a bar on the expectancy keeps nothing when no target clears it
    with pytest.raises(Exception, match="no candidate target"):
        planner.build_plan(
            make_cfg(*args, "plan.auto_targets.min_expectancy_bps=10000"),
            [*args, "plan.auto_targets.min_expectancy_bps=10000"],
        )


# ---------------------------------------------------------------- plan sweeper: trials per slot and PBO


def test_plan_sweeper_tells_each_job_its_slot_trials_and_reports_pbo(tmp_path):
    from tests.plan_sweeper.test_plan_sweeper import plan_job, result_of, sweep, write_plan

    jobs = [
        plan_job(0, "lightgbm", ["BTC"], "direction", extra=("model.params.num_leaves=7",)),
        plan_job(1, "lightgbm", ["BTC"], "direction", extra=("model.params.num_leaves=31",)),
        plan_job(2, "lightgbm", ["ETH"], "direction"),
    ]
    write_plan(tmp_path, "p_sel", jobs)
    # a fixed policy that trades at no cost: every job leaves test trades for the PBO grid
    cli = [
        "logger=none",
        "eval.leakage.shuffled_control=false",
        "model.n_estimators=20",
        "eval.policy.mode=fixed",
        "eval.trading.threshold=0.5",
        "eval.trading.fee_bps=0",
        "eval.trading.slippage_bps=0",
        "eval.trading.spread_bps=0",
        "eval.trading.spread_from_features=false",
        "hydra.sweeper.pbo_partitions=4",
    ]
    proc = sweep(tmp_path, *cli)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = tmp_path / "plans" / "p_sel" / "runs"
    trials = {j["id"]: result_of(runs / j["id"])["economic"]["n_trials"] for j in jobs}
    assert list(trials.values()) == [2, 2, 1]  # two configurations compete for BTC/direction_h5, one for ETH
    summary = json.loads((tmp_path / "plans" / "p_sel" / "plan_summary.json").read_text())
    btc, eth = summary["selection"]["BTC/direction_h5"], summary["selection"]["ETH/direction_h5"]
    assert btc["n_trials"] == 2 and btc["configurations"] == [jobs[0]["id"], jobs[1]["id"]]
    assert 0.0 <= btc["pbo"] <= 1.0 and btc["n_partitions"] == 4 and btc["n_splits"] == 6  # C(4, 2)
    assert eth["n_trials"] == 1 and eth["pbo"] is None and "2 or more" in eth["reason"]
    assert (
        "slot BTC/direction_h5: 2 trial(s); PBO" in proc.stderr and "slot ETH/direction_h5: 1 trial(s)" in proc.stderr
    )
    # the trial count is evaluation, not configuration: a rerun with another count resumes, nothing retrains
    again = sweep(tmp_path, *cli, "eval.selection.n_trials=50")
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((tmp_path / "plans" / "p_sel" / "plan_summary.json").read_text())
    assert rerun["totals"]["skipped"] == 3


def test_slot_returns_share_one_grid_and_split_pooled_trades_by_symbol(tmp_path):
    import pandas as pd

    from hydra_plugins.candlelab_plan_sweeper._selection import returns_matrix

    start = pd.Timestamp("2024-01-01", tz="UTC")
    dirs = {}
    for name, symbols, exits, nets in (
        ("a", ["BTC"], [1, 5], [0.02, -0.01]),
        ("b", ["BTC", "ETH"], [3, 7], [0.04, 0.02]),
        ("c", ["BTC"], [], []),
    ):
        d = tmp_path / name
        d.mkdir()
        (d / "result.json").write_text(
            json.dumps({"data_summary": {"symbols": symbols, "split_cutoffs": {"test_start": str(start)}}})
        )
        pd.DataFrame(
            {"exit_time": [start + pd.Timedelta(hours=h) for h in exits], "net_return": np.array(nets, dtype=float)}
        ).to_parquet(d / "trades_test.parquet")
        dirs[name] = d
    matrix, used, grid = returns_matrix(dirs, 4)  # 0-7 h in four 1.75 h periods
    assert used == ["a", "b", "c"] and grid == {
        "from": str(start.isoformat()),
        "to": (start + pd.Timedelta(hours=7)).isoformat(),
    }
    np.testing.assert_allclose(matrix, [[0.02, 0.0, 0.0], [0.0, 0.02, 0.0], [-0.01, 0.0, 0.0], [0.0, 0.01, 0.0]])
