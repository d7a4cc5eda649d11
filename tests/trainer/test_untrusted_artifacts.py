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

from core.errors import UserError
from core.runinfo import config_hash
from models.families import family_class, family_target
from tests.conftest import FAST_DATA, FAST_LSTM, ROOT, make_cfg
from trainer import load_model, train
from trainer.resume import resume_checkpoint

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
    return Path(result.model_path)


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


# --- checkpoints -----------------------------------------------------------------------------------------

RESUMABLE = [*FAST_LSTM, *FAST_DATA, "model.max_epochs=1"]


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


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


# --- settings inside a model folder ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "file, edit",
    [
        ("features.json", lambda f: {**f, "config": {**f["config"], "rsi_period": "${oc.env:CANDLELAB_TEST_SECRET}"}}),
        ("label.json", lambda f: {**f, "target": {**f["target"], "type": "${oc.env:CANDLELAB_TEST_SECRET}"}}),
    ],
)
def test_a_folders_settings_may_not_read_the_environment(folder, monkeypatch, file, edit):
    monkeypatch.setenv("CANDLELAB_TEST_SECRET", "exchange-api-secret")
    (folder / file).write_text(json.dumps(edit(json.loads((folder / file).read_text()))))
    with pytest.raises(UserError, match="may not hold interpolations") as err:
        load_model(folder)
    assert err.value.where == str(folder / file) and "exchange-api-secret" not in str(err.value)


def test_a_card_nested_too_deep_is_one_user_error(folder):
    (folder / "model_card.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    with pytest.raises(UserError, match="unreadable JSON"):
        load_model(folder)


def test_a_regime_model_cannot_read_a_booster_outside_its_folder(folder, tmp_path):
    """gmm_regime names its boosters' files by key: a key with a path in it is refused, not followed."""
    import numpy as np
    from safetensors.numpy import save_file
    from sklearn.mixture import GaussianMixture

    from models.gmm_regime import gmm_to_arrays

    regime = tmp_path / "regime" / "model"
    regime.mkdir(parents=True)
    for f in ("model_card.json", "scaler.json", "features.json", "label.json", "config.yaml"):
        shutil.copy2(folder / f, regime / f)
    shutil.copy2(folder / "model.txt", tmp_path / "outside.txt")  # a booster the folder does not hold
    card = {k: v for k, v in _card(folder).items() if k != "target_class"}
    _write_card(regime, {**card, "family": "gmm_regime"})
    gmm = GaussianMixture(2, covariance_type="full", random_state=0).fit(np.random.default_rng(0).normal(size=(50, 2)))
    save_file(gmm_to_arrays(gmm), str(regime / "gmm.safetensors"))
    task = json.loads((folder / "lightgbm.json").read_text())["task"]
    (regime / "gmm_regime.json").write_text(
        json.dumps(
            {
                "params": {},
                "n_components": 2,
                "covariance_type": "full",
                "columns": [0, 1],
                "max_rows": 1000,
                "min_regime_rows": 10,
                "gmm_max_iter": 10,
                "reg_covar": 1e-6,
                "n_estimators": 5,
                "early_stopping_rounds": 5,
                "seed": 0,
                "task": task,
                "best_iterations": {"../../outside": 5},
                "regime_model": ["../../outside", "../../outside"],
            }
        )
    )
    with pytest.raises(UserError, match="booster key '../../outside'"):
        load_model(regime)


# --- plan files ------------------------------------------------------------------------------------------


def _plan(output_dir: Path, *extra: str) -> Path:
    """A plan with one small LightGBM job carrying ``extra`` overrides."""
    folder = output_dir / "plans" / "crafted"
    folder.mkdir(parents=True)
    job = {
        "id": "000_lightgbm_BTC_direction_h5",
        "stage": "cpu",
        "family": "lightgbm",
        "coin": "BTC",
        "target_name": "direction_h5",
        "overrides": ["data.rows=3000", "model=lightgbm", "coin=BTC", "target=direction", "target.horizon=5", *extra],
    }
    path = folder / "master_training_plan.json"
    path.write_text(json.dumps({"version": 1, "plan_id": "crafted", "metadata": {}, "jobs": [job]}))
    return path


def test_a_plan_naming_a_class_runs_nothing(tmp_path, installed_payload):
    target, marker = installed_payload
    out = tmp_path / "out"
    _plan(out, f"model._target_={target}")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(CANDLELAB_OUTPUT_DIR=str(out), PYTHONPATH=str(tmp_path / "site"), WANDB_MODE="offline")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "hydra/sweeper=plan", "logger=none"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    _assert_one_error_line(proc, "names code to instantiate")
    assert not marker.exists()


@pytest.mark.parametrize(
    "line, refused",
    [
        ("model.optimizer={_target_:os.system,command:'touch PWNED'}", "names code"),
        ("+callbacks.payload._target_=os.system", "names code"),
        ("++model.scheduler={_partial_:true}", "names code"),
        ("hydra/launcher=joblib", "sets Hydra itself"),
        ("hydra.searchpath=[file:///tmp]", "sets Hydra itself"),
        ("+hydra.callbacks.x._target_=os.system", "sets Hydra itself"),
        ("paths.output_dir=/etc", "where files are written"),
        ("registry.root=/tmp/elsewhere", "where files are written"),
        ("data.rows=${oc.env:HOME}", "interpolation"),
    ],
)
def test_a_plan_job_may_only_choose_settings(tmp_path, line, refused):
    from hydra_plugins.candlelab_plan_sweeper._plan import load_plan

    path = _plan(tmp_path, line)
    with pytest.raises(UserError, match=refused) as err:
        load_plan(path)
    assert err.value.where == str(path)


def test_a_plan_with_plain_settings_loads(tmp_path):
    from hydra_plugins.candlelab_plan_sweeper._plan import load_plan

    path = _plan(
        tmp_path,
        "coin.symbols=[BTC,ETH]",
        "features.select=[ret_15,rsi]",
        "model.params.num_leaves=7",
        "plan.ranked_until='2021-02-05T03:19:00+00:00'",
        "data.path=/data/ETH_USDT-1m.json",
    )
    assert len(load_plan(path).jobs[0].overrides) == 10


def test_a_checkpoint_naming_files_elsewhere_deletes_nothing_on_resume(tmp_path):
    """Lightning deletes the checkpoint files it replaces, by the paths a checkpoint recorded (a URL such as
    local:///... recursively): a crafted checkpoint, plain data that a safe load accepts, names folders elsewhere."""
    first = [*FAST_LSTM, *FAST_DATA, "callbacks.checkpoint.keep=true"]
    proc = _cli(
        *[o for o in first if not o.startswith("model.max_epochs")],
        "model.max_epochs=1",
        f"hydra.run.dir={tmp_path / 'first'}",
        f"paths.output_dir={tmp_path / 'out'}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = torch.load(tmp_path / "first" / "checkpoints" / "latest.ckpt", weights_only=True)
    precious = {name: tmp_path / name for name in ("latest_victim", "best_victim")}
    for folder in precious.values():
        folder.mkdir()
        (folder / "keep.txt").write_text("not a checkpoint")
    for key, cb in state["callbacks"].items():
        if key.startswith("ModelCheckpoint") and cb["monitor"] is None:
            cb["best_model_path"] = f"local://{precious['latest_victim']}"
        elif key.startswith("ModelCheckpoint"):
            worst = f"local://{precious['best_victim']}"
            cb.update(
                best_k_models={worst: torch.tensor(100.0)},
                kth_best_model_path=worst,
                kth_value=torch.tensor(100.0),
                best_model_path=worst,
                best_model_score=torch.tensor(100.0),
            )
    crafted = tmp_path / "received" / "latest.ckpt"
    crafted.parent.mkdir()
    torch.save(state, crafted)
    proc = _cli(
        *FAST_LSTM,
        *FAST_DATA,
        f"resume={crafted}",
        f"hydra.run.dir={tmp_path / 'resumed'}",
        f"paths.output_dir={tmp_path / 'out'}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all((folder / "keep.txt").is_file() for folder in precious.values())


# --- runtime sessions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [{"version": 1, "last_candle": [1, 2]}, {"version": 1}, ["not", "a", "state"]])
def test_a_session_with_a_foreign_stored_state_is_refused_with_one_line(tmp_path, state):
    """A session folder's runtime.db is read as JSON only; a state it cannot continue is a user error."""
    from tests.trainer.runtime.world import promoted_world, runtime_overrides
    from trainer.runtime.session import run
    from trainer.runtime.store import RuntimeStore

    base = promoted_world(tmp_path.parent.parent / "untrusted-runtime-world")  # trained once per test session
    keep = ["runtime.mode=paper", "runtime.replay.max_candles=5"]
    run(make_cfg(*runtime_overrides(base, *keep, f"runtime.run_dir={tmp_path / 'session'}")))
    store = RuntimeStore(tmp_path / "session")  # the finished session, edited to look killed mid-way
    store.put_state("session", {**store.get_state("session"), "status": "running"})
    store.put_state("checkpoint", state)
    store.close()
    with pytest.raises(UserError, match="stored checkpoint cannot be continued") as err:
        run(make_cfg(*runtime_overrides(base, *keep, f"runtime.resume={tmp_path / 'session'}")))
    assert err.value.where == "runtime.resume"


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
