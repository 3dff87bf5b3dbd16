"""Queries on a built leaderboard: model counts as text (``"50M"``), filtering models by
budget, hub, tags or modality, and the per-task table as a models x tasks matrix."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import replace

import numpy as np
import pandas as pd

from ray_logme.leaderboard.inputs import _modality_text, _text
from ray_logme.leaderboard.ranking import _pareto_table
from ray_logme.leaderboard.records import Leaderboard

logger = logging.getLogger(__name__)

_COUNT_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBgGtT]?)\s*$")
_COUNT_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(text: str | float) -> float:
    """``"50M"`` -> 5e7, ``"1.5B"`` -> 1.5e9, ``"300k"``, ``"2e6"``, ``12`` -> float.

    Suffixes (case-insensitive): k = 1e3, M = 1e6, B or G = 1e9, T = 1e12. Raises ``ValueError``
    for anything else or a negative count.
    """
    if isinstance(text, (int, float, np.integer, np.floating)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _COUNT_PATTERN.match(str(text))
        if match is None:
            raise ValueError(
                f"cannot read {text!r} as a count: use a number with an optional suffix "
                "k, M, B (or G), T, e.g. '50M' or '1.5B'"
            )
        value = float(match.group(1)) * _COUNT_SUFFIXES[match.group(2).lower()]
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"count {text!r} must be a finite number >= 0")
    return value


def format_count(value: float) -> str:
    """``5.72e6`` -> ``"5.72M"``; three significant digits; ``""`` for a missing value."""
    if value is None or not np.isfinite(value):
        return ""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def filter_models(
    leaderboard: Leaderboard,
    *,
    max_params: float | str | None = None,
    max_feature_dim: float | str | None = None,
    min_throughput: float | str | None = None,
    hub: str | None = None,
    tags: Iterable[str] = (),
    modality: str | None = None,
) -> Leaderboard:
    """The leaderboard restricted to models within a budget (``--max-params 50M``).

    A model is kept when its known cost meets every given bound (a model with an unknown cost is
    dropped by a bound on that cost), its hub equals ``hub``, it carries all ``tags``, and it has
    ``modality`` (``""``: unknown). Ranks
    stay those of the full leaderboard, so the first row is the best model within the budget and
    its rank says where it stands overall; the Pareto fronts are recomputed among the kept models.
    Every table is filtered to the kept models (``dropped`` changes and extract failures of other
    models go).
    """
    overall = leaderboard.overall
    keep = pd.Series(True, index=overall.index)
    filters = list(leaderboard.filters)
    bounds = (
        ("num_params", max_params, "≤", "max_params"),
        ("feature_dim", max_feature_dim, "≤", "max_feature_dim"),
        ("throughput", min_throughput, "≥", "min_throughput"),
    )
    for column, bound, operator, name in bounds:
        if bound is None:
            continue
        limit = parse_count(bound)
        values = overall[column].astype("float64")
        keep &= (values <= limit) if operator == "≤" else (values >= limit)
        filters.append(f"{name} {operator} {format_count(limit)}")
    if hub is not None:
        keep &= overall["hub"] == hub
        filters.append(f"hub == {hub}")
    wanted_tags = [tag.strip() for tag in tags if tag.strip()]
    if wanted_tags:
        carried = overall["tags"].map(lambda text: set(_text(text).split(", ")) - {""})
        keep &= carried.map(lambda found: set(wanted_tags) <= found)
        filters.append("tags include " + ", ".join(wanted_tags))
    if modality is not None:
        keep &= overall["modality"] == _modality_text(modality)
        filters.append(f"modality == {_modality_text(modality) or 'unknown'}")
    kept_models = set(overall.loc[keep, "model"])
    if not kept_models:
        logger.warning("no model passes the filters %s", filters)

    def only_kept(table: pd.DataFrame) -> pd.DataFrame:
        return table[table["model"].isin(kept_models)].reset_index(drop=True)

    kept_overall = only_kept(overall)
    return replace(
        leaderboard,
        per_task=only_kept(leaderboard.per_task),
        overall=kept_overall,
        pareto=_pareto_table(kept_overall),
        changes=only_kept(leaderboard.changes),
        failures=only_kept(leaderboard.failures),
        filters=tuple(filters),
    )


def per_task_wide(
    leaderboard: Leaderboard, value: str = "score", modality: str | None = None
) -> pd.DataFrame:
    """``per_task`` pivoted to models x tasks (``value``: ``"score"`` or ``"rank"``), rows in
    the order of ``overall``; with ``modality``, only its models and their leaderboard tasks
    (NaN elsewhere: a task not of a model's modality, or a pair without an ok score)."""
    if value not in ("score", "rank"):
        raise ValueError(f"value must be 'score' or 'rank', got {value!r}")
    models, tasks = leaderboard.overall["model"], leaderboard.tasks
    if modality is not None:
        modality = _modality_text(modality)
        models = models[leaderboard.overall["modality"] == modality]
        tasks = leaderboard.tasks_of(modality)
    wide = leaderboard.per_task.pivot(index="model", columns="task", values=value)
    return wide.reindex(index=list(models), columns=list(tasks))
