"""How well a ranking of models predicts their transfer accuracy: statistics, CIs, loaders, CLI.

A leaderboard is useful only if ranking by its score picks the models that transfer best. This
module compares a score table (one score per model and task, e.g. LogME from ``reduce``) with a
ground-truth table (the accuracy each model reached after fine-tuning on the task) and reports,
per task:

- **weighted Kendall tau** (``weighted_tau``), exactly as the field reports it: the value of
  ``scipy.stats.weightedtau(score, truth)`` with its defaults (Vigna 2015; hyperbolic weights
  ``1 / (r + 1)`` of the decreasing lexicographic rank ``r``, additive pair weights
  ``w_i + w_j``, ``rank=True`` so the statistic is the mean of the two directions). Swaps near the
  top of the ranking count more than swaps near the bottom.
- **Kendall tau-b** (``kendall_tau``, as ``scipy.stats.kendalltau``) and **Pearson** (``pearson``).
- **top-k relative accuracy** (``top{k}_rel_acc``): the best ground-truth accuracy among the k
  models with the highest score, divided by the best accuracy overall (1.0 = the best model was
  among the picks). Ties in score at the cut are broken against the metric (the lower accuracy is
  picked first).
- **bootstrap confidence intervals over models** for each task: per-task tau over ~10 models is
  noisy (for 11 models the standard deviation of tau_w under random rankings is about 0.28), so a
  task's tau_w comes with a percentile interval from resampling its models with replacement.
- the **mean over tasks** with a percentile bootstrap CI over tasks.

All statistics are computed on float64 by one vectorised kernel (``_pairwise_tau``) that handles a
batch of bootstrap resamples at once; ``tests/test_evaluate.py`` checks it against scipy and
against a brute-force double loop. Scores must be "higher is better" (LogME is).

Input tables (``evaluate_ranking``):

- scores: columns ``model``, ``task``, ``score`` (the ``reduce`` scores table; rows whose
  ``state`` is not ``"ok"`` or whose score is NaN are dropped with a warning, and a ``metric``
  column may be filtered with ``metric=``).
- truth: columns ``model``, ``task``, ``accuracy`` (any scale: fractions or percentages; only
  order and ratios matter). Extra grouping columns (e.g. ``protocol``) may be added and named in
  ``group_col``.

Model names must be spelled the same in both tables (the run config's model names).

Command line (wired as ``ray-logme evaluate``)::

    ray-logme evaluate --scores runs/<id>/scores.parquet --truth truth.csv [--output per_task.csv]

Loaders for the published ground-truth tables in ``../shared/groundtruth`` are at the end:
``load_stable_transfer_table`` (Agostinelli et al., ECCV 2022) and ``load_tllib_tables``
(Transfer-Learning-Library's model-selection benchmark).
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

RANK_STATISTICS = ("weighted_tau", "kendall_tau", "pearson")
DEFAULT_TOP_K = (1, 3)
DEFAULT_NUM_BOOTSTRAP = 1000
DEFAULT_CONFIDENCE = 0.95
# Bound on batch x models x models float64 elements per kernel call (about 32 MiB per array).
_MAX_KERNEL_ELEMENTS = 4_000_000


# ---------------------------------------------------------------------------------------------
# Pure statistics
# ---------------------------------------------------------------------------------------------


def _as_pair(scores, truth) -> tuple[np.ndarray, np.ndarray]:
    """Validate two equally long 1-D (or batched 2-D) float arrays; return them as float64."""
    score_array = np.asarray(scores, dtype=np.float64)
    truth_array = np.asarray(truth, dtype=np.float64)
    if score_array.shape != truth_array.shape:
        raise ValueError(
            f"scores and truth must have the same shape, got {score_array.shape} and "
            f"{truth_array.shape}: pass one score and one accuracy per model"
        )
    if score_array.ndim not in (1, 2) or score_array.shape[-1] < 2:
        raise ValueError(
            f"expected float[num_models] (or float[batch, num_models]) with at least 2 models, "
            f"got shape {score_array.shape}"
        )
    for name, array in (("scores", score_array), ("truth", truth_array)):
        if not np.all(np.isfinite(array)):
            bad = int(np.sum(~np.isfinite(array)))
            raise ValueError(
                f"{name} has {bad} NaN/Inf value(s): drop failed models before evaluating"
            )
    return score_array, truth_array


def _hyperbolic_rank_weights(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Per-element weights ``1 / (r + 1)``, ``r`` = rank in decreasing (primary, secondary) order.

    ``primary, secondary: float64[batch, n]`` -> ``float64[batch, n]``. This is the rank
    ``scipy.stats.weightedtau`` uses with ``rank=True`` for one of its two directions.
    """
    batch, n = primary.shape
    increasing = np.lexsort((secondary, primary), axis=-1)  # primary key last
    rank = np.empty_like(increasing)
    decreasing_rank = np.broadcast_to(np.arange(n - 1, -1, -1), (batch, n))
    np.put_along_axis(rank, increasing, decreasing_rank, axis=-1)
    return 1.0 / (rank + 1.0)


def _pairwise_tau(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """Kendall-type correlation of each row of ``x`` with the same row of ``y``.

    ``x, y: float64[batch, n]``; ``weights: float64[batch, n]`` per-element weights (pair weight
    ``w_i + w_j``) or ``None`` for unit pair weights (Kendall tau-b). Returns ``float64[batch]``::

        tau = sum_ij w_ij sgn(x_i - x_j) sgn(y_i - y_j)
              / sqrt(sum_ij w_ij [x_i != x_j]) / sqrt(sum_ij w_ij [y_i != y_j])

    clipped to [-1, 1]; NaN where x or y is constant in a row. Sums run over ordered pairs; the
    factor 2 against unordered pairs cancels.
    """
    sign_x = np.sign(x[:, :, None] - x[:, None, :])
    sign_y = np.sign(y[:, :, None] - y[:, None, :])
    if weights is None:
        pair_weights = np.ones_like(sign_x)
    else:
        pair_weights = weights[:, :, None] + weights[:, None, :]
    numerator = np.einsum("bij,bij,bij->b", pair_weights, sign_x, sign_y)
    untied_x = np.einsum("bij,bij->b", pair_weights, sign_x != 0)
    untied_y = np.einsum("bij,bij->b", pair_weights, sign_y != 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = numerator / np.sqrt(untied_x) / np.sqrt(untied_y)
    tau[(untied_x == 0) | (untied_y == 0)] = np.nan
    return np.clip(tau, -1.0, 1.0)


def _weighted_tau_batch(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``scipy.stats.weightedtau`` defaults, row by row: ``float64[batch, n]`` x2 -> ``[batch]``."""
    by_score = _pairwise_tau(scores, truth, _hyperbolic_rank_weights(scores, truth))
    by_truth = _pairwise_tau(truth, scores, _hyperbolic_rank_weights(truth, scores))
    return (by_score + by_truth) / 2.0


def _kendall_tau_batch(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Kendall tau-b row by row (``scipy.stats.kendalltau`` default variant)."""
    return _pairwise_tau(scores, truth, None)


def _pearson_batch(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Pearson correlation row by row; NaN for a constant row."""
    centred_scores = scores - scores.mean(axis=-1, keepdims=True)
    centred_truth = truth - truth.mean(axis=-1, keepdims=True)
    covariance = np.sum(centred_scores * centred_truth, axis=-1)
    norms = np.sqrt(np.sum(centred_scores**2, axis=-1) * np.sum(centred_truth**2, axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = covariance / norms
    correlation[norms == 0] = np.nan
    return np.clip(correlation, -1.0, 1.0)


def _top_k_relative_accuracy_batch(scores: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """Best truth among the top-k by score over the best truth, row by row (ties: pessimistic)."""
    if k < 1:
        raise ValueError(f"top-k needs k >= 1, got {k}")
    if np.any(np.max(truth, axis=-1) <= 0):
        raise ValueError(
            "top-k relative accuracy divides by the best accuracy, which must be > 0; "
            "pass accuracies (fractions or percentages), not errors or losses"
        )
    # Primary key: score descending; among equal scores the lower truth comes first.
    order = np.lexsort((truth, -scores), axis=-1)[:, :k]
    picked = np.take_along_axis(truth, order, axis=-1)
    return picked.max(axis=-1) / truth.max(axis=-1)


_BATCH_STATISTICS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "weighted_tau": _weighted_tau_batch,
    "kendall_tau": _kendall_tau_batch,
    "pearson": _pearson_batch,
}


def _statistic_batch(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The batched kernel of a statistic name (``weighted_tau``, ..., ``top3_rel_acc``)."""
    if name in _BATCH_STATISTICS:
        return _BATCH_STATISTICS[name]
    if name.startswith("top") and name.endswith("_rel_acc") and name[3:-8].isdigit():
        k = int(name[3:-8])
        return lambda scores, truth: _top_k_relative_accuracy_batch(scores, truth, k)
    raise ValueError(
        f"unknown statistic {name!r}: use one of {[*RANK_STATISTICS, 'top<k>_rel_acc']}"
    )


def _single(name: str, scores, truth) -> float:
    score_array, truth_array = _as_pair(scores, truth)
    if score_array.ndim != 1:
        raise ValueError(f"expected 1-D float[num_models], got shape {score_array.shape}")
    return float(_statistic_batch(name)(score_array[None, :], truth_array[None, :])[0])


def weighted_tau(scores, truth) -> float:
    """Weighted Kendall tau as ``scipy.stats.weightedtau(scores, truth).statistic`` (defaults).

    ``scores, truth: float[num_models]``. NaN when either is constant. Symmetric in its arguments.
    """
    return _single("weighted_tau", scores, truth)


def kendall_tau(scores, truth) -> float:
    """Kendall tau-b as ``scipy.stats.kendalltau(scores, truth).statistic``; NaN if constant."""
    return _single("kendall_tau", scores, truth)


def pearson(scores, truth) -> float:
    """Pearson correlation of ``scores`` and ``truth`` (``float[num_models]``); NaN if constant."""
    return _single("pearson", scores, truth)


def top_k_relative_accuracy(scores, truth, k: int = 1) -> float:
    """Best ``truth`` among the ``k`` highest ``scores`` divided by the best ``truth`` overall.

    ``scores, truth: float[num_models]``, truth > 0 for the best model. 1.0 means the best model
    is among the top k. Scores tied at the cut are resolved against the metric (lower truth first).
    """
    return _single(f"top{k}_rel_acc", scores, truth)


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with a percentile bootstrap interval.

    ``num_resamples`` counts the resamples the interval was taken from; resamples where the
    statistic is undefined (all drawn models tied) are left out.
    """

    estimate: float
    low: float
    high: float
    confidence: float
    num_resamples: int


def _percentile_interval(
    estimate: float, resampled: np.ndarray, confidence: float
) -> ConfidenceInterval:
    valid = resampled[np.isfinite(resampled)]
    if valid.size == 0:
        return ConfidenceInterval(estimate, math.nan, math.nan, confidence, 0)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(valid, [tail, 100.0 - tail])
    return ConfidenceInterval(estimate, float(low), float(high), confidence, int(valid.size))


def _check_bootstrap_args(num_bootstrap: int, confidence: float) -> None:
    if num_bootstrap < 1:
        raise ValueError(f"num_bootstrap must be >= 1, got {num_bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def bootstrap_over_models(
    scores,
    truth,
    statistics: Sequence[str] = ("weighted_tau",),
    *,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | np.random.SeedSequence = 0,
) -> dict[str, ConfidenceInterval]:
    """Percentile bootstrap CIs of statistics of one task, resampling its models with replacement.

    ``scores, truth: float[num_models]``; ``statistics``: names as in ``RANK_STATISTICS`` or
    ``"top<k>_rel_acc"``. All statistics share the same ``num_bootstrap`` resamples, drawn from
    ``numpy.random.default_rng(seed)``. Resampled models that repeat are ties, which the tau
    statistics handle like scipy does.
    """
    _check_bootstrap_args(num_bootstrap, confidence)
    score_array, truth_array = _as_pair(scores, truth)
    if score_array.ndim != 1:
        raise ValueError(f"expected 1-D float[num_models], got shape {score_array.shape}")
    num_models = score_array.size
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, num_models, size=(num_bootstrap, num_models))
    chunk = max(1, _MAX_KERNEL_ELEMENTS // (num_models * num_models))
    intervals = {}
    for name in statistics:
        kernel = _statistic_batch(name)
        estimate = float(kernel(score_array[None, :], truth_array[None, :])[0])
        resampled = np.concatenate(
            [
                kernel(
                    score_array[indices[start : start + chunk]],
                    truth_array[indices[start : start + chunk]],
                )
                for start in range(0, num_bootstrap, chunk)
            ]
        )
        intervals[name] = _percentile_interval(estimate, resampled, confidence)
    return intervals


def mean_over_tasks(
    values,
    *,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | np.random.SeedSequence = 0,
) -> ConfidenceInterval:
    """Mean of per-task values with a percentile bootstrap CI, resampling tasks with replacement.

    ``values: float[num_tasks]``; NaN entries (tasks where the statistic is undefined) are left
    out with a warning. A single task gives a degenerate interval (low == high == the value).
    """
    _check_bootstrap_args(num_bootstrap, confidence)
    array = np.asarray(values, dtype=np.float64).ravel()
    finite = array[np.isfinite(array)]
    if finite.size < array.size:
        logger.warning(
            "mean over tasks: %d of %d values are NaN and left out",
            array.size - finite.size,
            array.size,
        )
    if finite.size == 0:
        return ConfidenceInterval(math.nan, math.nan, math.nan, confidence, 0)
    rng = np.random.default_rng(seed)
    resampled = finite[rng.integers(0, finite.size, size=(num_bootstrap, finite.size))].mean(axis=1)
    return _percentile_interval(float(finite.mean()), resampled, confidence)


def paired_difference_over_tasks(
    values_a,
    values_b,
    *,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | np.random.SeedSequence = 0,
) -> ConfidenceInterval:
    """Mean over tasks of ``a - b`` (e.g. tau_w of LogME minus tau_w of a baseline), bootstrap CI.

    ``values_a, values_b: float[num_tasks]``, aligned task by task; tasks where either is NaN are
    left out. An interval that excludes 0 says one ranking is better on these tasks.
    """
    a = np.asarray(values_a, dtype=np.float64).ravel()
    b = np.asarray(values_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values must align task by task, got {a.shape} and {b.shape}")
    return mean_over_tasks(a - b, num_bootstrap=num_bootstrap, confidence=confidence, seed=seed)


def random_ranking_weighted_tau(truth, *, num_draws: int = 10_000, seed: int = 0) -> np.ndarray:
    """tau_w of uniformly random rankings against ``truth`` (``float[num_models]``).

    Returns ``float64[num_draws]``: the null distribution a metric must beat. Its mean is about 0;
    its spread says how much a single task's tau_w can move by chance.
    """
    truth_array = np.asarray(truth, dtype=np.float64)
    _as_pair(truth_array, truth_array)
    rng = np.random.default_rng(seed)
    num_models = truth_array.size
    chunk = max(1, _MAX_KERNEL_ELEMENTS // (num_models * num_models))
    draws = []
    for start in range(0, num_draws, chunk):
        size = min(chunk, num_draws - start)
        random_scores = rng.permuted(
            np.tile(np.arange(num_models, dtype=np.float64), (size, 1)), axis=1
        )
        draws.append(_weighted_tau_batch(random_scores, np.tile(truth_array, (size, 1))))
    return np.concatenate(draws)


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


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

    header = "| " + " | ".join(str(column) for column in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = [
        "| " + " | ".join(cell(value) for value in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *rows])


def _group_seed(seed: int, key: tuple) -> np.random.SeedSequence:
    """A seed per task derived from its name, so adding a task leaves the others' CIs unchanged."""
    return np.random.SeedSequence([seed, zlib.crc32(repr(key).encode("utf-8"))])


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} is missing column(s) {missing}; it has {list(frame.columns)}. "
            f"Rename the columns or pass the matching *_col arguments"
        )


def _clean_scores(
    scores: pd.DataFrame, keys: list[str], score_col: str, metric: str | None
) -> pd.DataFrame:
    frame = scores
    if metric is not None:
        if "metric" not in frame.columns:
            raise ValueError(
                f"metric={metric!r} was given but the scores table has no 'metric' column"
            )
        frame = frame[frame["metric"] == metric]
        if frame.empty:
            raise ValueError(
                f"no scores with metric {metric!r}; the table has {sorted(scores['metric'].unique())}"
            )
    elif "metric" in frame.columns and frame["metric"].nunique() > 1:
        raise ValueError(
            f"the scores table mixes metrics {sorted(frame['metric'].unique())}: pick one with metric="
        )
    if "state" in frame.columns:
        failed = frame[frame["state"] != "ok"]
        if not failed.empty:
            logger.warning(
                "leaving out %d failed (model, task) score(s): %s",
                len(failed),
                failed[keys].head(10).to_dict("records"),
            )
        frame = frame[frame["state"] == "ok"]
    values = pd.to_numeric(frame[score_col], errors="coerce")
    not_finite = ~np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
    if not_finite.any():
        logger.warning(
            "leaving out %d score(s) that are NaN/Inf: %s",
            int(not_finite.sum()),
            frame.loc[not_finite, keys].head(10).to_dict("records"),
        )
    frame = frame.loc[~not_finite, [*keys, score_col]].copy()
    frame[score_col] = values[~not_finite].astype(np.float64)
    return frame


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
    _require_columns(truth, [model_col, truth_col, *group_cols], "the truth table")
    shared_groups = [column for column in group_cols if column in scores.columns]
    _require_columns(scores, [model_col, score_col], "the scores table")
    join_keys = [model_col, *shared_groups]
    clean_scores = _clean_scores(scores, join_keys, score_col, metric)
    _check_unique(clean_scores, join_keys, "the scores table")

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

    merged = clean_scores.merge(clean_truth, on=join_keys, how="inner", validate="one_to_many")
    if merged.empty:
        raise ValueError(
            f"scores and truth share no ({', '.join(join_keys)}) pair. Scores models: "
            f"{sorted(clean_scores[model_col].astype(str).unique())[:10]}; truth models: "
            f"{sorted(clean_truth[model_col].astype(str).unique())[:10]}. Spell models (and tasks) "
            "the same in both tables"
        )
    _warn_unmatched(clean_scores, clean_truth, join_keys)

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


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------

STABLE_TRANSFER_FILE = "stable_transfer_source_architectures.csv"
_STABLE_TRANSFER_COLUMNS = {
    "Transferability Metric": "metric",
    "Source Architecture": "model",
    "Transferability Metric Score": "score",
    "Test Accuracy": "accuracy",
    "Trainable Backbone": "trainable_backbone",
    "Target Dataset": "task",
}
PROTOCOL_LINEAR_PROBE = "linear_probe"
PROTOCOL_FINE_TUNE = "fine_tune"

TLLIB_FINETUNE_FILE = "tllib_finetune_acc.csv"
TLLIB_SCORES_FILE = "tllib_metric_scores.csv"
TLLIB_CORRELATIONS_FILE = "tllib_reported_correlations.csv"
# ../shared/groundtruth/README.md, "Inconsistencies in the README": the DTD NCE column is a copy
# of the LogME column; the printed correlations of these two datasets cannot be reproduced from
# the printed scores and accuracies (the Aircraft accuracies are suspect).
TLLIB_COPIED_SCORES = (("NCE", "DTD"),)
TLLIB_UNREPRODUCIBLE_DATASETS = ("Aircraft", "OxfordIIITPets")


def _read_csv_with_columns(path: str | Path, expected: Sequence[str], **kwargs) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth table {path} does not exist")
    frame = pd.read_csv(path, **kwargs)
    missing = [column for column in expected if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    return frame


def load_stable_transfer_table(path: str | Path) -> pd.DataFrame:
    """Read the Google "source architectures" table (19 Keras ImageNet models x 9 datasets).

    Returns one row per (metric, model, task, protocol) with columns ``metric`` (gbc, leep, nleep,
    logme, hscore), ``model``, ``task``, ``score`` (higher = better predicted transfer),
    ``accuracy`` (test accuracy, a fraction), ``trainable_backbone`` (bool) and ``protocol``
    (``"linear_probe"`` when the backbone is frozen, ``"fine_tune"`` when it is trained).
    """
    frame = _read_csv_with_columns(path, list(_STABLE_TRANSFER_COLUMNS), index_col=0)
    frame = frame.rename(columns=_STABLE_TRANSFER_COLUMNS)[list(_STABLE_TRANSFER_COLUMNS.values())]
    trainable = (
        frame["trainable_backbone"].astype(str).str.strip().map({"True": True, "False": False})
    )
    if trainable.isna().any():
        raise ValueError(f"{path}: 'Trainable Backbone' must be True or False")
    frame["trainable_backbone"] = trainable.astype(bool)
    frame["protocol"] = np.where(
        frame["trainable_backbone"], PROTOCOL_FINE_TUNE, PROTOCOL_LINEAR_PROBE
    )
    frame["score"] = frame["score"].astype(np.float64)
    frame["accuracy"] = frame["accuracy"].astype(np.float64)
    return frame.reset_index(drop=True)


@dataclass(frozen=True)
class TLlibTables:
    """The Transfer-Learning-Library model-selection tables, in this module's column names.

    ``scores``: ``metric, model, task, score``; ``truth``: ``model, task, accuracy`` (fine-tuned
    accuracy in percent); ``reported``: ``metric, task, statistic, value`` with statistic
    ``"pearson"`` or ``"weighted_tau"`` as printed in the source README.
    """

    scores: pd.DataFrame
    truth: pd.DataFrame
    reported: pd.DataFrame


def load_tllib_tables(directory: str | Path, *, drop_copied_scores: bool = True) -> TLlibTables:
    """Read the three ``tllib_*.csv`` files from ``directory`` (``../shared/groundtruth``).

    With ``drop_copied_scores`` the 10 ``NCE`` rows of ``DTD`` are left out: in the source they are
    a copy of the LogME column (see the ground-truth README). The Aircraft and OxfordIIITPets
    tables are kept; their printed correlations cannot be reproduced
    (``TLLIB_UNREPRODUCIBLE_DATASETS``).
    """
    directory = Path(directory)
    truth = _read_csv_with_columns(
        directory / TLLIB_FINETUNE_FILE, ["model", "dataset", "finetune_acc"]
    )
    scores = _read_csv_with_columns(
        directory / TLLIB_SCORES_FILE, ["metric", "model", "dataset", "score"]
    )
    reported = _read_csv_with_columns(
        directory / TLLIB_CORRELATIONS_FILE, ["metric", "dataset", "statistic", "value"]
    )
    truth = truth.rename(columns={"dataset": "task", "finetune_acc": "accuracy"})
    scores = scores.rename(columns={"dataset": "task"})
    if drop_copied_scores:
        copied = pd.Series(False, index=scores.index)
        for metric, task in TLLIB_COPIED_SCORES:
            copied |= (scores["metric"] == metric) & (scores["task"] == task)
        scores = scores[~copied].reset_index(drop=True)
    reported = reported.rename(columns={"dataset": "task"})
    statistic_names = {"Pearson Corr": "pearson", "Weighted Tau": "weighted_tau"}
    unknown = set(reported["statistic"]) - set(statistic_names)
    if unknown:
        raise ValueError(
            f"{directory / TLLIB_CORRELATIONS_FILE}: unknown statistic(s) {sorted(unknown)}"
        )
    reported["statistic"] = reported["statistic"].map(statistic_names)
    for frame, column in ((truth, "accuracy"), (scores, "score"), (reported, "value")):
        frame[column] = frame[column].astype(np.float64)
    return TLlibTables(scores=scores, truth=truth, reported=reported)


def load_truth_table(path: str | Path) -> pd.DataFrame:
    """Read a ground-truth table: CSV (or Parquet) with at least ``model``, ``task``, ``accuracy``.

    Any other columns (e.g. ``protocol``, ``seed``) are kept for grouping or filtering.
    """
    return _read_table(str(path))


def load_scores_table(path: str | Path) -> pd.DataFrame:
    """Read a scores table (the ``reduce`` output): Parquet or CSV, local path or ``s3://`` URI."""
    return _read_table(str(path))


def _read_table(uri: str) -> pd.DataFrame:
    """A CSV (by its ``.csv`` suffix) or Parquet table from a local path or ``s3://`` URI."""
    import pyarrow.csv as pa_csv
    import pyarrow.fs as pa_fs
    import pyarrow.parquet as pq

    from ray_logme.storage import filesystem_from_uri, storage_errors

    filesystem, path = filesystem_from_uri(uri)
    with storage_errors("reading", uri):
        info = filesystem.get_file_info(path)
        if info.type == pa_fs.FileType.NotFound:
            raise FileNotFoundError(f"table {uri} does not exist")
        if path.endswith(".csv"):
            with filesystem.open_input_stream(path) as stream:
                return pa_csv.read_csv(stream).to_pandas()
        return pq.read_table(path, filesystem=filesystem).to_pandas()


def run_evaluate(
    scores_path: str | Path,
    truth_path: str | Path,
    *,
    output_path: str | Path | None = None,
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
    """Load the two tables, run :func:`evaluate_ranking` on them, optionally save the result.

    ``scores_path`` and ``truth_path``: Parquet or CSV, local path or ``s3://`` URI (see
    :func:`load_scores_table`). The other options are those of :func:`evaluate_ranking`.
    ``output_path`` ending in ``.parquet`` gets Parquet, anything else CSV (the per-task table).
    """
    evaluation = evaluate_ranking(
        load_scores_table(scores_path),
        load_truth_table(truth_path),
        score_col=score_col,
        truth_col=truth_col,
        model_col=model_col,
        group_col=group_col,
        metric=metric,
        top_k=top_k,
        bootstrap_statistics=bootstrap_statistics,
        num_bootstrap=num_bootstrap,
        confidence=confidence,
        seed=seed,
        min_models=min_models,
    )
    if output_path is not None:
        output_path = Path(output_path)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        if output_path.suffix == ".parquet":
            evaluation.per_task.to_parquet(output_path, index=False)
        else:
            evaluation.per_task.to_csv(output_path, index=False)
    return evaluation
