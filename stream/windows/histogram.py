"""Mergeable log-bucketed latency histograms, kept sparse and vectorised.

A latency x > 0 falls in bucket ``floor(log(x / MIN_MS) / log(GAMMA)) + 1`` and
is read back as the bucket's geometric midpoint, so any quantile is within
``sqrt(GAMMA) - 1`` (≈ 1 %) relative error of the true sample.  Bucket 0 holds
latencies below ``MIN_MS`` (read back as 0).  Histograms of many series live in
one pair of arrays: ``key = series_id * N_BUCKETS + bucket`` and ``count``, so
merging is concatenation and quantiles for every series come from one sort.
"""

from __future__ import annotations

import math

import numpy as np

GAMMA = 1.02
MIN_MS = 0.01
N_BUCKETS = 2048
_LOG_GAMMA = math.log(GAMMA)


def bucket_of(latency_ms: np.ndarray) -> np.ndarray:
    """Bucket index of each latency (int64).

    >>> bucket_of(np.array([0.0, 1.0, 1000.0])).tolist()
    [0, 233, 582]
    """
    x = np.asarray(latency_ms, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.floor(np.log(np.maximum(x, MIN_MS) / MIN_MS) / _LOG_GAMMA) + 1
    b = np.where(x < MIN_MS, 0, b)
    return np.clip(b, 0, N_BUCKETS - 1).astype(np.int64)


def value_of(bucket: np.ndarray) -> np.ndarray:
    """Representative latency of a bucket: its geometric midpoint."""
    b = np.asarray(bucket, dtype=np.float64)
    return np.where(b <= 0, 0.0, MIN_MS * np.power(GAMMA, b - 0.5))


def consolidate(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge duplicate keys, summing counts; returns sorted unique keys."""
    if keys.size == 0:
        return keys.astype(np.int64), counts.astype(np.int64)
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    c = counts[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    return k[starts], np.add.reduceat(c, starts)


def quantiles(
    keys: np.ndarray, counts: np.ndarray, series_ids: np.ndarray, qs: tuple[float, ...]
) -> np.ndarray:
    """Quantiles per series from consolidated (sorted) histogram arrays.

    Returns an array (len(series_ids), len(qs)); NaN where a series has no sample.

    >>> k = np.array([0 * N_BUCKETS + 234, 0 * N_BUCKETS + 582, 1 * N_BUCKETS + 300])
    >>> c = np.array([9, 1, 5])
    >>> q = quantiles(k, c, np.array([0, 1, 2]), (0.5, 0.99))
    >>> bool(abs(q[0, 0] - 1.0) < 0.02), bool(abs(q[0, 1] - 1000) < 20), bool(np.isnan(q[2, 0]))
    (True, True, True)
    """
    out = np.full((len(series_ids), len(qs)), np.nan)
    if keys.size == 0 or len(series_ids) == 0:
        return out
    sid = keys // N_BUCKETS
    cs = np.cumsum(counts)
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    ends = np.r_[starts[1:], len(sid)]
    present = sid[starts]
    totals = cs[ends - 1] - np.where(starts > 0, cs[starts - 1], 0)
    before = cs[ends - 1] - totals
    # Map requested series to their run in the histogram (if any).
    pos = np.searchsorted(present, series_ids)
    pos_c = np.minimum(pos, len(present) - 1)
    found = (pos < len(present)) & (present[pos_c] == series_ids)
    for j, q in enumerate(qs):
        rank = before + np.maximum(1, np.ceil(q * totals)).astype(np.int64)
        idx = np.searchsorted(cs, rank, side="left")
        vals = value_of(keys[idx] % N_BUCKETS)
        out[found, j] = vals[pos_c[found]]
    return out
