"""Where a task's rows come from, and the revision that names them.

:func:`open_source` lists a task's Parquet files (local or ``s3://``, Hive ``key=value``
folders as columns) or wraps a built-in task's in-memory table, and fingerprints the data (file
names, sizes, ETags or modification times; a built-in's URI and version). :func:`task_revision`
hashes that fingerprint with every setting that changes the rows. Read errors become
:class:`~ray_logme.errors.TaskError` (bad data) or :class:`~ray_logme.errors.StorageError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from ray_logme.errors import StorageError, TaskError
from ray_logme.storage import StorageOptions, list_files, storage_errors
from ray_logme.tasks.builtin import builtin_table, builtin_task
from ray_logme.tasks.spec import TaskSpec

SNAPSHOT_FORMAT = 1
"""Version of the snapshot encoding; part of every revision, bump it when encoding changes."""


@dataclass
class SourceFile:
    """One file of a task (or the in-memory table of a built-in), read column-wise."""

    display_name: str
    schema: pa.Schema
    fragment: pads.Fragment | None = None
    table: pa.Table | None = None

    def read(self, columns: list[str]) -> pa.Table:
        if self.table is not None:
            return self.table.select(columns)
        with _reading(self.display_name):
            return self.fragment.to_table(columns=columns, schema=self.schema, use_threads=False)

    def iter_batches(self, columns: list[str], batch_size: int) -> Iterator[pa.RecordBatch]:
        if self.table is not None:
            yield from self.table.select(columns).to_batches(max_chunksize=batch_size)
            return
        batches = self.fragment.to_batches(
            columns=columns, schema=self.schema, batch_size=batch_size, use_threads=False
        )
        while True:
            with _reading(self.display_name):
                batch = next(batches, None)
            if batch is None:
                return
            yield batch


@contextlib.contextmanager
def _reading(display_name: str) -> Iterator[None]:
    """Errors while reading a task file become :class:`TaskError` (bad data) or :class:`StorageError`."""
    try:
        yield
    except (TaskError, StorageError):
        raise
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
        raise TaskError(f"cannot read task file {display_name}: {error}") from None
    except OSError as error:
        with storage_errors("reading", display_name):
            raise error from None


@dataclass
class TaskSource:
    files: list[SourceFile]
    schema: pa.Schema
    fingerprint: list[list[Any]]
    filesystem: pafs.FileSystem | None = None
    base_path: str | None = None
    scheme: str = "local"
    storage_options: StorageOptions | None = None


def open_source(spec: TaskSpec, storage_options: StorageOptions | None) -> TaskSource:
    if spec.is_builtin:
        builtin = builtin_task(spec.uri.strip())
        table = builtin_table(builtin.uri)
        return TaskSource(
            files=[SourceFile(display_name=builtin.uri, schema=table.schema, table=table)],
            schema=table.schema,
            fingerprint=builtin.fingerprint(),
        )
    filesystem, base_path, stored = list_files(spec.uri, storage_options)
    if not stored:
        raise TaskError(
            f"task {spec.name!r}: no Parquet files (*.parquet) under {spec.uri}; point uri at a "
            "Parquet file or a folder of them"
        )
    with _reading(spec.uri):
        dataset = pads.dataset(
            [item.path for item in stored],
            filesystem=filesystem,
            format="parquet",
            partitioning="hive",
            partition_base_dir=base_path,
        )
    by_path = {item.path: item for item in stored}
    files = []
    for fragment in dataset.get_fragments():
        files.append(
            SourceFile(
                display_name=by_path[fragment.path].uri, schema=dataset.schema, fragment=fragment
            )
        )
    files.sort(key=lambda source_file: source_file.display_name)
    return TaskSource(
        files=files,
        schema=dataset.schema,
        fingerprint=[[item.relpath, item.size, item.version] for item in stored],
        filesystem=filesystem,
        base_path=base_path,
        scheme="s3" if spec.uri.strip().startswith("s3://") else "local",
        storage_options=storage_options,
    )


def task_revision(spec: TaskSpec, source_fingerprint: Sequence[Sequence[Any]]) -> str:
    """sha256 hex of the data fingerprint and every setting that changes the task's rows."""
    record = {
        "format": SNAPSHOT_FORMAT,
        "files": [list(entry) for entry in source_fingerprint],
        "input_column": spec.input_column,
        "modality": spec.modality,
        "label_columns": spec.label_columns,
        "kind": spec.kind,
        "filter": spec.filter,
        "max_samples": spec.max_samples,
        "seed": spec.seed,
        "shard_rows": spec.shard_rows,
    }
    encoded = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()
