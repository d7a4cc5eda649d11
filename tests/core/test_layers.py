"""The packages form layers, bottom to top: core <- data <- callbacks <- models <- trainer <- hydra_plugins.
A module imports only from its own layer or those below it, at the top of a file or inside a function."""

import ast

import pytest

from tests.conftest import ROOT

LAYERS = ["core", "data", "callbacks", "models", "trainer", "hydra_plugins"]


def upward_imports(package: str) -> list[str]:
    """Every import in ``package`` of a package above it, as 'file:line -> module'."""
    rank = LAYERS.index(package)
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in LAYERS and LAYERS.index(top) > rank:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} -> {name}")
    return found


@pytest.mark.parametrize("package", LAYERS)
def test_no_package_imports_a_layer_above_it(package):
    assert upward_imports(package) == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The walk finds imports inside functions too (a lazy import is still a dependency)."""
    fake = tmp_path / "data"
    fake.mkdir()
    (fake / "x.py").write_text("def f():\n    from trainer.pipeline import train\n")
    monkeypatch.setattr("tests.core.test_layers.ROOT", tmp_path)
    assert upward_imports("data") == ["data/x.py:2 -> trainer.pipeline"]
