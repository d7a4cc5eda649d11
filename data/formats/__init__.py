"""Candle file formats -> the canonical schema, and resampling to a coarser timeframe.

``read_candles`` reads one candle file (or a directory of Lean zips) in any of ``FORMATS`` and returns the
canonical frame: ``timestamp`` (``datetime64[us, UTC]``, the candle OPEN time), ``open high low close volume``
(float64), sorted ascending, checked by :func:`data.schema.validate_candles`. A file that cannot be read as
written is refused with one :class:`UserError` line naming the file, the problem and the row; nothing is
repaired, filled or replaced.

Interpretation rules (the choices a user may need to know):
- Text timestamps are ISO 8601 (``2020-01-01``, ``2020-01-01 00:00:00``, optional offset) or
  CryptoDataDownload's ``2019-10-17 09-AM``; without an offset they are taken as UTC. Numeric timestamps are
  Unix epoch, the unit read from each value's magnitude: < 1e11 seconds, < 1e14 milliseconds,
  < 1e17 microseconds, else nanoseconds (CryptoDataDownload and Binance have switched units mid-history).
- A file whose rows run strictly newest-first is reversed. CryptoDataDownload files (newest-first by
  convention, with a few stretches out of order as published) are ordered by timestamp with a logged
  warning. Any other disorder, and a repeated timestamp in any format, is refused by the schema check.
- Volume is the base-asset volume. When a file has several volume columns (``volume_btc, volume``,
  ``Volume BTC, Volume USD``) the one named after the pair's base asset (from a ``symbol`` column or the
  file name) wins, else the one single non-quote-currency column, else a plain ``volume``; anything still
  ambiguous is refused.
- Yahoo: ``Open High Low Close`` are used as published (Yahoo adjusts them for splits, not dividends);
  ``Adj Close`` is ignored, because mixing it with unadjusted open/high/low would break ``low <= close <= high``
  and misstate the bar. Rows Yahoo writes as ``null`` are refused, not dropped.
- Lean (QuantConnect) trade zips: crypto layout only — prices as written (Lean's crypto files are not
  scaled) and times in UTC. Lean *equity* files store prices x10000 in exchange time; a path under an
  ``equity`` directory is refused rather than misread. Quote zips (bid/ask, 11 columns) are refused.
- ``stamped_at="close"`` shifts every timestamp back by ``step`` (inferred as the most common spacing when
  not given). Binance kline CSVs (explicit ``open_time``) and Binance JSON (``endTime`` = last millisecond;
  open = endTime + 1 ms - step) state the edge themselves, so ``stamped_at`` does not apply to them.
"""

from data.formats.candle_file import STAMPS, CandleFile, file_market, read_candle_source, read_candles
from data.formats.detect import FORMATS, detect_format
from data.formats.resampling import resample
from data.formats.sources import DEFAULT_MAX_BYTES
from data.formats.values import TS_DTYPE

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FORMATS",
    "STAMPS",
    "TS_DTYPE",
    "CandleFile",
    "detect_format",
    "file_market",
    "read_candle_source",
    "read_candles",
    "resample",
]
