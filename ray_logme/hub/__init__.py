"""Model hubs: one ``ModelSpec`` -> a ready feature extractor with the model's own preprocessing.

Entry points::

    from ray_logme.hub import ModelSpec, load_extractor, load_preprocessor, ensure_modality

    spec = ModelSpec(hub="timm", name="convnext_tiny.fb_in22k")
    preprocess = load_preprocessor(spec)           # cheap, picklable: CPU workers
    extractor = load_extractor(spec, device="auto")  # weights on the device: the model actor
    features = extractor(preprocess(images))        # float32[n, d]

Importing this package is light (pydantic only); torch, timm and transformers load on first use.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ray_logme.hub.metadata import PIXELS_UINT8, ModelMetadata, ensure_modality, fingerprint_of
from ray_logme.hub.registry import HUBS, HubAdapter, hub_adapter, register_hub
from ray_logme.hub.spec import ModelSpec

if TYPE_CHECKING:
    import torch

    from ray_logme.hub.base import FeatureExtractor, Preprocessor

__all__ = [
    "HUBS",
    "PIXELS_UINT8",
    "FeatureExtractor",
    "HubAdapter",
    "ModelMetadata",
    "ModelSpec",
    "Preprocessor",
    "ensure_modality",
    "fingerprint_of",
    "hub_adapter",
    "load_extractor",
    "load_preprocessor",
    "register_hub",
]


def load_preprocessor(spec: ModelSpec, allow_remote_code: Iterable[str] = ()) -> Preprocessor:
    """The model's preprocessing, without its weights: raw inputs -> dict of numpy arrays.

    Cheap and picklable (ship it to CPU workers). ``.modality`` says whether it reads images or
    text. Raises ``UnknownModelError`` / ``CheckpointError`` / ``RemoteCodeNotAllowedError``
    (subclasses of ``ModelLoadError``) like ``load_extractor`` would; pass the run config's
    ``allow_remote_code`` for models that need their repo's code.
    """
    return hub_adapter(spec.hub).load_preprocessor(spec, tuple(allow_remote_code))


def load_extractor(
    spec: ModelSpec,
    device: str | torch.device = "auto",
    allow_remote_code: Iterable[str] = (),
) -> FeatureExtractor:
    """Build the frozen feature model for ``spec`` on ``device`` (``"auto"``: cuda if available).

    ``allow_remote_code`` is the run config's allowlist of Hugging Face repo ids (or local
    directories) whose own Python code may run; a spec with ``trust_remote_code: true`` is
    refused unless its name is listed.

    Returns a ``FeatureExtractor``: ``.preprocess(inputs)`` -> dict of numpy arrays,
    ``extractor(batch)`` -> ``float32[n, d]``, ``.extract(inputs)``, ``.metadata``.
    Errors are ``ModelLoadError`` subclasses, so a run can record them per model and go on.
    """
    return hub_adapter(spec.hub).load_extractor(spec, device, tuple(allow_remote_code))


def __getattr__(name: str) -> Any:
    # FeatureExtractor / Preprocessor live with torch; import them only when asked for.
    if name in ("FeatureExtractor", "Preprocessor"):
        from ray_logme.hub import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
