"""The extract stage: models x tasks -> feature shards on the store, on a Ray cluster.

One run, one pool of long-lived worker actors (:mod:`ray_logme.extract.worker`), kept busy
across models by the driver (:mod:`ray_logme.extract.driver`)::

    driver: plan units = (model, task, input shard) not yet committed
      -> worker actors, model affinity, <= 2 units queued each     # one loaded model per worker
           <- pixels decoded by CPU tasks (shared by models with the same preprocessing)
           -> the worker commits the feature shard itself          # atomic, at most once
      -> driver: small reports (rows, timings, errors); a finished pair is scored at once

Shards already committed for ``(model_key, task_key)`` are never planned, so a rerun of the
same config loads no model. Keys are content keys: :func:`~ray_logme.hub.identity.model_key`
hashes what determines the features (spec, weight identity, library versions); the task key
comes from the task snapshot (dataset revision).

Failure isolation: a model that cannot be keyed or loaded, a forward pass that runs out of
memory at batch size 1, non-finite features or an undecodable input fail the affected (model,
task) rows of the status table, with an error and a traceback, while the rest of the run goes
on. A worker that dies is restarted by Ray (``max_restarts``) and its units retried; a retried
unit finds its shard committed if it got that far, so nothing is duplicated or lost.

:mod:`ray_logme.extract.simulated` is a simulated model source for tests and benchmarks.
"""

from ray_logme.extract.driver import QUEUE_DEPTH, ExtractResult, extract
from ray_logme.extract.sources import HubSource, ModelSource
from ray_logme.extract.worker import (
    ACTOR_ALLOCATOR_ENV,
    FAULT_INJECT_AFTER_WRITE_ENV,
    FAULT_INJECT_ENV,
    ExtractWorker,
    ModelRunner,
    Unit,
    UnitReport,
    decode_images,
    decode_shard,
)
from ray_logme.tables import MODELS_SCHEMA, STATUS_SCHEMA, ModelRecord, PairStatus

__all__ = [
    "ACTOR_ALLOCATOR_ENV",
    "FAULT_INJECT_AFTER_WRITE_ENV",
    "FAULT_INJECT_ENV",
    "MODELS_SCHEMA",
    "QUEUE_DEPTH",
    "STATUS_SCHEMA",
    "ExtractResult",
    "ExtractWorker",
    "HubSource",
    "ModelRecord",
    "ModelRunner",
    "ModelSource",
    "PairStatus",
    "Unit",
    "UnitReport",
    "decode_images",
    "decode_shard",
    "extract",
]
