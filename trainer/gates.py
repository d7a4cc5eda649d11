"""Promotion gates (``conf/eval/gates/``): thresholds checked per symbol, "k of n" symbols, leakage checks.

A symbol passes when every configured check passes on its own test rows; the run passes when at least
``min_symbols`` symbols pass (``all`` = every one) and, if ``leakage_checks``, every leakage check passed.
A check whose metric does not exist for the task (ECE for regression) is reported as not applicable.
"""
from data.errors import UserError


def _check(value, limit, ok: bool | None) -> dict:
    return {"value": value, "limit": limit, "passed": ok}


def symbol_checks(gates, row: dict, alpha: float) -> dict:
    """The per-symbol checks; ``row`` holds hit_rate, ece, significance, best_baseline and trades."""
    checks = {}
    if gates.get("min_accuracy") is not None:
        v, lim = row["hit_rate"], float(gates.min_accuracy)
        checks["min_accuracy"] = _check(v, lim, v is not None and v >= lim)
    if gates.get("max_ece") is not None:
        v, lim = row.get("ece"), float(gates.max_ece)
        checks["max_ece"] = _check(v, lim, None if v is None else v <= lim)
    if gates.get("beat_baselines"):
        sig, best = row["significance"], row["best_baseline"]
        p = sig.get("p_value")
        checks["beat_baselines"] = {"value": row["hit_rate"], "baseline": best, "p_value": p, "alpha": alpha,
                                    "passed": p is not None and p < alpha and row["hit_rate"] > best["value"]}
    if gates.get("min_trades") is not None:
        v, lim = row.get("trades"), int(gates.min_trades)
        checks["min_trades"] = _check(v, lim, v is not None and v >= lim)
    return checks


def required_symbols(gates, n: int) -> int:
    k = gates.get("min_symbols", "all")
    if k is None or str(k) == "all":
        return n
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise UserError(f"min_symbols must be 'all' or a number, got {k!r}", "eval.gates.min_symbols") from None
    if k < 1:
        raise UserError(f"min_symbols must be at least 1, got {k}", "eval.gates.min_symbols")
    return min(k, n)


def evaluate_gates(gates, evaluation: dict, alpha: float) -> dict:
    """The verdict of the configured gates on one run's evaluation."""
    symbols = {}
    for sym, row in evaluation["symbols"].items():
        checks = symbol_checks(gates, row, alpha)
        symbols[sym] = {"passed": all(c["passed"] is not False for c in checks.values()), "checks": checks}
    passing = sum(s["passed"] for s in symbols.values())
    k = required_symbols(gates, len(symbols))
    verdict = {"name": gates.get("name"), "min_symbols": k, "symbols_passing": passing,
               "symbols_total": len(symbols), "symbols": symbols,
               "overall_checks": symbol_checks(gates, evaluation["overall"], alpha)}
    reasons = []
    if passing < k:
        failed = {sym: [name for name, c in s["checks"].items() if c["passed"] is False]
                  for sym, s in symbols.items() if not s["passed"]}
        reasons.append(f"{passing} of {len(symbols)} symbols pass, {k} required; failed: {failed}")
    if gates.get("leakage_checks"):
        leak = evaluation["leakage"]
        verdict["leakage"] = {name: leak[name]["passed"] if leak.get(name) is not None else None
                              for name in ("split", "shuffled_control", "too_good")}
        for name, ok in verdict["leakage"].items():
            if ok is None:
                reasons.append(f"leakage check {name} was not run")
            elif not ok:
                reasons.append(f"leakage check {name} failed")
    verdict["reasons"] = reasons
    verdict["passed"] = not reasons
    return verdict
