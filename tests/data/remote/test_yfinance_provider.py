"""load_yfinance with a fake downloader: UTC candles without today's open one, cached, errors as UserErrors."""

import numpy as np
import pandas as pd
import pytest

from core.errors import UserError
from data.remote import load_yfinance
from tests.data.remote.helpers import FakeYahoo


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
