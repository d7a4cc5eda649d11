"""Signals from exactly what the registry promoted: each slot's model is loaded through its ``promoted``
link and must be the run the registry promoted; per candle, the covering models' P(long) / P(short)
(computed as the evaluation computes them) are averaged by weight for display and tiers, each model's own
decision policy (``card["policy"]``, chosen on its validation rows; the evaluation traded its test period
with it) calls its side, the weighted majority of those sides is the signal (one model: exactly its policy),
and rate limits over candle time decide what is emitted. A model without a policy is refused."""

import logging
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import UserError
from data.labels import TASKS
from trainer.evaluation import class_long_short
from trainer.model_dir import LoadedModel, load_model
from trainer.policy import DecisionPolicy
from trainer.registry import DB_NAME, Registry

log = logging.getLogger("candlelab.runtime")

# TA-Lib's smoothed indicators (RSI, ATR, MACD) forget their seed geometrically: a few hundred candles bring
# them to float precision, so this floor reproduces the values computed over a symbol's full history.
DEFAULT_HISTORY = 3000
DEFAULT_TIERS = {"high": 0.65, "medium": 0.55}
RATE_WINDOW = pd.Timedelta(minutes=60)
PRECOMPUTE_CHUNK = 50_000  # candles scored per pass when probabilities are computed ahead (bounds memory)
STATUSES = ("emitted", "below_threshold", "rate_limited", "rate_limited_high", "no_models")
_CANDLE_COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]


@dataclass
class PromotedModel:
    ref: str  # "<model_id>:<version>"
    slot: str
    model: LoadedModel
    weight: float
    horizon: int  # candles the label looks ahead (model.label["horizon"])
    history: int  # trailing candles its features need to reproduce their full-history values
    policy: DecisionPolicy | None = None  # None = read from the model card (refused when it has none)
    trading: dict | None = None  # its test period's trading metrics (the registry's record)
    family: str | None = None


@dataclass
class Signal:
    symbol: str
    timestamp: pd.Timestamp  # the candle whose close the signal is known at
    p_long: float  # weighted ensemble of the models that cover the symbol
    p_short: float
    side: int  # +1 long, -1 short, 0 none
    confidence: float  # the larger of the ensemble's P(long), P(short)
    tier: str | None  # 'high' | 'medium' | None
    horizon: int  # candles to hold: the scoring models' policy horizon (the longest)
    models: dict[str, float]  # ref -> that model's P(long)
    status: str  # one of STATUSES


def required_history(model: LoadedModel, floor: int = DEFAULT_HISTORY) -> int:
    """Candles of history that reproduce the last row's features: twice the longest fixed window of the
    model's feature config (at least ``floor``, for the smoothed indicators), plus a sequence model's window."""
    f = model.feature_config
    windows = [int(h) for h in f.get("return_horizons") or []]
    windows += [
        int(f.get(k) or 0)
        for k in ("rsi_period", "atr_period", "bbands_period", "volume_z_window", "spread_window", "slippage_window")
    ]
    macd = list(f.get("macd") or [])
    if len(macd) == 3:
        windows.append(int(macd[1]) + int(macd[2]))
    windows.append(int(f.get("regime_window") or 0) + int(f.get("regime_lookback") or 0))
    return max(int(floor), 2 * max(windows, default=0)) + int(model.card.get("window") or 1)


def long_short(model: LoadedModel, proba: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """P(a long wins), P(a short wins) per row: the evaluation's rule (trainer.evaluation.class_long_short)."""
    kind = model.label["type"]
    sides = class_long_short(kind, proba.to_numpy(np.float64))
    if sides is None:
        raise UserError(
            f"target {kind!r} predicts a return, not probabilities: the runtime trades classifiers only", "runtime"
        )
    return sides


def served_policy(model: LoadedModel, ref: str, where: str) -> DecisionPolicy:
    """The decision policy the model card records, checked; a card without one is refused with the fix."""
    card = model.card
    if card.get("policy") is None:
        raise UserError(
            f"{ref} has no decision policy in its model card (trained before policies were recorded): "
            f"retrain it with this version (python train.py ...) and promote the new model",
            where,
        )
    policy = DecisionPolicy.from_dict(card["policy"], where=f"{ref} model card policy")
    horizon = int(model.label["horizon"])
    if policy.horizon != horizon:
        raise UserError(
            f"{ref}: its policy holds {policy.horizon} candles but its label looks {horizon} ahead "
            f"(a card edited by hand?)",
            where,
        )
    return policy


def _economics_at_start(row: dict, ref: str, policy: DecisionPolicy) -> None:
    """Warn when the served model did not pass its economic checks; log the net edge per trade it expects."""
    econ = row.get("economics") or {}
    economic, trading = econ.get("economic") or {}, econ.get("trading") or {}
    if economic.get("passed") is not True:
        failed = [
            name
            for name, c in (economic.get("checks") or {}).items()
            if isinstance(c, dict) and c.get("passed") is False
        ]
        label = (econ.get("verdict") or {}).get("label")
        log.warning(
            "%s did not pass its economic checks (%s): promoted by force, it is not expected to make money after costs",
            ref,
            "failed " + ", ".join(failed) if failed else label or "no economic verdict recorded",
        )
    if not policy.trades:
        log.warning(
            "%s: its policy is never trade (no threshold cleared costs on validation): it emits no signals", ref
        )
    expectancy = policy.validation.get("expectancy_bps")
    test_mean = trading.get("avg_trade_return")
    log.info(
        "%s: expected net edge per trade %s on validation (%s trades), %s in the test period (%s trades); policy %s",
        ref,
        "n/a" if expectancy is None else f"{float(expectancy):+.1f} bps",
        policy.validation.get("n_trades", "n/a"),
        "n/a" if test_mean is None else f"{test_mean * 1e4:+.1f} bps",
        trading.get("n_trades", "n/a"),
        policy.describe(),
    )


def load_promoted(
    registry_root: Path | str,
    slots: list[str],
    weights: dict[str, float] | None = None,
    history: int | None = None,
    families=None,
) -> list[PromotedModel]:
    """Each slot's promoted model, loaded through the slot's link and checked to be the promoted run; with
    ``families`` (a list of family names, or ``"all"``) each slot's members of those families instead (the
    registry keeps one per family per slot), each through its family link: an ensemble across families.

    ``weights`` map slots and/or families to a weight (default 1.0); a model weighs its slot's weight times
    its family's, normalised to sum 1 over the models. ``history`` = the candles each model is fed per
    prediction; None = ``required_history`` of its feature config."""
    root = Path(registry_root).expanduser()
    if not (root / DB_NAME).is_file():
        raise UserError(
            f"no model registry at {root} (a registry is created when the first model registers)", "registry"
        )
    if not slots:
        raise UserError("no slots to load: name at least one <symbol>/<timeframe>/<target>", "runtime")
    if len(set(slots)) != len(slots):
        raise UserError(f"a slot is listed twice: {', '.join(slots)}", "runtime")
    if history is not None and int(history) < 1:
        raise UserError(f"history must be >= 1 candle, got {history}", "runtime")
    registry = Registry(root)
    served = [(slot, row, family) for slot in slots for row, family in _served_rows(registry, slot, families)]
    raw = _weights(slots, weights, sorted({family for _, _, family in served if family}))
    member_weight = [raw.get(slot, 1.0) * (raw.get(family, 1.0) if family else 1.0) for slot, _, family in served]
    if sum(member_weight) <= 0:
        raise UserError("the weights sum to 0: at least one model needs a positive weight", "runtime.weights")
    loaded = []
    for (slot, row, family), weight in zip(served, member_weight):
        model = _load_verified(registry, slot, row, family)
        if not (row.get("gates") or {}).get("passed"):
            log.warning(
                "%s:%s was promoted without passing its gates (%s): its probabilities may be miscalibrated",
                row["model_id"],
                row["version"],
                "; ".join((row.get("gates") or {}).get("reasons") or []) or "no verdict",
            )
        kind = model.label.get("type")
        if TASKS.get(kind) not in ("binary", "multiclass"):
            raise UserError(
                f"{row['model_id']}:{row['version']} predicts {kind!r} (a return, not class "
                "probabilities): the runtime trades classifiers only",
                slot,
            )
        ref = f"{row['model_id']}:{row['version']}"
        policy = served_policy(model, ref, slot)
        _economics_at_start(row, ref, policy)
        loaded.append(
            PromotedModel(
                ref=ref,
                slot=slot,
                model=model,
                weight=weight / sum(member_weight),
                horizon=policy.horizon,
                history=int(history) if history is not None else required_history(model),
                policy=policy,
                trading=(row.get("economics") or {}).get("trading"),
                family=row.get("family"),
            )
        )
        log.info(
            "runtime: %s serves %s (%s, run %s, symbols %s, weight %.3f)",
            slot,
            ref,
            row.get("family"),
            row["run_id"],
            ", ".join(model.card["symbols"]),
            loaded[-1].weight,
        )
    return loaded


def families_setting(value):
    """``runtime.families`` checked: None (each slot's promoted model), ``"all"`` or a list of family names."""
    if value is None:
        return None
    if isinstance(value, str):
        return "all" if value == "all" else [value]
    try:
        names = [str(v) for v in value]
    except TypeError:
        raise UserError(f"must be null, all or a list of families, got {value!r}", "runtime.families") from None
    if not names:
        raise UserError("an empty list serves nothing: null (the promoted model) or name families", "runtime.families")
    return names


def _served_rows(registry: Registry, slot: str, families) -> list[tuple[dict, str | None]]:
    """(row, family or None) of the models that serve ``slot``: its promoted one, or its family members."""
    if families is None:
        row = registry.promoted(slot)
        if row is None:
            raise UserError(_nothing_promoted(registry, slot), "registry")
        return [(row, None)]
    members = registry.members(slot)
    wanted = sorted(members) if families == "all" else [str(f) for f in families]
    if len(set(wanted)) != len(wanted):
        raise UserError(f"a family is listed twice: {', '.join(wanted)}", "runtime.families")
    missing = [f for f in wanted if f not in members]
    if missing or not wanted:
        raise UserError(
            f"slot {slot} has no {' or '.join(missing) + ' ' if missing else ''}family member "
            f"(members: {', '.join(sorted(members)) or 'none'}); add one: python -m trainer.registry "
            f"promote --member <id>:<version>",
            "runtime.families",
        )
    return [(members[f], f) for f in wanted]


def _weights(slots: list[str], weights: dict[str, float] | None, families: list[str] = ()) -> dict[str, float]:
    """Weight per slot and per family named (1.0 when unnamed), checked."""
    weights = dict(weights or {})
    unknown = [s for s in weights if s not in slots and s not in families]
    if unknown:
        raise UserError(
            f"weights name slot(s) not loaded: {', '.join(unknown)} (slots: {', '.join(slots)}"
            + (f"; families: {', '.join(families)}" if families else "")
            + ")",
            "runtime.weights",
        )
    raw = {s: float(w) for s, w in weights.items()}
    bad = [s for s, w in raw.items() if not math.isfinite(w) or w < 0]
    if bad:
        raise UserError(
            f"weights must be finite and >= 0: {', '.join(f'{s}={raw[s]}' for s in bad)}", "runtime.weights"
        )
    return raw


def _nothing_promoted(registry: Registry, slot: str) -> str:
    rows = registry.rows(slot=slot)
    newest = [f"{r['model_id']}:{r['version']}" for r in reversed(rows)][:3]
    hint = f"candidates: {', '.join(newest)}" if newest else "none are registered in this slot; train one first"
    return f"no promoted model for slot {slot}; promote one: python -m trainer.registry promote <id>:<version> ({hint})"


def _load_verified(registry: Registry, slot: str, row: dict, family: str | None = None) -> LoadedModel:
    """The model the slot's link (or its family's member link) serves, refused unless it is the run the
    registry promoted there."""
    link = registry.promoted_path(slot) if family is None else registry.member_path(slot, family)
    if not link.exists():
        raise UserError(
            f"the promoted link is missing or broken, though the registry promoted "
            f"{row['model_id']}:{row['version']}; re-run python -m trainer.registry promote "
            f"{row['model_id']}:{row['version']} to restore it",
            str(link),
        )
    model = load_model(link)
    served = model.card.get("run_id")
    if served is None or served != row["run_id"]:
        raise UserError(
            f"the promoted link {link} serves run {served} but the registry promoted run "
            f"{row['run_id']} ({row['model_id']}:{row['version']})",
            slot,
        )
    return model


class SignalEngine:
    """Per candle: the ensemble's probabilities, each model's policy, the side and tier, the rate limits."""

    def __init__(
        self,
        models: list[PromotedModel],
        tiers: dict | None = None,
        max_per_hour: int | None = 10,
        max_high_per_hour: int | None = 3,
    ):
        if not models:
            raise UserError("the signal engine needs at least one promoted model", "runtime")
        for m in models:
            if m.policy is None:
                m.policy = served_policy(m.model, m.ref, m.slot)
        tiers = dict(DEFAULT_TIERS if tiers is None else tiers)
        for name, floor in tiers.items():
            if not 0.0 < float(floor) <= 1.0:
                raise UserError(f"tier {name!r} floor must be in (0, 1], got {floor}", "runtime.tiers")
        for name, limit in (("max_per_hour", max_per_hour), ("max_high_per_hour", max_high_per_hour)):
            if limit is not None and int(limit) < 0:
                raise UserError(f"{name} must be >= 0 or null, got {limit}", f"runtime.{name}")
        self.models = list(models)
        self.tiers = sorted(((str(k), float(v)) for k, v in tiers.items()), key=lambda kv: kv[1], reverse=True)
        self.max_per_hour = None if max_per_hour is None else int(max_per_hour)
        self.max_high_per_hour = None if max_high_per_hour is None else int(max_high_per_hour)
        self._emitted: deque[tuple[pd.Timestamp, str | None]] = deque()  # (candle time, tier), oldest first
        # (ref, symbol) -> {candle time ns: (P(long), P(short))}, filled by ``precompute`` for stored candles
        self._precomputed: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}

    def covering(self, symbol: str) -> list[PromotedModel]:
        """The models trained on ``symbol`` (each model predicts the symbols on its card)."""
        return [m for m in self.models if symbol in m.model.card["symbols"]]

    @property
    def history(self) -> int:
        """Candles of history the hungriest model needs: what a caller should keep per symbol."""
        return max(m.history for m in self.models)

    def probabilities(self, symbol: str, history: pd.DataFrame) -> tuple[float, float, dict[str, float]]:
        """Weighted P(long), P(short) at the last candle of ``history`` (that symbol's candles up to and
        including the current one) and each covering model's P(long). A model whose features are not yet
        defined at that candle (too little history, a gap inside a sequence window) gives NaN and is left
        out of the average; NaN, NaN when no model scores the candle."""
        missing = [c for c in _CANDLE_COLUMNS if c not in history.columns]
        if history.empty or missing:
            raise UserError(
                "no candles given" if history.empty else f"candles lack {', '.join(missing)}", f"runtime[{symbol}]"
            )
        p_long, p_short, per_model, _ = self._scores(symbol, history, pd.Timestamp(history["timestamp"].iloc[-1]))
        return p_long, p_short, per_model

    def precompute(
        self,
        candles: dict[str, pd.DataFrame],
        start: pd.Timestamp,
        end: pd.Timestamp | None = None,
        chunk: int = PRECOMPUTE_CHUNK,
    ) -> int:
        """Score every candle of ``candles`` (per symbol, sorted) from ``start`` to ``end`` in one pass per
        covering model and chunk, instead of once per candle: each chunk's features are computed on the
        model's trailing ``history`` before it and on the chunk, so the first candle sees exactly the
        per-candle path's input and later ones a longer causal history (same values, DEFAULT_HISTORY).
        ``on_candle`` / ``probabilities`` then read a stored candle's probabilities by its time; other
        candles take the per-candle path. Returns the number of (model, candle) probabilities stored."""
        if int(chunk) < 1:
            raise UserError(f"chunk must be >= 1 candle, got {chunk}", "runtime.replay.chunk")
        stored = 0
        for symbol, frame in candles.items():
            stamps = pd.DatetimeIndex(frame["timestamp"]).as_unit("ns")  # keys in Timestamp.value's unit
            first = int(stamps.searchsorted(start, side="left"))
            stop = len(stamps) if end is None else int(stamps.searchsorted(end, side="right"))
            for m in self.covering(symbol):
                table = self._precomputed.setdefault((m.ref, symbol), {})
                for a in range(first, stop, int(chunk)):
                    b = min(stop, a + int(chunk))
                    window = frame.iloc[max(0, a + 1 - m.history) : b][_CANDLE_COLUMNS].assign(symbol=symbol)
                    proba = m.model.predict_proba(window, last=b - a).iloc[-(b - a) :]
                    p_long, p_short = long_short(m.model, proba)
                    times = stamps[a:b].asi8.tolist()
                    table.update(zip(times, zip(p_long.tolist(), p_short.tolist())))
                    stored += b - a
        log.info("runtime: %d model-candle probabilities computed ahead (%d model(s))", stored, len(self.models))
        return stored

    def _model_scores(
        self, m: PromotedModel, symbol: str, history: pd.DataFrame, at: pd.Timestamp
    ) -> tuple[float, float]:
        """One model's P(long), P(short) at the last candle of ``history``: stored by ``precompute``, or
        features on the model's trailing history with one row scored."""
        table = self._precomputed.get((m.ref, symbol))
        if table is not None:
            hit = table.get(at.value)
            if hit is not None:
                return hit
        candles = history.iloc[-m.history :][_CANDLE_COLUMNS].assign(symbol=symbol)
        proba = m.model.predict_proba(candles, last=1).iloc[[-1]]  # features on the history, score one row
        p_long, p_short = (float(x[0]) for x in long_short(m.model, proba))
        return p_long, p_short

    def _scores(self, symbol: str, history: pd.DataFrame, at: pd.Timestamp):
        """``probabilities`` plus, per scoring model, (model, P(long), P(short))."""
        per_model: dict[str, float] = {}
        scored = []
        for m in self.covering(symbol):
            p_long, p_short = self._model_scores(m, symbol, history, at)
            per_model[m.ref] = p_long
            if math.isfinite(p_long) and math.isfinite(p_short):
                scored.append((m, p_long, p_short))
        total = sum(m.weight for m, _, _ in scored)
        if not scored or total <= 0:
            return math.nan, math.nan, per_model, []
        return (
            sum(m.weight * pl for m, pl, _ in scored) / total,
            sum(m.weight * ps for m, _, ps in scored) / total,
            per_model,
            scored,
        )

    def on_candle(self, symbol: str, history: pd.DataFrame) -> Signal:
        """The signal at the last candle of ``history``; ``status`` says whether it was emitted. Rate limits
        count emitted signals (all symbols) over the trailing 60 minutes of candle time."""
        at = pd.Timestamp(history.iat[-1, history.columns.get_loc("timestamp")])  # a cell, not a column
        return self._signal_at(symbol, history, at)

    def on_stored_candle(self, symbol: str, at: pd.Timestamp) -> Signal | None:
        """``on_candle`` at the candle of time ``at`` when ``precompute`` stored every covering model's
        probabilities there (no history needed); None otherwise (the caller then hands ``on_candle`` the
        history)."""
        for m in self.covering(symbol):
            table = self._precomputed.get((m.ref, symbol))
            if table is None or at.value not in table:
                return None
        return self._signal_at(symbol, None, at)

    def _signal_at(self, symbol: str, history: pd.DataFrame | None, at: pd.Timestamp) -> Signal:
        p_long, p_short, per_model, scored = self._scores(symbol, history, at)
        if not scored or not math.isfinite(p_long):
            return Signal(symbol, at, math.nan, math.nan, 0, math.nan, None, 0, per_model, "no_models")
        horizon = max(m.policy.horizon for m, _, _ in scored)
        # each model's own policy calls its side, exactly as its evaluation traded; the weights vote
        vote = sum(m.weight * int(m.policy.sides(pl, ps)) for m, pl, ps in scored)
        side = 1 if vote > 1e-12 else -1 if vote < -1e-12 else 0  # a tie stays flat
        confidence = max(p_long, p_short)
        if side == 0:
            return Signal(symbol, at, p_long, p_short, 0, confidence, None, horizon, per_model, "below_threshold")
        tier = next((name for name, floor in self.tiers if confidence >= floor), None)
        status = self._rate_status(at, tier)
        if status == "emitted":
            self._emitted.append((at, tier))
        return Signal(symbol, at, p_long, p_short, side, confidence, tier, horizon, per_model, status)

    def _rate_status(self, at: pd.Timestamp, tier: str | None) -> str:
        since = at - RATE_WINDOW
        while self._emitted and self._emitted[0][0] <= since:
            self._emitted.popleft()
        recent = [t for ts, t in self._emitted if since < ts <= at]
        if self.max_per_hour is not None and len(recent) >= self.max_per_hour:
            return "rate_limited"
        if (
            tier == "high"
            and self.max_high_per_hour is not None
            and sum(t == "high" for t in recent) >= self.max_high_per_hour
        ):
            return "rate_limited_high"
        return "emitted"
