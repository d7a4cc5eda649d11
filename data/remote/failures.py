"""How a remote provider's failures read: a missing optional package names the extra to install, and an
exception's message is kept to one line of bounded length inside the error that carries it.
"""

from __future__ import annotations

import importlib

from core.errors import UserError

_MAX_CAUSE = 300  # characters of an exception message kept in an error line


def _require(module: str, provider: str):
    """Import an optional package, or explain how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(
            f"the {provider} provider needs the optional package {module}: pip install 'candlelab[{provider}]'",
            f"data.provider={provider}",
        ) from exc


def _cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= _MAX_CAUSE else text[:_MAX_CAUSE] + "..."
