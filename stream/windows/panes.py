"""A pane: one hop of event time, with its counters, metric stats and latency histogram chunks.

Windows are sums of the last ``size / hop`` panes (see :mod:`stream.windows.state`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.windows import histogram
from stream.windows.arrays import native
from stream.windows.columns import N_COLS
from stream.windows.metric_stats import empty_mstats


@dataclass
class Pane:
    counts: np.ndarray  # (rows, N_COLS) int64; rows grow with the registry
    mstats: np.ndarray  # (rows, len(METRIC_STATS)) float64
    lat_keys: list[np.ndarray] = field(default_factory=list)
    lat_counts: list[np.ndarray] = field(default_factory=list)
    pending_lat: int = 0

    def __getstate__(self) -> dict[str, object]:
        # Only the rows this pane touched (a pane sees a fraction of all series, and a
        # worker that reads partitions at different event times holds dozens of panes
        # open): a checkpoint writes a sixth of the bytes of the dense arrays.
        state = self.__dict__.copy()
        empty = empty_mstats(1).view(np.int64)  # bit by bit: NaN and -0.0 exactly
        used = np.bitwise_or.reduce(self.counts, axis=1) != 0  # any(), at twice its speed
        used |= (self.mstats.view(np.int64) != empty).any(axis=1)
        touched = np.flatnonzero(used)
        state["counts"], state["mstats"] = self.counts[touched], self.mstats[touched]
        state["touched"], state["rows"] = touched, self.counts.shape[0]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        touched = state.pop("touched", None)  # None: a checkpoint with the dense arrays
        rows = state.pop("rows", 0)
        self.__dict__.update(state)
        self.counts = native(self.counts, np.int64)
        self.mstats = native(self.mstats, np.float64)
        if touched is not None:
            counts, mstats = self.counts, self.mstats
            self.counts, self.mstats = np.zeros((rows, N_COLS), np.int64), empty_mstats(rows)
            self.counts[touched], self.mstats[touched] = counts, mstats

    @classmethod
    def empty(cls, rows: int) -> Pane:
        return cls(np.zeros((rows, N_COLS), np.int64), empty_mstats(rows))

    def ensure_rows(self, n: int) -> None:
        have = self.counts.shape[0]
        if have < n:
            grow = max(n, 2 * have)
            self.counts = np.vstack([self.counts, np.zeros((grow - have, N_COLS), np.int64)])
            self.mstats = np.vstack([self.mstats, empty_mstats(grow - have)])

    def add_latency(self, keys: np.ndarray, counts: np.ndarray) -> None:
        self.lat_keys.append(keys)
        self.lat_counts.append(counts)
        self.pending_lat += keys.size
        # Fold chunks together now and then so memory stays bounded by distinct buckets.
        if self.pending_lat > 1_000_000:
            self.consolidate()

    def consolidate(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.lat_keys:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        k, c = histogram.consolidate(np.concatenate(self.lat_keys), np.concatenate(self.lat_counts))
        self.lat_keys, self.lat_counts, self.pending_lat = [k], [c], k.size
        return k, c
