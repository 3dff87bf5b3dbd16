"""Input validation and normalisation: the scores and models tables as the leaderboard reads
them (text cells, modalities, tags, one cleaned row per (model, task), one row per model with
its cost columns)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ray_logme.leaderboard.records import COST_AXES, OVERALL_DTYPES, TEXT
from ray_logme.tables import MODELS, SCORES, clean_scores, require_columns

logger = logging.getLogger(__name__)


def _require_frame(table: pd.DataFrame, required: Sequence[str], what: str) -> None:
    """``ValueError`` naming ``what`` unless ``table`` is a pandas DataFrame with ``required``
    (the columns rule is :func:`ray_logme.tables.require_columns`)."""
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{what} must be a pandas DataFrame, got {type(table).__name__}")
    require_columns(table, required, what)


def _text(value: Any) -> str:
    """A cell as text: missing values become ``""``."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if value is pd.NA or value is pd.NaT:
        return ""
    return str(value)


def _modality_text(value: Any) -> str:
    """A modality cell as ``"image"``, ``"text"``, ...: lower case; ``""`` when unknown."""
    return _text(value).strip().lower()


def _column(table: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    if name in table.columns:
        return table[name]
    return pd.Series([default] * len(table), index=table.index, dtype=object)


def _clean_scores(scores: pd.DataFrame, metric: str, what: str) -> pd.DataFrame:
    """One row per (model, task) with model, model_key, task, task_key, kind, score, state, error
    and modality (the task's, from an optional ``modality`` column; ``""`` when unknown).

    Rows of ``metric`` are selected, ``score`` made float64 and NaN unless ``state == "ok"``, and
    an ``ok`` row with a non-finite score made ``failed`` by the one rule every reader of scores
    shares, :func:`ray_logme.tables.clean_scores` (the reduce stage should never write one).
    """
    _require_frame(scores, SCORES.required, what)
    table = clean_scores(scores, metric, what)
    clean = pd.DataFrame(
        {
            "model": table["model"].map(_text).astype(object),
            "model_key": _column(table, "model_key").map(_text).astype(object),
            "task": table["task"].map(_text).astype(object),
            "task_key": _column(table, "task_key").map(_text).astype(object),
            "kind": _column(table, "kind").map(_text).astype(object),
            "score": table["score"],
            "state": table["state"].astype(object),
            "error": table["error"].astype(object),
            "modality": _column(table, "modality").map(_modality_text).astype(object),
        }
    ).reset_index(drop=True)
    if (clean["model"] == "").any() or (clean["task"] == "").any():
        raise ValueError(f"{what} has rows with an empty model or task name")
    duplicated = clean.duplicated(["model", "task"], keep=False)
    if duplicated.any():
        duplicate_rows = clean.loc[duplicated]
        pairs = sorted(set(zip(duplicate_rows["model"], duplicate_rows["task"], strict=True)))
        raise ValueError(
            f"{what} has more than one {metric!r} row for (model, task) {pairs[:5]}; "
            "keep one row per pair (the reduce stage writes one per run)."
        )
    return clean


def _tags_text(value: Any) -> str:
    """Tags as one ``", "``-joined string (from a list, array, tuple, a comma-separated str, or
    the extract stage's JSON object ``{"family": "resnet"}``, which becomes ``family=resnet``)."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            mapping = json.loads(value)
        except ValueError:
            mapping = None
        if isinstance(mapping, dict):
            value = [f"{key}={_text(item)}" for key, item in mapping.items()]
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, (list, tuple, np.ndarray)):
        parts = [_text(item) for item in value]
    else:
        parts = [_text(value)]
    return ", ".join(part.strip() for part in parts if part.strip())


#: The columns of the internal models table (indexed by model): overall's model columns, plus
#: the extract stage's state and error.
_MODEL_COLUMNS: dict[str, Any] = {
    **{
        column: OVERALL_DTYPES[column]
        for column in ("model_key", "hub", "modality", "tags", *COST_AXES, "imagenet_top1")
    },
    "state": TEXT,
    "error": TEXT,
}


def _model_table(models: pd.DataFrame | None, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per model of either table, indexed by model name, with the cost columns."""
    if models is None:
        models = pd.DataFrame({"model": pd.Series([], dtype=object)})
    _require_frame(models, MODELS.required, "models table")
    names = models["model"].map(_text)
    if (names == "").any():
        raise ValueError("models table has rows with an empty model name")
    if names.duplicated().any():
        raise ValueError(
            f"models table lists model(s) {sorted(set(names[names.duplicated()]))} more than "
            "once; it must have one row per model"
        )
    table = pd.DataFrame(index=pd.Index(names.to_list(), name="model", dtype=object))
    for name, dtype in _MODEL_COLUMNS.items():
        values = _column(models, name)
        if dtype == "float64":
            table[name] = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
        elif name == "tags":
            table[name] = values.map(_tags_text).astype(object).to_numpy()
        elif name == "modality":
            table[name] = values.map(_modality_text).astype(object).to_numpy()
        else:
            table[name] = values.map(_text).astype(object).to_numpy()
    scored_only = [name for name in dict.fromkeys(scores["model"]) if name not in table.index]
    if scored_only:
        logger.info("models %s have scores but no models-table row: costs unknown", scored_only)
        extra = pd.DataFrame(index=pd.Index(scored_only, name="model", dtype=object))
        for name, dtype in _MODEL_COLUMNS.items():
            extra[name] = np.nan if dtype == "float64" else ""
        table = pd.concat([table, extra])
    # The model key of the scores wins when the models table has none.
    keys = scores.drop_duplicates("model").set_index("model")["model_key"]
    for name, key in keys.items():
        if key and not table.at[name, "model_key"]:
            table.at[name, "model_key"] = key
    return table
