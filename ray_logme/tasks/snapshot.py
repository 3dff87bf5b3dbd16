"""Entry points: a task's metadata, its shards in memory, its snapshot in a feature store.

:func:`task_info` runs pass 1 only; :func:`iter_task_shards` both passes without a store;
:func:`snapshot_task` writes the shards and ``_task.json`` into a store once and reuses them
after; :func:`read_task` hands the task to Ray Data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

from ray_logme.storage import FeatureStore, StorageOptions, content_key, layout
from ray_logme.tasks.inputs import iter_input_shards
from ray_logme.tasks.plan import plan_task
from ray_logme.tasks.source import TaskSource, open_source, task_revision
from ray_logme.tasks.spec import TaskInfo, TaskSnapshot, TaskSpec

if TYPE_CHECKING:
    import ray.data

logger = logging.getLogger("ray_logme.tasks")  # the name its log lines have always carried


def _prepare(spec: TaskSpec, storage_options: StorageOptions | None) -> tuple[TaskSource, str, str]:
    source = open_source(spec, storage_options)
    revision = task_revision(spec, source.fingerprint)
    return source, revision, content_key(spec.name, revision)


def task_info(spec: TaskSpec, storage_options: StorageOptions | None = None) -> TaskInfo:
    """Label metadata (classes and counts, or target statistics), sizes and the revision.

    Reads only the label and filter columns. Raises :class:`TaskError` for missing columns,
    wrong dtypes, missing/NaN labels, a single class or a constant target, and
    :class:`StorageError` when the data cannot be reached.
    """
    source, revision, task_key = _prepare(spec, storage_options)
    return plan_task(spec, source, task_key, revision).info


def iter_task_shards(
    spec: TaskSpec, storage_options: StorageOptions | None = None
) -> Iterator[tuple[TaskInfo, int, pa.Table]]:
    """``(info, shard_index, table)`` for every shard of the task, in memory, without a store."""
    source, revision, task_key = _prepare(spec, storage_options)
    plan = plan_task(spec, source, task_key, revision)
    for shard_index, table in iter_input_shards(spec, source, plan, task_key):
        yield plan.info, shard_index, table


def snapshot_task(
    spec: TaskSpec, store: FeatureStore, storage_options: StorageOptions | None = None
) -> TaskSnapshot:
    """Write the task's input shards and ``_task.json`` into ``store`` once; reuse them after.

    Layout (:mod:`ray_logme.storage.layout`): ``tasks/{task_key}/part-{shard:05d}.parquet``
    (row_id, input, label) and ``tasks/{task_key}/_task.json`` (:class:`TaskInfo`), committed last. A snapshot whose
    ``_task.json`` and shards are all present is returned as is (``reused=True``); after an
    interrupted run only the missing shards are written. Every write is atomic and
    commit-once, so concurrent snapshots of the same task are safe. Runs without Ray.

    ``storage_options`` are for the task's source URI; the store has its own.
    """
    source, revision, task_key = _prepare(spec, storage_options)
    folder = layout.task_dir(task_key)
    committed = layout.shard_indices(store.list_dir(folder))
    info_relpath = layout.task_info(task_key)
    if store.exists(info_relpath):
        info = TaskInfo.model_validate_json(store.read_text(info_relpath))
        if set(range(info.num_shards)) <= committed:
            logger.info("task %s: reusing snapshot %s", spec.name, store.uri_of(folder))
            return _snapshot(task_key, info, store, reused=True)
    plan = plan_task(spec, source, task_key, revision)
    written = 0
    for shard_index, table in iter_input_shards(
        spec, source, plan, task_key, skip_shards=committed
    ):
        written += store.write_table(
            layout.task_shard(task_key, shard_index), table, overwrite=False
        )
    store.write_text(info_relpath, plan.info.model_dump_json(indent=2), overwrite=False)
    logger.info(
        "task %s: snapshot %s with %d rows in %d shards (%d written now)",
        spec.name,
        store.uri_of(folder),
        plan.info.num_rows,
        plan.info.num_shards,
        written,
    )
    return _snapshot(task_key, plan.info, store, reused=False)


def _snapshot(task_key: str, info: TaskInfo, store: FeatureStore, reused: bool) -> TaskSnapshot:
    relpaths = tuple(layout.task_shard(task_key, i) for i in range(info.num_shards))
    return TaskSnapshot(
        task_key=task_key, info=info, store=store, shard_relpaths=relpaths, reused=reused
    )


def read_task(
    spec: TaskSpec,
    storage_options: StorageOptions | None = None,
    store: FeatureStore | None = None,
) -> ray.data.Dataset:
    """The task as a Ray dataset of ``(row_id, input, label)`` rows.

    With a ``store``, the task is snapshotted there first and the dataset reads the shards
    (the scalable path); without one, the rows are read on the driver and handed to Ray with
    ``ray.data.from_arrow`` (fine for small tasks). ``label`` is the class index (see
    ``task_info(spec).classes``) or the target value(s). Label metadata: :func:`task_info`.
    """
    import ray.data

    if store is not None:
        return snapshot_task(spec, store, storage_options).read_dataset()
    tables = [table for _, _, table in iter_task_shards(spec, storage_options)]
    return ray.data.from_arrow(tables)
