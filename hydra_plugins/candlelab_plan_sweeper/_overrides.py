"""Override strings for plan jobs: the user's command-line overrides, and one list per job where the last
value given for a key wins (plan job < sweeper placement and pacing < command line)."""

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

from core.errors import UserError


def parse(parser: OverridesParser, overrides: list[str]) -> list[Override]:
    return parser.parse_overrides(list(overrides))


# What the plan decides (which job it is) and what it was ranked on: a command line may not change them, or
# the jobs would train on data, splits or features the plan's selection never saw (or saw the test rows of).
_JOB_KEYS = ("model", "coin", "target", "stage")
_RANKED_ON = ("data", "split", "features", "seed", "plan")


def command_line(parser: OverridesParser, arguments: list[str]) -> list[Override]:
    """The task overrides typed after `hydra/sweeper=plan`; they apply to every job, so a sweep is refused,
    and so is any override of a job's identity or of what the plan was ranked on (model hyper-parameters,
    threads, loggers, evaluation and placement may change)."""
    parsed = parse(parser, arguments)
    for override in parsed:
        if override.is_sweep_override():
            raise UserError(
                f"{override.input_line!r} is a sweep; the plan sweeper runs the plan's jobs (sweep "
                f"over values with a plain -m, without hydra/sweeper=plan)",
                override.input_line,
            )
        key = override.key_or_group.replace("/", ".")
        root = key.split(".")[0]
        if key in _JOB_KEYS or (root in _JOB_KEYS and root != "model") or root in _RANKED_ON:
            raise UserError(
                f"{override.input_line!r} would change which job runs or what the plan was ranked on; "
                f"make a new plan with it (python -m trainer.plan {override.input_line})",
                override.input_line,
            )
    return parsed


def merged(parser: OverridesParser, *groups: list[str]) -> list[str]:
    """Concatenate override lists, keeping only the last override of each key (Hydra refuses duplicates of a
    config group, and a later list must win)."""
    lines = [line for group in groups for line in group]
    keys = [_key(o) for o in parse(parser, lines)]
    last = {key: i for i, key in enumerate(keys)}
    return [line for i, (line, key) in enumerate(zip(lines, keys)) if last[key] == i]


def applies_to(override: Override, cfg: DictConfig) -> bool:
    """Whether a command-line override belongs in a job: `+key` always adds; any other form only where the job's
    config has the key (`model.max_epochs` means nothing to a tree job)."""
    if override.is_add():
        return True
    key = override.key_or_group.replace("/", ".")
    return (
        OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False, throw_on_resolution_failure=False)
        is not _ABSENT
    )


def value_of(overrides: list[Override], key: str) -> str | None:
    for override in reversed(overrides):
        if override.key_or_group == key and not override.is_delete():
            return str(override.value())
    return None


def quoted(value: str) -> str:
    """A path as a Hydra override value (quoted: paths may hold characters the grammar reserves)."""
    return "'" + value.replace("'", "\\'") + "'"


_ABSENT = object()


def _key(override: Override) -> tuple[str, str | None]:
    return override.key_or_group, override.package
