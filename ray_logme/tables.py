"""The stage tables: the one home of the status, models and scores schemas and their rules.

Three tables pass between stages, one file each under ``runs/{run_id}/`` (see
:mod:`ray_logme.storage.layout`):

* **status** (extract -> reduce, leaderboard): one row per (model, task) pair,
  :class:`PairStatus`; ``state`` is ``ok``, ``failed`` or ``skipped`` (model and task modalities
  differ: no score, no failure).
* **models** (extract -> leaderboard): one row per model, :class:`ModelRecord`, with the cost
  columns (``num_params``, ``feature_dim``, ``throughput``) and, once the refresh adds it, the
  optional ``imagenet_top1`` prior.
* **scores** (reduce -> leaderboard, evaluate): one row per (model, task, metric),
  :class:`ScoreRow`.

Writers build tables with :meth:`StageTable.from_rows`; readers check what they were given with
:func:`require_columns` (pandas) or :meth:`StageTable.conform` (Arrow: a table written by an
older version gains its missing optional columns as nulls). Scores are selected and cleaned by
one rule, :func:`clean_scores`, for the leaderboard and for ``evaluate`` alike.
No Ray, no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

import numpy as np
import pyarrow as pa

logger = logging.getLogger(__name__)

PENDING = "pending"
OK = "ok"
FAILED = "failed"
#: A pair whose model and task modalities differ (a text model on an image task).
SKIPPED = "skipped"
#: Model states of the models table that are not failures: extracted (``ok``), or every pair
#: skipped because no task has the model's modality (``skipped``); ``""`` when not recorded.
MODEL_NOT_FAILED_STATES = ("", OK, SKIPPED)


# --------------------------------------------------------------------------------------------
# Rows


@dataclass
class PairStatus:
    """Extract status of one (model, task) pair: one row of the status table."""

    run_id: str
    model: str
    model_key: str
    task: str
    task_key: str
    shards_total: int = 0
    shards_done: int = 0
    shards_computed: int = 0
    rows: int = 0
    rows_computed: int = 0
    seconds: float = 0.0
    state: str = PENDING  # pending | ok | failed | skipped
    error: str | None = None
    traceback: str | None = None

    def fail(self, message: str, tb: str | None = None) -> None:
        """Mark the pair failed with ``message``; the first cause is kept."""
        if self.state != FAILED:
            self.state = FAILED
            self.error = message
            self.traceback = tb


@dataclass
class ModelRecord:
    """One model's extract summary: one row of the models table."""

    run_id: str
    model: str
    model_key: str
    hub: str
    modality: str | None = None
    num_params: int | None = None
    feature_dim: int | None = None
    input_size: str | None = None
    throughput: float | None = None  # samples per second per worker, forward pass only
    #: seconds from the pipeline's start to the first batch reaching a model actor (actor
    #: start-up, model load, first read and decode); None when nothing was computed
    startup_seconds: float | None = None
    #: rows per second of the whole actor pool from its first batch to its last (all workers;
    #: waits for input included): the steady-state rate, start-up excluded
    pipeline_throughput: float | None = None
    #: extract workers that loaded this model in this run (a large model spreads over several)
    workers: int | None = None
    #: the most models (this one included) that computed on one device at the same time as it:
    #: 1 = it had its device (GPU, or a node's CPUs) to itself; above 1 its throughput was
    #: measured while sharing
    models_on_device: int | None = None
    extract_seconds: float = 0.0
    rows_computed: int = 0
    state: str = PENDING
    error: str | None = None
    tags: str = "{}"
    metadata: str = "{}"
    imagenet_top1: float | None = None  # source-accuracy prior (refresh, optional CSV)


@dataclass
class ScoreRow:
    """One (model, task, metric) row of the scores table."""

    run_id: str
    model: str
    model_key: str
    task: str
    task_key: str
    kind: str
    metric: str
    score: float | None = None
    num_samples: int | None = None
    feature_dim: int | None = None
    num_targets: int | None = None
    seconds: float = 0.0
    state: str = OK
    error: str | None = None
    cached: bool = False


# --------------------------------------------------------------------------------------------
# Schemas


@dataclass(frozen=True)
class StageTable:
    """One stage table: its Arrow schema and the columns every reader needs."""

    name: str
    schema: pa.Schema
    required: tuple[str, ...]

    def from_rows(self, rows: Iterable[Any]) -> pa.Table:
        """The table of ``rows`` (dataclass rows or mappings) with exactly :attr:`schema`."""
        records = [asdict(row) if is_dataclass(row) else dict(row) for row in rows]
        return pa.Table.from_pylist(records, schema=self.schema)

    def conform(self, table: pa.Table, what: str | None = None) -> pa.Table:
        """``table`` checked and cast to this schema: required columns must be there; optional
        columns it lacks (a table written by an older version) are added as nulls; columns this
        schema does not know are kept after the known ones.
        """
        what = what or f"{self.name} table"
        require_columns(table.column_names, self.required, what)
        columns, fields = [], []
        for field in self.schema:
            if field.name in table.column_names:
                column = table.column(field.name)
                if column.type != field.type:
                    try:
                        column = column.cast(field.type)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                        raise ValueError(
                            f"{what}: column {field.name!r} is {column.type}, expected "
                            f"{field.type}: {exc}"
                        ) from None
            else:
                column = pa.nulls(table.num_rows, field.type)
            columns.append(column)
            fields.append(field)
        for name in table.column_names:
            if self.schema.get_field_index(name) < 0:
                columns.append(table.column(name))
                fields.append(table.schema.field(name))
        return pa.Table.from_arrays(columns, schema=pa.schema(fields))


#: The columns that name one (model, task) pair of one run: the status and scores tables' key.
_PAIR_FIELDS = [
    ("run_id", pa.string()),
    ("model", pa.string()),
    ("model_key", pa.string()),
    ("task", pa.string()),
    ("task_key", pa.string()),
]

STATUS = StageTable(
    "status",
    pa.schema(
        [
            *_PAIR_FIELDS,
            ("shards_total", pa.int64()),
            ("shards_done", pa.int64()),
            ("shards_computed", pa.int64()),
            ("rows", pa.int64()),
            ("rows_computed", pa.int64()),
            ("seconds", pa.float64()),
            ("state", pa.string()),
            ("error", pa.string()),
            ("traceback", pa.string()),
        ]
    ),
    required=("model", "task", "state", "error"),
)

MODELS = StageTable(
    "models",
    pa.schema(
        [
            ("run_id", pa.string()),
            ("model", pa.string()),
            ("model_key", pa.string()),
            ("hub", pa.string()),
            ("modality", pa.string()),
            ("num_params", pa.int64()),
            ("feature_dim", pa.int64()),
            ("input_size", pa.string()),
            ("throughput", pa.float64()),
            ("startup_seconds", pa.float64()),
            ("pipeline_throughput", pa.float64()),
            ("workers", pa.int64()),
            ("models_on_device", pa.int64()),
            ("extract_seconds", pa.float64()),
            ("rows_computed", pa.int64()),
            ("state", pa.string()),
            ("error", pa.string()),
            ("tags", pa.string()),
            ("metadata", pa.string()),
            # the optional source-accuracy prior, added by the refresh from the config's CSV
            ("imagenet_top1", pa.float64()),
        ]
    ),
    required=("model",),
)

SCORES = StageTable(
    "scores",
    pa.schema(
        [
            *_PAIR_FIELDS,
            ("kind", pa.string()),
            ("metric", pa.string()),
            ("score", pa.float64()),
            ("num_samples", pa.int64()),
            ("feature_dim", pa.int64()),
            ("num_targets", pa.int64()),
            ("seconds", pa.float64()),
            ("state", pa.string()),
            ("error", pa.string()),
            ("cached", pa.bool_()),
        ]
    ),
    required=("model", "task", "score", "state"),
)

#: The optional source-accuracy prior column the refresh adds to the models table.
PRIOR_COLUMN = "imagenet_top1"

STATUS_SCHEMA = STATUS.schema
MODELS_SCHEMA = MODELS.schema
SCORES_SCHEMA = SCORES.schema


# --------------------------------------------------------------------------------------------
# Validation (one rule set for every reader)


def require_columns(columns: Any, required: Sequence[str], what: str) -> None:
    """``ValueError`` naming ``what`` and the missing columns unless all of ``required`` are in
    ``columns`` (a pandas DataFrame, an Arrow table, or a sequence of names)."""
    if hasattr(columns, "columns") and not isinstance(columns, pa.Table):
        names = list(columns.columns)
    elif isinstance(columns, pa.Table):
        names = list(columns.column_names)
    elif isinstance(columns, str) or not isinstance(columns, Iterable):
        raise ValueError(f"{what} must be a table, got {type(columns).__name__}")
    else:
        names = list(columns)
    missing = [column for column in required if column not in names]
    if missing:
        raise ValueError(
            f"{what} lacks column(s) {missing}; it has {names}. Expected the stage tables of "
            "ray_logme.tables (scores: reduce stage, models and status: extract stage), or "
            "name the columns to use"
        )


def clean_scores(
    scores: Any,
    metric: str | None,
    what: str,
    *,
    score_column: str = "score",
    required: Sequence[str] = ("model", "task"),
    metric_column_required: bool = False,
) -> Any:
    """The rows of one metric with a float64 score, as every reader of scores takes them.

    ``scores``: a pandas DataFrame with ``required`` and ``score_column`` (and optionally
    ``metric`` and ``state``). With ``metric`` given, only its rows are kept (a table without a
    ``metric`` column is taken as that metric, unless ``metric_column_required``); a table with
    none of its rows is refused, naming the metrics it has. With ``metric=None`` a table that
    mixes metrics is refused. ``score`` becomes float64; an ``ok`` row whose score is missing or
    not finite becomes ``failed`` (with a warning and an error message); rows that are not
    ``ok`` get a NaN score. Without a ``state`` column every row counts as ``ok``. Returns a copy
    with the same columns plus ``state`` and ``error``.
    """
    import pandas as pd

    if not isinstance(scores, pd.DataFrame):
        raise ValueError(f"{what} must be a pandas DataFrame, got {type(scores).__name__}")
    require_columns(scores, [*required, score_column], what)
    frame = scores
    if "metric" in frame.columns:
        named = frame["metric"].map(_text)
        if metric is None:
            present = sorted(set(named) - {""})
            if len(present) > 1:
                raise ValueError(f"{what} mixes metrics {present}: pick one with metric=")
        else:
            blank = int((named == "").sum())
            if blank:
                logger.warning("%s: %d rows without a metric name are left out", what, blank)
            frame = frame[named == metric]
            if frame.empty and len(scores):
                raise ValueError(
                    f"{what} has no scores with metric {metric!r}; it has metrics "
                    f"{sorted(set(named) - {''})}. Pass metric=<one of those>"
                )
    elif metric is not None and metric_column_required:
        raise ValueError(f"metric={metric!r} was given but {what} has no 'metric' column")
    frame = frame.copy()
    frame[score_column] = pd.to_numeric(frame[score_column], errors="coerce").astype("float64")
    if "state" in frame.columns:
        frame["state"] = frame["state"].map(_text).astype(object)
    else:
        frame["state"] = OK
    if "error" in frame.columns:
        frame["error"] = frame["error"].map(_text).astype(object)
    else:
        frame["error"] = ""
    ok = frame["state"] == OK
    bad = ok & ~np.isfinite(frame[score_column].to_numpy(dtype=np.float64, na_value=np.nan))
    if bad.any():
        keys = [c for c in required if c in frame.columns]
        logger.warning(
            "%s: %d 'ok' score(s) are missing or not finite, counted as failed: %s",
            what,
            int(bad.sum()),
            frame.loc[bad, keys].head(10).to_dict("records"),
        )
        frame.loc[bad, "state"] = FAILED
        frame.loc[bad, "error"] = "state 'ok' but the score is missing or not finite"
    frame.loc[frame["state"] != OK, score_column] = np.nan
    return frame


def _text(value: Any) -> str:
    """A cell as text: missing values (None, NaN, pandas NA) become ``""``."""
    if value is None:
        return ""
    if isinstance(value, float) and value != value:
        return ""
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return ""
    except ImportError:  # pragma: no cover - pandas is a core dependency
        pass
    return str(value)
