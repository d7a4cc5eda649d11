"""Opening a candle source safely: regular files only (or a directory of Lean zips), none larger than
``max_bytes``, decompressed by suffix (.gz .bz2 .xz, a one-member .zip) through a stream that stops at
``max_bytes`` however well the file compresses. ``_fail`` is the one-line refusal every reader raises, naming
the file.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import zipfile
from pathlib import Path

from core.errors import UserError

# The most a reader takes from one source: a file's size, and what a compressed file or zip member expands to.
# Candles are held in memory whole; a larger file is refused up front, never read until memory runs out.
DEFAULT_MAX_BYTES = 4_000_000_000


def _fail(what: str, path: Path) -> UserError:
    return UserError(what.splitlines()[0] if what else "unreadable candle file", str(path))


class _Capped(io.RawIOBase):
    """A byte stream that refuses to yield more than ``max_bytes`` (a decompression bomb stops here)."""

    def __init__(self, raw, max_bytes: int, path: Path):
        self._raw, self._max, self._path, self._taken = raw, max_bytes, path, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._raw.readinto(buffer)
        self._taken += n or 0
        if self._taken > self._max:
            raise _fail(
                f"candle file expands to more than data.max_bytes ({_size(self._max)}); raise "
                f"data.max_bytes to read it",
                self._path,
            )
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n:,} bytes"


def _open_binary(path: Path, max_bytes: int = DEFAULT_MAX_BYTES):
    """The file's bytes, decompressed by suffix (.gz .bz2 .xz, a one-member .zip), capped at ``max_bytes``."""
    suffix = path.suffix.lower()
    if suffix == ".zip":
        zf = zipfile.ZipFile(path)
        members = [i for i in zf.infolist() if not i.is_dir()]
        if len(members) != 1:
            zf.close()
            raise _fail(f"a zipped candle file must hold exactly one file, holds {len(members)}", path)
        if members[0].file_size > max_bytes:
            zf.close()
            raise _fail(
                f"zip member {members[0].filename!r} is {_size(members[0].file_size)}, over data.max_bytes "
                f"({_size(max_bytes)}); raise data.max_bytes to read it",
                path,
            )
        raw = zf.open(members[0])
        zf.close()  # the member keeps the archive open until it is closed itself
    else:
        opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(suffix)
        raw = opener(path, "rb") if opener else open(path, "rb", buffering=0)
    return io.BufferedReader(_Capped(raw, max_bytes, path))


def _open_text(path: Path, max_bytes: int = DEFAULT_MAX_BYTES):
    return io.TextIOWrapper(_open_binary(path, max_bytes), encoding="utf-8-sig", errors="replace")


def _check_source(path: Path, max_bytes: int | None) -> None:
    """Regular files (or a directory of Lean zips) only: a device like /dev/zero never ends, and opening a FIFO
    waits for a writer. A file over ``max_bytes`` is refused before it is opened."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError("candle file not found", str(path)) from None
    except OSError as exc:
        raise _fail(f"cannot read candle file: {exc.strerror or exc}", path) from None
    if stat.S_ISDIR(st.st_mode):
        return
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a character device"
            if stat.S_ISCHR(st.st_mode)
            else "a block device"
            if stat.S_ISBLK(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "not a regular file"
        )
        raise UserError(f"candle source is {kind}: candles are read from regular files only", str(path))
    if max_bytes is not None and st.st_size > max_bytes:
        raise UserError(
            f"candle file is {_size(st.st_size)}, over data.max_bytes ({_size(max_bytes)}); raise "
            f"data.max_bytes to read it",
            str(path),
        )


def _peek(path: Path, n_bytes: int = 8192) -> str:
    with _open_text(path) as fh:
        return fh.read(n_bytes)
