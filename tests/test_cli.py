"""The ray-logme command line: score, refresh, leaderboard, and its error lines."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ray_logme.cli import build_parser, default_config_path, main
from ray_logme.config import RunConfig
from ray_logme.metrics import logme

pytestmark = pytest.mark.timeout(600)


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("refresh", "score", "leaderboard", "evaluate"):
        assert command in out
    refresh_help = build_parser()._subparsers._group_actions[0].choices["refresh"].format_help()
    assert "--resume" in refresh_help and "embedded" in refresh_help


def test_embedded_default_config_is_shipped_and_valid():
    config = RunConfig.from_yaml(default_config_path())
    assert config.store == "./ray-logme-store"
    assert {t.uri for t in config.tasks} == {"builtin:bbc-news", "builtin:fashion-mnist"}


@pytest.fixture
def features_problem():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=300)
    features = (np.eye(4)[labels] @ rng.normal(size=(4, 12)) + rng.normal(size=(300, 12))).astype(
        np.float32
    )
    return features, labels


def printed_score(text: str) -> float:
    match = re.search(r"LogME \(\w+, n=\d+, d=\d+\): (-?\d+\.\d+)", text)
    assert match, text
    return float(match.group(1))


def test_score_npz_and_parquet(tmp_path, capsys, features_problem):
    features, labels = features_problem
    expected = logme(features, labels)
    npz = tmp_path / "f.npz"
    np.savez(npz, features=features, label=labels)
    assert main(["score", str(npz)]) == 0
    assert printed_score(capsys.readouterr().out) == pytest.approx(expected, abs=1e-6)

    table = pa.table(
        {
            "features": pa.FixedSizeListArray.from_arrays(pa.array(features.ravel()), 12),
            "label": labels,
        }
    )
    path = tmp_path / "f.parquet"
    pq.write_table(table, path)
    assert main(["score", str(path)]) == 0
    assert printed_score(capsys.readouterr().out) == pytest.approx(expected, abs=1e-6)


def test_score_errors_name_the_file_and_the_fix(tmp_path, capsys, features_problem):
    features, labels = features_problem
    assert main(["score", str(tmp_path / "absent.npz")]) == 2
    assert "absent.npz does not exist" in capsys.readouterr().err
    path = tmp_path / "g.npz"
    np.savez(path, feats=features, label=labels)
    assert main(["score", str(path)]) == 2
    err = capsys.readouterr().err
    assert "lacks array(s) ['features']" in err and "feats" in err
    path = tmp_path / "r.npz"
    np.savez(path, features=features, label=labels + 0.5)
    assert main(["score", str(path)]) == 2
    assert "--kind regression" in capsys.readouterr().err


def test_config_error_is_one_clear_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("models: []\ntasks:\n  - {name: d, uri: 'sklearn:digits'}\n")
    assert main(["refresh", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "ray-logme: error:" in err and "model list is empty" in err


def test_refresh_then_leaderboard_queries(ray_cluster, tmp_path, capsys):
    store = tmp_path / "store"
    config = {
        "store": str(store),
        "models": [
            {"hub": "timm", "name": "test_vit", "pretrained": False},
            {"hub": "timm", "name": "test_resnet", "pretrained": False},
        ],
        "tasks": [{"name": "digits", "uri": "sklearn:digits", "max_samples": 60}],
        "resources": {"cpus_per_worker": 0.5},
        "run_id": "cli-run",
        "outputs": {"imagenet_top1_csv": str(tmp_path / "priors.csv")},
    }
    (tmp_path / "priors.csv").write_text(
        "model,imagenet_top1\ntest_vit [random-init],61.25\ntest_resnet [random-init],72.5\n"
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["refresh", "--config", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    html = re.search(r"leaderboard: (\S+)", out).group(1)
    assert html == str(store / "leaderboard" / "index.html")

    # The leaderboard command shows exactly what the refresh published, priors included.
    assert main(["leaderboard", "--store", str(store)]) == 0
    assert capsys.readouterr().out == (store / "leaderboard" / "summary.md").read_text() + "\n"
    published = pd.read_csv(store / "leaderboard" / "overall.csv")
    priors = dict(zip(published["model"], published["imagenet_top1"], strict=True))
    assert priors == {"test_vit [random-init]": 61.25, "test_resnet [random-init]": 72.5}

    assert main(["leaderboard", "--store", str(store), "--runs"]) == 0
    assert capsys.readouterr().out.startswith("cli-run ")

    assert main(["leaderboard", "--store", str(store), "--format", "csv"]) == 0
    full = capsys.readouterr().out
    assert "test_vit [random-init]" in full and "test_resnet [random-init]" in full
    shown = pd.read_csv(io.StringIO(full))
    assert dict(zip(shown["model"], shown["imagenet_top1"], strict=True)) == priors

    # test_vit has ~306k parameters, test_resnet ~373k: a 350k budget keeps only test_vit.
    assert main(["leaderboard", "--store", str(store), "--max-params", "350k"]) == 0
    budget = capsys.readouterr().out.replace("\\[", "[").replace("\\]", "]")  # Markdown escapes
    assert "test_vit [random-init]" in budget
    assert "test_resnet [random-init]" not in budget

    assert main(["leaderboard", "--store", str(tmp_path / "empty")]) == 2
    assert "run `ray-logme refresh` first" in capsys.readouterr().err
