"""The one exception type for mistakes a user can fix (bad config value, bad data, missing file)."""


class UserError(Exception):
    """Rendered by the CLI as ``error: <what> (<where>)`` with exit code 2."""

    def __init__(self, what: str, where: str):
        super().__init__(f"{what} ({where})")
        self.what = what
        self.where = where

    def __reduce__(self):
        # parallel launchers (joblib, submitit) pickle a failed job's exception back to the sweep process
        return type(self), (self.what, self.where)

    def line(self) -> str:
        return f"error: {self.what} ({self.where})"
