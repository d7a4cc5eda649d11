"""One row per plan job (from its result.json), the rich table at the end, and `plan_summary.json`."""

import sys
from datetime import datetime
from pathlib import Path

from core.runinfo import write_json_atomic
from trainer.result import RunInfo, RunResult

from ._plan import PlanJob

SUMMARY_FILE = "plan_summary.json"
# completed and skipped (completed earlier, same config hash) count as done; the rest make the plan incomplete
STATUSES = ("completed", "skipped", "failed", "cancelled", "not_run", "pending")
DONE = ("completed", "skipped")
_STYLE = {
    "completed": "green",
    "skipped": "cyan",
    "failed": "bold red",
    "cancelled": "yellow",
    "not_run": "magenta",
    "pending": "dim",
}


def job_row(
    job: PlanJob, run_dir: Path, status: str, result: RunResult | None = None, reason: str | None = None
) -> dict:
    """What the summary says about one job; ``result`` is the job's result.json when it describes this job."""
    run = result.run if result is not None else RunInfo()
    metric, value = headline(result.test_metrics if result is not None else {})
    gates = (result.gates if result is not None else None) or {}
    return {
        "id": job.id,
        "stage": job.stage,
        "family": job.family,
        "coin": job.coin,
        "target": job.target,
        "status": status,
        "metric": metric,
        "value": value,
        "gates_passed": gates.get("passed") if gates else None,
        "seconds": _seconds(run.started_at, run.finished_at),
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "run_id": run.run_id,
        "config_hash": run.config_hash,
        "reason": reason if reason is not None or result is None else result.reason,
        "run_dir": str(run_dir),
    }


def headline(test_metrics: dict) -> tuple[str | None, float | None]:
    for name in ("accuracy", "ic"):
        if test_metrics.get(name) is not None:
            return name, float(test_metrics[name])
    return None, None


def totals(rows: list[dict]) -> dict:
    return {status: sum(r["status"] == status for r in rows) for status in STATUSES}


def write_summary(path: Path, payload: dict) -> None:
    write_json_atomic(path, payload)


def print_table(title: str, rows: list[dict], footer: list[str] = ()) -> None:
    """The plan's outcome as a table on stderr (logging stays for events; this is the report), then ``footer``."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("job", "left"),
        ("stage", "left"),
        ("family", "left"),
        ("coin", "left"),
        ("target", "left"),
        ("status", "left"),
        ("metric", "right"),
        ("gates", "left"),
        ("seconds", "right"),
    ):
        table.add_column(name, justify=justify, overflow="fold")
    for r in rows:
        metric = "" if r["metric"] is None else f"{r['metric']} {r['value']:.4f}"
        gates = "" if r["gates_passed"] is None else ("passed" if r["gates_passed"] else "failed")
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        table.add_row(
            r["id"],
            r["stage"],
            r["family"],
            r["coin"],
            r["target"],
            f"[{_STYLE[r['status']]}]{r['status']}[/]",
            metric,
            gates,
            seconds,
        )
    count = totals(rows)
    console.print(table)
    console.print(" | ".join(f"{status} {n}" for status, n in count.items() if n), highlight=False)
    for line in footer:
        console.print(line, highlight=False)


def _seconds(started: str | None, finished: str | None) -> float | None:
    if not started or not finished:
        return None
    try:
        return round((datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds(), 3)
    except (TypeError, ValueError):
        return None
