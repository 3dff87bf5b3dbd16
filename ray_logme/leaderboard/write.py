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
from ray_logme.storage import layout

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

    Writes the folders of :func:`ray_logme.storage.layout.leaderboard_dirs`: the run's own
    (``runs/{run_id}/leaderboard/``) and, with ``latest``, the latest leaderboard
    (``leaderboard/``); in each, ``<table>.parquet`` and ``<table>.csv`` for each of
    ``Leaderboard.tables()``, ``summary.md`` and ``index.html``. ``run_id`` defaults to the
    leaderboard's run and must be a valid key (:func:`ray_logme.storage.layout.check_key`).
    ``store`` needs ``write_table(relpath, pyarrow.Table)``, ``write_text(relpath, str)`` and
    ``uri_of(relpath)`` (``ray_logme.storage.FeatureStore``). CSV text cells starting with
    ``= + - @`` get a leading ``'`` so spreadsheets do not run them; Parquet keeps the exact
    values.
    """
    run_id = run_id if run_id is not None else leaderboard.run_id
    try:
        folders = layout.leaderboard_dirs(run_id, latest)
    except ValueError as exc:
        raise ValueError(
            f"{exc} (pass run_id= or build the leaderboard with run=RunRecord(...))"
        ) from None
    summary, page = to_markdown(leaderboard), to_html(leaderboard)
    written: dict[str, str] = {}

    def record(path: str) -> None:
        written[path] = store.uri_of(path)

    for folder in folders:
        for name, table in leaderboard.tables().items():
            parquet_path = layout.leaderboard_file(folder, f"{name}.parquet")
            csv_path = layout.leaderboard_file(folder, f"{name}.csv")
            store.write_table(parquet_path, _arrow_table(table))
            buffer = io.StringIO()
            _csv_safe(table).to_csv(buffer, index=False)
            store.write_text(csv_path, buffer.getvalue())
            record(parquet_path)
            record(csv_path)
        summary_path = layout.leaderboard_file(folder, layout.LEADERBOARD_SUMMARY_FILE)
        page_path = layout.leaderboard_file(folder, layout.LEADERBOARD_PAGE_FILE)
        store.write_text(summary_path, summary)
        store.write_text(page_path, page)
        record(summary_path)
        record(page_path)
    logger.info("wrote leaderboard of run %s: %d files", run_id, len(written))
    return written
