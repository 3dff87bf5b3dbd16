"""Transferability metrics computed from frozen features (pure numpy/torch, no I/O).

* :func:`logme` - LogME of one ``(features, labels)`` pair.
* :class:`LogMEStats` - the same from streamed, mergeable sufficient statistics.
* :func:`hscore`, :func:`shrinkage_hscore` - H-score and its Ledoit-Wolf version, streamed from
  :class:`HScoreStats` (``LogMEStats`` plus two small fourth-moment extras).
* :func:`nleep`, :func:`sfda`, :func:`gbc`, :func:`knn` - metrics of a bounded sample of rows
  (the reduce stage draws it with :mod:`ray_logme.metrics.sampling`).
* :data:`METRICS` / :func:`get_metric` / :func:`register_metric` - the registry the reduce stage
  computes from (one module per metric; each class registers itself under its ``name``).
"""

from ray_logme.metrics.gbc import GBCMetric, gbc
from ray_logme.metrics.hscore import HScoreMetric, HScoreStats, hscore
from ray_logme.metrics.knn import KNNMetric, knn
from ray_logme.metrics.logme import LogMEMetric, LogMEResult, LogMEStats, TargetEvidence, logme
from ray_logme.metrics.nleep import NLEEPMetric, nleep
from ray_logme.metrics.registry import (
    METRICS,
    SampleMetric,
    StreamingMetric,
    get_metric,
    is_sample_metric,
    metric_cache_name,
    metric_kinds,
    register_metric,
)
from ray_logme.metrics.sfda import SFDAMetric, sfda
from ray_logme.metrics.shrinkage_hscore import ShrinkageHScoreMetric, shrinkage_hscore

__all__ = [
    "METRICS",
    "GBCMetric",
    "HScoreMetric",
    "HScoreStats",
    "KNNMetric",
    "LogMEMetric",
    "LogMEResult",
    "LogMEStats",
    "NLEEPMetric",
    "SFDAMetric",
    "SampleMetric",
    "ShrinkageHScoreMetric",
    "StreamingMetric",
    "TargetEvidence",
    "gbc",
    "get_metric",
    "hscore",
    "is_sample_metric",
    "knn",
    "logme",
    "metric_cache_name",
    "metric_kinds",
    "nleep",
    "register_metric",
    "sfda",
    "shrinkage_hscore",
]
