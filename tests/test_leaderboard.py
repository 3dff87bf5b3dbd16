"""Tests of ray_logme/leaderboard/: ranking rules, history, Pareto fronts, renderers, writer.

Ranks are checked against a hand-worked example and against an independent brute-force
implementation of the documented rules (counting, not pandas ranking); Pareto fronts against an
O(n^2) dominance check; the HTML page in a real headless Chromium over the DevTools protocol.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from headless_chromium import find_chromium, headless_chromium

from ray_logme.leaderboard import (
    PastRun,
    RunRecord,
    build_leaderboard,
    filter_models,
    format_count,
    json_for_script,
    leaderboard_data,
    markdown_text,
    pareto_front,
    parse_count,
    per_task_wide,
    to_html,
    to_markdown,
    write_leaderboard,
)

XSS_MODEL = "<script>alert(1)</script>"
XSS_TAG = "<img src=x onerror=alert(2)>"
XSS_ERROR = "FeatureError: NaN </script><script>alert(3)</script> <!-- &amp;"
XSS_HUB = '" onmouseover="alert(4)'
XSS_TASK = "pets</th><script>alert(5)</script>"


def scores_table(entries, run_id: str = "run-1") -> pd.DataFrame:
    """A scores table from ``{(model, task): score or "failed" or Exception text}``."""
    rows = []
    for (model, task), value in entries.items():
        failed = isinstance(value, str)
        rows.append(
            {
                "run_id": run_id,
                "model": model,
                "model_key": f"{model}-key",
                "task": task,
                "task_key": f"{task}-key",
                "kind": "classification",
                "metric": "logme",
                "score": np.nan if failed else float(value),
                "num_samples": 100,
                "feature_dim": 8,
                "num_targets": 3,
                "seconds": 0.5,
                "state": "failed" if failed else "ok",
                "error": value if failed else "",
            }
        )
    return pd.DataFrame(rows)


def models_table(names, **columns) -> pd.DataFrame:
    table = pd.DataFrame({"model": list(names)})
    table["model_key"] = [f"{name}-key" for name in names]
    table["hub"] = "timm"
    table["state"] = "ok"
    table["error"] = ""
    for name, values in columns.items():
        table[name] = values
    return table


def overall_by_model(leaderboard) -> pd.DataFrame:
    return leaderboard.overall.set_index("model")


# ---------------------------------------------------------------------------------------------
# Ranking: a hand-worked example
# ---------------------------------------------------------------------------------------------

# Scores (higher is better); "failed" marks a failed pair, a missing key a pair never scored.
#        T1   T2   T3      T4
#   A    3    1    0.5     failed
#   B    2    1    0.7     failed
#   C    2    3    0.7
#   D    1    2    failed
#   E    5
#   F    (models table only: no scores)
HAND_SCORES = {
    ("A", "T1"): 3,
    ("A", "T2"): 1,
    ("A", "T3"): 0.5,
    ("A", "T4"): "TaskError: bad labels",
    ("B", "T1"): 2,
    ("B", "T2"): 1,
    ("B", "T3"): 0.7,
    ("B", "T4"): "TaskError: bad labels",
    ("C", "T1"): 2,
    ("C", "T2"): 3,
    ("C", "T3"): 0.7,
    ("D", "T1"): 1,
    ("D", "T2"): 2,
    ("D", "T3"): "FeatureError: NaN",
    ("E", "T1"): 5,
}


def test_ranks_with_ties_and_missing_entries_match_the_hand_computation():
    lb = build_leaderboard(scores_table(HAND_SCORES), models_table("ABCDEF"))

    # T4 failed for every model: left out, not a reason to call every model incomplete.
    assert lb.tasks == ("T1", "T2", "T3")
    assert lb.unscored_tasks == ("T4",)

    # Per-task fractional ranks among all models scored on the task:
    # T1: E=5 -> 1, A=3 -> 2, B=C=2 share 3 and 4 -> 3.5, D=1 -> 5.
    # T2: C=3 -> 1, D=2 -> 2, A=B=1 share 3 and 4 -> 3.5.   T3: B=C=0.7 -> 1.5, A -> 3.
    expected_task_ranks = {
        ("E", "T1"): 1,
        ("A", "T1"): 2,
        ("B", "T1"): 3.5,
        ("C", "T1"): 3.5,
        ("D", "T1"): 5,
        ("C", "T2"): 1,
        ("D", "T2"): 2,
        ("A", "T2"): 3.5,
        ("B", "T2"): 3.5,
        ("B", "T3"): 1.5,
        ("C", "T3"): 1.5,
        ("A", "T3"): 3,
    }
    per_task = lb.per_task.set_index(["model", "task"])
    for pair, rank in expected_task_ranks.items():
        assert per_task.at[pair, "rank"] == rank, pair
        assert per_task.at[pair, "state"] == "ok"
    assert per_task.at[("D", "T3"), "state"] == "failed"
    assert per_task.at[("D", "T3"), "error"] == "FeatureError: NaN"
    assert per_task.at[("E", "T2"), "state"] == "missing"
    assert math.isnan(per_task.at[("E", "T2"), "rank"])
    assert per_task.xs("T1", level="task")["num_ranked"].eq(5).all()
    assert per_task.xs("T3", level="task")["num_ranked"].eq(3).all()

    overall = overall_by_model(lb)
    # Complete models A, B, C; ranks recomputed among them:
    # T1: A=1, B=C=2.5; T2: C=1, A=B=2.5; T3: B=C=1.5, A=3.
    # Mean ranks: A=(1+2.5+3)/3=13/6, B=(2.5+2.5+1.5)/3=13/6, C=(2.5+1+1.5)/3=5/3.
    # Overall: C=1, A=B tie for 2 and 3 -> 2.5.
    assert list(overall.index[:3]) == ["C", "A", "B"]
    assert overall.loc[["A", "B", "C"], "complete"].all()
    assert overall.at["A", "mean_rank"] == pytest.approx(13 / 6)
    assert overall.at["B", "mean_rank"] == pytest.approx(13 / 6)
    assert overall.at["C", "mean_rank"] == pytest.approx(5 / 3)
    assert overall.at["C", "overall_rank"] == 1
    assert overall.at["A", "overall_rank"] == 2.5
    assert overall.at["B", "overall_rank"] == 2.5
    # Min-max normalised among A, B, C: T1 (2..3): A=1, B=C=0; T2 (1..3): C=1, A=B=0;
    # T3 (0.5..0.7): B=C=1, A=0. Means: A=1/3, B=1/3, C=2/3.
    assert overall.at["A", "mean_normalised_score"] == pytest.approx(1 / 3)
    assert overall.at["B", "mean_normalised_score"] == pytest.approx(1 / 3)
    assert overall.at["C", "mean_normalised_score"] == pytest.approx(2 / 3)
    assert (overall.loc[["A", "B", "C"], "num_comparable"] == 3).all()

    # D (T1, T2) is ranked only among the models that scored both: A, B, C, D.
    # T1: A=1, B=C=2.5, D=4; T2: C=1, D=2, A=B=3.5. Means: A=2.25, B=3, C=1.75, D=3.
    # D ties B for places 3 and 4 -> 3.5 of 4. Normalised: T1 (1..3) D=0; T2 (1..3) D=0.5.
    assert not overall.at["D", "complete"]
    assert math.isnan(overall.at["D", "overall_rank"])
    assert overall.at["D", "mean_rank"] == pytest.approx(3.0)
    assert overall.at["D", "comparable_rank"] == 3.5
    assert overall.at["D", "num_comparable"] == 4
    assert overall.at["D", "mean_normalised_score"] == pytest.approx(0.25)
    assert overall.at["D", "missing_tasks"] == "T3"
    # E (T1 only) is compared with every model that scored T1: first of 5, normalised 1.
    assert overall.at["E", "comparable_rank"] == 1
    assert overall.at["E", "num_comparable"] == 5
    assert overall.at["E", "mean_normalised_score"] == pytest.approx(1.0)
    assert overall.at["E", "tasks_covered"] == 1
    # F has no score: marked, ranked nowhere.
    assert overall.at["F", "tasks_covered"] == 0
    assert math.isnan(overall.at["F", "comparable_rank"])
    assert pd.isna(overall.at["F", "num_comparable"])
    # Order: complete by rank, then incomplete by coverage: D (2 tasks), E (1), F (0).
    assert list(lb.overall["model"]) == ["C", "A", "B", "D", "E", "F"]

    failures = lb.failures.set_index(["model", "task"])
    assert set(failures.index) == {("A", "T4"), ("B", "T4"), ("D", "T3")}
    assert (failures["stage"] == "reduce").all()

    wide = per_task_wide(lb, "rank")
    assert list(wide.index) == list(lb.overall["model"])
    assert wide.at["E", "T1"] == 1 and math.isnan(wide.at["E", "T3"])


# ---------------------------------------------------------------------------------------------
# Ranking: random cases against an independent brute-force implementation of the rules
# ---------------------------------------------------------------------------------------------


def brute_force_rank(values: dict[str, float], higher_is_better: bool) -> dict[str, float]:
    """Fractional rank by counting: 1 + (number strictly better) + (number tied, others) / 2."""
    ranks = {}
    for name, value in values.items():
        better = sum(
            1
            for other, v in values.items()
            if other != name and (v > value if higher_is_better else v < value)
        )
        tied = sum(1 for other, v in values.items() if other != name and v == value)
        ranks[name] = 1 + better + tied / 2
    return ranks


def brute_force_overall(scores: dict[tuple[str, str], float], models, tasks):
    """Per model: (complete, mean_rank, mean_normalised, comparable_rank, num_comparable)."""
    coverage = {m: {t for t in tasks if (m, t) in scores} for m in models}
    result = {}
    for model in models:
        covered = coverage[model]
        if not covered:
            result[model] = (False, None, None, None, None)
            continue
        comparable = [m for m in models if covered <= coverage[m]]
        mean_rank, mean_normalised = {}, {}
        for task in covered:
            values = {m: scores[(m, task)] for m in comparable}
            ranks = brute_force_rank(values, higher_is_better=True)
            low, high = min(values.values()), max(values.values())
            for m in comparable:
                normalised = 1.0 if high == low else (values[m] - low) / (high - low)
                mean_rank[m] = mean_rank.get(m, 0.0) + ranks[m] / len(covered)
                mean_normalised[m] = mean_normalised.get(m, 0.0) + normalised / len(covered)
        # Compare mean ranks with a tolerance: the brute force sums in another order.
        rounded = {m: round(v, 9) for m, v in mean_rank.items()}
        position = brute_force_rank(rounded, higher_is_better=False)[model]
        complete = covered == set(tasks)
        result[model] = (
            complete,
            mean_rank[model],
            mean_normalised[model],
            position,
            len(comparable),
        )
    return result


@pytest.mark.parametrize("seed", range(12))
def test_ranks_match_a_brute_force_implementation_of_the_rules(seed):
    rng = np.random.default_rng(seed)
    models = [f"m{i}" for i in range(int(rng.integers(2, 9)))]
    tasks = [f"t{i}" for i in range(int(rng.integers(1, 5)))]
    entries: dict[tuple[str, str], object] = {}
    for model, task in itertools.product(models, tasks):
        draw = rng.random()
        if draw < 0.15:
            continue  # never scored
        if draw < 0.25:
            entries[(model, task)] = "failed: seeded failure"
        else:
            entries[(model, task)] = float(rng.integers(0, 4))  # small integers: many ties
    ok = {pair: value for pair, value in entries.items() if not isinstance(value, str)}
    lb = build_leaderboard(scores_table(entries), models_table(models))
    scored_tasks = [t for t in tasks if any((m, t) in ok for m in models)]
    assert sorted(lb.tasks) == scored_tasks  # (in order of first appearance)

    per_task = lb.per_task.set_index(["model", "task"])
    for task in scored_tasks:
        expected = brute_force_rank(
            {m: ok[(m, task)] for m in models if (m, task) in ok}, higher_is_better=True
        )
        for model in models:
            rank = per_task.at[(model, task), "rank"]
            if model in expected:
                assert rank == expected[model], (model, task)
            else:
                assert math.isnan(rank)

    expected_overall = brute_force_overall(ok, models, scored_tasks)
    overall = overall_by_model(lb)
    for model, (complete, mean_rank, normalised, position, comparable) in expected_overall.items():
        row = overall.loc[model]
        assert bool(row["complete"]) == complete, model
        if mean_rank is None:
            assert math.isnan(row["mean_rank"]) and math.isnan(row["comparable_rank"])
            continue
        assert row["mean_rank"] == pytest.approx(mean_rank), model
        assert row["mean_normalised_score"] == pytest.approx(normalised), model
        assert row["comparable_rank"] == position, model
        assert row["num_comparable"] == comparable, model
        if complete:
            assert row["overall_rank"] == position
        else:
            assert math.isnan(row["overall_rank"])
    # Complete models come first, in rank order.
    complete_ranks = lb.overall.loc[lb.overall["complete"], "overall_rank"].to_list()
    assert complete_ranks == sorted(complete_ranks)
    assert lb.overall["complete"].to_list() == sorted(lb.overall["complete"], reverse=True)


def test_bad_inputs_give_clear_errors():
    good = scores_table({("A", "T1"): 1.0})
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['score'\]"):
        build_leaderboard(good.drop(columns=["score"]), None)
    with pytest.raises(ValueError, match=r"more than one 'logme' row.*\('A', 'T1'\)"):
        build_leaderboard(pd.concat([good, good]), None)
    with pytest.raises(ValueError, match=r"no scores with metric 'nleep'.*\['logme'\]"):
        build_leaderboard(good, None, metric="nleep")
    with pytest.raises(ValueError, match=r"tasks \['T9'\] are not in the scores table"):
        build_leaderboard(good, None, tasks=["T9"])
    with pytest.raises(ValueError, match=r"lists model\(s\) \['A'\] more than once"):
        build_leaderboard(good, models_table(["A", "A"]))
    # An "ok" row without a finite score is a failure, not a rank.
    broken = scores_table({("A", "T1"): 1.0, ("B", "T1"): 2.0})
    broken.loc[broken["model"] == "B", "score"] = np.inf
    lb = build_leaderboard(broken, None)
    assert list(lb.failures["model"]) == ["B"]
    assert "not finite" in lb.failures.at[0, "error"]
    assert overall_by_model(lb).at["A", "overall_rank"] == 1


def test_other_metrics_rows_are_ignored_and_can_be_ranked_on_their_own():
    logme = scores_table({("A", "T1"): 1.0, ("B", "T1"): 2.0})
    nleep = scores_table({("A", "T1"): 5.0, ("B", "T1"): 3.0}).assign(metric="nleep")
    both = pd.concat([logme, nleep], ignore_index=True)
    assert list(build_leaderboard(both, None).overall["model"]) == ["B", "A"]
    assert list(build_leaderboard(both, None, metric="nleep").overall["model"]) == ["A", "B"]


# ---------------------------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------------------------


def test_history_diff_across_two_runs():
    # Run 1: A > B > C on both tasks. Run 2: A gone, D new and best, C now beats B.
    run1 = scores_table(
        {("A", "T1"): 9, ("A", "T2"): 9, ("B", "T1"): 5, ("B", "T2"): 5, ("C", "T1"): 1},
        run_id="run-1",
    )
    run1 = pd.concat([run1, scores_table({("C", "T2"): 1}, run_id="run-1")], ignore_index=True)
    run2 = scores_table(
        {
            ("B", "T1"): 1,
            ("B", "T2"): 1,
            ("C", "T1"): 5,
            ("C", "T2"): 5,
            ("D", "T1"): 9,
            ("D", "T2"): 9,
            ("E", "T1"): 3,
            ("E", "T2"): "FeatureError: NaN",
        },
        run_id="run-2",
    )
    record1 = RunRecord("run-1", "2025-01-01T00:00:00Z", "cfg1", "0.1.0")
    record2 = RunRecord("run-2", "2025-01-02T00:00:00Z", "cfg2", "0.1.1")
    older = PastRun(RunRecord("run-0"), scores_table({("Z", "T1"): 1.0}, run_id="run-0"))
    # History is newest first and may include the current run itself: it is skipped.
    history = [PastRun(record2, run2), PastRun(record1, run1), older]
    lb = build_leaderboard(run2, models_table("BCDE"), history, run=record2)

    assert lb.run == record2
    assert lb.previous_run == record1
    changes = lb.changes.set_index("model")
    assert set(changes.index) == {"A", "B", "C", "D", "E"}  # Z (two runs back) is not compared
    assert changes.at["A", "change"] == "dropped"
    assert changes.at["A", "previous_rank"] == 1 and math.isnan(changes.at["A", "overall_rank"])
    assert changes.at["D", "change"] == "new" and math.isnan(changes.at["D", "previous_rank"])
    assert changes.at["E", "change"] == "new"
    # B: 2nd -> 3rd (delta -1); C: 3rd -> 2nd (delta +1). E is incomplete: no delta.
    assert (changes.at["B", "previous_rank"], changes.at["B", "overall_rank"]) == (2, 3)
    assert changes.at["B", "rank_delta"] == -1
    assert (changes.at["C", "previous_rank"], changes.at["C", "overall_rank"]) == (3, 2)
    assert changes.at["C", "rank_delta"] == 1
    assert math.isnan(changes.at["E", "rank_delta"])
    overall = overall_by_model(lb)
    assert overall.at["C", "change"] == "kept" and overall.at["C", "rank_delta"] == 1
    assert overall.at["D", "change"] == "new"
    assert lb.tasks_added == () and lb.tasks_removed == ()
    assert list(lb.runs["run_id"]) == ["run-2", "run-2", "run-1", "run-0"]
    assert lb.runs["current"].to_list() == [True, False, False, False]

    markdown = to_markdown(lb)
    assert "- New: D, E" in markdown
    assert "- Dropped: A" in markdown
    assert "B ▼1 (#2 → #3)" in markdown and "C ▲1 (#3 → #2)" in markdown

    # A changed task set is reported.
    run3 = scores_table({("B", "T1"): 1, ("B", "T3"): 1}, run_id="run-3")
    lb3 = build_leaderboard(run3, None, [PastRun(record2, run2)])
    assert lb3.tasks_added == ("T3",) and lb3.tasks_removed == ("T2",)
    # No history: no changes, and the run id comes from the scores.
    alone = build_leaderboard(run2, None)
    assert alone.previous_run is None and alone.changes.empty
    assert alone.run_id == "run-2"
    assert (alone.overall["change"] == "").all()


# ---------------------------------------------------------------------------------------------
# Pareto fronts
# ---------------------------------------------------------------------------------------------


def brute_force_front(score, cost, direction):
    """Point i is on the front iff no j is at least as good on both and strictly on one."""
    n = len(score)
    front = []
    for i in range(n):
        if not (math.isfinite(score[i]) and math.isfinite(cost[i])):
            front.append(False)
            continue
        dominated = False
        for j in range(n):
            if j == i or not (math.isfinite(score[j]) and math.isfinite(cost[j])):
                continue
            cheaper_or_equal = cost[j] <= cost[i] if direction == "min" else cost[j] >= cost[i]
            strictly_cheaper = cost[j] < cost[i] if direction == "min" else cost[j] > cost[i]
            if (
                score[j] >= score[i]
                and cheaper_or_equal
                and (score[j] > score[i] or strictly_cheaper)
            ):
                dominated = True
                break
        front.append(not dominated)
    return front


@pytest.mark.parametrize("direction", ["min", "max"])
@pytest.mark.parametrize("seed", range(20))
def test_pareto_front_matches_brute_force(seed, direction):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    # Few distinct values: duplicates and ties on either axis are common.
    score = rng.integers(0, 6, n).astype(float)
    cost = rng.integers(1, 8, n).astype(float)
    score[rng.random(n) < 0.1] = np.nan
    cost[rng.random(n) < 0.1] = np.nan
    expected = brute_force_front(list(score), list(cost), direction)
    assert pareto_front(score, cost, direction).tolist() == expected


def test_pareto_table_uses_complete_models_and_each_cost_axis():
    # Scores make mean normalised: A=1, B=0.5, C=0, D (incomplete) left out.
    entries = {("A", "T1"): 3, ("B", "T1"): 2, ("C", "T1"): 1, ("D", "T1"): 9}
    entries.update({("A", "T2"): 3, ("B", "T2"): 2, ("C", "T2"): 1, ("D", "T2"): "failed"})
    models = models_table(
        "ABCD",
        num_params=[100e6, 10e6, 1e6, 1.0],
        feature_dim=[768, 2048, 512, 8],
        throughput=[100.0, 50.0, np.nan, 1e6],
    )
    lb = build_leaderboard(scores_table(entries), models)
    pareto = lb.pareto.set_index("model")
    assert set(pareto.index) == {"A", "B", "C"}
    assert pareto["on_front_num_params"].to_dict() == {"A": True, "B": True, "C": True}
    # feature_dim: B (2048, 0.5) is dominated by A (768, 1.0).
    assert pareto["on_front_feature_dim"].to_dict() == {"A": True, "B": False, "C": True}
    # throughput: A is faster and better than B; C has no measured throughput.
    assert pareto["on_front_throughput"].to_dict() == {"A": True, "B": False, "C": False}


# ---------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------


def test_parse_count_and_format_count():
    assert parse_count("50M") == 50e6
    assert parse_count("1.5B") == 1.5e9
    assert parse_count("1.5g") == 1.5e9
    assert parse_count(" 300k ") == 300e3
    assert parse_count("2e6") == 2e6
    assert parse_count(".5T") == 0.5e12
    assert parse_count(42) == 42.0
    for bad in ("", "M", "50MB", "fifty", "-5M", "1,000", "nan", True):
        with pytest.raises(ValueError):
            parse_count(bad)
    assert format_count(5.72e6) == "5.72M"
    assert format_count(1.5e9) == "1.5B"
    assert format_count(512) == "512"
    assert format_count(float("nan")) == ""


def test_filter_models_by_budget_keeps_global_ranks():
    entries = {("A", "T1"): 4, ("B", "T1"): 3, ("C", "T1"): 2, ("D", "T1"): 1}
    models = models_table(
        "ABCD",
        num_params=[300e6, 40e6, 50e6, np.nan],
        feature_dim=[64, 512, 1024, 8],
        throughput=[10.0, 500.0, 200.0, 900.0],
        tags=[["vit"], ["cnn", "mobile"], "cnn", None],
    )
    lb = build_leaderboard(scores_table(entries), models)
    small = filter_models(lb, max_params="50M")
    # D has no known parameter count: a budget cannot vouch for it.
    assert list(small.overall["model"]) == ["B", "C"]
    assert list(small.overall["overall_rank"]) == [2, 3]
    assert set(small.per_task["model"]) == {"B", "C"}
    assert small.filters == ("max_params ≤ 50M",)
    both = filter_models(lb, max_params=45e6, min_throughput="300")
    assert list(both.overall["model"]) == ["B"]
    assert both.filters == ("max_params ≤ 45M", "min_throughput ≥ 300")
    assert list(filter_models(lb, max_feature_dim=512).overall["model"]) == ["A", "B", "D"]
    assert list(filter_models(lb, tags=["cnn"]).overall["model"]) == ["B", "C"]
    assert list(filter_models(lb, tags=["cnn", "mobile"]).overall["model"]) == ["B"]
    assert filter_models(lb, hub="hf").overall.empty
    # Fronts are recomputed among the kept models: A (64 dims, best) dominates B on feature
    # dimension in the full leaderboard; without A, B is on the front.
    assert not lb.pareto.set_index("model").at["B", "on_front_feature_dim"]
    assert small.pareto.set_index("model")["on_front_feature_dim"].to_dict() == {
        "B": True,
        "C": False,
    }


# ---------------------------------------------------------------------------------------------
# Renderers: escaping
# ---------------------------------------------------------------------------------------------


def hostile_inputs():
    """(scores, models, history, run) whose hub-supplied strings try to inject markup everywhere."""
    entries = {
        ("resnet18", "flowers"): 0.5,
        ("resnet18", XSS_TASK): 0.2,
        ("a|b`*[x](http://evil.invalid)", XSS_TASK): 0.35,
        ("vit_small", "flowers"): 0.9,
        ("vit_small", XSS_TASK): XSS_ERROR,
        (XSS_MODEL, "flowers"): 0.1,
        (XSS_MODEL, XSS_TASK): 0.4,
        ("a|b`*[x](http://evil.invalid)", "flowers"): 0.3,
    }
    names = ["resnet18", "vit_small", XSS_MODEL, "a|b`*[x](http://evil.invalid)", "broken"]
    models = models_table(
        names,
        num_params=[11.7e6, 22e6, 5e6, 1e9, np.nan],
        feature_dim=[512, 384, 64, 4096, np.nan],
        throughput=[900.0, 400.0, 2000.0, 10.0, np.nan],
        imagenet_top1=[69.7, 81.4, np.nan, np.nan, np.nan],
        tags=[["cnn"], ["vit"], [XSS_TAG, "ok"], [], []],
    )
    models.loc[models["model"] == XSS_MODEL, "hub"] = XSS_HUB
    models.loc[models["model"] == "broken", ["state", "error"]] = ["failed", XSS_ERROR]
    previous = scores_table({("resnet18", "flowers"): 1.0, ("gone", "flowers"): 0.0}, "run-0")
    history = [PastRun(RunRecord("run-0", "2025-01-01T00:00:00Z"), previous)]
    record = RunRecord("run-1", "2025-01-02T00:00:00Z", XSS_HUB, "0.1.0")
    return scores_table(entries), models, history, record


def hostile_leaderboard():
    """A leaderboard whose hub-supplied strings try to inject markup everywhere."""
    scores, models, history, record = hostile_inputs()
    return build_leaderboard(scores, models, history, run=record)


def test_html_escapes_every_hub_supplied_string():
    lb = hostile_leaderboard()
    page = to_html(lb)
    for raw in (XSS_MODEL, XSS_TAG, XSS_ERROR, XSS_HUB, XSS_TASK, "<!--"):
        assert raw not in page, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "&quot; onmouseover=&quot;alert(4)" in page
    # Exactly the page's two script elements, no event-handler attributes, no external URL.
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert not re.search(r"<[^>]+\son\w+=", page)
    url_attributes = re.findall(r"""<[^<>]*\s((?:src|href|action|xlink:href)\s*=[^\s>]*)""", page)
    assert url_attributes == ['href="#failures"']
    # The embedded JSON gives back the raw strings.
    match = re.search(
        r'<script type="application/json" id="leaderboard-data">(.*?)</script>', page, re.S
    )
    data = json.loads(match.group(1))
    assert data == json.loads(json.dumps(leaderboard_data(lb)))
    assert XSS_MODEL in [row["model"] for row in data["overall"]]
    assert XSS_ERROR in [row["error"] for row in data["failures"]]


def test_json_for_script_cannot_end_the_script_element():
    data = {"a": "</script><script>alert(1)</script>", "b": "<!-- \u2028 & >", "c": [1.5, None]}
    text = json_for_script(data)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == data
    with pytest.raises(ValueError):
        json_for_script({"x": float("nan")})


def test_markdown_escapes_hub_strings_and_keeps_tables_intact():
    lb = hostile_leaderboard()
    markdown = to_markdown(lb)
    assert XSS_MODEL not in markdown and XSS_TAG not in markdown
    # CommonMark: a backslash-escaped "<" is a literal character, never the start of a tag.
    assert not re.search(r"(?<!\\)<", markdown)
    assert "\\<script\\>alert(1)\\</script\\>" in markdown
    assert "\\[x\\](http://evil.invalid)" in markdown  # no link
    assert markdown_text("a|b") == "a\\|b"
    assert markdown_text("line\nbreak") == "line break"
    assert markdown_text("x" * 50, max_chars=10) == "x" * 9 + "…"
    # Every row of a table has as many unescaped pipes as its header.
    for block in re.findall(r"((?:^\|.*\|$\n?)+)", markdown, re.M):
        counts = {len(re.findall(r"(?<!\\)\|", line)) for line in block.strip().splitlines()}
        assert len(counts) == 1, block


# ---------------------------------------------------------------------------------------------
# The page in a real browser
# ---------------------------------------------------------------------------------------------

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium binary on PATH (apt-get install chromium; .ci/run installs it)",
)

ROW_MODELS_JS = (
    "Array.from(document.querySelectorAll('#overall-table tbody tr'))"
    ".filter(r => !r.hidden).map(r => r.dataset.model)"
)


@needs_chromium
def test_page_in_headless_chromium(tmp_path: Path):
    lb = hostile_leaderboard()
    page_path = tmp_path / "index.html"
    page_path.write_text(to_html(lb), encoding="utf-8")
    broken_path = tmp_path / "broken.html"
    broken_path.write_text(
        "<!DOCTYPE html><html><body><script>console.error('seeded');missing()</script>"
        '<img src="http://127.0.0.1:9/x.png"></body></html>',
        encoding="utf-8",
    )
    with headless_chromium(CHROMIUM) as browser:
        page = browser.new_page()
        page.goto(page_path.as_uri())
        page.settle()
        assert page.evaluate("document.body.dataset.ready") == "true"
        assert page.evaluate("document.body.dataset.models") == str(len(lb.overall))
        # The expected rows, in rank order, with hostile names shown as text.
        assert page.evaluate(ROW_MODELS_JS) == list(lb.overall["model"])
        model_cells = page.evaluate(
            "Array.from(document.querySelectorAll('#overall-table .model')).map(e => e.textContent)"
        )
        assert model_cells == list(lb.overall["model"])
        assert XSS_TAG in page.evaluate(
            "Array.from(document.querySelectorAll('.tag')).map(e => e.textContent)"
        )
        headers = page.evaluate(
            "Array.from(document.querySelectorAll('#overall-table thead th')).map(e => e.textContent)"
        )
        assert headers[-2:] == ["flowers", XSS_TASK]  # per-task columns
        assert page.evaluate("document.scripts.length") == 2
        assert page.evaluate("document.querySelectorAll('img, iframe, object').length") == 0
        failures = page.evaluate(
            "Array.from(document.querySelectorAll('#failures-table tbody tr'))"
            ".map(r => Array.from(r.cells).map(c => c.textContent))"
        )
        assert failures == [
            [row["stage"], row["model"], row["task"], row["error"]]
            for row in lb.failures.to_dict("records")
        ]
        assert page.evaluate(
            "Array.from(document.querySelectorAll('#dropped-models li')).map(e => e.textContent)"
        ) == ["gone"]

        # Sorting: mean normalised score, descending first, missing values last; then ascending.
        column = headers.index("mean norm. score") + 1
        click = (
            f"document.querySelector('#overall-table thead th:nth-child({column}) button').click()"
        )
        page.evaluate(click)
        by_score = lb.overall.sort_values(
            "mean_normalised_score", ascending=False, na_position="last", kind="stable"
        )
        assert page.evaluate(ROW_MODELS_JS) == list(by_score["model"])
        page.evaluate(click)
        ascending = lb.overall.sort_values(
            "mean_normalised_score", ascending=True, na_position="last", kind="stable"
        )
        assert page.evaluate(ROW_MODELS_JS) == list(ascending["model"])
        # Rank-change column and the search box.
        change_column = headers.index("change")
        changes = page.evaluate(
            "Object.fromEntries(Array.from(document.querySelectorAll('#overall-table tbody tr'))"
            f".map(r => [r.dataset.model, r.cells[{change_column}].textContent]))"
        )
        # resnet18 was 1st of the previous run; now the three complete models tie for 2nd.
        assert changes["resnet18"] == "▼1"
        assert changes["vit_small"] == "new" and changes[XSS_MODEL] == "new"
        page.evaluate(
            "const s = document.getElementById('model-search'); s.value = 'RESNET';"
            "s.dispatchEvent(new Event('input'))"
        )
        assert page.evaluate(ROW_MODELS_JS) == ["resnet18"]
        # The cost-axis buttons switch the plot; the front points are labelled circles.
        page.evaluate("document.querySelector('button[data-axis=throughput]').click()")
        assert page.evaluate(
            "Array.from(document.querySelectorAll('figure.plot-figure'))"
            ".filter(f => !f.hidden).map(f => f.dataset.axis)"
        ) == ["throughput"]
        front = page.evaluate(
            "Array.from(document.querySelectorAll("
            "'figure[data-axis=num_params] circle.on-front')).map(c => c.dataset.model)"
        )
        expected_front = lb.pareto.loc[lb.pareto["on_front_num_params"], "model"]
        assert sorted(front) == sorted(expected_front)
        page.settle()
        assert page.report.errors() == []
        # Self-contained: the page itself is the only request.
        assert page.report.requests == [page_path.as_uri()]

        # The harness does see errors and requests when a page has them.
        control = browser.new_page()
        control.goto(broken_path.as_uri())
        control.settle()
        errors = control.report.errors()
        assert any("seeded" in error for error in errors)
        assert any("missing is not defined" in error for error in errors)
        assert "http://127.0.0.1:9/x.png" in control.report.requests


# ---------------------------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------------------------


def test_empty_and_all_failed_runs_still_render():
    empty = build_leaderboard(
        scores_table({}).reindex(columns=["model", "task", "score", "state"]), None
    )
    assert empty.overall.empty and empty.per_task.empty and empty.tasks == ()
    all_failed = build_leaderboard(
        scores_table({("A", "T1"): "TaskError: x", ("B", "T1"): "TaskError: y"}),
        models_table("AB", num_params=[1e6, 2e6]),
    )
    assert all_failed.tasks == () and all_failed.unscored_tasks == ("T1",)
    assert not all_failed.overall["complete"].any()
    assert len(all_failed.failures) == 2 and all_failed.pareto.empty
    for lb in (empty, all_failed):
        assert "<svg" not in to_html(lb)  # no plot without complete models, but a page
        assert to_html(lb).startswith("<!DOCTYPE html>")
        assert to_markdown(lb).startswith("# Model leaderboard")
        # Same column types as a full leaderboard, so the Parquet schemas match across runs.
        full = hostile_leaderboard()
        for name, table in lb.tables().items():
            assert list(table.columns) == list(full.tables()[name].columns), name
        assert lb.changes["previous_rank"].dtype == "float64"


# ---------------------------------------------------------------------------------------------
# Writing through the feature store (local folder and the moto S3 server)
# ---------------------------------------------------------------------------------------------


def as_written(table: pd.DataFrame) -> pd.DataFrame:
    """What a table looks like after the writer: text columns as str, missing text as ""."""
    written = table.copy()
    for column in written.columns:
        if written[column].dtype == object:
            written[column] = written[column].map(
                lambda v: (
                    ""
                    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))
                    else str(v)
                )
            )
    return written


@pytest.fixture(params=["local", "s3"])
def feature_store(request, tmp_path):
    from ray_logme.storage import FeatureStore

    if request.param == "local":
        return FeatureStore(str(tmp_path / "store"))
    s3_server = request.getfixturevalue("s3_server")
    return FeatureStore(f"s3://{s3_server.new_bucket('leaderboard')}/store")


def test_write_leaderboard_round_trips_through_the_store(feature_store):
    lb = hostile_leaderboard()
    formula = '=HYPERLINK("http://evil.invalid","x")'
    lb.overall.loc[lb.overall["model"] == "resnet18", "hub"] = formula
    written = write_leaderboard(lb, feature_store, "run-1")
    names = ["overall", "per_task", "pareto", "changes", "failures", "runs"]
    for prefix in ("runs/run-1/leaderboard", "leaderboard"):
        expected_files = [f"{prefix}/{name}.{ext}" for name in names for ext in ("parquet", "csv")]
        expected_files += [f"{prefix}/summary.md", f"{prefix}/index.html"]
        assert set(expected_files) <= set(written)
        for relpath in expected_files:
            assert written[relpath] == feature_store.uri_of(relpath)
            assert feature_store.exists(relpath), relpath
        for name in names:
            table = lb.tables()[name]
            # Every table names the run whose leaderboard it is, in a last column.
            parquet = feature_store.read_table(f"{prefix}/{name}.parquet").to_pandas()
            assert list(parquet.columns) == [*table.columns, "leaderboard_run_id"]
            assert (parquet.pop("leaderboard_run_id") == "run-1").all()
            pd.testing.assert_frame_equal(
                parquet.astype(object), as_written(table).astype(object), check_dtype=False
            )
            csv = pd.read_csv(
                io.StringIO(feature_store.read_text(f"{prefix}/{name}.csv")),
                keep_default_na=False,
            )
            assert list(csv.columns) == [*table.columns, "leaderboard_run_id"]
            assert (csv["leaderboard_run_id"] == "run-1").all()
            assert len(csv) == len(table)
        assert feature_store.read_text(f"{prefix}/summary.md") == to_markdown(lb)
        assert feature_store.read_text(f"{prefix}/index.html") == to_html(lb)
        # Parquet keeps the exact string; the CSV copy cannot run as a spreadsheet formula.
        overall_csv = pd.read_csv(
            io.StringIO(feature_store.read_text(f"{prefix}/overall.csv")), keep_default_na=False
        ).set_index("model")
        assert overall_csv.at["resnet18", "hub"] == "'" + formula
        assert overall_csv.at["resnet18", "rank_delta"] == "-1.0"  # numbers are left alone
    pointer = json.loads(feature_store.read_text("leaderboard/LATEST"))
    assert written["leaderboard/LATEST"] == feature_store.uri_of("leaderboard/LATEST")
    assert pointer["run_id"] == "run-1" and pointer["folder"] == "runs/run-1/leaderboard"
    assert pointer["timestamp"] == "2025-01-02T00:00:00Z"
    assert set(pointer["files"]) == {path.split("/")[-1] for path in expected_files}
    with pytest.raises(ValueError, match="run_id"):
        write_leaderboard(lb, feature_store, "../x")
    # Without "latest", only the run's own folder is written.
    assert all(
        path.startswith("runs/run-2/")
        for path in write_leaderboard(lb, feature_store, "run-2", latest=False)
    )


# ---------------------------------------------------------------------------------------------
# Single-modality regression: exactly the leaderboard of the code before modality awareness
# ---------------------------------------------------------------------------------------------

GOLDEN_PATH = Path(__file__).parent / "data" / "leaderboard_single_modality_golden.json"


def seeded_single_modality_inputs(seed: int):
    """(scores, models, history, run) of one modality: random ties, failures, missing pairs and
    costs, a previous run with other models and a changed task set."""
    rng = np.random.default_rng(1000 + seed)
    models = [f"m{i}" for i in range(int(rng.integers(4, 10)))]
    tasks = [f"t{i}" for i in range(int(rng.integers(2, 5)))]

    def entries_of(names, task_names):
        entries: dict[tuple[str, str], object] = {}
        for model, task in itertools.product(names, task_names):
            draw = rng.random()
            if draw < 0.1:
                continue
            if draw < 0.2:
                entries[(model, task)] = f"FeatureError: seeded failure {model} {task}"
            else:
                entries[(model, task)] = float(rng.integers(0, 5)) - 2.5
        return entries

    scores = scores_table(entries_of(models, tasks), run_id=f"run-{seed}-b")
    table = models_table(
        models,
        num_params=np.where(rng.random(len(models)) < 0.2, np.nan, rng.integers(1, 9, len(models)))
        * 1e6,
        feature_dim=rng.choice([64.0, 128.0, 512.0, np.nan], len(models)),
        throughput=np.where(rng.random(len(models)) < 0.2, np.nan, rng.random(len(models)) * 900),
        tags=[["cnn"] if i % 2 else ["vit", "small"] for i in range(len(models))],
    )
    previous_models = [*models[1:], "old"]
    previous_tasks = [*tasks[:-1], "t_old"]
    previous = scores_table(entries_of(previous_models, previous_tasks), run_id=f"run-{seed}-a")
    history = [PastRun(RunRecord(f"run-{seed}-a", "2025-01-01T00:00:00Z", "c", "0.1"), previous)]
    record = RunRecord(f"run-{seed}-b", "2025-01-02T00:00:00Z", "c", "0.1")
    return scores, table, history, record


def single_modality_cases():
    """name -> (scores, models, history, run, filter kwargs or None)."""
    cases = {
        "hand": (scores_table(HAND_SCORES), models_table("ABCDEF"), None, None, None),
        "hostile": (*hostile_inputs(), None),
    }
    for seed in range(4):
        cases[f"seeded-{seed}"] = (*seeded_single_modality_inputs(seed), None)
    cases["seeded-0-filtered"] = (*seeded_single_modality_inputs(0), {"max_params": "5M"})
    return cases


def page_without_scripts(page: str) -> str:
    """The page less its scripts and CSP (hash of the script): what a reader sees."""
    page = re.sub(r"<script[^>]*>.*?</script>", "<script></script>", page, flags=re.S)
    return re.sub(r'http-equiv="Content-Security-Policy" content="[^"]*"', "CSP", page)


def without_style(page: str) -> str:
    return re.sub(r"<style>.*?</style>", "<style></style>", page, flags=re.S)


def render_case(case):
    scores, models, history, run, filters = case
    lb = build_leaderboard(scores, models, history, run=run)
    if filters:
        lb = filter_models(lb, **filters)
    return {
        "data": json.loads(json.dumps(leaderboard_data(lb))),
        "markdown": to_markdown(lb),
        "html": page_without_scripts(to_html(lb)),
    }


def with_modality(case, where: str):
    """The case with every model declared "image" (a model that failed to load: unknown) in the
    models table (``where="models"``) or every scores row carrying its task's modality
    (``where="scores"``), history included."""
    scores, models, history, run, filters = case
    if where == "models":
        models = models.copy()
        models["modality"] = np.where(models["state"] == "failed", None, "image")
    else:
        scores = scores.assign(modality="image")
        history = [PastRun(p.record, p.scores.assign(modality="image")) for p in history or ()]
    return scores, models, history, run, filters


def assert_same_as_golden(rendered, golden, name):
    """Every table value, Markdown and page of ``golden`` (the pre-modality code) unchanged;
    columns and keys added since are not compared."""
    for key, expected in golden["data"].items():
        got = rendered["data"][key]
        if isinstance(expected, list) and expected and isinstance(expected[0], dict):
            assert len(got) == len(expected), (name, key)
            for row, old in zip(got, expected, strict=True):
                assert {column: row[column] for column in old} == old, (name, key)
        else:
            assert got == expected, (name, key)
    assert rendered["markdown"] == golden["markdown"], name
    # The style sheet is an asset like the script: a changed rule is not a changed leaderboard.
    assert without_style(rendered["html"]) == without_style(golden["html"]), name


@pytest.mark.parametrize("where", ["none", "models", "scores"])
def test_single_modality_runs_rank_and_render_exactly_as_before(where):
    golden = json.loads(GOLDEN_PATH.read_text())
    cases = single_modality_cases()
    assert sorted(golden) == sorted(cases)
    for name, case in cases.items():
        if where != "none":
            case = with_modality(case, where)
        assert_same_as_golden(render_case(case), golden[name], name)


# ---------------------------------------------------------------------------------------------
# Two modalities: image models on image tasks, text models on text tasks
# ---------------------------------------------------------------------------------------------

LOAD_ERROR = "model failed to load: UnknownModelError: timm has no model 'nope'"
LOAD_TRACEBACK = "Traceback (most recent call last):\n  ...\nUnknownModelError: nope\n"
NAN_ERROR = "model I4 produced non-finite features (NaN/Inf) on 3 of 100 rows of task F, shard 0"
NAN_TRACEBACK = "Traceback (most recent call last):\n  ...\nFeatureError: NaN\n"

# Image tasks P, F; text tasks S, N. U failed to load (modality unknown): every pair failed.
#        P     F        S     N
#   I1   3     1
#   I2   2     2
#   I3   2     3
#   I4   5     NaN (extract failure)
#   X1               0.5   0.2
#   X2               0.5   0.9
#   X3               0.1   scoring failed (reduce failure)
TWO_MODALITY_SCORES = {
    ("I1", "P"): 3,
    ("I1", "F"): 1,
    ("I2", "P"): 2,
    ("I2", "F"): 2,
    ("I3", "P"): 2,
    ("I3", "F"): 3,
    ("I4", "P"): 5,
    ("I4", "F"): NAN_ERROR,
    ("X1", "S"): 0.5,
    ("X1", "N"): 0.2,
    ("X2", "S"): 0.5,
    ("X2", "N"): 0.9,
    ("X3", "S"): 0.1,
    ("X3", "N"): "scoring failed: LinAlgError: SVD did not converge",
    ("U", "P"): LOAD_ERROR,
    ("U", "F"): LOAD_ERROR,
    ("U", "S"): LOAD_ERROR,
    ("U", "N"): LOAD_ERROR,
}
TWO_MODALITY_MODELS = ["I1", "I2", "I3", "I4", "X1", "X2", "X3", "U"]
TASK_MODALITY = {"P": "image", "F": "image", "S": "text", "N": "text"}


def two_modality_models() -> pd.DataFrame:
    """The models table as the extract stage writes it: U has no modality, the error of the
    first failed pair is repeated on the model's row."""
    models = models_table(
        TWO_MODALITY_MODELS,
        modality=["image"] * 4 + ["text"] * 3 + [None],
        num_params=[10e6, 5e6, 20e6, 1e6, 30e6, 100e6, 1e6, np.nan],
        feature_dim=[512, 512, 512, 512, 384, 384, 384, np.nan],
        throughput=[100.0, 200.0, 50.0, 300.0, 80.0, 40.0, 90.0, np.nan],
    )
    models.loc[models["model"] == "I4", "error"] = NAN_ERROR
    models.loc[models["model"] == "U", ["state", "error"]] = ["failed", LOAD_ERROR]
    return models


def two_modality_status() -> pd.DataFrame:
    """The extract status table: every (model, task) pair, cross-modality pairs skipped."""
    rows = []
    for model in TWO_MODALITY_MODELS:
        for task, task_modality in TASK_MODALITY.items():
            state, error, tb = "ok", None, None
            if model == "U":
                state, error, tb = "failed", LOAD_ERROR, LOAD_TRACEBACK
            elif (model[0] == "I") != (task_modality == "image"):
                state, error = "skipped", f"model {model!r} embeds other inputs than {task!r}"
            elif (model, task) == ("I4", "F"):
                state, error, tb = "failed", NAN_ERROR, NAN_TRACEBACK
            rows.append(
                {
                    "run_id": "run-1",
                    "model": model,
                    "model_key": f"{model}-key",
                    "task": task,
                    "task_key": f"{task}-key",
                    "state": state,
                    "error": error,
                    "traceback": tb,
                }
            )
    return pd.DataFrame(rows)


def test_two_modalities_rank_each_model_among_its_own_modality():
    lb = build_leaderboard(
        scores_table(TWO_MODALITY_SCORES), two_modality_models(), status=two_modality_status()
    )
    assert lb.modalities == ("image", "text") and lb.multimodal
    assert lb.tasks == ("P", "F", "S", "N")
    assert lb.task_modalities == ("image", "image", "text", "text")
    assert lb.tasks_of("image") == ("P", "F") and lb.tasks_of("") == lb.tasks

    overall = overall_by_model(lb)
    # Image, complete I1, I2, I3. Ranks among them: P: I1=1, I2=I3=2.5; F: I3=1, I2=2, I1=3.
    # Means: I1=2, I2=2.25, I3=1.75 -> I3=1, I1=2, I2=3. Normalised: P (2..3) I1=1, I2=I3=0;
    # F (1..3) I1=0, I2=0.5, I3=1 -> I1=0.5, I2=0.25, I3=0.5.
    expected = {
        "I3": (1, 1.75, 0.5),
        "I1": (2, 2.0, 0.5),
        "I2": (3, 2.25, 0.25),
        # Text, complete X1, X2: S ties (1.5 each); N: X2=1, X1=2. Means X1=1.75, X2=1.25.
        # Normalised: S equal -> 1 each; N (0.2..0.9): X1=0, X2=1 -> X1=0.5, X2=1.
        "X2": (1, 1.25, 1.0),
        "X1": (2, 1.75, 0.5),
    }
    for model, (rank, mean_rank, normalised) in expected.items():
        row = overall.loc[model]
        assert row["complete"] and row["overall_rank"] == rank, model
        assert row["mean_rank"] == pytest.approx(mean_rank), model
        assert row["mean_normalised_score"] == pytest.approx(normalised), model
        assert row["comparable_rank"] == rank and row["num_tasks"] == 2, model
        assert row["missing_tasks"] == "", model
    assert overall.loc[["I1", "I2", "I3"], "num_comparable"].eq(3).all()
    assert overall.loc[["X1", "X2"], "num_comparable"].eq(2).all()
    # I4 scored P only: among I1..I4 on P it is first (normalised (5-2)/(5-2) = 1).
    assert not overall.at["I4", "complete"] and math.isnan(overall.at["I4", "overall_rank"])
    assert (overall.at["I4", "comparable_rank"], overall.at["I4", "num_comparable"]) == (1, 4)
    assert overall.at["I4", "mean_normalised_score"] == pytest.approx(1.0)
    assert overall.at["I4", "missing_tasks"] == "F"
    # X3 scored S only: X1 = X2 = 1.5, X3 = 3 of 3; normalised (0.1 - 0.1) / 0.4 = 0.
    assert (overall.at["X3", "comparable_rank"], overall.at["X3", "num_comparable"]) == (3, 3)
    assert overall.at["X3", "mean_normalised_score"] == 0
    assert overall.at["X3", "missing_tasks"] == "N"
    # U failed to load: unknown modality, every task, no rank.
    assert overall.at["U", "modality"] == "" and overall.at["U", "num_tasks"] == 4
    assert overall.at["U", "tasks_covered"] == 0 and math.isnan(overall.at["U", "comparable_rank"])
    assert overall["modality"].to_dict() == {
        **dict.fromkeys(["I1", "I2", "I3", "I4"], "image"),
        **dict.fromkeys(["X1", "X2", "X3"], "text"),
        "U": "",
    }
    # One modality after the other, unknown last.
    assert list(lb.overall["model"]) == ["I3", "I1", "I2", "I4", "X2", "X1", "X3", "U"]

    # per_task: only a model's own tasks (no image model is "missing" a text task).
    per_task = lb.per_task.set_index(["model", "task"])
    assert len(per_task) == 4 * 2 + 3 * 2 + 4
    assert not any(
        model[0] == "I" and TASK_MODALITY[task] == "text" for model, task in per_task.index
    )
    assert (per_task["state"] != "missing").all()
    assert per_task.xs("U", level="model")["state"].eq("failed").all()
    # Per-task ranks among every ok score: P: I4=1, I1=2, I2=I3=3.5; N: X2=1, X1=2.
    ranks = per_task["rank"].dropna().to_dict()
    assert ranks[("I4", "P")] == 1 and ranks[("I1", "P")] == 2 and ranks[("I2", "P")] == 3.5
    assert ranks[("X2", "N")] == 1 and ranks[("X1", "N")] == 2
    assert per_task.xs("P", level="task")["num_ranked"].eq(4).all()
    assert per_task.xs("N", level="task")["num_ranked"].eq(2).all()
    assert dict(zip(lb.per_task["task"], lb.per_task["modality"], strict=True)) == TASK_MODALITY

    # Pareto fronts within each modality. Parameters: I2 (5M, 0.25) and I1 (10M, 0.5) are on it,
    # I3 (20M, 0.5) is dominated by I1. X1 (30M, 0.5) is on the text front, though I1 (10M, 0.5)
    # would dominate it if the modalities were mixed.
    pareto = lb.pareto.set_index("model")
    assert set(pareto.index) == {"I1", "I2", "I3", "X1", "X2"}
    assert pareto["on_front_num_params"].to_dict() == {
        "I1": True,
        "I2": True,
        "I3": False,
        "X1": True,
        "X2": True,
    }
    assert pareto["modality"].to_dict() == overall.loc[pareto.index, "modality"].to_dict()


def test_two_modalities_match_each_modality_ranked_alone():
    """Each modality's rows equal the leaderboard of that modality's models and tasks alone."""
    scores = scores_table(TWO_MODALITY_SCORES)
    models = two_modality_models()
    lb = build_leaderboard(scores, models)
    for modality, names in (("image", ["I1", "I2", "I3", "I4"]), ("text", ["X1", "X2", "X3"])):
        alone = build_leaderboard(
            scores[scores["model"].isin(names)], models[models["model"].isin(names)]
        )
        assert alone.modalities == (modality,)
        columns = [c for c in lb.overall.columns if c not in ("previous_rank", "rank_delta")]
        pd.testing.assert_frame_equal(
            lb.overall[lb.overall["modality"] == modality][columns].reset_index(drop=True),
            alone.overall[columns],
        )


@pytest.mark.parametrize("seed", range(8))
def test_random_two_modality_runs_match_the_brute_force_within_each_modality(seed):
    rng = np.random.default_rng(500 + seed)
    groups = {
        "image": ([f"i{k}" for k in range(int(rng.integers(2, 7)))], ["p", "f", "c"]),
        "text": ([f"x{k}" for k in range(int(rng.integers(2, 7)))], ["s", "n"]),
    }
    entries: dict[tuple[str, str], object] = {}
    for model, task in [(m, t) for names, tasks in groups.values() for m in names for t in tasks]:
        draw = rng.random()
        if draw < 0.1:
            continue
        entries[(model, task)] = "failed: x" if draw < 0.2 else float(rng.integers(0, 4))
    names = [m for names, _ in groups.values() for m in names]
    modality = ["image" if m.startswith("i") else "text" for m in names]
    lb = build_leaderboard(scores_table(entries), models_table(names, modality=modality))
    ok = {pair: v for pair, v in entries.items() if not isinstance(v, str)}
    overall = overall_by_model(lb)
    for group, (group_models, group_tasks) in groups.items():
        scored = [t for t in group_tasks if any((m, t) in ok for m in group_models)]
        expected = brute_force_overall(ok, group_models, scored)
        for model, (complete, mean_rank, normalised, position, comparable) in expected.items():
            row = overall.loc[model]
            assert row["modality"] == group and row["num_tasks"] == len(scored), model
            assert bool(row["complete"]) == complete, model
            if mean_rank is None:
                assert math.isnan(row["comparable_rank"]), model
                continue
            assert row["mean_rank"] == pytest.approx(mean_rank), model
            assert row["mean_normalised_score"] == pytest.approx(normalised), model
            assert (row["comparable_rank"], row["num_comparable"]) == (position, comparable)
            assert row["overall_rank"] == position if complete else math.isnan(row["overall_rank"])


def test_each_failure_is_listed_once_preferring_the_extract_stage():
    scores, models = scores_table(TWO_MODALITY_SCORES), two_modality_models()
    expected_reduce = ["reduce", "X3", "N", "scoring failed: LinAlgError: SVD did not converge"]
    # With the status table: the extract rows, tracebacks included; U once, without a task;
    # skipped (cross-modality) pairs are not failures.
    lb = build_leaderboard(scores, models, status=two_modality_status())
    rows = lb.failures[["stage", "model", "task", "error", "traceback"]].values.tolist()
    assert rows == [
        [*expected_reduce, ""],
        ["extract", "I4", "F", NAN_ERROR, NAN_TRACEBACK],
        ["extract", "U", "", LOAD_ERROR, LOAD_TRACEBACK],
    ]
    assert lb.failures.at[2, "model_key"] == "U-key"
    # Without it, the models table still tells them apart (no tracebacks).
    lb = build_leaderboard(scores, models)
    rows = lb.failures[["stage", "model", "task", "error", "traceback"]].values.tolist()
    assert rows == [
        [*expected_reduce, ""],
        ["extract", "I4", "F", NAN_ERROR, ""],
        ["extract", "U", "", LOAD_ERROR, ""],
    ]
    # A model whose pairs failed with different errors keeps one row per pair.
    status = two_modality_status()
    other = (status["model"] == "U") & (status["task"] == "N")
    status.loc[other, "error"] = "TaskError: other error"
    scores.loc[(scores["model"] == "U") & (scores["task"] == "N"), "error"] = (
        "TaskError: other error"
    )
    lb = build_leaderboard(scores, models, status=status)
    u_rows = lb.failures[lb.failures["model"] == "U"][["stage", "task", "error"]]
    assert u_rows.values.tolist() == [
        ["extract", "P", LOAD_ERROR],
        ["extract", "F", LOAD_ERROR],
        ["extract", "S", LOAD_ERROR],
        ["extract", "N", "TaskError: other error"],
    ]
    # A model skipped for having no task of its modality is not a failure.
    skipped = models.copy()
    skipped.loc[len(skipped)] = {
        "model": "A1",
        "model_key": "A1-key",
        "hub": "hf",
        "state": "skipped",
        "error": "no task of this model's modality",
        "modality": "audio",
    }
    assert "A1" not in set(build_leaderboard(scores, skipped).failures["model"])


def test_history_across_runs_with_different_modalities():
    current = scores_table(TWO_MODALITY_SCORES, run_id="run-2")
    models = two_modality_models()
    # Previous run: image models only, recorded before modalities were (no modality anywhere).
    # Ranks: I2 (3, 3) = 1, I3 (2, 2) = 2, I1 (1, 1) = 3.
    image_only = scores_table(
        {("I1", "P"): 1, ("I1", "F"): 1, ("I2", "P"): 3, ("I2", "F"): 3, ("I3", "P"): 2}
        | {("I3", "F"): 2},
        run_id="run-1",
    )
    lb = build_leaderboard(
        current, models, [PastRun(RunRecord("run-1"), image_only)], run=RunRecord("run-2")
    )
    assert lb.previous_modalities == ("image",)  # from the current run's models of those names
    assert lb.tasks_added == ("S", "N") and lb.tasks_removed == ()
    assert lb.task_set_changed_modalities == ()  # the image tasks are the same
    changes = lb.changes.set_index("model")
    # Now I3 = 1, I1 = 2, I2 = 3.
    assert changes.loc[["I3", "I1", "I2"], "previous_rank"].tolist() == [2, 3, 1]
    assert changes.loc[["I3", "I1", "I2"], "rank_delta"].tolist() == [1, 1, -2]
    assert set(changes.index[changes["change"] == "new"]) == {"I4", "X1", "X2", "X3", "U"}
    assert changes.at["X2", "modality"] == "text"

    # Previous run: both modalities, with its models table; the current run has images only.
    previous_models = models[models["model"] != "I4"]
    previous = PastRun(
        RunRecord("run-1"),
        scores_table(
            {k: v for k, v in TWO_MODALITY_SCORES.items() if k[0] != "I4"}, run_id="run-1"
        ),
        previous_models,
    )
    images = ["I1", "I2", "I3", "I4"]
    image_scores = current[current["model"].isin(images)]
    lb = build_leaderboard(
        image_scores, models[models["model"].isin(images)], [previous], run=RunRecord("run-2")
    )
    assert lb.modalities == ("image",) and lb.previous_modalities == ("image", "text")
    assert lb.tasks_removed == ("S", "N") and lb.task_set_changed_modalities == ()
    changes = lb.changes.set_index("model")
    assert changes.loc[["I3", "I1", "I2"], "rank_delta"].tolist() == [0, 0, 0]
    dropped = changes[changes["change"] == "dropped"]
    assert dropped["modality"].to_dict() == {"X1": "text", "X2": "text", "X3": "text", "U": ""}
    assert dropped["previous_rank"].to_dict() == pytest.approx(
        {"X1": 2, "X2": 1, "X3": np.nan, "U": np.nan}, nan_ok=True
    )

    # Previous run: the image task F was not there. Image ranks then compared other tasks.
    without_f = scores_table(
        {k: v for k, v in TWO_MODALITY_SCORES.items() if k[1] != "F"}, run_id="run-1"
    )
    lb = build_leaderboard(
        current, models, [PastRun(RunRecord("run-1"), without_f)], run=RunRecord("run-2")
    )
    assert lb.tasks_added == ("F",) and lb.task_set_changed_modalities == ("image",)
    assert lb.previous_modalities == ("image", "text")
    # (a tuple (record, scores, models) is a past run too)
    again = build_leaderboard(
        current, models, [(RunRecord("run-1"), without_f, models)], run=RunRecord("run-2")
    )
    pd.testing.assert_frame_equal(again.changes, lb.changes)


def test_modality_conflicts_and_undeclared_models():
    scores = scores_table(TWO_MODALITY_SCORES)
    models = two_modality_models()
    # An ok score pairing a text model with an image task cannot be ranked.
    crossed = pd.concat([scores, scores_table({("X1", "P"): 1.0})], ignore_index=True)
    with pytest.raises(ValueError, match=r"ok score on task 'P'.*modality"):
        build_leaderboard(crossed, models)
    with pytest.raises(ValueError, match=r"task 'P' carry modalities"):
        row_modality = scores["model"].map({"I1": "text", "I2": "image"})
        build_leaderboard(scores.assign(modality=row_modality), None)
    # Without a models table, the scores rows' modality column places every model.
    tagged = scores.assign(modality=scores["task"].map(TASK_MODALITY))
    lb = build_leaderboard(tagged, None)
    assert lb.modalities == ("image", "text")
    assert overall_by_model(lb).loc[["I3", "X2", "U"], "modality"].tolist() == ["image", "text", ""]
    full = build_leaderboard(scores, models)
    for column in ("overall_rank", "comparable_rank", "mean_normalised_score"):
        assert overall_by_model(lb)[column].equals(
            overall_by_model(full)[column].loc[lb.overall["model"]]
        )
    # A model missing from the models table takes the modality of the tasks it scored.
    lb = build_leaderboard(scores, models[models["model"] != "X1"])
    assert overall_by_model(lb).at["X1", "modality"] == "text"
    assert overall_by_model(lb).at["X1", "overall_rank"] == 2
    # A model whose modality has no task (all its pairs skipped) is listed without tasks.
    audio = models.copy()
    audio.loc[len(audio)] = {"model": "A1", "hub": "hf", "state": "skipped", "modality": "audio"}
    lb = build_leaderboard(scores, audio)
    assert lb.modalities == ("image", "text", "audio")
    row = overall_by_model(lb).loc["A1"]
    assert row["num_tasks"] == 0 and not row["complete"] and math.isnan(row["comparable_rank"])
    assert "A1" not in set(lb.per_task["model"]) and "A1" not in set(lb.failures["model"])


def two_modality_leaderboard():
    """The two-modality run with a previous run (without task F and model X1) and the status
    table, hostile names on one image and one text model."""
    rename = {"I1": XSS_MODEL, "X1": "a|b`*[x](http://evil.invalid)"}
    entries = {(rename.get(m, m), t): v for (m, t), v in TWO_MODALITY_SCORES.items()}
    models = two_modality_models().replace({"model": rename})
    models["model_key"] = models["model"] + "-key"
    status = two_modality_status().replace({"model": rename})
    previous = {k: v for k, v in entries.items() if k[1] != "F" and k[0] != rename["X1"]}
    history = [PastRun(RunRecord("run-1"), scores_table(previous, run_id="run-1"))]
    record = RunRecord("run-2", "2025-01-02T00:00:00Z", "cfg", "0.1")
    return build_leaderboard(
        scores_table(entries, run_id="run-2"), models, history, run=record, status=status
    )


def test_markdown_of_two_modalities_has_a_section_per_modality():
    lb = two_modality_leaderboard()
    markdown = to_markdown(lb)
    assert "4 tasks (image: 2, text: 2); 3 failures." in markdown
    sections = re.findall(r"^### (.*)$", markdown, re.M)
    assert sections == [
        "Image models (4 models; 2 tasks: P, F)",
        "Text models (3 models; 2 tasks: S, N)",
        "Models of unknown modality (1 model, failed before reporting a modality; every task "
        "counts)",
        "Image models",
        "Text models",
        "Models of unknown modality",
        "Image models",  # Pareto fronts: none for the unknown modality
        "Text models",
    ]
    per_task = markdown.split("## Per task")[1].split("## Score versus cost")[0]
    headers = re.findall(r"^\| model \|(.*)\|$", per_task, re.M)
    assert [h.split("|") for h in headers] == [
        [" P ", " F "],
        [" S ", " N "],
        [" P ", " F ", " S ", " N "],
    ]
    assert "missing" not in markdown  # no model lacks a task of its own modality
    # Ranks within the modality, and the change since the previous run says so.
    assert "| 1 | ▲2.5 | I3 |" in markdown and "| 1 | = | X2 |" in markdown
    assert "I3 ▲2.5 (#3.5 → #1 among image models)" in markdown
    assert "- Task set changed: added F; removed none (ranks of image models compare different" in (
        markdown
    )
    fronts = markdown.split("### Text models")[-1]
    assert (
        "- parameters (lower is cheaper): a\\|b\\`\\*\\[x\\](http://evil.invalid) (30M, 0.500)"
        in (fronts)
    )
    # Failures once each; tracebacks stay in the tables and the page.
    failures = markdown.split("## Failures (3)")[1]
    assert failures.count("| extract |") == 2 and failures.count("| reduce |") == 1
    assert "Traceback" not in markdown
    for block in re.findall(r"((?:^\|.*\|$\n?)+)", markdown, re.M):
        counts = {len(re.findall(r"(?<!\\)\|", line)) for line in block.strip().splitlines()}
        assert len(counts) == 1, block


def test_hostile_modality_names_are_escaped():
    models = two_modality_models()
    hostile = "<script>alert(6)</script>|x"
    models.loc[models["modality"] == "text", "modality"] = hostile
    lb = build_leaderboard(scores_table(TWO_MODALITY_SCORES), models)
    assert lb.modalities == ("image", hostile.lower())
    page = to_html(lb)
    assert "<script>alert(6)" not in page and "&lt;script&gt;alert(6)&lt;/script&gt;|x" in page
    assert page.count("<script") == 2
    assert 'id="overall-table-script-alert-6-script-x"' in page
    markdown = to_markdown(lb)
    assert "### \\<script\\>alert(6)\\</script\\>\\|x models (3 models" in markdown


@needs_chromium
def test_two_modality_page_in_headless_chromium(tmp_path: Path):
    lb = two_modality_leaderboard()
    page_path = tmp_path / "index.html"
    page_path.write_text(to_html(lb), encoding="utf-8")
    tables = {"image": "overall-table-image", "text": "overall-table-text", "": ""}
    tables[""] = "overall-table-unknown-modality"

    def rows_of(table_id: str) -> str:
        return (
            f"Array.from(document.querySelectorAll('#{table_id} tbody tr'))"
            ".filter(r => !r.hidden).map(r => r.dataset.model)"
        )

    def headers_of(table_id: str) -> str:
        return (
            f"Array.from(document.querySelectorAll('#{table_id} thead th')).map(e => e.textContent)"
        )

    with headless_chromium(CHROMIUM) as browser:
        page = browser.new_page()
        page.goto(page_path.as_uri())
        page.settle()
        assert page.evaluate("document.body.dataset.ready") == "true"
        assert page.evaluate("document.querySelectorAll('table.sortable').length") == 3
        assert page.evaluate(
            "JSON.parse(document.getElementById('leaderboard-data').textContent).modalities"
        ) == ["image", "text"]
        for modality, table_id in tables.items():
            expected = lb.overall.loc[lb.overall["modality"] == modality, "model"].tolist()
            assert page.evaluate(rows_of(table_id)) == expected, modality
            # Per-task columns: the modality's own tasks only, so no "missing" cell anywhere.
            headers = page.evaluate(headers_of(table_id))
            tasks = list(lb.tasks_of(modality))
            assert headers[-len(tasks) :] == tasks and headers[-len(tasks) - 1] == "ImageNet top-1"
        assert page.evaluate("document.querySelectorAll('td.missing').length") == 0
        assert page.evaluate(
            "Array.from(document.querySelectorAll('h3.modality')).map(h => h.firstChild.textContent)"
        ) == ["Image models", "Text models", "Models of unknown modality"]

        # Sorting one modality's table leaves the others alone.
        headers = page.evaluate(headers_of("overall-table-image"))
        column = headers.index("params") + 1
        page.evaluate(
            f"document.querySelector('#overall-table-image thead th:nth-child({column}) button')"
            ".click()"
        )
        image = lb.overall[lb.overall["modality"] == "image"]
        by_params = image.sort_values("num_params", kind="stable")["model"].tolist()
        assert page.evaluate(rows_of("overall-table-image")) == by_params
        text_models = lb.overall.loc[lb.overall["modality"] == "text", "model"].tolist()
        assert page.evaluate(rows_of("overall-table-text")) == text_models
        # The search box filters every table.
        page.evaluate(
            "const s = document.getElementById('model-search'); s.value = '3';"
            "s.dispatchEvent(new Event('input'))"
        )
        assert page.evaluate(rows_of("overall-table-image")) == ["I3"]
        assert page.evaluate(rows_of("overall-table-text")) == ["X3"]
        assert page.evaluate(rows_of("overall-table-unknown-modality")) == []

        # One plot per modality and cost axis; the buttons switch both modalities' plots.
        def visible_figures():
            return page.evaluate(
                "Array.from(document.querySelectorAll('figure.plot-figure'))"
                ".filter(f => !f.hidden).map(f => [f.dataset.axis, f.dataset.modality])"
            )

        assert visible_figures() == [["num_params", "image"], ["num_params", "text"]]
        page.evaluate("document.querySelector('button[data-axis=feature_dim]').click()")
        assert visible_figures() == [["feature_dim", "image"], ["feature_dim", "text"]]
        for modality in ("image", "text"):
            front = page.evaluate(
                f"Array.from(document.querySelectorAll('figure[data-axis=num_params]"
                f"[data-modality={modality}] circle.on-front')).map(c => c.dataset.model)"
            )
            pareto = lb.pareto[lb.pareto["modality"] == modality]
            assert sorted(front) == sorted(pareto.loc[pareto["on_front_num_params"], "model"])

        # Failures once each, the extract tracebacks one click away.
        failures = page.evaluate(
            "Array.from(document.querySelectorAll('#failures-table tbody tr'))"
            ".map(r => [r.cells[0].textContent, r.cells[1].textContent, r.cells[2].textContent,"
            " r.cells[3].querySelector('.error').textContent,"
            " r.cells[3].querySelector('pre') ? r.cells[3].querySelector('pre').textContent : ''])"
        )
        assert (
            failures
            == lb.failures[["stage", "model", "task", "error", "traceback"]].values.tolist()
        )
        assert (
            page.evaluate(
                "Array.from(document.querySelectorAll('details.traceback')).filter(d => d.open).length"
            )
            == 0
        )
        assert "ranks of image models compare different tasks" in page.evaluate(
            "document.querySelector('#changes .warning').textContent"
        )
        page.settle()
        assert page.report.errors() == []
        assert page.report.requests == [page_path.as_uri()]


def test_filter_and_wide_tables_by_modality():
    lb = build_leaderboard(scores_table(TWO_MODALITY_SCORES), two_modality_models())
    text = filter_models(lb, modality="Text")
    assert text.filters == ("modality == text",)
    assert list(text.overall["model"]) == ["X2", "X1", "X3"]
    assert set(text.per_task["task"]) == {"S", "N"} and set(text.pareto["model"]) == {"X1", "X2"}
    markdown = to_markdown(text)
    assert re.findall(r"^### (.*)$", markdown, re.M) == [
        "Text models (3 models; 2 tasks: S, N)",
        "Text models",
        "Text models",
    ]
    assert 'id="overall-table-image"' not in to_html(text)
    assert 'id="overall-table-text"' in to_html(text)
    # A budget keeps each modality's ranks and recomputes each modality's fronts.
    small = filter_models(lb, max_params="20M")
    assert small.overall.set_index("model")["overall_rank"].dropna().to_dict() == {
        "I3": 1,
        "I1": 2,
        "I2": 3,
    }
    assert filter_models(lb, modality="").overall["model"].tolist() == ["U"]
    wide = per_task_wide(lb, "rank", modality="image")
    assert list(wide.index) == ["I3", "I1", "I2", "I4"] and list(wide.columns) == ["P", "F"]
    assert wide.at["I4", "P"] == 1 and math.isnan(wide.at["I4", "F"])
    assert per_task_wide(lb).shape == (8, 4)
    assert math.isnan(per_task_wide(lb).at["I1", "S"])


def test_tags_as_the_extract_stage_writes_them():
    """The models table carries tags as a JSON object string (``ModelRecord.tags``)."""
    models = models_table(
        "AB", tags=['{"family": "resnet", "note": "random-init"}', '{"family": "vit"}']
    )
    lb = build_leaderboard(scores_table({("A", "T1"): 1.0, ("B", "T1"): 2.0}), models)
    assert overall_by_model(lb)["tags"].to_dict() == {
        "A": "family=resnet, note=random-init",
        "B": "family=vit",
    }
    assert list(filter_models(lb, tags=["family=resnet"]).overall["model"]) == ["A"]
    assert '<span class="tag">family=vit</span>' in to_html(lb)
