"""Whole-job cost of an added model: `ray-logme refresh` with N models against a plain loop.

    python benchmarks/bench_scale.py                      # N = 1 4 16, median of 3, 2 CPUs
    python benchmarks/bench_scale.py --repeats 1 --counts 1 16

N distinct tiny models (the shipped zoo architecture, resnet10t at 32 px, random init with
seeds 0..N-1) x one 256-row sklearn-digits task. Each refresh is a fresh process
(``python -m ray_logme.cli refresh --no-progress``) on a fresh store: Ray start-up, task
snapshot, extract, reduce and leaderboard included. The baseline, measured in the same run, is a
plain single-process loop over the same models: import, build each model, decode and
preprocess the task's images, forward, LogME. Printed: wall times, the marginal cost of an added
model ``(T_max - T_min) / (N_max - N_min)`` for both (goal for the refresh: <= 1.0 s), and the
refresh's model loads (from its models table).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ZOO = "pkg:ray_logme/zoo/shapes"
ROWS = 256

PLAIN_LOOP = """
import sys, time
start = time.perf_counter()
import numpy as np, torch
from ray_logme.hub import ModelSpec, load_extractor
from ray_logme.metrics import logme
from ray_logme.tasks import builtin_table
torch.set_num_threads(1)
count = int(sys.argv[1])
table = builtin_table("sklearn:digits").slice(0, ROWS)
images = table.column("image").to_pylist()
labels = table.column("label").to_numpy()
for seed in range(count):
    spec = ModelSpec(hub="timm", name=ZOO, pretrained=False, init_seed=seed)
    extractor = load_extractor(spec, device="cpu")
    features = extractor.extract(images, batch_size=64)
    logme(features.astype(np.float64), labels)
print(time.perf_counter() - start)
""".replace("ROWS", str(ROWS)).replace("ZOO", repr(ZOO))


def config_for(count: int, store: Path, num_workers: int, cpus_per_worker: float) -> dict:
    return {
        "store": str(store),
        "models": [
            {"hub": "timm", "name": ZOO, "pretrained": False, "init_seed": seed}
            for seed in range(count)
        ],
        "tasks": [{"name": "digits", "uri": "sklearn:digits", "max_samples": ROWS}],
        "resources": {
            "num_workers": num_workers,
            "cpus_per_worker": cpus_per_worker,
            "preprocess_cpus": 0.5,
        },
        "run_id": f"scale-{count}",
    }


def run_refresh(count: int, args, env) -> tuple[float, dict]:
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        config = folder / "config.yaml"
        config.write_text(
            yaml.safe_dump(config_for(count, folder / "store", args.workers, args.cpus_per_worker))
        )
        command = [sys.executable, "-m", "ray_logme.cli", "refresh", "--config", str(config)]
        command += ["--no-progress", "--num-cpus", str(args.num_cpus)]
        start = time.perf_counter()
        out = subprocess.run(command, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if out.returncode != 0:
            raise RuntimeError(f"refresh failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        import pandas as pd

        models = pd.read_parquet(folder / "store" / "runs" / f"scale-{count}" / "models.parquet")
        info = {
            "loads": int(models["workers"].fillna(0).sum()),
            "console_lines": len((out.stdout + out.stderr).splitlines()),
            "errors": sum("ERROR" in line for line in (out.stdout + out.stderr).splitlines()),
        }
        return seconds, info
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_plain(count: int, env) -> float:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PLAIN_LOOP, str(count)], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    results = {}
    for count in args.counts:
        refresh, plain, infos = [], [], []
        for _ in range(args.repeats):  # interleaved: the machine's speed drifts
            seconds, info = run_refresh(count, args, env)
            refresh.append(seconds)
            infos.append(info)
            plain.append(run_plain(count, env))
        results[count] = {
            "refresh_s": statistics.median(refresh),
            "plain_s": statistics.median(plain),
            "refresh_all": refresh,
            "plain_all": plain,
            **infos[-1],
        }
        r = results[count]
        print(
            f"N={count:3d}: refresh {r['refresh_s']:6.1f} s (runs {', '.join(f'{x:.1f}' for x in refresh)}), "
            f"plain loop {r['plain_s']:5.1f} s; model loads {r['loads']}, console lines "
            f"{r['console_lines']}, ERROR lines {r['errors']}",
            flush=True,
        )
    low, high = min(results), max(results)
    if high > low:
        span = high - low
        marginal = (results[high]["refresh_s"] - results[low]["refresh_s"]) / span
        plain = (results[high]["plain_s"] - results[low]["plain_s"]) / span
        print(
            f"marginal cost of an added model: refresh {marginal:.2f} s (goal <= 1.0 s), "
            f"plain loop {plain:.2f} s"
        )
        results["marginal_refresh_s"], results["marginal_plain_s"] = marginal, plain
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
