"""What a task is and what its snapshot holds: :class:`TaskSpec` (the config entry),
:class:`TaskInfo` (``_task.json``: classes or target statistics, sizes, revision), its
:class:`TargetStats`, and :class:`TaskSnapshot` (the shards in a feature store that the extract
stage reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ray_logme import __version__
from ray_logme.storage import FeatureStore
from ray_logme.tasks.builtin import BUILTIN_TASKS, BUILTIN_URI_PATTERN

if TYPE_CHECKING:
    import ray.data

FilterValue = str | int | float | bool


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
    if_missing: Literal["fail", "skip"] = "fail"
    """A built-in task whose data package is not installed: ``fail`` its pairs (the error names
    the package), or ``skip`` it, named with its package, and run the rest."""

    @model_validator(mode="before")
    @classmethod
    def _fill_builtin(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("uri"), str):
            return data
        uri = data["uri"].strip()
        if BUILTIN_URI_PATTERN.match(uri):
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
