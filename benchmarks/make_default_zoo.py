"""Build the tiny image zoo that the embedded default config ranks (``ray_logme/zoo/``).

Four narrow timm ``resnet10t`` backbones (channels 8-16-32-64, ~0.08 M parameters, 64-d
features, 32x32 inputs) pre-trained here, on CPU, from seeded random init, on different
locally generated source data, with the recipe of ``benchmarks/bench_ranking.py`` (same
rendering, training loop and ``save_for_hf`` layout):

- ``shapes``: 6 rendered shapes (circle, square, triangle, cross, L, bar), full budget;
- ``shapes-brief``: the same run, checkpoint after 5 % of the steps (less pre-training);
- ``textures``: 6 rendered textures (stripes, checker, dots, blobs), full budget;
- ``digits0-4``: sklearn's bundled digits 0-4 (24x24 at a random offset, with noise), full budget.

Each is saved headless with ``timm.models.save_for_hf`` (``config.json`` whose data config is
32x32 + ``model.safetensors``) into ``<output>/<name>/``; the default config loads them as
``pkg:ray_logme/zoo/<name>``. ``<output>/README.md`` records how they were made and the source
test accuracy of each.

Deterministic: fixed seeds, one torch thread per training process, deterministic algorithms,
so the same torch/timm versions give byte-identical checkpoints (the README lists their sha256).

Run (1.5-4.5 minutes on 2 CPU cores, depending on load; ``--check-only`` about 40 s)::

    .venv/bin/python benchmarks/make_default_zoo.py [--output ray_logme/zoo] [--workers 2] [--check-only]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import importlib.util
import json
import logging
import multiprocessing
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger("make_default_zoo")

BENCH_PATH = Path(__file__).resolve().parent / "bench_ranking.py"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "ray_logme" / "zoo"
SEED = 0
WIDTH = "w8"
PRETRAIN_STEPS = 800
BRIEF_FRACTION = 0.05
SOURCE_TRAIN = 4000  # rendered images per synthetic source (digits0-4: what sklearn has)
SOURCE_TEST = 600
# zoo member -> (source task in bench_ranking, which checkpoint of that run)
MEMBERS = {
    "shapes": ("shapes6", "final"),
    "shapes-brief": ("shapes6", "brief"),
    "textures": ("textures6", "final"),
    "digits0-4": ("digits0-4", "final"),
}
SOURCE_DESCRIPTIONS = {
    "shapes6": "6 rendered shapes (circle, square, triangle, cross, L, bar) at random size, "
    "place, rotation, contrast polarity, pixel noise",
    "textures6": "6 rendered textures (horizontal/vertical/diagonal stripes, checker, dots, "
    "blobs) at random frequency, phase, contrast",
    "digits0-4": "sklearn's bundled 8x8 digits of classes 0-4, bilinear-upscaled to 24x24 at a "
    "random offset in 32x32, with pixel noise",
}


def load_bench():
    """Import ``benchmarks/bench_ranking.py`` as a module (benchmarks/ is not a package)."""
    if "bench_ranking" in sys.modules:
        return sys.modules["bench_ranking"]
    spec = importlib.util.spec_from_file_location("bench_ranking", BENCH_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_ranking"] = module
    spec.loader.exec_module(module)
    return module


def zoo_config():
    """The ``bench_ranking.BenchConfig`` of the zoo's pre-training (targets are unused here)."""
    bench = load_bench()
    return dataclasses.replace(
        bench.BenchConfig.full(),
        widths=(WIDTH,),
        sources=tuple(sorted({source for source, _ in MEMBERS.values()})),
        pretrain_steps=PRETRAIN_STEPS,
        early_fraction=BRIEF_FRACTION,
        source_train=SOURCE_TRAIN,
        source_test=SOURCE_TEST,
        seed=SEED,
    )


def pretrain(job: dict) -> list[dict]:
    """One source task's pre-training in a fresh process (deterministic, one thread)."""
    import torch

    torch.use_deterministic_algorithms(True)
    bench = load_bench()
    started = time.perf_counter()
    records = bench.pretrain_job(job)
    for record in records:
        record["train_seconds"] = time.perf_counter() - started
    return records


def _retag_config(config_path: Path, name: str) -> None:
    """Replace the ImageNet tag timm's default cfg leaves in ``config.json`` with the zoo name."""
    config = json.loads(config_path.read_text())
    config["pretrained_cfg"]["tag"] = f"ray_logme_zoo_{name.replace('-', '_')}"
    config["pretrained_cfg"].pop("origin_url", None)
    config_path.write_text(json.dumps(config, indent=2))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_zoo(output: Path, workers: int) -> list[dict]:
    """Pre-train, pick the members, copy them to ``output/<name>/``; returns one row per member."""
    config = zoo_config()
    bench = load_bench()
    with tempfile.TemporaryDirectory(prefix="default-zoo-") as scratch:
        jobs = [
            {"config": config, "source": source, "width": WIDTH, "zoo_dir": scratch, "threads": 1}
            for source in config.sources
        ]
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            records = [record for batch in pool.map(pretrain, jobs) for record in batch]
        brief_steps = max(1, round(config.early_fraction * config.pretrain_steps))
        by_key = {
            (r["source"], "final" if r["pretrain_steps"] == config.pretrain_steps else "brief"): r
            for r in records
        }
        rows = []
        for name, key in MEMBERS.items():
            record = by_key[key]
            target = output / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(record["directory"], target)
            _retag_config(target / "config.json", name)
            for path in target.iterdir():
                path.chmod(0o644)  # save_for_hf writes 0600 files; package data is world-readable
            weights = target / "model.safetensors"
            rows.append(
                {
                    "name": name,
                    "source": record["source"],
                    "pretrain_steps": record["pretrain_steps"],
                    "images_seen": record["pretrain_steps"] * config.pretrain_batch,
                    "num_params": int(record["num_params"]),
                    "source_accuracy": float(record["source_accuracy"]),
                    "chance": float(record["chance"]),
                    "weights_bytes": weights.stat().st_size,
                    "weights_sha256": _sha256(weights),
                }
            )
    source_sizes = {
        source: (
            len(bench.make_task(source, SOURCE_TRAIN, SOURCE_TEST, SEED).train_labels),
            len(bench.make_task(source, SOURCE_TRAIN, SOURCE_TEST, SEED).test_labels),
        )
        for source in config.sources
    }
    for row in rows:
        row["source_train"], row["source_test"] = source_sizes[row["source"]]
    logger.info("brief checkpoint at step %d of %d", brief_steps, config.pretrain_steps)
    return rows


def render_readme(rows: list[dict], seconds: float, workers: int) -> str:
    """``ray_logme/zoo/README.md``: provenance and source accuracy of each member."""
    import timm
    import torch

    bench = load_bench()
    widths = "-".join(map(str, bench.WIDTHS[WIDTH]))
    lines = [
        "# The default image zoo",
        "",
        "Tiny timm backbones that really were pre-trained, shipped with ray-logme so that the",
        "embedded default config (`ray_logme/configs/local.yaml`, what `ray-logme refresh` runs",
        "with no arguments) ranks real transfer on its image tasks without downloading anything.",
        'Load one as `{hub: timm, name: "pkg:ray_logme/zoo/<name>"}`.',
        "",
        "**How they were made**: `.venv/bin/python benchmarks/make_default_zoo.py` "
        f"(seed {SEED}, {workers} processes, one torch thread each, deterministic algorithms; "
        f"{seconds:.0f} s on this machine's CPUs; torch {torch.__version__.split('+')[0]}, "
        f"timm {timm.__version__}, Python {platform.python_version()}). Recipe of "
        "`benchmarks/bench_ranking.py`: timm `resnet10t` with channels "
        f"{widths} (stem width {bench.WIDTHS[WIDTH][0]}), seeded random init, AdamW "
        f"(lr 2e-3, weight decay 1e-4), batch {zoo_config().pretrain_batch}, cross-entropy on a "
        "fresh linear head, inputs 32x32 normalised with mean 0.5 / std 0.25 (the data config "
        "in each `config.json`). Saved headless with `timm.models.save_for_hf` "
        "(`config.json` + `model.safetensors`, 64-d pooled features).",
        "",
        "Source data (all generated or bundled locally, nothing downloaded):",
        "",
    ]
    for source, description in SOURCE_DESCRIPTIONS.items():
        lines.append(f"- `{source}`: {description}.")
    lines += [
        "",
        "| name | source data | train / test images | steps (images seen) | params | "
        "source test accuracy (chance) | safetensors | sha256 (first 16) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| `{row['name']}` | `{row['source']}` | {row['source_train']} / {row['source_test']} "
            f"| {row['pretrain_steps']} ({row['images_seen']}) | {row['num_params']:,} "
            f"| {row['source_accuracy']:.3f} ({row['chance']:.3f}) "
            f"| {row['weights_bytes'] / 1024:.0f} KiB | `{row['weights_sha256'][:16]}` |"
        )
    lines += [
        "",
        "`shapes-brief` is the `shapes` run's checkpoint after "
        f"{round(BRIEF_FRACTION * PRETRAIN_STEPS)} of {PRETRAIN_STEPS} steps. `digits0-4` saw "
        "sklearn digits images of classes 0-4; the shipped `sklearn:digits` task contains those "
        "same images (in a different rendering: nearest x4 upscaling, no offset, no noise) and "
        "classes 5-9 too, so on that task it is an in-domain model, not a pure transfer one.",
        "",
        "The default config also ranks the same architecture with random weights "
        "(`pretrained: false` on `pkg:ray_logme/zoo/shapes`) as a no-pre-training baseline.",
        "",
    ]
    return "\n".join(lines)


def check_transfer(output: Path, folds: int = 5) -> list[dict]:
    """Ground truth for the default config's image tasks: does LogME order the zoo as transfer does?

    For each zoo member (and the random-init baseline) on all rows of ``sklearn:digits`` (10
    classes) and ``builtin:discs`` (regress the radius): LogME of the frozen features (through
    ``ray_logme.hub.load_extractor`` and ``ray_logme.metrics.logme``) and the ``folds``-fold
    cross-validated score of a linear probe on the same features (logistic-regression accuracy,
    ridge R^2).
    """
    import torch
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ray_logme.hub import ModelSpec, load_extractor
    from ray_logme.metrics import logme
    from ray_logme.tasks import builtin_table

    torch.set_num_threads(1)
    tasks = {
        "digits": ("sklearn:digits", "label", "classification"),
        "discs-radius": ("builtin:discs", "radius", "regression"),
    }
    tables = {name: builtin_table(uri) for name, (uri, _, _) in tasks.items()}
    candidates = [(name, True) for name in MEMBERS] + [("shapes", False)]
    rows = []
    for member, pretrained in candidates:
        spec = ModelSpec(hub="timm", name=str(output / member), pretrained=pretrained)
        extractor = load_extractor(spec, device="cpu")
        label = member if pretrained else f"{member} [random-init]"
        for task, (_, label_column, kind) in tasks.items():
            table = tables[task]
            features = extractor.extract(table.column("image").to_pylist(), batch_size=256)
            targets = table.column(label_column).to_numpy()
            if kind == "classification":
                probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
                split = StratifiedKFold(folds, shuffle=True, random_state=SEED)
            else:
                probe = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
                split = KFold(folds, shuffle=True, random_state=SEED)
            truth = cross_val_score(probe, features, targets, cv=split).mean()
            rows.append(
                {
                    "model": label,
                    "task": task,
                    "n": len(targets),
                    "logme": float(logme(features, targets, kind=kind)),
                    "probe": float(truth),
                    "probe_metric": "accuracy" if kind == "classification" else "r2",
                }
            )
            logger.info(
                "%-24s %-13s logme %.4f  probe %.4f", label, task, *list(rows[-1].values())[3:5]
            )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--check-only",
        action="store_true",
        help="do not train: score the zoo in --output on the default image tasks (LogME and "
        "cross-validated linear probes) and print the table",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.check_only:
        import pandas as pd
        from scipy.stats import kendalltau

        table = pd.DataFrame(check_transfer(args.output))
        wide = table.pivot(index="model", columns="task", values=["logme", "probe"])
        print(wide.round(4).to_string())
        for task, group in table.groupby("task"):
            tau = kendalltau(group["logme"], group["probe"]).statistic
            print(f"{task}: Kendall tau(LogME, probe) = {tau:.3f} over {len(group)} models")
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = build_zoo(args.output, args.workers)
    seconds = time.perf_counter() - started
    (args.output / "README.md").write_text(render_readme(rows, seconds, args.workers))
    (args.output / "zoo.json").write_text(json.dumps(rows, indent=1) + "\n")
    for row in rows:
        logger.info(
            "%-13s %-10s %3d steps  source acc %.3f  %6d params  %d bytes",
            row["name"],
            row["source"],
            row["pretrain_steps"],
            row["source_accuracy"],
            row["num_params"],
            row["weights_bytes"],
        )
    logger.info("zoo of %d models in %s (%.0f s)", len(rows), args.output, seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
