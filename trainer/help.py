"""`train.py --help` in well under a second: Hydra lists the config groups by composing every group (about a
second on its own); the same listing is read from the config folder instead."""

from pathlib import Path


def config_groups(conf_dir: Path, predicate=lambda group: True) -> str:
    """`group: option, option` lines as Hydra's help prints them (nested groups as `eval/gates`), from the
    YAML files under ``conf_dir``."""
    groups = {}
    for folder in conf_dir.rglob("*"):
        options = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        name = folder.relative_to(conf_dir).as_posix()
        if options and predicate(name):
            groups[name] = options
    return "".join(f"{name}: {', '.join(groups[name])}\n" for name in sorted(groups))


def list_groups_from_files(argv: list[str], conf_dir: Path) -> None:
    """For `--help`, have Hydra take the application's config groups from ``conf_dir``. Hydra's own groups
    (hydra/launcher, ...) are left out: the application help page does not show them, `--hydra-help` does
    (and is left to Hydra)."""
    if not {"--help", "-h"} & set(argv) or "--hydra-help" in argv:
        return
    from hydra._internal.hydra import Hydra

    def format_config_groups(self, predicate, compact: bool = True) -> str:
        if predicate("hydra/launcher"):
            return ""
        return config_groups(conf_dir, lambda g: g != "hydra" and not g.startswith("hydra/") and predicate(g))

    Hydra.format_config_groups = format_config_groups
