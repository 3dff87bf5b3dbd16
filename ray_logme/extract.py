"""The extract stage: models x tasks -> feature shards on the store, on a Ray cluster.

Work is model-major. For each model, one Ray Data pipeline streams the *pending* input shards of
every task through a pool of model actors, so weights are loaded once per actor per model, never
once per task::

    read_parquet(task input shards, include_paths)            # CPU read tasks
      -> map_batches(_decode_images)                          # CPU tasks: decode + model transform
      -> map_batches(ModelActor, compute=ActorPoolStrategy,   # one model copy per actor,
                     num_gpus=gpus_per_worker)                #   GPU-pinned when there is one
      -> driver: gather rows per shard, commit complete shards (atomic, at most once)

Text tasks skip the CPU stage: tokenising is cheap and needs no fixed tensor shape between
stages, so the actor tokenises its own batch.

Shards already committed for ``(model_key, task_key)`` are not read at all, so a rerun of the
same config does no forward pass (and loads no model) for them. Keys are content keys:
:func:`model_key` hashes what determines the features (spec, weight identity, library versions);
the task key comes from the task snapshot (dataset revision).

Failure isolation: a model that fails to load, a batch that runs out of memory at batch size 1,
non-finite features or an undecodable input fail the affected (model, task) rows of the status
table, with an error and a traceback, while the rest of the run goes on. Ray-level faults (a
dying actor) are retried by Ray Data's actor pool; since shards are committed by the driver only
when complete, and at most once, nothing is duplicated or lost.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import traceback
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ray_logme import __version__, tables
from ray_logme.config import BatchSizes, Resources
from ray_logme.errors import FeatureError, ModalityMismatchError, RayLogMEError
from ray_logme.hub import ModelSpec, ensure_modality, load_extractor, load_preprocessor
from ray_logme.hub.identity import resolve_model_key
from ray_logme.hub.metadata import PIXELS_UINT8
from ray_logme.storage import FeatureStore, labels_to_numpy, layout
from ray_logme.tables import MODELS_SCHEMA, STATUS_SCHEMA, ModelRecord, PairStatus  # noqa: F401
from ray_logme.tasks import TaskSnapshot

logger = logging.getLogger(__name__)

#: Test-only fault injection: path of a marker file; the first model actor batch that finds it
#: missing creates it and kills its own process (exercises Ray's actor restart).
FAULT_INJECT_ENV = "RAY_LOGME_FAULT_EXIT_ONCE"


# --------------------------------------------------------------------------------------------
# Keys and status records


@dataclass
class ExtractResult:
    """What :func:`extract` did: per-pair status, per-model records, and forward counts."""

    pairs: list[PairStatus] = field(default_factory=list)
    models: list[ModelRecord] = field(default_factory=list)

    @property
    def forward_rows(self) -> int:
        """Rows that went through a model forward pass in this call."""
        return sum(p.rows_computed for p in self.pairs)

    @property
    def failed(self) -> list[PairStatus]:
        return [p for p in self.pairs if p.state == "failed"]

    def status_table(self):
        return tables.STATUS.from_rows(self.pairs)

    def models_table(self):
        return tables.MODELS.from_rows(self.models)


# --------------------------------------------------------------------------------------------
# Pipeline pieces that run on Ray workers


@functools.lru_cache(maxsize=8)
def _preprocessor_for(spec_json: str, allow_remote_code: tuple[str, ...] = ()):
    spec = ModelSpec.model_validate_json(spec_json)
    return load_preprocessor(spec, allow_remote_code=allow_remote_code)


#: Environment of the model actor processes: glibc malloc keeps freed memory for reuse.
#: A forward pass allocates and frees the same large activation buffers (tens of MB) on every
#: batch. In a Ray worker, glibc served each with a fresh ``mmap`` (or a per-thread arena that it
#: trims) and gave it back after the batch, so every batch page-faulted its activations in
#: again: 1.3-1.5 million minor faults per 512 rows of resnet10t and 0.70-0.80x the forward rate
#: of the same code in a long-lived process. One arena, no ``mmap`` for large blocks and no
#: trimming keep them in the heap (0 faults, the plain loop's rate; see mallopt(3)). Set at
#: process start because Ray Data calls the model from a thread other than the one that loaded
#: it. Model actors are dedicated processes, so their memory staying at its peak costs nothing.
ACTOR_ALLOCATOR_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1),
}


def _short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:1997] + "..."


def decode_images(
    batch: Mapping[str, np.ndarray], spec_json: str, allow_remote_code: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """CPU stage: encoded images -> the model's input pixels, one row per input row.

    ``batch`` has ``path`` (input shard), ``row_id`` and ``input`` (encoded bytes). Returns
    ``path``, ``row_id``, the pixels and ``error`` (empty string, or why this row could not be
    decoded, naming the shard file and row). Pixels are ``pixel_values_uint8: uint8[n, 3, H, W]``
    (resized and cropped; the model actor scales and normalises them on its device) where the
    model's preprocessing allows it (timm), else ``pixel_values: float32[n, 3, H, W]``.
    """
    preprocessor = _preprocessor_for(spec_json, tuple(allow_remote_code))
    uint8_pixels = getattr(preprocessor, "uint8_pixels", None)
    if uint8_pixels is not None:
        column, dtype, convert = PIXELS_UINT8, np.uint8, uint8_pixels
    else:
        column, dtype, convert = "pixel_values", np.float32, preprocessor
    inputs = list(batch["input"])
    errors = np.full(len(inputs), "", dtype=object)
    try:
        pixels = convert(inputs)[column]
    except Exception:
        # Find the rows at fault; keep the good ones.
        good, shape = {}, None
        for i, item in enumerate(inputs):
            try:
                good[i] = convert([item])[column][0]
                shape = good[i].shape
            except Exception as exc:
                errors[i] = (
                    f"cannot decode input row_id={int(batch['row_id'][i])} of "
                    f"{batch['path'][i]}: {_short_error(exc)}"
                )
        if shape is None:
            shape = (3, 1, 1)
        pixels = np.zeros((len(inputs), *shape), dtype=dtype)
        for i, array in good.items():
            pixels[i] = array
    return {
        "path": np.asarray(batch["path"]),
        "row_id": np.asarray(batch["row_id"], dtype=np.int64),
        column: np.ascontiguousarray(pixels, dtype=dtype),
        "error": errors.astype(str),
    }


class ModelActor:
    """Model stage of the pipeline: one loaded model per actor process (Ray Data callable class).

    Loads the model once in ``__init__``. A load failure does not crash the actor (Ray would
    retry it forever or fail the whole pipeline): it is kept and reported on every row, so the
    driver fails exactly this model's pairs. ``__call__`` runs the forward pass in micro-batches,
    halving the micro-batch on an out-of-memory error down to 1.
    :func:`extract` starts these actors with :data:`ACTOR_ALLOCATOR_ENV`.

    Returns ``path``, ``row_id``, ``features: float32[n, d]`` (zeros on failed rows),
    ``forward_seconds: float64[n]`` (the batch's forward time spread over its rows),
    ``batch_started``/``batch_finished: float64[n]`` (when this call began and ended, Unix
    seconds: the driver's steady-state rate) and ``error``.
    """

    def __init__(
        self,
        spec_json: str,
        device: str,
        allow_remote_code: Sequence[str],
        forward_batch_size: int,
        store: FeatureStore,
        model_key: str,
        num_threads: int = 1,
    ) -> None:
        self.spec = ModelSpec.model_validate_json(spec_json)
        self.forward_batch_size = forward_batch_size
        self.load_error: str | None = None
        self.feature_dim = 1
        try:
            import torch

            # CPU threads = this actor's CPU share, so actors and decode tasks don't oversubscribe.
            torch.set_num_threads(num_threads)
            self.extractor = load_extractor(
                self.spec, device=device, allow_remote_code=tuple(allow_remote_code)
            )
            self.feature_dim = int(self.extractor.metadata.feature_dim)
            record = self.extractor.metadata.to_dict()
            store.write_text(
                layout.model_record(model_key), json.dumps(record, sort_keys=True, indent=1)
            )
        except Exception as exc:
            self.load_error = f"model failed to load: {_short_error(exc)}"
            self.load_traceback = traceback.format_exc()
            logger.error("%s: %s", self.spec.name, self.load_error)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.time()
        _maybe_inject_fault()
        num_rows = len(batch["row_id"])
        errors = np.asarray(batch["error"], dtype=object) if "error" in batch else None
        if errors is None:
            errors = np.full(num_rows, "", dtype=object)
        features = np.zeros((num_rows, self.feature_dim), dtype=np.float32)
        seconds = 0.0
        if self.load_error is not None:
            errors[:] = self.load_error
        else:
            ok = np.flatnonzero(errors == "")
            if ok.size:
                start = time.perf_counter()
                try:
                    features[ok] = self._forward(batch, ok)
                except Exception as exc:
                    errors[ok] = f"forward pass failed: {_short_error(exc)}"
                seconds = time.perf_counter() - start
        return {
            "path": np.asarray(batch["path"]),
            "row_id": np.asarray(batch["row_id"], dtype=np.int64),
            "features": features,
            "forward_seconds": np.full(num_rows, seconds / max(num_rows, 1)),
            "batch_started": np.full(num_rows, started),
            "batch_finished": np.full(num_rows, time.time()),
            "error": errors.astype(str),
        }

    def _forward(self, batch: Mapping[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
        """Features of ``rows`` of the batch, in micro-batches that halve on OOM."""
        import torch

        out = np.empty((rows.size, self.feature_dim), dtype=np.float32)
        start = 0
        while start < rows.size:
            index = rows[start : start + self.forward_batch_size]
            try:
                out[start : start + index.size] = self._forward_rows(batch, index)
            except torch.OutOfMemoryError:
                if self.forward_batch_size == 1:
                    raise
                self.forward_batch_size = max(1, self.forward_batch_size // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                logger.warning(
                    "%s: out of memory, forward batch halved to %d",
                    self.spec.name,
                    self.forward_batch_size,
                )
                continue
            start += index.size
        return out

    def _forward_rows(self, batch: Mapping[str, np.ndarray], index: np.ndarray) -> np.ndarray:
        pixels = next((c for c in ("pixel_values", PIXELS_UINT8) if c in batch), None)
        if pixels is not None:
            tensors = {pixels: np.asarray(batch[pixels])[index]}
        else:
            tensors = self.extractor.preprocess([str(batch["input"][i]) for i in index])
        return self.extractor(tensors)


def _maybe_inject_fault() -> None:
    marker = os.environ.get(FAULT_INJECT_ENV)
    if marker and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        logger.warning("fault injection: actor %d exits on purpose", os.getpid())
        os._exit(1)


# --------------------------------------------------------------------------------------------
# Driver


@dataclass
class _ShardBuffer:
    """Rows of one input shard gathered in the driver until the shard is complete."""

    expected_rows: int
    row_ids: list[np.ndarray] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    rows: int = 0


def extract(
    models: Sequence[ModelSpec],
    snapshots: Mapping[str, TaskSnapshot | RayLogMEError],
    store: FeatureStore,
    run_id: str,
    *,
    resources: Resources | None = None,
    allow_remote_code: Iterable[str] = (),
    runtime_env: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> ExtractResult:
    """Compute and commit the feature shards of every (model, task) pair; return their status.

    Runs on the Ray cluster the caller connected to. ``snapshots`` maps task name to its
    :class:`TaskSnapshot`, or to the error that prevented snapshotting it (its pairs are
    recorded as failed). Shards already committed are skipped. ``resources`` is the config's
    typed section (workers, GPUs and CPUs per worker, the three batch sizes, restarts,
    ``wait_for_actors_s``: how long a pool may wait for its first actor, so a GPU that never
    comes fails that model instead of hanging the run). ``runtime_env`` is passed to the model
    actors (e.g. ``{"env_vars": {"HF_TOKEN": ...}}``).
    Never raises for a model or task at fault; Ray-level failures that persist after retries are
    recorded against the model whose pipeline they broke.
    """
    options = _PipelineOptions.of(resources or Resources(), allow_remote_code, runtime_env)
    result = ExtractResult()
    for position, spec in enumerate(models, start=1):
        logger.info("extract: model %d/%d: %s", position, len(models), spec.display_name)
        started = time.perf_counter()
        record = ModelRecord(
            run_id=run_id,
            model=spec.display_name,
            model_key="",
            hub=spec.hub,
            tags=json.dumps(spec.tags, sort_keys=True),
        )
        result.models.append(record)
        try:  # resolving and keying the model is this model's own work: it fails only itself
            key = record.model_key = resolve_model_key(spec, _has_features(store))
        except Exception as exc:
            pairs = _unkeyed_pairs(spec, snapshots, run_id, exc, traceback.format_exc())
            result.pairs.extend(pairs.values())
            _finish_model_record(record, pairs.values(), store, time.perf_counter() - started)
            logger.error("%s: %s", spec.display_name, next(iter(pairs.values())).error)
            continue
        pairs = _plan_pairs(spec, key, snapshots, store, run_id)
        result.pairs.extend(pairs.values())
        preprocessor = None
        try:
            preprocessor = load_preprocessor(spec, allow_remote_code=options.allow_remote_code)
            modality = record.modality = preprocessor.modality
        except Exception as exc:
            for pair in pairs.values():
                pair.fail(f"model failed to load: {_short_error(exc)}", traceback.format_exc())
            modality = None
        if modality is not None:
            for pair in pairs.values():
                snapshot = snapshots[pair.task]
                if pair.state == "pending" and isinstance(snapshot, TaskSnapshot):
                    try:
                        ensure_modality(preprocessor, snapshot.info.modality, pair.task)
                    except ModalityMismatchError as exc:
                        # Not a failure: a text model has nothing to say about an image task.
                        pair.state, pair.error = "skipped", str(exc)
            work = [
                (pair, snapshots[pair.task])
                for pair in pairs.values()
                if pair.state == "pending" and pair.shards_done < pair.shards_total
            ]
            if work:
                timing = _run_model_pipeline(
                    spec,
                    key,
                    modality,
                    work,
                    store,
                    options,
                    progress=progress,
                    label=f"[{position}/{len(models)}] {spec.display_name}",
                )
                if any(pair.rows_computed for pair, _ in work):
                    record.startup_seconds, record.pipeline_throughput = timing.summary()
        for pair in pairs.values():
            if pair.state == "pending":
                pair.state = "ok"
        _finish_model_record(record, pairs.values(), store, time.perf_counter() - started)
        logger.info(
            "%s: %d/%d tasks ok, %d rows computed",
            spec.display_name,
            sum(p.state == "ok" for p in pairs.values()),
            len(pairs),
            record.rows_computed,
        )
    return result


def _has_features(store: FeatureStore):
    """``key -> bool``: whether the store holds any feature shards of model ``key``."""
    return lambda key: bool(store.list_dir(layout.model_features_dir(key)))


def _unkeyed_pairs(
    spec: ModelSpec,
    snapshots: Mapping[str, TaskSnapshot | RayLogMEError],
    run_id: str,
    exc: Exception,
    tb: str,
) -> dict[str, PairStatus]:
    """Failed pairs of a model that could not even be resolved (so it has no key)."""
    message = f"model failed to load: {_short_error(exc)}"
    pairs = {}
    for task_name, snapshot in snapshots.items():
        task_key = snapshot.task_key if isinstance(snapshot, TaskSnapshot) else ""
        pairs[task_name] = PairStatus(run_id, spec.display_name, "", task_name, task_key)
        pairs[task_name].fail(message, tb)
    return pairs


def _plan_pairs(
    spec: ModelSpec,
    key: str,
    snapshots: Mapping[str, TaskSnapshot | RayLogMEError],
    store: FeatureStore,
    run_id: str,
) -> dict[str, PairStatus]:
    pairs: dict[str, PairStatus] = {}
    for task_name, snapshot in snapshots.items():
        if isinstance(snapshot, TaskSnapshot):
            pair = PairStatus(run_id, spec.display_name, key, task_name, snapshot.task_key)
            pair.shards_total = snapshot.num_shards
            done = store.committed_feature_shards(key, snapshot.task_key)
            pair.shards_done = len(done & set(range(snapshot.num_shards)))
            pair.rows = sum(
                snapshot.rows_per_shard[i] for i in done if i < len(snapshot.rows_per_shard)
            )
        else:
            pair = PairStatus(run_id, spec.display_name, key, task_name, "")
            pair.fail(f"task {task_name!r} could not be read: {_short_error(snapshot)}")
        pairs[task_name] = pair
    return pairs


@dataclass(frozen=True)
class _PipelineOptions:
    """What every model's pipeline is run with, resolved once from the config."""

    resources: Resources
    batch_sizes: BatchSizes
    allow_remote_code: tuple[str, ...]
    runtime_env: Mapping[str, Any] | None

    @classmethod
    def of(
        cls,
        resources: Resources,
        allow_remote_code: Iterable[str],
        runtime_env: Mapping[str, Any] | None,
    ) -> _PipelineOptions:
        return cls(resources, resources.batch_sizes(), tuple(allow_remote_code), runtime_env)


def _run_model_pipeline(
    spec: ModelSpec,
    key: str,
    modality: str,
    work: list[tuple[PairStatus, TaskSnapshot]],
    store: FeatureStore,
    options: _PipelineOptions,
    *,
    progress: bool,
    label: str,
) -> _PipelineTiming:
    """Stream every pending shard of ``work`` through one actor pool of this model."""
    import ray.data

    resources, batch_sizes = options.resources, options.batch_sizes
    allow_remote_code = options.allow_remote_code
    ray.data.DataContext.get_current().wait_for_min_actors_s = resources.wait_for_actors_s
    spec_json = spec.model_dump_json()
    buffers: dict[str, tuple[PairStatus, TaskSnapshot, int, _ShardBuffer]] = {}
    for pair, snapshot in work:
        done = store.committed_feature_shards(key, snapshot.task_key)
        for index in range(snapshot.num_shards):
            if index not in done:
                path = snapshot.shard_paths[index]
                buffers[path] = (
                    pair,
                    snapshot,
                    index,
                    _ShardBuffer(snapshot.rows_per_shard[index]),
                )
    paths = list(buffers)
    total_rows = sum(buf.expected_rows for _, _, _, buf in buffers.values())
    dataset = ray.data.read_parquet(
        paths,
        filesystem=store.filesystem,
        include_paths=True,
        override_num_blocks=len(paths),
    ).select_columns(["path", "row_id", "input"])  # labels stay behind: the driver joins them
    if modality == "image":
        dataset = dataset.map_batches(
            decode_images,
            fn_kwargs={"spec_json": spec_json, "allow_remote_code": allow_remote_code},
            batch_size=batch_sizes.decode,
            num_cpus=resources.preprocess_cpus,
            batch_format="numpy",
        )
    actor_options: dict[str, Any] = {
        # Bounded: an actor that dies on every batch must fail its model, not loop forever
        # (Ray Data's default is unlimited restarts).
        "max_restarts": resources.max_restarts,
        "max_task_retries": -1,
    }
    actor_env = dict(options.runtime_env or {})
    actor_env["env_vars"] = {**ACTOR_ALLOCATOR_ENV, **dict(actor_env.get("env_vars") or {})}
    actor_options["runtime_env"] = actor_env
    with warnings.catch_warnings():
        # Ray 2.60 names these options deprecated extra kwargs, but has no other way to set them.
        warnings.simplefilter("ignore", DeprecationWarning)
        dataset = dataset.map_batches(
            ModelActor,
            fn_constructor_kwargs={
                "spec_json": spec_json,
                "device": resources.device,
                "allow_remote_code": list(allow_remote_code),
                "forward_batch_size": batch_sizes.forward,
                "store": store,
                "model_key": key,
                "num_threads": max(1, int(resources.cpus_per_worker)),
            },
            compute=ray.data.ActorPoolStrategy(size=resources.num_workers),
            batch_size=batch_sizes.actor,
            num_gpus=resources.gpus_per_worker,
            num_cpus=resources.cpus_per_worker,
            batch_format="numpy",
            **actor_options,
        )
    metadata: dict[str, Any] | None = None
    bar = _progress_bar(total_rows, label, progress)
    timing = _PipelineTiming(time.time())
    try:
        for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
            timing.add(batch)
            for path in np.unique(batch["path"]):
                rows = np.flatnonzero(batch["path"] == path)
                pair, snapshot, index, buf = buffers[_match_path(path, buffers)]
                _add_rows(buf, batch, rows)
                bar.update(rows.size)
                if buf.rows < buf.expected_rows:
                    continue
                if metadata is None:
                    metadata = _read_model_json(store, key)
                _commit_shard(store, key, pair, snapshot, index, buf, metadata)
                buffers.pop(_match_path(path, buffers))
    except Exception as exc:  # a Ray-level failure that outlived the retries
        logger.exception("%s: the extract pipeline failed", spec.display_name)
        for pair, _ in work:
            pair.fail(f"extract pipeline failed: {_short_error(exc)}", traceback.format_exc())
    finally:
        bar.close()
    for pair, _, index, _buf in buffers.values():
        pair.fail(f"shard {index} is incomplete after the pipeline finished")
    return timing


@dataclass
class _PipelineTiming:
    """When the model actors worked on this pipeline's batches (Unix seconds, actor clocks).

    Measured where the work happens rather than when results reach the driver: Ray Data hands
    results over per task and a little ahead of need, so arrival times at the driver come in
    bursts and overstate the rate (measured 1.2-1.3x the actors' own rate).
    """

    started: float
    first_batch: float | None = None
    last_batch: float | None = None
    rows: int = 0

    def add(self, batch: Mapping[str, np.ndarray]) -> None:
        if not len(batch["row_id"]):
            return
        first, last = float(np.min(batch["batch_started"])), float(np.max(batch["batch_finished"]))
        self.first_batch = first if self.first_batch is None else min(self.first_batch, first)
        self.last_batch = last if self.last_batch is None else max(self.last_batch, last)
        self.rows += len(batch["row_id"])

    def summary(self) -> tuple[float | None, float | None]:
        """(start-up seconds, rows/s from the first batch's start to the last batch's end).

        The rate covers every row the actors returned, over the span in which the pool worked:
        waits for decoded input inside that span count against it; actor start-up and model
        load before it do not (they are the start-up seconds).
        """
        if self.first_batch is None:
            return None, None
        startup = max(0.0, self.first_batch - self.started)
        span = self.last_batch - self.first_batch
        return startup, (self.rows / span if span > 0 else None)


def _match_path(path: str, buffers: Mapping[str, Any]) -> str:
    """Ray reports paths without the filesystem's scheme; map back to the snapshot's key."""
    if path in buffers:
        return path
    for candidate in buffers:
        if candidate.endswith(path) or path.endswith(candidate):
            return candidate
    raise KeyError(f"pipeline returned rows of an unknown input shard {path}")


def _add_rows(buf: _ShardBuffer, batch: Mapping[str, np.ndarray], rows: np.ndarray) -> None:
    errors = batch["error"][rows]
    bad = np.flatnonzero(errors != "")
    if bad.size and buf.error is None:
        buf.error = str(errors[bad[0]])
    buf.row_ids.append(np.asarray(batch["row_id"][rows], dtype=np.int64))
    buf.features.append(np.asarray(batch["features"][rows], dtype=np.float32))
    buf.seconds += float(np.sum(batch["forward_seconds"][rows]))
    buf.rows += rows.size


def _commit_shard(
    store: FeatureStore,
    key: str,
    pair: PairStatus,
    snapshot: TaskSnapshot,
    index: int,
    buf: _ShardBuffer,
    metadata: dict[str, Any] | None,
) -> None:
    """Check a complete shard and commit it (or fail its pair); updates the pair's counters."""
    pair.seconds += buf.seconds
    if pair.state == "failed":
        return
    if buf.error is not None:
        pair.fail(f"{buf.error} (model {pair.model}, task {pair.task})")
        return
    row_ids = np.concatenate(buf.row_ids)
    features = np.concatenate(buf.features)
    order = np.argsort(row_ids, kind="stable")
    row_ids, features = row_ids[order], features[order]
    finite = np.isfinite(features)
    if not finite.all():
        bad_rows = int((~finite).any(axis=1).sum())
        pair.fail(
            f"model {pair.model} produced non-finite features (NaN/Inf) on {bad_rows} of "
            f"{len(row_ids)} rows of task {pair.task}, shard {index}; check its dtype "
            "(try dtype: float32) and weights"
        )
        return
    labels_by_row = _input_shard_labels(store, snapshot, index)
    labels = labels_by_row[1][np.searchsorted(labels_by_row[0], row_ids)]
    shard_metadata = {
        "model": metadata or {},
        "task": snapshot.info.model_dump(mode="json"),
        "run_id": pair.run_id,
        "code_version": __version__,
    }
    try:
        store.write_feature_shard(
            key, snapshot.task_key, index, row_ids, labels, features, shard_metadata
        )
    except FeatureError as exc:
        pair.fail(_short_error(exc), traceback.format_exc())
        return
    pair.shards_done += 1
    pair.shards_computed += 1
    pair.rows += len(row_ids)
    pair.rows_computed += len(row_ids)


def _input_shard_labels(
    store: FeatureStore, snapshot: TaskSnapshot, index: int
) -> tuple[np.ndarray, np.ndarray]:
    """(sorted row ids, labels in that order) of one input shard, reading two columns only."""
    table = pq.read_table(
        snapshot.shard_paths[index], columns=["row_id", "label"], filesystem=store.filesystem
    )
    row_ids = table.column("row_id").to_numpy()
    labels = labels_to_numpy(table.column("label"))
    order = np.argsort(row_ids)
    return row_ids[order], labels[order]


def _read_model_json(store: FeatureStore, key: str) -> dict[str, Any] | None:
    relpath = layout.model_record(key)
    try:
        return json.loads(store.read_text(relpath)) if store.exists(relpath) else None
    except (OSError, RayLogMEError, ValueError):
        return None


def _finish_model_record(
    record: ModelRecord, pairs: Iterable[PairStatus], store: FeatureStore, seconds: float
) -> None:
    pairs = [p for p in pairs if p.state != "skipped"]
    record.extract_seconds = seconds
    record.rows_computed = sum(p.rows_computed for p in pairs)
    forward_seconds = sum(p.seconds for p in pairs if p.rows_computed)
    if record.rows_computed and forward_seconds > 0:
        record.throughput = record.rows_computed / forward_seconds
    meta = _read_model_json(store, record.model_key) if record.model_key else None
    if meta:
        record.metadata = json.dumps(meta, sort_keys=True)
        record.num_params = meta.get("num_params")
        record.feature_dim = meta.get("feature_dim")
        size = meta.get("input_size")
        record.input_size = None if size is None else json.dumps(size)
    failed = [p for p in pairs if p.state == "failed"]
    if not pairs:
        record.state = "skipped"
        record.error = "no task of this model's modality"
    elif failed and len(failed) == len(pairs):
        record.state = "failed"
        record.error = failed[0].error
    else:
        record.state = "ok"
        record.error = failed[0].error if failed else None


def _progress_bar(total: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"extract {name}", unit="row", disable=not enabled, leave=False)
