"""Weights shipped in another layout -> a cached safetensors model folder the normal loaders read.

A :class:`~ray_logme.hub.spec.ModelSpec` with a ``convert:`` section names a checkpoint that
its hub cannot load as it is: a torch state dict whose key names differ from the architecture's
(mapped by name after ``strip_prefix``, by position, or by an explicit map), a safetensors file
with other names, or the initializers of an ONNX graph exported from PyTorch. Entry point::

    folder = converted_folder(spec)   # converts on first use, then returns the cached folder

The conversion builds the architecture the spec names (timm: ``timm.create_model(name)``;
Hugging Face: the ``config.json`` of the folder ``name``, with ``convert.config`` overrides),
fills **every** tensor of its state dict from **exactly one** source tensor of the same shape,
and writes what its hub's loader reads: timm's ``config.json`` + ``model.safetensors``
(``save_for_hf``), or ``save_pretrained``'s files plus the base folder's tokenizer or image
processor files. ``conversion.json`` beside them records the source file's sha256 and name, the
recipe and the tensor map. A conversion that leaves a tensor unfilled, a source tensor unused
(not in ``ignore``) or a shape unequal is refused with a :class:`ConversionError` naming the
tensors; nothing is written.

Safety: pickle (``format: torch``) is read only when the spec sets ``allow_pickle``, and then
with ``torch.load(weights_only=True)``; ONNX is parsed as data (no operator runs) and external
data files are refused.

ONNX: torch's exporter keeps the names of parameters it uses directly (biases, norms,
embeddings) but stores each ``nn.Linear`` weight transposed, as an anonymous ``onnx::MatMul_*``
initializer. Such a weight takes the name of the bias that the ``Add`` after its ``MatMul``
adds (``...dense.bias`` -> ``...dense.weight``) and is transposed back.

Cache: ``$RAY_LOGME_CACHE/converted/`` (default ``~/.cache/ray-logme/converted/``), one folder
per (source sha256, recipe, architecture, library versions), written to a temporary folder and
renamed into place, so concurrent workers never see half a folder. The folder is deterministic:
its content hash (:func:`ray_logme.hub.identity.folder_content_hash`) is the model's weight
identity in its content key, the same on every machine.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray_logme.errors import CheckpointError
from ray_logme.hub.identity import file_sha256, folder_content_hash, library_versions
from ray_logme.hub.spec import ConvertSpec, ModelSpec, resolve_package_path

logger = logging.getLogger(__name__)

#: Bump when the converter writes different bytes for the same input (keys then change).
CONVERTER_VERSION = 1
CACHE_ENV = "RAY_LOGME_CACHE"
CONVERSION_RECORD = "conversion.json"
#: Files of a Hugging Face base folder that describe its preprocessing (copied when converting).
HF_PREPROCESSING_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "preprocessor_config.json",
)
_LISTED_NAMES = 20


class ConversionError(CheckpointError):
    """A checkpoint in another layout does not map exactly onto the model (the message names
    the tensors)."""


@dataclass(frozen=True)
class SourceTensors:
    """Tensors read from a source file, in the file's order: ``name -> torch.Tensor``."""

    tensors: dict[str, Any]
    ordered: bool  # whether the order is meaningful (a torch state dict's insertion order)
    renamed: dict[str, str]  # ONNX: new name -> original initializer name


def cache_root() -> Path:
    """Where converted folders live: ``$RAY_LOGME_CACHE/converted``, else
    ``$XDG_CACHE_HOME/ray-logme/converted``, else ``~/.cache/ray-logme/converted``."""
    base = os.environ.get(CACHE_ENV)
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "ray-logme")
    return Path(base) / "converted"


def source_path(spec: ModelSpec) -> Path:
    """The source weight file of a converted spec (``pkg:`` resolved); ``CheckpointError`` if
    it does not exist."""
    assert spec.convert is not None
    path = Path(os.path.expanduser(resolve_package_path(spec.convert.weights)))
    if not path.is_file():
        raise CheckpointError(
            f"model {spec.display_name!r}: convert.weights {spec.convert.weights!r} is not a file "
            f"({str(path)!r})"
        )
    return path


def converted_folder(spec: ModelSpec) -> Path:
    """The cached converted model folder of ``spec`` (converting it on first use).

    Raises :class:`ConversionError` (a :class:`CheckpointError`) when the tensors do not map
    exactly, and :class:`CheckpointError` for a missing or unreadable source.
    """
    if spec.convert is None:
        raise ValueError(f"model {spec.display_name!r} has no convert section")
    source = source_path(spec)
    folder = cache_root() / f"{_stem(source)}-{_cache_key(spec, source)[:16]}"
    if (folder / CONVERSION_RECORD).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        _convert_into(spec, source, staging)
        for path in (staging, *staging.iterdir()):  # mkdtemp and some writers make them private
            path.chmod(0o755 if path.is_dir() else 0o644)
        try:
            os.replace(staging, folder)
        except OSError:
            if not (folder / CONVERSION_RECORD).is_file():  # not a concurrent twin: a real error
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "converted %s into %s (content %s)",
        spec.convert.weights,
        folder,
        folder_content_hash(folder, what=spec.display_name)[:12],
    )
    return folder


def _stem(path: Path) -> str:
    stem = path.name.rsplit(".", 1)[0]
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in stem)[:60] or "converted"


def _cache_key(spec: ModelSpec, source: Path) -> str:
    """sha256 over everything the converted folder depends on."""
    assert spec.convert is not None
    base = None
    if spec.hub == "hf":
        base_folder = _hf_base_folder(spec)
        base = folder_content_hash(base_folder, what=f"model {spec.display_name!r}")
    record = {
        "converter": CONVERTER_VERSION,
        "hub": spec.hub,
        "architecture": spec.name if spec.hub == "timm" else None,
        "timm_kwargs": spec.timm_kwargs,
        "base": base,
        "init_seed": spec.init_seed,
        "recipe": spec.convert.recipe(),
        "source_sha256": file_sha256(str(source)),
        "libraries": library_versions(),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _hf_base_folder(spec: ModelSpec) -> Path:
    folder = Path(os.path.expanduser(resolve_package_path(spec.name)))
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"model {spec.display_name!r}: a converted Hugging Face model takes its config.json "
            f"and tokenizer from the local folder given as its name; {spec.name!r} is not a folder "
            "with config.json"
        )
    return folder


# --------------------------------------------------------------------------------------------
# Reading the source


def read_source(spec: ModelSpec, path: Path) -> SourceTensors:
    """The source file's tensors (``format`` resolved from the spec)."""
    assert spec.convert is not None
    reader = _READERS[spec.convert.resolved_format]
    try:
        return reader(spec, path)
    except CheckpointError:
        raise
    except Exception as exc:  # unpickling refusals, corrupt files, protobuf errors
        raise CheckpointError(
            f"model {spec.display_name!r}: cannot read {str(path)!r} as "
            f"{spec.convert.resolved_format}: {type(exc).__name__}: {exc}"
        ) from exc


def _read_torch(spec: ModelSpec, path: Path) -> SourceTensors:
    import torch

    if not spec.allow_pickle:  # the spec refuses this too; a second lock on the same door
        raise CheckpointError(f"model {spec.display_name!r}: reading pickle needs allow_pickle")
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    entry = spec.convert.entry if spec.convert else None
    if entry is not None:
        if not isinstance(loaded, Mapping) or entry not in loaded:
            keys = list(loaded)[:10] if isinstance(loaded, Mapping) else type(loaded).__name__
            raise CheckpointError(
                f"model {spec.display_name!r}: {path.name} has no entry {entry!r} (it has {keys})"
            )
        loaded = loaded[entry]
    if not isinstance(loaded, Mapping):
        raise CheckpointError(
            f"model {spec.display_name!r}: {path.name} holds a {type(loaded).__name__}, not a "
            "state dict; set convert.entry to the key that holds it"
        )
    tensors = {}
    for name, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"model {spec.display_name!r}: {path.name}: entry {name!r} is a "
                f"{type(value).__name__}, not a tensor; set convert.entry to the state dict's key"
            )
        tensors[str(name)] = value
    return SourceTensors(tensors, ordered=True, renamed={})


def _read_safetensors(spec: ModelSpec, path: Path) -> SourceTensors:
    from safetensors.torch import load_file

    return SourceTensors(dict(load_file(str(path))), ordered=False, renamed={})


def _read_onnx(spec: ModelSpec, path: Path) -> SourceTensors:
    import onnx
    import torch
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    external = [
        init.name for init in graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        raise CheckpointError(
            f"model {spec.display_name!r}: {path.name} keeps initializers in external files "
            f"({_listing(external)}); ray-logme converts self-contained ONNX files only"
        )
    initializer_names = {init.name for init in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    weight_names: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        weight = next((n for n in node.input if n in initializer_names and _is_anonymous(n)), None)
        if weight is None:
            continue
        for add in consumers.get(node.output[0], []):
            if add.op_type != "Add":
                continue
            bias = next((n for n in add.input if n in initializer_names), None)
            if bias is not None and bias.endswith(".bias") and not _is_anonymous(bias):
                weight_names[weight] = bias.removesuffix("bias") + "weight"
    tensors: dict[str, Any] = {}
    renamed: dict[str, str] = {}
    for init in graph.initializer:
        array = numpy_helper.to_array(init).copy()
        name = init.name
        if name in weight_names:
            array = array.T.copy()  # MatMul computes x @ W.T of nn.Linear's W
            name = weight_names[name]
            renamed[name] = init.name
        if name in tensors:
            raise ConversionError(
                f"model {spec.display_name!r}: {path.name}: two initializers map to {name!r}"
            )
        tensors[name] = torch.from_numpy(array)
    return SourceTensors(tensors, ordered=False, renamed=renamed)


def _is_anonymous(name: str) -> bool:
    return name.startswith("onnx::") or "." not in name


_READERS = {"torch": _read_torch, "safetensors": _read_safetensors, "onnx": _read_onnx}


# --------------------------------------------------------------------------------------------
# Mapping source tensors onto the model


def map_tensors(
    recipe: ConvertSpec,
    source: SourceTensors,
    target: Mapping[str, Any],
    *,
    what: str,
) -> tuple[dict[str, str], list[str]]:
    """``{target name: source name}`` covering every target tensor, and the target tensors left
    at their initialisation (``init_unmapped``).

    ``target`` maps the model's state-dict names to tensors (in state-dict order). Raises
    :class:`ConversionError` naming every unfilled target, unused source, shape mismatch or
    source used twice.
    """
    sources = {
        _strip(name, recipe.strip_prefix): name
        for name in source.tensors
        if not _matches(name, recipe.ignore)
        and not _matches(_strip(name, recipe.strip_prefix), recipe.ignore)
    }
    kept_init = [name for name in target if _matches(name, recipe.init_unmapped)]
    wanted = [name for name in target if name not in kept_init]
    mapping: dict[str, str] = {}
    problems: list[str] = []
    if recipe.map == "positional":
        if not source.ordered:
            raise ConversionError(
                f"{what}: map: positional needs a source whose tensors are ordered (a torch "
                f"state dict); this {recipe.resolved_format} file is not; map by names instead"
            )
        source_order = list(sources)
        if len(source_order) != len(wanted):
            problems.append(
                f"the source has {len(source_order)} tensors and the model {len(wanted)}: a "
                "positional map pairs them one to one"
            )
        for target_name, source_key in zip(wanted, source_order, strict=False):
            mapping[target_name] = sources[source_key]
        extra_targets = wanted[len(source_order) :]
        extra_sources = [sources[key] for key in source_order[len(wanted) :]]
    else:
        explicit = recipe.map if isinstance(recipe.map, dict) else {}
        unknown = sorted(set(explicit) - set(target))
        if unknown:
            problems.append(
                f"convert.map names tensors the model does not have: {_listing(unknown)}"
            )
        missing_sources = sorted(
            src for src in explicit.values() if src not in source.tensors and src not in sources
        )
        if missing_sources:
            problems.append(f"convert.map names source tensors absent: {_listing(missing_sources)}")
        for target_name in wanted:
            if target_name in explicit:
                chosen = explicit[target_name]
                mapping[target_name] = sources.get(chosen, chosen)
            elif target_name in sources:
                mapping[target_name] = sources[target_name]
        extra_targets = [name for name in wanted if name not in mapping]
        used = set(mapping.values())
        extra_sources = [orig for orig in sources.values() if orig not in used]
    if extra_targets:
        problems.append(f"model tensors with no source tensor: {_listing(extra_targets)}")
    if extra_sources:
        problems.append(
            f"source tensors that fill no model tensor: {_listing(extra_sources)} "
            "(list them under convert.ignore to drop them)"
        )
    seen: dict[str, str] = {}
    for target_name, source_name in mapping.items():
        if source_name in seen and source_name in source.tensors:
            problems.append(
                f"source {source_name!r} fills both {seen[source_name]!r} and {target_name!r}"
            )
        seen[source_name] = target_name
    mismatched = [
        f"{target_name} {tuple(target[target_name].shape)} <- {source_name} "
        f"{tuple(source.tensors[source_name].shape)}"
        for target_name, source_name in mapping.items()
        if source_name in source.tensors
        and tuple(source.tensors[source_name].shape) != tuple(target[target_name].shape)
    ]
    if mismatched:
        problems.append(f"shapes differ: {_listing(mismatched)}")
    if problems:
        raise ConversionError(
            f"{what}: refused, the tensors do not map exactly: " + "; ".join(problems)
        )
    return mapping, kept_init


def _strip(name: str, prefix: str) -> str:
    return name[len(prefix) :] if prefix and name.startswith(prefix) else name


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _listing(names: list[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:_LISTED_NAMES])
    more = len(names) - _LISTED_NAMES
    return f"{shown}{f' and {more} more' if more > 0 else ''} ({len(names)})"


def _filled_state(
    source: SourceTensors, target: Mapping[str, Any], mapping: Mapping[str, str], what: str
) -> dict[str, Any]:
    """The new state dict: each target tensor's value from its source, in the target's dtype."""
    state = dict(target)  # init_unmapped tensors keep their (seeded) initial values
    for target_name, source_name in mapping.items():
        value = source.tensors[source_name]
        reference = target[target_name]
        if value.dtype != reference.dtype:
            if value.is_floating_point() != reference.is_floating_point():
                raise ConversionError(
                    f"{what}: {source_name!r} is {value.dtype} but {target_name!r} is "
                    f"{reference.dtype}"
                )
            value = value.to(reference.dtype)
        state[target_name] = value.contiguous()
    return state


# --------------------------------------------------------------------------------------------
# Writing the converted folder


def _convert_into(spec: ModelSpec, source_file: Path, out: Path) -> None:
    assert spec.convert is not None
    what = f"model {spec.display_name!r} (convert {spec.convert.weights!r})"
    source = read_source(spec, source_file)
    writer = _timm_convert if spec.hub == "timm" else _hf_convert
    mapping, kept_init = writer(spec, source, out, what)
    record = {
        "converter": CONVERTER_VERSION,
        "source": {"file": source_file.name, "sha256": file_sha256(str(source_file))},
        "architecture": spec.name if spec.hub == "timm" else None,
        "recipe": spec.convert.recipe(),
        "initialised": kept_init,
        "tensors": [
            [target, source.renamed.get(src, src), src in source.renamed]
            for target, src in mapping.items()
        ],
    }
    (out / CONVERSION_RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def _timm_convert(
    spec: ModelSpec, source: SourceTensors, out: Path, what: str
) -> tuple[dict[str, str], list[str]]:
    import timm
    from timm.models import save_for_hf

    from ray_logme.hub.base import seeded_init

    try:
        with seeded_init(spec.init_seed):
            model = timm.create_model(spec.name, pretrained=False, **spec.timm_kwargs)
    except Exception as exc:
        raise CheckpointError(f"{what}: timm cannot build {spec.name!r}: {exc}") from exc
    target = model.state_dict()
    mapping, kept_init = map_tensors(spec.convert, source, target, what=what)
    model.load_state_dict(_filled_state(source, target, mapping, what), strict=True)
    save_for_hf(model, str(out), safe_serialization=True)
    return mapping, kept_init


def _hf_convert(
    spec: ModelSpec, source: SourceTensors, out: Path, what: str
) -> tuple[dict[str, str], list[str]]:
    from transformers import AutoConfig, AutoModel

    from ray_logme.hub.base import seeded_init

    base = _hf_base_folder(spec)
    try:
        config = AutoConfig.from_pretrained(str(base), **spec.convert.config)
        with seeded_init(spec.init_seed):
            model = AutoModel.from_config(config)
    except Exception as exc:
        raise CheckpointError(f"{what}: cannot build the model of {spec.name!r}: {exc}") from exc
    target = model.state_dict()
    mapping, kept_init = map_tensors(spec.convert, source, target, what=what)
    model.load_state_dict(_filled_state(source, target, mapping, what), strict=True)
    model.save_pretrained(str(out), safe_serialization=True)
    # The release that wrote the folder does not change the weights: keep it out of the
    # content hash, so a transformers patch release does not re-key (and re-extract) the model.
    config_path = out / "config.json"
    written = json.loads(config_path.read_text())
    written.pop("transformers_version", None)
    config_path.write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")
    for name in HF_PREPROCESSING_FILES:
        if (base / name).is_file():
            shutil.copyfile(base / name, out / name)
    return mapping, kept_init
