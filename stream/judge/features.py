"""A closed window's features, every series at once: what every rule judges.

The feature names are ``models.base.FEATURES`` (the detectors' one list) plus the
metric features; they are computed once per window, as numpy columns indexed by
series id, into a :class:`JudgedWindow` that the pipeline hands to every rule.  A
per-series detector reads its series through a :class:`Row`; a bank gets the
columns of the series it judges (:func:`bank_columns`).

>>> SERIES_FEATURES[:3], SERIES_FEATURES[-2:]
(('volume', 'success', 'pending'), ('metric_count', 'value'))
>>> CALL_FEATURES[-1], NOTIFICATION_FEATURES[0]
('unknown', 'created')
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.bank import Columns
from models.base import FEATURES
from stream.judge.hints import FineChildren
from stream.windows import histogram
from stream.windows.columns import COL, CONFIG_ERROR_COLS, SYSTEM_ERROR_COLS
from stream.windows.registry import Dims, SeriesRegistry
from stream.windows.state import ClosedWindow, WindowState

#: Features that hold for every series of a window (FEATURES starts with them).
WINDOW_CONSTANTS = FEATURES[: FEATURES.index("volume")]
#: Call counters read as counted.
CALL_FEATURES = FEATURES[FEATURES.index("volume") : FEATURES.index("unknown") + 1]
#: The callback features (FEATURES ends with them).
NOTIFICATION_FEATURES = FEATURES[FEATURES.index("created") :]
#: Features of ``metric`` series: samples in the window and their mean.
METRIC_FEATURES = ("metric_count", "value")
#: Every per-series feature, in the order a :class:`Row` lists them.
SERIES_FEATURES = (*FEATURES[len(WINDOW_CONSTANTS) :], *METRIC_FEATURES)


#: A slow call takes more than this many times its series' median in the same window
#: (ln 4 = 1.39, about 3 sigma of a typical log-latency spread of 0.45): a stalled call,
#: whatever the series' own level, so the tail share is judged apart from the median.
TAIL_RATIO = 4.0


def slow_calls(win: ClosedWindow) -> np.ndarray:
    """Per series, the calls slower than ``TAIL_RATIO`` x the window's median (from the
    window's latency histograms, one pass over them)."""
    n = win.counts.shape[0]
    if win.hist_keys.size == 0:
        return np.zeros(n)
    sid = win.hist_keys // histogram.N_BUCKETS
    bucket = win.hist_keys % histogram.N_BUCKETS
    median = np.nan_to_num(win.latency[:, 0], nan=np.inf)  # no calls: nothing is slow
    slow = bucket > histogram.bucket_of(median * TAIL_RATIO)[sid]
    return np.bincount(sid[slow], weights=win.hist_counts[slow], minlength=n)[:n]


def feature_columns(win: ClosedWindow) -> dict[str, np.ndarray]:
    """Every per-series feature (``SERIES_FEATURES``) of every series, as arrays."""
    c = win.counts
    f: dict[str, np.ndarray] = {name: c[:, COL[name]] for name in CALL_FEATURES}
    f["system_errors"] = c[:, SYSTEM_ERROR_COLS].sum(axis=1)
    f["config_errors"] = c[:, CONFIG_ERROR_COLS].sum(axis=1)
    f["business_declines"] = c[:, COL["err_business_decline"]]
    f["timeouts"] = c[:, COL["err_timeout"]]
    f["latency_p50"], f["latency_p95"], f["latency_p99"] = win.latency.T
    f["slow_calls"] = slow_calls(win)
    for name in NOTIFICATION_FEATURES:
        f[name] = c[:, COL[name]]
    f["metric_count"] = win.metrics[:, 0]
    f["value"] = win.metric_mean()
    return f


@dataclass(eq=False)
class JudgedWindow:
    """One closed window as every rule sees it: features computed once, the series
    registry, and the finest call level (where root-cause hints look)."""

    win: ClosedWindow
    features: dict[str, np.ndarray]
    registry: SeriesRegistry
    fine_dims: Dims
    _fine: FineChildren | None = field(default=None, repr=False)

    @classmethod
    def of(cls, win: ClosedWindow, windows: WindowState) -> JudgedWindow:
        fine = max(windows.call_levels, key=len, default=())
        return cls(win, feature_columns(win), windows.registry, fine)

    def fine_children(self) -> FineChildren:
        """The active series of the finest level (built once, shared by every hint)."""
        if self._fine is None:
            self._fine = FineChildren.of(self.win, self.registry, self.fine_dims)
        return self._fine

    def constants(self, window_s: float) -> dict[str, float]:
        """The ``WINDOW_CONSTANTS`` of this window (and river's ``timestamp``)."""
        start = self.win.start_ms
        return {"window_start_ms": float(start), "window_s": window_s, "timestamp": start / 1000}


class Row(Mapping[str, float]):
    """One series' features as a read-only mapping (no dict built per series).

    >>> row = Row({"volume": np.array([3, 7])}, {"window_s": 10.0}, 1)
    >>> row["volume"], row.get("window_s"), row.get("nope", -1.0), list(row)
    (7.0, 10.0, -1.0, ['volume', 'window_s'])
    """

    __slots__ = ("consts", "feats", "sid")

    def __init__(self, feats: dict[str, np.ndarray], consts: dict[str, float], sid: int) -> None:
        self.feats, self.consts, self.sid = feats, consts, sid

    def __contains__(self, key: object) -> bool:
        return key in self.feats or key in self.consts

    def __iter__(self) -> Iterator[str]:
        yield from self.feats
        yield from self.consts

    def __len__(self) -> int:
        return len(self.feats) + len(self.consts)

    def __getitem__(self, key: str) -> float:
        arr = self.feats.get(key)
        if arr is not None:
            return float(arr[self.sid])
        return self.consts[key]

    def get(self, key: str, default: Any = None) -> Any:
        arr = self.feats.get(key)
        if arr is not None:
            return float(arr[self.sid])
        return self.consts.get(key, default)


def bank_columns(
    keys: tuple[str, ...], feats: dict[str, np.ndarray], rows: np.ndarray, consts: dict[str, float]
) -> Columns:
    """The features a bank reads (``keys``), for the judged series only."""
    out: dict[str, np.ndarray | float] = {}
    for key in keys:
        arr = feats.get(key)
        if arr is not None:
            out[key] = arr[rows].astype(np.float64)
        elif key in consts:
            out[key] = consts[key]
    return out
