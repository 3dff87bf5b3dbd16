"""The default ranking: a combination of several metrics' per-task ranks (and an optional prior).

A :class:`Combination` turns the scores table's rows of several metrics into one more "metric"
whose rows the leaderboard ranks like any other. Per task, each input (a metric, or the
``imagenet_top1`` prior where the models table has it) ranks the models that have a value for
it; the rank becomes a normalised score ``u = (n - rank) / (n - 1)`` in [0, 1] (1 = best;
fractional ranks for ties; an input with fewer than 2 values on the task is left out), and the
combined score of a model is the weighted mean of its ``u`` over the inputs it has. Ranks, not
raw scores, are combined because the metrics live on unrelated scales (LogME ~ [-2, 2], GBC <= 0,
SFDA and kNN in [0, 1]).

:data:`DEFAULT_COMBINATION` is frozen: its inputs were chosen on the controlled zoo
(``benchmarks/bench_ranking.py``) before it was evaluated on the public tables
(``benchmarks/bench_published_groundtruth.py``); see ``docs/notes/metrics.md``. Pure pandas and
numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ray_logme.tables import FAILED, OK, clean_scores

#: The prior's input name in :attr:`Combination.weights`.
PRIOR = "imagenet_top1"


@dataclass(frozen=True)
class Combination:
    """Weighted mean of normalised per-task ranks of ``metrics`` (and the prior if ``use_prior``).

    ``name``: the metric name of the combined rows; ``weights``: per input (metric name or
    :data:`PRIOR`), default 1 each; ``description``: the one sentence the leaderboard shows.
    """

    name: str
    metrics: tuple[str, ...]
    use_prior: bool = True
    weights: Mapping[str, float] = field(default_factory=dict)
    description: str = ""

    def inputs(self) -> tuple[str, ...]:
        return (*self.metrics, *((PRIOR,) if self.use_prior else ()))

    def weight(self, name: str) -> float:
        return float(self.weights.get(name, 1.0))

    def restricted(self, available: Sequence[str]) -> Combination:
        """The same combination over only the inputs in ``available`` (a public table's columns)."""
        metrics = tuple(m for m in self.metrics if m in available)
        return Combination(
            name=self.name,
            metrics=metrics,
            use_prior=self.use_prior and PRIOR in available,
            weights=dict(self.weights),
            description=self.description,
        )


#: The frozen default, chosen on the controlled zoo by the rule in benchmarks/bench_metrics.py
#: (best mean tau_w among the declared candidates whose metrics cost at most 0.25 x the
#: extraction, timed by benchmarks/bench_metric_cost.py); evidence in docs/notes/metrics.md.
DEFAULT_COMBINATION = Combination(
    name="default",
    metrics=("logme", "shrinkage_hscore", "sfda", "gbc", "knn"),
    use_prior=True,
    description=(
        "Default rank: per task, the mean of each model's normalised ranks under LogME, "
        "shrinkage H-score, SFDA, GBC and kNN, plus ImageNet top-1 where supplied (chosen on a "
        "controlled model zoo, then checked unchanged on published benchmarks)."
    ),
)


def normalised_ranks(values: np.ndarray) -> np.ndarray:
    """``float[n]`` -> ``(n_valid - rank) / (n_valid - 1)`` (1 = highest; NaN stays NaN; all
    NaN when fewer than 2 values are finite)."""
    values = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(values)
    out = np.full(values.shape, np.nan)
    count = int(valid.sum())
    if count < 2:
        return out
    ranks = pd.Series(values[valid]).rank(method="average", ascending=False).to_numpy()
    out[valid] = (count - ranks) / (count - 1)
    return out


def combine_scores(
    scores: pd.DataFrame,
    combination: Combination = DEFAULT_COMBINATION,
    priors: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Rows of ``combination.name`` for every (model, task) with at least one input value.

    ``scores``: the reduce stage's scores table (columns ``model``, ``task``, ``metric``,
    ``score``, ``state``; others such as ``model_key``, ``task_key``, ``kind``, ``run_id`` are
    carried from the pair's first row). ``priors``: model -> prior (e.g. ImageNet top-1), used
    when ``combination.use_prior``. Returns a DataFrame with the scores table's columns:
    ``score`` in [0, 1], ``seconds`` = the sum of the inputs' seconds, ``state`` ``ok``.
    """
    frames = []
    for metric in combination.metrics:
        if "metric" in scores.columns and (scores["metric"] == metric).any():
            clean = clean_scores(scores, metric, "scores table")
            frames.append(clean.assign(_input=metric))
    if not frames:
        return pd.DataFrame(columns=[*scores.columns])
    everything = pd.concat(frames, ignore_index=True)
    long = everything[everything["state"] == OK]
    prior_map = dict(priors or {}) if combination.use_prior else {}
    rows = []
    for task, group in long.groupby("task", sort=False):
        wide = group.pivot_table(index="model", columns="_input", values="score", aggfunc="first")
        if prior_map:
            wide[PRIOR] = [prior_map.get(model, np.nan) for model in wide.index]
        total = np.zeros(len(wide))
        weight = np.zeros(len(wide))
        for name in wide.columns:
            normalised = normalised_ranks(wide[name].to_numpy())
            have = np.isfinite(normalised)
            total[have] += combination.weight(name) * normalised[have]
            weight[have] += combination.weight(name)
        # A model with values but no rank (it is the only one scored on this task) ranks first.
        has_value = np.isfinite(wide.to_numpy(dtype=np.float64)).any(axis=1)
        seconds = group.groupby("model")["seconds"].sum() if "seconds" in group else None
        first = group.drop_duplicates("model").set_index("model")
        for position, model in enumerate(wide.index):
            if weight[position] <= 0 and not has_value[position]:
                continue
            row = first.loc[model].to_dict()
            row.update(
                model=model,
                task=task,
                metric=combination.name,
                score=total[position] / weight[position] if weight[position] > 0 else 1.0,
                state=OK,
                error=None,
                cached=False,
                seconds=float(seconds[model]) if seconds is not None else 0.0,
            )
            row.pop("_input", None)
            rows.append(row)
    # A pair with rows but no ok input (it failed everywhere) stays a failure, with its error.
    combined = {(row["model"], row["task"]) for row in rows}
    failed = everything[everything["state"] == FAILED]
    for (model, task), group in failed.groupby(["model", "task"], sort=False):
        if (model, task) in combined:
            continue
        row = group.iloc[0].to_dict()
        row.pop("_input", None)
        row.update(metric=combination.name, score=np.nan, cached=False)
        rows.append(row)
        combined.add((model, task))
    return pd.DataFrame(rows, columns=[c for c in scores.columns if c != "_input"])


def with_combination(
    scores: pd.DataFrame,
    combination: Combination = DEFAULT_COMBINATION,
    priors: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """``scores`` plus the combined rows (any earlier rows of ``combination.name`` replaced)."""
    kept = scores[scores["metric"] != combination.name] if "metric" in scores else scores
    combined = combine_scores(kept, combination, priors)
    if combined.empty:
        return kept.reset_index(drop=True)
    return pd.concat([kept, combined], ignore_index=True)
