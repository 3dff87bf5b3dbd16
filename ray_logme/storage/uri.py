"""Where a URI points: :class:`StorageOptions`, their S3 settings, and ``pyarrow.fs`` filesystems.

One function maps a URI to a filesystem (:func:`filesystem_from_uri`): local paths, ``file://``
and ``s3://`` (the standard AWS credential chain, a region, and an ``endpoint_override`` for
S3-compatible stores such as MinIO, Ceph or R2, from :class:`StorageOptions` or the usual
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` environment variables). The boto3 client that
:class:`~ray_logme.storage.store.FeatureStore` and :func:`~ray_logme.storage.listing.list_files`
use is built here too, from the same settings. No function here makes a request.

Credentials never appear in configuration or URIs: they come from the AWS chain (environment,
``AWS_PROFILE`` / ``profile``, instance or pod role); an endpoint or URI carrying
``user:secret@`` is refused, and :func:`_display_uri` strips it from messages.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ray_logme.errors import StorageError

SUPPORTED_SCHEMES = ("local path", "file://", "s3://")
"""What :func:`filesystem_from_uri` accepts, as error messages name it."""


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
    max_attempts: int = Field(
        default=3, ge=1, description="Attempts per HTTP request inside pyarrow/boto3, with backoff."
    )
    retries: int = Field(
        default=5,
        ge=0,
        le=20,
        description="Retries of a whole store operation (read, write, list, exists) after a "
        "transient fault: connection refused/reset, timeout, HTTP 5xx, throttling.",
    )
    retry_backoff_s: float = Field(
        default=1.0,
        ge=0,
        description="Delay before the first retry; doubles each retry, with jitter.",
    )
    retry_max_backoff_s: float = Field(default=30.0, ge=0, description="Cap on one retry delay.")
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
