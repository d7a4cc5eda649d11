"""Finding and reading a training plan (`master_training_plan.json`, written by `python -m trainer.plan`)."""
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from data.errors import UserError

PLAN_FILE = "master_training_plan.json"
PLAN_VERSION = 1
STAGES = ("cpu", "gpu")
log = logging.getLogger(__name__)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")   # ids become folder names


@dataclass(frozen=True)
class PlanJob:
    id: str
    stage: str
    family: str
    coin: str
    target: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    path: Path
    plan_id: str
    created_at: str | None
    jobs: tuple[PlanJob, ...]


def find_plan(output_dir: Path) -> Path:
    """The newest plan under ``<output_dir>/plans/``: by ``metadata.created_at``, then file time."""
    candidates = sorted((output_dir / "plans").glob(f"*/{PLAN_FILE}"))
    if not candidates:
        raise UserError(f"no training plan found under {output_dir / 'plans'} (run python -m trainer.plan "
                        f"first, or set hydra.sweeper.path)", "hydra.sweeper.path")
    usable = []
    for path in candidates:   # one unreadable or foreign plan must not hide a good newer one
        try:
            raw = _read(path)
        except UserError as exc:
            log.warning("ignoring %s: %s", path, exc.what)
            continue
        if raw.get("version") != PLAN_VERSION:
            log.warning("ignoring %s: plan version %r, this sweeper reads version %s", path, raw.get("version"),
                        PLAN_VERSION)
            continue
        usable.append((_created_at(raw), path.stat().st_mtime, path))
    if not usable:
        raise UserError(f"no usable training plan under {output_dir / 'plans'} (run python -m trainer.plan "
                        f"first, or set hydra.sweeper.path)", "hydra.sweeper.path")
    return max(usable)[2]


def load_plan(path: Path) -> Plan:
    raw = _read(path)
    where = str(path)
    if raw.get("version") != PLAN_VERSION:
        raise UserError(f"unsupported plan version {raw.get('version')!r}; this sweeper reads version "
                        f"{PLAN_VERSION}", where)
    plan_id = raw.get("plan_id")
    if not isinstance(plan_id, str) or not _SAFE_NAME.match(plan_id):
        raise UserError(f"plan_id {plan_id!r} is not a usable folder name", where)
    jobs = raw.get("jobs")
    if not isinstance(jobs, list):
        raise UserError("the plan has no 'jobs' list", where)
    parsed = [_job(i, job, where) for i, job in enumerate(jobs)]
    seen: set[str] = set()
    for job in parsed:
        if job.id in seen:
            raise UserError(f"job id {job.id!r} appears twice", where)
        seen.add(job.id)
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    return Plan(path=path, plan_id=plan_id, created_at=metadata.get("created_at"), jobs=tuple(parsed))


def _job(index: int, job, where: str) -> PlanJob:
    if not isinstance(job, dict):
        raise UserError(f"job {index} is not an object", where)
    job_id = job.get("id")
    if not isinstance(job_id, str) or not _SAFE_NAME.match(job_id):
        raise UserError(f"job {index} has no usable id ({job_id!r}; it names the job's run folder)", where)
    if job.get("stage") not in STAGES:
        raise UserError(f"job {job_id} has stage {job.get('stage')!r}; expected one of {', '.join(STAGES)}", where)
    overrides = job.get("overrides")
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise UserError(f"job {job_id} has no 'overrides' list of strings", where)
    return PlanJob(id=job_id, stage=job["stage"], family=str(job.get("family") or "?"),
                   coin=str(job.get("coin") or "?"), target=str(job.get("target_name") or "?"),
                   overrides=tuple(overrides))


def _read(path: Path) -> dict:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError("training plan not found", str(path)) from None
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable training plan: {exc}", str(path)) from None
    if not isinstance(raw, dict):
        raise UserError("a training plan is a JSON object", str(path))
    return raw


def _created_at(raw: dict) -> datetime:
    value = (raw.get("metadata") or {}).get("created_at") if isinstance(raw.get("metadata"), dict) else None
    try:
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
