"""Promotion gates (``conf/eval/gates/``): thresholds checked per symbol, "k of n" symbols, leakage checks.

A symbol passes when every configured check passes on its own test rows; the run passes when at least
``min_symbols`` of its configured symbols pass (``all`` = every one; a symbol without test rows fails), its
split is forward-looking, and, if ``leakage_checks``, every leakage check passed.
A check whose metric does not exist for the task (ECE for regression) is reported as not applicable.
"""

from core.errors import UserError


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
        checks["beat_baselines"] = {
            "value": row["hit_rate"],
            "baseline": best,
            "p_value": p,
            "alpha": alpha,
            "passed": p is not None and p < alpha and row["hit_rate"] > best["value"],
        }
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
    verdict = {
        "name": gates.get("name"),
        "min_symbols": k,
        "symbols_passing": passing,
        "symbols_total": len(configured),
        "symbols": verdicts,
        "overall_checks": symbol_checks(gates, evaluation["overall"], alpha),
    }
    reasons = []
    if k > len(configured):
        reasons.append(f"min_symbols={k} but the run has {len(configured)} symbol(s): k of n needs n >= k")
    elif passing < k:
        failed = {
            sym: [name for name, c in v["checks"].items() if c["passed"] is False]
            for sym, v in verdicts.items()
            if not v["passed"]
        }
        reasons.append(f"{passing} of {len(configured)} symbols pass, {k} required; failed: {failed}")
    if evaluation.get("forward_looking") is False:
        reasons.append(
            "the split is not forward-looking (purged k-fold trains on later data): "
            "use holdout or walk_forward to qualify for promotion"
        )
    if gates.get("leakage_checks"):
        leak = evaluation["leakage"]
        verdict["leakage"] = {
            name: leak[name]["passed"] if leak.get(name) is not None else None
            for name in ("split", "shuffled_control", "too_good")
        }
        for name, ok in verdict["leakage"].items():
            if ok is None:
                reasons.append(f"leakage check {name} was not run")
            elif not ok:
                reasons.append(f"leakage check {name} failed")
    verdict["reasons"] = reasons
    verdict["passed"] = not reasons
    return verdict


def may_auto_promote(gates) -> bool:
    """Only gates that test for skill against the baselines, for leaks and for money after costs may move the
    promoted model without a person: a comparison preset (``legacy``) records its verdict but never promotes."""
    return bool(gates.get("beat_baselines")) and bool(gates.get("leakage_checks")) and gates.get("economic") is not None


# What the verdict's tradeable half asks when the gates preset has no ``economic`` block (legacy): the same
# numbers as conf/eval/gates/honest.yaml, reported but not gating.
ECONOMIC_DEFAULTS = {"min_trades": 30, "alpha": 0.05, "min_profit_factor": 1.0, "min_dsr": 0.95}
LABELS = {(True, True): "tradeable after costs", (True, False): "predictive, not tradeable after costs"}


def _economic_checks(econ: dict, row: dict, n_trials: int) -> dict:
    n, mean, p, pf = row["n_trades"], row["mean_net_bps"], row["p_value"], row["profit_factor"]
    alpha, min_pf, min_dsr = float(econ["alpha"]), float(econ["min_profit_factor"]), float(econ["min_dsr"])
    return {
        "min_trades": _check(n, int(econ["min_trades"]), n >= int(econ["min_trades"])),
        "mean_net_return": {
            "value_bps": mean,
            "p_value": p,
            "alpha": alpha,
            "passed": mean is not None and mean > 0 and p is not None and p < alpha,
        },
        "profit_factor": {
            "value": pf,
            "limit": min_pf,
            "no_losing_trades": row["no_losing_trades"],
            "passed": (pf is not None and pf > min_pf) or bool(row["no_losing_trades"]),
        },
        "deflated_sharpe": {
            "value": row["dsr"],
            "limit": min_dsr,
            "n_trials": n_trials,
            "passed": row["dsr"] is not None and row["dsr"] >= min_dsr,
        },
    }


def _shortfalls(where: str, checks: dict) -> list[str]:
    """Each failed economic check as one line saying by how much."""
    out = []
    c = checks["min_trades"]
    if not c["passed"]:
        out.append(f"{where}: {c['value']} test trades, {c['limit']} required")
    c = checks["mean_net_return"]
    if not c["passed"] and c["value_bps"] is not None:
        p = "n/a" if c["p_value"] is None else f"{c['p_value']:.3g}"
        out.append(
            f"{where}: mean net trade return {c['value_bps']:+.1f} bps (p = {p}), needs > 0 with p < {c['alpha']:g}"
        )
    c = checks["profit_factor"]
    if not c["passed"] and c["value"] is not None:
        out.append(f"{where}: profit factor {c['value']:.2f}, needs > {c['limit']:g}")
    c = checks["deflated_sharpe"]
    if not c["passed"] and c["value"] is not None:
        out.append(
            f"{where}: deflated Sharpe {c['value']:.3f} at N = {c['n_trials']} trial(s), needs >= {c['limit']:g}"
        )
    return out


def economic_verdict(gates, stats: dict | None, policy: dict | None, symbols: list[str]) -> dict:
    """The economic checks on the test trades of the validation-chosen policy, per symbol ("k of n" as
    ``min_symbols``) and overall. ``stats`` from trainer.evaluation.economic_statistics; None when the
    trading evaluation is disabled (nothing can be judged: not passed)."""
    configured = gates.get("economic")
    econ = {**ECONOMIC_DEFAULTS, **(dict(configured) if configured is not None else {})}
    out = {
        "gating": configured is not None,
        "settings": econ,
        "passed": False,
        "n_trials": stats["n_trials"] if stats else None,
        "dsr": None,
        "checks": {},
        "symbols": {},
        "reasons": [],
    }
    if stats is None:
        out["reasons"].append("the trading evaluation is disabled (eval.trading.enabled=false): nothing to judge")
        return out
    n_trials = stats["n_trials"]
    out["dsr"] = stats["overall"]["dsr"]
    out["checks"] = _economic_checks(econ, stats["overall"], n_trials)
    out["statistics"] = stats
    reasons = []
    if policy is not None and policy.get("long_threshold") is None and policy.get("short_threshold") is None:
        reasons.append(
            "the policy chosen on validation never trades ("
            + str((policy.get("validation") or {}).get("reason", "no edge after costs"))
            + ")"
        )
    reasons += _shortfalls("overall", out["checks"])
    passing = 0
    for sym in symbols:
        checks = _economic_checks(econ, stats["symbols"][sym], n_trials)
        ok = all(c["passed"] for c in checks.values())
        out["symbols"][sym] = {"passed": ok, "checks": checks}
        passing += ok
    k = required_symbols(gates, len(symbols))
    if passing < k and len(symbols) > 1:
        reasons.append(f"{passing} of {len(symbols)} symbols pass the economic checks, {k} required")
        for sym, v in out["symbols"].items():
            if not v["passed"]:
                reasons += _shortfalls(sym, v["checks"])
    out["passed"] = all(c["passed"] for c in out["checks"].values()) and passing >= min(k, len(symbols))
    out["reasons"] = reasons if not out["passed"] else []
    return out


def final_verdict(skill: dict, economic: dict) -> dict:
    """Predictive (the skill and leakage gates) and tradeable (predictive, and the economic checks) apart;
    with economic gating the gates' ``passed`` needs both."""
    predictive = bool(skill["passed"])
    tradeable = predictive and bool(economic["passed"])
    failed = [] if tradeable else list(economic["reasons"] if predictive else skill["reasons"])
    if economic["gating"]:
        skill["reasons"] = skill["reasons"] + [f"not tradeable after costs: {r}" for r in economic["reasons"]]
        skill["passed"] = tradeable
    return {
        "predictive": predictive,
        "tradeable": tradeable,
        "label": LABELS.get((predictive, tradeable), "not predictive"),
        "failed": failed,
    }
