"""Where progress events go: the log, a live console bar, a JSONL file, W&B, a user callable."""

import json
import os
import sys
from pathlib import Path

from callbacks.progress import ProgressEvent, Sink, log_sink


def console_is_interactive() -> bool:
    """A live bar only for a person at a terminal: never under CI=true or when stderr is not a TTY."""
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() not in ("1", "true", "yes")


class JsonlSink:
    """One JSON object per event in ``path`` (line-buffered, so another process can tail it)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "a", buffering=1)

    def __call__(self, event: ProgressEvent) -> None:
        self._file.write(json.dumps(event.as_dict(), default=str) + "\n")

    def close(self) -> None:
        self._file.close()


class ConsoleBar:
    """A rich progress bar over the fit phase; phase changes and epoch ends still go to the log."""

    def __init__(self):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]{task.fields[phase]}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            transient=True,
        )
        self._task = None

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "step" and event.iterations:
            if self._task is None:
                self._progress.start()
                self._task = self._progress.add_task(event.phase, total=event.iterations, phase=event.phase, info="")
            info = " ".join(f"{k}={v:.4f}" for k, v in event.metrics.items() if isinstance(v, float))
            self._progress.update(self._task, completed=event.iteration, total=event.iterations, info=info)
        elif event.kind == "phase":  # a new phase (the control's fit included) gets a bar of its own
            self.close()

    def close(self) -> None:
        if self._task is not None:
            self._progress.stop()
            self._task = None


class WandbSink:
    """Throttled fit metrics and phase timings into the W&B run of a Lightning WandbLogger."""

    def __init__(self, logger):
        self.logger = logger

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "phase":
            self.logger.experiment.log({"progress/phase": event.phase, "progress/elapsed": event.elapsed})
        elif event.metrics:
            numeric = {f"progress/{k}": v for k, v in event.metrics.items() if isinstance(v, (int, float))}
            if numeric:
                self.logger.experiment.log({**numeric, "progress/iteration": event.iteration or 0})


def build_sinks(run_dir: Path, logger=None, user: Sink | None = None, console: bool | None = None) -> list[Sink]:
    sinks: list[Sink] = [log_sink, JsonlSink(run_dir / "progress.jsonl")]
    if console if console is not None else console_is_interactive():
        sinks.append(ConsoleBar())
    if logger is not None and type(logger).__name__ == "WandbLogger":
        sinks.append(WandbSink(logger))
    if user is not None:
        sinks.append(user)
    return sinks
