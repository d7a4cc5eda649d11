"""Promotion gates (``conf/eval/gates/``): thresholds checked per symbol, "k of n" symbols, leakage checks.

A symbol passes when every configured check passes on its own test rows; the run passes when at least
``min_symbols`` of its configured symbols pass (``all`` = every one; a symbol without test rows fails), its
split is forward-looking, and, if ``leakage_checks``, every leakage check passed.
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
    """``min_symbols`` as a number: ``all`` is every configured symbol."""
    k = gates.get("min_symbols", "all")
    if k is None or str(k) == "all":
        return n
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise UserError(f"min_symbols must be 'all' or a number, got {k!r}", "eval.gates.min_symbols") from None
    if k < 1:
        raise UserError(f"min_symbols must be at least 1, got {k}", "eval.gates.min_symbols")
    return k


def evaluate_gates(gates, evaluation: dict, alpha: float, symbols: list[str] | None = None) -> dict:
    """The verdict of the configured gates on one run's evaluation. ``symbols``: every symbol the run was
    configured with; one without test rows counts as failed (it cannot shrink "k of n")."""
    configured = list(symbols) if symbols is not None else list(evaluation["symbols"])
    verdicts = {}
    for sym in configured:
        row = evaluation["symbols"].get(sym)
        if row is None:
            verdicts[sym] = {"passed": False, "checks": {"test_rows": _check(0, 1, False)}}
            continue
        checks = symbol_checks(gates, row, alpha)
        verdicts[sym] = {"passed": all(c["passed"] is not False for c in checks.values()), "checks": checks}
    passing = sum(v["passed"] for v in verdicts.values())
    k = required_symbols(gates, len(configured))
    verdict = {"name": gates.get("name"), "min_symbols": k, "symbols_passing": passing,
               "symbols_total": len(configured), "symbols": verdicts,
               "overall_checks": symbol_checks(gates, evaluation["overall"], alpha)}
    reasons = []
    if k > len(configured):
        reasons.append(f"min_symbols={k} but the run has {len(configured)} symbol(s): k of n needs n >= k")
    elif passing < k:
        failed = {sym: [name for name, c in v["checks"].items() if c["passed"] is False]
                  for sym, v in verdicts.items() if not v["passed"]}
        reasons.append(f"{passing} of {len(configured)} symbols pass, {k} required; failed: {failed}")
    if evaluation.get("forward_looking") is False:
        reasons.append("the split is not forward-looking (purged k-fold trains on later data): "
                       "use holdout or walk_forward to qualify for promotion")
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


def may_auto_promote(gates) -> bool:
    """Only gates that test for skill against the baselines and for leaks may move the promoted model
    without a person: a comparison preset (``legacy``) records its verdict but never promotes."""
    return bool(gates.get("beat_baselines")) and bool(gates.get("leakage_checks"))
