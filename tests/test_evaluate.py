"""Tests of ray_logme/evaluate/: statistics against independent computations, bootstrap sanity,
the table API, the `ray-logme evaluate` command, and the published ground-truth tables in
tests/data/groundtruth (copies of ../shared/groundtruth, with their sources and licences)."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ray_logme import evaluate as ev
from ray_logme.cli import main as cli_main
from ray_logme.errors import StorageError

IMAGENET_TOP1_CSV = Path(__file__).parent / "data" / "imagenet_top1_published.csv"


# ---------------------------------------------------------------------------------------------
# Independent reference implementations (plain Python double loops)
# ---------------------------------------------------------------------------------------------


def _sign(value: float) -> int:
    return int(value > 0) - int(value < 0)


def brute_weighted_tau_one_direction(x: list[float], y: list[float]) -> float:
    """Vigna's weighted tau with hyperbolic additive weights, ranks from decreasing (x, y)."""
    n = len(x)
    order = sorted(range(n), key=lambda i: (x[i], y[i]), reverse=True)
    weight = [0.0] * n
    for rank, index in enumerate(order):
        weight[index] = 1.0 / (rank + 1)
    concordance = untied_x = untied_y = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            pair = weight[i] + weight[j]
            sx, sy = _sign(x[i] - x[j]), _sign(y[i] - y[j])
            concordance += pair * sx * sy
            untied_x += pair * (sx != 0)
            untied_y += pair * (sy != 0)
    if untied_x == 0 or untied_y == 0:
        return math.nan
    return max(-1.0, min(1.0, concordance / math.sqrt(untied_x * untied_y)))


def brute_weighted_tau(x, y) -> float:
    x, y = list(map(float, x)), list(map(float, y))
    return (brute_weighted_tau_one_direction(x, y) + brute_weighted_tau_one_direction(y, x)) / 2


def brute_kendall_tau_b(x, y) -> float:
    n = len(x)
    concordant = discordant = tied_x_only = tied_y_only = 0
    for i in range(n):
        for j in range(i + 1, n):
            sx, sy = _sign(x[i] - x[j]), _sign(y[i] - y[j])
            if sx and sy:
                concordant += sx * sy > 0
                discordant += sx * sy < 0
            elif sx and not sy:
                tied_y_only += 1
            elif sy and not sx:
                tied_x_only += 1
    denominator = math.sqrt(
        (concordant + discordant + tied_y_only) * (concordant + discordant + tied_x_only)
    )
    return math.nan if denominator == 0 else (concordant - discordant) / denominator


def brute_top_k_relative_accuracy(scores, truth, k: int) -> float:
    """Worst case over every order of tied scores: the k picks' best truth / best truth."""
    models = range(len(scores))
    worst = math.inf
    for order in itertools.permutations(models):
        if any(scores[a] < scores[b] for a, b in itertools.pairwise(order)):
            continue  # not a descending order by score
        worst = min(worst, max(truth[i] for i in order[:k]))
    return worst / max(truth)


def _random_case(rng: np.random.Generator, num_models: int, tie_levels: int | None):
    if tie_levels is None:
        return rng.normal(size=num_models), rng.normal(size=num_models)
    return (
        rng.integers(0, tie_levels, size=num_models).astype(float),
        rng.integers(0, tie_levels + 1, size=num_models).astype(float),
    )


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tie_levels", [None, 2, 3, 5])
def test_weighted_tau_equals_brute_force_definition_and_scipy(tie_levels):
    rng = np.random.default_rng(tie_levels or 0)
    checked = 0
    for _ in range(150):
        x, y = _random_case(rng, int(rng.integers(2, 10)), tie_levels)
        expected = brute_weighted_tau(x, y)
        via_scipy = stats.weightedtau(x, y).statistic
        got = ev.weighted_tau(x, y)
        if math.isnan(expected):
            assert math.isnan(got) and math.isnan(via_scipy)
            continue
        assert got == pytest.approx(expected, abs=1e-12)
        assert got == pytest.approx(via_scipy, abs=1e-12)
        checked += 1
    assert checked > 50


def test_weighted_tau_scipy_documented_example():
    # The example in scipy.stats.weightedtau's docstring (with ties in both arguments).
    assert ev.weighted_tau([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(
        -0.56694968153682723, abs=1e-14
    )


def test_weighted_tau_weighs_the_top_more_than_the_bottom():
    truth = np.arange(10.0)[::-1]  # model 0 is best
    swap_top = truth.copy()
    swap_top[[0, 1]] = swap_top[[1, 0]]
    swap_bottom = truth.copy()
    swap_bottom[[8, 9]] = swap_bottom[[9, 8]]
    assert ev.weighted_tau(truth, truth) == pytest.approx(1.0)
    assert ev.weighted_tau(-truth, truth) == pytest.approx(-1.0)
    # Plain Kendall tau cannot tell the two swaps apart; tau_w penalises the top swap more.
    assert ev.kendall_tau(swap_top, truth) == pytest.approx(ev.kendall_tau(swap_bottom, truth))
    assert ev.weighted_tau(swap_top, truth) < ev.weighted_tau(swap_bottom, truth) < 1.0
    # Rank statistics ignore monotone transforms of the scores; the order of arguments too.
    scores = np.random.default_rng(1).normal(size=10)
    assert ev.weighted_tau(np.exp(scores), truth) == pytest.approx(ev.weighted_tau(scores, truth))
    assert ev.weighted_tau(truth, scores) == pytest.approx(ev.weighted_tau(scores, truth))
    assert math.isnan(ev.weighted_tau(np.ones(10), truth))


def test_kendall_and_pearson_equal_independent_computations():
    rng = np.random.default_rng(7)
    for tie_levels in (None, 3):
        for _ in range(60):
            x, y = _random_case(rng, int(rng.integers(3, 12)), tie_levels)
            expected = brute_kendall_tau_b(x, y)
            got = ev.kendall_tau(x, y)
            if math.isnan(expected):
                assert math.isnan(got)
                continue
            assert got == pytest.approx(expected, abs=1e-12)
            assert got == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
            if np.ptp(x) > 0 and np.ptp(y) > 0:
                assert ev.pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert math.isnan(ev.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_top_k_relative_accuracy_equals_brute_force_including_ties():
    rng = np.random.default_rng(3)
    for _ in range(80):
        num_models = int(rng.integers(2, 7))
        scores = rng.integers(0, 3, size=num_models).astype(float)  # many ties
        truth = rng.uniform(0.1, 1.0, size=num_models)
        for k in (1, 2, 3):
            assert ev.top_k_relative_accuracy(scores, truth, k) == pytest.approx(
                brute_top_k_relative_accuracy(list(scores), list(truth), k)
            )
    # A hand case: the metric picks model 1 (score 5), whose accuracy is 0.8 of the best.
    assert ev.top_k_relative_accuracy([1, 5, 2], [50.0, 40.0, 20.0], 1) == pytest.approx(0.8)
    assert ev.top_k_relative_accuracy([1, 5, 2], [50.0, 40.0, 20.0], 3) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ev.weighted_tau([1, 2, 3], [1, 2]), "same shape"),
        (lambda: ev.weighted_tau([1.0], [2.0]), "at least 2 models"),
        (lambda: ev.weighted_tau([1.0, np.nan, 3.0], [1, 2, 3]), "NaN/Inf"),
        (lambda: ev.pearson([[1, 2]], [[1, 2]]), "1-D"),
        (lambda: ev.top_k_relative_accuracy([1, 2], [1, 2], 0), "k >= 1"),
        (lambda: ev.top_k_relative_accuracy([1, 2], [-1, -2], 1), "must be > 0"),
        (lambda: ev.bootstrap_over_models([1, 2, 3], [1, 2, 3], num_bootstrap=0), ">= 1"),
        (lambda: ev.bootstrap_over_models([1, 2, 3], [1, 2, 3], confidence=1.5), "in \\(0, 1\\)"),
        (
            lambda: ev.bootstrap_over_models([1, 2, 3], [1, 2, 3], ("spearman",)),
            "unknown statistic",
        ),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.5, 0.9, size=12)
    scores = truth + rng.normal(scale=0.1, size=12)
    first = ev.bootstrap_over_models(scores, truth, ("weighted_tau", "top1_rel_acc"), seed=5)
    again = ev.bootstrap_over_models(scores, truth, ("weighted_tau", "top1_rel_acc"), seed=5)
    other = ev.bootstrap_over_models(scores, truth, ("weighted_tau",), seed=6)
    assert first == again
    assert first["weighted_tau"] != other["weighted_tau"]
    interval = first["weighted_tau"]
    assert interval.estimate == pytest.approx(ev.weighted_tau(scores, truth))
    assert -1.0 <= interval.low < interval.estimate < interval.high <= 1.0
    assert interval.num_resamples == ev.DEFAULT_NUM_BOOTSTRAP
    assert first["top1_rel_acc"].high <= 1.0


def test_bootstrap_over_models_resamples_with_replacement_as_a_loop_would():
    # Recompute the resamples with the documented recipe and scipy, one by one.
    rng = np.random.default_rng(11)
    scores, truth = rng.normal(size=8), rng.normal(size=8)
    got = ev.bootstrap_over_models(scores, truth, ("weighted_tau",), num_bootstrap=200, seed=3)
    indices = np.random.default_rng(3).integers(0, 8, size=(200, 8))
    resampled = np.array([stats.weightedtau(scores[i], truth[i]).statistic for i in indices])
    resampled = resampled[np.isfinite(resampled)]
    low, high = np.percentile(resampled, [2.5, 97.5])
    assert got["weighted_tau"].low == pytest.approx(low, abs=1e-12)
    assert got["weighted_tau"].high == pytest.approx(high, abs=1e-12)
    assert got["weighted_tau"].num_resamples == resampled.size


def test_mean_over_tasks_interval_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(123)
    repetitions, true_mean = 300, 0.5
    covered = 0
    for repetition in range(repetitions):
        values = rng.normal(true_mean, 0.2, size=12)
        interval = ev.mean_over_tasks(values, num_bootstrap=400, seed=repetition)
        assert interval.estimate == pytest.approx(values.mean())
        covered += interval.low <= true_mean <= interval.high
    # The percentile bootstrap under-covers a little at 12 tasks (about 0.91 here).
    assert 0.85 <= covered / repetitions <= 0.98


def test_bootstrap_over_models_interval_covers_the_population_kendall_tau():
    # Bivariate normal models: the population Kendall tau is 2/pi * arcsin(rho).
    rng = np.random.default_rng(5)
    rho, repetitions = 0.6, 150
    population_tau = 2 / np.pi * np.arcsin(rho)
    covered = 0
    for repetition in range(repetitions):
        sample = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=30)
        interval = ev.bootstrap_over_models(
            sample[:, 0], sample[:, 1], ("kendall_tau",), num_bootstrap=300, seed=repetition
        )["kendall_tau"]
        covered += interval.low <= population_tau <= interval.high
    assert 0.86 <= covered / repetitions <= 0.99


def test_paired_difference_and_random_ranking_null():
    a = np.array([0.5, 0.6, 0.7, 0.4])
    difference = ev.paired_difference_over_tasks(a, a - 0.1, num_bootstrap=200)
    assert difference.estimate == pytest.approx(0.1)
    assert difference.low == pytest.approx(0.1) and difference.high == pytest.approx(0.1)
    with pytest.raises(ValueError, match="align"):
        ev.paired_difference_over_tasks([1, 2], [1, 2, 3])
    # The figure: tau_w of random rankings of 11 models has a standard deviation of ~0.28.
    null = ev.random_ranking_weighted_tau(np.arange(11.0), num_draws=4000, seed=0)
    assert abs(null.mean()) < 0.02
    assert 0.26 <= null.std() <= 0.30
    check = np.random.default_rng(1).permutation(11).astype(float)
    assert ev.weighted_tau(check, np.arange(11.0)) == pytest.approx(
        stats.weightedtau(check, np.arange(11.0)).statistic
    )


# ---------------------------------------------------------------------------------------------
# Table API and CLI
# ---------------------------------------------------------------------------------------------


def _synthetic_tables(seed: int = 0):
    rng = np.random.default_rng(seed)
    models = [f"model-{i}" for i in range(8)]
    truth_rows, score_rows = [], []
    for task in ("alpha", "beta", "gamma"):
        accuracy = rng.uniform(0.4, 0.95, size=len(models))
        score = accuracy + rng.normal(scale=0.1, size=len(models))
        for model, acc, sc in zip(models, accuracy, score, strict=True):
            truth_rows.append({"model": model, "task": task, "accuracy": acc})
            score_rows.append(
                {"model": model, "task": task, "metric": "logme", "score": sc, "state": "ok"}
            )
    scores = pd.DataFrame(score_rows)
    truth = pd.DataFrame(truth_rows)
    # Noise the pipeline produces: a failed model, a NaN score, a model without ground truth,
    # and another metric in the same table.
    scores.loc[0, "state"] = "failed"
    scores.loc[9, "score"] = np.nan
    extra = [{"model": "unknown", "task": "alpha", "metric": "logme", "score": 9.0, "state": "ok"}]
    other_metric = scores.assign(metric="leep", score=-scores["score"])
    scores = pd.concat([scores, pd.DataFrame(extra), other_metric], ignore_index=True)
    return scores, truth


def test_evaluate_ranking_matches_direct_computation_per_task():
    scores, truth = _synthetic_tables()
    result = ev.evaluate_ranking(scores, truth, metric="logme", num_bootstrap=300, seed=1)
    per_task = result.per_task.set_index("task")
    kept = scores[(scores.metric == "logme") & (scores.state == "ok") & scores.score.notna()]
    for task, group in kept.merge(truth, on=["model", "task"]).groupby("task"):
        row = per_task.loc[task]
        assert row["num_models"] == len(group)
        assert row["weighted_tau"] == pytest.approx(
            stats.weightedtau(group.score, group.accuracy)[0]
        )
        assert row["kendall_tau"] == pytest.approx(stats.kendalltau(group.score, group.accuracy)[0])
        assert row["pearson"] == pytest.approx(stats.pearsonr(group.score, group.accuracy)[0])
        best_by_score = group.loc[group.score.idxmax(), "accuracy"]
        assert row["top1_rel_acc"] == pytest.approx(best_by_score / group.accuracy.max())
        assert row["weighted_tau_ci_low"] <= row["weighted_tau"] <= row["weighted_tau_ci_high"]
    assert list(per_task["num_models"]) == [7, 7, 8]  # failed alpha model, NaN beta model
    summary = result.summary.set_index("statistic")
    assert summary.loc["weighted_tau", "mean"] == pytest.approx(per_task["weighted_tau"].mean())
    assert summary.loc["weighted_tau", "num_tasks"] == 3
    assert "| task |" in result.to_markdown()
    # Same seed, same answer; the other metric is a different (negated) ranking.
    again = ev.evaluate_ranking(scores, truth, metric="logme", num_bootstrap=300, seed=1)
    pd.testing.assert_frame_equal(result.per_task, again.per_task)
    negated = ev.evaluate_ranking(scores, truth, metric="leep", num_bootstrap=50)
    np.testing.assert_allclose(negated.per_task["kendall_tau"], -per_task["kendall_tau"].to_numpy())


def test_evaluate_ranking_groups_by_a_truth_only_column():
    scores, truth = _synthetic_tables()
    scores = scores[(scores.metric == "logme") & (scores.state == "ok")]
    two_protocols = pd.concat(
        [
            truth.assign(protocol="linear_probe"),
            truth.assign(protocol="fine_tune", accuracy=-truth.accuracy + 2),
        ]
    )
    result = ev.evaluate_ranking(
        scores, two_protocols, group_col=["task", "protocol"], num_bootstrap=50
    )
    per_task = result.per_task.set_index(["task", "protocol"])
    assert len(per_task) == 6
    for task in ("alpha", "beta", "gamma"):
        assert per_task.loc[(task, "fine_tune"), "kendall_tau"] == pytest.approx(
            -per_task.loc[(task, "linear_probe"), "kendall_tau"]
        )


def test_evaluate_ranking_rejects_bad_tables():
    scores, truth = _synthetic_tables()
    logme = scores[scores.metric == "logme"]
    with pytest.raises(ValueError, match="mixes metrics"):
        ev.evaluate_ranking(scores, truth)
    with pytest.raises(ValueError, match="no scores with metric 'lgme'"):
        ev.evaluate_ranking(scores, truth, metric="lgme")
    with pytest.raises(ValueError, match="lacks column"):
        ev.evaluate_ranking(logme, truth.rename(columns={"accuracy": "acc"}))
    with pytest.raises(ValueError, match="more than one row"):
        ev.evaluate_ranking(pd.concat([logme, logme]), truth)
    with pytest.raises(ValueError, match="share no"):
        ev.evaluate_ranking(logme.assign(model="other-" + logme.model), truth)
    with pytest.raises(ValueError, match="non-numeric"):
        ev.evaluate_ranking(logme, truth.assign(accuracy="n/a"))
    few = ev.evaluate_ranking(
        logme[logme.model.isin(["model-2", "model-3"])], truth, num_bootstrap=10
    )
    assert few.per_task["num_models"].tolist() == [2, 2, 2]
    assert few.per_task["weighted_tau"].isna().all()


def test_cli_reads_parquet_and_csv_and_writes_the_per_task_table(tmp_path, capsys):
    scores, truth = _synthetic_tables()
    scores = scores[scores.metric == "logme"]
    scores.to_parquet(tmp_path / "scores.parquet", index=False)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    output = tmp_path / "out" / "per_task.csv"
    argv = [
        "evaluate",
        "--scores",
        str(tmp_path / "scores.parquet"),
        "--truth",
        str(tmp_path / "truth.csv"),
    ]
    assert cli_main([*argv, "--output", str(output), "--num-bootstrap", "200"]) == 0
    printed = capsys.readouterr().out
    expected = ev.evaluate_ranking(scores, truth, num_bootstrap=200)
    written = pd.read_csv(output)
    np.testing.assert_allclose(written["weighted_tau"], expected.per_task["weighted_tau"])
    np.testing.assert_allclose(
        written["weighted_tau_ci_low"], expected.per_task["weighted_tau_ci_low"]
    )
    assert "| weighted_tau |" in printed and "| alpha |" in printed

    assert cli_main([*argv, "--format", "json", "--num-bootstrap", "200", "--top-k", "2"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [row["task"] for row in payload["per_task"]] == ["alpha", "beta", "gamma"]
    assert "top2_rel_acc" in payload["per_task"][0]

    assert (
        cli_main(
            [
                "evaluate",
                "--scores",
                str(tmp_path / "missing.parquet"),
                "--truth",
                str(tmp_path / "truth.csv"),
            ]
        )
        == 2
    )
    assert "missing.parquet" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Published ground truth
# ---------------------------------------------------------------------------------------------


def _stable_transfer_rows_by_hand(path: Path) -> list[dict]:
    """Parse the Google table with the csv module, independently of the pandas loader."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    ("trainable", "protocol"), [("False", "linear_probe"), ("True", "fine_tune")]
)
def test_stable_transfer_logme_weighted_tau_per_dataset_and_mean(
    groundtruth_dir, trainable, protocol
):
    path = groundtruth_dir / ev.STABLE_TRANSFER_FILE
    table = ev.load_stable_transfer_table(path)
    assert len(table) == 1710
    subset = table[(table.protocol == protocol) & (table.metric == "logme")]
    result = ev.evaluate_ranking(subset, subset, num_bootstrap=500, seed=0)

    rows = [
        row
        for row in _stable_transfer_rows_by_hand(path)
        if row["Transferability Metric"] == "logme" and row["Trainable Backbone"] == trainable
    ]
    expected = {}
    for dataset in sorted({row["Target Dataset"] for row in rows}):
        chosen = [row for row in rows if row["Target Dataset"] == dataset]
        assert len(chosen) == 19
        score = [float(row["Transferability Metric Score"]) for row in chosen]
        accuracy = [float(row["Test Accuracy"]) for row in chosen]
        expected[dataset] = stats.weightedtau(score, accuracy).statistic
    per_task = result.per_task.set_index("task")
    assert sorted(per_task.index) == sorted(expected)
    for dataset, value in expected.items():
        assert per_task.loc[dataset, "weighted_tau"] == pytest.approx(value, abs=1e-12)
        assert per_task.loc[dataset, "num_models"] == 19
    summary = result.summary.set_index("statistic")
    assert summary.loc["weighted_tau", "mean"] == pytest.approx(np.mean(list(expected.values())))
    assert summary.loc["weighted_tau", "num_tasks"] == 9
    low, high = summary.loc["weighted_tau", ["ci_low", "ci_high"]]
    assert low < summary.loc["weighted_tau", "mean"] < high


def test_stable_transfer_protocols_are_different_ground_truths(groundtruth_dir):
    table = ev.load_stable_transfer_table(groundtruth_dir / ev.STABLE_TRANSFER_FILE)
    logme = table[table.metric == "logme"]
    frozen = logme[logme.protocol == "linear_probe"].set_index(["model", "task"])
    trained = logme[logme.protocol == "fine_tune"].set_index(["model", "task"])
    # The same scores, judged against two different accuracies.
    np.testing.assert_array_equal(frozen["score"], trained.loc[frozen.index, "score"])
    assert not np.allclose(frozen["accuracy"], trained.loc[frozen.index, "accuracy"])
    assert (
        trained.loc[trained.index.get_level_values("task") == "cifar100", "accuracy"].to_numpy()
        > frozen.loc[frozen.index.get_level_values("task") == "cifar100", "accuracy"].to_numpy()
    ).all()


def _tllib_reproducible_cases():
    cases = []
    for metric in ("HScore", "LEEP", "LogME", "NCE"):
        for dataset in (
            "Aircraft",
            "CIFAR10",
            "CIFAR100",
            "Caltech101",
            "DTD",
            "OxfordIIITPets",
            "SUN397",
            "StanfordCars",
        ):
            # Known-bad cases of the README run too, and must fail (strict): if one ever
            # reproduced, the README's note would be wrong and the xfail would say so.
            marks = []
            if dataset in ev.TLLIB_UNREPRODUCIBLE_DATASETS:
                reason = f"README: printed {dataset} correlations cannot be reproduced"
                marks = [pytest.mark.xfail(reason=reason, raises=AssertionError, strict=True)]
            elif (metric, dataset) in ev.TLLIB_COPIED_SCORES:
                reason = "README: the DTD NCE column is a copy of LogME"
                marks = [pytest.mark.xfail(reason=reason, raises=AssertionError, strict=True)]
            cases.append(pytest.param(metric, dataset, marks=marks, id=f"{metric}-{dataset}"))
    return cases


@pytest.mark.parametrize(("metric", "dataset"), _tllib_reproducible_cases())
def test_tllib_printed_correlations_are_reproduced(groundtruth_dir, metric, dataset):
    tables = ev.load_tllib_tables(groundtruth_dir)
    scores = tables.scores[(tables.scores.metric == metric) & (tables.scores.task == dataset)]
    merged = scores.merge(tables.truth, on=["model", "task"])
    assert len(merged) == 10
    reported = tables.reported[
        (tables.reported.metric == metric) & (tables.reported.task == dataset)
    ]
    printed = reported.set_index("statistic")["value"]
    assert ev.pearson(merged.score, merged.accuracy) == pytest.approx(printed["pearson"], abs=0.01)
    score = merged.score.to_numpy()
    tied_groups = [
        np.flatnonzero(score == value) for value in np.unique(score) if (score == value).sum() > 1
    ]
    if not tied_groups:
        assert ev.weighted_tau(score, merged.accuracy) == pytest.approx(
            printed["weighted_tau"], abs=0.0015
        )
        return
    # Scores printed to 3 decimals tie where the originals did not (README point 4): some order of
    # the tied models must reproduce the printed weighted tau.
    candidates = []
    for orders in itertools.product(*(itertools.permutations(group) for group in tied_groups)):
        broken = score.copy()
        for order in orders:
            for position, index in enumerate(order):
                broken[index] = score[index] + position * 1e-7
        candidates.append(ev.weighted_tau(broken, merged.accuracy))
    assert min(abs(value - printed["weighted_tau"]) for value in candidates) < 0.0015


@pytest.mark.parametrize("dataset", ev.TLLIB_UNREPRODUCIBLE_DATASETS)
def test_tllib_flagged_datasets_really_do_not_reproduce(groundtruth_dir, dataset):
    # Keeps the xfail list above honest: every metric of these datasets is far off, not just one.
    tables = ev.load_tllib_tables(groundtruth_dir)
    gaps = []
    for metric in ("HScore", "LEEP", "LogME", "NCE"):
        merged = tables.scores[
            (tables.scores.metric == metric) & (tables.scores.task == dataset)
        ].merge(tables.truth, on=["model", "task"])
        printed = tables.reported[
            (tables.reported.metric == metric) & (tables.reported.task == dataset)
        ]
        gaps.append(
            abs(
                ev.pearson(merged.score, merged.accuracy)
                - printed.set_index("statistic").value["pearson"]
            )
        )
    assert max(gaps) > 0.2


def test_tllib_loader_drops_the_copied_nce_column(groundtruth_dir):
    kept = ev.load_tllib_tables(groundtruth_dir, drop_copied_scores=False)
    dropped = ev.load_tllib_tables(groundtruth_dir)
    assert len(kept.scores) == 320 and len(dropped.scores) == 310
    nce = (
        kept.scores[(kept.scores.metric == "NCE") & (kept.scores.task == "DTD")]
        .set_index("model")
        .score
    )
    logme = (
        kept.scores[(kept.scores.metric == "LogME") & (kept.scores.task == "DTD")]
        .set_index("model")
        .score
    )
    pd.testing.assert_series_equal(nce, logme.loc[nce.index], check_names=False)


def test_imagenet_top1_table_is_sourced_and_covers_both_benchmarks(groundtruth_dir):
    top1 = pd.read_csv(IMAGENET_TOP1_CSV)
    assert top1["source"].str.len().gt(20).all()
    stable = ev.load_stable_transfer_table(groundtruth_dir / ev.STABLE_TRANSFER_FILE)
    tllib = ev.load_tllib_tables(groundtruth_dir)
    assert set(top1[top1.table == "stable_transfer"].model) == set(stable.model)
    assert set(top1[top1.table == "tllib"].model) == set(tllib.truth.model)
    # The torchvision numbers must equal the weight metadata shipped with the installed package.
    torchvision_models = pytest.importorskip("torchvision.models")
    for row in top1[top1.table == "tllib"].itertuples():
        enum_name = row.published_as.split(".")[-2]
        weights = getattr(torchvision_models, enum_name).IMAGENET1K_V1
        assert row.imagenet_top1 == pytest.approx(weights.meta["_metrics"]["ImageNet-1K"]["acc@1"])


def test_imagenet_top1_baseline_is_evaluated_like_any_score(groundtruth_dir):
    top1 = pd.read_csv(IMAGENET_TOP1_CSV)
    stable = ev.load_stable_transfer_table(groundtruth_dir / ev.STABLE_TRANSFER_FILE)
    truth = stable[(stable.metric == "logme") & (stable.protocol == "fine_tune")]
    baseline = truth[["model", "task"]].merge(
        top1[top1.table == "stable_transfer"][["model", "imagenet_top1"]], on="model"
    )
    result = ev.evaluate_ranking(baseline, truth, score_col="imagenet_top1", num_bootstrap=200)
    logme = ev.evaluate_ranking(truth, truth, num_bootstrap=200)
    for task, group in baseline.merge(truth, on=["model", "task"]).groupby("task"):
        expected = stats.weightedtau(group.imagenet_top1, group.accuracy).statistic
        assert result.per_task.set_index("task").loc[task, "weighted_tau"] == pytest.approx(
            expected
        )
    difference = ev.paired_difference_over_tasks(
        result.per_task["weighted_tau"], logme.per_task["weighted_tau"], num_bootstrap=500
    )
    assert difference.estimate == pytest.approx(
        result.per_task["weighted_tau"].mean() - logme.per_task["weighted_tau"].mean()
    )
    assert difference.low <= difference.estimate <= difference.high


def test_markdown_escapes_pipes():
    frame = pd.DataFrame({"task": ["a|b"], "value": [0.12345]})
    evaluation = ev.RankingEvaluation(per_task=frame, summary=frame, confidence=0.95)
    text = evaluation.to_markdown(digits=2)
    assert "a\\|b" in text and "0.12" in text
    assert io.StringIO(text).readline().startswith("| task |")


def test_run_evaluate_reads_tables_from_s3(s3_server, tmp_path):
    scores, truth = _synthetic_tables()
    scores = scores[scores.metric == "logme"]
    bucket = s3_server.new_bucket("evaluate")
    client = s3_server.boto3_client()
    buffer = io.BytesIO()
    scores.to_parquet(buffer, index=False)
    client.put_object(Bucket=bucket, Key="runs/r1/scores.parquet", Body=buffer.getvalue())
    client.put_object(Bucket=bucket, Key="truth.csv", Body=truth.to_csv(index=False).encode())
    result = ev.run_evaluate(
        f"s3://{bucket}/runs/r1/scores.parquet",
        f"s3://{bucket}/truth.csv",
        output_path=tmp_path / "per_task.parquet",
        num_bootstrap=100,
    )
    expected = ev.evaluate_ranking(scores, truth, num_bootstrap=100)
    pd.testing.assert_frame_equal(result.per_task, expected.per_task)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "per_task.parquet"), expected.per_task)
    with pytest.raises(StorageError, match="does not exist"):
        ev.run_evaluate(f"s3://{bucket}/runs/missing/scores.parquet", f"s3://{bucket}/truth.csv")
