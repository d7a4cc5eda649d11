"""LightGBM and XGBoost trees indexing outside their arrays are refused when the folder is loaded."""

import json
import shutil
from pathlib import Path

import pytest

from core.errors import UserError
from tests.conftest import FAST_DATA, make_cfg
from trainer import load_model, train


def _edit_first_tree(folder: Path, key: str, edit) -> None:
    """Rewrite one field of the LightGBM text model's first tree, keeping its tree_sizes consistent."""
    text = (folder / "model.txt").read_text()
    start, second = text.index("Tree=0"), text.index("Tree=1")
    lines = text[start:second].split("\n")
    lines = [f"{key}={edit(line.split('=', 1)[1].split())}" if line.startswith(key + "=") else line for line in lines]
    tree = "\n".join(lines)
    head = text[:start]
    sizes = head.split("tree_sizes=")[1].split("\n")[0].split()
    head = head.replace("tree_sizes=" + " ".join(sizes), "tree_sizes=" + " ".join([str(len(tree)), *sizes[1:]]))
    (folder / "model.txt").write_text(head + tree + text[second:])


@pytest.mark.parametrize(
    "key, edit, refused",
    [
        ("split_feature", lambda v: " ".join(["99999999", *v[1:]]), "split on feature 99999999"),
        ("left_child", lambda v: " ".join(["0", *v[1:]]), "child 0 out of range"),  # a loop
        ("right_child", lambda v: " ".join(["-9999", *v[1:]]), "child -9999 out of range"),
        ("decision_type", lambda v: " ".join(["1", *v[1:]]), "categorical split"),
        ("num_leaves", lambda v: "40", "leaf_value does not hold 40"),
    ],
)
def test_a_lightgbm_tree_indexing_outside_its_arrays_is_refused(folder, key, edit, refused):
    """LightGBM trusts its text model: such a tree crashed the process (out-of-range reads) or looped at
    prediction; it is refused when the folder is loaded."""
    _edit_first_tree(folder, key, edit)
    with pytest.raises(UserError, match=refused) as err:
        load_model(folder)
    assert err.value.where == str(folder / "model.txt")


def test_lightgbm_tree_sizes_must_match_the_trees(folder):
    text = (folder / "model.txt").read_text()
    sizes = text.split("tree_sizes=")[1].split("\n")[0]
    (folder / "model.txt").write_text(text.replace("tree_sizes=" + sizes, "tree_sizes=99999999" + sizes[4:], 1))
    with pytest.raises(UserError, match="tree_sizes does not match"):
        load_model(folder)


@pytest.fixture(scope="module")
def trained_xgboost(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained_xgboost")
    return Path(train(make_cfg("model=xgboost", "model.n_estimators=10", *FAST_DATA, run_dir=out)).model_path)


@pytest.mark.parametrize(
    "key, value, refused",
    [
        ("split_indices", 99999999, "feature 99999999 out of range"),
        ("left_children", 99999, "child 99999/"),
        ("left_children", 0, "reached twice"),  # a loop back to the root
    ],
)
def test_an_xgboost_tree_indexing_outside_its_arrays_is_refused(trained_xgboost, tmp_path, key, value, refused):
    """XGBoost trusts its JSON model: such a tree crashed the process at prediction; it is refused on load."""
    folder = tmp_path / "model"
    shutil.copytree(trained_xgboost, folder)
    saved = json.loads((folder / "model.json").read_text())
    saved["learner"]["gradient_booster"]["model"]["trees"][0][key][0] = value
    (folder / "model.json").write_text(json.dumps(saved))
    with pytest.raises(UserError, match=refused) as err:
        load_model(folder)
    assert err.value.where == str(folder / "model.json")


def test_an_untouched_xgboost_folder_loads(trained_xgboost):
    assert load_model(trained_xgboost).card["family"] == "xgboost"
