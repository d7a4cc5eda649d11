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


def _first_comment(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def table(rows: list[dict] | None = None) -> str:
    rows = rows if rows is not None else families()
    cells = [[r[c] if c != "tasks" else ",".join(r[c]) for c in _COLUMNS] for r in rows]
    widths = [max(len(str(x)) for x in [c, *(row[i] for row in cells)]) for i, c in enumerate(_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths))]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
