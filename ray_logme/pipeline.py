"""One refresh of the leaderboard: tasks -> extract -> reduce -> leaderboard, on Ray.

This is what ``jobs/nightly_refresh.py`` and ``ray-logme refresh`` run. Every stage writes its
table under ``runs/{run_id}/`` on the store (:mod:`ray_logme.storage.layout`), and
:func:`load_run` reads a run back exactly as the refresh built its leaderboard; a rerun or ``resume`` of the same run id recomputes
nothing that is committed (content-keyed feature shards and score caches), so an interrupted run
picks up where it stopped and ends with the same leaderboard as an uninterrupted one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from ray_logme import __version__, tables
from ray_logme.cluster import connect_ray
from ray_logme.config import RunConfig
from ray_logme.errors import ConfigError, RayLogMEError, RunFailedError
from ray_logme.extract import ExtractResult, extract
from ray_logme.leaderboard import (
    Leaderboard,
    PastRun,
    RunRecord,
    write_leaderboard,
)
from ray_logme.leaderboard.combined import build_combined_leaderboard
from ray_logme.reduce import ReducePair, SampleSettings, ScoreStream, reduce
from ray_logme.storage import FeatureStore, layout
from ray_logme.tables import PairStatus
from ray_logme.tasks import TaskSnapshot, missing_data, snapshot_task

logger = logging.getLogger(__name__)


@dataclass
class RefreshResult:
    """Where a refresh put its outputs, and what failed.

    ``leaderboard_html`` and ``leaderboard_md`` are the published copies under ``leaderboard/``
    when the run is the latest (see :mod:`ray_logme.leaderboard.latest`), else the run's own
    ``runs/{run_id}/leaderboard/`` files.
    """

    run_id: str
    store_uri: str
    leaderboard_html: str
    leaderboard_md: str
    scores_uri: str
    status_uri: str
    num_pairs: int
    failed_pairs: list[tuple[str, str, str]] = field(default_factory=list)  # (model, task, error)
    seconds: float = 0.0
    #: tasks with ``if_missing: skip`` whose data package is not installed: (task, why)
    skipped_tasks: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every (model, task) pair scored, else 1 (after writing what succeeded)."""
        return 1 if self.failed_pairs else 0


def new_run_id(config: RunConfig, now: dt.datetime | None = None) -> str:
    """``{UTC timestamp}-{config hash[:8]}``, or the config's fixed ``run_id``."""
    if config.run_id != "timestamp":
        return config.run_id
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{config.config_hash()[:8]}"


def open_store(config: RunConfig) -> FeatureStore:
    return FeatureStore(config.store, config.storage)


def refresh(
    config: RunConfig,
    *,
    resume: str | None = None,
    progress: bool = True,
    on_start: Callable[[str], None] | None = None,
) -> RefreshResult:
    """Run the whole pipeline once (``resume``: continue that run id with the same config).

    Everything that can be checked is checked before Ray starts (the config, the store, the
    priors CSV); ``on_start(run_id)`` is then called once the run exists. Uses the Ray cluster
    this process is connected to, or connects with :func:`ray_logme.cluster.connect_ray`
    (``RAY_ADDRESS``, else a new local Ray). Raises :class:`ConfigError` for a bad input (a
    resume whose config changed, a run id taken by another run, an unreadable priors CSV) and
    :class:`RunFailedError` when the run started but could not complete (its ``run.json`` then
    says ``state: failed`` with the reason; resume it). Model and task failures are recorded in
    the tables, never raised.
    """
    started = time.perf_counter()
    priors = read_priors(config)
    store = open_store(config)
    store.check_access()
    if resume:
        run_id = resume
        record = _load_run_record(store, run_id)
        if record.get("config_hash") != config.config_hash():
            raise ConfigError(
                f"cannot resume run {run_id}: it was started with another config "
                f"(hash {str(record.get('config_hash'))[:12]}, now {config.config_hash()[:12]}); "
                "resume with the same config file, or start a new run"
            )
        record.update(state="running", resumed=_now())
        record.pop("error", None)
        _write_run_record(store, run_id, record)
    else:
        run_id, record = _create_run(store, config)
    logger.info("run %s: store %s", run_id, store.uri_of(""))
    if on_start is not None:
        on_start(run_id)
    try:
        result = _run_stages(config, store, run_id, record, priors, progress)
    except BaseException as exc:
        record.update(state="failed", finished=_now(), error=f"{type(exc).__name__}: {exc}")
        try:
            _write_run_record(store, run_id, record)
        except Exception:  # the store itself may be what failed
            logger.exception("run %s: could not record the failure on the store", run_id)
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: as they are
            raise
        raise RunFailedError(
            f"run {run_id} could not complete: {type(exc).__name__}: {exc}. Everything committed "
            f"is kept; continue it with --resume {run_id}"
        ) from exc
    result.seconds = time.perf_counter() - started
    return result


def _run_stages(
    config: RunConfig,
    store: FeatureStore,
    run_id: str,
    record: dict[str, Any],
    priors: Mapping[str, float] | None,
    progress: bool,
) -> RefreshResult:
    """tasks -> extract -> reduce -> leaderboard of one created run; updates its record."""
    connect_ray()
    started = time.perf_counter()
    models = config.resolved_models()
    skipped = skipped_tasks(config)
    for name, why in skipped.items():
        logger.warning("task %s skipped: %s", name, why)
    snapshots = snapshot_tasks(config, store, skip=skipped)
    # Scoring streams behind extraction: a pair's reduce tasks start once its last shard is in.
    stream = ScoreStream(store, run_id, metrics=config.scoring.metrics)

    def score_when_done(status: PairStatus) -> None:
        pair = _reduce_pair(status, snapshots)
        if pair is not None:
            stream.submit(pair)

    extracted = extract(
        models,
        snapshots,
        store,
        run_id,
        resources=config.resources,
        allow_remote_code=config.allow_remote_code,
        progress=progress,
        on_pair_done=score_when_done,
    )
    status_table = extracted.status_table()
    models_table = _with_priors(extracted.models_table(), priors)
    store.write_table(layout.run_status(run_id), status_table)
    store.write_table(layout.run_models(run_id), models_table)
    logger.info(
        "run %s: extract loaded %d models on %d workers", run_id, extracted.model_loads,
        extracted.workers_started,
    )  # fmt: skip

    extract_seconds = time.perf_counter() - started
    started = time.perf_counter()
    scores = reduce(
        _reduce_pairs(extracted, snapshots),
        store,
        run_id,
        metrics=config.scoring.metrics,
        sample=SampleSettings(config.scoring.sample_cap, config.scoring.sample_seed),
        stream=stream,
    )
    reduce_seconds = time.perf_counter() - started
    logger.info(
        "stage seconds: extract %.1f, reduce %.1f (ratio %.3f)",
        extract_seconds,
        reduce_seconds,
        reduce_seconds / max(extract_seconds, 1e-9),
    )
    store.write_table(layout.run_scores(run_id), scores)

    run = RunTables(record, scores.to_pandas(), models_table.to_pandas(), status_table.to_pandas())
    history = load_history(
        store,
        exclude=run_id,
        limit=config.outputs.history_runs,
        before=record.get("timestamp") or None,
    )
    written = write_leaderboard(build_run_leaderboard(run, history), store, run_id)

    # One entry per failed (model, task) pair, whatever the number of metrics; "skipped" rows
    # (a metric that does not define the task's kind) are not failures.
    pairs: dict[tuple[str, str], str | None] = {}
    for row in scores.to_pylist():
        key = (row["model"], row["task"])
        pairs.setdefault(key, None)
        if row["state"] == "failed" and pairs[key] is None:
            pairs[key] = row["error"] or ""
    failed = [(model, task, error) for (model, task), error in pairs.items() if error is not None]
    record.update(
        state="failed-pairs" if failed else "ok",
        finished=_now(),
        stage_seconds={"extract": extract_seconds, "reduce": reduce_seconds},
        num_pairs=len(pairs),
        num_failed=len(failed),
        skipped_tasks=skipped,
    )
    _write_run_record(store, run_id, record)
    # The published copies when this run is the latest, else the run's own folder (a resumed
    # older run is never published over a run that started later).
    published = layout.latest_pointer() in written
    folder = layout.LATEST_LEADERBOARD_DIR if published else layout.run_leaderboard_dir(run_id)
    if not published:
        logger.warning(
            "run %s is not the latest run on %s (one that started later has published): its "
            "leaderboard is in %s",
            run_id,
            store.uri_of(""),
            store.uri_of(folder),
        )
    return RefreshResult(
        run_id=run_id,
        store_uri=store.uri_of(""),
        leaderboard_html=written[layout.leaderboard_file(folder, layout.LEADERBOARD_PAGE_FILE)],
        leaderboard_md=written[layout.leaderboard_file(folder, layout.LEADERBOARD_SUMMARY_FILE)],
        scores_uri=store.uri_of(layout.run_scores(run_id)),
        status_uri=store.uri_of(layout.run_status(run_id)),
        num_pairs=len(pairs),
        failed_pairs=failed,
        skipped_tasks=sorted(skipped.items()),
    )


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


#: How many ``-2``, ``-3``, ... suffixes a timestamped run id tries when its second is taken.
_MAX_RUN_ID_SUFFIX = 100


def _create_run(store: FeatureStore, config: RunConfig) -> tuple[str, dict[str, Any]]:
    """Create the run's record exclusively (a conditional create on the store).

    A timestamped id that another run took in the same second gets a ``-2``, ``-3`` ...
    suffix; a fixed ``run_id`` that exists is refused (:class:`ConfigError`).
    """
    base = new_run_id(config)
    fixed = config.run_id != "timestamp"
    for attempt in range(1, 2 if fixed else _MAX_RUN_ID_SUFFIX + 1):
        run_id = base if attempt == 1 else f"{base}-{attempt}"
        record = {
            "run_id": run_id,
            "timestamp": _now(),
            "config_hash": config.config_hash(),
            "code_version": __version__,
            "state": "running",
            "config": config.model_dump(mode="json"),
        }
        text = json.dumps(record, indent=1, sort_keys=True)
        if store.write_text(layout.run_record(run_id), text, overwrite=False):
            return run_id, record
    if fixed:
        raise ConfigError(
            f"run id {base!r} already exists on {store.uri_of('')}: continue that run with "
            f"--resume {base}, or give another run_id (run_id: timestamp makes a new one each time)"
        )
    raise ConfigError(
        f"could not create a run id from {base!r}: every suffix up to -{attempt} is taken"
    )


def skipped_tasks(config: RunConfig) -> dict[str, str]:
    """Tasks with ``if_missing: skip`` whose data package is not installed: name -> why (the
    package and its install command)."""
    skipped = {}
    for spec in config.tasks:
        if spec.if_missing == "skip" and (why := missing_data(spec.uri)) is not None:
            skipped[spec.name] = why
    return skipped


def snapshot_tasks(
    config: RunConfig, store: FeatureStore, skip: Iterable[str] = ()
) -> dict[str, TaskSnapshot | RayLogMEError]:
    """Snapshot every task (less those named in ``skip``) in parallel Ray tasks; a task that
    cannot be read maps to its error."""
    import ray

    remote = ray.remote(num_cpus=1, max_retries=2)(_snapshot_or_error)
    skip = set(skip)
    refs = {
        spec.name: remote.remote(spec, store, config.storage)
        for spec in config.tasks
        if spec.name not in skip
    }
    return {name: ray.get(ref) for name, ref in refs.items()}


def _snapshot_or_error(spec, store, storage_options) -> TaskSnapshot | RayLogMEError:
    try:
        return snapshot_task(spec, store, storage_options=storage_options)
    except RayLogMEError as exc:
        return exc
    except Exception as exc:  # unexpected: keep the run going, keep the cause
        return RayLogMEError(f"task {spec.name!r}: {type(exc).__name__}: {exc}")


def _reduce_pairs(
    extracted: ExtractResult, snapshots: Mapping[str, TaskSnapshot | RayLogMEError]
) -> list[ReducePair]:
    pairs = (_reduce_pair(status, snapshots) for status in extracted.pairs)
    return [pair for pair in pairs if pair is not None]


def _reduce_pair(
    status: PairStatus, snapshots: Mapping[str, TaskSnapshot | RayLogMEError]
) -> ReducePair | None:
    """What reduce scores for one extracted pair; ``None`` for a skipped pair (model and task
    modalities differ: no score, no failure)."""
    if status.state == "skipped":
        return None
    snapshot = snapshots.get(status.task)
    kind = snapshot.info.kind if isinstance(snapshot, TaskSnapshot) else "unknown"
    return ReducePair(
        model=status.model,
        model_key=status.model_key,
        task=status.task,
        task_key=status.task_key,
        kind=kind,
        state=status.state,
        error=status.error,
    )


def _write_run_record(store: FeatureStore, run_id: str, record: Mapping[str, Any]) -> None:
    store.write_text(layout.run_record(run_id), json.dumps(record, indent=1, sort_keys=True))


def _load_run_record(store: FeatureStore, run_id: str) -> dict[str, Any]:
    relpath = layout.run_record(run_id)
    if not store.exists(relpath):
        raise ConfigError(
            f"cannot resume run {run_id!r}: {store.uri_of(relpath)} does not exist "
            "(list runs with `ray-logme leaderboard --runs`)"
        )
    return json.loads(store.read_text(relpath))


# --------------------------------------------------------------------------------------------
# Reading runs back


@dataclass(frozen=True, eq=False)
class RunTables:
    """One run's record and stage tables, as its refresh built the leaderboard from them.

    ``scores`` (reduce stage), ``models`` (extract stage plus the ``imagenet_top1`` prior the
    refresh stored with the run) and ``status`` (extract stage) are pandas DataFrames conformed
    to :mod:`ray_logme.tables` (columns an older run lacks are added as nulls); ``models`` and
    ``status`` are ``None`` for a run that did not write them.
    """

    record: dict[str, Any]
    scores: pd.DataFrame
    models: pd.DataFrame | None = None
    status: pd.DataFrame | None = None

    @property
    def run_id(self) -> str:
        return str(self.record["run_id"])

    @property
    def run_record(self) -> RunRecord:
        return RunRecord.from_dict(self.record)


def list_runs(store: FeatureStore) -> list[dict[str, Any]]:
    """Run records on the store, newest first (by timestamp)."""
    records = []
    for name in store.list_dir(layout.RUNS_DIR):
        try:
            relpath = layout.run_record(name)
        except ValueError:  # not a run folder
            continue
        if store.exists(relpath):
            try:
                records.append(json.loads(store.read_text(relpath)))
            except (ValueError, RayLogMEError) as exc:
                logger.warning("skipping unreadable run record %s: %s", relpath, exc)
    return sorted(
        records, key=lambda r: (r.get("timestamp", ""), r.get("run_id", "")), reverse=True
    )


def is_finished(store: FeatureStore, run_id: str) -> bool:
    """Whether ``run_id`` got as far as writing its scores table."""
    return store.exists(layout.run_scores(run_id))


def load_run(
    store: FeatureStore, run_id: str, record: Mapping[str, Any] | None = None
) -> RunTables:
    """The record and tables of one finished run (``record``: its ``run.json``, if already read).

    Raises :class:`RayLogMEError` naming the store when the run does not exist or has no
    scores table yet.
    """
    if record is None:
        relpath = layout.run_record(run_id)
        if not store.exists(relpath):
            raise RayLogMEError(f"run {run_id!r} not found on {store.uri_of('')}")
        record = json.loads(store.read_text(relpath))
    if not is_finished(store, run_id):
        raise RayLogMEError(f"run {run_id!r} on {store.uri_of('')} has no scores table yet")

    def optional(relpath: str, table: tables.StageTable) -> pd.DataFrame | None:
        if not store.exists(relpath):
            return None
        return table.conform(store.read_table(relpath), store.uri_of(relpath)).to_pandas()

    scores_relpath = layout.run_scores(run_id)
    scores = tables.SCORES.conform(store.read_table(scores_relpath), store.uri_of(scores_relpath))
    return RunTables(
        dict(record),
        scores.to_pandas(),
        optional(layout.run_models(run_id), tables.MODELS),
        optional(layout.run_status(run_id), tables.STATUS),
    )


def load_history(
    store: FeatureStore,
    exclude: str | None = None,
    limit: int = 30,
    *,
    before: str | None = None,
) -> list[PastRun]:
    """Earlier runs that finished scoring, newest first, as the leaderboard takes them.

    ``before``: an ISO timestamp; only runs that started earlier count (a run that finishes
    late never takes a newer run as its "previous run"). A run whose tables cannot be read or
    would not rank (say, two rows for one pair) is left out with a warning that names it: no
    past run can stop a new run or the leaderboard.
    """
    history = []
    for record in list_runs(store):
        run_id = record.get("run_id")
        if run_id == exclude or not run_id:
            continue
        if before is not None and str(record.get("timestamp", "")) >= before:
            continue
        try:
            if not is_finished(store, run_id):
                continue
            run = load_run(store, run_id, record)
            check_rankable(run)
        except Exception as exc:
            logger.warning("leaving out run %s of the history: %s", run_id, exc)
            continue
        history.append(PastRun(run.run_record, run.scores, run.models))
        if len(history) >= limit:
            break
    return history


def check_rankable(run: RunTables) -> None:
    """``ValueError`` naming the run unless its tables would rank (the leaderboard's rules)."""
    from ray_logme.leaderboard.inputs import _clean_scores

    metrics = {m for m in run.scores.get("metric", pd.Series(["logme"])).dropna()} or {"logme"}
    for metric in sorted(metrics):
        _clean_scores(run.scores, metric, f"run {run.run_id}'s scores table")


def build_run_leaderboard(run: RunTables, history: Sequence[PastRun]) -> Leaderboard:
    """The leaderboard of ``run`` against ``history`` (what the refresh publishes), ranked as
    the run's config says (``outputs.ranking``; ``default`` for runs that predate it)."""
    ranking = (run.record.get("config") or {}).get("outputs", {}).get("ranking", "default")
    return build_combined_leaderboard(
        run.scores,
        run.models,
        list(history),
        ranking=ranking,
        run=run.run_record,
        status=run.status,
    )


def read_priors(config: RunConfig) -> dict[str, float] | None:
    """``model -> imagenet_top1`` from the config's priors CSV (``None`` without one).

    Read before any compute, so a missing or malformed file fails the run at once
    (:class:`ConfigError` naming the key and the file).
    """
    path = config.outputs.imagenet_top1_csv
    if not path:
        return None
    try:
        priors = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"outputs.imagenet_top1_csv: cannot read {path}: {exc}") from None
    missing = {"model", tables.PRIOR_COLUMN} - set(priors.columns)
    if missing:
        raise ConfigError(
            f"outputs.imagenet_top1_csv: {path} lacks column(s) {sorted(missing)}; "
            "it needs model,imagenet_top1"
        )
    values = pd.to_numeric(priors[tables.PRIOR_COLUMN], errors="coerce")
    return {
        str(model): float(value)
        for model, value in zip(priors["model"], values, strict=True)
        if not pd.isna(value)
    }


def _with_priors(models: pa.Table, priors: Mapping[str, float] | None) -> pa.Table:
    """The models table with its ``imagenet_top1`` prior column filled from ``priors``."""
    if not priors:
        return models
    values = [priors.get(name) for name in models.column("model").to_pylist()]
    index = models.schema.get_field_index(tables.PRIOR_COLUMN)
    return models.set_column(index, tables.PRIOR_COLUMN, pa.array(values, type=pa.float64()))
