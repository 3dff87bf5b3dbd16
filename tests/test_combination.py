"""The default ranking: the combination by hand, restriction to a table's inputs, the leaderboard
it produces (LogME-only runs unchanged), and the config keys that choose it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ray_logme.combination import (
    DEFAULT_COMBINATION,
    PRIOR,
    Combination,
    combine_scores,
    normalised_ranks,
    with_combination,
)
from ray_logme.leaderboard import build_leaderboard, to_html, to_markdown
from ray_logme.leaderboard.combined import build_combined_leaderboard


def scores_table(values: dict[str, dict[str, float]], task="t") -> pd.DataFrame:
    rows = []
    for metric, by_model in values.items():
        for model, score in by_model.items():
            rows.append(
                {
                    "run_id": "r1",
                    "model": model,
                    "model_key": f"{model}-key",
                    "task": task,
                    "task_key": f"{task}-key",
                    "kind": "classification",
                    "metric": metric,
                    "score": score,
                    "seconds": 0.5,
                    "state": "ok",
                    "error": None,
                    "cached": False,
                }
            )
    return pd.DataFrame(rows)


def test_normalised_ranks_by_hand():
    np.testing.assert_allclose(normalised_ranks([3.0, 1.0, 2.0]), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(normalised_ranks([2.0, 2.0, 1.0, np.nan]), [0.75, 0.75, 0.0, np.nan])
    assert np.isnan(normalised_ranks([1.0, np.nan])).all()


def test_combination_by_hand():
    """Models a, b, c. logme ranks a > b > c (u = 1, .5, 0); gbc ranks c > b > a (0, .5, 1);
    knn ranks b > a > c (.5, 1, 0); prior 80, 70, 60 (1, .5, 0). Default weights 1:
    a = (1 + 0 + .5 + 1) / 4 = .625, b = (.5 + .5 + 1 + .5) / 4 = .625, c = (0 + 1 + 0 + 0) / 4."""
    scores = scores_table(
        {
            "logme": {"a": 0.3, "b": 0.2, "c": 0.1},
            "gbc": {"a": -9.0, "b": -5.0, "c": -1.0},
            "knn": {"a": 0.7, "b": 0.9, "c": 0.1},
        }
    )
    combined = combine_scores(scores, DEFAULT_COMBINATION, {"a": 80, "b": 70, "c": 60})
    by_model = dict(zip(combined["model"], combined["score"], strict=True))
    assert by_model == pytest.approx({"a": 0.625, "b": 0.625, "c": 0.25})
    assert set(combined["metric"]) == {"default"} and (combined["state"] == "ok").all()
    assert combined["seconds"].tolist() == [1.5, 1.5, 1.5]  # the inputs' seconds add up
    without_prior = combine_scores(scores, Combination("x", ("logme", "gbc", "knn"), False))
    assert dict(zip(without_prior["model"], without_prior["score"], strict=True)) == pytest.approx(
        {"a": 0.5, "b": 2 / 3, "c": 1 / 3}
    )
    weighted = Combination("w", ("logme", "gbc"), False, weights={"logme": 3.0})
    result = combine_scores(scores, weighted)
    assert dict(zip(result["model"], result["score"], strict=True)) == pytest.approx(
        {"a": 0.75, "b": 0.5, "c": 0.25}
    )


def test_restricted_combination_keeps_only_the_tables_inputs():
    restricted = DEFAULT_COMBINATION.restricted(["logme", "nleep", "gbc", "hscore", "leep", PRIOR])
    assert restricted.inputs() == ("logme", "gbc", PRIOR)
    assert DEFAULT_COMBINATION.restricted(["logme"]).inputs() == ("logme",)


def test_a_pair_that_failed_everywhere_stays_failed():
    scores = scores_table({"logme": {"a": 0.3, "b": 0.2}, "knn": {"a": 0.5, "b": 0.4}})
    scores.loc[scores["model"] == "b", ["state", "score", "error"]] = ["failed", np.nan, "boom"]
    combined = with_combination(scores)
    row = combined[(combined["metric"] == "default") & (combined["model"] == "b")].iloc[0]
    assert row["state"] == "failed" and row["error"] == "boom"


def test_logme_only_leaderboard_is_unchanged():
    scores = pd.concat(
        [
            scores_table({"logme": {"a": 0.3, "b": 0.2, "c": 0.25}}, task="t1"),
            scores_table({"logme": {"a": 0.1, "b": 0.4, "c": 0.2}}, task="t2"),
        ]
    )
    plain = build_leaderboard(scores, None)
    combined = build_combined_leaderboard(scores, None)
    assert to_markdown(combined) == to_markdown(plain)
    assert to_html(combined) == to_html(plain)
    assert combined.metric_scores is None and combined.ranking_note == ""


def test_default_leaderboard_shows_every_metric_and_explains_itself():
    scores = pd.concat(
        [
            scores_table(
                {"logme": {"a": 0.3, "b": 0.2, "c": 0.1}, "knn": {"a": 0.9, "b": 0.5, "c": 0.7}},
                task=task,
            )
            for task in ("t1", "t2")
        ]
    )
    models = pd.DataFrame({"model": ["a", "b", "c"], "imagenet_top1": [70.0, 80.0, np.nan]})
    board = build_combined_leaderboard(scores, models)
    assert board.metric == "default"
    assert board.overall["model"].tolist()[0] == "a"
    assert board.ranking_note.startswith(DEFAULT_COMBINATION.description)
    assert "Inputs in this run: logme, knn, imagenet_top1" in board.ranking_note
    table = board.metric_scores
    assert set(table["metric"]) == {"logme", "knn", "default"}
    knn_t1 = table[(table["metric"] == "knn") & (table["task"] == "t1")].set_index("model")
    assert knn_t1["rank"].to_dict() == {"a": 1.0, "b": 3.0, "c": 2.0}
    text = to_markdown(board)
    assert "## Per task and metric (score, rank)" in text and "0.9 (#1)" in text
    assert board.ranking_note in text
    assert 'id="metrics"' in to_html(board)
    by_metric = build_combined_leaderboard(scores, models, ranking="knn")
    assert by_metric.metric == "knn" and by_metric.overall["model"].tolist()[0] == "a"
    assert "Ranked by knn alone" in by_metric.ranking_note


def test_config_chooses_metrics_sample_and_ranking(tmp_path):
    from ray_logme.config import RunConfig

    base = {
        "models": [{"hub": "timm", "name": "resnet18"}],
        "tasks": [{"name": "digits", "uri": "sklearn:digits"}],
    }
    config = RunConfig.model_validate(base)
    assert config.scoring.metrics == DEFAULT_COMBINATION.metrics
    assert config.outputs.ranking == "default"
    chosen = RunConfig.model_validate(
        {
            **base,
            "scoring": {"metrics": ["logme", "knn"], "sample_cap": 500},
            "outputs": {"ranking": "knn"},
        }
    )
    assert chosen.scoring.sample_cap == 500 and chosen.outputs.ranking == "knn"
    with pytest.raises(ValueError, match=r"outputs.ranking must be 'default' or one of"):
        RunConfig.model_validate({**base, "outputs": {"ranking": "leep"}})
    with pytest.raises(ValueError, match="unknown metric"):
        RunConfig.model_validate({**base, "scoring": {"metrics": ["logme", "leep"]}})


def test_a_model_alone_on_a_task_gets_a_default_score():
    """One model scored on a task has no rank to normalise: it still gets a default row (1.0,
    it is the best of one), so a one-model run has a leaderboard (it used to fail)."""
    import pandas as pd

    from ray_logme.combination import combine_scores

    rows = [
        {"model": "only", "task": "t", "metric": metric, "score": value, "state": "ok"}
        for metric, value in (("logme", -0.3), ("knn", 0.8))
    ]
    combined = combine_scores(pd.DataFrame(rows))
    assert combined["model"].tolist() == ["only"] and combined["score"].tolist() == [1.0]
