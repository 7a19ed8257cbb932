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

from collections.abc import Iterable, Iterator, Mapping
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
#: The tail share is judged only in windows with this many calls of the series.  A
#: median of few calls is no reference: of two calls the "median" is the faster, and the
#: other is over 4x it 1.4 % of the time for log-normal latency of spread 0.45 (8 % for
#: gamma-shaped latency), against 0.10 % (1.2 %) of calls over 4x a known median.  With
#: the upper median and at least 6 calls the share is within 10 % of the large-window
#: share for both shapes (docs/detection.md), so a series' learned normal share holds
#: whatever its calls per window.
TAIL_MIN_CALLS = 6
#: The upper median: rank floor(n/2) + 1 of n calls (the histogram's rank is ceil(q n)).
UPPER_MEDIAN = 0.5 + 1e-9


def slow_calls(win: ClosedWindow, calls: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per series, (the calls slower than ``TAIL_RATIO`` x the window's upper median, the
    calls judged): both 0 where the series has fewer than ``TAIL_MIN_CALLS`` calls.
    ``calls``: :func:`timed_calls` of the window, when the caller has them."""
    n = win.counts.shape[0]
    if win.hist_keys.size == 0:
        return np.zeros(n), np.zeros(n)
    sid = win.hist_keys // histogram.N_BUCKETS
    bucket = win.hist_keys % histogram.N_BUCKETS
    calls = timed_calls(win) if calls is None else calls
    judged = calls >= TAIL_MIN_CALLS
    upper = histogram.quantiles(win.hist_keys, win.hist_counts, np.arange(n), (UPPER_MEDIAN,))
    ref = np.where(judged, np.nan_to_num(upper[:, 0], nan=np.inf), np.inf)
    slow = bucket > histogram.bucket_of(ref * TAIL_RATIO)[sid]
    return np.bincount(sid[slow], weights=win.hist_counts[slow], minlength=n)[:n], np.where(
        judged, calls, 0.0
    )


def timed_calls(win: ClosedWindow) -> np.ndarray:
    """Per series, its calls in the window's latency histograms: those whose latency is
    the provider's (``stream.windows.columns.timed_mask``), what a median is of."""
    n = win.counts.shape[0]
    sid = win.hist_keys // histogram.N_BUCKETS
    return np.bincount(sid, weights=win.hist_counts, minlength=n)[:n]


def tail_line(win: ClosedWindow, sid: int) -> int | None:
    """The histogram bucket a call of series ``sid`` must pass to be slow this window
    (``TAIL_RATIO`` x its upper median), None when the series is not judged (fewer than
    ``TAIL_MIN_CALLS`` calls)."""
    keys, counts = win.hist_keys, win.hist_counts
    lo, hi = np.searchsorted(keys, [sid * histogram.N_BUCKETS, (sid + 1) * histogram.N_BUCKETS])
    if counts[lo:hi].sum() < TAIL_MIN_CALLS:
        return None
    upper = histogram.quantiles(keys[lo:hi], counts[lo:hi], np.array([sid]), (UPPER_MEDIAN,))
    return int(histogram.bucket_of(upper[:, 0] * TAIL_RATIO)[0])


def calls_over(win: ClosedWindow, sids: np.ndarray, line: int) -> np.ndarray:
    """Per series of ``sids``, its calls this window in histogram buckets above ``line``.

    >>> from stream.windows.histogram import N_BUCKETS
    >>> w = ClosedWindow(0, 1, np.zeros((2, 1)), np.zeros((2, 3)), np.zeros((2, 5)),
    ...                  np.zeros(2), np.array([100, 300, N_BUCKETS + 50, N_BUCKETS + 400]),
    ...                  np.array([5, 2, 7, 3]))
    >>> calls_over(w, np.array([0, 1]), 200).tolist()
    [2, 3]
    """
    keys, nb = win.hist_keys, histogram.N_BUCKETS
    before = np.r_[0, np.cumsum(win.hist_counts)]
    sids = np.asarray(sids, np.int64)
    lo = np.searchsorted(keys, sids * nb + line + 1)
    hi = np.searchsorted(keys, (sids + 1) * nb)
    return before[hi] - before[lo]


def feature_columns(win: ClosedWindow) -> dict[str, np.ndarray]:
    """Every per-series feature (``SERIES_FEATURES``) of every series, as arrays."""
    c = win.counts
    f: dict[str, np.ndarray] = {name: c[:, COL[name]] for name in CALL_FEATURES}
    f["system_errors"] = c[:, SYSTEM_ERROR_COLS].sum(axis=1)
    f["config_errors"] = c[:, CONFIG_ERROR_COLS].sum(axis=1)
    f["business_declines"] = c[:, COL["err_business_decline"]]
    f["timeouts"] = c[:, COL["err_timeout"]]
    f["latency_p50"], f["latency_p95"], f["latency_p99"] = win.latency.T
    f["timed_calls"] = timed_calls(win)
    f["slow_calls"], f["tail_calls"] = slow_calls(win, f["timed_calls"])
    f["due"] = c[:, COL["created"]].astype(np.float64) if win.due is None else win.due
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

    def broader(self, sid: int, levels: Iterable[Dims]) -> list[int]:
        """Ids of the series of ``levels`` above ``sid`` (a subset of its dimensions with
        its values), those the registry knows.

        >>> from stream.windows.registry import SeriesRegistry
        >>> reg = SeriesRegistry()
        >>> _ = reg.ids_of(("provider",), ["alipay", "paypal"])
        >>> (m,) = reg.ids_of(("provider", "merchant_id"), ["paypal\x1fm1"]).tolist()
        >>> JudgedWindow(None, {}, reg, ()).broader(m, [("provider",), ("provider", "merchant_id")])
        [1]
        """
        key = self.registry.keys[sid]
        if key is None:
            return []
        dims, values = key
        out = []
        for level in levels:
            if set(level) < set(dims):
                parent = self.registry.index.get(
                    (level, tuple(values[dims.index(d)] for d in level))
                )
                if parent is not None:
                    out.append(parent)
        return out

    def provider_codes(self, sids: np.ndarray) -> np.ndarray:
        """Per series a small code of its provider (-1: a series without one): the
        groups a bank's fleet-wide estimate leaves out one at a time (volume demand).

        >>> from stream.windows.registry import SeriesRegistry
        >>> reg = SeriesRegistry()
        >>> sids = reg.ids_of(("provider",), ["alipay", "paypal"])
        >>> op = reg.ids_of(("provider", "operation"), ["paypal\x1frefund"])
        >>> w = JudgedWindow(None, {}, reg, ("provider",))  # no window needed
        >>> w.provider_codes(np.concatenate([sids, op])).tolist()
        [0.0, 1.0, 1.0]
        """
        keys = self.registry.keys
        codes: dict[str, int] = {}
        out = np.full(sids.size, -1.0)
        for i, sid in enumerate(sids.tolist()):
            key = keys[sid]
            if key is not None and "provider" in key[0]:
                out[i] = codes.setdefault(key[1][key[0].index("provider")], len(codes))
        return out

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
