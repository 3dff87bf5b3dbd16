"""timm adapter: any timm image model (registry name, ``hf-hub:`` repo, local dir, checkpoint file).

Local dirs may be named by path, ``local-dir:<path>``, or ``pkg:<package>/<dir>`` (also
``local-dir:pkg:<package>/<dir>``) for a folder shipped inside an installed Python package, such
as the default zoo ``pkg:ray_logme/zoo/shapes``. A spec with ``convert:`` loads the folder
:mod:`ray_logme.hub.convert` made from weights in another layout.

The model is built headless (``num_classes=0``), so ``model(x)`` returns timm's own pooled
pre-logits; the preprocessing is resolved from the model (``resolve_model_data_config`` +
eval ``create_transform``). Weights always come from a local file: hub weights are fetched into
the Hugging Face cache first, then loaded by timm's own loader (safetensors, or pickle with
``weights_only=True`` when ``allow_pickle`` is set), so their sha256 can be part of the
fingerprint.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from timm.data import create_transform, resolve_model_data_config
from timm.models import (
    get_pretrained_cfg,
    is_model,
    list_models,
    list_pretrained,
    split_model_name_tag,
)

from ray_logme.errors import CheckpointError, ModelLoadError, UnknownModelError
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
from ray_logme.hub.download import hub_download
from ray_logme.hub.images import to_rgb_images
from ray_logme.hub.metadata import PIXELS_UINT8, ModelMetadata, fingerprint_of, to_json_able
from ray_logme.hub.spec import PACKAGE_PREFIX, ModelSpec, resolve_package_path

logger = logging.getLogger(__name__)

_LOCAL_PREFIX = "local-dir:"
_HUB_PREFIXES = ("hf-hub:", "hf_hub:")
_DEFAULT_HUB_WEIGHTS = "pytorch_model.bin"
_SAFE_ALTERNATIVES = {
    "pytorch_model.bin": "model.safetensors",
    "open_clip_pytorch_model.bin": "open_clip_model.safetensors",
}
_PROBE_IMAGE = np.full((32, 32, 3), 127, dtype=np.uint8)


@dataclasses.dataclass(frozen=True)
class TimmSource:
    """Where a timm model's architecture, config and weights come from.

    ``create_name`` is what ``timm.create_model`` gets (a registry name with tag, or
    ``local-dir:<folder with config.json>``); ``hub_repo`` is set for ``hf-hub:`` names and
    registry weights on the Hub; ``local_dir`` for folders (given or downloaded).
    """

    kind: str  # "registry" | "local-dir" | "hf-hub"
    create_name: str
    architecture: str
    hub_repo: str | None = None
    hub_revision: str | None = None
    local_dir: Path | None = None


def resolve_source(spec: ModelSpec) -> TimmSource:
    """Classify ``spec.name`` and check it exists; raises ``UnknownModelError``/``CheckpointError``."""
    name = spec.name
    if spec.convert is not None:  # weights in another layout: the converted folder (cached)
        from ray_logme.hub.convert import converted_folder

        return _local_dir_source(spec, converted_folder(spec))
    if name.startswith((_LOCAL_PREFIX, PACKAGE_PREFIX)) or _looks_like_existing_dir(name):
        # ``pkg:<package>/<dir>`` (optionally after ``local-dir:``): a folder an installed Python
        # package ships, e.g. ``pkg:ray_logme/zoo/shapes``, the same on every machine.
        folder = resolve_package_path(name.removeprefix(_LOCAL_PREFIX))
        return _local_dir_source(spec, Path(os.path.expanduser(folder)))
    if name.startswith(_HUB_PREFIXES):
        repo = name.split(":", 1)[1]
        repo, _, name_revision = repo.partition("@")
        revision = spec.revision or name_revision or None
        config_path = hub_download(f"timm model {spec.name!r}", repo, "config.json", revision)
        source = _local_dir_source(spec, Path(config_path).parent)
        return dataclasses.replace(source, kind="hf-hub", hub_repo=repo, hub_revision=revision)
    if any(sep in name for sep in ("/", "\\")):
        if name.startswith((".", "/", "~")) or os.path.isabs(name):
            raise CheckpointError(
                f"timm model {name!r}: directory not found; a local timm model is a folder with "
                "config.json and model.safetensors (timm.models.save_for_hf)"
            )
        raise UnknownModelError(
            f"timm model {name!r} is not a timm registry name; for a Hugging Face Hub repo write "
            f"'hf-hub:{name}', for a local folder give an existing path"
        )
    architecture, tag = split_model_name_tag(name)
    if not is_model(architecture):
        raise UnknownModelError(
            f"timm has no model {name!r}; closest names: {closest_timm_names(name)}. "
            "List them with timm.list_models('pattern*')"
        )
    if tag and name not in list_pretrained(f"{architecture}.*"):
        tags = list_pretrained(f"{architecture}.*")
        raise UnknownModelError(
            f"timm model {architecture!r} has no pretrained tag {tag!r}; available: "
            f"{tags or 'none (use pretrained: false)'}"
        )
    if not tag:
        default_cfg = get_pretrained_cfg(architecture)
        if default_cfg is not None and default_cfg.tag:
            name = f"{architecture}.{default_cfg.tag}"
    cfg = get_pretrained_cfg(name)
    return TimmSource(
        "registry",
        name,
        architecture,
        hub_repo=cfg.hf_hub_id if cfg is not None else None,
        hub_revision=spec.revision,
    )


def closest_timm_names(name: str, limit: int = 5) -> list[str]:
    """timm names (with and without pretrained tags) closest to ``name`` (difflib ratio)."""
    candidates = sorted(set(list_models()) | set(list_pretrained()))
    matches = difflib.get_close_matches(name, candidates, n=limit, cutoff=0.5)
    if not matches:
        architecture = split_model_name_tag(name)[0]
        matches = difflib.get_close_matches(architecture, candidates, n=limit, cutoff=0.4)
    return matches


def _looks_like_existing_dir(name: str) -> bool:
    return any(sep in name for sep in ("/", "\\")) and os.path.isdir(os.path.expanduser(name))


def _local_dir_source(spec: ModelSpec, folder: Path) -> TimmSource:
    config = folder / "config.json"
    if not config.is_file():
        raise CheckpointError(
            f"timm model {spec.name!r}: {str(config)!r} not found; a local timm model is a folder "
            "with config.json and model.safetensors (timm.models.save_for_hf)"
        )
    try:
        from timm.models._hub import (
            load_model_config_from_path,  # what create_model('local-dir:') uses
        )

        _, architecture, _ = load_model_config_from_path(folder)
    except (ValueError, KeyError, OSError) as exc:
        raise CheckpointError(
            f"timm model {spec.name!r}: unreadable {str(config)!r}: {exc}"
        ) from exc
    if not is_model(architecture):
        raise UnknownModelError(
            f"timm model {spec.name!r}: config.json names architecture {architecture!r}, unknown to "
            f"timm {timm.__version__}; closest: {closest_timm_names(architecture)}"
        )
    return TimmSource("local-dir", f"{_LOCAL_PREFIX}{folder}", architecture, local_dir=folder)


class TimmPreprocessor:
    """Raw images -> ``{"pixel_values": float32[n, C, H, W]}`` with the model's eval transform.

    :meth:`uint8_pixels` stops before scaling and normalisation (``{PIXELS_UINT8: uint8[n, C,
    H, W]}``, timm's prefetcher transform); the extractor finishes those on its device. Holds
    only the data config (picklable); the torchvision transforms are rebuilt lazily in each
    process.
    """

    modality = "image"

    def __init__(self, model_name: str, data_config: dict[str, Any]) -> None:
        self.model_name = model_name
        self.data_config = dict(data_config)
        self._transform = None
        self._uint8_transform = None

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able data config: input_size, interpolation, mean, std, crop_pct, crop_mode."""
        return to_json_able(self.data_config)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.data_config["input_size"])

    def __call__(self, inputs) -> dict[str, np.ndarray]:
        images = to_rgb_images(inputs)
        if not images:
            return {"pixel_values": np.zeros((0, *self.input_size), dtype=np.float32)}
        if self._transform is None:
            self._transform = create_transform(**self.data_config, is_training=False)
        pixels = np.stack([self._transform(image).numpy() for image in images])
        return {"pixel_values": pixels.astype(np.float32, copy=False)}

    def uint8_pixels(self, inputs) -> dict[str, np.ndarray]:
        """Raw images -> ``{PIXELS_UINT8: uint8[n, C, H, W]}``: resized and cropped only."""
        images = to_rgb_images(inputs)
        if not images:
            return {PIXELS_UINT8: np.zeros((0, *self.input_size), dtype=np.uint8)}
        if self._uint8_transform is None:
            self._uint8_transform = create_transform(
                **self.data_config, is_training=False, use_prefetcher=True
            )
        pixels = np.stack([np.asarray(self._uint8_transform(image)) for image in images])
        return {PIXELS_UINT8: pixels.astype(np.uint8, copy=False)}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_transform"] = state["_uint8_transform"] = None
        return state

    def __repr__(self) -> str:
        return f"TimmPreprocessor({self.model_name!r}, input_size={self.input_size})"


class TimmExtractor(FeatureExtractor):
    """timm model -> pooled features ``float32[n, d]``.

    ``pooling``: ``default`` is the model's own head pooling (pre-logits); ``mean``/``max``
    reduce ``forward_features`` over space (feature maps) or over non-prefix tokens (ViTs);
    ``cls`` takes the first token of token models.
    """

    def __init__(self, model, preprocess, device, dtype, pooling: str) -> None:
        super().__init__(model, preprocess, device, dtype, ("pixel_values",))
        self.pooling = pooling
        self.channels_last = device.type == "cuda"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        config = preprocess.data_config
        self._mean = torch.tensor(config["mean"], dtype=torch.float32, device=device)
        self._std = torch.tensor(config["std"], dtype=torch.float32, device=device)

    def __call__(self, batch):
        """Pooled features of ``{"pixel_values": float32}`` or ``{PIXELS_UINT8: uint8}``."""
        if "pixel_values" not in batch and PIXELS_UINT8 in batch:
            batch = {"pixel_values": self.normalize_uint8(batch[PIXELS_UINT8])}
        return super().__call__(batch)

    def normalize_uint8(self, pixels) -> torch.Tensor:
        """``uint8[n, C, H, W]`` -> float32 on the device: ``(x / 255 - mean) / std``.

        The same operations, in the same order and precision, as timm's eval transform
        (``ToTensor`` then ``Normalize``), so both paths give the same features.
        """
        array = np.asarray(pixels)
        if array.dtype != np.uint8 or array.ndim != 4:
            raise ValueError(
                f"model {self.preprocess.model_name!r}: {PIXELS_UINT8} must be uint8 "
                f"[n, C, H, W], got {array.dtype} {array.shape}"
            )
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=True)
        channels = (1, -1, 1, 1)
        return (
            tensor.float().div_(255).sub_(self._mean.view(channels)).div_(self._std.view(channels))
        )

    def _to_device(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.device, non_blocking=True)
        if self.channels_last and tensor.ndim == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def _forward(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        pixels = tensors["pixel_values"]
        if self.pooling == "default":
            return self.model(pixels)
        return pool_timm_features(self.model, self.model.forward_features(pixels), self.pooling)


def pool_timm_features(
    model: torch.nn.Module, features: torch.Tensor, pooling: str
) -> torch.Tensor:
    """``forward_features`` output -> ``[n, d]``.

    ``features``: ``[n, C, H, W]`` (or ``[n, H, W, C]`` for models with ``output_fmt == "NHWC"``)
    feature maps, or ``[n, T, C]`` tokens whose first ``model.num_prefix_tokens`` are
    class/register tokens.
    """
    if features.ndim == 4:
        if pooling == "cls":
            raise ModelLoadError(
                f"timm model {type(model).__name__} gives feature maps, which have no CLS token; "
                "use pooling: default, mean or max"
            )
        spatial_dims = (1, 2) if getattr(model, "output_fmt", "NCHW") == "NHWC" else (2, 3)
        return (
            features.mean(dim=spatial_dims)
            if pooling == "mean"
            else features.amax(dim=spatial_dims)
        )
    if features.ndim == 3:
        num_prefix = int(getattr(model, "num_prefix_tokens", 0))
        if pooling == "cls":
            if num_prefix < 1:
                raise ModelLoadError(
                    f"timm model {type(model).__name__} has no class token; use pooling: mean or max"
                )
            return features[:, 0]
        patches = features[:, num_prefix:]
        return patches.mean(dim=1) if pooling == "mean" else patches.amax(dim=1)
    raise ModelLoadError(
        f"timm model {type(model).__name__}: forward_features gave shape {tuple(features.shape)}; "
        "only feature maps and token sequences can be pooled, use pooling: default"
    )


def _create_model(spec: ModelSpec, source: TimmSource, **overrides: Any) -> torch.nn.Module:
    kwargs = {**spec.timm_kwargs, "num_classes": 0, **overrides}
    try:
        return timm.create_model(source.create_name, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, NotImplementedError) as exc:
        raise ModelLoadError(
            f"timm could not build {spec.name!r} with timm_kwargs {spec.timm_kwargs}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _data_config(spec: ModelSpec, model: torch.nn.Module) -> dict[str, Any]:
    args: dict[str, Any] = {}
    img_size = spec.timm_kwargs.get("img_size")
    if isinstance(img_size, int):
        args["img_size"] = img_size
    elif isinstance(img_size, (list, tuple)) and len(img_size) == 2:
        in_chans = int(spec.timm_kwargs.get("in_chans", 3))
        args["input_size"] = (in_chans, int(img_size[0]), int(img_size[1]))
    return dict(resolve_model_data_config(model, args=args))


def _build_preprocessor(spec: ModelSpec, source: TimmSource) -> TimmPreprocessor:
    """Data config from the architecture built on the meta device (no weights, no memory)."""
    try:
        with torch.device("meta"):
            model = _create_model(spec, source, pretrained=False)
    except ModelLoadError:
        raise
    except Exception as exc:  # some architectures compute python values from tensors in __init__
        logger.debug("meta-device build of %s failed (%s); building on CPU", spec.name, exc)
        with seeded_init(spec.init_seed):
            model = _create_model(spec, source, pretrained=False)
    return TimmPreprocessor(spec.display_name, _data_config(spec, model))


def load_timm_preprocessor(spec: ModelSpec) -> TimmPreprocessor:
    """Cheap: resolves the model's eval transform without loading weights."""
    return _build_preprocessor(spec, resolve_source(spec))


def _weights_file(spec: ModelSpec, source: TimmSource) -> tuple[Path, str | None]:
    """The local weight file to load and, for Hub files, the resolved commit."""
    if spec.checkpoint_path is not None:
        return _checked_weight_file(spec, Path(os.path.expanduser(spec.checkpoint_path))), None
    if source.local_dir is not None and source.kind == "local-dir":
        return _checked_weight_file(spec, _find_weights_in_dir(spec, source.local_dir)), None
    if source.kind == "hf-hub":
        path = _download_hub_weights(spec, source.hub_repo, None, source.hub_revision)
        return _checked_weight_file(spec, path), hub_commit_of(path)
    cfg = get_pretrained_cfg(source.create_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise CheckpointError(
            f"timm has no pretrained weights for {spec.name!r}; set pretrained: false for a "
            "random-init baseline, or give checkpoint_path"
        )
    if cfg.custom_load:
        raise CheckpointError(
            f"timm model {spec.name!r} ships weights in a custom (non-PyTorch) format, which "
            "ray-logme does not load; convert them to .safetensors and use checkpoint_path"
        )
    if cfg.hf_hub_id:
        path = _download_hub_weights(spec, cfg.hf_hub_id, cfg.hf_hub_filename, source.hub_revision)
        return _checked_weight_file(spec, path), hub_commit_of(path)
    if not spec.allow_pickle:
        raise CheckpointError(
            f"timm model {spec.name!r} has weights only at {cfg.url!r} (a pickle file); set "
            "allow_pickle: true to load them with weights_only=True"
        )
    from timm.models._hub import download_cached_file

    try:
        return Path(download_cached_file(cfg.url)), None
    except OSError as exc:
        raise CheckpointError(
            f"timm model {spec.name!r}: could not download {cfg.url!r}: {exc}"
        ) from exc


def _download_hub_weights(
    spec: ModelSpec, repo: str, filename: str | None, revision: str | None
) -> Path:
    filename = filename or _DEFAULT_HUB_WEIGHTS
    candidates = []
    if filename.endswith(SAFETENSORS_SUFFIXES):
        candidates.append(filename)
    else:
        if filename in _SAFE_ALTERNATIVES:
            candidates.append(_SAFE_ALTERNATIVES[filename])
        if spec.allow_pickle:
            candidates.append(filename)
    if not candidates:
        raise CheckpointError(
            f"timm model {spec.name!r}: {repo!r} ships {filename!r}, a pickle file; set allow_pickle: "
            "true to load it with weights_only=True"
        )
    last_error: CheckpointError | None = None
    for candidate in candidates:
        try:
            return Path(
                hub_download(
                    f"timm model {spec.name!r}", repo, candidate, revision, is_model_repo=False
                )
            )
        except CheckpointError as exc:
            last_error = exc
    hint = "" if spec.allow_pickle else " (pickle weights are only tried with allow_pickle: true)"
    raise CheckpointError(f"{last_error}{hint}") from last_error


def _find_weights_in_dir(spec: ModelSpec, folder: Path) -> Path:
    safe = sorted(p for p in folder.iterdir() if p.suffix.lower() in SAFETENSORS_SUFFIXES)
    preferred = folder / "model.safetensors"
    if preferred.is_file():
        return preferred
    if safe:
        return safe[0]
    pickles = sorted(p for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        return pickles[0]  # refused below unless allow_pickle
    raise CheckpointError(
        f"timm model {spec.name!r}: no weight file (.safetensors) in {str(folder)!r}"
    )


def _checked_weight_file(spec: ModelSpec, path: Path) -> Path:
    if not path.is_file():
        raise CheckpointError(f"timm model {spec.name!r}: checkpoint {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES and not spec.allow_pickle:
        raise CheckpointError(
            f"timm model {spec.name!r}: checkpoint {str(path)!r} is a pickle file ({suffix or 'no suffix'}), "
            "which can run code when loaded. Convert it to .safetensors "
            "(safetensors.torch.save_file(state_dict, path)) or set allow_pickle: true (it is then "
            "loaded with weights_only=True)"
        )
    return path


def load_timm_extractor(spec: ModelSpec, device: str | torch.device = "auto") -> TimmExtractor:
    """Build the headless timm model with its weights, on ``device``, ready to extract."""
    source = resolve_source(spec)
    preprocess = _build_preprocessor(spec, source)
    torch_device = resolve_device(device)
    compute_dtype = resolve_dtype(spec.dtype, torch_device)

    if spec.pretrained:
        weights_path, commit = _weights_file(spec, source)
        weights_sha256 = sha256_of_files([weights_path])
        overlay = {"file": str(weights_path), "source": "file", "custom_load": False}
        try:
            model = _create_model(spec, source, pretrained=True, pretrained_cfg_overlay=overlay)
        except ModelLoadError:
            raise
        except Exception as exc:  # safetensors/unpickling errors, missing or mismatched keys
            raise CheckpointError(
                f"timm model {spec.name!r}: cannot load weights {str(weights_path)!r} into "
                f"{source.architecture}: {type(exc).__name__}: {_first_lines(exc)}"
            ) from exc
        revision = commit or weights_sha256
        weights_identity: Any = weights_sha256
    else:
        with seeded_init(spec.init_seed):
            model = _create_model(spec, source, pretrained=False)
        weights_sha256 = None
        revision = "random-init"
        weights_identity = {
            "random_init_seed": spec.init_seed,
            "timm": timm.__version__,
            "torch": torch.__version__.split("+")[0],
        }

    model = model.to(torch_device).eval()
    extractor = TimmExtractor(model, preprocess, torch_device, compute_dtype, spec.pooling)
    try:
        feature_dim = extractor._probe_feature_dim(_PROBE_IMAGE)
    except ModelLoadError:
        raise
    except RuntimeError as exc:
        raise ModelLoadError(
            f"timm model {spec.name!r} failed on a {preprocess.input_size} input: {_first_lines(exc)}"
        ) from exc

    fingerprint = fingerprint_of(
        {
            "hub": "timm",
            "architecture": source.architecture,
            "weights": weights_identity,
            "preprocessing": preprocess.config,
            "pooling": spec.pooling,
            "timm_kwargs": spec.timm_kwargs,
            "dtype": spec.dtype,
        }
    )
    extractor.metadata = ModelMetadata(
        name=spec.display_name,
        hub="timm",
        architecture=source.architecture,
        modality="image",
        revision=revision,
        weights_sha256=weights_sha256,
        feature_dim=feature_dim,
        num_params=count_parameters(model),
        input_size=preprocess.input_size,
        preprocessing=preprocess.config,
        pooling=spec.pooling
        if spec.pooling != "default"
        else f"default:{_default_pool_name(model)}",
        dtype=dtype_name(compute_dtype),
        device=str(torch_device),
        fingerprint=fingerprint,
        imagenet_top1=None,  # timm wheels ship no results tables (see docs/notes/hub.md)
        tags=dict(spec.tags),
    )
    logger.info(
        "loaded timm %s (%s, d=%d, %.1fM params) on %s",
        spec.display_name,
        revision[:12],
        feature_dim,
        extractor.metadata.num_params / 1e6,
        torch_device,
    )
    return extractor


def _default_pool_name(model: torch.nn.Module) -> str:
    """timm's own global pooling of this model, as a short label (``avg``, ``token``, ``map``)."""
    for owner in (model, getattr(model, "head", None)):
        pool = getattr(owner, "global_pool", None)
        if isinstance(pool, str) and pool:
            return pool
        pool_type = getattr(pool, "pool_type", None)
        if isinstance(pool_type, str) and pool_type:
            return pool_type
    return "model"


def _first_lines(exc: BaseException, limit: int = 6) -> str:
    lines = str(exc).strip().splitlines()
    return "\n".join(lines[:limit]) + (" ..." if len(lines) > limit else "")
