"""The Markdown summary of a leaderboard (:func:`to_markdown`), with hub-supplied strings made
inert by :func:`markdown_text`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from ray_logme.leaderboard.display import (
    _cost_axis_label,
    _display_groups,
    _format_change,
    _format_coverage,
    _format_float,
    _format_rank,
    _group_summary,
    _modality_title,
    _pareto_groups,
    _task_set_change,
    _tasks_count,
    format_cost,
)
from ray_logme.leaderboard.inputs import _text
from ray_logme.leaderboard.records import COST_AXES, Leaderboard
from ray_logme.markdown import markdown_table
from ray_logme.tables import OK

_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]|<>#])")


def markdown_text(value: Any, max_chars: int | None = None) -> str:
    """A hub-supplied string made inert in Markdown: one line, ``\\``-escaped ``\\ ` * [ ] | < > #``
    (no tables broken, no links, no raw HTML), optionally cut to ``max_chars``."""
    text = " ".join(_text(value).split())
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _run_summary(leaderboard: Leaderboard) -> list[str]:
    lines = []
    if leaderboard.run is not None:
        run = leaderboard.run
        details = [f"run `{markdown_text(run.run_id)}`"]
        if run.timestamp:
            details.append(f"at {markdown_text(run.timestamp)}")
        if run.config_hash:
            details.append(f"config {markdown_text(run.config_hash)}")
        if run.code_version:
            details.append(f"code {markdown_text(run.code_version)}")
        lines.append("Leaderboard of " + ", ".join(details) + ".")
    complete = int(leaderboard.overall["complete"].sum())
    lines.append(
        f"Metric: {markdown_text(leaderboard.metric)}; {len(leaderboard.overall)} models "
        f"({complete} complete), {markdown_text(_tasks_count(leaderboard))}; "
        f"{len(leaderboard.failures)} failures."
    )
    if leaderboard.filters:
        lines.append("Filtered: " + "; ".join(markdown_text(f) for f in leaderboard.filters) + ".")
    if leaderboard.unscored_tasks:
        lines.append(
            "Tasks no model scored (left out): "
            + ", ".join(markdown_text(t) for t in leaderboard.unscored_tasks)
            + "."
        )
    return lines


def _markdown_overall_table(rows: pd.DataFrame) -> list[str]:
    return markdown_table(
        [
            "rank",
            "change",
            "model",
            "hub",
            "mean rank",
            "mean norm. score",
            "tasks",
            "params",
            "feature dim",
            "samples/s",
        ],
        (
            [
                _format_rank(row["overall_rank"]),
                _format_change(row["change"], row["rank_delta"]),
                markdown_text(row["model"]),
                markdown_text(row["hub"]),
                _format_float(row["mean_rank"], 2),
                _format_float(row["mean_normalised_score"], 3),
                markdown_text(_format_coverage(row)),
                format_cost("num_params", row["num_params"]),
                format_cost("feature_dim", row["feature_dim"]),
                format_cost("throughput", row["throughput"]),
            ]
            for row in rows.to_dict("records")
        ),
    )


def _markdown_per_task_table(
    task_cells: Mapping[tuple[str, str], Mapping[str, Any]], models: Iterable[str], tasks
) -> list[str]:
    def cell(model: str, task: str) -> str:
        pair = task_cells[(model, task)]
        if pair["state"] != OK:
            return pair["state"]
        return f"{pair['score']:.4f} (#{_format_rank(pair['rank'])})"

    return markdown_table(
        ["model", *(markdown_text(task) for task in tasks)],
        ([markdown_text(model), *(cell(model, task) for task in tasks)] for model in models),
    )


def _markdown_metric_tables(table: pd.DataFrame, models: Iterable[str]) -> list[str]:
    """One table per task: a row per model, a column per metric, cells ``score (#rank)``."""
    metrics = list(dict.fromkeys(table["metric"]))
    cells = {(r["model"], r["task"], r["metric"]): r for r in table.to_dict("records")}
    lines = []
    for task in dict.fromkeys(table["task"]):
        members = [m for m in models if any((m, task, metric) in cells for metric in metrics)]

        def cell(model: str, metric: str, task: str = task) -> str:
            row = cells.get((model, task, metric))
            if row is None:
                return ""
            if row["state"] != OK:
                return markdown_text(row["state"])
            return f"{row['score']:.4g} (#{_format_rank(row['rank'])})"

        lines += ["", f"### {markdown_text(task)}", ""]
        lines += markdown_table(
            ["model", *(markdown_text(m) for m in metrics)],
            ([markdown_text(model), *(cell(model, m) for m in metrics)] for model in members),
        )
    return lines


def _markdown_fronts(pareto: pd.DataFrame) -> list[str]:
    lines = []
    for axis in COST_AXES:
        front = pareto[pareto[f"on_front_{axis}"]].sort_values(
            axis, ascending=COST_AXES[axis] == "min"
        )
        entries = [
            f"{markdown_text(row['model'])} ({format_cost(axis, row[axis])}, "
            f"{row['mean_normalised_score']:.3f})"
            for row in front.to_dict("records")
        ]
        lines.append(f"- {_cost_axis_label(axis)}: " + (" → ".join(entries) or "no data"))
    return lines


def to_markdown(leaderboard: Leaderboard) -> str:
    """The leaderboard as a Markdown summary (GitHub-flavoured tables); with several
    modalities, one overall table, per-task table and set of fronts per modality."""
    groups = _display_groups(leaderboard)
    multimodal = leaderboard.multimodal
    lines = ["# Model leaderboard", "", *_run_summary(leaderboard), "", "## Overall", ""]
    lines.append(
        "Rank by mean per-task rank among complete models (fractional ranks for ties); an "
        "incomplete model is ranked only among the models that scored all of its tasks."
        + (
            " Models are ranked within their modality, on the tasks of that modality."
            if multimodal
            else ""
        )
    )
    if leaderboard.ranking_note:
        lines += ["", markdown_text(leaderboard.ranking_note)]
    for modality, rows, tasks in groups:
        lines.append("")
        if multimodal:
            title = f"{_modality_title(modality)} ({_group_summary(modality, rows, tasks)})"
            lines += [f"### {markdown_text(title)}", ""]
        lines += _markdown_overall_table(rows)
    if leaderboard.tasks:
        task_cells = {
            (row["model"], row["task"]): row for row in leaderboard.per_task.to_dict("records")
        }
        lines += ["", f"## Per task ({markdown_text(leaderboard.metric)}, rank)"]
        for modality, rows, tasks in groups:
            if not tasks:
                continue
            lines.append("")
            if multimodal:
                lines += [f"### {markdown_text(_modality_title(modality))}", ""]
            lines += _markdown_per_task_table(task_cells, rows["model"], tasks)
    if leaderboard.metric_scores is not None and not leaderboard.metric_scores.empty:
        lines += ["", "## Per task and metric (score, rank)"]
        lines += _markdown_metric_tables(leaderboard.metric_scores, leaderboard.overall["model"])
    lines += ["", "## Score versus cost (Pareto fronts)", ""]
    if multimodal:
        for modality, pareto in _pareto_groups(leaderboard, groups):
            lines += [f"### {markdown_text(_modality_title(modality))}", ""]
            lines += [*_markdown_fronts(pareto), ""]
        lines.pop()
    else:
        lines += _markdown_fronts(leaderboard.pareto)
    lines += ["", "## Changes since the previous run", ""]
    if leaderboard.previous_run is None:
        lines.append("No previous run.")
    else:
        lines.append(f"Previous run: `{markdown_text(leaderboard.previous_run.run_id)}`.")
        changes = leaderboard.changes
        for label, kind in (("New", "new"), ("Dropped", "dropped")):
            names = [markdown_text(m) for m in changes.loc[changes["change"] == kind, "model"]]
            lines.append(f"- {label}: " + (", ".join(names) or "none"))
        moved = changes[(changes["change"] == "kept") & (changes["rank_delta"].fillna(0) != 0)]
        moves = [
            f"{markdown_text(row['model'])} {_format_change('kept', row['rank_delta'])} "
            f"(#{_format_rank(row['previous_rank'])} → #{_format_rank(row['overall_rank'])}"
            + (f" among {markdown_text(row['modality'])} models)" if multimodal else ")")
            for row in moved.to_dict("records")
        ]
        lines.append("- Moved: " + (", ".join(moves) or "none"))
        change = _task_set_change(leaderboard)
        if change is not None:
            lines.append(f"- {markdown_text(change)}")
        elif leaderboard.tasks_added or leaderboard.tasks_removed:
            lines.append(
                "- Task set changed (ranks compare different tasks): added "
                + (", ".join(markdown_text(t) for t in leaderboard.tasks_added) or "none")
                + "; removed "
                + (", ".join(markdown_text(t) for t in leaderboard.tasks_removed) or "none")
            )
    lines += ["", f"## Failures ({len(leaderboard.failures)})", ""]
    if leaderboard.failures.empty:
        lines.append("None.")
    else:
        lines += markdown_table(
            ["stage", "model", "task", "error"],
            (
                [
                    markdown_text(row["stage"]),
                    markdown_text(row["model"]),
                    markdown_text(row["task"]),
                    markdown_text(row["error"], max_chars=300),
                ]
                for row in leaderboard.failures.to_dict("records")
            ),
        )
    return "\n".join(lines) + "\n"
