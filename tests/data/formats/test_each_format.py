"""A small synthetic file in each supported format is detected and read to the same canonical candles."""

import json

import pandas as pd
import pytest

from core.errors import UserError
from data.formats import detect_format, read_candles
from tests.data.formats.helpers import COLUMNS, frame, write

SMALL = frame([(0, 10.0, 11.0, 9.0, 10.5, 1.5), (5, 10.5, 12.0, 10.0, 11.0, 2.0), (10, 11.0, 11.5, 10.5, 11.2, 0.0)])
SMALL_MS = [1704067200000, 1704067500000, 1704067800000]  # SMALL's open times in epoch milliseconds


def test_freqtrade_json(tmp_path):
    rows = [[ms, *r] for ms, r in zip(SMALL_MS, SMALL[COLUMNS[1:]].values.tolist())]
    p = write(tmp_path / "BTC_USDT-5m.json", json.dumps(rows))
    assert detect_format(p) == "freqtrade_json"
    pd.testing.assert_frame_equal(read_candles(p), SMALL)


def test_freqtrade_feather(tmp_path):
    df = SMALL.rename(columns={"timestamp": "date"})
    df["date"] = df["date"].astype("datetime64[ns, UTC]")
    p = tmp_path / "BTC_USDT-5m.feather"
    df.to_feather(p)
    assert detect_format(p) == "freqtrade_feather"
    pd.testing.assert_frame_equal(read_candles(p), SMALL)


def _kline_lines(times) -> list[str]:
    out = []
    for t, (_, o, h, l, c, v) in zip(times, SMALL.itertuples(index=False)):
        out.append(f"{t},{o},{h},{l},{c},{v},{t + 299999},{v * o},7,{v / 2},{v * o / 2},0")
    return out


@pytest.mark.parametrize("header", [False, True])
def test_binance_kline_csv(tmp_path, header):
    head = (
        [
            "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
            "taker_buy_quote_volume,ignore"
        ]
        if header
        else []
    )
    p = write(tmp_path / "klines.csv", "\n".join(head + _kline_lines(SMALL_MS)) + "\n")
    assert detect_format(p) == "binance_kline"
    got = read_candles(p)
    pd.testing.assert_frame_equal(got, SMALL)  # volume is the base volume (column 6), not quote volume
    assert got.equals(read_candles(p, stamped_at="close"))  # open_time is explicit


def test_binance_kline_microseconds_and_name_pattern(tmp_path):
    p = write(tmp_path / "BTCUSDT-5m-2024-01.csv", "\n".join(_kline_lines([m * 1000 for m in SMALL_MS])))
    assert detect_format(p) == "binance_kline"
    pd.testing.assert_frame_equal(read_candles(p), SMALL)


@pytest.mark.parametrize(
    "stamp",
    [
        [ms for ms in SMALL_MS],  # epoch milliseconds
        [ms // 1000 for ms in SMALL_MS],  # epoch seconds
        [f"{ms / 1000:.1f}" for ms in SMALL_MS],  # epoch seconds written as floats
        ["2024-01-01T00:00:00Z", "2024-01-01 00:05", "2024-01-01T01:10:00+01:00"],  # ISO, offset -> UTC
    ],
)
def test_csv_timestamp_encodings(tmp_path, stamp):
    lines = ["Timestamp,Open,High,Low,Close,Volume"] + [
        f"{t},{o},{h},{l},{c},{v}" for t, (_, o, h, l, c, v) in zip(stamp, SMALL.itertuples(index=False))
    ]
    p = write(tmp_path / "candles.csv", "\n".join(lines))
    assert detect_format(p) == "csv"
    pd.testing.assert_frame_equal(read_candles(p), SMALL)


def test_csv_aliases_index_column_and_base_volume(tmp_path):
    lines = [",time,o,h,l,c,Volume BTC,Volume USD"] + [
        f"{i},{ms},{o},{h},{l},{c},{v},{v * c}"
        for i, (ms, (_, o, h, l, c, v)) in enumerate(zip(SMALL_MS, SMALL.itertuples(index=False)))
    ]
    p = write(tmp_path / "x.csv", "\n".join(lines))
    pd.testing.assert_frame_equal(read_candles(p, fmt="csv"), SMALL)


def test_csv_newest_first_is_reversed_but_shuffled_is_refused(tmp_path):
    rows = [f"{ms},{o},{h},{l},{c},{v}" for ms, (_, o, h, l, c, v) in zip(SMALL_MS, SMALL.itertuples(index=False))]
    p = write(tmp_path / "desc.csv", "\n".join(["date,open,high,low,close,volume"] + rows[::-1]))
    pd.testing.assert_frame_equal(read_candles(p), SMALL)
    q = write(tmp_path / "shuffled.csv", "\n".join(["date,open,high,low,close,volume"] + [rows[1], rows[0], rows[2]]))
    with pytest.raises(UserError, match="sorted ascending") as exc:
        read_candles(q)
    assert exc.value.where == str(q)


def test_cryptodatadownload_synthetic(tmp_path):
    text = (
        "https://www.CryptoDataDownload.com\n"
        "date,symbol,open,high,low,close,Volume ETH,Volume BTC\n"
        "2024-01-01 12-AM,ETH/BTC,10.5,12,10,11,2,20\n"
        "2023-12-31 11-PM,ETH/BTC,10,11,9,10.5,1.5,15\n"
    )
    p = write(tmp_path / "Binance_ETHBTC_1h.csv", text)
    assert detect_format(p) == "cryptodatadownload"
    want = frame([(-60, 10.0, 11.0, 9.0, 10.5, 1.5), (0, 10.5, 12.0, 10.0, 11.0, 2.0)])
    pd.testing.assert_frame_equal(read_candles(p), want)  # base (ETH) volume chosen by the symbol


def test_yahoo_ignores_adj_close_and_refuses_null_rows(tmp_path):
    text = (
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-01-01,10,11,9,10.5,5.25,100\n2024-01-02,10.5,12,10,11,5.5,200\n"
    )
    p = write(tmp_path / "AAPL.csv", text)
    assert detect_format(p) == "yahoo"
    want = frame([(0, 10.0, 11.0, 9.0, 10.5, 100.0), (1, 10.5, 12.0, 10.0, 11.0, 200.0)], unit="D")
    pd.testing.assert_frame_equal(read_candles(p), want)
    q = write(tmp_path / "AAPL_null.csv", text + "2024-01-03,null,null,null,null,null,null\n")
    with pytest.raises(UserError, match=r"non-numeric value 'null' at row 2") as exc:
        read_candles(q)
    assert exc.value.where == str(q)


def test_binance_json_synthetic_step_from_name_and_mismatch(tmp_path):
    recs = [
        {
            "endTime": ms + 59_999,
            "openPrice": o,
            "highPrice": h,
            "lowPrice": l,
            "closePrice": c,
            "volume": v,
            "amount": 0.0,
        }
        for ms, (_, o, h, l, c, v) in zip(SMALL_MS[:1], SMALL.itertuples(index=False))
    ]
    p = write(tmp_path / "one.json", json.dumps({"name": "BTC/USD_PT1M@BinanceUS", "ohlc": recs}))
    assert detect_format(p) == "binance_json"
    pd.testing.assert_frame_equal(read_candles(p), SMALL.iloc[:1])  # single candle: step from "PT1M"
    with pytest.raises(UserError, match="disagrees"):
        read_candles(p, step=pd.Timedelta("5min"))


def test_close_stamped_csv(tmp_path):
    lines = ["timestamp,open,high,low,close,volume"] + [
        f"{(t + pd.Timedelta('5min')).isoformat()},{o},{h},{l},{c},{v}"
        for t, o, h, l, c, v in SMALL.itertuples(index=False)
    ]
    p = write(tmp_path / "close.csv", "\n".join(lines))
    shifted = read_candles(p)
    assert (shifted["timestamp"] - SMALL["timestamp"] == pd.Timedelta("5min")).all()  # read as open stamps
    pd.testing.assert_frame_equal(read_candles(p, stamped_at="close", step=pd.Timedelta("5min")), SMALL)
    pd.testing.assert_frame_equal(read_candles(p, stamped_at="close"), SMALL)  # step inferred: 5 min


def test_close_stamped_parquet_daily(tmp_path):
    df = frame([(1, 10.0, 11.0, 9.0, 10.5, 1.0), (2, 10.5, 12.0, 10.0, 11.0, 2.0), (4, 11, 12, 10, 11, 3)], unit="D")
    p = tmp_path / "d.parquet"
    df.to_parquet(p)
    got = read_candles(p, stamped_at="close")  # gap at day 3 does not change the inferred step
    assert list(got["timestamp"].dt.day) == [1, 2, 4]
