"""What runs on the Ray workers of the extract stage: image decoding and the extract worker.

An :class:`ExtractWorker` actor is long-lived: it holds at most one loaded model and runs
*units* (one input shard of one (model, task) pair, :class:`Unit`) that the scheduler sends it,
loading a model only when a unit of another model arrives. For each unit it reads the shard's
row ids and labels (and the raw text of text tasks) from the store, takes the decoded pixels a
CPU task prepared (:func:`decode_shard`), runs the forward pass in micro-batches that halve on
out-of-memory, checks the features and **commits the feature shard itself** (atomic, at most
once, content-keyed). It returns a small :class:`UnitReport`: counts, timings, errors, never
features.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ray_logme import __version__
from ray_logme.errors import FeatureError
from ray_logme.hub import ModelSpec, load_preprocessor
from ray_logme.hub.metadata import PIXELS_UINT8
from ray_logme.storage import FeatureStore, labels_to_numpy, layout

logger = logging.getLogger(__name__)

#: Test-only fault injection: path of a marker file. The first unit a worker starts while the
#: marker is missing creates it and kills its own process (exercises Ray's actor restart).
FAULT_INJECT_ENV = "RAY_LOGME_FAULT_EXIT_ONCE"
#: Test-only fault injection as above, but the worker dies right *after* committing the unit's
#: shard and before reporting it (the retried unit must find the shard committed, not rewrite it).
FAULT_INJECT_AFTER_WRITE_ENV = "RAY_LOGME_FAULT_EXIT_ONCE_AFTER_WRITE"

#: Environment of the worker processes: glibc malloc keeps freed memory for reuse.
#: A forward pass allocates and frees the same large activation buffers (tens of MB) on every
#: batch. In a Ray worker, glibc served each with a fresh ``mmap`` (or a per-thread arena that it
#: trims) and gave it back after the batch, so every batch page-faulted its activations in
#: again: 1.3-1.5 million minor faults per 512 rows of resnet10t and 0.70-0.80x the forward rate
#: of the same code in a long-lived process. One arena, no ``mmap`` for large blocks and no
#: trimming keep them in the heap (0 faults, the plain loop's rate; see mallopt(3)). Worker
#: actors are dedicated processes, so their memory staying at its peak costs nothing.
ACTOR_ALLOCATOR_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1),
}
#: Environment of every extract process unless the run is verbose: no download or weight-loading
#: progress bars, no library chatter (the run's one progress display is the driver's).
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def _short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:1997] + "..."


# --------------------------------------------------------------------------------------------
# Units and reports


@dataclass(frozen=True)
class Unit:
    """One input shard of one (model, task) pair: the scheduler's unit of work."""

    spec_json: str
    model_key: str
    task: str
    task_key: str
    shard_index: int
    shard_path: str  # the input shard on the store's filesystem

    @property
    def shard_relpath(self) -> str:
        """The input shard relative to the store root (reads through the store retry)."""
        return layout.task_shard(self.task_key, self.shard_index)

    num_rows: int
    modality: str  # the task's
    run_id: str
    task_info: Mapping[str, Any] = field(default_factory=dict)  # goes into the shard's metadata


@dataclass
class UnitReport:
    """What a worker says about one unit: small metadata only, never features."""

    model_key: str
    task_key: str
    shard_index: int
    rows: int = 0
    committed: bool = False  # this call wrote the shard (False: it was already committed)
    forward_seconds: float = 0.0
    started: float | None = None  # when the forward passes began (Unix seconds, worker clock)
    finished: float | None = None  # when they ended
    call_started: float = 0.0  # when the worker took the unit up
    call_finished: float = 0.0  # when it was done with it
    load_seconds: float | None = None  # set when this unit loaded the model
    error: str | None = None
    traceback: str | None = None
    model_failed: bool = False  # the model could not be loaded: every pair of it fails
    device: str = ""  # node id and GPU ids: units on the same device share it
    worker_pid: int = 0
    cpu_seconds: float = 0.0  # CPU time this worker process spent on the unit
    metadata: dict[str, Any] | None = None  # the model's record, when this unit loaded it


# --------------------------------------------------------------------------------------------
# CPU stage: decoding


_PREPROCESSORS: dict[tuple[str, tuple[str, ...]], Any] = {}


def _preprocessor_for(spec_json: str, allow_remote_code: tuple[str, ...] = ()):
    key = (spec_json, tuple(allow_remote_code))
    if key not in _PREPROCESSORS:
        if len(_PREPROCESSORS) >= 16:
            _PREPROCESSORS.pop(next(iter(_PREPROCESSORS)))
        _PREPROCESSORS[key] = load_preprocessor(
            ModelSpec.model_validate_json(spec_json), allow_remote_code=allow_remote_code
        )
    return _PREPROCESSORS[key]


def decode_images(
    batch: Mapping[str, np.ndarray], spec_json: str, allow_remote_code: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """Encoded images -> the model's input pixels, one row per input row.

    ``batch`` has ``path`` (input shard), ``row_id`` and ``input`` (encoded bytes). Returns
    ``path``, ``row_id``, the pixels and ``error`` (empty string, or why this row could not be
    decoded, naming the shard file and row). Pixels are ``pixel_values_uint8: uint8[n, 3, H, W]``
    (resized and cropped; the worker scales and normalises them on its device) where the
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


def decode_shard(
    store: FeatureStore,
    shard_relpath: str,
    spec_json: str,
    allow_remote_code: tuple[str, ...],
    batch_rows: int,
) -> dict[str, Any]:
    """A Ray task: one image input shard decoded into a model's input pixels.

    Runs on a CPU while a worker computes another unit; the result goes to the worker through
    the object store, never through the driver. Models with the same preprocessing share it.
    Never raises: a shard that cannot be read becomes ``{"fatal": message}``.
    """
    where = store.uri_of(shard_relpath)
    try:
        table = store.read_table(shard_relpath, columns=["row_id", "input"])
        row_ids = table.column("row_id").to_numpy()
        inputs = table.column("input").to_pylist()
        parts = []
        for start in range(0, len(inputs), max(1, batch_rows)):
            chunk = slice(start, start + batch_rows)
            count = len(inputs[chunk])
            parts.append(
                decode_images(
                    {
                        "path": np.full(count, where, dtype=object),
                        "row_id": row_ids[chunk],
                        "input": np.asarray(inputs[chunk], dtype=object),
                    },
                    spec_json,
                    allow_remote_code,
                )
            )
        if not parts:
            return {"fatal": f"input shard {where} has no rows"}
        out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0] if key != "path"}
        return out
    except Exception as exc:
        return {"fatal": f"cannot decode input shard {where}: {_short_error(exc)}"}


# --------------------------------------------------------------------------------------------
# The model, in micro-batches that halve on out-of-memory


class ModelRunner:
    """A loaded model's forward pass over a unit's rows, in micro-batches.

    ``forward_batch_size`` rows per pass; an out-of-memory error halves it (down to 1, then the
    rows fail) and the smaller size is kept for the rest of the model's units.
    """

    def __init__(self, model: Any, forward_batch_size: int, name: str = "") -> None:
        self.model = model
        self.forward_batch_size = forward_batch_size
        self.name = name
        self.feature_dim = int(model.metadata.feature_dim)

    def features(self, batch: Mapping[str, Any], rows: np.ndarray) -> np.ndarray:
        """``float32[len(rows), d]``: features of ``rows`` of ``batch``.

        ``batch`` holds the decoded pixels (``pixel_values`` or ``pixel_values_uint8``), or
        ``input`` (raw texts, tokenised here), and ``row_id``.
        """
        out = np.empty((rows.size, self.feature_dim), dtype=np.float32)
        start = 0
        while start < rows.size:
            index = rows[start : start + self.forward_batch_size]
            try:
                out[start : start + index.size] = self._forward_rows(batch, index)
            except Exception as exc:
                if not _is_out_of_memory(exc) or self.forward_batch_size == 1:
                    raise
                self.forward_batch_size = max(1, self.forward_batch_size // 2)
                _empty_device_cache()
                logger.warning(
                    "%s: out of memory, forward batch halved to %d",
                    self.name,
                    self.forward_batch_size,
                )
                continue
            start += index.size
        return out

    def _forward_rows(self, batch: Mapping[str, Any], index: np.ndarray) -> np.ndarray:
        pixels = next((c for c in ("pixel_values", PIXELS_UINT8) if c in batch), None)
        if pixels is not None:
            tensors = {pixels: np.asarray(batch[pixels])[index]}
        elif "input" in batch:
            tensors = self.model.preprocess([str(batch["input"][i]) for i in index])
        else:
            tensors = {}
        tensors["row_id"] = np.asarray(batch["row_id"])[index]
        return self.model(tensors)


def _is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return False
    return isinstance(exc, torch.OutOfMemoryError)


def _empty_device_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# The worker actor


@dataclass(frozen=True)
class WorkerOptions:
    """How every worker of a run computes (from the config's ``resources``)."""

    device: str
    forward_batch_size: int
    allow_remote_code: tuple[str, ...] = ()
    num_threads: int = 1


class ExtractWorker:
    """A long-lived extract worker (a Ray actor): one loaded model at a time, many units.

    ``run(unit, decoded)`` loads the unit's model if it is not the one held (the previous one is
    dropped first), computes the shard's features and commits the shard. A model that fails to
    load is remembered, so its further units fail at once with the same error.
    """

    def __init__(self, store: FeatureStore, source: Any, options: WorkerOptions) -> None:
        self.store = store
        self.source = source
        self.options = options
        self.model_key: str | None = None
        self.runner: ModelRunner | None = None
        self.record: dict[str, Any] = {}  # the loaded model's metadata (model.json)
        self.load_error: tuple[str, str] | None = None
        self._threads_set = False

    def ready(self) -> tuple[str, str | None]:
        """(the device this worker computes on, its node id): called once, when it is up."""
        import ray

        return _device_id(), ray.get_runtime_context().get_node_id()

    def run(self, unit: Unit, decoded: Mapping[str, Any] | None = None) -> UnitReport:
        cpu_start = time.process_time()
        report = UnitReport(unit.model_key, unit.task_key, unit.shard_index)
        report.call_started = time.time()
        report.device, report.worker_pid = _device_id(), os.getpid()
        try:
            _maybe_inject_fault(FAULT_INJECT_ENV)
            if unit.model_key != self.model_key:
                self._load(unit, report)
            if self.load_error is not None:
                report.error, report.traceback = self.load_error
                report.model_failed = True
            else:
                self._compute(unit, decoded, report)
        except Exception as exc:  # anything unforeseen fails this unit's pair, not the worker
            report.error = f"extract failed: {_short_error(exc)}"
            report.traceback = traceback.format_exc()
        report.cpu_seconds = time.process_time() - cpu_start
        report.call_finished = time.time()
        return report

    def _load(self, unit: Unit, report: UnitReport) -> None:
        self.runner, self.record, self.load_error = None, {}, None
        self.model_key = unit.model_key
        spec = ModelSpec.model_validate_json(unit.spec_json)
        started = time.perf_counter()
        try:
            if not self._threads_set and self.options.device == "cpu":
                _set_torch_threads(self.options.num_threads)
                self._threads_set = True
            model = self.source.load(spec, self.options.device, self.options.allow_remote_code)
            self.runner = ModelRunner(model, self.options.forward_batch_size, spec.display_name)
            self.record = model.metadata.to_dict()
            self.store.write_text(layout.model_record(unit.model_key), _json(self.record))
            report.metadata = self.record
        except Exception as exc:
            self.load_error = (f"model failed to load: {_short_error(exc)}", traceback.format_exc())
        report.load_seconds = time.perf_counter() - started

    def _compute(self, unit: Unit, decoded: Mapping[str, Any] | None, report: UnitReport) -> None:
        assert self.runner is not None
        columns = ["row_id", "label"] + (["input"] if unit.modality == "text" else [])
        table = self.store.read_table(unit.shard_relpath, columns=columns)
        label_rows = table.column("row_id").to_numpy()
        labels = labels_to_numpy(table.column("label"))
        if decoded is not None:
            if "fatal" in decoded:
                report.error = str(decoded["fatal"])
                return
            batch = dict(decoded)
            errors = np.asarray(batch.pop("error"), dtype=object)
        else:
            batch = {"row_id": label_rows}
            if unit.modality == "text":
                batch["input"] = np.asarray(table.column("input").to_pylist(), dtype=object)
            errors = np.full(len(label_rows), "", dtype=object)
        bad = np.flatnonzero(errors != "")
        if bad.size:
            report.error = str(errors[bad[0]])
            return
        row_ids = np.asarray(batch["row_id"], dtype=np.int64)
        report.started = time.time()
        start = time.perf_counter()
        try:
            features = self.runner.features(batch, np.arange(len(row_ids)))
        except Exception as exc:  # out of memory at batch size 1, or the model itself failed
            report.error = f"forward pass failed: {_short_error(exc)}"
            report.traceback = traceback.format_exc()
            return
        report.forward_seconds = time.perf_counter() - start
        report.finished = time.time()
        order = np.argsort(row_ids, kind="stable")
        row_ids, features = row_ids[order], features[order]
        by_row = np.argsort(label_rows)
        labels = labels[by_row][np.searchsorted(label_rows[by_row], row_ids)]
        finite = np.isfinite(features)
        if not finite.all():
            bad_rows = int((~finite).any(axis=1).sum())
            report.error = (
                f"produced non-finite features (NaN/Inf) on {bad_rows} of {len(row_ids)} rows of "
                f"shard {unit.shard_index}; check its dtype (try dtype: float32) and weights"
            )
            return
        shard_metadata = {
            "model": self.record,
            "task": dict(unit.task_info),
            "run_id": unit.run_id,
            "code_version": __version__,
        }
        try:
            report.committed = self.store.write_feature_shard(
                unit.model_key, unit.task_key, unit.shard_index, row_ids, labels, features,
                shard_metadata,
            )  # fmt: skip
        except FeatureError as exc:
            report.error, report.traceback = _short_error(exc), traceback.format_exc()
            return
        report.rows = len(row_ids)
        _maybe_inject_fault(
            FAULT_INJECT_AFTER_WRITE_ENV, f"{unit.model_key} {unit.task_key} {unit.shard_index}"
        )


def _json(record: Mapping[str, Any]) -> str:
    import json

    return json.dumps(record, sort_keys=True, indent=1)


def _set_torch_threads(num_threads: int) -> None:
    import torch

    # CPU threads = this worker's CPU share, so workers and decode tasks don't oversubscribe.
    torch.set_num_threads(max(1, num_threads))


def _device_id() -> str:
    """``{node id}/gpu{ids}`` (or ``/cpu``): workers with the same id share a device."""
    import ray

    try:
        context = ray.get_runtime_context()
        node = context.get_node_id()[:12]
        gpus = context.get_accelerator_ids().get("GPU") or []
    except Exception:  # outside Ray (in-process tests)
        return "local/cpu"
    return f"{node}/gpu{','.join(str(g) for g in gpus)}" if gpus else f"{node}/cpu"


def _maybe_inject_fault(variable: str, what: str = "") -> None:
    marker = os.environ.get(variable)
    if marker and not os.path.exists(marker):
        Path(marker).write_text(f"{os.getpid()} {what}".strip())
        logger.warning("fault injection: worker %d exits on purpose", os.getpid())
        os._exit(1)


def prefetch_weights(source: Any, spec_json: str, allow_remote_code: Sequence[str]) -> str | None:
    """A Ray task: fetch a model's weights into this node's cache while another model computes.

    Best effort (the load reports any real problem): returns the error text instead of raising.
    """
    try:
        source.prefetch(ModelSpec.model_validate_json(spec_json), tuple(allow_remote_code))
    except Exception as exc:
        return _short_error(exc)
    return None
