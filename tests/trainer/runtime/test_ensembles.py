"""Ensembles across families: the registry keeps one served model per family per slot (the slot's promoted
link unchanged for single-model readers), the runtime loads every member through its family link, weights
them by family, and records every member's probability with each signal."""

import json
import os
import shutil
import sqlite3

import pytest

from core.errors import UserError
from data.providers import load_candles
from tests.conftest import make_cfg
from trainer import train
from trainer.model_dir import load_model
from trainer.registry import Registry
from trainer.registry import main as registry_main
from trainer.runtime.session import run
from trainer.runtime.signals import SignalEngine, load_promoted, long_short

SLOT = "synthetic-BTC/1m/direction_h15"
DATA = ["data.rows=8000", "logger=none"]
TRAIN = [
    *DATA,
    "trainer.num_threads=1",
    "eval.leakage.shuffled_control=false",
    "eval.policy.mode=fixed",
    "eval.trading.threshold=0.51",
]


@pytest.fixture(scope="module")
def two_families(tmp_path_factory):
    """A LightGBM and an FTRL logistic regression trained for the same slot; LightGBM promoted, FTRL its
    family's member beside it (forced: the gates judge them, the runtime must serve what was chosen)."""
    out = tmp_path_factory.mktemp("ensemble")
    rows = {}
    for family in ("lightgbm", "ftrl"):
        result = train(make_cfg(f"model={family}", *TRAIN, f"paths.output_dir={out}", run_dir=out / family))
        rows[family] = result.registry
    registry = Registry(out / "registry")
    registry.promote(rows["lightgbm"]["model_id"], rows["lightgbm"]["version"], force=True)
    registry.promote_member(rows["ftrl"]["model_id"], rows["ftrl"]["version"], force=True)
    return out, rows


def _ref(row: dict) -> str:
    return f"{row['model_id']}:{row['version']}"


def test_the_registry_keeps_one_model_per_family_per_slot(two_families, tmp_path):
    out, rows = two_families
    root = tmp_path / "registry"
    shutil.copytree(out / "registry", root, symlinks=True)
    registry = Registry(root)
    members = registry.members(SLOT)
    assert {f: _ref(r) for f, r in members.items()} == {f: _ref(r) for f, r in rows.items()}
    # the slot's link still serves its promoted model; each family has a link of its own
    assert _ref(registry.promoted(SLOT)) == _ref(rows["lightgbm"])
    assert load_model(registry.promoted_path(SLOT)).card["family"] == "lightgbm"
    for family in ("lightgbm", "ftrl"):
        link = registry.member_path(SLOT, family)
        assert link == root / "families" / SLOT / family and link.is_symlink()
        assert load_model(link).card["run_id"] == members[family]["run_id"]
    exported = json.loads((root / "registry.json").read_text())["members"]
    assert exported == {f"{SLOT}@{f}": _ref(r) for f, r in rows.items()}
    # a member link a crashed writer left pointing elsewhere is repaired on the next read
    link = registry.member_path(SLOT, "ftrl")
    os.unlink(link)
    os.symlink(os.path.relpath(members["lightgbm"]["model_dir"], link.parent), link)
    assert load_model(link).card["family"] == "ftrl"
    # promoting FTRL moves the slot's link and keeps LightGBM as its family's member; rolling back withdraws
    # FTRL from serving
    registry.promote(rows["ftrl"]["model_id"], rows["ftrl"]["version"], force=True)
    assert _ref(registry.promoted(SLOT)) == _ref(rows["ftrl"]) and set(registry.members(SLOT)) == {"lightgbm", "ftrl"}
    registry.rollback(SLOT)
    assert _ref(registry.promoted(SLOT)) == _ref(rows["lightgbm"]) and set(registry.members(SLOT)) == {"lightgbm"}
    assert not (root / "families" / SLOT / "ftrl").is_symlink()
    assert registry_main(["--root", str(root), "promote", "--member", "--force", _ref(rows["ftrl"])]) == 0
    assert set(registry.members(SLOT)) == {"lightgbm", "ftrl"}
    assert registry.prune(0) == []  # a member that is a candidate still serves: never pruned


def test_a_cross_family_ensemble_weights_members_and_records_each_probability(two_families, tmp_path):
    out, rows = two_families
    models = load_promoted(out / "registry", [SLOT], weights={"lightgbm": 3.0, "ftrl": 1.0}, families="all")
    assert {(m.family, m.ref, m.weight) for m in models} == {
        ("lightgbm", _ref(rows["lightgbm"]), 0.75),
        ("ftrl", _ref(rows["ftrl"]), 0.25),
    }
    assert [m.model.card["family"] for m in models] == [m.family for m in models]
    with pytest.raises(UserError, match="promote --member") as missing:
        load_promoted(out / "registry", [SLOT], families=["xgboost"])
    assert missing.value.where == "runtime.families"
    with pytest.raises(UserError, match="weights name"):
        load_promoted(out / "registry", [SLOT], weights={"xgboost": 1.0}, families="all")

    # the ensemble's probability is the weighted mean of each member's own (evaluation-rule) probability
    cfg = make_cfg(*DATA, f"paths.output_dir={out}")
    candles = load_candles(cfg.data, ["BTC"], cfg.seed).by_symbol["BTC"]
    engine = SignalEngine(models)
    history = candles.iloc[-engine.history :]
    p_long, p_short, per_model = engine.probabilities("BTC", history)
    own = {m.ref: long_short(m.model, m.model.predict_proba(history.assign(symbol="BTC")).iloc[[-1]]) for m in models}
    assert per_model == pytest.approx({ref: float(pl[0]) for ref, (pl, _) in own.items()}, abs=1e-12)
    assert p_long == pytest.approx(sum(m.weight * float(own[m.ref][0][0]) for m in models), abs=1e-12)
    assert p_short == pytest.approx(sum(m.weight * float(own[m.ref][1][0]) for m in models), abs=1e-12)

    # a dry session serving both records every member's probability with every signal
    summary = run(
        make_cfg(
            *DATA,
            f"paths.output_dir={out}",
            "runtime.mode=dry",
            "runtime.families=all",
            "runtime.weights={lightgbm:3.0,ftrl:1.0}",
            "runtime.replay.max_candles=30",
            f"runtime.run_dir={tmp_path / 'dry'}",
        )
    )
    assert sorted((m["ref"], m["weight"]) for m in summary["models"]) == sorted(
        [(_ref(rows["lightgbm"]), 0.75), (_ref(rows["ftrl"]), 0.25)]
    )
    with sqlite3.connect(tmp_path / "dry" / "runtime.db") as db:
        signals = [json.loads(r[0]) for r in db.execute("SELECT row_json FROM signals ORDER BY id")]
    assert len(signals) == 30
    weight = {m.ref: m.weight for m in models}
    for s in signals:
        assert set(s["models"]) == set(weight)
        if all(v is not None for v in s["models"].values()):
            assert s["p_long"] == pytest.approx(sum(weight[r] * p for r, p in s["models"].items()), abs=1e-12)
