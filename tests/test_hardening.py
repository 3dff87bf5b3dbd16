"""What a hostile but honest user found (issue 16): one bad model fails only itself, runs fail
early and say so, run ids are exclusive, a damaged history entry is skipped, bad CLI input is
one line with exit 2."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ray_logme.cli import main
from ray_logme.storage import FeatureStore, layout
from ray_logme.tables import SCORES, ScoreRow

pytestmark = pytest.mark.timeout(600)


def write_config(tmp_path: Path, store: Path, models: list, **extra) -> Path:
    config = {
        "store": str(store),
        "models": models,
        "tasks": [{"name": "digits", "uri": "sklearn:digits", "max_samples": 60}],
        "resources": {"cpus_per_worker": 0.5},
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_unresolvable_models_fail_only_themselves_and_runs_are_exclusive(
    ray_cluster, tmp_path, capsys, monkeypatch
):
    store_dir = tmp_path / "store"
    good = {"hub": "timm", "name": "test_vit", "pretrained": False}
    bad = [
        {"hub": "timm", "name": "pkg:no_such_pkg_xyz/zoo"},  # its package is not installed
        {"hub": "hf", "name": "/proc/self"},  # not a model folder; unhashable files
        {"hub": "hf", "name": "/usr"},  # far too many files to be a model folder
    ]
    config = write_config(tmp_path, store_dir, [good, *bad], run_id="probe")
    assert main(["refresh", "--config", str(config), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "run:         probe"  # printed at the start
    store = FeatureStore(str(store_dir))
    status = store.read_table(layout.run_status("probe")).to_pandas().set_index("model")
    assert status.at["test_vit [random-init]", "state"] == "ok"
    assert (
        "package 'no_such_pkg_xyz' is not installed"
        in status.at["pkg:no_such_pkg_xyz/zoo", "error"]
    )
    assert status.at["/proc/self", "state"] == "failed"
    assert "/usr" in status.at["/usr", "error"] and "more than" in status.at["/usr", "error"]
    every_metric = store.read_table(layout.run_scores("probe")).to_pandas().set_index("model")
    scores = every_metric[every_metric["metric"] == "logme"]
    assert scores.at["test_vit [random-init]", "state"] == "ok"
    assert (scores.drop(index="test_vit [random-init]")["state"] == "failed").all()
    assert (every_metric.drop(index="test_vit [random-init]")["state"] == "failed").all()
    assert (store_dir / "leaderboard" / "index.html").is_file()
    record = json.loads(store.read_text(layout.run_record("probe")))
    assert record["state"] == "failed-pairs" and record["num_failed"] == 3

    # The same fixed run id again is refused (exit 2), naming the way out; nothing is touched.
    before = store.read_text(layout.run_record("probe"))
    assert main(["refresh", "--config", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "run id 'probe' already exists" in err and "--resume probe" in err
    assert store.read_text(layout.run_record("probe")) == before

    # A crash after the run started: state failed with the reason, exit 3, resumable.
    import ray_logme.pipeline as pipeline

    def broken_reduce(*args, **kwargs):
        raise RuntimeError("the reduce stage fell over")

    monkeypatch.setattr(pipeline, "reduce", broken_reduce)
    assert main(["refresh", "--config", str(config), "--no-progress", "--resume", "probe"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the reduce stage fell over" in err and "--resume probe" in err
    record = json.loads(store.read_text(layout.run_record("probe")))
    assert record["state"] == "failed" and "the reduce stage fell over" in record["error"]
    monkeypatch.undo()
    assert main(["refresh", "--config", str(config), "--no-progress", "--resume", "probe"]) == 1
    assert json.loads(store.read_text(layout.run_record("probe")))["state"] == "failed-pairs"


def test_a_missing_priors_file_fails_before_anything_runs(tmp_path, capsys):
    store_dir = tmp_path / "store"
    config = write_config(
        tmp_path,
        store_dir,
        [{"hub": "timm", "name": "test_vit", "pretrained": False}],
        outputs={"imagenet_top1_csv": str(tmp_path / "absent.csv")},
    )
    assert main(["refresh", "--config", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "outputs.imagenet_top1_csv" in err and "absent.csv" in err
    assert not store_dir.exists()  # no run record, no task snapshot: nothing started


def _write_run(store: FeatureStore, run_id: str, timestamp: str, rows: list[ScoreRow]) -> None:
    record = {"run_id": run_id, "timestamp": timestamp, "state": "ok"}
    store.write_text(layout.run_record(run_id), json.dumps(record))
    store.write_table(layout.run_scores(run_id), SCORES.from_rows(rows))


def _row(run_id: str, model: str, task: str, score: float) -> ScoreRow:
    return ScoreRow(
        run_id, model, f"{model}-k", task, f"{task}-k", "classification", "logme", score
    )


def test_a_damaged_past_run_is_skipped_with_a_warning(tmp_path, capsys, caplog):
    from ray_logme.pipeline import load_history

    store = FeatureStore(str(tmp_path / "store"))
    good = [_row("good", "a", "t", 1.0), _row("good", "b", "t", 2.0)]
    _write_run(store, "good", "2026-11-01T00:00:00+00:00", good)
    damaged = [_row("dup", "a", "t", 1.0), _row("dup", "a", "t", 3.0)]  # two rows for one pair
    _write_run(store, "dup", "2026-11-02T00:00:00+00:00", damaged)
    store.write_text(layout.run_record("broken"), "{not json")
    with caplog.at_level(logging.WARNING):
        history = load_history(store)
    assert [past.record.run_id for past in history] == ["good"]
    assert "leaving out run dup" in caplog.text
    # A run that finishes late compares only with runs that started before it.
    assert load_history(store, before="2026-11-01T00:00:00+00:00") == []
    assert len(load_history(store, before="2026-11-01T00:00:01+00:00")) == 1

    # The leaderboard command shows the newest run that ranks, and names the one it skipped.
    with caplog.at_level(logging.WARNING):
        assert main(["leaderboard", "--store", str(tmp_path / "store"), "--format", "csv"]) == 0
    shown = capsys.readouterr().out
    assert shown.splitlines()[0].startswith("model,") and "b," in shown
    assert "skipping run dup" in caplog.text
    assert main(["leaderboard", "--store", str(tmp_path / "store"), "--run", "dup"]) == 2
    assert "more than one 'logme' row" in capsys.readouterr().err


def test_score_refuses_ragged_or_non_numeric_features(tmp_path, capsys):
    ragged = pa.table(
        {
            "features": pa.array([[1.0] * 8] * 50 + [[1.0] * 4] * 50, pa.list_(pa.float32())),
            "label": np.arange(100) % 2,
        }
    )
    pq.write_table(ragged, tmp_path / "ragged.parquet")
    assert main(["score", str(tmp_path / "ragged.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "different lengths (4, 8)" in err and "ragged.parquet" in err
    text = pa.table({"features": [["a", "b"]] * 10, "label": np.arange(10) % 2})
    pq.write_table(text, tmp_path / "text.parquet")
    assert main(["score", str(tmp_path / "text.parquet")]) == 2
    assert "must be numbers" in capsys.readouterr().err
    np.savez(tmp_path / "flat.npz", features=np.zeros(10), label=np.arange(10) % 2)
    assert main(["score", str(tmp_path / "flat.npz")]) == 2
    assert "must be [n, d]" in capsys.readouterr().err


def test_bad_cli_values_are_one_line_with_exit_2(tmp_path, capsys):
    store = FeatureStore(str(tmp_path / "store"))
    _write_run(store, "r", "2026-11-01T00:00:00+00:00", [_row("r", "a", "t", 1.0)])
    assert main(["leaderboard", "--store", str(tmp_path / "store"), "--max-params", "lots"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ray-logme: error:") and err.count("\n") == 0 and "lots" in err


def test_store_options_with_credentials_are_refused_without_echoing_them(tmp_path, capsys):
    secret_store = "s3://AKIAEXAMPLE:wJalrSECRET@bucket/prefix"
    assert main(["leaderboard", "--store", secret_store]) == 2
    err = capsys.readouterr().err
    assert "--store" in err and "credentials" in err and "wJalrSECRET" not in err
    config = write_config(tmp_path, tmp_path / "store", [{"hub": "timm", "name": "resnet18"}])
    assert main(["refresh", "--config", str(config), "--store", secret_store]) == 2
    err = capsys.readouterr().err
    assert "s3://***@bucket/prefix" in err and "wJalrSECRET" not in err
