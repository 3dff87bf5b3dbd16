"""NLEEP: LEEP on the posteriors of a Gaussian mixture fitted to the features (classification).

Reference: Y. Li, X. Jia, R. Sang, Y. Zhu, B. Green, L. Wang, B. Gong, "Ranking Neural
Checkpoints", CVPR 2021 (LEEP: C. Nguyen, T. Hassner, M. Seeger, C. Archambeau, ICML 2020).

On a sample ``features: float[n, d]`` with class index ``y_i``:

1. PCA keeping ``pca_variance`` of the variance (0.8 in the paper), at most ``max_pca_dim``
   axes (ours, a bound on the cost of the full-covariance mixture) -> ``x: float[n, k]``;
2. a Gaussian mixture with ``components_per_class * num_classes`` full-covariance components
   (5 per class in the paper), fitted by EM from a seeded k-means start -> posteriors
   ``q_i(z) = p(z | x_i)``;
3. LEEP on those "dummy source labels"::

       P(y, z) = 1/n sum_{i: y_i = y} q_i(z),   P(y | z) = P(y, z) / sum_y P(y, z),
       NLEEP   = 1/n sum_i log( sum_z q_i(z) P(y_i | z) )           (<= 0; higher is better).

Differences from the authors' code: the PCA is an exact SVD, the mixture's seed is ours
(``seed``), and the log of LEEP is kept (the SFDA repository's copy drops it).
Regression is refused: LEEP needs class labels.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ray_logme.metrics._sample_inputs import class_sample, pca_scores
from ray_logme.metrics.registry import register_metric


def leep_from_posteriors(posteriors: np.ndarray, column: np.ndarray, num_classes: int) -> float:
    """LEEP of ``posteriors: float[n, z]`` (rows sum to 1) for class index ``column: int[n]``."""
    n = posteriors.shape[0]
    joint = np.zeros((num_classes, posteriors.shape[1]))
    np.add.at(joint, column, posteriors)
    joint /= n
    marginal = joint.sum(axis=0)
    conditional = joint / np.where(marginal > 0, marginal, 1.0)  # P(y | z): float[c, z]
    expected = np.einsum("iz,iz->i", posteriors, conditional[column])
    return float(np.mean(np.log(np.maximum(expected, np.finfo(np.float64).tiny))))


def nleep(
    features: Any,
    labels: Any,
    *,
    pca_variance: float = 0.8,
    max_pca_dim: int = 64,
    components_per_class: int = 5,
    seed: int = 0,
) -> float:
    """NLEEP of ``features: float[n, d]`` for class ids ``labels: int[n]`` (see module doc)."""
    from sklearn.mixture import GaussianMixture

    array, column, num_classes = class_sample(features, labels, "classification", "nleep")
    projected = pca_scores(array, pca_variance)[:, :max_pca_dim]
    num_components = min(components_per_class * num_classes, projected.shape[0])
    mixture = GaussianMixture(
        n_components=num_components, covariance_type="full", random_state=seed, reg_covar=1e-6
    ).fit(projected)
    return leep_from_posteriors(mixture.predict_proba(projected), column, num_classes)


@register_metric
class NLEEPMetric:
    """NLEEP (Li et al. 2021) on the pair's sample."""

    name = "nleep"
    kinds = ("classification",)
    params: ClassVar[dict[str, Any]] = {
        "pca_variance": 0.8,
        "max_pca_dim": 64,
        "components_per_class": 5,
        "gmm_seed": 0,
    }

    def score_sample(self, features, labels, kind: str) -> tuple[float, dict[str, Any]]:
        class_sample(features, labels, kind, self.name)
        value = nleep(
            features,
            labels,
            pca_variance=self.params["pca_variance"],
            max_pca_dim=self.params["max_pca_dim"],
            components_per_class=self.params["components_per_class"],
            seed=self.params["gmm_seed"],
        )
        return value, {}
