"""Input checks and the PCA the sample-based metrics share (pure numpy, no I/O)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ray_logme.metrics.logme import _check_features, _check_labels


def class_sample(features: Any, labels: Any, kind: str, metric: str, min_per_class: int = 1):
    """``(float64[n, d] features, int64[n] class index 0..c-1, c)`` of a classification sample.

    Raises ``ValueError`` for regression (naming ``metric``), NaN/Inf features, mismatched
    lengths, fewer than 2 classes, or a class with fewer than ``min_per_class`` rows.
    """
    if kind != "classification":
        raise ValueError(
            f"{metric} is defined for classification only, got kind={kind!r}; "
            "use logme or knn for regression tasks"
        )
    array = np.asarray(_check_features(features), dtype=np.float64)
    ids = _check_labels(labels, kind)
    if ids.shape[0] != array.shape[0]:
        raise ValueError(f"features have {array.shape[0]} rows but labels have {ids.shape[0]}")
    classes, column = np.unique(ids, return_inverse=True)
    if classes.size < 2:
        raise ValueError(f"{metric} needs at least 2 classes, got {classes.tolist()}")
    counts = np.bincount(column)
    if counts.min() < min_per_class:
        raise ValueError(
            f"{metric} needs at least {min_per_class} samples per class; class "
            f"{classes[counts.argmin()]} has {counts.min()}"
        )
    return array, column.astype(np.int64), int(classes.size)


def pca_scores(features: np.ndarray, components: float | int) -> np.ndarray:
    """Centred ``features: float64[n, d]`` projected on their top principal axes.

    ``components``: an int keeps that many axes (at most ``min(n, d)``); a float in (0, 1) keeps
    the fewest axes whose explained variance reaches that fraction (scikit-learn's rule). Exact
    SVD, deterministic up to the sign of each axis (which none of the metrics depends on).
    """
    centred = features - features.mean(axis=0)
    _, singular, right = np.linalg.svd(centred, full_matrices=False)
    if isinstance(components, float) and 0 < components < 1:
        variance = singular**2
        total = variance.sum()
        if total <= 0:
            keep = 1
        else:
            ratio = np.cumsum(variance) / total
            keep = int(np.searchsorted(ratio, components, side="right") + 1)
    else:
        keep = int(components)
    keep = max(1, min(keep, right.shape[0]))
    return centred @ right[:keep].T
