"""A run's LogME scores against cross-validated linear probes on the very same stored features.

A linear probe is the ground truth LogME approximates (the evidence of a linear model on frozen
features), so on any run one can check the ranking without fine-tuning anything::

    frame = probe_run(store, load_run(store, run_id))   # model, task, logme, probe, ...
    agreement(frame)                                    # Kendall tau per task

Classification: mean accuracy of a standardised multinomial logistic regression over
``folds`` stratified, shuffled folds (seeded). Regression: mean R^2 of a standardised ridge
regression (alpha chosen by generalised cross-validation inside each fold) over ``folds``
folds. Features are read from the store shard by shard (``iter_feature_chunks``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ray_logme.evaluate.statistics import kendall_tau


def probe_features(
    features: np.ndarray, labels: np.ndarray, kind: str, *, folds: int = 5, seed: int = 0
) -> float:
    """Cross-validated linear-probe score of ``features: float32[n, d]`` for ``labels``:
    accuracy (classification, ``labels: int[n]``) or R^2 (regression, ``float[n]`` or
    ``float[n, t]``)."""
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "classification":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        scoring = "accuracy"
    else:
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))
        splitter = KFold(folds, shuffle=True, random_state=seed)
        scoring = "r2"
    return float(cross_val_score(model, features, labels, cv=splitter, scoring=scoring).mean())


def probe_run(store, run, *, folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """One row per scored (model, task) pair of ``run`` (a :class:`ray_logme.pipeline.RunTables`):
    ``model, task, kind, modality, tags, logme, probe, num_samples, feature_dim``."""
    scores = run.scores[run.scores["state"] == "ok"]
    if "metric" in scores.columns:  # one row per pair: LogME's (other metrics share the pair)
        scores = scores[scores["metric"].fillna("logme") == "logme"]
    models = run.models.set_index("model") if run.models is not None else None
    rows = []
    for pair in scores.itertuples(index=False):
        chunks = list(store.iter_feature_chunks(pair.model_key, pair.task_key))
        features = np.concatenate([chunk[0] for chunk in chunks])
        labels = np.concatenate([chunk[1] for chunk in chunks])
        meta = models.loc[pair.model] if models is not None and pair.model in models.index else {}
        rows.append(
            {
                "model": pair.model,
                "task": pair.task,
                "kind": pair.kind,
                "modality": meta.get("modality") if len(meta) else None,
                "tags": meta.get("tags") if len(meta) else None,
                "logme": float(pair.score),
                "probe": probe_features(features, labels, pair.kind, folds=folds, seed=seed),
                "num_samples": int(features.shape[0]),
                "feature_dim": int(features.shape[1]),
            }
        )
    return pd.DataFrame(rows)


def agreement(frame: pd.DataFrame) -> pd.DataFrame:
    """Kendall tau between LogME and the probe, per task: ``task, num_models, kendall_tau``."""
    rows = []
    for task, group in frame.groupby("task", sort=True):
        rows.append(
            {
                "task": task,
                "num_models": len(group),
                "kendall_tau": kendall_tau(group["logme"].to_numpy(), group["probe"].to_numpy()),
            }
        )
    return pd.DataFrame(rows)
