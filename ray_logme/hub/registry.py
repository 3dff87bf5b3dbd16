"""The registry of model hubs: ``ModelSpec.hub`` -> the adapter that loads its models.

An adapter is two loaders, each imported only when first called (torch, timm and transformers
stay unloaded until a model is built)::

    @register_hub("timm")
    class _Timm:
        def load_preprocessor(spec, allow_remote_code): ...
        def load_extractor(spec, device, allow_remote_code): ...

Adding a hub is one adapter module and one registration here; :func:`hub_adapter` is the only
place that chooses among them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray_logme.hub.base import FeatureExtractor, Preprocessor
    from ray_logme.hub.spec import ModelSpec


@dataclass(frozen=True)
class HubAdapter:
    """How one hub loads a spec: ``load_preprocessor(spec, allow_remote_code)`` (no weights)
    and ``load_extractor(spec, device, allow_remote_code)`` (weights on the device)."""

    name: str
    load_preprocessor: Callable[[ModelSpec, tuple[str, ...]], Preprocessor]
    load_extractor: Callable[[ModelSpec, Any, tuple[str, ...]], FeatureExtractor]


HUBS: dict[str, HubAdapter] = {}


def register_hub(
    name: str,
    load_preprocessor: Callable[[ModelSpec, tuple[str, ...]], Preprocessor],
    load_extractor: Callable[[ModelSpec, Any, tuple[str, ...]], FeatureExtractor],
) -> HubAdapter:
    """Register the adapter of hub ``name`` (a value ``ModelSpec.hub`` accepts)."""
    if name in HUBS:
        raise ValueError(f"hub {name!r} is already registered")
    adapter = HubAdapter(name, load_preprocessor, load_extractor)
    HUBS[name] = adapter
    return adapter


def hub_adapter(name: str) -> HubAdapter:
    """The adapter of hub ``name``; ``ValueError`` naming the known hubs otherwise."""
    try:
        return HUBS[name]
    except KeyError:
        raise ValueError(f"unknown hub {name!r}; known hubs: {sorted(HUBS)}") from None


# -- the built-in hubs (adapters import their heavy libraries on first use) -----------------
def _timm_preprocessor(spec: ModelSpec, allow_remote_code: tuple[str, ...]) -> Preprocessor:
    from ray_logme.hub.timm_hub import load_timm_preprocessor

    return load_timm_preprocessor(spec)  # timm runs no repository code


def _timm_extractor(
    spec: ModelSpec, device: Any, allow_remote_code: tuple[str, ...]
) -> FeatureExtractor:
    from ray_logme.hub.timm_hub import load_timm_extractor

    return load_timm_extractor(spec, device=device)


def _hf_preprocessor(spec: ModelSpec, allow_remote_code: tuple[str, ...]) -> Preprocessor:
    from ray_logme.hub.hf_hub import load_hf_preprocessor

    return load_hf_preprocessor(spec, allow_remote_code=allow_remote_code)


def _hf_extractor(
    spec: ModelSpec, device: Any, allow_remote_code: tuple[str, ...]
) -> FeatureExtractor:
    from ray_logme.hub.hf_hub import load_hf_extractor

    return load_hf_extractor(spec, device=device, allow_remote_code=allow_remote_code)


register_hub("timm", _timm_preprocessor, _timm_extractor)
register_hub("hf", _hf_preprocessor, _hf_extractor)
