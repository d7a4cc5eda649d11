"""Sequence windows as index arithmetic over the feature matrix: batches are gathered on demand,
never materialised as an N x window x F copy."""

import numpy as np
import torch


class WindowBatches:
    """Iterable of (x[B, window, F], y[B]) batches whose windows end at ``ends`` rows of ``features``.

    The caller guarantees each window lies inside one run of consecutive candles of one symbol
    (see ``FeatureTable.run_position``).
    """

    def __init__(
        self,
        features: torch.Tensor,
        ends: np.ndarray,
        labels: np.ndarray | None,
        window: int,
        batch_size: int,
        shuffle_seed: int | None = None,
    ):
        self.features = features
        self.ends = torch.as_tensor(np.asarray(ends, dtype=np.int64))
        # int64 class ids or float32 regression targets, as the caller passes them
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels))
        self.offsets = torch.arange(-window + 1, 1, dtype=torch.int64)
        self.batch_size = batch_size
        self.shuffle_seed = shuffle_seed
        self.epoch = 0
        self.epoch_source = None  # a callable giving the trainer's epoch, so a resumed fit shuffles alike
        # a callable giving (rank, world size) of a data-parallel fit: each rank then takes every world-th
        # window of the epoch's order, all ranks the same count (a rank with one batch more would hang DDP)
        self.rank_source = None
        # a callable giving the device the fit runs on (known only inside it): a CUDA device while the matrix
        # stays in host memory makes each batch gathered into pinned memory and copied asynchronously
        self.device_source = None
        # a callable giving how many batches of the current epoch the fit has trained on: the loop fetches a
        # batch ahead, so the count of batches handed out overstates it (None: that count is taken)
        self.progress_source = None
        self._served = 0  # batches handed out in the current epoch
        self._serving_epoch = 0  # the epoch whose order is being served
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches done) from a mid-epoch checkpoint

    def to(self, device: str | torch.device, features: torch.Tensor | None = None) -> "WindowBatches":
        """Keep the matrix, the window ends and the labels on ``device`` so every batch is gathered there
        (one indexing op per batch, nothing copied per sample). ``features``: the matrix already moved, when
        several batch streams share one."""
        self.features = features if features is not None else self.features.to(device)
        self.ends = self.ends.to(device)
        self.offsets = self.offsets.to(device)
        self.labels = None if self.labels is None else self.labels.to(device)
        return self

    def _rank(self) -> tuple[int, int]:
        return self.rank_source() if self.rank_source is not None else (0, 1)

    def __len__(self) -> int:
        rank, world = self._rank()
        return (len(self.ends) // world + self.batch_size - 1) // self.batch_size

    def state_dict(self) -> dict:
        """Where the training loop is in this epoch's batch order (Lightning's resumable-loader protocol):
        saved in every checkpoint, so a fit resumed mid-epoch skips the batches already trained on."""
        done = self.progress_source() if self.progress_source is not None else self._served
        return {"epoch": int(self._serving_epoch), "batches_done": int(done)}

    def load_state_dict(self, state: dict) -> None:
        self._resume_at = (int(state["epoch"]), int(state["batches_done"]))

    def __iter__(self):
        epoch = self.epoch_source() if self.epoch_source is not None else self.epoch
        order = torch.arange(len(self.ends))
        if self.shuffle_seed is not None:  # minibatch order within the training segment only
            g = torch.Generator().manual_seed(self.shuffle_seed + epoch)
            order = torch.randperm(len(self.ends), generator=g)  # the same order on every rank
            self.epoch += 1
        rank, world = self._rank()
        if world > 1:  # drops at most world - 1 windows an epoch (others next epoch, in a new order)
            order = order[rank::world][: len(self.ends) // world]
        skip = 0
        if self._resume_at is not None:  # only the epoch the checkpoint stopped in is continued part-way
            if self._resume_at[0] == epoch:
                skip = max(0, self._resume_at[1])
            self._resume_at = None
        self._serving_epoch, self._served = epoch, skip
        target = self.device_source() if self.device_source is not None else None
        pinned = target is not None and torch.device(target).type == "cuda" and self.features.device.type == "cpu"
        for start in range(skip * self.batch_size, len(order), self.batch_size):
            self._served += 1
            pick = order[start : start + self.batch_size].to(self.ends.device)
            x = gather(self.features, self.ends[pick, None] + self.offsets, pinned)
            y = None if self.labels is None else self.labels[pick]
            if pinned:  # the copy overlaps the host's next gather; the pinned block is reused only after it
                x = x.to(target, non_blocking=True)
                y = None if y is None else y.pin_memory().to(target, non_blocking=True)
            yield (x,) if y is None else (x, y)


def gather(features: torch.Tensor, index: torch.Tensor, pinned: bool = False) -> torch.Tensor:
    """``features[index]`` for an (B, W) window index: one index_select into a fresh (B, W, F) tensor, in
    page-locked host memory when ``pinned`` (what an asynchronous host-to-GPU copy needs)."""
    n_features = features.shape[1]
    out = torch.empty((*index.shape, n_features), dtype=features.dtype, device=features.device, pin_memory=pinned)
    torch.index_select(features, 0, index.reshape(-1), out=out.view(-1, n_features))
    return out
