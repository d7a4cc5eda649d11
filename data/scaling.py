"""Standardisation whose statistics come from the training rows only and travel with the model."""

from dataclasses import dataclass

import numpy as np


@dataclass
class Standardizer:
    names: list[str]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X_train: np.ndarray, names: list[str]) -> "Standardizer":
        mean = X_train.mean(axis=0)
        std = X_train.std(axis=0)
        return cls(names=list(names), mean=mean, std=np.where(std > 0, std, 1.0))

    def transform(self, X: np.ndarray, chunk_rows: int = 1 << 16) -> np.ndarray:
        """float32 standardised rows, computed in float64 a block of rows at a time: no float64 copy of the
        whole matrix (each value as ((x - mean) / std) cast to float32, the same as in one piece)."""
        out = np.empty(X.shape, dtype=np.float32)
        for start in range(0, len(X), chunk_rows):
            block = X[start : start + chunk_rows]
            out[start : start + chunk_rows] = (block - self.mean) / self.std
        return out

    def to_dict(self) -> dict:
        return {"names": self.names, "mean": self.mean.tolist(), "std": self.std.tolist(), "fitted_on": "train"}

    @classmethod
    def from_dict(cls, d: dict) -> "Standardizer":
        return cls(names=list(d["names"]), mean=np.asarray(d["mean"]), std=np.asarray(d["std"]))
