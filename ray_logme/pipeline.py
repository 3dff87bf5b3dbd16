"""One refresh of the leaderboard: tasks -> extract -> reduce -> leaderboard, on Ray.

This is what ``jobs/nightly_refresh.py`` and ``ray-logme refresh`` run. Every stage writes its
table under ``runs/{run_id}/`` on the store; a rerun or ``resume`` of the same run id recomputes
nothing that is committed (content-keyed feature shards and score caches), so an interrupted run
picks up where it stopped and ends with the same leaderboard as an uninterrupted one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ray_logme import __version__
from ray_logme.config import RunConfig
from ray_logme.errors import ConfigError, RayLogMEError
from ray_logme.extract import ExtractResult, extract
from ray_logme.leaderboard import PastRun, RunRecord, build_leaderboard, write_leaderboard
from ray_logme.reduce import ReducePair, reduce
from ray_logme.storage import FeatureStore
from ray_logme.tasks import TaskSnapshot, snapshot_task

logger = logging.getLogger(__name__)


@dataclass
class RefreshResult:
    """Where a refresh put its outputs, and what failed."""

    run_id: str
    store_uri: str
    leaderboard_html: str
    leaderboard_md: str
    scores_uri: str
    status_uri: str
    num_pairs: int
    failed_pairs: list[tuple[str, str, str]] = field(default_factory=list)  # (model, task, error)
    seconds: float = 0.0

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
) -> RefreshResult:
    """Run the whole pipeline once (``resume``: continue that run id with the same config).

    Connects to the Ray cluster already initialised, or ``ray.init()`` (``RAY_ADDRESS`` or a new
    local one). Raises :class:`ConfigError` for a resume whose config changed; model and task
    failures are recorded, never raised.
    """
    import ray

    started = time.perf_counter()
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
    else:
        run_id = new_run_id(config)
        record = {
            "run_id": run_id,
            "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "config_hash": config.config_hash(),
            "code_version": __version__,
            "state": "running",
            "config": config.model_dump(mode="json"),
        }
        store.write_text(f"runs/{run_id}/run.json", json.dumps(record, indent=1, sort_keys=True))
    logger.info("run %s: store %s", run_id, store.uri_of(""))
    if not ray.is_initialized():
        ray.init()

    models = config.resolved_models()
    snapshots = snapshot_tasks(config, store)
    resources = config.resources
    extracted = extract(
        models,
        snapshots,
        store,
        run_id,
        num_workers=resources.num_workers,
        gpus_per_worker=resources.gpus_per_worker,
        cpus_per_worker=resources.cpus_per_worker,
        preprocess_cpus=resources.preprocess_cpus,
        batch_size=resources.batch_size,
        allow_remote_code=config.allow_remote_code,
        max_restarts=resources.max_restarts,
        wait_for_actors_s=resources.wait_for_actors_s,
        progress=progress,
    )
    store.write_table(f"runs/{run_id}/status.parquet", extracted.status_table())
    store.write_table(f"runs/{run_id}/models.parquet", extracted.models_table())

    scores = reduce(_reduce_pairs(extracted, snapshots), store, run_id)
    store.write_table(f"runs/{run_id}/scores.parquet", scores)

    models_df = _with_priors(extracted.models_table().to_pandas(), config, store)
    history = load_history(store, exclude=run_id, limit=config.outputs.history_runs)
    board = build_leaderboard(
        scores.to_pandas(),
        models_df,
        history,
        run=RunRecord.from_dict(record),
        status=extracted.status_table().to_pandas(),
    )
    written = write_leaderboard(board, store, run_id)

    failed = [
        (row["model"], row["task"], row["error"] or "")
        for row in scores.to_pylist()
        if row["state"] != "ok"
    ]
    record.update(
        state="failed-pairs" if failed else "ok",
        finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        num_pairs=scores.num_rows,
        num_failed=len(failed),
    )
    store.write_text(f"runs/{run_id}/run.json", json.dumps(record, indent=1, sort_keys=True))
    return RefreshResult(
        run_id=run_id,
        store_uri=store.uri_of(""),
        leaderboard_html=written["leaderboard/index.html"],
        leaderboard_md=written["leaderboard/summary.md"],
        scores_uri=store.uri_of(f"runs/{run_id}/scores.parquet"),
        status_uri=store.uri_of(f"runs/{run_id}/status.parquet"),
        num_pairs=scores.num_rows,
        failed_pairs=failed,
        seconds=time.perf_counter() - started,
    )


def snapshot_tasks(
    config: RunConfig, store: FeatureStore
) -> dict[str, TaskSnapshot | RayLogMEError]:
    """Snapshot every task in parallel Ray tasks; a task that cannot be read maps to its error."""
    import ray

    remote = ray.remote(num_cpus=1, max_retries=2)(_snapshot_or_error)
    refs = {spec.name: remote.remote(spec, store, config.storage) for spec in config.tasks}
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
    pairs = []
    for status in extracted.pairs:
        if status.state == "skipped":  # model and task modalities differ: no score, no failure
            continue
        snapshot = snapshots.get(status.task)
        kind = snapshot.info.kind if isinstance(snapshot, TaskSnapshot) else "unknown"
        pairs.append(
            ReducePair(
                model=status.model,
                model_key=status.model_key,
                task=status.task,
                task_key=status.task_key,
                kind=kind,
                state=status.state,
                error=status.error,
            )
        )
    return pairs


def _load_run_record(store: FeatureStore, run_id: str) -> dict[str, Any]:
    relpath = f"runs/{run_id}/run.json"
    if not store.exists(relpath):
        raise ConfigError(
            f"cannot resume run {run_id!r}: {store.uri_of(relpath)} does not exist "
            "(list runs with `ray-logme leaderboard --runs`)"
        )
    return json.loads(store.read_text(relpath))


def list_runs(store: FeatureStore) -> list[dict[str, Any]]:
    """Run records on the store, newest first (by timestamp)."""
    records = []
    for name in store.list_dir("runs"):
        relpath = f"runs/{name}/run.json"
        if store.exists(relpath):
            try:
                records.append(json.loads(store.read_text(relpath)))
            except (ValueError, RayLogMEError) as exc:
                logger.warning("skipping unreadable run record %s: %s", relpath, exc)
    return sorted(
        records, key=lambda r: (r.get("timestamp", ""), r.get("run_id", "")), reverse=True
    )


def load_history(store: FeatureStore, exclude: str | None = None, limit: int = 30) -> list[PastRun]:
    """Earlier runs that finished scoring, newest first, as the leaderboard takes them."""
    history = []
    for record in list_runs(store):
        if record.get("run_id") == exclude:
            continue
        run_dir = f"runs/{record['run_id']}"
        if not store.exists(f"{run_dir}/scores.parquet"):
            continue
        models_rel = f"{run_dir}/models.parquet"
        history.append(
            PastRun(
                RunRecord.from_dict(record),
                store.read_table(f"{run_dir}/scores.parquet").to_pandas(),
                store.read_table(models_rel).to_pandas() if store.exists(models_rel) else None,
            )
        )
        if len(history) >= limit:
            break
    return history


def _with_priors(models: pd.DataFrame, config: RunConfig, store: FeatureStore) -> pd.DataFrame:
    """Add the optional ``imagenet_top1`` prior column from the CSV the config points to."""
    path = config.outputs.imagenet_top1_csv
    if not path:
        models["imagenet_top1"] = pd.Series([None] * len(models), dtype="float64")
        return models
    try:
        priors = pd.read_csv(path)
    except OSError as exc:
        raise ConfigError(f"outputs.imagenet_top1_csv: cannot read {path}: {exc}") from None
    missing = {"model", "imagenet_top1"} - set(priors.columns)
    if missing:
        raise ConfigError(
            f"outputs.imagenet_top1_csv: {path} lacks column(s) {sorted(missing)}; "
            "it needs model,imagenet_top1"
        )
    lookup = dict(zip(priors["model"], priors["imagenet_top1"], strict=False))
    models["imagenet_top1"] = [lookup.get(name) for name in models["model"]]
    return models
