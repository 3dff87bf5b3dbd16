"""What both renderers show alike: cell formatting (ranks, rank changes, coverage, costs) and
the grouping of the tables by modality, with their titles and summaries. Returns raw text;
each renderer escapes it for its format."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ray_logme.leaderboard.query import format_count
from ray_logme.leaderboard.records import COST_AXES, COST_LABELS, Leaderboard


def _format_rank(value: Any) -> str:
    if value is None or pd.isna(value):
        return ""
    value = float(value)
    return f"{value:.0f}" if value.is_integer() else f"{value:.1f}"


def _format_float(value: Any, digits: int = 4) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{float(value):.{digits}f}"


def _format_change(change: str, rank_delta: Any) -> str:
    if change == "new":
        return "new"
    if change != "kept" or rank_delta is None or pd.isna(rank_delta):
        return ""
    delta = float(rank_delta)
    if delta == 0:
        return "="
    text = _format_rank(abs(delta))
    return f"▲{text}" if delta > 0 else f"▼{text}"


def _format_coverage_note(row: Mapping[str, Any]) -> str:
    """How an incomplete model is ranked (``""`` for a complete one)."""
    if row["complete"]:
        return ""
    if pd.isna(row["comparable_rank"]):
        return "no scores"
    return (
        f"incomplete: #{_format_rank(row['comparable_rank'])} of "
        f"{int(row['num_comparable'])} comparable"
    )


def _format_coverage(row: Mapping[str, Any]) -> str:
    covered = f"{int(row['tasks_covered'])}/{int(row['num_tasks'])}"
    note = _format_coverage_note(row)
    return f"{covered}, {note}" if note else covered


def format_cost(axis: str, value: Any) -> str:
    """A cost value for display: ``5.72M`` parameters, ``768`` dims, ``1200/s`` throughput."""
    if value is None or pd.isna(value) or not np.isfinite(float(value)):
        return ""
    if axis == "num_params":
        return format_count(float(value))
    if axis == "throughput":
        return f"{float(value):.0f}/s" if float(value) >= 10 else f"{float(value):.2g}/s"
    return f"{float(value):.0f}"


def _display_groups(leaderboard: Leaderboard) -> list[tuple[str, pd.DataFrame, tuple[str, ...]]]:
    """``(modality, its rows of overall, its leaderboard tasks)`` as rendered: the whole table
    for a run with one modality, else each modality that has models, unknown last."""
    if not leaderboard.multimodal:
        modality = leaderboard.modalities[0] if leaderboard.modalities else ""
        return [(modality, leaderboard.overall, leaderboard.tasks)]
    groups = []
    for modality in (*leaderboard.modalities, ""):
        rows = leaderboard.overall[leaderboard.overall["modality"] == modality]
        if not rows.empty:
            groups.append((modality, rows, leaderboard.tasks_of(modality)))
    return groups


def _modality_title(modality: str) -> str:
    """``"Image models"``; ``"Models of unknown modality"`` for ``""`` (raw text: escape it)."""
    return (
        f"{modality[:1].upper()}{modality[1:]} models"
        if modality
        else ("Models of unknown modality")
    )


def _group_summary(modality: str, rows: pd.DataFrame, tasks: Sequence[str]) -> str:
    """``"3 models; 2 tasks: pets, flowers"`` (raw text: escape it)."""
    models = f"{len(rows)} model{'s' if len(rows) != 1 else ''}"
    if not modality:
        return f"{models}, failed before reporting a modality; every task counts"
    if not tasks:
        return f"{models}; no {modality} task in this run"
    return f"{models}; {len(tasks)} task{'s' if len(tasks) != 1 else ''}: {', '.join(tasks)}"


def _pareto_groups(
    leaderboard: Leaderboard, groups: Sequence[tuple[str, pd.DataFrame, tuple[str, ...]]]
) -> list[tuple[str, pd.DataFrame]]:
    """``(modality, its pareto rows)`` of each displayed modality that has tasks (unknown only
    when one of its models is complete)."""
    pareto = leaderboard.pareto
    return [
        (modality, pareto[pareto["modality"] == modality])
        for modality, _, tasks in groups
        if tasks and (modality or (pareto["modality"] == "").any())
    ]


def _tasks_count(leaderboard: Leaderboard) -> str:
    """``"4 tasks"``, or ``"4 tasks (image: 2, text: 2)"`` with several modalities."""
    text = f"{len(leaderboard.tasks)} tasks"
    if leaderboard.multimodal:
        counts = {m: leaderboard.task_modalities.count(m) for m in leaderboard.modalities}
        if "" in leaderboard.task_modalities:
            counts["unknown"] = leaderboard.task_modalities.count("")
        text += " (" + ", ".join(f"{m}: {n}" for m, n in counts.items() if n) + ")"
    return text


def _task_set_change(leaderboard: Leaderboard) -> str | None:
    """What changed in the task set since the previous run, and which ranks that affects; None
    when nothing changed or both runs had one modality (the renderers keep their wording)."""
    if not (leaderboard.tasks_added or leaderboard.tasks_removed):
        return None
    if not (leaderboard.multimodal or len(leaderboard.previous_modalities) > 1):
        return None
    added = ", ".join(leaderboard.tasks_added) or "none"
    removed = ", ".join(leaderboard.tasks_removed) or "none"
    changed = leaderboard.task_set_changed_modalities
    if changed:
        effect = "ranks of " + ", ".join(f"{m or 'unknown-modality'} models" for m in changed)
        effect += " compare different tasks"
    else:
        effect = "ranks within each modality compare the same tasks"
    return f"Task set changed: added {added}; removed {removed} ({effect})"


def _cost_axis_label(axis: str) -> str:
    """Human label of a cost axis, with its direction."""
    better = "lower" if COST_AXES[axis] == "min" else "higher"
    return f"{COST_LABELS[axis]} ({better} is cheaper)"
