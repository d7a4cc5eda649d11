"""Inputs that cannot hurt: errors quote a bounded slice of a value, oversized files and bombs are refused early."""

import gzip
import io
import zipfile

import pytest

from core.errors import UserError
from data.formats import read_candles
from tests.conftest import make_cfg
from tests.data.symbol_names.helpers import synthetic_candles
from trainer.checks import check_config


def test_an_error_quotes_at_most_a_few_hundred_characters_of_a_value():
    err = UserError(f"column 'close' holds non-numeric value {'9' * 5_000_000!r} at row 7", "f.csv")
    assert len(err.line()) < 600 and err.line().endswith("at row 7 (f.csv)") and "characters cut" in err.line()
    assert "\n" not in UserError("two\nlines", "x").line()


def test_files_over_max_bytes_and_bombs_are_refused_before_they_fill_memory(tmp_path):
    frame = synthetic_candles("BTC", 400)
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
