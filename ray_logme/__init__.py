"""ray-logme: rank pre-trained models for downstream tasks with LogME, on Ray.

The names a script needs::

    import ray_logme

    config = ray_logme.RunConfig.from_yaml("jobs/configs/nightly.yaml")
    result = ray_logme.refresh(config)              # tasks -> extract -> reduce -> leaderboard
    run = ray_logme.load_run(store, result.run_id)  # the run's tables, as the refresh used them

    score = ray_logme.logme(features, labels)       # one (features, labels) pair
    stats = ray_logme.LogMEStats(kind="classification"); stats.update(chunk, chunk_labels)

Importing the package is light: each name is imported on first use, and none of them loads
torch, timm, transformers or Ray at import time (they load when a model is built or a stage runs).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "RunConfig": "ray_logme.config",
    "Resources": "ray_logme.config",
    "ModelSpec": "ray_logme.hub",
    "load_extractor": "ray_logme.hub",
    "TaskSpec": "ray_logme.tasks",
    "snapshot_task": "ray_logme.tasks",
    "FeatureStore": "ray_logme.storage",
    "connect_ray": "ray_logme.cluster",
    "refresh": "ray_logme.pipeline",
    "RefreshResult": "ray_logme.pipeline",
    "load_run": "ray_logme.pipeline",
    "list_runs": "ray_logme.pipeline",
    "logme": "ray_logme.metrics",
    "LogMEStats": "ray_logme.metrics",
    "register_metric": "ray_logme.metrics",
    "build_leaderboard": "ray_logme.leaderboard",
    "write_leaderboard": "ray_logme.leaderboard",
    "Leaderboard": "ray_logme.leaderboard",
    "evaluate_ranking": "ray_logme.evaluate",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ray_logme' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
