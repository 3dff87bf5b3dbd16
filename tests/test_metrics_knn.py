"""Leave-one-out kNN: cases by hand, a brute-force loop, regression R^2, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from ray_logme.metrics import get_metric, knn


def test_hand_case():
    """Centred 2-D points on four directions; with k = 1 each point's neighbour is the one at the
    smallest angle. Points 0,1 (angle 0 and 10 deg) share label 0; 2,3 (180, 190 deg) label 1 ->
    every neighbour agrees: 1.0. Swap labels of 1 and 2 -> every neighbour disagrees: 0.0."""
    angles = np.deg2rad([0, 10, 180, 190])
    features = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert knn(features, np.array([0, 0, 1, 1]), k=1) == 1.0
    assert knn(features, np.array([0, 1, 0, 1]), k=1) == 0.0


def brute_force(features, labels, k):
    x = features - features.mean(axis=0)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    shares = []
    for i in range(len(x)):
        similarity = [(-(x[i] @ x[j]), j) for j in range(len(x)) if j != i]
        nearest = [j for _, j in sorted(similarity)[:k]]
        shares.append(np.mean([labels[j] == labels[i] for j in nearest]))
    return float(np.mean(shares))


def test_matches_brute_force():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    features = rng.normal(size=(60, 5)) + rng.normal(size=(3, 5))[labels]
    assert knn(features, labels, k=7) == pytest.approx(brute_force(features, labels, 7))


def test_regression_is_leave_one_out_r2():
    """Targets equal to the angle of points on a circle: neighbours predict well (R^2 near 1);
    shuffled targets do not (R^2 <= about 0)."""
    angles = np.linspace(0, np.pi, 50)
    features = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    targets = angles[:, None]
    good = knn(features, targets, "regression", k=2)
    assert 0.95 < good <= 1.0
    shuffled = np.random.default_rng(0).permutation(targets)
    assert knn(features, shuffled, "regression", k=2) < 0.2
    # k = 2 interior points are predicted by the mean of both neighbours = themselves.
    interior = angles[1:-1]
    assert np.allclose((angles[:-2] + angles[2:]) / 2, interior)
    assert get_metric("knn").kinds == ("classification", "regression")


def test_refusals():
    with pytest.raises(ValueError, match="1 <= k < n"):
        knn(np.ones((3, 2)), np.array([0, 1, 1]), k=3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        knn(np.random.default_rng(0).normal(size=(5, 2)), np.zeros(5, dtype=int), k=2)
