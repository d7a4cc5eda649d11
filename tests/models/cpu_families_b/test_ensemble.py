"""The ensemble's weights lie on the simplex and beat every member; stacking reloads exactly."""

import numpy as np

from models.base import Task
from tests.models.cpu_families_b.helpers import FAST, build, context, planted, reload


def test_ensemble_weights_lie_on_the_simplex_and_beat_every_member_on_val(tmp_path):
    train, val, _ = planted()
    model = build("ensemble", *FAST["ensemble"])
    report = model.fit(train, val, context(tmp_path))
    w = np.array(list(report.metrics["weights"].values()))
    assert np.all(w >= 0) and np.isclose(w.sum(), 1.0)
    assert report.metrics["val/loss"] <= min(report.metrics["member_val_loss"].values()) + 1e-12
    reload(model, tmp_path)
    assert sorted(p.name for p in (tmp_path / "saved" / "members").iterdir()) == ["catboost", "lightgbm", "xgboost"]


def test_ensemble_stacking_reloads_exactly(tmp_path):
    train, val, test = planted(kind="multiclass")
    model = build(
        "ensemble",
        *FAST["ensemble"],
        "model.method=stacking",
        "model.members=[lightgbm,xgboost]",
        task=Task("multiclass", 3),
    )
    report = model.fit(train, val, context(tmp_path))
    assert report.metrics["method"] == "stacking" and report.metrics["val/acc"] > 0.5
    proba = model.predict_proba(test)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(reload(model, tmp_path).predict_proba(test), proba)
