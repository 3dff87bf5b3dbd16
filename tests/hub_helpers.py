"""Helpers shared by the hub tests: test images and a fake Hugging Face cache (nothing downloads)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def random_rgb(seed: int, height: int = 40, width: int = 52) -> np.ndarray:
    """A deterministic uint8 [H, W, 3] image with smooth structure plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 4 + seed * 7, yy * 5 + seed * 3, (xx + yy) * 3], axis=-1) % 256
    noise = rng.integers(0, 40, size=(height, width, 3))
    return ((base + noise) % 256).astype(np.uint8)


def encode(array: np.ndarray, fmt: str) -> bytes:
    """uint8 array -> encoded image bytes (``"PNG"`` is lossless, ``"JPEG"`` is not)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def add_to_hub_cache(
    cache_dir: Path, repo_id: str, commit: str, files: dict[str, Path | bytes]
) -> Path:
    """Lay out ``files`` as huggingface_hub's cache does for ``repo_id`` at ``commit`` on ``main``.

    ``hf_hub_download`` with ``HF_HUB_OFFLINE=1`` then resolves ``main`` to ``commit`` and returns
    these files, exactly as after a real download. Returns the snapshot folder.
    """
    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    for name, content in files.items():
        target = snapshot / name
        target.write_bytes(content if isinstance(content, bytes) else Path(content).read_bytes())
    return snapshot


def save_tiny_vit(folder: Path, seed: int, **processor_kwargs) -> Path:
    """A random-init Hugging Face ViT for 32x32 inputs (4 x 4 patches of 8 px + CLS) in
    ``folder``, with its ``ViTImageProcessor`` (``processor_kwargs`` override its defaults)."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(seed)
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, **processor_kwargs).save_pretrained(folder)
    return folder


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``: ``float[n]``."""
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
