"""NGBoost's rebuilt predictor equals the library's, for binary, multiclass and regression tasks."""

import numpy as np
import pytest

from models.base import Task
from tests.models.cpu_families_b.helpers import FAST, build, context, planted, reload


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_ngboost_rebuilt_predictor_equals_the_library(tmp_path, kind):
    train, val, test = planted(kind=kind)
    task = {"binary": Task(), "multiclass": Task("multiclass", 3), "regression": Task("regression", None)}[kind]
    model = build("ngboost", *FAST["ngboost"], "model.col_sample=0.5", task=task)  # column samples remapped
    report = model.fit(train, val, context(tmp_path))
    kept = report.metrics["best_iteration"]
    assert 0 < kept <= report.metrics["iterations_run"]
    library = model._library.pred_dist(test.tabular(), max_iter=kept)
    ours = reload(model, tmp_path).predict_distribution(test)
    if task.is_classification:
        np.testing.assert_array_equal(ours["probs"], library.class_probs())
    else:
        np.testing.assert_array_equal(ours["loc"], library.loc)
        np.testing.assert_array_equal(ours["scale"], library.scale)
        assert model.predict_proba(test).shape == (len(test.rows), 1)
        assert report.metrics["val/mae"] < np.mean(np.abs(val.y - train.y.mean()))
