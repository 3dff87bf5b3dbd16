"""Where the extract stage gets its models: the real hubs, or a declared simulation.

A :class:`ModelSource` answers what the scheduler asks about a model before loading it (its
content key, its modality, what its inputs must be decoded into, whether its weights are worth
fetching ahead) and loads it in a worker. :class:`HubSource` is the only source a run config
can reach (timm and Hugging Face through :mod:`ray_logme.hub`);
:class:`~ray_logme.extract.simulated.SimulatedHub` exists for tests and benchmarks that pass it
explicitly. Sources are small and picklable: they travel to every worker actor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from ray_logme.hub import ModelSpec, load_extractor, load_preprocessor
from ray_logme.hub.identity import local_model_dir, resolve_model_key


class ModelSource(Protocol):
    """What the scheduler and the workers need from a model hub (see :class:`HubSource`)."""

    #: the ``hub`` column of the models table for this source's models (``None``: the spec's)
    hub_name: str | None

    def resolve_key(self, spec: ModelSpec, has_features: Callable[[str], bool]) -> str: ...

    def preprocessor(self, spec: ModelSpec, allow_remote_code: tuple[str, ...]) -> Any:
        """Something with ``.modality`` (and ``.config`` when inputs are decoded by CPU tasks)."""

    def decode_key(self, preprocessor: Any, task_modality: str) -> str | None:
        """Identity of the CPU decode this model's inputs need (models that share it share the
        decoded shards), or ``None`` when the worker reads the raw inputs itself."""

    def needs_prefetch(self, spec: ModelSpec) -> bool: ...

    def prefetch(self, spec: ModelSpec, allow_remote_code: tuple[str, ...]) -> None: ...

    def load(self, spec: ModelSpec, device: str, allow_remote_code: tuple[str, ...]) -> Any:
        """A loaded model: ``__call__(inputs) -> float32[n, d]``, ``preprocess(texts)``,
        ``metadata`` (``.feature_dim``, ``.to_dict()``)."""


class HubSource:
    """The real hubs (timm, Hugging Face): what every run config uses."""

    hub_name = None

    def resolve_key(self, spec: ModelSpec, has_features: Callable[[str], bool]) -> str:
        return resolve_model_key(spec, has_features)

    def preprocessor(self, spec: ModelSpec, allow_remote_code: tuple[str, ...]) -> Any:
        return load_preprocessor(spec, allow_remote_code=allow_remote_code)

    def decode_key(self, preprocessor: Any, task_modality: str) -> str | None:
        if task_modality != "image":
            return None  # text: the worker tokenises its own rows (cheap, no fixed shape)
        config = getattr(preprocessor, "config", None)
        return json.dumps(config, sort_keys=True, default=str) if config is not None else None

    def needs_prefetch(self, spec: ModelSpec) -> bool:
        """Whether loading may download weights (a pretrained model not in a local folder)."""
        if not spec.pretrained or spec.checkpoint_path:
            return False
        try:
            return local_model_dir(spec) is None
        except Exception:  # the load will say what is wrong
            return False

    def prefetch(self, spec: ModelSpec, allow_remote_code: tuple[str, ...]) -> None:
        """Download the model's weights into this node's Hugging Face cache (best effort)."""
        if spec.hub == "timm":
            from ray_logme.hub.timm_hub import _weights_file, resolve_source

            _weights_file(spec, resolve_source(spec))
        else:
            from huggingface_hub import snapshot_download

            snapshot_download(
                spec.name,
                revision=spec.revision,
                allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"],
            )

    def load(self, spec: ModelSpec, device: str, allow_remote_code: tuple[str, ...]) -> Any:
        return load_extractor(spec, device=device, allow_remote_code=allow_remote_code)
