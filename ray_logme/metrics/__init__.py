"""Transferability metrics computed from frozen features (pure numpy/torch, no I/O).

* :func:`logme` - LogME of one ``(features, labels)`` pair.
* :class:`LogMEStats` - the same from streamed, mergeable sufficient statistics.
"""

from ray_logme.metrics.logme import LogMEResult, LogMEStats, TargetEvidence, logme

__all__ = ["LogMEResult", "LogMEStats", "TargetEvidence", "logme"]
