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
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ray_logme import __version__
from ray_logme.errors import StorageError, TaskError
from ray_logme.storage import (
    SHARD_FILE_PATTERN,
    FeatureStore,
    StorageOptions,
    content_key,
    filesystem_from_uri,
    list_files,
    shard_file_name,
    storage_errors,
)

if TYPE_CHECKING:
    import ray.data

logger = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
"""Version of the snapshot encoding; part of every revision, bump it when encoding changes."""

TASK_INFO_FILE = "_task.json"

FilterValue = str | int | float | bool


# --------------------------------------------------------------------------------------------
# Built-in tasks


@dataclass(frozen=True)
class BuiltinTask:
    """A small task generated in-process (no download), deterministic for a given version."""

    uri: str
    description: str
    input_column: str
    label_column: str
    modality: Literal["image", "text"]
    kind: Literal["classification", "regression"]
    version: int
    columns: tuple[str, ...]


BUILTIN_TASKS: dict[str, BuiltinTask] = {
    task.uri: task
    for task in (
        BuiltinTask(
            uri="sklearn:digits",
            description="scikit-learn's 1,797 handwritten digits, 8x8 grey upscaled x4 to 32x32 PNG; 10 classes",
            input_column="image",
            label_column="label",
            modality="image",
            kind="classification",
            version=1,
            columns=("image", "label", "fold"),
        ),
        BuiltinTask(
            uri="builtin:discs",
            description="600 32x32 grey PNGs of one soft-edged disc on noise; regress radius "
            "(or center_x, center_y, brightness)",
            input_column="image",
            label_column="radius",
            modality="image",
            kind="regression",
            version=1,
            columns=("image", "radius", "center_x", "center_y", "brightness", "fold"),
        ),
        BuiltinTask(
            uri="builtin:topics",
            description="800 template sentences on 4 topics (sports, cooking, astronomy, finance)",
            input_column="text",
            label_column="label",
            modality="text",
            kind="classification",
            version=1,
            columns=("text", "label", "fold"),
        ),
    )
}
"""Built-in tasks by URI. Every one has a ``fold`` column (row index mod 5) for filter examples."""


def builtin_table(uri: str) -> pa.Table:
    """The full table of a built-in task (cached per process)."""
    if uri not in BUILTIN_TASKS:
        raise TaskError(f"unknown built-in task {uri!r}: known are {sorted(BUILTIN_TASKS)}")
    return _builtin_table_cached(uri)


@functools.cache
def _builtin_table_cached(uri: str) -> pa.Table:
    if uri == "sklearn:digits":
        return _digits_table()
    if uri == "builtin:discs":
        return _discs_table()
    return _topics_table()


def _png_bytes(pixels: np.ndarray) -> bytes:
    """``pixels: uint8[h, w]`` -> lossless grey PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _digits_table() -> pa.Table:
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # [n, 8, 8], 0..16 -> 0..255
    upscaled = grey.repeat(4, axis=1).repeat(4, axis=2)  # nearest neighbour, exact: [n, 32, 32]
    num_rows = len(grey)
    return pa.table(
        {
            "image": pa.array([_png_bytes(image) for image in upscaled], pa.binary()),
            "label": pa.array(digits.target.astype(np.int64)),
            "fold": pa.array(np.arange(num_rows, dtype=np.int64) % 5),
        }
    )


def _discs_table(num_rows: int = 600, size: int = 32) -> pa.Table:
    rng = np.random.default_rng(20240601)
    radius = rng.uniform(3.0, 12.0, num_rows)
    center_x = rng.uniform(radius, size - radius)
    center_y = rng.uniform(radius, size - radius)
    brightness = rng.uniform(0.45, 1.0, num_rows)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    images = []
    for i in range(num_rows):
        distance = np.hypot(xx - center_x[i], yy - center_y[i])
        coverage = np.clip(radius[i] - distance + 0.5, 0.0, 1.0)  # anti-aliased edge
        pixels = 20.0 + 235.0 * brightness[i] * coverage + rng.normal(0.0, 6.0, (size, size))
        images.append(_png_bytes(np.clip(np.round(pixels), 0, 255).astype(np.uint8)))
    return pa.table(
        {
            "image": pa.array(images, pa.binary()),
            "radius": pa.array(radius),
            "center_x": pa.array(center_x),
            "center_y": pa.array(center_y),
            "brightness": pa.array(brightness),
            "fold": pa.array(np.arange(num_rows, dtype=np.int64) % 5),
        }
    )


_TOPIC_TEMPLATES: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "sports": (
        (
            "The {team} beat their rivals {score} in a tense {sport} match on {day}.",
            "{player} scored twice as the {team} won the {sport} final.",
            "Fans packed the stadium to watch the {team} play {sport} against the visitors.",
            "The coach praised the defence after a {score} win in the {sport} league.",
            "After a knee injury, {player} returned to training with the {team}.",
            "The {team} signed {player} before the new {sport} season.",
        ),
        {
            "team": ("Rovers", "Eagles", "Tigers", "United", "Rangers", "Falcons", "Wolves"),
            "sport": ("football", "basketball", "hockey", "rugby", "cricket", "volleyball"),
            "player": ("Garcia", "Okafor", "Lindqvist", "Tanaka", "Moreau", "Silva"),
            "score": ("2-1", "3-0", "98-94", "4-2", "1-0", "27-24"),
            "day": ("Saturday", "Sunday", "Friday night", "Wednesday"),
        },
    ),
    "cooking": (
        (
            "Stir the {ingredient} into the {dish} and simmer for {minutes} minutes.",
            "This {dish} recipe needs fresh {ingredient} and a pinch of {spice}.",
            "Preheat the oven, then bake the {dish} for {minutes} minutes until golden.",
            "Chop the {ingredient}, season with {spice}, and serve the {dish} warm.",
            "Our chef adds {spice} to the {dish} just before serving.",
            "Whisk the eggs, fold in the {ingredient}, and let the {dish} rest.",
        ),
        {
            "ingredient": ("garlic", "onions", "tomatoes", "spinach", "mushrooms", "lentils"),
            "dish": ("soup", "risotto", "curry", "pie", "stew", "omelette", "casserole"),
            "spice": ("cumin", "paprika", "nutmeg", "black pepper", "cinnamon", "oregano"),
            "minutes": ("10", "15", "20", "25", "40", "45"),
        },
    ),
    "astronomy": (
        (
            "The telescope captured a faint {object} near the constellation {constellation}.",
            "Astronomers measured the orbit of a {object} circling a distant star.",
            "The {mission} probe sent back images of {planet} during its flyby.",
            "A bright {object} will be visible after sunset in {constellation} on {day}.",
            "Scientists launched the {mission} spacecraft to study the moons of {planet}.",
            "Light from the {object} took millions of years to reach the observatory.",
        ),
        {
            "object": ("comet", "nebula", "galaxy", "exoplanet", "supernova", "asteroid"),
            "constellation": ("Orion", "Cygnus", "Lyra", "Cassiopeia", "Andromeda", "Taurus"),
            "mission": ("Voyager", "Juno", "Cassini", "Galileo", "Horizons", "Pioneer"),
            "planet": ("Jupiter", "Saturn", "Neptune", "Mars", "Uranus", "Pluto"),
            "day": ("Saturday", "Sunday", "Friday night", "Wednesday"),
        },
    ),
    "finance": (
        (
            "Shares of {company} rose {percent} percent after strong quarterly earnings.",
            "The central bank raised interest rates by {bps} basis points on {day}.",
            "Investors moved money into {asset} as the {market} market fell.",
            "{company} reported revenue growth of {percent} percent and raised its dividend.",
            "Analysts expect {asset} prices to climb as inflation slows.",
            "Bond yields fell {bps} basis points while {company} stock hit a record.",
        ),
        {
            "company": ("Acme Corp", "Globex", "Initech", "Umbrella Ltd", "Stark Industries"),
            "percent": ("3", "5", "7", "12", "18", "21"),
            "bps": ("25", "50", "75", "10"),
            "asset": ("gold", "government bonds", "the dollar", "index funds", "real estate"),
            "market": ("stock", "housing", "bond", "currency"),
            "day": ("Saturday", "Sunday", "Friday night", "Wednesday"),
        },
    ),
}


def _topics_table(rows_per_topic: int = 200) -> pa.Table:
    rng = np.random.default_rng(20240602)
    topics = list(_TOPIC_TEMPLATES)
    texts: list[str] = []
    labels: list[str] = []
    for _ in range(rows_per_topic):
        for topic in topics:
            templates, slots = _TOPIC_TEMPLATES[topic]
            template = templates[int(rng.integers(len(templates)))]
            names = re.findall(r"{(\w+)}", template)
            values = {name: slots[name][int(rng.integers(len(slots[name])))] for name in names}
            texts.append(template.format(**values))
            labels.append(topic)
    return pa.table(
        {
            "text": pa.array(texts, pa.string()),
            "label": pa.array(labels, pa.string()),
            "fold": pa.array(np.arange(len(texts), dtype=np.int64) % 5),
        }
    )


# --------------------------------------------------------------------------------------------
# Specs and metadata


class TaskSpec(BaseModel):
    """A labelled downstream task. Built-in URIs fill in their own columns, modality and kind.

    ``filter`` keeps the rows whose column equals the value, or one of the values of a list,
    for every column given (AND across columns; nulls never match), e.g.
    ``{"split": "train"}`` or ``{"split": ["train", "validation"], "lang": "en"}``. Values are
    cast to the column type. It is applied before subsampling, so ``max_samples`` counts
    training rows. ``max_samples`` keeps a seeded random subset: stratified per class for
    classification (every class keeps at least one row), uniform for regression.

    ``label_column`` is one column, or several numeric columns for multi-target regression
    (multi-label classification as 0/1 targets with ``kind: regression``). ``input_column`` of
    an image task holds encoded bytes (PNG/JPEG/...), a path (relative to the dataset folder,
    absolute, or ``s3://``), or a Hugging Face ``struct<bytes, path>``; of a text task, strings.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    uri: str = Field(min_length=1)
    input_column: str | None = None
    modality: Literal["image", "text"] | None = None
    label_column: str | list[str] | None = None
    kind: Literal["classification", "regression"] | None = None
    filter: dict[str, FilterValue | list[FilterValue]] | None = None
    max_samples: int | None = Field(default=None, ge=1)
    seed: int = 0
    shard_rows: int = Field(default=512, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _fill_builtin(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("uri"), str):
            return data
        uri = data["uri"].strip()
        if re.match(r"^(sklearn|builtin):", uri):
            builtin = BUILTIN_TASKS.get(uri)
            if builtin is None:
                raise ValueError(
                    f"unknown built-in task {uri!r}: known are {sorted(BUILTIN_TASKS)}"
                )
            data = dict(data)
            for key in ("modality", "kind"):
                given = data.get(key)
                if given is not None and given != getattr(builtin, key):
                    raise ValueError(
                        f"built-in task {uri!r} is a {builtin.modality} {builtin.kind} task; "
                        f"{key}={given!r} does not fit it"
                    )
                data[key] = getattr(builtin, key)
            if data.get("input_column") is None:
                data["input_column"] = builtin.input_column
            if data.get("label_column") is None:
                data["label_column"] = builtin.label_column
        return data

    @field_validator("label_column")
    @classmethod
    def _label_columns_distinct(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if not value:
                raise ValueError("label_column is an empty list")
            if len(set(value)) != len(value):
                raise ValueError(f"label_column lists a column twice: {value}")
        return value

    @field_validator("filter")
    @classmethod
    def _filter_not_empty(cls, value: dict | None) -> dict | None:
        for column, allowed in (value or {}).items():
            if isinstance(allowed, list) and not allowed:
                raise ValueError(f"filter for column {column!r} is an empty list (matches nothing)")
        return value

    @model_validator(mode="after")
    def _complete(self) -> TaskSpec:
        missing = [
            key
            for key in ("input_column", "modality", "label_column", "kind")
            if getattr(self, key) is None
        ]
        if missing:
            raise ValueError(f"task {self.name!r} ({self.uri}) needs {', '.join(missing)}")
        if (
            self.kind == "classification"
            and isinstance(self.label_column, list)
            and len(self.label_column) > 1
        ):
            raise ValueError(
                f"task {self.name!r}: classification takes one label column, got {self.label_column}; "
                "for multi-label data use kind: regression with one 0/1 column per label"
            )
        if self.input_column in self.label_columns:
            raise ValueError(
                f"task {self.name!r}: input_column {self.input_column!r} is also a label column"
            )
        return self

    @property
    def label_columns(self) -> list[str]:
        """``label_column`` as a list."""
        return (
            [self.label_column]
            if isinstance(self.label_column, str)
            else list(self.label_column or [])
        )

    @property
    def is_builtin(self) -> bool:
        return self.uri.strip() in BUILTIN_TASKS


class TargetStats(BaseModel):
    """Statistics of one regression target over the task's rows."""

    model_config = ConfigDict(frozen=True)

    name: str
    mean: float
    std: float
    min: float
    max: float


class TaskInfo(BaseModel):
    """What a task snapshot holds; written as ``tasks/{task_key}/_task.json``.

    ``classes[i]`` is the original label value (as text) of class index ``i`` stored in the
    ``label`` column; ``class_counts[i]`` its number of rows. Regression tasks carry
    ``target_stats`` instead. ``num_source_rows`` counts rows before the filter,
    ``num_filtered_rows`` after it and before subsampling, ``num_rows`` after both.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    task_key: str
    revision: str
    kind: Literal["classification", "regression"]
    modality: Literal["image", "text"]
    source_uri: str
    input_column: str
    label_columns: list[str]
    num_rows: int
    num_source_rows: int
    num_filtered_rows: int
    num_source_files: int
    shard_rows: int
    rows_per_shard: list[int]
    classes: list[str] | None = None
    class_counts: list[int] | None = None
    target_stats: list[TargetStats] | None = None
    filter: dict[str, FilterValue | list[FilterValue]] | None = None
    max_samples: int | None = None
    seed: int = 0
    code_version: str = __version__

    @property
    def num_shards(self) -> int:
        return len(self.rows_per_shard)

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes is not None else None

    @property
    def num_targets(self) -> int:
        """Classes for classification (LogME fits one target per class), targets for regression."""
        return len(self.classes or []) if self.kind == "classification" else len(self.label_columns)


@dataclass(frozen=True)
class TaskSnapshot:
    """A task written into a :class:`FeatureStore`: what the extract stage reads.

    ``shard_paths`` + ``filesystem`` is what ``ray.data.read_parquet(paths, filesystem=...)``
    takes; shard ``i`` holds ``rows_per_shard[i]`` rows with ``row_id`` from
    ``i * shard_rows``. Columns: ``row_id: int64``, ``input`` (``binary`` for images,
    ``string`` for text) and ``label`` (``int64`` class index, ``float64``, or
    ``fixed_size_list<float64>[t]``).
    """

    task_key: str
    info: TaskInfo
    store: FeatureStore
    shard_relpaths: tuple[str, ...]
    reused: bool = False

    @property
    def shard_uris(self) -> list[str]:
        return [self.store.uri_of(relpath) for relpath in self.shard_relpaths]

    @property
    def shard_paths(self) -> list[str]:
        return [self.store.path_of(relpath) for relpath in self.shard_relpaths]

    @property
    def filesystem(self) -> pafs.FileSystem:
        return self.store.filesystem

    @property
    def rows_per_shard(self) -> list[int]:
        return list(self.info.rows_per_shard)

    @property
    def shard_rows(self) -> int:
        return self.info.shard_rows

    @property
    def num_shards(self) -> int:
        return len(self.shard_relpaths)

    def read_shard(self, shard_index: int) -> pa.Table:
        """One input shard (row_id, input, label), without Ray."""
        return self.store.read_table(self.shard_relpaths[shard_index])

    def read_dataset(self) -> ray.data.Dataset:
        """The snapshot as a Ray dataset of (row_id, input, label) rows."""
        import ray.data

        return ray.data.read_parquet(self.shard_paths, filesystem=self.filesystem)


def task_dir(task_key: str) -> str:
    """``tasks/{task_key}`` relative to the store root."""
    return f"tasks/{task_key}"


# --------------------------------------------------------------------------------------------
# Sources: where the rows come from


@dataclass
class _SourceFile:
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
class _TaskSource:
    files: list[_SourceFile]
    schema: pa.Schema
    fingerprint: list[list[Any]]
    filesystem: pafs.FileSystem | None = None
    base_path: str | None = None
    scheme: str = "local"
    storage_options: StorageOptions | None = None


def _open_source(spec: TaskSpec, storage_options: StorageOptions | None) -> _TaskSource:
    if spec.is_builtin:
        builtin = BUILTIN_TASKS[spec.uri.strip()]
        table = builtin_table(builtin.uri)
        return _TaskSource(
            files=[_SourceFile(display_name=builtin.uri, schema=table.schema, table=table)],
            schema=table.schema,
            fingerprint=[[builtin.uri, f"v{builtin.version}"]],
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
            _SourceFile(
                display_name=by_path[fragment.path].uri, schema=dataset.schema, fragment=fragment
            )
        )
    files.sort(key=lambda source_file: source_file.display_name)
    return _TaskSource(
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


# --------------------------------------------------------------------------------------------
# Pass 1: labels, filter, subsampling


@dataclass
class _TaskPlan:
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


def _plan_task(spec: TaskSpec, source: _TaskSource, task_key: str, revision: str) -> _TaskPlan:
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
    return _TaskPlan(
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


# --------------------------------------------------------------------------------------------
# Pass 2: inputs, shard by shard


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


def _iter_input_shards(
    spec: TaskSpec,
    source: _TaskSource,
    plan: _TaskPlan,
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
    source: _TaskSource,
    source_file: _SourceFile,
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


def _read_image_path(path: str, source: _TaskSource, where: str) -> bytes:
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
    spec: TaskSpec, plan: _TaskPlan, task_key: str, shard_index: int, first: int, inputs: list[Any]
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


# --------------------------------------------------------------------------------------------
# Entry points


def _prepare(
    spec: TaskSpec, storage_options: StorageOptions | None
) -> tuple[_TaskSource, str, str]:
    source = _open_source(spec, storage_options)
    revision = task_revision(spec, source.fingerprint)
    return source, revision, content_key(spec.name, revision)


def task_info(spec: TaskSpec, storage_options: StorageOptions | None = None) -> TaskInfo:
    """Label metadata (classes and counts, or target statistics), sizes and the revision.

    Reads only the label and filter columns. Raises :class:`TaskError` for missing columns,
    wrong dtypes, missing/NaN labels, a single class or a constant target, and
    :class:`StorageError` when the data cannot be reached.
    """
    source, revision, task_key = _prepare(spec, storage_options)
    return _plan_task(spec, source, task_key, revision).info


def iter_task_shards(
    spec: TaskSpec, storage_options: StorageOptions | None = None
) -> Iterator[tuple[TaskInfo, int, pa.Table]]:
    """``(info, shard_index, table)`` for every shard of the task, in memory, without a store."""
    source, revision, task_key = _prepare(spec, storage_options)
    plan = _plan_task(spec, source, task_key, revision)
    for shard_index, table in _iter_input_shards(spec, source, plan, task_key):
        yield plan.info, shard_index, table


def snapshot_task(
    spec: TaskSpec, store: FeatureStore, storage_options: StorageOptions | None = None
) -> TaskSnapshot:
    """Write the task's input shards and ``_task.json`` into ``store`` once; reuse them after.

    Layout: ``tasks/{task_key}/part-{shard:05d}.parquet`` (row_id, input, label) and
    ``tasks/{task_key}/_task.json`` (:class:`TaskInfo`), committed last. A snapshot whose
    ``_task.json`` and shards are all present is returned as is (``reused=True``); after an
    interrupted run only the missing shards are written. Every write is atomic and
    commit-once, so concurrent snapshots of the same task are safe. Runs without Ray.

    ``storage_options`` are for the task's source URI; the store has its own.
    """
    source, revision, task_key = _prepare(spec, storage_options)
    folder = task_dir(task_key)
    committed = {
        int(match.group(1))
        for name in store.list_dir(folder)
        if (match := SHARD_FILE_PATTERN.match(name))
    }
    info_relpath = f"{folder}/{TASK_INFO_FILE}"
    if store.exists(info_relpath):
        info = TaskInfo.model_validate_json(store.read_text(info_relpath))
        if set(range(info.num_shards)) <= committed:
            logger.info("task %s: reusing snapshot %s", spec.name, store.uri_of(folder))
            return _snapshot(task_key, info, store, reused=True)
    plan = _plan_task(spec, source, task_key, revision)
    written = 0
    for shard_index, table in _iter_input_shards(
        spec, source, plan, task_key, skip_shards=committed
    ):
        written += store.write_table(
            f"{folder}/{shard_file_name(shard_index)}", table, overwrite=False
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
    relpaths = tuple(f"{task_dir(task_key)}/{shard_file_name(i)}" for i in range(info.num_shards))
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
