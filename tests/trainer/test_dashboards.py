"""W&B dashboards, offline: what a run logs, and one group per multirun sweep."""

import os
import subprocess
import sys

from wandb.proto import wandb_internal_pb2 as pb

from tests.conftest import FAST_DATA, ROOT


def _field(message, name: str, value: str) -> bytes:
    """The protobuf encoding of a string field (tag, length, bytes): how it sits in a .wandb file."""
    number = message.DESCRIPTOR.fields_by_name[name].number
    raw = value.encode()
    assert len(raw) < 128
    return bytes([number << 3 | 2, len(raw)]) + raw


def test_multirun_jobs_share_a_wandb_group_and_log_plots_table_and_model(tmp_path):
    sweep = tmp_path / "sweep_group_check"
    env = {**os.environ, "WANDB_MODE": "offline"}
    data = [a for a in FAST_DATA if not a.startswith("logger=")]
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            "model=lightgbm",
            "seed=1,2",
            *data,
            "logger=wandb",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(sweep.glob("*/wandb/offline-run-*"))
    assert len(runs) == 2
    group = _field(pb.RunRecord, "run_group", sweep.name)
    for run in runs:
        blob = next(run.glob("*.wandb")).read_bytes()
        assert group in blob  # one group for the sweep
        assert _field(pb.RunRecord, "job_type", "lightgbm") in blob
        assert _field(pb.ArtifactRecord, "name", "model-lightgbm-BTC") in blob  # the model dir, versioned
        media = run / "files" / "media"
        plots = {p.name.split("_")[0] for p in (media / "images" / "plots").glob("*.png")}
        assert {"reliability", "confusion", "equity", "feature", "learning"} <= plots
        assert list((media / "table").glob("predictions_*.table.json"))
