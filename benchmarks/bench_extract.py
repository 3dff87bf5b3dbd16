"""Extract-stage throughput: the Ray pipeline against a bare single-process torch loop.

    python benchmarks/bench_extract.py                       # CPU, this machine
    python benchmarks/bench_extract.py --workers 1 2         # scaling with model actors
    python benchmarks/bench_extract.py --device cuda --model resnet50 --rows 1797 \
        --batch-size 256 --shard-rows 256 --workers 1        # on a GPU machine

Both sides use the same model (random init: nothing to download), the same batch size and the
same inputs (the built-in sklearn digits task as PNG bytes, resized by the model's own
preprocessing).

* **bare loop**: inputs decoded and preprocessed up front, then a timed loop of forward passes
  in one process with ``torch.set_num_threads(cpus_per_worker)`` (the actor's share of CPUs).
  This is the ceiling: no decoding, no I/O, no Ray.
* **pipeline**: :func:`ray_logme.extract.extract` on a fresh local store: Ray Data reads the
  task shards, decodes images in CPU tasks, runs the model in an actor pool and commits Parquet
  shards. Printed: the end-to-end rate (start-up included: actor spawn, imports, model
  build, ~20 s here) and the rate of the model's forward pass inside each actor (timed by the
  actor per batch, while decoding and I/O run beside it).

The ratio ``actor forward rate / bare loop rate`` is the per-worker efficiency (goal: >= 0.85);
on a machine whose CPUs are shared between decoding and the model (2 cores here) it also shows
how much the CPU stage takes from the model. A steady-state rate from shard commit times was
tried and dropped: commits arrive in bursts, which overstated it above the forward-only rate. With ``--device cuda`` the script also samples ``nvidia-smi`` GPU utilisation during
both phases.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def gpu_sampler(enabled: bool):
    """Start sampling GPU utilisation (%) every 0.2 s; returns (stop_event, samples)."""
    stop, samples = threading.Event(), []
    if not enabled or shutil.which("nvidia-smi") is None:
        return stop, samples

    def run():
        while not stop.is_set():
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            )
            if out.returncode == 0 and out.stdout.strip():
                samples.append(float(out.stdout.split()[0]))
            time.sleep(0.2)

    threading.Thread(target=run, daemon=True).start()
    return stop, samples


def bare_loop(spec, inputs, batch_size: int, device: str, threads: int) -> dict:
    import torch

    from ray_logme.hub import load_extractor

    torch.set_num_threads(threads)
    extractor = load_extractor(spec, device=device)
    tensors = extractor.preprocess(inputs)["pixel_values"]  # decoded up front: not timed
    warm = tensors[: min(batch_size, len(tensors))]
    extractor({"pixel_values": warm})  # warm-up (allocator, cudnn autotune)
    if device == "cuda":
        torch.cuda.synchronize()
    stop, samples = gpu_sampler(device == "cuda")
    start = time.perf_counter()
    for begin in range(0, len(tensors), batch_size):
        extractor({"pixel_values": tensors[begin : begin + batch_size]})
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    stop.set()
    return {
        "rows": len(tensors),
        "seconds": seconds,
        "rows_per_s": len(tensors) / seconds,
        "gpu_util": float(np.mean(samples)) if samples else None,
    }


def pipeline_run(spec, task_spec, rows: int, args, workers: int) -> dict:
    from ray_logme.extract import extract
    from ray_logme.storage import FeatureStore
    from ray_logme.tasks import snapshot_task

    folder = tempfile.mkdtemp(prefix="bench-extract-")
    try:
        store = FeatureStore(folder)
        snapshot = snapshot_task(
            task_spec.model_copy(update={"max_samples": rows, "shard_rows": args.shard_rows}),
            store,
        )
        stop, samples = gpu_sampler(args.device == "cuda")
        start = time.perf_counter()
        result = extract(
            [spec],
            {"task": snapshot},
            store,
            "bench",
            num_workers=workers,
            gpus_per_worker=1.0 if args.device == "cuda" else 0.0,
            cpus_per_worker=args.cpus_per_worker,
            preprocess_cpus=args.preprocess_cpus,
            batch_size=args.batch_size,
            progress=False,
        )
        seconds = time.perf_counter() - start
        stop.set()
        (pair,) = result.pairs
        if pair.state != "ok":
            raise RuntimeError(f"pipeline failed: {pair.error}")
        return {
            "rows": pair.rows_computed,
            "seconds": seconds,
            "rows_per_s": pair.rows_computed / seconds,
            "actor_forward_rows_per_s": result.models[0].throughput,
            "gpu_util": float(np.mean(samples)) if samples else None,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet10t", help="timm model (random init)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--rows", type=int, default=1536)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-rows", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--preprocess-cpus", type=float, default=0.5)
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import ray

    from ray_logme.hub import ModelSpec
    from ray_logme.tasks import TaskSpec, builtin_table

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spec = ModelSpec(hub="timm", name=args.model, pretrained=False)
    task_spec = TaskSpec(name="digits", uri="sklearn:digits")
    table = builtin_table("sklearn:digits")
    images = table.column("image").to_pylist()
    if args.rows > len(images):
        print(f"note: the digits task has {len(images)} rows; rows are capped there")
        args.rows = len(images)
    inputs = images[: args.rows]  # PNG bytes, as stored

    threads = max(1, int(args.cpus_per_worker))
    bare = bare_loop(spec, inputs, args.batch_size, args.device, threads)
    print(
        f"bare loop   {args.model} on {args.device} ({threads} thread(s), batch {args.batch_size}): "
        f"{bare['rows']} rows in {bare['seconds']:.2f} s = {bare['rows_per_s']:.1f} rows/s"
        + (f", GPU util {bare['gpu_util']:.0f}%" if bare["gpu_util"] is not None else "")
    )

    ray.init(
        address="local",
        num_cpus=args.num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    results = {"bare": bare, "pipeline": {}}
    for workers in args.workers:
        run = pipeline_run(spec, task_spec, args.rows, args, workers)
        in_pipeline = run["actor_forward_rows_per_s"] / bare["rows_per_s"]
        end_to_end = run["rows_per_s"] / (bare["rows_per_s"] * workers)
        results["pipeline"][workers] = {
            **run,
            "forward_ratio": in_pipeline,
            "end_to_end_ratio": end_to_end,
        }
        print(
            f"pipeline    {workers} worker(s): {run['rows']} rows in {run['seconds']:.1f} s = "
            f"{run['rows_per_s']:.1f} rows/s end to end (start-up included); the model's "
            f"forward inside each actor {run['actor_forward_rows_per_s']:.1f} rows/s"
            + (f", GPU util {run['gpu_util']:.0f}%" if run["gpu_util"] is not None else "")
        )
        print(
            f"ratio       per-worker forward in the pipeline / bare = {in_pipeline:.2f} "
            f"(goal >= 0.85); end to end / (bare x {workers}) = {end_to_end:.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
