"""Candle file formats (data/formats/): real published files, synthetic files per format, errors, resample."""

import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import UserError
from data.formats import FORMATS, detect_format, read_candles, resample

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
RAW, OHLCV = DATA / "raw", DATA / "ohlcv"
COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]
LEAN_DIR = "lean_coinbase_btcusd_minute"


@pytest.fixture(scope="module")
def real() -> Path:
    if not RAW.is_dir() or not OHLCV.is_dir():
        pytest.skip(f"real market data not found at {DATA} (expected beside the checkout as shared/data)")
    return DATA


def canonical(name: str) -> pd.DataFrame:
    df = pd.read_parquet(OHLCV / name)
    df["volume"] = df["volume"].astype("float64")  # AAPL/GOOG parquet store volume as int64
    return df


def assert_canonical_schema(df: pd.DataFrame) -> None:
    assert list(df.columns) == COLUMNS
    assert str(df["timestamp"].dtype) == "datetime64[us, UTC]"
    assert all(df[c].dtype == np.float64 for c in COLUMNS[1:])
    assert df["timestamp"].is_monotonic_increasing and df["timestamp"].is_unique


def frame(rows, unit="min") -> pd.DataFrame:
    """Canonical candles from (minutes-or-days offset, o, h, l, c, v) rows, starting 2024-01-01 UTC."""
    base = pd.Timestamp("2024-01-01", tz="UTC")
    df = pd.DataFrame(rows, columns=COLUMNS).astype({c: "float64" for c in COLUMNS[1:]})
    df["timestamp"] = (base + pd.to_timedelta(df["timestamp"], unit=unit)).astype("datetime64[us, UTC]")
    return df


SMALL = frame([(0, 10.0, 11.0, 9.0, 10.5, 1.5), (5, 10.5, 12.0, 10.0, 11.0, 2.0), (10, 11.0, 11.5, 10.5, 11.2, 0.0)])
SMALL_MS = [1704067200000, 1704067500000, 1704067800000]  # SMALL's open times in epoch milliseconds


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------- real files
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


# --------------------------------------------------------------------------- synthetic, per format
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


# ----------------------------------------------------------------------------------- errors, detection
def test_detect_format_unknown_files(tmp_path):
    for name, text in [
        ("notes.txt", "hello world\nnothing here\n"),
        ("x.json", '{"candles": []}'),
        ("x.bin", "\x00\x01"),
        ("empty.csv", ""),
    ]:
        p = write(tmp_path / name, text)
        with pytest.raises(UserError, match="cannot tell the candle file format; set data.format to one of") as e:
            detect_format(p)
        assert e.value.where == str(p) and "binance_kline" in e.value.what
        with pytest.raises(UserError, match="cannot tell"):
            read_candles(p)
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(UserError, match="cannot tell"):
        read_candles(tmp_path / "emptydir")


def test_missing_column_and_bad_values_name_file_and_row(tmp_path):
    p = write(tmp_path / "nolow.csv", "date,open,high,close,volume\n2024-01-01,1,2,1.5,3\n")
    with pytest.raises(UserError, match="missing column 'low'") as e:
        read_candles(p)
    assert e.value.where == str(p)
    q = write(
        tmp_path / "garbage.csv",
        "date,open,high,low,close,volume\n2024-01-01,1,2,1,1.5,3\n2024-01-02,1,2,1,1.5,3\nyesterday-ish,1,2,1,1.5,3\n",
    )
    with pytest.raises(UserError, match=r"unparsable timestamp 'yesterday-ish' in column 'date' at row 2") as e:
        read_candles(q)
    assert e.value.where == str(q) and "\n" not in e.value.line()
    r = write(tmp_path / "price.csv", "date,open,high,low,close,volume\n2024-01-01,1,2,abc,1.5,3\n")
    with pytest.raises(UserError, match=r"column 'low' holds non-numeric value 'abc' at row 0"):
        read_candles(r)
    s = write(tmp_path / "bad.json", json.dumps({"ohlc": [{"endTime": 1, "openPrice": 1}]}))
    with pytest.raises(UserError, match=r"candle 0 lacks key\(s\) \['highPrice'"):
        read_candles(s)
    with pytest.raises(UserError, match="not a \\[ms, open"):
        read_candles(write(tmp_path / "ft.json", "[[1, 2, 3]]"))
    with pytest.raises(UserError, match="not found"):
        read_candles(tmp_path / "absent.csv")
    with pytest.raises(UserError, match="unknown candle file format 'xlsx'"):
        read_candles(p, fmt="xlsx")
    with pytest.raises(UserError, match="stamped_at"):
        read_candles(p, stamped_at="middle")


def test_schema_rules_still_refuse(tmp_path):
    p = write(
        tmp_path / "hl.csv", "date,open,high,low,close,volume\n2024-01-01,1,2,1,1.5,3\n2024-01-02,1,0.5,1,1.5,3\n"
    )
    with pytest.raises(UserError, match=r"low <= open,close <= high' at row 1"):
        read_candles(p)


def test_lean_quote_zip_and_equity_refused(tmp_path):
    z = tmp_path / "20240101_quote.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("20240101_btcusd_minute_quote.csv", "0" + ",1" * 10 + "\n")
    with pytest.raises(UserError, match="6 columns"):
        read_candles(z, fmt="lean_zip")
    eq = tmp_path / "equity" / "usa" / "minute" / "spy"
    eq.mkdir(parents=True)
    with zipfile.ZipFile(eq / "20240102_trade.zip", "w") as zf:
        zf.writestr("20240102_spy_minute_trade.csv", "34200000,4700000,4710000,4690000,4705000,100\n")
    assert detect_format(eq / "20240102_trade.zip") == "lean_zip"
    with pytest.raises(UserError, match="equity"):
        read_candles(eq / "20240102_trade.zip")


def test_formats_tuple():
    assert set(FORMATS) == {
        "parquet",
        "csv",
        "freqtrade_json",
        "freqtrade_feather",
        "yahoo",
        "cryptodatadownload",
        "binance_kline",
        "binance_json",
        "lean_zip",
    }


# --------------------------------------------------------------------------------------------- resample
# Minutes 0..18 with 7, 10-14 (a whole 5m bucket), 15 (a bucket's first minute) and 19 (its last) missing.
# Candle i: open 100+i, high 101+i, low 99+i, close 100.5+i, volume i+1; spikes: high 150 at 8, low 50 at 16.
def _handmade() -> pd.DataFrame:
    rows = []
    for i in [0, 1, 2, 3, 4, 5, 6, 8, 9, 16, 17, 18]:
        rows.append((i, 100 + i, 150 if i == 8 else 101 + i, 50 if i == 16 else 99 + i, 100.5 + i, i + 1))
    return frame(rows)


@pytest.mark.parametrize(
    "step,expected",
    [
        ("5min", [(0, 100, 105, 99, 104.5, 15), (5, 105, 150, 104, 109.5, 32), (15, 116, 119, 50, 118.5, 54)]),
        ("15min", [(0, 100, 150, 99, 109.5, 47), (15, 116, 119, 50, 118.5, 54)]),
        ("1h", [(0, 100, 150, 50, 118.5, 101)]),
        ("1min", None),
    ],
)
def test_resample_handmade(step, expected):
    src = _handmade()
    got = resample(src, pd.Timedelta(step))
    pd.testing.assert_frame_equal(got, src if expected is None else frame(expected))


def test_resample_refuses_bad_steps():
    src = _handmade()
    for bad in ["90s", "30s"]:
        with pytest.raises(UserError, match="not a whole multiple"):
            resample(src, pd.Timedelta(bad))
    offset = frame([(2, 1, 2, 1, 1.5, 1), (7, 1, 2, 1, 1.5, 1), (12, 1, 2, 1, 1.5, 1)])  # 5m candles at :02
    with pytest.raises(UserError, match="straddles"):
        resample(offset, pd.Timedelta("15min"))


def test_resample_real_bitstamp_day(real):
    src = read_candles(RAW / "bitstamp_btcusd_min_2020_01_01.csv")
    assert len(src) == 1440
    got = resample(src, pd.Timedelta("5min"))
    assert len(got) == 288
    rows = []
    for k in range(288):  # straightforward per-bucket computation
        b = src.iloc[5 * k : 5 * k + 5]
        assert (b["timestamp"].dt.floor("5min") == b["timestamp"].iloc[0]).all()
        rows.append(
            (
                b["timestamp"].iloc[0],
                b["open"].iloc[0],
                b["high"].max(),
                b["low"].min(),
                b["close"].iloc[-1],
                b["volume"].sum(),
            )
        )
    want = pd.DataFrame(rows, columns=COLUMNS)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)  # volume sums: order of addition
    assert (got[["open", "high", "low", "close"]].to_numpy() == want[["open", "high", "low", "close"]].to_numpy()).all()


def test_resample_real_gappy_days_match_pandas(real):
    src = canonical("BTC-USD_1m_coinbase_9days.parquet")
    got = resample(src, pd.Timedelta("1h"))
    ref = (
        src.set_index("timestamp")
        .resample("1h")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
        .dropna(subset=["open"])
        .reset_index()
    )
    ref["timestamp"] = ref["timestamp"].astype("datetime64[us, UTC]")
    pd.testing.assert_frame_equal(got, ref, check_exact=False, rtol=1e-12)
    assert got["timestamp"].dt.normalize().nunique() == 9  # non-consecutive days: empty hours are dropped
