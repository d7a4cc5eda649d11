"""Which of ``FORMATS`` a candle file is written in: by suffix, by file-name pattern (Binance klines, Lean
zips) and by a peek at its first lines or JSON keys; a file none of them names is refused, never guessed.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from core.errors import UserError
from data.formats.frames import _PRICE_ALIASES, _TIME_ALIASES
from data.formats.sources import _check_source, _fail, _peek

FORMATS: tuple[str, ...] = (
    "parquet",
    "csv",
    "freqtrade_json",
    "freqtrade_feather",
    "yahoo",
    "cryptodatadownload",
    "binance_kline",
    "binance_json",
    "lean_zip",
)

_LEAN_ZIP_RE = re.compile(r"^(\d{8})_trade\.zip$", re.IGNORECASE)

_LEAN_CSV_RE = re.compile(r"^(\d{8})_.*_trade\.csv$", re.IGNORECASE)
_BINANCE_KLINE_NAME_RE = re.compile(r"^[A-Z0-9]+-\d+(?:s|m|h|d|w|mo)-\d{4}-\d{2}(?:-\d{2})?\.csv$")


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _header_fields(line: str) -> list[str]:
    return [f.strip().strip('"').strip().lower() for f in line.split(",")]


def _is_number(text: str) -> bool:
    try:
        float(text.strip().strip('"'))
    except ValueError:
        return False
    return True


def _looks_like_candle_header(fields: list[str]) -> bool:
    names = set(fields)
    has_time = any(a in names for a in _TIME_ALIASES)
    n_prices = sum(any(a in names for a in aliases) for aliases in _PRICE_ALIASES.values())
    return (has_time and n_prices >= 2) or n_prices == 4


def _lean_zips_in(directory: Path) -> list[Path]:
    # is_file() is true for regular files only: a FIFO named like a zip is skipped, never opened
    return sorted(p for p in directory.iterdir() if p.is_file() and _LEAN_ZIP_RE.match(p.name))


def _detect(path: Path) -> str | None:
    if path.is_dir():
        return "lean_zip" if _lean_zips_in(path) else None
    suffix = _base_suffix(path)
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".feather", ".arrow", ".ipc"):
        return "freqtrade_feather"
    if suffix == ".zip":
        if _LEAN_ZIP_RE.match(path.name):
            return "lean_zip"
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        return "lean_zip" if len(names) == 1 and _LEAN_CSV_RE.match(Path(names[0]).name) else None
    if suffix == ".json":
        head = _peek(path).lstrip()
        if head.startswith("["):
            return "freqtrade_json"
        if head.startswith("{") and re.search(r'"ohlc"\s*:', head):
            return "binance_json"
        return None
    if suffix in (".csv", ".txt", ""):
        lines = [ln for ln in _peek(path).splitlines() if ln.strip()][:2]
        if not lines:
            return None
        first = _header_fields(lines[0])
        if "cryptodatadownload" in lines[0].lower():
            return "cryptodatadownload"
        if "adj close" in first and _looks_like_candle_header(first):
            return "yahoo"
        if "open_time" in first and "close_time" in first:
            return "binance_kline"
        if _BINANCE_KLINE_NAME_RE.match(path.name) or (len(first) >= 11 and all(map(_is_number, first))):
            return "binance_kline"
        if _looks_like_candle_header(first):
            return "csv"
        if len(lines) > 1 and _looks_like_candle_header(_header_fields(lines[1])):
            return "cryptodatadownload"  # a banner line above the header
    return None


def detect_format(path: Path) -> str:
    """The name in ``FORMATS`` for ``path``, by suffix, file-name pattern and a peek at the first lines/keys."""
    path = Path(path)
    _check_source(path, None)
    try:
        fmt = _detect(path)
    except OSError as exc:
        raise _fail(f"cannot read candle file: {exc}", path)
    if fmt is None:
        raise UserError(
            f"cannot tell the candle file format; set data.format to one of {', '.join(FORMATS)}", str(path)
        )
    return fmt
