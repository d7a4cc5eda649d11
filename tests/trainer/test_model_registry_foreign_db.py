"""A registry.db that is not a registry database ends in one error line: in the API, the registry CLI and train."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import UserError
from tests.conftest import FAST_DATA, ROOT
from trainer.registry import Registry, resolve_link

SLOT = "BTC/1m/direction_h1"


def garbage_registry(base: Path) -> Path:
    root = base / "registry"
    root.mkdir(parents=True)
    (root / "registry.db").write_bytes(os.urandom(8192))
    return root


def assert_one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert re.fullmatch(r"error: .+ \(.+\)", lines[-1]), proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[-1]


def test_a_garbage_registry_db_is_a_user_error_in_the_api(tmp_path):
    root = garbage_registry(tmp_path)
    with pytest.raises(UserError, match="registry database cannot be used") as raised:
        Registry(root)
    assert raised.value.where == str(root / "registry.db")
    with pytest.raises(UserError, match="registry database cannot be used"):
        resolve_link(root / "promoted" / "BTC" / "1m" / "direction_h1")


def test_a_garbage_registry_db_is_one_error_line_in_the_registry_cli(tmp_path):
    root = garbage_registry(tmp_path)
    for command in (["list"], ["promote", "lightgbm_BTC_1m_00000000"], ["rollback", SLOT]):
        proc = subprocess.run(
            [sys.executable, "-m", "trainer.registry", "--root", str(root), *command],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert_one_error_line(proc, "registry database cannot be used", "registry.db")
        assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_garbage_registry_db_is_one_error_line_when_train_registers(tmp_path):
    garbage_registry(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["CANDLELAB_OUTPUT_DIR"] = str(tmp_path)
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "model=lightgbm",
            *FAST_DATA,
            "data.rows=5000",
            "model.n_estimators=20",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert_one_error_line(proc, "registry database cannot be used", "registry.db")
    assert json.loads((run_dir / "result.json").read_text())["status"] == "failed"
