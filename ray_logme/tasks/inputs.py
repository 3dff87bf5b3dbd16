"""Pass 2 over a task's files: the input column, streamed into shards of ``shard_rows`` rows.

:func:`iter_input_shards` reads the input column in batches, keeps the rows of a
:class:`~ray_logme.tasks.plan.TaskPlan` and yields ``(row_id, input, label)`` tables shard by
shard, so memory does not grow with the inputs. Image inputs (bytes, paths or Hugging Face
``struct<bytes, path>``) are read and fully decoded once to reject corrupt files early.
"""

from __future__ import annotations

import io
import json
import os
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from ray_logme import __version__
from ray_logme.errors import StorageError, TaskError
from ray_logme.storage import filesystem_from_uri, storage_errors
from ray_logme.tasks.plan import TaskPlan
from ray_logme.tasks.source import SourceFile, TaskSource
from ray_logme.tasks.spec import TaskSpec


def _label_array(labels: np.ndarray) -> pa.Array:
    if labels.dtype == np.int64:
        return pa.array(labels)
    if labels.ndim == 1:
        return pa.array(labels.astype(np.float64))
    return pa.FixedSizeListArray.from_arrays(
        pa.array(np.ascontiguousarray(labels, dtype=np.float64).reshape(-1)), labels.shape[1]
    )


_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
"""What PIL raises for corrupt or truncated images (its DecompressionBombError is re-raised as ValueError)."""


def _check_image(data: bytes) -> None:
    """Decode ``data`` fully (JPEG at reduced scale), raising on anything PIL cannot read."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (64, 64))  # JPEG: decode at 1/8 scale, still reads every byte
            image.load()
    except Image.DecompressionBombError as error:
        raise ValueError(str(error)) from None


def iter_input_shards(
    spec: TaskSpec,
    source: TaskSource,
    plan: TaskPlan,
    task_key: str,
    skip_shards: set[int] | frozenset[int] = frozenset(),
    read_batch_rows: int = 256,
) -> Iterator[tuple[int, pa.Table]]:
    """``(shard_index, table)`` for each shard not in ``skip_shards``, streaming the inputs."""
    modality = spec.modality
    num_rows = plan.info.num_rows
    shard_rows = spec.shard_rows
    inputs: list[Any] = []
    position = 0  # next row_id to collect
    # plan.file_index is non-decreasing: the rows of file f are row_ids bounds[f]..bounds[f+1]-1
    bounds = np.searchsorted(plan.file_index, np.arange(len(source.files) + 1), side="left")
    for file_index, source_file in enumerate(source.files):
        wanted_rows = plan.file_row[bounds[file_index] : bounds[file_index + 1]]
        if wanted_rows.size == 0:
            continue
        offset = 0
        cursor = 0  # into wanted_rows
        for batch in source_file.iter_batches([spec.input_column], read_batch_rows):
            end = offset + batch.num_rows
            stop = int(np.searchsorted(wanted_rows, end, side="left"))
            if stop > cursor:
                local = wanted_rows[cursor:stop] - offset
                column = batch.column(0)
                for k, value_index in enumerate(local):
                    row_id = position
                    shard_index = row_id // shard_rows
                    file_row = int(wanted_rows[cursor + k])
                    if shard_index in skip_shards:
                        inputs.append(None)
                    else:
                        inputs.append(
                            _input_value(
                                column[int(value_index)],
                                modality,
                                spec,
                                source,
                                source_file,
                                file_row,
                            )
                        )
                    position += 1
                    if position % shard_rows == 0 or position == num_rows:
                        first = shard_index * shard_rows
                        if shard_index not in skip_shards:
                            yield (
                                shard_index,
                                _shard_table(spec, plan, task_key, shard_index, first, inputs),
                            )
                        inputs = []
                cursor = stop
            offset = end
            if cursor >= wanted_rows.size:
                break
    if position != num_rows:
        raise TaskError(
            f"task {spec.name!r}: read {position} of {num_rows} rows; the dataset changed while "
            "it was being read, run again"
        )


def _input_value(
    scalar: pa.Scalar,
    modality: str,
    spec: TaskSpec,
    source: TaskSource,
    source_file: SourceFile,
    file_row: int,
) -> Any:
    where = f"task {spec.name!r}: row {file_row} of {source_file.display_name} (column {spec.input_column!r})"
    value = scalar.as_py()
    if value is None:
        raise TaskError(f"{where} is empty (null); drop the row or filter it out")
    if modality == "text":
        return value
    path = None
    if isinstance(value, dict):  # Hugging Face Image: struct<bytes, path>
        path = value.get("path")
        value = value.get("bytes")
        if value is None and not path:
            raise TaskError(f"{where} has neither image bytes nor a path")
    elif isinstance(value, str):
        path, value = value, None
    if value is None:
        value = _read_image_path(path, source, where)
    try:
        _check_image(value)
    except _IMAGE_ERRORS as error:
        raise TaskError(
            f"{where} is not a decodable image ({type(error).__name__}: {error}); fix or drop the row"
        ) from None
    return bytes(value)


def _read_image_path(path: str, source: TaskSource, where: str) -> bytes:
    if "://" in path:
        filesystem, fs_path = filesystem_from_uri(path, source.storage_options)
        display = path
    elif os.path.isabs(path) and source.scheme == "local":
        filesystem, fs_path, display = pafs.LocalFileSystem(), path, path
    elif source.filesystem is not None and source.base_path is not None:
        filesystem = source.filesystem
        fs_path = f"{source.base_path.rstrip('/')}/{path.lstrip('/')}"
        display = f"s3://{fs_path}" if source.scheme == "s3" else fs_path
    else:
        raise TaskError(f"{where}: image path {path!r} cannot be resolved for an in-memory task")
    try:
        with (
            storage_errors("reading", display, source.storage_options),
            filesystem.open_input_stream(fs_path) as stream,
        ):
            return stream.read()
    except StorageError as error:
        raise TaskError(f"{where}: image {display} cannot be read: {error}") from None


def _shard_table(
    spec: TaskSpec, plan: TaskPlan, task_key: str, shard_index: int, first: int, inputs: list[Any]
) -> pa.Table:
    count = len(inputs)
    input_type = pa.string() if spec.modality == "text" else pa.binary()
    table = pa.table(
        {
            "row_id": pa.array(np.arange(first, first + count, dtype=np.int64)),
            "input": pa.array(inputs, input_type),
            "label": _label_array(plan.labels[first : first + count]),
        }
    )
    record = {"task_key": task_key, "shard_index": shard_index, "code_version": __version__}
    return table.replace_schema_metadata({b"ray_logme": json.dumps(record).encode("utf-8")})
