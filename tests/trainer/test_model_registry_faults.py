"""The registry under faults: a writer killed at any step of a slot's first promotion never makes the link
serve an unregistered model, the next write removes what it left, and a kill right after registering leaves the
run's result.json."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import trainer.registry as registry_module
from core.errors import UserError
from tests.conftest import FAST_DATA, ROOT
from trainer.registry import Registry, resolve_link

SLOT = "BTC/1m/direction_h1"
OTHER = "ETH/1m/direction_h1"
KILLED = 77
BEGIN_LINES = {
    n for n, line in enumerate(Path(registry_module.__file__).read_text().splitlines(), 1) if "BEGIN IMMEDIATE" in line
}


def model_dir(base: Path, run_id: str) -> Path:
    d = base / "runs" / run_id / "model"
    d.mkdir(parents=True)
    (d / "model_card.json").write_text(json.dumps({"run_id": run_id}))
    (d / "weights.bin").write_bytes(run_id.encode() * 64)
    return d


def record(run_id: str, symbol: str = "BTC", value: float = 0.6, passed: bool = True, fingerprint: str = "fp") -> dict:
    return {
        "family": "lightgbm",
        "symbol": symbol,
        "timeframe": "1m",
        "target": "direction_h1",
        "headline": "accuracy",
        "headline_value": value,
        "metrics": {"accuracy": value, "n": 1000},
        "gates": {"passed": passed},
        "run_id": run_id,
        "run_dir": f"/runs/{run_id}",
        "git_commit": "abc",
        "config_hash": f"cfg-{run_id}",
        "data_fingerprint": fingerprint,
    }


def first_promotion(base: Path) -> None:
    """The step under test: a gate-passing model registered into a slot that has never had a promoted model
    (it holds one failed candidate; another slot has a promoted model)."""
    Registry(base / "registry").register(record("first-promoted"), model_dir(base, "first-promoted"))


def run_killed(base: Path, kill_at: int | None, count_file: Path | None = None) -> int:
    """Run ``first_promotion`` in a forked child that dies (os._exit, no cleanup at all, as a SIGKILL leaves
    things) at its ``kill_at``-th step; returns the child's exit code. A step is a line of trainer/registry.py
    executed for the first time in the current transaction (a loop's repeats are the same step)."""
    source = registry_module.__file__
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            lines = transactions = 0
            seen: set[tuple[int, int]] = set()

            def local(frame, event, arg):
                nonlocal lines, transactions
                if event == "line":
                    transactions += frame.f_lineno in BEGIN_LINES
                    step = (transactions, frame.f_lineno)
                    if step not in seen:
                        seen.add(step)
                        lines += 1
                        if lines == kill_at:
                            os._exit(KILLED)
                return local

            sys.settrace(lambda frame, event, arg: local if frame.f_code.co_filename == source else None)
            first_promotion(base)
            sys.settrace(None)
            if count_file is not None:
                count_file.write_text(str(lines))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".incoming-") or p.name.endswith(".tmp")]


def assert_links_match_database(root: Path) -> None:
    reg = Registry(root)
    promoted = {r["slot"]: r for r in reg.rows(stage="promoted")}
    links = [p for p in (root / "promoted").rglob("*") if p.is_symlink()]
    assert {p.relative_to(root / "promoted").as_posix() for p in links} == set(promoted)
    for link in links:
        row = promoted[link.relative_to(root / "promoted").as_posix()]
        assert link.resolve() == Path(row["model_dir"]).resolve()
        assert json.loads((link / "model_card.json").read_text())["run_id"] == row["run_id"]


@pytest.fixture
def template(tmp_path) -> Path:
    base = tmp_path / "template"
    reg = Registry(base / "registry")
    reg.register(record("eth-promoted", symbol="ETH"), model_dir(base, "eth-promoted"))
    reg.register(record("btc-failed", passed=False, fingerprint="fp-x"), model_dir(base, "btc-failed"))
    assert reg.promoted(SLOT) is None and reg.promoted(OTHER) is not None
    return base


@pytest.mark.slow  # ~300 forked writers, each killed at one step
def test_a_kill_at_every_step_of_a_first_promotion_never_serves_an_unregistered_model(tmp_path, template):
    counted = tmp_path / "counted"
    shutil.copytree(template, counted, symlinks=True)
    assert run_killed(counted, None, tmp_path / "lines") == 0
    steps = int((tmp_path / "lines").read_text())
    assert Registry(counted / "registry").promoted(SLOT)["run_id"] == "first-promoted"
    print(f"{steps} steps in one first promotion, a kill at each")

    orphan_links = 0
    for kill_at in range(1, steps + 1):
        killed = tmp_path / f"killed-{kill_at}"
        shutil.copytree(template, killed, symlinks=True)
        assert run_killed(killed, kill_at) == KILLED, kill_at
        root = killed / "registry"
        link = root / "promoted" / "BTC" / "1m" / "direction_h1"
        if link.is_symlink() and Registry(root).promoted(SLOT) is None:
            orphan_links += 1  # the link is ahead of the database: a version with no row
        writer = tmp_path / f"writer-{kill_at}"
        shutil.copytree(killed, writer, symlinks=True)

        # a read through the link serves the promoted model the database names, or refuses: never an orphan
        row = Registry(root).promoted(SLOT)
        if row is None:
            with pytest.raises(UserError, match="no model is promoted"):
                resolve_link(link)
        else:
            served = resolve_link(link)
            assert served.resolve() == Path(row["model_dir"]).resolve()
            assert json.loads((served / "model_card.json").read_text())["run_id"] == row["run_id"]
        assert_links_match_database(root)

        # the next write (here: a candidate in a third slot) reconciles every slot and removes the leftovers
        reg = Registry(writer / "registry")
        reg.register(record("next", symbol="SOL", passed=False), model_dir(writer, "next"))
        assert leftovers(writer / "registry") == [], kill_at
        assert_links_match_database(writer / "registry")
        shutil.rmtree(killed)
        shutil.rmtree(writer)
    assert orphan_links > 0  # the window between re-pointing the link and COMMIT was hit


def test_the_staging_folder_of_a_live_registration_is_left_alone(tmp_path, template):
    root = template / "registry"
    live, lock = registry_module._claim_staging(root / "models")
    dead = root / "models" / ".incoming-dead"
    dead.mkdir()
    (dead / "model_card.json").write_text("{}")
    try:
        Registry(root).reconcile()
        assert live.is_dir() and not dead.exists()
    finally:
        os.close(lock)
    Registry(root).reconcile()
    assert not live.exists()


def _orphan_link(root: Path) -> Path:
    """The BTC slot's link pointing at a version folder no row registered (a killed first promotion)."""
    orphan = root / "models" / "lightgbm_BTC_1m_orphan" / "v1"
    orphan.mkdir(parents=True)
    (orphan / "model_card.json").write_text(json.dumps({"run_id": "never-registered"}))
    link = root / "promoted" / "BTC" / "1m" / "direction_h1"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(orphan, link.parent))
    return link


def test_reading_the_link_path_reconciles_every_slot(template):
    root = template / "registry"
    reg = Registry(root)
    eth = reg.promoted(OTHER)
    # a link left by a killed first promotion (a folder with no row) and a damaged link of another slot
    link = _orphan_link(root)
    (root / "promoted" / "ETH" / "1m" / "direction_h1").unlink()
    assert reg.promoted_path(SLOT) == link
    assert not link.exists() and not link.is_symlink()
    assert reg.promoted_path(OTHER).resolve() == Path(eth["model_dir"]).resolve()


def test_load_model_through_a_link_asks_the_registry(template):
    from trainer.model_dir import load_model

    root = template / "registry"
    link = _orphan_link(root)
    with pytest.raises(UserError, match=f"no model is promoted in slot {SLOT}"):
        load_model(link)
    assert not link.is_symlink()


KILL_AFTER_REGISTER = r"""
import os, sys
sys.path[:0] = [sys.argv[1]]
from tests.conftest import make_cfg
import trainer.registry
register = trainer.registry.Registry.register

def register_then_die(self, *args, **kwargs):
    register(self, *args, **kwargs)
    os._exit(77)

trainer.registry.Registry.register = register_then_die
from trainer import train
train(make_cfg(*sys.argv[3:], f"paths.output_dir={sys.argv[2]}"))
"""


@pytest.mark.slow
def test_a_kill_right_after_registering_leaves_the_run_result(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_AFTER_REGISTER,
            str(ROOT),
            str(tmp_path),
            "model=lightgbm",
            *FAST_DATA,
            "data.rows=5000",
            "model.n_estimators=20",
            "trainer.num_threads=1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == KILLED, proc.stderr[-3000:]
    (row,) = Registry(tmp_path / "registry").rows()
    result = json.loads((Path(row["run_dir"]) / "result.json").read_text())
    assert result["status"] == "completed" and result["run"]["run_id"] == row["run_id"]
    assert json.loads((Path(result["model_path"]) / "model_card.json").read_text())["run_id"] == row["run_id"]
