"""Shared by families that fit other families inside them (ensemble, meta_learning): one progress count
across the member fits, and the log loss they select on."""

import numpy as np

from models.base import FitContext

_EPS = 1e-7


class MemberReporter:
    """A ProgressReporter view for one member of a sequence of fits: its boosting rounds continue the
    count of the members before it (``offset``), over the total of all members, so progress and
    ``cancelled_at`` read as one fit."""

    def __init__(self, reporter, offset: int, total: int):
        self.reporter, self.offset, self.total = reporter, offset, total

    def emit(self, phase: str, kind: str = "phase", **fields) -> None:
        if kind == "step" and fields.get("iteration") is not None:
            fields["iteration"] += self.offset
            fields["iterations"] = self.total
            fields["eta"] = self.reporter.eta(fields["iteration"], self.total)
        self.reporter.emit(phase, kind=kind, **fields)

    def eta(self, done: int, total: int | None) -> float | None:
        return self.reporter.eta(done + self.offset, self.total)


def member_context(ctx: FitContext, offset: int, total: int) -> FitContext:
    return FitContext(
        run_dir=ctx.run_dir,
        seed=ctx.seed,
        reporter=MemberReporter(ctx.reporter, offset, total),
        token=ctx.token,
        callbacks=ctx.callbacks,
        trainer=ctx.trainer,
        device=ctx.device,
        logger=None,
        resume_from=None,
        hooks=ctx.hooks,
        extra=ctx.extra,
    )


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y.astype(np.int64)], _EPS, 1.0))))
