"""Each published raw candle file reads to exactly its canonical parquet candles, and detection names its format."""

import json
import logging

import numpy as np
import pandas as pd
import pytest

from data.formats import detect_format, read_candles
from tests.data.formats.helpers import COLUMNS, OHLCV, RAW, canonical

LEAN_DIR = "lean_coinbase_btcusd_minute"


def assert_canonical_schema(df: pd.DataFrame) -> None:
    assert list(df.columns) == COLUMNS
    assert str(df["timestamp"].dtype) == "datetime64[us, UTC]"
    assert all(df[c].dtype == np.float64 for c in COLUMNS[1:])
    assert df["timestamp"].is_monotonic_increasing and df["timestamp"].is_unique


REAL_PAIRS = [  # raw file, its format, canonical parquet with the same candles
    ("Coinbase_BTCUSD_1h.csv", "cryptodatadownload", "BTC-USD_1h_coinbase.parquet"),
    ("bitstamp_btcusd_min_2020_01_01.csv", "csv", "BTC-USD_1m_bitstamp_20200101.parquet"),
    ("Binance-ETH-USD-PT5M-20230313_20230315.json", "binance_json", "ETH-USD_5m_binanceus.parquet"),
    ("SPY_D.csv", "csv", "SPY_1d.parquet"),
    ("yahoofinance-AAPL-20040819-20180120.csv", "yahoo", "AAPL_1d.parquet"),
    ("yahoofinance-GOOG-20040819-20180120.csv", "yahoo", "GOOG_1d.parquet"),
    (LEAN_DIR, "lean_zip", "BTC-USD_1m_coinbase_9days.parquet"),
]


@pytest.mark.parametrize("raw_name,fmt,canon_name", REAL_PAIRS)
def test_real_raw_file_equals_its_canonical_candles(real, raw_name, fmt, canon_name):
    got = read_candles(RAW / raw_name)
    assert_canonical_schema(got)
    want = canonical(canon_name)
    if fmt == "lean_zip":  # the canonical file holds 9 days; the raw zips are its last three
        want = want[want["timestamp"] >= pd.Timestamp("2018-04-04", tz="UTC")].reset_index(drop=True)
    # Every candle (timestamps exact, prices and base volume bit-identical) and nothing else.
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert got.equals(read_candles(RAW / raw_name, fmt=fmt))


def test_cryptodatadownload_details(real, caplog):
    with caplog.at_level(logging.WARNING, logger="data.formats"):
        got = read_candles(RAW / "Coinbase_BTCUSD_1h.csv").set_index("timestamp")
    assert "out of newest-first order" in caplog.text  # published disorder on 2017-11-12 is not hidden
    noon = got.loc[pd.Timestamp("2017-07-01 12:00", tz="UTC")]  # "12-PM" is noon, "12-AM" midnight
    assert (noon["open"], noon["close"], noon["volume"]) == (2509.17, 2488.43, 157.36)  # volume_btc, not USD
    assert got.loc[pd.Timestamp("2017-07-02 00:00", tz="UTC")].name.hour == 0
    assert got.index[0] == pd.Timestamp("2017-07-01 11:00", tz="UTC")
    assert got.index[-1] == pd.Timestamp("2019-10-17 09:00", tz="UTC")


def test_binance_json_end_time_is_last_millisecond(real):
    got = read_candles(RAW / "Binance-ETH-USD-PT5M-20230313_20230315.json")
    first_end = json.loads((RAW / "Binance-ETH-USD-PT5M-20230313_20230315.json").read_text())["ohlc"][0]["endTime"]
    assert got["timestamp"].iloc[0] == pd.Timestamp(first_end + 1, unit="ms", tz="UTC") - pd.Timedelta("5min")
    # stamped_at does not apply: endTime already says which edge it is.
    assert got.equals(read_candles(RAW / "Binance-ETH-USD-PT5M-20230313_20230315.json", stamped_at="close"))


def test_lean_single_zips_cover_their_own_day(real):
    zips = sorted((RAW / LEAN_DIR).glob("*_trade.zip"))
    parts = [read_candles(z) for z in zips]
    for z, part in zip(zips, parts):
        day = pd.Timestamp(z.name[:8], tz="UTC")
        assert (part["timestamp"].dt.floor("D") == day).all()
    assert [len(p) for p in parts] == [1007, 1440, 1440]  # 2018-04-04 stops early, as published
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), read_candles(RAW / LEAN_DIR))
    assert parts[0]["open"].iloc[0] == 7424.91  # Lean crypto prices are not scaled


@pytest.mark.parametrize(
    "raw_name,fmt", [(r, f) for r, f, _ in REAL_PAIRS] + [(f"{LEAN_DIR}/20180405_trade.zip", "lean_zip")]
)
def test_detect_format_real_files(real, raw_name, fmt):
    assert detect_format(RAW / raw_name) == fmt


def test_detect_format_canonical_parquet(real):
    for p in OHLCV.glob("*.parquet"):
        assert detect_format(p) == "parquet"
        assert_canonical_schema(read_candles(p))
