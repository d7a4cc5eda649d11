"""The runtime's state after a candle, as JSON, and its restoration: what a resumed session needs to go on
exactly where the stored one stopped.

It holds the paper broker (cash, positions, last marks and ranges, pending orders), the guardrails (clock,
day and its start, halts, breaches), the signal engine's rate-limit window, the drift monitor's windows, the
positions' holding times, the counters and the last candle processed per symbol. Floats go through JSON
unchanged (``repr`` round trips), so a resumed session's equity is the stored one to the last bit. The equity
curve is not part of it: it is read back from the store's ``equity`` table.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import asdict

import pandas as pd

from trainer.runtime.broker import _Order, _Position
from trainer.runtime.guardrails import Breach

VERSION = 1


def _ts(value) -> str | None:
    if value is None:
        return None
    value = pd.Timestamp(value)
    key = (value.value, value.tz)  # the same instant in another zone writes another string
    text = _ISO.get(key)
    if text is None:
        if len(_ISO) >= 4096:  # the rate window's and holds' times repeat for an hour; older ones never come back
            _ISO.clear()
        text = _ISO[key] = value.isoformat()
    return text


_ISO: dict[tuple, str] = {}  # ISO strings of recent times: each checkpoint rewrites the same ones


def _from_ts(value) -> pd.Timestamp | None:
    return None if value is None else pd.Timestamp(value)


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(float(value)) else None


def snapshot(runtime) -> dict:
    """The state of ``runtime`` (an engine.Runtime) after its last processed candle."""
    state = {
        "version": VERSION,
        "last_candle": {s: _ts(t) for s, t in runtime.last_candle.items()},
        "last_at": _ts(runtime.last_at),
        "candles_seen": runtime.candles_seen,
        "emitted": runtime.emitted,
        "hold_until": {s: _ts(t) for s, t in runtime.hold_until.items()},
        "stopping": runtime.stopping,
        "stopped": runtime.stopped,
        "rate_window": [[_ts(t), tier] for t, tier in getattr(runtime.engine, "_emitted", ())],
    }
    if runtime.broker is not None:
        b = runtime.broker
        state["broker"] = {
            "cash": b._cash,
            "positions": {
                s: {
                    "side": p.side,
                    "quantity": p.quantity,
                    "entry_price": p.entry_price,
                    "entry_time": _ts(p.entry_time),
                    "entry_cost": p.entry_cost,
                }
                for s, p in b._positions.items()
            },
            "marks": dict(b._marks),
            "ranges": {s: list(r) for s, r in b._ranges.items()},
            "pending": {
                s: {"side": o.side, "notional": o.notional, "at": _ts(o.at), "reason": o.reason}
                for s, o in b._pending.items()
            },
        }
    if runtime.guardrails is not None:
        g = runtime.guardrails
        state["guardrails"] = {
            "clock": _ts(g._clock),
            "day": None if g._day is None else g._day.isoformat(),
            "day_start_equity": g._day_start_equity,
            "halted_day": None if g._halted_day is None else g._halted_day.isoformat(),
            "halted_forever": g._halted_forever,
            "breaches": _breaches(g.breaches),
        }
    drift = getattr(runtime, "drift", None)
    if drift is not None:  # the drift monitor's rolling windows and the alerts it is in
        state["drift"] = drift.state()
    return state


def _breaches(breaches: list) -> list[dict]:
    """The breaches as JSON rows. Breaches are only ever appended, so the rows of the ones already seen are
    reused: a session writes its checkpoint after every candle, and a long one may hold many."""
    rows: list[dict] = []
    if _BREACH_ROWS and _BREACH_ROWS[0] is breaches:
        seen, made = _BREACH_ROWS[1], _BREACH_ROWS[2]
        while len(rows) < min(len(seen), len(breaches)) and seen[len(rows)] is breaches[len(rows)]:
            rows.append(made[len(rows)])
    rows += [
        {**{k: (_num(v) if isinstance(v, float) else v) for k, v in asdict(b).items()}, "at": _ts(b.at)}
        for b in breaches[len(rows) :]
    ]
    _BREACH_ROWS[:] = [breaches, list(breaches), rows]
    return list(rows)


_BREACH_ROWS: list = []  # [the list, its breaches when last seen, their rows]: one session's list at a time


_ENCODE = json.JSONEncoder(sort_keys=True, allow_nan=False).encode
_DRIFT_SLOT = "\x00drift\x00"  # stands in for the drift state while the rest is encoded
_RETURNS: list = [None, ""]  # [the drift trade window last encoded, its JSON]


def snapshot_json(runtime) -> str:
    """``snapshot`` as the JSON text ``json.dumps(..., sort_keys=True)`` writes (made JSON-safe when it is not
    plain), with the drift monitor's trade window encoded once per closed trade: its floats were most of the
    cost of the checkpoint a session writes after every candle."""
    from trainer.runtime.store import json_safe

    state = snapshot(runtime)
    try:
        drift = state.get("drift")
        if drift is None or set(drift) != {"alerting", "returns", "sides"}:
            return _ENCODE(state)
        if _RETURNS[0] != drift["returns"]:
            _RETURNS[:] = [drift["returns"], _ENCODE(drift["returns"])]
        drift_text = (
            f'{{"alerting": {_ENCODE(drift["alerting"])}, "returns": {_RETURNS[1]}, '
            f'"sides": {_ENCODE(drift["sides"])}}}'
        )
        return _ENCODE({**state, "drift": _DRIFT_SLOT}).replace(_ENCODE(_DRIFT_SLOT), drift_text, 1)
    except (TypeError, ValueError):  # NaN or a non-JSON value somewhere: the store's conversion
        return json.dumps(json_safe(state), sort_keys=True, allow_nan=False)


def restore(runtime, state: dict) -> None:
    """Put ``state`` (from ``snapshot``) back into a freshly built ``runtime`` of the same settings."""
    import datetime as dt

    if state.get("version") != VERSION:
        raise ValueError(f"checkpoint version {state.get('version')!r}, expected {VERSION}")
    runtime.last_candle = {s: _from_ts(t) for s, t in state["last_candle"].items()}
    runtime.last_at = _from_ts(state["last_at"])
    runtime.candles_seen = int(state["candles_seen"])
    runtime.emitted = int(state["emitted"])
    runtime.hold_until = {s: _from_ts(t) for s, t in state["hold_until"].items()}
    if hasattr(runtime.engine, "_emitted"):  # the rate-limit window of emitted signals
        runtime.engine._emitted = deque((_from_ts(t), tier) for t, tier in state["rate_window"])
    if runtime.broker is not None and "broker" in state:
        b, s = runtime.broker, state["broker"]
        b._cash = float(s["cash"])
        b._positions = {
            sym: _Position(
                int(p["side"]),
                float(p["quantity"]),
                float(p["entry_price"]),
                _from_ts(p["entry_time"]),
                float(p["entry_cost"]),
            )
            for sym, p in s["positions"].items()
        }
        b._marks = {sym: float(v) for sym, v in s["marks"].items()}
        b._ranges = {sym: (float(r[0]), float(r[1])) for sym, r in s["ranges"].items()}
        b._pending = {
            sym: _Order(int(o["side"]), float(o["notional"]), _from_ts(o["at"]), str(o["reason"]))
            for sym, o in s["pending"].items()
        }
    if runtime.guardrails is not None and "guardrails" in state:
        g, s = runtime.guardrails, state["guardrails"]
        g._clock = _from_ts(s["clock"])
        g._day = None if s["day"] is None else dt.date.fromisoformat(s["day"])
        g._day_start_equity = s["day_start_equity"]
        g._halted_day = None if s["halted_day"] is None else dt.date.fromisoformat(s["halted_day"])
        g._halted_forever = bool(s["halted_forever"])
        g.breaches = [
            Breach(
                **{
                    **{k: (math.nan if v is None and k not in ("detail", "halt", "kind") else v) for k, v in b.items()},
                    "at": _from_ts(b["at"]),
                }
            )
            for b in s["breaches"]
        ]
    drift = getattr(runtime, "drift", None)
    if drift is not None and "drift" in state:
        drift.restore(state["drift"])
