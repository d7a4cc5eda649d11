"""train.py as a user runs it: run folders, the one-line errors, exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data.synthetic import generate
from tests.conftest import FAST_DATA, FAST_LSTM, ROOT


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("family,extra", [("lightgbm", ["model=lightgbm"]), ("lstm", FAST_LSTM)])
def test_cli_run_leaves_a_complete_run_folder(tmp_path, family, extra):
    run_dir = tmp_path / "run"
    proc = run_cli(*extra, "coin=BTC", *FAST_DATA, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["model_info"]["family"] == family
    assert Path(result["model_path"]) == run_dir / "model"
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "config.yaml").is_file()
    assert "run folder: " + str(run_dir) in proc.stdout + proc.stderr
    assert "accuracy" in proc.stdout + proc.stderr


def _assert_user_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and last.endswith(")"), last
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in last, last


def test_unknown_model_is_one_line_exit_2(tmp_path):
    proc = run_cli("model=transformerz", f"hydra.run.dir={tmp_path / 'r'}")
    _assert_user_error(proc, "transformerz", "lightgbm", "lstm")
    assert not (tmp_path / "r").exists()


def test_bad_value_is_one_line_exit_2(tmp_path):
    proc = run_cli("target.horizon=0", *FAST_DATA, f"hydra.run.dir={tmp_path / 'r'}")
    _assert_user_error(proc, "target.horizon")
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["status"] == "failed" and not (tmp_path / "r" / "model").exists()


def test_unknown_key_is_one_line_exit_2(tmp_path):
    _assert_user_error(run_cli("model.hiddn=3", f"hydra.run.dir={tmp_path / 'r'}"), "hiddn")


def test_missing_file_is_one_line_exit_2(tmp_path):
    missing = tmp_path / "nope.parquet"
    proc = run_cli("data=files", f"data.path={missing}", f"hydra.run.dir={tmp_path / 'r'}")
    _assert_user_error(proc, "not found", str(missing))
    assert json.loads((tmp_path / "r" / "result.json").read_text())["status"] == "failed"


def test_corrupt_candles_are_refused_not_repaired(tmp_path):
    df = generate(["BTC"], 3000, seed=1).candles["BTC"]
    df.loc[1234, "high"] = df.loc[1234, "low"] * 0.9
    path = tmp_path / "bad.parquet"
    df.to_parquet(path)
    proc = run_cli("data=files", f"data.path={path}", f"hydra.run.dir={tmp_path / 'r'}")
    _assert_user_error(proc, "low <= open,close <= high", "row 1234", str(path))


def _run_cli_bounded(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """run_cli with 4 GiB of address space and a timeout: a reader without limits fails here, not the machine."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit,
    )


@pytest.mark.parametrize("source", ["device", "fifo"])
def test_devices_and_fifos_are_refused_not_read(tmp_path, source):
    path = Path("/dev/zero") if source == "device" else tmp_path / "candles.csv"
    if source == "fifo":
        os.mkfifo(path)  # opening it would wait for a writer forever
    proc = _run_cli_bounded("data=files", f"data.path={path}", "data.format=csv", f"hydra.run.dir={tmp_path / 'r'}")
    _assert_user_error(proc, "regular files only", str(path))


def test_a_huge_cell_is_cut_in_the_error_line_and_the_result(tmp_path):
    df = generate(["BTC"], 500, seed=1).candles["BTC"].astype({"close": object})
    df.loc[7, "close"] = "9" * 2_000_000 + "x"
    path = tmp_path / "huge_cell.csv"
    df.to_csv(path, index=False)
    proc = run_cli("data=files", f"data.path={path}", f"hydra.run.dir={tmp_path / 'r'}")
    _assert_user_error(proc, "non-numeric value", "characters cut", "at row 7", str(path))
    assert len(proc.stderr.strip().splitlines()[-1]) < 600
    assert (tmp_path / "r" / "result.json").stat().st_size < 20_000


@pytest.mark.parametrize(
    "override,where",
    [
        ("coin.name=../../../escaped", "coin.name"),
        ("coin.symbols=[../../etc]", "coin.symbols"),
        ("coin.symbols=[BTC,BTC]", "coin.symbols"),
    ],
)
def test_names_unsafe_for_folders_are_refused_before_any_folder_is_made(tmp_path, override, where):
    out = tmp_path / "out"
    proc = run_cli(
        override,
        "data.rows=3000",
        "model.n_estimators=20",
        "logger=none",
        "eval.leakage.shuffled_control=false",
        f"paths.output_dir={out}",
    )
    _assert_user_error(proc, where)
    assert not out.exists() and not list(tmp_path.rglob("*escaped*"))


def test_too_little_data_is_one_line_exit_2(tmp_path):
    proc = run_cli(*FAST_LSTM, "data.rows=400", "logger=none", f"hydra.run.dir={tmp_path / 'r'}")
    _assert_user_error(proc, "too little data", "data.rows")
    assert not (tmp_path / "r" / "model").exists()


def test_device_gpu_without_a_gpu_is_one_line_exit_2(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _assert_user_error(run_cli("device=gpu", *FAST_DATA, f"hydra.run.dir={tmp_path / 'r'}"), "device")
