"""Controlled model zoo: does LogME rank models by the accuracy they really reach after transfer?

Published ground truth (``benchmarks/bench_published_groundtruth.py``) checks LogME on other
people's models; this benchmark builds a zoo where every number is measured here, with no
download:

1. **Source tasks** rendered or loaded locally: ``shapes6`` (6 rendered shapes), ``textures6``
   (6 rendered textures) and ``digits0-4`` (sklearn's bundled 8x8 digits, upscaled to 32x32).
2. **Zoo**: timm ``resnet10t`` backbones (random init) at several widths, pre-trained on each
   source task; a checkpoint after a short and after the full pre-training (different amounts of
   pre-training), plus one random-init backbone per width. Each is saved with
   ``timm.models.save_for_hf`` (safetensors + a config whose data config is 32x32), so the hub
   loads it like any local timm model.
3. **Target tasks**: ``digits5-9``, ``shapes-new`` (5 shapes never seen in pre-training),
   ``stripe-orientation`` (stripes in 6 orientation bins, 30 degrees apart) and
   ``shapes-on-texture`` (4 source shapes over textured backgrounds).
4. **Ground truth** per (model, target): test accuracy of a linear probe (logistic regression on
   the frozen features) and of full fine-tuning (all weights, fixed budget), averaged over seeds.
5. **Scores**: LogME of the frozen target-train features, computed through our own code:
   ``ray_logme.hub.load_extractor`` (the model's own preprocessing, resolved from its config) and
   ``ray_logme.metrics.logme``.
6. **Ranking quality**: tau_w per target with a bootstrap CI over models, the mean over targets
   with a CI over targets (``ray_logme.evaluate``), for LogME and three baselines: source accuracy
   (above chance; 0 for random-init models), parameter count, and random rankings (the null
   distribution of the mean tau_w over the targets).

Run (775 CPU-seconds, i.e. about 6.5 minutes on 2 idle cores; 18.5 minutes measured while other
jobs shared the 2 cores; ``--quick``: 176 CPU-seconds)::

    .venv/bin/python benchmarks/bench_ranking.py [--quick] [--workers 2] [--output DIR]

Outputs under ``--output``: ``zoo.csv`` (models, widths, sources, source accuracy, parameters),
``scores.parquet`` (the scores-table schema, ``metric = "logme"``), ``truth.csv`` (``model, task,
protocol, accuracy``), ``baselines.csv``, ``results.md`` (the tables printed at the end) and the
checkpoints under ``zoo/``. The same evaluation from the command line::

    ray-logme evaluate --scores DIR/scores.parquet --truth DIR/truth.csv \\
        --group-col task --group-col protocol
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import logging
import multiprocessing
import os
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger("bench_ranking")

ARCHITECTURE = "resnet10t"
IMAGE_SIZE = 32
# What the saved checkpoints declare as their preprocessing, and what training feeds them.
DATA_CONFIG = {
    "input_size": (3, IMAGE_SIZE, IMAGE_SIZE),
    "interpolation": "bilinear",
    "crop_pct": 1.0,
    "crop_mode": "center",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.25, 0.25, 0.25),
}
WIDTHS = {
    "w8": (8, 16, 32, 64),
    "w16": (16, 32, 64, 128),
    "w24": (24, 48, 96, 192),
}
SHAPES_SOURCE = ("circle", "square", "triangle", "cross", "lshape", "bar")
SHAPES_TARGET = ("ring", "diamond", "star", "tshape", "hexagon")
TEXTURES_SOURCE = ("hstripes", "vstripes", "checker", "dots", "blobs", "dstripes")
STRIPE_ORIENTATIONS_DEG = (0, 30, 60, 90, 120, 150)
SOURCE_TASKS = ("shapes6", "textures6", "digits0-4")
TARGET_TASKS = ("digits5-9", "shapes-new", "stripe-orientation", "shapes-on-texture")
PROTOCOL_LINEAR_PROBE = "linear_probe"
PROTOCOL_FINE_TUNE = "fine_tune"


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Every knob of a run; ``full()``/``quick()``/``tiny()`` are the presets."""

    widths: tuple[str, ...]
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    pretrain_steps: int
    early_fraction: float  # the "short pre-training" checkpoint, as a fraction of the steps
    pretrain_batch: int
    source_train: int  # rendered images per synthetic source task (digits: what sklearn has)
    source_test: int
    target_train: int
    target_test: int
    finetune_epochs: int
    finetune_seeds: tuple[int, ...]  # empty: no fine-tuning ground truth (linear probe only)
    include_random_init: bool = True
    seed: int = 0

    @classmethod
    def full(cls) -> BenchConfig:
        return cls(
            widths=("w8", "w16", "w24"),
            sources=SOURCE_TASKS,
            targets=TARGET_TASKS,
            pretrain_steps=400,
            early_fraction=0.1,
            pretrain_batch=64,
            source_train=4000,
            source_test=600,
            target_train=300,
            target_test=600,
            finetune_epochs=8,
            finetune_seeds=(0, 1),
        )

    @classmethod
    def quick(cls) -> BenchConfig:
        return dataclasses.replace(
            cls.full(),
            widths=("w8", "w16"),
            pretrain_steps=200,
            source_train=2000,
            source_test=400,
            target_test=400,
            finetune_epochs=5,
            finetune_seeds=(0,),
        )

    @classmethod
    def tiny(cls) -> BenchConfig:
        """The test miniature: one width, linear-probe ground truth only (~25 s, 1 process)."""
        return dataclasses.replace(
            cls.full(),
            widths=("w8",),
            targets=("digits5-9", "shapes-new", "stripe-orientation"),
            pretrain_steps=80,
            early_fraction=0.1,
            source_train=800,
            source_test=300,
            target_train=160,
            target_test=240,
            finetune_seeds=(),
        )


# ---------------------------------------------------------------------------------------------
# Data: rendered shapes and textures, sklearn digits (uint8[n, 32, 32, 3] images)
# ---------------------------------------------------------------------------------------------


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        points = [(-r, -r), (r, -r), (r, r), (-r, r)]
    elif kind == "triangle":
        points = [(0, -r), (r * 0.87, r * 0.5), (-r * 0.87, r * 0.5)]
    elif kind == "diamond":
        points = [(0, -r), (r * 0.6, 0), (0, r), (-r * 0.6, 0)]
    elif kind == "star":
        points = [
            (
                (r if i % 2 == 0 else 0.45 * r) * np.sin(i * np.pi / 5),
                -(r if i % 2 == 0 else 0.45 * r) * np.cos(i * np.pi / 5),
            )
            for i in range(10)
        ]
    elif kind == "cross":
        w = 0.35 * r
        points = [
            (-w, -r),
            (w, -r),
            (w, -w),
            (r, -w),
            (r, w),
            (w, w),
            (w, r),
            (-w, r),
            (-w, w),
            (-r, w),
            (-r, -w),
            (-w, -w),
        ]
    elif kind == "lshape":
        w = 0.54 * r
        points = [(-r, -r), (-r + w, -r), (-r + w, r - w), (r, r - w), (r, r), (-r, r)]
    elif kind == "tshape":
        w = 0.4 * r
        points = [
            (-r, -r),
            (r, -r),
            (r, -r + w),
            (w / 2, -r + w),
            (w / 2, r),
            (-w / 2, r),
            (-w / 2, -r + w),
            (-r, -r + w),
        ]
    elif kind == "bar":
        points = [(-r, -0.25 * r), (r, -0.25 * r), (r, 0.25 * r), (-r, 0.25 * r)]
    elif kind == "hexagon":
        points = [(r * np.cos(a), r * np.sin(a)) for a in np.arange(6) * np.pi / 3]
    else:
        raise ValueError(f"unknown shape {kind!r}")
    cos, sin = np.cos(angle), np.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def render_shape(
    kind: str, rng: np.random.Generator, background: np.ndarray | None = None
) -> np.ndarray:
    """One shape at a random size, place, rotation and contrast: ``float32[32, 32]`` in [0, 1]."""
    from PIL import Image, ImageDraw

    scale = 4
    canvas_size = IMAGE_SIZE * scale
    canvas = Image.new("L", (canvas_size, canvas_size), 0)
    draw = ImageDraw.Draw(canvas)
    radius = rng.uniform(0.22, 0.36) * canvas_size
    cx, cy = rng.uniform(0.9 * radius, canvas_size - 0.9 * radius, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    if kind in ("circle", "ring"):
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
        if kind == "ring":
            inner = 0.55 * radius
            draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
    else:
        draw.polygon(_polygon(kind, cx, cy, radius, angle), fill=255)
    mask = (
        np.asarray(canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR), dtype=np.float32) / 255
    )
    foreground, back = rng.uniform(0.55, 1.0), rng.uniform(0.0, 0.35)
    if rng.random() < 0.5:
        foreground, back = 1 - foreground, 1 - back
    base = np.full((IMAGE_SIZE, IMAGE_SIZE), back, np.float32) if background is None else background
    return base * (1 - mask) + foreground * mask


def render_texture(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One texture at a random frequency, phase and contrast: ``float32[32, 32]`` in [0, 1]."""
    from PIL import Image

    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    frequency, phase, skew = (
        rng.uniform(0.18, 0.45),
        rng.uniform(0, 2 * np.pi),
        rng.uniform(-0.2, 0.2),
    )
    if kind == "hstripes":
        value = np.sin(2 * frequency * (y + skew * x) + phase)
    elif kind == "vstripes":
        value = np.sin(2 * frequency * (x + skew * y) + phase)
    elif kind == "dstripes":
        value = np.sin(1.4 * frequency * (x + y) + phase)
    elif kind == "astripes":
        value = np.sin(1.4 * frequency * (x - y) + phase)
    elif kind == "checker":
        value = np.sin(2 * frequency * x + phase) * np.sin(2 * frequency * y + 0.5 * phase)
    elif kind == "dots":
        value = np.cos(2 * frequency * x + phase) + np.cos(2 * frequency * y + phase) - 1.2
    elif kind == "rings":
        cx, cy = rng.uniform(0, IMAGE_SIZE, 2)
        value = np.sin(1.5 * frequency * np.hypot(x - cx, y - cy) + phase)
    elif kind == "grid":
        value = (
            np.maximum(np.sin(2 * frequency * x + phase), np.sin(2 * frequency * y + phase)) ** 9
            * 2
            - 1
        )
    elif kind == "waves":
        value = np.sin(2 * frequency * y + 2.5 * np.sin(0.35 * x + phase) + phase)
    elif kind == "blobs":
        noise = rng.normal(size=(8, 8)).astype(np.float32)
        value = np.asarray(Image.fromarray(noise).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC))
    else:
        raise ValueError(f"unknown texture {kind!r}")
    value = np.tanh(2 * value)
    contrast = rng.uniform(0.25, 0.5)
    return (0.5 + contrast * value / max(1e-6, float(np.abs(value).max()))).astype(np.float32)


def render_stripes(angle_deg: float, rng: np.random.Generator) -> np.ndarray:
    """Stripes at ``angle_deg`` +- 8 degrees, random frequency/phase/contrast: ``float32[32, 32]``."""
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    angle = np.deg2rad(angle_deg + rng.uniform(-8, 8))
    frequency, phase = rng.uniform(0.25, 0.7), rng.uniform(0, 2 * np.pi)
    value = np.sin(frequency * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    return (0.5 + rng.uniform(0.15, 0.4) * value).astype(np.float32)


def _to_rgb_uint8(gray: np.ndarray, rng: np.random.Generator, noise: float = 0.08) -> np.ndarray:
    noisy = np.clip(gray + rng.normal(0, noise, gray.shape), 0, 1)
    return np.repeat((noisy * 255).astype(np.uint8)[:, :, None], 3, axis=2)


@dataclasses.dataclass(frozen=True)
class ImageTask:
    """A classification task: ``images: uint8[n, 32, 32, 3]``, ``labels: int64[n]`` per split."""

    name: str
    classes: tuple[str, ...]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _rendered(
    classes, draw, num_images: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(num_images) % len(classes)
    rng.shuffle(labels)
    images = np.stack([_to_rgb_uint8(draw(classes[label], rng), rng) for label in labels])
    return images, labels.astype(np.int64)


def _digits(classes: Sequence[int], num_train: int, num_test: int, rng: np.random.Generator):
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.isin(digits.target, classes)
    raw, targets = digits.images[keep], digits.target[keep]
    order = rng.permutation(len(targets))
    raw, targets = raw[order], targets[order]
    images = []
    for image in raw:
        upscaled = Image.fromarray((image / 16.0 * 255).astype(np.uint8)).resize(
            (24, 24), Image.BILINEAR
        )
        canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
        dy, dx = rng.integers(0, IMAGE_SIZE - 24 + 1, size=2)
        canvas[dy : dy + 24, dx : dx + 24] = np.asarray(upscaled, np.float32) / 255
        images.append(_to_rgb_uint8(canvas, rng, noise=0.05))
    images = np.stack(images)
    labels = np.searchsorted(np.asarray(sorted(classes)), targets).astype(np.int64)
    num_test = min(num_test, len(labels) // 3)
    num_train = min(num_train, len(labels) - num_test)
    return (images[:num_train], labels[:num_train], images[-num_test:], labels[-num_test:])


@functools.lru_cache(maxsize=8)
def make_task(name: str, num_train: int, num_test: int, seed: int) -> ImageTask:
    """Build a task by name; the same (name, sizes, seed) always gives the same images.

    Cached per process (a worker renders each task once).
    """
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if name in ("digits0-4", "digits5-9"):
        classes = tuple(range(5)) if name == "digits0-4" else tuple(range(5, 10))
        train_x, train_y, test_x, test_y = _digits(classes, num_train, num_test, rng)
        return ImageTask(name, tuple(map(str, classes)), train_x, train_y, test_x, test_y)
    if name in ("shapes6", "shapes-new"):
        classes = SHAPES_SOURCE if name == "shapes6" else SHAPES_TARGET
        draw = render_shape
    elif name == "textures6":
        classes, draw = TEXTURES_SOURCE, render_texture
    elif name == "stripe-orientation":
        classes = tuple(f"{angle}deg" for angle in STRIPE_ORIENTATIONS_DEG)

        def draw(kind, rng):
            return render_stripes(float(kind.removesuffix("deg")), rng)

    elif name == "shapes-on-texture":
        classes = SHAPES_SOURCE[:4]

        def draw(kind, rng):
            texture = render_texture(TEXTURES_SOURCE[rng.integers(len(TEXTURES_SOURCE))], rng)
            return render_shape(kind, rng, background=0.5 + 0.5 * (texture - 0.5))

    else:
        raise ValueError(f"unknown task {name!r}; known: {SOURCE_TASKS + TARGET_TASKS}")
    train_x, train_y = _rendered(classes, draw, num_train, rng)
    test_x, test_y = _rendered(classes, draw, num_test, rng)
    return ImageTask(name, tuple(classes), train_x, train_y, test_x, test_y)


# ---------------------------------------------------------------------------------------------
# Models: pre-train, save, fine-tune
# ---------------------------------------------------------------------------------------------


def _torch_setup(threads: int = 1):
    import torch

    torch.set_num_threads(threads)
    return torch


def to_pixels(images: np.ndarray):
    """``uint8[n, 32, 32, 3]`` -> ``float32[n, 3, 32, 32]`` normalised as ``DATA_CONFIG`` says."""
    import torch

    mean = np.asarray(DATA_CONFIG["mean"], np.float32)[None, :, None, None]
    std = np.asarray(DATA_CONFIG["std"], np.float32)[None, :, None, None]
    pixels = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return torch.from_numpy((pixels - mean) / std)


def build_backbone(width: str, num_classes: int, seed: int):
    """A random-init timm ``resnet10t`` with the channels of ``width`` and a fresh head."""
    import timm
    import torch

    torch.manual_seed(seed)
    return timm.create_model(
        ARCHITECTURE,
        pretrained=False,
        num_classes=num_classes,
        channels=WIDTHS[width],
        stem_width=WIDTHS[width][0],
    )


def _accuracy(model, images: np.ndarray, labels: np.ndarray, batch: int = 256) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch):
            logits = model(to_pixels(images[start : start + batch]))
            correct += int((logits.argmax(1).numpy() == labels[start : start + batch]).sum())
    return correct / len(labels)


def _train(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    on_step=None,
):
    import torch

    generator = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    order = generator.permutation(len(labels))
    position = 0
    for step in range(1, steps + 1):
        if position + batch > len(order):
            order, position = generator.permutation(len(labels)), 0
        chosen = order[position : position + batch]
        position += batch
        model.train()
        loss = loss_fn(model(to_pixels(images[chosen])), torch.from_numpy(labels[chosen]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step)


def save_backbone(model, directory: Path, width: str) -> None:
    """Save without the head, as a timm local model dir (``config.json`` + ``model.safetensors``)."""
    import copy

    from timm.models import save_for_hf

    headless = copy.deepcopy(model)
    headless.reset_classifier(0)
    save_for_hf(
        headless,
        str(directory),
        model_args={"channels": list(WIDTHS[width]), "stem_width": WIDTHS[width][0]},
        safe_serialization=True,
        data_config=dict(DATA_CONFIG),
    )


def pretrain_job(job: dict) -> list[dict]:
    """Pre-train one backbone on one source task; save the early and final checkpoints.

    Returns one record per saved model: name, width, source, steps, num_params, source_accuracy,
    chance, directory.
    """
    _torch_setup(job.get("threads", 1))
    config: BenchConfig = job["config"]
    source = make_task(job["source"], config.source_train, config.source_test, config.seed)
    width, zoo_dir = job["width"], Path(job["zoo_dir"])
    model = build_backbone(
        width, source.num_classes, seed=config.seed + 1000 * list(WIDTHS).index(width)
    )
    early_step = max(1, round(config.early_fraction * config.pretrain_steps))
    records = []

    def checkpoint(step: int) -> None:
        if step not in (early_step, config.pretrain_steps):
            return
        name = f"{width}-{source.name}-{step}steps"
        save_backbone(model, zoo_dir / name, width)
        records.append(
            {
                "model": name,
                "width": width,
                "source": source.name,
                "pretrain_steps": step,
                "num_params": sum(
                    p.numel() for n, p in model.named_parameters() if not n.startswith("fc.")
                ),
                "source_accuracy": _accuracy(model, source.test_images, source.test_labels),
                "chance": 1.0 / source.num_classes,
                "directory": str(zoo_dir / name),
            }
        )

    started = time.perf_counter()
    _train(
        model,
        source.train_images,
        source.train_labels,
        config.pretrain_steps,
        config.pretrain_batch,
        2e-3,
        config.seed,
        checkpoint,
    )
    logger.info("pre-trained %s on %s in %.0f s", width, source.name, time.perf_counter() - started)
    return records


def random_init_job(job: dict) -> list[dict]:
    """Save the untrained backbone of one width (the zoo's 'no pre-training' member)."""
    _torch_setup(job.get("threads", 1))
    config: BenchConfig = job["config"]
    width, zoo_dir = job["width"], Path(job["zoo_dir"])
    model = build_backbone(width, 1, seed=config.seed + 1000 * list(WIDTHS).index(width))
    name = f"{width}-random-init"
    save_backbone(model, zoo_dir / name, width)
    return [
        {
            "model": name,
            "width": width,
            "source": "none",
            "pretrain_steps": 0,
            "num_params": sum(
                p.numel() for n, p in model.named_parameters() if not n.startswith("fc.")
            ),
            "source_accuracy": np.nan,
            "chance": np.nan,
            "directory": str(zoo_dir / name),
        }
    ]


def frozen_job(job: dict) -> dict:
    """LogME and linear-probe accuracy of one zoo model on one target, from frozen features.

    Features come from ``ray_logme.hub.load_extractor`` (the checkpoint dir as a local timm
    model, preprocessing resolved from its config); LogME from ``ray_logme.metrics.logme``.
    """
    _torch_setup(job.get("threads", 1))
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from ray_logme.hub import ModelSpec, load_extractor
    from ray_logme.metrics import logme

    config: BenchConfig = job["config"]
    target = make_task(job["target"], config.target_train, config.target_test, config.seed)
    spec = ModelSpec(hub="timm", name=f"local-dir:{job['directory']}")
    extractor = load_extractor(spec, device="cpu")
    resolved = extractor.preprocess(list(target.train_images[:4]))["pixel_values"]
    if not np.allclose(np.asarray(resolved), to_pixels(target.train_images[:4]).numpy(), atol=1e-5):
        raise RuntimeError(
            f"{job['model']}: the hub's preprocessing (from the checkpoint's config) differs from "
            "the one the model was trained with; check DATA_CONFIG"
        )
    started = time.perf_counter()
    train_features = extractor.extract(list(target.train_images), batch_size=256)
    test_features = extractor.extract(list(target.test_images), batch_size=256)
    extract_seconds = time.perf_counter() - started
    started = time.perf_counter()
    score = float(logme(train_features, target.train_labels, kind="classification"))
    logme_seconds = time.perf_counter() - started
    metric_scores = score_all_metrics(train_features, target.train_labels)
    if job.get("features_dir"):
        np.savez_compressed(
            Path(job["features_dir"]) / f"{job['model']}__{target.name}.npz",
            features=train_features,
            labels=target.train_labels,
        )
    scaler = StandardScaler().fit(train_features)
    probe = LogisticRegression(C=1.0, max_iter=3000).fit(
        scaler.transform(train_features), target.train_labels
    )
    probe_accuracy = float(probe.score(scaler.transform(test_features), target.test_labels))
    return {
        "model": job["model"],
        "task": target.name,
        "logme": score,
        "linear_probe": probe_accuracy,
        "feature_dim": int(train_features.shape[1]),
        "extract_seconds": extract_seconds,
        "extract_logme_seconds": extract_seconds + logme_seconds,
        **metric_scores,
    }


def score_all_metrics(features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every registered metric of the train features: ``{name: score, name_seconds: seconds}``.

    Streaming metrics get their statistics in one pass, sample metrics the whole (uncapped)
    train split, which is smaller than the reduce stage's default cap.
    """
    from ray_logme.metrics import METRICS, is_sample_metric

    out = {}
    for name, metric in sorted(METRICS.items()):
        started = time.perf_counter()
        if is_sample_metric(metric):
            value, _ = metric.score_sample(features, labels, "classification")
        else:
            value, _ = metric.score(metric.new_stats("classification").update(features, labels))
        out[f"metric_{name}"] = float(value)
        out[f"metric_{name}_seconds"] = time.perf_counter() - started
    return out


def finetune_job(job: dict) -> dict:
    """Test accuracy after fine-tuning all weights of one zoo model on one target (one seed)."""
    torch = _torch_setup(job.get("threads", 1))
    from safetensors.torch import load_file

    config: BenchConfig = job["config"]
    target = make_task(job["target"], config.target_train, config.target_test, config.seed)
    model = build_backbone(job["width"], target.num_classes, seed=10_000 + job["seed"])
    state = load_file(str(Path(job["directory"]) / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not key.startswith("fc.") for key in missing):
        raise RuntimeError(
            f"{job['model']}: checkpoint does not fit: missing {missing}, unexpected {unexpected}"
        )
    batch = 32
    steps = config.finetune_epochs * int(np.ceil(len(target.train_labels) / batch))
    torch.manual_seed(job["seed"])
    _train(model, target.train_images, target.train_labels, steps, batch, 1e-3, job["seed"])
    return {
        "model": job["model"],
        "task": target.name,
        "seed": job["seed"],
        "accuracy": _accuracy(model, target.test_images, target.test_labels),
    }


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------


def _run_jobs(function, jobs: list[dict], workers: int) -> list:
    """Run ``function`` over ``jobs`` in ``workers`` spawned processes (1 torch thread each)."""
    if workers <= 1:
        return [function(job) for job in jobs]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(function, jobs))


@dataclasses.dataclass
class ZooResult:
    """Everything a run measured: the zoo, the frozen-feature table and the fine-tune table."""

    zoo: pd.DataFrame  # model, width, source, pretrain_steps, num_params, source_accuracy, chance
    frozen: pd.DataFrame  # model, task, logme, linear_probe, feature_dim, extract_logme_seconds
    finetune: pd.DataFrame  # model, task, seed, accuracy (empty without fine-tune seeds)
    seconds: dict[str, float]

    def truth_table(self) -> pd.DataFrame:
        """``model, task, protocol, accuracy`` (fine-tune accuracy averaged over seeds)."""
        probe = self.frozen[["model", "task", "linear_probe"]].rename(
            columns={"linear_probe": "accuracy"}
        )
        tables = [probe.assign(protocol=PROTOCOL_LINEAR_PROBE)]
        if not self.finetune.empty:
            tuned = self.finetune.groupby(["model", "task"], as_index=False)["accuracy"].mean()
            tables.append(tuned.assign(protocol=PROTOCOL_FINE_TUNE))
        return pd.concat(tables, ignore_index=True)[["model", "task", "protocol", "accuracy"]]

    def scores_table(self) -> pd.DataFrame:
        """LogME in the ``reduce`` scores-table columns that ``evaluate`` reads."""
        return pd.DataFrame(
            {
                "model": self.frozen["model"],
                "task": self.frozen["task"],
                "metric": "logme",
                "score": self.frozen["logme"],
                "feature_dim": self.frozen["feature_dim"],
                "state": "ok",
            }
        )

    def baselines_table(self) -> pd.DataFrame:
        """Baseline scores per (model, task): source accuracy above chance, parameter count."""
        zoo = self.zoo.copy()
        zoo["source_accuracy_above_chance"] = (zoo["source_accuracy"] - zoo["chance"]).fillna(0.0)
        tasks = self.frozen[["model", "task"]]
        return tasks.merge(zoo[["model", "source_accuracy_above_chance", "num_params"]], on="model")


def run_zoo(config: BenchConfig, output: Path, workers: int = 2) -> ZooResult:
    """Build the zoo, measure ground truth and LogME; see the module docstring."""
    zoo_dir = output / "zoo"
    zoo_dir.mkdir(parents=True, exist_ok=True)
    seconds = {}
    started = time.perf_counter()
    jobs = [
        {"config": config, "source": source, "width": width, "zoo_dir": str(zoo_dir)}
        for width in reversed(config.widths)  # widest first: the longest jobs start early
        for source in config.sources
    ]
    records = [record for batch in _run_jobs(pretrain_job, jobs, workers) for record in batch]
    if config.include_random_init:
        random_jobs = [
            {"config": config, "width": width, "zoo_dir": str(zoo_dir)} for width in config.widths
        ]
        records += [
            record for batch in _run_jobs(random_init_job, random_jobs, workers) for record in batch
        ]
    zoo = pd.DataFrame(records).sort_values("model", ignore_index=True)
    seconds["pretrain"] = time.perf_counter() - started
    logger.info("zoo: %d models in %.0f s", len(zoo), seconds["pretrain"])

    started = time.perf_counter()
    features_dir = output / "features"
    features_dir.mkdir(parents=True, exist_ok=True)
    frozen_jobs = [
        {
            "config": config,
            "target": target,
            "model": row.model,
            "directory": row.directory,
            "features_dir": str(features_dir),
        }
        for row in zoo.itertuples()
        for target in config.targets
    ]
    frozen = pd.DataFrame(_run_jobs(frozen_job, frozen_jobs, workers))
    seconds["features_logme_probe"] = time.perf_counter() - started
    logger.info(
        "frozen features, LogME and linear probes in %.0f s", seconds["features_logme_probe"]
    )

    started = time.perf_counter()
    finetune_jobs = [
        {
            "config": config,
            "target": target,
            "model": row.model,
            "directory": row.directory,
            "width": row.width,
            "seed": seed,
        }
        for row in zoo.sort_values(
            "width", key=lambda w: w.map(list(WIDTHS).index), ascending=False
        ).itertuples()
        for target in config.targets
        for seed in config.finetune_seeds
    ]
    finetune = pd.DataFrame(
        _run_jobs(finetune_job, finetune_jobs, workers),
        columns=["model", "task", "seed", "accuracy"],
    )
    seconds["finetune"] = time.perf_counter() - started
    logger.info("fine-tuned %d runs in %.0f s", len(finetune_jobs), seconds["finetune"])
    return ZooResult(zoo=zoo, frozen=frozen, finetune=finetune, seconds=seconds)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def random_null_of_mean(truth: pd.DataFrame, num_draws: int, seed: int) -> np.ndarray:
    """Mean over tasks of tau_w of random rankings: ``float64[num_draws]`` (the random baseline)."""
    from ray_logme.evaluate import random_ranking_weighted_tau

    per_task = [
        random_ranking_weighted_tau(
            group["accuracy"].to_numpy(), num_draws=num_draws, seed=seed + index
        )
        for index, (_, group) in enumerate(truth.groupby("task", sort=True))
    ]
    return np.mean(per_task, axis=0)


def evaluate_zoo(
    result: ZooResult, num_bootstrap: int = 2000, seed: int = 0
) -> dict[str, pd.DataFrame]:
    """Ranking quality of LogME and the baselines, per protocol.

    Returns ``{"summary": one row per (protocol, ranking), "per_task": tau_w per target with CIs}``.
    """
    from ray_logme import evaluate as ev

    truth_all = result.truth_table()
    scores = result.scores_table()
    baselines = result.baselines_table()
    summary_rows, per_task_tables = [], []
    for protocol, truth in truth_all.groupby("protocol", sort=False):
        rankings = {
            "LogME": (scores, "score"),
            "source accuracy": (baselines, "source_accuracy_above_chance"),
            "parameter count": (baselines, "num_params"),
        }
        evaluations = {}
        for name, (table, column) in rankings.items():
            if table[column].nunique() < 2:
                logger.info("%s is the same for every model (one width?): not a ranking", name)
                continue
            evaluations[name] = ev.evaluate_ranking(
                table, truth, score_col=column, num_bootstrap=num_bootstrap, seed=seed
            )
            mean = evaluations[name].summary.set_index("statistic")
            summary_rows.append(
                {
                    "protocol": protocol,
                    "ranking by": name,
                    "tau_w mean": mean.loc["weighted_tau", "mean"],
                    "tau_w ci_low": mean.loc["weighted_tau", "ci_low"],
                    "tau_w ci_high": mean.loc["weighted_tau", "ci_high"],
                    "kendall tau": mean.loc["kendall_tau", "mean"],
                    "pearson": mean.loc["pearson", "mean"],
                    "top1 rel. acc": mean.loc["top1_rel_acc", "mean"],
                }
            )
            table = evaluations[name].per_task[
                [
                    "task",
                    "num_models",
                    "weighted_tau",
                    "weighted_tau_ci_low",
                    "weighted_tau_ci_high",
                ]
            ]
            per_task_tables.append(table.assign(protocol=protocol, ranking=name))
        null = random_null_of_mean(truth, num_draws=4000, seed=seed)
        summary_rows.append(
            {
                "protocol": protocol,
                "ranking by": "random (null, 95% range)",
                "tau_w mean": float(null.mean()),
                "tau_w ci_low": float(np.percentile(null, 2.5)),
                "tau_w ci_high": float(np.percentile(null, 97.5)),
                "kendall tau": np.nan,
                "pearson": np.nan,
                "top1 rel. acc": np.nan,
            }
        )
        logme_tau = evaluations["LogME"].per_task["weighted_tau"]
        for name in ("source accuracy", "parameter count"):
            if name not in evaluations:
                continue
            difference = ev.paired_difference_over_tasks(
                logme_tau,
                evaluations[name].per_task["weighted_tau"],
                num_bootstrap=num_bootstrap,
                seed=seed,
            )
            summary_rows.append(
                {
                    "protocol": protocol,
                    "ranking by": f"LogME minus {name}",
                    "tau_w mean": difference.estimate,
                    "tau_w ci_low": difference.low,
                    "tau_w ci_high": difference.high,
                    "kendall tau": np.nan,
                    "pearson": np.nan,
                    "top1 rel. acc": np.nan,
                }
            )
    per_task = pd.concat(per_task_tables, ignore_index=True)
    per_task = per_task[
        [
            "protocol",
            "ranking",
            "task",
            "num_models",
            "weighted_tau",
            "weighted_tau_ci_low",
            "weighted_tau_ci_high",
        ]
    ]
    return {"summary": pd.DataFrame(summary_rows), "per_task": per_task}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller zoo, one fine-tune seed (~2-3 min)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="processes, 1 torch thread each (default 2)"
    )
    parser.add_argument(
        "--output", default=None, help="results directory (default: a new temp dir)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-bootstrap", type=int, default=2000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("ray_logme").setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = BenchConfig.quick() if args.quick else BenchConfig.full()
    config = dataclasses.replace(config, seed=args.seed)
    output = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="bench-ranking-"))
    output.mkdir(parents=True, exist_ok=True)

    from ray_logme.evaluate import frame_to_markdown

    started = time.perf_counter()
    result = run_zoo(config, output, workers=args.workers)
    tables = evaluate_zoo(result, num_bootstrap=args.num_bootstrap, seed=args.seed)
    total = time.perf_counter() - started
    cpu_seconds = _cpu_seconds()

    result.zoo.drop(columns=["directory"]).to_csv(output / "zoo.csv", index=False)
    result.scores_table().to_parquet(output / "scores.parquet", index=False)
    result.truth_table().to_csv(output / "truth.csv", index=False)
    result.baselines_table().to_csv(output / "baselines.csv", index=False)
    result.frozen.to_csv(output / "frozen.csv", index=False)
    result.finetune.to_csv(output / "finetune_runs.csv", index=False)
    timing = ", ".join(f"{stage} {value:.0f} s" for stage, value in result.seconds.items())
    report = "\n".join(
        [
            f"## Controlled zoo: {len(result.zoo)} models x {len(config.targets)} targets "
            f"({'quick' if args.quick else 'full'}, seed {args.seed}, {args.workers} workers)",
            "",
            f"Wall time {total:.0f} s ({timing}); CPU time of all processes {cpu_seconds:.0f} s, "
            f"i.e. at least {cpu_seconds / max(1, args.workers):.0f} s of wall time on "
            f"{args.workers} otherwise idle cores (load average at the end: "
            f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}).",
            "",
            "### Mean tau_w over targets (95% bootstrap CI over targets)",
            "",
            frame_to_markdown(tables["summary"], 3),
            "",
            "### tau_w per target (95% bootstrap CI over models)",
            "",
            frame_to_markdown(tables["per_task"], 3),
            "",
            "### Ground truth (accuracy per target and protocol, mean over models; min - max)",
            "",
            frame_to_markdown(_truth_overview(result), 3),
            "",
        ]
    )
    (output / "results.md").write_text(report)
    print(report)
    print(f"results in {output}")
    return 0


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its (finished) worker processes."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _truth_overview(result: ZooResult) -> pd.DataFrame:
    truth = result.truth_table()
    grouped = truth.groupby(["protocol", "task"])["accuracy"]
    return pd.DataFrame(
        {
            "mean": grouped.mean(),
            "min": grouped.min(),
            "max": grouped.max(),
            "num_models": grouped.size(),
        }
    ).reset_index()


if __name__ == "__main__":
    raise SystemExit(main())
