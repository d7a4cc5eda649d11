"""Progress every N boosting rounds and cancellation checked every round, through each tree library's
own callback API: LightGBM (raise to stop), XGBoost (TrainingCallback returns True), CatBoost
(after_iteration returns False)."""

import lightgbm as lgb

from callbacks.cancel import CancellationToken
from callbacks.progress import ProgressReporter


class _RoundHooks:
    def __init__(self, reporter: ProgressReporter, token: CancellationToken | None, every_n: int, total: int):
        self.reporter = reporter
        self.token = token
        self.every = max(1, int(every_n))
        self.total = total
        self.cancelled_at: int | None = None

    def _round(self, iteration: int, metrics) -> bool:
        """Report if due (``metrics`` is a callable, evaluated only then); True when the fit must stop."""
        if iteration % self.every == 0:
            self.reporter.emit(
                "fit",
                kind="step",
                iteration=iteration,
                iterations=self.total,
                metrics=metrics(),
                eta=self.reporter.eta(iteration, self.total),
            )
        if self.token is not None and self.token.cancelled:
            self.cancelled_at = iteration
            return True
        return False


class LightGBMHooks(_RoundHooks):
    order = 40  # after LightGBM's own early stopping (30)

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        def metrics():
            return {f"{data}/{name}": float(value) for data, name, value, _ in env.evaluation_result_list}

        if self._round(env.iteration + 1, metrics):
            raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list)


def xgboost_hooks(reporter: ProgressReporter, token: CancellationToken | None, every_n: int, total: int):
    import xgboost as xgb

    class XGBoostHooks(_RoundHooks, xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch: int, evals_log: dict) -> bool:
            def metrics():
                return {
                    f"{data}/{name}": float(values[-1]) for data, d in evals_log.items() for name, values in d.items()
                }

            return self._round(epoch + 1, metrics)

    return XGBoostHooks(reporter, token, every_n, total)


class CatBoostHooks(_RoundHooks):
    def after_iteration(self, info) -> bool:
        def metrics():
            return {
                f"{'train' if data == 'learn' else 'val'}/{name}": float(values[-1])
                for data, d in info.metrics.items()
                for name, values in d.items()
            }

        return not self._round(int(info.iteration), metrics)  # CatBoost: False = stop
