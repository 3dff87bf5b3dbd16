"""Writing a leaderboard through the feature store: Parquet and CSV copies of its tables, the
Markdown summary and the HTML page (:func:`write_leaderboard`)."""

from __future__ import annotations

import io
import logging
from typing import Any

import pandas as pd

from ray_logme.leaderboard.html import to_html
from ray_logme.leaderboard.inputs import _text
from ray_logme.leaderboard.markdown import to_markdown
from ray_logme.leaderboard.records import Leaderboard

logger = logging.getLogger(__name__)

_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Text cells that a spreadsheet would run as a formula get a leading ``'`` (CSV only)."""
    safe = table.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(
                lambda value: (
                    "'" + value
                    if isinstance(value, str) and value.startswith(_CSV_FORMULA_START)
                    else value
                )
            )
    return safe


def _arrow_table(table: pd.DataFrame):
    """``table`` as a ``pyarrow.Table``; text columns become strings (missing -> ``""``)."""
    import pyarrow as pa

    converted = table.copy()
    for column in converted.columns:
        if converted[column].dtype == object:
            converted[column] = converted[column].map(_text).astype(object)
    return pa.Table.from_pandas(converted, preserve_index=False)


def write_leaderboard(
    leaderboard: Leaderboard, store: Any, run_id: str | None = None, *, latest: bool = True
) -> dict[str, str]:
    """Write the leaderboard through the feature store; return ``{relpath: uri}``.

    Writes ``runs/{run_id}/leaderboard/`` and, with ``latest``, ``leaderboard/`` (the latest
    leaderboard): ``<table>.parquet`` and ``<table>.csv`` for each of ``Leaderboard.tables()``,
    ``summary.md`` and ``index.html``. ``run_id`` defaults to the leaderboard's run. ``store`` needs ``write_table(relpath, pyarrow.Table)``,
    ``write_text(relpath, str)`` and ``uri_of(relpath)`` (``ray_logme.storage.FeatureStore``).
    CSV text cells starting with ``= + - @`` get a leading ``'`` so spreadsheets do not run
    them; Parquet keeps the exact values.
    """
    run_id = run_id if run_id is not None else leaderboard.run_id
    if not run_id or "/" in run_id or run_id in (".", ".."):
        raise ValueError(
            f"run_id {run_id!r} must be a non-empty name without '/' (pass run_id= or build the "
            "leaderboard with run=RunRecord(...))"
        )
    prefixes = [f"runs/{run_id}/leaderboard"] + (["leaderboard"] if latest else [])
    summary, page = to_markdown(leaderboard), to_html(leaderboard)
    written: dict[str, str] = {}
    for prefix in prefixes:
        for name, table in leaderboard.tables().items():
            store.write_table(f"{prefix}/{name}.parquet", _arrow_table(table))
            buffer = io.StringIO()
            _csv_safe(table).to_csv(buffer, index=False)
            store.write_text(f"{prefix}/{name}.csv", buffer.getvalue())
            written[f"{prefix}/{name}.parquet"] = store.uri_of(f"{prefix}/{name}.parquet")
            written[f"{prefix}/{name}.csv"] = store.uri_of(f"{prefix}/{name}.csv")
        store.write_text(f"{prefix}/summary.md", summary)
        store.write_text(f"{prefix}/index.html", page)
        written[f"{prefix}/summary.md"] = store.uri_of(f"{prefix}/summary.md")
        written[f"{prefix}/index.html"] = store.uri_of(f"{prefix}/index.html")
    logger.info("wrote leaderboard of run %s: %d files", run_id, len(written))
    return written
