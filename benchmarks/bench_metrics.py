"""Which ranking should be the default? Every metric, candidate combinations and baselines, on the
controlled zoo (to choose) and on the public tables (to check the frozen choice, unchanged).

1. **Controlled zoo** (``--zoo DIR``: the output folder of ``benchmarks/bench_ranking.py``, whose
   ``frozen.csv`` has a ``metric_<name>`` column per registered metric): mean tau_w over the
   targets (95% bootstrap CI over targets) per protocol for every metric, the candidate
   combinations declared in :data:`CANDIDATES`, and the baselines (source accuracy above chance,
   the zoo's stand-in for an ImageNet-top-1 prior; parameter count); paired differences against
   LogME and against the prior. The rule, fixed before looking: among the candidates whose
   metrics cost at most :data:`COST_BUDGET` x the extraction seconds on the zoo, the one with the
   highest mean tau_w averaged over both protocols is the default; ties go to the one with fewer
   inputs (if no candidate is within budget, the cheapest).
   The frozen :data:`ray_logme.combination.DEFAULT_COMBINATION` must be that candidate (the
   script says whether it is).
2. **Public tables** (``--groundtruth DIR``): the frozen default restricted to the inputs each
   table has (stable_transfer: logme, nleep, gbc + ImageNet top-1; TLlib: LogME + ImageNet
   top-1), against LogME alone and the prior alone, per protocol, with paired differences.
3. **Cost**: per-metric seconds per pair against the extraction seconds of the same pair (zoo).

Run::

    .venv/bin/python benchmarks/bench_metrics.py --zoo /tmp/zoo --groundtruth ../shared/groundtruth
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ray_logme import evaluate as ev
from ray_logme.combination import DEFAULT_COMBINATION, PRIOR, Combination, combine_scores

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGENET_TOP1_CSV = REPO_ROOT / "tests" / "data" / "imagenet_top1_published.csv"
ALL_METRICS = ("logme", "shrinkage_hscore", "hscore", "nleep", "sfda", "gbc", "knn")
SIX = ("logme", "shrinkage_hscore", "nleep", "sfda", "gbc", "knn")
#: Declared before the zoo was scored; the default is chosen among these by the rule above.
CANDIDATES = {
    "six metrics + prior": Combination("c1", SIX, use_prior=True),
    "six metrics": Combination("c2", SIX, use_prior=False),
    "LogME + prior": Combination("c3", ("logme",), use_prior=True),
    "LogME + NLEEP + SFDA + prior": Combination("c4", ("logme", "nleep", "sfda"), use_prior=True),
    "five metrics without NLEEP + prior": Combination(
        "c5", ("logme", "shrinkage_hscore", "sfda", "gbc", "knn"), use_prior=True
    ),
}
#: The issue's cost budget: the default's metrics may cost at most this times the extraction.
COST_BUDGET = 0.25


def _fmt(interval: ev.ConfidenceInterval) -> str:
    return f"{interval.estimate:+.3f} [{interval.low:+.3f}, {interval.high:+.3f}]"


def _mean_ci(evaluation: ev.RankingEvaluation, statistic: str = "weighted_tau") -> str:
    row = evaluation.summary.set_index("statistic").loc[statistic]
    return f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def _paired(a: ev.RankingEvaluation, b: ev.RankingEvaluation, num_bootstrap: int):
    joined = a.per_task[["task", "weighted_tau"]].merge(
        b.per_task[["task", "weighted_tau"]], on="task", suffixes=("_a", "_b")
    )
    return ev.paired_difference_over_tasks(
        joined["weighted_tau_a"], joined["weighted_tau_b"], num_bootstrap=num_bootstrap, seed=0
    )


# ---------------------------------------------------------------------------------------------
# Controlled zoo


def load_zoo(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float], pd.DataFrame]:
    """``(scores long table, truth, prior per model, frozen table)`` of a bench_ranking output."""
    zoo = pd.read_csv(directory / "zoo.csv")
    frozen = pd.read_csv(directory / "frozen.csv")
    finetune = pd.read_csv(directory / "finetune_runs.csv")
    rows = []
    for metric in ALL_METRICS:
        column = f"metric_{metric}"
        rows.append(
            pd.DataFrame(
                {
                    "model": frozen["model"],
                    "task": frozen["task"],
                    "metric": metric,
                    "score": frozen[column],
                    "seconds": frozen[f"{column}_seconds"],
                    "state": "ok",
                }
            )
        )
    scores = pd.concat(rows, ignore_index=True)
    truth = [
        frozen[["model", "task", "linear_probe"]]
        .rename(columns={"linear_probe": "accuracy"})
        .assign(protocol=ev.PROTOCOL_LINEAR_PROBE)
    ]
    if not finetune.empty:
        tuned = finetune.groupby(["model", "task"], as_index=False)["accuracy"].mean()
        truth.append(tuned.assign(protocol=ev.PROTOCOL_FINE_TUNE))
    prior = dict(
        zip(zoo["model"], (zoo["source_accuracy"] - zoo["chance"]).fillna(0.0), strict=True)
    )
    frozen = frozen.merge(zoo[["model", "num_params"]], on="model")
    return scores, pd.concat(truth, ignore_index=True), prior, frozen


def evaluate_zoo_rankings(
    directory: Path, num_bootstrap: int, cost_csv: Path | None = None
) -> tuple[str, str]:
    scores, truth_all, prior, frozen = load_zoo(directory)
    lines = [f"## Controlled zoo ({directory})", ""]
    options = {"num_bootstrap": num_bootstrap, "seed": 0}
    candidate_means: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    default_key = next(
        (
            name
            for name, c in CANDIDATES.items()
            if c.metrics == DEFAULT_COMBINATION.metrics
            and c.use_prior == DEFAULT_COMBINATION.use_prior
        ),
        None,
    )
    for protocol, truth in truth_all.groupby("protocol", sort=False):
        truth = truth[["model", "task", "accuracy"]]
        evaluations: dict[str, ev.RankingEvaluation] = {}
        for metric in ALL_METRICS:
            evaluations[metric] = ev.evaluate_ranking(scores, truth, metric=metric, **options)
        prior_table = truth[["model", "task"]].assign(score=truth["model"].map(prior))
        evaluations["prior (source accuracy)"] = ev.evaluate_ranking(prior_table, truth, **options)
        params = frozen[["model", "task", "num_params"]].rename(columns={"num_params": "score"})
        evaluations["parameter count"] = ev.evaluate_ranking(params, truth, **options)
        for name, combination in CANDIDATES.items():
            combined = combine_scores(scores, combination, prior)
            evaluations[name] = ev.evaluate_ranking(combined, truth, **options)
            summary = evaluations[name].summary.set_index("statistic")
            candidate_means[name].append(float(summary.loc["weighted_tau", "mean"]))
        rows = []
        for name, evaluation in evaluations.items():
            summary = evaluation.summary.set_index("statistic")
            rows.append(
                {
                    "ranking by": name,
                    "tau_w mean [95% CI]": _mean_ci(evaluation),
                    "kendall tau": summary.loc["kendall_tau", "mean"],
                    "top1 rel. acc": summary.loc["top1_rel_acc", "mean"],
                    "minus LogME [95% CI]": ""
                    if name == "logme"
                    else _fmt(_paired(evaluation, evaluations["logme"], num_bootstrap)),
                    "minus prior [95% CI]": ""
                    if name == "prior (source accuracy)"
                    else _fmt(
                        _paired(evaluation, evaluations["prior (source accuracy)"], num_bootstrap)
                    ),
                }
            )
        lines += [
            f"### {protocol} ({truth.task.nunique()} targets, {truth.model.nunique()} models)",
            "",
        ]
        lines += [ev.frame_to_markdown(pd.DataFrame(rows), 3), ""]
    averaged = {name: float(np.mean(values)) for name, values in candidate_means.items()}
    cost = frozen[[c for c in frozen.columns if c.endswith("_seconds") and c.startswith("metric_")]]
    per_metric = cost.sum() / frozen["extract_seconds"].sum()
    cost_source = "timed inside the zoo run's workers"
    if cost_csv is not None:  # re-timed quietly by bench_metric_cost.py
        quiet = pd.read_csv(cost_csv)
        per_metric = pd.Series(
            quiet["/ extraction"].to_numpy(), index=[f"metric_{m}_seconds" for m in quiet["metric"]]
        )
        cost_source = f"from {cost_csv} (bench_metric_cost.py)"
    cost_of = {
        name: float(sum(per_metric[f"metric_{m}_seconds"] for m in c.metrics))
        for name, c in CANDIDATES.items()
    }
    affordable = [n for n in CANDIDATES if cost_of[n] <= COST_BUDGET] or [
        min(cost_of, key=cost_of.get)
    ]
    chosen = max(affordable, key=lambda n: (round(averaged[n], 6), -len(CANDIDATES[n].inputs())))
    lines += [
        "### Choice of the default (mean tau_w averaged over protocols)",
        "",
        *[
            f"- {name}: {value:.3f} (metric cost {cost_of[name]:.3f} x extraction)"
            for name, value in averaged.items()
        ],
        "",
        f"Chosen by the rule: **{chosen}**. Frozen DEFAULT_COMBINATION is "
        f"**{default_key or 'not a candidate'}**"
        + (" (they agree)." if chosen == default_key else " (THEY DIFFER)."),
        "",
    ]
    default_cost = sum(per_metric[f"metric_{m}_seconds"] for m in DEFAULT_COMBINATION.metrics)
    lines += [
        f"### Cost: metric seconds / extraction seconds ({cost_source})",
        "",
        *[f"- {name[7:-8]}: {value:.3f}" for name, value in per_metric.items()],
        f"- default metrics together: {default_cost:.3f}",
        "",
    ]
    return "\n".join(lines), chosen


# ---------------------------------------------------------------------------------------------
# Public tables


def evaluate_public(directory: Path, num_bootstrap: int) -> str:
    options = {"num_bootstrap": num_bootstrap, "seed": 0}
    top1 = pd.read_csv(IMAGENET_TOP1_CSV)
    lines = ["## Public tables: the frozen default, restricted to each table's inputs", ""]
    rows = []

    def compare(table: str, protocol: str, scores: pd.DataFrame, truth: pd.DataFrame, prior, logme):
        available = [*sorted(set(scores["metric"])), PRIOR]
        restricted = DEFAULT_COMBINATION.restricted(available)
        combined = combine_scores(scores, restricted, prior)
        default = ev.evaluate_ranking(combined, truth, **options)
        logme_eval = ev.evaluate_ranking(scores, truth, metric=logme, **options)
        prior_table = truth[["model", "task"]].assign(score=truth["model"].map(prior))
        prior_eval = ev.evaluate_ranking(prior_table, truth, **options)
        rows.append(
            {
                "table / protocol": f"{table} / {protocol}",
                "inputs": ", ".join(restricted.inputs()),
                "default tau_w": _mean_ci(default),
                "LogME tau_w": _mean_ci(logme_eval),
                "ImageNet top-1 tau_w": _mean_ci(prior_eval),
                "default - LogME": _fmt(_paired(default, logme_eval, num_bootstrap)),
                "default - top-1": _fmt(_paired(default, prior_eval, num_bootstrap)),
            }
        )

    stable = ev.load_stable_transfer_table(directory / ev.STABLE_TRANSFER_FILE)
    keras_top1 = dict(
        top1[top1.table == "stable_transfer"][["model", "imagenet_top1"]].itertuples(index=False)
    )
    for protocol in (ev.PROTOCOL_LINEAR_PROBE, ev.PROTOCOL_FINE_TUNE):
        subset = stable[stable.protocol == protocol]
        truth = subset[subset.metric == "logme"][["model", "task", "accuracy"]]
        scores = subset[["model", "task", "metric", "score"]].assign(state="ok", seconds=0.0)
        compare("stable_transfer", protocol, scores, truth, keras_top1, "logme")
    tllib = ev.load_tllib_tables(directory)
    tv_top1 = dict(top1[top1.table == "tllib"][["model", "imagenet_top1"]].itertuples(index=False))
    renamed = tllib.scores.assign(metric=tllib.scores["metric"].replace({"LogME": "logme"}))
    scores = renamed[["model", "task", "metric", "score"]].assign(state="ok", seconds=0.0)
    compare("tllib", "fine-tuned", scores, tllib.truth, tv_top1, "logme")
    lines += [ev.frame_to_markdown(pd.DataFrame(rows), 3), ""]
    lines += [
        "Inputs each table has: stable_transfer scores logme, nleep, gbc, leep, hscore (plain "
        "H-score, not an input of the default) for 19 Keras models x 9 datasets; TLlib scores "
        "LogME, HScore, LEEP, NCE for 10 torchvision models x 8 datasets. ImageNet top-1 from "
        "tests/data/imagenet_top1_published.csv.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", default=None, help="output folder of bench_ranking.py")
    parser.add_argument("--groundtruth", default=str(REPO_ROOT.parent / "shared" / "groundtruth"))
    parser.add_argument("--num-bootstrap", type=int, default=2000)
    parser.add_argument("--output", default=None, help="also write the report here (markdown)")
    parser.add_argument("--cost", default=None, help="per-metric cost CSV of bench_metric_cost.py")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    parts = []
    if args.zoo:
        cost = Path(args.cost) if args.cost else None
        text, _ = evaluate_zoo_rankings(Path(args.zoo), args.num_bootstrap, cost)
        parts.append(text)
    parts.append(evaluate_public(Path(args.groundtruth), args.num_bootstrap))
    report = "\n".join(parts)
    print(report)
    if args.output:
        Path(args.output).write_text(report)


if __name__ == "__main__":
    main()
