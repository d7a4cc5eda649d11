"""The real published candle files, or a skip where they are not beside the checkout."""

from pathlib import Path

import pytest

from tests.data.formats.helpers import DATA, OHLCV, RAW


@pytest.fixture(scope="module")
def real() -> Path:
    if not RAW.is_dir() or not OHLCV.is_dir():
        pytest.skip(f"real market data not found at {DATA} (expected beside the checkout as shared/data)")
    return DATA
