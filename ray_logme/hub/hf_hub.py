"""Hugging Face adapter: ``AutoModel`` + ``AutoTokenizer`` (text) or ``AutoImageProcessor`` (images).

Loads hub repo ids (pinned to the resolved commit) and local ``save_pretrained`` directories.
Weights must be safetensors unless ``allow_pickle`` (then ``weights_only=True``); repo code runs
only when the spec sets ``trust_remote_code`` *and* the run config allowlists that exact name.
Encoder-decoder models are reduced to their encoder. A sentence-transformers folder's declared
settings (truncation length, pooling, normalisation, lower-casing; see
:mod:`ray_logme.hub.declared`) are honoured unless the spec overrides them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

from ray_logme.errors import (
    CheckpointError,
    ModelLoadError,
    RemoteCodeNotAllowedError,
    TaskError,
    UnknownModelError,
)
from ray_logme.hub.base import (
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIXES,
    FeatureExtractor,
    count_parameters,
    dtype_name,
    hub_commit_of,
    resolve_device,
    resolve_dtype,
    seeded_init,
    sha256_of_files,
)
from ray_logme.hub.declared import (
    DeclaredSettings,
    applied_settings,
    declared_in_folder,
    declared_on_hub,
)
from ray_logme.hub.download import hub_download
from ray_logme.hub.images import to_rgb_images
from ray_logme.hub.metadata import ModelMetadata, fingerprint_of, to_json_able
from ray_logme.hub.spec import ModelSpec, resolve_package_path

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH_CAP = 512
_PROBE_TEXT = "a short probe sentence"
_PROBE_IMAGE = np.full((32, 32, 3), 127, dtype=np.uint8)
# Files in a local model folder that do not affect the features.
_IGNORED_SUFFIXES = (".md", ".lock", ".gitattributes")


@dataclasses.dataclass(frozen=True)
class HFSource:
    """A resolved Hugging Face model: where to load from and what it is.

    ``location`` is what ``from_pretrained`` gets (a local folder or a repo id); ``revision`` the
    resolved commit for repo ids; ``content_sha256`` hashes a local folder's files (weights,
    config, tokenizer); ``trust_remote_code`` is the decision after the allowlist check;
    ``declared`` what a sentence-transformers folder declares (``None`` for other models).
    """

    location: str
    is_local: bool
    revision: str | None
    content_sha256: str | None
    weights_sha256: str | None
    config: dict[str, Any]
    model_type: str
    modality: str
    trust_remote_code: bool
    declared: DeclaredSettings | None = None


def resolve_source(spec: ModelSpec, allow_remote_code: tuple[str, ...] = ()) -> HFSource:
    """Locate the model, read its config.json, decide modality and remote-code permission."""
    folder = Path(os.path.expanduser(resolve_package_path(spec.name)))
    if spec.convert is not None:  # weights in another layout: the converted folder (cached)
        from ray_logme.hub.convert import converted_folder

        folder = converted_folder(spec)
    if folder.is_dir():
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise CheckpointError(
                f"Hugging Face model {spec.name!r}: the folder has no config.json; give a folder "
                "written by model.save_pretrained (plus the tokenizer's or image processor's save_pretrained)"
            )
        location, is_local, revision = str(folder), True, None
    elif spec.name.startswith((".", "/", "~")) or os.path.isabs(spec.name):
        raise CheckpointError(f"Hugging Face model {spec.name!r}: local folder not found")
    else:
        config_path = Path(
            hub_download(
                f"Hugging Face model {spec.name!r}",
                spec.name,
                "config.json",
                spec.revision,
                offline_error=UnknownModelError,
            )
        )
        location, is_local = spec.name, False
        revision = hub_commit_of(config_path) or spec.revision
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"Hugging Face model {spec.name!r}: unreadable {str(config_path)!r}: {exc}"
        ) from exc
    if not isinstance(config, dict):
        raise CheckpointError(
            f"Hugging Face model {spec.name!r}: {str(config_path)!r} is not a JSON object"
        )

    model_type = str(config.get("model_type", ""))
    native = model_type in CONFIG_MAPPING_NAMES
    has_remote_code = bool(config.get("auto_map"))
    if not native and not has_remote_code:
        raise UnknownModelError(
            f"Hugging Face model {spec.name!r}: model_type {model_type!r} is unknown to transformers "
            f"{transformers.__version__} and the repo ships no code for it; upgrade transformers"
        )
    trust = _check_remote_code(
        spec, needs_remote_code=not native, allow_remote_code=allow_remote_code
    )
    content_sha256 = weights_sha256 = None
    if is_local:
        content_sha256 = sha256_of_files(_content_files(folder), root=folder)
        weight_files = [
            p
            for p in _content_files(folder)
            if p.suffix.lower() in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES
        ]
        weights_sha256 = sha256_of_files(weight_files, root=folder) if weight_files else None
    return HFSource(
        location=location,
        is_local=is_local,
        revision=revision,
        content_sha256=content_sha256,
        weights_sha256=weights_sha256,
        config=config,
        model_type=model_type,
        modality=_modality(spec, config, model_type, native),
        trust_remote_code=trust,
        declared=declared_in_folder(folder) if is_local else declared_on_hub(spec.name, revision),
    )


def _check_remote_code(
    spec: ModelSpec, needs_remote_code: bool, allow_remote_code: tuple[str, ...]
) -> bool:
    """Decide ``trust_remote_code``; refuse unless the spec asks for it and the name is allowlisted."""
    how = (
        f"set trust_remote_code: true in its model spec and add {spec.name!r} to allow_remote_code "
        "in the run config (only for code you have reviewed)"
    )
    if needs_remote_code and not spec.trust_remote_code:
        raise RemoteCodeNotAllowedError(
            f"Hugging Face model {spec.name!r} needs its repo's own Python code (auto_map), which is "
            f"not trusted by default; to run it, {how}"
        )
    if spec.trust_remote_code and spec.name not in allow_remote_code:
        raise RemoteCodeNotAllowedError(
            f"Hugging Face model {spec.name!r} sets trust_remote_code but is not in the run config's "
            f"allow_remote_code list {list(allow_remote_code)}; to run it, {how}"
        )
    return spec.trust_remote_code


def _content_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(
            Path(root) / name
            for name in names
            if not name.startswith(".") and not name.lower().endswith(_IGNORED_SUFFIXES)
        )
    return sorted(files)


def _modality(spec: ModelSpec, config: dict[str, Any], model_type: str, native: bool) -> str:
    """``"image"`` or ``"text"``: from transformers' processor/tokenizer registries when they know
    the model type, else from the config (``vocab_size`` -> text; ``num_channels``/``image_size``
    -> image). Multimodal (CLIP-style) models are refused."""
    image_like = native and model_type in IMAGE_PROCESSOR_MAPPING_NAMES
    text_like = native and model_type in TOKENIZER_MAPPING_NAMES
    if not image_like and not text_like:
        text_like = "vocab_size" in config
        image_like = not text_like and ("num_channels" in config or "image_size" in config)
    if (image_like and text_like) or ("text_config" in config and "vision_config" in config):
        raise ModelLoadError(
            f"Hugging Face model {spec.name!r} ({model_type}) is multimodal (text and image towers); "
            "ray-logme embeds with single-modality models only"
        )
    if image_like:
        return "image"
    if text_like:
        return "text"
    raise ModelLoadError(
        f"Hugging Face model {spec.name!r} ({model_type}): cannot tell whether it reads text or images"
    )


def _is_decoder_only(config: dict[str, Any], model_type: str) -> bool:
    if config.get("is_encoder_decoder"):
        return False
    if (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    ):
        return True
    if config.get("is_decoder"):
        return True
    architectures = config.get("architectures") or []
    return any(str(name).endswith("ForCausalLM") for name in architectures)


def _reraise_remote_code(spec: ModelSpec, exc: Exception) -> None:
    if "trust_remote_code" in str(exc):
        raise RemoteCodeNotAllowedError(
            f"Hugging Face model {spec.name!r}: a component (tokenizer/processor/model) needs the repo's "
            f"own code; set trust_remote_code: true and allowlist {spec.name!r} in allow_remote_code: {exc}"
        ) from exc


class HFTextPreprocessor:
    """Strings -> ``{"input_ids": int64[n, L], "attention_mask": int64[n, L], ...}``.

    Pads to the longest input of the batch (right side) and truncates at ``max_length`` tokens;
    ``lowercase`` lower-cases texts first (a sentence-transformers folder's ``do_lower_case``).
    ``declared`` is what the model's folder declares, recorded in :attr:`config`.
    """

    modality = "text"

    def __init__(
        self,
        model_name: str,
        tokenizer: Any,
        max_length: int,
        lowercase: bool = False,
        declared: dict[str, Any] | None = None,
    ) -> None:
        self.model_name = model_name
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.lowercase = lowercase
        self.declared = declared or {}
        self.input_names = tuple(tokenizer.model_input_names)

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def config(self) -> dict[str, Any]:
        tokenizer = self.tokenizer
        config = {
            "tokenizer": type(tokenizer).__name__,
            "vocab_size": len(tokenizer),
            "max_length": self.max_length,
            "truncation": True,
            "padding_side": tokenizer.padding_side,
            "pad_token": tokenizer.pad_token,
            "do_lower_case": getattr(tokenizer, "do_lower_case", None),
            "model_input_names": list(self.input_names),
        }
        if self.lowercase:
            config["lowercase_texts"] = True
        if self.declared:
            config["declared"] = self.declared
        return to_json_able(config)

    @property
    def input_size(self) -> tuple[int]:
        return (self.max_length,)

    def __call__(self, inputs) -> dict[str, np.ndarray]:
        if isinstance(inputs, str) or not hasattr(inputs, "__len__"):
            raise TaskError(
                f"text inputs must be a sequence of strings, got {type(inputs).__name__}"
            )
        texts = list(inputs)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TaskError(
                    f"text input {index}: expected str, got {type(text).__name__} "
                    f"(model {self.model_name!r} reads text)"
                )
        if not texts:
            return {name: np.zeros((0, 0), dtype=np.int64) for name in self.input_names}
        if self.lowercase:
            texts = [text.lower() for text in texts]
        encoded = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="np",
            return_attention_mask=True,
        )
        batch = {
            name: np.asarray(encoded[name], dtype=np.int64)
            for name in self.input_names
            if name in encoded
        }
        empty = np.flatnonzero(batch["attention_mask"].sum(axis=1) == 0)
        if empty.size:
            raise TaskError(
                f"text input {int(empty[0])} has no tokens after tokenization (empty text?)"
            )
        return batch

    def __repr__(self) -> str:
        return f"HFTextPreprocessor({self.model_name!r}, max_length={self.max_length})"


class HFImagePreprocessor:
    """Raw images -> ``{"pixel_values": float32[n, C, H, W]}`` with the model's image processor."""

    modality = "image"

    def __init__(self, model_name: str, image_processor: Any) -> None:
        self.model_name = model_name
        self.image_processor = image_processor
        self.input_names = ("pixel_values",)

    @property
    def config(self) -> dict[str, Any]:
        return to_json_able(self.image_processor.to_dict())

    def __call__(self, inputs) -> dict[str, np.ndarray]:
        images = to_rgb_images(inputs)
        if not images:
            return {"pixel_values": np.zeros((0, 3, 0, 0), dtype=np.float32)}
        encoded = self.image_processor(images=images, return_tensors="np")
        return {"pixel_values": np.asarray(encoded["pixel_values"], dtype=np.float32)}

    def __repr__(self) -> str:
        return f"HFImagePreprocessor({self.model_name!r}, {type(self.image_processor).__name__})"


def _build_preprocessor(
    spec: ModelSpec, source: HFSource
) -> HFTextPreprocessor | HFImagePreprocessor:
    kwargs = {"revision": source.revision, "trust_remote_code": source.trust_remote_code}
    try:
        if source.modality == "image":
            return HFImagePreprocessor(
                spec.display_name, AutoImageProcessor.from_pretrained(source.location, **kwargs)
            )
        tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
    except ValueError as exc:
        _reraise_remote_code(spec, exc)
        raise ModelLoadError(
            f"Hugging Face model {spec.name!r}: cannot load its preprocessor: {exc}"
        ) from exc
    except OSError as exc:
        what = "image processor" if source.modality == "image" else "tokenizer"
        raise CheckpointError(
            f"Hugging Face model {spec.name!r}: no usable {what} files (save it next to the model with "
            f"{what.replace(' ', '_')}.save_pretrained): {exc}"
        ) from exc
    if tokenizer.pad_token is None:
        # Decoder-only tokenizers often lack one; padded positions are masked out, so any
        # in-vocabulary token works (eos preferred, as the transformers docs suggest).
        tokenizer.pad_token = (
            tokenizer.eos_token or tokenizer.unk_token or tokenizer.convert_ids_to_tokens(0)
        )
    tokenizer.padding_side = "right"
    applied = applied_settings(spec, source.declared)
    return HFTextPreprocessor(
        spec.display_name,
        tokenizer,
        _max_length(spec, source, tokenizer),
        lowercase=applied.get("lowercase", False),
        declared=source.declared.to_json() if source.declared else None,
    )


def _max_length(spec: ModelSpec, source: HFSource, tokenizer: Any) -> int:
    """Truncation length: ``spec.max_length``, else the length the model declares (capped at its
    position embeddings), else the smallest of the tokenizer's limit, the model's position
    embeddings and 512. A ``max_length`` beyond the position embeddings is an error now rather
    than an index error on the first long text."""
    positions = source.config.get("max_position_embeddings") or source.config.get("n_positions")
    positions = positions if isinstance(positions, int) and positions > 0 else None
    if spec.max_length is not None:
        if positions is not None and spec.max_length > positions:
            raise ModelLoadError(
                f"Hugging Face model {spec.name!r}: max_length {spec.max_length} exceeds its "
                f"{positions} position embeddings; use max_length <= {positions}"
            )
        return spec.max_length
    declared = applied_settings(spec, source.declared).get("max_length")
    if declared is not None:
        return min(declared, positions) if positions is not None else declared
    limits = [DEFAULT_MAX_LENGTH_CAP]
    model_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_limit, int) and 0 < model_limit < 1_000_000:
        limits.append(model_limit)
    if positions is not None:
        limits.append(positions)
    return min(limits)


def load_hf_preprocessor(
    spec: ModelSpec, allow_remote_code: tuple[str, ...] = ()
) -> HFTextPreprocessor | HFImagePreprocessor:
    """Cheap: tokenizer or image processor only, no model weights."""
    return _build_preprocessor(spec, resolve_source(spec, allow_remote_code))


class HFExtractor(FeatureExtractor):
    """Hugging Face ``AutoModel`` (or its encoder) -> pooled features ``float32[n, d]``.

    Poolings over ``last_hidden_state`` ``h``: ``mean`` (attention-mask weighted mean for text,
    mean of patch tokens for ViT-style models, spatial mean for feature maps), ``cls`` (first
    token), ``last`` (last non-padding token, decoder-only models), ``max`` (masked max),
    ``pooler`` (the model's ``pooler_output``). With ``normalize`` each pooled vector is scaled to
    unit L2 norm.
    """

    def __init__(
        self,
        model,
        preprocess,
        device,
        dtype,
        pooling: str,
        patch_size: Any,
        normalize: bool = False,
        layers: str = "last",
    ) -> None:
        super().__init__(model, preprocess, device, dtype, preprocess.input_names)
        self.pooling = pooling
        self.patch_size = patch_size
        self.normalize = normalize
        self.layers = layers

    @property
    def required_inputs(self) -> tuple[str, ...]:
        if self.modality == "text":
            return ("input_ids", "attention_mask")
        return ("pixel_values",)

    def _stack_ragged(self, name: str, column: np.ndarray) -> np.ndarray:
        if self.modality != "text":
            return super()._stack_ragged(name, column)
        rows = [np.asarray(row).reshape(-1) for row in column]
        length = max(len(row) for row in rows)
        pad_value = self.preprocess.pad_token_id if name == "input_ids" else 0
        stacked = np.full((len(rows), length), pad_value, dtype=np.int64)
        for index, row in enumerate(rows):
            stacked[index, : len(row)] = row
        return stacked

    def _forward(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        pooled = self._layer_mean(tensors) if self.layers == "mean" else self._pooled(tensors)
        return torch.nn.functional.normalize(pooled, dim=1) if self.normalize else pooled

    def _pooled(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        outputs = self.model(**tensors, return_dict=True)
        if self.pooling == "pooler":
            pooled = getattr(outputs, "pooler_output", None)
            if pooled is None:
                raise ModelLoadError(
                    f"Hugging Face model {self.preprocess.model_name!r} has no pooler_output; "
                    "use pooling: mean or cls"
                )
            return pooled.reshape(pooled.shape[0], -1)
        hidden = outputs.last_hidden_state
        if self.modality == "text":
            return pool_tokens(hidden, tensors["attention_mask"], self.pooling)
        return pool_vision(
            hidden, self.pooling, self.num_prefix_tokens(hidden, tensors["pixel_values"])
        )

    def _pool(self, hidden: torch.Tensor, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        # A pooler exists for the last layer only: every layer is then mean-pooled.
        pooling = "mean" if self.pooling == "pooler" else self.pooling
        if self.modality == "text":
            return pool_tokens(hidden, tensors["attention_mask"], pooling)
        return pool_vision(hidden, pooling, self.num_prefix_tokens(hidden, tensors["pixel_values"]))

    def _layer_mean(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """``layers: mean``: the mean over the hidden layers (block outputs, embeddings left out)
        of each layer pooled as the last one would be: ``float[b, d]``."""
        outputs = self.model(**tensors, return_dict=True, output_hidden_states=True)
        states = getattr(outputs, "hidden_states", None)
        if not states or len(states) < 2:
            raise ModelLoadError(
                f"Hugging Face model {self.preprocess.model_name!r} returns no hidden states; "
                "use layers: last"
            )
        pooled = [self._pool(state, tensors) for state in states[1:]]
        widths = {tuple(p.shape[1:]) for p in pooled}
        if len(widths) > 1:
            raise ModelLoadError(
                f"Hugging Face model {self.preprocess.model_name!r} has hidden layers of "
                f"different widths {sorted(widths)}; layers: mean needs equal widths"
            )
        return torch.stack(pooled).mean(dim=0)

    def num_prefix_tokens(self, hidden: torch.Tensor, pixels: torch.Tensor) -> int | None:
        """Class/register tokens before the patch tokens of a ViT-style output, else None."""
        if hidden.ndim != 3 or self.patch_size is None:
            return None
        patch_h, patch_w = (
            (self.patch_size, self.patch_size)
            if isinstance(self.patch_size, int)
            else self.patch_size
        )
        num_patches = (pixels.shape[-2] // patch_h) * (pixels.shape[-1] // patch_w)
        prefix = hidden.shape[1] - num_patches
        return prefix if prefix >= 0 else None


def pool_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Text token states ``[n, L, d]`` + mask ``[n, L]`` (1 = real token) -> ``[n, d]`` float32."""
    hidden = hidden.float()
    mask = attention_mask.to(hidden.device).bool()
    if pooling == "mean":
        weights = mask.unsqueeze(-1).float()
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask, positions, torch.zeros_like(positions)).amax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if pooling == "max":
        return hidden.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
    raise ModelLoadError(f"pooling {pooling!r} is not defined for text models")


def pool_vision(hidden: torch.Tensor, pooling: str, num_prefix_tokens: int | None) -> torch.Tensor:
    """Vision outputs -> ``[n, d]`` float32.

    ``hidden``: tokens ``[n, T, d]`` (first ``num_prefix_tokens`` are CLS/register tokens) or a
    feature map ``[n, C, H, W]``.
    """
    hidden = hidden.float()
    if hidden.ndim == 4:
        if pooling not in ("mean", "max"):
            raise ModelLoadError(
                f"pooling {pooling!r} needs tokens; this model gives feature maps (use mean, max or pooler)"
            )
        return hidden.mean(dim=(2, 3)) if pooling == "mean" else hidden.amax(dim=(2, 3))
    if hidden.ndim != 3:
        raise ModelLoadError(f"cannot pool vision output of shape {tuple(hidden.shape)}")
    if pooling == "cls":
        if not num_prefix_tokens:
            raise ModelLoadError(
                "this vision model has no CLS token; use pooling: mean, max or pooler"
            )
        return hidden[:, 0]
    if pooling in ("mean", "max"):
        patches = hidden[:, num_prefix_tokens or 0 :]
        return patches.mean(dim=1) if pooling == "mean" else patches.amax(dim=1)
    raise ModelLoadError(f"pooling {pooling!r} is not defined for vision models")


def _load_model(spec: ModelSpec, source: HFSource, load_dtype: torch.dtype) -> torch.nn.Module:
    common = {"revision": source.revision, "trust_remote_code": source.trust_remote_code}
    try:
        if spec.pretrained:
            _check_local_weight_format(spec, source)
            model = AutoModel.from_pretrained(
                source.location,
                use_safetensors=None if spec.allow_pickle else True,
                weights_only=True,
                dtype=load_dtype,
                **common,
            )
        else:
            config = AutoConfig.from_pretrained(source.location, **common)
            with seeded_init(spec.init_seed):
                model = AutoModel.from_config(config, trust_remote_code=source.trust_remote_code)
            model = model.to(load_dtype)
    except ValueError as exc:
        _reraise_remote_code(spec, exc)
        raise ModelLoadError(f"Hugging Face model {spec.name!r} could not be built: {exc}") from exc
    except OSError as exc:
        hint = (
            ""
            if spec.allow_pickle
            else " (only safetensors weights are loaded unless allow_pickle: true)"
        )
        raise CheckpointError(
            f"Hugging Face model {spec.name!r}: weights could not be loaded{hint}: {exc}"
        ) from exc
    except Exception as exc:  # corrupt safetensors headers, unpickling refusals, shape mismatches
        raise CheckpointError(
            f"Hugging Face model {spec.name!r}: weights could not be loaded: {type(exc).__name__}: {exc}"
        ) from exc
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        model = model.get_encoder()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    return model


def _check_local_weight_format(spec: ModelSpec, source: HFSource) -> None:
    if not source.is_local or spec.allow_pickle:
        return
    files = _content_files(Path(source.location))
    if any(p.suffix.lower() in SAFETENSORS_SUFFIXES for p in files):
        return
    pickles = [p.name for p in files if p.suffix.lower() in PICKLE_SUFFIXES]
    if pickles:
        raise CheckpointError(
            f"Hugging Face model {spec.name!r} has only pickle weights {pickles}, which can run code when "
            "loaded; re-save with model.save_pretrained (safetensors) or set allow_pickle: true (then "
            "loaded with weights_only=True)"
        )
    raise CheckpointError(
        f"Hugging Face model {spec.name!r}: no weight files in {source.location!r}"
    )


def _default_pooling(spec: ModelSpec, source: HFSource, extractor: HFExtractor) -> str:
    if source.modality == "text":
        return "last" if _is_decoder_only(source.config, source.model_type) else "mean"
    batch = extractor.preprocess([_PROBE_IMAGE])
    pixels = torch.from_numpy(batch["pixel_values"]).to(extractor.device)
    with torch.inference_mode(), extractor._autocast():
        outputs = extractor.model(pixel_values=pixels, return_dict=True)
    hidden = outputs.last_hidden_state
    if hidden.ndim == 3 and extractor.num_prefix_tokens(hidden, pixels):
        return "cls"
    if getattr(outputs, "pooler_output", None) is not None:
        return "pooler"
    return "mean"


def _declared_pooling(spec: ModelSpec, pooling: str) -> str:
    """The pooling a sentence-transformers folder declares, if this package computes it."""
    if pooling.startswith("unsupported:"):
        raise ModelLoadError(
            f"Hugging Face model {spec.name!r} declares sentence-transformers pooling "
            f"{pooling.removeprefix('unsupported:')!r}, which ray-logme does not compute; set "
            "pooling (mean, cls, max or last) in its model spec to choose one"
        )
    return pooling


def load_hf_extractor(
    spec: ModelSpec, device: str | torch.device = "auto", allow_remote_code: tuple[str, ...] = ()
) -> HFExtractor:
    """Build the Hugging Face model with its weights, on ``device``, ready to extract."""
    source = resolve_source(spec, allow_remote_code)
    preprocess = _build_preprocessor(spec, source)
    torch_device = resolve_device(device)
    compute_dtype = resolve_dtype(spec.dtype, torch_device)
    # Big models: keep the weights in the compute dtype on GPUs; CPUs keep float32 weights.
    load_dtype = compute_dtype if torch_device.type == "cuda" else torch.float32
    model = _load_model(spec, source, load_dtype).to(torch_device).eval()

    patch_size = source.config.get("patch_size") if source.modality == "image" else None
    applied = applied_settings(spec, source.declared)
    normalize = spec.normalize if spec.normalize is not None else applied.get("normalize", False)
    extractor = HFExtractor(
        model,
        preprocess,
        torch_device,
        compute_dtype,
        spec.pooling,
        patch_size,
        normalize,
        spec.layers,
    )
    if source.declared and source.declared.unapplied_modules:
        logger.warning(
            "Hugging Face model %s: its sentence-transformers modules %s are not applied; "
            "features are the pooled transformer output",
            spec.display_name,
            list(source.declared.unapplied_modules),
        )
    try:
        if "pooling" in applied:
            extractor.pooling = _declared_pooling(spec, applied["pooling"])
        elif spec.pooling == "default":
            extractor.pooling = _default_pooling(spec, source, extractor)
        feature_dim = extractor._probe_feature_dim(
            _PROBE_IMAGE if source.modality == "image" else _PROBE_TEXT
        )
    except ModelLoadError:
        raise
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"Hugging Face model {spec.name!r} failed on a probe input: {exc}"
        ) from exc

    if source.modality == "image":
        probe = preprocess([_PROBE_IMAGE])["pixel_values"]
        input_size = tuple(int(v) for v in probe.shape[1:])
    else:
        input_size = preprocess.input_size
    if spec.pretrained:
        revision = (
            source.revision
            if not source.is_local
            else (source.weights_sha256 or source.content_sha256)
        )
        weights_identity: Any = {
            "source": source.revision if not source.is_local else source.content_sha256
        }
    else:
        revision = "random-init"
        weights_identity = {
            "config_source": source.revision if not source.is_local else source.content_sha256,
            "random_init_seed": spec.init_seed,
            "transformers": transformers.__version__,
            "torch": torch.__version__.split("+")[0],
        }
    architecture = f"{source.model_type}:{type(model).__name__}"
    fingerprint = fingerprint_of(
        {
            "hub": "hf",
            "name": spec.name if not source.is_local else None,
            "architecture": architecture,
            "weights": weights_identity,
            "preprocessing": preprocess.config,
            "pooling": extractor.pooling,
            "dtype": spec.dtype,
            **({"normalize": True} if normalize else {}),
        }
    )
    extractor.metadata = ModelMetadata(
        name=spec.display_name,
        hub="hf",
        architecture=architecture,
        modality=source.modality,
        revision=revision or "unknown",
        weights_sha256=source.weights_sha256 if spec.pretrained else None,
        feature_dim=feature_dim,
        num_params=count_parameters(model),
        input_size=input_size,
        preprocessing=preprocess.config,
        pooling=extractor.pooling,
        dtype=dtype_name(compute_dtype),
        device=str(torch_device),
        fingerprint=fingerprint,
        tags=dict(spec.tags),
    )
    logger.info(
        "loaded Hugging Face %s (%s, %s, d=%d, %.1fM params) on %s",
        spec.display_name,
        source.modality,
        (revision or "?")[:12],
        feature_dim,
        extractor.metadata.num_params / 1e6,
        torch_device,
    )
    return extractor
