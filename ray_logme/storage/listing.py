"""Listing the data files under a URI, with sizes and versions (ETag or mtime).

:func:`list_files` is how task sources are found and fingerprinted: a file or a folder/prefix,
local or on S3, listed recursively with hidden and ``_``-prefixed paths skipped. Transient
faults are retried; errors come out as :class:`~ray_logme.errors.StorageError` through
:mod:`ray_logme.storage.faults`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from ray_logme.errors import StorageError
from ray_logme.storage.retry import call_with_retries
from ray_logme.storage.uri import (
    StorageOptions,
    _display_uri,
    _make_s3_client,
    _resolve_s3,
    _split_uri,
    filesystem_from_uri,
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
    boto3 because pyarrow does not report ETags. Transient faults are retried (see
    :mod:`ray_logme.storage.retry`). Raises :class:`StorageError` when nothing is at ``uri`` or
    storage cannot be reached.
    """
    import botocore.exceptions

    scheme, path = _split_uri(uri)
    filesystem, _ = filesystem_from_uri(uri, options)
    settings = None if scheme == "local" else _resolve_s3(options)
    display = _display_uri(uri)
    prefix = "s3://" if scheme == "s3" else ""

    def list_once() -> tuple[pafs.FileSystem | None, str, list[Any]]:
        """``(filesystem, base, [StoredFile])`` for a single file, else ``(None, base, entries)``."""
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
        return None, base, entries

    single, base, entries = call_with_retries(
        list_once,
        action="listing",
        uri=uri,
        options=options or StorageOptions(),
        settings=settings,
    )
    if single is not None:
        return single, base, entries
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
