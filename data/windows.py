"""Sequence windows as index arithmetic over the feature matrix: batches are gathered on demand,
never materialised as an N x window x F copy."""
import numpy as np
import torch


class WindowBatches:
    """Iterable of (x[B, window, F], y[B]) batches whose windows end at ``ends`` rows of ``features``.

    The caller guarantees each window lies inside one run of consecutive candles of one symbol
    (see ``FeatureTable.run_position``).
    """

    def __init__(self, features: torch.Tensor, ends: np.ndarray, labels: np.ndarray | None, window: int,
                 batch_size: int, shuffle_seed: int | None = None):
        self.features = features
        self.ends = torch.as_tensor(np.asarray(ends, dtype=np.int64))
        # int64 class ids or float32 regression targets, as the caller passes them
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels))
        self.offsets = torch.arange(-window + 1, 1, dtype=torch.int64)
        self.batch_size = batch_size
        self.shuffle_seed = shuffle_seed
        self.epoch = 0
        self.epoch_source = None   # a callable giving the trainer's epoch, so a resumed fit shuffles alike

    def to(self, device: str | torch.device, features: torch.Tensor | None = None) -> "WindowBatches":
        """Keep the matrix, the window ends and the labels on ``device`` so every batch is gathered there
        (one indexing op per batch, nothing copied per sample). ``features``: the matrix already moved, when
        several batch streams share one."""
        self.features = features if features is not None else self.features.to(device)
        self.ends = self.ends.to(device)
        self.offsets = self.offsets.to(device)
        self.labels = None if self.labels is None else self.labels.to(device)
        return self

    def __len__(self) -> int:
        return (len(self.ends) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        order = torch.arange(len(self.ends))
        if self.shuffle_seed is not None:  # minibatch order within the training segment only
            epoch = self.epoch_source() if self.epoch_source is not None else self.epoch
            g = torch.Generator().manual_seed(self.shuffle_seed + epoch)
            order = torch.randperm(len(self.ends), generator=g)
            self.epoch += 1
        for start in range(0, len(order), self.batch_size):
            pick = order[start:start + self.batch_size].to(self.ends.device)
            x = self.features[self.ends[pick, None] + self.offsets]
            if self.labels is None:
                yield (x,)
            else:
                yield x, self.labels[pick]
