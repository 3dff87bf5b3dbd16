"""Shrinkage H-score (Ibrahim et al.) from streamed sufficient statistics (classification only).

Reference: S. Ibrahim, N. Ponomareva, R. Mazumder, "Newer is not always better: Rethinking
transferability metrics, their peculiarities, stability and performance", ECML-PKDD 2022.

The plain H-score ``tr(cov(f)^+ cov(g))`` (:mod:`ray_logme.metrics.hscore`) inverts a sample
covariance that is ill-conditioned when ``d`` is large for ``n``. The shrinkage H-score replaces it
by the Ledoit-Wolf estimate and shrinks the between-class covariance by the same intensity::

    S        = scatter / n                         (biased feature covariance, float64[d, d])
    mu       = tr(S) / d
    alpha    = min(b, c) / c,   c = ||S - mu I||_F^2 / d,
                                b = (sum_i ||f_i - mean||^4 / n - ||S||_F^2) / (d n)
    S_alpha  = (1 - alpha) S + alpha mu I
    H_alpha  = tr( S_alpha^+ (1 - alpha) cov(g) ),  cov(g) = between / (n - 1).

``alpha`` is exactly scikit-learn's ``ledoit_wolf_shrinkage`` (``assume_centered=False``); the
formula matches TLlib's ``regularized_h_score``. Everything comes from :class:`HScoreStats`:
``sum ||f_i - mean||^4`` is expanded into raw moments (``sum ||f||^4``, ``sum ||f||^2 f``, the
Gram and the feature sum), which loses about ``log10(((m^2 + v) / v)^2)`` of float64's 16 digits
for features of mean ``m`` and variance ``v`` (4 digits at ``m = 10 sqrt(v)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ray_logme.metrics.hscore import HSCORE_KINDS, ClassMoments, HScoreStats, _details
from ray_logme.metrics.registry import register_metric


def ledoit_wolf_intensity(moments: ClassMoments) -> float:
    """The Ledoit-Wolf shrinkage intensity ``alpha`` in [0, 1] (0 for one feature)."""
    n = float(moments.num_samples)
    dim = moments.scatter.shape[0]
    if dim == 1:
        return 0.0
    covariance = moments.scatter / n
    mu = float(np.trace(covariance)) / dim
    frobenius_sq = float(np.sum(covariance * covariance))
    spread = (frobenius_sq - 2.0 * mu * float(np.trace(covariance)) + dim * mu * mu) / dim
    noise = (moments.centred_fourth / n - frobenius_sq) / (dim * n)
    noise = min(noise, spread)
    return 0.0 if noise <= 0 or spread <= 0 else float(noise / spread)


def shrinkage_hscore_from_moments(moments: ClassMoments) -> tuple[float, float]:
    """``(H_alpha, alpha)`` as in the module docstring."""
    n = moments.num_samples
    dim = moments.scatter.shape[0]
    alpha = ledoit_wolf_intensity(moments)
    covariance = moments.scatter / n
    mu = float(np.trace(covariance)) / dim
    shrunk = (1.0 - alpha) * covariance + alpha * mu * np.eye(dim)
    inverse = np.linalg.pinv(shrunk, rcond=1e-15, hermitian=True)
    between = (1.0 - alpha) * moments.between / (n - 1)
    return float(np.sum(inverse * between)), alpha


def shrinkage_hscore(features: Any, labels: Any) -> float:
    """Shrinkage H-score of ``features: float[n, d]`` for class ids ``labels: int[n]``."""
    stats = HScoreStats("classification").update(features, labels)
    return shrinkage_hscore_from_moments(stats.moments())[0]


@register_metric
class ShrinkageHScoreMetric:
    """Shrinkage H-score (Ibrahim et al. 2022), streamed from :class:`HScoreStats`."""

    name = "shrinkage_hscore"
    kinds = HSCORE_KINDS

    def new_stats(self, kind: str) -> HScoreStats:
        return HScoreStats(kind)

    def score(self, stats: HScoreStats) -> tuple[float, dict[str, Any]]:
        value, _ = shrinkage_hscore_from_moments(stats.moments())
        return value, _details(stats)
