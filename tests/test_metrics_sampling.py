"""The per-pair sample: deterministic, stratified, capped, independent of row order."""

from __future__ import annotations

import numpy as np
import pytest

from ray_logme.metrics import get_metric
from ray_logme.metrics.registry import metric_cache_name
from ray_logme.metrics.sampling import (
    MIN_PER_CLASS,
    row_priorities,
    sample_mask,
    stratified_quotas,
)


def test_priorities_are_uniform_and_seeded():
    ids = np.arange(100_000)
    first, second = row_priorities(ids, 0), row_priorities(ids, 1)
    assert first.min() >= 0 and first.max() < 1
    assert abs(first.mean() - 0.5) < 0.005
    assert np.corrcoef(first, second)[0, 1] < 0.01
    np.testing.assert_array_equal(row_priorities(ids[::-1], 0), first[::-1])


def test_quotas_by_hand():
    # 1000 rows, cap 100: 600/300/100 -> 60/30/10.
    np.testing.assert_array_equal(stratified_quotas(np.array([600, 300, 100]), 100), [60, 30, 10])
    # Rare classes keep min(count, MIN_PER_CLASS) rows on top of the floors (49.5 -> 49), so
    # the sample may exceed the cap by at most MIN_PER_CLASS per class: 49 + 2 + 1 = 52.
    assert stratified_quotas(np.array([990, 9, 1]), 50).tolist() == [49, MIN_PER_CLASS, 1]
    np.testing.assert_array_equal(stratified_quotas(np.array([5, 5]), 100), [5, 5])


def test_sample_is_stratified_capped_and_order_independent():
    rng = np.random.default_rng(0)
    labels = rng.choice([3, 8, 11], size=5000, p=[0.7, 0.2, 0.1])
    ids = rng.permutation(10_000)[:5000]
    keep = sample_mask(ids, labels, "classification", cap=500, seed=0)
    assert keep.sum() == 500
    for label in (3, 8, 11):
        expected = 500 * (labels == label).sum() / 5000
        assert abs(keep[labels == label].sum() - expected) <= 1
    order = rng.permutation(5000)
    again = sample_mask(ids[order], labels[order], "classification", cap=500, seed=0)
    assert set(ids[order][again]) == set(ids[keep])
    other = sample_mask(ids, labels, "classification", cap=500, seed=1)
    assert set(ids[other]) != set(ids[keep])
    assert sample_mask(ids, labels, "classification", cap=6000, seed=0).all()
    regression = sample_mask(ids, rng.normal(size=(5000, 2)), "regression", cap=300, seed=0)
    assert regression.sum() == 300
    with pytest.raises(ValueError, match="unique"):
        sample_mask(np.array([1, 1]), np.array([0, 1]), "classification", cap=1, seed=0)


def test_cache_names_carry_every_parameter():
    assert metric_cache_name(get_metric("logme")) == "logme"
    name = metric_cache_name(get_metric("nleep"), {"cap": 2000, "seed": 0})
    assert name == (
        "nleep-cap2000-components_per_class5-gmm_seed0-max_pca_dim64-pca_variance0.8-seed0"
    )
    assert metric_cache_name(get_metric("knn"), {"cap": 500, "seed": 3}) == "knn-cap500-k10-seed3"
