"""Help, command-line mistakes and the family list answer without loading torch or Lightning: those load
only when a run starts (they take seconds to import)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "pytorch_lightning", "lightning_fabric", "matplotlib")

# Runs an entry point in-process (as `python <script> ...` would) and reports what it imported.
PROBE = """
import json, runpy, sys
entry, args = sys.argv[1], sys.argv[2:]
sys.argv = [entry, *args]
code = 0
try:
    if entry.endswith(".py"):
        runpy.run_path(entry, run_name="__main__")
    else:
        runpy.run_module(entry, run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
sys.stderr.write("\\nPROBE " + json.dumps({"code": code, "loaded": sorted(m for m in sys.modules
                                                                      if m.split(".")[0] in %r)}) + "\\n")
""" % (HEAVY,)


def probe(entry: str, *args: str) -> tuple[dict, str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, entry, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    line = [x for x in proc.stderr.splitlines() if x.startswith("PROBE ")][-1]
    return json.loads(line[len("PROBE ") :]), proc.stdout, proc.stderr


def test_help_lists_groups_and_config_without_torch():
    report, out, _ = probe("train.py", "--help")
    assert report["code"] in (0, None) and report["loaded"] == []
    model_line = next(line for line in out.splitlines() if line.startswith("model: "))
    families = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
    assert model_line == "model: " + ", ".join(families)
    assert "eval/gates: " in out and "hydra/launcher" not in out  # nested groups; Hydra's own stay out
    assert "== Config ==" in out and "\ncoin:\n" in out


@pytest.mark.parametrize("args", [["model=lstmz"], ["model.hiddn=3"]], ids=["unknown option", "unknown key"])
def test_command_line_mistakes_answer_without_torch(args, tmp_path):
    report, _, err = probe("train.py", *args, f"hydra.run.dir={tmp_path / 'r'}")
    assert report["code"] == 2, err[-2000:]
    assert report["loaded"] == []
    assert [x for x in err.splitlines() if x.startswith("error: ")]


def test_a_bad_config_value_answers_without_torch_and_records_the_failure(tmp_path):
    report, _, err = probe("train.py", "target.horizon=0", f"hydra.run.dir={tmp_path / 'r'}")
    assert report["code"] == 2 and report["loaded"] == [], err[-2000:]
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith("PROBE ")]
    assert lines[-1].startswith("error: target.horizon"), lines
    assert "Error executing job" not in err  # Hydra's own line stays out of a user error
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["status"] == "failed" and "target.horizon" in result["reason"]


def test_family_list_without_torch():
    report, out, _ = probe("models")
    assert report["code"] in (0, None) and report["loaded"] == []
    assert "lstm" in out and "lightgbm" in out
