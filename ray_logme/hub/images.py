"""Turn raw image inputs (bytes, PIL images, uint8 arrays, file paths) into RGB PIL images."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ray_logme.errors import TaskError


def to_rgb_image(item: Any, index: int) -> Image.Image:
    """One raw input -> ``PIL.Image`` in RGB mode.

    Accepts encoded bytes (PNG, JPEG, ... anything PIL reads), a ``PIL.Image`` (any mode; grey,
    palette and RGBA become RGB), a uint8 numpy array ``[H, W]`` or ``[H, W, C]`` with C in
    {1, 3, 4}, or a local file path. Anything else raises ``TaskError`` naming ``index``.
    """
    if isinstance(item, Image.Image):
        return item if item.mode == "RGB" else item.convert("RGB")
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(item)), index, what="image bytes")
    if isinstance(item, np.ndarray):
        return _from_array(item, index)
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        if not os.path.isfile(path):
            raise TaskError(f"image input {index}: {path!r} is not an existing local file")
        return _decode(path, index, what=f"image file {path!r}")
    raise TaskError(
        f"image input {index}: unsupported type {type(item).__name__}; expected encoded bytes, "
        "PIL.Image, uint8 numpy [H, W] / [H, W, C], or a local file path"
    )


def to_rgb_images(inputs: Sequence[Any]) -> list[Image.Image]:
    """A batch of raw inputs -> list of RGB ``PIL.Image`` (see ``to_rgb_image``)."""
    if isinstance(inputs, (str, bytes)) or not hasattr(inputs, "__len__"):
        raise TaskError(f"image inputs must be a sequence of images, got {type(inputs).__name__}")
    return [to_rgb_image(item, index) for index, item in enumerate(inputs)]


def _decode(source: Any, index: int, what: str) -> Image.Image:
    try:
        with Image.open(source) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise TaskError(f"image input {index}: cannot decode {what}: {exc}") from exc


def _from_array(array: np.ndarray, index: int) -> Image.Image:
    if array.dtype != np.uint8:
        raise TaskError(
            f"image input {index}: numpy images must be uint8 [H, W] or [H, W, C], got dtype "
            f"{array.dtype}; scale to 0..255 and cast with .astype(numpy.uint8)"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        image = Image.fromarray(np.ascontiguousarray(array))
        return image.convert("RGB")
    raise TaskError(
        f"image input {index}: numpy image has shape {array.shape}; expected [H, W] or [H, W, C] "
        "with C in {1, 3, 4}"
    )
