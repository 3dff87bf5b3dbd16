"""Extract-stage throughput: the Ray pipeline against a bare single-process torch loop.

    python benchmarks/bench_extract.py                            # CPU, this machine
    python benchmarks/bench_extract.py --workers 1 2 --cpus-per-worker 0.5   # scaling
    python benchmarks/bench_extract.py --device cuda --model resnet50 --rows 8192 \
        --batch-size 256 --shard-rows 1024 --workers 1 --num-cpus 16   # on a GPU machine

Both sides use the same model (random init: nothing to download), the same batch size and the
same inputs: the built-in sklearn digits images as stored (PNG bytes), repeated up to
``--rows``, resized by the model's own eval transform.

* **bare loop**: inputs decoded and preprocessed up front, then a timed loop of forward passes
  in one process with ``torch.set_num_threads(threads per worker)``. This is the ceiling: no
  decoding, no I/O, no Ray. It runs before *and* after the pipeline runs (this machine's speed
  drifts by +-20% within minutes: other tenants), and the mean of the two is the baseline.
* **pipeline**: :func:`ray_logme.extract.extract` on a fresh local store: Ray Data reads the
  task shards, decodes images in CPU tasks, runs the model in an actor pool and commits Parquet
  shards. Printed: its steady-state rate (``ModelRecord.pipeline_throughput``: rows per second
  from its first output to its last, every stage included, start-up excluded), its start-up
  (actor spawn, imports, model build, first batch), the end-to-end rate, and the forward rate
  inside the actors.

The headline ratio is ``steady-state pipeline rate / (bare rate x workers)`` (goal: >= 0.85).
With ``--device cuda`` the script also samples ``nvidia-smi`` GPU utilisation during the bare
loop and during the pipeline's steady state.
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
    """Sample GPU utilisation (%) every 0.2 s; returns (stop_event, [(perf_counter, util)])."""
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
                samples.append((time.perf_counter(), float(out.stdout.split()[0])))
            time.sleep(0.2)

    threading.Thread(target=run, daemon=True).start()
    return stop, samples


def mean_util(samples, since: float = 0.0) -> float | None:
    values = [util for when, util in samples if when >= since]
    return float(np.mean(values)) if values else None


def bare_loop(extractor, tensors, batch_size: int, device: str) -> dict:
    import torch

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
        "gpu_util": mean_util(samples),
    }


def pipeline_run(spec, task_spec, args, workers: int) -> dict:
    from ray_logme.config import Resources
    from ray_logme.extract import extract
    from ray_logme.storage import FeatureStore
    from ray_logme.tasks import snapshot_task

    folder = tempfile.mkdtemp(prefix="bench-extract-")
    try:
        store = FeatureStore(folder)
        snapshot = snapshot_task(task_spec, store)
        stop, samples = gpu_sampler(args.device == "cuda")
        start = time.perf_counter()
        result = extract(
            [spec],
            {"task": snapshot},
            store,
            "bench",
            resources=Resources(
                num_workers=workers,
                gpus_per_worker=1.0 if args.device == "cuda" else 0.0,
                cpus_per_worker=args.cpus_per_worker,
                preprocess_cpus=args.preprocess_cpus,
                batch_size=args.batch_size,
            ),
            progress=False,
        )
        seconds = time.perf_counter() - start
        stop.set()
        (pair,) = result.pairs
        (record,) = result.models
        if pair.state != "ok":
            raise RuntimeError(f"pipeline failed: {pair.error}")
        return {
            "rows": pair.rows_computed,
            "seconds": seconds,
            "rows_per_s": pair.rows_computed / seconds,
            "startup_seconds": record.startup_seconds,
            "steady_rows_per_s": record.pipeline_throughput,
            "actor_forward_rows_per_s": record.throughput,
            "gpu_util": mean_util(samples, since=start + (record.startup_seconds or 0.0)),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet10t", help="timm model (random init)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--rows", type=int, default=3072)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-rows", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--preprocess-cpus", type=float, default=0.5)
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    import torch

    from ray_logme.hub import ModelSpec, load_extractor
    from ray_logme.tasks import TaskSpec, builtin_table

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spec = ModelSpec(hub="timm", name=args.model, pretrained=False)
    # The digits images (PNG bytes, as the built-in task stores them), repeated up to --rows.
    digits = builtin_table("sklearn:digits")
    take = np.arange(args.rows) % digits.num_rows
    table = pa.table(
        {"image": digits.column("image").take(take), "label": digits.column("label").take(take)}
    )
    task_dir = Path(tempfile.mkdtemp(prefix="bench-extract-task-"))
    pq.write_table(table, task_dir / "digits.parquet")
    task_spec = TaskSpec(
        name="digits",
        uri=str(task_dir / "digits.parquet"),
        input_column="image",
        label_column="label",
        modality="image",
        kind="classification",
        shard_rows=args.shard_rows,
    )

    threads = max(1, int(args.cpus_per_worker))
    torch.set_num_threads(threads)
    extractor = load_extractor(spec, device=args.device)
    tensors = extractor.preprocess(table.column("image").to_pylist())["pixel_values"]

    def run_bare(when: str) -> dict:
        bare = bare_loop(extractor, tensors, args.batch_size, args.device)
        print(
            f"bare loop   {args.model} on {args.device} ({threads} thread(s), batch "
            f"{args.batch_size}), {when}: {bare['rows']} rows in {bare['seconds']:.2f} s = "
            f"{bare['rows_per_s']:.1f} rows/s"
            + (f", GPU util {bare['gpu_util']:.0f}%" if bare["gpu_util"] is not None else "")
        )
        return bare

    bare_before = run_bare("before")
    ray.init(
        address="local",
        num_cpus=args.num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    runs = {}
    for workers in args.workers:
        runs[workers] = run = pipeline_run(spec, task_spec, args, workers)
        print(
            f"pipeline    {workers} worker(s): steady state {run['steady_rows_per_s']:.1f} rows/s "
            f"after {run['startup_seconds']:.1f} s start-up; end to end {run['rows']} rows in "
            f"{run['seconds']:.1f} s = {run['rows_per_s']:.1f} rows/s; forward inside each "
            f"actor {run['actor_forward_rows_per_s']:.1f} rows/s"
            + (f", GPU util {run['gpu_util']:.0f}%" if run["gpu_util"] is not None else "")
        )
    ray.shutdown()
    bare_after = run_bare("after")
    baseline = (bare_before["rows_per_s"] + bare_after["rows_per_s"]) / 2
    results = {"bare": [bare_before, bare_after], "baseline_rows_per_s": baseline, "pipeline": {}}
    for workers, run in runs.items():
        ratio = run["steady_rows_per_s"] / (baseline * workers)
        results["pipeline"][workers] = {**run, "ratio": ratio}
        scaling = run["steady_rows_per_s"] / runs[min(runs)]["steady_rows_per_s"]
        print(
            f"ratio       {workers} worker(s): steady-state pipeline / (bare {baseline:.1f} rows/s "
            f"x {workers}) = {ratio:.2f} (goal >= 0.85); end to end / (bare x {workers}) = "
            f"{run['rows_per_s'] / (baseline * workers):.2f}"
            + (f"; {scaling:.2f}x the {min(runs)}-worker rate" if workers != min(runs) else "")
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
