import pytest

from tests.conftest import ROOT, make_cfg

GROUPS = [
    "model",
    "coin",
    "data",
    "features",
    "target",
    "split",
    "stage",
    "device",
    "trainer",
    "callbacks",
    "logger",
    "eval",
    "registry",
    "plan",
    "runtime",
    "paths",
    "hydra",
]


def test_every_group_the_spine_promises_exists():
    for group in GROUPS:
        assert any((ROOT / "conf" / group).glob("*.yaml")), group


@pytest.mark.parametrize("group", [g for g in GROUPS if g not in ("hydra", "paths")])
def test_every_option_composes(group):
    for option in sorted((ROOT / "conf" / group).glob("*.yaml")):
        cfg = make_cfg(f"{group}={option.stem}")
        if "name" in cfg[group] and option.stem != "auto" and group != "features":
            assert cfg[group].name == option.stem  # the option file is the one that was composed


def test_coin_sets_the_symbol_list():
    assert list(make_cfg("coin=ETH").coin.symbols) == ["ETH"]
    assert list(make_cfg("coin=majors").coin.symbols) == ["BTC", "ETH", "SOL", "BNB"]


def test_stage_auto_follows_the_family():
    assert make_cfg("model=lightgbm").stage.name == "cpu"
    assert make_cfg("model=lstm").stage.name == "gpu"
    assert make_cfg("model=lstm", "stage=cpu").stage.name == "cpu"


def test_every_model_config_names_an_importable_family():
    from hydra.utils import get_class

    for option in (ROOT / "conf" / "model").glob("*.yaml"):
        cfg = make_cfg(f"model={option.stem}")
        assert cfg.model.name == option.stem
        cls = get_class(cfg.model._target_)
        assert hasattr(cls, "from_config") and cls.input == cfg.model.input
