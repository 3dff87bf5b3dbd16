"""Evaluate stored tables: read scores and truth from a path or ``s3://`` URI, save the result.

:func:`run_evaluate` is what ``ray-logme evaluate`` (parsed in :mod:`ray_logme.cli`) calls::

    ray-logme evaluate --scores runs/<id>/scores.parquet --truth truth.csv [--output per_task.csv]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ray_logme.evaluate.ranking import RankingEvaluation, evaluate_ranking
from ray_logme.evaluate.statistics import DEFAULT_CONFIDENCE, DEFAULT_NUM_BOOTSTRAP, DEFAULT_TOP_K


def load_truth_table(path: str | Path) -> pd.DataFrame:
    """Read a ground-truth table: CSV (or Parquet) with at least ``model``, ``task``, ``accuracy``.

    Any other columns (e.g. ``protocol``, ``seed``) are kept for grouping or filtering.
    """
    return _read_table(str(path))


def load_scores_table(path: str | Path) -> pd.DataFrame:
    """Read a scores table (the ``reduce`` output): Parquet or CSV, local path or ``s3://`` URI."""
    return _read_table(str(path))


def _read_table(uri: str) -> pd.DataFrame:
    """A CSV (by its ``.csv`` suffix) or Parquet table from a local path or ``s3://`` URI."""
    import pyarrow.csv as pa_csv
    import pyarrow.fs as pa_fs
    import pyarrow.parquet as pq

    from ray_logme.storage import filesystem_from_uri, storage_errors

    filesystem, path = filesystem_from_uri(uri)
    with storage_errors("reading", uri):
        info = filesystem.get_file_info(path)
        if info.type == pa_fs.FileType.NotFound:
            raise FileNotFoundError(f"table {uri} does not exist")
        if path.endswith(".csv"):
            with filesystem.open_input_stream(path) as stream:
                return pa_csv.read_csv(stream).to_pandas()
        return pq.read_table(path, filesystem=filesystem).to_pandas()


def run_evaluate(
    scores_path: str | Path,
    truth_path: str | Path,
    *,
    output_path: str | Path | None = None,
    score_col: str = "score",
    truth_col: str = "accuracy",
    model_col: str = "model",
    group_col: str | Sequence[str] = "task",
    metric: str | None = None,
    top_k: Sequence[int] = DEFAULT_TOP_K,
    bootstrap_statistics: Sequence[str] = ("weighted_tau",),
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    min_models: int = 3,
) -> RankingEvaluation:
    """Load the two tables, run :func:`evaluate_ranking` on them, optionally save the result.

    ``scores_path`` and ``truth_path``: Parquet or CSV, local path or ``s3://`` URI (see
    :func:`load_scores_table`). The other options are those of :func:`evaluate_ranking`.
    ``output_path`` ending in ``.parquet`` gets Parquet, anything else CSV (the per-task table).
    """
    evaluation = evaluate_ranking(
        load_scores_table(scores_path),
        load_truth_table(truth_path),
        score_col=score_col,
        truth_col=truth_col,
        model_col=model_col,
        group_col=group_col,
        metric=metric,
        top_k=top_k,
        bootstrap_statistics=bootstrap_statistics,
        num_bootstrap=num_bootstrap,
        confidence=confidence,
        seed=seed,
        min_models=min_models,
    )
    if output_path is not None:
        output_path = Path(output_path)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        if output_path.suffix == ".parquet":
            evaluation.per_task.to_parquet(output_path, index=False)
        else:
            evaluation.per_task.to_csv(output_path, index=False)
    return evaluation
