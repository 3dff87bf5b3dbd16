"""The feature store: task snapshots, feature shards, run tables and leaderboards under one root.

:class:`FeatureStore` reads and writes bytes, tables and feature shards at paths relative to its
root; where each thing lives is spelled by :mod:`ray_logme.storage.layout` alone.

Every write is atomic: a reader sees the whole object or nothing. Locally a temporary file in
the same folder is fsynced, then linked (commit once) or renamed (overwrite) into place; on S3 a
single PUT is atomic, and a conditional PUT (``If-None-Match: *``) commits a shard exactly once
when two writers race. :meth:`FeatureStore.write_bytes_if` replaces an object only if it is
still the version read (``If-Match`` on S3, a rename under an ``fcntl`` lock locally): a
compare-and-swap for pointers such as the published leaderboard's. pyarrow does the reading and
listing; boto3 does the S3 writes, because pyarrow has neither conditional PUTs nor a way to
abort an upload that failed half-way (its output stream completes the upload when it is closed
or garbage-collected).

Every read, write, listing and existence check is retried after transient faults (a bounded
number of times, with backoff; see :mod:`ray_logme.storage.retry`) and then fails with one
:class:`~ray_logme.errors.StorageError` that names the URI. A file that is read but cannot be
decoded raises :class:`~ray_logme.storage.faults.CorruptFileError` naming it; a corrupt feature
shard can be moved aside (:meth:`FeatureStore.quarantine_feature_shard`) so that the next
extract recomputes it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ray_logme.errors import FeatureError, StorageError
from ray_logme.storage import layout
from ray_logme.storage.faults import CorruptFileError, StorageUnreachableError
from ray_logme.storage.layout import shard_indices
from ray_logme.storage.retry import call_with_retries
from ray_logme.storage.shards import (
    FEATURE_ROW_GROUP_BYTES,
    SCHEMA_METADATA_KEY,
    ParquetBatchReader,
    _features_to_numpy,
    _parquet_bytes,
    feature_shard_table,
    labels_to_numpy,
)
from ray_logme.storage.uri import (
    StorageOptions,
    _display_uri,
    _make_s3_client,
    _resolve_s3,
    _s3_filesystem,
    _S3Settings,
    _split_uri,
)

# The package's name, as when this code was ray_logme/storage.py: log records keep their name.
logger = logging.getLogger("ray_logme.storage")

_MAX_SINGLE_PUT_BYTES = 5 * (1 << 30)

T = TypeVar("T")


@dataclass(frozen=True)
class FeatureShard:
    """One feature shard read whole: ``row_ids: int64[n]``, ``labels``, ``features: float32[n, d]``.

    ``labels`` is ``int64[n]`` (classification), ``float64[n]`` or ``float64[n, t]`` (regression);
    ``metadata`` is the shard's schema record (see :meth:`FeatureStore.feature_shard_metadata`).
    """

    row_ids: np.ndarray
    labels: np.ndarray
    features: np.ndarray
    metadata: dict[str, Any]


class FeatureStore:
    """Task snapshots, feature shards, run tables and leaderboard files under one root URI.

    Picklable: only ``root_uri``, ``options`` and ``feature_dtype`` travel; the filesystem and
    the S3 client are rebuilt lazily where the store is unpickled (a Ray worker), from the
    worker's own credential chain. Relative paths (``relpath``) use ``/`` and may not contain
    ``..``.

    ``feature_dtype`` is the on-disk precision of features: ``"float32"`` (default) or
    ``"float16"`` (half the bytes; readers always get float32 back).
    """

    def __init__(
        self,
        root_uri: str,
        options: StorageOptions | None = None,
        feature_dtype: Literal["float32", "float16"] = "float32",
    ) -> None:
        if feature_dtype not in ("float32", "float16"):
            raise ValueError(f"feature_dtype must be 'float32' or 'float16', got {feature_dtype!r}")
        self._scheme, root_path = _split_uri(root_uri)  # validates the scheme now, no I/O
        self.root_uri = root_uri.rstrip("/") if self._scheme == "s3" else root_path
        self.options = options or StorageOptions()
        self.feature_dtype = feature_dtype
        self._root_path = root_path.rstrip("/") if self._scheme == "s3" else root_path
        self._filesystem: pafs.FileSystem | None = None
        self._s3_client: Any = None
        self._settings: _S3Settings | None = None
        # Set when an operation spent its retries on transient faults; cleared by a success.
        # While set, operations try once: a store that is down fails each call fast.
        self._unreachable = False

    # -- pickling: never ship a filesystem, a client or credentials -----------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_filesystem"] = None
        state["_s3_client"] = None
        state["_settings"] = None
        state["_unreachable"] = False
        return state

    def __repr__(self) -> str:
        return (
            f"FeatureStore({_display_uri(self.root_uri)!r}, feature_dtype={self.feature_dtype!r})"
        )

    # -- filesystem ---------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self._scheme == "local"

    @property
    def filesystem(self) -> pafs.FileSystem:
        """The ``pyarrow.fs`` filesystem of the root (built on first use)."""
        if self._filesystem is None:
            if self.is_local:
                self._filesystem = pafs.LocalFileSystem()
            else:
                self._settings = _resolve_s3(self.options)
                self._filesystem = _s3_filesystem(self._settings)
        return self._filesystem

    def _s3_settings(self) -> _S3Settings | None:
        if self.is_local:
            return None
        if self._settings is None:
            self._settings = _resolve_s3(self.options)
        return self._settings

    def _client(self) -> Any:
        """boto3 S3 client with the same endpoint, region and credential chain as pyarrow."""
        if self._s3_client is None:
            settings = self._s3_settings()
            assert settings is not None, "no S3 client for a local store"
            self._s3_client = _make_s3_client(settings)
        return self._s3_client

    def path_of(self, relpath: str = "") -> str:
        """The filesystem path of ``relpath`` (what ``self.filesystem`` and Ray readers take)."""
        relpath = _check_relpath(relpath)
        return f"{self._root_path}/{relpath}" if relpath else self._root_path

    def uri_of(self, relpath: str = "") -> str:
        """The full URI of ``relpath`` (``s3://bucket/prefix/relpath`` or an absolute path)."""
        relpath = _check_relpath(relpath)
        return f"{self.root_uri}/{relpath}" if relpath else self.root_uri

    def _retrying(self, action: str, relpath: str, operation: Callable[[], T]) -> T:
        """``operation()`` with bounded retries after transient faults, errors naming ``relpath``.

        Once an operation has spent its retries (:class:`StorageUnreachableError`), later ones
        try once until one succeeds: a store that stays down costs one backoff series per
        process, not one per call.
        """
        try:
            result = call_with_retries(
                operation,
                action=action,
                uri=self.uri_of(relpath),
                options=self.options,
                settings=self._s3_settings(),
                retries=0 if self._unreachable else None,
            )
        except StorageUnreachableError:
            self._unreachable = True
            raise
        self._unreachable = False
        return result

    def check_access(self) -> None:
        """Fail fast with a clear :class:`StorageError` when the root cannot be listed.

        Catches an unreachable endpoint, wrong credentials and a missing bucket before any
        work is scheduled (after the usual retries, so a brief hiccup at start is ridden out).
        """

        def probe() -> None:
            if not self.is_local:
                bucket = self._root_path.split("/", 1)[0]
                if self.filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
                    raise StorageError(
                        f"bucket {bucket!r} of {_display_uri(self.root_uri)} does not exist "
                        f"at {self._s3_settings().describe()}: create it or fix the URI"
                    )
            self.filesystem.get_file_info(pafs.FileSelector(self._root_path, allow_not_found=True))

        self._retrying("listing", "", probe)

    # -- generic objects -------------------------------------------------------------------
    def exists(self, relpath: str) -> bool:
        """Whether ``relpath`` is a committed object (or a folder with objects)."""
        return self._retrying("checking", relpath, lambda: self._exists_once(relpath))

    def _exists_once(self, relpath: str) -> bool:
        return self.filesystem.get_file_info(self.path_of(relpath)).type != pafs.FileType.NotFound

    def list_dir(self, relpath: str = "") -> list[str]:
        """Sorted names directly under ``relpath`` (files and folders); ``[]`` if it is absent.

        Temporary files of writes in progress (names starting with ``.``) are not listed.
        """
        selector = pafs.FileSelector(self.path_of(relpath), recursive=False, allow_not_found=True)
        infos = self._retrying("listing", relpath, lambda: self.filesystem.get_file_info(selector))
        names = {info.base_name for info in infos}
        return sorted(name for name in names if name and not name.startswith("."))

    def read_bytes(self, relpath: str) -> bytes:
        """The whole object at ``relpath``."""

        def read() -> bytes:
            with self.filesystem.open_input_stream(self.path_of(relpath)) as stream:
                return stream.read()

        return self._retrying("reading", relpath, read)

    def write_bytes(self, relpath: str, data: bytes | pa.Buffer, *, overwrite: bool = True) -> bool:
        """Write ``data`` to ``relpath`` atomically; return whether this call wrote it.

        ``overwrite=False`` commits at most once: if the object exists (or a racing writer
        commits first) nothing is written and ``False`` is returned.
        """
        if self.is_local:
            return self._retrying(
                "writing", relpath, lambda: self._write_local(relpath, data, overwrite=overwrite)
            )
        return self._retrying(
            "writing", relpath, lambda: self._write_s3(relpath, data, overwrite=overwrite)
        )

    def read_text(self, relpath: str) -> str:
        return self.read_bytes(relpath).decode("utf-8")

    def write_text(self, relpath: str, text: str, *, overwrite: bool = True) -> bool:
        """Write UTF-8 ``text`` atomically (see :meth:`write_bytes`)."""
        return self.write_bytes(relpath, text.encode("utf-8"), overwrite=overwrite)

    # -- compare-and-swap ------------------------------------------------------------------
    def read_versioned(self, relpath: str) -> tuple[bytes | None, str | None]:
        """The object at ``relpath`` and its version token; ``(None, None)`` if it is absent.

        Pass the token to :meth:`write_bytes_if` to replace exactly this version. It is the
        ETag on S3 and a digest of the content locally (a file's inode and mtime can come back
        after a rename; equal bytes are the same version for every caller).
        """

        def read() -> tuple[bytes | None, str | None]:
            if self.is_local:
                try:
                    with open(self.path_of(relpath), "rb") as handle:
                        data = handle.read()
                    return data, _local_version(data)
                except FileNotFoundError:
                    return None, None
            import botocore.exceptions

            bucket, _, key = self.path_of(relpath).partition("/")
            try:
                response = self._client().get_object(Bucket=bucket, Key=key)
            except botocore.exceptions.ClientError as error:
                if str(error.response.get("Error", {}).get("Code", "")) in ("NoSuchKey", "404"):
                    return None, None
                raise
            return response["Body"].read(), str(response["ETag"])

        return self._retrying("reading", relpath, read)

    def write_bytes_if(self, relpath: str, data: bytes, *, version: str | None) -> bool:
        """Replace ``relpath`` with ``data`` only if it is still at ``version``; return whether.

        ``version`` is a token from :meth:`read_versioned` (``None``: only if ``relpath`` is
        absent). A compare-and-swap: of racing writers that read the same version, one wins and
        the others get ``False`` (read again and decide again). S3 uses a conditional PUT
        (``If-Match`` / ``If-None-Match: *``); locally the check and the atomic rename run under
        an exclusive ``fcntl`` lock on a hidden lock file beside ``relpath``. With the storage
        option ``conditional_writes: false`` the S3 check is a separate request, not atomic.
        """
        if self.is_local:
            return self._retrying(
                "writing", relpath, lambda: self._write_local_if(relpath, data, version)
            )
        return self._retrying("writing", relpath, lambda: self._write_s3_if(relpath, data, version))

    def _write_local_if(self, relpath: str, data: bytes, version: str | None) -> bool:
        import fcntl

        final = self.path_of(relpath)
        folder, name = os.path.split(final)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f".{name}.lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                with open(final, "rb") as handle:
                    current = _local_version(handle.read())
            except FileNotFoundError:
                current = None
            if current != version:
                return False
            return self._write_local(relpath, data, overwrite=True)

    def _write_s3_if(self, relpath: str, data: bytes, version: str | None) -> bool:
        import botocore.exceptions

        bucket, _, key = self.path_of(relpath).partition("/")
        if not self.options.conditional_writes:
            if self.read_versioned(relpath)[1] != version:
                return False
            return self._write_s3(relpath, data, overwrite=True)
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        for attempt in range(6):
            try:
                self._client().put_object(Bucket=bucket, Key=key, Body=bytes(data), **condition)
                return True
            except botocore.exceptions.ClientError as error:
                code = str(error.response.get("Error", {}).get("Code", ""))
                status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                # 412: another version is there; 404 (If-Match): it was deleted meanwhile.
                if code in ("PreconditionFailed", "NoSuchKey") or status in (412, 404):
                    return False
                if code == "ConditionalRequestConflict" or status == 409:
                    time.sleep(0.05 * 2**attempt)  # a racing upload is in flight: ask again
                    continue
                if code == "NotImplemented" or status == 501:
                    raise StorageError(
                        f"{self._s3_settings().describe()} does not support conditional PUTs "
                        f"(If-Match) for {self.uri_of(relpath)}: set the storage option "
                        "conditional_writes: false"
                    ) from None
                raise
        return False

    def read_table(self, relpath: str, columns: list[str] | None = None) -> pa.Table:
        """Read the Parquet file at ``relpath`` (optionally only ``columns``), with retries.

        Raises :class:`StorageError` naming the file when it is missing or storage stays
        unreachable, and :class:`CorruptFileError` when it cannot be decoded. Stages that read
        Parquet from the store should read through here rather than ``pq.read_table``.
        """
        return self._retrying(
            "reading",
            relpath,
            lambda: pq.read_table(
                self.path_of(relpath), columns=columns, filesystem=self.filesystem
            ),
        )

    def write_table(
        self, relpath: str, table: pa.Table, *, overwrite: bool = True, **parquet_options: Any
    ) -> bool:
        """Write ``table`` as one Parquet file at ``relpath``, atomically (see :meth:`write_bytes`).

        The file is serialised in memory first, so a failure while encoding writes nothing.
        ``parquet_options`` go to ``pyarrow.parquet.write_table`` (default compression zstd).
        """
        if not overwrite and self.exists(relpath):
            return False
        parquet_options.setdefault("compression", "zstd")
        return self.write_bytes(
            relpath, _parquet_bytes(table, **parquet_options), overwrite=overwrite
        )

    # -- atomic commits ------------------------------------------------------------------
    def _write_local(self, relpath: str, data: bytes | pa.Buffer, *, overwrite: bool) -> bool:
        final = self.path_of(relpath)
        folder, name = os.path.split(final)
        os.makedirs(folder, exist_ok=True)
        temp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
        logger.debug("writing %s via %s (%d bytes)", final, temp, len(data))
        try:
            with open(temp, "wb") as handle:
                handle.write(memoryview(data))
                handle.flush()
                os.fsync(handle.fileno())
            if overwrite:
                os.replace(temp, final)
            else:
                try:
                    os.link(temp, final)  # fails if final exists: commit exactly once
                except FileExistsError:
                    logger.debug("%s was committed by another writer", final)
                    return False
                except OSError as error:
                    if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                        raise
                    # Filesystem without hard links: atomic rename, last writer wins.
                    if os.path.exists(final):
                        return False
                    os.replace(temp, final)
            _fsync_dir(folder)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    def _write_s3(self, relpath: str, data: bytes | pa.Buffer, *, overwrite: bool) -> bool:
        import botocore.exceptions

        size = len(data)
        if size > _MAX_SINGLE_PUT_BYTES:
            raise StorageError(
                f"{self.uri_of(relpath)} would be {size} bytes, above the 5 GiB of one atomic PUT: "
                "write smaller shards (shard_rows)"
            )
        bucket, _, key = self.path_of(relpath).partition("/")
        body = data.to_pybytes() if isinstance(data, pa.Buffer) else bytes(data)
        conditional = not overwrite and self.options.conditional_writes
        if not overwrite and not conditional and self._exists_once(relpath):
            return False
        logger.debug(
            "uploading %s (%d bytes, conditional=%s)", self.uri_of(relpath), size, conditional
        )
        extra = {"IfNoneMatch": "*"} if conditional else {}
        for attempt in range(6):
            try:
                self._client().put_object(Bucket=bucket, Key=key, Body=body, **extra)
                return True
            except botocore.exceptions.ClientError as error:
                code = str(error.response.get("Error", {}).get("Code", ""))
                status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if conditional and (code == "PreconditionFailed" or status == 412):
                    logger.debug("%s was committed by another writer", self.uri_of(relpath))
                    return False
                if conditional and (code == "ConditionalRequestConflict" or status == 409):
                    time.sleep(0.05 * 2**attempt)  # a racing upload is in flight: ask again
                    continue
                if conditional and (code == "NotImplemented" or status == 501):
                    raise StorageError(
                        f"{self._s3_settings().describe()} does not support conditional PUTs "
                        f"(If-None-Match) for {self.uri_of(relpath)}: set the storage option "
                        "conditional_writes: false"
                    ) from None
                raise
        if self._exists_once(relpath):
            return False
        raise StorageError(
            f"writing {self.uri_of(relpath)} kept conflicting with another upload (HTTP 409); "
            "retry the run"
        )

    # -- feature shards ------------------------------------------------------------------
    @staticmethod
    def feature_dir(model_key: str, task_key: str) -> str:
        """``features/{model_key}/{task_key}`` (relative to the root; see :mod:`.layout`)."""
        return layout.feature_dir(model_key, task_key)

    @staticmethod
    def feature_shard_relpath(model_key: str, task_key: str, shard_index: int) -> str:
        """``features/{model_key}/{task_key}/part-{shard:05d}.parquet`` (see :mod:`.layout`)."""
        return layout.feature_shard(model_key, task_key, shard_index)

    def write_feature_shard(
        self,
        model_key: str,
        task_key: str,
        shard_index: int,
        row_ids: np.ndarray,
        labels: np.ndarray,
        features: np.ndarray,
        metadata: Mapping[str, Any],
        *,
        feature_dtype: Literal["float32", "float16"] | None = None,
    ) -> bool:
        """Commit one feature shard, atomically and at most once; return whether this call did.

        ``row_ids: int64[n]``, ``labels``: integer ``[n]`` (classification, stored ``int64``),
        float ``[n]`` (regression, ``float64``) or float ``[n, t]`` (several targets,
        ``fixed_size_list<float64>[t]``), ``features: float[n, d]`` stored as
        ``fixed_size_list<float32>[d]`` (or float16, see ``feature_dtype``). The schema metadata
        key ``ray_logme`` holds JSON: ``{"metadata": metadata, "code_version", "model_key",
        "task_key", "shard_index", "num_rows", "feature_dim", "feature_dtype"}``.

        Returns ``False`` without writing when the shard is already committed (a rerun, or a
        racing writer that won). Raises :class:`FeatureError` for NaN/Inf features and
        ``ValueError`` for inconsistent shapes.
        """
        relpath = self.feature_shard_relpath(model_key, task_key, shard_index)
        if self.exists(relpath):
            logger.debug("feature shard %s is already committed", self.uri_of(relpath))
            return False
        dtype = feature_dtype or self.feature_dtype
        table = feature_shard_table(
            model_key, task_key, shard_index, row_ids, labels, features, metadata, dtype
        )
        feature_dim = table.schema.field("features").type.list_size
        row_group_rows = max(1, FEATURE_ROW_GROUP_BYTES // (feature_dim * np.dtype(dtype).itemsize))
        encoded = _parquet_bytes(
            table,
            compression="zstd",
            use_dictionary=False,
            use_byte_stream_split=True,
            row_group_size=row_group_rows,
        )
        return self.write_bytes(relpath, encoded, overwrite=False)

    def committed_feature_shards(self, model_key: str, task_key: str) -> set[int]:
        """Indices of the committed shards of ``(model_key, task_key)`` (empty if none)."""
        return shard_indices(self.list_dir(self.feature_dir(model_key, task_key)))

    def feature_shard_metadata(
        self, model_key: str, task_key: str, shard_index: int
    ) -> dict[str, Any]:
        """The JSON record of a shard's schema metadata; reads only the Parquet footer."""
        relpath = self.feature_shard_relpath(model_key, task_key, shard_index)
        schema = self._retrying(
            "reading",
            relpath,
            lambda: pq.read_schema(self.path_of(relpath), filesystem=self.filesystem),
        )
        raw = (schema.metadata or {}).get(SCHEMA_METADATA_KEY)
        if raw is None:
            raise FeatureError(
                f"{self.uri_of(relpath)} has no ray_logme schema metadata: not a feature shard"
            )
        return json.loads(raw)

    def read_feature_shard(self, model_key: str, task_key: str, shard_index: int) -> FeatureShard:
        """One whole shard (for checks and small shards; use :meth:`iter_feature_chunks` to stream)."""
        relpath = self.feature_shard_relpath(model_key, task_key, shard_index)
        table = self.read_table(relpath)
        raw = (table.schema.metadata or {}).get(SCHEMA_METADATA_KEY)
        return FeatureShard(
            row_ids=table.column("row_id").to_numpy(),
            labels=labels_to_numpy(table.column("label").combine_chunks()),
            features=_features_to_numpy(table.column("features").combine_chunks()),
            metadata=json.loads(raw) if raw else {},
        )

    def iter_feature_chunks(
        self,
        model_key: str,
        task_key: str,
        max_rows: int = 4096,
        shard_indices: set[int] | list[int] | None = None,
        *,
        quarantine_corrupt: bool = False,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream ``(features: float32[m, d], labels)`` with ``m <= max_rows``, shard by shard.

        ``labels`` is ``int64[m]``, ``float64[m]`` or ``float64[m, t]``. Reads one row group at a
        time (row groups are written at most ~8 MiB of features), so memory stays about
        ``max(max_rows, row group) x d`` whatever the number of shards; a transient fault retries
        the row group being read (reopening the file), not the shard. Shards are read in index
        order; ``shard_indices`` restricts them (default: all committed shards). Raises
        :class:`FeatureError` if shards disagree on the feature dimension, and
        :class:`CorruptFileError` naming a shard that cannot be decoded; with
        ``quarantine_corrupt`` that shard is first moved aside
        (:meth:`quarantine_feature_shard`), so it no longer counts as committed and the next
        extract recomputes it.
        """
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        indices = sorted(
            self.committed_feature_shards(model_key, task_key)
            if shard_indices is None
            else shard_indices
        )
        feature_dim: int | None = None
        for shard_index in indices:
            relpath = self.feature_shard_relpath(model_key, task_key, shard_index)
            reader = ParquetBatchReader(self.filesystem, self.path_of(relpath))
            try:
                try:
                    parquet_file = self._retrying("reading", relpath, reader.open)
                    shard_dim = parquet_file.schema_arrow.field("features").type.list_size
                    if feature_dim is not None and shard_dim != feature_dim:
                        raise FeatureError(
                            f"{self.uri_of(relpath)} has feature_dim {shard_dim} but earlier "
                            f"shards of {model_key}/{task_key} have {feature_dim}: delete the "
                            "stale shards"
                        )
                    feature_dim = shard_dim
                    for group in range(parquet_file.num_row_groups):
                        reader.start_row_group(group, ["features", "label"], max_rows)
                        while True:
                            batch = self._retrying("reading", relpath, reader.next_batch)
                            if batch is None:
                                break
                            yield (
                                _features_to_numpy(batch.column("features")),
                                labels_to_numpy(batch.column("label")),
                            )
                except CorruptFileError as error:
                    if not quarantine_corrupt:
                        raise
                    moved_to = self.quarantine_feature_shard(model_key, task_key, shard_index)
                    where = (
                        f"moved aside to {moved_to}"
                        if moved_to
                        else "already moved aside or replaced"
                    )
                    raise CorruptFileError(
                        f"{error}; {where}: the next extract of {model_key}/{task_key} "
                        f"recomputes shard {shard_index}",
                        uri=error.uri,
                    ) from None
            finally:
                reader.close()

    def quarantine_feature_shard(
        self, model_key: str, task_key: str, shard_index: int
    ) -> str | None:
        """Move a corrupt committed shard aside; return where it went (None if nothing moved).

        The shard goes to a hidden name beside it (:func:`.layout.quarantined_feature_shard`),
        kept for inspection: it no longer counts as committed, so the next extract writes the
        shard again. A shard that decodes (a writer replaced it meanwhile) or is gone is left
        alone. Locally the move is one rename; on S3 a copy then a delete.
        """
        relpath = self.feature_shard_relpath(model_key, task_key, shard_index)
        try:  # decode it all again, streaming (memory stays one row group)
            for _ in self.iter_feature_chunks(model_key, task_key, shard_indices=[shard_index]):
                pass
        except CorruptFileError:
            pass  # still corrupt: move it
        except (StorageError, FeatureError):
            return None  # gone, or not ours to judge
        else:
            return None  # it decodes now: a writer replaced it
        tag = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
        target = layout.quarantined_feature_shard(model_key, task_key, shard_index, tag)

        def move() -> bool:
            if self.is_local:
                try:
                    os.replace(self.path_of(relpath), self.path_of(target))
                except FileNotFoundError:
                    return False
                return True
            import botocore.exceptions

            bucket, _, key = self.path_of(relpath).partition("/")
            _, _, target_key = self.path_of(target).partition("/")
            try:
                self._client().copy_object(
                    Bucket=bucket, Key=target_key, CopySource={"Bucket": bucket, "Key": key}
                )
            except botocore.exceptions.ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return False
                raise
            self._client().delete_object(Bucket=bucket, Key=key)
            return True

        if not self._retrying("moving aside", relpath, move):
            return None
        logger.warning(
            "moved the corrupt feature shard %s aside to %s", self.uri_of(relpath), target
        )
        return self.uri_of(target)

    def feature_num_rows(self, model_key: str, task_key: str) -> int:
        """Total rows over the committed shards, from the Parquet footers only."""
        total = 0
        for shard_index in self.committed_feature_shards(model_key, task_key):
            relpath = self.feature_shard_relpath(model_key, task_key, shard_index)
            total += self._retrying(
                "reading",
                relpath,
                lambda relpath=relpath: (
                    pq.read_metadata(self.path_of(relpath), filesystem=self.filesystem).num_rows
                ),
            )
        return total


# -- helpers -----------------------------------------------------------------------------------
def _check_relpath(relpath: str) -> str:
    if not isinstance(relpath, str):
        raise TypeError(f"relpath must be str, got {type(relpath).__name__}")
    relpath = relpath.strip("/")
    if relpath and any(part in ("", ".", "..") for part in relpath.split("/")):
        raise ValueError(
            f"relpath {relpath!r} must be a plain relative path without '.', '..' or '//'"
        )
    return relpath


def _local_version(data: bytes) -> str:
    """A local file's version token for :meth:`FeatureStore.write_bytes_if`: its digest."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _fsync_dir(folder: str) -> None:
    """Make a rename/link durable (best effort; some filesystems refuse directory fsync)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
