"""A model's slot and run folder are named by the symbols it trained on; unsafe or repeated names are refused."""

from pathlib import Path

import pytest

from core.errors import UserError
from tests.conftest import make_cfg
from tests.data.symbol_names.helpers import TINY
from trainer.checks import check_config
from trainer.pipeline import registry_symbol, train
from trainer.registry import Registry


def test_the_slot_and_run_folder_are_named_by_the_symbols_trained(tmp_path):
    result = train(make_cfg(*TINY, "data.rows=3000", "coin.symbols=[ETH]", f"paths.output_dir={tmp_path}"))
    assert result.data_summary.symbols == ["ETH"]
    assert result.registry["slot"].startswith("synthetic-ETH/")  # coin=BTC is only the default group
    assert Path(result.run.run_dir).name.endswith("_lightgbm_ETH")
    assert not Registry(tmp_path / "registry").rows(slot=f"synthetic-BTC/1m/{result.target}")


def test_several_symbols_take_their_group_name_only_when_the_group_is_exactly_them():
    assert registry_symbol(make_cfg("coin=majors")) == "synthetic-majors"
    assert registry_symbol(make_cfg("coin=majors", "coin.symbols=[BNB,SOL,ETH,BTC]")) == "synthetic-majors"
    assert registry_symbol(make_cfg("coin=majors", "coin.symbols=[ETH,BTC]")) == "synthetic-BTC+ETH"
    assert registry_symbol(make_cfg("coin.name=SOL", "coin.symbols=[BTC,ETH]")) == "synthetic-BTC+ETH"
    assert registry_symbol(make_cfg("coin=ETH", "coin.name=BTC")) == "synthetic-ETH"


@pytest.mark.parametrize(
    "override,needle",
    [
        ("coin.name=../../../escaped", "coin.name"),
        ("coin.symbols=[../../etc]", "coin.symbols"),
        ("coin.symbols=[BTC,BTC]", "listed twice"),
        ("coin.symbols=[BTC,btc]", "listed twice"),
        ("coin.name=a/b", "coin.name"),
    ],
)
def test_names_that_are_not_safe_folder_names_or_repeat_are_refused(override, needle):
    with pytest.raises(UserError) as err:
        check_config(make_cfg(override))
    assert needle in err.value.line()


def test_a_coin_name_cannot_place_a_run_folder_outside_runs(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UserError, match="not a market name"):
        train(make_cfg(*TINY, "data.rows=3000", "coin.name=../../../escaped", f"paths.output_dir={out}"))
    assert not list(tmp_path.rglob("*escaped*"))
