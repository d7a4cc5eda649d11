"""The plan sweeper tells each job its slot's trial count and reports PBO over slot returns on one grid."""

import json

import numpy as np


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
