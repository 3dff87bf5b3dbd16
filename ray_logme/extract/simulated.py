"""A SIMULATED model hub, for tests and benchmarks of the scheduler only: no real model.

:class:`SimulatedHub` is a :class:`~ray_logme.extract.sources.ModelSource` whose models are
seeded random features of a given width, produced after a configurable start-up delay (the
"load") and a per-row delay (the "forward pass"), both spent sleeping. It lets a 2-core machine
play a hub of a thousand models on a cluster of GPUs (declare them with
``ray.init(num_gpus=8)``): the schedule is real (Ray actors, the object store, the feature
store, the reduce stage), only the compute is simulated.

It is never reachable from a run config: only code that passes ``model_source=SimulatedHub(...)``
to :func:`ray_logme.extract.extract` uses it. Its models say so everywhere: ``hub`` is
``"simulated"`` in the models table, and every record and shard it writes carries
``"simulated": true``.

A model's parameters follow from the hub's seed and the model's name (``ModelSpec.name``), so a
name always means the same simulated model::

    hub = SimulatedHub(seed=0, startup_seconds=(0.2, 3.0), seconds_per_row=(1e-4, 2e-3))
    specs = hub.specs(1000)  # ModelSpec(hub="timm", name="simulated-00000", pretrained=False), ...

Start-ups and per-row costs are log-uniform between their bounds (skewed: most models are
cheap, a few are expensive); feature widths are drawn from ``feature_dims``.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_logme.hub import ModelSpec
from ray_logme.storage import layout

#: Name prefix of simulated models (specs made by :meth:`SimulatedHub.specs`).
SIMULATED_PREFIX = "simulated-"


@dataclass(frozen=True)
class SimulatedModelInfo:
    """One simulated model's parameters (what the hub derives from its name)."""

    name: str
    startup_seconds: float
    seconds_per_row: float
    feature_dim: int
    seed: int


@dataclass(frozen=True)
class SimulatedHub:
    """A simulated model source: seeded random features after simulated delays (see module)."""

    seed: int = 0
    startup_seconds: tuple[float, float] = (0.1, 1.0)
    seconds_per_row: tuple[float, float] = (1e-4, 1e-3)
    feature_dims: tuple[int, ...] = (32, 64, 128)
    modality: str = "image"
    hub_name: str = "simulated"

    def specs(self, count: int) -> list[ModelSpec]:
        """``count`` simulated model specs, ``simulated-00000`` onwards."""
        return [
            ModelSpec(hub="timm", name=f"{SIMULATED_PREFIX}{i:05d}", pretrained=False)
            for i in range(count)
        ]

    def info(self, spec: ModelSpec) -> SimulatedModelInfo:
        digest = zlib.crc32(spec.name.encode())
        rng = np.random.default_rng([self.seed, digest])
        return SimulatedModelInfo(
            name=spec.name,
            startup_seconds=_log_uniform(rng, self.startup_seconds),
            seconds_per_row=_log_uniform(rng, self.seconds_per_row),
            feature_dim=int(rng.choice(self.feature_dims)),
            seed=int(rng.integers(2**31)),
        )

    # -- the ModelSource protocol --------------------------------------------------------------
    def resolve_key(self, spec: ModelSpec, has_features: Callable[[str], bool]) -> str:
        identity = f"simulated {self!r} {self.info(spec)!r}"
        return layout.content_key(spec.name, hashlib.sha256(identity.encode()).hexdigest())

    def preprocessor(self, spec: ModelSpec, allow_remote_code: tuple[str, ...]) -> Any:
        return _SimulatedPreprocessor(self.modality, spec.name)

    def decode_key(self, preprocessor: Any, task_modality: str) -> str | None:
        return None  # the simulated forward pass needs no pixels

    def needs_prefetch(self, spec: ModelSpec) -> bool:
        return False

    def prefetch(self, spec: ModelSpec, allow_remote_code: tuple[str, ...]) -> None:
        return None

    def load(self, spec: ModelSpec, device: str, allow_remote_code: tuple[str, ...]) -> Any:
        info = self.info(spec)
        time.sleep(info.startup_seconds)
        return SimulatedModel(info, self.modality)

    def expected_seconds(self, spec: ModelSpec, rows: int) -> float:
        """Simulated compute of ``rows`` rows (no start-up): what the benchmark's target uses."""
        return rows * self.info(spec).seconds_per_row


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    low, high = bounds
    if low <= 0 or high <= low:
        return float(low)
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


@dataclass(frozen=True)
class _SimulatedPreprocessor:
    modality: str
    name: str
    config: Any = None


class _SimulatedMetadata:
    def __init__(self, info: SimulatedModelInfo) -> None:
        self.info = info
        self.feature_dim = info.feature_dim

    def to_dict(self) -> dict[str, Any]:
        return {
            "simulated": True,
            "name": self.info.name,
            "hub": "simulated",
            "feature_dim": self.info.feature_dim,
            "num_params": None,
            "startup_seconds": self.info.startup_seconds,
            "seconds_per_row": self.info.seconds_per_row,
        }


class SimulatedModel:
    """A loaded simulated model: sleeps ``rows x seconds_per_row``, returns seeded features."""

    def __init__(self, info: SimulatedModelInfo, modality: str) -> None:
        self.info = info
        self.modality = modality
        self.metadata = _SimulatedMetadata(info)

    def preprocess(self, texts: list[str]) -> dict[str, np.ndarray]:
        return {"count": np.zeros(len(texts))}

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        time.sleep(len(batch["row_id"]) * self.info.seconds_per_row)
        return simulated_features(self.info, batch["row_id"])


def simulated_features(info: SimulatedModelInfo, row_ids: np.ndarray) -> np.ndarray:
    """``float32[n, d]``: the simulated model's features of these rows (a function of the
    model's seed and each row id alone, so any batching gives the same features)."""
    rng = np.random.default_rng(info.seed)
    frequency = rng.uniform(0.05, 3.0, size=info.feature_dim)
    phase = rng.uniform(0.0, 2 * np.pi, size=info.feature_dim)
    rows = np.asarray(row_ids, dtype=np.float64)[:, None] + 1.0
    return np.sin(rows * frequency + phase).astype(np.float32)
