"""Data-parallel training (device.strategy=ddp) as a user runs it, on CPU processes (gloo): the same code
path a multi-GPU run takes, minus NCCL. Lightning starts rank 1 by running the command again."""

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from core.devices import resolve_device
from core.errors import UserError
from data.providers import load_candles
from tests.conftest import FAST_DATA, FAST_LSTM, ROOT, make_cfg
from trainer.model_dir import load_model

DDP = ["device=cpu", "device.strategy=ddp", "device.devices=2", "trainer.num_threads=1"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *FAST_LSTM, *FAST_DATA, *DDP, *args]


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "LOCAL_RANK", "NODE_RANK")}


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "progress.jsonl").read_text().splitlines()]


def _assert_rank_1_did_not_crash(err: str) -> None:
    assert "Traceback" not in err and "terminated with code" not in err, err[-3000:]  # rank 1 shares stderr


def test_ddp_splits_each_epoch_between_ranks_and_only_rank_0_writes(tmp_path):
    run_dir = tmp_path / "run"
    # with the shuffled-label control: a second fit, whose Trainer joins the ranks started by the first
    proc = subprocess.Popen(
        _cli(
            "model.batch_size=256",
            "callbacks.progress.every_n_batches=1",
            "eval.leakage.shuffled_control=true",
            f"hydra.run.dir={run_dir}",
        ),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == 0, err[-3000:]
    _assert_rank_1_did_not_crash(err)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed"
    assert result["model_info"]["processes"] == 2
    assert result["leakage"]["shuffled_control"] is not None
    # each rank trains on half of every epoch's windows: half the batches a single process would take
    n_train = result["data_summary"]["rows_per_split"]["train"]
    steps = [e for e in _events(run_dir) if e["kind"] == "step" and e["phase"] == "fit"]
    assert steps and {e["batches"] for e in steps} == {math.ceil((n_train // 2) / 256)}
    assert max(e["iteration"] for e in steps) == result["training_metrics"]["epochs_run"] * steps[0]["batches"]
    # rank 1 ran in the same folder (its own log) and left every file to rank 0: one run, one progress stream
    assert (run_dir / "train_ddp_process_1.log").exists()
    assert [e["phase"] for e in _events(run_dir) if e["kind"] == "phase"].count("load") == 1
    assert not (run_dir / "control").exists()
    # the saved model (rank 0's best epoch) reloads in one process and predicts what the run evaluated
    cfg = OmegaConf.load(run_dir / "config.yaml")
    candles = load_candles(cfg.data, ["BTC"], cfg.seed).by_symbol["BTC"]
    evaluated = pd.read_parquet(run_dir / "predictions_test.parquet")
    out = load_model(result["model_path"]).predict_proba(candles)
    reloaded = pd.Series(out["p_up"].to_numpy(), index=candles["timestamp"]).loc[evaluated["timestamp"]]
    np.testing.assert_allclose(reloaded.to_numpy(), evaluated["p_up"].to_numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("sig,phase", [(signal.SIGINT, "fit"), (signal.SIGTERM, "control")])
def test_a_cancel_reaching_only_rank_0_stops_every_rank_together(tmp_path, sig, phase):
    """The signal goes to rank 0 alone; rank 1 learns of it only through the ranks' shared check. SIGTERM
    lands in the second fit (the control), where Lightning no longer relays signals to the other rank."""
    run_dir = tmp_path / "run"
    control = (
        ["eval.leakage.shuffled_control=true", "model.max_epochs=1"]
        if phase == "control"
        else ["model.max_epochs=50", "model.patience=50"]
    )
    proc = subprocess.Popen(
        _cli("model.batch_size=64", *control, "callbacks.progress.every_n_batches=1", f"hydra.run.dir={run_dir}"),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (run_dir / "progress.jsonl").exists() and any(
                e["kind"] == "step" and e["phase"] == phase for e in _events(run_dir)
            ):
                break
            time.sleep(0.05)  # the test polls a file; the training loop never sleeps
        else:
            pytest.fail(f"no {phase} step reported (exit {proc.poll()})")
        proc.send_signal(sig)
        # had rank 0 left the fit alone, both would wait for each other forever: the timeout detects that hang
        _, err = proc.communicate(timeout=180)
    finally:  # both ranks, whatever happened
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == 3, err[-3000:]
    _assert_rank_1_did_not_crash(err)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "cancelled" and result["reason"].startswith(sig.name)


def test_data_parallel_ranks_split_each_epoch_evenly_and_disjointly():
    from data.windows import WindowBatches

    features = torch.arange(400, dtype=torch.float32).reshape(100, 4)
    ends = np.arange(9, 100)  # 91 windows: 45 per rank of 2, one left out this epoch

    def ranks(world, seed):
        out = []
        for rank in range(world):
            b = WindowBatches(features, ends, np.zeros(len(ends), dtype=np.int64), 5, 8, shuffle_seed=seed)
            b.rank_source = lambda rank=rank: (rank, world)
            got = [x[:, -1, 0] // 4 for x, _ in b]  # the row each window ends at
            assert len(got) == len(b)  # what Lightning is told matches what the rank yields
            out.append(torch.cat(got).long().tolist())
        return out

    for world in (2, 3):
        parts = ranks(world, seed=11)
        assert len({len(p) for p in parts}) == 1 and len(parts[0]) == len(ends) // world
        seen = [r for p in parts for r in p]
        assert len(set(seen)) == len(seen) and set(seen) <= set(ends.tolist())
    assert ranks(2, seed=11)[0] != ranks(2, seed=12)[0]  # the split follows the epoch's shuffle


def test_ddp_resolves_on_cpu_as_processes_and_refuses_gpu_ids_there(monkeypatch):
    from trainer.checks import check_config

    monkeypatch.setattr("core.runinfo.hydra_mode", lambda: "RUN")  # as under `python train.py`
    dev = resolve_device(make_cfg("device=cpu", "device.strategy=ddp", "device.devices=3").device, "gpu")
    assert (dev.accelerator, dev.strategy, dev.devices, dev.processes) == ("cpu", "ddp", 3, 3)
    assert resolve_device(make_cfg("device=cpu", "device.devices=3").device, "gpu").processes == 1
    with pytest.raises(UserError, match="number of processes") as err:
        resolve_device(make_cfg("device=cpu", "device.strategy=ddp", "device.devices=[0,1]").device, "gpu")
    assert err.value.where == "device.devices"
    check_config(make_cfg("device.devices=[0]"))  # a plan's GPU stage pins jobs like this
    for bad in ("device.devices=[]", "device.devices=[-1]", "device.devices=0", "device.strategy=ddp_spawn"):
        with pytest.raises(UserError):
            check_config(make_cfg(bad))


def test_only_processes_lightning_started_for_a_ddp_fit_are_workers(monkeypatch):
    from core.devices import is_worker

    ddp = OmegaConf.create({"strategy": "ddp"})
    monkeypatch.delenv("NODE_RANK", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert not is_worker(ddp)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert is_worker(ddp)
    assert not is_worker(OmegaConf.create({"strategy": "auto"}))  # a stray LOCAL_RANK changes nothing


def test_ddp_outside_a_single_cli_run_and_remote_candles_without_an_end_are_refused(tmp_path, monkeypatch):
    from trainer.pipeline import train

    ddp = ["device=cpu", "device.strategy=ddp", "device.devices=2"]
    with pytest.raises(UserError, match="single `python train.py") as err:  # it would re-run the caller
        resolve_device(make_cfg(*ddp).device, "gpu")
    assert err.value.where == "device.strategy"
    resolve_device(make_cfg("device=cpu", "device.strategy=ddp", "device.devices=1").device, "gpu")
    monkeypatch.setattr("core.runinfo.hydra_mode", lambda: "RUN")
    with pytest.raises(UserError, match="set data.end") as err:  # refused before anything is downloaded
        train(make_cfg(*FAST_LSTM, *ddp, "data=ccxt", f"paths.output_dir={tmp_path}", run_dir=tmp_path / "r"))
    assert err.value.where == "data.end"


def test_resuming_ranks_read_the_one_checkpoint_rank_0_adopted(tmp_path):
    """Rank 0 copies the checkpoint into the new run (paths rewritten); the other ranks must resume from that
    copy, not the original: their checkpoint callbacks would otherwise restore another state and the ranks'
    collectives would diverge at the first validation."""
    from callbacks.checkpoints import adopt_checkpoint

    old = tmp_path / "old" / "checkpoints"
    old.mkdir(parents=True)
    torch.save(
        {
            "state_dict": {},
            "epoch": 0,
            "global_step": 1,
            "loops": {},  # what a safe resume checks for
            "callbacks": {
                "ModelCheckpoint{}": {
                    "dirpath": str(old),
                    "best_model_path": str(old / "best-0.ckpt"),
                    "best_k_models": {str(old / "best-0.ckpt"): 0.5},
                }
            },
        },
        old / "latest.ckpt",
    )
    torch.save({"state_dict": {}, "epoch": 0}, old / "best-0.ckpt")
    new = tmp_path / "new" / "checkpoints"
    named = adopt_checkpoint(old / "latest.ckpt", new, write=False)
    assert not named.exists()  # rank > 0 writes nothing
    written = adopt_checkpoint(old / "latest.ckpt", new)
    assert named == written
    state = torch.load(written, weights_only=True)["callbacks"]["ModelCheckpoint{}"]
    assert state["dirpath"] == str(new.resolve())
    assert list(state["best_k_models"]) == [str(new.resolve() / "best-0.ckpt")]


def test_a_failing_rank_0_ends_the_ranks_it_started():
    from core.devices import remember_workers, stop_workers

    rank_1 = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    remember_workers([rank_1])
    remember_workers([rank_1])  # a later fit of the same run reports the same process again
    stop_workers()
    assert rank_1.wait(timeout=10) != 0
    stop_workers()  # nothing left to end
