"""H-score and shrinkage H-score from streamed statistics: against direct, slow re-implementations
(np.cov, per-class loops, scikit-learn's Ledoit-Wolf), streaming/merging, invariances, refusal."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf, ledoit_wolf_shrinkage

from ray_logme.metrics import HScoreStats, get_metric, hscore, shrinkage_hscore
from ray_logme.metrics.shrinkage_hscore import (
    ledoit_wolf_intensity,
    shrinkage_hscore_from_moments,
)


def direct_hscore(features, labels):
    """tr(pinv(cov f) cov g), g_i = the mean of sample i's class (Bao et al.; as TLlib)."""
    f = np.asarray(features, dtype=np.float64)
    g = np.zeros_like(f)
    for label in np.unique(labels):
        g[labels == label] = f[labels == label].mean(axis=0)
    cov_f = np.cov(f, rowvar=False)
    cov_g = np.cov(g, rowvar=False)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ cov_g))


def direct_shrinkage_hscore(features, labels):
    """Ibrahim et al.: Ledoit-Wolf covariance (scikit-learn) and (1 - alpha) cov g."""
    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(axis=0)
    estimate = LedoitWolf(assume_centered=False).fit(f)
    alpha = estimate.shrinkage_
    g = np.zeros_like(f)
    for label in np.unique(labels):
        g[labels == label] = f[labels == label].mean(axis=0)
    cov_g = np.cov(g, rowvar=False)
    return float(
        np.trace(np.linalg.pinv(estimate.covariance_, rcond=1e-15) @ ((1 - alpha) * cov_g))
    )


def problem(n=240, d=12, classes=4, offset=3.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    centres = rng.normal(size=(classes, d))
    features = rng.normal(size=(n, d)) + centres[labels] + offset
    return features.astype(np.float32), labels


@pytest.mark.parametrize("n, d", [(240, 12), (60, 40), (30, 80)])
def test_hscore_equals_the_direct_formula(n, d):
    features, labels = problem(n, d)
    assert hscore(features, labels) == pytest.approx(direct_hscore(features, labels), rel=1e-7)


@pytest.mark.parametrize("n, d, offset", [(240, 12, 3.0), (60, 40, 0.0), (30, 80, 1.0)])
def test_shrinkage_hscore_equals_scikit_learn_ledoit_wolf(n, d, offset):
    features, labels = problem(n, d, offset=offset)
    expected = direct_shrinkage_hscore(features, labels)
    assert shrinkage_hscore(features, labels) == pytest.approx(expected, rel=1e-7)
    stats = HScoreStats().update(features, labels)
    alpha = ledoit_wolf_intensity(stats.moments())
    assert alpha == pytest.approx(ledoit_wolf_shrinkage(features.astype(np.float64)), rel=1e-8)
    assert 0.0 <= alpha <= 1.0


def test_fourth_moment_survives_a_large_feature_mean():
    """The centred fourth moment is expanded from raw moments: check it at mean 30 x std."""
    features, labels = problem(300, 10, offset=30.0)
    expected = direct_shrinkage_hscore(features, labels)
    assert shrinkage_hscore(features, labels) == pytest.approx(expected, rel=1e-6)


def test_streamed_and_merged_statistics_equal_one_pass():
    features, labels = problem(500, 16)
    one = HScoreStats().update(features, labels)
    parts = [
        HScoreStats().update(features[i : i + 70], labels[i : i + 70]) for i in range(0, 500, 70)
    ]
    merged = HScoreStats()
    for part in parts:
        merged.merge(part)
    merged = pickle.loads(pickle.dumps(merged)).copy()
    assert isinstance(merged, HScoreStats) and merged.n == 500
    a, b = one.moments(), merged.moments()
    assert b.centred_fourth == pytest.approx(a.centred_fourth, rel=1e-10)
    np.testing.assert_allclose(b.between, a.between, rtol=1e-9, atol=1e-9)
    for name in ("hscore", "shrinkage_hscore"):
        metric = get_metric(name)
        value, details = metric.score(merged)
        assert value == pytest.approx(metric.score(one)[0], rel=1e-9)
        assert details == {"num_samples": 500, "feature_dim": 16, "num_targets": 4}


def test_hscore_is_invariant_to_invertible_affine_maps_and_label_names():
    """Published property: tr(cov(f)^-1 cov(g)) is unchanged by f -> A f + b (A invertible)."""
    features, labels = problem(300, 8)
    rng = np.random.default_rng(1)
    mixed = features.astype(np.float64) @ rng.normal(size=(8, 8)) + 5.0
    assert hscore(mixed, labels) == pytest.approx(hscore(features, labels), rel=1e-6)
    renamed = np.array([10, -3, 7, 99])[labels]
    assert hscore(features, renamed) == pytest.approx(hscore(features, labels), rel=1e-12)
    # Shrinkage H-score: Ledoit-Wolf is scale-invariant, so f -> c f + b leaves it unchanged.
    scaled = 7.5 * features.astype(np.float64) - 2.0
    assert shrinkage_hscore(scaled, labels) == pytest.approx(
        shrinkage_hscore(features, labels), rel=1e-7
    )


def test_hand_case_one_feature_two_classes():
    """d = 1: class values {0, 2} and {4, 6}. cov f = var(0,2,4,6) = 20/3; g = (1,1,5,5) has
    cov g = 16/3; H = (16/3) / (20/3) = 0.8. One feature: Ledoit-Wolf does not shrink, so the
    shrinkage H-score is tr(S^-1 cov g) with the biased S = 5: (16/3) / 5 = 16/15."""
    features = np.array([[0.0], [2.0], [4.0], [6.0]])
    labels = np.array([0, 0, 1, 1])
    assert hscore(features, labels) == pytest.approx(0.8, rel=1e-12)
    stats = HScoreStats().update(features, labels)
    assert shrinkage_hscore_from_moments(stats.moments()) == pytest.approx((16 / 15, 0.0))


def test_informative_features_score_higher_and_shrinkage_stays_finite_when_d_exceeds_n():
    features, labels = problem(60, 40, offset=0.0)
    noise = np.random.default_rng(3).normal(size=features.shape)
    assert shrinkage_hscore(features, labels) > shrinkage_hscore(noise, labels)
    wide, wide_labels = problem(30, 200)
    assert np.isfinite(shrinkage_hscore(wide, wide_labels))


def test_regression_and_degenerate_input_are_refused():
    with pytest.raises(ValueError, match="hscore is defined for classification only"):
        HScoreStats("regression")
    with pytest.raises(ValueError, match="at least 2 classes"):
        hscore(np.ones((5, 2)), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="NaN"):
        hscore(np.full((4, 2), np.nan), np.array([0, 0, 1, 1]))
    assert get_metric("hscore").kinds == ("classification",)
    assert get_metric("shrinkage_hscore").kinds == ("classification",)
