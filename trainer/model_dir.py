"""Self-contained model directories: weights (safe formats), resolved config, feature list, scaler
statistics, label definition and a model card. ``load_model`` rebuilds the exact prediction path.

A model folder is data, not code: its family is looked up in the project's family list (``family_class``),
every file must be one of the known formats (checked by content, not only by name), and nothing in it is
imported or unpickled."""

import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from core.errors import UserError
from core.runinfo import fresh_temp_dir, publish_dir
from data.files import infer_step
from data.labels import output_columns
from data.scaling import Standardizer
from data.schema import validate_candles
from data.table import FeatureTable, build_table
from data.timeframes import to_string, to_timedelta
from models.base import CandleModel, Rows
from models.families import family_class, family_target
from trainer.registry import resolve_link

CARD = "model_card.json"
SCALER = "scaler.json"
FEATURES = "features.json"
LABEL = "label.json"
CONFIG = "config.yaml"
_HEAD_BYTES = 64


def _is_json(head: bytes) -> bool:
    return head.lstrip()[:1] in (b"{", b"[")


def _is_safetensors(head: bytes, size: int) -> bool:
    # an 8-byte little-endian header length, then that many bytes of JSON starting with "{"
    return len(head) > 8 and 0 < struct.unpack("<Q", head[:8])[0] <= size - 8 and head[8:9] == b"{"


def _is_text(head: bytes) -> bool:
    return b"\0" not in head and not head.startswith(b"\x80")


# suffix -> (format, check of the file's first bytes): safetensors, JSON, native tree files, the config text
_FORMATS = {
    ".json": ("JSON", lambda head, size: _is_json(head)),
    ".safetensors": ("safetensors", _is_safetensors),
    ".txt": ("LightGBM text model", lambda head, size: head.startswith(b"tree\n")),
    ".cbm": ("CatBoost model", lambda head, size: head.startswith(b"CBM1")),
    ".yaml": ("YAML text", lambda head, size: _is_text(head)),
}


def check_model_files(directory: Path) -> None:
    """Refuse a model folder holding anything but the known formats: a file with another suffix (code,
    pickles, shared libraries), a known suffix whose content is something else, a link, a special file."""
    for path in sorted(directory.rglob("*")):
        where = str(path)
        if path.is_symlink():
            raise UserError("a model folder may not contain links", where)
        if path.is_dir():
            continue
        if not path.is_file():
            raise UserError("a model folder may hold only regular files", where)
        fmt = _FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise UserError(
                f"unexpected file in a model folder (known formats: {', '.join(sorted(_FORMATS))}); "
                "model folders are read as data, never as code or pickles",
                where,
            )
        with path.open("rb") as f:
            head = f.read(_HEAD_BYTES)
        if not fmt[1](head, path.stat().st_size):
            raise UserError(f"not a {fmt[0]} file", where)
        if path.suffix.lower() == ".txt":
            check_lightgbm_text(path)


def _ints(value: str | None, n: int, what: str, bad) -> list[int]:
    try:
        out = [int(v) for v in (value or "").split()]
    except ValueError:
        bad(f"{what} is not a list of integers")
    if len(out) != n:
        bad(f"{what} has {len(out)} values, expected {n}")
    return out


def check_lightgbm_text(path: Path) -> None:
    """LightGBM trusts its text model: a split on a feature or a child it does not have reads outside its
    arrays (a crash), a child pointing back loops forever, wrong tree sizes misplace its reads. Refuse any
    tree this project never writes: categorical or linear trees, and every index out of its range."""
    where = str(path)

    def bad(what: str):
        raise UserError(f"not a LightGBM text model this project reads: {what}", where)

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        bad(f"{type(exc).__name__}")
    first, end = text.find("\nTree="), text.find("\nend of trees")
    first = end if first < 0 or first > end else first
    if end < 0:
        bad("no 'end of trees'")
    header = dict(line.split("=", 1) for line in text[:first].splitlines() if "=" in line)
    try:
        n_features = int(header["max_feature_idx"]) + 1
        per_iteration = int(header.get("num_tree_per_iteration", "1"))
        sizes = [int(v) for v in header.get("tree_sizes", "").split()]
    except (KeyError, ValueError):
        bad("its header lacks max_feature_idx or has a malformed number")
    blocks = text[first + 1 : end + 1].split("\nTree=") if first < end else []
    blocks = [b if i == 0 else "Tree=" + b for i, b in enumerate(blocks)]
    if n_features < 1 or per_iteration < 1 or len(blocks) % per_iteration:
        bad("feature or tree counts out of range")
    if "tree_sizes" in header and sizes != [len(b) + (i < len(blocks) - 1) for i, b in enumerate(blocks)]:
        bad("tree_sizes does not match its trees")
    for number, block in enumerate(blocks):
        tree = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        try:
            n = int(tree.get("num_leaves", ""))
        except ValueError:
            bad(f"tree {number} has no num_leaves")
        if not 1 <= n <= 1 << 20 or tree.get("num_cat", "0") != "0" or tree.get("is_linear", "0") != "0":
            bad(f"tree {number}: leaves out of range, or a categorical or linear tree")
        try:
            values = [float(v) for v in tree.get("leaf_value", "").split()]
        except ValueError:
            values = []
        if len(values) != n:
            bad(f"tree {number}: leaf_value does not hold {n} numbers")
        if n == 1:
            continue
        features = _ints(tree.get("split_feature"), n - 1, f"tree {number} split_feature", bad)
        kinds = _ints(tree.get("decision_type"), n - 1, f"tree {number} decision_type", bad)
        left = _ints(tree.get("left_child"), n - 1, f"tree {number} left_child", bad)
        right = _ints(tree.get("right_child"), n - 1, f"tree {number} right_child", bad)
        if len(tree.get("threshold", "").split()) != n - 1:
            bad(f"tree {number}: threshold does not hold {n - 1} numbers")
        for node in range(n - 1):
            if not 0 <= features[node] < n_features or kinds[node] & 1:
                bad(f"tree {number} node {node}: a split on feature {features[node]} or a categorical split")
            for child in (left[node], right[node]):  # an inner child comes after its parent, a leaf is ~index
                if not (node < child < n - 1 if child >= 0 else ~child < n):
                    bad(f"tree {number} node {node}: child {child} out of range")


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise UserError(f"unreadable JSON: {str(exc)[:200]}", str(path)) from None
    if not isinstance(value, dict):
        raise UserError("expected a JSON object", str(path))
    return value


def plain_config(value, where: str):
    """A folder's settings as an OmegaConf node, refused when a string holds an interpolation (``${...}``):
    resolving one would read the environment (``oc.env``) or run a resolver, where a folder is only data."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and "${" in item:
            raise UserError(f"a model folder's settings may not hold interpolations, found {item[:80]!r}", where)
    return OmegaConf.create(value)


def card_family(card: dict, where: str) -> type:
    """The class of the family a card names, from the project's family list. A card's ``target_class``
    (written by older versions) is accepted only when it is that family's own class."""
    cls = family_class(card.get("family"), where)
    stored = card.get("target_class")
    if stored is not None and stored != family_target(card["family"], where):
        raise UserError(
            f"target_class {str(stored)[:120]!r} is not the class of family {card['family']} "
            f"({family_target(card['family'], where)})",
            where,
        )
    return cls


def save_model_dir(
    final: Path,
    model: CandleModel,
    *,
    card: dict,
    config_yaml: str,
    scaler: Standardizer,
    feature_cfg: dict,
    label: dict,
) -> Path:
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
        check_model_files(directory)
        self.card = read_json(directory / CARD)
        cls = card_family(self.card, str(directory / CARD))
        try:
            self.scaler = Standardizer.from_dict(read_json(directory / SCALER))
            self.feature_config = plain_config(read_json(directory / FEATURES)["config"], str(directory / FEATURES))
            self.label = read_json(directory / LABEL)
            plain_config(self.label, str(directory / LABEL))
            self.model: CandleModel = cls.load(directory)
        except UserError:
            raise
        except Exception as exc:  # a folder that passed the format checks but does not hold what it says
            raise UserError(
                f"model folder unreadable as a {self.card['family']} model: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}",
                str(directory),
            ) from exc

    def table(self, candles: pd.DataFrame) -> FeatureTable:
        if "symbol" in candles.columns:
            groups = {str(s): g for s, g in candles.groupby("symbol", sort=False)}
        else:
            groups = {self.card["symbols"][0]: candles}
        groups = {s: validate_candles(g, f"candles[{s}]") for s, g in groups.items()}
        step = to_timedelta(self.label["timeframe"])
        for s, g in groups.items():
            if len(g) > 1 and infer_step(g, f"candles[{s}]") != step:
                raise UserError(
                    f"candles are {to_string(infer_step(g, s))} but the model was trained on "
                    f"{self.label['timeframe']} candles",
                    f"candles[{s}]",
                )
        return build_table(groups, self.feature_config, OmegaConf.create(self.label["target"]), step)

    def predict_proba(self, candles: pd.DataFrame, last: int | None = None) -> pd.DataFrame:
        """Class probabilities (binary: p_down, p_up; see data.labels.output_columns) or, for regression
        targets, the predicted value, for every input candle, aligned to ``candles``' index; NaN where the
        features (or a full window) are not yet defined. ``last`` = score only each symbol's last ``last``
        candles (the rest NaN): what a runtime needs per new candle, with the same features and scaler."""
        table = self.table(candles)
        eligible = table.eligible_rows(self.model.window)
        if last is not None:
            eligible &= (table.frame.groupby("symbol", sort=False).cumcount(ascending=False) < int(last)).to_numpy()
        rows = np.flatnonzero(eligible)
        X = self.scaler.transform(table.matrix())
        proba = self.model.predict_proba(Rows(features=X, rows=rows, segments=table.segments()))
        columns = output_columns(OmegaConf.create(self.label["target"]))
        scored = table.frame.iloc[rows][["symbol", "timestamp"]].assign(**dict(zip(columns, proba.T)))
        keys = pd.DataFrame(
            {
                "symbol": candles["symbol"].astype(str).to_numpy()
                if "symbol" in candles.columns
                else self.card["symbols"][0],
                "timestamp": candles["timestamp"].to_numpy(),
            },
            index=candles.index,
        )
        out = keys.merge(scored, on=["symbol", "timestamp"], how="left")
        out.index = candles.index
        return out[columns]


def load_model(path: str | Path) -> LoadedModel:
    directory = resolve_link(path)  # a promoted/... link serves only what the registry promoted there
    if (directory / "model").is_dir() and not (directory / CARD).exists():
        directory = directory / "model"  # a run folder was given
    if not (directory / CARD).is_file():
        raise UserError(f"no model card ({CARD}) found: not a model directory", str(directory))
    return LoadedModel(directory)
