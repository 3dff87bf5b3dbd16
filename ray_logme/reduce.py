"""The reduce stage: feature shards -> one score per (model, task) and metric, on Ray.

LogME needs only sufficient statistics (n, F^T F, F^T Y, Y^T Y), so each pair's shards are
streamed in bounded chunks into :class:`~ray_logme.metrics.LogMEStats`: memory is O(d^2), not
O(n d). Small pairs are scored by one Ray task; a pair with many shards is split into groups of
shards, one Ray task each, whose statistics are merged in a tree of Ray tasks.

Scores are cached on the store under ``scores/{metric}/{model_key}/{task_key}.json``: content keys
name exactly the features scored, so a pair whose features did not change is not recomputed by
a later run (its row says ``cached``).

Metrics come from the registry in :mod:`ray_logme.metrics.registry` (a
:class:`~ray_logme.metrics.StreamingMetric` streams from mergeable statistics; LogME is registered
as ``"logme"``). A metric that needs a bounded, seeded sample of rows (NLEEP, kNN) would get a
sample-based path beside the streaming one.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ray_logme.errors import RayLogMEError
from ray_logme.metrics import METRICS, LogMEMetric, StreamingMetric, get_metric  # noqa: F401
from ray_logme.storage import FeatureStore, layout
from ray_logme.tables import SCORES, SCORES_SCHEMA, ScoreRow  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

#: Rows per chunk read from a shard into the statistics (bounded memory: chunk x d floats).
CHUNK_ROWS = 8192
#: Shards per Ray task; pairs with more shards are split and their statistics tree-merged.
SHARDS_PER_TASK = 16


@dataclass(frozen=True)
class ReducePair:
    """One (model, task) pair to score; ``state``/``error`` carry the extract stage's verdict."""

    model: str
    model_key: str
    task: str
    task_key: str
    kind: str
    state: str = "ok"
    error: str | None = None


def score_cache_relpath(metric: str, model_key: str, task_key: str) -> str:
    """Where the cached score of one pair lives on the store."""
    return layout.score_cache(metric, model_key, task_key)


# --------------------------------------------------------------------------------------------
# Ray tasks (bodies are plain functions so they are testable in-process)


def stats_of_shards(
    store: FeatureStore,
    model_key: str,
    task_key: str,
    kind: str,
    shard_indices: Sequence[int],
    metric: str = "logme",
    chunk_rows: int = CHUNK_ROWS,
) -> Any:
    """Statistics of some shards of one pair, streamed chunk by chunk (memory O(chunk x d + d^2)).

    A shard that cannot be decoded fails the pair with a ``CorruptFileError`` naming it, and is
    moved aside so that the next extract recomputes it instead of the pair failing forever.
    """
    stats = get_metric(metric).new_stats(kind)
    for features, labels in store.iter_feature_chunks(
        model_key,
        task_key,
        max_rows=chunk_rows,
        shard_indices=list(shard_indices),
        quarantine_corrupt=True,
    ):
        stats.update(features, labels)
    return stats


def _merge_stats(*parts: Any) -> Any:
    # Arguments arrive zero-copy from the object store (read-only arrays): merge into a copy.
    total = parts[0].copy()
    for part in parts[1:]:
        total = total.merge(part)
    return total


def _score_stats(stats: Any, metric: str) -> tuple[float, dict[str, Any]]:
    return get_metric(metric).score(stats)


class ScoreStream:
    """Scoring that streams behind extraction: :meth:`submit` a pair as soon as its features
    are committed (its Ray tasks start at once), :meth:`table` gathers the rows.

    ``reduce`` is this with every pair submitted at the end; scores are the same either way
    (the same tasks on the same shards). Runs on the Ray cluster the caller connected to.
    """

    def __init__(
        self,
        store: FeatureStore,
        run_id: str,
        *,
        metrics: Sequence[str] = ("logme",),
        shards_per_task: int = SHARDS_PER_TASK,
        chunk_rows: int = CHUNK_ROWS,
        use_cache: bool = True,
    ) -> None:
        import ray

        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; available: {sorted(METRICS)}")
        self.store, self.run_id, self.metrics = store, run_id, tuple(metrics)
        self.shards_per_task, self.chunk_rows, self.use_cache = (
            shards_per_task,
            chunk_rows,
            use_cache,
        )
        self._shard_stats = ray.remote(num_cpus=1, max_retries=3)(stats_of_shards)
        self._merge = ray.remote(num_cpus=1, max_retries=3)(_merge_stats)
        self._score = ray.remote(num_cpus=1, max_retries=3)(_score_stats)
        # (model, task, metric) -> (row, score task or None, submitted at)
        self._rows: dict[tuple[str, str, str], tuple[ScoreRow, Any, float]] = {}

    def submit(self, pair: ReducePair) -> None:
        """Start scoring ``pair`` with every metric (a pair already submitted is left alone)."""
        for metric in self.metrics:
            key = (pair.model, pair.task, metric)
            if key in self._rows:
                continue
            row = ScoreRow(
                self.run_id, pair.model, pair.model_key, pair.task, pair.task_key, pair.kind,
                metric,
            )  # fmt: skip
            self._rows[key] = (row, self._start(row, pair, metric), time.perf_counter())

    def _start(self, row: ScoreRow, pair: ReducePair, metric: str) -> Any:
        if pair.state != "ok":
            row.state, row.error = "failed", pair.error or "extract failed"
            return None
        cached = _read_cache(self.store, metric, pair) if self.use_cache else None
        if cached is not None:
            _fill(row, cached)
            row.cached = True
            return None
        shards = sorted(self.store.committed_feature_shards(pair.model_key, pair.task_key))
        if not shards:
            row.state, row.error = "failed", "no committed feature shards to score"
            return None
        size = self.shards_per_task
        groups = [shards[i : i + size] for i in range(0, len(shards), size)]
        parts = [
            self._shard_stats.remote(
                self.store, pair.model_key, pair.task_key, pair.kind, g, metric, self.chunk_rows
            )
            for g in groups
        ]
        while len(parts) > 1:  # tree merge: O(log groups) rounds of O(d^2) merges
            parts = [
                self._merge.remote(*parts[i : i + 2]) if i + 1 < len(parts) else parts[i]
                for i in range(0, len(parts), 2)
            ]
        return self._score.remote(parts[0], metric)

    def table(self, pairs: Sequence[ReducePair]) -> pa.Table:
        """The scores table of ``pairs`` (in their order, metrics within each pair), submitting
        any pair not submitted yet and waiting for every score; caches the new ones."""
        import ray

        for pair in pairs:
            self.submit(pair)
        rows = []
        for pair in pairs:
            for metric in self.metrics:
                row, ref, started = self._rows[(pair.model, pair.task, metric)]
                rows.append(row)
                if ref is None:
                    continue
                try:
                    value, details = ray.get(ref)
                except Exception as exc:
                    cause = _root_cause(exc)
                    row.state = "failed"
                    row.error = f"scoring failed: {type(cause).__name__}: {cause}"
                    logger.error(
                        "%s x %s: %s\n%s", row.model, row.task, row.error, traceback.format_exc()
                    )
                    continue
                row.score = value
                row.num_samples = details["num_samples"]
                row.feature_dim = details["feature_dim"]
                row.num_targets = details["num_targets"]
                row.seconds = time.perf_counter() - started
                if not np.isfinite(value):
                    row.state, row.error = "failed", f"{row.metric} is not finite ({value})"
                    continue
                _write_cache(self.store, row)
        return SCORES.from_rows(rows)


def reduce(
    pairs: Sequence[ReducePair],
    store: FeatureStore,
    run_id: str,
    *,
    metrics: Sequence[str] = ("logme",),
    shards_per_task: int = SHARDS_PER_TASK,
    chunk_rows: int = CHUNK_ROWS,
    use_cache: bool = True,
    stream: ScoreStream | None = None,
) -> pa.Table:
    """Score every pair with every metric; returns the scores table (also cached per pair).

    Runs on the Ray cluster the caller connected to. Pairs that failed extraction get a
    ``failed`` row carrying the extract error. A pair whose scoring raises fails its own row
    only. ``stream``: the :class:`ScoreStream` the extract stage already submitted some pairs
    to (their scores are awaited, not recomputed); its settings then apply.
    """
    if stream is None:
        stream = ScoreStream(
            store,
            run_id,
            metrics=metrics,
            shards_per_task=shards_per_task,
            chunk_rows=chunk_rows,
            use_cache=use_cache,
        )
    return stream.table(pairs)


def _root_cause(exc: BaseException) -> BaseException:
    """The user-level exception inside a RayTaskError, if any."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    return exc


def _read_cache(store: FeatureStore, metric: str, pair: ReducePair) -> dict[str, Any] | None:
    relpath = score_cache_relpath(metric, pair.model_key, pair.task_key)
    try:
        if not store.exists(relpath):
            return None
        return json.loads(store.read_text(relpath))
    except (RayLogMEError, ValueError, OSError) as exc:
        logger.warning("ignoring unreadable score cache %s: %s", store.uri_of(relpath), exc)
        return None


def _write_cache(store: FeatureStore, row: ScoreRow) -> None:
    record = {
        "score": row.score,
        "num_samples": row.num_samples,
        "feature_dim": row.feature_dim,
        "num_targets": row.num_targets,
        "seconds": row.seconds,
        "run_id": row.run_id,
    }
    store.write_text(
        score_cache_relpath(row.metric, row.model_key, row.task_key),
        json.dumps(record, sort_keys=True),
    )


def _fill(row: ScoreRow, cached: Mapping[str, Any]) -> None:
    row.score = cached["score"]
    row.num_samples = cached.get("num_samples")
    row.feature_dim = cached.get("feature_dim")
    row.num_targets = cached.get("num_targets")
    row.seconds = float(cached.get("seconds", 0.0))
