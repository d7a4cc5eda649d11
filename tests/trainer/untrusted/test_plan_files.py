"""A plan file may only choose settings: a job naming code, Hydra itself or output paths runs nothing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import UserError
from tests.conftest import ROOT
from tests.trainer.untrusted.helpers import assert_one_error_line


def _plan(output_dir: Path, *extra: str) -> Path:
    """A plan with one small LightGBM job carrying ``extra`` overrides."""
    folder = output_dir / "plans" / "crafted"
    folder.mkdir(parents=True)
    job = {
        "id": "000_lightgbm_BTC_direction_h5",
        "stage": "cpu",
        "family": "lightgbm",
        "coin": "BTC",
        "target_name": "direction_h5",
        "overrides": ["data.rows=3000", "model=lightgbm", "coin=BTC", "target=direction", "target.horizon=5", *extra],
    }
    path = folder / "master_training_plan.json"
    path.write_text(json.dumps({"version": 1, "plan_id": "crafted", "metadata": {}, "jobs": [job]}))
    return path


def test_a_plan_naming_a_class_runs_nothing(tmp_path, installed_payload):
    target, marker = installed_payload
    out = tmp_path / "out"
    _plan(out, f"model._target_={target}")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(CANDLELAB_OUTPUT_DIR=str(out), PYTHONPATH=str(tmp_path / "site"), WANDB_MODE="offline")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "hydra/sweeper=plan", "logger=none"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert_one_error_line(proc, "names code to instantiate")
    assert not marker.exists()


@pytest.mark.parametrize(
    "line, refused",
    [
        ("model.optimizer={_target_:os.system,command:'touch PWNED'}", "names code"),
        ("+callbacks.payload._target_=os.system", "names code"),
        ("++model.scheduler={_partial_:true}", "names code"),
        ("hydra/launcher=joblib", "sets Hydra itself"),
        ("hydra.searchpath=[file:///tmp]", "sets Hydra itself"),
        ("+hydra.callbacks.x._target_=os.system", "sets Hydra itself"),
        ("paths.output_dir=/etc", "where files are written"),
        ("registry.root=/tmp/elsewhere", "where files are written"),
        ("data.rows=${oc.env:HOME}", "interpolation"),
    ],
)
def test_a_plan_job_may_only_choose_settings(tmp_path, line, refused):
    from hydra_plugins.candlelab_plan_sweeper._plan import load_plan

    path = _plan(tmp_path, line)
    with pytest.raises(UserError, match=refused) as err:
        load_plan(path)
    assert err.value.where == str(path)


def test_a_plan_with_plain_settings_loads(tmp_path):
    from hydra_plugins.candlelab_plan_sweeper._plan import load_plan

    path = _plan(
        tmp_path,
        "coin.symbols=[BTC,ETH]",
        "features.select=[ret_15,rsi]",
        "model.params.num_leaves=7",
        "plan.ranked_until='2021-02-05T03:19:00+00:00'",
        "data.path=/data/ETH_USDT-1m.json",
    )
    assert len(load_plan(path).jobs[0].overrides) == 10
