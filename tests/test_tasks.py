"""Tests of ray_logme/tasks/: specs, built-in tasks, subsampling, snapshots, bad input."""

from __future__ import annotations

import io
import json
import os
import socket

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from ray_logme.errors import StorageError, TaskError
from ray_logme.storage import FeatureStore, StorageOptions
from ray_logme.tasks import (
    BUILTIN_TASKS,
    TaskInfo,
    TaskSpec,
    builtin_table,
    read_task,
    register_builtin_task,
    snapshot_task,
    stratified_quotas,
    task_info,
)


def _png(value: int, size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _write(path, table: pa.Table, filesystem=None) -> None:
    if filesystem is None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path, filesystem=filesystem)


def _text_table(labels: list[str], start: int = 0) -> pa.Table:
    return pa.table(
        {
            "sentence": [f"sentence number {start + i}" for i in range(len(labels))],
            "topic": labels,
        }
    )


def _text_spec(uri: str, **overrides) -> TaskSpec:
    fields = {
        "name": "text task",
        "uri": uri,
        "input_column": "sentence",
        "modality": "text",
        "label_column": "topic",
        "kind": "classification",
    }
    fields.update(overrides)
    return TaskSpec(**fields)


# --------------------------------------------------------------------------------------------
# Specs


def test_builtin_spec_fills_columns_modality_and_kind():
    spec = TaskSpec(name="digits", uri="sklearn:digits")
    assert (spec.input_column, spec.label_column, spec.modality, spec.kind) == (
        "image",
        "label",
        "image",
        "classification",
    )
    multi = TaskSpec(name="discs", uri="builtin:discs", label_column=["radius", "center_x"])
    assert multi.kind == "regression" and multi.label_columns == ["radius", "center_x"]
    with pytest.raises(ValidationError, match="image classification task"):
        TaskSpec(name="d", uri="sklearn:digits", modality="text")
    with pytest.raises(ValidationError, match="unknown built-in task 'sklearn:iris'"):
        TaskSpec(name="iris", uri="sklearn:iris")


def test_spec_validation_for_parquet_tasks():
    with pytest.raises(ValidationError, match="needs input_column, modality, label_column, kind"):
        TaskSpec(name="t", uri="/data/x")
    with pytest.raises(ValidationError, match="extra"):
        TaskSpec(name="d", uri="sklearn:digits", labels="label")
    with pytest.raises(ValidationError, match="multi-label"):
        _text_spec("/data/x", label_column=["a", "b"])
    with pytest.raises(ValidationError, match="empty list"):
        _text_spec("/data/x", filter={"split": []})
    with pytest.raises(ValidationError):
        _text_spec("/data/x", max_samples=0)
    spec = _text_spec("/data/x", filter={"split": "train", "fold": [1, 2]})
    with pytest.raises(ValidationError):
        spec.seed = 3  # frozen


# --------------------------------------------------------------------------------------------
# Built-in tasks


def test_digits_builtin_is_sklearn_digits_upscaled():
    from sklearn.datasets import load_digits

    digits = load_digits()
    table = builtin_table("sklearn:digits")
    assert table.num_rows == len(digits.target) == 1797
    np.testing.assert_array_equal(table.column("label").to_numpy(), digits.target)
    for index in (0, 17, 1796):
        pixels = _decode(table.column("image")[index].as_py())
        assert pixels.shape == (32, 32)
        expected = np.kron(np.round(digits.images[index] * 255 / 16), np.ones((4, 4)))
        np.testing.assert_array_equal(pixels, expected)
    info = task_info(TaskSpec(name="digits", uri="sklearn:digits"))
    assert info.classes == [str(k) for k in range(10)]
    assert info.class_counts == np.bincount(digits.target).tolist()
    assert info.num_rows == 1797 and info.num_targets == 10


def test_discs_builtin_images_match_their_targets():
    table = builtin_table("builtin:discs")
    assert table.num_rows == 600
    radius = table.column("radius").to_numpy()
    for index in range(0, 600, 60):
        pixels = _decode(table.column("image")[index].as_py()).astype(float)
        brightness = table.column("brightness")[index].as_py()
        bright = pixels > 20 + 235 * brightness / 2  # inside the disc: at least half its level
        assert (
            abs(bright.sum() - np.pi * radius[index] ** 2) < 0.25 * np.pi * radius[index] ** 2 + 6
        )
        rows, cols = np.nonzero(bright)
        assert abs(cols.mean() + 0.5 - table.column("center_x")[index].as_py()) < 1.0
        assert abs(rows.mean() + 0.5 - table.column("center_y")[index].as_py()) < 1.0
    info = task_info(
        TaskSpec(name="discs", uri="builtin:discs", label_column=["radius", "brightness"])
    )
    assert [s.name for s in info.target_stats] == ["radius", "brightness"]
    assert info.target_stats[0].mean == pytest.approx(radius.mean())
    assert info.target_stats[0].min >= 3 and info.target_stats[0].max <= 12


def test_topics_builtin_topics_are_clearly_separable():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    table = builtin_table("builtin:topics")
    texts = table.column("text").to_pylist()
    labels = table.column("label").to_pylist()
    assert sorted(set(labels)) == ["astronomy", "cooking", "finance", "sports"]
    assert len(texts) == 800 and len(set(texts)) > 400  # varied sentences, not 4 repeated ones
    words = CountVectorizer().fit_transform(texts)
    accuracy = cross_val_score(LogisticRegression(max_iter=500), words, labels, cv=3).mean()
    assert accuracy > 0.97


def test_builtin_tasks_are_deterministic():
    for uri in BUILTIN_TASKS:
        first = builtin_table(uri)
        from ray_logme.tasks import _builtin_table_cached

        _builtin_table_cached.cache_clear()
        assert builtin_table(uri).equals(first)


def test_builtin_registry_holds_each_tables_columns():
    for uri, builtin in BUILTIN_TASKS.items():
        assert builtin.uri == uri
        assert builtin_table(uri).column_names == list(builtin.columns)
        assert "fold" in builtin.columns


def test_a_registered_builtin_task_is_a_task_like_the_others():
    declared = {
        "description": "six squares",
        "input_column": "text",
        "label_column": "label",
        "modality": "text",
        "kind": "classification",
        "version": 1,
        "columns": ("text", "label", "fold"),
    }

    def squares() -> pa.Table:
        labels = ["even", "odd"] * 3
        texts = [f"{i} squared is {i * i}" for i in range(6)]
        return pa.table({"text": texts, "label": labels, "fold": [i % 5 for i in range(6)]})

    try:
        assert register_builtin_task("builtin:test-squares", **declared)(squares) is squares
        spec = TaskSpec(name="squares", uri="builtin:test-squares")
        assert spec.is_builtin and spec.modality == "text" and spec.label_column == "label"
        info = task_info(spec)
        assert info.classes == ["even", "odd"] and info.class_counts == [3, 3]
        with pytest.raises(ValueError, match="already registered"):
            register_builtin_task("builtin:test-squares", **declared)
    finally:
        BUILTIN_TASKS.pop("builtin:test-squares", None)
    with pytest.raises(ValueError, match="must start with"):
        register_builtin_task("mine:squares", **declared)
    with pytest.raises(ValueError, match="lack"):
        register_builtin_task("builtin:x", **{**declared, "label_column": "side"})
    with pytest.raises(ValidationError, match="unknown built-in task"):
        TaskSpec(name="squares", uri="builtin:test-squares")


# --------------------------------------------------------------------------------------------
# Subsampling


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=1, max_value=500), min_size=2, max_size=12),
    fraction=st.floats(min_value=0.0, max_value=1.2),
)
def test_stratified_quotas_properties(counts, fraction):
    total = sum(counts)
    max_samples = max(len(counts), int(fraction * total))
    quotas = stratified_quotas(counts, max_samples)
    assert quotas.sum() == min(max_samples, total)
    assert np.all(quotas >= 1) and np.all(quotas <= np.asarray(counts))
    exact = np.asarray(counts) * min(max_samples, total) / total
    bumped = int(np.sum(exact < 1))  # classes lifted to one row shift the rest by at most this
    assert np.all(np.abs(quotas - exact) <= 1 + bumped)


def test_stratified_quotas_small_cases_by_brute_force():
    """Among all allocations with >= 1 per class, the result minimises the largest deviation."""
    import itertools

    rng = np.random.default_rng(0)
    cases = [([5, 3, 2], 4), ([10, 1, 1], 5), ([7, 7], 5), ([9, 2, 4, 1], 7)]
    for _ in range(40):
        counts = rng.integers(1, 7, size=int(rng.integers(2, 5))).tolist()
        cases.append((counts, int(rng.integers(len(counts), sum(counts) + 1))))
    for counts, max_samples in cases:
        quotas = stratified_quotas(counts, max_samples)
        exact = np.asarray(counts) * max_samples / sum(counts)
        best = min(
            np.abs(np.asarray(candidate) - exact).max()
            for candidate in itertools.product(*(range(1, c + 1) for c in counts))
            if sum(candidate) == max_samples
        )
        assert np.abs(quotas - exact).max() <= best + 1e-12, (counts, quotas)


def test_subsampling_is_stratified_seeded_and_keeps_every_class(tmp_path):
    labels = ["common"] * 400 + ["rare"] * 50 + ["single"]
    order = np.random.default_rng(0).permutation(len(labels))
    table = _text_table([labels[i] for i in order])
    _write(str(tmp_path / "data" / "part-0.parquet"), table)
    spec = _text_spec(str(tmp_path / "data"), max_samples=45, seed=3)
    info = task_info(spec)
    assert info.classes == ["common", "rare", "single"]
    assert info.class_counts == [39, 5, 1]  # 45 * 400/451 = 39.9, 45 * 50/451 = 5.0, +1
    assert info.num_rows == 45 and info.num_filtered_rows == 451

    def selected(spec: TaskSpec) -> list[str]:
        store = FeatureStore(str(tmp_path / "store"))
        snapshot = snapshot_task(spec, store)
        return [
            s
            for i in range(snapshot.num_shards)
            for s in snapshot.read_shard(i).column("input").to_pylist()
        ]

    first = selected(spec)
    assert selected(spec) == first  # same seed, same rows
    assert selected(spec.model_copy(update={"seed": 4})) != first
    source_order = table.column("sentence").to_pylist()
    positions = [source_order.index(text) for text in first]
    assert positions == sorted(positions)  # row_id follows source order


def test_regression_subsampling_is_uniform_and_seeded():
    spec = TaskSpec(name="discs", uri="builtin:discs", max_samples=100, seed=1)
    info = task_info(spec)
    assert info.num_rows == 100 and info.num_filtered_rows == 600
    assert task_info(spec) == info
    assert task_info(spec.model_copy(update={"seed": 2})).target_stats != info.target_stats


# --------------------------------------------------------------------------------------------
# Snapshots


def test_snapshot_round_trip_matches_the_source(store):
    spec = TaskSpec(
        name="Digits / train", uri="sklearn:digits", filter={"fold": [0, 1, 2]}, shard_rows=400
    )
    snapshot = snapshot_task(spec, store)
    assert (
        snapshot.task_key.startswith("digits-train-")
        and len(snapshot.task_key) == len("digits-train-") + 12
    )
    assert not snapshot.reused
    source = builtin_table("sklearn:digits")
    kept = np.flatnonzero(np.isin(source.column("fold").to_numpy(), [0, 1, 2]))
    assert snapshot.info.num_rows == kept.size == 1079
    assert snapshot.rows_per_shard == [400, 400, 279]
    assert snapshot.shard_uris[0] == store.uri_of(f"tasks/{snapshot.task_key}/part-00000.parquet")

    tables = [snapshot.read_shard(i) for i in range(snapshot.num_shards)]
    for table in tables:
        assert table.schema.field("input").type == pa.binary()
        assert table.schema.field("label").type == pa.int64()
    combined = pa.concat_tables(tables)
    np.testing.assert_array_equal(combined.column("row_id").to_numpy(), np.arange(kept.size))
    assert (
        combined.column("input").to_pylist()
        == source.column("image").take(pa.array(kept)).to_pylist()
    )
    classes = np.asarray(snapshot.info.classes)
    np.testing.assert_array_equal(
        classes[combined.column("label").to_numpy()].astype(int),
        source.column("label").to_numpy()[kept],
    )
    on_store = TaskInfo.model_validate_json(
        store.read_text(f"tasks/{snapshot.task_key}/_task.json")
    )
    assert on_store == snapshot.info
    read_back = pq.read_table(snapshot.shard_paths, filesystem=snapshot.filesystem)
    assert read_back.num_rows == kept.size


def test_multi_target_regression_snapshot(tmp_path):
    spec = TaskSpec(
        name="discs", uri="builtin:discs", label_column=["radius", "center_y"], max_samples=50
    )
    snapshot = snapshot_task(spec, FeatureStore(str(tmp_path)))
    table = snapshot.read_shard(0)
    assert table.schema.field("label").type == pa.list_(pa.float64(), 2)
    labels = np.asarray(table.column("label").to_pylist())
    assert labels.shape == (50, 2)
    assert labels[:, 0].mean() == pytest.approx(snapshot.info.target_stats[0].mean)
    assert snapshot.info.num_targets == 2


def test_snapshot_is_reused_and_an_interrupted_one_is_completed(tmp_path):
    store = FeatureStore(str(tmp_path / "store"))
    spec = TaskSpec(name="topics", uri="builtin:topics", shard_rows=300)
    first = snapshot_task(spec, store)
    folder = tmp_path / "store" / "tasks" / first.task_key
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = snapshot_task(spec, store)
    assert again.reused and again.info == first.info
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps

    # As if the run died after shard 0: shards 1, 2 and _task.json missing.
    for name in ("part-00001.parquet", "part-00002.parquet", "_task.json"):
        (folder / name).unlink()
    resumed = snapshot_task(spec, store)
    assert not resumed.reused
    assert (folder / "part-00000.parquet").stat().st_mtime_ns == stamps["part-00000.parquet"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(stamps)
    full = pa.concat_tables([resumed.read_shard(i) for i in range(resumed.num_shards)])
    assert (
        full.column("input").to_pylist()
        == builtin_table("builtin:topics").column("text").to_pylist()
    )


def test_task_key_changes_when_the_local_data_changes(tmp_path):
    data = tmp_path / "data"
    _write(str(data / "a.parquet"), _text_table(["x", "y"] * 10))
    spec = _text_spec(str(data))
    key = task_info(spec).task_key
    assert task_info(spec).task_key == key  # stable

    changed = _text_table(["x", "y"] * 9 + ["y", "y"])  # one label differs
    _write(str(data / "a.parquet"), changed)
    os.utime(data / "a.parquet", ns=(1, 1))
    key_changed = task_info(spec).task_key
    assert key_changed != key

    _write(str(data / "b.parquet"), _text_table(["x", "y"], start=100))
    assert task_info(spec).task_key not in (key, key_changed)
    base = task_info(spec)
    for update in (
        {"filter": {"topic": ["x", "y"]}},
        {"max_samples": 5},
        {"seed": 1},
        {"shard_rows": 7},
    ):
        assert task_info(spec.model_copy(update=update)).revision != base.revision
    renamed = task_info(spec.model_copy(update={"name": "other name"}))
    assert renamed.revision == base.revision and renamed.task_key.startswith("other-name-")


def test_task_key_follows_s3_etags(s3_server):
    bucket = s3_server.new_bucket()
    filesystem = s3_server.pyarrow_fs()
    path = f"{bucket}/ds/train.parquet"
    _write(path, _text_table(["x", "y"] * 10), filesystem)
    spec = _text_spec(f"s3://{bucket}/ds")
    key = task_info(spec).task_key
    size = filesystem.get_file_info(path).size
    # Same size, different content: only the ETag tells them apart.
    _write(path, _text_table(["y", "x"] * 10), filesystem)
    assert filesystem.get_file_info(path).size == size
    assert task_info(spec).task_key != key
    _write(path, _text_table(["x", "y"] * 10), filesystem)
    assert task_info(spec).task_key == key  # same bytes again, same ETag, same key


def test_hive_partitions_filter_the_split(tmp_path):
    _write(str(tmp_path / "ds" / "split=train" / "p.parquet"), _text_table(["a", "b", "a"]))
    _write(str(tmp_path / "ds" / "split=test" / "p.parquet"), _text_table(["b", "b"], start=50))
    info = task_info(_text_spec(str(tmp_path / "ds"), filter={"split": "train"}))
    assert (info.num_source_rows, info.num_filtered_rows, info.class_counts) == (5, 3, [2, 1])
    assert info.num_source_files == 2


def test_image_paths_and_hugging_face_structs_are_embedded(tmp_path):
    (tmp_path / "ds" / "img").mkdir(parents=True)
    images = {f"img/{i}.png": _png(40 * i) for i in range(4)}
    for relpath, data in images.items():
        (tmp_path / "ds" / relpath).write_bytes(data)
    table = pa.table(
        {
            "path": list(images),
            "hf": pa.array(
                [{"bytes": data, "path": None} for data in images.values()],
                pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            "label": [0, 1, 0, 1],
        }
    )
    _write(str(tmp_path / "ds" / "data.parquet"), table)
    store = FeatureStore(str(tmp_path / "store"))
    for column in ("path", "hf"):
        spec = TaskSpec(
            name=f"paths {column}",
            uri=str(tmp_path / "ds"),
            input_column=column,
            modality="image",
            label_column="label",
            kind="classification",
        )
        snapshot = snapshot_task(spec, store)
        assert snapshot.read_shard(0).column("input").to_pylist() == list(images.values())


def test_read_task_on_ray(ray_cluster, s3_server):
    spec = TaskSpec(name="topics", uri="builtin:topics", max_samples=40, seed=5, shard_rows=16)
    info = task_info(spec)
    in_memory = read_task(spec).take_all()
    assert sorted(row["row_id"] for row in in_memory) == list(range(40))
    store = FeatureStore(f"s3://{s3_server.new_bucket()}/store")
    from_store = read_task(spec, store=store).take_all()
    by_id = {row["row_id"]: row for row in from_store}
    assert len(by_id) == 40
    for row in in_memory:
        assert by_id[row["row_id"]]["input"] == row["input"]
        assert by_id[row["row_id"]]["label"] == row["label"]
    counts = np.bincount([row["label"] for row in in_memory], minlength=4)
    assert counts.tolist() == info.class_counts == [10, 10, 10, 10]


# --------------------------------------------------------------------------------------------
# Bad input


def test_missing_columns_are_listed(tmp_path):
    _write(str(tmp_path / "ds" / "a.parquet"), _text_table(["a", "b"]))
    with pytest.raises(
        TaskError, match=r"\['text', 'split'\] not found; the dataset has \['sentence', 'topic'\]"
    ):
        task_info(_text_spec(str(tmp_path / "ds"), input_column="text", filter={"split": "train"}))


def test_undecodable_image_names_file_and_row(tmp_path):
    data = [_png(10), _png(20), b"\x89PNG\r\n\x1a\n-truncated", _png(30)]
    _write(str(tmp_path / "ds" / "imgs.parquet"), pa.table({"image": data, "label": [0, 1, 0, 1]}))
    spec = TaskSpec(
        name="broken",
        uri=str(tmp_path / "ds"),
        input_column="image",
        modality="image",
        label_column="label",
        kind="classification",
    )
    store = FeatureStore(str(tmp_path / "store"))
    with pytest.raises(
        TaskError, match=r"row 2 of .*imgs\.parquet \(column 'image'\) is not a decodable image"
    ):
        snapshot_task(spec, store)
    assert not store.exists("tasks")  # nothing half-done is published (one shard, never committed)


def test_missing_image_file_names_the_row(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "ok.png").write_bytes(_png(5))
    _write(
        str(tmp_path / "ds" / "t.parquet"),
        pa.table({"path": ["ok.png", "gone.png"], "label": [0, 1]}),
    )
    spec = TaskSpec(
        name="paths",
        uri=str(tmp_path / "ds"),
        input_column="path",
        modality="image",
        label_column="label",
        kind="classification",
    )
    with pytest.raises(TaskError, match=r"row 1 of .*t\.parquet.*gone\.png"):
        snapshot_task(spec, FeatureStore(str(tmp_path / "store")))


@pytest.mark.parametrize(
    ("labels", "kind", "pattern"),
    [
        (
            [0.0, 1.0, float("nan"), 1.0],
            "classification",
            r"1 labels are NaN/Inf \(first at row 2 of",
        ),
        (["a", None, "b", "a"], "classification", r"1 labels are missing \(first at row 1 of"),
        ([0.5, 1.0, 0.0, 1.0], "classification", "non-integer floats.*kind: regression"),
        (
            [1.0, float("nan"), 2.0, 3.0],
            "regression",
            r"missing/NaN/Inf values \(first at row 1 of",
        ),
        ([2.0, 2.0, 2.0, 2.0], "regression", "constant"),
        (["a", "b", "a", "b"], "regression", "expected numbers"),
        ([[1], [2], [1], [2]], "classification", "expected integers, strings or booleans"),
    ],
)
def test_bad_labels_are_refused(tmp_path, labels, kind, pattern):
    _write(
        str(tmp_path / "ds" / "x.parquet"), pa.table({"sentence": list("wxyz"), "topic": labels})
    )
    with pytest.raises(TaskError, match=pattern):
        task_info(_text_spec(str(tmp_path / "ds"), kind=kind))


def test_single_class_after_filter_is_refused(tmp_path):
    table = _text_table(["a", "b", "a", "a"]).append_column(
        "split", pa.array(["train", "test", "train", "train"])
    )
    _write(str(tmp_path / "ds" / "x.parquet"), table)
    with pytest.raises(TaskError, match=r"single class 'a'.*at least two classes"):
        task_info(_text_spec(str(tmp_path / "ds"), filter={"split": "train"}))
    with pytest.raises(TaskError, match="no rows left after the filter"):
        task_info(_text_spec(str(tmp_path / "ds"), filter={"split": "validation"}))
    with pytest.raises(TaskError, match="max_samples=1 cannot keep one row of each of 2 classes"):
        task_info(_text_spec(str(tmp_path / "ds"), max_samples=1))


def test_wrong_dtypes_are_refused(tmp_path):
    _write(
        str(tmp_path / "ds" / "x.parquet"),
        pa.table(
            {
                "number": [1, 2, 3],
                "sentence": ["a", "b", "c"],
                "topic": ["p", "p", "q"],
                "fold": [1, 2, 3],
            }
        ),
    )
    uri = str(tmp_path / "ds")
    with pytest.raises(TaskError, match=r"text input column 'number' is int64, expected strings"):
        task_info(_text_spec(uri, input_column="number"))
    with pytest.raises(TaskError, match=r"image input column 'number' is int64"):
        task_info(_text_spec(uri, input_column="number", modality="image"))
    with pytest.raises(TaskError, match=r"filter values \['one'\] do not fit column 'fold'"):
        task_info(_text_spec(uri, filter={"fold": "one"}))
    assert task_info(_text_spec(uri, filter={"fold": [1, 3]})).num_rows == 2


def test_corrupt_parquet_file_is_named(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "broken.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(TaskError, match=r"broken\.parquet"):
        task_info(_text_spec(str(tmp_path / "ds")))


def test_unreachable_or_unsupported_sources_are_storage_errors(tmp_path, monkeypatch):
    with pytest.raises(StorageError, match="unsupported URI scheme 'gs'"):
        task_info(_text_spec("gs://bucket/data"))
    with pytest.raises(StorageError, match="does not exist"):
        task_info(_text_spec(str(tmp_path / "nothing")))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    secret = "Zm9vYmFyLXNlY3JldC1rZXktZm9yLXRlc3Rz"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    options = StorageOptions(
        endpoint_override=f"http://127.0.0.1:{port}",
        max_attempts=1,
        connect_timeout_s=2,
        retries=1,
        retry_backoff_s=0.05,
    )
    with pytest.raises(StorageError, match="cannot reach") as caught:
        task_info(_text_spec("s3://bucket/data"), storage_options=options)
    assert "listing s3://bucket/data failed after 2 attempts" in str(caught.value)
    assert secret not in str(caught.value)


def test_failed_snapshot_leaves_committed_snapshots_intact(tmp_path):
    store = FeatureStore(str(tmp_path / "store"))
    good = snapshot_task(TaskSpec(name="topics", uri="builtin:topics", max_samples=20), store)
    before = {p: store.read_bytes(p) for p in good.shard_relpaths}
    _write(str(tmp_path / "ds" / "x.parquet"), _text_table(["a", "a"]))
    with pytest.raises(TaskError):
        snapshot_task(_text_spec(str(tmp_path / "ds")), store)
    assert {p: store.read_bytes(p) for p in good.shard_relpaths} == before
    assert snapshot_task(
        TaskSpec(name="topics", uri="builtin:topics", max_samples=20), store
    ).reused
    assert store.list_dir("tasks") == [good.task_key]
    assert json.loads(store.read_text(f"tasks/{good.task_key}/_task.json"))["num_rows"] == 20
