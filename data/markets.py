"""Markets named by files: the base asset a candle file's or folder's name pairs with a quote currency
(``ETH_USDT-1m.json`` -> ETH), and the one a market value inside a file names (a ``symbol`` column, a ``name``
field: ``BTC/USD`` -> BTC).
"""

from __future__ import annotations

import re

# Quote currencies a file name may pair a base asset with (ETH_USDT, BTC-USD, BTCUSDT). Crypto quotes
# (ETH_BTC) are left out: "Binance-ETH-USD" would otherwise read as the market BINANCE.
_USD_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD")
_QUOTES = _USD_QUOTES + ("DAI", "EUR", "GBP", "JPY", "KRW", "TRY", "BRL", "AUD", "CAD", "CHF")
_BASE_RE = re.compile(r"(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{2,10}")


def name_markets(name: str) -> list[str]:
    """Base assets a file or folder name pairs with a quote currency, in order: ``ETH_USDT-1m.json`` -> [ETH],
    ``BTC-USD_1h_coinbase.parquet`` -> [BTC], ``Coinbase_BTCUSD_1h.csv`` and ``bitstamp_btcusd_min.csv`` -> [BTC],
    ``AAPL_1d.parquet`` -> []. A separated base must be written in capitals (``prices_usd.csv`` names nothing)."""
    tokens = [t for t in re.split(r"[^A-Za-z0-9]+", name) if t]
    found: list[str] = []
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if (
            nxt.upper() in _QUOTES
            and tok.isupper()
            and tok not in _QUOTES
            and _BASE_RE.fullmatch(tok)
            and nxt in (nxt.upper(), nxt.lower())
        ):
            found.append(tok)
            continue
        base = _concatenated_base(tok)
        if base:
            found.append(base)
    return list(dict.fromkeys(found))


def _concatenated_base(token: str) -> str | None:
    """BTCUSDT -> BTC; btcusd -> BTC (lower case only with a USD quote: 'amateur' is no AMAT/EUR market)."""
    quotes = _QUOTES if token.isupper() else _USD_QUOTES if token.islower() else ()
    for quote in quotes:
        if token.upper().endswith(quote):
            base = token[: -len(quote)]
            if _BASE_RE.fullmatch(base) and base.upper() not in _QUOTES:
                return base.upper()
    return None


def value_market(value) -> str | None:
    """The base asset a market value in a file names (a ``symbol`` column, a ``name`` field): BTC/USD,
    BTC-USD, BTCUSDT, ETH/BTC and a bare AAPL all name their base; None when the value names no market."""
    text = str(value).strip()
    if not text or text.lower() in ("nan", "none", "null"):
        return None
    parts = [p for p in re.split(r"[/\-_:@ ]+", text) if p]
    if len(parts) >= 2 and _BASE_RE.fullmatch(parts[0]):
        return parts[0].upper()
    base = _concatenated_base(text) or _concatenated_base(text.upper())
    if base:
        return base
    return text.upper() if _BASE_RE.fullmatch(text) else None
