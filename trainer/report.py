"""A run's human-readable report: the PNG plots and a short ``report.md`` that links them."""

from pathlib import Path

import numpy as np

from trainer import plots
from trainer.result import RunResult

# The backtest's headline figures, in the order the report's trading table shows them.
TRADING_COLUMNS = (
    "n_trades",
    "win_rate",
    "profit_factor",
    "total_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "turnover",
    "exposure",
)


def confusion_matrix(proba: np.ndarray, y: np.ndarray, k: int) -> list[list[int]]:
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (np.asarray(y, dtype=np.int64), proba.argmax(1)), 1)
    return m.tolist()


def make_plots(
    plot_dir: Path,
    name: str,
    *,
    curve: dict | None,
    history: dict,
    confusion: list | None,
    class_names: list[str],
    equity,
    importance: dict | None,
) -> dict[str, str]:
    plot_dir.mkdir(exist_ok=True)
    made = {
        "reliability": plots.reliability_plot(curve, plot_dir / "reliability.png", f"{name} test") if curve else None,
        "confusion_matrix": plots.confusion_plot(
            confusion, class_names, plot_dir / "confusion_matrix.png", f"{name} test"
        )
        if confusion
        else None,
        "equity_curve": plots.equity_plot(equity, plot_dir / "equity_curve.png", f"{name} test signals, after costs"),
        "feature_importance": plots.importance_plot(
            (importance or {}).get("values"),
            plot_dir / "feature_importance.png",
            f"{name} ({(importance or {}).get('kind', '')})",
        ),
        "learning_curves": plots.curves_plot(history, plot_dir / "training_curves.png", name),
    }
    return {k: str(v) for k, v in made.items() if v is not None}


def fmt(value, digits: int = 4) -> str:
    """A number for a report line: 4 decimals by default, n/a for None."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def policy_line(policy: dict | None) -> str:
    """The decision policy in words, with what it scored on validation."""
    if not policy:
        return "no decision policy (trading evaluation disabled)"
    sides = []
    if policy.get("long_threshold") is not None:
        sides.append(f"long when P(long) >= {policy['long_threshold']:.4g}")
    if policy.get("short_threshold") is not None:
        sides.append(f"short when P(short) >= {policy['short_threshold']:.4g}")
    what = ", ".join(sides) + f", hold {policy['horizon']} candles" if sides else "never trade"
    val = policy.get("validation") or {}
    scored = (
        ""
        if policy.get("chosen_on") != "validation"
        else (
            f"; validation: {val.get('n_trades', 0)} trades, expectancy {fmt(val.get('expectancy_bps'), 1)} bps"
            if sides
            else f"; validation: {val.get('reason', 'no edge after costs')}"
        )
    )
    return f"{what} (chosen on {policy.get('chosen_on')}{scored})"


def economic_lines(result: RunResult) -> list[str]:
    """The tradeable half of the verdict: the test trades' economics at the trial count, then the verdict
    with every failed check and by how much."""
    econ, verdict = result.economic or {}, result.verdict or {}
    lines = []
    checks = econ.get("checks") or {}
    if checks:
        mean = checks["mean_net_return"]
        lines.append(
            f"economics at N = {econ['n_trials']} trial(s): {checks['min_trades']['value']} test trades | "
            f"mean net {fmt(mean['value_bps'], 1)} bps (p = {fmt(mean['p_value'], 3)}) | profit factor "
            f"{fmt(checks['profit_factor']['value'], 2)} | deflated Sharpe {fmt(econ.get('dsr'), 3)}"
        )
    if verdict:
        lines.append(
            f"verdict: {verdict['label']}" + (f" ({'; '.join(verdict['failed'])})" if verdict["failed"] else "")
        )
    return lines


def write_report(run_dir: Path, result: RunResult) -> Path:
    """``report.md``: verdict, headline numbers against baselines, trading, leakage, links to the plots."""
    ev, gates, trading = result.evaluation or {}, result.gates or {}, result.trading or {}
    data, info, run = result.data_summary, result.model_info, result.run
    overall = ev.get("overall", {})
    sig = overall.get("significance", {})
    lines = [
        f"# {info.family} on {', '.join(data.symbols)} ({data.timeframe}, {data.task['kind']} `{result.target or ''}`)",
        "",
        f"Run `{run.run_id}` · commit `{run.git_commit}` · config `{run.config_hash}` · split `{data.split}`",
        "",
        f"**Verdict: {(result.verdict or {}).get('label', 'n/a')}** · "
        f"gates `{gates.get('name')}`: {'PASSED' if gates.get('passed') else 'FAILED'}",
    ]
    lines += [f"- {r}" for r in gates.get("reasons", [])]
    reg = result.registry
    if reg:
        lines += ["", f"Registry: `{reg['model_id']}` v{reg['version']}, stage **{reg['stage']}**"]
    lines += ["", "## Test metrics", "", "| metric | value |", "|---|---|"]
    for key, value in result.test_metrics.items():
        if isinstance(value, (int, float)) or value is None:
            lines.append(f"| {key} | {fmt(value)} |")
    if overall:
        lines += [
            "",
            f"{ev['hit_metric']} {fmt(overall['hit_rate'])} against the best naive baseline "
            f"({overall['best_baseline']['name']}) {fmt(overall['best_baseline']['value'])}: "
            f"one-sided p = {fmt(sig.get('p_value'), 6)}, {int(100 * sig.get('level', 0.95))}% block-bootstrap "
            f"CI {[round(x, 4) for x in sig.get('ci') or []]}.",
        ]
        lines += ["", "| symbol | n | hit rate | best baseline | p-value | gates |", "|---|---|---|---|---|---|"]
        for sym, row in ev.get("symbols", {}).items():
            ok = gates.get("symbols", {}).get(sym, {}).get("passed")
            lines.append(
                f"| {sym} | {row['n']} | {fmt(row['hit_rate'])} | {row['best_baseline']['name']} "
                f"{fmt(row['best_baseline']['value'])} | {fmt(row['significance'].get('p_value'), 6)} | "
                f"{'pass' if ok else 'fail'} |"
            )
    oracle = data.oracle_accuracy
    if oracle is not None:
        lines += ["", f"Bayes oracle accuracy on these rows (synthetic data): {fmt(oracle)}."]
    if trading:
        lines += [
            "",
            "## Trading (test signals, next-candle prices, after costs)",
            "",
            "| " + " | ".join(TRADING_COLUMNS) + " |",
            "|---" * len(TRADING_COLUMNS) + "|",
            "| " + " | ".join(fmt(trading.get(k)) for k in TRADING_COLUMNS) + " |",
        ]
    econ = result.economic or {}
    if result.verdict:
        lines += [
            "",
            "## After costs: policy and economic checks",
            "",
            f"Policy: {policy_line(result.policy)}.",
            "",
        ]
        lines += [f"- {line}" for line in economic_lines(result)[:1]]
        if econ.get("checks"):
            lines += ["", "| check | value | needs | result |", "|---|---|---|---|"]
            c = econ["checks"]
            rows = [
                (
                    "test trades",
                    fmt(c["min_trades"]["value"]),
                    f">= {c['min_trades']['limit']}",
                    c["min_trades"]["passed"],
                ),
                (
                    "mean net trade return (bps)",
                    f"{fmt(c['mean_net_return']['value_bps'], 1)} (p = {fmt(c['mean_net_return']['p_value'], 4)})",
                    f"> 0, p < {c['mean_net_return']['alpha']:g}",
                    c["mean_net_return"]["passed"],
                ),
                (
                    "profit factor",
                    fmt(c["profit_factor"]["value"], 3),
                    f"> {c['profit_factor']['limit']:g}",
                    c["profit_factor"]["passed"],
                ),
                (
                    f"deflated Sharpe (N = {econ['n_trials']})",
                    fmt(c["deflated_sharpe"]["value"], 4),
                    f">= {c['deflated_sharpe']['limit']:g}",
                    c["deflated_sharpe"]["passed"],
                ),
            ]
            lines += [f"| {a} | {b} | {n} | {'pass' if ok else 'FAIL'} |" for a, b, n, ok in rows]
        if not econ.get("gating"):
            lines += ["", "These gates do not include the economic checks: reported, not gating."]
        if result.verdict["failed"]:
            lines += ["", "Failed:"] + [f"- {r}" for r in result.verdict["failed"]]
    leak = result.leakage or {}
    if leak:
        lines += ["", "## Leakage checks", ""]
        for name in ("split", "shuffled_control", "too_good"):
            check = leak.get(name)
            state = "not run" if check is None else ("pass" if check["passed"] else "FAIL")
            detail = ""
            if name == "shuffled_control" and check:
                detail = (
                    f" (hit rate {fmt(check['rate'])} vs chance {fmt(check['chance'])}, p = {fmt(check['p_value'], 4)})"
                )
            if name == "too_good" and check and check["flags"]:
                detail = " — " + "; ".join(check["flags"])
            lines.append(f"- {name}: {state}{detail}")
    plot_paths = result.artifacts.plot_files or {}
    if plot_paths:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({Path(p).relative_to(run_dir).as_posix()})" for name, p in plot_paths.items()]
    path = run_dir / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path
