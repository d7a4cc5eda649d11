"""fetch_ccxt pages forward through an exchange, drops the open last candle and overlaps; no provider sleeps."""

from pathlib import Path

import pandas as pd
import pytest

from data import remote
from data.remote import fetch_ccxt
from tests.data.remote.helpers import T0, T0_MS, StubExchange, as_frame, assert_same, expected_calls, make_rows


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
