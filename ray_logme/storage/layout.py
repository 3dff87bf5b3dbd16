"""The store layout: the one module that spells where things live under a store's root.

Every stage reads and writes through these functions, so the layout is a contract with a single
owner. All paths are relative to the store root, use ``/`` and are what
:class:`~ray_logme.storage.FeatureStore` methods take as ``relpath``::

    tasks/{task_key}/part-{shard:05d}.parquet                 task snapshot: row_id, input, label
    tasks/{task_key}/_task.json                               TaskInfo
    features/{model_key}/{task_key}/part-{shard:05d}.parquet  row_id, label, features
    features/{model_key}/{task_key}/.part-{shard:05d}.parquet.corrupt-{tag}  moved aside (corrupt)
    models/{model_key}/model.json                             model metadata (extract stage)
    scores/{metric}/{model_key}/{task_key}.json               cached score of one pair (reduce)
    runs/{run_id}/run.json                                    run record
    runs/{run_id}/status.parquet                              extract status per (model, task)
    runs/{run_id}/models.parquet                              extract summary per model
    runs/{run_id}/scores.parquet                              scores per (model, task, metric)
    runs/{run_id}/leaderboard/...                             that run's leaderboard files
    leaderboard/LATEST                                        pointer: JSON naming the latest run
    leaderboard/...                                           copies of the latest run's files

Keys are named and validated here too. :func:`content_key` names a model or task by its content
(``{slug(name)}-{digest[:12]}``); changing it would orphan every existing store. Every key
(``task_key``, ``model_key``, metric names, run ids) is checked to be one path segment of
``[A-Za-z0-9][A-Za-z0-9._-]*``, so no key can climb out of its folder. Pure string functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TASKS_DIR = "tasks"
FEATURES_DIR = "features"
MODELS_DIR = "models"
SCORES_DIR = "scores"
RUNS_DIR = "runs"
#: The published leaderboard: the ``LATEST`` pointer, and copies of the files of the run it names.
LATEST_LEADERBOARD_DIR = "leaderboard"

TASK_INFO_FILE = "_task.json"
MODEL_RECORD_FILE = "model.json"
RUN_RECORD_FILE = "run.json"
STATUS_FILE = "status.parquet"
MODELS_FILE = "models.parquet"
SCORES_FILE = "scores.parquet"
LEADERBOARD_SUBDIR = "leaderboard"
LEADERBOARD_SUMMARY_FILE = "summary.md"
LEADERBOARD_PAGE_FILE = "index.html"
LATEST_POINTER_FILE = "LATEST"

#: ``part-{shard:05d}.parquet``: committed task and feature shards; temporary files start with a
#: dot and never match.
SHARD_FILE_PATTERN = re.compile(r"^part-(\d+)\.parquet$")
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# -- keys ------------------------------------------------------------------------------------
def slug(name: str, max_length: int = 48) -> str:
    """A lower-case ``[a-z0-9-]`` rendering of ``name`` for keys (``"timm/ResNet-18.a1"`` -> ``"timm-resnet-18-a1"``)."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return text[:max_length].rstrip("-") or "x"


def content_key(name: str, digest: str) -> str:
    """``{slug(name)}-{digest[:12]}``: the ``model_key`` / ``task_key`` of docs/design.md."""
    if len(digest) < 12 or not re.fullmatch(r"[0-9a-f]+", digest):
        raise ValueError(
            f"content_key needs a hex digest of at least 12 characters, got {digest!r}"
        )
    return f"{slug(name)}-{digest[:12]}"


def check_key(key: str, what: str) -> str:
    """``key`` if it is one safe path segment, else ``ValueError`` naming ``what``."""
    if not isinstance(key, str) or not _KEY_PATTERN.match(key) or key in (".", ".."):
        raise ValueError(f"{what} must match [A-Za-z0-9][A-Za-z0-9._-]*, got {key!r}")
    return key


# -- shard files -----------------------------------------------------------------------------
def shard_file_name(shard_index: int) -> str:
    """``part-{shard_index:05d}.parquet``."""
    import numpy as np

    if (
        isinstance(shard_index, bool)
        or not isinstance(shard_index, int | np.integer)
        or shard_index < 0
    ):
        raise ValueError(f"shard_index must be a non-negative int, got {shard_index!r}")
    return f"part-{int(shard_index):05d}.parquet"


def shard_indices(names: Iterable[str]) -> set[int]:
    """Shard indices of the ``part-*.parquet`` names among ``names`` (other names ignored)."""
    return {int(match.group(1)) for name in names if (match := SHARD_FILE_PATTERN.match(name))}


# -- tasks -----------------------------------------------------------------------------------
def task_dir(task_key: str) -> str:
    """``tasks/{task_key}``: one task snapshot's folder."""
    return f"{TASKS_DIR}/{check_key(task_key, 'task_key')}"


def task_info(task_key: str) -> str:
    """``tasks/{task_key}/_task.json``."""
    return f"{task_dir(task_key)}/{TASK_INFO_FILE}"


def task_shard(task_key: str, shard_index: int) -> str:
    """``tasks/{task_key}/part-{shard:05d}.parquet``."""
    return f"{task_dir(task_key)}/{shard_file_name(shard_index)}"


# -- features and models ---------------------------------------------------------------------
def model_features_dir(model_key: str) -> str:
    """``features/{model_key}``: the feature shards of one model, one folder per task."""
    return f"{FEATURES_DIR}/{check_key(model_key, 'model_key')}"


def feature_dir(model_key: str, task_key: str) -> str:
    """``features/{model_key}/{task_key}``: the feature shards of one (model, task) pair."""
    return f"{FEATURES_DIR}/{check_key(model_key, 'model_key')}/{check_key(task_key, 'task_key')}"


def feature_shard(model_key: str, task_key: str, shard_index: int) -> str:
    """``features/{model_key}/{task_key}/part-{shard:05d}.parquet``."""
    return f"{feature_dir(model_key, task_key)}/{shard_file_name(shard_index)}"


def quarantined_feature_shard(model_key: str, task_key: str, shard_index: int, tag: str) -> str:
    """``features/{model_key}/{task_key}/.part-{shard:05d}.parquet.corrupt-{tag}``.

    Where a committed shard that cannot be decoded is moved aside: hidden (a leading dot) and not
    a shard name, so listings skip it and the next extract recomputes the shard.
    """
    return (
        f"{feature_dir(model_key, task_key)}/.{shard_file_name(shard_index)}"
        f".corrupt-{check_key(tag, 'tag')}"
    )


def model_record(model_key: str) -> str:
    """``models/{model_key}/model.json``: the model's metadata, written by its extract actor."""
    return f"{MODELS_DIR}/{check_key(model_key, 'model_key')}/{MODEL_RECORD_FILE}"


def score_cache(metric: str, model_key: str, task_key: str) -> str:
    """``scores/{metric}/{model_key}/{task_key}.json``: one pair's cached score."""
    return (
        f"{SCORES_DIR}/{check_key(metric, 'metric')}/{check_key(model_key, 'model_key')}/"
        f"{check_key(task_key, 'task_key')}.json"
    )


# -- runs --------------------------------------------------------------------------------------
def run_dir(run_id: str) -> str:
    """``runs/{run_id}``."""
    return f"{RUNS_DIR}/{check_key(run_id, 'run_id')}"


def run_record(run_id: str) -> str:
    """``runs/{run_id}/run.json``."""
    return f"{run_dir(run_id)}/{RUN_RECORD_FILE}"


def run_status(run_id: str) -> str:
    """``runs/{run_id}/status.parquet``: the extract stage's table."""
    return f"{run_dir(run_id)}/{STATUS_FILE}"


def run_models(run_id: str) -> str:
    """``runs/{run_id}/models.parquet``: the extract stage's per-model table."""
    return f"{run_dir(run_id)}/{MODELS_FILE}"


def run_scores(run_id: str) -> str:
    """``runs/{run_id}/scores.parquet``: the reduce stage's table."""
    return f"{run_dir(run_id)}/{SCORES_FILE}"


def run_leaderboard_dir(run_id: str) -> str:
    """``runs/{run_id}/leaderboard``: the leaderboard as that run wrote it."""
    return f"{run_dir(run_id)}/{LEADERBOARD_SUBDIR}"


def leaderboard_dirs(run_id: str, latest: bool = True) -> list[str]:
    """Where a run's leaderboard is written: its own folder, then ``leaderboard`` if ``latest``."""
    return [run_leaderboard_dir(run_id)] + ([LATEST_LEADERBOARD_DIR] if latest else [])


def latest_pointer() -> str:
    """``leaderboard/LATEST``: JSON naming the latest run and its leaderboard folder."""
    return f"{LATEST_LEADERBOARD_DIR}/{LATEST_POINTER_FILE}"


def leaderboard_file(folder: str, name: str) -> str:
    """``{folder}/{name}`` for one of :func:`leaderboard_dirs` (``name``: one file name)."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"leaderboard file name {name!r} must be one plain file name")
    return f"{folder}/{name}"
