"""Network candle providers (data/remote/) against in-memory stubs: no network, fast."""

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from core.errors import UserError
from data import remote
from data.remote import CandleCache, fetch_ccxt, load_ccxt, load_yfinance

MIN = 60_000
T0 = pd.Timestamp("2024-01-01", tz="UTC")
T0_MS = int(T0.value // 1_000_000)


def make_rows(n: int, start_ms: int = T0_MS, step_ms: int = MIN, seed: int = 0) -> np.ndarray:
    """n valid OHLCV rows [ms, o, h, l, c, v]."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 1e-3, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 1e-3, n))
    ts = start_ms + step_ms * np.arange(n)
    return np.column_stack([ts, open_, high, low, close, rng.uniform(1, 10, n)])


def as_frame(rows: np.ndarray) -> pd.DataFrame:
    df = pd.DataFrame(rows[:, 1:], columns=["open", "high", "low", "close", "volume"])
    df.insert(0, "timestamp", pd.to_datetime(rows[:, 0].astype("int64"), unit="ms", utc=True))
    return df


def assert_same(got: pd.DataFrame, rows: np.ndarray) -> None:
    exp = as_frame(rows)
    assert list(got.columns) == list(exp.columns)
    assert got["timestamp"].dtype == pd.DatetimeTZDtype("ns", "UTC")
    assert (got["timestamp"].to_numpy() == exp["timestamp"].astype("datetime64[ns, UTC]").to_numpy()).all()
    np.testing.assert_array_equal(got[["open", "high", "low", "close", "volume"]].to_numpy(), rows[:, 1:])


class BadSymbol(Exception):
    """Named like ccxt.BadSymbol (recognised by name, no ccxt needed)."""


class StubExchange:
    """In-memory exchange: pages of at most ``limit`` candles from ``since`` (minus ``overlap`` earlier rows).

    The clock (``milliseconds``) sits inside the last candle, so that candle is still open.
    """

    id = "stub"
    enableRateLimit = True
    has = {"fetchOHLCV": True}
    timeframes = {"1m": "1m", "1h": "1h"}

    def __init__(self, rows: np.ndarray, overlap: int = 0, symbols=("BTC/USDT",), empty_unknown=False):
        self.rows, self.overlap, self.symbols, self.empty_unknown = rows, overlap, set(symbols), empty_unknown
        self.now_ms = int(rows[-1, 0]) + MIN // 2
        self.calls: list[int] = []
        self.error: Exception | None = None
        self.fail_after: int | None = None

    def extend(self, n: int) -> None:
        """n more candles arrive; the clock moves into the new last one."""
        more = make_rows(n + 1, start_ms=int(self.rows[-1, 0]), seed=len(self.rows))[1:]
        more[:, 1:5] = self.rows[-1, 4] * more[:, 1:5] / more[0, 1]  # continue the price path
        self.rows = np.vstack([self.rows, more])
        self.now_ms = int(self.rows[-1, 0]) + MIN // 2

    def milliseconds(self) -> int:
        return self.now_ms

    def fetch_ohlcv(self, symbol, timeframe="1m", since=None, limit=None, params={}):
        self.calls.append(since)
        if self.error is not None and (self.fail_after is None or len(self.calls) > self.fail_after):
            raise self.error
        if symbol not in self.symbols:
            if self.empty_unknown:
                return []
            raise BadSymbol(f"stub does not have market symbol {symbol}")
        visible = self.rows[self.rows[:, 0] <= self.now_ms]
        i = max(int(np.searchsorted(visible[:, 0], since)) - self.overlap, 0)
        return [list(r) for r in visible[i : i + limit]]


def cfg(tmp_path, **kw):
    base = dict(
        exchange="stub",
        symbol="BTC/USDT",
        timeframe="1m",
        start=str(T0),
        end=None,
        cache_dir=str(tmp_path / "cache"),
        limit=100,
    )
    base.update(kw)
    return base


def expected_calls(n_visible: int, limit: int, overlap: int) -> int:
    return 1 + math.ceil(max(n_visible - limit, 0) / (limit - overlap))


# ------------------------------------------------------------------------------------------ fetch_ccxt
@pytest.mark.parametrize("overlap", [0, 7])
def test_full_download_matches_series_and_paginates(overlap):
    rows = make_rows(1000)
    ex = StubExchange(rows, overlap=overlap)
    seen = []
    got = fetch_ccxt(ex, "BTC/USDT", "1m", T0, None, limit=100, progress=lambda n, t: seen.append((n, t)))
    assert_same(got, rows[:-1])  # everything but the still-open last candle
    assert got["timestamp"].is_unique and got["timestamp"].is_monotonic_increasing
    assert len(ex.calls) == expected_calls(1000, 100, overlap)
    assert ex.calls[0] == T0_MS
    assert all(b > a for a, b in zip(ex.calls, ex.calls[1:]))  # always forward
    assert len(seen) == len(ex.calls) and seen[-1][1] == as_frame(rows)["timestamp"].iloc[-1]


def test_open_last_candle_dropped():
    rows = make_rows(10)
    ex = StubExchange(rows)
    got = fetch_ccxt(ex, "BTC/USDT", "1m", T0, None, limit=1000)
    assert len(ex.calls) == 1
    assert got["timestamp"].iloc[-1] == T0 + pd.Timedelta(minutes=8)
    assert len(got) == 9


def test_overlapping_pages_deduplicated_later_page_wins():
    rows = make_rows(300)
    ex = StubExchange(rows, overlap=50)
    got = fetch_ccxt(ex, "BTC/USDT", "1m", T0, None, limit=100)
    assert len(got) == 299 and got["timestamp"].is_unique
    assert_same(got, rows[:-1])


def test_until_is_exclusive_and_stops_paging():
    rows = make_rows(1000)
    ex = StubExchange(rows)
    until = T0 + pd.Timedelta(minutes=250)
    got = fetch_ccxt(ex, "BTC/USDT", "1m", T0 + pd.Timedelta(minutes=10), until, limit=100)
    assert_same(got, rows[10:250])
    assert len(ex.calls) == 3  # 10..109, 110..209, 210..309 -> past until


def test_no_sleep_in_any_provider_module():
    modules = sorted(Path(remote.__file__).parent.rglob("*.py"))
    assert len(modules) > 1  # the whole package, not only its __init__
    sleeping = [p.name for p in modules if "sleep(" in p.read_text()]
    assert sleeping == []


# ------------------------------------------------------------------------------------ load_ccxt + cache
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


# --------------------------------------------------------------------------------------------- errors
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


# ---------------------------------------------------------------------------------------------- cache
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


# --------------------------------------------------------------------------- yfinance (fake downloader)


def yahoo_frame(index: pd.DatetimeIndex, seed: int = 0) -> pd.DataFrame:
    rows = make_rows(len(index), seed=seed)
    df = pd.DataFrame(rows[:, 1:], columns=["Open", "High", "Low", "Close", "Volume"], index=index)
    df["Adj Close"] = df["Close"]
    df.index.name = "Date"
    return df


class FakeYahoo:
    """A daily ticker in New York time whose history ends yesterday, plus today's open candle."""

    def __init__(self):
        today = pd.Timestamp.now(tz="America/New_York").tz_localize(None).normalize()
        self.index = pd.date_range(end=today, periods=60, freq="D").tz_localize("America/New_York")
        self.full = yahoo_frame(self.index)
        self.calls: list[tuple] = []
        self.error: Exception | None = None

    def __call__(self, symbol, start=None, end=None, interval=None):
        self.calls.append((symbol, start, end, interval))
        if self.error is not None:
            raise self.error
        if symbol != "AAPL":
            return pd.DataFrame()
        m = self.full.index >= start
        if end is not None:
            m &= self.full.index < end
        return self.full[m]


def test_yfinance_converts_and_caches(tmp_path):
    fake = FakeYahoo()
    start = fake.index[0].tz_convert("UTC")
    got = load_yfinance("AAPL", "1d", start, None, tmp_path / "cache", download=fake)
    assert len(fake.calls) == 1 and fake.calls[0][3] == "1d"
    assert str(got["timestamp"].dt.tz) == "UTC"
    assert (got["timestamp"] == pd.Series(fake.index[:-1].tz_convert("UTC"))).all()  # today's open candle gone
    np.testing.assert_array_equal(got["close"].to_numpy(), fake.full["Close"].to_numpy()[:-1])

    got2 = load_yfinance("AAPL", "1d", start, None, tmp_path / "cache", download=fake)
    assert len(fake.calls) == 1  # cache up to date: no request
    pd.testing.assert_frame_equal(got, got2)


def test_yfinance_errors(tmp_path):
    fake = FakeYahoo()
    with pytest.raises(UserError, match=r"Yahoo returned no candles for 'NOPE'"):
        load_yfinance("NOPE", "1d", "2024-01-01", "2024-02-01", tmp_path / "cache", download=fake)
    fake.error = ConnectionError("no route to host")
    with pytest.raises(UserError, match="download failed: ConnectionError: no route to host"):
        load_yfinance("AAPL", "1h", "2024-01-01", "2024-02-01", tmp_path / "cache", download=fake)
    with pytest.raises(UserError, match="no fixed length"):
        load_yfinance("AAPL", "1mo", "2024-01-01", "2024-02-01", tmp_path / "cache", download=fake)


def test_yfinance_update_failure_with_cache_raises(tmp_path):
    fake = FakeYahoo()
    start, cut = fake.index[0].tz_convert("UTC"), fake.index[-10]
    fake.full = fake.full[fake.full.index < cut]  # first download: history up to 10 days ago
    load_yfinance("AAPL", "1d", start, None, tmp_path / "cache", download=fake)
    fake.error = ConnectionError("reset")
    with pytest.raises(UserError, match="download failed: ConnectionError: reset.*intact"):
        load_yfinance("AAPL", "1d", start, None, tmp_path / "cache", download=fake)


# ------------------------------------------------------------------------------ the real libraries' objects
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
