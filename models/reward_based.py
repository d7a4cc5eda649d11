"""Reward-based policy: a small torch network maps a row's features to a position in [-1, 1] (tanh) and is
trained to maximise a differentiable trading reward on the row's forward return - not a classification
loss. Early stopping on the validation reward; the best epoch's weights are kept; saved as safetensors.

Objectives (``objective``), with r the forward return and Δ the position change between consecutive rows:
  pnl:    mean(position * r) - cost * mean(|Δposition|) - risk_aversion / 2 * mean((position * r)^2)
  sharpe: mean(net) / std(net), net = position * r - cost * |Δposition|
Returns and cost enter the loss divided by the training returns' standard deviation, so ``risk_aversion``
and the learning rate do not depend on the timeframe; the loss is exactly the negative reward in those units.
Rows are taken in the order given (the pipeline sorts them by symbol, then time); a training batch is a
contiguous block of rows so Δposition is a real position change (once per symbol it spans a boundary).

Output for the binary direction task: P(up) = (position + 1) / 2. It is a confidence derived from the
position the policy would hold, not a calibrated probability.
"""

import json
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file
from torch import nn

from callbacks.steps import StepHooks
from core.errors import UserError
from models.base import CandleModel, FitContext, FitReport, Rows, Task

log = logging.getLogger(__name__)

_WEIGHTS = "model.safetensors"
_META = "reward_based.json"
_TASKS = ("binary",)
_OBJECTIVES = ("pnl", "sharpe")


def trading_reward(
    position: torch.Tensor,
    forward_return: torch.Tensor,
    cost: float,
    objective: str = "pnl",
    risk_aversion: float = 0.0,
) -> torch.Tensor:
    """The differentiable reward of holding ``position`` over consecutive rows (see the module docstring)."""
    pnl = position * forward_return
    change = (position[1:] - position[:-1]).abs()
    if objective == "sharpe":
        net = torch.cat([pnl[:1], pnl[1:] - cost * change])
        return net.mean() / (net.std(unbiased=False) + 1e-8)
    turnover = change.mean() if len(change) else pnl.new_zeros(())
    return pnl.mean() - cost * turnover - 0.5 * risk_aversion * (pnl**2).mean()


class PolicyNet(nn.Module):
    def __init__(self, n_features: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        body, width = [], n_features
        for _ in range(layers):
            body += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        self.body = nn.Sequential(*body)
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(self.body(x)))[:, 0]  # the position in [-1, 1]


def _forward_return(data: Rows, where: str) -> np.ndarray:
    aux = getattr(data, "aux", None)
    if not aux or "forward_return" not in aux:
        raise UserError(
            f"reward_based needs the forward return of every {where} row (Rows.aux['forward_return']) and got none",
            "model=reward_based",
        )
    r = np.asarray(aux["forward_return"], dtype=np.float64)
    if len(r) != len(data.rows):
        raise UserError(f"forward_return has {len(r)} values for {len(data.rows)} {where} rows", "Rows.aux")
    return np.nan_to_num(r)


class RewardBasedModel(CandleModel):
    input = "tabular"

    def __init__(self, arch: dict, opts: dict, task: Task = Task()):
        self.arch = dict(arch)
        self.opts = dict(opts)
        self.task = task
        with torch.random.fork_rng(devices=[]):  # initial weights from the run's seed, global RNG untouched
            torch.manual_seed(int(opts["seed"]))
            self.net = PolicyNet(arch["n_features"], arch["hidden"], arch["layers"], arch["dropout"])
        self.return_scale = 1.0  # std of the training forward returns (set by fit)

    @classmethod
    def from_config(
        cls, cfg: DictConfig, n_features: int, seed: int, num_threads: int, task: Task = Task()
    ) -> "RewardBasedModel":
        if task.kind not in _TASKS:
            raise UserError(f"{cfg.name} supports {', '.join(_TASKS)}, not {task.kind}", "target.type")
        if cfg.objective not in _OBJECTIVES:
            raise UserError(
                f"model.objective must be one of {', '.join(_OBJECTIVES)}, got {cfg.objective!r}", "model.objective"
            )
        arch = {
            "n_features": n_features,
            "hidden": int(cfg.hidden),
            "layers": int(cfg.layers),
            "dropout": float(cfg.dropout),
        }
        opts = {
            "objective": str(cfg.objective),
            "cost": float(cfg.cost),
            "risk_aversion": float(cfg.risk_aversion),
            "lr": float(cfg.lr),
            "weight_decay": float(cfg.weight_decay),
            "batch_size": int(cfg.batch_size),
            "max_epochs": int(cfg.max_epochs),
            "patience": int(cfg.patience),
            "seed": int(seed),
        }
        return cls(arch, opts, task)

    def loss(self, position: torch.Tensor, forward_return: torch.Tensor) -> torch.Tensor:
        """The training loss: the negative reward, returns and cost in units of the train return std."""
        s = self.return_scale
        return -trading_reward(
            position, forward_return / s, self.opts["cost"] / s, self.opts["objective"], self.opts["risk_aversion"]
        )

    @torch.no_grad()
    def positions(self, data: Rows) -> np.ndarray:
        self.net.eval()
        return self.net(torch.from_numpy(np.ascontiguousarray(data.tabular(), dtype=np.float32))).double().numpy()

    def _evaluate(self, data: Rows, r: np.ndarray, prefix: str) -> dict:
        pos = self.positions(data)
        loss = float(self.loss(torch.from_numpy(pos), torch.from_numpy(r)))
        change = np.abs(np.diff(pos))
        net = pos * r - self.opts["cost"] * np.concatenate([[0.0], change])
        out = {
            f"{prefix}/loss": loss,
            f"{prefix}/reward": float(np.mean(net)),
            f"{prefix}/turnover": float(np.mean(change)) if len(change) else 0.0,
        }
        if data.y is not None:
            out[f"{prefix}/acc"] = float(np.mean((pos > 0).astype(np.int64) == data.y))
        return out

    def fit(self, train: Rows, val: Rows, ctx: FitContext) -> FitReport:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a net this small is fastest on one thread: more only add synchronisation
        try:
            with torch.random.fork_rng(devices=[]):  # dropout masks from the run's seed, global RNG untouched
                torch.manual_seed(self.opts["seed"])
                return self._fit(train, val, ctx)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, train: Rows, val: Rows, ctx: FitContext) -> FitReport:
        r_train, r_val = _forward_return(train, "train"), _forward_return(val, "val")
        self.return_scale = float(np.std(r_train)) or 1.0
        o = self.opts
        X = torch.from_numpy(np.ascontiguousarray(train.tabular(), dtype=np.float32))
        R = torch.from_numpy(r_train)
        starts = np.arange(0, len(X), o["batch_size"])
        hooks = StepHooks(ctx, o["max_epochs"] * len(starts))
        order_rng = np.random.default_rng(o["seed"])
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=o["lr"], weight_decay=o["weight_decay"])
        history: dict[str, list[float]] = {"train/loss": [], "val/loss": [], "val/acc": [], "val/turnover": []}
        best = {"loss": np.inf, "epoch": None, "state": None}
        iteration, epochs_run, since_best = 0, 0, 0
        for epoch in range(o["max_epochs"]):
            self.net.train()
            total, seen = 0.0, 0
            for b, start in enumerate(order_rng.permutation(starts)):  # contiguous blocks, shuffled order
                x, r = X[start : start + o["batch_size"]], R[start : start + o["batch_size"]]
                loss = self.loss(self.net(x).double(), r)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                iteration += 1
                total, seen = total + loss.item() * len(x), seen + len(x)
                if hooks.step(
                    iteration,
                    lambda: {"train/loss": loss.item()},
                    epoch=epoch,
                    epochs=o["max_epochs"],
                    batch=b + 1,
                    batches=len(starts),
                ):
                    break
            if hooks.cancelled_at is not None:
                break
            epochs_run += 1
            scores = self._evaluate(val, r_val, "val")
            history["train/loss"].append(total / max(seen, 1))
            for key in ("val/loss", "val/acc", "val/turnover"):
                history[key].append(scores[key])
            if ctx.hooks:
                ctx.reporter.emit(
                    "fit",
                    kind="epoch",
                    epoch=epoch,
                    epochs=o["max_epochs"],
                    iteration=iteration,
                    iterations=hooks.total,
                    metrics={k: round(v, 6) for k, v in scores.items()},
                    eta=ctx.reporter.eta(iteration, hooks.total),
                )
            if scores["val/loss"] < best["loss"]:
                state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}  # a copy, not a view
                best.update(loss=scores["val/loss"], epoch=epoch, state=state)
                since_best = 0
            else:
                since_best += 1
                if since_best >= o["patience"]:
                    break
        if best["state"] is not None:  # the best epoch's weights; a fit cancelled in epoch 0 keeps its last step
            self.net.load_state_dict(best["state"])
        log.info("reward_based: best epoch %s of %d (val loss %.5f)", best["epoch"], epochs_run, best["loss"])
        metrics = {
            "best_epoch": best["epoch"],
            "epochs_run": epochs_run,
            "return_scale": self.return_scale,
            **self._evaluate(train, r_train, "train"),
            **self._evaluate(val, r_val, "val"),
        }
        if hooks.cancelled_at is not None:
            metrics["cancelled_at"] = {"iteration": hooks.cancelled_at}
        return FitReport(metrics=metrics, cancelled=hooks.cancelled_at is not None, history=history)

    def predict_proba(self, data: Rows) -> np.ndarray:
        up = (self.positions(data) + 1.0) / 2.0  # a confidence, not a calibrated probability
        return np.column_stack([1.0 - up, up])

    def save(self, directory: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(directory / _WEIGHTS))
        (directory / _META).write_text(
            json.dumps(
                {"arch": self.arch, "opts": self.opts, "task": vars(self.task), "return_scale": self.return_scale}
            )
        )

    @classmethod
    def load(cls, directory: Path) -> "RewardBasedModel":
        meta = json.loads((directory / _META).read_text())
        model = cls(meta["arch"], meta["opts"], Task(**meta["task"]))
        model.net.load_state_dict(load_file(str(directory / _WEIGHTS)))
        model.return_scale = meta["return_scale"]
        model.net.eval()
        return model

    def n_parameters(self) -> int:
        return int(sum(p.numel() for p in self.net.parameters()))
