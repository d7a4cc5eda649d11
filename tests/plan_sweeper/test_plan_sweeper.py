"""The plan sweeper (`python train.py -m hydra/sweeper=plan`): stages, thread budget, resume, failures, summary."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import ROOT

# Shrink every family from the command line; `++` because the default model (lightgbm) has no net keys, and the
# sweeper leaves an override out of the jobs whose config lacks its key.
SMALL = [
    "logger=none",
    "eval.leakage.shuffled_control=false",
    "model.n_estimators=30",
    "++model.hidden=8",
    "++model.layers=1",
    "++model.window=8",
    "++model.max_epochs=1",
    "++model.batch_size=512",
]


def plan_job(i: int, family: str, symbols: list[str], target: str, horizon: int = 5, extra: tuple = ()) -> dict:
    coin = "-".join(symbols)
    coin_overrides = (
        [f"coin={coin}"] if len(symbols) == 1 else [f"coin.name={coin}", f"coin.symbols=[{','.join(symbols)}]"]
    )
    return {
        "id": f"{i:03d}_{family}_{coin}_{target}_h{horizon}",
        "stage": "gpu" if family == "lstm" else "cpu",
        "family": family,
        "coin": coin,
        "symbols": symbols,
        "route": "symbol" if len(symbols) == 1 else "pooled",
        "target_name": f"{target}_h{horizon}",
        "target_type": target,
        # a plan records its data settings in every job (the command line may not change them)
        "overrides": [
            "data.rows=3000",
            f"model={family}",
            *coin_overrides,
            f"target={target}",
            f"target.horizon={horizon}",
            *extra,
        ],
    }


def write_plan(output_dir: Path, plan_id: str, jobs: list[dict], created_at: str = "2026-11-21T13:00:00.123+00:00"):
    folder = output_dir / "plans" / plan_id
    folder.mkdir(parents=True, exist_ok=True)
    plan = {
        "version": 1,
        "plan_id": plan_id,
        "metadata": {
            "run_id": "test",
            "git_commit": None,
            "config_hash": "test",
            "created_at": created_at,
            "data_fingerprint": None,
            "settings": {},
        },
        "rankings": {},
        "jobs": jobs,
        "views": {
            "by_target": {},
            "by_symbol": {},
            "by_type": {},
            "by_route": {},
            "by_stage": {s: [j["id"] for j in jobs if j["stage"] == s] for s in ("cpu", "gpu")},
        },
    }
    path = folder / "master_training_plan.json"
    path.write_text(json.dumps(plan, indent=1))
    return path


def command(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "-m", "hydra/sweeper=plan", *args]


def environment(output_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(CANDLELAB_OUTPUT_DIR=str(output_dir), WANDB_MODE="offline")
    return env


def sweep(output_dir: Path, *args: str, timeout: int = 420) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*args), cwd=ROOT, env=environment(output_dir), capture_output=True, text=True, timeout=timeout
    )


def result_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


def joblib_available() -> bool:
    try:
        import hydra_plugins.hydra_joblib_launcher  # noqa: F401
    except ImportError:
        return False
    return True


def test_plan_runs_cpu_stage_then_gpu_stage_with_a_thread_budget(tmp_path):
    combos = [
        (f, s, t)
        for f in ("lstm", "lightgbm", "xgboost")
        for s in ("BTC", "ETH")
        for t in ("direction", "forward_return")
    ]
    jobs = [plan_job(i, f, [s], t) for i, (f, s, t) in enumerate(combos)]  # the GPU-stage jobs come first
    write_plan(tmp_path, "p_full", jobs)
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if joblib_available() else []
    proc = sweep(tmp_path, *launcher, *SMALL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    runs = tmp_path / "plans" / "p_full" / "runs"
    results = {j["id"]: result_of(runs / j["id"]) for j in jobs}
    assert all(r["status"] == "completed" for r in results.values())
    cpu = [results[j["id"]] for j in jobs if j["stage"] == "cpu"]
    gpu = [results[j["id"]] for j in jobs if j["stage"] == "gpu"]
    assert len(cpu) == 8 and len(gpu) == 4
    assert max(stamp(r["run"]["finished_at"]) for r in cpu) < min(stamp(r["run"]["started_at"]) for r in gpu)
    assert {r["model_info"]["family"] for r in gpu} == {"lstm"}
    # without a GPU the GPU stage runs on CPU, with one warning from the sweeper for the whole stage
    gpu_visible = torch.cuda.is_available()
    assert all((r["model_info"]["device"] != "cpu") == gpu_visible for r in gpu)
    assert (proc.stdout + proc.stderr).count("no CUDA GPU visible") == (0 if gpu_visible else 1)

    cores = os.cpu_count() or 1
    budget = max(1, cores // 2) if launcher else cores
    for j in jobs:
        cfg = OmegaConf.load(runs / j["id"] / "config.yaml")
        if j["stage"] == "cpu":  # command-line overrides land where the family has the key
            assert cfg.trainer.num_threads == budget, j["id"]
            assert cfg.model.n_estimators == 30 and "hidden" not in cfg.model
        else:  # one job at a time: every core
            assert cfg.trainer.num_threads == cores, j["id"]
            assert cfg.model.hidden == 8 and cfg.model.max_epochs == 1 and "n_estimators" not in cfg.model
            assert cfg.device.name == ("auto" if gpu_visible else "cpu")

    summary = json.loads((tmp_path / "plans" / "p_full" / "plan_summary.json").read_text())
    assert summary["totals"]["completed"] == 12 and len(summary["jobs"]) == 12
    assert summary["plan_path"] == str(tmp_path / "plans" / "p_full" / "master_training_plan.json")
    for row in summary["jobs"]:
        r = results[row["id"]]
        assert row["status"] == "completed"
        assert (row["started_at"], row["finished_at"]) == (r["run"]["started_at"], r["run"]["finished_at"])
        assert row["metric"] == ("ic" if row["target"].startswith("forward_return") else "accuracy")
        assert row["value"] == pytest.approx(r["test_metrics"][row["metric"]])
        assert row["gates_passed"] == r["gates"]["passed"]
    assert "p_full" in proc.stderr and "000_lstm_BTC_direction_h5" in proc.stderr  # the rich table


def test_interrupted_plan_resumes_where_it_stopped(tmp_path):
    data = ()
    slow = ("model.n_estimators=10000", "model.early_stopping_rounds=10000", "model.params.learning_rate=0.0001")
    jobs = [
        plan_job(0, "lightgbm", ["BTC"], "direction", extra=data + ("model.n_estimators=30",)),
        plan_job(1, "lightgbm", ["ETH"], "direction", extra=data + slow),
        plan_job(
            2,
            "xgboost",
            ["BTC"],
            "direction",  # killed while it runs
            extra=data + ("model.n_estimators=1500", "model.early_stopping_rounds=1500"),
        ),
        plan_job(3, "xgboost", ["ETH"], "direction", extra=data + ("model.n_estimators=30",)),
    ]
    write_plan(tmp_path, "p_resume", jobs)
    runs = tmp_path / "plans" / "p_resume" / "runs"
    first, second, third = (runs / j["id"] for j in jobs[:3])
    args = ("logger=none", "eval.leakage.shuffled_control=false", "trainer.num_threads=1")

    proc = subprocess.Popen(
        command(*args),
        cwd=ROOT,
        env=environment(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: boosting(second), proc, 240)
        (second / "STOP").touch()  # cancels the second job mid-fit
        wait_for(lambda: (third / "run.json").exists(), proc, 120)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole sweep dies during the third job
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert result_of(first)["status"] == "completed"
    assert result_of(second)["status"] == "cancelled", result_of(second).get("reason")
    assert not (third / "result.json").exists() and not (runs / jobs[3]["id"]).exists()
    summary_path = tmp_path / "plans" / "p_resume" / "plan_summary.json"
    partial = json.loads(summary_path.read_text())  # written after every launch: progress survives a kill
    assert partial["state"] == "running"
    assert [row["status"] for row in partial["jobs"]] == ["completed", "cancelled", "pending", "pending"]
    kept = (first / "result.json").read_bytes(), (first / "result.json").stat().st_mtime_ns

    rerun = sweep(tmp_path, *args)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert ((first / "result.json").read_bytes(), (first / "result.json").stat().st_mtime_ns) == kept
    summary = json.loads(summary_path.read_text())
    assert [row["status"] for row in summary["jobs"]] == ["skipped", "completed", "completed", "completed"]
    for j in jobs[1:]:
        assert result_of(runs / j["id"])["status"] == "completed"
    assert not (second / "STOP").exists()
    assert json.loads((first / "result.json").read_text())["run"]["config_hash"] == summary["jobs"][0]["config_hash"]


def boosting(run_dir: Path) -> bool:
    """The fit has reported boosting rounds (a stop file now cancels it mid-fit)."""
    events = run_dir / "progress.jsonl"
    return events.exists() and '"kind": "step"' in events.read_text()


def wait_for(condition, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the sweep ended (exit {proc.returncode}) before the expected moment"
        assert time.monotonic() < deadline, "timed out waiting for the sweep"
        time.sleep(0.02)


def test_a_failing_job_does_not_stop_the_plan_and_exits_4(tmp_path):
    jobs = [
        plan_job(0, "lightgbm", ["BTC"], "direction"),
        plan_job(1, "lightgbm", ["ETH"], "direction", horizon=2900),  # too little data: fails at run time
        plan_job(2, "lightgbm", ["SOL"], "direction"),
    ]
    write_plan(tmp_path, "p_fail", jobs)
    proc = sweep(
        tmp_path,
        "logger=none",
        "eval.leakage.shuffled_control=false",
        "model.n_estimators=30",
        "trainer.num_threads=1",
        "hydra.sweeper.cores=8",
    )
    summary_path = tmp_path / "plans" / "p_fail" / "plan_summary.json"
    assert proc.returncode == 4, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == f"error: 1 of 3 plan jobs did not complete ({summary_path})"
    assert "Traceback" not in proc.stderr
    summary = json.loads(summary_path.read_text())
    assert [row["status"] for row in summary["jobs"]] == ["completed", "failed", "completed"]
    assert "too little data" in summary["jobs"][1]["reason"]
    assert summary["totals"]["failed"] == 1 and summary["totals"]["completed"] == 2
    runs = tmp_path / "plans" / "p_fail" / "runs"
    assert result_of(runs / jobs[1]["id"])["status"] == "failed"
    assert result_of(runs / jobs[2]["id"])["status"] == "completed"
    # the user's thread count wins over the budget (8 cores, one job at a time -> 8)
    assert OmegaConf.load(runs / jobs[2]["id"] / "config.yaml").trainer.num_threads == 1


def test_no_plan_is_one_line_exit_2(tmp_path):
    proc = sweep(tmp_path, "logger=none", timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [proc.stderr.strip().splitlines()[-1]]
    assert errors[0] == (
        f"error: no training plan found under {tmp_path / 'plans'} (run python -m trainer.plan "
        f"first, or set hydra.sweeper.path) (hydra.sweeper.path)"
    )
    assert "Traceback" not in proc.stderr


def test_sweeper_config_composes_with_the_compose_api():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            return_hydra_config=True,
            overrides=["hydra/sweeper=plan", "hydra.sweeper.cores=3", "hydra.sweeper.stages=[gpu,cpu]"],
        )
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.candlelab_plan_sweeper.plan_sweeper.PlanSweeper"
    assert (sweeper.path, sweeper.cores, list(sweeper.stages), sweeper.runs_dir) == (None, 3, ["gpu", "cpu"], None)


def test_thread_budget_follows_the_launcher():
    from hydra_plugins.candlelab_plan_sweeper._budget import launcher_parallelism, thread_budget

    def parallel(jobs=12, **launcher):
        return launcher_parallelism(OmegaConf.create(launcher), cores=16, jobs=jobs)

    assert parallel(_target_="hydra._internal.core_plugins.basic_launcher.BasicLauncher") == 1
    assert parallel(n_jobs=-1) == 16 and parallel(n_jobs=-2) == 15 and parallel(n_jobs=4) == 4
    # submitit starts a batch's jobs at once: every job of a local batch, up to array_parallelism on a cluster
    assert parallel(array_parallelism=8, tasks_per_node=1) == 8 and parallel(jobs=3, array_parallelism=8) == 3
    assert parallel(timeout_min=60, tasks_per_node=1) == 12
    assert [thread_budget(16, p) for p in (1, 3, 16, 40)] == [16, 5, 1, 1]


def test_newest_plan_is_chosen_by_created_at_then_file_time(tmp_path):
    from hydra_plugins.candlelab_plan_sweeper._plan import find_plan, load_plan

    newest = write_plan(
        tmp_path,
        "b_newest",
        [plan_job(0, "lightgbm", ["BTC"], "direction")],
        created_at="2026-11-21T13:00:00.500+00:00",
    )
    older = write_plan(tmp_path, "a_older", [], created_at="2026-11-21T13:00:00.499+00:00")
    os.utime(older, (time.time() + 60, time.time() + 60))  # touched later, but created earlier
    assert find_plan(tmp_path) == newest
    plan = load_plan(newest)
    assert plan.plan_id == "b_newest" and "model=lightgbm" in plan.jobs[0].overrides
    # a broken or foreign newer file is passed over, not fatal
    broken = tmp_path / "plans" / "c_broken" / "master_training_plan.json"
    broken.parent.mkdir()
    broken.write_text("{ not json")
    foreign = write_plan(tmp_path, "d_foreign", [], created_at="2026-11-22T00:00:00.000+00:00")
    foreign.write_text(foreign.read_text().replace('"version": 1', '"version": 99'))
    assert find_plan(tmp_path) == newest


@pytest.mark.parametrize("override", ["data.rows=500", "split.train=0.5", "model=xgboost", "coin=ETH"])
def test_the_command_line_cannot_change_a_job_or_what_its_plan_was_ranked_on(tmp_path, override):
    write_plan(tmp_path, "p_guard", [plan_job(0, "lightgbm", ["BTC"], "direction")])
    proc = sweep(tmp_path, "logger=none", override, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {override!r} would change which job runs or what the plan was ranked on; make a new plan with "
        f"it (python -m trainer.plan {override}) ({override})"
    )
    assert not (tmp_path / "plans" / "p_guard" / "runs").exists()


def test_stages_cannot_put_gpu_before_cpu(tmp_path):
    write_plan(tmp_path, "p_order", [plan_job(0, "lightgbm", ["BTC"], "direction")])
    proc = sweep(tmp_path, "logger=none", "hydra.sweeper.stages=[gpu,cpu]", timeout=180)
    assert proc.returncode == 2 and "stages run in the order cpu, gpu" in proc.stderr.strip().splitlines()[-1]
