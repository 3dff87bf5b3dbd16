"""Where bytes live: URIs to ``pyarrow.fs`` filesystems, and the Parquet feature store.

One function maps a URI to a filesystem (:func:`filesystem_from_uri`): local paths, ``file://``
and ``s3://`` (the standard AWS credential chain, a region, and an ``endpoint_override`` for
S3-compatible stores such as MinIO, Ceph or R2, from :class:`StorageOptions` or the usual
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` environment variables).

:class:`FeatureStore` lays out everything a run writes under one root (see docs/design.md)::

    {store}/tasks/{task_key}/part-{shard:05d}.parquet            row_id, input, label
    {store}/tasks/{task_key}/_task.json                          TaskInfo
    {store}/features/{model_key}/{task_key}/part-{shard:05d}.parquet   row_id, label, features
    {store}/runs/{run_id}/...  and  {store}/leaderboard/...

Every write is atomic: a reader sees the whole object or nothing. Locally a temporary file in
the same folder is fsynced, then linked (commit once) or renamed (overwrite) into place; on S3 a
single PUT is atomic, and a conditional PUT (``If-None-Match: *``) commits a shard exactly once
when two writers race. pyarrow does the reading and listing; boto3 does the S3 writes, because
pyarrow has neither conditional PUTs nor a way to abort an upload that failed half-way (its
output stream completes the upload when it is closed or garbage-collected).

Credentials never appear in configuration, logs or error messages: they come from the AWS chain
(environment, ``AWS_PROFILE`` / ``profile``, instance or pod role), and every message that
carries text from a storage client is scrubbed of the credential values in the environment.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ray_logme import __version__
from ray_logme.errors import FeatureError, StorageError
from ray_logme.storage import layout
from ray_logme.storage.layout import (  # noqa: F401  (re-exported: older import paths)
    SHARD_FILE_PATTERN,
    check_key,
    content_key,
    shard_file_name,
    shard_indices,
    slug,
)

logger = logging.getLogger(__name__)

SUPPORTED_SCHEMES = ("local path", "file://", "s3://")
"""What :func:`filesystem_from_uri` accepts, as error messages name it."""

"""Committed shard files; temporary files start with a dot and never match."""

SCHEMA_METADATA_KEY = b"ray_logme"
"""Parquet schema-metadata key of a feature shard's JSON record (see :meth:`FeatureStore.write_feature_shard`)."""

FEATURE_ROW_GROUP_BYTES = 8 << 20
"""Target size of one row group of features; a chunked reader holds about one row group at a time."""

_MAX_SINGLE_PUT_BYTES = 5 * (1 << 30)
_SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
_ACCESS_KEY_ID_PATTERN = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b")


# --------------------------------------------------------------------------------------------
# URIs and filesystems


class StorageOptions(BaseModel):
    """How to reach object storage. Holds no secrets: credentials come from the AWS chain.

    Unset fields fall back to the standard environment variables: ``endpoint_override`` to
    ``AWS_ENDPOINT_URL_S3`` then ``AWS_ENDPOINT_URL``; ``region`` to ``AWS_REGION`` then
    ``AWS_DEFAULT_REGION`` (``us-east-1`` when an endpoint is set and no region is); ``scheme`` to
    the endpoint URL's scheme, else ``https``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint_override: str | None = Field(
        default=None,
        description="S3-compatible endpoint, 'host:port' or 'http(s)://host:port' (MinIO, Ceph, R2).",
    )
    region: str | None = None
    scheme: Literal["https", "http"] | None = None
    anonymous: bool = Field(default=False, description="Unsigned requests (public buckets).")
    profile: str | None = Field(default=None, description="Named profile of ~/.aws/config.")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    request_timeout_s: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, description="Attempts per request, with backoff.")
    conditional_writes: bool = Field(
        default=True,
        description="Commit shards with If-None-Match: * (exactly once). Turn off for stores "
        "that reject it; a race then still leaves one valid shard, but both writers report a write.",
    )

    @field_validator("endpoint_override")
    @classmethod
    def _no_credentials_in_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if not value:
            return None
        if "@" in value:
            raise ValueError(
                "endpoint_override must not carry credentials (user:secret@host); "
                "use the AWS credential chain (environment, AWS_PROFILE, instance role)"
            )
        if "://" in value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(
                f"endpoint_override must be http(s)://host[:port] or host[:port], got {value!r}"
            )
        return value


@dataclass(frozen=True)
class _S3Settings:
    """StorageOptions resolved against the environment."""

    endpoint: str | None  # host[:port], no scheme
    scheme: str
    region: str | None
    options: StorageOptions

    @property
    def endpoint_url(self) -> str | None:
        return f"{self.scheme}://{self.endpoint}" if self.endpoint else None

    def describe(self) -> str:
        return self.endpoint_url or f"AWS S3 (region {self.region or 'from the AWS config'})"


def _resolve_s3(options: StorageOptions | None) -> _S3Settings:
    options = options or StorageOptions()
    raw = (
        options.endpoint_override
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None
    )
    endpoint = None
    url_scheme = None
    if raw:
        raw = raw.strip().rstrip("/")
        if "://" in raw:
            parts = urlsplit(raw)
            url_scheme = parts.scheme
            endpoint = parts.netloc.rsplit("@", 1)[-1]
        else:
            endpoint = raw
    scheme = options.scheme or url_scheme or "https"
    region = (
        options.region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or ("us-east-1" if endpoint else None)
    )
    return _S3Settings(endpoint=endpoint, scheme=scheme, region=region, options=options)


def _split_uri(uri: str) -> tuple[str, str]:
    """``(scheme, path)``: ``("local", "/abs/path")`` or ``("s3", "bucket/key")``."""
    if not isinstance(uri, str) or not uri.strip():
        raise StorageError(f"empty storage URI {uri!r}: give a local path or s3://bucket/prefix")
    uri = uri.strip()
    if "://" not in uri:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", uri) and not os.path.exists(uri):
            scheme = uri.split(":", 1)[0]
            raise StorageError(
                f"unsupported URI scheme {scheme!r} in {_display_uri(uri)!r}: "
                f"supported are {', '.join(SUPPORTED_SCHEMES)}"
            )
        return "local", os.path.abspath(os.path.expanduser(uri))
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in ("file", "s3"):
        raise StorageError(
            f"unsupported URI scheme {scheme!r} in {_display_uri(uri)!r}: "
            f"supported are {', '.join(SUPPORTED_SCHEMES)}"
        )
    if parts.username or parts.password:
        raise StorageError(
            f"credentials in the URI {_display_uri(uri)!r} are not allowed: "
            "use the AWS credential chain (environment, AWS_PROFILE, instance role)"
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StorageError(f"file:// URI {uri!r} names a host; use file:///absolute/path")
        return "local", os.path.abspath(parts.path)
    bucket = parts.netloc
    if not bucket:
        raise StorageError(f"S3 URI {uri!r} has no bucket: use s3://bucket/prefix")
    key = parts.path.strip("/")
    return "s3", f"{bucket}/{key}" if key else bucket


def _display_uri(uri: str) -> str:
    """``uri`` without any ``user:secret@`` part, for messages."""
    return re.sub(r"(://)[^/@]*@", r"\1", uri)


def _profile_credentials(profile: str) -> dict[str, str]:
    """Static credentials of a named profile (pyarrow has no profile argument)."""
    import boto3
    import botocore.exceptions

    try:
        credentials = boto3.Session(profile_name=profile).get_credentials()
    except botocore.exceptions.ProfileNotFound:
        raise StorageError(
            f"AWS profile {profile!r} is not in the AWS config files: fix storage profile "
            "or set AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE"
        ) from None
    if credentials is None:
        raise StorageError(f"AWS profile {profile!r} resolves to no credentials")
    frozen = credentials.get_frozen_credentials()
    out = {"access_key": frozen.access_key, "secret_key": frozen.secret_key}
    if frozen.token:
        out["session_token"] = frozen.token
    return out


def _s3_filesystem(settings: _S3Settings) -> pafs.S3FileSystem:
    options = settings.options
    kwargs: dict[str, Any] = {
        "scheme": settings.scheme,
        "region": settings.region,
        "connect_timeout": options.connect_timeout_s,
        "request_timeout": options.request_timeout_s,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=options.max_attempts),
        "anonymous": options.anonymous,
    }
    if settings.endpoint:
        kwargs["endpoint_override"] = settings.endpoint
    if options.profile and not options.anonymous:
        kwargs.update(_profile_credentials(options.profile))
    return pafs.S3FileSystem(**kwargs)


def filesystem_from_uri(
    uri: str, options: StorageOptions | None = None
) -> tuple[pafs.FileSystem, str]:
    """Map ``uri`` to ``(filesystem, path)`` where ``path`` is what the filesystem takes.

    Local paths (relative ones are made absolute) and ``file:///abs`` give a
    ``LocalFileSystem`` and an absolute path; ``s3://bucket/prefix`` gives an ``S3FileSystem``
    and ``bucket/prefix``. No request is made. Raises :class:`StorageError` for any other scheme
    (naming it and the supported ones) and for credentials embedded in the URI.
    """
    scheme, path = _split_uri(uri)
    if scheme == "local":
        return pafs.LocalFileSystem(), path
    return _s3_filesystem(_resolve_s3(options)), path


def _make_s3_client(settings: _S3Settings) -> Any:
    """A boto3 S3 client for ``settings`` (endpoint, region, timeouts, profile or anonymous)."""
    import boto3
    import botocore.config
    import botocore.exceptions
    from botocore import UNSIGNED

    options = settings.options
    config = botocore.config.Config(
        connect_timeout=options.connect_timeout_s,
        read_timeout=options.request_timeout_s,
        retries={"max_attempts": options.max_attempts, "mode": "standard"},
        signature_version=UNSIGNED if options.anonymous else None,
        s3={"addressing_style": "path"} if settings.endpoint else None,
    )
    try:
        session = (
            boto3.Session(profile_name=options.profile) if options.profile else boto3.Session()
        )
    except botocore.exceptions.ProfileNotFound:
        raise StorageError(
            f"AWS profile {options.profile!r} is not in the AWS config files: fix the storage "
            "profile or set AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE"
        ) from None
    return session.client(
        "s3", endpoint_url=settings.endpoint_url, region_name=settings.region, config=config
    )


@dataclass(frozen=True)
class StoredFile:
    """A file found under a URI: ``size`` in bytes, ``version`` its ETag (S3) or mtime in ns (local)."""

    uri: str
    path: str  # filesystem path (no scheme)
    relpath: str  # relative to the listed URI ("" when the URI is the file itself)
    size: int
    version: str


def list_files(
    uri: str,
    options: StorageOptions | None = None,
    suffixes: tuple[str, ...] = (".parquet", ".parq", ".pq"),
) -> tuple[pafs.FileSystem, str, list[StoredFile]]:
    """``(filesystem, base_path, files)`` for a file or a folder/prefix URI, sorted by path.

    A folder is listed recursively; names ending in ``suffixes`` are kept, and paths with a
    part starting with ``.`` or ``_`` (``_SUCCESS``, ``_temporary/``, hidden files) are skipped.
    ``base_path`` is the folder (the parent of a single file). On S3 the listing comes from
    boto3 because pyarrow does not report ETags. Raises :class:`StorageError` when nothing is
    at ``uri`` or storage cannot be reached.
    """
    import botocore.exceptions

    scheme, path = _split_uri(uri)
    filesystem, _ = filesystem_from_uri(uri, options)
    settings = None if scheme == "local" else _resolve_s3(options)
    display = _display_uri(uri)
    prefix = "s3://" if scheme == "s3" else ""
    with _translate_errors("listing", uri, settings):
        if scheme == "local":
            info = filesystem.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise StorageError(f"{display} does not exist")
            if info.type == pafs.FileType.File:
                return (
                    filesystem,
                    os.path.dirname(path),
                    [
                        StoredFile(
                            uri=path,
                            path=path,
                            relpath="",
                            size=info.size,
                            version=str(info.mtime_ns),
                        )
                    ],
                )
            infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
            entries = [
                (info.path, info.size, str(info.mtime_ns))
                for info in infos
                if info.type == pafs.FileType.File
            ]
            base = path
        else:
            bucket, _, key = path.partition("/")
            client = _make_s3_client(settings)
            entries = []
            base = path
            if key:
                try:
                    head = client.head_object(Bucket=bucket, Key=key)
                except botocore.exceptions.ClientError as error:
                    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                    if status != 404:
                        raise
                else:
                    return (
                        filesystem,
                        path.rsplit("/", 1)[0],
                        [
                            StoredFile(
                                uri=f"s3://{path}",
                                path=path,
                                relpath="",
                                size=int(head["ContentLength"]),
                                version=str(head.get("ETag", "")).strip('"'),
                            )
                        ],
                    )
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=f"{key}/" if key else ""):
                for item in page.get("Contents", []):
                    entries.append(
                        (
                            f"{bucket}/{item['Key']}",
                            int(item["Size"]),
                            str(item.get("ETag", "")).strip('"'),
                        )
                    )
            if not entries:
                raise StorageError(f"{display} does not exist (no objects under it)")
    files = []
    for file_path, size, version in entries:
        relpath = file_path[len(base) :].lstrip("/")
        if any(part.startswith((".", "_")) for part in relpath.split("/")):
            continue
        if not relpath.lower().endswith(suffixes):
            continue
        files.append(
            StoredFile(
                uri=f"{prefix}{file_path}",
                path=file_path,
                relpath=relpath,
                size=size,
                version=version,
            )
        )
    files.sort(key=lambda stored: stored.relpath)
    return filesystem, base, files


# --------------------------------------------------------------------------------------------
# Errors


def _redact(text: str) -> str:
    """``text`` with every credential value of the environment and any access key id masked."""
    for name in _SECRET_ENV_VARS:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return _ACCESS_KEY_ID_PATTERN.sub("***", text)


def _storage_hint(message: str, settings: _S3Settings | None) -> str:
    lowered = message.lower()
    if any(
        token in lowered
        for token in (
            "access_denied",
            "accessdenied",
            "access denied",
            "invalidaccesskeyid",
            "invalid_access_key_id",
            "signaturedoesnotmatch",
            "signature_does_not_match",
            "expiredtoken",
            "forbidden",
            "(403)",
        )
    ):
        return (
            "access denied: check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE or the instance role) and the bucket policy"
        )
    if "no_such_bucket" in lowered or "nosuchbucket" in lowered:
        return "the bucket does not exist: create it or fix the URI"
    if "unable to locate credentials" in lowered or "nocredentials" in lowered:
        return (
            "no AWS credentials found: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
            "AWS_PROFILE, or use anonymous: true for a public bucket"
        )
    if any(
        token in lowered
        for token in (
            "network_connection",
            "could not connect",
            "could not resolve",
            "connect timeout",
            "connection refused",
            "endpointconnectionerror",
            "timed out",
            "curlcode",
        )
    ):
        where = settings.describe() if settings else "the endpoint"
        return (
            f"cannot reach {where}: check endpoint_override / AWS_ENDPOINT_URL, the scheme "
            "(http or https) and the network"
        )
    return "check the URI, the endpoint and the credentials"


def _storage_error(
    action: str, uri: str, error: BaseException, settings: _S3Settings | None
) -> StorageError:
    detail = _redact(f"{type(error).__name__}: {error}")
    return StorageError(
        f"{action} {_display_uri(uri)} failed: {detail} ({_storage_hint(detail, settings)})"
    )


def storage_errors(action: str, uri: str, options: StorageOptions | None = None):
    """Context manager: pyarrow/boto errors on ``uri`` become :class:`StorageError` (no credentials).

    ``with storage_errors("reading", uri, options): ...`` for code outside this module that
    touches storage through ``pyarrow`` directly.
    """
    scheme, _ = _split_uri(uri)
    return _translate_errors(action, uri, None if scheme == "local" else _resolve_s3(options))


@contextlib.contextmanager
def _translate_errors(action: str, uri: str, settings: _S3Settings | None = None) -> Iterator[None]:
    """Turn pyarrow/boto errors into :class:`StorageError` with a hint and no credentials."""
    import botocore.exceptions

    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as error:
        raise StorageError(f"{action} {_display_uri(uri)} failed: it does not exist") from error
    except (OSError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        # "from None": the chained exception's text is already in the (redacted) message.
        raise _storage_error(action, uri, error, settings) from None


# --------------------------------------------------------------------------------------------
# Feature store


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

    # -- pickling: never ship a filesystem, a client or credentials -----------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_filesystem"] = None
        state["_s3_client"] = None
        state["_settings"] = None
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

    def check_access(self) -> None:
        """Fail fast with a clear :class:`StorageError` when the root cannot be listed.

        Catches an unreachable endpoint, wrong credentials and a missing bucket before any
        work is scheduled.
        """
        with _translate_errors("listing", self.root_uri, self._s3_settings()):
            if not self.is_local:
                bucket = self._root_path.split("/", 1)[0]
                if self.filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
                    raise StorageError(
                        f"bucket {bucket!r} of {_display_uri(self.root_uri)} does not exist "
                        f"at {self._s3_settings().describe()}: create it or fix the URI"
                    )
            self.filesystem.get_file_info(pafs.FileSelector(self._root_path, allow_not_found=True))

    # -- generic objects -------------------------------------------------------------------
    def exists(self, relpath: str) -> bool:
        """Whether ``relpath`` is a committed object (or a folder with objects)."""
        path = self.path_of(relpath)
        with _translate_errors("checking", self.uri_of(relpath), self._s3_settings()):
            return self.filesystem.get_file_info(path).type != pafs.FileType.NotFound

    def list_dir(self, relpath: str = "") -> list[str]:
        """Sorted names directly under ``relpath`` (files and folders); ``[]`` if it is absent.

        Temporary files of writes in progress (names starting with ``.``) are not listed.
        """
        path = self.path_of(relpath)
        with _translate_errors("listing", self.uri_of(relpath), self._s3_settings()):
            infos = self.filesystem.get_file_info(
                pafs.FileSelector(path, recursive=False, allow_not_found=True)
            )
        names = {info.base_name for info in infos}
        return sorted(name for name in names if name and not name.startswith("."))

    def read_bytes(self, relpath: str) -> bytes:
        """The whole object at ``relpath``."""
        with (
            _translate_errors("reading", self.uri_of(relpath), self._s3_settings()),
            self.filesystem.open_input_stream(self.path_of(relpath)) as stream,
        ):
            return stream.read()

    def write_bytes(self, relpath: str, data: bytes | pa.Buffer, *, overwrite: bool = True) -> bool:
        """Write ``data`` to ``relpath`` atomically; return whether this call wrote it.

        ``overwrite=False`` commits at most once: if the object exists (or a racing writer
        commits first) nothing is written and ``False`` is returned.
        """
        uri = self.uri_of(relpath)
        with _translate_errors("writing", uri, self._s3_settings()):
            if self.is_local:
                return self._write_local(relpath, data, overwrite=overwrite)
            return self._write_s3(relpath, data, overwrite=overwrite)

    def read_text(self, relpath: str) -> str:
        return self.read_bytes(relpath).decode("utf-8")

    def write_text(self, relpath: str, text: str, *, overwrite: bool = True) -> bool:
        """Write UTF-8 ``text`` atomically (see :meth:`write_bytes`)."""
        return self.write_bytes(relpath, text.encode("utf-8"), overwrite=overwrite)

    def read_table(self, relpath: str, columns: list[str] | None = None) -> pa.Table:
        """Read the Parquet file at ``relpath`` (optionally only ``columns``)."""
        with _translate_errors("reading", self.uri_of(relpath), self._s3_settings()):
            return pq.read_table(self.path_of(relpath), columns=columns, filesystem=self.filesystem)

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
        if not overwrite and not conditional and self.exists(relpath):
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
        if self.exists(relpath):
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
        with _translate_errors("reading", self.uri_of(relpath), self._s3_settings()):
            schema = pq.read_schema(self.path_of(relpath), filesystem=self.filesystem)
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
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream ``(features: float32[m, d], labels)`` with ``m <= max_rows``, shard by shard.

        ``labels`` is ``int64[m]``, ``float64[m]`` or ``float64[m, t]``. Reads one row group at a
        time (row groups are written at most ~8 MiB of features), so memory stays about
        ``max(max_rows, row group) x d`` whatever the number of shards. Shards are read in index
        order; ``shard_indices`` restricts them (default: all committed shards). Raises
        :class:`FeatureError` if shards disagree on the feature dimension.
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
            uri = self.uri_of(relpath)
            with _translate_errors("reading", uri, self._s3_settings()):
                source = self.filesystem.open_input_file(self.path_of(relpath))
            with source:
                with _translate_errors("reading", uri, self._s3_settings()):
                    parquet_file = pq.ParquetFile(source)
                    shard_dim = parquet_file.schema_arrow.field("features").type.list_size
                if feature_dim is not None and shard_dim != feature_dim:
                    raise FeatureError(
                        f"{uri} has feature_dim {shard_dim} but earlier shards of "
                        f"{model_key}/{task_key} have {feature_dim}: delete the stale shards"
                    )
                feature_dim = shard_dim
                batches = parquet_file.iter_batches(
                    batch_size=max_rows, columns=["features", "label"], use_threads=False
                )
                while True:
                    with _translate_errors("reading", uri, self._s3_settings()):
                        batch = next(batches, None)
                    if batch is None:
                        break
                    yield (
                        _features_to_numpy(batch.column("features")),
                        labels_to_numpy(batch.column("label")),
                    )

    def feature_num_rows(self, model_key: str, task_key: str) -> int:
        """Total rows over the committed shards, from the Parquet footers only."""
        total = 0
        for shard_index in self.committed_feature_shards(model_key, task_key):
            relpath = self.feature_shard_relpath(model_key, task_key, shard_index)
            with (
                _translate_errors("reading", self.uri_of(relpath), self._s3_settings()),
                self.filesystem.open_input_file(self.path_of(relpath)) as source,
            ):
                total += pq.ParquetFile(source).metadata.num_rows
        return total


# --------------------------------------------------------------------------------------------
# Shard encoding (pure: arrays in, Arrow out)


def _parquet_bytes(table: pa.Table, **parquet_options: Any) -> pa.Buffer:
    """``table`` encoded as one Parquet file in memory (nothing is written if encoding fails)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **parquet_options)
    return sink.getvalue()


def feature_shard_table(
    model_key: str,
    task_key: str,
    shard_index: int,
    row_ids: np.ndarray,
    labels: np.ndarray,
    features: np.ndarray,
    metadata: Mapping[str, Any],
    feature_dtype: Literal["float32", "float16"] = "float32",
) -> pa.Table:
    """The Arrow table of one feature shard (see :meth:`FeatureStore.write_feature_shard`)."""
    where = f"model {model_key!r}, task {task_key!r}, shard {shard_index}"
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(
            f"features must be float[n, d] with n, d >= 1 ({where}), got shape {features.shape}"
        )
    if not np.issubdtype(features.dtype, np.floating):
        raise ValueError(f"features must be floating point ({where}), got {features.dtype}")
    num_rows, feature_dim = features.shape
    finite = np.isfinite(features)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise FeatureError(
            f"{where}: {bad_rows.size} of {num_rows} rows have NaN/Inf features (first row "
            f"{int(bad_rows[0])}): the model is numerically unstable on this input"
        )
    with np.errstate(over="ignore"):  # float16 overflow is reported just below
        stored = features.astype(np.dtype(feature_dtype), copy=False)
    if feature_dtype == "float16" and not np.isfinite(stored).all():
        raise FeatureError(
            f"{where}: features overflow float16 (|x| > 65504): store them as float32"
        )
    row_ids = np.asarray(row_ids)
    if row_ids.shape != (num_rows,) or not np.issubdtype(row_ids.dtype, np.integer):
        raise ValueError(
            f"row_ids must be int[{num_rows}] ({where}), got {row_ids.dtype}{list(row_ids.shape)}"
        )
    label_array = _labels_to_arrow(np.asarray(labels), num_rows, where)
    feature_array = pa.FixedSizeListArray.from_arrays(
        pa.array(np.ascontiguousarray(stored).reshape(-1)), feature_dim
    )
    record = {
        "metadata": dict(metadata),
        "code_version": __version__,
        "model_key": model_key,
        "task_key": task_key,
        "shard_index": int(shard_index),
        "num_rows": int(num_rows),
        "feature_dim": int(feature_dim),
        "feature_dtype": feature_dtype,
    }
    try:
        encoded = json.dumps(record, sort_keys=True, default=_json_default)
    except TypeError as error:
        raise ValueError(f"shard metadata must be JSON-serialisable ({where}): {error}") from None
    table = pa.table(
        {
            "row_id": pa.array(row_ids.astype(np.int64, copy=False)),
            "label": label_array,
            "features": feature_array,
        }
    )
    return table.replace_schema_metadata({SCHEMA_METADATA_KEY: encoded.encode("utf-8")})


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _labels_to_arrow(labels: np.ndarray, num_rows: int, where: str) -> pa.Array:
    if labels.shape[:1] != (num_rows,) or labels.ndim not in (1, 2):
        raise ValueError(
            f"labels must be [{num_rows}] or [{num_rows}, t] ({where}), got shape {labels.shape}"
        )
    if np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_:
        if labels.ndim != 1:
            raise ValueError(f"class labels must be 1-D ({where}); several targets must be float")
        return pa.array(labels.astype(np.int64, copy=False))
    if np.issubdtype(labels.dtype, np.floating):
        values = labels.astype(np.float64, copy=False)
        if not np.isfinite(values).all():
            raise ValueError(f"labels contain NaN/Inf ({where})")
        if values.ndim == 1:
            return pa.array(values)
        return pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(values).reshape(-1)), values.shape[1]
        )
    raise ValueError(
        f"labels must be integer (classes) or float (targets) ({where}), got {labels.dtype}"
    )


def _features_to_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``fixed_size_list<float>[d]`` -> writable ``float32[n, d]``."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    feature_dim = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=True).reshape(-1, feature_dim)


def labels_to_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``int64`` / ``float64`` -> ``[n]``; ``fixed_size_list<float64>[t]`` -> ``float64[n, t]``."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        targets = column.type.list_size
        return (
            column.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, targets)
        )
    return column.to_numpy(zero_copy_only=False).copy()


# --------------------------------------------------------------------------------------------
# Helpers


def _check_relpath(relpath: str) -> str:
    if not isinstance(relpath, str):
        raise TypeError(f"relpath must be str, got {type(relpath).__name__}")
    relpath = relpath.strip("/")
    if relpath and any(part in ("", ".", "..") for part in relpath.split("/")):
        raise ValueError(
            f"relpath {relpath!r} must be a plain relative path without '.', '..' or '//'"
        )
    return relpath


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
