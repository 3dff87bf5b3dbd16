"""A SIMULATED hub night: 1,000 models x 3 tasks on 8 declared GPUs, on this CPU machine.

    python benchmarks/bench_hub_sim.py                       # 1,000 models, 8 slots, + rerun
    python benchmarks/bench_hub_sim.py --models 200          # quicker
    python benchmarks/bench_hub_sim.py --memory --gigabytes 5   # driver RSS while 5 GB are written

The models are :class:`ray_logme.extract.simulated.SimulatedHub` models (a simulation: seeded
features after a start-up sleep and a per-row sleep; start-ups and per-row costs log-uniform,
so skewed). The cluster is a local Ray with ``num_gpus=8`` declared (no GPU is touched): one
worker per "GPU". Everything else is real: the scheduler, the actors, the task snapshots, the
feature shards written to a local store. Reduce is not run (it is the same with or without
simulation).

Printed: makespan against the target ``total work / slots + longest start-up + longest unit``
(total work counts one start-up per model; goal <= 1.15x), slot utilisation (busy seconds /
(slots x pool seconds)), real CPU seconds (driver + Ray processes + worker CPU spent in units)
against simulated seconds (goal < 10%), model loads against models, and a fully committed rerun
(goal: no load, <= 2 minutes). ``--memory``: wide features, no delays, the driver's peak RSS
growth while >= ``--gigabytes`` GB of features are written (goal < 300 MB).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def descendants_cpu_seconds() -> float:
    """utime + stime of this process's living descendants (the Ray processes)."""
    me, ticks = os.getpid(), os.sysconf("SC_CLK_TCK")
    parents, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    total = 0.0
    for pid in cpu:
        walk = pid
        while walk in parents and walk not in (0, 1):
            walk = parents[walk]
            if walk == me:
                total += cpu[pid]
                break
    return total


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--startup", type=float, nargs=2, default=[0.05, 2.0])
    parser.add_argument("--seconds-per-row", type=float, nargs=2, default=[1e-4, 5e-3])
    parser.add_argument("--memory", action="store_true", help="the driver-memory benchmark")
    parser.add_argument("--gigabytes", type=float, default=5.0)
    args = parser.parse_args(argv)

    import ray

    from ray_logme.config import Resources
    from ray_logme.extract import extract
    from ray_logme.extract.simulated import SimulatedHub
    from ray_logme.storage import FeatureStore
    from ray_logme.tasks import TaskSpec, snapshot_task

    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=args.slots,
        object_store_memory=512 << 20,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    folder = Path(tempfile.mkdtemp(prefix="bench-hub-sim-"))
    try:
        store = FeatureStore(str(folder / "store"))
        sizes = {"digits-300": 300, "digits-200": 200, "digits-100": 100}
        snapshots = {
            name: snapshot_task(
                TaskSpec(name=name, uri="sklearn:digits", max_samples=rows, shard_rows=512), store
            )
            for name, rows in sizes.items()
        }
        rows_per_model = sum(s.info.num_rows for s in snapshots.values())
        resources = Resources(
            num_workers=args.slots,
            gpus_per_worker=1.0,
            cpus_per_worker=0.01,
            preprocess_cpus=0.5,
            wait_for_actors_s=120,
        )
        if args.memory:
            return memory_benchmark(args, store, snapshots, rows_per_model, resources)
        hub = SimulatedHub(
            seed=13,
            startup_seconds=tuple(args.startup),
            seconds_per_row=tuple(args.seconds_per_row),
            feature_dims=(16, 32, 64),
        )
        specs = hub.specs(args.models)
        infos = [hub.info(spec) for spec in specs]
        units = [
            info.seconds_per_row * snapshot.info.num_rows
            for info in infos
            for snapshot in snapshots.values()
        ]
        startups = [info.startup_seconds for info in infos]
        total_work = sum(units) + sum(startups)
        target = total_work / args.slots + max(startups) + max(units)
        print(
            f"SIMULATED hub: {len(specs)} models x {len(snapshots)} tasks ({rows_per_model} rows "
            f"per model) on {args.slots} declared GPUs; start-ups {min(startups):.2f}-"
            f"{max(startups):.2f} s, units {min(units):.3f}-{max(units):.2f} s; total simulated "
            f"work {total_work:.0f} s, target makespan {target:.1f} s",
            flush=True,
        )
        cpu_before, ray_cpu_before = self_cpu_seconds(), descendants_cpu_seconds()
        start = time.perf_counter()
        result = extract(specs, snapshots, store, "sim-1", resources=resources, progress=False,
                         model_source=hub)  # fmt: skip
        makespan = time.perf_counter() - start
        driver_cpu = self_cpu_seconds() - cpu_before
        ray_cpu = descendants_cpu_seconds() - ray_cpu_before
        failed = result.failed
        utilisation = result.worker_busy_seconds / (args.slots * result.pool_seconds)
        real_cpu = driver_cpu + ray_cpu + result.worker_cpu_seconds
        print(
            f"makespan {makespan:.1f} s = {makespan / target:.3f}x the target (goal <= 1.15); "
            f"planning {makespan - result.pool_seconds:.1f} s, pool {result.pool_seconds:.1f} s; "
            f"slot utilisation {utilisation:.1%}"
        )
        print(
            f"real CPU {real_cpu:.1f} s (driver {driver_cpu:.1f}, Ray processes {ray_cpu:.1f}, "
            f"workers in units {result.worker_cpu_seconds:.1f}) = {real_cpu / total_work:.1%} of "
            f"the simulated {total_work:.0f} s (goal < 10%)"
        )
        print(
            f"model loads {result.model_loads} for {len(specs)} models; workers started "
            f"{result.workers_started}; failed pairs {len(failed)}"
            + (f" (first: {failed[0].error})" if failed else "")
        )
        start = time.perf_counter()
        again = extract(specs, snapshots, store, "sim-2", resources=resources, progress=False,
                        model_source=hub)  # fmt: skip
        rerun = time.perf_counter() - start
        print(
            f"fully committed rerun: {rerun:.1f} s (goal <= 120 s), model loads "
            f"{again.model_loads}, rows computed {again.forward_rows}, workers started "
            f"{again.workers_started}"
        )
        return 0
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


def memory_benchmark(args, store, snapshots, rows_per_model, resources) -> int:
    from ray_logme.extract import extract
    from ray_logme.extract.simulated import SimulatedHub

    width = 4096
    hub = SimulatedHub(seed=5, startup_seconds=(0.0, 0.0), seconds_per_row=(0.0, 0.0),
                       feature_dims=(width,))  # fmt: skip
    count = int(args.gigabytes * 1e9 / (rows_per_model * width * 4)) + 1
    specs = hub.specs(count)
    baseline, peak, stop = rss_bytes(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    result = extract(specs, snapshots, store, "mem", resources=resources, progress=False,
                     model_source=hub)  # fmt: skip
    stop.set()
    thread.join()
    written = result.forward_rows * width * 4
    print(
        f"SIMULATED wide models: {count} models x {width} features, {written / 1e9:.2f} GB of "
        f"features written in {time.perf_counter() - start:.0f} s; driver RSS {baseline / 1e6:.0f}"
        f" MB before, peak growth {(peak[0] - baseline) / 1e6:.0f} MB (goal < 300 MB); failed "
        f"pairs {len(result.failed)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
