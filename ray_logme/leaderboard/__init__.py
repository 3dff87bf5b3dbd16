"""Leaderboard: per-task ranks, an overall ranking, cost Pareto fronts, run history, renderers.

Input is the reduce stage's scores table and the extract stage's models table (schemas in
:mod:`ray_logme.tables`); output is a :class:`Leaderboard` of pandas tables, rendered to Markdown
(:func:`to_markdown`), one self-contained HTML page (:func:`to_html`), and written with Parquet and
CSV copies through the feature store (:func:`write_leaderboard`), published as the latest through
the ``leaderboard/LATEST`` pointer. Everything except the writer and the pointer is pure: no I/O,
no Ray.

This package is its public face; the code lives in one module per concern:

* :mod:`~ray_logme.leaderboard.records`: table columns, cost axes, :class:`RunRecord`,
  :class:`PastRun`, :class:`Leaderboard`.
* :mod:`~ray_logme.leaderboard.inputs`: validating and normalising the scores and models tables.
* :mod:`~ray_logme.leaderboard.ranking`: ranks, comparable-set statistics, modalities, the
  previous run's ranks, Pareto fronts.
* :mod:`~ray_logme.leaderboard.build`: :func:`build_leaderboard` and the tables it assembles.
* :mod:`~ray_logme.leaderboard.query`: :func:`filter_models`, :func:`per_task_wide`, counts.
* :mod:`~ray_logme.leaderboard.display`, :mod:`~ray_logme.leaderboard.markdown`,
  :mod:`~ray_logme.leaderboard.html`: the renderers and what they share.
* :mod:`~ray_logme.leaderboard.write`: :func:`write_leaderboard`, :func:`leaderboard_files`.
* :mod:`~ray_logme.leaderboard.latest`: the ``leaderboard/LATEST`` pointer that names the
  published run (:func:`publish_latest`, :func:`read_latest`).

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

from ray_logme.leaderboard.build import build_leaderboard
from ray_logme.leaderboard.display import format_cost
from ray_logme.leaderboard.html import json_for_script, leaderboard_data, to_html
from ray_logme.leaderboard.latest import LatestPointer, publish_latest, read_latest
from ray_logme.leaderboard.markdown import markdown_text, to_markdown
from ray_logme.leaderboard.query import filter_models, format_count, parse_count, per_task_wide
from ray_logme.leaderboard.ranking import pareto_front
from ray_logme.leaderboard.records import (
    CHANGES_COLUMNS,
    COST_AXES,
    COST_LABELS,
    FAILURES_COLUMNS,
    OVERALL_COLUMNS,
    PARETO_COLUMNS,
    PER_TASK_COLUMNS,
    RUNS_COLUMNS,
    Leaderboard,
    PastRun,
    RunRecord,
)
from ray_logme.leaderboard.write import leaderboard_files, write_leaderboard

__all__ = [
    "CHANGES_COLUMNS",
    "COST_AXES",
    "COST_LABELS",
    "FAILURES_COLUMNS",
    "OVERALL_COLUMNS",
    "PARETO_COLUMNS",
    "PER_TASK_COLUMNS",
    "RUNS_COLUMNS",
    "LatestPointer",
    "Leaderboard",
    "PastRun",
    "RunRecord",
    "build_leaderboard",
    "filter_models",
    "format_cost",
    "format_count",
    "json_for_script",
    "leaderboard_data",
    "leaderboard_files",
    "markdown_text",
    "pareto_front",
    "parse_count",
    "per_task_wide",
    "publish_latest",
    "read_latest",
    "to_html",
    "to_markdown",
    "write_leaderboard",
]
