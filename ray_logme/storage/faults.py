"""Storage failures: which are transient, and each as a redacted :class:`~ray_logme.errors.StorageError`.

:func:`is_transient` says whether retrying could help (connection refused or reset, timeouts,
HTTP 5xx, throttling; never not-found, access denied, permission, disk full or corrupt data);
:func:`is_corrupt_data` whether bytes were read but could not be decoded as Parquet.
:mod:`ray_logme.storage.retry` retries the transient ones.

Every message that carries text from a storage client (pyarrow, boto3) goes through
:func:`_redact`, which masks the credential values of the environment and anything shaped like
an AWS access key id, then gets a hint for the likely cause (:func:`_storage_hint`: access
denied, no such bucket, no credentials, unreachable endpoint; for a local store: permission
denied, disk full, read-only filesystem, never the S3 hint). :func:`_translate_errors` is the
context manager the storage modules wrap their I/O in; :func:`storage_errors` is its public form
for code elsewhere that touches storage through ``pyarrow`` directly.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator

from ray_logme.errors import StorageError
from ray_logme.storage.uri import (
    StorageOptions,
    _display_uri,
    _resolve_s3,
    _S3Settings,
    _split_uri,
)

_SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
_ACCESS_KEY_ID_PATTERN = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b")


def _redact(text: str) -> str:
    """``text`` with every credential value of the environment and any access key id masked."""
    for name in _SECRET_ENV_VARS:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return _ACCESS_KEY_ID_PATTERN.sub("***", text)


#: Text of pyarrow / AWS SDK / botocore errors that a retry can cure (lower case).
_TRANSIENT_TOKENS = (
    "network_connection",
    "could not connect",
    "couldn't connect",
    "connection refused",
    "connection reset",
    "connection aborted",
    "connection was closed",
    "broken pipe",
    "timed out",
    "timeout",
    "curlcode",
    "slow_down",
    "slowdown",
    "throttl",
    "service_unavailable",
    "serviceunavailable",
    "internal_failure",
    "internalerror",
    "request_timeout",
    "requesttimeout",
    "too many requests",
    "http status 5",
    "http status 429",
    "(500)",
    "(502)",
    "(503)",
    "(504)",
)
#: Local errno values that a retry can cure (a flaky network filesystem).
_TRANSIENT_ERRNOS = frozenset({errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.EAGAIN})
#: Local errno values that no retry cures, with their hint.
_LOCAL_HINTS = {
    errno.EACCES: "permission denied: check the owner and mode of the store folder",
    errno.EPERM: "operation not permitted: check the owner and mode of the store folder",
    errno.ENOSPC: "no space left on the device: free space or move the store",
    errno.EDQUOT: "disk quota exceeded: free space or raise the quota",
    errno.EROFS: "the filesystem is read-only: point the store at a writable folder",
}
#: Text of Parquet decoding errors: bytes arrived but are not a valid file (lower case).
_CORRUPT_TOKENS = (
    "magic bytes",
    "deserialize thrift",
    "corrupt",
    "decompress",
    "unexpected end of stream",
    "invalid parquet",
    "parquet file size is 0",
    "invalid column metadata",
    "page header",
)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is a storage fault that retrying the same call could cure.

    Transient: connection refused/reset/closed, timeouts, HTTP 5xx and 429, SlowDown and other
    throttling, pyarrow's ``NETWORK_CONNECTION``. Never transient: a missing object, access
    denied, a missing bucket, local permission / disk-full / read-only errors, corrupt data.
    """
    import botocore.exceptions

    if isinstance(error, FileNotFoundError | PermissionError) or is_corrupt_data(error):
        return False
    if isinstance(error, botocore.exceptions.ClientError):
        response = error.response or {}
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = str(response.get("Error", {}).get("Code", "")).lower()
        return status >= 500 or status == 429 or any(t in code for t in _TRANSIENT_TOKENS)
    if isinstance(
        error,
        botocore.exceptions.ConnectionError
        | botocore.exceptions.HTTPClientError
        | botocore.exceptions.ResponseStreamingError,
    ):
        return True
    if isinstance(error, botocore.exceptions.BotoCoreError):
        return False  # no credentials, bad parameters, ...
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    if isinstance(error, OSError):
        if error.errno in _LOCAL_HINTS:
            return False
        if error.errno in _TRANSIENT_ERRNOS:
            return True
        lowered = str(error).lower()
        if "access_denied" in lowered or "no_such" in lowered or "(403)" in lowered:
            return False
        return any(token in lowered for token in _TRANSIENT_TOKENS)
    return False


class StorageUnreachableError(StorageError):
    """Storage kept failing with transient faults (unreachable, timing out, throttling).

    Raised once the retries are spent; the run can be resumed when storage is back.
    """


class CorruptFileError(StorageError):
    """A file was read whole but cannot be decoded (a truncated or garbled Parquet file).

    ``uri`` names the file. Retrying does not help; rewriting the file does.
    """

    def __init__(self, message: str, uri: str) -> None:
        super().__init__(message)
        self.uri = uri


def is_corrupt_data(error: BaseException) -> bool:
    """Whether ``error`` says the bytes read are not a valid Parquet file (truncated, garbled).

    pyarrow reports these as ``ArrowInvalid`` (no magic bytes: truncated) or ``OSError``
    (a bad page or thrift header); errors from the S3 client (``AWS Error ...``) never count.
    """
    import pyarrow as pa

    if isinstance(error, FileNotFoundError) or not isinstance(error, OSError | pa.ArrowInvalid):
        return False
    lowered = str(error).lower()
    return "aws error" not in lowered and any(token in lowered for token in _CORRUPT_TOKENS)


def _local_hint(error: BaseException | None, lowered: str) -> str:
    code = getattr(error, "errno", None)
    if code in _LOCAL_HINTS:
        return _LOCAL_HINTS[code]
    for text, code in (
        ("permission denied", errno.EACCES),
        ("no space left", errno.ENOSPC),
        ("quota exceeded", errno.EDQUOT),
        ("read-only file system", errno.EROFS),
    ):
        if text in lowered:
            return _LOCAL_HINTS[code]
    return "check the path and the local filesystem"


def _storage_hint(
    message: str, settings: _S3Settings | None, error: BaseException | None = None
) -> str:
    """The likely cause of a failure; ``settings`` is None for a local store (no S3 hints)."""
    lowered = message.lower()
    if settings is None:
        return _local_hint(error, lowered)
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
    action: str,
    uri: str,
    error: BaseException,
    settings: _S3Settings | None,
    attempts: str = "",
) -> StorageError:
    detail = _redact(f"{type(error).__name__}: {error}")
    hint = _storage_hint(detail, settings, error)
    kind = StorageUnreachableError if is_transient(error) else StorageError
    return kind(f"{action} {_display_uri(uri)} failed{attempts}: {detail} ({hint})")


def storage_errors(action: str, uri: str, options: StorageOptions | None = None):
    """Context manager: pyarrow/boto errors on ``uri`` become :class:`StorageError` (no credentials).

    ``with storage_errors("reading", uri, options): ...`` for code outside this module that
    touches storage through ``pyarrow`` directly.
    """
    scheme, _ = _split_uri(uri)
    return _translate_errors(action, uri, None if scheme == "local" else _resolve_s3(options))


@contextlib.contextmanager
def _translate_errors(
    action: str, uri: str, settings: _S3Settings | None = None, attempts: str = ""
) -> Iterator[None]:
    """Turn pyarrow/boto errors into :class:`StorageError` with a hint and no credentials.

    ``settings`` is None for a local store. ``attempts`` (`` after 6 attempts over 31.2 s``)
    goes after "failed" when retries were spent.
    """
    import botocore.exceptions

    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as error:
        raise StorageError(f"{action} {_display_uri(uri)} failed: it does not exist") from error
    except Exception as error:
        if is_corrupt_data(error):
            raise CorruptFileError(
                f"{action} {_display_uri(uri)} failed: the file is corrupt or truncated "
                f"({_redact(f'{type(error).__name__}: {error}')})",
                uri=_display_uri(uri),
            ) from None
        if isinstance(
            error, OSError | botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError
        ):
            # "from None": the chained exception's text is already in the (redacted) message.
            raise _storage_error(action, uri, error, settings, attempts) from None
        raise
