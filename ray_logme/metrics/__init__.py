"""Transferability metrics computed from frozen features (pure numpy/torch, no I/O).

* :func:`logme` - LogME of one ``(features, labels)`` pair.
* :class:`LogMEStats` - the same from streamed, mergeable sufficient statistics.
* :data:`METRICS` / :func:`get_metric` / :func:`register_metric` - the registry the reduce stage
  computes from (one module per metric; :class:`LogMEMetric` is registered as ``"logme"``).
"""

from ray_logme.metrics.logme import LogMEMetric, LogMEResult, LogMEStats, TargetEvidence, logme
from ray_logme.metrics.registry import METRICS, StreamingMetric, get_metric, register_metric

__all__ = [
    "METRICS",
    "LogMEMetric",
    "LogMEResult",
    "LogMEStats",
    "StreamingMetric",
    "TargetEvidence",
    "get_metric",
    "logme",
    "register_metric",
]
