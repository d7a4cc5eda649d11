"""What a model is called (the symbols it trained on, names safe as folder names), files that say which market
they hold, and inputs that cannot hurt: oversized files, decompression bombs, values quoted into errors."""

import gzip
import io
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from core.errors import UserError
from data.formats import read_candles
from data.providers import load_candles
from data.synthetic import generate
from tests.conftest import make_cfg
from trainer.checks import check_config
from trainer.pipeline import registry_symbol, train
from trainer.registry import Registry
from trainer.runtime.session import default_slot

TINY = [
    "model=lightgbm",
    "model.n_estimators=20",
    "trainer.num_threads=1",
    "logger=none",
    "eval.leakage.shuffled_control=false",
]


def _candles(symbol: str = "ETH", rows: int = 3000) -> pd.DataFrame:
    return generate([symbol], rows, seed=3).candles[symbol]


def _freqtrade_json(path: Path, candles: pd.DataFrame) -> Path:
    ms = candles["timestamp"].astype("int64") // 1000  # microseconds -> milliseconds
    rows = [[int(t), *map(float, r)] for t, r in zip(ms, candles[["open", "high", "low", "close", "volume"]].values)]
    path.write_text(json.dumps(rows))
    return path


# ------------------------------------------------------------------------------ slots from what was trained
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


# ------------------------------------------------------------------------------------ data keeps its name
def test_a_file_named_for_a_market_trains_and_registers_as_that_market(tmp_path):
    path = _freqtrade_json(tmp_path / "ETH_USDT-1m.json", _candles("ETH"))
    cfg = make_cfg(*TINY, "data=files", f"data.path='{path}'", f"paths.output_dir={tmp_path}", run_dir=tmp_path / "run")
    assert default_slot(cfg, "1m").startswith("ETH/1m/")  # the runtime looks where train.py registers
    result = train(cfg)
    assert result.data_summary.symbols == ["ETH"]
    reg = result.registry
    assert reg["slot"].startswith("ETH/1m/")
    row = Registry(tmp_path / "registry").get(reg["model_id"], reg["version"])
    assert row["data_sources"] == {"ETH": str(path)}


def test_a_symbol_column_names_the_market_and_contradictions_are_refused(tmp_path):
    frame = _candles("ETH", 400)
    with_column = frame.assign(symbol="ETH/USDT")
    with_column.to_csv(tmp_path / "candles.csv", index=False)
    loaded = load_candles(make_cfg("data=files", f"data.path='{tmp_path / 'candles.csv'}'").data, ["BTC"], 0)
    assert list(loaded.by_symbol) == ["ETH"] and loaded.sources == {"ETH": str(tmp_path / "candles.csv")}

    # a {symbol} path must hold the symbol it was chosen for
    with_column.to_csv(tmp_path / "BTC-candles.csv", index=False)
    with pytest.raises(UserError, match="the file for BTC holds ETH candles"):
        load_candles(make_cfg("data=files", f"data.path='{tmp_path}/{{symbol}}-candles.csv'").data, ["BTC"], 0)
    # name and contents disagree
    with_column.to_csv(tmp_path / "BTC_USDT-1m.csv", index=False)
    with pytest.raises(UserError, match="symbol column says the candles are ETH, the file name says BTC"):
        read_candles(tmp_path / "BTC_USDT-1m.csv")
    # the file's market is not taken over when the user says so
    cfg = make_cfg("data=files", f"data.path='{tmp_path / 'candles.csv'}'", "data.symbol_from_file=false")
    with pytest.raises(UserError, match=r"holds ETH candles .*set coin.symbols=\[ETH\]") as err:
        load_candles(cfg.data, ["BTC"], 0)
    assert err.value.where == str(tmp_path / "candles.csv")
    # one file cannot be several symbols
    with pytest.raises(UserError, match="one file for 2 symbols"):
        load_candles(make_cfg("data=files", f"data.path='{tmp_path / 'candles.csv'}'").data, ["BTC", "SOL"], 0)
    # a file that says nothing keeps the configured symbol
    frame.to_csv(tmp_path / "plain.csv", index=False)
    assert list(
        load_candles(make_cfg("data=files", f"data.path='{tmp_path / 'plain.csv'}'").data, ["BTC"], 0).by_symbol
    ) == ["BTC"]


# ------------------------------------------------------------------------------------------- bad inputs
def test_an_error_quotes_at_most_a_few_hundred_characters_of_a_value():
    err = UserError(f"column 'close' holds non-numeric value {'9' * 5_000_000!r} at row 7", "f.csv")
    assert len(err.line()) < 600 and err.line().endswith("at row 7 (f.csv)") and "characters cut" in err.line()
    assert "\n" not in UserError("two\nlines", "x").line()


def test_files_over_max_bytes_and_bombs_are_refused_before_they_fill_memory(tmp_path):
    frame = _candles("BTC", 400)
    frame.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(UserError, match="over data.max_bytes"):
        read_candles(tmp_path / "c.csv", max_bytes=1000)
    # a gzip that expands past the cap is stopped while it expands
    body = frame.to_csv(index=False).encode() + b"\n" * 3_000_000
    (tmp_path / "c.csv.gz").write_bytes(gzip.compress(body))
    assert (tmp_path / "c.csv.gz").stat().st_size < 200_000
    with pytest.raises(UserError, match="expands to more than data.max_bytes"):
        read_candles(tmp_path / "c.csv.gz", fmt="csv", max_bytes=1_000_000)
    # a zip member's declared size is checked before it is opened; a Lean folder is capped as a whole
    lean = tmp_path / "lean"
    lean.mkdir()
    for day in ("20240102", "20240103"):
        buf = io.StringIO()
        for i in range(1440):
            buf.write(f"{i * 60000},100,101,99,100.5,1\n")
        with zipfile.ZipFile(lean / f"{day}_trade.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{day}_btcusd_minute_trade.csv", buf.getvalue())
    size = len(buf.getvalue())
    assert len(read_candles(lean, max_bytes=2 * size)) == 2880
    with pytest.raises(UserError, match="max_bytes"):
        read_candles(lean, max_bytes=size + size // 2)
    with pytest.raises(UserError, match="data.max_bytes must lie in"):
        check_config(make_cfg("data=files", "data.max_bytes=0"))
