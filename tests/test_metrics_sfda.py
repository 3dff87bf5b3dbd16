"""SFDA against a literal re-implementation of the authors' procedure (generalised
eigenproblem, projection and back-projection, explicit ConfMix loop), plus properties."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg
from scipy.special import softmax

from ray_logme.metrics import get_metric, sfda
from ray_logme.metrics.sfda import fda_posteriors


def literal_fda(x, y, shrinkage):
    """Regularised FDA the way the authors write it: S_b = S_t(shrunk) - S_w(shrunk), the
    generalised eigenvectors of (S_b, S_w), coef = means @ V @ V^T."""
    classes = np.unique(y)
    priors = np.array([(y == c).mean() for c in classes])
    means = np.array([x[y == c].mean(axis=0) for c in classes])
    within = sum(p * np.cov(x[y == c].T, bias=True) for p, c in zip(priors, classes, strict=True))
    within = np.atleast_2d(within)
    if shrinkage is None:
        shrinkage = max(np.exp(-5 * np.linalg.eigvalsh(within)[-1]), 1e-10)
    d = x.shape[1]
    total = np.atleast_2d(np.cov(x.T, bias=True))
    total = (1 - shrinkage) * total + shrinkage * np.trace(total) / d * np.eye(d)
    shrunk_within = (1 - shrinkage) * within + shrinkage * np.trace(within) / d * np.eye(d)
    _, vectors = linalg.eigh(total - shrunk_within, shrunk_within)
    coef = means @ vectors @ vectors.T
    intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
    return softmax(x @ coef.T + intercept, axis=1), shrinkage


def literal_sfda(features, labels):
    x = np.asarray(features, dtype=np.float64).copy()
    y = labels
    n, classes = len(y), np.unique(y)
    prob, shrinkage = literal_fda(x, y, None)
    prob = np.exp(prob) / np.exp(prob).sum(axis=1, keepdims=True)
    means = np.array([x[y == c].mean(axis=0) for c in classes])
    others = np.array(
        [(means.sum(axis=0) - means[i]) / (len(classes) - 1) for i in range(len(classes))]
    )
    for i, c in enumerate(classes):
        rows = np.where(y == c)[0]
        p = prob[rows, i][:, None]
        x[rows] = p * x[rows] + (1 - p) * others[i]
    prob, _ = literal_fda(x, y, shrinkage)
    return float(prob[np.arange(n), np.searchsorted(classes, y)].mean())


def problem(n=150, d=10, classes=3, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    features = (rng.normal(size=(n, d)) + 1.2 * rng.normal(size=(classes, d))[labels]) * scale
    return features.astype(np.float32), labels


@pytest.mark.parametrize("scale", [1.0, 0.2])
def test_sfda_equals_the_literal_procedure(scale):
    features, labels = problem(scale=scale)
    assert sfda(features, labels) == pytest.approx(literal_sfda(features, labels), rel=1e-8)


def test_fda_posteriors_equal_the_generalised_eigenproblem():
    features, labels = problem(d=6)
    x = features.astype(np.float64)
    ours, shrinkage = fda_posteriors(x, labels, 3, None)
    theirs, expected_shrinkage = literal_fda(x, labels, None)
    assert shrinkage == pytest.approx(expected_shrinkage, rel=1e-12)
    np.testing.assert_allclose(ours, theirs, rtol=1e-7, atol=1e-10)


def test_sfda_properties():
    features, labels = problem()
    value = sfda(features, labels)
    assert 0 < value <= 1
    noise = np.random.default_rng(4).normal(size=features.shape)
    assert sfda(noise, labels) < value
    assert sfda(features, np.array([5, 9, 2])[labels]) == pytest.approx(value, rel=1e-12)
    with pytest.raises(ValueError, match="sfda is defined for classification only"):
        get_metric("sfda").score_sample(features, labels.astype(float), "regression")
