"""The reduce stage's sample path: the sample read from shards is the one the sampling rule picks
from the concatenated rows (whatever the shard layout), sample metrics are scored on it, cached
under names that carry their parameters, and metrics refuse task kinds they do not define."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ray_logme.metrics import gbc, get_metric, knn, logme, metric_cache_name, nleep, sfda
from ray_logme.metrics.sampling import sample_mask
from ray_logme.reduce import (
    ReducePair,
    SampleSettings,
    read_pair_sample,
    reduce,
    score_cache_relpath,
    score_pair_sample,
)
from ray_logme.storage import FeatureStore

pytestmark = pytest.mark.timeout(300)


def write_pair(store, model_key, task_key, row_ids, features, labels, shard_rows):
    for index, start in enumerate(range(0, len(features), shard_rows)):
        stop = start + shard_rows
        store.write_feature_shard(
            model_key,
            task_key,
            index,
            row_ids[start:stop],
            labels[start:stop],
            features[start:stop],
            {},
        )


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(3)
    n, d = 900, 12
    labels = rng.choice([0, 2, 5], size=n, p=[0.6, 0.3, 0.1])
    features = (rng.normal(size=(n, d)) + 2 * rng.normal(size=(6, d))[labels]).astype(np.float32)
    row_ids = rng.permutation(5000)[:n].astype(np.int64)
    targets = np.stack([features[:, 0] + rng.normal(size=n), rng.normal(size=n)], axis=1)
    return row_ids, features, labels, targets


@pytest.mark.parametrize("shard_rows", [900, 128])
def test_sample_from_shards_is_the_rule_applied_to_all_rows(tmp_path, problem, shard_rows):
    row_ids, features, labels, _ = problem
    store = FeatureStore(str(tmp_path / "store"))
    write_pair(store, "m", "t", row_ids, features, labels, shard_rows)
    settings = SampleSettings(cap=300, seed=4)
    sample = read_pair_sample(store, "m", "t", "classification", settings)
    keep = sample_mask(row_ids, labels, "classification", 300, 4)
    assert sample.num_rows == 900 and sample.features.shape == (keep.sum(), 12)
    np.testing.assert_array_equal(sample.features, features[keep])
    np.testing.assert_array_equal(sample.labels, labels[keep])


def test_every_sample_metric_is_scored_on_the_one_sample(tmp_path, problem):
    row_ids, features, labels, targets = problem
    store = FeatureStore(str(tmp_path / "store"))
    write_pair(store, "m", "t", row_ids, features, labels, 200)
    write_pair(store, "m", "r", row_ids, features, targets, 200)
    settings = SampleSettings(cap=250, seed=0)
    keep = sample_mask(row_ids, labels, "classification", 250, 0)
    names = ["nleep", "sfda", "gbc", "knn"]
    results = score_pair_sample(store, "m", "t", "classification", names, settings)
    expected = {
        "nleep": nleep(features[keep], labels[keep]),
        "sfda": sfda(features[keep], labels[keep]),
        "gbc": gbc(features[keep], labels[keep]),
        "knn": knn(features[keep], labels[keep]),
    }
    for name in names:
        state, (value, details) = results[name]
        assert state == "ok"
        assert value == pytest.approx(expected[name], rel=1e-9, abs=1e-12)
        assert details["num_samples"] == keep.sum() and details["num_rows"] == 900
        assert details["feature_dim"] == 12 and details["num_targets"] == 3
        assert details["seconds"] > 0
    regression = score_pair_sample(store, "m", "r", "regression", ["knn", "nleep"], settings)
    keep_r = sample_mask(row_ids, targets, "regression", 250, 0)
    assert regression["knn"][1][0] == pytest.approx(
        knn(features[keep_r], targets[keep_r], "regression")
    )
    state, message = regression["nleep"]
    assert state == "failed" and "nleep is defined for classification only" in message


def test_reduce_scores_sample_and_streaming_metrics_with_parameterised_caches(
    ray_cluster, tmp_path, problem
):
    row_ids, features, labels, targets = problem
    store = FeatureStore(str(tmp_path / "store"))
    write_pair(store, "m", "cls", row_ids, features, labels, 300)
    write_pair(store, "m", "reg", row_ids, features, targets, 300)
    pairs = [
        ReducePair("M", "m", "cls", "cls", "classification"),
        ReducePair("M", "m", "reg", "reg", "regression"),
    ]
    metrics = ("logme", "shrinkage_hscore", "nleep", "knn")
    settings = SampleSettings(cap=400, seed=1)
    rows = reduce(pairs, store, "run-1", metrics=metrics, sample=settings).to_pylist()
    by = {(r["task"], r["metric"]): r for r in rows}
    assert len(rows) == 8
    assert by["cls", "logme"]["score"] == pytest.approx(logme(features, labels), rel=1e-9)
    assert by["reg", "shrinkage_hscore"]["state"] == "skipped"
    assert "not defined for regression" in by["reg", "shrinkage_hscore"]["error"]
    assert by["reg", "nleep"]["state"] == "skipped"
    keep = sample_mask(row_ids, labels, "classification", 400, 1)
    assert by["cls", "nleep"]["score"] == pytest.approx(nleep(features[keep], labels[keep]))
    assert by["cls", "nleep"]["num_samples"] == keep.sum()
    assert by["reg", "knn"]["state"] == "ok"
    for key in (("cls", "nleep"), ("cls", "knn"), ("reg", "knn")):
        assert by[key]["seconds"] > 0
    cache_name = metric_cache_name(get_metric("nleep"), settings.cache_params())
    assert "cap400" in cache_name and "seed1" in cache_name
    cached = json.loads(store.read_text(score_cache_relpath(cache_name, "m", "cls")))
    assert cached["score"] == by["cls", "nleep"]["score"] and cached["sample_cap"] == 400
    again = reduce(pairs, store, "run-2", metrics=metrics, sample=settings).to_pylist()
    assert all(r["cached"] for r in again if r["state"] == "ok")
    other_seed = reduce(pairs, store, "run-3", metrics=("nleep",), sample=SampleSettings(400, 2))
    (row,) = [r for r in other_seed.to_pylist() if r["task"] == "cls"]
    assert not row["cached"]
