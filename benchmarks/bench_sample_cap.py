"""What the per-pair sample cap does to the sample-based metrics (NLEEP, SFDA, GBC, kNN).

Features: the shipped default zoo (``ray_logme/zoo``: four pre-trained ``resnet10t`` members and
the random-init baseline) on all 1,797 images of ``sklearn:digits`` (10 classes), through
``ray_logme.hub.load_extractor``. For each cap, several seeds draw the reduce stage's stratified
sample (:func:`ray_logme.metrics.sampling.sample_mask`) and each metric is scored on it. Reported
per (metric, cap): the mean absolute change of the score against the uncapped score (relative to
the spread of the uncapped scores over the models), Kendall tau between the capped and uncapped
model rankings (mean over seeds), and the seconds per pair::

    .venv/bin/python benchmarks/bench_sample_cap.py [--caps 100 250 500 1000] [--seeds 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

MEMBERS = ("shapes", "shapes-brief", "textures", "digits0-4")
SAMPLE_METRICS = ("nleep", "sfda", "gbc", "knn")


def digits_features() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import torch

    from ray_logme.hub import ModelSpec, load_extractor
    from ray_logme.tasks import builtin_table

    torch.set_num_threads(1)
    table = builtin_table("sklearn:digits")
    images = table.column("image").to_pylist()
    labels = table.column("label").to_numpy()
    out = {}
    for member, pretrained in [(m, True) for m in MEMBERS] + [("shapes", False)]:
        spec = ModelSpec(hub="timm", name=f"pkg:ray_logme/zoo/{member}", pretrained=pretrained)
        name = member if pretrained else f"{member} [random-init]"
        out[name] = (load_extractor(spec, device="cpu").extract(images, batch_size=256), labels)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caps", type=int, nargs="+", default=[100, 250, 500, 1000])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from threadpoolctl import threadpool_limits

    from ray_logme.evaluate import frame_to_markdown
    from ray_logme.metrics import get_metric
    from ray_logme.metrics.sampling import sample_mask

    features = digits_features()
    models = list(features)
    rows = []
    with threadpool_limits(1):
        full = {}
        full_seconds = {}
        for metric in SAMPLE_METRICS:
            values, seconds = [], []
            for model in models:
                x, y = features[model]
                started = time.perf_counter()
                values.append(get_metric(metric).score_sample(x, y, "classification")[0])
                seconds.append(time.perf_counter() - started)
            full[metric], full_seconds[metric] = np.array(values), float(np.mean(seconds))
            rows.append(
                {
                    "metric": metric,
                    "cap": "all (1797)",
                    "mean |change| / model spread": 0.0,
                    "kendall tau vs all": 1.0,
                    "min tau over seeds": 1.0,
                    "seconds per pair": full_seconds[metric],
                }
            )
        for cap in args.caps:
            for metric in SAMPLE_METRICS:
                changes, taus, seconds = [], [], []
                for seed in range(args.seeds):
                    values = []
                    for model in models:
                        x, y = features[model]
                        keep = sample_mask(np.arange(len(y)), y, "classification", cap, seed)
                        started = time.perf_counter()
                        values.append(
                            get_metric(metric).score_sample(x[keep], y[keep], "classification")[0]
                        )
                        seconds.append(time.perf_counter() - started)
                    values = np.array(values)
                    spread = np.ptp(full[metric]) or 1.0
                    changes.append(np.mean(np.abs(values - full[metric])) / spread)
                    taus.append(kendalltau(values, full[metric]).statistic)
                rows.append(
                    {
                        "metric": metric,
                        "cap": str(cap),
                        "mean |change| / model spread": float(np.mean(changes)),
                        "kendall tau vs all": float(np.mean(taus)),
                        "min tau over seeds": float(np.min(taus)),
                        "seconds per pair": float(np.mean(seconds)),
                    }
                )
    table = pd.DataFrame(rows).sort_values(["metric", "cap"], key=lambda c: c.map(_order))
    print(f"## Sample cap: {len(models)} shipped zoo models x sklearn:digits (1797 rows)\n")
    print(frame_to_markdown(table, 3))
    print("\nUncapped scores:\n")
    print(frame_to_markdown(pd.DataFrame(full, index=models).reset_index(names="model"), 4))


def _order(value):
    return (
        int(value) if str(value).isdigit() else (10**9 if str(value).startswith("all") else value)
    )


if __name__ == "__main__":
    main()
