"""Benchmark: ray-logme's LogME against a step-by-step re-implementation of the original algorithm.

The baseline follows the authors' ``LogME._fit_fixed_point`` (thuml/LogME, JMLR version) in
float64: a float64 copy of F; for n > d the SVD of F^T F and then ``U S = F V``; for n <= d the
SVD of F; then, per class id 0..max(label), an independent fixed-point loop of at most 11 steps
(relative tolerance 1e-3 on alpha / beta, 1e-5 added to both denominators) and the evidence
formula of the paper (which drops the (d - k)/2 log(alpha) term when n <= d).

Every measurement runs in a fresh Python process so that peak memory is its own: the worker
generates the synthetic features chunk by chunk (float32, post-ReLU class-conditional Gaussians,
never a float64 copy), resets the kernel's peak-RSS counter (``/proc/self/clear_refs``), runs
one method, and reports wall time and ``VmHWM`` (peak resident memory, which includes BLAS and
LAPACK workspaces that ``tracemalloc`` cannot see). "extra" is the peak above the RSS just
before the method ran (features already in memory).

Methods:
  baseline  the original algorithm (above) on the in-memory float32 features
  ours      ``ray_logme.metrics.logme(features, labels)`` on the same features
  stream    ``LogMEStats.update`` on chunks generated on the fly (the reduce stage's path):
            the features never exist in memory as a whole; time excludes generation
  torch     ``logme(..., device=DEVICE)`` (``--device``, e.g. cuda) on the same features

Usage:
  .venv/bin/python benchmarks/bench_logme.py            # full run (several minutes on 2 cores)
  .venv/bin/python benchmarks/bench_logme.py --quick    # small smoke run (~30 s)
  python benchmarks/bench_logme.py --methods ours,torch --device cuda --no-stream   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHUNK_ROWS = 8192
FULL_CASES = [(10_000, 2048, 100), (50_000, 2048, 100), (2_000, 4096, 10)]
FULL_STREAM = [(50_000, 2048, 100), (200_000, 2048, 100)]
QUICK_CASES = [(3_000, 256, 20), (300, 512, 5)]
QUICK_STREAM = [(6_000, 256, 20), (24_000, 256, 20)]


# ---------------------------------------------------------------------- synthetic data


def make_labels(num_samples: int, num_classes: int, seed: int) -> np.ndarray:
    """``int64[n]`` class ids, every class present."""
    rng = np.random.default_rng([seed, 0])
    labels = rng.integers(0, num_classes, num_samples)
    labels[:num_classes] = np.arange(num_classes)
    return labels


def make_chunk(labels: np.ndarray, start: int, stop: int, dim: int, num_classes: int, seed: int):
    """Rows ``start:stop`` of the features: ``relu(mu[label] + noise)``, ``float32[stop-start, d]``.

    Deterministic per chunk index, so the streaming path sees exactly the in-memory features.
    """
    means = np.random.default_rng([seed, 1]).standard_normal((num_classes, dim), np.float32)
    means *= np.float32(0.35)
    rng = np.random.default_rng([seed, 2, start // CHUNK_ROWS])
    chunk = rng.standard_normal((stop - start, dim), np.float32)
    chunk += means[labels[start:stop]]
    np.maximum(chunk, 0.0, out=chunk)
    return chunk


def make_features(labels: np.ndarray, dim: int, num_classes: int, seed: int) -> np.ndarray:
    features = np.empty((labels.size, dim), np.float32)
    for start in range(0, labels.size, CHUNK_ROWS):
        stop = min(labels.size, start + CHUNK_ROWS)
        features[start:stop] = make_chunk(labels, start, stop, dim, num_classes, seed)
    return features


# ---------------------------------------------------------------------- the baseline


def baseline_logme(features: np.ndarray, labels: np.ndarray, regression: bool = False) -> float:
    """The original authors' fixed-point LogME, step by step, in float64 (see module doc).

    ``labels``: ``int[n]`` class ids (one-hot columns for ids 0..max, present or not), or with
    ``regression=True`` ``float[n]``/``float[n, t]`` targets.
    """
    f = features.astype(np.float64)
    if regression:
        targets = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
        columns = [targets[:, j] for j in range(targets.shape[1])]
    else:
        columns = [(labels == c).astype(np.float64) for c in range(int(labels.max()) + 1)]
    num_samples, dim = f.shape
    if num_samples > dim:
        # SVD of the d x d Gram, singular values of F = sqrt, then U S = F V (n x d x d product).
        _, gram_values, vh = np.linalg.svd(f.T @ f)
        singular = np.sqrt(gram_values)
        u_times_sigma = f @ vh.T
        rank = int(np.sum(singular > 1e-10))
        singular = singular[:rank]
        vh = vh[:rank]
        u = u_times_sigma[:, :rank] / singular[None, :]
        del u_times_sigma
    else:
        u, singular, vh = np.linalg.svd(f, full_matrices=False)
    sigma = singular**2
    evidences = []
    for y in columns:
        x = u.T @ y
        x2 = x**2
        res_x2 = y @ y - x2.sum()
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t = alpha / beta
            gamma = (sigma / (sigma + t)).sum()
            m2 = (sigma * x2 / ((t + sigma) ** 2)).sum()
            res2 = (x2 / ((1 + sigma / t) ** 2)).sum() + res_x2
            alpha = gamma / (m2 + 1e-5)
            beta = (num_samples - gamma) / (res2 + 1e-5)
            t_new = alpha / beta
            if abs(t_new - t) / t <= 1e-3:
                break
        evidence = (
            dim / 2.0 * np.log(alpha)
            + num_samples / 2.0 * np.log(beta)
            - 0.5 * np.sum(np.log(alpha + beta * sigma))
            - beta / 2.0 * res2
            - alpha / 2.0 * m2
            - num_samples / 2.0 * np.log(2 * np.pi)
        ) / num_samples
        # The original also forms the posterior mean m for predict(); keep its cost.
        _ = vh.T @ (singular * x / (t + sigma))
        evidences.append(evidence)
    return float(np.mean(evidences))


# ---------------------------------------------------------------------- worker process


def _proc_status() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def worker(method: str, num_samples: int, dim: int, num_classes: int, seed: int, device: str):
    """Run one method in this (fresh) process and print one JSON line."""
    from ray_logme.metrics import LogMEStats, logme

    labels = make_labels(num_samples, num_classes, seed)
    features = None
    if method != "stream":
        features = make_features(labels, dim, num_classes, seed)
    # Warm up outside the timing (BLAS thread pools, lazy imports, the torch device).
    warm_labels = make_labels(256, 4, seed + 1)
    warm_features = make_features(warm_labels, 32, 4, seed + 1)
    if method == "baseline":
        baseline_logme(warm_features, warm_labels)
    elif method == "torch":
        logme(warm_features, warm_labels, device=device)
    else:
        logme(warm_features, warm_labels)
    _reset_peak()
    before = _proc_status()["VmRSS"]
    generate_seconds = 0.0
    start = time.perf_counter()
    if method == "baseline":
        value = baseline_logme(features, labels)
    elif method == "ours":
        value = logme(features, labels)
    elif method == "torch":
        value = logme(features, labels, device=device)
    elif method == "stream":
        stats = LogMEStats(kind="classification")
        for chunk_start in range(0, num_samples, CHUNK_ROWS):
            chunk_stop = min(num_samples, chunk_start + CHUNK_ROWS)
            tick = time.perf_counter()
            chunk = make_chunk(labels, chunk_start, chunk_stop, dim, num_classes, seed)
            generate_seconds += time.perf_counter() - tick
            stats.update(chunk, labels[chunk_start:chunk_stop])
            del chunk
        value = stats.logme()
    else:
        raise ValueError(f"unknown method {method!r}")
    seconds = time.perf_counter() - start - generate_seconds
    status = _proc_status()
    print(
        json.dumps(
            {
                "method": method,
                "n": num_samples,
                "d": dim,
                "C": num_classes,
                "value": value,
                "seconds": seconds,
                "peak_bytes": status["VmHWM"],
                "extra_bytes": status["VmHWM"] - before,
            }
        )
    )


def run_in_subprocess(method, num_samples, dim, num_classes, seed, device, threads) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        method,
        str(num_samples),
        str(dim),
        str(num_classes),
        "--seed",
        str(seed),
        "--device",
        device,
    ]
    env = dict(os.environ)
    if threads:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{method} n={num_samples} d={dim} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- driver


def _mib(value: int) -> str:
    return f"{value / 2**20:,.0f} MiB"


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="runs per (method, case); best time")
    parser.add_argument("--device", default="cuda", help="device for the 'torch' method")
    parser.add_argument(
        "--methods",
        default="baseline,ours",
        help="comma-separated methods for the in-memory cases; ratios are against the first",
    )
    parser.add_argument("--no-stream", action="store_true", help="skip the streaming cases")
    parser.add_argument("--json", type=Path, help="write all measurements here")
    parser.add_argument(
        "--threads", type=int, default=0, help="BLAS threads per worker (0: default)"
    )
    parser.add_argument(
        "--worker", nargs=4, metavar=("METHOD", "N", "D", "C"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        method, *sizes = args.worker
        worker(method, *map(int, sizes), seed=args.seed, device=args.device)
        return 0

    cases = QUICK_CASES if args.quick else FULL_CASES
    streams = QUICK_STREAM if args.quick else FULL_STREAM
    methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    print(
        f"# bench_logme  cpus={os.cpu_count()}  threads={args.threads or 'default'}  "
        f"repeats={args.repeats}  loadavg at start: {_loadavg()}",
        flush=True,
    )
    records = []

    def measure_all(method_list, n, d, c):
        """Each repeat runs every method once (interleaved, so that load from other processes
        hits all of them alike); the best time and the largest peak per method are kept."""
        runs = {method: [] for method in method_list}
        for _ in range(args.repeats):
            for method in method_list:
                runs[method].append(
                    run_in_subprocess(method, n, d, c, args.seed, args.device, args.threads)
                )
        results = {}
        for method, method_runs in runs.items():
            best = min(method_runs, key=lambda r: r["seconds"])
            best["seconds_all"] = [r["seconds"] for r in method_runs]
            best["peak_bytes"] = max(r["peak_bytes"] for r in method_runs)
            best["extra_bytes"] = max(r["extra_bytes"] for r in method_runs)
            best["loadavg"] = _loadavg()
            records.append(best)
            results[method] = best
        return results

    header = (
        f"{'n':>7} {'d':>5} {'C':>4} | {'method':>8} {'seconds':>8} {'peak RSS':>10} "
        f"{'extra':>10} | {'LogME':>20} | speed-up  memory(extra)"
    )
    print(header)
    print("-" * len(header))
    for n, d, c in cases:
        results = measure_all(methods, n, d, c)
        base = results[methods[0]]
        for method, result in results.items():
            ratio = ""
            if method != methods[0]:
                ratio = (
                    f"{base['seconds'] / result['seconds']:7.1f}x  "
                    f"{result['extra_bytes'] / base['extra_bytes']:6.3f} of {methods[0]}"
                )
            print(
                f"{n:>7} {d:>5} {c:>4} | {method:>8} {result['seconds']:8.2f} "
                f"{_mib(result['peak_bytes']):>10} {_mib(result['extra_bytes']):>10} | "
                f"{result['value']:20.12f} | {ratio}",
                flush=True,
            )
        for method in methods[1:]:
            difference = abs(results[method]["value"] - base["value"])
            print(f"{'':>19}   |{method} - {methods[0]}| = {difference:.3e}", flush=True)
        print(f"{'':>19}   (loadavg {_loadavg()})", flush=True)
    if not args.no_stream:
        print()
        print(
            f"streaming (chunks of {CHUNK_ROWS} rows generated on the fly; time excludes generation)"
        )
    for n, d, c in [] if args.no_stream else streams:
        result = measure_all(["stream"], n, d, c)["stream"]
        print(
            f"{n:>7} {d:>5} {c:>4} | {'stream':>8} {result['seconds']:8.2f} "
            f"{_mib(result['peak_bytes']):>10} {_mib(result['extra_bytes']):>10} | "
            f"{result['value']:20.12f} |",
            flush=True,
        )
    print(f"# loadavg at end: {_loadavg()}")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
