"""The ranking rules of :mod:`ray_logme.leaderboard`: fractional per-task ranks, the
comparable-set overall statistics, the modality of every model and task, the previous run's
ranks, and the cost Pareto fronts."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ray_logme.leaderboard.inputs import _clean_scores, _modality_text, _text
from ray_logme.leaderboard.records import COST_AXES, PARETO_COLUMNS, PastRun
from ray_logme.tables import OK

logger = logging.getLogger(__name__)


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
    ok = clean[clean["state"] == OK]
    matrix = ok.pivot(index="model", columns="task", values="score")
    return matrix.reindex(index=list(models), columns=list(tasks)).astype("float64")


def _scored_tasks(clean: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(tasks with at least one ok score, tasks without), each in first-appearance order."""
    all_tasks = list(dict.fromkeys(clean["task"]))
    scored = set(clean.loc[clean["state"] == OK, "task"])
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
            clean.loc[clean["state"] == OK, "model"],
            clean.loc[clean["state"] == OK, "task"],
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
