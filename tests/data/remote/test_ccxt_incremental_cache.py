"""load_ccxt keeps a candle cache and fetches only the candles it lacks, after it and before it."""

import pandas as pd
from omegaconf import OmegaConf

from data.remote import CandleCache, load_ccxt
from tests.data.remote.helpers import MIN, T0, T0_MS, StubExchange, assert_same, cfg, make_rows


def test_load_ccxt_incremental_fetches_only_new_candles(tmp_path):
    rows = make_rows(1000)
    ex = StubExchange(rows)
    first = load_ccxt(cfg(tmp_path), exchange_factory=lambda name: ex)
    assert_same(first, rows[:-1])
    assert len(ex.calls) == 10
    path = CandleCache(tmp_path / "cache").path("ccxt", "stub", "BTC/USDT", "1m")
    assert path.is_file() and len(pd.read_parquet(path)) == 999

    ex.calls.clear()  # nothing new yet: no request at all
    again = load_ccxt(OmegaConf.create(cfg(tmp_path)), exchange_factory=lambda name: ex)
    pd.testing.assert_frame_equal(again, first)
    assert ex.calls == []

    ex.extend(150)  # 150 more candles, the last one open
    got = load_ccxt(cfg(tmp_path), exchange_factory=lambda name: ex)
    assert ex.calls[0] == int(rows[-2, 0]) + MIN  # starts right after the last cached candle
    assert len(ex.calls) == 2  # 150 new candles at 100 per page
    assert_same(got, ex.rows[:-1])
    assert len(pd.read_parquet(path)) == len(ex.rows) - 1


def test_load_ccxt_returns_requested_range_and_backfills(tmp_path):
    rows = make_rows(1000)
    ex = StubExchange(rows)
    start, end = T0 + pd.Timedelta(minutes=500), T0 + pd.Timedelta(minutes=700)
    got = load_ccxt(cfg(tmp_path, start=str(start), end=str(end)), exchange_factory=lambda name: ex)
    assert_same(got, rows[500:700])
    assert len(ex.calls) == 2

    ex.calls.clear()  # earlier start: only [T0+100, T0+500) is fetched
    got = load_ccxt(
        cfg(tmp_path, start=str(T0 + pd.Timedelta(minutes=100)), end=str(end)), exchange_factory=lambda name: ex
    )
    assert_same(got, rows[100:700])
    assert ex.calls == [T0_MS + 100 * MIN + k * 100 * MIN for k in range(4)]
