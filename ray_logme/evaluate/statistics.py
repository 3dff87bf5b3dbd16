"""How well one ranking of models predicts their accuracies: rank statistics and bootstrap CIs.

Pure numpy (no pandas, no I/O). Inputs are ``float[num_models]``: one score ("higher is better",
as LogME) and one ground-truth accuracy per model.

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
  task's tau_w comes with a percentile interval from resampling its models with replacement
  (``bootstrap_over_models``).
- the **mean over tasks** with a percentile bootstrap CI over tasks (``mean_over_tasks``,
  ``paired_difference_over_tasks``), and the null distribution of tau_w
  (``random_ranking_weighted_tau``).

All statistics are computed on float64 by one vectorised kernel (``_pairwise_tau``) that handles a
batch of bootstrap resamples at once; ``tests/test_evaluate.py`` checks it against scipy and
against a brute-force double loop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

RANK_STATISTICS = ("weighted_tau", "kendall_tau", "pearson")
DEFAULT_TOP_K = (1, 3)
DEFAULT_NUM_BOOTSTRAP = 1000
DEFAULT_CONFIDENCE = 0.95
# Bound on batch x models x models float64 elements per kernel call (about 32 MiB per array).
_MAX_KERNEL_ELEMENTS = 4_000_000


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
