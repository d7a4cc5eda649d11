"""Finding and reading a training plan (`master_training_plan.json`, written by `python -m trainer.plan`)."""

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from core.errors import UserError

PLAN_FILE = "master_training_plan.json"
PLAN_VERSION = 1
STAGES = ("cpu", "gpu")
log = logging.getLogger(__name__)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")  # ids become folder names


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
        raise UserError(
            f"no training plan found under {output_dir / 'plans'} (run python -m trainer.plan "
            f"first, or set hydra.sweeper.path)",
            "hydra.sweeper.path",
        )
    usable = []
    for path in candidates:  # one unreadable or foreign plan must not hide a good newer one
        try:
            raw = _read(path)
        except UserError as exc:
            log.warning("ignoring %s: %s", path, exc.what)
            continue
        if raw.get("version") != PLAN_VERSION:
            log.warning(
                "ignoring %s: plan version %r, this sweeper reads version %s", path, raw.get("version"), PLAN_VERSION
            )
            continue
        usable.append((_created_at(raw), path.stat().st_mtime, path))
    if not usable:
        raise UserError(
            f"no usable training plan under {output_dir / 'plans'} (run python -m trainer.plan "
            f"first, or set hydra.sweeper.path)",
            "hydra.sweeper.path",
        )
    return max(usable)[2]


def load_plan(path: Path) -> Plan:
    raw = _read(path)
    where = str(path)
    if raw.get("version") != PLAN_VERSION:
        raise UserError(
            f"unsupported plan version {raw.get('version')!r}; this sweeper reads version {PLAN_VERSION}", where
        )
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
    for line in overrides:
        _check_override(job_id, line, where)
    return PlanJob(
        id=job_id,
        stage=job["stage"],
        family=str(job.get("family") or "?"),
        coin=str(job.get("coin") or "?"),
        target=str(job.get("target_name") or "?"),
        overrides=tuple(overrides),
    )


# A plan may come from someone else: its overrides choose settings, never code (``_target_`` and the other
# instantiation keys), Hydra itself (launcher, search path, callbacks, output folders) or where files are written.
_INSTANTIATE_KEY = re.compile(r"_(target|partial|args|recursive|convert)_\Z")
_WRITES = ("paths", "registry.root", "data.cache_dir", "plan.output", "runtime")


def _check_override(job_id: str, line: str, where: str) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        override = OverridesParser.create().parse_override(line)
        value = override.value()
    except Exception as exc:  # the grammar's own error, one line
        raise UserError(
            f"job {job_id}: override {line[:120]!r} does not parse: {str(exc).splitlines()[0][:160]}", where
        ) from None
    key = override.key_or_group.replace("/", ".")
    parts = key.split(".")
    refused = None
    if parts[0] == "hydra" or "hydra" in (override.package or "").split("."):
        refused = "sets Hydra itself (launcher, search path, callbacks, folders)"
    elif any(_INSTANTIATE_KEY.match(p) for p in parts) or _names_code(value):
        refused = "names code to instantiate (_target_)"
    elif any(key == w or key.startswith(w + ".") for w in _WRITES):
        refused = "chooses where files are written"
    elif "${" in line:
        refused = "holds an interpolation (${...}), which could read the environment or other settings"
    if refused:
        raise UserError(
            f"job {job_id}: override {line[:120]!r} {refused}; a plan's jobs may only choose settings", where
        )


def _names_code(value) -> bool:
    """Whether a parsed override value (a dict or list, any depth) holds an instantiation key."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if any(_INSTANTIATE_KEY.match(str(k)) for k in item):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


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
