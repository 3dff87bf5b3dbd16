"""A model's content key: what names its features on the store, computed without loading it.

``model_key(spec) = {slug(name)}-{sha256[:12]}`` over the spec (less its free ``tags``), the
identity of its weights (the content hash of a local checkpoint file or model folder, the hub
revision otherwise) and the major.minor versions of torch, timm and transformers, so a new
library release recomputes features instead of mixing old and new ones. Light: hashes files,
imports no torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray_logme.hub.spec import ModelSpec, resolve_package_path

_HASH_CHUNK_BYTES = 8 << 20


def sha256_of_files(paths: Sequence[Path], root: Path | None = None) -> str:
    """sha256 hex of weight/model files.

    One file: the sha256 of its content (what ``sha256sum`` prints). Several: sha256 over each
    file's name (relative to ``root``, else its base name) and content, in sorted name order.
    """
    digest = hashlib.sha256()
    if len(paths) == 1:
        _update_with_file(digest, paths[0])
        return digest.hexdigest()

    def name_of(path: Path) -> str:
        return path.relative_to(root).as_posix() if root else path.name

    for path in sorted(paths, key=name_of):
        digest.update(name_of(path).encode("utf-8") + b"\0")
        _update_with_file(digest, path)
        digest.update(b"\0")
    return digest.hexdigest()


def _update_with_file(digest: Any, path: Path) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)


@functools.lru_cache(maxsize=256)
def _file_sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of_files([Path(path)])


def file_sha256(path: str) -> str:
    """sha256 hex of one file's content, cached per (path, size, mtime) in this process;
    ``missing:{path}`` when it does not exist (its load then fails with a clear error)."""
    try:
        stat = os.stat(path)
    except OSError:
        return f"missing:{path}"
    return _file_sha256_cached(path, stat.st_size, stat.st_mtime_ns)


def model_key(spec: ModelSpec) -> str:
    """Content key of a model's features: ``{slug(name)}-{sha256[:12]}``, without loading it."""
    from ray_logme.storage import slug

    identity = spec.model_dump(mode="json", exclude={"tags"})
    identity["weights"] = weight_identity(spec)
    identity["libraries"] = library_versions()
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"{slug(spec.name.removeprefix('hf-hub:'))}-{digest[:12]}"


def weight_identity(spec: ModelSpec) -> str | None:
    """What identifies the weights: a checkpoint's content hash, a local folder's content
    listing hash (content, not mtimes: a fresh checkout or a synced copy keeps its key), or the
    hub revision (``None``: the hub's default)."""
    if spec.checkpoint_path:
        return file_sha256(spec.checkpoint_path)
    local = Path(resolve_package_path(spec.name.removeprefix("local-dir:")))
    if local.is_dir():
        listing = sorted(
            (str(p.relative_to(local)), file_sha256(str(p)))
            for p in local.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    return spec.revision


def library_versions() -> dict[str, str]:
    """major.minor of torch, timm and transformers (``"absent"`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "timm", "transformers"):
        try:
            out[name] = ".".join(version(name).split(".")[:2])
        except PackageNotFoundError:
            out[name] = "absent"
    return out
