"""A real LightGBM model folder trained once per session and copied per test, and an importable payload module."""

import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST_DATA, make_cfg
from tests.trainer.untrusted.helpers import PAYLOAD
from trainer import train


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """A real LightGBM model folder to tamper with (copied per test)."""
    out = tmp_path_factory.mktemp("trained")
    result = train(make_cfg("model=lightgbm", "model.n_estimators=20", *FAST_DATA, run_dir=out))
    return Path(result.model_path)


@pytest.fixture
def folder(trained, tmp_path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(trained, copy)
    return copy


@pytest.fixture
def installed_payload(tmp_path, monkeypatch) -> tuple[str, Path]:
    """A module importable by name (as an installed package would be) that writes a marker when used."""
    marker = tmp_path / "PWNED"
    site = tmp_path / "site"
    site.mkdir()
    (site / "candlelab_payload.py").write_text(PAYLOAD.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(site))
    sys.modules.pop("candlelab_payload", None)
    return "candlelab_payload.Payload", marker
