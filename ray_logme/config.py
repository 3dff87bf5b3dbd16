"""The run configuration: one validated tree, loaded from YAML.

Everything a run needs is here, written once with its default: where the store lives, which
models and tasks, the resources of the extract stage, the remote-code allowlist, and the run id
policy. Errors name the bad key and, when loaded from a file, the file and line::

    jobs/configs/nightly.yaml:14: models.2.pooling: Input should be 'default', 'mean', ...

The config hash (:meth:`RunConfig.config_hash`) identifies what a run computes; it goes into the
run record so the history can tell runs of different configs apart.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ray_logme.errors import ConfigError
from ray_logme.hub import ModelSpec
from ray_logme.storage import StorageOptions
from ray_logme.tasks import TaskSpec

DEFAULT_STORE = "./ray-logme-store"
#: A fixed run id is one folder name on the store (see ray_logme.storage.layout).
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
#: Default batch size (rows) on CPU and on GPU model actors.
CPU_BATCH_SIZE = 32
GPU_BATCH_SIZE = 128
_SUPPORTED_STORE = re.compile(r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?|file://.+|[^:]+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSearch(_Strict):
    """Expand a timm ``list_models`` pattern into model specs.

    ``pattern`` is a shell-style filter as timm takes it (``"convnext_*"``); ``exclude`` removes
    names matching any of its patterns; ``limit`` caps the list (sorted by name, so the cap is
    deterministic). The other fields are copied into every resulting :class:`ModelSpec`.
    """

    hub: Literal["timm"] = "timm"
    pattern: str
    pretrained: bool = True
    exclude: tuple[str, ...] = ()
    limit: int = Field(default=20, ge=1, le=5000)
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    tags: dict[str, str] = Field(default_factory=dict)

    def expand(self) -> list[ModelSpec]:
        """Return the matching models as specs; ``ConfigError`` when nothing matches."""
        import timm

        names = sorted(
            timm.list_models(
                self.pattern, pretrained=self.pretrained, exclude_filters=list(self.exclude)
            )
        )
        if not names:
            raise ConfigError(
                f"model_search pattern {self.pattern!r} (pretrained={self.pretrained}) matches "
                "no timm model; check the pattern with timm.list_models()"
            )
        return [
            ModelSpec(
                hub="timm",
                name=name,
                pretrained=self.pretrained,
                dtype=self.dtype,
                tags=dict(self.tags),
            )
            for name in names[: self.limit]
        ]


@dataclass(frozen=True)
class BatchSizes:
    """The three batch sizes of the extract stage, resolved (rows)."""

    decode: int  # rows per CPU decode task batch (images -> the model's input pixels)
    actor: int  # rows handed to a model actor per call
    forward: int  # rows per forward pass; halves on an out-of-memory error, down to 1


class Resources(_Strict):
    """Resources of the extract stage.

    ``num_workers`` long-lived extract workers for the whole run (each holds one model at a
    time and moves on to the next model when its model's shards are done), each with
    ``gpus_per_worker`` GPUs (fractional packs several workers, so several small models, on one
    GPU: 0.25 runs four; 0 on CPU-only clusters) and ``cpus_per_worker`` CPUs. Keep
    ``num_workers * cpus_per_worker`` below the cluster's CPUs so decoding and scoring tasks
    still get a CPU (ray issue 44687). ``max_models_in_flight`` caps how many models have shards
    being handed out at once (default: one per worker); lower it to make workers share large
    models. Workers also join a started model on their own when its remaining work outweighs
    loading it again.

    Three batch sizes, in rows: ``decode_batch_size`` per image-decoding step of a CPU task,
    ``actor_batch_size`` (unused since workers take whole input shards; kept so existing configs
    load), ``forward_batch_size`` per forward pass (an out-of-memory error halves it).
    ``batch_size`` is the default of all three; ``None`` picks 32 on CPU and 128 on GPU.
    """

    num_workers: int = Field(default=1, ge=1)
    max_models_in_flight: int | None = Field(default=None, ge=1)
    gpus_per_worker: float = Field(default=0.0, ge=0.0)
    cpus_per_worker: float = Field(default=1.0, gt=0.0)
    preprocess_cpus: float = Field(default=0.5, gt=0.0)
    batch_size: int | None = Field(default=None, ge=1)
    decode_batch_size: int | None = Field(default=None, ge=1)
    actor_batch_size: int | None = Field(default=None, ge=1)
    forward_batch_size: int | None = Field(default=None, ge=1)
    max_restarts: int = Field(default=2, ge=0)
    wait_for_actors_s: float = Field(default=600.0, gt=0.0)

    @property
    def device(self) -> str:
        """``"cuda"`` when model actors get GPUs, else ``"cpu"``."""
        return "cuda" if self.gpus_per_worker > 0 else "cpu"

    def batch_sizes(self) -> BatchSizes:
        """The decode, actor and forward batch sizes with their defaults filled in."""
        default = self.batch_size or (GPU_BATCH_SIZE if self.device == "cuda" else CPU_BATCH_SIZE)
        return BatchSizes(
            decode=self.decode_batch_size or default,
            actor=self.actor_batch_size or default,
            forward=self.forward_batch_size or default,
        )


class Outputs(_Strict):
    """What the leaderboard stage reads besides the scores.

    ``imagenet_top1_csv``: optional CSV (columns ``model``, ``imagenet_top1``) giving a
    source-accuracy prior column; timm does not ship its results tables in the wheel.
    """

    imagenet_top1_csv: str | None = None
    history_runs: int = Field(default=30, ge=1)
    #: ``default``: the frozen combination of ``scoring.metrics`` (and the prior where given,
    #: see :mod:`ray_logme.combination`); or one metric name of ``scoring.metrics``.
    ranking: str = "default"


class Scoring(_Strict):
    """What the reduce stage computes.

    ``metrics``: registered metric names (default: the inputs of the default ranking,
    :data:`ray_logme.combination.DEFAULT_COMBINATION`; ``nleep`` and ``hscore`` are opt-in);
    ``sample_cap`` / ``sample_seed``: the per-pair sample the sample-based metrics (NLEEP, SFDA,
    GBC, kNN) see (see :mod:`ray_logme.metrics.sampling`); both are part of their cached scores'
    names, so changing them recomputes those scores.
    """

    metrics: tuple[str, ...] = ("logme", "shrinkage_hscore", "sfda", "gbc", "knn")
    sample_cap: int = Field(default=2000, ge=10)
    sample_seed: int = Field(default=0, ge=0)

    @field_validator("metrics")
    @classmethod
    def _check_metrics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from ray_logme.metrics import METRICS

        if not value:
            raise ValueError("give at least one metric, e.g. [logme]")
        unknown = [m for m in value if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; available: {sorted(METRICS)}")
        repeated = sorted({m for m in value if value.count(m) > 1})
        if repeated:
            raise ValueError(f"metrics must be unique; repeated: {', '.join(repeated)}")
        return value


class RunConfig(_Strict):
    """One run of ray-logme: models x tasks -> features -> LogME -> leaderboard."""

    store: str = DEFAULT_STORE
    storage: StorageOptions = Field(default_factory=StorageOptions)
    models: tuple[ModelSpec, ...] = ()
    model_search: tuple[ModelSearch, ...] = ()
    tasks: tuple[TaskSpec, ...]
    resources: Resources = Field(default_factory=Resources)
    allow_remote_code: tuple[str, ...] = ()
    run_id: Literal["timestamp"] | str = Field(default="timestamp", pattern=RUN_ID_PATTERN)
    outputs: Outputs = Field(default_factory=Outputs)
    scoring: Scoring = Field(default_factory=Scoring)

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: str) -> str:
        return check_store_uri(value)

    @model_validator(mode="after")
    def _check_lists(self) -> RunConfig:
        if not self.models and not self.model_search:
            raise ValueError("the model list is empty: give at least one entry under models:")
        if not self.tasks:
            raise ValueError("the task list is empty: give at least one entry under tasks:")
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique; repeated: {', '.join(dupes)}")
        _check_unique_models(self.models)
        if self.outputs.ranking not in ("default", *self.scoring.metrics):
            raise ValueError(
                f"outputs.ranking must be 'default' or one of scoring.metrics "
                f"{list(self.scoring.metrics)}, got {self.outputs.ranking!r}"
            )
        for spec in self.models:
            if spec.trust_remote_code and spec.name not in self.allow_remote_code:
                raise ValueError(
                    f"model {spec.name!r} sets trust_remote_code but is not in "
                    "allow_remote_code; add its exact repo id there to allow it"
                )
        return self

    @model_validator(mode="after")
    def _check_no_credentials(self) -> RunConfig:
        _refuse_credentials(self)
        return self

    def resolved_models(self) -> list[ModelSpec]:
        """The listed models, then the expanded ``model_search`` entries.

        A search result that computes the same features as a listed model (same spec apart
        from ``tags`` and ``display_name``), or that would share a listed model's name, is
        dropped: the listed entry wins. Search results are unique among themselves.
        """
        result = list(self.models)
        seen = {_identity_json(spec) for spec in result}
        taken = {spec.display_name for spec in result}
        for spec in (s for search in self.model_search for s in search.expand()):
            identity = _identity_json(spec)
            if identity in seen or spec.display_name in taken:
                continue
            seen.add(identity)
            taken.add(spec.display_name)
            result.append(spec)
        return result

    def config_hash(self) -> str:
        """sha256 over the canonical JSON of the config (what the run computes).

        Settings left at their defaults are not hashed, so a release that adds a setting
        (with a default) keeps the hash of every existing config, and ``--resume`` still works.
        """
        dumped = self.model_dump(mode="json", exclude_defaults=True)
        canonical = json.dumps(dumped, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<config>") -> RunConfig:
        """Validate a parsed mapping; errors become one ``ConfigError`` line per problem."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(_format_errors(exc, source, {})) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        """Load and validate a YAML file; errors name the file, line and key."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            if node is not None:
                _check_yaml_node(node, str(path))
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{path}: the config must be a YAML mapping, got {type(data).__name__}"
            )
        lines = _key_lines(node) if node is not None else {}
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(_format_errors(exc, str(path), lines)) from None


#: A config is a few hundred YAML nodes; aliases may not blow it up past this many.
MAX_CONFIG_NODES = 100_000


def _check_yaml_node(root: yaml.Node, source: str) -> None:
    """Refuse what YAML accepts but a config must not have: a key given twice in one mapping
    (YAML silently keeps the last), and aliases that expand the document past
    :data:`MAX_CONFIG_NODES` nodes or refer to themselves (an "alias bomb")."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _yaml_children(node)
        if children_done:
            in_progress.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_CONFIG_NODES:
                raise ConfigError(
                    f"{source}:{node.start_mark.line + 1}: aliases expand the config past "
                    f"{MAX_CONFIG_NODES} YAML nodes; write the config out without them"
                )
            continue
        if id(node) in in_progress:
            raise ConfigError(
                f"{source}:{node.start_mark.line + 1}: a YAML alias refers to itself; remove it"
            )
        in_progress.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    line = key_node.start_mark.line + 1
                    if key_node.value in first_line:
                        raise ConfigError(
                            f"{source}:{line}: key {key_node.value!r} is given twice (also on "
                            f"line {first_line[key_node.value]}); YAML would keep only the last: "
                            "merge them into one"
                        )
                    first_line[key_node.value] = line
        stack.append((node, True))
        for child in children:
            if id(child) in in_progress and id(child) not in sizes:
                raise ConfigError(
                    f"{source}:{child.start_mark.line + 1}: a YAML alias refers to itself; "
                    "remove it"
                )
            stack.append((child, False))


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _key_lines(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    """Map every key path of a composed YAML document to its 1-based line number."""
    lines: dict[tuple, int] = {prefix: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, key_node.value)
            lines.update(_key_lines(value_node, path))
            lines[path] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_key_lines(item, (*prefix, index)))
    return lines


def _format_errors(exc: ValidationError, source: str, lines: dict[tuple, int]) -> str:
    """One line per validation error: ``file:line: dotted.key: message``."""
    out = []
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if not _is_union_tag(part))
        # Walk up the path until a key with a known line is found.
        line = None
        for depth in range(len(loc), -1, -1):
            line = lines.get(tuple(str(p) if isinstance(p, str) else p for p in loc[:depth]))
            if line is not None:
                break
        where = f"{source}:{line}" if line else source
        key = ".".join(str(p) for p in loc) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see the config reference in README.md)"
        elif error["type"] == "missing":
            message = "required key is missing"
        out.append(f"{where}: {key}: {message}")
    return "\n".join(out)


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def check_store_uri(value: str) -> str:
    """``value`` if it is a usable store URI (a local folder, ``file://...``, ``s3://bucket/...``
    without credentials), else ``ValueError`` saying what to write (credentials redacted)."""
    if not value.strip():
        raise ValueError("store must be a local folder or an s3://bucket/prefix URI")
    if uri_has_credentials(value):
        raise ValueError(
            f"{redact_uri(value)!r} has credentials in the URI; remove them and use the AWS "
            "credential chain (environment, AWS_PROFILE or an instance role) instead"
        )
    scheme = value.split("://", 1)[0] if "://" in value else None
    if scheme not in (None, "s3", "file"):
        raise ValueError(
            f"unsupported store URI scheme {scheme!r} in {value!r}; use a local folder, "
            "file://, or s3://bucket/prefix"
        )
    if scheme == "s3" and not _SUPPORTED_STORE.match(value):
        raise ValueError(f"{value!r} is not a valid s3://bucket/prefix URI")
    return value


def _identity_json(spec: ModelSpec) -> str:
    return json.dumps(spec.identity(), sort_keys=True, default=str)


def _check_unique_models(models: tuple[ModelSpec, ...]) -> None:
    """Refuse two listed models that are the same model, or that would share a name."""
    by_identity: dict[str, int] = {}
    by_name: dict[str, int] = {}
    for index, spec in enumerate(models):
        identity = _identity_json(spec)
        if identity in by_identity:
            raise ValueError(
                f"models.{index} ({spec.display_name!r}) repeats models.{by_identity[identity]}: "
                "the same model with the same settings; list each model once"
            )
        name = spec.display_name
        if name in by_name:
            raise ValueError(
                f"models.{index} and models.{by_name[name]} are different models with the same "
                f"name {name!r}; give one of them a display_name"
            )
        by_identity[identity] = by_name[name] = index


_URI_WITH_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<userinfo>[^/@]*)@")


def uri_has_credentials(uri: str) -> bool:
    """Whether ``uri`` carries a user name or password (``s3://KEY:SECRET@bucket/...``)."""
    return bool(_URI_WITH_USERINFO.match(uri.strip()))


def redact_uri(uri: str) -> str:
    """``uri`` with its user-info part replaced by ``***`` (safe to print)."""
    return _URI_WITH_USERINFO.sub(lambda m: f"{m.group('scheme')}://***@", uri.strip(), count=1)


def _refuse_credentials(config: RunConfig) -> None:
    """No URI of the config may carry credentials: they would be stored in ``run.json``."""
    places = [
        ("store", config.store),
        ("outputs.imagenet_top1_csv", config.outputs.imagenet_top1_csv),
    ]
    places += [(f"tasks.{i}.uri", task.uri) for i, task in enumerate(config.tasks)]
    places += [(f"models.{i}.name", spec.name) for i, spec in enumerate(config.models)]
    places += [
        (f"models.{i}.checkpoint_path", spec.checkpoint_path)
        for i, spec in enumerate(config.models)
    ]
    for key, value in places:
        if isinstance(value, str) and uri_has_credentials(value):
            raise ValueError(
                f"{key}: {redact_uri(value)!r} has credentials in the URI; remove them and use the "
                "AWS credential chain (environment, AWS_PROFILE or an instance role) instead: "
                "run records store the config"
            )
