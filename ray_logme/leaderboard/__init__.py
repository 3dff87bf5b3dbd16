"""Leaderboard: per-task ranks, an overall ranking, cost Pareto fronts, run history, renderers.

Input is the reduce stage's scores table and the extract stage's models table (schemas in
``docs/design.md``); output is a :class:`Leaderboard` of pandas tables, rendered to Markdown
(:func:`to_markdown`), one self-contained HTML page (:func:`to_html`), and written with Parquet and
CSV copies through the feature store (:func:`write_leaderboard`). Everything except the writer is
pure: no I/O, no Ray.

Ranking rules
-------------
* **Direction.** A higher score is better (LogME, and the other transferability metrics the reduce
  stage may add, are log-evidence-like "higher is better" scores). Rank 1 is the best.
* **Ties: fractional ranking.** Tied models share the mean of the ranks they span (scores
  ``[3, 2, 2, 1]`` rank ``[1, 2.5, 2.5, 4]``; ``pandas.Series.rank(method="average")``). Ranks then
  sum to ``n (n + 1) / 2`` whatever the ties, so mean ranks stay comparable (the convention of
  Friedman tests and critical-difference diagrams). Scores tie only when exactly equal.
* **Per-task rank** is among every model with an ``ok``, finite score on that task.
* **Which tasks count.** The leaderboard's tasks are the tasks of the scores table that at least
  one model scored; a task that failed for every model is listed in ``unscored_tasks`` (and its
  pairs in ``failures``) and does not make every model incomplete.
* **Complete models** have an ``ok`` score on every leaderboard task. Only they get an
  ``overall_rank``: per-task ranks are recomputed *among the complete models*, averaged over all
  tasks (``mean_rank``), and ranked ascending (fractional ties again).
* **Incomplete models** (a task failed or was never scored) are marked ``complete=False``, keep
  ``overall_rank`` empty, and are never averaged over fewer tasks as if complete. Instead each is
  ranked only among *comparable* models: the models that scored at least every task it scored.
  Over just its covered tasks, per-task ranks are recomputed among those models, averaged, and
  the model's position among them is ``comparable_rank`` out of ``num_comparable``. (For a
  complete model the comparable models are the complete ones, so ``comparable_rank`` equals
  ``overall_rank``.) A model with no score at all has neither.
* **Mean normalised score** (``mean_normalised_score``): per task, scores are min-max scaled among
  the same comparable models, ``(score - min) / (max - min)`` (1 = best; 1 for all when every score
  is equal), then averaged over the tasks. It puts differently scaled tasks (classification and
  regression LogME) on one [0, 1] scale and is the "overall score" of the Pareto fronts.

Modalities
----------
A run may mix image models and tasks with text ones; the extract stage skips the pairs whose
modalities differ (no score row). The rules above then apply **within each modality**:

* A model's modality is the models table's ``modality`` column; a task's is its scores rows'
  optional ``modality`` column, or else the modality of the models with an ``ok`` score on it
  (each such score also gives an undeclared model the modality of its task). An ``ok`` score
  pairing two modalities is a ``ValueError``.
* A model's **leaderboard tasks** are the tasks of its modality: completeness, ``num_tasks``,
  ``missing_tasks``, ``overall_rank``, comparable ranks, the mean normalised score and the Pareto
  fronts are computed among the models of one modality, over its tasks. ``overall`` lists one
  modality after the other (in order of their first task), each sorted as above.
* A model of **unknown** modality (it failed to load before its modality was known) gets every
  task as a leaderboard task, has no score, and so no rank; it is listed last. (A task no model of
  known modality scored is a task of unknown modality: only those models see it.)
* A run with **one** modality (or none recorded) is ranked exactly as without modalities: every
  task has that modality and every model every task.

Cost and Pareto fronts
----------------------
The cost columns come from the models table: ``num_params`` and ``feature_dim`` (lower is
cheaper) and the measured extraction ``throughput`` in samples/s (higher is cheaper). For each cost
axis, a complete model is on the front when no other complete model is at least as good on both
the mean normalised score and that cost and strictly better on one. Models without a known cost
are left off that axis's front.

History
-------
``history`` is the list of earlier runs (:class:`PastRun`), newest first. The previous run is the
first entry whose run id differs from the current run's; its overall ranks are recomputed from its
scores with the rules above, and ``changes`` lists every model of either run as ``new``,
``dropped`` or ``kept`` with ``rank_delta = previous_rank - overall_rank`` (positive: moved up).
Ranks of runs with different task sets are compared as they are; ``tasks_added`` and
``tasks_removed`` say when that happened. The previous run's ranks are also taken within each
modality, from its own models table and scores rows where given (``PastRun.models``), else from
the current run's modality of the same model or task name; ``task_set_changed_modalities`` names
the modalities of both runs whose tasks differ, the ones whose rank changes compare other tasks.

Failures
--------
``failures`` lists each failure once. The reduce stage repeats every extract failure as a failed
score row with the same error: the extract stage's row is kept (from the ``status`` table, with
its traceback), and a model that failed to load is one row with an empty task.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

logger = logging.getLogger(__name__)

SCORES_REQUIRED_COLUMNS = ("model", "task", "score", "state")
MODELS_REQUIRED_COLUMNS = ("model",)
STATUS_REQUIRED_COLUMNS = ("model", "task", "state", "error")
OK_STATE = "ok"
#: Model states of the models table that are not failures: extracted (``ok``), or every pair
#: skipped because no task has the model's modality (``skipped``); ``""`` when not recorded.
MODEL_NOT_FAILED_STATES = ("", OK_STATE, "skipped")
FAILED_STATE = "failed"

#: cost column -> "min" (lower is cheaper) or "max" (higher is cheaper)
COST_AXES: dict[str, str] = {"num_params": "min", "feature_dim": "min", "throughput": "max"}
COST_LABELS: dict[str, str] = {
    "num_params": "parameters",
    "feature_dim": "feature dimension",
    "throughput": "extraction throughput (samples/s)",
}

PER_TASK_COLUMNS = (
    "model",
    "model_key",
    "task",
    "task_key",
    "modality",
    "kind",
    "score",
    "rank",
    "num_ranked",
    "state",
    "error",
)
OVERALL_COLUMNS = (
    "model",
    "model_key",
    "hub",
    "modality",
    "tags",
    "complete",
    "tasks_covered",
    "num_tasks",
    "missing_tasks",
    "overall_rank",
    "mean_rank",
    "mean_normalised_score",
    "comparable_rank",
    "num_comparable",
    "num_params",
    "feature_dim",
    "throughput",
    "imagenet_top1",
    "previous_rank",
    "rank_delta",
    "change",
)
PARETO_COLUMNS = (
    "model",
    "hub",
    "modality",
    "overall_rank",
    "mean_normalised_score",
    *COST_AXES,
    *(f"on_front_{axis}" for axis in COST_AXES),
)
CHANGES_COLUMNS = (
    "model",
    "modality",
    "change",
    "previous_rank",
    "overall_rank",
    "rank_delta",
    "previous_model_key",
    "model_key",
)
FAILURES_COLUMNS = ("stage", "model", "model_key", "task", "task_key", "error", "traceback")
RUNS_COLUMNS = ("run_id", "timestamp", "config_hash", "code_version", "current")


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
    """The leaderboard of one run: pandas tables plus the run context (see the module docstring).

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
        }


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------


def _require_columns(table: pd.DataFrame, required: Sequence[str], what: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{what} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise ValueError(
            f"{what} lacks column(s) {missing}; it has {list(table.columns)}. Expected the "
            "schema of docs/design.md (scores: reduce stage, models: extract stage)."
        )


def _text(value: Any) -> str:
    """A cell as text: missing values become ``""``."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if value is pd.NA or value is pd.NaT:
        return ""
    return str(value)


def _modality_text(value: Any) -> str:
    """A modality cell as ``"image"``, ``"text"``, ...: lower case; ``""`` when unknown."""
    return _text(value).strip().lower()


def _column(table: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    if name in table.columns:
        return table[name]
    return pd.Series([default] * len(table), index=table.index, dtype=object)


def _clean_scores(scores: pd.DataFrame, metric: str, what: str) -> pd.DataFrame:
    """One row per (model, task) with model, model_key, task, task_key, kind, score, state, error
    and modality (the task's, from an optional ``modality`` column; ``""`` when unknown).

    ``score`` is float64 and NaN unless ``state == "ok"``; an ``ok`` row with a non-finite score
    becomes ``failed`` (the reduce stage should never write one).
    """
    _require_columns(scores, SCORES_REQUIRED_COLUMNS, what)
    table = scores
    if "metric" in table.columns:
        metrics = {_text(value) for value in table["metric"]}
        table = table[table["metric"].map(_text) == metric]
        blank = int((scores["metric"].map(_text) == "").sum())
        if blank:
            logger.warning("%s: %d rows without a metric name are left out", what, blank)
        if table.empty and len(scores):
            raise ValueError(
                f"{what} has no rows for metric {metric!r}; it has metrics {sorted(metrics)}. "
                "Pass metric=<one of those> to build_leaderboard."
            )
    clean = pd.DataFrame(
        {
            "model": table["model"].map(_text).astype(object),
            "model_key": _column(table, "model_key").map(_text).astype(object),
            "task": table["task"].map(_text).astype(object),
            "task_key": _column(table, "task_key").map(_text).astype(object),
            "kind": _column(table, "kind").map(_text).astype(object),
            "score": pd.to_numeric(table["score"], errors="coerce").astype("float64"),
            "state": table["state"].map(_text).astype(object),
            "error": _column(table, "error").map(_text).astype(object),
            "modality": _column(table, "modality").map(_modality_text).astype(object),
        }
    ).reset_index(drop=True)
    if (clean["model"] == "").any() or (clean["task"] == "").any():
        raise ValueError(f"{what} has rows with an empty model or task name")
    duplicated = clean.duplicated(["model", "task"], keep=False)
    if duplicated.any():
        duplicate_rows = clean.loc[duplicated]
        pairs = sorted(set(zip(duplicate_rows["model"], duplicate_rows["task"], strict=True)))
        raise ValueError(
            f"{what} has more than one {metric!r} row for (model, task) {pairs[:5]}; "
            "keep one row per pair (the reduce stage writes one per run)."
        )
    ok = clean["state"] == OK_STATE
    bad_score = ok & ~np.isfinite(clean["score"].to_numpy())
    if bad_score.any():
        bad_rows = clean.loc[bad_score]
        for model, task in zip(bad_rows["model"], bad_rows["task"], strict=True):
            logger.warning(
                "%s: model %r task %r is 'ok' with a non-finite score", what, model, task
            )
        clean.loc[bad_score, "state"] = "failed"
        clean.loc[bad_score, "error"] = "state 'ok' but the score is missing or not finite"
    clean.loc[clean["state"] != OK_STATE, "score"] = np.nan
    return clean


def _tags_text(value: Any) -> str:
    """Tags as one ``", "``-joined string (from a list, array, tuple, a comma-separated str, or
    the extract stage's JSON object ``{"family": "resnet"}``, which becomes ``family=resnet``)."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            mapping = json.loads(value)
        except ValueError:
            mapping = None
        if isinstance(mapping, dict):
            value = [f"{key}={_text(item)}" for key, item in mapping.items()]
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, (list, tuple, np.ndarray)):
        parts = [_text(item) for item in value]
    else:
        parts = [_text(value)]
    return ", ".join(part.strip() for part in parts if part.strip())


def _model_table(models: pd.DataFrame | None, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per model of either table, indexed by model name, with the cost columns."""
    columns = {
        "model_key": object,
        "hub": object,
        "modality": object,
        "tags": object,
        "num_params": "float64",
        "feature_dim": "float64",
        "throughput": "float64",
        "imagenet_top1": "float64",
        "state": object,
        "error": object,
    }
    if models is None:
        models = pd.DataFrame({"model": pd.Series([], dtype=object)})
    _require_columns(models, MODELS_REQUIRED_COLUMNS, "models table")
    names = models["model"].map(_text)
    if (names == "").any():
        raise ValueError("models table has rows with an empty model name")
    if names.duplicated().any():
        raise ValueError(
            f"models table lists model(s) {sorted(set(names[names.duplicated()]))} more than "
            "once; it must have one row per model"
        )
    table = pd.DataFrame(index=pd.Index(names.to_list(), name="model", dtype=object))
    for name, dtype in columns.items():
        values = _column(models, name)
        if dtype == "float64":
            table[name] = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
        elif name == "tags":
            table[name] = values.map(_tags_text).astype(object).to_numpy()
        elif name == "modality":
            table[name] = values.map(_modality_text).astype(object).to_numpy()
        else:
            table[name] = values.map(_text).astype(object).to_numpy()
    scored_only = [name for name in dict.fromkeys(scores["model"]) if name not in table.index]
    if scored_only:
        logger.info("models %s have scores but no models-table row: costs unknown", scored_only)
        extra = pd.DataFrame(index=pd.Index(scored_only, name="model", dtype=object))
        for name, dtype in columns.items():
            extra[name] = np.nan if dtype == "float64" else ""
        table = pd.concat([table, extra])
    # The model key of the scores wins when the models table has none.
    keys = scores.drop_duplicates("model").set_index("model")["model_key"]
    for name, key in keys.items():
        if key and not table.at[name, "model_key"]:
            table.at[name, "model_key"] = key
    return table


# --------------------------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------------------------


def _ranks_descending(scores: pd.DataFrame) -> pd.DataFrame:
    """Per-column fractional ranks, highest score = 1; NaN stays NaN."""
    return scores.rank(axis=0, method="average", ascending=False)


def _overall_stats(score_matrix: pd.DataFrame) -> pd.DataFrame:
    """Comparable-set ranking of every model (row) over the tasks (columns) of ``score_matrix``.

    ``score_matrix``: float64[models, tasks], NaN where a model has no ok score. Returns, per
    model: ``tasks_covered``, ``complete``, ``mean_rank``, ``mean_normalised_score``,
    ``comparable_rank``, ``num_comparable``, ``overall_rank`` (complete models only).

    One pass per distinct coverage pattern (set of covered tasks). Ranks are multiples of 1/2,
    so equal rank sums are exactly equal floats and tied means compare equal without tolerance.
    """
    values = score_matrix.to_numpy(dtype=np.float64)
    covered = ~np.isnan(values)
    num_models, num_tasks = values.shape
    mean_rank = np.full(num_models, np.nan)
    mean_normalised = np.full(num_models, np.nan)
    comparable_rank = np.full(num_models, np.nan)
    num_comparable = np.full(num_models, np.nan)
    if num_models and num_tasks:
        patterns, pattern_of_model = np.unique(covered, axis=0, return_inverse=True)
        pattern_of_model = pattern_of_model.reshape(-1)
        for index, pattern in enumerate(patterns):
            if not pattern.any():
                continue
            comparable = covered[:, pattern].all(axis=1)
            block = values[np.ix_(comparable, pattern)]  # float64[comparable, pattern tasks]
            block_mean_rank = rankdata(-block, method="average", axis=0).mean(axis=1)
            low, high = block.min(axis=0), block.max(axis=0)
            span = high - low
            normalised = np.where(span > 0, (block - low) / np.where(span > 0, span, 1.0), 1.0)
            block_comparable_rank = rankdata(block_mean_rank, method="average")
            members = pattern_of_model == index
            in_block = members[comparable]
            mean_rank[members] = block_mean_rank[in_block]
            mean_normalised[members] = normalised.mean(axis=1)[in_block]
            comparable_rank[members] = block_comparable_rank[in_block]
            num_comparable[members] = comparable.sum()
    complete = covered.all(axis=1) & (num_tasks > 0)
    return pd.DataFrame(
        {
            "tasks_covered": covered.sum(axis=1).astype("int64"),
            "complete": complete,
            "mean_rank": mean_rank,
            "mean_normalised_score": mean_normalised,
            "comparable_rank": comparable_rank,
            "num_comparable": pd.array(
                [None if np.isnan(n) else int(n) for n in num_comparable], dtype="Int64"
            ),
            "overall_rank": np.where(complete, comparable_rank, np.nan),
        },
        index=score_matrix.index,
    )


def _score_matrix(clean: pd.DataFrame, models: Sequence[str], tasks: Sequence[str]) -> pd.DataFrame:
    ok = clean[clean["state"] == OK_STATE]
    matrix = ok.pivot(index="model", columns="task", values="score")
    return matrix.reindex(index=list(models), columns=list(tasks)).astype("float64")


def _scored_tasks(clean: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(tasks with at least one ok score, tasks without), each in first-appearance order."""
    all_tasks = list(dict.fromkeys(clean["task"]))
    scored = set(clean.loc[clean["state"] == OK_STATE, "task"])
    return [t for t in all_tasks if t in scored], [t for t in all_tasks if t not in scored]


# --------------------------------------------------------------------------------------------
# Modalities
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Modalities:
    """Which modality each model and task has (``""``: unknown) and the run's known ones."""

    of_model: dict[str, str]
    of_task: dict[str, str]
    known: tuple[str, ...]

    def blocks(
        self, models: Sequence[str], tasks: Sequence[str]
    ) -> list[tuple[str, list[str], list[str]]]:
        """``(modality, its models, their leaderboard tasks)`` per modality in ``known`` order,
        then the models of unknown modality, which get every task. With one known modality (or
        none) every task has it (or none), so every model gets every task, as before."""
        blocks = []
        for modality in (*self.known, ""):
            members = [model for model in models if self.of_model.get(model, "") == modality]
            if not members:
                continue
            if modality == "":
                group_tasks = list(tasks)
            else:
                group_tasks = [task for task in tasks if self.of_task.get(task, "") == modality]
            blocks.append((modality, members, group_tasks))
        return blocks


def _resolve_modalities(
    clean: pd.DataFrame,
    declared: Mapping[str, str],
    what: str,
    model_hints: Mapping[str, str] | None = None,
    task_hints: Mapping[str, str] | None = None,
) -> _Modalities:
    """The modality of every model and task of ``clean`` (and of the ``declared`` models).

    A model's modality is the one the models table declares (``declared``: model -> modality or
    ``""``); a task's is the one its scores rows carry (``clean["modality"]``). Each ``ok`` score
    pairs a model and a task of the same modality, so either side tells the other (repeated
    until nothing changes). ``model_hints``/``task_hints`` fill models and tasks that are still
    unknown before that (a previous run's, from the current run). When exactly one modality is
    known, every task and every model with an ``ok`` score has it; a model without any (it failed
    to load before its modality was known) stays unknown. Raises ``ValueError`` when an ``ok``
    score pairs two modalities or a task's rows disagree.
    """
    models = list(dict.fromkeys([*declared, *clean["model"]]))
    tasks = list(dict.fromkeys(clean["task"]))
    of_model = {model: declared.get(model, "") for model in models}
    of_task = dict.fromkeys(tasks, "")
    for task, modality in zip(clean["task"], clean["modality"], strict=True):
        if modality and of_task[task] not in ("", modality):
            raise ValueError(
                f"{what}: the rows of task {task!r} carry modalities {of_task[task]!r} and "
                f"{modality!r}; a task has one modality (its inputs')"
            )
        of_task[task] = modality or of_task[task]
    for hints, target in ((model_hints, of_model), (task_hints, of_task)):
        for name, modality in (hints or {}).items():
            if name in target and not target[name] and modality:
                target[name] = modality
    ok_pairs = list(
        zip(
            clean.loc[clean["state"] == OK_STATE, "model"],
            clean.loc[clean["state"] == OK_STATE, "task"],
            strict=True,
        )
    )
    changed = True
    while changed:
        changed = False
        for model, task in ok_pairs:
            model_modality, task_modality = of_model[model], of_task[task]
            if model_modality and task_modality:
                if model_modality != task_modality:
                    raise ValueError(
                        f"{what}: model {model!r} ({model_modality}) has an ok score on task "
                        f"{task!r}, which is a {task_modality} task (from its other models or its "
                        "rows' modality); a model only scores tasks of its own modality. Check "
                        "the models table's modality column."
                    )
            elif model_modality:
                of_task[task] = model_modality
                changed = True
            elif task_modality:
                of_model[model] = task_modality
                changed = True
    known = tuple(
        dict.fromkeys(
            m for m in (*(of_task[t] for t in tasks), *(of_model[m] for m in models)) if m
        )
    )
    if len(known) == 1:
        (only,) = known
        of_task = dict.fromkeys(of_task, only)
        scored = {model for model, _ in ok_pairs}
        of_model = {
            m: only if (modality or m in scored) else "" for m, modality in of_model.items()
        }
    return _Modalities(of_model=of_model, of_task=of_task, known=known)


def _declared_modalities(models: pd.DataFrame | None) -> dict[str, str]:
    """model -> modality of a models table (``""`` where unknown; ``{}`` without the column)."""
    if models is None or "modality" not in models.columns or "model" not in models.columns:
        return {}
    return dict(
        zip(models["model"].map(_text), models["modality"].map(_modality_text), strict=True)
    )


def _grouped_stats(
    matrix: pd.DataFrame, blocks: Sequence[tuple[str, list[str], list[str]]]
) -> pd.DataFrame:
    """:func:`_overall_stats` of each modality block of ``matrix`` (float64[models, tasks]), with
    ``num_tasks`` and ``missing_tasks`` (the block's tasks the model has no ok score on)."""
    parts = []
    for _, members, group_tasks in blocks:
        block = matrix.loc[members, group_tasks]
        stats = _overall_stats(block)
        stats["num_tasks"] = len(group_tasks)
        stats["missing_tasks"] = [
            ", ".join(task for task, flag in zip(group_tasks, row, strict=True) if not flag)
            for row in block.notna().to_numpy()
        ]
        parts.append(stats)
    if not parts:
        stats = _overall_stats(matrix)
        stats["num_tasks"] = matrix.shape[1]
        stats["missing_tasks"] = pd.Series([], dtype=object)
        return stats
    return pd.concat(parts).reindex(matrix.index)


def _group_tasks(tasks: Sequence[str], modalities: _Modalities) -> dict[str, tuple[str, ...]]:
    """modality -> its tasks (``{"": tasks}`` when no modality is known)."""
    if not modalities.known:
        return {"": tuple(tasks)}
    return {
        modality: tuple(task for task in tasks if modalities.of_task.get(task) == modality)
        for modality in modalities.known
    }


def _previous_ranks(
    previous: PastRun, metric: str, current: _Modalities
) -> tuple[pd.DataFrame, list[str], _Modalities]:
    """(overall stats of the previous run indexed by model, with model_key and modality; its
    scored tasks; its modalities).

    Its modalities come from its models table and scores rows where they say; models and tasks
    they say nothing about (a run from before modalities were recorded) take the modality of the
    same name in the current run, unless that contradicts the previous run's scores.
    """
    what = f"scores of previous run {previous.record.run_id}"
    clean = _clean_scores(previous.scores, metric, what)
    tasks, _ = _scored_tasks(clean)
    models = list(dict.fromkeys(clean["model"]))
    declared = _declared_modalities(previous.models)
    try:
        modalities = _resolve_modalities(
            clean, declared, what, model_hints=current.of_model, task_hints=current.of_task
        )
    except ValueError as exc:
        logger.warning("%s; ranking the %s without the current run's modalities", exc, what)
        modalities = _resolve_modalities(clean, declared, what)
    matrix = _score_matrix(clean, models, tasks)
    stats = _grouped_stats(matrix, modalities.blocks(models, tasks))
    stats["model_key"] = clean.drop_duplicates("model").set_index("model")["model_key"]
    stats["modality"] = [modalities.of_model.get(model, "") for model in stats.index]
    return stats, tasks, modalities


# --------------------------------------------------------------------------------------------
# Pareto fronts
# --------------------------------------------------------------------------------------------


def pareto_front(score: Sequence[float], cost: Sequence[float], cost_direction: str = "min"):
    """Which points no other point dominates (higher score, cheaper cost).

    ``score``, ``cost``: float[n]; ``cost_direction`` ``"min"`` (lower cost is better) or ``"max"``
    (higher is better, e.g. throughput). Point ``j`` dominates ``i`` when it is at least as good on
    both and strictly better on one, so exact duplicates are both on the front. Points with a
    non-finite score or cost are never on the front. Returns ``bool[n]``. O(n log n): sort by
    cost, then a point is on the front iff its score beats every strictly cheaper point's and is
    the best among equally cheap ones.
    """
    if cost_direction not in ("min", "max"):
        raise ValueError(f"cost_direction must be 'min' or 'max', got {cost_direction!r}")
    score_values = np.asarray(score, dtype=np.float64)
    cost_values = np.asarray(cost, dtype=np.float64)
    if score_values.shape != cost_values.shape or score_values.ndim != 1:
        raise ValueError(
            f"score and cost must be 1-D of the same length, got {score_values.shape} and "
            f"{cost_values.shape}"
        )
    on_front = np.zeros(score_values.shape, dtype=bool)
    valid = np.flatnonzero(np.isfinite(score_values) & np.isfinite(cost_values))
    if valid.size == 0:
        return on_front
    cheapness = cost_values[valid] if cost_direction == "min" else -cost_values[valid]
    order = valid[np.argsort(cheapness, kind="stable")]
    cheapness_sorted = np.sort(cheapness, kind="stable")
    best_cheaper = -np.inf  # best score among strictly cheaper points
    start = 0
    while start < order.size:
        stop = start
        while stop < order.size and cheapness_sorted[stop] == cheapness_sorted[start]:
            stop += 1
        group = order[start:stop]
        group_best = score_values[group].max()
        if group_best > best_cheaper:
            on_front[group[score_values[group] == group_best]] = True
            best_cheaper = group_best
        start = stop
    return on_front


def _pareto_table(overall: pd.DataFrame) -> pd.DataFrame:
    """The complete models of ``overall`` with their fronts, computed within each modality."""
    complete = overall[overall["complete"]]
    table = complete[
        ["model", "hub", "modality", "overall_rank", "mean_normalised_score", *COST_AXES]
    ].copy()
    scores = table["mean_normalised_score"].to_numpy(dtype=np.float64)
    for axis, direction in COST_AXES.items():
        costs = table[axis].to_numpy(dtype=np.float64)
        on_front = np.zeros(len(table), dtype=bool)
        for modality in dict.fromkeys(table["modality"]):
            members = (table["modality"] == modality).to_numpy()
            on_front[members] = pareto_front(scores[members], costs[members], direction)
        table[f"on_front_{axis}"] = on_front
    return table.reset_index(drop=True)[list(PARETO_COLUMNS)]


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _resolve_run(run: RunRecord | Mapping | None, scores: pd.DataFrame) -> RunRecord | None:
    if isinstance(run, Mapping):
        return RunRecord.from_dict(run)
    if run is not None:
        return run
    if "run_id" in scores.columns:
        run_ids = {_text(value) for value in scores["run_id"]} - {""}
        if len(run_ids) == 1:
            return RunRecord(run_id=run_ids.pop())
    return None


def _as_past_run(entry: PastRun | tuple) -> PastRun:
    if isinstance(entry, PastRun):
        return entry
    if isinstance(entry, tuple) and len(entry) in (2, 3):
        record, scores, *models = entry
        if isinstance(record, Mapping):
            record = RunRecord.from_dict(record)
        return PastRun(record=record, scores=scores, models=models[0] if models else None)
    raise ValueError(
        "history entries must be PastRun(record, scores[, models]) or (RunRecord, scores[, "
        f"models]) tuples, got {type(entry).__name__}"
    )


def _per_task_table(
    clean: pd.DataFrame,
    matrix: pd.DataFrame,
    task_ranks: pd.DataFrame,
    blocks: Sequence[tuple[str, list[str], list[str]]],
    task_modality: Mapping[str, str],
) -> pd.DataFrame:
    """Long table of every (model, task) cell of each block's models x tasks: the pair's row of
    ``clean`` (``state`` ``missing`` when there is none), its score and rank from ``matrix``
    (float64[models, tasks]) and ``task_ranks``; sorted by task (in matrix order), rank, model."""
    models, tasks = list(matrix.index), list(matrix.columns)
    model_index = {model: i for i, model in enumerate(models)}
    task_index = {task: j for j, task in enumerate(tasks)}
    model_parts, task_parts = [], []
    for _, members, group_tasks in blocks:
        rows = np.array([model_index[m] for m in members], dtype=np.int64)
        columns = np.array([task_index[t] for t in group_tasks], dtype=np.int64)
        model_parts.append(np.tile(rows, len(columns)))
        task_parts.append(np.repeat(columns, len(rows)))
    model_position = np.concatenate(model_parts) if model_parts else np.zeros(0, np.int64)
    task_position = np.concatenate(task_parts) if task_parts else np.zeros(0, np.int64)
    grid = pd.DataFrame(
        {
            "model": pd.Series([models[i] for i in model_position], dtype=object),
            "task": pd.Series([tasks[j] for j in task_position], dtype=object),
        }
    )
    pairs = clean[["model", "task", "model_key", "state", "error"]]
    table = grid.merge(pairs, on=["model", "task"], how="left", validate="one_to_one")
    task_info = clean.drop_duplicates("task").set_index("task")
    table["task_key"] = table["task"].map(task_info["task_key"])
    table["modality"] = table["task"].map(lambda task: task_modality.get(task, ""))
    table["kind"] = table["task"].map(task_info["kind"])
    table["score"] = matrix.to_numpy()[model_position, task_position]
    table["rank"] = task_ranks.to_numpy()[model_position, task_position]
    table["num_ranked"] = matrix.notna().sum(axis=0).to_numpy()[task_position].astype("int64")
    table["state"] = table["state"].fillna("missing")
    table["model_key"] = table["model_key"].fillna("")
    table["error"] = table["error"].fillna("")
    table["task_order"] = task_position
    table = table.sort_values(
        ["task_order", "rank", "model"], na_position="last", kind="stable"
    ).reset_index(drop=True)
    table = table[list(PER_TASK_COLUMNS)]
    for column in ("model", "model_key", "task", "task_key", "modality", "kind", "state", "error"):
        table[column] = table[column].astype(object)
    table["score"] = table["score"].astype("float64")
    table["rank"] = table["rank"].astype("float64")
    return table


def build_leaderboard(
    scores: pd.DataFrame,
    models: pd.DataFrame | None,
    history: Sequence[PastRun] | None = None,
    *,
    run: RunRecord | Mapping | None = None,
    metric: str = "logme",
    tasks: Sequence[str] | None = None,
    status: pd.DataFrame | None = None,
) -> Leaderboard:
    """Rank the models of one run (rules in the module docstring).

    ``scores``: the reduce stage's scores table (one row per model and task; rows of other
    metrics are ignored; an optional ``modality`` column gives each row's task modality).
    ``models``: the extract stage's models table (cost columns; ``modality``; may carry ``tags``)
    or None. ``history``: earlier runs, newest first (``PastRun`` or ``(RunRecord, scores)`` /
    ``(RunRecord, scores, models)`` tuples). ``run``: the current run's record; by default the
    scores' single ``run_id``. ``tasks``: restrict the leaderboard to these task names.
    ``status``: the extract stage's status table (``runs/{run_id}/status.parquet``), so that a
    pair that failed in the extract stage is listed once, as an extract failure with its
    traceback (without it, the models table tells load failures apart).
    Raises ``ValueError`` for missing columns, duplicate (model, task) rows, unknown tasks, an
    ok score pairing a model and a task of different modalities.
    """
    clean = _clean_scores(scores, metric, "scores table")
    if tasks is not None:
        unknown = sorted(set(tasks) - set(clean["task"]))
        if unknown:
            raise ValueError(
                f"tasks {unknown} are not in the scores table; it has {sorted(set(clean['task']))}"
            )
        clean = clean[clean["task"].isin(list(tasks))].reset_index(drop=True)
    run_record = _resolve_run(run, scores)
    model_info = _model_table(models, clean)
    model_names = list(model_info.index)
    scored_tasks, unscored_tasks = _scored_tasks(clean)
    modalities = _resolve_modalities(
        clean, dict(model_info["modality"].items()), "scores and models tables"
    )
    model_info["modality"] = [modalities.of_model.get(model, "") for model in model_names]
    blocks = modalities.blocks(model_names, scored_tasks)

    # per_task: every (model, task) pair of each model's leaderboard tasks, missing pairs too.
    matrix = _score_matrix(clean, model_names, scored_tasks)
    per_task = _per_task_table(clean, matrix, _ranks_descending(matrix), blocks, modalities.of_task)

    # overall: ranked within each modality
    overall = model_info.join(_grouped_stats(matrix, blocks))

    # history
    history_runs = [_as_past_run(entry) for entry in (history or ())]
    current_id = run_record.run_id if run_record is not None else None
    previous = next((past for past in history_runs if past.record.run_id != current_id), None)
    changes = _typed_frame([], CHANGES_COLUMNS)
    overall["previous_rank"] = np.nan
    overall["change"] = ""
    tasks_added: tuple[str, ...] = ()
    tasks_removed: tuple[str, ...] = ()
    previous_modalities: tuple[str, ...] = ()
    task_set_changed: tuple[str, ...] = ()
    if previous is not None:
        previous_stats, previous_tasks, previous_modality = _previous_ranks(
            previous, metric, modalities
        )
        previous_modalities = previous_modality.known
        tasks_added = tuple(t for t in scored_tasks if t not in previous_tasks)
        tasks_removed = tuple(t for t in previous_tasks if t not in scored_tasks)
        now_groups = _group_tasks(scored_tasks, modalities)
        then_groups = _group_tasks(previous_tasks, previous_modality)
        task_set_changed = tuple(
            modality
            for modality, group in now_groups.items()
            if modality in then_groups and set(group) != set(then_groups[modality])
        )
        kept = overall.index.isin(previous_stats.index)
        overall["previous_rank"] = previous_stats["overall_rank"].reindex(overall.index)
        overall["change"] = np.where(kept, "kept", "new")
        change_rows = [
            {
                "model": model,
                "modality": overall.at[model, "modality"],
                "change": overall.at[model, "change"],
                "previous_rank": overall.at[model, "previous_rank"],
                "overall_rank": overall.at[model, "overall_rank"],
                "previous_model_key": (
                    previous_stats.at[model, "model_key"] if model in previous_stats.index else ""
                ),
                "model_key": overall.at[model, "model_key"],
            }
            for model in overall.index
        ]
        change_rows += [
            {
                "model": model,
                "modality": previous_stats.at[model, "modality"],
                "change": "dropped",
                "previous_rank": previous_stats.at[model, "overall_rank"],
                "overall_rank": np.nan,
                "previous_model_key": previous_stats.at[model, "model_key"],
                "model_key": "",
            }
            for model in previous_stats.index
            if model not in overall.index
        ]
        changes = pd.DataFrame(change_rows)
        changes["rank_delta"] = changes["previous_rank"] - changes["overall_rank"]
        changes = _typed_frame(changes, CHANGES_COLUMNS)
    overall["rank_delta"] = overall["previous_rank"] - overall["overall_rank"]
    overall = overall.reset_index().rename(columns={"index": "model"})
    overall["complete"] = overall["complete"].astype(bool)
    overall = _sort_overall(overall, modalities.known)[list(OVERALL_COLUMNS)]

    run_rows = ([{**run_record.to_dict(), "current": True}] if run_record is not None else []) + [
        {**past.record.to_dict(), "current": False} for past in history_runs
    ]
    runs = pd.DataFrame(run_rows, columns=list(RUNS_COLUMNS))
    runs["current"] = runs["current"].astype(bool)

    return Leaderboard(
        metric=metric,
        tasks=tuple(scored_tasks),
        per_task=per_task,
        overall=overall,
        pareto=_pareto_table(overall),
        changes=changes,
        failures=_failures_table(clean, model_info, status, tasks),
        runs=runs,
        run=run_record,
        previous_run=previous.record if previous is not None else None,
        unscored_tasks=tuple(unscored_tasks),
        tasks_added=tasks_added,
        tasks_removed=tasks_removed,
        modalities=modalities.known,
        task_modalities=tuple(modalities.of_task.get(task, "") for task in scored_tasks),
        previous_modalities=previous_modalities,
        task_set_changed_modalities=task_set_changed,
    )


def _failures_table(
    clean: pd.DataFrame,
    model_info: pd.DataFrame,
    status: pd.DataFrame | None,
    tasks: Sequence[str] | None,
) -> pd.DataFrame:
    """Each failure once: the reduce stage's failed rows that did not fail in the extract stage,
    then the extract stage's failures.

    The reduce stage repeats each extract failure as a failed score row with the same error; the
    extract stage's row wins (it has the traceback). With ``status`` (the extract status table),
    its failed pairs are the extract failures; a model whose every failed pair failed with the
    error the models table gives it (it failed to load) is one row with an empty task. Without
    ``status``, a model the models table marks failed is one row, and a score row repeating the
    error the models table gives its model is an extract failure.
    """
    failed_models = model_info[~model_info["state"].isin(MODEL_NOT_FAILED_STATES)]
    model_error = {
        model: error for model, error in model_info["error"].items() if error
    }  # the first failed pair's error, also for a model that loaded
    extract_rows: list[dict[str, str]] = []
    covered: set[tuple[str, str]] = set()  # (model, task) failed in the extract stage
    model_rows_done: set[str] = set()
    if status is not None:
        _require_columns(status, STATUS_REQUIRED_COLUMNS, "status table")
        failed = status[status["state"].map(_text) == FAILED_STATE]
        if tasks is not None:
            failed = failed[failed["task"].map(_text).isin(list(tasks))]
        failed = pd.DataFrame(
            {
                "model": failed["model"].map(_text),
                "model_key": _column(failed, "model_key").map(_text),
                "task": failed["task"].map(_text),
                "task_key": _column(failed, "task_key").map(_text),
                "error": failed["error"].map(_text),
                "traceback": _column(failed, "traceback").map(_text),
            }
        ).drop_duplicates(["model", "task"])
        for model, pairs in failed.groupby("model", sort=False):
            covered |= {(model, task) for task in pairs["task"]}
            load_error = model_error.get(model, "") if model in failed_models.index else ""
            if load_error and (pairs["error"] == load_error).all():
                first = pairs.iloc[0]
                extract_rows.append(
                    {
                        "stage": "extract",
                        "model": model,
                        "model_key": model_info.at[model, "model_key"] or first["model_key"],
                        "task": "",
                        "task_key": "",
                        "error": load_error,
                        "traceback": first["traceback"],
                    }
                )
                model_rows_done.add(model)
                continue
            extract_rows += [{"stage": "extract", **row} for row in pairs.to_dict("records")]
            if model in failed_models.index and load_error in set(pairs["error"]):
                model_rows_done.add(model)
    for model in failed_models.index:
        if model not in model_rows_done:
            extract_rows.append(
                {
                    "stage": "extract",
                    "model": model,
                    "model_key": model_info.at[model, "model_key"],
                    "task": "",
                    "task_key": "",
                    "error": model_info.at[model, "error"],
                    "traceback": "",
                }
            )
    failed_pairs = clean[clean["state"] != OK_STATE]
    repeated = np.array(
        [
            (model, task) in covered
            or (status is None and error != "" and model_error.get(model) == error)
            for model, task, error in zip(
                failed_pairs["model"], failed_pairs["task"], failed_pairs["error"], strict=True
            )
        ],
        dtype=bool,
    )
    # Without the status table, a repeated pair of a model that loaded is still an extract
    # failure of that task: keep it, with its stage.
    relabelled = failed_pairs[repeated & ~failed_pairs["model"].isin(failed_models.index)]
    reduce_pairs = failed_pairs[~repeated]
    frames = [
        pd.DataFrame(
            {
                "stage": "reduce",
                "model": reduce_pairs["model"],
                "model_key": reduce_pairs["model_key"],
                "task": reduce_pairs["task"],
                "task_key": reduce_pairs["task_key"],
                "error": reduce_pairs["error"],
                "traceback": "",
            },
            columns=list(FAILURES_COLUMNS),
        )
    ]
    if status is None and not relabelled.empty:
        frames.append(
            relabelled[["model", "model_key", "task", "task_key", "error"]].assign(
                stage="extract", traceback=""
            )
        )
    if extract_rows:
        frames.append(pd.DataFrame(extract_rows))
    failures = pd.concat(frames, ignore_index=True)[list(FAILURES_COLUMNS)]
    return failures.astype(object).reset_index(drop=True)


_FLOAT_COLUMNS = frozenset(
    {
        "score",
        "rank",
        "overall_rank",
        "mean_rank",
        "mean_normalised_score",
        "comparable_rank",
        "num_params",
        "feature_dim",
        "throughput",
        "imagenet_top1",
        "previous_rank",
        "rank_delta",
    }
)


def _typed_frame(rows: pd.DataFrame | list, columns: Sequence[str]) -> pd.DataFrame:
    """``rows`` with exactly ``columns``: rank/score/cost columns float64, the rest text
    (object), so an empty table has the same Parquet schema as a full one."""
    frame = pd.DataFrame(rows, columns=list(columns))
    for column in columns:
        frame[column] = frame[column].astype("float64" if column in _FLOAT_COLUMNS else object)
    return frame


def _sort_overall(overall: pd.DataFrame, modalities: Sequence[str] = ()) -> pd.DataFrame:
    """Complete models by overall rank, then incomplete ones by coverage and comparable rank;
    with several ``modalities``, one modality after the other (in that order, unknown last)."""
    group = (
        overall["modality"].map({m: i for i, m in enumerate(modalities)}).fillna(len(modalities))
        if len(modalities) > 1
        else 0
    )
    ordered = overall.assign(
        _group=group,
        _incomplete=~overall["complete"].astype(bool),
        _covered=-overall["tasks_covered"],
        _score=-overall["mean_normalised_score"],
    ).sort_values(
        ["_group", "_incomplete", "overall_rank", "_covered", "comparable_rank", "_score", "model"],
        na_position="last",
        kind="stable",
    )
    return ordered.drop(columns=["_group", "_incomplete", "_covered", "_score"]).reset_index(
        drop=True
    )


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------

_COUNT_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBgGtT]?)\s*$")
_COUNT_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(text: str | float) -> float:
    """``"50M"`` -> 5e7, ``"1.5B"`` -> 1.5e9, ``"300k"``, ``"2e6"``, ``12`` -> float.

    Suffixes (case-insensitive): k = 1e3, M = 1e6, B or G = 1e9, T = 1e12. Raises ``ValueError``
    for anything else or a negative count.
    """
    if isinstance(text, (int, float, np.integer, np.floating)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _COUNT_PATTERN.match(str(text))
        if match is None:
            raise ValueError(
                f"cannot read {text!r} as a count: use a number with an optional suffix "
                "k, M, B (or G), T, e.g. '50M' or '1.5B'"
            )
        value = float(match.group(1)) * _COUNT_SUFFIXES[match.group(2).lower()]
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"count {text!r} must be a finite number >= 0")
    return value


def format_count(value: float) -> str:
    """``5.72e6`` -> ``"5.72M"``; three significant digits; ``""`` for a missing value."""
    if value is None or not np.isfinite(value):
        return ""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def filter_models(
    leaderboard: Leaderboard,
    *,
    max_params: float | str | None = None,
    max_feature_dim: float | str | None = None,
    min_throughput: float | str | None = None,
    hub: str | None = None,
    tags: Iterable[str] = (),
    modality: str | None = None,
) -> Leaderboard:
    """The leaderboard restricted to models within a budget (``--max-params 50M``).

    A model is kept when its known cost meets every given bound (a model with an unknown cost is
    dropped by a bound on that cost), its hub equals ``hub``, it carries all ``tags``, and it has
    ``modality`` (``""``: unknown). Ranks
    stay those of the full leaderboard, so the first row is the best model within the budget and
    its rank says where it stands overall; the Pareto fronts are recomputed among the kept models.
    Every table is filtered to the kept models (``dropped`` changes and extract failures of other
    models go).
    """
    overall = leaderboard.overall
    keep = pd.Series(True, index=overall.index)
    filters = list(leaderboard.filters)
    bounds = (
        ("num_params", max_params, "≤", "max_params"),
        ("feature_dim", max_feature_dim, "≤", "max_feature_dim"),
        ("throughput", min_throughput, "≥", "min_throughput"),
    )
    for column, bound, operator, name in bounds:
        if bound is None:
            continue
        limit = parse_count(bound)
        values = overall[column].astype("float64")
        keep &= (values <= limit) if operator == "≤" else (values >= limit)
        filters.append(f"{name} {operator} {format_count(limit)}")
    if hub is not None:
        keep &= overall["hub"] == hub
        filters.append(f"hub == {hub}")
    wanted_tags = [tag.strip() for tag in tags if tag.strip()]
    if wanted_tags:
        carried = overall["tags"].map(lambda text: set(_text(text).split(", ")) - {""})
        keep &= carried.map(lambda found: set(wanted_tags) <= found)
        filters.append("tags include " + ", ".join(wanted_tags))
    if modality is not None:
        keep &= overall["modality"] == _modality_text(modality)
        filters.append(f"modality == {_modality_text(modality) or 'unknown'}")
    kept_models = set(overall.loc[keep, "model"])
    if not kept_models:
        logger.warning("no model passes the filters %s", filters)

    def only_kept(table: pd.DataFrame) -> pd.DataFrame:
        return table[table["model"].isin(kept_models)].reset_index(drop=True)

    kept_overall = only_kept(overall)
    return replace(
        leaderboard,
        per_task=only_kept(leaderboard.per_task),
        overall=kept_overall,
        pareto=_pareto_table(kept_overall),
        changes=only_kept(leaderboard.changes),
        failures=only_kept(leaderboard.failures),
        filters=tuple(filters),
    )


def per_task_wide(
    leaderboard: Leaderboard, value: str = "score", modality: str | None = None
) -> pd.DataFrame:
    """``per_task`` pivoted to models x tasks (``value``: ``"score"`` or ``"rank"``), rows in
    the order of ``overall``; with ``modality``, only its models and their leaderboard tasks
    (NaN elsewhere: a task not of a model's modality, or a pair without an ok score)."""
    if value not in ("score", "rank"):
        raise ValueError(f"value must be 'score' or 'rank', got {value!r}")
    models, tasks = leaderboard.overall["model"], leaderboard.tasks
    if modality is not None:
        modality = _modality_text(modality)
        models = models[leaderboard.overall["modality"] == modality]
        tasks = leaderboard.tasks_of(modality)
    wide = leaderboard.per_task.pivot(index="model", columns="task", values=value)
    return wide.reindex(index=list(models), columns=list(tasks))


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------

_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]|<>#])")


def markdown_text(value: Any, max_chars: int | None = None) -> str:
    """A hub-supplied string made inert in Markdown: one line, ``\\``-escaped ``\\ ` * [ ] | < > #``
    (no tables broken, no links, no raw HTML), optionally cut to ``max_chars``."""
    text = " ".join(_text(value).split())
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _format_rank(value: Any) -> str:
    if value is None or pd.isna(value):
        return ""
    value = float(value)
    return f"{value:.0f}" if value.is_integer() else f"{value:.1f}"


def _format_float(value: Any, digits: int = 4) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{float(value):.{digits}f}"


def _format_change(change: str, rank_delta: Any) -> str:
    if change == "new":
        return "new"
    if change != "kept" or rank_delta is None or pd.isna(rank_delta):
        return ""
    delta = float(rank_delta)
    if delta == 0:
        return "="
    text = _format_rank(abs(delta))
    return f"▲{text}" if delta > 0 else f"▼{text}"


def _format_coverage_note(row: Mapping[str, Any]) -> str:
    """How an incomplete model is ranked (``""`` for a complete one)."""
    if row["complete"]:
        return ""
    if pd.isna(row["comparable_rank"]):
        return "no scores"
    return (
        f"incomplete: #{_format_rank(row['comparable_rank'])} of "
        f"{int(row['num_comparable'])} comparable"
    )


def _format_coverage(row: Mapping[str, Any]) -> str:
    covered = f"{int(row['tasks_covered'])}/{int(row['num_tasks'])}"
    note = _format_coverage_note(row)
    return f"{covered}, {note}" if note else covered


def format_cost(axis: str, value: Any) -> str:
    """A cost value for display: ``5.72M`` parameters, ``768`` dims, ``1200/s`` throughput."""
    if value is None or pd.isna(value) or not np.isfinite(float(value)):
        return ""
    if axis == "num_params":
        return format_count(float(value))
    if axis == "throughput":
        return f"{float(value):.0f}/s" if float(value) >= 10 else f"{float(value):.2g}/s"
    return f"{float(value):.0f}"


def _markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _display_groups(leaderboard: Leaderboard) -> list[tuple[str, pd.DataFrame, tuple[str, ...]]]:
    """``(modality, its rows of overall, its leaderboard tasks)`` as rendered: the whole table
    for a run with one modality, else each modality that has models, unknown last."""
    if not leaderboard.multimodal:
        modality = leaderboard.modalities[0] if leaderboard.modalities else ""
        return [(modality, leaderboard.overall, leaderboard.tasks)]
    groups = []
    for modality in (*leaderboard.modalities, ""):
        rows = leaderboard.overall[leaderboard.overall["modality"] == modality]
        if not rows.empty:
            groups.append((modality, rows, leaderboard.tasks_of(modality)))
    return groups


def _modality_title(modality: str) -> str:
    """``"Image models"``; ``"Models of unknown modality"`` for ``""`` (raw text: escape it)."""
    return (
        f"{modality[:1].upper()}{modality[1:]} models"
        if modality
        else ("Models of unknown modality")
    )


def _group_summary(modality: str, rows: pd.DataFrame, tasks: Sequence[str]) -> str:
    """``"3 models; 2 tasks: pets, flowers"`` (raw text: escape it)."""
    models = f"{len(rows)} model{'s' if len(rows) != 1 else ''}"
    if not modality:
        return f"{models}, failed before reporting a modality; every task counts"
    if not tasks:
        return f"{models}; no {modality} task in this run"
    return f"{models}; {len(tasks)} task{'s' if len(tasks) != 1 else ''}: {', '.join(tasks)}"


def _pareto_groups(
    leaderboard: Leaderboard, groups: Sequence[tuple[str, pd.DataFrame, tuple[str, ...]]]
) -> list[tuple[str, pd.DataFrame]]:
    """``(modality, its pareto rows)`` of each displayed modality that has tasks (unknown only
    when one of its models is complete)."""
    pareto = leaderboard.pareto
    return [
        (modality, pareto[pareto["modality"] == modality])
        for modality, _, tasks in groups
        if tasks and (modality or (pareto["modality"] == "").any())
    ]


def _tasks_count(leaderboard: Leaderboard) -> str:
    """``"4 tasks"``, or ``"4 tasks (image: 2, text: 2)"`` with several modalities."""
    text = f"{len(leaderboard.tasks)} tasks"
    if leaderboard.multimodal:
        counts = {m: leaderboard.task_modalities.count(m) for m in leaderboard.modalities}
        if "" in leaderboard.task_modalities:
            counts["unknown"] = leaderboard.task_modalities.count("")
        text += " (" + ", ".join(f"{m}: {n}" for m, n in counts.items() if n) + ")"
    return text


def _task_set_change(leaderboard: Leaderboard) -> str | None:
    """What changed in the task set since the previous run, and which ranks that affects; None
    when nothing changed or both runs had one modality (the renderers keep their wording)."""
    if not (leaderboard.tasks_added or leaderboard.tasks_removed):
        return None
    if not (leaderboard.multimodal or len(leaderboard.previous_modalities) > 1):
        return None
    added = ", ".join(leaderboard.tasks_added) or "none"
    removed = ", ".join(leaderboard.tasks_removed) or "none"
    changed = leaderboard.task_set_changed_modalities
    if changed:
        effect = "ranks of " + ", ".join(f"{m or 'unknown-modality'} models" for m in changed)
        effect += " compare different tasks"
    else:
        effect = "ranks within each modality compare the same tasks"
    return f"Task set changed: added {added}; removed {removed} ({effect})"


def _run_summary(leaderboard: Leaderboard) -> list[str]:
    lines = []
    if leaderboard.run is not None:
        run = leaderboard.run
        details = [f"run `{markdown_text(run.run_id)}`"]
        if run.timestamp:
            details.append(f"at {markdown_text(run.timestamp)}")
        if run.config_hash:
            details.append(f"config {markdown_text(run.config_hash)}")
        if run.code_version:
            details.append(f"code {markdown_text(run.code_version)}")
        lines.append("Leaderboard of " + ", ".join(details) + ".")
    complete = int(leaderboard.overall["complete"].sum())
    lines.append(
        f"Metric: {markdown_text(leaderboard.metric)}; {len(leaderboard.overall)} models "
        f"({complete} complete), {markdown_text(_tasks_count(leaderboard))}; "
        f"{len(leaderboard.failures)} failures."
    )
    if leaderboard.filters:
        lines.append("Filtered: " + "; ".join(markdown_text(f) for f in leaderboard.filters) + ".")
    if leaderboard.unscored_tasks:
        lines.append(
            "Tasks no model scored (left out): "
            + ", ".join(markdown_text(t) for t in leaderboard.unscored_tasks)
            + "."
        )
    return lines


def _markdown_overall_table(rows: pd.DataFrame) -> list[str]:
    return _markdown_table(
        [
            "rank",
            "change",
            "model",
            "hub",
            "mean rank",
            "mean norm. score",
            "tasks",
            "params",
            "feature dim",
            "samples/s",
        ],
        (
            [
                _format_rank(row["overall_rank"]),
                _format_change(row["change"], row["rank_delta"]),
                markdown_text(row["model"]),
                markdown_text(row["hub"]),
                _format_float(row["mean_rank"], 2),
                _format_float(row["mean_normalised_score"], 3),
                markdown_text(_format_coverage(row)),
                format_cost("num_params", row["num_params"]),
                format_cost("feature_dim", row["feature_dim"]),
                format_cost("throughput", row["throughput"]),
            ]
            for row in rows.to_dict("records")
        ),
    )


def _markdown_per_task_table(
    task_cells: Mapping[tuple[str, str], Mapping[str, Any]], models: Iterable[str], tasks
) -> list[str]:
    def cell(model: str, task: str) -> str:
        pair = task_cells[(model, task)]
        if pair["state"] != OK_STATE:
            return pair["state"]
        return f"{pair['score']:.4f} (#{_format_rank(pair['rank'])})"

    return _markdown_table(
        ["model", *(markdown_text(task) for task in tasks)],
        ([markdown_text(model), *(cell(model, task) for task in tasks)] for model in models),
    )


def _markdown_fronts(pareto: pd.DataFrame) -> list[str]:
    lines = []
    for axis in COST_AXES:
        front = pareto[pareto[f"on_front_{axis}"]].sort_values(
            axis, ascending=COST_AXES[axis] == "min"
        )
        entries = [
            f"{markdown_text(row['model'])} ({format_cost(axis, row[axis])}, "
            f"{row['mean_normalised_score']:.3f})"
            for row in front.to_dict("records")
        ]
        lines.append(f"- {_cost_axis_label(axis)}: " + (" → ".join(entries) or "no data"))
    return lines


def to_markdown(leaderboard: Leaderboard) -> str:
    """The leaderboard as a Markdown summary (GitHub-flavoured tables); with several
    modalities, one overall table, per-task table and set of fronts per modality."""
    groups = _display_groups(leaderboard)
    multimodal = leaderboard.multimodal
    lines = ["# Model leaderboard", "", *_run_summary(leaderboard), "", "## Overall", ""]
    lines.append(
        "Rank by mean per-task rank among complete models (fractional ranks for ties); an "
        "incomplete model is ranked only among the models that scored all of its tasks."
        + (
            " Models are ranked within their modality, on the tasks of that modality."
            if multimodal
            else ""
        )
    )
    for modality, rows, tasks in groups:
        lines.append("")
        if multimodal:
            title = f"{_modality_title(modality)} ({_group_summary(modality, rows, tasks)})"
            lines += [f"### {markdown_text(title)}", ""]
        lines += _markdown_overall_table(rows)
    if leaderboard.tasks:
        task_cells = {
            (row["model"], row["task"]): row for row in leaderboard.per_task.to_dict("records")
        }
        lines += ["", f"## Per task ({markdown_text(leaderboard.metric)}, rank)"]
        for modality, rows, tasks in groups:
            if not tasks:
                continue
            lines.append("")
            if multimodal:
                lines += [f"### {markdown_text(_modality_title(modality))}", ""]
            lines += _markdown_per_task_table(task_cells, rows["model"], tasks)
    lines += ["", "## Score versus cost (Pareto fronts)", ""]
    if multimodal:
        for modality, pareto in _pareto_groups(leaderboard, groups):
            lines += [f"### {markdown_text(_modality_title(modality))}", ""]
            lines += [*_markdown_fronts(pareto), ""]
        lines.pop()
    else:
        lines += _markdown_fronts(leaderboard.pareto)
    lines += ["", "## Changes since the previous run", ""]
    if leaderboard.previous_run is None:
        lines.append("No previous run.")
    else:
        lines.append(f"Previous run: `{markdown_text(leaderboard.previous_run.run_id)}`.")
        changes = leaderboard.changes
        for label, kind in (("New", "new"), ("Dropped", "dropped")):
            names = [markdown_text(m) for m in changes.loc[changes["change"] == kind, "model"]]
            lines.append(f"- {label}: " + (", ".join(names) or "none"))
        moved = changes[(changes["change"] == "kept") & (changes["rank_delta"].fillna(0) != 0)]
        moves = [
            f"{markdown_text(row['model'])} {_format_change('kept', row['rank_delta'])} "
            f"(#{_format_rank(row['previous_rank'])} → #{_format_rank(row['overall_rank'])}"
            + (f" among {markdown_text(row['modality'])} models)" if multimodal else ")")
            for row in moved.to_dict("records")
        ]
        lines.append("- Moved: " + (", ".join(moves) or "none"))
        change = _task_set_change(leaderboard)
        if change is not None:
            lines.append(f"- {markdown_text(change)}")
        elif leaderboard.tasks_added or leaderboard.tasks_removed:
            lines.append(
                "- Task set changed (ranks compare different tasks): added "
                + (", ".join(markdown_text(t) for t in leaderboard.tasks_added) or "none")
                + "; removed "
                + (", ".join(markdown_text(t) for t in leaderboard.tasks_removed) or "none")
            )
    lines += ["", f"## Failures ({len(leaderboard.failures)})", ""]
    if leaderboard.failures.empty:
        lines.append("None.")
    else:
        lines += _markdown_table(
            ["stage", "model", "task", "error"],
            (
                [
                    markdown_text(row["stage"]),
                    markdown_text(row["model"]),
                    markdown_text(row["task"]),
                    markdown_text(row["error"], max_chars=300),
                ]
                for row in leaderboard.failures.to_dict("records")
            ),
        )
    return "\n".join(lines) + "\n"


def _cost_axis_label(axis: str) -> str:
    """Human label of a cost axis, with its direction."""
    better = "lower" if COST_AXES[axis] == "min" else "higher"
    return f"{COST_LABELS[axis]} ({better} is cheaper)"


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------


def _escape(value: Any) -> str:
    """``html.escape`` (quotes too) of a cell's text: safe in element content and attributes."""
    return html.escape(_text(value), quote=True)


def json_for_script(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` become ``\\u003c``/``\\u003e``/``\\u0026`` (so neither ``</script>`` nor
    ``<!--`` can end or confuse the element), non-ASCII is ``\\u``-escaped (U+2028/2029 too), and
    NaN/inf are rejected (convert them to null first). ``JSON.parse`` gives back the same data.
    """
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return str(value)


def _json_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(key): _json_value(value) for key, value in row.items()}
        for row in table.to_dict("records")
    ]


def leaderboard_data(leaderboard: Leaderboard) -> dict[str, Any]:
    """The leaderboard as JSON-able data (what the HTML page embeds)."""
    return {
        "metric": leaderboard.metric,
        "run": leaderboard.run.to_dict() if leaderboard.run else None,
        "previous_run": leaderboard.previous_run.to_dict() if leaderboard.previous_run else None,
        "tasks": list(leaderboard.tasks),
        "modalities": list(leaderboard.modalities),
        "task_modalities": list(leaderboard.task_modalities),
        "unscored_tasks": list(leaderboard.unscored_tasks),
        "filters": list(leaderboard.filters),
        **{name: _json_records(table) for name, table in leaderboard.tables().items()},
    }


def _asset(name: str) -> str:
    return resources.files("ray_logme").joinpath("data", name).read_text(encoding="utf-8")


def _sort_attr(value: Any) -> str:
    """``data-value`` for numeric sorting; empty for a missing value (sorted last)."""
    if value is None or pd.isna(value) or not np.isfinite(float(value)):
        return ""
    return repr(float(value))


def _td(text: str, sort_value: Any = None, css: str = "", title: str = "") -> str:
    attributes = ""
    if sort_value is not None:
        attributes += f' data-value="{_escape(_sort_attr(sort_value))}"'
    if css:
        attributes += f' class="{css}"'
    if title:
        attributes += f' title="{_escape(title)}"'
    return f"<td{attributes}>{text}</td>"


def _th(label: str, kind: str, default_order: str = "asc", title: str = "") -> str:
    title_attr = f' title="{_escape(title)}"' if title else ""
    return (
        f'<th scope="col" data-sort="{kind}" data-order="{default_order}"{title_attr}>'
        f'<button type="button">{label}</button></th>'
    )


def _overall_table_html(
    leaderboard: Leaderboard,
    overall: pd.DataFrame | None = None,
    tasks: Sequence[str] | None = None,
    table_id: str = "overall-table",
) -> str:
    """Sortable table of ``overall`` rows (default: all) with per-task columns of ``tasks``."""
    overall = leaderboard.overall if overall is None else overall
    tasks = leaderboard.tasks if tasks is None else tasks
    task_cells = {
        (row["model"], row["task"]): row for row in leaderboard.per_task.to_dict("records")
    }
    kinds = leaderboard.per_task.drop_duplicates("task").set_index("task")["kind"]
    header = [
        _th("#", "num", "asc", "overall rank among complete models"),
        _th("change", "num", "desc", "rank change since the previous run (positive: moved up)"),
        _th("model", "text"),
        _th("hub", "text"),
        _th("mean rank", "num", "asc", "mean per-task rank among comparable models"),
        _th("mean norm. score", "num", "desc", "per-task min-max scaled score, averaged"),
        _th("tasks", "num", "desc", "tasks covered / leaderboard tasks"),
        _th("params", "num", "asc"),
        _th("feature dim", "num", "asc"),
        _th("samples/s", "num", "desc", "measured extraction throughput"),
        _th("ImageNet top-1", "num", "desc", "source ImageNet top-1 where published"),
    ]
    header += [
        _th(_escape(task), "num", "desc", f"{task} ({kinds.get(task, '')}): score, #rank")
        for task in tasks
    ]
    rows = []
    for row in overall.to_dict("records"):
        model = row["model"]
        tags = "".join(
            f'<span class="tag">{_escape(tag)}</span>'
            for tag in _text(row["tags"]).split(", ")
            if tag
        )
        change = _format_change(row["change"], row["rank_delta"])
        change_css = "up" if change.startswith("▲") else "down" if change.startswith("▼") else ""
        change_sort = row["rank_delta"] if row["change"] == "kept" else None
        cells = [
            _td(_escape(_format_rank(row["overall_rank"]) or "–"), row["overall_rank"], "num"),
            _td(_escape(change), change_sort if change_sort is not None else np.nan, change_css),
            _td(
                f'<span class="model">{_escape(model)}</span>{tags}',
                css="model-cell",
                title=_text(row["model_key"]),
            ),
            _td(_escape(row["hub"])),
            _td(_escape(_format_float(row["mean_rank"], 2)), row["mean_rank"], "num"),
            _td(
                _escape(_format_float(row["mean_normalised_score"], 3)),
                row["mean_normalised_score"],
                "num",
            ),
            _td(
                _escape(f"{int(row['tasks_covered'])}/{int(row['num_tasks'])}")
                + (
                    f'<span class="note">{_escape(_format_coverage_note(row))}</span>'
                    if not row["complete"]
                    else ""
                ),
                row["tasks_covered"],
                "coverage",
                title=("missing: " + _text(row["missing_tasks"])) if not row["complete"] else "",
            ),
            *(_td(_escape(format_cost(axis, row[axis])), row[axis], "num") for axis in COST_AXES),
            _td(_escape(_format_float(row["imagenet_top1"], 2)), row["imagenet_top1"], "num"),
        ]
        for task in tasks:
            pair = task_cells[(model, task)]
            if pair["state"] == OK_STATE:
                text = (
                    f"{_escape(_format_float(pair['score'], 4))}"
                    f'<span class="rank">#{_escape(_format_rank(pair["rank"]))}</span>'
                )
                cells.append(_td(text, pair["score"], "num"))
            else:
                cells.append(
                    _td(
                        _escape(pair["state"]), np.nan, f"num {pair['state']}", _text(pair["error"])
                    )
                )
        css = "" if row["complete"] else ' class="incomplete"'
        rows.append(f'<tr data-model="{_escape(model)}"{css}>' + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table id="{table_id}" class="sortable">'
        f"<thead><tr>{''.join(header)}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _log_ticks(low: float, high: float) -> list[float]:
    """Tick values for a log axis over [low, high]: 1-2-5 steps, or decades when wide."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    steps = (1.0,) if last - first > 3 else (1.0, 2.0, 5.0)
    ticks = [m * 10.0**e for e in range(first, last + 1) for m in steps]
    inside = [t for t in ticks if low <= t <= high]
    return inside or [low, high]


def _svg_plot(pareto: pd.DataFrame, axis: str) -> str:
    """Inline SVG: mean normalised score (y) versus one cost (x, log scale), front highlighted."""
    width, height = 720, 380
    left, right, top, bottom = 64, 24, 16, 52
    points = pareto[
        np.isfinite(pareto[axis].astype("float64"))
        & (pareto[axis].astype("float64") > 0)
        & np.isfinite(pareto["mean_normalised_score"].astype("float64"))
    ]
    label = _escape(_cost_axis_label(axis))
    if points.empty:
        return f'<p class="empty">No complete model has a known {label}.</p>'
    costs = points[axis].astype("float64").to_numpy()
    scores = points["mean_normalised_score"].astype("float64").to_numpy()
    log_low, log_high = math.log10(costs.min()), math.log10(costs.max())
    if log_high - log_low < 1e-9:
        log_low, log_high = log_low - 0.5, log_high + 0.5
    pad = 0.05 * (log_high - log_low)
    log_low, log_high = log_low - pad, log_high + pad
    score_low, score_high = min(0.0, scores.min()), max(1.0, scores.max())
    score_pad = 0.05 * (score_high - score_low)
    score_low, score_high = score_low - score_pad, score_high + score_pad

    def x_of(cost: float) -> float:
        return left + (math.log10(cost) - log_low) / (log_high - log_low) * (width - left - right)

    def y_of(score: float) -> float:
        return top + (score_high - score) / (score_high - score_low) * (height - top - bottom)

    parts = [
        f'<svg class="plot" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="mean normalised score versus {label}">',
        f'<rect class="frame" x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}"/>',
    ]
    for tick in _log_ticks(10**log_low, 10**log_high):
        x = x_of(tick)
        parts.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}"/>'
            f'<text class="tick" x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
            f"{_escape(format_count(tick))}</text>"
        )
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y_of(tick)
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>'
        )
    parts.append(
        f'<text class="axis-label" x="{(left + width - right) / 2:.0f}" y="{height - 10}" '
        f'text-anchor="middle">{label}, log scale</text>'
        f'<text class="axis-label" transform="translate(16 {(top + height - bottom) / 2:.0f}) '
        f'rotate(-90)" text-anchor="middle">mean normalised score</text>'
    )
    front = points[points[f"on_front_{axis}"]].sort_values(axis)
    if len(front) > 1:
        path = " ".join(
            f"{x_of(cost):.1f},{y_of(score):.1f}"
            for cost, score in zip(front[axis], front["mean_normalised_score"], strict=True)
        )
        parts.append(f'<polyline class="front" points="{path}"/>')
    for row in points.to_dict("records"):
        x, y = x_of(row[axis]), y_of(row["mean_normalised_score"])
        on_front = bool(row[f"on_front_{axis}"])
        tooltip = (
            f"{_text(row['model'])}: score {row['mean_normalised_score']:.3f}, "
            f"{COST_LABELS[axis]} {format_cost(axis, row[axis])}"
        )
        parts.append(
            f'<circle class="{"on-front" if on_front else "dominated"}" cx="{x:.1f}" '
            f'cy="{y:.1f}" r="{6 if on_front else 4.5}" data-model="{_escape(row["model"])}">'
            f"<title>{_escape(tooltip)}</title></circle>"
        )
    # Labels of the front points, left to right, each at the first spot not overlapping an
    # earlier label (approximate boxes: 6.2 px per character at 11 px).
    placed: list[tuple[float, float, float, float]] = []
    for row in front.to_dict("records"):
        x, y = x_of(row[axis]), y_of(row["mean_normalised_score"])
        text = _text(row["model"])
        text = text if len(text) <= 32 else text[:31] + "…"
        text_width = 6.2 * len(text)
        anchor_end = x + 9 + text_width > width - right
        x0 = x - 9 - text_width if anchor_end else x + 9
        spot = y - 8
        for candidate in (y - 8, y + 16, y - 22, y + 30, y - 36, y + 44):
            box = (x0, x0 + text_width, candidate - 10, candidate + 2)
            if not any(
                box[0] < other[1] and other[0] < box[1] and box[2] < other[3] and other[2] < box[3]
                for other in placed
            ):
                spot = candidate
                break
        placed.append((x0, x0 + text_width, spot - 10, spot + 2))
        parts.append(
            f'<text class="point-label" x="{x - 9 if anchor_end else x + 9:.1f}" y="{spot:.1f}" '
            f'text-anchor="{"end" if anchor_end else "start"}">{_escape(text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _simple_table_html(table_id: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f'<th scope="col">{label}</th>' for label in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return (
        f'<div class="scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _changes_html(leaderboard: Leaderboard) -> str:
    if leaderboard.previous_run is None:
        return "<p>No previous run to compare with.</p>"
    changes = leaderboard.changes
    parts = [f"<p>Compared with run <code>{_escape(leaderboard.previous_run.run_id)}</code>.</p>"]
    change = _task_set_change(leaderboard)
    if change is not None:
        css = "warning" if leaderboard.task_set_changed_modalities else "info"
        parts.append(f'<p class="{css}">{_escape(change)}.</p>')
    elif leaderboard.tasks_added or leaderboard.tasks_removed:
        parts.append(
            '<p class="warning">The task set changed (added: '
            + _escape(", ".join(leaderboard.tasks_added) or "none")
            + "; removed: "
            + _escape(", ".join(leaderboard.tasks_removed) or "none")
            + "), so ranks compare different tasks.</p>"
        )
    for label, kind in (("New models", "new"), ("Dropped models", "dropped")):
        names = changes.loc[changes["change"] == kind, "model"]
        items = "".join(f"<li>{_escape(name)}</li>" for name in names) or "<li>none</li>"
        parts.append(f'<h3>{label}</h3><ul id="{kind}-models">{items}</ul>')
    moved = changes[(changes["change"] == "kept") & (changes["rank_delta"].fillna(0) != 0)]
    parts.append("<h3>Rank changes</h3>")
    if moved.empty:
        parts.append("<p>No complete model changed rank.</p>")
    else:
        with_modality = leaderboard.multimodal
        parts.append(
            _simple_table_html(
                "moves-table",
                [
                    "model",
                    *(["modality"] if with_modality else []),
                    "previous rank",
                    "rank",
                    "change",
                ],
                (
                    [
                        _escape(row["model"]),
                        *([_escape(row["modality"] or "unknown")] if with_modality else []),
                        _escape(_format_rank(row["previous_rank"])),
                        _escape(_format_rank(row["overall_rank"])),
                        _escape(_format_change("kept", row["rank_delta"])),
                    ]
                    for row in moved.to_dict("records")
                ),
            )
        )
    return "".join(parts)


def _failures_html(leaderboard: Leaderboard) -> str:
    if leaderboard.failures.empty:
        return "<p>No failures.</p>"
    return _simple_table_html(
        "failures-table",
        ["stage", "model", "task", "error"],
        (
            [
                _escape(row["stage"]),
                _escape(row["model"]),
                _escape(row["task"]),
                f'<span class="error">{_escape(row["error"])}</span>'
                + (
                    '<details class="traceback"><summary>traceback</summary>'
                    f"<pre>{_escape(row['traceback'])}</pre></details>"
                    if _text(row.get("traceback"))
                    else ""
                ),
            ]
            for row in leaderboard.failures.to_dict("records")
        ),
    )


def _header_html(leaderboard: Leaderboard) -> str:
    facts = []
    if leaderboard.run is not None:
        run = leaderboard.run
        facts.append(f"run <code>{_escape(run.run_id)}</code>")
        for label, value in (
            ("at", run.timestamp),
            ("config", run.config_hash),
            ("code", run.code_version),
        ):
            if value:
                facts.append(f"{label} <code>{_escape(value)}</code>")
    complete = int(leaderboard.overall["complete"].sum())
    facts.append(
        f"metric <strong>{_escape(leaderboard.metric)}</strong>, "
        f"{len(leaderboard.overall)} models ({complete} complete), "
        f"{_escape(_tasks_count(leaderboard))}, "
        f'<a href="#failures">{len(leaderboard.failures)} failures</a>'
    )
    parts = [f'<p class="facts">{" · ".join(facts)}</p>']
    if leaderboard.filters:
        parts.append(f'<p class="filters">Filtered: {_escape("; ".join(leaderboard.filters))}</p>')
    if leaderboard.unscored_tasks:
        parts.append(
            '<p class="warning">Tasks no model scored (left out): '
            f"{_escape(', '.join(leaderboard.unscored_tasks))}</p>"
        )
    return "".join(parts)


def _html_id(text: str, taken: set[str]) -> str:
    """An id fragment of ASCII letters, digits and ``-`` from ``text``, unique within ``taken``."""
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown-modality"
    name, index = base, 2
    while name in taken:
        name, index = f"{base}-{index}", index + 1
    taken.add(name)
    return name


def _overall_groups_html(
    leaderboard: Leaderboard, groups: Sequence[tuple[str, pd.DataFrame, tuple[str, ...]]]
) -> str:
    """One titled, sortable overall table per modality (``#overall-table-<modality>``)."""
    parts, taken = [], set()
    for modality, rows, tasks in groups:
        slug = _html_id(modality, taken)
        parts.append(
            f'<h3 id="overall-{slug}" class="modality">{_escape(_modality_title(modality))}'
            f'<span class="count">{_escape(_group_summary(modality, rows, tasks))}</span></h3>'
            + _overall_table_html(leaderboard, rows, tasks, f"overall-table-{slug}")
        )
    return "".join(parts)


def to_html(leaderboard: Leaderboard, title: str = "ray-logme leaderboard") -> str:
    """One self-contained HTML page: no external URL is referenced.

    Sortable overall table (inline JS, click a column header) with per-task columns and the rank
    change, an inline SVG score-versus-cost plot per cost axis, the changes since the previous
    run, and the failures (with their tracebacks). With several modalities, one overall table
    (``#overall-table-<modality>``, its own tasks as columns) and one plot per cost axis for
    each modality. Every table string is ``html.escape``-d; the leaderboard data is also
    embedded as JSON (:func:`json_for_script`) in ``<script id="leaderboard-data">``. A
    Content-Security-Policy allows only the page's own script (by hash) and inline styles.
    """
    script = _asset("leaderboard.js")
    style = _asset("leaderboard.css")
    script_hash = hashlib.sha256(script.encode("utf-8")).digest()
    csp = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
        f"form-action 'none'; script-src 'sha256-{base64.b64encode(script_hash).decode('ascii')}'"
    )
    axis_buttons = "".join(
        f'<button type="button" data-axis="{axis}" aria-pressed="{str(i == 0).lower()}">'
        f"{_escape(COST_LABELS[axis])}</button>"
        for i, axis in enumerate(COST_AXES)
    )
    groups = _display_groups(leaderboard)
    if leaderboard.multimodal:
        plots = (
            '<div class="plots">'
            + "".join(
                f'<figure class="plot-figure" data-axis="{axis}" '
                f'data-modality="{_escape(modality)}"{"" if i == 0 else " hidden"}>'
                f"<h3>{_escape(_modality_title(modality))}</h3>{_svg_plot(pareto, axis)}"
                f"<figcaption>Mean normalised score of the complete {_escape(modality)} models "
                f"(on the {_escape(modality)} tasks) versus {_escape(_cost_axis_label(axis))}. "
                "Filled, labelled points are the Pareto front: no other model of this modality "
                "scores at least as well for at most this cost.</figcaption></figure>"
                for i, axis in enumerate(COST_AXES)
                for modality, pareto in _pareto_groups(leaderboard, groups)
            )
            + "</div>"
        )
        overall_tables = _overall_groups_html(leaderboard, groups)
    else:
        plots = "".join(
            f'<figure class="plot-figure" data-axis="{axis}"{"" if i == 0 else " hidden"}>'
            f"{_svg_plot(leaderboard.pareto, axis)}<figcaption>Mean normalised score of the "
            f"complete models versus {_escape(_cost_axis_label(axis))}. Filled, labelled points "
            "are the Pareto front: no other model scores at least as well for at most this cost."
            "</figcaption></figure>"
            for i, axis in enumerate(COST_AXES)
        )
        overall_tables = _overall_table_html(leaderboard)
    runs = leaderboard.runs
    runs_html = _simple_table_html(
        "runs-table",
        ["run", "timestamp", "config hash", "code version", ""],
        (
            [
                f"<code>{_escape(row['run_id'])}</code>",
                _escape(row["timestamp"]),
                _escape(row["config_hash"]),
                _escape(row["code_version"]),
                "current" if row["current"] else "",
            ]
            for row in runs.to_dict("records")
        ),
    )
    body = [
        "<header>",
        f"<h1>{_escape(title)}</h1>",
        _header_html(leaderboard),
        "</header><main>",
        '<section id="overall"><h2>Overall ranking</h2>',
        '<p class="help">Ranked by mean per-task rank among the models that scored every task '
        "(ties share the mean of their ranks). Incomplete models are ranked only among the "
        "models that scored all of their tasks and are listed last. "
        + (
            "Models are ranked within their modality, on the tasks of that modality only. "
            if leaderboard.multimodal
            else ""
        )
        + "Click a column header to sort.</p>",
        '<label class="search">Find a model <input type="search" id="model-search" '
        'placeholder="name or tag"></label>',
        overall_tables,
        "</section>",
        '<section id="cost"><h2>Score versus cost</h2>',
        f'<div class="axis-buttons" role="group" aria-label="cost axis">{axis_buttons}</div>',
        plots,
        "</section>",
        f'<section id="changes"><h2>Changes since the previous run</h2>{_changes_html(leaderboard)}'
        "</section>",
        f'<section id="failures"><h2>Failures ({len(leaderboard.failures)})</h2>'
        f"{_failures_html(leaderboard)}</section>",
        f'<section id="runs"><h2>Runs</h2>{runs_html}</section>',
        "</main>",
        '<script type="application/json" id="leaderboard-data">'
        f"{json_for_script(leaderboard_data(leaderboard))}</script>",
        f"<script>{script}</script>",
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_escape(title)}</title><style>{style}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Text cells that a spreadsheet would run as a formula get a leading ``'`` (CSV only)."""
    safe = table.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(
                lambda value: (
                    "'" + value
                    if isinstance(value, str) and value.startswith(_CSV_FORMULA_START)
                    else value
                )
            )
    return safe


def _arrow_table(table: pd.DataFrame):
    """``table`` as a ``pyarrow.Table``; text columns become strings (missing -> ``""``)."""
    import pyarrow as pa

    converted = table.copy()
    for column in converted.columns:
        if converted[column].dtype == object:
            converted[column] = converted[column].map(_text).astype(object)
    return pa.Table.from_pandas(converted, preserve_index=False)


def write_leaderboard(
    leaderboard: Leaderboard, store: Any, run_id: str | None = None, *, latest: bool = True
) -> dict[str, str]:
    """Write the leaderboard through the feature store; return ``{relpath: uri}``.

    Writes ``runs/{run_id}/leaderboard/`` and, with ``latest``, ``leaderboard/`` (the latest
    leaderboard): ``<table>.parquet`` and ``<table>.csv`` for each of ``Leaderboard.tables()``,
    ``summary.md`` and ``index.html``. ``run_id`` defaults to the leaderboard's run. ``store`` needs ``write_table(relpath, pyarrow.Table)``,
    ``write_text(relpath, str)`` and ``uri_of(relpath)`` (``ray_logme.storage.FeatureStore``).
    CSV text cells starting with ``= + - @`` get a leading ``'`` so spreadsheets do not run
    them; Parquet keeps the exact values.
    """
    run_id = run_id if run_id is not None else leaderboard.run_id
    if not run_id or "/" in run_id or run_id in (".", ".."):
        raise ValueError(
            f"run_id {run_id!r} must be a non-empty name without '/' (pass run_id= or build the "
            "leaderboard with run=RunRecord(...))"
        )
    prefixes = [f"runs/{run_id}/leaderboard"] + (["leaderboard"] if latest else [])
    summary, page = to_markdown(leaderboard), to_html(leaderboard)
    written: dict[str, str] = {}
    for prefix in prefixes:
        for name, table in leaderboard.tables().items():
            store.write_table(f"{prefix}/{name}.parquet", _arrow_table(table))
            buffer = io.StringIO()
            _csv_safe(table).to_csv(buffer, index=False)
            store.write_text(f"{prefix}/{name}.csv", buffer.getvalue())
            written[f"{prefix}/{name}.parquet"] = store.uri_of(f"{prefix}/{name}.parquet")
            written[f"{prefix}/{name}.csv"] = store.uri_of(f"{prefix}/{name}.csv")
        store.write_text(f"{prefix}/summary.md", summary)
        store.write_text(f"{prefix}/index.html", page)
        written[f"{prefix}/summary.md"] = store.uri_of(f"{prefix}/summary.md")
        written[f"{prefix}/index.html"] = store.uri_of(f"{prefix}/index.html")
    logger.info("wrote leaderboard of run %s: %d files", run_id, len(written))
    return written
