"""What a leaderboard is made of: the cost axes, the columns of its tables with their dtypes
(:func:`typed_frame` builds a table to them), the run records (:class:`RunRecord`,
:class:`PastRun`) and the :class:`Leaderboard` itself. The rules are in
:mod:`ray_logme.leaderboard`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

#: cost column -> "min" (lower is cheaper) or "max" (higher is cheaper)
COST_AXES: dict[str, str] = {"num_params": "min", "feature_dim": "min", "throughput": "max"}
COST_LABELS: dict[str, str] = {
    "num_params": "parameters",
    "feature_dim": "feature dimension",
    "throughput": "extraction throughput (samples/s)",
}

# The tables of a Leaderboard: each column once, in order, with its dtype. Text columns are TEXT:
# typed tables (per_task, changes, failures) hold them as object; overall and runs keep the
# string dtype pandas gives them (see typed_frame).
TEXT = object
FLOAT = "float64"

PER_TASK_DTYPES: dict[str, Any] = {
    "model": TEXT,
    "model_key": TEXT,
    "task": TEXT,
    "task_key": TEXT,
    "modality": TEXT,
    "kind": TEXT,
    "score": FLOAT,
    "rank": FLOAT,
    "num_ranked": "int64",
    "state": TEXT,
    "error": TEXT,
}
OVERALL_DTYPES: dict[str, Any] = {
    "model": TEXT,
    "model_key": TEXT,
    "hub": TEXT,
    "modality": TEXT,
    "tags": TEXT,
    "complete": bool,
    "tasks_covered": "int64",
    "num_tasks": "int64",
    "missing_tasks": TEXT,
    "overall_rank": FLOAT,
    "mean_rank": FLOAT,
    "mean_normalised_score": FLOAT,
    "comparable_rank": FLOAT,
    "num_comparable": "Int64",
    **dict.fromkeys(COST_AXES, FLOAT),
    "imagenet_top1": FLOAT,
    "previous_rank": FLOAT,
    "rank_delta": FLOAT,
    "change": TEXT,
}
PARETO_DTYPES: dict[str, Any] = {
    **{
        column: OVERALL_DTYPES[column]
        for column in ("model", "hub", "modality", "overall_rank", "mean_normalised_score")
    },
    **dict.fromkeys(COST_AXES, FLOAT),
    **{f"on_front_{axis}": bool for axis in COST_AXES},
}
CHANGES_DTYPES: dict[str, Any] = {
    "model": TEXT,
    "modality": TEXT,
    "change": TEXT,
    "previous_rank": FLOAT,
    "overall_rank": FLOAT,
    "rank_delta": FLOAT,
    "previous_model_key": TEXT,
    "model_key": TEXT,
}
FAILURES_DTYPES: dict[str, Any] = dict.fromkeys(
    ("stage", "model", "model_key", "task", "task_key", "error", "traceback"), TEXT
)
RUNS_DTYPES: dict[str, Any] = {
    "run_id": TEXT,
    "timestamp": TEXT,
    "config_hash": TEXT,
    "code_version": TEXT,
    "current": bool,
}

PER_TASK_COLUMNS = tuple(PER_TASK_DTYPES)
OVERALL_COLUMNS = tuple(OVERALL_DTYPES)
PARETO_COLUMNS = tuple(PARETO_DTYPES)
CHANGES_COLUMNS = tuple(CHANGES_DTYPES)
FAILURES_COLUMNS = tuple(FAILURES_DTYPES)
RUNS_COLUMNS = tuple(RUNS_DTYPES)


def typed_frame(
    rows: pd.DataFrame | list, dtypes: Mapping[str, Any], *, cast_text: bool = True
) -> pd.DataFrame:
    """``rows`` with exactly the columns of ``dtypes`` (one of the ``*_DTYPES`` above), in its
    order, each cast to its dtype, so an empty table has the same Parquet schema as a full one.
    With ``cast_text=False`` the TEXT columns are left as they were built."""
    frame = pd.DataFrame(rows, columns=list(dtypes))
    for column, dtype in dtypes.items():
        if cast_text or dtype is not TEXT:
            frame[column] = frame[column].astype(dtype)
    return frame


@dataclass(frozen=True)
class RunRecord:
    """What identifies one run (``runs/{run_id}/run.json``).

    ``timestamp`` is ISO 8601 (UTC); ``config_hash`` hashes the validated config;
    ``code_version`` is the package version or git commit that ran it.
    """

    run_id: str
    timestamp: str = ""
    config_hash: str = ""
    code_version: str = ""

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> RunRecord:
        """Build from a ``run.json`` mapping; keys other than the four fields are ignored."""
        if not record.get("run_id"):
            raise ValueError(f"run record {dict(record)!r} has no 'run_id'")
        return cls(
            run_id=str(record["run_id"]),
            timestamp=str(record.get("timestamp") or ""),
            config_hash=str(record.get("config_hash") or ""),
            code_version=str(record.get("code_version") or ""),
        )

    def to_dict(self) -> dict[str, str]:
        return {
            "run_id": self.run_id,
            "timestamp": self.timestamp,
            "config_hash": self.config_hash,
            "code_version": self.code_version,
        }


@dataclass(frozen=True, eq=False)
class PastRun:
    """An earlier run: its record, its scores table (same schema as the current one) and,
    optionally, its models table (only its ``model`` and ``modality`` columns are read)."""

    record: RunRecord
    scores: pd.DataFrame
    models: pd.DataFrame | None = None


@dataclass(frozen=True, eq=False)
class Leaderboard:
    """The leaderboard of one run: pandas tables plus the run context (the rules are in the
    docstring of :mod:`ray_logme.leaderboard`).

    Tables (one row per ...):
      * ``per_task``: (model, task) pair of every model and each of its leaderboard tasks;
        ``modality`` is the task's; ``state`` is ``ok``, ``failed`` or ``missing`` (never
        scored); ``rank`` among the ``num_ranked`` models scored on the task.
      * ``overall``: model, best first (complete models by ``overall_rank``, then incomplete ones
        by tasks covered and ``comparable_rank``; with several modalities, one modality after the
        other, unknown last), with its ``modality``, cost columns and the change vs the previous
        run.
      * ``pareto``: complete model, with ``on_front_<cost>`` for each of :data:`COST_AXES`
        (fronts within each modality).
      * ``changes``: model of the current or previous run (``new`` / ``dropped`` / ``kept``).
      * ``failures``: each failure once, (stage, model, task, error, traceback); ``task`` is empty
        for a model that failed to load in the extract stage; ``traceback`` only from the extract
        status table.
      * ``runs``: run record, the current run first then ``history`` in the given order.

    ``modalities``: the run's known modalities (``("image", "text")``; empty when none is
    known); ``task_modalities`` runs along ``tasks`` (``""``: unknown).

    With several metrics (:func:`~ray_logme.leaderboard.combined.build_combined_leaderboard`):
    ``metric_scores`` has one row per (model, task, metric) with its ``score`` and ``rank``
    among that metric's ok scores on the task, and ``ranking_note`` says in one sentence how
    ``metric`` (the default combination, or the metric chosen) ranks. Both are empty otherwise.
    """

    metric: str
    tasks: tuple[str, ...]
    per_task: pd.DataFrame
    overall: pd.DataFrame
    pareto: pd.DataFrame
    changes: pd.DataFrame
    failures: pd.DataFrame
    runs: pd.DataFrame
    run: RunRecord | None = None
    previous_run: RunRecord | None = None
    unscored_tasks: tuple[str, ...] = ()
    tasks_added: tuple[str, ...] = ()
    tasks_removed: tuple[str, ...] = ()
    filters: tuple[str, ...] = field(default=())
    modalities: tuple[str, ...] = ()
    task_modalities: tuple[str, ...] = ()
    previous_modalities: tuple[str, ...] = ()
    #: modalities of both runs whose task set changed (their rank changes compare other tasks)
    task_set_changed_modalities: tuple[str, ...] = ()
    metric_scores: pd.DataFrame | None = None
    ranking_note: str = ""

    @property
    def run_id(self) -> str | None:
        return self.run.run_id if self.run is not None else None

    @property
    def multimodal(self) -> bool:
        """More than one modality: models are ranked within their modality."""
        return len(self.modalities) > 1

    def tasks_of(self, modality: str) -> tuple[str, ...]:
        """The leaderboard tasks of a model of ``modality``: the tasks of that modality, or every
        task for a model of unknown modality (``""``) or a run with one modality."""
        if not self.multimodal or modality == "":
            return self.tasks
        return tuple(
            task
            for task, task_modality in zip(self.tasks, self.task_modalities, strict=True)
            if task_modality == modality
        )

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables by name, in the order they are written."""
        return {
            "overall": self.overall,
            "per_task": self.per_task,
            "pareto": self.pareto,
            "changes": self.changes,
            "failures": self.failures,
            "runs": self.runs,
            **({"metric_scores": self.metric_scores} if self.metric_scores is not None else {}),
        }
