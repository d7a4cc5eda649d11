"""The family list, derived from conf/model/*.yaml (one file per family): name, kind, stage, input,
tasks, implementation. ``python -m models`` prints it.

``family_class`` is the only way a saved model names its code: a family name from this list, never a
dotted path read from a model folder."""

import importlib
import re
from functools import lru_cache
from pathlib import Path

from omegaconf import OmegaConf

from core.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"
MODELS_DIR = Path(__file__).resolve().parent
_FAMILY_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
_TARGET = re.compile(r"models\.([a-z][a-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\Z")
_COLUMNS = ("name", "kind", "stage", "input", "tasks", "implementation")


def families(conf_dir: Path = CONF_DIR) -> list[dict]:
    out = []
    for path in sorted(conf_dir.glob("*.yaml")):
        cfg = OmegaConf.load(path)
        out.append(
            {
                "name": cfg.get("name", path.stem),
                "kind": cfg.get("kind"),
                "stage": cfg.get("stage"),
                "input": cfg.get("input"),
                "tasks": list(cfg.get("tasks") or []),
                "implementation": cfg.get("_target_"),
                "about": _first_comment(path),
            }
        )
    return out


_META_KEYS = {
    "name",
    "_target_",
    "kind",
    "stage",
    "input",
    "tasks",
    "checks",
    "optimizer",
    "scheduler",
    "params",
    "members",
    "class_weight",
}


def key_hyperparameters(path: Path, limit: int = 6) -> str:
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    scalars = {k: v for k, v in cfg.items() if k not in _META_KEYS and not isinstance(v, (dict, list))}
    scalars.update({f"params.{k}": v for k, v in (cfg.get("params") or {}).items() if not isinstance(v, (dict, list))})
    return ", ".join(f"{k}={v}" for k, v in list(scalars.items())[:limit])


def markdown(conf_dir: Path = CONF_DIR) -> str:
    lines = ["| family | what it is | stage | input | tasks | key hyper-parameters |", "|---|---|---|---|---|---|"]
    for f in families(conf_dir):
        lines.append(
            f"| `{f['name']}` | {f['about']} | {f['stage']} | {f['input']} | {', '.join(f['tasks'])} | "
            f"{key_hyperparameters(conf_dir / (f['name'] + '.yaml'))} |"
        )
    return "\n".join(lines)


def _first_comment(path: Path) -> str:
    """The config file's leading comment block, joined: what the family is."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("# ").strip())
    return " ".join(words)


def table(rows: list[dict] | None = None) -> str:
    rows = rows if rows is not None else families()
    cells = [[r[c] if c != "tasks" else ",".join(r[c]) for c in _COLUMNS] for r in rows]
    widths = [max(len(str(x)) for x in [c, *(row[i] for row in cells)]) for i, c in enumerate(_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths))]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def family_target(name: object, where: str = "model family") -> str:
    """The ``_target_`` that conf/model/<name>.yaml gives a known family; anything else is refused."""
    if not isinstance(name, str) or not _FAMILY_NAME.match(name) or not (CONF_DIR / f"{name}.yaml").is_file():
        known = ", ".join(sorted(p.stem for p in CONF_DIR.glob("*.yaml")))
        raise UserError(f"unknown model family {str(name)[:80]!r}; known: {known}", where)
    target = OmegaConf.load(CONF_DIR / f"{name}.yaml").get("_target_")
    if not isinstance(target, str) or not _TARGET.match(target):
        raise UserError(
            f"family {name} names {target!r}, not a class of a module in models/", str(CONF_DIR / f"{name}.yaml")
        )
    return target


@lru_cache(maxsize=None)
def _import_family(target: str) -> type:
    from models.base import CandleModel

    module_name, cls_name = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    # the project's own file, not a same-named package found first on the import path
    if Path(module.__file__).resolve().parent != MODELS_DIR:
        raise UserError(f"{module_name} resolves to {module.__file__}, outside {MODELS_DIR}", target)
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, CandleModel)):
        raise UserError(f"{target} is not a model family class", target)
    return cls


def family_class(name: object, where: str = "model family") -> type:
    """The class of a known family (conf/model/<name>.yaml), imported from the project's models/ package."""
    return _import_family(family_target(name, where))
