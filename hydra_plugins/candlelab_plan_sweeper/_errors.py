"""The plan sweeper's outcome for the CLI; importable without torch (``trainer.cli`` maps it to exit code 4).

Private name on purpose: Hydra's plugin scanner re-executes every public module of ``hydra_plugins`` even when
it is already imported, which would define a second ``PlanIncomplete`` class that ``except`` clauses holding the
first one never catch; it skips modules whose name starts with one underscore."""
from pathlib import Path


class PlanIncomplete(Exception):
    """Some plan jobs failed, were cancelled or never ran; ``plan_summary.json`` says which."""

    def __init__(self, incomplete: int, total: int, summary_path: Path):
        super().__init__(f"{incomplete} of {total} plan jobs did not complete ({summary_path})")
        self.incomplete = incomplete
        self.total = total
        self.summary_path = Path(summary_path)

    def line(self) -> str:
        return f"error: {self}"
