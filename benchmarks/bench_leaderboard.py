"""How long building and rendering the leaderboard takes as the model zoo grows.

Synthetic scores (standard normal LogME) for M models x T tasks, with 2 % of the pairs failed
and 2 % never scored, plus random costs. Times ``build_leaderboard``, ``to_html`` and
``to_markdown``, and reports the page size. No I/O, no Ray.

Run (a few seconds)::

    .venv/bin/python benchmarks/bench_leaderboard.py [--sizes 50x10 300x30 1000x50]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from ray_logme.leaderboard import build_leaderboard, to_html, to_markdown


def synthetic_tables(num_models: int, num_tasks: int, seed: int = 0):
    """(scores, models) tables in the docs/design.md schemas."""
    rng = np.random.default_rng(seed)
    rows = []
    for model in range(num_models):
        for task in range(num_tasks):
            draw = rng.random()
            if draw < 0.02:
                continue  # never scored
            failed = draw < 0.04
            rows.append(
                {
                    "run_id": "bench",
                    "model": f"model_{model}",
                    "model_key": f"model_{model}-key",
                    "task": f"task_{task}",
                    "task_key": f"task_{task}-key",
                    "kind": "classification",
                    "metric": "logme",
                    "score": np.nan if failed else rng.normal(),
                    "state": "failed" if failed else "ok",
                    "error": "FeatureError: synthetic" if failed else "",
                }
            )
    models = pd.DataFrame(
        {
            "model": [f"model_{i}" for i in range(num_models)],
            "hub": "timm",
            "num_params": rng.uniform(1e6, 1e9, num_models),
            "feature_dim": rng.integers(64, 4096, num_models).astype(float),
            "throughput": rng.uniform(10, 5000, num_models),
            "state": "ok",
        }
    )
    return pd.DataFrame(rows), models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["50x10", "300x30", "1000x50"])
    args = parser.parse_args()
    print("| models x tasks | build (s) | HTML (s) | HTML size (MB) | Markdown (s) | complete |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        num_models, num_tasks = (int(part) for part in size.split("x"))
        scores, models = synthetic_tables(num_models, num_tasks)
        start = time.perf_counter()
        board = build_leaderboard(scores, models)
        built = time.perf_counter()
        page = to_html(board)
        rendered = time.perf_counter()
        to_markdown(board)
        done = time.perf_counter()
        print(
            f"| {num_models} x {num_tasks} | {built - start:.2f} | {rendered - built:.2f} | "
            f"{len(page) / 1e6:.2f} | {done - rendered:.2f} | {int(board.overall['complete'].sum())} |"
        )


if __name__ == "__main__":
    main()
