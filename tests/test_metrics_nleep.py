"""NLEEP: LEEP by hand, the whole metric against a slow re-implementation with scikit-learn's PCA
and mixture, and the published properties (<= 0, better features score higher)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from ray_logme.metrics import get_metric, nleep
from ray_logme.metrics.nleep import leep_from_posteriors


def slow_leep(posteriors, labels):
    """LEEP (Nguyen et al. 2020) with explicit loops over classes and components."""
    n, z = posteriors.shape
    classes = np.unique(labels)
    joint = np.array([[posteriors[labels == c, j].sum() / n for j in range(z)] for c in classes])
    conditional = joint / joint.sum(axis=0)
    total = 0.0
    for i in range(n):
        c = int(np.searchsorted(classes, labels[i]))
        total += np.log(sum(posteriors[i, j] * conditional[c, j] for j in range(z)))
    return total / n


def test_leep_by_hand():
    """Two samples, two components: q = [[1, 0], [0.5, 0.5]], labels [0, 1]. P(y, z) =
    [[0.5, 0], [0.25, 0.25]], P(z) = [0.75, 0.25], P(y | z) = [[2/3, 0], [1/3, 1]].
    Sample 0: 1 * 2/3 = 2/3; sample 1: 0.5 * 1/3 + 0.5 * 1 = 2/3. LEEP = log(2/3)."""
    posteriors = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert leep_from_posteriors(posteriors, np.array([0, 1]), 2) == pytest.approx(np.log(2 / 3))


def test_leep_matches_loops_on_random_posteriors():
    rng = np.random.default_rng(0)
    posteriors = rng.dirichlet(np.ones(6), size=50)
    labels = rng.integers(0, 3, 50)
    assert leep_from_posteriors(posteriors, labels, 3) == pytest.approx(
        slow_leep(posteriors, labels), rel=1e-12
    )


def clusters(n=200, d=16, classes=4, spread=1.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    features = rng.normal(size=(n, d)) * spread + 3 * rng.normal(size=(classes, d))[labels]
    return features.astype(np.float32), labels


def test_nleep_equals_scikit_learn_pca_and_mixture():
    features, labels = clusters()
    projected = PCA(n_components=0.8, svd_solver="full").fit_transform(features.astype(np.float64))
    mixture = GaussianMixture(n_components=20, random_state=0, reg_covar=1e-6).fit(projected)
    expected = slow_leep(mixture.predict_proba(projected), labels)
    assert nleep(features, labels) == pytest.approx(expected, abs=1e-6)


def test_nleep_properties():
    features, labels = clusters(spread=0.3)
    separated = nleep(features, labels)
    assert separated <= 0
    assert separated > -0.05  # tight, well separated classes: every component is one class
    noise = np.random.default_rng(5).normal(size=features.shape)
    assert nleep(noise, labels) < separated - 0.3
    # Labels are names: relabelling does not change the score.
    assert nleep(features, np.array([7, 3, 11, 0])[labels]) == pytest.approx(separated, abs=1e-9)


def test_nleep_refuses_regression_and_registers_its_parameters():
    metric = get_metric("nleep")
    with pytest.raises(ValueError, match="nleep is defined for classification only"):
        metric.score_sample(np.ones((4, 2)), np.ones(4), "regression")
    assert metric.params["pca_variance"] == 0.8 and metric.params["components_per_class"] == 5
