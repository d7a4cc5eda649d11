"""The model registry: versions, gated promotion through a relative link, rollback, pruning, many concurrent
writers, and the `python -m trainer.registry` CLI as a user runs it."""

import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from core.errors import UserError
from tests.conftest import ROOT
from trainer.registry import Registry

SLOT = "BTC/1m/direction_h1"


def model_dir(tmp_path: Path, name: str) -> Path:
    """A stand-in for a run's model dir: a card naming the run ``name`` and a weights file whose bytes
    identify it."""
    d = tmp_path / "runs" / name / "model"
    d.mkdir(parents=True)
    (d / "card.json").write_text(json.dumps({"name": name, "family": "lightgbm"}))
    (d / "model_card.json").write_text(json.dumps({"run_id": name, "family": "lightgbm"}))
    (d / "weights.bin").write_bytes(name.encode() * 16)
    return d


def record(
    value: float = 0.55,
    passed: bool = True,
    config_hash: str = "cfg-a",
    fingerprint: str = "fp-a",
    symbol: str = "BTC",
    family: str = "lightgbm",
    run_id: str = "run",
) -> dict:
    return {
        "family": family,
        "symbol": symbol,
        "timeframe": "1m",
        "target": "direction_h1",
        "headline": "accuracy",
        "headline_value": value,
        "metrics": {"accuracy": value, "log_loss": 0.69, "n": 1000},
        "gates": {"passed": passed, "beats_majority": passed},
        "run_id": run_id,
        "run_dir": f"/runs/{run_id}",
        "git_commit": "abc1234",
        "config_hash": config_hash,
        "data_fingerprint": fingerprint,
    }


def register(reg: Registry, tmp_path: Path, name: str, **kw) -> dict:
    return reg.register(record(run_id=name, **kw), model_dir(tmp_path, name))


def test_versions_count_up_per_config_and_data(tmp_path):
    reg = Registry(tmp_path / "registry")
    first = register(reg, tmp_path, "a1", passed=False)
    second = register(reg, tmp_path, "a2", passed=False)
    other = register(reg, tmp_path, "b1", passed=False, fingerprint="fp-b")
    assert first["version"] == 1 and second["version"] == 2
    assert first["model_id"] == second["model_id"]
    assert re.fullmatch(r"lightgbm_BTC_1m_[0-9a-f]{8}", first["model_id"])
    assert other["model_id"] != first["model_id"] and other["version"] == 1
    assert first["slot"] == SLOT and first["stage"] == "candidate"
    stored = Path(second["model_dir"])
    assert stored == tmp_path / "registry" / "models" / second["model_id"] / "v2"
    assert (stored / "weights.bin").read_bytes() == b"a2" * 16
    assert [(r["model_id"], r["version"]) for r in reg.rows()] == [
        (first["model_id"], 1),
        (first["model_id"], 2),
        (other["model_id"], 1),
    ]
    assert reg.get(first["model_id"])["version"] == 2  # no version: the newest
    assert reg.get(first["model_id"], 1)["run_id"] == "a1"
    with pytest.raises(UserError, match="unknown model id"):
        reg.get("lightgbm_BTC_1m_00000000")
    with pytest.raises(UserError, match="no version 7"):
        reg.get(first["model_id"], 7)
    assert [p.name for p in (tmp_path / "registry" / "models" / first["model_id"]).iterdir()] in (
        ["v1", "v2"],
        ["v2", "v1"],
    )  # no staging dir left behind


def test_gates_decide_promotion_and_the_link_is_what_was_registered(tmp_path):
    reg = Registry(tmp_path / "registry")
    link = reg.promoted_path(SLOT)
    assert link == tmp_path / "registry" / "promoted" / "BTC" / "1m" / "direction_h1"

    failed = register(reg, tmp_path, "failed", value=0.9, passed=False)
    assert failed["stage"] == "candidate" and failed["promoted"] is False
    assert not link.exists() and not link.is_symlink() and reg.promoted(SLOT) is None

    first = register(reg, tmp_path, "first", value=0.55)
    assert first["promoted"] is True and first["stage"] == "promoted"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == Path(first["model_dir"]).resolve()
    assert (link / "card.json").read_bytes() == (tmp_path / "runs" / "first" / "model" / "card.json").read_bytes()

    better = register(reg, tmp_path, "better", value=0.60, fingerprint="fp-b")
    assert better["promoted"] is True
    assert link.resolve() == Path(better["model_dir"]).resolve()
    assert reg.get(first["model_id"], first["version"])["stage"] == "archived"
    assert reg.promoted(SLOT)["model_id"] == better["model_id"]

    worse = register(reg, tmp_path, "worse", value=0.58, fingerprint="fp-c")
    assert worse["promoted"] is False and worse["stage"] == "candidate"
    assert link.resolve() == Path(better["model_dir"]).resolve()

    with pytest.raises(UserError, match="failed its promotion gates"):
        reg.promote(failed["model_id"], failed["version"])
    assert reg.promoted(SLOT)["model_id"] == better["model_id"]
    forced = reg.promote(failed["model_id"], failed["version"], force=True)
    assert forced["promoted"] is True and forced["stage"] == "promoted"
    assert link.resolve() == Path(failed["model_dir"]).resolve()
    assert [r["stage"] for r in reg.rows(slot=SLOT)] == ["promoted", "archived", "archived", "candidate"]
    history = json.loads((tmp_path / "registry" / "registry.json").read_text())
    assert history["promoted"] == {SLOT: f"{failed['model_id']}:{failed['version']}"}
    assert len(history["models"]) == 4 and len(history["promotions"]) == 3


def test_rollback_restores_the_previously_promoted_model(tmp_path):
    reg = Registry(tmp_path / "registry")
    with pytest.raises(UserError, match="nothing is promoted"):
        reg.rollback(SLOT)
    a = register(reg, tmp_path, "a", value=0.55)
    with pytest.raises(UserError, match="nothing to roll back to"):
        reg.rollback(SLOT)
    b = register(reg, tmp_path, "b", value=0.56, fingerprint="fp-b")
    c = register(reg, tmp_path, "c", value=0.57, fingerprint="fp-c")
    link = reg.promoted_path(SLOT)

    restored = reg.rollback(SLOT)
    assert (restored["model_id"], restored["stage"]) == (b["model_id"], "promoted")
    assert reg.get(c["model_id"])["stage"] == "archived"
    assert link.resolve() == Path(b["model_dir"]).resolve()

    restored = reg.rollback(SLOT)  # history is a stack: c -> b -> a, never back to c
    assert restored["model_id"] == a["model_id"] and link.resolve() == Path(a["model_dir"]).resolve()
    assert {r["model_id"]: r["stage"] for r in reg.rows(slot=SLOT)} == {
        a["model_id"]: "promoted",
        b["model_id"]: "archived",
        c["model_id"]: "archived",
    }
    with pytest.raises(UserError, match="nothing to roll back to"):
        reg.rollback(SLOT)
    assert link.resolve() == Path(a["model_dir"]).resolve()
    assert [h["action"] for h in json.loads((tmp_path / "registry" / "registry.json").read_text())["promotions"]] == [
        "promote",
        "promote",
        "promote",
        "rollback",
        "rollback",
    ]


def test_prune_keeps_the_newest_candidates_per_slot_and_never_promoted_or_archived(tmp_path):
    reg = Registry(tmp_path / "registry")
    kept = {"BTC": [], "ETH": []}
    archived = register(reg, tmp_path, "old-best", value=0.50)
    promoted = register(reg, tmp_path, "best", value=0.70, fingerprint="fp-best")
    for symbol in ("BTC", "ETH"):
        for i in range(5):
            row = reg.register(
                record(value=0.40, passed=False, symbol=symbol, fingerprint=f"fp{i}", run_id=f"{symbol}-{i}"),
                model_dir(tmp_path, f"{symbol}-{i}"),
                keep_candidates=None,
            )
            kept[symbol].append(row)
    pruned = reg.prune(keep=2)
    expected = {(r["model_id"], r["version"]) for rows in kept.values() for r in rows[:3]}
    assert set(pruned) == expected and len(pruned) == 6
    for rows in kept.values():
        for r in rows[:3]:
            assert not Path(r["model_dir"]).exists()
        for r in rows[3:]:
            assert reg.get(r["model_id"], r["version"])["stage"] == "candidate" and Path(r["model_dir"]).is_dir()
    assert reg.get(archived["model_id"])["stage"] == "archived" and Path(archived["model_dir"]).is_dir()
    assert reg.get(promoted["model_id"])["stage"] == "promoted" and Path(promoted["model_dir"]).is_dir()
    assert reg.prune(keep=2) == []
    assert len(reg.rows()) == 6
    assert len(json.loads((tmp_path / "registry" / "registry.json").read_text())["models"]) == 6
    # register prunes with keep_candidates, and a version number is never handed out twice
    again = reg.register(
        record(value=0.40, passed=False, symbol="ETH", fingerprint="fp0", run_id="ETH-again"),
        model_dir(tmp_path, "ETH-again"),
        keep_candidates=1,
    )
    assert again["version"] == 2 and [r["run_id"] for r in reg.rows(slot="ETH/1m/direction_h1")] == ["ETH-again"]


# Workers load trainer/registry.py by path: `import trainer` pulls in torch (~6 s per process on 2 cores).
WORKER = r"""
import importlib.util, json, pathlib, sys
project, root, source, worker, calls = sys.argv[1:6]
sys.path.insert(0, project)
spec = importlib.util.spec_from_file_location("registry_under_test", project + "/trainer/registry.py")
registry = importlib.util.module_from_spec(spec)
spec.loader.exec_module(registry)
reg = registry.Registry(root)
w = int(worker)
for i in range(int(calls)):
    symbol = ("BTC", "ETH")[i % 2]
    value = 0.5 + ((w * 7919 + i * 104729) % 1000) / 10000
    rec = {"family": "lightgbm", "symbol": symbol, "timeframe": "1m", "target": "direction_h1",
           "headline": "accuracy", "headline_value": value, "metrics": {"accuracy": value},
           "gates": {"passed": i % 3 != 0}, "run_id": f"w{w}-{i}", "run_dir": "/runs", "git_commit": "abc",
           "config_hash": f"cfg{i % 4}", "data_fingerprint": f"worker{w}" if i % 5 == 4 else "shared"}
    model = pathlib.Path(source) / rec["run_id"]
    model.mkdir()
    (model / "model_card.json").write_text(json.dumps({"run_id": rec["run_id"]}))
    (model / "weights.bin").write_bytes(rec["run_id"].encode() * 16)
    reg.register(rec, model, auto_promote=w % 2 == 0, keep_candidates=None)
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    workers, calls = 8, 50
    root = tmp_path / "registry"
    source = tmp_path / "runs"
    source.mkdir()
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(ROOT), str(root), str(source), str(w), str(calls)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(workers)
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    elapsed = time.perf_counter() - started
    print(f"{workers} processes x {calls} registrations: {elapsed:.1f} s")

    reg = Registry(root)
    rows = reg.rows()
    assert len(rows) == workers * calls
    assert len({r["run_id"] for r in rows}) == workers * calls
    versions = defaultdict(list)
    for r in rows:
        versions[r["model_id"]].append(r["version"])
    assert len(versions) == 4 + 4 * workers  # 4 shared ids + 4 per worker
    for model_id, found in versions.items():
        assert sorted(found) == list(range(1, len(found) + 1)), model_id
    for r in rows:  # every row holds the model its own run made
        assert json.loads((Path(r["model_dir"]) / "model_card.json").read_text())["run_id"] == r["run_id"]
        assert (Path(r["model_dir"]) / "weights.bin").read_bytes() == r["run_id"].encode() * 16
    leftovers = [p for p in root.rglob(".*") if p.name != ".gitkeep"]
    assert leftovers == []
    doc = json.loads((root / "registry.json").read_text())
    assert len(doc["models"]) == workers * calls

    for slot in ("BTC/1m/direction_h1", "ETH/1m/direction_h1"):
        promoted = [r for r in rows if r["slot"] == slot and r["stage"] == "promoted"]
        assert len(promoted) == 1, slot
        assert reg.promoted_path(slot).resolve() == Path(promoted[0]["model_dir"]).resolve()
        assert doc["promoted"][slot] == f"{promoted[0]['model_id']}:{promoted[0]['version']}"
        # each auto-promoting registration compared against the promoted row inside its own transaction,
        # so the survivor is the best gate-passing model among them
        eligible = [
            r
            for r in rows
            if r["slot"] == slot and r["gates"]["passed"] and int(r["run_id"][1:].split("-")[0]) % 2 == 0
        ]
        assert promoted[0]["headline_value"] == max(r["headline_value"] for r in eligible)
        archived = [r for r in rows if r["slot"] == slot and r["stage"] == "archived"]
        assert len(archived) == len([h for h in doc["promotions"] if h["slot"] == slot]) - 1


def ref(row: dict) -> str:
    return f"{row['model_id']}:{row['version']}"


def run_cli(*args: str, env_root: Path = ROOT, wait: bool = True):
    env = {k: v for k, v in os.environ.items() if k != "CANDLELAB_OUTPUT_DIR"}
    env["CANDLELAB_ROOT"] = str(env_root)
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer.registry", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return finish(proc) if wait else proc


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(r"error: .+ \(.+\)", lines[0]), proc.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.slow  # 8 CLI processes, each importing torch through the `trainer` package
def test_cli_lists_shows_compares_promotes_and_rolls_back(tmp_path):
    root = tmp_path / "outputs" / "registry"
    reg = Registry(root)
    a = register(reg, tmp_path, "a", value=0.5512)
    b = register(reg, tmp_path, "b", value=0.6034, fingerprint="fp-b")
    c = register(reg, tmp_path, "c", value=0.4999, fingerprint="fp-c")  # worse: stays a candidate
    bad = register(reg, tmp_path, "bad", value=0.9, passed=False, fingerprint="fp-d")

    # read-only commands and refusals run side by side (each process imports torch through `trainer`)
    batch = {
        "list": run_cli("--root", str(root), "list", wait=False),
        "default_root": run_cli("list", "--stage", "promoted", env_root=tmp_path, wait=False),
        "show": run_cli("--root", str(root), "show", ref(a), wait=False),
        "compare": run_cli("--root", str(root), "compare", ref(a), b["model_id"], wait=False),
        "unknown": run_cli("--root", str(root), "show", "lightgbm_BTC_1m_deadbeef", wait=False),
        "gated": run_cli("--root", str(root), "promote", bad["model_id"], wait=False),
    }
    done = {name: finish(proc) for name, proc in batch.items()}

    listing = done["list"]
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == [
        "id",
        "v",
        "slot",
        "stage",
        "family",
        "headline",
        "net",
        "pf",
        "trades",
        "dsr",
        "econ",
        "gates",
        "registered",
    ]
    by_id = {line.split()[0]: line.split() for line in lines[2:]}
    assert by_id[a["model_id"]][1:5] == ["1", SLOT, "archived", "lightgbm"]
    # registered without trading evidence: the economic columns say so with "-"
    assert by_id[b["model_id"]][3:12] == ["promoted", "lightgbm", "accuracy=0.6034", "-", "-", "-", "-", "-", "pass"]
    assert by_id[bad["model_id"]][3] == "candidate" and by_id[bad["model_id"]][11] == "fail"
    assert len(by_id) == 4
    assert lines[0].index("slot") == lines[2].index(SLOT)  # fixed-width columns

    assert done["default_root"].returncode == 0, done["default_root"].stderr
    assert [line.split()[0] for line in done["default_root"].stdout.splitlines()[2:]] == [b["model_id"]]

    assert done["show"].returncode == 0, done["show"].stderr
    assert a["model_id"] in done["show"].stdout and "archived" in done["show"].stdout
    assert re.search(r"accuracy\s+0\.5512", done["show"].stdout) and a["model_dir"] in done["show"].stdout

    compare = done["compare"]
    assert compare.returncode == 0, compare.stderr
    header, *rows = compare.stdout.splitlines()
    assert header.split() == ["metric", ref(b), ref(a)]  # no economics recorded: the headline breaks the tie
    table = {row.split()[0]: row.split()[1:] for row in rows[1:]}
    assert table["accuracy"] == ["0.6034", "0.5512"] and table["n"] == ["1000", "1000"]
    assert table["gates"] == ["pass", "pass"]

    assert_one_error_line(done["unknown"], "lightgbm_BTC_1m_deadbeef")
    assert_one_error_line(done["gated"], "gates", SLOT)
    assert reg.promoted(SLOT)["model_id"] == b["model_id"]

    promoted = run_cli("--root", str(root), "promote", c["model_id"])
    assert promoted.returncode == 0, promoted.stderr
    assert ref(c) in promoted.stdout and ref(b) in promoted.stdout
    assert reg.promoted(SLOT)["model_id"] == c["model_id"]
    assert reg.promoted_path(SLOT).resolve() == Path(c["model_dir"]).resolve()

    rolled = run_cli("--root", str(root), "rollback", SLOT)
    assert rolled.returncode == 0, rolled.stderr
    assert f"{ref(b)} promoted again (was {ref(c)})" in rolled.stdout
    assert reg.promoted(SLOT)["model_id"] == b["model_id"] and reg.get(c["model_id"])["stage"] == "archived"
    assert reg.promoted_path(SLOT).resolve() == Path(b["model_dir"]).resolve()


def test_a_writer_killed_before_commit_never_changes_what_the_link_serves(tmp_path):
    reg = Registry(tmp_path / "registry")
    first = register(reg, tmp_path, "first", value=0.60)
    assert first["promoted"]
    slot = first["slot"]
    # what a writer killed between re-pointing the link and COMMIT leaves: the next version's folder on
    # disk, the link already pointing at it, and no row for it in the database
    orphan = reg.root / "models" / first["model_id"] / "v2"
    orphan.mkdir()
    (orphan / "card.json").write_text('{"orphan": true}')
    link = reg.promoted_path(slot)
    tmp = link.with_name(".tmp-link")
    tmp.symlink_to(os.path.relpath(orphan, link.parent))
    os.replace(tmp, link)
    # the next write repairs the link from the database and never reuses the orphan's folder or version
    second = register(reg, tmp_path, "second", value=0.50)
    assert second["version"] == 3 and not second["promoted"]
    assert link.resolve() == Path(reg.promoted(slot)["model_dir"]).resolve() == Path(first["model_dir"]).resolve()
    assert json.loads((orphan / "card.json").read_text()) == {"orphan": True}
