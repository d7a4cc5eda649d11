"""Each family learns a planted signal and reloads exactly, cancels mid-fit from a progress sink, ignores the
token with hooks off, and refuses tasks it does not support."""

import numpy as np
import pytest

from callbacks.cancel import CancellationToken
from core.errors import UserError
from models.base import Task
from tests.models.cpu_families_b.helpers import FAMILIES, FAST, SLOW, build, context, planted, reload


@pytest.mark.parametrize("family", FAMILIES)
def test_family_learns_the_planted_signal_and_reloads_exactly(tmp_path, family):
    train, val, test = planted()
    model = build(family, *FAST[family])
    report = model.fit(train, val, context(tmp_path))
    assert not report.cancelled
    for key in ("train/loss", "val/loss", "val/acc"):
        assert np.isfinite(report.metrics[key]), key
    assert report.metrics["val/acc"] > 0.6
    proba = model.predict_proba(test)
    assert proba.shape == (len(test.rows), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)
    assert np.mean(proba.argmax(1) == test.y) > 0.6
    again = reload(model, tmp_path)
    np.testing.assert_array_equal(again.predict_proba(test), proba)
    assert again.n_parameters() == model.n_parameters() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_cancel_from_a_progress_sink_stops_mid_fit_with_a_usable_partial_model(tmp_path, family):
    train, val, test = planted()
    token = CancellationToken()
    steps = []

    def sink(event):
        if event.kind == "step":
            steps.append(event.iteration)
            if event.iteration >= 12:
                token.cancel("test")

    model = build(family, *SLOW[family])
    report = model.fit(train, val, context(tmp_path, [sink], token, every=4))
    assert report.cancelled and report.metrics["cancelled_at"] == {"iteration": 12}
    assert steps == [4, 8, 12]  # every 4th iteration, counted across members for the two-model families
    proba = model.predict_proba(test)
    assert proba.shape == (len(test.rows), 2) and np.all(np.isfinite(proba))
    assert model.n_parameters() > 0
    np.testing.assert_array_equal(reload(model, tmp_path).predict_proba(test), proba)


@pytest.mark.parametrize("family", FAMILIES)
def test_hooks_off_emits_no_steps_and_ignores_the_token(tmp_path, family):
    train, val, _ = planted(n=1500)
    token = CancellationToken()
    token.cancel("ignored")
    events = []
    report = build(family, *FAST[family]).fit(
        train, val, context(tmp_path, [events.append], token, every=1, hooks=False)
    )
    assert not report.cancelled and not [e for e in events if e.kind == "step"]


@pytest.mark.parametrize(
    "family,kind",
    [
        ("reward_based", "multiclass"),
        ("reward_based", "regression"),
        ("meta_learning", "multiclass"),
        ("meta_learning", "regression"),
    ],
)
def test_unsupported_task_is_a_user_error(family, kind):
    task = Task(kind, 3 if kind == "multiclass" else None)
    with pytest.raises(UserError, match=f"{family} supports .* not {kind}"):
        build(family, task=task)
