"""One runtime session from config: load the promoted models, pick the candles, run the loop, report.

Modes (``runtime.mode``): ``dry`` replays candles the models never trained on and emits signals only;
``paper`` replays them against the paper broker with the guardrails; ``live-paper`` polls the data provider
(ccxt keeps its cache up to date) for new candles and paper-trades them; ``live`` polls the same way and
emits signals and notifications only.

Every session records its settings and, per candle, its state in ``runtime.db``: ``runtime.resume`` continues
a stopped or killed one (trainer.runtime.resume). SIGINT/SIGTERM stop it as the kill switch does; a second
signal stops at once (trainer.runtime.stops). ``session.json`` says how it ended: ``status`` completed |
stopped (``stop_kind`` kill_switch | signal | provider_error).
"""

import inspect
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from core.errors import UserError
from core.runinfo import new_run_id, utc_now, write_json_atomic
from data.providers import load_candles
from data.symbols import check_name, selection_name
from trainer import plots
from trainer.report import fmt
from trainer.runtime.broker import PaperBroker
from trainer.runtime.checkpoint import restore
from trainer.runtime.drift import drift_monitor
from trainer.runtime.engine import KillSwitch, Runtime, equity_frame, live, replay
from trainer.runtime.guardrails import Guardrails
from trainer.runtime.metrics import PeriodicExports
from trainer.runtime.notify import Notifier, build_sinks
from trainer.runtime.resume import SessionLock, settings, settings_hash, to_resume
from trainer.runtime.signals import SignalEngine, families_setting, load_promoted
from trainer.runtime.stops import SignalStops, StoppedAtOnce
from trainer.runtime.store import RuntimeStore

log = logging.getLogger("candlelab.runtime")
MODES = ("dry", "paper", "live-paper", "live")
POLLING = ("live-paper", "live")


def default_slot(cfg: DictConfig, timeframe: str, symbols: list[str] | None = None) -> str:
    """The slot `train.py` with the same coin, data and target registers into (``symbols``: those the candles
    turned out to hold, when a file names its market)."""
    from trainer.pipeline import registry_symbol

    return f"{registry_symbol(cfg, symbols)}/{timeframe}/{cfg.target.type}_h{int(cfg.target.horizon)}"


def _run_dir(cfg: DictConfig, mode: str) -> Path:
    if cfg.runtime.get("run_dir"):
        return Path(cfg.runtime.run_dir)
    name = selection_name(check_name(cfg.coin.get("name"), "coin.name"), [str(s) for s in cfg.coin.symbols])
    return Path(cfg.paths.output_dir) / "runtime" / f"{new_run_id()}_{mode}_{name}"


def _replay_start(cfg: DictConfig, models) -> pd.Timestamp:
    """The first candle no promoted model trained on: the latest test-period start among them."""
    starts = []
    for m in models:
        cut = (m.model.card.get("data") or {}).get("cutoffs") or {}
        if not cut.get("test_start"):
            raise UserError(
                f"model {m.ref} records no test period: cannot tell which candles it never saw", "runtime.replay.start"
            )
        starts.append(pd.Timestamp(cut["test_start"]))
    earliest_unseen = max(starts)
    wanted = cfg.runtime.replay.get("start")
    if wanted is None:
        return earliest_unseen
    start = _timestamp(wanted, "runtime.replay.start")
    if start < earliest_unseen:
        raise UserError(
            f"replay.start {start} is inside the period a promoted model trained or validated on "
            f"(its test period starts {earliest_unseen}): replay candles it never saw",
            "runtime.replay.start",
        )
    return start


def _timestamp(value, where: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(str(value))
    except ValueError:
        raise UserError(f"{value!r} is not a date or time", where) from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _number(value, where: str, low: float, kind=float, inclusive: bool = False) -> float:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise UserError(f"must be a number, got {value!r}", where) from None
    if number < low or (number == low and not inclusive):
        raise UserError(f"must be {'>=' if inclusive else '>'} {low}, got {value!r}", where)
    return number


def guardrails_from(rt: DictConfig) -> Guardrails:
    """The guardrails ``runtime.guardrails`` (conf/runtime/guardrails/) describe, on ``runtime.broker.start_equity``."""
    if not isinstance(rt.get("guardrails"), DictConfig):
        raise UserError("guardrails must be a set of limits (runtime/guardrails=default or ftmo)", "runtime.guardrails")
    g = OmegaConf.to_container(rt.guardrails, resolve=True)
    known = inspect.signature(Guardrails).parameters
    for key in g:
        if key not in known or key == "start_equity":
            raise UserError(
                f"unknown key {key!r} (conf/runtime/guardrails/default.yaml lists them)", f"runtime.guardrails.{key}"
            )
    return Guardrails(rt.broker.start_equity, **g)


def _check(cfg: DictConfig, mode: str, source, resuming: bool = False) -> None:
    """Runtime settings a user can get wrong, refused before anything loads."""
    rt = cfg.runtime
    if mode not in MODES:
        raise UserError(f"mode must be one of {', '.join(MODES)}, got {mode!r}", "runtime.mode")
    if rt.get("history") is not None:
        _number(rt.history, "runtime.history", 1, int, inclusive=True)
    fraction = _number(rt.position.fraction, "runtime.position.fraction", 0.0)
    if fraction > 1.0:
        raise UserError(f"must be at most 1 (of equity), got {fraction}", "runtime.position.fraction")
    _number(rt.live.poll_seconds, "runtime.live.poll_seconds", 0.0, inclusive=True)
    if rt.live.get("max_polls") is not None:
        _number(rt.live.max_polls, "runtime.live.max_polls", 1, int, inclusive=True)
    _number(rt.live.get("max_provider_errors", 3), "runtime.live.max_provider_errors", 1, int, inclusive=True)
    if rt.get("metrics_every") is not None:
        _number(rt.metrics_every, "runtime.metrics_every", 1, int, inclusive=True)
    if not isinstance(rt.stop.get("flatten", True), bool):
        raise UserError(f"must be true or false, got {rt.stop.flatten!r}", "runtime.stop.flatten")
    if rt.replay.get("max_candles") is not None:
        _number(rt.replay.max_candles, "runtime.replay.max_candles", 1, int, inclusive=True)
    for key in ("start", "end"):
        if rt.replay.get(key):
            _timestamp(rt.replay[key], f"runtime.replay.{key}")
    try:
        pd.Timedelta(str(rt.metrics_window))
    except ValueError:
        raise UserError(f"{rt.metrics_window!r} is not a duration (e.g. 24h)", "runtime.metrics_window") from None
    if not isinstance(rt.signals.get("tiers"), DictConfig):
        raise UserError(
            "tiers must map names to probability floors, e.g. {high: 0.65, medium: 0.55}", "runtime.signals.tiers"
        )
    if rt.get("weights") is not None:
        if not isinstance(rt.weights, DictConfig):
            raise UserError("weights must map slots to numbers", "runtime.weights")
        for slot, weight in rt.weights.items():
            _number(weight, f"runtime.weights.{slot}", 0.0, inclusive=True)
    if mode in POLLING and source is None and cfg.data.provider in ("files", "synthetic"):
        raise UserError(
            f"{mode} polls for new candles; the {cfg.data.provider} provider never has any "
            f"(use data=ccxt or data=yfinance, or mode=paper to replay)",
            "data",
        )
    if mode not in ("dry", "live"):
        guardrails_from(rt)
    run_dir = rt.get("run_dir")
    if run_dir and not resuming and Path(str(run_dir)).is_dir() and any(Path(str(run_dir)).iterdir()):
        raise UserError("the run folder is not empty: a session writes a folder of its own", "runtime.run_dir")


def run(
    cfg: DictConfig,
    source: Callable[[], dict[str, pd.DataFrame]] | None = None,
    wait: Callable[[float], None] = time.sleep,
) -> dict:
    """Run one session; returns the summary that ``session.json`` holds."""
    rt = cfg.runtime
    mode = str(rt.mode)
    values = settings(cfg)
    resuming = to_resume(cfg, values)  # (run folder, its session record) or None
    _check(cfg, mode, source, resuming=resuming is not None)
    symbols = [str(s) for s in cfg.coin.symbols]
    loaded = load_candles(cfg.data, symbols, cfg.seed)
    slots = (
        [str(s) for s in rt.slots] if rt.get("slots") else [default_slot(cfg, loaded.timeframe, list(loaded.by_symbol))]
    )
    weights = OmegaConf.to_container(rt.weights, resolve=True) if rt.get("weights") else None
    models = load_promoted(
        Path(str(rt.registry_root)),
        slots,
        weights,
        history=int(rt.history) if rt.get("history") else None,
        families=families_setting(rt.get("families")),
    )
    for m in models:  # features are only the evaluation's when the candles come from the same kind of source
        trained_on = (m.model.card.get("data") or {}).get("provider")
        if trained_on and trained_on != loaded.provider:
            log.warning(
                "%s was trained on %s candles; the runtime reads %s candles", m.ref, trained_on, loaded.provider
            )
    if resuming is not None:
        served = [m.ref for m in models]
        if served != resuming[1].get("models"):
            raise UserError(
                f"session {resuming[0]} served {', '.join(resuming[1].get('models') or [])}; the "
                f"registry now promotes {', '.join(served)}: start a new session",
                "runtime.resume",
            )
    run_dir = resuming[0] if resuming is not None else _run_dir(cfg, mode)
    run_dir.mkdir(parents=True, exist_ok=True)
    with SessionLock(run_dir):
        return _session(cfg, mode, run_dir, resuming, values, loaded, models, symbols, source, wait)


def _session(cfg, mode, run_dir, resuming, values, loaded, models, symbols, source, wait) -> dict:
    rt = cfg.runtime
    sig = rt.signals
    engine = SignalEngine(
        models, OmegaConf.to_container(sig.tiers, resolve=True), sig.get("max_per_hour"), sig.get("max_high_per_hour")
    )  # each model's side: its card's decision policy
    store = RuntimeStore(run_dir)
    notifier = Notifier(build_sinks(rt.notify))
    kill = KillSwitch(
        Path(str(rt.kill_switch.file)) if rt.kill_switch.get("file") else run_dir / "KILL", rt.kill_switch.get("env")
    )
    paper = mode not in ("dry", "live")
    b = rt.broker
    broker = (
        PaperBroker(float(b.start_equity), float(b.fee_bps), float(b.spread_bps), float(b.slippage_bps))
        if paper
        else None
    )
    guardrails = guardrails_from(rt) if paper else None
    runtime = Runtime(
        engine, loaded.step, store, notifier, kill, paper, broker, guardrails, float(rt.position.fraction)
    )
    runtime.drift = drift_monitor(rt.get("drift"), models)
    runtime.flatten_on_stop = bool(rt.stop.get("flatten", True))
    started = utc_now()
    record = (
        dict(resuming[1])
        if resuming is not None
        else {
            "settings": values,
            "settings_hash": settings_hash(values),
            "mode": mode,
            "models": [m.ref for m in models],
            "started_at": started,
            "runs": 0,
        }
    )
    if resuming is not None:
        try:
            restore(runtime, store.get_state("checkpoint") or _nothing_committed(runtime))
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
            # a damaged or foreign stored state: refused, never half restored
            raise UserError(
                f"session {run_dir}: its stored checkpoint cannot be continued ({type(exc).__name__}: "
                f"{str(exc)[:160]})",
                "runtime.resume",
            ) from None
        runtime.curve = [(pd.Timestamp(t), e) for t, e in store.equity_curve()]
        store.rebuild_jsonl()  # the database is the record: lines a kill left unwritten are written now
        store.event(
            "resume",
            runtime.last_at or pd.Timestamp.now("UTC"),
            {"previous_status": record.get("status"), "candles_before": runtime.candles_seen},
        )
        log.info(
            "runtime: resuming %s after %d candles (last %s), equity %s",
            run_dir,
            runtime.candles_seen,
            runtime.last_at,
            f"{broker.equity:,.2f}" if broker else "n/a",
        )
    record.update(status="running", runs=int(record.get("runs", 0)) + 1, resumed_at=started if resuming else None)
    store.put_state("session", record)
    exports = PeriodicExports(store, run_dir, pd.Timedelta(str(rt.metrics_window)), rt.get("metrics_every"))
    runtime.after_commit.append(exports)
    notifier.notify(
        "session",
        f"{mode} session on {', '.join(symbols)} with {', '.join(m.ref for m in models)}"
        + (" (resumed)" if resuming else ""),
    )
    stops = SignalStops(runtime)
    try:
        with stops:
            steps, start = _loop(
                cfg, mode, runtime, engine, loaded, models, symbols, source, wait if wait is not None else stops.wait
            )
        status = "stopped" if runtime.stopping is not None else "completed"
        store.put_state(
            "session", {**record, "status": status, "stop_kind": runtime.stop_kind, "stopped_by": runtime.stopping}
        )
        if runtime.last_at is not None:
            exports.export(runtime.last_at)
        summary = _report(cfg, run_dir, mode, models, runtime, store, steps, start, started)
        summary.update(
            status=status, stop_kind=runtime.stop_kind, resumed=resuming is not None, candles_total=runtime.candles_seen
        )
        write_json_atomic(run_dir / "session.json", summary)
        return summary
    except StoppedAtOnce as exc:  # the candle in flight rolled back; what is committed stays consistent
        store.event(
            "stopped_at_once",
            runtime.last_at or pd.Timestamp.now("UTC"),
            {
                "signal": exc.name,
                "candles_committed": runtime.candles_seen,
                "note": "second signal: no flattening, no report; resume continues from the last committed candle",
            },
        )
        store.put_state(
            "session", {**record, "status": "interrupted", "stop_kind": "signal", "stopped_by": f"second {exc.name}"}
        )
        raise
    finally:
        store.close()


def _nothing_committed(runtime: Runtime) -> dict:
    """A session killed before its first candle committed: it resumes from its start."""
    from trainer.runtime.checkpoint import snapshot

    return snapshot(runtime)


def _loop(cfg, mode, runtime, engine, loaded, models, symbols, source, wait) -> tuple[int, pd.Timestamp | None]:
    """Poll or replay until the end, a stop or the limits; returns (candles processed, replay start)."""
    rt = cfg.runtime
    if mode in POLLING:
        poll = source or (lambda: load_candles(cfg.data, symbols, cfg.seed).by_symbol)
        steps = live(
            runtime,
            poll,
            engine.history,
            float(rt.live.poll_seconds),
            rt.live.get("max_polls"),
            wait,
            int(rt.live.get("max_provider_errors") or 3),
        )
        return steps, None
    start = _replay_start(cfg, models)
    end = _timestamp(rt.replay.end, "runtime.replay.end") if rt.replay.get("end") else None
    last = max(pd.Timestamp(c["timestamp"].iloc[-1]) for c in loaded.by_symbol.values())
    if start > last or (end is not None and end < start):
        raise UserError(f"nothing to replay: from {start} to {end or last} (the data ends {last})", "runtime.replay")
    if rt.replay.get("precompute", True):  # features once over the stored candles, not per candle
        engine.precompute(_replayed(loaded.by_symbol, start, end, rt.replay.get("max_candles")), start, end)
    steps = replay(
        runtime,
        loaded.by_symbol,
        start,
        end,
        engine.history,
        rt.replay.get("max_candles"),
        seen=dict(runtime.last_candle),
    )  # a resumed session skips what it processed
    if not runtime.stopped and (runtime.stop_request is not None or runtime.stopping is not None):
        runtime.stop_at_last_close()  # the data ended before a candle could fill the flattening
    return steps, start


def _replayed(candles: dict[str, pd.DataFrame], start: pd.Timestamp, end, max_candles) -> dict[str, pd.DataFrame]:
    """Each symbol's candles up to the last one ``replay`` will reach (``max_candles`` time steps from
    ``start``, over every symbol), so probabilities are computed ahead for no more than is replayed."""
    if max_candles is None:
        return candles
    stamps = np.unique(np.concatenate([pd.DatetimeIndex(c["timestamp"]).as_unit("ns").asi8 for c in candles.values()]))
    stamps = stamps[(stamps >= start.value) & (stamps <= (end.value if end is not None else stamps.max()))]
    if not len(stamps):
        return candles
    last = pd.Timestamp(stamps[: int(max_candles)][-1], tz="UTC")
    return {s: c[c["timestamp"] <= last] for s, c in candles.items()}


def _report(
    cfg, run_dir: Path, mode: str, models, runtime: Runtime, store: RuntimeStore, steps: int, start, started: str
) -> dict:
    curve = equity_frame(runtime)
    last = runtime.last_at
    window = pd.Timedelta(str(cfg.runtime.metrics_window))
    metrics = store.metrics(window, now=last) if last is not None else store.metrics()
    store.export_metrics(run_dir / "metrics.json", window, now=last)
    plot = plots.equity_plot(curve, run_dir / "equity.png", f"{mode}: paper equity") if len(curve) else None
    summary = {
        "mode": mode,
        "run_dir": str(run_dir),
        "models": [
            {"ref": m.ref, "slot": m.slot, "weight": m.weight, "run_id": m.model.card.get("run_id")} for m in models
        ],
        "symbols": [str(s) for s in cfg.coin.symbols],
        "replay_start": str(start) if start is not None else None,
        "steps": steps,
        "signals_emitted": runtime.emitted,
        "stopped_by": runtime.stopping,
        "equity": runtime.broker.equity if runtime.broker else None,
        "breaches": [b.kind for b in runtime.guardrails.breaches] if runtime.guardrails else [],
        "metrics": metrics,
        "equity_plot": str(plot) if plot else None,
        "started_at": started,
        "finished_at": utc_now(),
    }
    write_json_atomic(run_dir / "session.json", summary)
    lines = [
        f"# runtime {mode}: {', '.join(summary['symbols'])}",
        "",
        "Models: " + ", ".join(f"`{m['ref']}` ({m['slot']}, weight {m['weight']:.2f})" for m in summary["models"]),
        "",
        f"Replayed from {summary['replay_start']}: {steps} candles, {runtime.emitted} signals emitted"
        + (f"; stopped by {runtime.stopping}" if runtime.stopping else "")
        + (
            f"; no later candle came, so positions were closed at their last close "
            f"({runtime.closed_at_last_close} fill(s))"
            if runtime.closed_at_last_close
            else ""
        ),
        "",
    ]
    if runtime.broker:
        lines += [
            f"Paper equity {runtime.broker.equity:,.2f} (start {cfg.runtime.broker.start_equity:,.2f}); "
            f"guardrail breaches: {', '.join(summary['breaches']) or 'none'}",
            "",
        ]
    sig = metrics["signals"]
    lines += [
        f"## The last {cfg.runtime.metrics_window} of candles ({metrics['from']} to {metrics['to']})",
        "",
        "| signals | emitted | by tier | trades | win rate | net P&L | return | max drawdown | breaches |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        f"| {sig['total']} | {sig['emitted']} | {', '.join(f'{k} {v}' for k, v in sig['by_tier'].items())} | "
        f"{metrics['trades']} | {fmt(metrics['win_rate'])} | {fmt(metrics['net_pnl'], 2)} | "
        f"{fmt(metrics['return'])} | {fmt(metrics['max_drawdown'])} | {metrics['breaches']['total']} |",
        "",
        "All of it: `metrics.json`, `runtime.db` (signals, fills, trades, equity, events) and the JSONL files.",
    ]
    if plot:
        lines += ["", "![equity](equity.png)"]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    log.info(
        "runtime %s: %d candles, %d signals, equity %s; report %s",
        mode,
        steps,
        runtime.emitted,
        f"{runtime.broker.equity:,.2f}" if runtime.broker else "n/a",
        run_dir / "report.md",
    )
    return summary
