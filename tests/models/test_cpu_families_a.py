"""CPU families: quantile_lightgbm, ftrl, gmm_regime, change_point — fit on a planted signal, probabilities,
native save/load parity, cancellation from a progress sink, family maths, and one pipeline run each."""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from callbacks.cancel import CancellationToken
from callbacks.progress import ProgressReporter
from core.errors import UserError
from data.providers import load_candles
from models.base import FitContext, Rows, Task
from models.change_point import ChangePointModel, change_point_features, run_starts
from models.ftrl import FTRLModel
from models.gmm_regime import GMMRegimeModel
from models.quantile_lightgbm import QuantileLightGBMModel, cdf_at
from tests.conftest import FAST_DATA, make_cfg
from trainer import load_model, train
from trainer.model_dir import check_model_files

FAMILIES = {
    "quantile_lightgbm": QuantileLightGBMModel,
    "ftrl": FTRLModel,
    "gmm_regime": GMMRegimeModel,
    "change_point": ChangePointModel,
}
FAST = {"gmm_regime": ["model.min_regime_rows=300", "model.n_components=2"]}
# Long enough to be stopped part-way.
SLOW = {
    family: ["model.n_estimators=400", "model.early_stopping_rounds=400", "model.params.learning_rate=0.001"]
    for family in ("quantile_lightgbm", "gmm_regime", "change_point")
}
SLOW["ftrl"] = ["model.max_epochs=50", "model.patience=50", "model.batch_size=32"]
ROWS_HAVE_AUX = "aux" in {f.name for f in dataclasses.fields(Rows)}
E2E = [*FAST_DATA, "trainer.num_threads=1"]  # one thread: the CPU is shared, OpenMP spinning costs more


class Sink:
    """Records progress events; optionally cancels the token at the first step at or past ``at``."""

    def __init__(self, token: CancellationToken | None = None, at: int | None = None):
        self.events, self.token, self.at = [], token, at

    def __call__(self, event):
        self.events.append(event)
        if self.token is not None and event.kind == "step" and event.iteration >= self.at:
            self.token.cancel("test")
            self.token = None

    @property
    def steps(self):
        return [e.iteration for e in self.events if e.kind == "step"]


def _with_aux(rows: Rows, forward_return: np.ndarray) -> Rows:
    rows.aux = {"forward_return": forward_return}  # what the pipeline will attach (Rows.aux)
    return rows


def _data(task: Task, n: int = 3000, f: int = 6, seed: int = 0) -> tuple[Rows, Rows]:
    """Time-ordered train/val rows with a learnable signal in columns 0 and 2 (val after train)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, f)).astype(np.float32)
    ret = 0.002 * (X[:, 0] - 0.5 * X[:, 2]) + 0.0015 * rng.standard_normal(n)
    if task.kind == "binary":
        y = (ret > 0).astype(np.int64)
    elif task.kind == "multiclass":
        y = np.digitize(ret, np.quantile(ret, [1 / 3, 2 / 3])).astype(np.int64)
    else:
        y = ret
    cut = 2000
    train, val = Rows(X, np.arange(cut), y[:cut]), Rows(X, np.arange(cut, n), y[cut:])
    return _with_aux(train, ret[:cut]), _with_aux(val, ret[cut:])


def _ctx(tmp_path: Path, sink=None, token=None, hooks=True, every=5) -> FitContext:
    cfg = make_cfg(f"callbacks.progress.every_n_batches={every}")
    return FitContext(
        run_dir=tmp_path,
        seed=0,
        reporter=ProgressReporter([sink] if sink else []),
        token=token,
        callbacks=cfg.callbacks,
        trainer=cfg.trainer,
        hooks=hooks,
    )


def _model(family: str, *overrides: str, task: Task = Task(), n_features: int = 6):
    cfg = make_cfg(f"model={family}", *FAST.get(family, []), *overrides)
    return FAMILIES[family].from_config(cfg.model, n_features, seed=0, num_threads=1, task=task)


def _assert_probabilities(p: np.ndarray, n: int, k: int = 2):
    assert p.shape == (n, k) and np.isfinite(p).all()
    assert (p >= 0).all() and (p <= 1).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fit_predict_and_reload_identically(tmp_path, family):
    train_rows, val = _data(Task())
    model = _model(family)
    report = model.fit(train_rows, val, _ctx(tmp_path))
    assert not report.cancelled
    assert {"train/loss", "val/loss", "val/acc"} <= report.metrics.keys()
    assert report.metrics["val/acc"] > 0.65, report.metrics  # chance is ~0.5
    p = model.predict_proba(val)
    _assert_probabilities(p, len(val.rows))
    assert np.mean(p.argmax(1) == val.y) == pytest.approx(report.metrics["val/acc"])
    out = tmp_path / "model"
    out.mkdir()
    model.save(out)
    assert not list(out.rglob("*.pkl")) and not list(out.rglob("*.joblib"))
    check_model_files(out)  # only formats the loader accepts from an untrusted folder
    again = FAMILIES[family].load(out)
    np.testing.assert_array_equal(again.predict_proba(val), p)
    assert again.n_parameters() == model.n_parameters() > 0
    imp = model.feature_importance([f"f{i}" for i in range(6)])
    assert max(imp["values"], key=imp["values"].get) == "f0"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cancel_from_a_progress_sink_keeps_a_usable_partial_model(tmp_path, family):
    train_rows, val = _data(Task())
    token = CancellationToken()
    sink = Sink(token, at=10)
    model = _model(family, *SLOW[family])
    report = model.fit(train_rows, val, _ctx(tmp_path, sink, token, every=5))
    assert report.cancelled and report.metrics["cancelled_at"] == {"iteration": 10}
    assert sink.steps == [5, 10]
    _assert_probabilities(model.predict_proba(val), len(val.rows))
    out = tmp_path / "partial"
    out.mkdir()
    model.save(out)
    np.testing.assert_array_equal(FAMILIES[family].load(out).predict_proba(val), model.predict_proba(val))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hooks_off_reports_nothing_and_ignores_the_token(tmp_path, family):
    train_rows, val = _data(Task())
    token = CancellationToken()
    token.cancel("ignored when hooks are off")
    sink = Sink()
    report = _model(family).fit(train_rows, val, _ctx(tmp_path, sink, token, hooks=False, every=1))
    assert not report.cancelled and not sink.steps


@pytest.mark.parametrize(
    "family,task", [("quantile_lightgbm", Task("multiclass", 3)), ("ftrl", Task("regression", None))]
)
def test_unsupported_task_is_a_user_error(family, task):
    with pytest.raises(UserError) as err:
        _model(family, task=task)
    assert err.value.where == "target.type" and task.kind in err.value.what


def test_cdf_at_zero_worked_example_and_flat_tails():
    levels = [0.1, 0.25, 0.5, 0.75, 0.9]
    q = np.array(
        [
            [-2.0, -1.0, 0.5, 1.0, 2.0],  # 0 lies between -1 (0.25) and 0.5 (0.5): 0.25 + 1/1.5 * 0.25
            [1.0, 2.0, 3.0, 4.0, 5.0],  # all above 0: flat left tail, F(0) = 0.1
            [-5.0, -4.0, -3.0, -2.0, -1.0],  # all below 0: flat right tail, F(0) = 0.9
            [-1.0, -0.5, 0.0, 0.5, 1.0],
        ]
    )  # 0 is the median point
    np.testing.assert_allclose(cdf_at(q, levels), [0.25 + 0.25 / 1.5, 0.1, 0.9, 0.5])
    np.testing.assert_allclose(1.0 - cdf_at(q, levels), [0.75 - 0.25 / 1.5, 0.9, 0.1, 0.5])


def test_quantiles_are_monotone_and_the_interval_is_reported(tmp_path):
    train_rows, val = _data(Task())
    model = _model("quantile_lightgbm")
    report = model.fit(train_rows, val, _ctx(tmp_path))
    q = model.predict_quantiles(val)
    assert q.shape == (len(val.rows), 5) and (np.diff(q, axis=1) >= 0).all()
    assert report.metrics["val/interval_width"] > 0
    assert 0.6 < report.metrics["val/interval_coverage"] < 0.95  # nominal 0.8
    p_up = model.predict_proba(val)[:, 1]
    np.testing.assert_allclose(p_up, 1.0 - cdf_at(q, model.quantiles))
    assert 0.1 - 1e-12 <= p_up.min() and p_up.max() <= 0.9 + 1e-12  # flat tails bound P(up)


def test_quantile_regression_predicts_the_median(tmp_path):
    task = Task("regression", None)
    train_rows, val = _data(task)
    model = _model("quantile_lightgbm", task=task)
    report = model.fit(train_rows, val, _ctx(tmp_path))
    out = model.predict_proba(val)
    assert out.shape == (len(val.rows), 1)
    np.testing.assert_array_equal(out[:, 0], model.predict_quantiles(val)[:, 2])
    assert np.corrcoef(out[:, 0], val.y)[0, 1] > 0.5 and "val/mae" in report.metrics


def test_quantile_direction_without_forward_return_is_a_user_error(tmp_path):
    train_rows, val = _data(Task())
    train_rows.aux = None
    with pytest.raises(UserError, match="forward_return"):
        _model("quantile_lightgbm").fit(train_rows, val, _ctx(tmp_path))


def test_ftrl_partial_fit_moves_the_weights_and_l1_gives_exact_zeros():
    train_rows, _ = _data(Task())
    model = _model("ftrl", "model.lambda1=0")
    before = model.weights().copy()
    model.partial_fit(train_rows)
    after = model.weights().copy()
    assert not np.array_equal(before, after) and np.count_nonzero(after[:, :-1]) == 6
    model.partial_fit(Rows(train_rows.features, train_rows.rows[:500], train_rows.y[:500]))
    assert not np.array_equal(after, model.weights())
    sparse = _model("ftrl", "model.lambda1=60").partial_fit(train_rows).weights()
    assert sparse[0, 0] > 0 and sparse[0, 2] < 0  # the planted columns survive
    assert (sparse[0, [1, 3, 4, 5]] == 0.0).all()  # noise columns are exactly zero


def test_ftrl_multiclass_one_vs_rest(tmp_path):
    task = Task("multiclass", 3)
    train_rows, val = _data(task)
    model = _model("ftrl", task=task)
    report = model.fit(train_rows, val, _ctx(tmp_path))
    _assert_probabilities(model.predict_proba(val), len(val.rows), 3)
    assert model.z.shape == (3, 7) and report.metrics["val/acc"] > 0.45  # chance is 1/3


def test_gmm_reload_reproduces_posteriors_and_reports_occupancy(tmp_path):
    train_rows, val = _data(Task())
    model = _model("gmm_regime")
    report = model.fit(train_rows, val, _ctx(tmp_path))
    assert sum(report.metrics["regime_occupancy_train"]) == pytest.approx(1.0)
    assert len(report.metrics["regime_probability_val"]) == 2
    model.save(tmp_path)
    again = GMMRegimeModel.load(tmp_path)
    np.testing.assert_array_equal(again.regime_posterior(val), model.regime_posterior(val))
    np.testing.assert_allclose(model.regime_posterior(val).sum(1), 1.0)


def test_gmm_thin_regimes_fall_back_to_the_global_model(tmp_path):
    train_rows, val = _data(Task())
    model = _model("gmm_regime", "model.min_regime_rows=100000")
    report = model.fit(train_rows, val, _ctx(tmp_path))
    assert report.metrics["regime_model"] == ["global", "global"] and list(model.boosters) == ["global"]
    np.testing.assert_allclose(model.predict_proba(val), model._predict_one("global", val.tabular()))


def _reference_detector(x, starts, drift=0.5, threshold=8.0, var_drift=0.5, var_threshold=12.0, clip=4.0, span=60):
    """The CUSUM written as the plain per-row recursion, to check the block-vectorised one against."""
    x = np.clip(x, -clip, clip)
    a = 2.0 / (span + 1.0)
    levels = np.array([threshold, threshold, var_threshold, var_threshold])
    s, alarms, stats = np.zeros(4), [], []
    for i in range(len(x)):
        if starts[i]:
            s, m, v, em, es = np.zeros(4), 0.0, 1.0, x[i], x[i] ** 2
        else:
            em, es = a * x[i] + (1 - a) * em, a * x[i] ** 2 + (1 - a) * es
        d = x[i] - m
        u = min(d * d / v, clip * clip) - 1.0
        s = np.maximum(0.0, s + np.array([d - drift, -d - drift, u - var_drift, -u - var_drift]))
        stats.append(s / levels)
        alarms.append((s > levels).any())
        if alarms[-1]:
            s, m, v = np.zeros(4), em, max(es - em * em, 1e-2)
    return np.array(alarms), np.array(stats)


def _regime_signal(n=6000, seed=3):
    rng = np.random.default_rng(seed)
    scale = np.repeat(rng.choice([0.4, 1.0, 2.5], n // 500), 500)
    shift = np.repeat(rng.normal(0, 0.7, n // 300), 300)[:n]
    return rng.standard_normal(n) * scale + np.pad(shift, (0, n - len(shift)))


def test_change_point_vectorised_detector_matches_the_recursion():
    x = _regime_signal()
    starts = np.zeros(len(x), dtype=bool)
    starts[[0, 2500]] = True
    feats = change_point_features(x, starts)
    alarms, stats = _reference_detector(x, starts)
    np.testing.assert_allclose(feats[:, 4:], stats, rtol=0, atol=1e-9)
    assert 5 < alarms.sum() < len(x) / 20
    since = feats[:, 0]
    assert (since[np.flatnonzero(alarms[:-1]) + 1] == 0).all() and since[2500] == 0


def test_change_point_features_at_i_ignore_rows_after_i():
    x = _regime_signal()
    rows = np.arange(len(x))
    base = change_point_features(x, run_starts(rows))
    rng = np.random.default_rng(9)
    for i in (0, 777, 3000, len(x) - 2):
        perturbed = x.copy()
        perturbed[i + 1 :] = rng.standard_normal(len(x) - i - 1) * 5.0
        np.testing.assert_array_equal(change_point_features(perturbed, run_starts(rows))[: i + 1], base[: i + 1])
    # Through the model: the table's later rows perturbed, earlier rows' features unchanged.
    model = _model("change_point", n_features=2)
    table = np.column_stack([x, np.zeros_like(x)]).astype(np.float32)
    later = table.copy()
    later[4001:, 0] = 9.0
    a = model.features(Rows(table, rows))
    b = model.features(Rows(later, rows))
    np.testing.assert_array_equal(a[:4001], b[:4001])
    assert not np.array_equal(a[4001:], b[4001:])


def test_change_point_restarts_per_call_and_at_non_adjacent_rows():
    x = _regime_signal()
    table = np.column_stack([x, np.zeros_like(x)]).astype(np.float32)
    model = _model("change_point", n_features=2)
    both = model.features(Rows(table, np.r_[np.arange(0, 1000), np.arange(3000, 4000)]))
    alone = model.features(Rows(table, np.arange(3000, 4000)))
    np.testing.assert_array_equal(both[1000:], alone)
    assert both[1000, 0] == 0 and both[1000, 3] == 0


def _e2e(tmp_path, *overrides):
    cfg = make_cfg(*overrides, *E2E, run_dir=tmp_path)
    result = train(cfg)
    assert result.status == "completed", result.reason
    model = load_model(result.model_path)
    assert model.card["status"] == "completed" and result.model_info.n_parameters > 0
    return cfg, result, model


def _assert_reload_parity(cfg, result, model):
    """load_model(dir).predict_proba(candles) reproduces the test predictions the run evaluated."""
    evaluated = pd.read_parquet(Path(result.run.run_dir) / "predictions_test.parquet")
    columns = [c for c in evaluated.columns if c.startswith("p_") or c == "prediction"]
    candles = load_candles(cfg.data, ["BTC"], cfg.seed).by_symbol["BTC"]
    got = model.predict_proba(candles).set_index(candles["timestamp"]).loc[evaluated["timestamp"]]
    np.testing.assert_array_equal(got[columns].to_numpy(), evaluated[columns].to_numpy())


@pytest.mark.parametrize("family", ["ftrl", "gmm_regime", "change_point"])
def test_direction_through_the_pipeline(tmp_path, family):
    cfg, result, model = _e2e(tmp_path, f"model={family}")
    m = result.training_metrics
    assert {"train/loss", "val/loss", "val/acc"} <= m.keys() and np.isfinite(m["val/loss"])
    # ~2900 test rows: the oracle bound with ~3 standard errors of slack (more means a leak)
    assert result.test_metrics["accuracy"] <= result.data_summary.oracle_accuracy + 0.03
    _assert_reload_parity(cfg, result, model)  # change_point too: its detector replays each run's history


def test_quantile_regression_through_the_pipeline(tmp_path):
    cfg, result, model = _e2e(tmp_path, "model=quantile_lightgbm", "target=forward_return")
    assert result.training_metrics["val/interval_width"] > 0
    assert {"ic", "mae", "directional_accuracy"} <= result.test_metrics.keys()
    assert result.test_metrics["directional_accuracy"] <= result.data_summary.oracle_accuracy + 0.03
    _assert_reload_parity(cfg, result, model)


@pytest.mark.skipif(
    not ROWS_HAVE_AUX,
    reason="models.base.Rows has no `aux` field yet: the pipeline cannot pass "
    "the forward return quantile_lightgbm needs for a direction target",
)
def test_quantile_direction_through_the_pipeline(tmp_path):
    cfg, result, model = _e2e(tmp_path, "model=quantile_lightgbm", "target=direction")
    assert result.training_metrics["val/acc"] > 0.5
    assert result.test_metrics["accuracy"] <= result.data_summary.oracle_accuracy + 0.03
    _assert_reload_parity(cfg, result, model)
