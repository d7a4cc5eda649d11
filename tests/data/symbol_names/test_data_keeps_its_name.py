"""A file named for a market, or with a symbol column, trains and registers as that market; contradictions fail."""

import json
from pathlib import Path

import pandas as pd
import pytest

from core.errors import UserError
from data.formats import read_candles
from data.providers import load_candles
from tests.conftest import make_cfg
from tests.data.symbol_names.helpers import TINY, synthetic_candles
from trainer.pipeline import train
from trainer.registry import Registry
from trainer.runtime.session import default_slot


def _freqtrade_json(path: Path, candles: pd.DataFrame) -> Path:
    ms = candles["timestamp"].astype("int64") // 1000  # microseconds -> milliseconds
    rows = [[int(t), *map(float, r)] for t, r in zip(ms, candles[["open", "high", "low", "close", "volume"]].values)]
    path.write_text(json.dumps(rows))
    return path


def test_a_file_named_for_a_market_trains_and_registers_as_that_market(tmp_path):
    path = _freqtrade_json(tmp_path / "ETH_USDT-1m.json", synthetic_candles("ETH"))
    cfg = make_cfg(*TINY, "data=files", f"data.path='{path}'", f"paths.output_dir={tmp_path}", run_dir=tmp_path / "run")
    assert default_slot(cfg, "1m").startswith("ETH/1m/")  # the runtime looks where train.py registers
    result = train(cfg)
    assert result.data_summary.symbols == ["ETH"]
    reg = result.registry
    assert reg["slot"].startswith("ETH/1m/")
    row = Registry(tmp_path / "registry").get(reg["model_id"], reg["version"])
    assert row["data_sources"] == {"ETH": str(path)}


def test_a_symbol_column_names_the_market_and_contradictions_are_refused(tmp_path):
    frame = synthetic_candles("ETH", 400)
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
