"""How well a ranking of models predicts their transfer accuracy.

A leaderboard is useful only if ranking by its score picks the models that transfer best. This
package compares a score table (one score per model and task, e.g. LogME from ``reduce``) with a
ground-truth table (the accuracy each model reached after fine-tuning on the task):

* :mod:`~ray_logme.evaluate.statistics` - weighted Kendall tau, Kendall tau, Pearson, top-k
  relative accuracy and percentile bootstrap CIs (pure numpy).
* :mod:`~ray_logme.evaluate.ranking` - :func:`evaluate_ranking`, task by task, into a
  :class:`RankingEvaluation` (per-task table, means over tasks, Markdown and JSON).
* :mod:`~ray_logme.evaluate.groundtruth` - loaders of the published ground-truth tables
  (stable_transfer, TLlib).
* :mod:`~ray_logme.evaluate.run` - :func:`run_evaluate` on tables at a path or ``s3://`` URI,
  which ``ray-logme evaluate`` (:mod:`ray_logme.cli`) calls.
"""

from ray_logme.evaluate.groundtruth import (
    PROTOCOL_FINE_TUNE,
    PROTOCOL_LINEAR_PROBE,
    STABLE_TRANSFER_FILE,
    TLLIB_COPIED_SCORES,
    TLLIB_CORRELATIONS_FILE,
    TLLIB_FINETUNE_FILE,
    TLLIB_SCORES_FILE,
    TLLIB_UNREPRODUCIBLE_DATASETS,
    TLlibTables,
    load_stable_transfer_table,
    load_tllib_tables,
)
from ray_logme.evaluate.ranking import RankingEvaluation, evaluate_ranking, frame_to_markdown
from ray_logme.evaluate.run import load_scores_table, load_truth_table, run_evaluate
from ray_logme.evaluate.statistics import (
    DEFAULT_CONFIDENCE,
    DEFAULT_NUM_BOOTSTRAP,
    DEFAULT_TOP_K,
    RANK_STATISTICS,
    ConfidenceInterval,
    bootstrap_over_models,
    kendall_tau,
    mean_over_tasks,
    paired_difference_over_tasks,
    pearson,
    random_ranking_weighted_tau,
    top_k_relative_accuracy,
    weighted_tau,
)

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_NUM_BOOTSTRAP",
    "DEFAULT_TOP_K",
    "PROTOCOL_FINE_TUNE",
    "PROTOCOL_LINEAR_PROBE",
    "RANK_STATISTICS",
    "STABLE_TRANSFER_FILE",
    "TLLIB_COPIED_SCORES",
    "TLLIB_CORRELATIONS_FILE",
    "TLLIB_FINETUNE_FILE",
    "TLLIB_SCORES_FILE",
    "TLLIB_UNREPRODUCIBLE_DATASETS",
    "ConfidenceInterval",
    "RankingEvaluation",
    "TLlibTables",
    "bootstrap_over_models",
    "evaluate_ranking",
    "frame_to_markdown",
    "kendall_tau",
    "load_scores_table",
    "load_stable_transfer_table",
    "load_tllib_tables",
    "load_truth_table",
    "mean_over_tasks",
    "paired_difference_over_tasks",
    "pearson",
    "random_ranking_weighted_tau",
    "run_evaluate",
    "top_k_relative_accuracy",
    "weighted_tau",
]
