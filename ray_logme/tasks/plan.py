"""Pass 1 over a task's files: labels, filter and subsampling, without reading the inputs.

:func:`plan_task` reads only the label and filter columns, checks the columns and labels
(missing or NaN labels, a single class, a constant target), applies ``filter`` and picks the
rows with seeded subsampling (stratified per class for classification, :func:`stratified_quotas`;
uniform for regression). The result, a :class:`TaskPlan`, says which source row becomes each
``row_id`` and carries the task's :class:`~ray_logme.tasks.spec.TaskInfo`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_logme.errors import TaskError
from ray_logme.tasks.source import TaskSource
from ray_logme.tasks.spec import TargetStats, TaskInfo, TaskSpec


@dataclass
class TaskPlan:
    """The rows a task keeps: ``file_index[i], file_row[i]`` for row_id ``i`` and its label."""

    info: TaskInfo
    file_index: np.ndarray  # int64[n]
    file_row: np.ndarray  # int64[n]
    labels: np.ndarray  # int64[n] class index | float64[n] | float64[n, t]


def _check_columns(spec: TaskSpec, schema: pa.Schema) -> None:
    available = schema.names
    wanted = [spec.input_column, *spec.label_columns, *(spec.filter or {})]
    missing = [column for column in dict.fromkeys(wanted) if column not in available]
    if missing:
        raise TaskError(
            f"task {spec.name!r} ({spec.uri}): column(s) {missing} not found; the dataset has "
            f"{available}. Fix input_column / label_column / filter."
        )
    input_type = schema.field(spec.input_column).type
    if spec.modality == "text":
        if not _is_string(input_type):
            raise TaskError(
                f"task {spec.name!r}: text input column {spec.input_column!r} is {input_type}, "
                "expected strings"
            )
    elif not (
        _is_binary(input_type)
        or _is_string(input_type)
        or (pa.types.is_struct(input_type) and input_type.get_field_index("bytes") >= 0)
    ):
        raise TaskError(
            f"task {spec.name!r}: image input column {spec.input_column!r} is {input_type}, expected "
            "encoded image bytes (binary), paths (string) or struct<bytes, path>"
        )


def _is_string(data_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type)


def _is_binary(data_type: pa.DataType) -> bool:
    return (
        pa.types.is_binary(data_type)
        or pa.types.is_large_binary(data_type)
        or pa.types.is_fixed_size_binary(data_type)
    )


def _filter_mask(spec: TaskSpec, table: pa.Table, display_name: str) -> np.ndarray:
    mask = np.ones(table.num_rows, dtype=bool)
    for column_name, allowed in (spec.filter or {}).items():
        column = table.column(column_name)
        if pa.types.is_dictionary(column.type):
            column = pc.cast(column, column.type.value_type)
        values = allowed if isinstance(allowed, list) else [allowed]
        try:
            value_set = pa.array(values).cast(column.type)
        except (
            pa.ArrowInvalid,
            pa.ArrowNotImplementedError,
            pa.ArrowTypeError,
            TypeError,
        ) as error:
            raise TaskError(
                f"task {spec.name!r}: filter values {values} do not fit column {column_name!r} "
                f"({column.type}) of {display_name}: {error}"
            ) from None
        matches = pc.fill_null(pc.is_in(column, value_set=value_set), False)
        mask &= matches.to_numpy(zero_copy_only=False)
    return mask


def plan_task(spec: TaskSpec, source: TaskSource, task_key: str, revision: str) -> TaskPlan:
    _check_columns(spec, source.schema)
    label_columns = spec.label_columns
    read_columns = list(dict.fromkeys([*label_columns, *(spec.filter or {})]))
    file_indices, file_rows, label_tables = [], [], []
    num_source_rows = 0
    for index, source_file in enumerate(source.files):
        table = source_file.read(read_columns)
        num_source_rows += table.num_rows
        mask = _filter_mask(spec, table, source_file.display_name)
        kept = np.flatnonzero(mask)
        file_indices.append(np.full(kept.size, index, dtype=np.int64))
        file_rows.append(kept.astype(np.int64))
        label_tables.append(table.select(label_columns).take(pa.array(kept)))
    file_index = np.concatenate(file_indices) if file_indices else np.zeros(0, np.int64)
    file_row = np.concatenate(file_rows) if file_rows else np.zeros(0, np.int64)
    labels_table = pa.concat_tables(label_tables) if label_tables else None
    num_filtered = int(file_index.size)
    where = f"task {spec.name!r} ({spec.uri})"
    if num_filtered == 0:
        raise TaskError(
            f"{where}: no rows left after the filter {spec.filter} (of {num_source_rows} rows); "
            "check the filter column and values"
        )

    def locate(position: int) -> str:
        return f"row {int(file_row[position])} of {source.files[int(file_index[position])].display_name}"

    classes = class_counts = target_stats = None
    if spec.kind == "classification":
        encoded, class_names = _encode_classes(labels_table.column(label_columns[0]), where, locate)
        selected = _subsample_classification(encoded, len(class_names), spec, where)
        labels = encoded[selected]
        counts = np.bincount(labels, minlength=len(class_names))
        classes, class_counts = class_names, [int(count) for count in counts]
    else:
        targets = _regression_targets(labels_table, label_columns, where, locate)
        selected = _subsample_uniform(targets.shape[0], spec)
        labels = targets[selected]
        target_stats = [
            TargetStats(
                name=name,
                mean=float(labels[:, j].mean()),
                std=float(labels[:, j].std()),
                min=float(labels[:, j].min()),
                max=float(labels[:, j].max()),
            )
            for j, name in enumerate(label_columns)
        ]
        if labels.shape[1] == 1:
            labels = labels[:, 0]
    num_rows = int(selected.size)
    rows_per_shard = [
        min(spec.shard_rows, num_rows - start) for start in range(0, num_rows, spec.shard_rows)
    ]
    info = TaskInfo(
        name=spec.name,
        task_key=task_key,
        revision=revision,
        kind=spec.kind,
        modality=spec.modality,
        source_uri=spec.uri,
        input_column=spec.input_column,
        label_columns=label_columns,
        num_rows=num_rows,
        num_source_rows=num_source_rows,
        num_filtered_rows=num_filtered,
        num_source_files=len(source.files),
        shard_rows=spec.shard_rows,
        rows_per_shard=rows_per_shard,
        classes=classes,
        class_counts=class_counts,
        target_stats=target_stats,
        filter=spec.filter,
        max_samples=spec.max_samples,
        seed=spec.seed,
    )
    return TaskPlan(
        info=info,
        file_index=file_index[selected],
        file_row=file_row[selected],
        labels=labels,
    )


def _encode_classes(column: pa.ChunkedArray, where: str, locate) -> tuple[np.ndarray, list[str]]:
    """Class labels -> ``(int64[n] index into classes, classes as text)``; classes sorted."""
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, column.type.value_type)
    data_type = column.type
    if column.null_count:
        first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise TaskError(
            f"{where}: {column.null_count} labels are missing (first at {locate(first)}); "
            "drop those rows or filter them out"
        )
    if pa.types.is_floating(data_type):
        values = column.to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(values)
        if bad.any():
            raise TaskError(
                f"{where}: {int(bad.sum())} labels are NaN/Inf (first at {locate(int(np.flatnonzero(bad)[0]))}); "
                "drop those rows or filter them out"
            )
        if not np.all(values == np.round(values)):
            raise TaskError(
                f"{where}: classification labels are non-integer floats ({data_type}); use kind: "
                "regression for continuous targets"
            )
        values = values.astype(np.int64)
    elif pa.types.is_integer(data_type) or pa.types.is_boolean(data_type):
        values = column.to_numpy(zero_copy_only=False).astype(np.int64)
    elif _is_string(data_type):
        values = np.asarray(column.to_pylist(), dtype=object)
    else:
        raise TaskError(
            f"{where}: classification labels have type {data_type}; expected integers, strings or booleans"
        )
    unique, encoded = np.unique(values, return_inverse=True)
    if pa.types.is_boolean(data_type):
        names = [str(bool(value)) for value in unique]
    else:
        names = [str(value) for value in unique]
    if len(unique) < 2:
        raise TaskError(
            f"{where}: every kept row has the single class {names[0]!r}; LogME needs at least two "
            "classes (check the filter and the label column)"
        )
    return encoded.astype(np.int64).reshape(-1), names


def _regression_targets(table: pa.Table, columns: list[str], where: str, locate) -> np.ndarray:
    """Numeric target columns -> ``float64[n, t]``, rejecting nulls, NaN/Inf and constants."""
    targets = np.empty((table.num_rows, len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        column = table.column(name)
        data_type = column.type
        if not (
            pa.types.is_integer(data_type)
            or pa.types.is_floating(data_type)
            or pa.types.is_boolean(data_type)
            or pa.types.is_decimal(data_type)
        ):
            raise TaskError(
                f"{where}: regression target {name!r} has type {data_type}; expected numbers"
            )
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
        bad = ~np.isfinite(values)
        if bad.any():
            raise TaskError(
                f"{where}: target {name!r} has {int(bad.sum())} missing/NaN/Inf values (first at "
                f"{locate(int(np.flatnonzero(bad)[0]))}); drop those rows or filter them out"
            )
        if values.size > 0 and values.min() == values.max():
            raise TaskError(
                f"{where}: target {name!r} is constant ({values[0]}); nothing to regress"
            )
        targets[:, j] = values
    return targets


def stratified_quotas(class_counts: Sequence[int], max_samples: int) -> np.ndarray:
    """Rows to keep per class: proportional to ``class_counts``, at least 1 each, summing to
    ``min(max_samples, total)``. Starts from ``floor(exact share)`` (at least 1), then hands
    single rows to the class furthest below its exact share (ties: lower class index), or takes
    them from the one furthest above it.
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    total = int(counts.sum())
    if max_samples >= total:
        return counts.copy()
    present = counts > 0
    if max_samples < int(present.sum()):
        raise ValueError(
            f"max_samples={max_samples} cannot keep one row of each of {int(present.sum())} classes"
        )
    exact = counts * (max_samples / total)
    quotas = np.where(present, np.maximum(np.floor(exact).astype(np.int64), 1), 0)
    quotas = np.minimum(quotas, counts)
    while quotas.sum() < max_samples:  # next row to the class furthest below its share
        room = np.flatnonzero(quotas < counts)
        quotas[min(room, key=lambda k: (quotas[k] - exact[k], k))] += 1
    while quotas.sum() > max_samples:  # the at-least-one rule overshot: trim the furthest above
        spare = np.flatnonzero(quotas > 1)
        quotas[min(spare, key=lambda k: (exact[k] - quotas[k], k))] -= 1
    return quotas


def _subsample_classification(
    encoded: np.ndarray, num_classes: int, spec: TaskSpec, where: str
) -> np.ndarray:
    """Sorted positions kept by seeded stratified sampling (all positions without max_samples)."""
    if spec.max_samples is None or spec.max_samples >= encoded.size:
        return np.arange(encoded.size)
    counts = np.bincount(encoded, minlength=num_classes)
    try:
        quotas = stratified_quotas(counts, spec.max_samples)
    except ValueError as error:
        raise TaskError(f"{where}: {error}; raise max_samples") from None
    rng = np.random.default_rng(spec.seed)
    chosen = [
        rng.choice(np.flatnonzero(encoded == k), size=int(quotas[k]), replace=False)
        for k in range(num_classes)
        if quotas[k] > 0
    ]
    return np.sort(np.concatenate(chosen))


def _subsample_uniform(num_rows: int, spec: TaskSpec) -> np.ndarray:
    if spec.max_samples is None or spec.max_samples >= num_rows:
        return np.arange(num_rows)
    rng = np.random.default_rng(spec.seed)
    return np.sort(rng.choice(num_rows, size=spec.max_samples, replace=False))
