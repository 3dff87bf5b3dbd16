"""Building a :class:`~ray_logme.leaderboard.records.Leaderboard` from one run's tables:
:func:`build_leaderboard`, the per-task and failures tables, the changes since the previous
run, typed empty tables and the order of the overall table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ray_logme.leaderboard.inputs import (
    _clean_scores,
    _column,
    _model_table,
    _require_frame,
    _text,
)
from ray_logme.leaderboard.ranking import (
    _group_tasks,
    _grouped_stats,
    _pareto_table,
    _previous_ranks,
    _ranks_descending,
    _resolve_modalities,
    _score_matrix,
    _scored_tasks,
)
from ray_logme.leaderboard.records import (
    CHANGES_DTYPES,
    FAILURES_COLUMNS,
    FAILURES_DTYPES,
    OVERALL_DTYPES,
    PER_TASK_DTYPES,
    RUNS_DTYPES,
    Leaderboard,
    PastRun,
    RunRecord,
    typed_frame,
)
from ray_logme.tables import FAILED, MODEL_NOT_FAILED_STATES, OK, STATUS


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
    table["num_ranked"] = matrix.notna().sum(axis=0).to_numpy()[task_position]
    table["state"] = table["state"].fillna("missing")
    table["model_key"] = table["model_key"].fillna("")
    table["error"] = table["error"].fillna("")
    table["task_order"] = task_position
    table = table.sort_values(
        ["task_order", "rank", "model"], na_position="last", kind="stable"
    ).reset_index(drop=True)
    return typed_frame(table, PER_TASK_DTYPES)


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
    """Rank the models of one run (rules in the docstring of :mod:`ray_logme.leaderboard`).

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
    changes = typed_frame([], CHANGES_DTYPES)
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
        changes = typed_frame(changes, CHANGES_DTYPES)
    overall["rank_delta"] = overall["previous_rank"] - overall["overall_rank"]
    overall = overall.reset_index().rename(columns={"index": "model"})
    overall = typed_frame(_sort_overall(overall, modalities.known), OVERALL_DTYPES, cast_text=False)

    run_rows = ([{**run_record.to_dict(), "current": True}] if run_record is not None else []) + [
        {**past.record.to_dict(), "current": False} for past in history_runs
    ]
    runs = typed_frame(run_rows, RUNS_DTYPES, cast_text=False)

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
        _require_frame(status, STATUS.required, "status table")
        failed = status[status["state"].map(_text) == FAILED]
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
    failed_pairs = clean[clean["state"] != OK]
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
    return typed_frame(pd.concat(frames, ignore_index=True), FAILURES_DTYPES)


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
