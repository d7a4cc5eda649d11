"""Market names: what a symbol or a coin selection may be called, which market a candle file's name or
contents say it holds, and the one name a set of trained symbols goes by (registry slot, run folder).

Names become folder names (run folders, registry slots, promoted links), so they are refused unless they
match ``NAME_RE``: 1-32 letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit, no ``..``.
"""

from __future__ import annotations

import re
from pathlib import Path

from core.errors import UserError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
GROUP_DIR = Path(__file__).resolve().parents[1] / "conf" / "coin"
JOINER = "+"  # several symbols without a matching coin group: BNB+BTC (no symbol may hold a '+')
MAX_JOINED = 64  # a longer joined name is shortened to its first symbols and a count

# Quote currencies a file name may pair a base asset with (ETH_USDT, BTC-USD, BTCUSDT). Crypto quotes
# (ETH_BTC) are left out: "Binance-ETH-USD" would otherwise read as the market BINANCE.
_USD_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD")
_QUOTES = _USD_QUOTES + ("DAI", "EUR", "GBP", "JPY", "KRW", "TRY", "BRL", "AUD", "CAD", "CHF")
_BASE_RE = re.compile(r"(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{2,10}")


def check_name(value, where: str) -> str:
    text = "" if value is None else str(value)
    if not NAME_RE.fullmatch(text) or ".." in text:
        raise UserError(
            f"{text!r} is not a market name: 1-32 letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit, no '..' (it names folders)",
            where,
        )
    return text


def check_symbols(symbols, where: str = "coin.symbols") -> list[str]:
    names = [check_name(s, where) for s in symbols]
    if not names:
        raise UserError("no symbols selected", where)
    seen: dict[str, str] = {}
    for s in names:
        if s.upper() in seen:
            also = "" if seen[s.upper()] == s else f" (as {seen[s.upper()]!r} and {s!r})"
            raise UserError(f"symbol {s!r} is listed twice{also}: each symbol trains once", where)
        seen[s.upper()] = s
    return names


def check_coin(coin) -> list[str]:
    """``coin.name`` and ``coin.symbols`` as names (see NAME_RE), symbols without duplicates."""
    check_name(coin.get("name"), "coin.name")
    return check_symbols(list(coin.get("symbols") or []))


def group_symbols(name: str) -> list[str] | None:
    """The symbols of the coin group ``conf/coin/<name>.yaml``, or None when there is no such group."""
    path = GROUP_DIR / f"{name}.yaml"
    if not NAME_RE.fullmatch(name) or ".." in name or not path.is_file():
        return None
    from omegaconf import OmegaConf

    return [str(s) for s in OmegaConf.load(path).get("symbols") or []]


def selection_name(coin_name: str | None, symbols: list[str]) -> str:
    """The name a model of ``symbols`` goes by: one symbol is itself; several are the coin group's name only
    when that group holds exactly these symbols, else the sorted symbols joined by '+' (BTC+ETH)."""
    symbols = check_symbols(symbols)
    if len(symbols) == 1:
        return symbols[0]
    if coin_name is not None:
        group = group_symbols(str(coin_name))
        if group is not None and sorted(s.upper() for s in group) == sorted(s.upper() for s in symbols):
            return str(coin_name)
    joined = JOINER.join(sorted(symbols))
    if len(joined) <= MAX_JOINED:
        return joined
    head = JOINER.join(sorted(symbols)[:4])
    return f"{head}{JOINER}{len(symbols) - 4}more"


# ------------------------------------------------------------------------------- markets named by files
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
