"""A miniature of benchmarks/bench_ranking.py: a real (tiny) zoo, real ground truth, real LogME.

Seven resnet10t backbones of one width (random init; 3 source tasks x 2 amounts of
pre-training) are trained here, loaded through ``ray_logme.hub.load_extractor`` from their saved
checkpoints, and scored with ``ray_logme.metrics.logme`` on three target tasks. The ground truth
is each model's linear-probe test accuracy. LogME must rank them clearly better than chance.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

BENCH_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_ranking.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_ranking", BENCH_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_ranking"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_ranking", None)


@pytest.fixture(scope="module")
def tiny_zoo(bench, tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    try:
        yield bench.run_zoo(bench.BenchConfig.tiny(), tmp_path_factory.mktemp("zoo"), workers=1)
    finally:
        torch.set_num_threads(threads)


def test_tasks_are_deterministic_and_balanced(bench):
    first = bench.make_task.__wrapped__("shapes-new", 50, 20, 3)
    again = bench.make_task.__wrapped__("shapes-new", 50, 20, 3)
    other = bench.make_task.__wrapped__("shapes-new", 50, 20, 4)
    np.testing.assert_array_equal(first.train_images, again.train_images)
    assert not np.array_equal(first.train_images, other.train_images)
    assert first.train_images.shape == (50, 32, 32, 3) and first.train_images.dtype == np.uint8
    assert np.bincount(first.train_labels).tolist() == [10] * 5
    digits = bench.make_task.__wrapped__("digits5-9", 100, 50, 0)
    assert set(digits.train_labels) == set(range(5)) and digits.classes == ("5", "6", "7", "8", "9")


def test_zoo_ground_truth_spreads_and_logme_beats_random_rankings(bench, tiny_zoo):
    zoo, frozen = tiny_zoo.zoo, tiny_zoo.frozen
    assert len(zoo) == 7 and len(frozen) == 7 * 3
    trained = zoo[zoo.pretrain_steps == zoo.pretrain_steps.max()]
    assert (trained.source_accuracy > trained.chance + 0.2).all()  # pre-training learned something
    truth = tiny_zoo.truth_table()
    assert truth.groupby("task")["accuracy"].agg(np.ptp).min() > 0.05  # there is something to rank

    tables = bench.evaluate_zoo(tiny_zoo, num_bootstrap=200)
    per_task = tables["per_task"]
    logme = per_task[per_task.ranking == "LogME"].set_index("task")
    # Independent check of the reported per-task tau_w.
    for task, group in frozen.groupby("task"):
        expected = stats.weightedtau(group["logme"], group["linear_probe"]).statistic
        assert logme.loc[task, "weighted_tau"] == pytest.approx(expected)

    null = bench.random_null_of_mean(truth, num_draws=4000, seed=0)
    mean_tau = logme["weighted_tau"].mean()
    # Clear margin: above the 99th percentile of random rankings' mean tau_w, and at least 0.3.
    assert mean_tau > np.percentile(null, 99)
    assert mean_tau > null.mean() + 0.3
