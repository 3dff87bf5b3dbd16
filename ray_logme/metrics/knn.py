"""kNN: leave-one-out k-nearest-neighbour agreement on the frozen features.

Reference for the idea: kNN accuracy on frozen features as a transferability estimator (e.g.
L. Sorkhei et al., 2025, who find it competitive with 23 other estimators); this is our own
variant, chosen to be smooth and deterministic:

* neighbours by cosine similarity of the centred features (``f_i - mean``, L2-normalised);
  a row is never its own neighbour (leave-one-out); ties go to the lower row index;
* classification: ``kNN = 1/n sum_i |{j in N_k(i): y_j = y_i}| / k``, the mean share of each
  sample's ``k`` neighbours that have its label (the leave-one-out kNN posterior of the true
  class; in [0, 1], higher is better);
* regression (``labels: float[n, t]``): predict each row by the mean target of its ``k``
  neighbours; ``kNN = mean over targets of 1 - SSE / SST`` (leave-one-out R^2, <= 1).

Cost: one ``n x n`` similarity matrix (``O(n^2 d)``), so it runs on the pair's capped sample.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ray_logme.metrics.logme import _check_features, _check_labels
from ray_logme.metrics.registry import register_metric


def neighbours(features: np.ndarray, k: int) -> np.ndarray:
    """``int64[n, k]``: each row's ``k`` most cosine-similar other rows (centred features)."""
    centred = features - features.mean(axis=0)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    unit = centred / np.where(norms > 0, norms, 1.0)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def knn(features: Any, labels: Any, kind: str = "classification", *, k: int = 10) -> float:
    """Leave-one-out kNN score of ``features: float[n, d]`` (module doc); ``k < n``."""
    array = np.asarray(_check_features(features), dtype=np.float64)
    targets = _check_labels(labels, kind)
    n = array.shape[0]
    if targets.shape[0] != n:
        raise ValueError(f"features have {n} rows but labels have {targets.shape[0]}")
    if not 1 <= k < n:
        raise ValueError(f"knn needs 1 <= k < n, got k={k} for n={n} samples")
    nearest = neighbours(array, k)
    if kind == "classification":
        if np.unique(targets).size < 2:
            raise ValueError(f"knn needs at least 2 classes, got {np.unique(targets).tolist()}")
        return float(np.mean(targets[nearest] == targets[:, None]))
    prediction = targets[nearest].mean(axis=1)  # float[n, t]
    total = ((targets - targets.mean(axis=0)) ** 2).sum(axis=0)
    if np.any(total <= 0):
        raise ValueError("knn regression needs targets that are not constant")
    return float(np.mean(1.0 - ((targets - prediction) ** 2).sum(axis=0) / total))


@register_metric
class KNNMetric:
    """Leave-one-out kNN agreement on the pair's sample (classification and regression)."""

    name = "knn"
    kinds = ("classification", "regression")
    params: ClassVar[dict[str, Any]] = {"k": 10}

    def score_sample(self, features, labels, kind: str) -> tuple[float, dict[str, Any]]:
        return knn(features, labels, kind, k=self.params["k"]), {}
