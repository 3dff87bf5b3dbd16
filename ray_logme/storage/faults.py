"""Storage failures as :class:`~ray_logme.errors.StorageError`: redacted, with a hint.

Every message that carries text from a storage client (pyarrow, boto3) goes through
:func:`_redact`, which masks the credential values of the environment and anything shaped like
an AWS access key id, then gets a hint for the likely cause (:func:`_storage_hint`: access
denied, no such bucket, no credentials, unreachable endpoint). :func:`_translate_errors` is the
context manager the storage modules wrap their I/O in; :func:`storage_errors` is its public form
for code elsewhere that touches storage through ``pyarrow`` directly.
"""

from __future__ import annotations

import contextlib
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
