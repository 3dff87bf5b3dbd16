"""Rank quality of published transferability scores against published fine-tuning accuracy.

Reproduces the README's "published ground truth" tables from ``tests/data/groundtruth`` (see its
README for sources and known inconsistencies) and ``tests/data/imagenet_top1_published.csv``
(ImageNet top-1 of the same architectures, with sources), using ``ray_logme.evaluate``::

    .venv/bin/python benchmarks/bench_published_groundtruth.py [--groundtruth tests/data/groundtruth]

Prints markdown: per-dataset tau_w of LogME for both protocols of the Google table, the mean
tau_w (95% bootstrap CI over datasets) of every metric and of the ImageNet top-1 baseline, and the
paired difference "ImageNet top-1 minus LogME".
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from ray_logme import evaluate as ev

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGENET_TOP1_CSV = REPO_ROOT / "tests" / "data" / "imagenet_top1_published.csv"


def _fmt(interval: ev.ConfidenceInterval) -> str:
    return f"{interval.estimate:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def _summary_row(name: str, evaluation: ev.RankingEvaluation) -> dict:
    summary = evaluation.summary.set_index("statistic")
    row = {"ranking by": name}
    for statistic in ("weighted_tau", "kendall_tau", "pearson", "top1_rel_acc"):
        mean, low, high = summary.loc[statistic, ["mean", "ci_low", "ci_high"]]
        row[statistic] = f"{mean:.3f} [{low:.3f}, {high:.3f}]"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groundtruth", default=str(REPO_ROOT / "tests" / "data" / "groundtruth"))
    parser.add_argument("--num-bootstrap", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    directory = Path(args.groundtruth)
    top1 = pd.read_csv(IMAGENET_TOP1_CSV)
    options = {"num_bootstrap": args.num_bootstrap, "seed": 0}

    stable = ev.load_stable_transfer_table(directory / ev.STABLE_TRANSFER_FILE)
    keras_top1 = top1[top1.table == "stable_transfer"][["model", "imagenet_top1"]]
    per_dataset = {}
    for protocol in (ev.PROTOCOL_LINEAR_PROBE, ev.PROTOCOL_FINE_TUNE):
        subset = stable[stable.protocol == protocol]
        truth = subset[subset.metric == "logme"][["model", "task", "accuracy"]]
        rows, evaluations = [], {}
        for metric in ("logme", "nleep", "gbc", "leep", "hscore"):
            evaluations[metric] = ev.evaluate_ranking(
                subset[subset.metric == metric], truth, **options
            )
            rows.append(_summary_row(metric, evaluations[metric]))
        baseline = truth[["model", "task"]].merge(keras_top1, on="model")
        evaluations["imagenet_top1"] = ev.evaluate_ranking(
            baseline, truth, score_col="imagenet_top1", **options
        )
        rows.append(_summary_row("ImageNet top-1", evaluations["imagenet_top1"]))
        difference = ev.paired_difference_over_tasks(
            evaluations["imagenet_top1"].per_task["weighted_tau"],
            evaluations["logme"].per_task["weighted_tau"],
            num_bootstrap=args.num_bootstrap,
        )
        print(f"\n### Google stable_transfer, {protocol} (19 models x 9 datasets)\n")
        print(ev.frame_to_markdown(pd.DataFrame(rows), 3))
        print(f"\ntau_w(ImageNet top-1) - tau_w(LogME), mean over datasets: {_fmt(difference)}")
        logme = evaluations["logme"].per_task.set_index("task")
        base = evaluations["imagenet_top1"].per_task.set_index("task")
        per_dataset[protocol] = logme["weighted_tau"].map("{:.3f}".format) + (
            " ["
            + logme["weighted_tau_ci_low"].map("{:.2f}".format)
            + ", "
            + logme["weighted_tau_ci_high"].map("{:.2f}".format)
            + "]"
        )
        per_dataset[f"{protocol} (ImageNet top-1)"] = base["weighted_tau"].map("{:.3f}".format)
    table = pd.DataFrame(per_dataset).reset_index()
    print("\n### Google stable_transfer: tau_w of LogME per dataset (95% CI over models)\n")
    print(ev.frame_to_markdown(table, 3))

    tllib = ev.load_tllib_tables(directory)
    rows, evaluations = [], {}
    for metric in ("LogME", "HScore", "LEEP", "NCE"):
        evaluations[metric] = ev.evaluate_ranking(
            tllib.scores[tllib.scores.metric == metric], tllib.truth, **options
        )
        rows.append(
            _summary_row(metric + (" (7 datasets)" if metric == "NCE" else ""), evaluations[metric])
        )
    tv_top1 = top1[top1.table == "tllib"][["model", "imagenet_top1"]]
    baseline = tllib.truth[["model", "task"]].merge(tv_top1, on="model")
    evaluations["top1"] = ev.evaluate_ranking(
        baseline, tllib.truth, score_col="imagenet_top1", **options
    )
    rows.append(_summary_row("ImageNet top-1", evaluations["top1"]))
    difference = ev.paired_difference_over_tasks(
        evaluations["top1"].per_task["weighted_tau"],
        evaluations["LogME"].per_task["weighted_tau"],
        num_bootstrap=args.num_bootstrap,
    )
    print("\n### TLlib model-selection benchmark (10 models x 8 datasets, fine-tuned accuracy)\n")
    print(ev.frame_to_markdown(pd.DataFrame(rows), 3))
    print(f"\ntau_w(ImageNet top-1) - tau_w(LogME), mean over datasets: {_fmt(difference)}")
    reproducible = evaluations["LogME"].per_task[
        ~evaluations["LogME"].per_task.task.isin(ev.TLLIB_UNREPRODUCIBLE_DATASETS)
    ]
    print(
        f"LogME mean tau_w without the README-flagged Aircraft/OxfordIIITPets: "
        f"{reproducible.weighted_tau.mean():.3f} over {len(reproducible)} datasets"
    )


if __name__ == "__main__":
    main()
