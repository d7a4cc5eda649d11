"""Run folders are unique per run: runs started in the same second never share one, and the registry refuses
a model dir that another run wrote."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import trainer.pipeline as pipeline
from core.errors import UserError
from core.runinfo import new_run_id
from tests.conftest import ROOT, make_cfg
from trainer.registry import Registry

# train.py once its heavy imports are done: it waits for one line on stdin, so all start in the same instant
STARTER = r"""
import runpy, sys
train_py = sys.argv[1]
sys.argv = [train_py, *sys.argv[2:]]
sys.path.insert(0, str(__import__("pathlib").Path(train_py).parent))
import lightgbm, trainer.cli, trainer.pipeline
print("ready", flush=True)
sys.stdin.readline()
runpy.run_path(train_py, run_name="__main__")
"""


def test_run_ids_carry_sub_second_time_and_a_random_part():
    ids = [new_run_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"\d{8}T\d{6}\.\d{3}-[0-9a-f]{8}", i) for i in ids)


def test_a_default_run_folder_is_created_exclusively(tmp_path, monkeypatch):
    cfg = make_cfg(f"paths.output_dir={tmp_path}")
    taken = "20260101T000000.000-00000000"
    (tmp_path / "runs" / f"{taken}_{cfg.model.name}_{cfg.coin.name}").mkdir(parents=True)
    ids = iter([taken, "20260101T000000.000-11111111"])
    monkeypatch.setattr(pipeline, "new_run_id", lambda: next(ids))
    run_id, run_dir = pipeline.create_run_dir(cfg)
    assert run_id == "20260101T000000.000-11111111"  # the taken folder made it pick a new id
    assert run_dir == tmp_path / "runs" / f"{run_id}_{cfg.model.name}_{cfg.coin.name}" and run_dir.is_dir()


def test_a_placed_run_folder_is_used_as_given(tmp_path):
    placed = tmp_path / "mine"
    placed.mkdir()
    run_id, run_dir = pipeline.create_run_dir(make_cfg(run_dir=placed))
    assert run_dir == placed and re.fullmatch(r"\d{8}T\d{6}\.\d{3}-[0-9a-f]{8}", run_id)


def test_hydra_names_each_run_and_sweep_folder_apart():
    def hydra_config(*overrides):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose(config_name="config", return_hydra_config=True, overrides=list(overrides)).hydra

    first, second = hydra_config(), hydra_config()
    assert first.run.dir == first.run.dir  # one config resolves to one folder, however often read
    assert first.run.dir != second.run.dir and first.sweep.dir != second.sweep.dir
    assert re.search(r"/runs/\d{8}T\d{6}\.\d{3}-[0-9a-f]{8}_lightgbm_BTC$", first.run.dir)
    assert hydra_config("hydra.run.dir=/somewhere/exact").run.dir == "/somewhere/exact"


def test_registering_a_model_dir_that_another_run_wrote_is_refused(tmp_path):
    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    (model / "model_card.json").write_text(json.dumps({"run_id": "run-b"}))
    rec = {
        "family": "lightgbm",
        "symbol": "BTC",
        "timeframe": "1m",
        "target": "direction_h1",
        "headline": "accuracy",
        "headline_value": 0.6,
        "metrics": {"accuracy": 0.6},
        "gates": {"passed": True},
        "run_id": "run-a",
        "run_dir": str(tmp_path / "run"),
        "git_commit": None,
        "config_hash": "c",
        "data_fingerprint": "d",
    }
    reg = Registry(tmp_path / "registry")
    with pytest.raises(UserError, match="made by run run-b, not by run run-a"):
        reg.register(rec, model)
    (model / "model_card.json").write_text("{}")
    with pytest.raises(UserError, match="no readable model_card.json"):
        reg.register(rec, model)
    assert reg.rows() == [] and list((tmp_path / "registry").rglob(".incoming-*")) == []
    (model / "model_card.json").write_text(json.dumps({"run_id": "run-a"}))
    assert reg.register(rec, model)["run_id"] == "run-a"


@pytest.mark.slow  # 8 train.py processes at once
def test_eight_runs_started_in_the_same_instant_get_eight_folders_and_register_their_own_models(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["CANDLELAB_OUTPUT_DIR"] = str(tmp_path)
    args = [
        "model=lightgbm",
        "model.n_estimators=20",
        "data.rows=5000",
        "trainer.num_threads=1",
        "logger=none",
        "eval.leakage.shuffled_control=false",
        "eval.trading.enabled=true",
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, str(ROOT / "train.py"), *args, f"seed={seed}"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(1, 9)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:  # all eight are released together: their folders are named in the same second
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]

    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 8
    rows = Registry(tmp_path / "registry").rows()
    assert len(rows) == 8 and len({r["run_id"] for r in rows}) == 8
    assert {Path(r["run_dir"]) for r in rows} == set(runs)
    seeds = set()
    for row in rows:
        card = json.loads((Path(row["model_dir"]) / "model_card.json").read_text())
        assert card["run_id"] == row["run_id"]
        run = json.loads((Path(row["run_dir"]) / "run.json").read_text())
        result = json.loads((Path(row["run_dir"]) / "result.json").read_text())
        assert run["run_id"] == result["run"]["run_id"] == row["run_id"]
        assert card["seed"] == run["seed"]
        seeds.add(run["seed"])
    assert seeds == set(range(1, 9))
