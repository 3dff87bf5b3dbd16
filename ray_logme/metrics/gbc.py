"""GBC: Gaussian Bhattacharyya coefficient, the class overlap in feature space (classification).

Reference: M. Pándy, A. Agostinelli, J. Uijlings, V. Ferrari, T. Mensink, "Transferability
Estimation using Bhattacharyya Class Separability", CVPR 2022.

On a sample ``features: float[n, d]`` reduced by PCA to ``pca_dim`` axes (64 in the paper), each
class ``c`` is a Gaussian ``N(mu_c, Sigma_c)`` with ``Sigma_c`` diagonal (its per-axis biased
variances, floored at 1e-4) or spherical (``s_c I``, ``s_c`` the mean of those variances, the
reference code's default). With ``Sigma = (Sigma_a + Sigma_b) / 2`` the Bhattacharyya distance is::

    D_B(a, b) = 1/8 (mu_a - mu_b)^T Sigma^-1 (mu_a - mu_b)
                + 1/2 log( det Sigma / sqrt(det Sigma_a det Sigma_b) ),

and ``GBC = - sum_{a != b} exp(-D_B(a, b))`` over ordered pairs (<= 0; 0 = no overlap at all).

Difference from the reference code: for spherical Gaussians the log-determinant term is the
exact ``k/2 log(...)`` of a ``k``-dimensional isotropic Gaussian (the reference code drops the
factor ``k``). Regression is refused: GBC needs classes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ray_logme.metrics._sample_inputs import class_sample, pca_scores
from ray_logme.metrics.registry import register_metric

VARIANCE_FLOOR = 1e-4


def bhattacharyya_coefficients(means: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """``exp(-D_B)`` for every pair of diagonal Gaussians: ``means, variances: float[c, k]``
    -> ``float[c, c]`` (diagonal = 1)."""
    average = (variances[:, None, :] + variances[None, :, :]) / 2  # float[c, c, k]
    difference = means[:, None, :] - means[None, :, :]
    mahalanobis = np.sum(difference**2 / average, axis=2) / 8
    log_det = np.sum(np.log(average), axis=2)
    own = np.sum(np.log(variances), axis=1)
    distance = mahalanobis + 0.5 * (log_det - 0.5 * (own[:, None] + own[None, :]))
    return np.exp(-distance)


def gbc(features: Any, labels: Any, *, pca_dim: int = 64, gaussian: str = "spherical") -> float:
    """GBC of ``features: float[n, d]`` for class ids ``labels: int[n]`` (module doc)."""
    if gaussian not in ("spherical", "diagonal"):
        raise ValueError(f"gaussian must be 'spherical' or 'diagonal', got {gaussian!r}")
    array, column, num_classes = class_sample(features, labels, "classification", "gbc")
    projected = pca_scores(array, pca_dim)
    means = np.zeros((num_classes, projected.shape[1]))
    variances = np.zeros_like(means)
    for index in range(num_classes):
        members = projected[column == index]
        means[index] = members.mean(axis=0)
        variances[index] = np.maximum(members.var(axis=0), VARIANCE_FLOOR)
    if gaussian == "spherical":
        variances = np.repeat(variances.mean(axis=1, keepdims=True), variances.shape[1], axis=1)
    coefficients = bhattacharyya_coefficients(means, variances)
    return -float(coefficients.sum() - np.trace(coefficients))


@register_metric
class GBCMetric:
    """GBC (Pándy et al. 2022) on the pair's sample."""

    name = "gbc"
    kinds = ("classification",)
    params: ClassVar[dict[str, Any]] = {"pca_dim": 64, "gaussian": "spherical"}

    def score_sample(self, features, labels, kind: str) -> tuple[float, dict[str, Any]]:
        class_sample(features, labels, kind, self.name)
        return gbc(
            features, labels, pca_dim=self.params["pca_dim"], gaussian=self.params["gaussian"]
        ), {}
