"""``RunResult``: what one run produced, and the single definition of its ``result.json``.

A completed run fills every field; a run that ended early (cancelled or failed) carries its ``reason`` and
what it reached, and its file leaves out the evaluation keys (``target`` .. ``registry``). Readers of
result.json files (the plan sweeper, tools) go through ``RunResult.read`` and read attributes."""

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from omegaconf import DictConfig

from core.runinfo import config_hash, git_commit, utc_now, write_json_atomic


@dataclass
class RunInfo:
    """Who the run is: identity, seed, when it ran, where its folder is, and (once it completed) how long each
    phase took."""

    run_id: str | None = None
    git_commit: str | None = None
    config_hash: str | None = None
    seed: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    run_dir: str | None = None
    phase_seconds: dict | None = None  # written once the run completed

    @classmethod
    def start(cls, cfg: DictConfig, run_id: str, run_dir: Path) -> "RunInfo":
        return cls(
            run_id=run_id,
            git_commit=git_commit(Path(cfg.paths.root_dir)),
            config_hash=config_hash(cfg),
            seed=cfg.seed,
            started_at=utc_now(),
            run_dir=str(run_dir),
        )

    def finished(self) -> "RunInfo":
        return replace(self, finished_at=utc_now())

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "phase_seconds"}
        if self.phase_seconds is not None:
            out["phase_seconds"] = self.phase_seconds
        return out

    @classmethod
    def from_json(cls, data) -> "RunInfo":
        return cls(**_known(cls, data))


@dataclass
class ModelInfo:
    """The family and where it trained; ``n_parameters`` once a model was kept (completed or partial)."""

    family: str | None = None
    kind: str | None = None
    stage: str | None = None
    device: str | None = None
    processes: int | None = None
    precision: str | None = None
    n_parameters: int | None = None

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.n_parameters is None:
            del out["n_parameters"]
        return out

    @classmethod
    def from_json(cls, data) -> "ModelInfo | None":
        return cls(**_known(cls, data)) if data else None


@dataclass
class Artifacts:
    """The files and tables a run made. A completed run lists every one (None where not made, e.g. no trades
    without a trading evaluation); a cancelled fit lists only what it kept (``checkpoint`` or
    ``partial_model``)."""

    feature_importance: dict | None = None
    per_symbol_metrics: dict | None = None
    reliability: dict | None = None
    confusion_matrix: list | None = None
    predictions: str | None = None
    trades: str | None = None
    plots: list | None = None
    plot_files: dict | None = None
    report: str | None = None
    checkpoint: str | None = None
    partial_model: str | None = None

    _KEPT = ("report", "checkpoint", "partial_model")  # listed only when made

    def to_json(self) -> dict:
        out = {}
        if self.predictions is not None:  # a completed run: every artifact, made or not
            out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._KEPT}
        out.update({k: getattr(self, k) for k in self._KEPT if getattr(self, k) is not None})
        return out

    @classmethod
    def from_json(cls, data) -> "Artifacts":
        return cls(**_known(cls, data))


@dataclass
class DataSummary:
    """The candles, rows and split the run used (metric and quality tables stay keyed by name)."""

    provider: str | None = None
    symbols: list | None = None
    timeframe: str | None = None
    sources: dict | None = None
    candles: dict | None = None  # per symbol
    labelled_rows: int | None = None
    rows_per_split: dict | None = None
    purged_or_embargoed_rows: int | None = None  # multi-fold: see each fold's rows
    split: str | None = None
    split_cutoffs: dict | None = None
    forward_looking: bool | None = None  # purged k-fold trains most folds on data after their test block
    folds: list | None = None
    task: dict | None = None
    quality: dict | None = None
    label_balance_test: list | None = None
    oracle_accuracy: float | None = None
    fingerprint: str | None = None

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data) -> "DataSummary | None":
        return cls(**_known(cls, data)) if data else None


# The keys a completed run adds after data_summary, and only it.
_EVALUATED = ("target", "evaluation", "trading", "leakage", "gates", "policy", "economic", "verdict", "registry")


@dataclass
class RunResult:
    """One field per top-level key of result.json; ``to_json`` writes them in this order."""

    status: str  # completed | cancelled | failed (worker: an extra data-parallel rank, never written)
    reason: str | None = None  # why a run ended early; only such runs have the key
    model_path: str | None = None
    training_metrics: dict = field(default_factory=dict)
    test_metrics: dict = field(default_factory=dict)
    baselines: dict = field(default_factory=dict)
    artifacts: Artifacts = field(default_factory=Artifacts)
    model_info: ModelInfo | None = None
    data_summary: DataSummary | None = None
    target: str | None = None
    evaluation: dict | None = None
    trading: dict | None = None
    leakage: dict | None = None
    gates: dict | None = None
    policy: dict | None = None
    economic: dict | None = None
    verdict: dict | None = None
    registry: dict | None = None
    run: RunInfo = field(default_factory=RunInfo)

    @classmethod
    def ended(cls, run: RunInfo, status: str, reason: str | None) -> "RunResult":
        """A run that ended before it had results: cancelled or failed, with its reason."""
        return cls(status=status, reason=reason, run=run.finished())

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def to_json(self) -> dict:
        out = {"status": self.status}
        if not self.completed:
            out["reason"] = self.reason
        out.update(
            model_path=self.model_path,
            training_metrics=self.training_metrics,
            test_metrics=self.test_metrics,
            baselines=self.baselines,
            artifacts=self.artifacts.to_json(),
            model_info=self.model_info.to_json() if self.model_info else {},
            data_summary=self.data_summary.to_json() if self.data_summary else {},
        )
        if self.completed:
            out.update({k: getattr(self, k) for k in _EVALUATED})
        out["run"] = self.run.to_json()
        return out

    def write(self, run_dir: Path) -> None:
        write_json_atomic(Path(run_dir) / "result.json", self.to_json())

    @classmethod
    def from_json(cls, data: dict) -> "RunResult":
        known = _known(cls, data)
        known.update(
            run=RunInfo.from_json(data.get("run")),
            artifacts=Artifacts.from_json(data.get("artifacts")),
            model_info=ModelInfo.from_json(data.get("model_info")),
            data_summary=DataSummary.from_json(data.get("data_summary")),
        )
        for name in ("training_metrics", "test_metrics", "baselines"):
            known[name] = known.get(name) or {}
        known["status"] = data.get("status")
        return cls(**known)

    @classmethod
    def read(cls, path: Path) -> "RunResult | None":
        """A result.json file, or None where there is none or it is not one (damaged, not a JSON object)."""
        try:
            data = json.loads(Path(path).read_text())
            return cls.from_json(data) if isinstance(data, dict) else None
        except (OSError, ValueError, TypeError):
            return None


def _known(cls, data) -> dict:
    """The entries of ``data`` that ``cls`` has fields for (a file may hold others, or not be a mapping)."""
    if not isinstance(data, dict):
        return {}
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}
