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

from ray_logme.leaderboard.records import MODELS_REQUIRED_COLUMNS, OK_STATE, SCORES_REQUIRED_COLUMNS

logger = logging.getLogger(__name__)


def _require_columns(table: pd.DataFrame, required: Sequence[str], what: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{what} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise ValueError(
            f"{what} lacks column(s) {missing}; it has {list(table.columns)}. Expected the "
            "schema of docs/design.md (scores: reduce stage, models: extract stage)."
        )


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

    ``score`` is float64 and NaN unless ``state == "ok"``; an ``ok`` row with a non-finite score
    becomes ``failed`` (the reduce stage should never write one).
    """
    _require_columns(scores, SCORES_REQUIRED_COLUMNS, what)
    table = scores
    if "metric" in table.columns:
        metrics = {_text(value) for value in table["metric"]}
        table = table[table["metric"].map(_text) == metric]
        blank = int((scores["metric"].map(_text) == "").sum())
        if blank:
            logger.warning("%s: %d rows without a metric name are left out", what, blank)
        if table.empty and len(scores):
            raise ValueError(
                f"{what} has no rows for metric {metric!r}; it has metrics {sorted(metrics)}. "
                "Pass metric=<one of those> to build_leaderboard."
            )
    clean = pd.DataFrame(
        {
            "model": table["model"].map(_text).astype(object),
            "model_key": _column(table, "model_key").map(_text).astype(object),
            "task": table["task"].map(_text).astype(object),
            "task_key": _column(table, "task_key").map(_text).astype(object),
            "kind": _column(table, "kind").map(_text).astype(object),
            "score": pd.to_numeric(table["score"], errors="coerce").astype("float64"),
            "state": table["state"].map(_text).astype(object),
            "error": _column(table, "error").map(_text).astype(object),
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
    ok = clean["state"] == OK_STATE
    bad_score = ok & ~np.isfinite(clean["score"].to_numpy())
    if bad_score.any():
        bad_rows = clean.loc[bad_score]
        for model, task in zip(bad_rows["model"], bad_rows["task"], strict=True):
            logger.warning(
                "%s: model %r task %r is 'ok' with a non-finite score", what, model, task
            )
        clean.loc[bad_score, "state"] = "failed"
        clean.loc[bad_score, "error"] = "state 'ok' but the score is missing or not finite"
    clean.loc[clean["state"] != OK_STATE, "score"] = np.nan
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


def _model_table(models: pd.DataFrame | None, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per model of either table, indexed by model name, with the cost columns."""
    columns = {
        "model_key": object,
        "hub": object,
        "modality": object,
        "tags": object,
        "num_params": "float64",
        "feature_dim": "float64",
        "throughput": "float64",
        "imagenet_top1": "float64",
        "state": object,
        "error": object,
    }
    if models is None:
        models = pd.DataFrame({"model": pd.Series([], dtype=object)})
    _require_columns(models, MODELS_REQUIRED_COLUMNS, "models table")
    names = models["model"].map(_text)
    if (names == "").any():
        raise ValueError("models table has rows with an empty model name")
    if names.duplicated().any():
        raise ValueError(
            f"models table lists model(s) {sorted(set(names[names.duplicated()]))} more than "
            "once; it must have one row per model"
        )
    table = pd.DataFrame(index=pd.Index(names.to_list(), name="model", dtype=object))
    for name, dtype in columns.items():
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
        for name, dtype in columns.items():
            extra[name] = np.nan if dtype == "float64" else ""
        table = pd.concat([table, extra])
    # The model key of the scores wins when the models table has none.
    keys = scores.drop_duplicates("model").set_index("model")["model_key"]
    for name, key in keys.items():
        if key and not table.at[name, "model_key"]:
            table.at[name, "model_key"] = key
    return table
