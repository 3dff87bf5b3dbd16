"""The run config: defaults, validation errors that name the key and line, run ids."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from ray_logme.config import RunConfig
from ray_logme.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
store: s3://my-bucket/ray-logme
models:
  - {hub: timm, name: resnet18, pretrained: false}
tasks:
  - {name: digits, uri: "sklearn:digits"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_config_loads_with_defaults(tmp_path):
    config = RunConfig.from_yaml(write(tmp_path, GOOD))
    assert config.store == "s3://my-bucket/ray-logme"
    assert config.resources.gpus_per_worker == 0.0
    assert [m.name for m in config.resolved_models()] == ["resnet18"]
    assert len(config.config_hash()) == 64


@pytest.mark.parametrize("name", ["local.yaml", "nightly.yaml"])
def test_shipped_configs_validate(name):
    config = RunConfig.from_yaml(REPO / "jobs" / "configs" / name)
    assert config.tasks and (config.models or config.model_search)


def test_unknown_key_names_key_and_line(tmp_path):
    path = write(
        tmp_path,
        """\
        store: ./store
        models:
          - {hub: timm, name: resnet18}
          - hub: timm
            name: resnet50
            polling: mean
        tasks:
          - {name: digits, uri: "sklearn:digits"}
        """,
    )
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml(path)
    message = str(info.value)
    assert f"{path}:6: models.1.polling: unknown key" in message
    assert len(message.splitlines()) == 1


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, GOOD + "resorces: {num_workers: 2}\n")
    with pytest.raises(ConfigError, match=r":6: resorces: unknown key"):
        RunConfig.from_yaml(path)


@pytest.mark.parametrize(
    "store, fragment",
    [
        ("gs://bucket/x", "unsupported store URI scheme 'gs'"),
        ("s3://", "not a valid s3://bucket/prefix URI"),
        ("http://example.com/x", "unsupported store URI scheme 'http'"),
    ],
)
def test_bad_store_uri(tmp_path, store, fragment):
    path = write(tmp_path, GOOD.replace("s3://my-bucket/ray-logme", store))
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml(path)
    assert f"{path}:1: store:" in str(info.value)
    assert fragment in str(info.value)


def test_empty_model_list(tmp_path):
    path = write(
        tmp_path,
        """\
        store: ./store
        models: []
        tasks:
          - {name: digits, uri: "sklearn:digits"}
        """,
    )
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml(path)
    assert "the model list is empty" in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_missing_tasks_and_bad_type(tmp_path):
    path = write(
        tmp_path,
        """\
        models:
          - {hub: timm, name: resnet18}
        resources: {num_workers: many}
        """,
    )
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml(path)
    lines = str(info.value).splitlines()
    assert any(
        line.startswith(f"{path}") and "tasks: required key is missing" in line for line in lines
    )
    assert any(f"{path}:3: resources.num_workers:" in line for line in lines)


def test_remote_code_must_be_allowlisted(tmp_path):
    text = """\
    models:
      - {hub: hf, name: org/custom-model, trust_remote_code: true}
    tasks:
      - {name: topics, uri: "builtin:topics"}
    """
    with pytest.raises(ConfigError, match="allow_remote_code"):
        RunConfig.from_yaml(write(tmp_path, text))
    allowed = RunConfig.from_yaml(write(tmp_path, text + "allow_remote_code: [org/custom-model]\n"))
    assert allowed.models[0].trust_remote_code


def test_duplicate_task_names(tmp_path):
    path = write(
        tmp_path,
        GOOD + '  - {name: digits, uri: "builtin:discs"}\n',
    )
    with pytest.raises(ConfigError, match="repeated: digits"):
        RunConfig.from_yaml(path)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="invalid YAML"):
        RunConfig.from_yaml(write(tmp_path, "models: [unclosed\n"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        RunConfig.from_yaml(tmp_path / "absent.yaml")


def test_model_search_expands_timm_pattern(tmp_path):
    path = write(
        tmp_path,
        """\
        model_search:
          - {pattern: "resnet1*", pretrained: false, exclude: ["*d"], limit: 3}
        tasks:
          - {name: digits, uri: "sklearn:digits"}
        """,
    )
    import fnmatch

    import timm

    expected = sorted(n for n in timm.list_models("resnet1*") if not fnmatch.fnmatch(n, "*d"))[:3]
    models = RunConfig.from_yaml(path).resolved_models()
    assert [m.name for m in models] == expected
    assert all(not m.pretrained for m in models)


def test_config_hash_changes_with_content(tmp_path):
    a = RunConfig.from_yaml(write(tmp_path, GOOD))
    b = RunConfig.from_yaml(write(tmp_path, GOOD.replace("resnet18", "resnet34")))
    assert a.config_hash() != b.config_hash()
    assert a.config_hash() == RunConfig.from_yaml(write(tmp_path, GOOD)).config_hash()


def test_run_id_policy(tmp_path):
    from ray_logme.pipeline import new_run_id

    config = RunConfig.from_yaml(write(tmp_path, GOOD))
    now = dt.datetime(2026, 11, 28, 3, 0, 5, tzinfo=dt.timezone.utc)
    assert new_run_id(config, now) == f"20261128T030005Z-{config.config_hash()[:8]}"
    fixed = RunConfig.from_yaml(write(tmp_path, GOOD + "run_id: nightly-42\n"))
    assert new_run_id(fixed, now) == "nightly-42"


def test_repeated_models_are_refused_but_variants_kept(tmp_path):
    base = textwrap.dedent(
        """\
        tasks:
          - {name: digits, uri: "sklearn:digits"}
        models:
          - {hub: timm, name: resnet18, pretrained: false}
          - {hub: timm, name: resnet18, pretrained: false, init_seed: 1}
        """
    )
    path = write(
        tmp_path, base + "  - {hub: timm, name: resnet18, pretrained: false, tags: {a: b}}\n"
    )
    with pytest.raises(
        ConfigError, match=r"models.2 \('resnet18 \[random-init\]'\) repeats models.0"
    ):
        RunConfig.from_yaml(path)
    # A search result equal to a listed model is dropped: the listed entry wins.
    path = write(tmp_path, base + 'model_search:\n  - {pattern: "resnet18", pretrained: false}\n')
    models = RunConfig.from_yaml(path).resolved_models()
    assert [(m.name, m.init_seed) for m in models] == [("resnet18", 0), ("resnet18", 1)]


def test_models_that_differ_only_in_settings_get_distinct_stable_names(tmp_path):
    from ray_logme.hub import ModelSpec

    minilm = {"hub": "hf", "name": "sentence-transformers/all-MiniLM-L6-v2"}
    assert ModelSpec(**minilm).display_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert ModelSpec(**minilm, max_length=32).display_name.endswith("[max_length=32]")
    assert ModelSpec(**minilm, dtype="float32").display_name.endswith("[float32]")
    a = ModelSpec(hub="timm", name="resnet18", checkpoint_path="/ckpt/a/model.safetensors")
    b = ModelSpec(hub="timm", name="resnet18", checkpoint_path="/ckpt/b/model.safetensors")
    assert a.display_name == "resnet18 [ckpt:a/model.safetensors]" != b.display_name
    big = ModelSpec(hub="timm", name="vit_tiny_patch16_224", timm_kwargs={"img_size": 384})
    assert big.display_name == "vit_tiny_patch16_224 [img_size=384]"
    named = ModelSpec.model_validate({**minilm, "display_name": "MiniLM (short)", "max_length": 32})
    assert named.display_name == "MiniLM (short)"
    assert ModelSpec.model_validate_json(named.model_dump_json()) == named
    # Two different models may not share a name: the config says which and how to fix it.
    path = write(
        tmp_path,
        """\
        tasks:
          - {name: digits, uri: "sklearn:digits"}
        models:
          - {hub: timm, name: resnet18, display_name: mine}
          - {hub: timm, name: resnet34, display_name: mine}
        """,
    )
    with pytest.raises(ConfigError, match="same name 'mine'; give one of them a display_name"):
        RunConfig.from_yaml(path)


def test_display_name_and_local_paths_do_not_change_content_keys(tmp_path):
    import shutil

    from hub_helpers import save_tiny_vit

    from ray_logme.hub import ModelSpec
    from ray_logme.hub.identity import legacy_model_key, model_key, resolve_model_key

    spec = ModelSpec(hub="timm", name="resnet18")
    assert model_key(spec.model_copy(update={"label": "Mine"})) == model_key(spec)
    assert model_key(spec) == legacy_model_key(spec)  # registry names: keys as in 0.1.0
    first = save_tiny_vit(tmp_path / "one" / "vit", seed=0)
    moved = tmp_path / "two" / "vit"
    shutil.copytree(first, moved)
    at_first = ModelSpec(hub="hf", name=str(first))
    at_moved = ModelSpec(hub="hf", name=str(moved))
    assert model_key(at_first) == model_key(at_moved)
    assert model_key(at_first).startswith("vit-")
    (moved / "extra.txt").write_text("changed content")
    assert model_key(at_first) != model_key(at_moved)
    # A store written by 0.1.0 (path-hashed keys) keeps its features after the upgrade.
    legacy = legacy_model_key(at_first)
    assert legacy != model_key(at_first)
    assert resolve_model_key(at_first, lambda key: key == legacy) == legacy
    assert resolve_model_key(at_first, lambda key: True) == model_key(at_first)
    assert resolve_model_key(at_first, lambda key: False) == model_key(at_first)


def test_unhashable_local_folders_fail_clearly(tmp_path):
    from ray_logme.errors import CheckpointError
    from ray_logme.hub import ModelSpec
    from ray_logme.hub.identity import folder_files, model_key

    for index in range(5):
        (tmp_path / f"f{index}.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"model 'm': local folder .* more than 3 files"):
        folder_files(tmp_path, what="model 'm'", max_files=3)
    assert len(folder_files(tmp_path, what="model 'm'")) == 5
    with pytest.raises(CheckpointError, match="more than 10000 files"):
        model_key(ModelSpec(hub="hf", name="/usr"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "models: [{hub: timm, name: a}]\nmodels: [{hub: timm, name: b}]\n",
            "key 'models' is given twice",
        ),
        (
            "x1: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(
                f"x{i + 2}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n"
                for i in range(6)
            ),
            "aliases expand the config past",
        ),
        ('store: "s3://AKIAXX:topsecret@bucket/x"\n', "s3://\\*\\*\\*@bucket/x"),
        ("run_id: a/b\n", "run_id: String should match pattern"),
    ],
)
def test_config_refuses_yaml_tricks_bad_run_ids_and_credentials(tmp_path, text, message):
    tail = "tasks: [{name: d, uri: 'sklearn:digits'}]\n"
    if "models:" not in text:
        tail += "models: [{hub: timm, name: resnet18}]\n"
    path = write(tmp_path, text + tail)
    with pytest.raises(ConfigError, match=message) as info:
        RunConfig.from_yaml(path)
    assert "topsecret" not in str(info.value)


def test_credentials_in_task_and_prior_uris_are_refused(tmp_path):
    path = write(
        tmp_path,
        GOOD + "outputs: {imagenet_top1_csv: 'https://user:hunter2@example.com/top1.csv'}\n",
    )
    with pytest.raises(ConfigError, match=r"outputs\.imagenet_top1_csv") as info:
        RunConfig.from_yaml(path)
    assert "hunter2" not in str(info.value)
