"""Progress and cancellation for fit loops a family writes itself (not Lightning, not a tree library)."""

from typing import Callable


class StepHooks:
    """Progress and cancellation for a loop a family writes itself: a step event every ``every_n_batches``
    iterations (skipped otherwise, never waited for), the token's in-memory flag read every iteration and
    its stop file polled every ``check_every_n_batches``. Inert when ``ctx.hooks`` is False."""

    def __init__(self, ctx, total: int | None):  # ctx: models.base.FitContext
        cbs = ctx.callbacks
        self.enabled = bool(ctx.hooks)
        self.reporter = ctx.reporter
        self.token = ctx.token
        self.every = max(1, int(cbs.progress.every_n_batches)) if cbs is not None else 10
        self.check_every = max(1, int(cbs.cancel.check_every_n_batches)) if cbs is not None else 5
        self.total = total
        self.cancelled_at: int | None = None

    def step(self, iteration: int, metrics: Callable[[], dict], **fields) -> bool:
        """Report if due (``metrics`` is evaluated only then); True when the loop must stop."""
        if not self.enabled:
            return False
        if iteration % self.every == 0:
            self.reporter.emit(
                "fit",
                kind="step",
                iteration=iteration,
                iterations=self.total,
                metrics=metrics(),
                eta=self.reporter.eta(iteration, self.total),
                **fields,
            )
        token = self.token
        if token is not None and (token.is_set() or (iteration % self.check_every == 0 and token.cancelled)):
            self.cancelled_at = iteration
            return True
        return False
