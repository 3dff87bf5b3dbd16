"""The self-contained HTML page of a leaderboard (:func:`to_html`): sortable tables, inline
SVG score-versus-cost plots, changes, failures, runs, and the leaderboard data embedded as
JSON (:func:`leaderboard_data`, :func:`json_for_script`)."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from ray_logme.leaderboard.display import (
    _cost_axis_label,
    _display_groups,
    _format_change,
    _format_coverage_note,
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
from ray_logme.leaderboard.query import format_count
from ray_logme.leaderboard.records import COST_AXES, COST_LABELS, Leaderboard
from ray_logme.tables import OK


def _escape(value: Any) -> str:
    """``html.escape`` (quotes too) of a cell's text: safe in element content and attributes."""
    return html.escape(_text(value), quote=True)


def json_for_script(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` become ``\\u003c``/``\\u003e``/``\\u0026`` (so neither ``</script>`` nor
    ``<!--`` can end or confuse the element), non-ASCII is ``\\u``-escaped (U+2028/2029 too), and
    NaN/inf are rejected (convert them to null first). ``JSON.parse`` gives back the same data.
    """
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return str(value)


def _json_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(key): _json_value(value) for key, value in row.items()}
        for row in table.to_dict("records")
    ]


def leaderboard_data(leaderboard: Leaderboard) -> dict[str, Any]:
    """The leaderboard as JSON-able data (what the HTML page embeds)."""
    return {
        "metric": leaderboard.metric,
        "run": leaderboard.run.to_dict() if leaderboard.run else None,
        "previous_run": leaderboard.previous_run.to_dict() if leaderboard.previous_run else None,
        "tasks": list(leaderboard.tasks),
        "modalities": list(leaderboard.modalities),
        "task_modalities": list(leaderboard.task_modalities),
        "unscored_tasks": list(leaderboard.unscored_tasks),
        "filters": list(leaderboard.filters),
        **({"ranking_note": leaderboard.ranking_note} if leaderboard.ranking_note else {}),
        **{name: _json_records(table) for name, table in leaderboard.tables().items()},
    }


def _asset(name: str) -> str:
    return resources.files("ray_logme").joinpath("data", name).read_text(encoding="utf-8")


def _sort_attr(value: Any) -> str:
    """``data-value`` for numeric sorting; empty for a missing value (sorted last)."""
    if value is None or pd.isna(value) or not np.isfinite(float(value)):
        return ""
    return repr(float(value))


def _td(text: str, sort_value: Any = None, css: str = "", title: str = "") -> str:
    attributes = ""
    if sort_value is not None:
        attributes += f' data-value="{_escape(_sort_attr(sort_value))}"'
    if css:
        attributes += f' class="{css}"'
    if title:
        attributes += f' title="{_escape(title)}"'
    return f"<td{attributes}>{text}</td>"


def _th(label: str, kind: str, default_order: str = "asc", title: str = "") -> str:
    title_attr = f' title="{_escape(title)}"' if title else ""
    return (
        f'<th scope="col" data-sort="{kind}" data-order="{default_order}"{title_attr}>'
        f'<button type="button">{label}</button></th>'
    )


def _overall_table_html(
    leaderboard: Leaderboard,
    overall: pd.DataFrame | None = None,
    tasks: Sequence[str] | None = None,
    table_id: str = "overall-table",
) -> str:
    """Sortable table of ``overall`` rows (default: all) with per-task columns of ``tasks``."""
    overall = leaderboard.overall if overall is None else overall
    tasks = leaderboard.tasks if tasks is None else tasks
    task_cells = {
        (row["model"], row["task"]): row for row in leaderboard.per_task.to_dict("records")
    }
    kinds = leaderboard.per_task.drop_duplicates("task").set_index("task")["kind"]
    header = [
        _th("#", "num", "asc", "overall rank among complete models"),
        _th("change", "num", "desc", "rank change since the previous run (positive: moved up)"),
        _th("model", "text"),
        _th("hub", "text"),
        _th("mean rank", "num", "asc", "mean per-task rank among comparable models"),
        _th("mean norm. score", "num", "desc", "per-task min-max scaled score, averaged"),
        _th("tasks", "num", "desc", "tasks covered / leaderboard tasks"),
        _th("params", "num", "asc"),
        _th("feature dim", "num", "asc"),
        _th("samples/s", "num", "desc", "measured extraction throughput"),
        _th("ImageNet top-1", "num", "desc", "source ImageNet top-1 where published"),
    ]
    header += [
        _th(_escape(task), "num", "desc", f"{task} ({kinds.get(task, '')}): score, #rank")
        for task in tasks
    ]
    rows = []
    for row in overall.to_dict("records"):
        model = row["model"]
        tags = "".join(
            f'<span class="tag">{_escape(tag)}</span>'
            for tag in _text(row["tags"]).split(", ")
            if tag
        )
        change = _format_change(row["change"], row["rank_delta"])
        change_css = "up" if change.startswith("▲") else "down" if change.startswith("▼") else ""
        change_sort = row["rank_delta"] if row["change"] == "kept" else None
        cells = [
            _td(_escape(_format_rank(row["overall_rank"]) or "–"), row["overall_rank"], "num"),
            _td(_escape(change), change_sort if change_sort is not None else np.nan, change_css),
            _td(
                f'<span class="model">{_escape(model)}</span>{tags}',
                css="model-cell",
                title=_text(row["model_key"]),
            ),
            _td(_escape(row["hub"])),
            _td(_escape(_format_float(row["mean_rank"], 2)), row["mean_rank"], "num"),
            _td(
                _escape(_format_float(row["mean_normalised_score"], 3)),
                row["mean_normalised_score"],
                "num",
            ),
            _td(
                _escape(f"{int(row['tasks_covered'])}/{int(row['num_tasks'])}")
                + (
                    f'<span class="note">{_escape(_format_coverage_note(row))}</span>'
                    if not row["complete"]
                    else ""
                ),
                row["tasks_covered"],
                "coverage",
                title=("missing: " + _text(row["missing_tasks"])) if not row["complete"] else "",
            ),
            *(_td(_escape(format_cost(axis, row[axis])), row[axis], "num") for axis in COST_AXES),
            _td(_escape(_format_float(row["imagenet_top1"], 2)), row["imagenet_top1"], "num"),
        ]
        for task in tasks:
            pair = task_cells[(model, task)]
            if pair["state"] == OK:
                text = (
                    f"{_escape(_format_float(pair['score'], 4))}"
                    f'<span class="rank">#{_escape(_format_rank(pair["rank"]))}</span>'
                )
                cells.append(_td(text, pair["score"], "num"))
            else:
                cells.append(
                    _td(
                        _escape(pair["state"]), np.nan, f"num {pair['state']}", _text(pair["error"])
                    )
                )
        css = "" if row["complete"] else ' class="incomplete"'
        rows.append(f'<tr data-model="{_escape(model)}"{css}>' + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table id="{table_id}" class="sortable">'
        f"<thead><tr>{''.join(header)}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _log_ticks(low: float, high: float) -> list[float]:
    """Tick values for a log axis over [low, high]: 1-2-5 steps, or decades when wide."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    steps = (1.0,) if last - first > 3 else (1.0, 2.0, 5.0)
    ticks = [m * 10.0**e for e in range(first, last + 1) for m in steps]
    inside = [t for t in ticks if low <= t <= high]
    return inside or [low, high]


def _svg_plot(pareto: pd.DataFrame, axis: str) -> str:
    """Inline SVG: mean normalised score (y) versus one cost (x, log scale), front highlighted."""
    width, height = 720, 380
    left, right, top, bottom = 64, 24, 16, 52
    points = pareto[
        np.isfinite(pareto[axis].astype("float64"))
        & (pareto[axis].astype("float64") > 0)
        & np.isfinite(pareto["mean_normalised_score"].astype("float64"))
    ]
    label = _escape(_cost_axis_label(axis))
    if points.empty:
        return f'<p class="empty">No complete model has a known {label}.</p>'
    costs = points[axis].astype("float64").to_numpy()
    scores = points["mean_normalised_score"].astype("float64").to_numpy()
    log_low, log_high = math.log10(costs.min()), math.log10(costs.max())
    if log_high - log_low < 1e-9:
        log_low, log_high = log_low - 0.5, log_high + 0.5
    pad = 0.05 * (log_high - log_low)
    log_low, log_high = log_low - pad, log_high + pad
    score_low, score_high = min(0.0, scores.min()), max(1.0, scores.max())
    score_pad = 0.05 * (score_high - score_low)
    score_low, score_high = score_low - score_pad, score_high + score_pad

    def x_of(cost: float) -> float:
        return left + (math.log10(cost) - log_low) / (log_high - log_low) * (width - left - right)

    def y_of(score: float) -> float:
        return top + (score_high - score) / (score_high - score_low) * (height - top - bottom)

    parts = [
        f'<svg class="plot" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="mean normalised score versus {label}">',
        f'<rect class="frame" x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}"/>',
    ]
    for tick in _log_ticks(10**log_low, 10**log_high):
        x = x_of(tick)
        parts.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}"/>'
            f'<text class="tick" x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
            f"{_escape(format_count(tick))}</text>"
        )
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y_of(tick)
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>'
        )
    parts.append(
        f'<text class="axis-label" x="{(left + width - right) / 2:.0f}" y="{height - 10}" '
        f'text-anchor="middle">{label}, log scale</text>'
        f'<text class="axis-label" transform="translate(16 {(top + height - bottom) / 2:.0f}) '
        f'rotate(-90)" text-anchor="middle">mean normalised score</text>'
    )
    front = points[points[f"on_front_{axis}"]].sort_values(axis)
    if len(front) > 1:
        path = " ".join(
            f"{x_of(cost):.1f},{y_of(score):.1f}"
            for cost, score in zip(front[axis], front["mean_normalised_score"], strict=True)
        )
        parts.append(f'<polyline class="front" points="{path}"/>')
    for row in points.to_dict("records"):
        x, y = x_of(row[axis]), y_of(row["mean_normalised_score"])
        on_front = bool(row[f"on_front_{axis}"])
        tooltip = (
            f"{_text(row['model'])}: score {row['mean_normalised_score']:.3f}, "
            f"{COST_LABELS[axis]} {format_cost(axis, row[axis])}"
        )
        parts.append(
            f'<circle class="{"on-front" if on_front else "dominated"}" cx="{x:.1f}" '
            f'cy="{y:.1f}" r="{6 if on_front else 4.5}" data-model="{_escape(row["model"])}">'
            f"<title>{_escape(tooltip)}</title></circle>"
        )
    # Labels of the front points, left to right, each at the first spot not overlapping an
    # earlier label (approximate boxes: 6.2 px per character at 11 px).
    placed: list[tuple[float, float, float, float]] = []
    for row in front.to_dict("records"):
        x, y = x_of(row[axis]), y_of(row["mean_normalised_score"])
        text = _text(row["model"])
        text = text if len(text) <= 32 else text[:31] + "…"
        text_width = 6.2 * len(text)
        anchor_end = x + 9 + text_width > width - right
        x0 = x - 9 - text_width if anchor_end else x + 9
        spot = y - 8
        for candidate in (y - 8, y + 16, y - 22, y + 30, y - 36, y + 44):
            box = (x0, x0 + text_width, candidate - 10, candidate + 2)
            if not any(
                box[0] < other[1] and other[0] < box[1] and box[2] < other[3] and other[2] < box[3]
                for other in placed
            ):
                spot = candidate
                break
        placed.append((x0, x0 + text_width, spot - 10, spot + 2))
        parts.append(
            f'<text class="point-label" x="{x - 9 if anchor_end else x + 9:.1f}" y="{spot:.1f}" '
            f'text-anchor="{"end" if anchor_end else "start"}">{_escape(text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _simple_table_html(table_id: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f'<th scope="col">{label}</th>' for label in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return (
        f'<div class="scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _changes_html(leaderboard: Leaderboard) -> str:
    if leaderboard.previous_run is None:
        return "<p>No previous run to compare with.</p>"
    changes = leaderboard.changes
    parts = [f"<p>Compared with run <code>{_escape(leaderboard.previous_run.run_id)}</code>.</p>"]
    change = _task_set_change(leaderboard)
    if change is not None:
        css = "warning" if leaderboard.task_set_changed_modalities else "info"
        parts.append(f'<p class="{css}">{_escape(change)}.</p>')
    elif leaderboard.tasks_added or leaderboard.tasks_removed:
        parts.append(
            '<p class="warning">The task set changed (added: '
            + _escape(", ".join(leaderboard.tasks_added) or "none")
            + "; removed: "
            + _escape(", ".join(leaderboard.tasks_removed) or "none")
            + "), so ranks compare different tasks.</p>"
        )
    for label, kind in (("New models", "new"), ("Dropped models", "dropped")):
        names = changes.loc[changes["change"] == kind, "model"]
        items = "".join(f"<li>{_escape(name)}</li>" for name in names) or "<li>none</li>"
        parts.append(f'<h3>{label}</h3><ul id="{kind}-models">{items}</ul>')
    moved = changes[(changes["change"] == "kept") & (changes["rank_delta"].fillna(0) != 0)]
    parts.append("<h3>Rank changes</h3>")
    if moved.empty:
        parts.append("<p>No complete model changed rank.</p>")
    else:
        with_modality = leaderboard.multimodal
        parts.append(
            _simple_table_html(
                "moves-table",
                [
                    "model",
                    *(["modality"] if with_modality else []),
                    "previous rank",
                    "rank",
                    "change",
                ],
                (
                    [
                        _escape(row["model"]),
                        *([_escape(row["modality"] or "unknown")] if with_modality else []),
                        _escape(_format_rank(row["previous_rank"])),
                        _escape(_format_rank(row["overall_rank"])),
                        _escape(_format_change("kept", row["rank_delta"])),
                    ]
                    for row in moved.to_dict("records")
                ),
            )
        )
    return "".join(parts)


def _failures_html(leaderboard: Leaderboard) -> str:
    if leaderboard.failures.empty:
        return "<p>No failures.</p>"
    return _simple_table_html(
        "failures-table",
        ["stage", "model", "task", "error"],
        (
            [
                _escape(row["stage"]),
                _escape(row["model"]),
                _escape(row["task"]),
                f'<span class="error">{_escape(row["error"])}</span>'
                + (
                    '<details class="traceback"><summary>traceback</summary>'
                    f"<pre>{_escape(row['traceback'])}</pre></details>"
                    if _text(row.get("traceback"))
                    else ""
                ),
            ]
            for row in leaderboard.failures.to_dict("records")
        ),
    )


def _metric_scores_html(leaderboard: Leaderboard) -> str:
    """Per task, a table of every metric's score and rank (empty for a one-metric run)."""
    table = leaderboard.metric_scores
    if table is None or table.empty:
        return ""
    metrics = list(dict.fromkeys(table["metric"]))
    cells = {(r["model"], r["task"], r["metric"]): r for r in table.to_dict("records")}
    parts = ['<section id="metrics"><h2>Per task and metric (score, rank)</h2>']
    for task in dict.fromkeys(table["task"]):
        header = "".join(f"<th>{_escape(m)}</th>" for m in metrics)
        rows = []
        for model in leaderboard.overall["model"]:
            if not any((model, task, m) in cells for m in metrics):
                continue
            tds = []
            for metric in metrics:
                row = cells.get((model, task, metric))
                if row is None:
                    text = ""
                elif row["state"] != "ok":
                    text = _escape(row["state"])
                else:
                    text = f"{row['score']:.4g} (#{row['rank']:g})"
                tds.append(f"<td>{text}</td>")
            rows.append(f"<tr><td>{_escape(model)}</td>{''.join(tds)}</tr>")
        parts.append(
            f"<h3>{_escape(task)}</h3><table><thead><tr><th>model</th>{header}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    parts.append("</section>")
    return "".join(parts)


def _header_html(leaderboard: Leaderboard) -> str:
    facts = []
    if leaderboard.run is not None:
        run = leaderboard.run
        facts.append(f"run <code>{_escape(run.run_id)}</code>")
        for label, value in (
            ("at", run.timestamp),
            ("config", run.config_hash),
            ("code", run.code_version),
        ):
            if value:
                facts.append(f"{label} <code>{_escape(value)}</code>")
    complete = int(leaderboard.overall["complete"].sum())
    facts.append(
        f"metric <strong>{_escape(leaderboard.metric)}</strong>, "
        f"{len(leaderboard.overall)} models ({complete} complete), "
        f"{_escape(_tasks_count(leaderboard))}, "
        f'<a href="#failures">{len(leaderboard.failures)} failures</a>'
    )
    parts = [f'<p class="facts">{" · ".join(facts)}</p>']
    if leaderboard.filters:
        parts.append(f'<p class="filters">Filtered: {_escape("; ".join(leaderboard.filters))}</p>')
    if leaderboard.unscored_tasks:
        parts.append(
            '<p class="warning">Tasks no model scored (left out): '
            f"{_escape(', '.join(leaderboard.unscored_tasks))}</p>"
        )
    return "".join(parts)


def _html_id(text: str, taken: set[str]) -> str:
    """An id fragment of ASCII letters, digits and ``-`` from ``text``, unique within ``taken``."""
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown-modality"
    name, index = base, 2
    while name in taken:
        name, index = f"{base}-{index}", index + 1
    taken.add(name)
    return name


def _overall_groups_html(
    leaderboard: Leaderboard, groups: Sequence[tuple[str, pd.DataFrame, tuple[str, ...]]]
) -> str:
    """One titled, sortable overall table per modality (``#overall-table-<modality>``)."""
    parts, taken = [], set()
    for modality, rows, tasks in groups:
        slug = _html_id(modality, taken)
        parts.append(
            f'<h3 id="overall-{slug}" class="modality">{_escape(_modality_title(modality))}'
            f'<span class="count">{_escape(_group_summary(modality, rows, tasks))}</span></h3>'
            + _overall_table_html(leaderboard, rows, tasks, f"overall-table-{slug}")
        )
    return "".join(parts)


def to_html(leaderboard: Leaderboard, title: str = "ray-logme leaderboard") -> str:
    """One self-contained HTML page: no external URL is referenced.

    Sortable overall table (inline JS, click a column header) with per-task columns and the rank
    change, an inline SVG score-versus-cost plot per cost axis, the changes since the previous
    run, and the failures (with their tracebacks). With several modalities, one overall table
    (``#overall-table-<modality>``, its own tasks as columns) and one plot per cost axis for
    each modality. Every table string is ``html.escape``-d; the leaderboard data is also
    embedded as JSON (:func:`json_for_script`) in ``<script id="leaderboard-data">``. A
    Content-Security-Policy allows only the page's own script (by hash) and inline styles.
    """
    script = _asset("leaderboard.js")
    style = _asset("leaderboard.css")
    script_hash = hashlib.sha256(script.encode("utf-8")).digest()
    csp = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
        f"form-action 'none'; script-src 'sha256-{base64.b64encode(script_hash).decode('ascii')}'"
    )
    axis_buttons = "".join(
        f'<button type="button" data-axis="{axis}" aria-pressed="{str(i == 0).lower()}">'
        f"{_escape(COST_LABELS[axis])}</button>"
        for i, axis in enumerate(COST_AXES)
    )
    groups = _display_groups(leaderboard)
    if leaderboard.multimodal:
        plots = (
            '<div class="plots">'
            + "".join(
                f'<figure class="plot-figure" data-axis="{axis}" '
                f'data-modality="{_escape(modality)}"{"" if i == 0 else " hidden"}>'
                f"<h3>{_escape(_modality_title(modality))}</h3>{_svg_plot(pareto, axis)}"
                f"<figcaption>Mean normalised score of the complete {_escape(modality)} models "
                f"(on the {_escape(modality)} tasks) versus {_escape(_cost_axis_label(axis))}. "
                "Filled, labelled points are the Pareto front: no other model of this modality "
                "scores at least as well for at most this cost.</figcaption></figure>"
                for i, axis in enumerate(COST_AXES)
                for modality, pareto in _pareto_groups(leaderboard, groups)
            )
            + "</div>"
        )
        overall_tables = _overall_groups_html(leaderboard, groups)
    else:
        plots = "".join(
            f'<figure class="plot-figure" data-axis="{axis}"{"" if i == 0 else " hidden"}>'
            f"{_svg_plot(leaderboard.pareto, axis)}<figcaption>Mean normalised score of the "
            f"complete models versus {_escape(_cost_axis_label(axis))}. Filled, labelled points "
            "are the Pareto front: no other model scores at least as well for at most this cost."
            "</figcaption></figure>"
            for i, axis in enumerate(COST_AXES)
        )
        overall_tables = _overall_table_html(leaderboard)
    runs = leaderboard.runs
    runs_html = _simple_table_html(
        "runs-table",
        ["run", "timestamp", "config hash", "code version", ""],
        (
            [
                f"<code>{_escape(row['run_id'])}</code>",
                _escape(row["timestamp"]),
                _escape(row["config_hash"]),
                _escape(row["code_version"]),
                "current" if row["current"] else "",
            ]
            for row in runs.to_dict("records")
        ),
    )
    body = [
        "<header>",
        f"<h1>{_escape(title)}</h1>",
        _header_html(leaderboard),
        "</header><main>",
        '<section id="overall"><h2>Overall ranking</h2>',
        '<p class="help">Ranked by mean per-task rank among the models that scored every task '
        "(ties share the mean of their ranks). Incomplete models are ranked only among the "
        "models that scored all of their tasks and are listed last. "
        + (
            "Models are ranked within their modality, on the tasks of that modality only. "
            if leaderboard.multimodal
            else ""
        )
        + "Click a column header to sort.</p>",
        (
            f'<p class="ranking-note">{_escape(leaderboard.ranking_note)}</p>'
            if leaderboard.ranking_note
            else ""
        ),
        '<label class="search">Find a model <input type="search" id="model-search" '
        'placeholder="name or tag"></label>',
        overall_tables,
        "</section>",
        _metric_scores_html(leaderboard),
        '<section id="cost"><h2>Score versus cost</h2>',
        f'<div class="axis-buttons" role="group" aria-label="cost axis">{axis_buttons}</div>',
        plots,
        "</section>",
        f'<section id="changes"><h2>Changes since the previous run</h2>{_changes_html(leaderboard)}'
        "</section>",
        f'<section id="failures"><h2>Failures ({len(leaderboard.failures)})</h2>'
        f"{_failures_html(leaderboard)}</section>",
        f'<section id="runs"><h2>Runs</h2>{runs_html}</section>',
        "</main>",
        '<script type="application/json" id="leaderboard-data">'
        f"{json_for_script(leaderboard_data(leaderboard))}</script>",
        f"<script>{script}</script>",
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_escape(title)}</title><style>{style}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
