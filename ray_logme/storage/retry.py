"""Bounded retries of store operations after transient faults, then one clear error.

:func:`call_with_retries` runs one whole operation (a read, a write, a listing, an existence
check) and, when it fails with a fault :func:`~ray_logme.storage.faults.is_transient` accepts
(connection refused or reset, timeout, HTTP 5xx, throttling), waits and runs it again: at most
``StorageOptions.retries`` more times, the delay starting at ``retry_backoff_s`` and doubling,
capped at ``retry_max_backoff_s``, each drawn between half and all of that (jitter, so many
workers do not retry in step). With the defaults (5 retries, 1 s, 30 s cap) an operation rides
out an outage of about 15-30 s. Any other fault, or the last transient one, becomes one
:class:`~ray_logme.errors.StorageError` that names the URI, says how many attempts were made and
carries a hint, with credentials redacted (:mod:`ray_logme.storage.faults`).

These retries wrap the per-request retries of pyarrow and boto3 (``max_attempts``), which cure
a dropped packet but give up within a second of an endpoint going away.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from ray_logme.storage.faults import _redact, _translate_errors, is_transient
from ray_logme.storage.uri import StorageOptions, _display_uri, _S3Settings

# The package's name, as the store logs under: one logger to configure for storage.
logger = logging.getLogger("ray_logme.storage")

T = TypeVar("T")


def backoff_delays(options: StorageOptions, rng: random.Random | None = None) -> list[float]:
    """The waits before each retry: ``min(cap, base * 2**i)`` times a jitter in ``[0.5, 1]``."""
    rng = rng or random.Random()
    return [
        min(options.retry_max_backoff_s, options.retry_backoff_s * 2**attempt)
        * rng.uniform(0.5, 1.0)
        for attempt in range(options.retries)
    ]


def call_with_retries(
    operation: Callable[[], T],
    *,
    action: str,
    uri: str,
    options: StorageOptions,
    settings: _S3Settings | None,
    retries: int | None = None,
) -> T:
    """``operation()``, run again after transient faults (see the module docstring).

    ``action`` and ``uri`` name the operation in log lines and errors (``"reading"``,
    ``s3://bucket/prefix/runs/r1/run.json``); ``settings`` is None for a local store;
    ``retries`` overrides ``options.retries``. Raises
    :class:`~ray_logme.storage.faults.StorageUnreachableError` when the last fault was transient,
    :class:`~ray_logme.storage.faults.CorruptFileError` for undecodable data and
    :class:`StorageError` for other storage faults; other exceptions (bad arguments, encoding
    errors) pass through unchanged.
    """
    delays = backoff_delays(options)
    if retries is not None:
        delays = delays[:retries]
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return operation()
        except Exception as error:
            if attempt < len(delays) and is_transient(error):
                delay = delays[attempt]
                attempt += 1
                logger.warning(
                    "%s %s: transient storage fault (%s); retry %d of %d in %.1f s",
                    action,
                    _display_uri(uri),
                    _redact(f"{type(error).__name__}: {error}")[:300],
                    attempt,
                    len(delays),
                    delay,
                )
                time.sleep(delay)
                continue
            spent = (
                f" after {attempt + 1} attempts over {time.monotonic() - started:.1f} s"
                if attempt
                else ""
            )
            with _translate_errors(action, uri, settings, spent):
                raise
