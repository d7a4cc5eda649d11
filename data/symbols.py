"""Market names: what a symbol or a coin selection may be called, and the one name a set of trained symbols
goes by (registry slot, run folder). Which market a candle file holds is ``data.markets``.

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
