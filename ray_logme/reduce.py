"""The reduce stage: feature shards -> one score per (model, task) and metric, on Ray.

LogME needs only sufficient statistics (n, F^T F, F^T Y, Y^T Y), so each pair's shards are
streamed in bounded chunks into :class:`~ray_logme.metrics.LogMEStats`: memory is O(d^2), not
O(n d). Small pairs are scored by one Ray task; a pair with many shards is split into groups of
shards, one Ray task each, whose statistics are merged in a tree of Ray tasks.

Scores are cached on the store under ``scores/{metric}/{model_key}/{task_key}.json``: content keys
name exactly the features scored, so a pair whose features did not change is not recomputed by
a later run (its row says ``cached``).

Metrics come from the registry in :mod:`ray_logme.metrics.registry`. A
:class:`~ray_logme.metrics.StreamingMetric` (LogME, H-score, shrinkage H-score) streams from
mergeable statistics as above. A :class:`~ray_logme.metrics.SampleMetric` (NLEEP, SFDA, GBC, kNN)
needs rows: each pair gets one capped, seeded, stratified sample (:class:`SampleSettings`,
:mod:`ray_logme.metrics.sampling`), read by one Ray task that scores every sample metric on it
(:func:`score_pair_sample`). The sample is chosen from the row ids and labels alone (a column read),
then only the chosen rows' features are kept: memory ``O(cap x d)``. A sample metric's cached
score is stored under its name *with its parameters and the sample's cap and seed*
(:func:`~ray_logme.metrics.metric_cache_name`), so changing any of them recomputes it.

A metric that does not define a task's kind (H-score of a regression task) gets a ``skipped`` row
whose ``error`` says why, not a failure.
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
from ray_logme.metrics.registry import is_sample_metric, metric_cache_name, metric_kinds
from ray_logme.metrics.sampling import sample_mask
from ray_logme.storage import FeatureStore, labels_to_numpy, layout
from ray_logme.tables import SCORES, SCORES_SCHEMA, SKIPPED, ScoreRow  # noqa: F401

logger = logging.getLogger(__name__)

#: Rows per chunk read from a shard into the statistics (bounded memory: chunk x d floats).
CHUNK_ROWS = 8192
#: Shards per Ray task; pairs with more shards are split and their statistics tree-merged.
SHARDS_PER_TASK = 16
#: Rows per pair the sample-based metrics see, and the seed that picks them.
SAMPLE_CAP = 2000
SAMPLE_SEED = 0


@dataclass(frozen=True)
class SampleSettings:
    """The per-pair sample of the sample-based metrics: at most ``cap`` rows (plus at most
    ``MIN_PER_CLASS`` per class), stratified by class, chosen by ``seed``."""

    cap: int = SAMPLE_CAP
    seed: int = SAMPLE_SEED

    def cache_params(self) -> dict[str, int]:
        return {"cap": self.cap, "seed": self.seed}


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
        self.store, self.run_id = store, run_id
        #: metrics streamed from mergeable statistics (one set of Ray tasks per pair each)
        self.metrics = tuple(m for m in metrics if not is_sample_metric(METRICS[m]))
        #: metrics computed on one sample per pair (by :func:`reduce`, after extraction)
        self.sample_metrics = tuple(m for m in metrics if is_sample_metric(METRICS[m]))
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
        if pair.kind not in metric_kinds(METRICS[metric]):
            row.state, row.error = SKIPPED, _kind_refusal(metric, pair.kind)
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
        return SCORES.from_rows(self.rows(pairs))

    def rows(self, pairs: Sequence[ReducePair]) -> list[ScoreRow]:
        """The streaming metrics' rows of ``pairs`` (see :meth:`table`)."""
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
        return rows


def reduce(
    pairs: Sequence[ReducePair],
    store: FeatureStore,
    run_id: str,
    *,
    metrics: Sequence[str] = ("logme",),
    shards_per_task: int = SHARDS_PER_TASK,
    chunk_rows: int = CHUNK_ROWS,
    use_cache: bool = True,
    sample: SampleSettings = SampleSettings(),
    stream: ScoreStream | None = None,
) -> pa.Table:
    """Score every pair with every metric; returns the scores table (also cached per pair).

    Runs on the Ray cluster the caller connected to. Pairs that failed extraction get a
    ``failed`` row carrying the extract error; a metric that does not define the pair's task
    kind gets a ``skipped`` row saying so; a pair whose scoring raises fails its own row only.
    Streaming metrics (mergeable statistics) run per pair as :class:`ScoreStream` tasks;
    sample-based metrics share one capped, seeded, stratified sample per pair (``sample``).
    ``stream``: the :class:`ScoreStream` the extract stage already submitted some pairs to
    (their scores are awaited, not recomputed); its metrics and settings then apply.
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
    for pair in pairs:
        stream.submit(pair)
    # Sample-based metrics: launched now so that they run while the streaming results are awaited.
    samples = _launch_samples(pairs, store, run_id, stream.sample_metrics, sample, stream.use_cache)
    rows = stream.rows(pairs)
    rows += _collect_samples(store, samples, sample)
    return SCORES.from_rows(rows)


def _root_cause(exc: BaseException) -> BaseException:
    """The user-level exception inside a RayTaskError, if any."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    return exc


def _read_cache(store: FeatureStore, metric: str, pair: ReducePair) -> dict[str, Any] | None:
    """The cached record of ``metric`` (its cache name, with parameters) for ``pair``, if any."""
    relpath = score_cache_relpath(metric, pair.model_key, pair.task_key)
    try:
        if not store.exists(relpath):
            return None
        return json.loads(store.read_text(relpath))
    except (RayLogMEError, ValueError, OSError) as exc:
        logger.warning("ignoring unreadable score cache %s: %s", store.uri_of(relpath), exc)
        return None


def _write_cache(
    store: FeatureStore, row: ScoreRow, cache_name: str | None = None, **extra: Any
) -> None:
    """Cache ``row``'s score under ``cache_name`` (default: its metric name)."""
    record = {
        "score": row.score,
        "num_samples": row.num_samples,
        "feature_dim": row.feature_dim,
        "num_targets": row.num_targets,
        "seconds": row.seconds,
        "run_id": row.run_id,
        **extra,
    }
    store.write_text(
        score_cache_relpath(cache_name or row.metric, row.model_key, row.task_key),
        json.dumps(record, sort_keys=True),
    )


def _fill(row: ScoreRow, cached: Mapping[str, Any]) -> None:
    row.score = cached["score"]
    row.num_samples = cached.get("num_samples")
    row.feature_dim = cached.get("feature_dim")
    row.num_targets = cached.get("num_targets")
    row.seconds = float(cached.get("seconds", 0.0))


def _kind_refusal(metric: str, kind: str) -> str:
    return (
        f"{metric} is not defined for {kind} tasks (it defines "
        f"{', '.join(metric_kinds(METRICS[metric]))}); not computed"
    )


# --------------------------------------------------------------------------------------------
# The sample-based path: one capped, seeded, stratified sample per pair, every sample metric on it


@dataclass(frozen=True)
class PairSample:
    """The sample of one pair: ``features: float32[m, d]``, ``labels: [m]`` or ``[m, t]``,
    ``num_rows``: rows of the whole pair, ``read_seconds``: time spent reading (both passes)."""

    features: np.ndarray
    labels: np.ndarray
    num_rows: int
    read_seconds: float


def read_pair_sample(
    store: FeatureStore, model_key: str, task_key: str, kind: str, settings: SampleSettings
) -> PairSample:
    """Read the sample of one pair: row ids and labels of every shard first (columns only), the
    rows :func:`~ray_logme.metrics.sampling.sample_mask` picks, then those rows' features shard
    by shard. The result does not depend on the shard layout; memory ``O(cap x d)`` plus one
    shard."""
    started = time.perf_counter()
    shards = sorted(store.committed_feature_shards(model_key, task_key))
    if not shards:
        raise ValueError("no committed feature shards to score")
    ids, labels = [], []
    for shard in shards:
        table = store.read_table(
            layout.feature_shard(model_key, task_key, shard), columns=["row_id", "label"]
        )
        ids.append(table.column("row_id").to_numpy())
        labels.append(labels_to_numpy(table.column("label")))
    keep = sample_mask(
        np.concatenate(ids), np.concatenate(labels), kind, settings.cap, settings.seed
    )
    features, kept_labels, start = [], [], 0
    for shard, shard_ids, shard_labels in zip(shards, ids, labels, strict=True):
        chosen = keep[start : start + shard_ids.size]
        start += shard_ids.size
        if not chosen.any():
            continue
        data = store.read_feature_shard(model_key, task_key, shard)
        if not np.array_equal(data.row_ids, shard_ids):
            raise ValueError(f"shard {shard} of {model_key}/{task_key} changed while being read")
        features.append(data.features[chosen])
        kept_labels.append(shard_labels[chosen])
    return PairSample(
        features=np.concatenate(features),
        labels=np.concatenate(kept_labels),
        num_rows=int(keep.size),
        read_seconds=time.perf_counter() - started,
    )


def score_pair_sample(
    store: FeatureStore,
    model_key: str,
    task_key: str,
    kind: str,
    metrics: Sequence[str],
    settings: SampleSettings,
) -> dict[str, tuple[str, Any]]:
    """Every sample metric of ``metrics`` on the pair's one sample.

    Returns ``{metric: ("ok", (score, details)) | ("failed", message)}``; ``details`` has
    ``num_samples`` (the sample's rows), ``feature_dim``, ``num_targets``, ``num_rows`` (the
    pair's) and ``seconds``: the metric's own compute time plus an equal share of the read.
    A metric that raises fails its own entry only.
    """
    sample = read_pair_sample(store, model_key, task_key, kind, settings)
    labels = sample.labels
    num_targets = (
        int(np.unique(labels).size)
        if kind == "classification"
        else int(np.atleast_2d(labels.T).shape[0])
    )
    results: dict[str, tuple[str, Any]] = {}
    for metric in metrics:
        started = time.perf_counter()
        try:
            value, details = get_metric(metric).score_sample(sample.features, labels, kind)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
            results[metric] = ("failed", f"scoring failed: {type(exc).__name__}: {exc}")
            continue
        seconds = time.perf_counter() - started + sample.read_seconds / len(metrics)
        results[metric] = (
            "ok",
            (
                float(value),
                {
                    **details,
                    "num_samples": int(labels.shape[0]),
                    "feature_dim": int(sample.features.shape[1]),
                    "num_targets": num_targets,
                    "num_rows": sample.num_rows,
                    "seconds": seconds,
                },
            ),
        )
    return results


def _launch_samples(
    pairs: Sequence[ReducePair],
    store: FeatureStore,
    run_id: str,
    metrics: Sequence[str],
    settings: SampleSettings,
    use_cache: bool,
) -> tuple[list[ScoreRow], list[tuple[dict[str, ScoreRow], Any]], dict[str, str]]:
    """The rows of the sample-based ``metrics`` and one launched Ray task per pair that needs
    any of them (failed, skipped and cached rows are filled here); see :func:`_collect_samples`."""
    if not metrics:
        return [], [], {}
    import ray

    score = ray.remote(num_cpus=1, max_retries=3)(score_pair_sample)
    cache_names = {m: metric_cache_name(METRICS[m], settings.cache_params()) for m in metrics}
    rows: list[ScoreRow] = []
    pending: list[tuple[dict[str, ScoreRow], Any]] = []
    for pair in pairs:
        todo: dict[str, ScoreRow] = {}
        for metric in metrics:
            row = ScoreRow(
                run_id, pair.model, pair.model_key, pair.task, pair.task_key, pair.kind, metric
            )
            rows.append(row)
            if pair.state != "ok":
                row.state, row.error = "failed", pair.error or "extract failed"
            elif pair.kind not in metric_kinds(METRICS[metric]):
                row.state, row.error = SKIPPED, _kind_refusal(metric, pair.kind)
            elif use_cache and (cached := _read_cache(store, cache_names[metric], pair)):
                _fill(row, cached)
                row.cached = True
            else:
                todo[metric] = row
        if todo:
            ref = score.remote(
                store, pair.model_key, pair.task_key, pair.kind, list(todo), settings
            )
            pending.append((todo, ref))
    return rows, pending, cache_names


def _collect_samples(
    store: FeatureStore,
    launched: tuple[list[ScoreRow], list[tuple[dict[str, ScoreRow], Any]], dict[str, str]],
    settings: SampleSettings,
) -> list[ScoreRow]:
    """Wait for :func:`_launch_samples`' tasks, fill their rows and cache the ok scores."""
    rows, pending, cache_names = launched
    if not pending:
        return rows
    import ray

    for todo, ref in pending:
        try:
            results = ray.get(ref)
        except Exception as exc:
            cause = _root_cause(exc)
            for row in todo.values():
                row.state = "failed"
                row.error = f"scoring failed: {type(cause).__name__}: {cause}"
            logger.error("sample scoring failed: %s\n%s", cause, traceback.format_exc())
            continue
        for metric, row in todo.items():
            state, payload = results[metric]
            if state != "ok":
                row.state, row.error = "failed", payload
                continue
            value, details = payload
            row.score = value
            row.num_samples = details["num_samples"]
            row.feature_dim = details["feature_dim"]
            row.num_targets = details["num_targets"]
            row.seconds = details["seconds"]
            if not np.isfinite(value):
                row.state, row.error = "failed", f"{metric} is not finite ({value})"
                continue
            _write_cache(
                store,
                row,
                cache_names[metric],
                num_rows=details["num_rows"],
                sample_cap=settings.cap,
                sample_seed=settings.seed,
            )
    return rows
