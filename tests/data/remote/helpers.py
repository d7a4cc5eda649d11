"""In-memory stand-ins for the network candle providers: a paging exchange, a Yahoo downloader, candle rows."""

import math

import numpy as np
import pandas as pd

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
