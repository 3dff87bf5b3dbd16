"""Where bytes live: URIs to ``pyarrow.fs`` filesystems, and the Parquet feature store.

The public face of the storage package; import from here. One concept per module:

- :mod:`~ray_logme.storage.layout`: the store layout and key naming (``content_key``, ``slug``),
  the one module that spells store paths (``tasks/...``, ``features/...``, ``runs/...``).
- :mod:`~ray_logme.storage.uri`: :class:`StorageOptions`, S3 settings from the environment,
  :func:`filesystem_from_uri` and the boto3 client.
- :mod:`~ray_logme.storage.listing`: :func:`list_files` (sizes and versions under a URI).
- :mod:`~ray_logme.storage.faults`: which failures are transient (:func:`is_transient`), and
  each as a redacted :class:`~ray_logme.errors.StorageError` with a hint (:func:`storage_errors`;
  :class:`StorageUnreachableError` once retries are spent, :class:`CorruptFileError` for a
  file that cannot be decoded).
- :mod:`~ray_logme.storage.retry`: bounded retries with backoff after transient faults
  (:func:`call_with_retries`; ``StorageOptions.retries`` / ``retry_backoff_s``).
- :mod:`~ray_logme.storage.shards`: feature-shard encoding, pure (arrays in, Arrow out).
- :mod:`~ray_logme.storage.store`: :class:`FeatureStore`, atomic reads and writes under one root.

Credentials never appear in configuration, logs or error messages: they come from the AWS chain
(environment, ``AWS_PROFILE`` / ``profile``, instance or pod role), and every message that
carries text from a storage client is scrubbed of the credential values in the environment.
Importing this package needs neither torch, timm nor Ray; boto3 is imported on first S3 use.
"""

from __future__ import annotations

from ray_logme.storage import layout
from ray_logme.storage.faults import (
    CorruptFileError,
    StorageUnreachableError,
    is_transient,
    storage_errors,
)
from ray_logme.storage.faults import _redact as _redact  # private; tests import it from here
from ray_logme.storage.layout import (
    SHARD_FILE_PATTERN,
    check_key,
    content_key,
    shard_file_name,
    shard_indices,
    slug,
)
from ray_logme.storage.listing import StoredFile, list_files
from ray_logme.storage.retry import call_with_retries
from ray_logme.storage.shards import (
    FEATURE_ROW_GROUP_BYTES,
    SCHEMA_METADATA_KEY,
    feature_shard_table,
    labels_to_numpy,
)
from ray_logme.storage.store import FeatureShard, FeatureStore
from ray_logme.storage.uri import SUPPORTED_SCHEMES, StorageOptions, filesystem_from_uri
from ray_logme.storage.uri import _resolve_s3 as _resolve_s3  # private; tests import it from here

__all__ = [
    "FEATURE_ROW_GROUP_BYTES",
    "SCHEMA_METADATA_KEY",
    "SHARD_FILE_PATTERN",
    "SUPPORTED_SCHEMES",
    "CorruptFileError",
    "FeatureShard",
    "FeatureStore",
    "StorageOptions",
    "StorageUnreachableError",
    "StoredFile",
    "call_with_retries",
    "check_key",
    "content_key",
    "feature_shard_table",
    "filesystem_from_uri",
    "is_transient",
    "labels_to_numpy",
    "layout",
    "list_files",
    "shard_file_name",
    "shard_indices",
    "slug",
    "storage_errors",
]
