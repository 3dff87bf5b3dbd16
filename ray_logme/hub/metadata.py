"""What a loaded model is: ``ModelMetadata``, its content fingerprint, and the modality check.

Light on purpose (standard library only), so the extract and leaderboard stages can use it
without importing torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Literal

from ray_logme.errors import ModalityMismatchError

Modality = Literal["image", "text"]
MODALITIES: tuple[str, ...] = ("image", "text")

# Bump when this package changes how features are computed from the same weights and inputs
# (pooling code, input conversion), so stale cached features get a new content key.
FEATURE_CODE_VERSION = 1

#: Batch key of resized, cropped, not yet normalised pixels ``uint8[n, C, H, W]``: what the
#: extract stage ships from its CPU workers to the model (4x fewer bytes than float32); the
#: extractor scales and normalises them on its device, as timm's own GPU prefetcher does.
PIXELS_UINT8 = "pixel_values_uint8"


def fingerprint_of(identity: dict[str, Any]) -> str:
    """sha256 hex digest of a JSON-able dict, independent of key order and process.

    ``identity`` holds everything that determines the features (hub, architecture, weight
    identity, preprocessing, pooling, ...); tuples and lists hash alike.
    """
    canonical = json.dumps(
        {"feature_code_version": FEATURE_CODE_VERSION, **identity},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        default=_json_default,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return str(value)


def to_json_able(value: Any) -> Any:
    """Recursively turn tuples, numpy values and other leaves into plain JSON types."""
    return json.loads(json.dumps(value, default=_json_default))


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """Facts about one loaded model, for the models table, cost columns and reproducing a run.

    Attributes:
        name: display name (``ModelSpec.display_name``).
        hub: ``"timm"`` or ``"hf"``.
        architecture: timm architecture or Hugging Face ``model_type``/class.
        modality: ``"image"`` or ``"text"``.
        revision: resolved hub commit, else sha256 of the weight file(s), or ``"random-init"``.
        weights_sha256: sha256 of the weight file(s) read, where the loader hashed them.
        feature_dim: length ``d`` of one feature vector.
        num_params: parameters of the headless feature model.
        input_size: ``[channels, height, width]`` for images, ``[max_length]`` for text.
        preprocessing: JSON-able preprocessing config (timm data config, image processor
            config, or tokenizer settings).
        pooling: the pooling actually used (``"default"`` resolved to a concrete choice).
        dtype: compute dtype actually used (``"float32"``, ``"bfloat16"``, ...).
        device: device the model runs on (``"cpu"``, ``"cuda:0"``).
        imagenet_top1: ImageNet-1k top-1 accuracy (%) if known, else ``None``.
        tags: ``ModelSpec.tags``.
        fingerprint: sha256 hex of what determines the features (weights, preprocessing,
            pooling, architecture options, requested dtype); device-independent and stable across
            processes. The feature store keys features by it.
    """

    name: str
    hub: str
    architecture: str
    modality: Modality
    revision: str
    weights_sha256: str | None
    feature_dim: int
    num_params: int
    input_size: tuple[int, ...]
    preprocessing: dict[str, Any]
    pooling: str
    dtype: str
    device: str
    fingerprint: str
    imagenet_top1: float | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists for tuples)."""
        return to_json_able(dataclasses.asdict(self))


def ensure_modality(model: Any, task_modality: str, task_name: str) -> None:
    """Raise ``ModalityMismatchError`` if ``model`` cannot embed inputs of ``task_modality``.

    ``model`` is a ``FeatureExtractor``, a ``Preprocessor`` or a ``ModelMetadata`` (anything with
    ``.modality``; the name is taken from ``.metadata.name``, ``.name`` or ``.model_name``).
    """
    if task_modality not in MODALITIES:
        raise ValueError(
            f"task {task_name!r}: modality must be one of {MODALITIES}, got {task_modality!r}"
        )
    model_modality = model.modality
    if model_modality == task_modality:
        return
    metadata = getattr(model, "metadata", None)
    model_name = (
        getattr(metadata, "name", None)
        or getattr(model, "name", None)
        or getattr(model, "model_name", "?")
    )
    raise ModalityMismatchError(
        f"model {model_name!r} embeds {model_modality} inputs but task {task_name!r} has "
        f"{task_modality} inputs; pair {model_modality} models with {model_modality} tasks "
        "(or remove the pair from the run config)"
    )
