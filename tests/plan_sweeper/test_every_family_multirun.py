"""Every family through the CLI in one Hydra multirun, as docs/families.md documents it."""

import json
import os
import subprocess
import sys

import pytest

from models.families import families
from tests.conftest import ROOT


@pytest.mark.slow
def test_multirun_over_every_family_completes(tmp_path):
    names = ",".join(f["name"] for f in families())
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            f"model={names}",
            "coin=BTC",
            "data.rows=12000",
            "logger=none",
            "trainer.num_threads=1",
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {}
    for path in tmp_path.glob("*/result.json"):
        r = json.loads(path.read_text())
        results[r["model_info"]["family"]] = r
    assert set(results) == {f["name"] for f in families()}
    for name, r in results.items():
        assert r["status"] == "completed", name
        assert r["test_metrics"]["accuracy"] <= r["data_summary"]["oracle_accuracy"] + 0.05, name
