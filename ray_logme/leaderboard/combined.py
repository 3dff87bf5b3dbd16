"""The leaderboard of a run scored with several metrics: ranked by the default combination
(:data:`ray_logme.combination.DEFAULT_COMBINATION`) or by one metric the config names, with every
metric's per-task score and rank alongside.

A run scored with LogME alone gets exactly :func:`~ray_logme.leaderboard.build_leaderboard`'s
leaderboard ranked by LogME, as before the other metrics existed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ray_logme.combination import DEFAULT_COMBINATION, Combination, with_combination
from ray_logme.leaderboard.build import _as_past_run, build_leaderboard
from ray_logme.leaderboard.records import Leaderboard, PastRun, RunRecord
from ray_logme.tables import OK, PRIOR_COLUMN, clean_scores

#: ``outputs.ranking`` value that selects the default combination.
DEFAULT_RANKING = "default"
METRIC_SCORES_COLUMNS = ("model", "task", "metric", "score", "rank", "state")


def priors_of(models: pd.DataFrame | None) -> dict[str, float]:
    """model -> ``imagenet_top1`` of a models table (empty without the column or values)."""
    if models is None or PRIOR_COLUMN not in models.columns or "model" not in models.columns:
        return {}
    values = pd.to_numeric(models[PRIOR_COLUMN], errors="coerce")
    return {
        str(model): float(value)
        for model, value in zip(models["model"], values, strict=True)
        if np.isfinite(value)
    }


def metric_scores_table(scores: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """One row per (model, task, metric) of ``metrics``: score and rank (1 = best, fractional
    ties) among that metric's ok scores on the task; non-ok rows keep their state, no rank."""
    frames = []
    for metric in metrics:
        clean = clean_scores(scores, metric, "scores table")
        clean = clean.assign(metric=metric)
        ok = clean["state"] == OK
        clean["rank"] = np.nan
        clean.loc[ok, "rank"] = (
            clean[ok].groupby("task")["score"].rank(method="average", ascending=False)
        )
        frames.append(clean[list(METRIC_SCORES_COLUMNS)])
    if not frames:
        return pd.DataFrame(columns=list(METRIC_SCORES_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def build_combined_leaderboard(
    scores: pd.DataFrame,
    models: pd.DataFrame | None,
    history: Sequence[PastRun] | None = None,
    *,
    ranking: str = DEFAULT_RANKING,
    combination: Combination = DEFAULT_COMBINATION,
    run: RunRecord | Mapping | None = None,
    status: pd.DataFrame | None = None,
    tasks: Sequence[str] | None = None,
) -> Leaderboard:
    """The leaderboard ranked by ``ranking``: ``"default"`` (``combination`` over the metrics the
    scores have, plus the models table's ``imagenet_top1`` prior where given) or a metric name.

    Earlier runs in ``history`` are combined the same way, so rank changes compare like with
    like. Scores with LogME alone and ``ranking="default"`` give the LogME leaderboard unchanged.
    """
    present = (
        [m for m in dict.fromkeys(scores["metric"].dropna()) if m != combination.name]
        if "metric" in scores.columns
        else ["logme"]
    )
    options = {"run": run, "status": status, "tasks": tasks}
    if ranking == DEFAULT_RANKING and set(present) <= {"logme"}:
        return build_leaderboard(scores, models, history, metric="logme", **options)
    if ranking != DEFAULT_RANKING:
        board = build_leaderboard(scores, models, history, metric=ranking, **options)
        note = f"Ranked by {ranking} alone (outputs.ranking)."
    else:
        priors = priors_of(models)
        combined = with_combination(scores, combination, priors)
        past = []
        for entry in history or ():
            entry = _as_past_run(entry)
            past_scores = with_combination(entry.scores, combination, priors_of(entry.models))
            past.append(dataclasses.replace(entry, scores=past_scores))
        board = build_leaderboard(combined, models, past, metric=combination.name, **options)
        scores = combined
        inputs = [m for m in combination.metrics if m in present]
        used_prior = combination.use_prior and bool(priors)
        note = combination.description + (
            f" Inputs in this run: {', '.join(inputs + (['imagenet_top1'] if used_prior else []))}."
        )
    shown = [*present, *([combination.name] if ranking == DEFAULT_RANKING else [])]
    table = metric_scores_table(scores, shown)
    if tasks is not None:
        table = table[table["task"].isin(list(tasks))].reset_index(drop=True)
    return dataclasses.replace(board, metric_scores=table, ranking_note=note)
