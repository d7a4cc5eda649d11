"""CandleCache: one safe path per market, atomic saves that keep the old file, a corrupt file is an error."""

import pandas as pd
import pytest

from core.errors import UserError
from data.remote import CandleCache
from tests.data.remote.helpers import as_frame, make_rows


def test_cache_paths_are_distinct_and_safe(tmp_path):
    c = CandleCache(tmp_path)
    a, b = c.path("ccxt", "binance", "BTC/USDT", "1h"), c.path("ccxt", "binance", "BTC_USDT", "1h")
    assert a != b and a.parent == b.parent == tmp_path / "ccxt" / "binance"
    assert c.path("ccxt", "binance", "../../x", "60m").parent == tmp_path / "ccxt" / "binance"
    assert c.path("ccxt", "binance", "X", "60m").name.endswith("_1h.parquet")
    assert c.load("ccxt", "binance", "BTC/USDT", "1h") is None


def test_cache_save_is_atomic(tmp_path, monkeypatch):
    c = CandleCache(tmp_path)
    good = as_frame(make_rows(50))
    c.save("ccxt", "x", "BTC/USDT", "1m", good)
    path = c.path("ccxt", "x", "BTC/USDT", "1m")
    before = path.read_bytes()

    def half_write(self, target, *a, **k):
        with open(target, "wb") as fh:
            fh.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_write)
    with pytest.raises(UserError, match="cannot write candle cache: OSError: disk full"):
        c.save("ccxt", "x", "BTC/USDT", "1m", as_frame(make_rows(80)))
    with pytest.raises(UserError):
        c.save("ccxt", "x", "ETH/USDT", "1m", as_frame(make_rows(80)))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file, no ETH file
    loaded = c.load("ccxt", "x", "BTC/USDT", "1m")
    pd.testing.assert_frame_equal(loaded, good.astype({"timestamp": "datetime64[ns, UTC]"}))


def test_corrupt_cache_is_an_error(tmp_path):
    c = CandleCache(tmp_path)
    path = c.path("ccxt", "x", "BTC/USDT", "1m")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet")
    with pytest.raises(UserError, match="candle cache unreadable"):
        c.load("ccxt", "x", "BTC/USDT", "1m")
