"""What a model folder declares about its own use: the settings its authors ship it with.

A sentence-transformers folder (``modules.json`` beside the Hugging Face files) says how its users
embed text: the truncation length (``sentence_bert_config.json``: ``max_seq_length``), the pooling
(the ``Pooling`` module's ``config.json``), whether embeddings are L2-normalised (a ``Normalize``
module) and whether text is lower-cased first (``do_lower_case``). The Hugging Face loader honours
these unless the spec overrides them (``max_length``, ``pooling``, ``normalize``), so features are
the ones the model's users get; :func:`applied_settings` is what the loader takes from the folder,
and :func:`ray_logme.hub.identity.model_key` hashes it, so a folder's key changes exactly when
honouring its declaration changes its features.

Light on purpose (standard library only; ``huggingface_hub`` only for Hub repo ids, when called):
the content key is computed without loading the model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray_logme.hub.spec import ModelSpec, resolve_package_path

logger = logging.getLogger(__name__)

MODULES_FILE = "modules.json"
SENTENCE_BERT_CONFIG = "sentence_bert_config.json"

#: sentence-transformers pooling modes -> the ``ModelSpec.pooling`` that computes the same vector.
POOLING_MODES = {"cls": "cls", "cls_token": "cls", "mean": "mean", "mean_tokens": "mean"}
POOLING_MODES |= {"max": "max", "max_tokens": "max", "lasttoken": "last"}
#: Modules whose effect the loader reproduces (the transformer itself, pooling, normalisation).
_APPLIED_MODULES = ("Transformer", "Pooling", "Normalize")


@dataclasses.dataclass(frozen=True)
class DeclaredSettings:
    """The settings a sentence-transformers folder declares, in ``ModelSpec`` terms.

    ``pooling`` is a ``ModelSpec.pooling`` value, or ``"unsupported:<modes>"`` for a mode this
    package does not compute (weighted mean, several modes concatenated). ``unapplied_modules``
    names modules after pooling that the loader does not reproduce (``Dense``, ...).
    """

    max_length: int | None = None
    pooling: str | None = None
    normalize: bool = False
    lowercase: bool = False
    unapplied_modules: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The declared values that are set, as JSON (for the metadata record)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, False, ())}
        if self.unapplied_modules:
            out["unapplied_modules"] = list(self.unapplied_modules)
        return out


def parse_declared(read_json: Callable[[str], Any]) -> DeclaredSettings | None:
    """The settings of a sentence-transformers folder, ``None`` for any other folder.

    ``read_json(relpath)`` returns a file's parsed JSON, or ``None`` when the folder lacks it.
    """
    modules = read_json(MODULES_FILE)
    if not isinstance(modules, list):
        return None
    max_length, lowercase, pooling, normalize, unapplied = None, False, None, False, []
    for module in modules:
        if not isinstance(module, dict):
            continue
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        path = str(module.get("path") or "").strip("/")
        if kind == "Transformer":
            config = read_json(_join(path, SENTENCE_BERT_CONFIG)) or {}
            length = config.get("max_seq_length")
            max_length = length if isinstance(length, int) and length > 0 else None
            lowercase = config.get("do_lower_case") is True
        elif kind == "Pooling":
            pooling = _pooling_of(read_json(_join(path, "config.json")) or {})
        elif kind == "Normalize":
            normalize = True
        elif kind not in _APPLIED_MODULES:
            unapplied.append(kind or "?")
    return DeclaredSettings(max_length, pooling, normalize, lowercase, tuple(unapplied))


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _pooling_of(config: dict[str, Any]) -> str | None:
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        modes = [mode]
    else:
        prefix = "pooling_mode_"
        modes = sorted(k[len(prefix) :] for k, v in config.items() if k.startswith(prefix) and v)
    if not modes:
        return None
    if len(modes) == 1 and modes[0] in POOLING_MODES:
        return POOLING_MODES[modes[0]]
    return "unsupported:" + "+".join(modes)


def declared_in_folder(folder: Path) -> DeclaredSettings | None:
    """:func:`parse_declared` of a local model folder."""

    def read_json(relpath: str) -> Any:
        path = folder / relpath
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            from ray_logme.errors import CheckpointError

            raise CheckpointError(
                f"model folder {str(folder)!r}: unreadable {relpath}: {exc}"
            ) from exc

    return parse_declared(read_json)


def declared_on_hub(repo: str, revision: str | None) -> DeclaredSettings | None:
    """:func:`parse_declared` of a Hub repo, through the same cache the loader reads.

    A file the repo lacks counts as not declared. So does one that is not cached while the Hub
    cannot be reached (logged): the loader on the same machine then decides the same way.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    def read_json(relpath: str) -> Any:
        try:
            path = hf_hub_download(repo, relpath, revision=revision)
        except LocalEntryNotFoundError:
            logger.info(
                "%s: %s is not cached and the Hub is unreachable: not declared", repo, relpath
            )
            return None
        except EntryNotFoundError:
            return None
        except (RepositoryNotFoundError, RevisionNotFoundError, HFValidationError):
            return None  # no such repo or revision: loading the model says so, with a hint
        return json.loads(Path(path).read_text(encoding="utf-8"))

    return parse_declared(read_json)


def declared_settings(spec: ModelSpec) -> DeclaredSettings | None:
    """What the folder or Hub repo of a ``hub: hf`` spec declares; ``None`` for timm models and
    for folders that declare nothing."""
    if spec.hub != "hf":
        return None
    folder = Path(os.path.expanduser(resolve_package_path(spec.name)))
    if folder.is_dir():
        return declared_in_folder(folder)
    if spec.name.startswith((".", "/", "~")) or os.path.isabs(spec.name):
        return None  # a missing folder: the loader says so
    return declared_on_hub(spec.name, spec.revision)


def applied_settings(spec: ModelSpec, declared: DeclaredSettings | None) -> dict[str, Any]:
    """The declared settings the loader applies: those the spec does not override.

    Keys ``max_length``, ``pooling``, ``normalize``, ``lowercase``; a setting that is not declared
    (or declared off) is absent, so a folder that declares nothing gives ``{}``.
    """
    if declared is None:
        return {}
    applied: dict[str, Any] = {}
    if spec.max_length is None and declared.max_length is not None:
        applied["max_length"] = declared.max_length
    if spec.pooling == "default" and declared.pooling is not None:
        applied["pooling"] = declared.pooling
    if spec.normalize is None and declared.normalize:
        applied["normalize"] = True
    if declared.lowercase:
        applied["lowercase"] = True
    return applied
