"""The registry promotes and ranks on economics, not accuracy, prints them, and extends an older database."""

import json

import pytest

from trainer.registry import Registry
from trainer.registry import main as registry_main

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
