"""Shared machinery of the hub adapters: devices and dtypes, weight files, the extractor base.

``FeatureExtractor`` turns a preprocessed batch (dict of numpy arrays or torch tensors) into
pooled features ``float32[n, d]``; the timm and Hugging Face adapters subclass it and only
implement ``_forward``.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ray_logme.errors import CheckpointError, ModelLoadError
from ray_logme.hub.identity import sha256_of_files  # noqa: F401  (adapters import it here)
from ray_logme.hub.metadata import ModelMetadata

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl")


class Preprocessor(Protocol):
    """Raw inputs -> model inputs; cheap to build, picklable, runs on CPU workers.

    ``preprocessor(inputs) -> dict[str, numpy.ndarray]``: images give
    ``{"pixel_values": float32[n, 3, H, W]}``; text gives ``{"input_ids": int64[n, L],
    "attention_mask": int64[n, L], ...}``.
    """

    modality: str
    model_name: str

    def __call__(self, inputs: Sequence[Any]) -> dict[str, np.ndarray]: ...

    @property
    def config(self) -> dict[str, Any]: ...


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` if available else ``cpu``; otherwise ``torch.device(device)``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            f"device {str(device)!r} requested but CUDA is not available; use 'auto' or 'cpu'"
        )
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Compute dtype: ``auto`` -> bfloat16 on GPUs that support it, else float16 on GPU; float32 on CPU."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Make random weight initialisation reproducible without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def hub_commit_of(path: str | os.PathLike) -> str | None:
    """The commit sha of a file in the Hugging Face cache (``.../snapshots/<sha>/file``), else None."""
    parts = Path(path).parts
    if "snapshots" in parts:
        index = len(parts) - 1 - parts[::-1].index("snapshots")
        if index + 1 < len(parts):
            return parts[index + 1]
    return None


def read_state_dict(
    path: str | os.PathLike, allow_pickle: bool, model_name: str
) -> dict[str, torch.Tensor]:
    """Load a weight file into a CPU state dict, safely.

    ``.safetensors`` always; pickle formats (``.bin``, ``.pth``, ...) only with ``allow_pickle``
    and then with ``torch.load(weights_only=True)``, which refuses arbitrary objects. Checkpoints
    that wrap the weights (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped and a
    ``module.`` (DataParallel) prefix is stripped. Raises ``CheckpointError`` naming the model
    and file when the file is missing, corrupt, or pickle is not allowed.
    """
    path = Path(path)
    where = f"model {model_name!r}: checkpoint {str(path)!r}"
    if not path.is_file():
        raise CheckpointError(f"{where} does not exist (or is not a file)")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        import safetensors.torch

        try:
            state = safetensors.torch.load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError and OSError
            raise CheckpointError(f"{where} is not a valid safetensors file: {exc}") from exc
    elif not allow_pickle:
        raise CheckpointError(
            f"{where} is a pickle file ({suffix or 'no suffix'}), which can run code when loaded. "
            "Convert it to .safetensors (safetensors.torch.save_file(state_dict, path)) or set "
            "allow_pickle: true in the model spec (it is then loaded with weights_only=True)"
        )
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError, RuntimeError (zip), EOFError, ...
            raise CheckpointError(
                f"{where} could not be loaded with weights_only=True (corrupt, or it pickles "
                f"objects other than tensors): {exc}"
            ) from exc
    return _unwrap_state_dict(state, where)


def _unwrap_state_dict(state: Any, where: str) -> dict[str, torch.Tensor]:
    if isinstance(state, Mapping):
        for key in ("state_dict", "model", "module"):
            inner = state.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
                state = inner
                break
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{where} holds no state dict (got {type(state).__name__})")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{where} holds no tensors")
    if all(key.startswith("module.") for key in tensors):
        tensors = {key.removeprefix("module."): value for key, value in tensors.items()}
    return tensors


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


class FeatureExtractor(abc.ABC):
    """A frozen model that maps preprocessed batches to pooled features ``float32[n, d]``.

    Attributes:
        model: the headless ``torch.nn.Module`` in eval mode on ``device``.
        preprocess: the ``Preprocessor`` (raw inputs -> dict of numpy arrays).
        modality: ``"image"`` or ``"text"``.
        device: ``torch.device`` the model runs on.
        dtype: compute ``torch.dtype`` (autocast when not float32).
        metadata: ``ModelMetadata``.
    """

    input_names: tuple[str, ...]

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Preprocessor,
        device: torch.device,
        dtype: torch.dtype,
        input_names: Sequence[str],
    ) -> None:
        self.model = model.eval()
        self.preprocess = preprocess
        self.device = device
        self.dtype = dtype
        self.input_names = tuple(input_names)
        self.metadata: ModelMetadata | None = None  # set by the loader once the model is probed

    @property
    def modality(self) -> str:
        return self.preprocess.modality

    def __call__(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> np.ndarray:
        """Pooled features of a preprocessed batch.

        Args:
            batch: the preprocessor's output (extra keys such as ``row_id`` are ignored).
        Returns:
            ``float32[n, d]`` numpy array, C-contiguous.
        """
        tensors = {
            name: self._to_device(name, self._as_tensor(batch, name))
            for name in self._needed(batch)
        }
        with torch.inference_mode(), self._autocast():
            features = self._forward(tensors)
        return np.ascontiguousarray(features.float().cpu().numpy(), dtype=np.float32)

    def extract(self, inputs: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """Raw inputs -> ``float32[n, d]``: ``preprocess`` then ``__call__``, ``batch_size`` at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(inputs) == 0:
            raise ValueError("extract() needs at least one input")
        chunks = [
            self(self.preprocess(inputs[start : start + batch_size]))
            for start in range(0, len(inputs), batch_size)
        ]
        return np.concatenate(chunks, axis=0)

    def _needed(self, batch: Mapping[str, Any]) -> tuple[str, ...]:
        missing = [name for name in self.required_inputs if name not in batch]
        if missing:
            raise ValueError(
                f"model {self.preprocess.model_name!r}: batch lacks {missing} (has {sorted(batch)}); "
                "pass the output of extractor.preprocess(inputs)"
            )
        return tuple(name for name in self.input_names if name in batch)

    @property
    def required_inputs(self) -> tuple[str, ...]:
        return self.input_names

    def _as_tensor(self, batch: Mapping[str, Any], name: str) -> torch.Tensor:
        value = batch[name]
        if isinstance(value, torch.Tensor):
            return value
        array = np.asarray(value)
        if array.dtype == object:
            array = self._stack_ragged(name, array)
        return torch.from_numpy(np.ascontiguousarray(array))

    def _stack_ragged(self, name: str, column: np.ndarray) -> np.ndarray:
        """Ray may hand over a column of differently-shaped rows (object array); subclasses pad."""
        try:
            return np.stack(list(column))
        except ValueError as exc:
            raise ValueError(
                f"model {self.preprocess.model_name!r}: input {name!r} has rows of different shapes"
            ) from exc

    def _to_device(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=True)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @abc.abstractmethod
    def _forward(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Model inputs on ``device`` -> pooled features ``[n, d]`` (any float dtype)."""

    def _probe_feature_dim(self, sample: Any) -> int:
        """Run one synthetic input through preprocess + model; returns ``d`` (and fails early)."""
        features = self(self.preprocess([sample]))
        if features.ndim != 2 or features.shape[0] != 1:
            raise ModelLoadError(
                f"model {self.preprocess.model_name!r}: pooled features have shape {features.shape}, "
                "expected [1, d]; choose another pooling"
            )
        return int(features.shape[1])

    def __repr__(self) -> str:
        name = self.metadata.name if self.metadata else self.preprocess.model_name
        return (
            f"{type(self).__name__}({name!r}, device={self.device}, dtype={dtype_name(self.dtype)})"
        )
