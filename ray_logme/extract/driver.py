"""The extract stage's driver: plan every (model, task) pair, then keep a pool of workers busy.

Planning (on the driver, no model loaded): each model gets its content key, its modality and
the list of its *units*, one per input shard not yet committed. Scheduling: a pool of
``num_workers`` long-lived :class:`~ray_logme.extract.worker.ExtractWorker` actors pulls units
with model affinity. A free worker takes

1. the next unit of the model it holds (no reload);
2. else the first model not started yet (models with the most rows first), while fewer than
   ``max_models_in_flight`` models are being handed out; its weights are fetched on the
   worker's node while the worker still computes its previous unit;
3. else a unit of the started model with the most work left, when that work, spread over the
   workers already on it, outweighs loading the model again (large models spread; small ones
   are not reloaded for a shard or two).

Every worker has at most :data:`QUEUE_DEPTH` units queued, so it never waits for the driver; an
image unit's pixels are decoded by a CPU task while the worker computes the unit before it
(models with the same preprocessing share the decoded shard). Workers write the shards; the
driver only sees :class:`~ray_logme.extract.worker.UnitReport` metadata, so its memory does
not grow with feature volume. A pair whose last unit is reported is handed to ``on_pair_done``
at once (the refresh scores it there, while extraction goes on).
"""

from __future__ import annotations

import collections
import json
import logging
import statistics
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ray_logme import tables
from ray_logme.config import Resources
from ray_logme.errors import ModalityMismatchError, RayLogMEError
from ray_logme.extract.progress import ExtractProgress
from ray_logme.extract.sources import HubSource, ModelSource
from ray_logme.extract.worker import (
    ACTOR_ALLOCATOR_ENV,
    QUIET_ENV,
    ExtractWorker,
    Unit,
    UnitReport,
    WorkerOptions,
    _short_error,
    decode_shard,
    prefetch_weights,
)
from ray_logme.hub import ModelSpec, ensure_modality
from ray_logme.storage import FeatureStore, layout
from ray_logme.tables import ModelRecord, PairStatus
from ray_logme.tasks import TaskSnapshot

logger = logging.getLogger("ray_logme.extract")

#: Units queued per worker: one computing, one waiting (its pixels decode meanwhile). Deeper
#: queues only add retries when a worker restarts (every queued task spends one).
QUEUE_DEPTH = 2
#: Another worker joins a started model when the model's remaining work per worker on it is more
#: than this many times the model's load time.
JOIN_WHEN_WORK_EXCEEDS_LOADS = 2.0
#: How long one wait for reports lasts before the driver looks at its deadlines again (s).
_POLL_SECONDS = 1.0


@dataclass
class ExtractResult:
    """What :func:`extract` did: per-pair status, per-model records, and what it cost."""

    pairs: list[PairStatus] = field(default_factory=list)
    models: list[ModelRecord] = field(default_factory=list)
    #: models loaded by workers in this call (a model spread over k workers counts k; a worker
    #: restarted by Ray reloads its model)
    model_loads: int = 0
    workers_started: int = 0
    #: seconds the workers spent on units (summed over workers), and their CPU seconds
    worker_busy_seconds: float = 0.0
    worker_cpu_seconds: float = 0.0
    #: wall seconds from the first worker request to the last report
    pool_seconds: float = 0.0

    @property
    def forward_rows(self) -> int:
        """Rows that went through a model forward pass in this call."""
        return sum(p.rows_computed for p in self.pairs)

    @property
    def failed(self) -> list[PairStatus]:
        return [p for p in self.pairs if p.state == "failed"]

    def status_table(self):
        return tables.STATUS.from_rows(self.pairs)

    def models_table(self):
        return tables.MODELS.from_rows(self.models)


# --------------------------------------------------------------------------------------------
# Planning


@dataclass
class _ModelPlan:
    """One model's pairs, its units not yet handed out, and what its reports said."""

    spec: ModelSpec
    key: str
    record: ModelRecord
    pairs: dict[str, PairStatus]
    units: collections.deque[Unit] = field(default_factory=collections.deque)
    decode_keys: dict[str, str | None] = field(default_factory=dict)
    outstanding: collections.Counter[str] = field(default_factory=collections.Counter)
    finished_pairs: set[str] = field(default_factory=set)
    started_at: float | None = None  # driver clock (perf_counter)
    last_report: float | None = None
    first_forward: float | None = None  # worker clocks (Unix seconds)
    last_forward: float | None = None
    startup_seconds: float | None = None
    load_seconds: list[float] = field(default_factory=list)
    unit_seconds: list[float] = field(default_factory=list)
    workers: set[int] = field(default_factory=set)
    metadata: dict[str, Any] | None = None
    load_failed: bool = False
    spans: list[tuple[str, float, float]] = field(default_factory=list)  # device, start, end

    @property
    def pending_rows(self) -> int:
        return sum(unit.num_rows for unit in self.units)

    @property
    def done(self) -> bool:
        return not self.units and not any(self.outstanding.values())


def _plan_model(
    spec: ModelSpec,
    snapshots: Mapping[str, TaskSnapshot | RayLogMEError],
    store: FeatureStore,
    run_id: str,
    source: ModelSource,
    allow_remote_code: tuple[str, ...],
) -> _ModelPlan:
    record = ModelRecord(
        run_id=run_id,
        model=spec.display_name,
        model_key="",
        hub=source.hub_name or spec.hub,
        tags=json.dumps(spec.tags, sort_keys=True),
    )
    try:  # resolving and keying the model is this model's own work: it fails only itself
        key = record.model_key = source.resolve_key(spec, _has_features(store))
    except Exception as exc:
        pairs = _unkeyed_pairs(spec, snapshots, run_id, exc, traceback.format_exc())
        logger.error("%s: %s", spec.display_name, next(iter(pairs.values())).error)
        return _ModelPlan(spec, "", record, pairs)
    plan = _ModelPlan(spec, key, record, _plan_pairs(spec, key, snapshots, store, run_id))
    try:
        preprocessor = source.preprocessor(spec, allow_remote_code)
        record.modality = preprocessor.modality
    except Exception as exc:
        for pair in plan.pairs.values():
            pair.fail(f"model failed to load: {_short_error(exc)}", traceback.format_exc())
        return plan
    spec_json = spec.model_dump_json()
    for pair in plan.pairs.values():
        snapshot = snapshots[pair.task]
        if pair.state != "pending" or not isinstance(snapshot, TaskSnapshot):
            continue
        try:
            ensure_modality(preprocessor, snapshot.info.modality, pair.task)
        except ModalityMismatchError as exc:
            # Not a failure: a text model has nothing to say about an image task.
            pair.state, pair.error = "skipped", str(exc)
            continue
        plan.decode_keys[pair.task] = source.decode_key(preprocessor, snapshot.info.modality)
        done = store.committed_feature_shards(key, snapshot.task_key)
        info = snapshot.info.model_dump(mode="json")
        for index in range(snapshot.num_shards):
            if index in done:
                continue
            plan.units.append(
                Unit(
                    spec_json=spec_json,
                    model_key=key,
                    task=pair.task,
                    task_key=snapshot.task_key,
                    shard_index=index,
                    shard_path=snapshot.shard_paths[index],
                    num_rows=snapshot.rows_per_shard[index],
                    modality=snapshot.info.modality,
                    run_id=run_id,
                    task_info=info,
                )
            )
            plan.outstanding[pair.task] += 1
    return plan


def _has_features(store: FeatureStore) -> Callable[[str], bool]:
    """``key -> bool``: whether the store holds any feature shards of model ``key``."""
    return lambda key: bool(store.list_dir(layout.model_features_dir(key)))


def _unkeyed_pairs(
    spec: ModelSpec,
    snapshots: Mapping[str, TaskSnapshot | RayLogMEError],
    run_id: str,
    exc: Exception,
    tb: str,
) -> dict[str, PairStatus]:
    """Failed pairs of a model that could not even be resolved (so it has no key)."""
    message = f"model failed to load: {_short_error(exc)}"
    pairs = {}
    for task_name, snapshot in snapshots.items():
        task_key = snapshot.task_key if isinstance(snapshot, TaskSnapshot) else ""
        pairs[task_name] = PairStatus(run_id, spec.display_name, "", task_name, task_key)
        pairs[task_name].fail(message, tb)
    return pairs


def _plan_pairs(
    spec: ModelSpec,
    key: str,
    snapshots: Mapping[str, TaskSnapshot | RayLogMEError],
    store: FeatureStore,
    run_id: str,
) -> dict[str, PairStatus]:
    pairs: dict[str, PairStatus] = {}
    for task_name, snapshot in snapshots.items():
        if isinstance(snapshot, TaskSnapshot):
            pair = PairStatus(run_id, spec.display_name, key, task_name, snapshot.task_key)
            pair.shards_total = snapshot.num_shards
            done = store.committed_feature_shards(key, snapshot.task_key)
            pair.shards_done = len(done & set(range(snapshot.num_shards)))
            pair.rows = sum(
                snapshot.rows_per_shard[i] for i in done if i < len(snapshot.rows_per_shard)
            )
        else:
            pair = PairStatus(run_id, spec.display_name, key, task_name, "")
            pair.fail(f"task {task_name!r} could not be read: {_short_error(snapshot)}")
        pairs[task_name] = pair
    return pairs


# --------------------------------------------------------------------------------------------
# The entry point


def extract(
    models: Sequence[ModelSpec],
    snapshots: Mapping[str, TaskSnapshot | RayLogMEError],
    store: FeatureStore,
    run_id: str,
    *,
    resources: Resources | None = None,
    allow_remote_code: Iterable[str] = (),
    runtime_env: Mapping[str, Any] | None = None,
    progress: bool = True,
    on_pair_done: Callable[[PairStatus], None] | None = None,
    model_source: ModelSource | None = None,
) -> ExtractResult:
    """Compute and commit the feature shards of every (model, task) pair; return their status.

    Runs on the Ray cluster the caller connected to. ``snapshots`` maps task name to its
    :class:`TaskSnapshot`, or to the error that prevented snapshotting it (its pairs are
    recorded as failed). Shards already committed are skipped: a fully committed rerun starts
    no worker and loads no model. ``resources`` is the config's typed section (the worker pool,
    GPUs and CPUs per worker, models in flight, batch sizes, restarts, ``wait_for_actors_s``:
    how long the pool may wait for its first worker, so a GPU that never comes fails the run's
    pairs instead of hanging it). ``runtime_env`` is passed to the workers (e.g.
    ``{"env_vars": {"HF_TOKEN": ...}}``). ``on_pair_done(pair)`` is called once per pair, on
    the driver, as soon as its state is final. ``model_source`` replaces the real hubs (tests
    and benchmarks pass :class:`~ray_logme.extract.simulated.SimulatedHub`; a config cannot).
    Never raises for a model or task at fault.
    """
    resources = resources or Resources()
    source = model_source if model_source is not None else HubSource()
    allow = tuple(allow_remote_code)
    result = ExtractResult()
    planned = time.perf_counter()
    plans = [_plan_model(spec, snapshots, store, run_id, source, allow) for spec in models]
    logger.info(
        "extract: %d models, %d units to compute (planned in %.1f s)",
        len(plans),
        sum(len(p.units) for p in plans),
        time.perf_counter() - planned,
    )
    for plan in plans:
        result.models.append(plan.record)
        result.pairs.extend(plan.pairs.values())
    scheduler = _Scheduler(plans, store, source, resources, allow, runtime_env, progress, result)
    scheduler.on_pair_done = on_pair_done
    scheduler.run()
    _record_device_sharing(plans)
    for plan in plans:
        _finish_model_record(plan, store)
        logger.info(
            "%s: %d/%d tasks ok, %d rows computed",
            plan.spec.display_name,
            sum(p.state == "ok" for p in plan.pairs.values()),
            len(plan.pairs),
            plan.record.rows_computed,
        )
    return result


# --------------------------------------------------------------------------------------------
# Scheduling


@dataclass(eq=False)
class _Worker:
    index: int
    handle: Any
    ready_ref: Any
    ready: bool = False
    alive: bool = True
    device: str = ""
    node_id: str | None = None
    model_key: str | None = None  # the model of the last unit handed to it
    inflight: list[Any] = field(default_factory=list)


class _Scheduler:
    """The driver's loop: hand units to free workers, take their reports, finish pairs."""

    def __init__(
        self,
        plans: list[_ModelPlan],
        store: FeatureStore,
        source: ModelSource,
        resources: Resources,
        allow_remote_code: tuple[str, ...],
        runtime_env: Mapping[str, Any] | None,
        progress: bool,
        result: ExtractResult,
    ) -> None:
        self.plans = plans
        self.store, self.source, self.resources = store, source, resources
        self.allow = allow_remote_code
        self.result = result
        self.on_pair_done: Callable[[PairStatus], None] | None = None
        self.waiting = collections.deque(
            sorted((p for p in plans if p.units), key=lambda p: -p.pending_rows)
        )
        self.active: dict[str, _ModelPlan] = {}
        self.max_models = resources.max_models_in_flight or resources.num_workers
        self.workers: list[_Worker] = []
        self.inflight: dict[Any, tuple[_Worker, _ModelPlan, Unit]] = {}
        self.decoded: collections.OrderedDict[tuple[str, str], Any] = collections.OrderedDict()
        self.decoded_cap = 2 * resources.num_workers + 4
        self.prefetches: list[Any] = []
        self.replacements_left = resources.num_workers
        total_rows = sum(p.pending_rows for p in plans)
        self.progress = ExtractProgress(total_rows, len(plans), progress)
        self.env = _worker_env(runtime_env)
        for plan in plans:  # pairs final at planning time (committed, skipped, failed)
            for task in list(plan.pairs):
                if not plan.outstanding[task]:
                    self._finish_pair(plan, task)
            if plan.done:
                self.progress.model_done()

    def run(self) -> None:
        if not self.waiting:
            self.progress.close()
            return
        import ray

        started = time.perf_counter()
        self._remote_worker = ray.remote(ExtractWorker)
        self._decode = ray.remote(decode_shard).options(
            num_cpus=self.resources.preprocess_cpus, max_retries=2, runtime_env=self.env
        )
        # A RemoteFunction (not .options()'s wrapper): _prefetch_on adds a per-node strategy.
        self._prefetch = ray.remote(num_cpus=0, max_retries=0)(prefetch_weights)
        units = sum(len(p.units) for p in self.plans)
        for _ in range(min(self.resources.num_workers, units)):
            self._start_worker()
        deadline = time.monotonic() + self.resources.wait_for_actors_s
        try:
            while self.waiting or self.active:
                self._dispatch()
                refs = list(self.inflight)
                refs += [w.ready_ref for w in self.workers if w.alive and not w.ready]
                if not refs:
                    self._fail_everything_left(
                        "no extract worker is left: workers kept dying (see the errors of the "
                        "pairs before); nothing more could be extracted"
                    )
                    break
                done, _ = ray.wait(refs, num_returns=1, timeout=_POLL_SECONDS)
                for ref in done:
                    if ref in self.inflight:
                        self._take_report(ref)
                    else:
                        self._take_ready(ref)
                if not any(w.ready for w in self.workers) and time.monotonic() > deadline:
                    self._fail_everything_left(
                        f"no extract worker started within wait_for_actors_s="
                        f"{self.resources.wait_for_actors_s:g} s: each asks for "
                        f"{self.resources.gpus_per_worker:g} GPU(s) and "
                        f"{self.resources.cpus_per_worker:g} CPU(s), and the cluster has "
                        f"{ray.cluster_resources()}"
                    )
                    break
        finally:
            self.progress.close()
            for worker in self.workers:
                ray.kill(worker.handle, no_restart=True)
            self.result.pool_seconds = time.perf_counter() - started

    # -- workers ------------------------------------------------------------------------------
    def _start_worker(self) -> None:
        resources = self.resources
        options = WorkerOptions(
            device=resources.device,
            forward_batch_size=resources.batch_sizes().forward,
            allow_remote_code=self.allow,
            num_threads=max(1, int(resources.cpus_per_worker)),
        )
        handle = self._remote_worker.options(
            num_cpus=resources.cpus_per_worker,
            num_gpus=resources.gpus_per_worker,
            # Bounded: a worker that dies on every unit must fail those pairs, not loop forever.
            max_restarts=resources.max_restarts,
            max_task_retries=resources.max_restarts,
            runtime_env=self.env,
        ).remote(self.store, self.source, options)
        worker = _Worker(len(self.workers), handle, handle.ready.remote())
        self.workers.append(worker)
        self.result.workers_started += 1

    def _take_ready(self, ref: Any) -> None:
        import ray

        worker = next(w for w in self.workers if w.ready_ref == ref)
        try:
            worker.device, worker.node_id = ray.get(ref)
            worker.ready = True
        except Exception as exc:  # the worker could not even start
            logger.warning("an extract worker failed to start: %s", _short_error(exc))
            self._lose_worker(worker)

    def _lose_worker(self, worker: _Worker) -> None:
        import ray

        if not worker.alive:
            return
        worker.alive = False
        ray.kill(worker.handle, no_restart=True)
        if self.replacements_left > 0 and (self.waiting or self.active):
            self.replacements_left -= 1
            self._start_worker()

    # -- handing out units ----------------------------------------------------------------------
    def _dispatch(self) -> None:
        for worker in self.workers:
            while worker.ready and worker.alive and len(worker.inflight) < QUEUE_DEPTH:
                picked = self._next_for(worker)
                if picked is None:
                    break
                self._submit(worker, *picked)

    def _next_for(self, worker: _Worker) -> tuple[_ModelPlan, Unit] | None:
        held = self.active.get(worker.model_key or "")
        if held is not None and held.units:
            return held, held.units.popleft()
        handing_out = sum(1 for p in self.active.values() if p.units)
        if self.waiting and handing_out < self.max_models:
            plan = self.waiting.popleft()
            self.active[plan.key] = plan
            plan.started_at = time.perf_counter()
            if worker.inflight and self.source.needs_prefetch(plan.spec):
                self._prefetch_on(worker, plan)
            worker.model_key = plan.key
            return plan, plan.units.popleft()
        candidates = [p for p in self.active.values() if p.units]
        if candidates:
            plan = max(candidates, key=lambda p: p.pending_rows)
            if self._worth_joining(plan):
                worker.model_key = plan.key
                return plan, plan.units.popleft()
        return None

    def _worth_joining(self, plan: _ModelPlan) -> bool:
        """Whether one more worker on ``plan`` saves more than it costs to load the model."""
        if len(plan.units) < 2 or not plan.unit_seconds or not plan.load_seconds:
            return False
        remaining = len(plan.units) * statistics.median(plan.unit_seconds)
        return remaining / max(1, len(plan.workers)) > (
            JOIN_WHEN_WORK_EXCEEDS_LOADS * max(plan.load_seconds)
        )

    def _prefetch_on(self, worker: _Worker, plan: _ModelPlan) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        strategy = (
            NodeAffinitySchedulingStrategy(worker.node_id, soft=True) if worker.node_id else None
        )
        options = {"scheduling_strategy": strategy} if strategy else {}
        ref = self._prefetch.options(**options).remote(
            self.source, plan.spec.model_dump_json(), self.allow
        )
        self.prefetches.append(ref)

    def _submit(self, worker: _Worker, plan: _ModelPlan, unit: Unit) -> None:
        decoded = None
        decode_key = plan.decode_keys.get(unit.task)
        if decode_key is not None:
            cache_key = (decode_key, unit.shard_path)
            decoded = self.decoded.get(cache_key)
            if decoded is None:
                decoded = self._decode.remote(
                    self.store,
                    unit.shard_relpath,
                    unit.spec_json,
                    self.allow,
                    self.resources.batch_sizes().decode,
                )
                self.decoded[cache_key] = decoded
                while len(self.decoded) > self.decoded_cap:
                    self.decoded.popitem(last=False)
            else:
                self.decoded.move_to_end(cache_key)
        ref = worker.handle.run.remote(unit, decoded)
        worker.inflight.append(ref)
        self.inflight[ref] = (worker, plan, unit)

    # -- taking reports -------------------------------------------------------------------------
    def _take_report(self, ref: Any) -> None:
        import ray
        from ray.exceptions import RayActorError

        worker, plan, unit = self.inflight.pop(ref)
        worker.inflight.remove(ref)
        try:
            report = ray.get(ref)
        except RayActorError as exc:
            report = UnitReport(unit.model_key, unit.task_key, unit.shard_index)
            report.error = (
                f"the extract worker died while computing shard {unit.shard_index} (Ray "
                f"restarted it up to max_restarts={self.resources.max_restarts} times): "
                f"{_short_error(exc).splitlines()[0]}"
            )
            self._lose_worker(worker)
        except Exception as exc:  # its decode task failed for good
            report = UnitReport(unit.model_key, unit.task_key, unit.shard_index)
            report.error, report.traceback = _short_error(exc), traceback.format_exc()
        self._apply(worker, plan, unit, report)

    def _apply(self, worker: _Worker, plan: _ModelPlan, unit: Unit, report: UnitReport) -> None:
        pair = plan.pairs[unit.task]
        plan.outstanding[unit.task] -= 1
        plan.last_report = time.perf_counter()
        self.result.worker_busy_seconds += max(0.0, report.call_finished - report.call_started)
        self.result.worker_cpu_seconds += report.cpu_seconds
        if report.load_seconds is not None:
            self.result.model_loads += 1
            plan.load_seconds.append(report.load_seconds)
            plan.workers.add(worker.index)
            if report.metadata is not None:
                plan.metadata = report.metadata
        pair.seconds += report.forward_seconds
        if report.model_failed:
            plan.load_failed = True
            for other in plan.pairs.values():
                if other.state == "pending":
                    self.progress.pair_failed()
                    other.fail(report.error or "model failed to load", report.traceback)
            self._drop_units(plan, lambda _: True)
        elif report.error is not None:
            if pair.state != "failed":
                self.progress.pair_failed()
            pair.fail(f"{report.error} (model {pair.model}, task {pair.task})", report.traceback)
            self._drop_units(plan, lambda u: u.task == unit.task)
        else:
            pair.shards_done += 1
            pair.shards_computed += 1
            pair.rows += report.rows
            pair.rows_computed += report.rows
            self.progress.update(report.rows)
            plan.unit_seconds.append(max(0.0, report.call_finished - report.call_started))
            if report.started is not None and report.finished is not None:
                if plan.first_forward is None:
                    plan.startup_seconds = report.started - report.call_started
                plan.first_forward = min(plan.first_forward or report.started, report.started)
                plan.last_forward = max(plan.last_forward or report.finished, report.finished)
                plan.spans.append((report.device, report.started, report.finished))
        for task in list(plan.pairs):
            if task not in plan.finished_pairs and not plan.outstanding[task]:
                self._finish_pair(plan, task)
        if plan.done and plan.key in self.active:
            del self.active[plan.key]
            self.progress.model_done()

    def _drop_units(self, plan: _ModelPlan, which: Callable[[Unit], bool]) -> None:
        kept = collections.deque()
        for unit in plan.units:
            if which(unit):
                plan.outstanding[unit.task] -= 1
            else:
                kept.append(unit)
        plan.units = kept

    def _finish_pair(self, plan: _ModelPlan, task: str) -> None:
        plan.finished_pairs.add(task)
        pair = plan.pairs[task]
        if pair.state == "pending":
            if pair.shards_done >= pair.shards_total:
                pair.state = "ok"
            else:
                pair.fail(
                    f"{pair.shards_total - pair.shards_done} of {pair.shards_total} shards are "
                    "missing after extraction"
                )
        if self.on_pair_done is not None:
            self.on_pair_done(pair)

    def _fail_everything_left(self, message: str) -> None:
        for plan in [*self.waiting, *self.active.values()]:
            for pair in plan.pairs.values():
                if pair.state == "pending":
                    pair.fail(message)
            self._drop_units(plan, lambda _: True)
            for task in list(plan.pairs):
                if task not in plan.finished_pairs and not plan.outstanding[task]:
                    self._finish_pair(plan, task)
        self.waiting.clear()
        self.active.clear()


def _worker_env(runtime_env: Mapping[str, Any] | None) -> dict[str, Any]:
    """The workers' runtime environment: allocator settings, quiet libraries, the caller's."""
    env = dict(runtime_env or {})
    quiet = {} if logging.getLogger("ray_logme").isEnabledFor(logging.INFO) else QUIET_ENV
    env["env_vars"] = {**ACTOR_ALLOCATOR_ENV, **quiet, **dict(env.get("env_vars") or {})}
    return env


# --------------------------------------------------------------------------------------------
# Records


def _record_device_sharing(plans: Sequence[_ModelPlan]) -> None:
    """``models_on_device``: the most models that computed on one device at once with each."""
    by_device: dict[str, list[tuple[float, float, int]]] = collections.defaultdict(list)
    for number, plan in enumerate(plans):
        for device, start, end in plan.spans:
            by_device[device].append((start, end, number))
    most = collections.Counter()
    for spans in by_device.values():
        spans.sort()
        for i, (_start, end, number) in enumerate(spans):
            together = {number}
            for other_start, _, other in spans[i + 1 :]:
                if other_start >= end:
                    break
                together.add(other)
            for model in together:
                most[model] = max(most[model], len(together))
    for number, plan in enumerate(plans):
        if plan.spans:
            plan.record.models_on_device = most[number]


def _finish_model_record(plan: _ModelPlan, store: FeatureStore) -> None:
    record = plan.record
    pairs = [p for p in plan.pairs.values() if p.state != "skipped"]
    if plan.started_at is not None and plan.last_report is not None:
        record.extract_seconds = plan.last_report - plan.started_at
    record.rows_computed = sum(p.rows_computed for p in pairs)
    forward_seconds = sum(p.seconds for p in pairs if p.rows_computed)
    if record.rows_computed and forward_seconds > 0:
        record.throughput = record.rows_computed / forward_seconds
    if record.rows_computed and plan.first_forward is not None:
        record.startup_seconds = plan.startup_seconds
        span = plan.last_forward - plan.first_forward
        record.pipeline_throughput = record.rows_computed / span if span > 0 else None
    if plan.workers:
        record.workers = len(plan.workers)
    meta = plan.metadata or (_read_model_json(store, record.model_key) if plan.key else None)
    if meta:
        record.metadata = json.dumps(meta, sort_keys=True)
        record.num_params = meta.get("num_params")
        record.feature_dim = meta.get("feature_dim")
        size = meta.get("input_size")
        record.input_size = None if size is None else json.dumps(size)
    failed = [p for p in pairs if p.state == "failed"]
    if not pairs:
        record.state = "skipped"
        record.error = "no task of this model's modality"
    elif failed and len(failed) == len(pairs):
        record.state = "failed"
        record.error = failed[0].error
    else:
        record.state = "ok"
        record.error = failed[0].error if failed else None


def _read_model_json(store: FeatureStore, key: str) -> dict[str, Any] | None:
    relpath = layout.model_record(key)
    try:
        return json.loads(store.read_text(relpath)) if store.exists(relpath) else None
    except (OSError, RayLogMEError, ValueError):
        return None
