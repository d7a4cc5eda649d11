"""Sweeps through Hydra's launcher plugins (joblib, submitit) and an Optuna search, run as a user runs them."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.errors import UserError
from tests.conftest import ROOT

TINY = [
    "model=lightgbm",
    "model.n_estimators=40",
    "data.rows=3000",
    "trainer.num_threads=1",
    "logger=none",
    "eval.leakage.shuffled_control=false",
]
SUBMITIT_LOCAL = [
    "hydra/launcher=submitit_local",
    "hydra.launcher.timeout_min=5",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.gpus_per_node=0",
]


def train(*args: str, sweep_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args, f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def results(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/result.json"))]


def test_user_error_survives_pickling():
    # parallel launchers send a failed job's exception back to the sweep process as a pickle
    err = pickle.loads(pickle.dumps(UserError("too little data", "data.rows")))
    assert isinstance(err, UserError) and err.line() == "error: too little data (data.rows)"


@pytest.mark.slow
def test_joblib_launcher_runs_a_sweep_in_parallel_processes(tmp_path):
    proc = train("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY, "seed=1,2", sweep_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    runs = results(tmp_path)
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert {r["run"]["run_dir"] for r in runs} == {str(p) for p in tmp_path.glob("*_lightgbm_BTC")}


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_sweep_as_submitted_jobs(tmp_path):
    proc = train("-m", *SUBMITIT_LOCAL, *TINY, "seed=1,2", sweep_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = results(tmp_path)
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert len(list(tmp_path.glob(".submitit/*/*_log.out"))) == 2  # one submitit job (and its logs) per run


@pytest.mark.slow
def test_a_user_error_inside_a_submitit_job_still_ends_with_one_line_and_exit_2(tmp_path):
    proc = train("-m", *SUBMITIT_LOCAL, *TINY, "data.rows=50", sweep_dir=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: too little data")
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_optuna_search_samples_distinct_trials_and_ranks_them_on_validation(tmp_path):
    # hparams_search sets hydra.mode=MULTIRUN: no -m needed
    proc = train("hparams_search=lightgbm", "hydra.sweeper.n_trials=3", *TINY, sweep_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(jobs) == 3
    sampled = set()
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        sampled.add(tuple(sorted(o for o in overrides if o.startswith("model.params."))))
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert cfg["eval"]["optimize"] == "val/loss"
    assert len(sampled) == 3 and all(len(s) == 6 for s in sampled)

    runs = results(tmp_path)
    assert [r["status"] for r in runs] == ["completed"] * 3
    assert not any(r["registry"]["promoted"] for r in runs)  # trials stay candidates
    val_loss = [
        sum(f["training_metrics"]["val/loss"] for f in r["data_summary"]["folds"]) / len(r["data_summary"]["folds"])
        for r in runs
    ]
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna"
    assert best["best_value"] == pytest.approx(min(val_loss))  # minimised validation loss, not a test metric
    assert set(best["best_params"]) == {o.split("=")[0] for o in next(iter(sampled))}
