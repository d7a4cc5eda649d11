"""The exceptions a user sees as one line: ``UserError`` for mistakes a user can fix (bad config value, bad
data, missing file; exit code 2) and ``PlanIncomplete`` for a training plan whose jobs did not all complete."""

from pathlib import Path

# An error quotes values from the user's files and config; a 150 MB cell must not become a 150 MB line.
QUOTE_HEAD = 200
QUOTE_TAIL = 80


def shorten(text: str, head: int = QUOTE_HEAD, tail: int = QUOTE_TAIL) -> str:
    """``text`` on one line, kept whole up to head + tail characters; longer, its middle is cut and the cut is counted
    (the tail stays because it usually says where: 'at row 12')."""
    text = " ".join(str(text).splitlines())  # one line, whatever a quoted cell held
    if len(text) <= head + tail + 40:
        return text
    return f"{text[:head]}...[{len(text) - head - tail} characters cut]...{text[-tail:]}"


class UserError(Exception):
    """Rendered by the CLI as ``error: <what> (<where>)`` with exit code 2."""

    def __init__(self, what: str, where: str):
        what, where = shorten(what), shorten(where)
        super().__init__(f"{what} ({where})")
        self.what = what
        self.where = where

    def __reduce__(self):
        # parallel launchers (joblib, submitit) pickle a failed job's exception back to the sweep process
        return type(self), (self.what, self.where)

    def line(self) -> str:
        return f"error: {self.what} ({self.where})"


class PlanIncomplete(Exception):
    """Some plan jobs failed, were cancelled or never ran; ``plan_summary.json`` says which (exit code 4)."""

    def __init__(self, incomplete: int, total: int, summary_path: Path):
        super().__init__(f"{incomplete} of {total} plan jobs did not complete ({summary_path})")
        self.incomplete = incomplete
        self.total = total
        self.summary_path = Path(summary_path)

    def line(self) -> str:
        return f"error: {self}"
