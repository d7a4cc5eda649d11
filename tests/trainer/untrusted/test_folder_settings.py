"""Settings inside a model folder cannot read the environment, nest without bound, or point outside it."""

import json
import shutil

import pytest

from core.errors import UserError
from tests.trainer.untrusted.helpers import read_card, write_card
from trainer import load_model


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
    card = {k: v for k, v in read_card(folder).items() if k != "target_class"}
    write_card(regime, {**card, "family": "gmm_regime"})
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
