"""The registry of transferability metrics the reduce stage can compute.

A metric is one class registered by name; adding one is a new module with a decorated class
(and an import in ``ray_logme/metrics/__init__.py``), never an edit of the reduce stage::

    @register_metric
    class HScoreMetric:
        name = "hscore"
        def new_stats(self, kind): ...      # empty mergeable statistics
        def score(self, stats): ...         # (score, JSON-able details)

Streaming metrics work from mergeable statistics (``update(features, labels)``, ``merge``,
``copy``) so that the reduce stage can stream shards and tree-merge partial results.

Sample metrics (:class:`SampleMetric`: NLEEP, SFDA, GBC, kNN) need the rows themselves; the reduce
stage gives them a capped, seeded, stratified sample of each pair (see
:mod:`ray_logme.metrics.sampling`) and calls ``score_sample(features, labels, kind)``.

Every metric may declare ``kinds`` (the task kinds it defines; default both) and ``params`` (the
settings its value depends on). :func:`metric_cache_name` turns the name and parameters into the
name a cached score is stored under, so that changing a parameter never reuses an old score.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

import numpy as np


class StreamingMetric(Protocol):
    """A transferability metric computed from mergeable statistics of (features, labels)."""

    name: str

    def new_stats(self, kind: str) -> Any:
        """Empty statistics with ``update(features, labels)``, ``merge(other)`` and ``copy()``."""

    def score(self, stats: Any) -> tuple[float, dict[str, Any]]:
        """The score (higher = better transfer) and JSON-able details (``num_samples``,
        ``feature_dim``, ``num_targets``)."""


class SampleMetric(Protocol):
    """A transferability metric computed from a bounded sample of (features, labels) rows."""

    name: str
    kinds: tuple[str, ...]
    params: dict[str, Any]

    def score_sample(
        self, features: np.ndarray, labels: np.ndarray, kind: str
    ) -> tuple[float, dict[str, Any]]:
        """The score of ``features: float[n, d]`` for ``labels: int[n]`` (or ``float[n, t]``)
        and JSON-able details; ``ValueError`` for a kind the metric does not define."""


#: The task kinds a metric defines when it does not say.
ALL_KINDS = ("classification", "regression")

METRICS: dict[str, StreamingMetric | SampleMetric] = {}

_MetricClass = TypeVar("_MetricClass", bound=type)


def register_metric(cls: _MetricClass) -> _MetricClass:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"metric class {cls.__name__} needs a non-empty str attribute 'name'")
    if name in METRICS:
        raise ValueError(f"metric {name!r} is already registered")
    METRICS[name] = cls()
    return cls


def get_metric(name: str) -> StreamingMetric:
    """The registered metric ``name``; ``ValueError`` naming the available ones otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; available: {sorted(METRICS)}") from None


def is_sample_metric(metric: Any) -> bool:
    """True for a :class:`SampleMetric` (it has ``score_sample``), False for a streaming one."""
    return callable(getattr(metric, "score_sample", None))


def metric_kinds(metric: Any) -> tuple[str, ...]:
    """The task kinds ``metric`` defines (``ALL_KINDS`` unless it declares ``kinds``)."""
    return tuple(getattr(metric, "kinds", ALL_KINDS))


def metric_cache_name(metric: Any, extra: Mapping[str, Any] | None = None) -> str:
    """``name`` when the metric has no parameters, else ``name-key1value1-key2value2`` over its
    ``params`` plus ``extra`` (e.g. the sample cap and seed), sorted by key: one safe path segment
    (``nleep-cap2000-components_per_class5-pca_variance0.8-seed0``)."""
    params = {**dict(getattr(metric, "params", {}) or {}), **dict(extra or {})}
    if not params:
        return metric.name
    return "-".join([metric.name, *(f"{key}{params[key]}" for key in sorted(params))])
