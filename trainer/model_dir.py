"""Self-contained model directories: weights (safe formats), resolved config, feature list, scaler
statistics, label definition and a model card. ``load_model`` rebuilds the exact prediction path."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import get_class
from omegaconf import OmegaConf

from data.errors import UserError
from data.scaling import Standardizer
from data.schema import validate_candles
from data.table import FeatureTable, build_table
from data.files import infer_step
from data.labels import output_columns
from data.timeframes import to_string, to_timedelta
from models.base import CandleModel, Rows
from trainer.runinfo import fresh_temp_dir, publish_dir

CARD = "model_card.json"
SCALER = "scaler.json"
FEATURES = "features.json"
LABEL = "label.json"
CONFIG = "config.yaml"


def eligible_rows(table: FeatureTable, window: int) -> np.ndarray:
    """Rows with every feature defined and, for sequence models, a full window inside one run of candles."""
    mask = np.ones(len(table.frame), dtype=bool)
    if window > 1:
        mask &= table.run_position() >= window - 1
    return mask


def save_model_dir(final: Path, model: CandleModel, card: dict, config_yaml: str, scaler: Standardizer,
                   feature_cfg: dict, label: dict) -> Path:
    tmp = fresh_temp_dir(final)
    model.save(tmp)
    (tmp / CARD).write_text(json.dumps(card, indent=2, default=str))
    (tmp / SCALER).write_text(json.dumps(scaler.to_dict(), indent=2))
    (tmp / FEATURES).write_text(json.dumps({"names": scaler.names, "config": feature_cfg}, indent=2))
    (tmp / LABEL).write_text(json.dumps(label, indent=2))
    (tmp / CONFIG).write_text(config_yaml)
    publish_dir(tmp, final)
    return final


class LoadedModel:
    """A trained model plus everything needed to go from raw candles to probabilities."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.card = json.loads((directory / CARD).read_text())
        self.scaler = Standardizer.from_dict(json.loads((directory / SCALER).read_text()))
        self.feature_config = OmegaConf.create(json.loads((directory / FEATURES).read_text())["config"])
        self.label = json.loads((directory / LABEL).read_text())
        cls = get_class(self.card["target_class"])
        self.model: CandleModel = cls.load(directory)

    def table(self, candles: pd.DataFrame) -> FeatureTable:
        if "symbol" in candles.columns:
            groups = {str(s): g for s, g in candles.groupby("symbol", sort=False)}
        else:
            groups = {self.card["symbols"][0]: candles}
        groups = {s: validate_candles(g, f"candles[{s}]") for s, g in groups.items()}
        step = to_timedelta(self.label["timeframe"])
        for s, g in groups.items():
            if len(g) > 1 and infer_step(g, f"candles[{s}]") != step:
                raise UserError(f"candles are {to_string(infer_step(g, s))} but the model was trained on "
                                f"{self.label['timeframe']} candles", f"candles[{s}]")
        return build_table(groups, self.feature_config, OmegaConf.create(self.label["target"]), step)

    def predict_proba(self, candles: pd.DataFrame, last: int | None = None) -> pd.DataFrame:
        """Class probabilities (binary: p_down, p_up; see data.labels.output_columns) or, for regression
        targets, the predicted value, for every input candle, aligned to ``candles``' index; NaN where the
        features (or a full window) are not yet defined. ``last`` = score only each symbol's last ``last``
        candles (the rest NaN): what a runtime needs per new candle, with the same features and scaler."""
        table = self.table(candles)
        eligible = eligible_rows(table, self.model.window)
        if last is not None:
            eligible &= (table.frame.groupby("symbol", sort=False).cumcount(ascending=False) < int(last)).to_numpy()
        rows = np.flatnonzero(eligible)
        X = self.scaler.transform(table.matrix())
        proba = self.model.predict_proba(Rows(features=X, rows=rows, segments=table.segments()))
        columns = output_columns(OmegaConf.create(self.label["target"]))
        scored = table.frame.iloc[rows][["symbol", "timestamp"]].assign(**dict(zip(columns, proba.T)))
        keys = pd.DataFrame({
            "symbol": candles["symbol"].astype(str).to_numpy() if "symbol" in candles.columns
            else self.card["symbols"][0],
            "timestamp": candles["timestamp"].to_numpy(),
        }, index=candles.index)
        out = keys.merge(scored, on=["symbol", "timestamp"], how="left")
        out.index = candles.index
        return out[columns]


def load_model(path: str | Path) -> LoadedModel:
    directory = Path(path)
    if (directory / "model").is_dir() and not (directory / CARD).exists():
        directory = directory / "model"  # a run folder was given
    if not (directory / CARD).is_file():
        raise UserError(f"no model card ({CARD}) found: not a model directory", str(directory))
    return LoadedModel(directory)
