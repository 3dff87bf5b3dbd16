"""The reduce stage: scores from streamed shards equal LogME on the concatenated features."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ray_logme.metrics import LogMEStats, logme
from ray_logme.reduce import ReducePair, reduce, score_cache_relpath, stats_of_shards
from ray_logme.storage import CorruptFileError, FeatureStore

pytestmark = pytest.mark.timeout(300)


def write_pair(store, model_key, task_key, features, labels, shard_rows):
    for index, start in enumerate(range(0, len(features), shard_rows)):
        stop = start + shard_rows
        store.write_feature_shard(
            model_key,
            task_key,
            index,
            np.arange(start, min(stop, len(features)), dtype=np.int64),
            labels[start:stop],
            features[start:stop],
            {"test": True},
        )


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    n, d = 700, 24
    labels = rng.integers(0, 5, size=n)
    labels[labels == 3] = 4  # class 3 never occurs: no empty one-hot column
    informative = np.eye(5)[labels] @ rng.normal(size=(5, d))
    features = (informative + rng.normal(scale=2.0, size=(n, d)) + 3.0).astype(np.float32)
    targets = np.stack([features[:, :3].sum(1), rng.normal(size=n)], axis=1)
    targets[:, 0] += rng.normal(scale=0.5, size=n)
    return features, labels.astype(np.int64), targets


@pytest.fixture(scope="module")
def scored(ray_cluster, s3_server, problem):
    features, labels, targets = problem
    store = FeatureStore(f"s3://{s3_server.new_bucket('reduce')}/store")
    write_pair(store, "model-a", "cls-task", features, labels, shard_rows=100)  # 7 shards
    write_pair(store, "model-a", "reg-task", features, targets, shard_rows=250)  # 3 shards
    write_pair(store, "model-b", "cls-task", features[:, :5], labels, shard_rows=700)
    pairs = [
        ReducePair("A", "model-a", "cls", "cls-task", "classification"),
        ReducePair("A", "model-a", "reg", "reg-task", "regression"),
        ReducePair("B", "model-b", "cls", "cls-task", "classification"),
        ReducePair("C", "model-c", "cls", "cls-task", "classification", "failed", "boom"),
    ]
    table = reduce(pairs, store, "run-1", shards_per_task=2, chunk_rows=64)
    return store, pairs, table.to_pylist()


def row_of(rows, model, task):
    (row,) = [r for r in rows if r["model"] == model and r["task"] == task]
    return row


def test_scores_equal_logme_on_the_concatenated_features(scored, problem):
    features, labels, targets = problem
    _, _, rows = scored
    cls = row_of(rows, "A", "cls")
    assert cls["state"] == "ok"
    assert cls["score"] == pytest.approx(logme(features, labels), rel=1e-9)
    assert (cls["num_samples"], cls["feature_dim"], cls["num_targets"]) == (700, 24, 4)
    reg = row_of(rows, "A", "reg")
    assert reg["score"] == pytest.approx(logme(features, targets, kind="regression"), rel=1e-9)
    assert reg["num_targets"] == 2
    narrow = row_of(rows, "B", "cls")
    assert narrow["score"] == pytest.approx(logme(features[:, :5], labels), rel=1e-9)
    # The informative 24-d features must beat their first 5 columns here.
    assert cls["score"] > narrow["score"]


def test_extract_failures_become_failed_rows(scored):
    _, _, rows = scored
    failed = row_of(rows, "C", "cls")
    assert failed["state"] == "failed" and failed["error"] == "boom"
    assert failed["score"] is None


def test_scores_are_cached_by_content_key(scored, ray_cluster):
    store, pairs, rows = scored
    cached = json.loads(store.read_text(score_cache_relpath("logme", "model-a", "cls-task")))
    assert cached["score"] == row_of(rows, "A", "cls")["score"]
    again = reduce(pairs, store, "run-2").to_pylist()
    for old, new in zip(rows, again, strict=True):
        assert new["score"] == old["score"]
        assert new["cached"] == (old["state"] == "ok")
        assert new["run_id"] == "run-2"


def test_a_corrupt_shard_fails_its_own_pair_only(ray_cluster, tmp_path, problem):
    features, labels, _ = problem
    store = FeatureStore(str(tmp_path / "store"))
    write_pair(store, "good", "t", features, labels, shard_rows=350)
    write_pair(store, "bad", "t", features, labels, shard_rows=350)
    store.write_bytes(store.feature_shard_relpath("bad", "t", 1), b"not parquet", overwrite=True)
    rows = reduce(
        [
            ReducePair("good", "good", "t", "t", "classification"),
            ReducePair("bad", "bad", "t", "t", "classification"),
        ],
        store,
        "run",
    ).to_pylist()
    assert rows[0]["state"] == "ok"
    assert rows[1]["state"] == "failed"
    assert "scoring failed" in rows[1]["error"]
    assert store.uri_of(store.feature_shard_relpath("bad", "t", 1)) in rows[1]["error"]
    assert not store.exists(score_cache_relpath("logme", "bad", "t"))
    # Moved aside: the next extract recomputes it instead of the pair failing forever.
    assert store.committed_feature_shards("bad", "t") == {0}


def test_a_truncated_shard_fails_naming_the_file_and_a_rewrite_repairs_it(problem, tmp_path):
    features, labels, _ = problem
    store = FeatureStore(str(tmp_path / "store"))
    write_pair(store, "m", "t", features, labels, shard_rows=350)
    relpath = store.feature_shard_relpath("m", "t", 1)
    whole = store.read_bytes(relpath)
    store.write_bytes(relpath, whole[: len(whole) // 3])  # torn on disk
    with pytest.raises(CorruptFileError) as caught:
        stats_of_shards(store, "m", "t", "classification", [0, 1])
    assert store.uri_of(relpath) in str(caught.value)
    assert store.committed_feature_shards("m", "t") == {0}
    write_pair(store, "m", "t", features, labels, shard_rows=350)  # what the rerun's extract does
    stats = stats_of_shards(store, "m", "t", "classification", [0, 1])
    assert stats.logme() == pytest.approx(logme(features, labels), rel=1e-9)


def test_merged_shard_statistics_equal_one_pass(problem, tmp_path):
    features, labels, _ = problem
    store = FeatureStore(str(tmp_path / "store"))
    write_pair(store, "m", "t", features, labels, shard_rows=90)
    parts = [
        stats_of_shards(store, "m", "t", "classification", [i], chunk_rows=32) for i in range(8)
    ]
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    whole = LogMEStats("classification").update(features, labels)
    np.testing.assert_allclose(merged.gram, whole.gram, rtol=1e-12)
    assert merged.logme() == pytest.approx(whole.logme(), rel=1e-10)


def test_streaming_memory_does_not_grow_with_the_features(tmp_path):
    """Peak RSS growth while scoring ~200 MB of features stays far below their size."""
    n, d, shard_rows = 200_000, 256, 20_000
    store = FeatureStore(str(tmp_path / "store"))
    rng = np.random.default_rng(0)
    for index in range(n // shard_rows):
        block = rng.normal(size=(shard_rows, d)).astype(np.float32)
        start = index * shard_rows
        store.write_feature_shard(
            "big",
            "t",
            index,
            np.arange(start, start + shard_rows),
            rng.integers(0, 10, size=shard_rows),
            block,
            {},
        )
    feature_bytes = n * d * 4
    script = textwrap.dedent(
        f"""
        import resource, json
        from ray_logme.reduce import stats_of_shards
        from ray_logme.storage import CorruptFileError, FeatureStore
        store = FeatureStore({str(tmp_path / "store")!r})
        # Warm up imports and the first shard, then measure the peak over the whole stream.
        stats_of_shards(store, "big", "t", "classification", [0]).logme()
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        stats = stats_of_shards(store, "big", "t", "classification", list(range({n // shard_rows})))
        score = stats.logme()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"growth_kb": peak - base, "n": int(stats.n), "score": score}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=240
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["n"] == n
    growth = report["growth_kb"] * 1024
    assert growth < feature_bytes / 5, f"peak RSS grew {growth / 2**20:.0f} MiB"
