"""Univariate streaming anomaly detector for ``metric`` series (CPU, memory, counts, latencies).

Speaks river's anomaly-detector protocol (``learn_one`` / ``score_one``); one configuration,
chosen once over the whole Numenta Anomaly Benchmark subset (no per-series settings).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque

import numpy as np

# Threshold on ``MetricDetector`` scores that NAB's corpus-wide sweep picked (0.5186, rounded).
DEFAULT_THRESHOLD = 0.52


class RollingSorted:
    """The last ``size`` values kept sorted, for O(1) quantiles over a sliding window.

    >>> r = RollingSorted(3)
    >>> for v in (5.0, 1.0, 3.0, 9.0):
    ...     r.add(v)
    >>> r.sorted, r.quantile(0.5)
    ([1.0, 3.0, 9.0], 3.0)
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.fifo: deque[float] = deque()
        self.sorted: list[float] = []

    def add(self, x: float) -> None:
        self.fifo.append(x)
        insort(self.sorted, x)
        if len(self.fifo) > self.size:
            old = self.fifo.popleft()
            del self.sorted[bisect_left(self.sorted, old)]

    def __len__(self) -> int:
        return len(self.sorted)

    def quantile(self, q: float) -> float:
        s = self.sorted
        pos = q * (len(s) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)


class MetricDetector:
    """Streaming anomaly detector for one metric series; scores in [0, 1].

    Two novelty views of the newest value, each a ratio where 1 means "as unusual
    as the most unusual thing seen lately":

    * shape: distance of the latest ``shape_len`` values to their nearest
      neighbour among the past ``history`` subsequences (a streaming discord),
      divided by the largest such distance seen in the last ``history`` points;
    * level: how far the value falls outside the range of the last ``history``
      values, in units of ``ext`` × that range.

    The score is ``m / (1 + m)`` of the larger ratio, so 0.5 means a new record.
    After a score reaches ``fire_level`` the next ``suppress`` scores are damped,
    because one incident should page once (NAB also rewards only the first
    detection of a window while every extra one costs).  Values scoring above
    ``fire_level`` are kept out of the level baseline for at most ``guard_limit``
    points, so a spike does not widen its own range while a lasting level shift
    becomes the new normal.  The first ``warmup`` points score 0.

    >>> det = MetricDetector()
    >>> scores = []
    >>> for i in range(600):
    ...     x = {"value": 10.0 + (i % 7) * 0.1 + (50.0 if i == 500 else 0.0)}
    ...     scores.append(det.score_one(x))
    ...     det.learn_one(x)
    >>> scores[500] > 0.9, max(scores[200:500]) < 0.5
    (True, True)
    """

    def __init__(
        self,
        history: int = 2000,
        shape_len: int = 32,
        ext: float = 0.05,
        warmup: int = 150,
        fire_level: float = DEFAULT_THRESHOLD,
        suppress: int = 100,
        damp: float = 0.1,
        guard_limit: int = 20,
        eps: float = 1e-6,
    ) -> None:
        self.history = history
        self.shape_len = shape_len
        self.ext = ext
        self.warmup = warmup
        self.fire_level = fire_level
        self.suppress = suppress
        self.damp = damp
        self.guard_limit = guard_limit
        self.eps = eps
        self.n = 0
        self.values = RollingSorted(history)  # level baseline
        self.nn_dists = RollingSorted(history)  # recent nearest-neighbour distances
        # Ring buffer written twice so the last ``cap`` values are always one contiguous slice.
        self.cap = history + shape_len
        self.buf = np.zeros(2 * self.cap)
        self.pos = 0
        self.last_fire = -(10**9)
        self.guarded = 0
        # score_one's work, reused by the learn_one that follows on the same value.
        self._last: tuple[float, float, float | None] | None = None  # value, score, nn distance

    def _nn_distance(self, x: float) -> float | None:
        """RMS distance of the latest ``shape_len`` values (``x`` last) to their nearest match."""
        k = self.shape_len
        have = min(self.n, self.cap)
        if have < 4 * k:
            return None
        hist = self.buf[self.pos + self.cap - have : self.pos + self.cap]
        cur = np.append(hist[-(k - 1) :], x)
        # Candidates end before the current subsequence starts overlapping them.
        past = np.lib.stride_tricks.sliding_window_view(hist[: -(k - 1)], k)
        return float(np.sqrt(np.min(np.sum((past - cur) ** 2, axis=1)) / k))

    def _evaluate(self, x: float) -> tuple[float, float | None]:
        if self._last is not None and self._last[0] == x:
            return self._last[1], self._last[2]
        floor = self.eps * (abs(x) + 1.0)
        nd = self._nn_distance(x)
        m = 0.0
        if len(self.values) >= 20:
            lo, hi = self.values.sorted[0], self.values.sorted[-1]
            m = max(x - hi, lo - x, 0.0) / (self.ext * max(hi - lo, floor))
        if nd is not None and len(self.nn_dists) >= 20:
            m = max(m, nd / max(self.nn_dists.sorted[-1], floor))
        score = m / (1.0 + m) if self.n >= self.warmup else 0.0
        if self.n - self.last_fire < self.suppress:
            score *= self.damp
        self._last = (x, score, nd)
        return score, nd

    def score_one(self, x: dict) -> float:
        """Anomaly score of ``x["value"]`` in [0, 1] given what was learnt so far."""
        return self._evaluate(float(x["value"]))[0]

    def learn_one(self, x: dict) -> None:
        """Take ``x["value"]`` into the model (``x["timestamp"]`` is accepted and not needed)."""
        v = float(x["value"])
        score, nd = self._evaluate(v)
        self._last = None
        if score >= self.fire_level:
            self.last_fire = self.n
            self.guarded += 1
        else:
            self.guarded = 0
        if self.guarded == 0 or self.guarded > self.guard_limit:
            self.values.add(v)
        if nd is not None:
            self.nn_dists.add(nd)
        self.buf[self.pos] = v
        self.buf[self.pos + self.cap] = v
        self.pos = (self.pos + 1) % self.cap
        self.n += 1
