"""Per-series statistics of metric samples in a pane: count, sum, max and the newest value.

Rows are series ids, columns ``METRIC_STATS``; panes merge into windows with
:func:`merge_mstats`.

>>> m = empty_mstats(2)
>>> add_samples(m, np.array([1, 1]), np.array([20, 10]), np.array([5.0, 7.0]))
>>> m[1].tolist()
[2.0, 12.0, 7.0, 20.0, 5.0]
"""

from __future__ import annotations

import numpy as np

METRIC_STATS = ("count", "sum", "max", "last_ts", "last")
MSTAT = {name: i for i, name in enumerate(METRIC_STATS)}
_COUNT, _SUM, _MAX, _LAST_TS, _LAST = (MSTAT[s] for s in METRIC_STATS)


def empty_mstats(rows: int) -> np.ndarray:
    m = np.zeros((rows, len(METRIC_STATS)), np.float64)
    m[:, _MAX] = -np.inf
    m[:, _LAST_TS] = -np.inf
    m[:, _LAST] = np.nan
    return m


def add_samples(m: np.ndarray, s: np.ndarray, t: np.ndarray, v: np.ndarray) -> None:
    """Add samples (series id, time, value) into ``m`` in place."""
    np.add.at(m[:, _COUNT], s, 1)
    np.add.at(m[:, _SUM], s, v)
    np.maximum.at(m[:, _MAX], s, v)
    order = np.lexsort((t, s))
    s_o, t_o, v_o = s[order], t[order], v[order]
    last = np.r_[s_o[1:] != s_o[:-1], True]
    s_l, t_l, v_l = s_o[last], t_o[last], v_o[last]
    newer = t_l >= m[s_l, _LAST_TS]
    m[s_l[newer], _LAST_TS] = t_l[newer]
    m[s_l[newer], _LAST] = v_l[newer]


def merge_mstats(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Stats of two panes together (rows as many as the longer)."""
    rows = max(a.shape[0], b.shape[0])
    out = empty_mstats(rows)
    out[: a.shape[0]] = a
    m = out[: b.shape[0]]
    m[:, _COUNT] += b[:, _COUNT]
    m[:, _SUM] += b[:, _SUM]
    m[:, _MAX] = np.maximum(m[:, _MAX], b[:, _MAX])
    newer = b[:, _LAST_TS] > m[:, _LAST_TS]
    m[newer, _LAST_TS] = b[newer, _LAST_TS]
    m[newer, _LAST] = b[newer, _LAST]
    return out


def metric_mean(m: np.ndarray) -> np.ndarray:
    """Mean sample value per row; NaN without samples."""
    c = m[:, _COUNT]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, m[:, _SUM] / np.maximum(c, 1), np.nan)
