"""Model folders and checkpoints from someone else are data: a crafted one is refused with one line and
runs nothing it names (each payload here would write a marker file if it ran)."""
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FAST_DATA, FAST_LSTM, ROOT, make_cfg
from data.errors import UserError
from models.registry import family_class, family_target
from trainer import load_model, train
from trainer.resume import resume_checkpoint
from trainer.runinfo import config_hash

PAYLOAD = """
from pathlib import Path
Path({marker!r}).write_text("ran at import")

class Payload:
    @classmethod
    def load(cls, directory):
        Path({marker!r}).write_text("ran in load")

    @classmethod
    def from_config(cls, *args, **kwargs):
        Path({marker!r}).write_text("ran in from_config")
"""


class Touch:
    """Unpickling this runs a shell command that creates the marker."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A real LightGBM model folder to tamper with (copied per test)."""
    out = tmp_path_factory.mktemp("trained")
    result = train(make_cfg("model=lightgbm", "model.n_estimators=20", *FAST_DATA, run_dir=out))
    return Path(result["model_path"])


@pytest.fixture
def folder(trained, tmp_path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(trained, copy)
    return copy


@pytest.fixture
def installed_payload(tmp_path, monkeypatch) -> tuple[str, Path]:
    """A module importable by name (as an installed package would be) that writes a marker when used."""
    marker = tmp_path / "PWNED"
    site = tmp_path / "site"
    site.mkdir()
    (site / "candlelab_payload.py").write_text(PAYLOAD.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(site))
    sys.modules.pop("candlelab_payload", None)
    return "candlelab_payload.Payload", marker


def _card(folder: Path) -> dict:
    return json.loads((folder / "model_card.json").read_text())


def _write_card(folder: Path, card: dict) -> None:
    (folder / "model_card.json").write_text(json.dumps(card))


def test_family_list_maps_names_to_the_projects_own_classes():
    assert family_class("lightgbm").__module__ == "models.lightgbm"
    assert family_target("lstm") == "models.lstm.LSTMModel"
    for bad in ("candlelab_payload.Payload", "../lightgbm", "os", "LightGBM", "", None, 3):
        with pytest.raises(UserError, match="unknown model family"):
            family_class(bad)


def test_the_untouched_folder_loads(folder):
    assert load_model(folder).card["family"] == "lightgbm"


def test_a_card_naming_a_foreign_class_is_refused_without_importing_it(folder, installed_payload):
    target, marker = installed_payload
    _write_card(folder, {**_card(folder), "target_class": target})
    with pytest.raises(UserError, match="is not the class of family lightgbm"):
        load_model(folder)
    assert not marker.exists() and "candlelab_payload" not in sys.modules


def test_a_card_naming_a_foreign_class_as_its_family_is_refused(folder, installed_payload):
    target, marker = installed_payload
    card = {k: v for k, v in _card(folder).items() if k != "target_class"}
    _write_card(folder, {**card, "family": target})
    with pytest.raises(UserError, match="unknown model family"):
        load_model(folder)
    assert not marker.exists()


def test_a_crafted_folder_behind_a_promoted_link_is_refused(folder, installed_payload, tmp_path):
    target, marker = installed_payload
    _write_card(folder, {**_card(folder), "target_class": target})
    link = tmp_path / "registry" / "promoted" / "BTC" / "1m" / "direction_h1"
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(folder, link.parent))
    with pytest.raises(UserError):
        load_model(link)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["lightgbm.py", "__init__.py", "model.pkl", "model.pt", "helper.so", "README"])
def test_a_file_in_no_known_format_is_refused(folder, tmp_path, name):
    marker = tmp_path / "PWNED"
    (folder / name).write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    with pytest.raises(UserError, match="unexpected file in a model folder") as err:
        load_model(folder)
    assert err.value.where == str(folder / name)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.txt", "lightgbm.json", "extra.safetensors", "notes.yaml"])
def test_a_pickle_under_a_known_name_is_refused(folder, tmp_path, name):
    marker = tmp_path / "PWNED"
    (folder / name).write_bytes(pickle.dumps(Touch(marker)))
    with pytest.raises(UserError, match="not a .* file"):
        load_model(folder)
    assert not marker.exists()


def test_a_link_inside_a_model_folder_is_refused(folder):
    (folder / "label.json").unlink()
    (folder / "label.json").symlink_to("/etc/hostname")
    with pytest.raises(UserError, match="links"):
        load_model(folder)


def _ensemble_of(folder: Path, tmp_path: Path, meta_extra: dict) -> Path:
    """An ensemble folder around the trained LightGBM model (one member, weight 1)."""
    ens = tmp_path / "ensemble"
    ens.mkdir()
    member = ens / "members" / "lightgbm"
    member.mkdir(parents=True)
    for f in ("model.txt", "lightgbm.json"):
        shutil.copy2(folder / f, member / f)
    for f in ("model_card.json", "scaler.json", "features.json", "label.json", "config.yaml"):
        shutil.copy2(folder / f, ens / f)
    card = {k: v for k, v in _card(folder).items() if k != "target_class"}
    _write_card(ens, {**card, "family": "ensemble"})
    meta = {"names": ["lightgbm"], "method": "average", "task": json.loads((folder / "lightgbm.json").read_text())["task"],
            "stacking_C": 1.0, "weights": [1.0], "coef": None, "intercept": None, **meta_extra}
    (ens / "ensemble.json").write_text(json.dumps(meta))
    return ens


def test_ensemble_members_resolve_through_the_family_list(folder, tmp_path):
    ens = _ensemble_of(folder, tmp_path, {"families": {"lightgbm": "lightgbm"}})
    assert type(load_model(ens).model.members["lightgbm"]).__name__ == "LightGBMModel"


def test_an_old_ensemble_naming_its_members_own_classes_still_loads(folder, tmp_path):
    ens = _ensemble_of(folder, tmp_path, {"targets": {"lightgbm": "models.lightgbm.LightGBMModel"}})
    assert load_model(ens).model.names == ["lightgbm"]


@pytest.mark.parametrize("meta", [
    lambda target: {"targets": {"lightgbm": target}},
    lambda target: {"families": {"lightgbm": target}},
])
def test_an_ensemble_member_naming_a_foreign_class_is_refused(folder, tmp_path, installed_payload, meta):
    target, marker = installed_payload
    ens = _ensemble_of(folder, tmp_path, meta(target))
    with pytest.raises(UserError):
        load_model(ens)
    assert not marker.exists() and "candlelab_payload" not in sys.modules


def test_an_ensemble_member_name_cannot_leave_the_folder(folder, tmp_path):
    ens = _ensemble_of(folder, tmp_path, {})
    meta = json.loads((ens / "ensemble.json").read_text())
    (ens / "ensemble.json").write_text(json.dumps({**meta, "names": ["../../model"]}))
    with pytest.raises(UserError, match="unknown model family"):
        load_model(ens)


# --- checkpoints -----------------------------------------------------------------------------------------

RESUMABLE = [*FAST_LSTM, *FAST_DATA, "model.max_epochs=1"]


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _assert_one_error_line(proc: subprocess.CompletedProcess, match: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0]
    assert match in errors[0], errors[0]


def _zip_payload(path: Path, marker: Path) -> None:
    """A checkpoint in torch's own zip format, complete but for one object that runs a command."""
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 1, "loops": {}, "callbacks": {"x": Touch(marker)}}, path)


def test_a_crafted_checkpoint_given_by_path_runs_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    ckpt = tmp_path / "latest.ckpt"
    ckpt.write_bytes(pickle.dumps(Touch(marker)))
    proc = _cli(*RESUMABLE, f"resume={ckpt}", f"hydra.run.dir={tmp_path / 'run'}")
    _assert_one_error_line(proc, "not a usable checkpoint")
    assert not marker.exists()


def test_a_crafted_checkpoint_found_by_resume_true_runs_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    out = tmp_path / "out"
    crashed = out / "runs" / "crashed"
    (crashed / "checkpoints").mkdir(parents=True)
    (crashed / "run.json").write_text(json.dumps({"config_hash": config_hash(make_cfg(*RESUMABLE))}))
    _zip_payload(crashed / "checkpoints" / "latest.ckpt", marker)
    proc = _cli(*RESUMABLE, "resume=true", f"paths.output_dir={out}", f"hydra.run.dir={out / 'runs' / 'new'}")
    _assert_one_error_line(proc, "resume=true: not a usable checkpoint")
    assert proc.stderr.strip().endswith(f"({crashed / 'checkpoints' / 'latest.ckpt'})")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n", "truncated"])
def test_a_corrupt_checkpoint_is_a_user_error(tmp_path, content):
    ckpt = tmp_path / "latest.ckpt"
    if content == "truncated":
        torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 0, "global_step": 1, "loops": {}}, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:700])
    else:
        ckpt.write_bytes(content)
    cfg = make_cfg(*RESUMABLE, f"resume={ckpt}", run_dir=tmp_path / "run")
    with pytest.raises(UserError, match="not a usable checkpoint") as err:
        resume_checkpoint(cfg, tmp_path / "run", "hash")
    assert err.value.where == str(ckpt) and err.value.what.startswith(f"resume={ckpt}: ")


def test_a_checkpoint_of_plain_data_that_is_not_a_training_state_is_refused(tmp_path):
    ckpt = tmp_path / "weights.ckpt"
    torch.save({"w": torch.zeros(3)}, ckpt)
    cfg = make_cfg(*RESUMABLE, f"resume={ckpt}", run_dir=tmp_path / "run")
    with pytest.raises(UserError, match="not a Lightning training checkpoint"):
        resume_checkpoint(cfg, tmp_path / "run", "hash")
