"""A replayed candle's record written the quick way is the record the plain conversions write: JSON rows and
checkpoints, the store's time strings, the drift windows, the guardrail breaches, the JSONL files."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from trainer.runtime.broker import utc_timestamp
from trainer.runtime.checkpoint import snapshot
from trainer.runtime.drift import DriftMonitor
from trainer.runtime.guardrails import Breach, Guardrails
from trainer.runtime.store import _TIME_FORMAT, RuntimeStore, _dumps, iso, json_safe

T0 = pd.Timestamp("2024-03-01 00:00", tz="UTC")


@pytest.mark.parametrize(
    "row",
    [
        {"p_long": 0.25, "models": {"m:1": 0.25}, "side": -1, "tier": None, "timestamp": "2024-03-01T00:00:00+00:00"},
        {"p_long": math.nan, "models": {"m:1": math.nan}},
        {"at": T0, "n": np.int64(3), "x": np.float64(0.1), "flag": np.bool_(True)},
        {"window": [[T0, "high"], (1.5, 2)], "nested": {"deep": {"inf": [math.inf]}}},
        {1: "int key"},
        {None: "none key"},
        {True: "bool key"},
        {"mixed": {2: 3}},
        {"set": {1}, "delta": pd.Timedelta("1h")},
    ],
)
def test_a_row_as_json_is_the_json_safe_conversion(row):
    assert _dumps(row) == json.dumps(json_safe(row), sort_keys=True, allow_nan=False)


def test_store_time_strings_are_utc_with_microseconds_whatever_the_zone():
    rng = np.random.default_rng(7)
    for value in [0, 1, 999, 1_000, 1_700_000_000_123_456_789, *rng.integers(0, 4 * 10**18, 300).tolist()]:
        for zone in ("UTC", "Europe/Paris", "Asia/Kolkata", "America/New_York"):
            t = pd.Timestamp(int(value), tz=zone)
            assert iso(t) == utc_timestamp(t).strftime(_TIME_FORMAT)
    assert iso(pd.Timestamp("2024-03-01 12:34:56.789", tz="UTC").as_unit("us")) == "2024-03-01T12:34:56.789000+00:00"
    for text in (
        "2024-03-01T01:00:00+01:00",
        "2024-03-01 00:00:00Z",
        "2024-03-01T00:00:00.000000+00:00",
        (T0 + pd.Timedelta(1, "ns")).isoformat(),
    ):
        assert iso(text) == "2024-03-01T00:00:00.000000+00:00"
    with pytest.raises(Exception):  # a time without its zone is refused, as before
        iso("2024-03-01T00:00:00")


def test_drift_state_follows_its_rolling_windows_through_a_restore():
    monitor = DriftMonitor({"win_rate": 0.5}, {"win_rate": 0.05}, window_trades=5, window_candles=7, min_trades=3)
    calls = [i % 3 == 0 for i in range(20)]
    for i, called in enumerate(calls):
        monitor.on_signal(called)
        assert monitor.state()["sides"] == "".join("1" if c else "0" for c in calls[max(0, i - 6) : i + 1])
    for r in (0.01, -0.02, 0.03, 0.04, -0.01, 0.02):
        monitor.on_trade(r)
        window = list(monitor.returns)
        enough = len(window) >= 3
        assert monitor.live()["win_rate"] == (sum(x > 0 for x in window) / len(window) if enough else None)
        assert monitor.live()["mean_return"] == (sum(window) / len(window) if enough else None)
    again = DriftMonitor({"win_rate": 0.5}, {"win_rate": 0.05}, window_trades=5, window_candles=7, min_trades=3)
    again.restore(json.loads(json.dumps(monitor.state())))
    assert again.state() == monitor.state() and again.live() == monitor.live()
    again.on_signal(True)
    assert again.state()["sides"] == monitor.state()["sides"][1:] + "1"


class _Bare:
    """What ``snapshot`` reads from a runtime in paper mode without a broker or drift."""

    def __init__(self, guardrails):
        self.last_candle, self.last_at, self.candles_seen, self.emitted = {}, None, 0, 0
        self.hold_until, self.stopping, self.stopped = {}, None, False
        self.engine, self.broker, self.guardrails = None, None, guardrails


def _breach(i: int) -> Breach:
    return Breach(
        "daily_loss", T0 + pd.Timedelta(hours=i), 9_000.0 - i, 9_500.0, f"breach {i}", "day", reached_loss=float(i)
    )


def test_checkpoint_breaches_grow_with_the_list_and_follow_a_replaced_one():
    g = Guardrails(10_000.0)
    runtime = _Bare(g)

    def rows(breaches):
        return [
            {
                **{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in vars(b).items()},
                "at": b.at.isoformat(),
            }
            for b in breaches
        ]

    assert snapshot(runtime)["guardrails"]["breaches"] == []
    for i in range(3):
        g.breaches.append(_breach(i))
        assert snapshot(runtime)["guardrails"]["breaches"] == rows(g.breaches)
    g.breaches = [_breach(7)]  # a restore puts a new list in place
    assert snapshot(runtime)["guardrails"]["breaches"] == rows(g.breaches)
    other = Guardrails(10_000.0)
    other.breaches.append(_breach(9))
    assert snapshot(_Bare(other))["guardrails"]["breaches"] == rows(other.breaches)
    assert snapshot(runtime)["guardrails"]["breaches"] == rows(g.breaches)


def test_jsonl_lines_after_a_rebuild_land_in_the_rebuilt_file(tmp_path):
    store = RuntimeStore(tmp_path)
    with store.candle():
        store.event("first", T0, {"n": 1})
    store.rebuild_jsonl()
    with store.candle():
        store.event("second", T0 + pd.Timedelta(hours=1), {"n": 2})
    store.event("third", T0 + pd.Timedelta(hours=2), {"n": 3})
    lines = [json.loads(line)["kind"] for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert lines == ["first", "second", "third"]
    store.close()
    assert [json.loads(line)["kind"] for line in (tmp_path / "events.jsonl").read_text().splitlines()] == lines


def test_the_checkpoint_text_is_the_snapshot_as_json_through_trades_and_nan():
    from types import SimpleNamespace

    from trainer.runtime.checkpoint import snapshot_json

    runtime = _Bare(Guardrails(10_000.0))
    runtime.drift = DriftMonitor({"win_rate": 0.5}, {"win_rate": 0.05}, window_trades=4, window_candles=5)
    runtime.engine = SimpleNamespace(_emitted=[(T0, "high")])

    def plain():
        return json.dumps(json_safe(snapshot(runtime)), sort_keys=True, allow_nan=False)

    assert snapshot_json(runtime) == plain()
    for i in range(9):
        runtime.drift.on_signal(i % 2 == 0)
        if i % 3 == 0:
            runtime.drift.on_trade(0.01 * (i - 4))
        runtime.candles_seen += 1
        assert snapshot_json(runtime) == plain()
        assert json.loads(snapshot_json(runtime))["drift"] == runtime.drift.state()
    runtime.drift.on_trade(math.nan)  # not JSON: written as null, as the store writes any value
    assert snapshot_json(runtime) == plain() and json.loads(snapshot_json(runtime))["drift"]["returns"][-1] is None
