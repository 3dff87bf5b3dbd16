"""Which rows of a (model, task) pair the sample-based metrics see: a capped, seeded, stratified
sample that does not depend on how the rows are split into shards or read.

Every row gets a priority ``hash(seed, row_id)`` in [0, 1) (splitmix64, the same on every
machine). Classification keeps, in each class, the ``quota`` rows of lowest priority, with quotas
proportional to the class counts (largest remainder; every class keeps ``min(count,
MIN_PER_CLASS)`` rows, so the sample may exceed the cap by at most ``MIN_PER_CLASS`` per class).
Regression keeps the ``cap`` rows of lowest priority (a simple random sample). Because the choice
depends only on ``(seed, row_id, label)``, the reduce stage can pick the rows from the labels and
row ids alone (a cheap column read) and then read just those rows' features; the sample is the
same whatever the shard layout, and every seed gives an independent one.

Pure numpy, no I/O.
"""

from __future__ import annotations

import numpy as np

#: Rows every class keeps (when it has them), so per-class means and variances exist.
MIN_PER_CLASS = 2

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def row_priorities(row_ids: np.ndarray, seed: int) -> np.ndarray:
    """``float64[n]`` in [0, 1): splitmix64 of ``row_id + seed * golden`` (53 high bits)."""
    ids = np.asarray(row_ids).astype(np.uint64, copy=False)
    with np.errstate(over="ignore"):
        z = ids + np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def stratified_quotas(counts: np.ndarray, cap: int) -> np.ndarray:
    """``int64[c]`` rows to keep per class: all of them when ``sum(counts) <= cap``, else
    proportional to ``counts`` by largest remainder, at least ``min(count, MIN_PER_CLASS)``."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if cap < 1:
        raise ValueError(f"sample cap must be >= 1, got {cap}")
    if total <= cap:
        return counts.copy()
    exact = cap * counts / total
    quotas = np.maximum(np.floor(exact).astype(np.int64), np.minimum(counts, MIN_PER_CLASS))
    remainder = exact - np.floor(exact)
    for index in np.argsort(-remainder, kind="stable"):
        if quotas.sum() >= cap:
            break
        if quotas[index] < counts[index]:
            quotas[index] += 1
    return quotas


def sample_mask(row_ids: np.ndarray, labels: np.ndarray, kind: str, cap: int, seed: int):
    """``bool[n]``: the rows of the sample (see the module docstring).

    ``row_ids: int[n]`` unique within the pair; ``labels: int[n]`` (classification; any ids) or
    anything with ``n`` rows (regression, unused). Ties in priority fall back to the row id.
    """
    row_ids = np.asarray(row_ids)
    num_rows = row_ids.shape[0]
    if np.unique(row_ids).size != num_rows:
        raise ValueError("row ids must be unique within a pair to draw a sample from them")
    priority = row_priorities(row_ids, seed)
    keep = np.zeros(num_rows, dtype=bool)
    if kind == "regression":
        if num_rows <= cap:
            keep[:] = True
        else:
            keep[np.lexsort((row_ids, priority))[:cap]] = True
        return keep
    classes, column = np.unique(np.asarray(labels), return_inverse=True)
    quotas = stratified_quotas(np.bincount(column, minlength=classes.size), cap)
    order = np.lexsort((row_ids, priority, column))  # by class, then priority, then id
    starts = np.searchsorted(column[order], np.arange(classes.size))
    for start, quota in zip(starts, quotas, strict=True):
        keep[order[start : start + quota]] = True
    return keep
