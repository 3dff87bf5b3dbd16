"""Writing a leaderboard through the feature store: Parquet and CSV copies of its tables, the
Markdown summary and the HTML page, each naming its run (:func:`leaderboard_files`), to the run's
own folder, then published as the latest if it is (:func:`write_leaderboard`)."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pandas as pd

from ray_logme.leaderboard.html import to_html
from ray_logme.leaderboard.inputs import _text
from ray_logme.leaderboard.latest import publish_latest
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


#: The column every written table gets, naming the run whose leaderboard the file is (tables such
#: as ``runs`` already have a ``run_id`` column of their own).
RUN_COLUMN = "leaderboard_run_id"
#: The Parquet schema metadata key naming the run: ``{"run_id", "timestamp"}`` as JSON.
PARQUET_METADATA_KEY = b"ray_logme_leaderboard"


def leaderboard_files(leaderboard: Leaderboard, run_id: str) -> dict[str, bytes]:
    """The files of ``leaderboard``, ``{file name: bytes}``, each complete and naming ``run_id``.

    ``<table>.parquet`` and ``<table>.csv`` for each of ``Leaderboard.tables()``, with a last
    column :data:`RUN_COLUMN` (and, in Parquet, the schema metadata key
    :data:`PARQUET_METADATA_KEY`); ``summary.md`` and ``index.html`` name the run in their
    header. CSV text cells starting with ``= + - @`` get a leading ``'`` so spreadsheets do not
    run them; Parquet keeps the exact values.
    """
    import pyarrow.parquet as pq

    timestamp = _run_timestamp(leaderboard, run_id)
    files: dict[str, bytes] = {}
    for name, table in leaderboard.tables().items():
        named = table.copy()
        named[RUN_COLUMN] = run_id
        arrow = _arrow_table(named)
        metadata = dict(arrow.schema.metadata or {})
        metadata[PARQUET_METADATA_KEY] = json.dumps({"run_id": run_id, "timestamp": timestamp})
        buffer = io.BytesIO()
        pq.write_table(arrow.replace_schema_metadata(metadata), buffer, compression="zstd")
        files[f"{name}.parquet"] = buffer.getvalue()
        files[f"{name}.csv"] = _csv_safe(named).to_csv(index=False).encode("utf-8")
    files[layout.LEADERBOARD_SUMMARY_FILE] = to_markdown(leaderboard).encode("utf-8")
    files[layout.LEADERBOARD_PAGE_FILE] = to_html(leaderboard).encode("utf-8")
    return files


def _run_timestamp(leaderboard: Leaderboard, run_id: str) -> str:
    run = leaderboard.run
    return run.timestamp if run is not None and run.run_id == run_id else ""


def write_leaderboard(
    leaderboard: Leaderboard, store: Any, run_id: str | None = None, *, latest: bool = True
) -> dict[str, str]:
    """Write the leaderboard through the feature store, publish it; return ``{relpath: uri}``.

    Writes :func:`leaderboard_files` to the run's own folder (``runs/{run_id}/leaderboard/``),
    then, with ``latest``, publishes it (:func:`ray_logme.leaderboard.latest.publish_latest`):
    the ``leaderboard/LATEST`` pointer moves to this run only if it started later than the run
    the pointer names (start time: the leaderboard's ``run.timestamp``; unknown counts as
    earliest), and only then are the files copied to ``leaderboard/``. The returned paths hold
    the pointer and the copies only when this run is the latest. ``run_id`` defaults to the
    leaderboard's run and must be a valid key (:func:`ray_logme.storage.layout.check_key`).
    ``store`` needs ``write_bytes``, ``read_versioned``, ``write_bytes_if`` and ``uri_of``
    (``ray_logme.storage.FeatureStore``).
    """
    run_id = run_id if run_id is not None else leaderboard.run_id
    try:
        folder = layout.run_leaderboard_dir(run_id)
    except ValueError as exc:
        raise ValueError(
            f"{exc} (pass run_id= or build the leaderboard with run=RunRecord(...))"
        ) from None
    files = leaderboard_files(leaderboard, run_id)
    written: dict[str, str] = {}
    for name, data in files.items():
        relpath = layout.leaderboard_file(folder, name)
        store.write_bytes(relpath, data)
        written[relpath] = store.uri_of(relpath)
    if latest:
        written.update(publish_latest(store, run_id, _run_timestamp(leaderboard, run_id), files))
    logger.info("wrote leaderboard of run %s: %d files", run_id, len(written))
    return written
