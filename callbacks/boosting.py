"""LightGBM callback: progress every N boosting rounds and cancellation checked every round."""
import lightgbm as lgb

from callbacks.cancel import CancellationToken
from callbacks.progress import ProgressReporter


class LightGBMHooks:
    order = 40  # after LightGBM's own early stopping (30)

    def __init__(self, reporter: ProgressReporter, token: CancellationToken | None, every_n: int = 10):
        self.reporter = reporter
        self.token = token
        self.every = max(1, int(every_n))
        self.cancelled_at: int | None = None

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        it = env.iteration + 1
        if it % self.every == 0:
            metrics = {f"val/{name}": float(value) for _, name, value, _ in env.evaluation_result_list}
            self.reporter.emit("fit", iteration=it, iterations=env.end_iteration, metrics=metrics,
                               eta=self.reporter.eta(it, env.end_iteration))
        if self.token is not None and self.token.cancelled:
            self.cancelled_at = it
            raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list)
