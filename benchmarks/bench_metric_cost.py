"""Seconds per pair of every metric against the extraction of the same rows, measured quietly.

The controlled zoo (``bench_ranking.py``) times metrics inside its worker processes while other
jobs share the machine; this re-times them in one process with one BLAS/torch thread: for each
zoo checkpoint given, extract the 300 target-train images of each target through
``ray_logme.hub.load_extractor`` (what the extract stage does for those rows), then score every
registered metric on those features (what the reduce stage does; the sample metrics see all 300
rows, below the default cap). Prints metric seconds / extraction seconds per metric::

    .venv/bin/python benchmarks/bench_metric_cost.py --zoo /tmp/zoo [--models 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", required=True, help="output folder of bench_ranking.py")
    parser.add_argument("--models", type=int, default=4, help="checkpoints to time (widest first)")
    parser.add_argument("--output", default=None, help="write the summary CSV here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from threadpoolctl import threadpool_limits

    from ray_logme.evaluate import frame_to_markdown
    from ray_logme.hub import ModelSpec, load_extractor
    from ray_logme.metrics import METRICS, is_sample_metric

    torch.set_num_threads(1)
    spec_path = Path(__file__).with_name("bench_ranking.py")
    spec = importlib.util.spec_from_file_location("bench_ranking", spec_path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_ranking"] = bench
    spec.loader.exec_module(bench)
    config = bench.BenchConfig.quick()
    zoo = pd.read_csv(Path(args.zoo) / "zoo.csv").sort_values("num_params", ascending=False)
    rows = []
    with threadpool_limits(1):
        for name in zoo["model"].head(args.models):
            extractor = load_extractor(
                ModelSpec(hub="timm", name=f"local-dir:{Path(args.zoo) / 'zoo' / name}"),
                device="cpu",
            )
            for target in config.targets:
                task = bench.make_task(target, config.target_train, config.target_test, config.seed)
                images = list(task.train_images)
                extractor.extract(images[:8])  # warm up
                started = time.perf_counter()
                features = extractor.extract(images, batch_size=256)
                row = {"model": name, "task": target, "extract": time.perf_counter() - started}
                for metric_name, metric in sorted(METRICS.items()):
                    started = time.perf_counter()
                    if is_sample_metric(metric):
                        metric.score_sample(features, task.train_labels, "classification")
                    else:
                        stats = metric.new_stats("classification").update(
                            features, task.train_labels
                        )
                        metric.score(stats)
                    row[metric_name] = time.perf_counter() - started
                rows.append(row)
    table = pd.DataFrame(rows)
    metrics = sorted(METRICS)
    total = table["extract"].sum()
    summary = pd.DataFrame(
        {
            "metric": metrics,
            "seconds per pair": [table[m].mean() for m in metrics],
            "/ extraction": [table[m].sum() / total for m in metrics],
        }
    )
    print(
        f"## Metric cost, {len(table)} pairs, extraction {table['extract'].mean():.3f} s per pair "
        f"(300 images, 1 thread; load average {os.getloadavg()[0]:.1f})\n"
    )
    print(frame_to_markdown(summary, 3))
    if args.output:
        summary.to_csv(args.output, index=False)
    print(f"\nall but nleep: {summary[summary.metric != 'nleep']['/ extraction'].sum():.3f}")
    print(f"all: {summary['/ extraction'].sum():.3f}")


if __name__ == "__main__":
    main()
