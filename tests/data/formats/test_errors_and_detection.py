"""Files of no known format, malformed candles and bad options are refused with a UserError naming file and row."""

import json
import zipfile

import pytest

from core.errors import UserError
from data.formats import FORMATS, detect_format, read_candles
from tests.data.formats.helpers import write


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
