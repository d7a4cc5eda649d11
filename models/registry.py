"""The family registry, derived from conf/model/*.yaml (one file per family): name, kind, stage, input,
tasks, implementation. ``python -m models`` prints it."""
from pathlib import Path

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"
_COLUMNS = ("name", "kind", "stage", "input", "tasks", "implementation")


def families(conf_dir: Path = CONF_DIR) -> list[dict]:
    out = []
    for path in sorted(conf_dir.glob("*.yaml")):
        cfg = OmegaConf.load(path)
        out.append({"name": cfg.get("name", path.stem), "kind": cfg.get("kind"), "stage": cfg.get("stage"),
                    "input": cfg.get("input"), "tasks": list(cfg.get("tasks") or []),
                    "implementation": cfg.get("_target_"),
                    "about": _first_comment(path)})
    return out


_META_KEYS = {"name", "_target_", "kind", "stage", "input", "tasks", "optimizer", "scheduler", "params",
              "members", "class_weight"}


def key_hyperparameters(path: Path, limit: int = 6) -> str:
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    scalars = {k: v for k, v in cfg.items() if k not in _META_KEYS and not isinstance(v, (dict, list))}
    scalars.update({f"params.{k}": v for k, v in (cfg.get("params") or {}).items()
                    if not isinstance(v, (dict, list))})
    return ", ".join(f"{k}={v}" for k, v in list(scalars.items())[:limit])


def markdown(conf_dir: Path = CONF_DIR) -> str:
    lines = ["| family | what it is | stage | input | tasks | key hyper-parameters |", "|---|---|---|---|---|---|"]
    for f in families(conf_dir):
        lines.append(f"| `{f['name']}` | {f['about']} | {f['stage']} | {f['input']} | {', '.join(f['tasks'])} | "
                     f"{key_hyperparameters(conf_dir / (f['name'] + '.yaml'))} |")
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
