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
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar


class StreamingMetric(Protocol):
    """A transferability metric computed from mergeable statistics of (features, labels)."""

    name: str

    def new_stats(self, kind: str) -> Any:
        """Empty statistics with ``update(features, labels)``, ``merge(other)`` and ``copy()``."""

    def score(self, stats: Any) -> tuple[float, dict[str, Any]]:
        """The score (higher = better transfer) and JSON-able details (``num_samples``,
        ``feature_dim``, ``num_targets``)."""


METRICS: dict[str, StreamingMetric] = {}

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
