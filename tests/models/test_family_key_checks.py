"""Each family declares the ranges of its own keys next to them (``checks:`` in conf/model/<family>.yaml);
a value outside one is refused before any work starts, with the key and the range in one line."""

import math

import pytest
from omegaconf import OmegaConf

from core.errors import UserError
from tests.conftest import ROOT, make_cfg
from trainer.checks import check_config, parse_range

FAMILIES = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
# Keys a family must not leave unchecked when it has them (a zero hidden size or epoch count fails deep in a fit).
MUST_CHECK = (
    "window",
    "hidden",
    "layers",
    "dropout",
    "optimizer.lr",
    "optimizer.weight_decay",
    "batch_size",
    "max_epochs",
    "patience",
    "n_estimators",
    "early_stopping_rounds",
)


def _family(name: str):
    return OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")


def _declared() -> list[tuple[str, str, str]]:
    return [(f, str(k), str(v)) for f in FAMILIES for k, v in (_family(f).get("checks") or {}).items()]


def _outside_and_inside(text: str) -> tuple:
    """A value just outside the declared range and one on its edge (inside)."""
    kind, low, high, bounds = parse_range(text, "test")
    step = 1 if kind is int else 0.25
    if low is not None:
        return (low if bounds[0] == "(" else low - step), (low + step if bounds[0] == "(" else low)
    return (high if bounds[1] == ")" else high + step), (high - step if bounds[1] == ")" else high)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_checks_the_keys_it_has(family):
    cfg = _family(family)
    have = [k for k in MUST_CHECK if OmegaConf.select(cfg, k) is not None]
    declared = set((cfg.get("checks") or {}).keys())
    assert [k for k in have if k not in declared] == []
    assert [k for k in declared if OmegaConf.select(cfg, k) is None] == []  # no check of a key it lacks


@pytest.mark.parametrize("family,key,text", _declared(), ids=lambda v: str(v))
def test_a_value_outside_a_family_range_is_refused_and_its_edge_accepted(family, key, text):
    cfg = make_cfg(f"model={family}")
    outside, inside = _outside_and_inside(text)
    OmegaConf.update(cfg, f"model.{key}", inside, merge=False)
    check_config(cfg)
    OmegaConf.update(cfg, f"model.{key}", outside, merge=False)
    with pytest.raises(UserError) as err:
        check_config(cfg)
    assert err.value.where == f"model.{key}" and "must lie in" in err.value.what


def test_a_wrong_type_is_refused():
    cfg = make_cfg("model=lstm", "model.hidden=1.5")
    with pytest.raises(UserError, match="model.hidden must be an integer"):
        check_config(cfg)


@pytest.mark.parametrize("text", ["integer >= 1", "int => 1", "float in [0, 1", "int >= one"])
def test_a_malformed_check_names_the_family_config(text):
    cfg = make_cfg("model=lstm")
    OmegaConf.update(cfg, "model.checks", {"hidden": text}, merge=False)
    with pytest.raises(UserError) as err:
        check_config(cfg)
    assert err.value.where == "conf/model/lstm.yaml: checks.hidden"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("int >= 1", (int, 1, None, "[]")),
        ("float > 0", (float, 0.0, None, "(]")),
        ("float in [0, 1)", (float, 0.0, 1.0, "[)")),
        ("float in (0, 1]", (float, 0.0, 1.0, "(]")),
        ("int < 10", (int, None, 10, "[)")),
        ("int in [1, inf]", (int, 1, None, "[]")),
    ],
)
def test_range_notation(text, expected):
    assert parse_range(text, "test") == expected
    assert not math.isnan(_outside_and_inside(text)[0])
