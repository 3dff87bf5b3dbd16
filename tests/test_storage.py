"""Tests of ray_logme/storage/ against local folders and the moto S3 server (conftest).

The ``store`` fixture (local folder or moto bucket) is in conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import selectors
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from ray_logme import __version__
from ray_logme.errors import FeatureError, StorageError
from ray_logme.storage import (
    CorruptFileError,
    FeatureStore,
    StorageOptions,
    StorageUnreachableError,
    content_key,
    filesystem_from_uri,
    list_files,
    slug,
)

MODEL_KEY = "resnet-abcdef123456"
TASK_KEY = "digits-0123456789ab"
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzz-SECRET"
ACCESS_KEY_ID = "AKIAZZZZEXAMPLE00042"


def _shard_arrays(num_rows: int, feature_dim: int, seed: int, first_row: int = 0):
    rng = np.random.default_rng(seed)
    row_ids = np.arange(first_row, first_row + num_rows, dtype=np.int64)
    labels = rng.integers(0, 5, num_rows)
    features = rng.standard_normal((num_rows, feature_dim)).astype(np.float32)
    return row_ids, labels, features


# --------------------------------------------------------------------------------------------
# URIs, options, keys


def test_filesystem_from_uri_local_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for uri, expected in [
        (str(tmp_path / "a"), str(tmp_path / "a")),
        ("rel/dir", str(tmp_path / "rel" / "dir")),
        (f"file://{tmp_path}/b", str(tmp_path / "b")),
    ]:
        filesystem, path = filesystem_from_uri(uri)
        assert isinstance(filesystem, pafs.LocalFileSystem)
        assert path == expected


def test_filesystem_from_uri_s3_uses_environment_endpoint(s3_server):
    bucket = s3_server.new_bucket()
    s3_server.boto3_client().put_object(Bucket=bucket, Key="p/x.bin", Body=b"12345")
    filesystem, path = filesystem_from_uri(f"s3://{bucket}/p/x.bin")
    assert isinstance(filesystem, pafs.S3FileSystem)
    assert path == f"{bucket}/p/x.bin"
    assert filesystem.get_file_info(path).size == 5  # reached the moto server over http


def test_storage_options_resolution(monkeypatch):
    from ray_logme.storage import _resolve_s3

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.1.2.3:9000")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    resolved = _resolve_s3(StorageOptions())
    assert (resolved.endpoint, resolved.scheme, resolved.region) == (
        "10.1.2.3:9000",
        "http",
        "us-east-1",
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://minio.example:443")
    assert _resolve_s3(None).endpoint_url == "https://minio.example:443"
    explicit = _resolve_s3(StorageOptions(endpoint_override="r2.example", region="auto"))
    assert (explicit.endpoint, explicit.scheme, explicit.region) == ("r2.example", "https", "auto")
    assert (
        _resolve_s3(StorageOptions(endpoint_override="r2.example", scheme="http")).scheme == "http"
    )


def test_storage_options_reject_secrets_and_unknown_keys():
    with pytest.raises(ValidationError, match="credentials"):
        StorageOptions(endpoint_override=f"http://{ACCESS_KEY_ID}:{SECRET}@minio:9000")
    with pytest.raises(ValidationError, match="extra"):
        StorageOptions(secret_key=SECRET)
    with pytest.raises(ValidationError):
        StorageOptions(scheme="ftp")


@pytest.mark.parametrize(
    "uri", ["gs://bucket/x", "http://host/x", "hdfs://namenode/x", "abfs://c@a/x"]
)
def test_unsupported_scheme_names_scheme_and_supported(uri):
    scheme = uri.split(":")[0]
    with pytest.raises(StorageError, match=rf"unsupported URI scheme '{scheme}'.*s3://"):
        filesystem_from_uri(uri)
    with pytest.raises(StorageError, match="unsupported URI scheme"):
        FeatureStore(uri)


def test_credentials_in_uri_are_refused_and_not_echoed():
    with pytest.raises(StorageError) as caught:
        FeatureStore(f"s3://{ACCESS_KEY_ID}:{SECRET}@bucket/prefix")
    assert SECRET not in str(caught.value)
    assert ACCESS_KEY_ID not in str(caught.value)


def test_slug_and_content_key():
    assert slug("timm/ResNet-18.a1_in1k") == "timm-resnet-18-a1-in1k"
    assert slug("///") == "x"
    assert content_key("Digits (train)", "0123456789abcdef") == "digits-train-0123456789ab"
    with pytest.raises(ValueError):
        content_key("x", "not-hex")


def test_relpath_and_key_validation(tmp_path):
    store = FeatureStore(str(tmp_path))
    for bad in ["../escape", "a/../b", "a//b"]:
        with pytest.raises(ValueError):
            store.path_of(bad)
    with pytest.raises(ValueError, match="model_key"):
        store.committed_feature_shards("bad/key", TASK_KEY)


# --------------------------------------------------------------------------------------------
# Feature shards


def test_feature_shard_round_trip(store):
    row_ids, labels, features = _shard_arrays(300, 24, seed=1, first_row=600)
    metadata = {"model": {"name": "resnet18", "revision": "random-init"}, "task_revision": "abc"}
    assert store.write_feature_shard(MODEL_KEY, TASK_KEY, 2, row_ids, labels, features, metadata)
    assert store.committed_feature_shards(MODEL_KEY, TASK_KEY) == {2}
    assert store.list_dir(FeatureStore.feature_dir(MODEL_KEY, TASK_KEY)) == ["part-00002.parquet"]

    table = pq.read_table(
        store.path_of(FeatureStore.feature_shard_relpath(MODEL_KEY, TASK_KEY, 2)),
        filesystem=store.filesystem,
    )
    assert table.schema.field("features").type == pa.list_(pa.float32(), 24)
    assert table.schema.field("label").type == pa.int64()
    assert table.schema.field("row_id").type == pa.int64()

    shard = store.read_feature_shard(MODEL_KEY, TASK_KEY, 2)
    np.testing.assert_array_equal(shard.row_ids, row_ids)
    np.testing.assert_array_equal(shard.labels, labels)
    np.testing.assert_array_equal(shard.features, features)
    record = store.feature_shard_metadata(MODEL_KEY, TASK_KEY, 2)
    assert record["metadata"] == metadata
    assert record["code_version"] == __version__
    assert (record["num_rows"], record["feature_dim"], record["shard_index"]) == (300, 24, 2)
    assert store.feature_num_rows(MODEL_KEY, TASK_KEY) == 300


def test_float16_and_multi_target_labels(tmp_path):
    store = FeatureStore(str(tmp_path), feature_dtype="float16")
    rng = np.random.default_rng(3)
    features = rng.standard_normal((50, 8)).astype(np.float32)
    targets = rng.standard_normal((50, 3))
    assert store.write_feature_shard(MODEL_KEY, TASK_KEY, 0, np.arange(50), targets, features, {})
    shard = store.read_feature_shard(MODEL_KEY, TASK_KEY, 0)
    assert shard.features.dtype == np.float32
    np.testing.assert_array_equal(shard.features, features.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(shard.labels, targets)
    assert store.read_table(
        FeatureStore.feature_shard_relpath(MODEL_KEY, TASK_KEY, 0)
    ).schema.field("label").type == pa.list_(pa.float64(), 3)
    ((_, chunk_labels),) = store.iter_feature_chunks(MODEL_KEY, TASK_KEY, max_rows=64)
    assert chunk_labels.shape == (50, 3)
    with pytest.raises(FeatureError, match="float16"):
        store.write_feature_shard(
            MODEL_KEY, TASK_KEY, 1, np.arange(2), np.zeros(2), np.full((2, 2), 1e6), {}
        )


def test_rerun_is_idempotent_and_keeps_the_first_shard(store):
    row_ids, labels, features = _shard_arrays(40, 6, seed=2)
    assert store.write_feature_shard(
        MODEL_KEY, TASK_KEY, 0, row_ids, labels, features, {"attempt": 1}
    )
    relpath = FeatureStore.feature_shard_relpath(MODEL_KEY, TASK_KEY, 0)
    before = store.read_bytes(relpath)
    # A rerun (here with different numbers, as a non-deterministic model would give) writes nothing.
    assert not store.write_feature_shard(
        MODEL_KEY, TASK_KEY, 0, row_ids, labels, features + 1, {"attempt": 2}
    )
    assert store.read_bytes(relpath) == before
    assert store.feature_shard_metadata(MODEL_KEY, TASK_KEY, 0)["metadata"] == {"attempt": 1}


def test_commit_step_refuses_when_another_writer_won_after_the_check(store, monkeypatch):
    """The existence pre-check is only an optimisation: the commit itself is exclusive."""
    row_ids, labels, features = _shard_arrays(30, 4, seed=5)
    assert store.write_feature_shard(
        MODEL_KEY, TASK_KEY, 0, row_ids, labels, features, {"writer": "first"}
    )
    monkeypatch.setattr(FeatureStore, "exists", lambda self, relpath: False)
    assert not store.write_feature_shard(
        MODEL_KEY, TASK_KEY, 0, row_ids, labels, -features, {"writer": "late"}
    )
    monkeypatch.undo()
    shard = store.read_feature_shard(MODEL_KEY, TASK_KEY, 0)
    np.testing.assert_array_equal(shard.features, features)
    assert shard.metadata["metadata"] == {"writer": "first"}
    assert store.list_dir(FeatureStore.feature_dir(MODEL_KEY, TASK_KEY)) == ["part-00000.parquet"]


def test_racing_writers_leave_exactly_one_valid_shard(store):
    num_writers, rounds = 4, 3
    # One store object per writer, as separate Ray workers would have (own client/filesystem).
    writers = [pickle.loads(pickle.dumps(store)) for _ in range(num_writers)]
    for shard_index in range(rounds):
        barrier = threading.Barrier(num_writers)
        results: dict[int, bool | BaseException] = {}

        def write(
            writer: int, shard_index: int = shard_index, barrier=barrier, results=results
        ) -> None:
            row_ids = np.arange(200, dtype=np.int64)
            features = np.full((200, 16), float(writer), dtype=np.float32)
            barrier.wait()
            try:
                results[writer] = writers[writer].write_feature_shard(
                    MODEL_KEY,
                    TASK_KEY,
                    shard_index,
                    row_ids,
                    row_ids % 3,
                    features,
                    {"writer": writer},
                )
            except BaseException as error:
                results[writer] = error

        threads = [threading.Thread(target=write, args=(w,)) for w in range(num_writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(isinstance(result, bool) for result in results.values()), results
        winners = [w for w, won in results.items() if won]
        assert len(winners) == 1, results
        shard = store.read_feature_shard(MODEL_KEY, TASK_KEY, shard_index)
        assert shard.metadata["metadata"] == {"writer": winners[0]}
        assert np.all(shard.features == winners[0])  # one writer's shard whole, not a mix
        assert shard.features.shape == (200, 16)
    assert store.committed_feature_shards(MODEL_KEY, TASK_KEY) == set(range(rounds))
    folder = FeatureStore.feature_dir(MODEL_KEY, TASK_KEY)
    assert store.list_dir(folder) == [f"part-{i:05d}.parquet" for i in range(rounds)]


def test_bad_feature_arrays_are_refused(tmp_path):
    store = FeatureStore(str(tmp_path))
    row_ids, labels, features = _shard_arrays(10, 3, seed=0)
    features[4, 1] = np.nan
    with pytest.raises(FeatureError, match=r"1 of 10 rows have NaN/Inf.*first row 4"):
        store.write_feature_shard(MODEL_KEY, TASK_KEY, 0, row_ids, labels, features, {})
    with pytest.raises(ValueError, match="row_ids"):
        store.write_feature_shard(MODEL_KEY, TASK_KEY, 0, row_ids[:5], labels, np.ones((10, 3)), {})
    with pytest.raises(ValueError, match="labels"):
        store.write_feature_shard(MODEL_KEY, TASK_KEY, 0, row_ids, labels[:3], np.ones((10, 3)), {})
    with pytest.raises(ValueError, match="JSON"):
        store.write_feature_shard(
            MODEL_KEY, TASK_KEY, 0, row_ids, labels, np.ones((10, 3)), {"x": object()}
        )
    assert store.committed_feature_shards(MODEL_KEY, TASK_KEY) == set()


def test_iter_feature_chunks_streams_every_row_in_bounded_chunks(store):
    expected_features, expected_labels = [], []
    for shard_index, num_rows in enumerate([700, 1000, 5]):
        row_ids, labels, features = _shard_arrays(
            num_rows, 12, seed=10 + shard_index, first_row=1000 * shard_index
        )
        store.write_feature_shard(MODEL_KEY, TASK_KEY, shard_index, row_ids, labels, features, {})
        expected_features.append(features)
        expected_labels.append(labels)
    chunks = list(store.iter_feature_chunks(MODEL_KEY, TASK_KEY, max_rows=256))
    assert all(0 < chunk.shape[0] <= 256 and chunk.dtype == np.float32 for chunk, _ in chunks)
    np.testing.assert_array_equal(
        np.concatenate([c for c, _ in chunks]), np.concatenate(expected_features)
    )
    np.testing.assert_array_equal(
        np.concatenate([y for _, y in chunks]), np.concatenate(expected_labels)
    )
    only_second = list(
        store.iter_feature_chunks(MODEL_KEY, TASK_KEY, max_rows=4096, shard_indices=[1])
    )
    np.testing.assert_array_equal(np.concatenate([c for c, _ in only_second]), expected_features[1])
    assert list(store.iter_feature_chunks(MODEL_KEY, "other-000000000000")) == []


def test_iter_feature_chunks_refuses_mixed_feature_dims(tmp_path):
    store = FeatureStore(str(tmp_path))
    for shard_index, feature_dim in enumerate([4, 5]):
        row_ids, labels, features = _shard_arrays(3, feature_dim, seed=shard_index)
        store.write_feature_shard(MODEL_KEY, TASK_KEY, shard_index, row_ids, labels, features, {})
    with pytest.raises(FeatureError, match="feature_dim 5"):
        list(store.iter_feature_chunks(MODEL_KEY, TASK_KEY))


_MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys, tracemalloc
    import numpy as np, pyarrow as pa
    from ray_logme.storage import FeatureStore
    store = FeatureStore(sys.argv[1])
    # Warm up (pyarrow imports pandas lazily) so that tracemalloc measures data, not modules.
    next(store.iter_feature_chunks("m-000000000000", "t-000000000000", max_rows=10, shard_indices=[0]))
    tracemalloc.start()
    rows, total, largest = 0, 0.0, 0
    for features, labels in store.iter_feature_chunks("m-000000000000", "t-000000000000", max_rows=1000):
        rows += features.shape[0]
        total += float(features.sum(dtype=np.float64))
        largest = max(largest, features.shape[0])
    print(json.dumps({"rows": rows, "sum": total, "largest": largest,
                      "arrow_peak": pa.default_memory_pool().max_memory(),
                      "python_peak": tracemalloc.get_traced_memory()[1]}))
    """
)


def _probe_memory(root: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, root],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_chunk_reading_memory_does_not_grow_with_the_task(tmp_path):
    """Reading 64 MiB of features in chunks of 1000 rows peaks at a few MiB, as 16 MiB does."""
    feature_dim, rows_per_shard = 256, 4096  # 4 MiB of float32 per shard
    sums = {}
    for num_shards in (4, 16):
        root = str(tmp_path / f"store-{num_shards}")
        store = FeatureStore(root)
        total = 0.0
        for shard_index in range(num_shards):
            rng = np.random.default_rng(shard_index)
            features = rng.standard_normal((rows_per_shard, feature_dim)).astype(np.float32)
            total += float(features.sum(dtype=np.float64))
            row_ids = np.arange(rows_per_shard) + shard_index * rows_per_shard
            store.write_feature_shard(
                "m-000000000000", "t-000000000000", shard_index, row_ids, row_ids % 7, features, {}
            )
        sums[num_shards] = (total, _probe_memory(root))
    small_total, small = sums[4]
    big_total, big = sums[16]
    data_bytes = 16 * rows_per_shard * feature_dim * 4
    assert big["rows"] == 16 * rows_per_shard and big["largest"] == 1000
    assert big["sum"] == pytest.approx(big_total, rel=1e-9)
    assert small["sum"] == pytest.approx(small_total, rel=1e-9)
    # Everything at once would need >= 64 MiB; one shard (= one row group) is 4 MiB.
    assert big["arrow_peak"] < data_bytes / 4, big
    assert big["python_peak"] < data_bytes / 4, big
    assert big["arrow_peak"] < 1.5 * small["arrow_peak"] + (2 << 20), (small, big)
    assert big["python_peak"] < 1.5 * small["python_peak"] + (2 << 20), (small, big)


# --------------------------------------------------------------------------------------------
# Atomicity: kill a writer mid-shard

_KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from ray_logme.storage import FeatureStore

    root = sys.argv[1]
    store = FeatureStore(root)
    rng = np.random.default_rng(11)
    features = rng.standard_normal((6000, 256)).astype(np.float32)  # ~6 MB shard
    row_ids = np.arange(6000)

    def stall(where):
        print("STALLED", where, flush=True)
        time.sleep(120)

    if store.is_local:
        # Slow disk: the temporary file is fully written, the commit has not happened yet.
        os.fsync = lambda fd: stall("fsync")
    else:
        # Slow network: half of the PUT body is on the wire, the rest never comes.
        class HalfThenStall:
            def __init__(self, body):
                self.body = memoryview(body if isinstance(body, bytes) else body.read())
                self.sent = 0
            def read(self, amount=-1):
                half = len(self.body) // 2
                if self.sent >= half:
                    stall("upload")
                end = half if amount is None or amount < 0 else min(self.sent + amount, half)
                chunk = bytes(self.body[self.sent:end])
                self.sent = end
                return chunk
        def slow_body(request, **kwargs):
            request.body = HalfThenStall(request.body)
        store._client().meta.events.register("before-send.s3.PutObject", slow_body)

    store.write_feature_shard("m-000000000000", "t-000000000000", 0, row_ids, row_ids % 10, features, {})
    print("COMMITTED", flush=True)
    """
)


def _wait_for_line(process: subprocess.Popen, marker: str, timeout: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        if selector.select(timeout=0.5):
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith(marker):
                return line
    raise AssertionError(
        f"writer never printed {marker!r}; output: {seen}; stderr: {process.stderr.read()}"
    )


def test_killed_writer_leaves_no_partial_shard_and_rerun_completes(store):
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, store.uri_of()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _wait_for_line(process, "STALLED", timeout=90)
        assert ("fsync" if store.is_local else "upload") in line
        process.kill()
    finally:
        process.kill()
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()
    # For a second after the kill (the server may still be reading the cut-off request):
    # no shard is visible, no reader gets rows.
    for _ in range(5):
        assert store.committed_feature_shards("m-000000000000", "t-000000000000") == set()
        assert list(store.iter_feature_chunks("m-000000000000", "t-000000000000")) == []
        time.sleep(0.2)
    if store.is_local:  # the abandoned temporary file is there, but hidden from listings
        folder = Path(store.path_of(FeatureStore.feature_dir("m-000000000000", "t-000000000000")))
        assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
        assert store.list_dir(FeatureStore.feature_dir("m-000000000000", "t-000000000000")) == []

    rng = np.random.default_rng(11)
    features = rng.standard_normal((6000, 256)).astype(np.float32)
    row_ids = np.arange(6000)
    assert store.write_feature_shard(
        "m-000000000000", "t-000000000000", 0, row_ids, row_ids % 10, features, {}
    )
    shard = store.read_feature_shard("m-000000000000", "t-000000000000", 0)
    np.testing.assert_array_equal(shard.features, features)


# --------------------------------------------------------------------------------------------
# Run tables, text, listing


def test_tables_text_and_listing(store):
    table = pa.table({"model": ["a", "b"], "score": [1.5, -2.0]})
    assert store.write_table("runs/r1/scores.parquet", table)
    assert store.read_table("runs/r1/scores.parquet").equals(table)
    assert store.write_text("runs/r1/run.json", '{"ok": true}')
    assert json.loads(store.read_text("runs/r1/run.json")) == {"ok": True}
    assert store.write_text("runs/r1/run.json", '{"ok": false}')  # overwrite=True replaces
    assert json.loads(store.read_text("runs/r1/run.json")) == {"ok": False}
    assert not store.write_text("runs/r1/run.json", "ignored", overwrite=False)
    assert json.loads(store.read_text("runs/r1/run.json")) == {"ok": False}
    assert store.exists("runs/r1/run.json") and store.exists("runs/r1")
    assert not store.exists("runs/r2/run.json")
    assert store.list_dir("runs") == ["r1"]
    assert store.list_dir("runs/r1") == ["run.json", "scores.parquet"]
    assert store.list_dir("nothing/here") == []
    assert (
        store.uri_of("runs/r1/run.json").endswith("/feature-store/runs/r1/run.json")
        or store.is_local
    )
    with pytest.raises(StorageError, match="does not exist"):
        store.read_text("runs/missing.json")


def test_store_pickles_without_filesystem_or_credentials(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # moto accepts any credentials
    store = FeatureStore(f"s3://{s3_server.new_bucket()}/p", StorageOptions(region="us-east-1"))
    store.write_text("a.txt", "hello")
    payload = pickle.dumps(store)
    assert SECRET.encode() not in payload
    clone = pickle.loads(payload)
    assert clone._filesystem is None and clone._s3_client is None
    assert clone.read_text("a.txt") == "hello"


def test_list_files_reports_sizes_and_versions(tmp_path, s3_server):
    (tmp_path / "data" / "split=train").mkdir(parents=True)
    for relpath in [
        "split=train/a.parquet",
        "b.parquet",
        "_SUCCESS",
        ".hidden.parquet",
        "notes.txt",
    ]:
        (tmp_path / "data" / relpath).write_bytes(b"x" * 7)
    _, base, files = list_files(str(tmp_path / "data"))
    assert base == str(tmp_path / "data")
    assert [f.relpath for f in files] == ["b.parquet", "split=train/a.parquet"]
    assert all(f.size == 7 and f.version for f in files)

    bucket = s3_server.new_bucket()
    client = s3_server.boto3_client()
    client.put_object(Bucket=bucket, Key="ds/part-0.parquet", Body=b"abc")
    client.put_object(Bucket=bucket, Key="ds/_temporary/x.parquet", Body=b"abc")
    _, base, files = list_files(f"s3://{bucket}/ds")
    etag = client.head_object(Bucket=bucket, Key="ds/part-0.parquet")["ETag"].strip('"')
    assert base == f"{bucket}/ds"
    assert [(f.uri, f.relpath, f.size, f.version) for f in files] == [
        (f"s3://{bucket}/ds/part-0.parquet", "part-0.parquet", 3, etag)
    ]
    _, _, single = list_files(f"s3://{bucket}/ds/part-0.parquet")
    assert [f.version for f in single] == [etag]
    with pytest.raises(StorageError, match="does not exist"):
        list_files(f"s3://{bucket}/nothing")
    with pytest.raises(StorageError, match="does not exist"):
        list_files(str(tmp_path / "nothing"))


# --------------------------------------------------------------------------------------------
# Unreachable storage, wrong credentials, missing bucket


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _our_log_text(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("ray_logme"))


def _assert_no_credentials(text: str) -> None:
    assert SECRET not in text
    assert ACCESS_KEY_ID not in text


def test_unreachable_endpoint_is_a_clear_storage_error(monkeypatch, caplog):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    port = _closed_port()
    options = StorageOptions(
        endpoint_override=f"http://127.0.0.1:{port}",
        max_attempts=1,
        connect_timeout_s=2,
        retries=2,
        retry_backoff_s=0.05,
    )
    store = FeatureStore("s3://some-bucket/store", options)
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with pytest.raises(
        StorageUnreachableError, match=rf"cannot reach http://127.0.0.1:{port}"
    ) as listing:
        store.check_access()
    # Bounded retries, then one error that names the URI and what was tried.
    assert "listing s3://some-bucket/store failed after 3 attempts" in str(listing.value)
    with pytest.raises(StorageError, match="cannot reach") as writing:
        store.write_feature_shard(MODEL_KEY, TASK_KEY, 0, *_shard_arrays(5, 2, seed=0), {})
    assert "s3://some-bucket/store/features/" in str(writing.value)
    # The store is known to be down: later calls try once instead of backing off again.
    assert "attempts" not in str(writing.value)
    assert time.monotonic() - started < 30
    for text in (str(listing.value), str(writing.value), _our_log_text(caplog)):
        _assert_no_credentials(text)
    assert SECRET not in caplog.text  # not even botocore's DEBUG request dumps


def test_wrong_credentials_are_a_clear_error_and_committed_shards_survive(
    s3_server, monkeypatch, caplog
):
    import requests

    store = FeatureStore(f"s3://{s3_server.new_bucket()}/store")
    row_ids, labels, features = _shard_arrays(20, 4, seed=9)
    assert store.write_feature_shard(MODEL_KEY, TASK_KEY, 0, row_ids, labels, features, {})

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    denied = FeatureStore(store.uri_of())  # picks up the (unknown) credentials
    caplog.set_level(logging.DEBUG)
    auth_url = f"{s3_server.endpoint_url}/moto-api/reset-auth"
    previous = requests.post(auth_url, data=b"0", timeout=10).json()[
        "PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"
    ]
    try:  # moto now checks every request against its (empty) IAM: these keys do not exist
        errors = []
        for attempt in (
            denied.check_access,
            lambda: denied.committed_feature_shards(MODEL_KEY, TASK_KEY),
            lambda: denied.write_feature_shard(
                MODEL_KEY, TASK_KEY, 1, row_ids, labels, features, {}
            ),
            lambda: denied.write_text("runs/x/run.json", "{}"),
        ):
            with pytest.raises(StorageError, match="access denied") as caught:
                attempt()
            errors.append(str(caught.value))
    finally:
        requests.post(auth_url, data=str(previous).encode(), timeout=10)
    for text in [*errors, _our_log_text(caplog)]:
        _assert_no_credentials(text)
    assert SECRET not in caplog.text  # botocore's DEBUG dumps show the key id, never the secret
    monkeypatch.undo()
    assert store.committed_feature_shards(MODEL_KEY, TASK_KEY) == {0}
    np.testing.assert_array_equal(
        store.read_feature_shard(MODEL_KEY, TASK_KEY, 0).features, features
    )


def test_missing_bucket_is_named(s3_server):
    store = FeatureStore("s3://no-such-bucket-4242/store")
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket-4242'.*does not exist"):
        store.check_access()
    with pytest.raises(StorageError, match="bucket does not exist"):
        store.write_text("x.txt", "x")


def test_redaction_masks_environment_credentials(monkeypatch):
    from ray_logme.storage import _redact

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-value-123456")
    text = f"signature for {ACCESS_KEY_ID} with {SECRET} and token-value-123456 failed"
    redacted = _redact(text)
    _assert_no_credentials(redacted)
    assert "token-value-123456" not in redacted
    assert redacted.startswith("signature for *** with ***")


def test_non_conditional_mode_still_commits_once_on_rerun(s3_server):
    store = FeatureStore(
        f"s3://{s3_server.new_bucket()}/p", StorageOptions(conditional_writes=False)
    )
    row_ids, labels, features = _shard_arrays(10, 3, seed=4)
    assert store.write_feature_shard(MODEL_KEY, TASK_KEY, 0, row_ids, labels, features, {"n": 1})
    assert not store.write_feature_shard(
        MODEL_KEY, TASK_KEY, 0, row_ids, labels, features, {"n": 2}
    )
    assert store.feature_shard_metadata(MODEL_KEY, TASK_KEY, 0)["metadata"] == {"n": 1}


# --------------------------------------------------------------------------------------------
# Transient faults, local errors and corrupt shards (issue 16.4)


class _FlakyProxy:
    """A TCP proxy to the moto server that can go down and come back on the same port.

    Down: the port refuses connections and open ones are cut, as when an endpoint restarts.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = _closed_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            open_sockets, self._sockets = self._sockets, []
        for sock in open_sockets:
            _close_socket(sock)

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(1 << 16):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _close_socket(source)
        _close_socket(sink)


def _close_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _retry_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "transient storage fault" in r.getMessage()]


def test_a_brief_outage_is_ridden_out_on_every_path(s3_server, caplog):
    """The endpoint goes away for ~0.8 s during each call: reads, writes, listings succeed."""
    proxy = _FlakyProxy(s3_server.port)
    proxy.up()
    try:
        options = StorageOptions(
            endpoint_override=f"http://127.0.0.1:{proxy.port}",
            max_attempts=1,  # no per-request retries: the outage reaches the store's retries
            retries=10,
            retry_backoff_s=0.1,
            retry_max_backoff_s=0.4,
        )
        store = FeatureStore(f"s3://{s3_server.new_bucket()}/store", options)
        row_ids, labels, features = _shard_arrays(300, 8, seed=31)
        assert store.write_feature_shard(MODEL_KEY, TASK_KEY, 0, row_ids, labels, features, {})
        caplog.set_level(logging.WARNING, logger="ray_logme.storage")
        model_json = "models/resnet-abcdef123456/model.json"
        calls = {
            "check_access": store.check_access,
            "read shard": lambda: store.read_feature_shard(MODEL_KEY, TASK_KEY, 0).features,
            "stream shard": lambda: np.concatenate(
                [c for c, _ in store.iter_feature_chunks(MODEL_KEY, TASK_KEY, max_rows=64)]
            ),
            "list": lambda: store.committed_feature_shards(MODEL_KEY, TASK_KEY),
            "write model.json": lambda: store.write_text(model_json, '{"ok": 1}'),
            "read model.json": lambda: store.read_text(model_json),
            "write shard": lambda: store.write_feature_shard(
                MODEL_KEY, TASK_KEY, 1, row_ids, labels, features, {}
            ),
        }
        results = {}
        for name, call in calls.items():
            proxy.down()
            comeback = threading.Timer(0.8, proxy.up)
            comeback.start()
            try:
                results[name] = call()
            finally:
                comeback.join()
            assert len(_retry_warnings(caplog)) >= 1, name
            caplog.clear()
        np.testing.assert_array_equal(results["read shard"], features)
        np.testing.assert_array_equal(results["stream shard"], features)
        assert results["list"] == {0}
        assert results["write model.json"] is True
        assert results["read model.json"] == '{"ok": 1}'
        assert results["write shard"] is True
        assert store.committed_feature_shards(MODEL_KEY, TASK_KEY) == {0, 1}
    finally:
        proxy.down()


def test_a_stream_cut_mid_shard_resumes_where_it_stopped(tmp_path, monkeypatch, caplog):
    """A fault between two batches reopens the shard and skips what was already returned."""
    store = FeatureStore(str(tmp_path / "store"), StorageOptions(retries=2, retry_backoff_s=0.01))
    row_ids, labels, features = _shard_arrays(1000, 4, seed=32)
    store.write_feature_shard(MODEL_KEY, TASK_KEY, 0, row_ids, labels, features, {})
    original = pq.ParquetFile.iter_batches
    cuts = []

    def cut_once(self, *args, **kwargs):
        for number, batch in enumerate(original(self, *args, **kwargs)):
            if number == 3 and not cuts:
                cuts.append(number)
                raise ConnectionResetError(104, "Connection reset by peer")
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", cut_once)
    caplog.set_level(logging.WARNING, logger="ray_logme.storage")
    chunks = list(store.iter_feature_chunks(MODEL_KEY, TASK_KEY, max_rows=128))
    assert cuts and len(_retry_warnings(caplog)) == 1
    np.testing.assert_array_equal(np.concatenate([c for c, _ in chunks]), features)
    np.testing.assert_array_equal(np.concatenate([y for _, y in chunks]), labels)


def test_transient_faults_are_told_apart_from_permanent_ones():
    import botocore.exceptions

    from ray_logme.storage import is_transient

    def client_error(status: int, code: str) -> Exception:
        return botocore.exceptions.ClientError(
            {
                "Error": {"Code": code, "Message": code},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            "GetObject",
        )

    transient = [
        client_error(503, "SlowDown"),
        client_error(500, "InternalError"),
        client_error(400, "RequestTimeout"),
        client_error(429, "TooManyRequests"),
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
        OSError(
            "When reading information for key 'k' in bucket 'b': AWS Error NETWORK_CONNECTION "
            "during GetObject operation: curlCode: 7, Could not connect to server"
        ),
        OSError("AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate."),
        OSError(
            "AWS Error UNKNOWN (HTTP status 503) during HeadObject operation: No response body."
        ),
    ]
    permanent = [
        client_error(404, "NoSuchKey"),
        client_error(403, "AccessDenied"),
        client_error(412, "PreconditionFailed"),
        FileNotFoundError(2, "No such file or directory"),
        PermissionError(13, "Permission denied"),
        OSError(28, "No space left on device"),
        OSError(30, "Read-only file system"),
        OSError("AWS Error ACCESS_DENIED during HeadObject operation: No response body."),
        pa.ArrowInvalid("Parquet magic bytes not found in footer. Either the file is corrupted"),
        OSError("Corrupt snappy compressed data."),
        ValueError("not a storage fault"),
    ]
    assert [e for e in transient if not is_transient(e)] == []
    assert [e for e in permanent if is_transient(e)] == []


@pytest.mark.parametrize(
    "code, hint",
    [(13, "permission denied"), (28, "no space left"), (30, "read-only")],
    ids=["EACCES", "ENOSPC", "EROFS"],
)
def test_local_write_errors_get_a_local_hint_and_no_retry(tmp_path, monkeypatch, code, hint):
    store = FeatureStore(str(tmp_path / "store"), StorageOptions(retries=3, retry_backoff_s=0.01))
    attempts = []

    def failing_fsync(descriptor: int) -> None:
        attempts.append(descriptor)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StorageError, match=hint) as caught:
        store.write_text("runs/r1/run.json", "{}")
    monkeypatch.undo()
    message = str(caught.value)
    assert store.uri_of("runs/r1/run.json") in message
    assert "credentials" not in message and "endpoint" not in message  # no S3 hint
    assert not isinstance(caught.value, StorageUnreachableError)
    assert len(attempts) == 1  # a full disk does not get better by retrying
    assert list((tmp_path / "store" / "runs" / "r1").iterdir()) == []  # no temporary file left


def test_a_truncated_shard_is_named_moved_aside_and_recomputed(store):
    arrays = [_shard_arrays(200, 6, seed=40 + i, first_row=200 * i) for i in range(2)]
    for shard_index, (row_ids, labels, features) in enumerate(arrays):
        store.write_feature_shard(MODEL_KEY, TASK_KEY, shard_index, row_ids, labels, features, {})
    relpath = FeatureStore.feature_shard_relpath(MODEL_KEY, TASK_KEY, 1)
    whole = store.read_bytes(relpath)
    store.write_bytes(relpath, whole[: len(whole) // 2])  # torn on disk

    # A plain read names the file and leaves it where it is.
    with pytest.raises(CorruptFileError, match="corrupt or truncated") as plain:
        store.read_feature_shard(MODEL_KEY, TASK_KEY, 1)
    assert store.uri_of(relpath) in str(plain.value)
    assert store.committed_feature_shards(MODEL_KEY, TASK_KEY) == {0, 1}

    # Scoring's read names it and moves it aside: it no longer counts as committed.
    with pytest.raises(CorruptFileError, match="moved aside") as scoring:
        list(store.iter_feature_chunks(MODEL_KEY, TASK_KEY, quarantine_corrupt=True))
    assert store.uri_of(relpath) in str(scoring.value)
    assert store.committed_feature_shards(MODEL_KEY, TASK_KEY) == {0}
    folder = store.path_of(FeatureStore.feature_dir(MODEL_KEY, TASK_KEY))
    kept = [
        info
        for info in store.filesystem.get_file_info(pafs.FileSelector(folder))
        if info.base_name.startswith(".part-00001.parquet.corrupt-")
    ]
    assert [info.size for info in kept] == [len(whole) // 2]  # kept for inspection

    # The rerun's extract writes the shard again, and scoring reads every row.
    assert store.write_feature_shard(MODEL_KEY, TASK_KEY, 1, *arrays[1], {})
    chunks = list(store.iter_feature_chunks(MODEL_KEY, TASK_KEY, quarantine_corrupt=True))
    np.testing.assert_array_equal(
        np.concatenate([c for c, _ in chunks]), np.concatenate([a[2] for a in arrays])
    )
