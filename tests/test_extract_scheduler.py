"""The extract scheduler (ray_logme/extract/driver.py) on the real local Ray cluster.

Several models in flight at once on a pool of workers, with the declared simulated model source
(ray_logme/extract/simulated.py: seeded features after simulated delays) so that a 2-core
machine can run many models; numbers are checked against independent computations (the
simulated features recomputed here, LogME on the concatenated shards).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from ray_logme.config import Resources
from ray_logme.extract import FAULT_INJECT_AFTER_WRITE_ENV, extract
from ray_logme.extract.simulated import SimulatedHub, simulated_features
from ray_logme.hub import ModelSpec
from ray_logme.metrics import logme
from ray_logme.pipeline import _reduce_pair
from ray_logme.reduce import ScoreStream, reduce
from ray_logme.storage import FeatureStore
from ray_logme.tasks import TaskSpec, snapshot_task

pytestmark = pytest.mark.timeout(600)

#: Two workers of a quarter CPU each: the rest of the 2-CPU test cluster decodes and scores.
POOL = Resources(num_workers=2, cpus_per_worker=0.25, batch_size=32)


def snapshots_of(store, *tasks):
    return {spec.name: snapshot_task(spec, store) for spec in tasks}


def committed_files(store) -> int:
    return sum(1 for _ in (store_path(store)).rglob("part-*.parquet"))


def store_path(store):
    from pathlib import Path

    return Path(store.path_of("features"))


@pytest.fixture(scope="module")
def hub():
    return SimulatedHub(
        seed=7, startup_seconds=(0.05, 0.4), seconds_per_row=(1e-4, 2e-3), feature_dims=(8, 24)
    )


def test_models_in_flight_together_keep_their_own_shards_and_scores_stream(
    ray_cluster, tmp_path, hub
):
    store = FeatureStore(str(tmp_path / "store"))
    snapshots = snapshots_of(
        store,
        TaskSpec(name="digits", uri="sklearn:digits", max_samples=120, shard_rows=40),
        TaskSpec(name="discs", uri="builtin:discs", max_samples=80, shard_rows=40),
    )
    specs = hub.specs(6)
    stream = ScoreStream(store, "run-sim")
    seen_at_done: list[int] = []

    def on_pair_done(status):
        seen_at_done.append(committed_files(store))
        stream.submit(_reduce_pair(status, snapshots))

    result = extract(
        specs,
        snapshots,
        store,
        "run-sim",
        resources=POOL,
        progress=False,
        on_pair_done=on_pair_done,
        model_source=hub,
    )
    total_shards = len(specs) * sum(s.num_shards for s in snapshots.values())
    assert all(p.state == "ok" for p in result.pairs), [p.error for p in result.failed]
    assert len(seen_at_done) == len(result.pairs)  # every pair handed on exactly once
    # Scoring streamed: the first pair was handed to reduce before every shard was in.
    assert min(seen_at_done) < total_shards
    records = {m.model: m for m in result.models}
    # Models really were in flight together: some shared the CPU device with another.
    assert max(m.models_on_device for m in records.values()) >= 2
    assert result.model_loads >= len(specs) and result.workers_started == 2
    for spec in specs:
        key = hub.resolve_key(spec, lambda _: False)
        info = hub.info(spec)
        record = records[spec.display_name]
        assert record.hub == "simulated" and record.feature_dim == info.feature_dim
        for snapshot in snapshots.values():
            assert store.committed_feature_shards(key, snapshot.task_key) == set(
                range(snapshot.num_shards)
            )
            for index in range(snapshot.num_shards):
                shard = store.read_feature_shard(key, snapshot.task_key, index)
                source = snapshot.read_shard(index).sort_by("row_id")
                assert shard.row_ids.tolist() == source.column("row_id").to_pylist()
                np.testing.assert_array_equal(shard.labels, source.column("label").to_numpy())
                # This model's features, not another's (each model has its own seed and width).
                np.testing.assert_array_equal(
                    shard.features, simulated_features(info, shard.row_ids)
                )
                assert shard.metadata["model_key"] == key
                assert shard.metadata["metadata"]["model"]["simulated"] is True

    # The streamed scores equal a reduce run afterwards and LogME of the concatenated shards.
    pairs = [_reduce_pair(p, snapshots) for p in result.pairs]
    streamed = stream.table(pairs).to_pandas()
    again = reduce(pairs, store, "run-after", use_cache=False).to_pandas()
    np.testing.assert_allclose(streamed["score"], again["score"], rtol=0, atol=1e-12)
    for row in streamed.itertuples():
        snapshot = snapshots[row.task]
        shards = [
            store.read_feature_shard(row.model_key, snapshot.task_key, i)
            for i in range(snapshot.num_shards)
        ]
        features = np.concatenate([s.features for s in shards]).astype(np.float64)
        labels = np.concatenate([s.labels for s in shards])
        expected = logme(features, labels, kind=snapshot.info.kind)
        assert row.score == pytest.approx(expected, abs=1e-9)


def test_every_shard_is_stored_once_when_a_worker_dies_after_writing(ray_cluster, tmp_path, hub):
    store = FeatureStore(str(tmp_path / "store"))
    (snapshot,) = snapshots_of(
        store, TaskSpec(name="digits", uri="sklearn:digits", max_samples=160, shard_rows=20)
    ).values()
    marker = tmp_path / "worker-died"
    specs = hub.specs(3)
    result = extract(
        specs,
        {"digits": snapshot},
        store,
        "run-fault",
        resources=POOL,
        runtime_env={"env_vars": {FAULT_INJECT_AFTER_WRITE_ENV: str(marker)}},
        progress=False,
        model_source=hub,
    )
    assert marker.exists(), "the fault was never injected"
    died_at = marker.stat().st_mtime_ns
    _, key, task_key, shard = marker.read_text().split()
    assert task_key == snapshot.task_key
    assert all(p.state == "ok" for p in result.pairs), [p.error for p in result.failed]
    assert sum(p.shards_done for p in result.pairs) == len(specs) * snapshot.num_shards
    # The shard written just before the worker died was not written again by the retry.
    written = os.stat(store.path_of(store.feature_shard_relpath(key, task_key, int(shard))))
    assert written.st_mtime_ns <= died_at
    for spec in specs:
        model = hub.resolve_key(spec, lambda _: False)
        assert store.committed_feature_shards(model, snapshot.task_key) == set(
            range(snapshot.num_shards)
        )
        row_ids = np.concatenate(
            [
                store.read_feature_shard(model, snapshot.task_key, i).row_ids
                for i in range(snapshot.num_shards)
            ]
        )
        assert sorted(row_ids.tolist()) == list(range(snapshot.info.num_rows))  # each row once
    # The restarted worker reloaded the model it held: one load more than the models.
    assert result.model_loads >= len(specs) + 1


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_driver_memory_does_not_grow_with_feature_volume(ray_cluster, tmp_path):
    """~280 MB of features written while the driver grows by far less (small version of the
    5 GB benchmark, benchmarks/bench_hub_sim.py --memory)."""
    hub = SimulatedHub(seed=1, startup_seconds=(0.0, 0.0), seconds_per_row=(0.0, 0.0),
                       feature_dims=(4096,))  # fmt: skip
    store = FeatureStore(str(tmp_path / "store"))
    (snapshot,) = snapshots_of(
        store, TaskSpec(name="digits", uri="sklearn:digits", max_samples=1700, shard_rows=425)
    ).values()
    specs = hub.specs(10)
    baseline, peak, stop = _rss_bytes(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = extract(
            specs,
            {"digits": snapshot},
            store,
            "run-mem",
            resources=Resources(num_workers=2, cpus_per_worker=0.5, batch_size=425),
            progress=False,
            model_source=hub,
        )
    finally:
        stop.set()
        sampler.join()
    assert all(p.state == "ok" for p in result.pairs), [p.error for p in result.failed]
    feature_bytes = result.forward_rows * 4096 * 4
    assert feature_bytes >= 250e6
    growth = peak[0] - baseline
    assert growth < 64e6, f"driver grew by {growth / 1e6:.0f} MB for {feature_bytes / 1e6:.0f} MB"


def test_the_simulated_hub_is_used_only_where_declared(ray_cluster, tmp_path, hub):
    """A run without ``model_source`` never reaches the simulation: a simulated model's name is
    then an unknown timm model that fails only its own rows."""
    store = FeatureStore(str(tmp_path / "store"))
    snapshots = snapshots_of(
        store, TaskSpec(name="digits", uri="sklearn:digits", max_samples=40, shard_rows=40)
    )
    (spec,) = hub.specs(1)
    result = extract([spec], snapshots, store, "run-real", progress=False)
    (pair,) = result.pairs
    assert pair.state == "failed" and "simulated-00000" in pair.error
    assert result.model_loads == 0 and result.workers_started == 0
    assert result.models[0].hub == "timm"
    declared = extract([spec], snapshots, store, "run-sim", progress=False, model_source=hub)
    assert declared.pairs[0].state == "ok" and declared.models[0].hub == "simulated"
    assert isinstance(spec, ModelSpec) and spec.hub == "timm"  # a plain spec; the source decides
