"""RunResult is the single definition of result.json: every key a run writes is one of its fields, and a
result.json read back writes the same JSON again (completed, cancelled and failed runs)."""

import json
from dataclasses import fields

import pytest

from callbacks.cancel import CancellationToken
from core.errors import UserError
from tests.conftest import FAST_DATA, make_cfg
from trainer import train
from trainer.result import Artifacts, DataSummary, ModelInfo, RunInfo, RunResult

TREE = ["model=lightgbm", "model.n_estimators=20"]
ENDED_KEYS = [
    "status",
    "reason",
    "model_path",
    "training_metrics",
    "test_metrics",
    "baselines",
    "artifacts",
    "model_info",
    "data_summary",
    "run",
]


def _names(cls, *leave_out: str) -> list[str]:
    return [f.name for f in fields(cls) if f.name not in leave_out]


def _round_trips(written: dict) -> None:
    again = RunResult.from_json(written).to_json()
    assert again == written
    assert json.dumps(again) == json.dumps(written)  # same key order at every level


def test_a_completed_runs_result_json_holds_exactly_the_run_result_fields_and_round_trips(tmp_path):
    result = train(make_cfg(*TREE, *FAST_DATA, run_dir=tmp_path))
    written = json.loads((tmp_path / "result.json").read_text())
    assert list(written) == _names(RunResult, "reason")  # a key written outside to_json() fails here
    assert list(written["run"]) == _names(RunInfo)
    assert list(written["artifacts"]) == _names(Artifacts, "checkpoint", "partial_model")
    assert list(written["model_info"]) == _names(ModelInfo)
    assert list(written["data_summary"]) == _names(DataSummary)
    _round_trips(written)
    assert written == json.loads(json.dumps(result.to_json(), default=str))  # what train() returned
    assert RunResult.read(tmp_path / "result.json").run.run_id == result.run.run_id


def test_a_cancelled_fit_and_a_run_cancelled_before_it_round_trip(tmp_path):
    token = CancellationToken()

    def stop_at_round_5(event):
        if event.kind == "step" and event.iteration >= 5:
            token.cancel("test")

    slow = ["model=lightgbm", "model.n_estimators=400", "model.early_stopping_rounds=400"]
    cfg = make_cfg(*slow, *FAST_DATA, "callbacks.progress.every_n_batches=5", run_dir=tmp_path / "fit")
    result = train(cfg, progress_callback=stop_at_round_5, cancellation_token=token)
    written = json.loads((tmp_path / "fit" / "result.json").read_text())
    assert list(written) == ENDED_KEYS and written["reason"] == "test"
    assert list(written["artifacts"]) == ["partial_model"] and "n_parameters" in written["model_info"]
    _round_trips(written)
    assert written == json.loads(json.dumps(result.to_json(), default=str))

    early = CancellationToken()
    early.cancel("before the fit")
    result = train(make_cfg(*TREE, *FAST_DATA, run_dir=tmp_path / "early"), cancellation_token=early)
    written = json.loads((tmp_path / "early" / "result.json").read_text())
    assert list(written) == ENDED_KEYS and written["training_metrics"] == {"cancelled_in_phase": "load"}
    assert written["artifacts"] == {} and written["model_info"] == {} and written["data_summary"] == {}
    _round_trips(written)
    assert result.status == "cancelled" and result.training_metrics["cancelled_in_phase"] == "load"


def test_a_failed_runs_result_json_round_trips(tmp_path):
    with pytest.raises(UserError, match="too little data"):
        train(make_cfg(*TREE, *FAST_DATA, "data.rows=300", run_dir=tmp_path))
    written = json.loads((tmp_path / "result.json").read_text())
    assert list(written) == ENDED_KEYS and written["status"] == "failed" and "too little data" in written["reason"]
    _round_trips(written)


def test_reading_a_result_json_that_is_not_one_gives_none(tmp_path):
    assert RunResult.read(tmp_path / "missing.json") is None
    (tmp_path / "damaged.json").write_text('{"status": "compl')
    assert RunResult.read(tmp_path / "damaged.json") is None
    (tmp_path / "list.json").write_text("[1, 2]")
    assert RunResult.read(tmp_path / "list.json") is None
    (tmp_path / "odd.json").write_text('{"status": "completed", "run": [1], "extra": 1}')
    odd = RunResult.read(tmp_path / "odd.json")
    assert odd.status == "completed" and odd.run.run_id is None
