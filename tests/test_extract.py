"""The extract stage on a real local Ray cluster against the moto S3 server.

One module-scoped run extracts two random-init timm models, one tiny Hugging Face ViT saved by
the test, a text model (wrong modality) and a misspelt model over two small built-in tasks; the
tests then check the store against independent single-process computations.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from hub_helpers import save_tiny_vit
from transformers import BertConfig, BertModel

from ray_logme.config import Resources
from ray_logme.extract import FAULT_INJECT_ENV, HubSource, extract
from ray_logme.hub import ModelSpec, load_extractor
from ray_logme.hub.identity import model_key
from ray_logme.storage import FeatureStore, list_files
from ray_logme.tasks import TaskSpec, snapshot_task

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def hf_vit_dir(tmp_path_factory):
    return save_tiny_vit(tmp_path_factory.mktemp("tiny-hf-vit"), seed=0)


@pytest.fixture(scope="module")
def hf_bert_dir(tmp_path_factory):
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-hf-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]))
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    config = BertConfig(
        vocab_size=7,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def setup(ray_cluster, s3_server, hf_vit_dir, hf_bert_dir):
    bucket = s3_server.new_bucket("extract")
    store = FeatureStore(f"s3://{bucket}/store")
    tasks = [
        TaskSpec(name="digits", uri="sklearn:digits", max_samples=90, shard_rows=32),
        TaskSpec(name="discs", uri="builtin:discs", max_samples=50, shard_rows=32),
    ]
    snapshots = {spec.name: snapshot_task(spec, store) for spec in tasks}
    good = [
        ModelSpec(hub="timm", name="test_resnet", pretrained=False),
        ModelSpec(hub="timm", name="test_vit", pretrained=False),
        ModelSpec(hub="hf", name=str(hf_vit_dir)),
    ]
    bad = [
        ModelSpec(hub="timm", name="test_resnett_typo"),
        ModelSpec(hub="hf", name=str(hf_bert_dir)),
    ]
    result = extract(
        [*good, *bad],
        snapshots,
        store,
        "run-1",
        resources=Resources(batch_size=16, preprocess_cpus=0.5),
        progress=False,
    )
    return store, snapshots, good, bad, result


def pair_status(result, model_name, task):
    (row,) = [p for p in result.pairs if p.task == task and p.model.startswith(model_name)]
    return row


def test_store_holds_every_shard_with_all_rows_and_labels(setup):
    store, snapshots, good, _, result = setup
    for spec in good:
        key = model_key(spec)
        for name, snapshot in snapshots.items():
            status = pair_status(result, spec.display_name, name)
            assert status.state == "ok", status.error
            assert status.shards_total == snapshot.num_shards
            assert status.shards_computed == snapshot.num_shards
            assert store.committed_feature_shards(key, snapshot.task_key) == set(
                range(snapshot.num_shards)
            )
            assert store.feature_num_rows(key, snapshot.task_key) == snapshot.info.num_rows
            for index in range(snapshot.num_shards):
                shard = store.read_feature_shard(key, snapshot.task_key, index)
                source = snapshot.read_shard(index)
                assert shard.row_ids.tolist() == sorted(source.column("row_id").to_pylist())
                by_row = dict(
                    zip(
                        source.column("row_id").to_pylist(),
                        source.column("label").to_pylist(),
                        strict=True,
                    )
                )
                expected = np.array([by_row[r] for r in shard.row_ids.tolist()])
                np.testing.assert_array_equal(shard.labels, expected)
                assert shard.metadata["model_key"] == key


def test_features_equal_a_plain_single_process_loop(setup):
    store, snapshots, good, _, _ = setup
    torch.set_num_threads(1)
    for spec in good:
        extractor = load_extractor(spec, device="cpu")
        for snapshot in snapshots.values():
            for index in range(snapshot.num_shards):
                source = snapshot.read_shard(index).sort_by("row_id")
                expected = extractor.extract(source.column("input").to_pylist())
                shard = store.read_feature_shard(model_key(spec), snapshot.task_key, index)
                assert shard.features.shape == expected.shape
                np.testing.assert_allclose(shard.features, expected, rtol=1e-4, atol=1e-5)


def test_bad_models_fail_their_own_rows_only(setup):
    _, snapshots, good, bad, result = setup
    for name in snapshots:
        typo = pair_status(result, "test_resnett_typo", name)
        assert typo.state == "failed"
        assert "test_resnett_typo" in typo.error and "closest" in typo.error
        text_model = pair_status(result, bad[1].display_name, name)
        assert text_model.state == "skipped"  # not applicable, not a failure
        assert "text" in text_model.error and name in text_model.error
        for spec in good:
            assert pair_status(result, spec.display_name, name).state == "ok"
    records = {m.model: m for m in result.models}
    assert records[bad[0].display_name].state == "failed"
    assert records[bad[1].display_name].state == "skipped"
    assert records[bad[1].display_name].modality == "text"
    assert records[good[0].display_name].modality == "image"
    assert records[good[0].display_name].num_params == sum(
        p.numel() for p in load_extractor(good[0], device="cpu").model.parameters()
    )
    assert all(records[s.display_name].throughput > 0 for s in good)


def test_model_records_time_start_up_and_the_steady_state_rate(setup):
    """The steady-state rate spans the actors' batches: between forward-only and end to end."""
    _, _, good, bad, result = setup
    for spec in good:
        record = next(m for m in result.models if m.model == spec.display_name)
        assert 0 < record.startup_seconds < record.extract_seconds
        # One worker: its batches' span holds every forward pass and lies inside the whole run.
        assert record.pipeline_throughput <= record.throughput * (1 + 1e-9)
        assert record.pipeline_throughput >= record.rows_computed / record.extract_seconds
    for spec in bad:  # nothing computed: nothing timed
        record = next(m for m in result.models if m.model == spec.display_name)
        assert record.startup_seconds is None and record.pipeline_throughput is None


def test_rerun_skips_committed_shards_and_does_no_forward(setup):
    store, snapshots, good, _, _ = setup
    before = {
        path: etag
        for spec in good
        for snapshot in snapshots.values()
        for path, etag in _etags(store, model_key(spec), snapshot.task_key).items()
    }
    again = extract(
        good, snapshots, store, "run-2", resources=Resources(batch_size=16), progress=False
    )
    assert again.forward_rows == 0
    assert all(p.state == "ok" and p.shards_computed == 0 for p in again.pairs)
    assert all(p.shards_done == p.shards_total for p in again.pairs)
    after = {
        path: etag
        for spec in good
        for snapshot in snapshots.values()
        for path, etag in _etags(store, model_key(spec), snapshot.task_key).items()
    }
    assert after == before


def _etags(store, key, task_key):
    _, _, files = list_files(store.uri_of(store.feature_dir(key, task_key)))
    return {f.path: (f.size, f.version) for f in files}


def test_actor_killed_on_its_first_batch_is_restarted_without_duplicates(
    ray_cluster, s3_server, tmp_path
):
    bucket = s3_server.new_bucket("fault")
    store = FeatureStore(f"s3://{bucket}/store")
    snapshot = snapshot_task(
        TaskSpec(name="digits", uri="sklearn:digits", max_samples=64, shard_rows=16), store
    )
    marker = tmp_path / "actor-crashed"
    spec = ModelSpec(hub="timm", name="test_vit", pretrained=False)
    result = extract(
        [spec],
        {"digits": snapshot},
        store,
        "run-fault",
        resources=Resources(batch_size=16),
        runtime_env={"env_vars": {FAULT_INJECT_ENV: str(marker)}},
        progress=False,
    )
    assert marker.exists(), "the fault was never injected"
    (status,) = result.pairs
    assert status.state == "ok", status.error
    key = model_key(spec)
    assert store.committed_feature_shards(key, snapshot.task_key) == {0, 1, 2, 3}
    row_ids = np.concatenate(
        [store.read_feature_shard(key, snapshot.task_key, i).row_ids for i in range(4)]
    )
    assert sorted(row_ids.tolist()) == list(range(64))


class _OOMAboveFour:
    """A real timm extractor that raises torch's OOM error for batches above 4 rows."""

    def __init__(self, extractor):
        self.extractor = extractor
        self.metadata = extractor.metadata
        self.calls: list[int] = []

    def __call__(self, tensors):
        rows = len(tensors["pixel_values"])
        self.calls.append(rows)
        if rows > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.extractor(tensors)


class _AlwaysOOM:
    def __init__(self, metadata):
        self.metadata = metadata

    def __call__(self, tensors):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")


class _AlwaysOOMSource(HubSource):
    """The real hub, but every loaded model runs out of memory on every forward pass."""

    def load(self, spec, device, allow_remote_code):
        return _AlwaysOOM(super().load(spec, device, allow_remote_code).metadata)


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_features(tmp_path):
    from ray_logme.extract import ExtractWorker, ModelRunner, Unit, decode_shard
    from ray_logme.extract.worker import WorkerOptions

    torch.set_num_threads(1)
    spec = ModelSpec(hub="timm", name="test_vit", pretrained=False)
    reference = load_extractor(spec, device="cpu")
    pixels = np.random.default_rng(0).normal(size=(12, 3, 160, 160)).astype(np.float32)
    expected = reference({"pixel_values": pixels})
    runner = ModelRunner(_OOMAboveFour(reference), 16)
    out = runner.features({"row_id": np.arange(12), "pixel_values": pixels}, np.arange(12))
    assert runner.forward_batch_size == 4 and runner.model.calls[:3] == [12, 8, 4]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # At batch size 1 an OOM is raised (not retried forever) ...
    runner = ModelRunner(_AlwaysOOM(reference.metadata), 1)
    with pytest.raises(torch.OutOfMemoryError):
        runner.features({"row_id": np.arange(1), "pixel_values": pixels[:1]}, np.arange(1))
    # ... and in a worker it fails the unit with a message; the worker takes the next unit.
    store = FeatureStore(str(tmp_path / "store"))
    snapshot = snapshot_task(
        TaskSpec(name="digits", uri="sklearn:digits", max_samples=20, shard_rows=10), store
    )
    worker = ExtractWorker(store, _AlwaysOOMSource(), WorkerOptions("cpu", 1))
    for index in range(2):
        unit = Unit(
            spec.model_dump_json(), model_key(spec), "digits", snapshot.task_key, index,
            snapshot.shard_paths[index], 10, "image", "run",
        )  # fmt: skip
        decoded = decode_shard(store, unit.shard_relpath, unit.spec_json, (), 8)
        report = worker.run(unit, decoded)
        assert "forward pass failed" in report.error and "out of memory" in report.error
        assert report.rows == 0 and not report.committed
    assert store.committed_feature_shards(model_key(spec), snapshot.task_key) == set()


def test_decode_stage_ships_uint8_for_timm_float32_otherwise_and_names_bad_rows(hf_vit_dir):
    from hub_helpers import encode, random_rgb

    from ray_logme.extract import decode_images

    good = [encode(random_rgb(i), "PNG") for i in range(3)]
    batch = {
        "path": np.array(["s3://b/tasks/t/shard-00007.parquet"] * 4),
        "row_id": np.array([10, 11, 12, 13]),
        "input": np.array([good[0], b"not an image", good[1], good[2]], dtype=object),
    }
    timm_spec = ModelSpec(hub="timm", name="test_resnet", pretrained=False)
    out = decode_images(batch, timm_spec.model_dump_json())
    pixels = out["pixel_values_uint8"]
    assert pixels.dtype == np.uint8 and "pixel_values" not in out
    assert list(out["error"] == "") == [True, False, True, True]
    assert "row_id=11" in out["error"][1] and "shard-00007.parquet" in out["error"][1]
    extractor = load_extractor(timm_spec, device="cpu")
    expected = extractor(extractor.preprocess([good[0], good[1], good[2]]))
    np.testing.assert_array_equal(extractor({"pixel_values_uint8": pixels[[0, 2, 3]]}), expected)
    hf = decode_images(batch, ModelSpec(hub="hf", name=str(hf_vit_dir)).model_dump_json())
    assert hf["pixel_values"].dtype == np.float32 and list(hf["error"] == "") == [
        True,
        False,
        True,
        True,
    ]


def test_model_key_follows_weight_content_not_file_times(tmp_path):
    import os
    import shutil
    from importlib import resources

    folder = tmp_path / "shapes"
    shutil.copytree(str(resources.files("ray_logme") / "zoo" / "shapes"), folder)
    spec = ModelSpec(hub="timm", name=str(folder))
    first = model_key(spec)
    for path in folder.iterdir():
        os.utime(path, (1, 1))  # a fresh checkout or an rsync copy has other mtimes
    assert model_key(spec) == first
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert model_key(spec) != first
    assert model_key(spec.model_copy(update={"tags": {"owner": "x"}})) == model_key(spec)


_ALLOCATION_LOOP = """
import resource, threading
import numpy as np

def batches(out):
    np.ones(8 << 20)
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(20):
        block = np.ones(8 << 20)  # 64 MiB written, then freed: an activation buffer
        del block
    out.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)

out = []
np.ones(1 << 20)  # the main thread allocates first, as the actor's __init__ does
thread = threading.Thread(target=batches, args=(out,))  # Ray Data calls the model off-main
thread.start()
thread.join()
print(out[0])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_model_actor_environment_keeps_freed_activation_memory():
    """With the actors' allocator settings, freed large buffers are reused without page faults."""
    import os

    from ray_logme.extract import ACTOR_ALLOCATOR_ENV

    def minor_faults(extra_env: dict[str, str]) -> int:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        out = subprocess.run(
            [sys.executable, "-c", _ALLOCATION_LOOP],
            env={**env, **extra_env},
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout)

    assert minor_faults({}) >= 20  # glibc maps and unmaps each 64 MiB block: faults every round
    assert minor_faults(ACTOR_ALLOCATOR_ENV) < 20  # kept in the heap, reused without faults
