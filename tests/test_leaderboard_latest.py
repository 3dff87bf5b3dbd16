"""Tests of ray_logme/leaderboard/latest.py: the published leaderboard is one run's (issue 16.5).

Runs publish concurrently (threads, on a local folder and on the moto S3 server) and out of
order; the ``leaderboard/LATEST`` pointer must end on the run that started last, the folder it
names must hold exactly that run's files, the copies under ``leaderboard/`` must all be that
run's once publishers stop, and ``ray-logme leaderboard`` must show the pointer's run. No Ray:
leaderboards are built from small tables.
"""

from __future__ import annotations

import io
import json
import random
import threading
import time

import numpy as np
import pandas as pd
import pytest

from ray_logme.cli import main
from ray_logme.leaderboard import (
    RunRecord,
    build_leaderboard,
    leaderboard_files,
    read_latest,
    write_leaderboard,
)
from ray_logme.leaderboard.latest import file_digest
from ray_logme.storage import FeatureStore, layout
from ray_logme.tables import SCORES, ScoreRow

pytestmark = pytest.mark.timeout(300)

# Run ids sort against their start times: "latest" must come from the time, not the id.
RUNS = [
    ("run-d", "2026-12-01T00:00:00+00:00"),
    ("run-c", "2026-12-02T00:00:00+00:00"),
    ("run-b", "2026-12-03T00:00:00+00:00"),
    ("run-a", "2026-12-04T00:00:00+00:00"),
]
NEWEST = "run-a"


@pytest.fixture(params=["local", "s3"])
def store_root(request, tmp_path) -> str:
    """A root URI under which each trial opens a store of its own."""
    if request.param == "local":
        return str(tmp_path / "stores")
    s3_server = request.getfixturevalue("s3_server")
    return f"s3://{s3_server.new_bucket('latest')}/stores"


def run_leaderboard(run_id: str, timestamp: str, seed: int):
    """A small leaderboard of ``run_id`` whose scores (and so files) differ from run to run."""
    rng = np.random.default_rng(seed)
    rows = [
        {
            "run_id": run_id,
            "model": model,
            "model_key": f"{model}-key",
            "task": task,
            "task_key": f"{task}-key",
            "kind": "classification",
            "metric": "logme",
            "score": float(rng.normal()),
            "num_samples": 100,
            "feature_dim": 8,
            "num_targets": 3,
            "seconds": 0.5,
            "state": "ok",
            "error": "",
        }
        for model in ("m1", "m2", "m3")
        for task in ("t1", "t2")
    ]
    return build_leaderboard(pd.DataFrame(rows), None, run=RunRecord(run_id, timestamp))


def assert_published(store: FeatureStore, board) -> None:
    """The pointer names ``board``'s run; its folder and the copies hold exactly its files."""
    pointer = read_latest(store)
    assert pointer is not None, "no leaderboard/LATEST pointer"
    assert pointer.run_id == board.run_id
    assert pointer.timestamp == board.run.timestamp
    assert pointer.folder == layout.run_leaderboard_dir(board.run_id)
    expected = leaderboard_files(board, board.run_id)
    assert pointer.files == {name: file_digest(data) for name, data in expected.items()}
    for name, data in expected.items():
        assert store.read_bytes(f"{pointer.folder}/{name}") == data, name
        assert store.read_bytes(f"leaderboard/{name}") == data, f"leaderboard/{name} is mixed"
    assert f"Leaderboard of run `{board.run_id}`" in store.read_text("leaderboard/summary.md")


def publish_concurrently(store: FeatureStore, boards) -> tuple[list[str], set[str]]:
    """Publish ``boards`` at once, one thread each, while a reader polls the pointer.

    Returns the failures (a publisher's exception, a file of the pointer's folder that is not
    the pointer's run's) and the run ids the reader saw the pointer name.
    """
    start = threading.Barrier(len(boards) + 1)
    done = threading.Event()
    failures: list[str] = []
    seen: set[str] = set()

    def publish(board):
        start.wait()
        try:
            write_leaderboard(board, store)
        except Exception as exc:  # reported by the test
            failures.append(f"{board.run_id}: {type(exc).__name__}: {exc}")

    def read_while_publishing():
        start.wait()
        while not done.is_set():
            pointer = read_latest(store)
            if pointer is None:
                time.sleep(0.001)
                continue
            seen.add(pointer.run_id)
            for name, digest in pointer.files.items():
                data = store.read_bytes(f"{pointer.folder}/{name}")
                if file_digest(data) != digest:
                    failures.append(f"{pointer.folder}/{name} is not run {pointer.run_id}'s")

    threads = [threading.Thread(target=publish, args=(board,)) for board in boards]
    reader = threading.Thread(target=read_while_publishing)
    for thread in [*threads, reader]:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    reader.join()
    return failures, seen


def test_concurrent_publishers_leave_the_newest_run_published(store_root):
    boards = [run_leaderboard(run_id, ts, seed) for seed, (run_id, ts) in enumerate(RUNS)]
    newest = next(board for board in boards if board.run_id == NEWEST)
    trials = 4 if store_root.startswith("s3://") else 8
    for trial in range(trials):
        store = FeatureStore(f"{store_root}/trial-{trial}")
        order = boards[:]
        random.Random(trial).shuffle(order)
        failures, seen = publish_concurrently(store, order)
        assert not failures, (trial, failures)
        assert_published(store, newest)
        assert seen <= {run_id for run_id, _ in RUNS}


def test_an_older_run_published_after_a_newer_one_is_not_the_latest(store_root):
    store = FeatureStore(store_root)
    newer = run_leaderboard("run-a", "2026-12-02T00:00:00+00:00", seed=1)
    older = run_leaderboard("run-z", "2026-12-01T00:00:00+00:00", seed=2)
    written = write_leaderboard(newer, store)
    assert "leaderboard/LATEST" in written and "leaderboard/index.html" in written
    assert_published(store, newer)

    # The older run finishes (say, resumed) after the newer one: its own folder, nothing else.
    written = write_leaderboard(older, store)
    assert written and all(path.startswith("runs/run-z/leaderboard/") for path in written)
    assert_published(store, newer)
    expected = leaderboard_files(older, "run-z")
    for name, data in expected.items():
        assert store.read_bytes(f"runs/run-z/leaderboard/{name}") == data

    # The latest run republishing (a resume of it) keeps the pointer on it.
    assert "leaderboard/LATEST" in write_leaderboard(newer, store)
    assert_published(store, newer)

    # A pointer that cannot be read is replaced by the next publisher, with a warning.
    store.write_text("leaderboard/LATEST", "{not json")
    assert read_latest(store) is None
    write_leaderboard(older, store)
    assert_published(store, older)


def _score_row(run_id: str, model: str, task: str, score: float) -> ScoreRow:
    return ScoreRow(
        run_id, model, f"{model}-k", task, f"{task}-k", "classification", "logme", score
    )


def _write_finished_run(store: FeatureStore, run_id: str, timestamp: str, bias: float) -> None:
    record = {"run_id": run_id, "timestamp": timestamp, "state": "ok"}
    store.write_text(layout.run_record(run_id), json.dumps(record))
    rows = [
        _score_row(run_id, model, task, bias * (index + 1) + 0.1 * position)
        for index, model in enumerate(("a", "b", "c"))
        for position, task in enumerate(("t1", "t2"))
    ]
    store.write_table(layout.run_scores(run_id), SCORES.from_rows(rows))


def _publish(store: FeatureStore, run_id: str) -> None:
    from ray_logme.pipeline import build_run_leaderboard, load_history, load_run

    run = load_run(store, run_id)
    write_leaderboard(build_run_leaderboard(run, load_history(store, exclude=run_id)), store)


def test_the_leaderboard_command_shows_the_run_the_pointer_names(tmp_path, capsys):
    store = FeatureStore(str(tmp_path / "store"))
    _write_finished_run(store, "old", "2026-12-01T00:00:00+00:00", bias=1.0)
    _write_finished_run(store, "new", "2026-12-02T00:00:00+00:00", bias=-1.0)
    _publish(store, "new")
    _publish(store, "old")  # a resumed older run finishes last
    assert main(["leaderboard", "--store", str(tmp_path / "store")]) == 0
    shown = capsys.readouterr().out
    assert shown == store.read_text("leaderboard/summary.md") + "\n"
    assert "Leaderboard of run `new`" in shown

    # A newer run that scored but never published (it crashed while writing its leaderboard)
    # is not what the published folder shows, so the command does not show it either.
    _write_finished_run(store, "newest", "2026-12-03T00:00:00+00:00", bias=2.0)
    assert main(["leaderboard", "--store", str(tmp_path / "store"), "--format", "csv"]) == 0
    shown = pd.read_csv(io.StringIO(capsys.readouterr().out))
    published = pd.read_csv(tmp_path / "store" / "leaderboard" / "overall.csv")
    assert (published["leaderboard_run_id"] == "new").all()
    assert shown["model"].tolist() == published["model"].tolist()
    assert shown["overall_rank"].tolist() == published["overall_rank"].tolist()
