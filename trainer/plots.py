"""Run plots: reliability diagram and training curves (PNG, headless)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def reliability_plot(curve: dict, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    pts = [(p, o) for p, o, c in zip(curve["mean_predicted"], curve["observed"], curve["count"]) if c]
    if pts:
        ax.plot(*zip(*pts), "o-", label="model")
    ax.set(xlabel="predicted P(up)", ylabel="observed up-rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def curves_plot(history: dict, path: Path, title: str) -> Path | None:
    series = {k: v for k, v in history.items() if v}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    rates = {k: series.pop(k) for k in [k for k in series if k.endswith("/lr")]}
    for name, values in series.items():
        ax.plot(range(1, len(values) + 1), values, label=name)
    ax.set(xlabel="epoch / boosting round", title=title)
    ax.legend()
    if rates:  # learning rates are orders of magnitude below losses: their own axis
        lr_ax = ax.twinx()
        for name, values in rates.items():
            lr_ax.plot(range(1, len(values) + 1), values, label=name, color="grey", linestyle=":")
        lr_ax.set(ylabel="learning rate")
        lr_ax.legend(loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def confusion_plot(matrix: list[list[int]], labels: list[str], path: Path, title: str) -> Path:
    """Rows: true class; columns: predicted class; cells: counts and the row share."""
    import numpy as np

    m = np.asarray(matrix, dtype=np.float64)
    share = m / np.maximum(m.sum(1, keepdims=True), 1.0)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(labels), 1.2 + 1.1 * len(labels)))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                f"{int(m[i, j])}\n{share[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.6 else "black",
                fontsize=8,
            )
    ax.set(
        xticks=range(len(labels)),
        yticks=range(len(labels)),
        xticklabels=labels,
        yticklabels=labels,
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def equity_plot(equity, path: Path, title: str) -> Path | None:
    """Equity curve (after costs) and its drawdown."""
    if equity is None or len(equity) == 0:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 4.5), sharex=True, height_ratios=[3, 1])
    top.plot(equity["timestamp"], equity["equity"], lw=1)
    top.axhline(1.0, color="grey", ls="--", lw=0.8)
    top.set(ylabel="equity", title=title)
    bottom.fill_between(equity["timestamp"], -equity["drawdown"], 0, color="tab:red", alpha=0.4)
    bottom.set(ylabel="drawdown")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def importance_plot(importance: dict | None, path: Path, title: str, top: int = 20) -> Path | None:
    if not importance:
        return None
    items = sorted(importance.items(), key=lambda kv: abs(kv[1]), reverse=True)[:top][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set(xlabel="importance", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
