"""GBC: a case by hand, a loop re-implementation of the Bhattacharyya coefficients, properties."""

from __future__ import annotations

import numpy as np
import pytest

from ray_logme.metrics import gbc, get_metric


def test_hand_case_two_one_dimensional_classes():
    """Class A {0, 2}: mean 1, variance 1; class B {4, 6}: mean 5, variance 1. D_B = (5 - 1)^2
    / (8 * 1) + 0 = 2 for both orders, so GBC = -2 exp(-2) (PCA to 1 axis is a sign flip)."""
    features = np.array([[0.0], [2.0], [4.0], [6.0]])
    labels = np.array([0, 0, 1, 1])
    for gaussian in ("spherical", "diagonal"):
        assert gbc(features, labels, pca_dim=1, gaussian=gaussian) == pytest.approx(-2 * np.exp(-2))


def loop_gbc(features, labels, pca_dim, gaussian):
    """PCA by eigendecomposition of the covariance, then D_B by its textbook formula."""
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0)
    values, vectors = np.linalg.eigh(x.T @ x)
    x = x @ vectors[:, np.argsort(values)[::-1][:pca_dim]]
    stats = {}
    for c in np.unique(labels):
        members = x[labels == c]
        variance = np.maximum(members.var(axis=0), 1e-4)
        if gaussian == "spherical":
            variance = np.full_like(variance, variance.mean())
        stats[c] = (members.mean(axis=0), np.diag(variance))
    total = 0.0
    for a in stats:
        for b in stats:
            if a == b:
                continue
            (mu_a, s_a), (mu_b, s_b) = stats[a], stats[b]
            s = (s_a + s_b) / 2
            diff = mu_a - mu_b
            distance = diff @ np.linalg.inv(s) @ diff / 8 + 0.5 * np.log(
                np.linalg.det(s) / np.sqrt(np.linalg.det(s_a) * np.linalg.det(s_b))
            )
            total += np.exp(-distance)
    return -total


@pytest.mark.parametrize("gaussian", ["spherical", "diagonal"])
def test_gbc_equals_the_textbook_formula(gaussian):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 120)
    features = rng.normal(size=(120, 12)) + rng.normal(size=(4, 12))[labels]
    assert gbc(features, labels, pca_dim=5, gaussian=gaussian) == pytest.approx(
        loop_gbc(features, labels, 5, gaussian), rel=1e-8
    )


def test_gbc_properties():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 150)
    features = rng.normal(size=(150, 20)) + 2 * rng.normal(size=(3, 20))[labels]
    value = gbc(features, labels)
    assert value <= 0
    # Rotations and translations do not change the class overlap.
    rotation, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    assert gbc(features @ rotation + 4.0, labels) == pytest.approx(value, rel=1e-8)
    assert gbc(rng.normal(size=features.shape), labels) < value
    with pytest.raises(ValueError, match="gbc is defined for classification only"):
        get_metric("gbc").score_sample(features, labels.astype(float), "regression")
