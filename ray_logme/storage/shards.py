"""Feature-shard encoding, pure: arrays in, Arrow out (and back).

:func:`feature_shard_table` checks and converts one shard's ``row_ids``, ``labels`` and
``features`` into the Arrow table a feature shard stores, with its JSON record under the schema
metadata key :data:`SCHEMA_METADATA_KEY`; :func:`labels_to_numpy` and :func:`_features_to_numpy`
turn the columns back into arrays; :func:`_parquet_bytes` encodes a table as one Parquet file in
memory. No I/O: :class:`~ray_logme.storage.store.FeatureStore` decides where the bytes go.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ray_logme import __version__
from ray_logme.errors import FeatureError

SCHEMA_METADATA_KEY = b"ray_logme"
"""Parquet schema-metadata key of a feature shard's JSON record (see :meth:`FeatureStore.write_feature_shard`)."""

FEATURE_ROW_GROUP_BYTES = 8 << 20
"""Target size of one row group of features; a chunked reader holds about one row group at a time."""


def _parquet_bytes(table: pa.Table, **parquet_options: Any) -> pa.Buffer:
    """``table`` encoded as one Parquet file in memory (nothing is written if encoding fails)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **parquet_options)
    return sink.getvalue()


def feature_shard_table(
    model_key: str,
    task_key: str,
    shard_index: int,
    row_ids: np.ndarray,
    labels: np.ndarray,
    features: np.ndarray,
    metadata: Mapping[str, Any],
    feature_dtype: Literal["float32", "float16"] = "float32",
) -> pa.Table:
    """The Arrow table of one feature shard (see :meth:`FeatureStore.write_feature_shard`)."""
    where = f"model {model_key!r}, task {task_key!r}, shard {shard_index}"
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(
            f"features must be float[n, d] with n, d >= 1 ({where}), got shape {features.shape}"
        )
    if not np.issubdtype(features.dtype, np.floating):
        raise ValueError(f"features must be floating point ({where}), got {features.dtype}")
    num_rows, feature_dim = features.shape
    finite = np.isfinite(features)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise FeatureError(
            f"{where}: {bad_rows.size} of {num_rows} rows have NaN/Inf features (first row "
            f"{int(bad_rows[0])}): the model is numerically unstable on this input"
        )
    with np.errstate(over="ignore"):  # float16 overflow is reported just below
        stored = features.astype(np.dtype(feature_dtype), copy=False)
    if feature_dtype == "float16" and not np.isfinite(stored).all():
        raise FeatureError(
            f"{where}: features overflow float16 (|x| > 65504): store them as float32"
        )
    row_ids = np.asarray(row_ids)
    if row_ids.shape != (num_rows,) or not np.issubdtype(row_ids.dtype, np.integer):
        raise ValueError(
            f"row_ids must be int[{num_rows}] ({where}), got {row_ids.dtype}{list(row_ids.shape)}"
        )
    label_array = _labels_to_arrow(np.asarray(labels), num_rows, where)
    feature_array = pa.FixedSizeListArray.from_arrays(
        pa.array(np.ascontiguousarray(stored).reshape(-1)), feature_dim
    )
    record = {
        "metadata": dict(metadata),
        "code_version": __version__,
        "model_key": model_key,
        "task_key": task_key,
        "shard_index": int(shard_index),
        "num_rows": int(num_rows),
        "feature_dim": int(feature_dim),
        "feature_dtype": feature_dtype,
    }
    try:
        encoded = json.dumps(record, sort_keys=True, default=_json_default)
    except TypeError as error:
        raise ValueError(f"shard metadata must be JSON-serialisable ({where}): {error}") from None
    table = pa.table(
        {
            "row_id": pa.array(row_ids.astype(np.int64, copy=False)),
            "label": label_array,
            "features": feature_array,
        }
    )
    return table.replace_schema_metadata({SCHEMA_METADATA_KEY: encoded.encode("utf-8")})


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _labels_to_arrow(labels: np.ndarray, num_rows: int, where: str) -> pa.Array:
    if labels.shape[:1] != (num_rows,) or labels.ndim not in (1, 2):
        raise ValueError(
            f"labels must be [{num_rows}] or [{num_rows}, t] ({where}), got shape {labels.shape}"
        )
    if np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_:
        if labels.ndim != 1:
            raise ValueError(f"class labels must be 1-D ({where}); several targets must be float")
        return pa.array(labels.astype(np.int64, copy=False))
    if np.issubdtype(labels.dtype, np.floating):
        values = labels.astype(np.float64, copy=False)
        if not np.isfinite(values).all():
            raise ValueError(f"labels contain NaN/Inf ({where})")
        if values.ndim == 1:
            return pa.array(values)
        return pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(values).reshape(-1)), values.shape[1]
        )
    raise ValueError(
        f"labels must be integer (classes) or float (targets) ({where}), got {labels.dtype}"
    )


def _features_to_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``fixed_size_list<float>[d]`` -> writable ``float32[n, d]``."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    feature_dim = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=True).reshape(-1, feature_dim)


def labels_to_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``int64`` / ``float64`` -> ``[n]``; ``fixed_size_list<float64>[t]`` -> ``float64[n, t]``."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        targets = column.type.list_size
        return (
            column.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, targets)
        )
    return column.to_numpy(zero_copy_only=False).copy()


class ParquetBatchReader:
    """Batches of one row group of a Parquet file, resumable after a failed read (for retries).

    :meth:`next_batch` reads on from where the last good batch ended: after a failure the file
    is closed, and the next call reopens it and skips the rows already returned. Memory stays
    one batch plus the column chunks being decoded, as with ``ParquetFile.iter_batches``.
    """

    def __init__(self, filesystem: pafs.FileSystem, path: str) -> None:
        self._filesystem = filesystem
        self._path = path
        self._source: Any = None
        self._file: pq.ParquetFile | None = None
        self._batches: Iterator[pa.RecordBatch] | None = None
        self._group = 0
        self._columns: list[str] = []
        self._max_rows = 1
        self._rows_done = 0

    def open(self) -> pq.ParquetFile:
        """The file, opened now if it is not open (reads the footer)."""
        if self._file is None:
            try:
                self._source = self._filesystem.open_input_file(self._path)
                self._file = pq.ParquetFile(self._source)
            except BaseException:
                self.close()
                raise
        return self._file

    def start_row_group(self, group: int, columns: list[str], max_rows: int) -> None:
        self._group, self._columns, self._max_rows = group, columns, max_rows
        self._rows_done = 0
        self._batches = None

    def next_batch(self) -> pa.RecordBatch | None:
        """The next batch (at most ``max_rows`` rows) of the row group, or None at its end."""
        try:
            if self._batches is None:
                self._batches = self.open().iter_batches(
                    batch_size=self._max_rows,
                    row_groups=[self._group],
                    columns=self._columns,
                    use_threads=False,
                )
                skip = self._rows_done
                while skip > 0:  # rows returned before the failure
                    batch = next(self._batches)
                    if batch.num_rows > skip:
                        batch = batch.slice(skip)
                        self._rows_done += batch.num_rows
                        return batch
                    skip -= batch.num_rows
            batch = next(self._batches, None)
        except BaseException:
            self.close()  # a broken connection: the retry reopens and resumes
            raise
        if batch is not None:
            self._rows_done += batch.num_rows
        return batch

    def close(self) -> None:
        source, self._source, self._file, self._batches = self._source, None, None, None
        if source is not None:
            with contextlib.suppress(OSError):
                source.close()
