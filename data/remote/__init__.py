"""Network candle providers (ccxt exchanges, Yahoo Finance) behind an incremental parquet cache.

Every path ends in canonical candles (see ``data.schema``) or in a ``UserError`` that carries the cause:
a failed download is never replaced by cached-but-stale data, by another source, or by synthetic data.

Layout of the cache (one parquet file per source, venue, symbol and timeframe)::

    <cache_dir>/<source>/<venue>/<symbol>_<timeframe>.parquet      # names percent-encoded ("BTC%2FUSDT_1h")

A load reads the cache, downloads only what the cache lacks (candles after the last cached one, and
candles before the first cached one when the requested start lies earlier), merges, saves atomically and
returns the requested ``[start, end)`` range. The still-open last candle is never returned nor cached.

``ccxt`` and ``yfinance`` are optional packages, imported only when their provider is used.
Rate limiting is ccxt's own (``enableRateLimit=True``); no module here sleeps.
"""

from data.remote.cache import CandleCache
from data.remote.ccxt_source import Progress, fetch_ccxt, load_ccxt
from data.remote.yfinance_source import load_yfinance

__all__ = ["CandleCache", "Progress", "fetch_ccxt", "load_ccxt", "load_yfinance"]
