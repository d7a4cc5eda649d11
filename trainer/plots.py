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
    for name, values in series.items():
        ax.plot(range(1, len(values) + 1), values, label=name)
    ax.set(xlabel="epoch / boosting round", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
