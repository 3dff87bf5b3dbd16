"""SFDA: self-challenging Fisher discriminant analysis (classification only).

Reference: W. Shao, X. Zhao, Y. Ge, Z. Zhang, L. Yang, X. Wang, Y. Shan, P. Luo, "Not All Models
Are Equal: Predicting Model Transferability in a Self-challenging Fisher Space", ECCV 2022.

On a sample ``features: float[n, d]`` with class index ``y``, priors ``pi_c = n_c / n``:

1. Regularised FDA. ``S_w = sum_c pi_c cov_c`` (biased per-class covariances),
   ``lambda = max(exp(-5 * lambda_max(S_w)), 1e-10)`` (adaptive strength; ``lambda_max`` is
   S_w's largest eigenvalue), ``S_w' = (1 - lambda) S_w + lambda tr(S_w)/d I``. With every
   discriminant direction kept, the FDA classifier is the linear discriminant
   ``logit_c(x) = x^T S_w'^-1 mu_c - 1/2 mu_c^T S_w'^-1 mu_c + log pi_c`` and
   ``p(c | x) = softmax(logit(x))``.
2. ConfMix (the "self-challenge"): soften ``p`` once more, ``p~ = softmax(p)`` (a softmax of
   probabilities, as the authors do), and move each sample towards the mean of the *other*
   class means by its confidence: ``x_i <- p~_i(y_i) x_i + (1 - p~_i(y_i)) mean_{c != y_i} mu_c``.
3. Refit step 1 on the mixed samples with the same ``lambda``;
   ``SFDA = 1/n sum_i p(y_i | x_i)`` (in (0, 1]; higher is better).

Difference from the authors' code: ``lambda_max`` is the exact largest eigenvalue rather than
three power iterations; the FDA projection followed by its inverse (``evecs evecs^T``) is written
as the ``S_w'^-1`` it equals. Regression is refused: FDA needs classes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.special import softmax

from ray_logme.metrics._sample_inputs import class_sample
from ray_logme.metrics.registry import register_metric


def _class_means(array: np.ndarray, column: np.ndarray, num_classes: int) -> np.ndarray:
    sums = np.zeros((num_classes, array.shape[1]))
    np.add.at(sums, column, array)
    return sums / np.bincount(column, minlength=num_classes)[:, None]


def _within_scatter(array, column, means, priors) -> np.ndarray:
    centred = array - means[column]
    counts = np.bincount(column, minlength=means.shape[0]).astype(np.float64)
    weights = priors[column] / counts[column]  # pi_c / n_c per row: sum_c pi_c cov_c
    return (centred * weights[:, None]).T @ centred


def fda_posteriors(
    array: np.ndarray, column: np.ndarray, num_classes: int, shrinkage: float | None
) -> tuple[np.ndarray, float]:
    """``(p(c | x): float[n, c], lambda)`` of the regularised FDA classifier of step 1."""
    priors = np.bincount(column, minlength=num_classes) / column.size
    means = _class_means(array, column, num_classes)
    within = _within_scatter(array, column, means, priors)
    if shrinkage is None:
        largest = float(np.linalg.eigvalsh(within)[-1])
        shrinkage = max(float(np.exp(-5.0 * largest)), 1e-10)
    dim = within.shape[0]
    shrunk = (1.0 - shrinkage) * within
    shrunk[np.diag_indices(dim)] += shrinkage * np.trace(within) / dim
    solved = np.linalg.solve(shrunk, means.T)  # S_w'^-1 mu_c: float[d, c]
    logits = array @ solved - 0.5 * np.einsum("cd,dc->c", means, solved) + np.log(priors)
    return softmax(logits, axis=1), shrinkage


def sfda(features: Any, labels: Any) -> float:
    """SFDA of ``features: float[n, d]`` for class ids ``labels: int[n]`` (module doc)."""
    array, column, num_classes = class_sample(features, labels, "classification", "sfda")
    posteriors, shrinkage = fda_posteriors(array, column, num_classes, None)
    softened = softmax(posteriors, axis=1)
    means = _class_means(array, column, num_classes)
    others = (means.sum(axis=0) - means) / (num_classes - 1)  # mean of the other class means
    confidence = softened[np.arange(column.size), column][:, None]
    mixed = confidence * array + (1.0 - confidence) * others[column]
    second, _ = fda_posteriors(mixed, column, num_classes, shrinkage)
    return float(np.mean(second[np.arange(column.size), column]))


@register_metric
class SFDAMetric:
    """SFDA (Shao et al. 2022) on the pair's sample."""

    name = "sfda"
    kinds = ("classification",)
    params: ClassVar[dict[str, Any]] = {}

    def score_sample(self, features, labels, kind: str) -> tuple[float, dict[str, Any]]:
        class_sample(features, labels, kind, self.name)
        return sfda(features, labels), {}
