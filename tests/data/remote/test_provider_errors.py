"""Download failures, unknown symbols, bad settings and missing packages are one UserError; no partial cache."""

import sys

import pytest

from core.errors import UserError
from data.remote import CandleCache, load_ccxt, load_yfinance
from tests.data.remote.helpers import T0, StubExchange, cfg, make_rows


def test_network_error_is_user_error_with_cause(tmp_path):
    ex = StubExchange(make_rows(100))
    ex.error = ConnectionError("connection reset by peer")
    with pytest.raises(UserError) as err:
        load_ccxt(cfg(tmp_path), exchange_factory=lambda name: ex)
    assert err.value.what == "download failed: ConnectionError: connection reset by peer"
    assert err.value.where == "stub BTC/USDT"
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.parquet"))


def test_failure_midway_keeps_nothing(tmp_path):
    ex = StubExchange(make_rows(1000))
    ex.error, ex.fail_after = TimeoutError("read timed out"), 3
    with pytest.raises(UserError, match="download failed: TimeoutError: read timed out"):
        load_ccxt(cfg(tmp_path), exchange_factory=lambda name: ex)
    assert not any((tmp_path).rglob("*.parquet"))


def test_update_failure_with_cache_raises_not_stale(tmp_path):
    ex = StubExchange(make_rows(300))
    load_ccxt(cfg(tmp_path), exchange_factory=lambda name: ex)
    path = CandleCache(tmp_path / "cache").path("ccxt", "stub", "BTC/USDT", "1m")
    before = path.read_bytes()
    ex.extend(20)
    ex.error = ConnectionError("network unreachable")
    with pytest.raises(UserError) as err:
        load_ccxt(cfg(tmp_path), exchange_factory=lambda name: ex)
    assert "download failed: ConnectionError: network unreachable" in err.value.what
    assert "intact" in err.value.what
    assert path.read_bytes() == before


def test_unknown_symbol_bad_symbol_error(tmp_path):
    ex = StubExchange(make_rows(100))
    with pytest.raises(UserError, match=r"unknown symbol 'NOPE/USDT' on stub") as err:
        load_ccxt(cfg(tmp_path, symbol="NOPE/USDT"), exchange_factory=lambda name: ex)
    assert "NOPE/USDT" in err.value.where


def test_unknown_symbol_empty_first_page(tmp_path):
    ex = StubExchange(make_rows(100), empty_unknown=True)
    with pytest.raises(UserError, match=r"no candles for 'NOPE/USDT'"):
        load_ccxt(cfg(tmp_path, symbol="NOPE/USDT"), exchange_factory=lambda name: ex)


def test_bad_settings(tmp_path):
    ex = StubExchange(make_rows(100))
    with pytest.raises(UserError, match="no timeframe '5m'"):
        load_ccxt(cfg(tmp_path, timeframe="5m"), exchange_factory=lambda name: ex)
    with pytest.raises(UserError, match="not after start"):
        load_ccxt(cfg(tmp_path, end=str(T0)), exchange_factory=lambda name: ex)
    with pytest.raises(UserError) as err:
        load_ccxt({k: v for k, v in cfg(tmp_path).items() if k != "symbol"}, exchange_factory=lambda name: ex)
    assert err.value.where == "data.symbol"


def test_missing_optional_packages(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ccxt", None)
    monkeypatch.setitem(sys.modules, "yfinance", None)
    with pytest.raises(UserError) as err:
        load_ccxt(cfg(tmp_path, exchange="binance"))
    assert str(err.value) == (
        "the ccxt provider needs the optional package ccxt: pip install 'candlelab[ccxt]' (data.provider=ccxt)"
    )
    with pytest.raises(UserError, match=r"optional package yfinance: pip install 'candlelab\[yfinance\]'"):
        load_yfinance("AAPL", "1d", "2024-01-01", "2024-02-01", tmp_path / "cache")
