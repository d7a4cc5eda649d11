"""Payloads that leave a marker file if anything runs them, a model card's reader and writer, and the
one-error-line check for a refused command."""

import json
import os
import subprocess
from pathlib import Path

PAYLOAD = """
from pathlib import Path
Path({marker!r}).write_text("ran at import")

class Payload:
    @classmethod
    def load(cls, directory):
        Path({marker!r}).write_text("ran in load")

    @classmethod
    def from_config(cls, *args, **kwargs):
        Path({marker!r}).write_text("ran in from_config")
"""


class Touch:
    """Unpickling this runs a shell command that creates the marker."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def read_card(folder: Path) -> dict:
    return json.loads((folder / "model_card.json").read_text())


def write_card(folder: Path, card: dict) -> None:
    (folder / "model_card.json").write_text(json.dumps(card))


def assert_one_error_line(proc: subprocess.CompletedProcess, match: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0]
    assert match in errors[0], errors[0]
