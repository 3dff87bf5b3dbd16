"""A model's content key: what names its features on the store, computed without loading it.

``model_key(spec) = {slug(name)}-{sha256[:12]}`` over the spec's identity
(:meth:`ModelSpec.identity`: no display-only fields), the identity of its weights (the content
hash of a local checkpoint file or model folder, the hub revision otherwise), the major.minor
versions of torch, timm and transformers, so a new library release recomputes features instead
of mixing old and new ones, and the settings the model's folder declares and the loader applies
(:func:`ray_logme.hub.declared.applied_settings`; left out when there are none). This module owns
the formula. Light: hashes files and reads JSON, imports no torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray_logme.hub.declared import applied_settings, declared_settings
from ray_logme.hub.spec import (
    FIELDS_ADDED_AFTER_0_1,
    PACKAGE_PREFIX,
    ModelSpec,
    resolve_package_path,
)

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
    ``missing`` when it does not exist (its load then fails with a clear error). Raises
    :class:`~ray_logme.errors.CheckpointError` naming the file when it cannot be read."""
    from ray_logme.errors import CheckpointError

    try:
        info = os.stat(path)
    except OSError:
        return "missing"
    try:
        return _file_sha256_cached(path, info.st_size, info.st_mtime_ns)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path!r} to hash it: {exc.strerror or exc}") from None


def model_key(spec: ModelSpec) -> str:
    """Content key of a model's features: ``{slug(name)}-{sha256[:12]}``, without loading it.

    Weights on the local filesystem (a ``checkpoint_path``, a model folder given by its path)
    are keyed by their content, not their path: moving or copying a folder keeps its key. Raises
    :class:`~ray_logme.errors.CheckpointError` for a local folder too large to hash (see
    :data:`MAX_FOLDER_FILES`).
    """
    from ray_logme.storage import slug

    identity = spec.identity()
    local = local_model_dir(spec)
    if local is not None and not spec.name.startswith(PACKAGE_PREFIX):
        identity["name"] = LOCAL_DIR_NAME
    if spec.checkpoint_path:
        identity["checkpoint_path"] = LOCAL_FILE_NAME
    if spec.convert is not None:
        # The converted folder (weights, config, tokenizer) is what the loader reads: its
        # content hash identifies the weights, wherever the source file lies.
        identity["convert"] = spec.convert.recipe()
    identity["weights"] = weight_identity(spec)
    identity["libraries"] = library_versions()
    declared = applied_settings(spec, declared_settings(spec))
    if declared:  # absent when nothing is declared: such models keep their keys
        identity["declared"] = declared
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"{slug(_key_name(spec, local))}-{digest[:12]}"


def legacy_model_key(spec: ModelSpec) -> str:
    """The key of ray-logme 0.1.0, which hashed local paths (a store written by it keeps its
    features: see :func:`resolve_model_key`). A spec that sets a field 0.1.0 did not have
    computes other features than any 0.1.0 spec: its legacy key is its key."""
    from ray_logme.storage import slug

    dumped = spec.model_dump(mode="json")
    if any(dumped.get(name) != default for name, default in FIELDS_ADDED_AFTER_0_1.items()):
        return model_key(spec)
    identity = spec.model_dump(mode="json", exclude={"tags", "label", *FIELDS_ADDED_AFTER_0_1})
    identity["weights"] = weight_identity(spec)
    identity["libraries"] = library_versions()
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"{slug(spec.name.removeprefix('hf-hub:'))}-{digest[:12]}"


def resolve_model_key(spec: ModelSpec, has_features: Any = None) -> str:
    """:func:`model_key`, or the 0.1.0 key of a local-path model when only that key has
    features on the store (``has_features(key) -> bool``), so an existing store is not
    re-extracted after the upgrade."""
    key = model_key(spec)
    if spec.convert is not None:  # converted models are newer than 0.1.0: no legacy key
        return key
    if has_features is None or (local_model_dir(spec) is None and not spec.checkpoint_path):
        return key
    if spec.name.startswith(PACKAGE_PREFIX) and not spec.checkpoint_path:
        return key  # pkg: names were already path-free
    if spec.normalize is not None or applied_settings(spec, declared_settings(spec)):
        return key  # 0.1.0 ignored what the folder declares: its features are not these
    legacy = legacy_model_key(spec)
    if legacy != key and not has_features(key) and has_features(legacy):
        return legacy
    return key


#: What a local path becomes in the hashed identity (the content hash carries the weights).
LOCAL_DIR_NAME = "<local model folder>"
LOCAL_FILE_NAME = "<local checkpoint file>"


def _key_name(spec: ModelSpec, local: Path | None) -> str:
    """The readable part of the key: the model's name, a local folder's own name, or for a
    converted model the source file's stem."""
    if spec.convert is not None:
        stem = spec.convert.weights.replace(chr(92), "/").rstrip("/").split("/")[-1]
        return stem.rsplit(".", 1)[0] or "converted"
    if local is not None and not spec.name.startswith(PACKAGE_PREFIX):
        return local.name or "local"
    return spec.name.removeprefix("hf-hub:")


def local_model_dir(spec: ModelSpec) -> Path | None:
    """The local folder ``spec.name`` names (a path, ``local-dir:path`` or ``pkg:...``), else
    ``None`` (a registry name or Hub repo id)."""
    try:
        local = Path(os.path.expanduser(resolve_package_path(spec.name.removeprefix("local-dir:"))))
    except Exception:  # an uninstalled pkg: package fails the model's load, not its key
        return None
    return local if local.is_dir() else None


#: Bounds on hashing a local model folder: a model folder holds a few files; a name that
#: points at ``/`` or ``/proc`` must fail that model quickly, not hang the run.
MAX_FOLDER_FILES = 10_000
MAX_FOLDER_BYTES = 256 << 30


def weight_identity(spec: ModelSpec) -> str | None:
    """What identifies the weights: a checkpoint's content hash, a local folder's content
    listing hash (content, not mtimes: a fresh checkout or a synced copy keeps its key), or the
    hub revision (``None``: the hub's default). A converted model (``convert``) is converted
    here first when its cached folder does not exist yet (that needs torch)."""
    if spec.convert is not None:
        from ray_logme.hub.convert import converted_folder

        folder = converted_folder(spec)
        return folder_content_hash(folder, what=f"model {spec.display_name!r}")
    if spec.checkpoint_path:
        return file_sha256(os.path.expanduser(spec.checkpoint_path))
    local = local_model_dir(spec)
    if local is not None:
        return folder_content_hash(local, what=f"model {spec.name!r}")
    return spec.revision


def folder_content_hash(folder: Path, *, what: str) -> str:
    """sha256 hex over a folder's (relative path, content sha256) listing: content, not
    mtimes, so a fresh checkout or a synced copy hashes the same."""
    listing = sorted(
        (path.relative_to(folder).as_posix(), file_sha256(str(path)))
        for path in folder_files(folder, what=what)
    )
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def folder_files(
    folder: Path,
    *,
    what: str,
    max_files: int | None = None,
    max_bytes: int | None = None,
) -> list[Path]:
    """The regular files below ``folder`` (hidden ones and symbolic links skipped), bounded.

    Raises :class:`~ray_logme.errors.CheckpointError` naming ``what`` and the folder when it
    holds more than ``max_files`` files or ``max_bytes`` bytes (default :data:`MAX_FOLDER_FILES`,
    :data:`MAX_FOLDER_BYTES`), or cannot be listed.
    """
    import stat

    from ray_logme.errors import CheckpointError

    max_files = MAX_FOLDER_FILES if max_files is None else max_files
    max_bytes = MAX_FOLDER_BYTES if max_bytes is None else max_bytes
    files: list[Path] = []
    total = 0

    def refuse(reason: str) -> CheckpointError:
        return CheckpointError(
            f"{what}: local folder {str(folder)!r} {reason}; give the folder that holds the "
            "model's own files (config and weights)"
        )

    def fail(error: OSError) -> None:
        raise refuse(f"cannot be read ({error.strerror or error})")

    for root, dirs, names in os.walk(folder, onerror=fail, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(root) / name
            try:
                info = path.lstat()
            except OSError as exc:
                raise refuse(f"has an unreadable file {name!r} ({exc.strerror})") from None
            if not stat.S_ISREG(info.st_mode):
                continue
            files.append(path)
            total += info.st_size
            if len(files) > max_files:
                raise refuse(f"holds more than {max_files} files")
            if total > max_bytes:
                raise refuse(f"holds more than {max_bytes >> 30} GiB")
    return files


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
