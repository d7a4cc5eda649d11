"""The providers drive real ccxt and yfinance objects (their network calls stubbed); skipped without the packages."""

import numpy as np
import pandas as pd
import pytest

from core.errors import UserError
from data.remote import fetch_ccxt, load_ccxt, load_yfinance
from tests.data.remote.helpers import (
    MIN,
    FakeYahoo,
    StubExchange,
    as_frame,
    assert_same,
    cfg,
    expected_calls,
    make_rows,
)


def frozen_rows(n: int, now_ms: int, step_ms: int) -> np.ndarray:
    last_open = now_ms // step_ms * step_ms
    return make_rows(n, start_ms=last_open - (n - 1) * step_ms, step_ms=step_ms)


def test_real_ccxt_exchange_object(tmp_path, monkeypatch):
    ccxt = pytest.importorskip("ccxt", reason="optional package ccxt not installed (pip install 'candlelab[ccxt]')")
    ex = ccxt.binance({"enableRateLimit": True})
    now_ms = ex.milliseconds()
    monkeypatch.setattr(ex, "milliseconds", lambda: now_ms)  # frozen clock: the last candle stays open
    rows = frozen_rows(500, now_ms, 3_600_000)
    stub = StubExchange(rows, overlap=3)
    stub.now_ms = now_ms
    monkeypatch.setattr(ex, "fetch_ohlcv", stub.fetch_ohlcv)
    start = pd.Timestamp(int(rows[0, 0]), unit="ms", tz="UTC")
    got = load_ccxt(
        cfg(tmp_path, exchange="binance", timeframe="1h", start=str(start)), exchange_factory=lambda name: ex
    )
    assert_same(got, rows[:-1])
    assert len(stub.calls) == expected_calls(500, 100, 3)

    with pytest.raises(UserError, match="exchange binance has no timeframe '7m'"):
        fetch_ccxt(ex, "BTC/USDT", "7m", start, None)
    stub.error = ccxt.NetworkError("binance GET https://api.binance.com 503")
    with pytest.raises(UserError, match="download failed: NetworkError: binance GET"):
        fetch_ccxt(ex, "BTC/USDT", "1h", start, None)
    stub.error = ccxt.BadSymbol("binance does not have market symbol NOPE/USDT")
    with pytest.raises(UserError, match="unknown symbol 'NOPE/USDT' on binance"):
        fetch_ccxt(ex, "NOPE/USDT", "1h", start, None)


def test_real_ccxt_default_factory(tmp_path, monkeypatch):
    ccxt = pytest.importorskip("ccxt", reason="optional package ccxt not installed (pip install 'candlelab[ccxt]')")
    now_ms = ccxt.binance().milliseconds()
    rows = frozen_rows(50, now_ms, MIN)
    stub = StubExchange(rows)
    stub.now_ms = now_ms
    built = []

    def fetch(self, symbol, timeframe="1m", since=None, limit=None, params={}):
        built.append(self)
        return stub.fetch_ohlcv(symbol, timeframe, since, limit)

    monkeypatch.setattr(ccxt.binance, "fetch_ohlcv", fetch)
    monkeypatch.setattr(ccxt.binance, "milliseconds", lambda self: now_ms)
    got = load_ccxt(cfg(tmp_path, exchange="binance", start=str(as_frame(rows)["timestamp"].iloc[0])))
    assert_same(got, rows[:-1])
    assert built and built[0].enableRateLimit is True and built[0].id == "binance"
    with pytest.raises(UserError, match="unknown ccxt exchange 'nosuchexchange'"):
        load_ccxt(cfg(tmp_path, exchange="nosuchexchange"))


def test_real_yfinance_ticker_history(tmp_path, monkeypatch):
    yf = pytest.importorskip(
        "yfinance", reason="optional package yfinance not installed (pip install 'candlelab[yfinance]')"
    )
    from yfinance.exceptions import YFPricesMissingError, YFTzMissingError

    fake = FakeYahoo()
    seen = []

    def history(self, start=None, end=None, interval="1d", auto_adjust=True, actions=True, prepost=False, **kw):
        seen.append((self.ticker, auto_adjust, yf.config.debug.hide_exceptions))
        if self.ticker == "NOPE":
            raise YFTzMissingError("NOPE")
        if self.ticker == "EMPTY":
            raise YFPricesMissingError("EMPTY", " (1d 2024-01-01 -> 2024-02-01)")
        return fake(self.ticker, start, end, interval)

    monkeypatch.setattr(yf.Ticker, "history", history)
    hide = yf.config.debug.hide_exceptions
    start = fake.index[0].tz_convert("UTC")
    got = load_yfinance("AAPL", "1d", start, None, tmp_path / "cache")
    assert seen[0] == ("AAPL", False, False)  # raw prices; exceptions raised, not swallowed
    assert yf.config.debug.hide_exceptions == hide  # restored
    assert (got["timestamp"] == pd.Series(fake.index[:-1].tz_convert("UTC"))).all()
    with pytest.raises(UserError, match="unknown symbol 'NOPE' on Yahoo"):
        load_yfinance("NOPE", "1d", start, None, tmp_path / "cache")
    with pytest.raises(UserError, match="Yahoo returned no candles for 'EMPTY'.*possibly delisted"):
        load_yfinance("EMPTY", "1d", start, None, tmp_path / "cache")
    assert yf.config.debug.hide_exceptions == hide

    # yfinance.download itself as the downloader: (Price, Ticker) MultiIndex columns, tz-naive daily dates
    # (taken as UTC midnight)
    got_dl = load_yfinance(
        "AAPL",
        "1d",
        start,
        None,
        tmp_path / "cache2",
        download=lambda s, **kw: yf.download(s, progress=False, threads=False, **kw),
    )
    by_date = fake.full.set_axis(fake.index.tz_localize(None).tz_localize("UTC"))
    assert (got_dl["timestamp"] == got_dl["timestamp"].dt.normalize()).all()
    assert len(got_dl) >= len(got) - 1
    np.testing.assert_array_equal(got_dl["close"].to_numpy(), by_date.loc[got_dl["timestamp"], "Close"].to_numpy())
