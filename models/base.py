"""The one interface every family implements, nets and trees alike."""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from callbacks.cancel import CancellationToken
from callbacks.progress import ProgressReporter


@dataclass(frozen=True)
class Task:
    """What the label asks for: ``binary`` / ``multiclass`` (classes 0..n_classes-1) or ``regression``."""

    kind: str = "binary"
    n_classes: int | None = 2
    class_weight: str | None = None  # None or "balanced" (classification only)

    @property
    def is_classification(self) -> bool:
        return self.kind != "regression"


def balanced_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class weights n / (k * count_c) from the training labels (classes absent from train get 1)."""
    counts = np.bincount(y.astype(np.int64), minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1.0)), 1.0)
    return w


def sample_weights(task: Task, y: np.ndarray) -> np.ndarray | None:
    if not task.is_classification or task.class_weight != "balanced":
        return None
    return balanced_weights(y, task.n_classes)[y.astype(np.int64)]


@dataclass
class Rows:
    """Rows of the scaled feature matrix a model sees; sequence models read windows ending at ``rows``."""

    features: np.ndarray  # (n_total, F) float32, the whole table
    rows: np.ndarray  # indices into ``features``
    y: np.ndarray | None = None  # int labels for ``rows``
    # auxiliary targets aligned with ``rows`` ("forward_return", "forward_volatility"; NaN -> 0), for families
    # that learn from more than the label (reward-based, quantile, multitask)
    aux: dict[str, np.ndarray] | None = None
    # per row of ``features`` (the whole table): the id of its run of consecutive candles of one symbol, so a
    # stateful family (a change-point detector) can warm up on the same history at training and at reload
    segments: np.ndarray | None = None

    def tabular(self) -> np.ndarray:
        return self.features[self.rows]


@dataclass
class FitContext:
    run_dir: Path
    seed: int
    reporter: ProgressReporter
    token: CancellationToken | None = None
    callbacks: DictConfig | None = None  # cfg.callbacks
    trainer: DictConfig | None = None  # cfg.trainer
    device: DictConfig | None = None  # cfg.device (resolved accelerator)
    logger: object | None = None  # a Lightning logger or None
    resume_from: str | None = None  # nets: a checkpoint to continue from
    hooks: bool = True  # False only to measure the cost of progress + cancellation
    extra: dict = field(default_factory=dict)


@dataclass
class FitReport:
    metrics: dict  # training_metrics for result.json
    cancelled: bool = False
    checkpoint: str | None = None  # nets: the checkpoint saved when cancelled
    history: dict = field(default_factory=dict)  # curves for plots: name -> list of floats


class CandleModel(ABC):
    input: str = "tabular"  # or "sequence"
    window: int = 1  # candles of context per prediction

    @abstractmethod
    def fit(self, train: Rows, val: Rows, ctx: FitContext) -> FitReport: ...

    task: Task = Task()

    @abstractmethod
    def predict_proba(self, data: Rows) -> np.ndarray:
        """Classification: (n, n_classes) probabilities for ``data.rows``.
        Regression: (n, 1) predicted values (the one method keeps every caller family-agnostic)."""

    @abstractmethod
    def save(self, directory: Path) -> None: ...

    @classmethod
    @abstractmethod
    def load(cls, directory: Path) -> "CandleModel": ...

    @abstractmethod
    def n_parameters(self) -> int: ...

    def feature_importance(self, names: list[str]) -> dict | None:
        """Native importance where the family has one; None means 'not measured'."""
        return None
