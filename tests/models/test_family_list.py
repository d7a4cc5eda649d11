"""The family list: derived from conf/model/, complete metadata, listed by `python -m models`."""

import subprocess
import sys

import pytest
from hydra.utils import get_class

from core.errors import UserError
from models.families import families
from tests.conftest import ROOT, make_cfg
from trainer.checks import check_config

KEYS = {"name", "kind", "stage", "input", "tasks", "implementation"}


def test_every_config_file_is_a_registered_family_with_metadata():
    found = families()
    assert {f["name"] for f in found} == {p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")}
    for f in found:
        assert KEYS <= f.keys()
        assert f["kind"] in ("tree", "net", "other") and f["stage"] in ("cpu", "gpu")
        assert f["input"] in ("tabular", "sequence")
        assert f["tasks"] and set(f["tasks"]) <= {"binary", "multiclass", "regression"}
        cls = get_class(f["implementation"])
        assert cls.__module__ == f"models.{f['name']}"  # one family = one module, none aliased
        assert cls.input == f["input"], f["name"]


def test_list_command_shows_every_family():
    out = subprocess.run([sys.executable, "-m", "models"], cwd=ROOT, capture_output=True, text=True, check=True)
    for f in families():
        assert f["name"] in out.stdout
    gpu = subprocess.run(
        [sys.executable, "-m", "models", "gpu"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "lstm" in gpu and "lightgbm" not in gpu


def test_a_family_refuses_a_task_it_does_not_support(tmp_path):
    (tmp_path / "model").mkdir()
    cfg = make_cfg("model=lightgbm", "target=forward_return")
    cfg.model.tasks = ["binary"]
    with pytest.raises(UserError, match="supports binary targets, not regression"):
        check_config(cfg)


def test_a_family_module_never_contradicts_its_config_about_tasks():
    """The config's `tasks` is what check_config enforces; a module that also lists them must agree."""
    import importlib

    for f in families():
        module = importlib.import_module(f"models.{f['name']}")
        declared = getattr(module, "TASKS", None) or getattr(module, "_TASKS", None)
        if declared is not None:
            assert set(declared) == set(f["tasks"]), f["name"]
