"""Loaders of the published ground-truth tables (the repo keeps copies in ``tests/data/groundtruth``).

- :func:`load_stable_transfer_table`: Agostinelli et al., ECCV 2022 ("How stable are
  transferability metrics evaluations?"), the source-architectures table.
- :func:`load_tllib_tables`: Transfer-Learning-Library's model-selection benchmark.

Both return tables in the column names :func:`ray_logme.evaluate.evaluate_ranking` reads
(``model``, ``task``, ``score``, ``accuracy``); the known problems of the published tables are
recorded in ``TLLIB_COPIED_SCORES`` and ``TLLIB_UNREPRODUCIBLE_DATASETS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

STABLE_TRANSFER_FILE = "stable_transfer_source_architectures.csv"
_STABLE_TRANSFER_COLUMNS = {
    "Transferability Metric": "metric",
    "Source Architecture": "model",
    "Transferability Metric Score": "score",
    "Test Accuracy": "accuracy",
    "Trainable Backbone": "trainable_backbone",
    "Target Dataset": "task",
}
PROTOCOL_LINEAR_PROBE = "linear_probe"
PROTOCOL_FINE_TUNE = "fine_tune"

TLLIB_FINETUNE_FILE = "tllib_finetune_acc.csv"
TLLIB_SCORES_FILE = "tllib_metric_scores.csv"
TLLIB_CORRELATIONS_FILE = "tllib_reported_correlations.csv"
# tests/data/groundtruth/README.md, "Inconsistencies in the README": the DTD NCE column is a copy
# of the LogME column; the printed correlations of these two datasets cannot be reproduced from
# the printed scores and accuracies (the Aircraft accuracies are suspect).
TLLIB_COPIED_SCORES = (("NCE", "DTD"),)
TLLIB_UNREPRODUCIBLE_DATASETS = ("Aircraft", "OxfordIIITPets")


def _read_csv_with_columns(path: str | Path, expected: Sequence[str], **kwargs) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth table {path} does not exist")
    frame = pd.read_csv(path, **kwargs)
    missing = [column for column in expected if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    return frame


def load_stable_transfer_table(path: str | Path) -> pd.DataFrame:
    """Read the Google "source architectures" table (19 Keras ImageNet models x 9 datasets).

    Returns one row per (metric, model, task, protocol) with columns ``metric`` (gbc, leep, nleep,
    logme, hscore), ``model``, ``task``, ``score`` (higher = better predicted transfer),
    ``accuracy`` (test accuracy, a fraction), ``trainable_backbone`` (bool) and ``protocol``
    (``"linear_probe"`` when the backbone is frozen, ``"fine_tune"`` when it is trained).
    """
    frame = _read_csv_with_columns(path, list(_STABLE_TRANSFER_COLUMNS), index_col=0)
    frame = frame.rename(columns=_STABLE_TRANSFER_COLUMNS)[list(_STABLE_TRANSFER_COLUMNS.values())]
    trainable = (
        frame["trainable_backbone"].astype(str).str.strip().map({"True": True, "False": False})
    )
    if trainable.isna().any():
        raise ValueError(f"{path}: 'Trainable Backbone' must be True or False")
    frame["trainable_backbone"] = trainable.astype(bool)
    frame["protocol"] = np.where(
        frame["trainable_backbone"], PROTOCOL_FINE_TUNE, PROTOCOL_LINEAR_PROBE
    )
    frame["score"] = frame["score"].astype(np.float64)
    frame["accuracy"] = frame["accuracy"].astype(np.float64)
    return frame.reset_index(drop=True)


@dataclass(frozen=True)
class TLlibTables:
    """The Transfer-Learning-Library model-selection tables, in this module's column names.

    ``scores``: ``metric, model, task, score``; ``truth``: ``model, task, accuracy`` (fine-tuned
    accuracy in percent); ``reported``: ``metric, task, statistic, value`` with statistic
    ``"pearson"`` or ``"weighted_tau"`` as printed in the source README.
    """

    scores: pd.DataFrame
    truth: pd.DataFrame
    reported: pd.DataFrame


def load_tllib_tables(directory: str | Path, *, drop_copied_scores: bool = True) -> TLlibTables:
    """Read the three ``tllib_*.csv`` files from ``directory`` (``tests/data/groundtruth``).

    With ``drop_copied_scores`` the 10 ``NCE`` rows of ``DTD`` are left out: in the source they are
    a copy of the LogME column (see the ground-truth README). The Aircraft and OxfordIIITPets
    tables are kept; their printed correlations cannot be reproduced
    (``TLLIB_UNREPRODUCIBLE_DATASETS``).
    """
    directory = Path(directory)
    truth = _read_csv_with_columns(
        directory / TLLIB_FINETUNE_FILE, ["model", "dataset", "finetune_acc"]
    )
    scores = _read_csv_with_columns(
        directory / TLLIB_SCORES_FILE, ["metric", "model", "dataset", "score"]
    )
    reported = _read_csv_with_columns(
        directory / TLLIB_CORRELATIONS_FILE, ["metric", "dataset", "statistic", "value"]
    )
    truth = truth.rename(columns={"dataset": "task", "finetune_acc": "accuracy"})
    scores = scores.rename(columns={"dataset": "task"})
    if drop_copied_scores:
        copied = pd.Series(False, index=scores.index)
        for metric, task in TLLIB_COPIED_SCORES:
            copied |= (scores["metric"] == metric) & (scores["task"] == task)
        scores = scores[~copied].reset_index(drop=True)
    reported = reported.rename(columns={"dataset": "task"})
    statistic_names = {"Pearson Corr": "pearson", "Weighted Tau": "weighted_tau"}
    unknown = set(reported["statistic"]) - set(statistic_names)
    if unknown:
        raise ValueError(
            f"{directory / TLLIB_CORRELATIONS_FILE}: unknown statistic(s) {sorted(unknown)}"
        )
    reported["statistic"] = reported["statistic"].map(statistic_names)
    for frame, column in ((truth, "accuracy"), (scores, "score"), (reported, "value")):
        frame[column] = frame[column].astype(np.float64)
    return TLlibTables(scores=scores, truth=truth, reported=reported)
