"""Compare a scores table with a ground-truth table, task by task: :func:`evaluate_ranking`.

Input tables:

- scores: columns ``model``, ``task``, ``score`` (the ``reduce`` scores table; rows whose
  ``state`` is not ``"ok"`` or whose score is NaN are dropped with a warning, and a ``metric``
  column may be filtered with ``metric=``). Scores are selected and checked by the rule every
  reader of scores shares, :func:`ray_logme.tables.clean_scores`; missing columns are reported
  by :func:`ray_logme.tables.require_columns`.
- truth: columns ``model``, ``task``, ``accuracy`` (any scale: fractions or percentages; only
  order and ratios matter). Extra grouping columns (e.g. ``protocol``) may be added and named in
  ``group_col``.

Model names must be spelled the same in both tables (the run config's model names). The result,
:class:`RankingEvaluation`, holds one row of statistics (:mod:`ray_logme.evaluate.statistics`)
per task and their means over tasks, and renders as Markdown or JSON.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ray_logme.evaluate.statistics import (
    DEFAULT_CONFIDENCE,
    DEFAULT_NUM_BOOTSTRAP,
    DEFAULT_TOP_K,
    RANK_STATISTICS,
    _statistic_batch,
    bootstrap_over_models,
    mean_over_tasks,
)
from ray_logme.markdown import markdown_table
from ray_logme.tables import OK, clean_scores, require_columns

logger = logging.getLogger(__name__)


@dataclass
class RankingEvaluation:
    """Result of :func:`evaluate_ranking`.

    ``per_task``: one row per task (per group): the group columns, ``num_models``, each statistic,
    and ``<statistic>_ci_low`` / ``<statistic>_ci_high`` for the bootstrapped ones.
    ``summary``: one row per statistic: ``statistic, mean, ci_low, ci_high, num_tasks``
    (mean over tasks, CI from resampling tasks).
    """

    per_task: pd.DataFrame
    summary: pd.DataFrame
    confidence: float

    def to_markdown(self, digits: int = 3) -> str:
        """Both tables as GitHub markdown (per task, then the mean over tasks)."""
        return (
            frame_to_markdown(self.per_task, digits)
            + "\n\n"
            + frame_to_markdown(self.summary, digits)
            + "\n"
        )

    def to_json(self) -> str:
        """Both tables and the confidence level as indented JSON (``per_task`` and ``summary``
        as lists of records), ending in a newline."""
        payload = {
            "per_task": json.loads(self.per_task.to_json(orient="records")),
            "summary": json.loads(self.summary.to_json(orient="records")),
            "confidence": self.confidence,
        }
        return json.dumps(payload, indent=2) + "\n"


def frame_to_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a GitHub markdown table; floats with ``digits`` decimals, ``|`` escaped."""

    def cell(value) -> str:
        if isinstance(value, float | np.floating):
            return "nan" if not np.isfinite(value) else f"{value:.{digits}f}"
        return str(value).replace("|", "\\|")

    rows = ([cell(value) for value in row] for row in frame.itertuples(index=False))
    return "\n".join(markdown_table([str(column) for column in frame.columns], rows))


def _group_seed(seed: int, key: tuple) -> np.random.SeedSequence:
    """A seed per task derived from its name, so adding a task leaves the others' CIs unchanged."""
    return np.random.SeedSequence([seed, zlib.crc32(repr(key).encode("utf-8"))])


def _ok_scores(
    scores: pd.DataFrame, keys: list[str], score_col: str, metric: str | None
) -> pd.DataFrame:
    """The usable scores: columns ``keys`` and ``score_col`` (float64, finite) of the ``ok`` rows.

    Metric selection, float coercion and the non-finite rule are the scores tables' one rule,
    :func:`ray_logme.tables.clean_scores` (here a ``metric`` given for a table without a
    ``metric`` column is an error); the rows it does not leave ``ok`` are dropped with a warning.
    """
    frame = clean_scores(
        scores,
        metric,
        "the scores table",
        score_column=score_col,
        required=keys,
        metric_column_required=True,
    )
    failed = frame["state"] != OK
    if failed.any():
        logger.warning(
            "leaving out %d failed (model, task) score(s): %s",
            int(failed.sum()),
            frame.loc[failed, keys].head(10).to_dict("records"),
        )
    return frame.loc[~failed, [*keys, score_col]]


def _check_unique(frame: pd.DataFrame, keys: list[str], what: str) -> None:
    duplicated = frame.duplicated(keys, keep=False)
    if duplicated.any():
        raise ValueError(
            f"{what} has more than one row for {frame.loc[duplicated, keys].drop_duplicates().head(5).to_dict('records')}; "
            "keep one row per (model, task) (filter the run or the protocol first)"
        )


def evaluate_ranking(
    scores: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    score_col: str = "score",
    truth_col: str = "accuracy",
    model_col: str = "model",
    group_col: str | Sequence[str] = "task",
    metric: str | None = None,
    top_k: Sequence[int] = DEFAULT_TOP_K,
    bootstrap_statistics: Sequence[str] = ("weighted_tau",),
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    min_models: int = 3,
) -> RankingEvaluation:
    """Compare a score table with ground-truth accuracies, task by task.

    ``scores`` has ``model_col``, ``score_col`` and the group columns it shares with ``truth``
    (normally ``task``); ``truth`` has ``model_col``, ``truth_col`` and every column of
    ``group_col``. The tables are joined on the model and the shared group columns, so a truth
    table with an extra ``protocol`` column can be evaluated with ``group_col=("task",
    "protocol")`` against a scores table that has only ``task``. Models present in only one table
    are left out with a warning; a task with fewer than ``min_models`` matched models is reported
    with NaN statistics. Bootstrap CIs (over models per task, over tasks for the mean) use
    ``num_bootstrap`` resamples seeded from ``seed`` and the task name.
    """
    group_cols = [group_col] if isinstance(group_col, str) else list(group_col)
    if not group_cols:
        raise ValueError("group_col must name at least one column (normally 'task')")
    require_columns(truth, [model_col, truth_col, *group_cols], "the truth table")
    shared_groups = [column for column in group_cols if column in scores.columns]
    join_keys = [model_col, *shared_groups]
    ok_scores = _ok_scores(scores, join_keys, score_col, metric)
    _check_unique(ok_scores, join_keys, "the scores table")

    truth_values = pd.to_numeric(truth[truth_col], errors="coerce")
    if truth_values.isna().any():
        raise ValueError(
            f"truth column {truth_col!r} has non-numeric/NaN values at rows "
            f"{truth.loc[truth_values.isna(), [model_col, *group_cols]].head(5).to_dict('records')}"
        )
    clean_truth = truth[[model_col, *group_cols]].copy()
    clean_truth[truth_col] = truth_values.astype(np.float64)
    _check_unique(clean_truth, [model_col, *group_cols], "the truth table")
    if truth_col == score_col:
        clean_truth = clean_truth.rename(columns={truth_col: f"{truth_col}_truth"})
        truth_col = f"{truth_col}_truth"

    merged = ok_scores.merge(clean_truth, on=join_keys, how="inner", validate="one_to_many")
    if merged.empty:
        raise ValueError(
            f"scores and truth share no ({', '.join(join_keys)}) pair. Scores models: "
            f"{sorted(ok_scores[model_col].astype(str).unique())[:10]}; truth models: "
            f"{sorted(clean_truth[model_col].astype(str).unique())[:10]}. Spell models (and tasks) "
            "the same in both tables"
        )
    _warn_unmatched(ok_scores, clean_truth, join_keys)

    statistic_names = [*RANK_STATISTICS, *(f"top{k}_rel_acc" for k in top_k)]
    for name in bootstrap_statistics:
        _statistic_batch(name)  # validates the name
    rows = []
    for key, group in merged.groupby(group_cols, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(group_cols, key, strict=True))
        row["num_models"] = len(group)
        score_array = group[score_col].to_numpy(np.float64)
        truth_array = group[truth_col].to_numpy(np.float64)
        if len(group) < min_models:
            logger.warning(
                "task %s has %d matched model(s) (< %d): statistics are NaN",
                key,
                len(group),
                min_models,
            )
            row.update({name: math.nan for name in statistic_names})
            for name in bootstrap_statistics:
                row[f"{name}_ci_low"] = row[f"{name}_ci_high"] = math.nan
        else:
            for name in statistic_names:
                row[name] = float(_statistic_batch(name)(score_array[None], truth_array[None])[0])
            intervals = bootstrap_over_models(
                score_array,
                truth_array,
                bootstrap_statistics,
                num_bootstrap=num_bootstrap,
                confidence=confidence,
                seed=_group_seed(seed, key),
            )
            for name, interval in intervals.items():
                row[f"{name}_ci_low"] = interval.low
                row[f"{name}_ci_high"] = interval.high
        rows.append(row)
    per_task = pd.DataFrame(rows)

    summary_rows = []
    for name in statistic_names:
        interval = mean_over_tasks(
            per_task[name].to_numpy(np.float64),
            num_bootstrap=num_bootstrap,
            confidence=confidence,
            seed=_group_seed(seed, ("mean", name)),
        )
        summary_rows.append(
            {
                "statistic": name,
                "mean": interval.estimate,
                "ci_low": interval.low,
                "ci_high": interval.high,
                "num_tasks": int(np.isfinite(per_task[name]).sum()),
            }
        )
    return RankingEvaluation(
        per_task=per_task, summary=pd.DataFrame(summary_rows), confidence=confidence
    )


def _warn_unmatched(scores: pd.DataFrame, truth: pd.DataFrame, join_keys: list[str]) -> None:
    score_keys = set(map(tuple, scores[join_keys].astype(str).to_numpy()))
    truth_keys = set(map(tuple, truth[join_keys].drop_duplicates().astype(str).to_numpy()))
    for what, missing in (
        ("scores without truth", score_keys - truth_keys),
        ("truth without scores", truth_keys - score_keys),
    ):
        if missing:
            logger.warning("%d %s (left out): %s", len(missing), what, sorted(missing)[:10])
