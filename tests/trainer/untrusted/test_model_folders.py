"""A crafted model folder or ensemble is refused without importing the class it names or unpickling a file."""

import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import pytest

from core.errors import UserError
from models.families import family_class, family_target
from tests.trainer.untrusted.helpers import Touch, read_card, write_card
from trainer import load_model


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
    write_card(folder, {**read_card(folder), "target_class": target})
    with pytest.raises(UserError, match="is not the class of family lightgbm"):
        load_model(folder)
    assert not marker.exists() and "candlelab_payload" not in sys.modules


def test_a_card_naming_a_foreign_class_as_its_family_is_refused(folder, installed_payload):
    target, marker = installed_payload
    card = {k: v for k, v in read_card(folder).items() if k != "target_class"}
    write_card(folder, {**card, "family": target})
    with pytest.raises(UserError, match="unknown model family"):
        load_model(folder)
    assert not marker.exists()


def test_a_crafted_folder_behind_a_promoted_link_is_refused(folder, installed_payload, tmp_path):
    target, marker = installed_payload
    write_card(folder, {**read_card(folder), "target_class": target})
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
    card = {k: v for k, v in read_card(folder).items() if k != "target_class"}
    write_card(ens, {**card, "family": "ensemble"})
    meta = {
        "names": ["lightgbm"],
        "method": "average",
        "task": json.loads((folder / "lightgbm.json").read_text())["task"],
        "stacking_C": 1.0,
        "weights": [1.0],
        "coef": None,
        "intercept": None,
        **meta_extra,
    }
    (ens / "ensemble.json").write_text(json.dumps(meta))
    return ens


def test_ensemble_members_resolve_through_the_family_list(folder, tmp_path):
    ens = _ensemble_of(folder, tmp_path, {"families": {"lightgbm": "lightgbm"}})
    assert type(load_model(ens).model.members["lightgbm"]).__name__ == "LightGBMModel"


def test_an_old_ensemble_naming_its_members_own_classes_still_loads(folder, tmp_path):
    ens = _ensemble_of(folder, tmp_path, {"targets": {"lightgbm": "models.lightgbm.LightGBMModel"}})
    assert load_model(ens).model.names == ["lightgbm"]


@pytest.mark.parametrize(
    "meta",
    [
        lambda target: {"targets": {"lightgbm": target}},
        lambda target: {"families": {"lightgbm": target}},
    ],
)
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
