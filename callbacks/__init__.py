"""Progress and cancellation shared by Lightning nets and tree libraries."""

from callbacks.cancel import CancellationToken, Cancelled
from callbacks.progress import ProgressEvent, ProgressReporter

__all__ = ["CancellationToken", "Cancelled", "ProgressEvent", "ProgressReporter"]
