"""H-score from streamed sufficient statistics (classification only).

Reference: Y. Bao, Y. Li, S.-L. Huang, L. Zhang, L. Zheng, A. Zamir, L. Guibas, "An
Information-Theoretic Approach to Transferability in Task Transfer Learning", ICIP 2019.

For features ``f: float[n, d]`` and class labels ``y``::

    H(f) = tr( cov(f)^+ cov(g) ),    g_i = E[f | y = y_i]  (the class mean of sample i),

with ``cov`` the unbiased sample covariance (``n - 1``) and ``^+`` the pseudo-inverse, as in the
authors' and TLlib's code. Higher is better. Both covariances come from the sufficient statistics
:class:`~ray_logme.metrics.LogMEStats` already keeps: ``F^T F`` (the Gram), ``F^T Y`` (with one-hot
``Y`` its columns are the per-class feature sums) and ``diag(Y^T Y)`` (the class counts); the
feature sum is the row sum of ``F^T Y`` because every one-hot row sums to one. So H-score streams
and merges exactly like LogME, at the cost of one ``d x d`` pseudo-inverse.

:class:`HScoreStats` adds the two small extras the shrinkage H-score
(:mod:`ray_logme.metrics.shrinkage_hscore`) needs for its Ledoit-Wolf intensity: the scalar
``sum_i ||f_i||^4`` and the vector ``sum_i ||f_i||^2 f_i: float64[d]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_logme.metrics.logme import LogMEStats, _check_features, _check_labels
from ray_logme.metrics.registry import register_metric

#: The task kinds H-score defines (it needs class-conditional means).
HSCORE_KINDS = ("classification",)


def refuse_regression(metric: str, kind: str) -> None:
    """``ValueError`` unless ``kind`` is ``"classification"``: the message names the metric."""
    if kind != "classification":
        raise ValueError(
            f"{metric} is defined for classification only (it needs class-conditional feature "
            f"statistics), got kind={kind!r}; use logme or knn for regression tasks"
        )


class HScoreStats(LogMEStats):
    """:class:`LogMEStats` plus ``sum ||f||^4`` (``float64``) and ``sum ||f||^2 f: float64[d]``.

    Everything :class:`LogMEStats` does (update in chunks, merge disjoint shards, pickle) holds;
    :meth:`moments` returns the centred moments H-score and the shrinkage H-score use.
    Classification only.
    """

    def __init__(self, kind: str = "classification", **options: Any) -> None:
        refuse_regression("hscore", kind)
        super().__init__(kind, **options)
        self.sum_fourth = 0.0  # sum_i ||f_i||^4
        self.sum_sq_weighted: np.ndarray | None = None  # sum_i ||f_i||^2 f_i: float64[d]

    def update(self, features: Any, labels: Any) -> HScoreStats:
        checked = _check_features(features)
        _check_labels(labels, self.kind)
        super().update(checked, labels)
        if hasattr(checked, "detach"):
            checked = checked.detach().cpu().numpy()
        if checked.shape[0]:
            block = np.asarray(checked, dtype=np.float64)
            squared_norm = np.einsum("ij,ij->i", block, block)
            self.sum_fourth += float(squared_norm @ squared_norm)
            weighted = squared_norm @ block
            if self.sum_sq_weighted is None:
                self.sum_sq_weighted = weighted
            else:
                self.sum_sq_weighted = self.sum_sq_weighted + weighted
        return self

    def merge(self, other: LogMEStats) -> HScoreStats:
        if not isinstance(other, HScoreStats):
            raise TypeError(f"can only merge HScoreStats, got {type(other).__name__}")
        was_empty = self.n == 0
        super().merge(other)  # an empty self takes over other's whole state, extras included
        if not was_empty and other.n:
            self.sum_fourth += other.sum_fourth
            self.sum_sq_weighted = self.sum_sq_weighted + other.sum_sq_weighted
        return self

    def copy(self) -> HScoreStats:
        clone = HScoreStats.__new__(HScoreStats)
        clone.__setstate__(LogMEStats.copy(self).__dict__)
        return clone

    def moments(self) -> ClassMoments:
        """The centred moments of the features (float64, see :class:`ClassMoments`)."""
        if self.n < 2:
            raise ValueError(f"H-score needs at least 2 samples, got {self.n}")
        if self.num_targets < 2:
            raise ValueError(
                f"H-score needs at least 2 classes, the labels contain only {self.targets.tolist()}"
            )
        n = float(self.n)
        class_sums = self.cross.T  # float64[c, d]
        counts = self.y_sq  # float64[c]
        total = class_sums.sum(axis=0)  # one-hot rows sum to 1: F^T 1
        mean = total / n
        scatter = self.gram - n * np.outer(mean, mean)  # sum (f - mean)(f - mean)^T
        scatter = (scatter + scatter.T) / 2
        class_means = class_sums / counts[:, None]
        offsets = class_means - mean
        between = (offsets * counts[:, None]).T @ offsets  # sum_i (g_i - mean)(g_i - mean)^T
        # sum_i ||f_i - mean||^4 from raw moments: with a_i = ||f_i||^2, b_i = mean . f_i,
        # c = ||mean||^2: ||f_i - mean||^4 = (a_i - 2 b_i + c)^2, summed term by term.
        c = float(mean @ mean)
        gram_trace = float(np.trace(self.gram))
        fourth = (
            self.sum_fourth
            + 4.0 * float(mean @ self.gram @ mean)
            + n * c * c
            - 4.0 * float(mean @ self.sum_sq_weighted)
            + 2.0 * c * gram_trace
            - 4.0 * c * float(mean @ total)
        )
        return ClassMoments(
            num_samples=self.n,
            mean=mean,
            scatter=scatter,
            between=between,
            centred_fourth=max(fourth, 0.0),
        )


@dataclass(frozen=True)
class ClassMoments:
    """Centred feature moments of one (features, labels) stream.

    ``mean: float64[d]``; ``scatter = sum_i (f_i - mean)(f_i - mean)^T: float64[d, d]``;
    ``between = sum_i (g_i - mean)(g_i - mean)^T: float64[d, d]`` with ``g_i`` the class mean of
    sample ``i``; ``centred_fourth = sum_i ||f_i - mean||^4``. Units: feature units squared
    (fourth power for ``centred_fourth``).
    """

    num_samples: int
    mean: np.ndarray
    scatter: np.ndarray
    between: np.ndarray
    centred_fourth: float


def hscore_from_moments(moments: ClassMoments) -> float:
    """``tr(cov(f)^+ cov(g))`` with both covariances unbiased (``n - 1``; the factors cancel)."""
    inverse = np.linalg.pinv(moments.scatter, rcond=1e-15, hermitian=True)
    return float(np.sum(inverse * moments.between))  # tr(A B) for symmetric B


def hscore(features: Any, labels: Any) -> float:
    """H-score of ``features: float[n, d]`` for class ids ``labels: int[n]`` (higher is better)."""
    stats = HScoreStats("classification").update(features, labels)
    return hscore_from_moments(stats.moments())


@register_metric
class HScoreMetric:
    """Plain H-score (Bao et al. 2019), streamed from :class:`HScoreStats`; for reference next to
    the shrinkage H-score, which is better conditioned when ``d`` is large for ``n``."""

    name = "hscore"
    kinds = HSCORE_KINDS

    def new_stats(self, kind: str) -> HScoreStats:
        return HScoreStats(kind)

    def score(self, stats: HScoreStats) -> tuple[float, dict[str, Any]]:
        return hscore_from_moments(stats.moments()), _details(stats)


def _details(stats: LogMEStats) -> dict[str, Any]:
    return {
        "num_samples": int(stats.n),
        "feature_dim": int(stats.feature_dim),
        "num_targets": int(stats.num_targets),
    }
