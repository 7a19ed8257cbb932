"""Univariate streaming anomaly detector for ``metric`` series (CPU, memory, counts, latencies).

Speaks river's anomaly-detector protocol (``learn_one`` / ``score_one``); one configuration,
chosen once over the whole Numenta Anomaly Benchmark subset (no per-series settings).
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque

import numpy as np

from models.base import Features

# Alert threshold on ``MetricDetector`` scores: just below the 0.5183 that NAB's corpus-wide
# standard-profile sweep picked (any value in between scores the same on the corpus).
DEFAULT_THRESHOLD = 0.518


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


def _pnorm(xs: list[float], p: float) -> float:
    """``(Σ x**p) ** (1/p)`` of non-negative ``xs``, scaled by the largest so it cannot overflow.

    >>> _pnorm([1.0], 4.0), _pnorm([], 4.0), round(_pnorm([1.0, 1.0], 4.0), 3)
    (1.0, 0.0, 1.189)
    """
    top = max(xs, default=0.0)
    if top <= 0.0:
        return 0.0
    return top * sum((x / top) ** p for x in xs) ** (1.0 / p)


def _finite(x: Features) -> float | None:
    """``x["value"]`` as a float, or None when it is missing, None, NaN or infinite."""
    v = x.get("value")
    if v is None:
        return None
    try:
        fv = float(v)
    except (TypeError, ValueError):
        return None
    return fv if math.isfinite(fv) else None


class MetricDetector:
    """Streaming anomaly detector for one metric series; scores in [0, 1].

    Each new value is judged by novelty ratios where 1 means "as unusual as the
    most unusual thing seen in the last ``history`` points" — each series is its
    own yardstick, so a score means the same on a CPU ratio as on a request count:

    * shape, at several time scales: distance of the latest subsequence to its
      nearest neighbour among past subsequences (a streaming discord), over the
      largest such distance seen lately.  ``shapes`` lists (length, step): step 1
      compares raw values (spikes, short bursts); step s > 1 compares moving
      averages of s points sampled every s points, so (24, 12) matches whole
      days of 5-minute data (a missing daily peak, a changed daily shape);
    * range: how far the value falls outside the min/max of the last ``history``
      values, in units of ``ext`` × that range (a new extreme);
    * level: how far the median of the last ``level_len`` values falls outside
      the 1st–99th percentile band, in units of ``level_ext`` × the band (a level
      shift that outliers in the history would otherwise hide);
    * deviation: the z-score of the value against the mean and standard deviation
      of the last ``z_len`` values, over the largest such z-score seen lately,
      raised to ``z_power`` < 1 (z-score records are the most common one-view
      false alarm, so a record must be clearly larger or backed by another view).

    The ratios are fused by their ``p``-norm: a lone record (ratio 1) gives
    ``m = 1``, several views agreeing add up.  The onset score is
    ``m / (scale + m)``: 0.5 is a fused ratio of ``scale``.  An onset score that
    does not exceed every one of the previous ``suppress`` points is damped by
    ``damp``: one incident should alert once, at its first and strongest point.

    State, not only change: when a value scores at least ``hold_at`` (0.7) and lies
    outside the 1st–99th percentile band learnt so far, that band is frozen.
    While it is frozen, each value is also scored against it (the level ratio
    above, on the value itself), so a plateau at an abnormal level keeps scoring
    high although the change-based views have learnt it.  The band is released
    when the median of the last ``level_len`` values is back inside it (the
    series recovered), or after ``hold`` points (the level has become the new
    normal: ``hold`` = 96 is 8 hours of 5-minute data, 96 one-minute windows).

    Warm-up: the first ``warmup`` (30) points score 0.  Until ``settle`` (200) points
    the range and level views are judged against a band widened by
    ``(settle / n)²`` (a short history has narrow extremes, and the first cycle of a
    periodic series keeps setting new ones), so early scores are conservative: only
    clear anomalies page, and no state is held; ``confidence()`` says how far the
    history has filled.  Missing values (None, NaN, inf) score 0 and are not
    learnt.  A repeated sample (same timestamp and value as the last learnt one)
    is not learnt twice.  Learning is otherwise unguarded on purpose: keeping
    anomalous values out of the baselines made recurring spikes (daily cron jobs)
    alert every day.

    >>> det = MetricDetector()
    >>> scores = []
    >>> for i in range(600):
    ...     x = {"value": 10.0 + (i % 7) * 0.1 + (50.0 if i == 500 else 0.0)}
    ...     scores.append(det.score_one(x))
    ...     det.learn_one(x)
    >>> scores[500] > 0.9, max(scores[200:500]) < DEFAULT_THRESHOLD
    (True, True)
    """

    def __init__(
        self,
        history: int = 2000,
        shapes: tuple[tuple[int, int], ...] = ((32, 1), (16, 4), (24, 12)),
        ext: float = 0.05,
        level_len: int = 6,
        level_ext: float = 0.2,
        z_len: int = 300,
        p: float = 4.0,
        z_min: int = 20,
        z_power: float = 0.7,
        scale: float = 1.227,
        warmup: int = 30,
        settle: int = 200,
        suppress: int = 100,
        damp: float = 0.1,
        hold: int = 96,
        hold_at: float = 0.7,
        eps: float = 1e-6,
    ) -> None:
        self.history = history
        self.shapes = tuple((int(k), int(st)) for k, st in shapes)
        self.ext, self.level_len, self.level_ext = ext, level_len, level_ext
        self.z_len, self.p, self.z_min, self.z_power = z_len, p, z_min, z_power
        self.scale, self.warmup, self.settle = scale, warmup, settle
        self.suppress, self.damp = suppress, damp
        self.hold, self.hold_at = hold, hold_at
        self.eps = eps
        self.n = 0
        self.values = RollingSorted(history)  # range and level baseline
        self.nn_dists = [RollingSorted(history) for _ in self.shapes]  # recent NN distances
        self.zs = RollingSorted(history)  # recent z-scores
        self.recent_raw: deque[float] = deque(maxlen=suppress)
        # Ring buffer written twice so the last ``cap`` values are always one contiguous slice.
        self.cap = max(history + max(k * st for k, st in self.shapes), z_len)
        self.buf = np.zeros(2 * self.cap)
        self.pos = 0
        self.frozen: tuple[float, float] | None = None  # the band a held state is judged on
        self.held = 0  # points since the band was frozen
        self.last_sample: tuple[float, float] | None = None  # (timestamp, value) last learnt
        # score_one's work, reused by the learn_one that follows on the same value:
        # (value, score, raw score, NN distance per shape, z-score).
        self._last: tuple[float, float, float, list[float | None], float | None] | None = None

    def confidence(self) -> float:
        """How far the history behind the scores has filled: 0 before ``warmup`` points,
        then rising to 1 at ``settle`` (200) points (early scores are deliberately conservative)."""
        if self.n < self.warmup:
            return 0.0
        return min(1.0, self.n / self.settle)

    def _recent(self, count: int) -> np.ndarray:
        """The last ``count`` learnt values, oldest first."""
        end = self.pos + self.cap
        return self.buf[end - min(count, self.n, self.cap) : end]

    def _nn_distances(self, x: float) -> list[float | None]:
        """Per shape: RMS distance of the latest subsequence (``x`` last) to its nearest past."""
        full = np.append(self._recent(self.cap), x)
        out: list[float | None] = []
        for k, step in self.shapes:
            if step > 1:
                cs = np.cumsum(np.insert(full, 0, 0.0))
                series = (cs[step:] - cs[:-step]) / step  # moving average of ``step`` points
            else:
                series = full
            span = (k - 1) * step + 1
            if len(series) < 4 * span:
                out.append(None)
                continue
            cur = series[-span::step]
            # Candidates end before the current subsequence begins: no trivial self-match.
            past = np.lib.stride_tricks.sliding_window_view(series[: len(series) - span], span)
            d2 = np.sum((past[:, ::step] - cur) ** 2, axis=1)
            out.append(float(np.sqrt(np.min(d2) / k)))
        return out

    def _band_ratios(self, x: float, floor: float) -> list[float]:
        """Range and level ratios, against bands widened while the history is short."""
        widen = max(1.0, self.settle / max(self.n, 1)) ** 2
        lo, hi = self.values.sorted[0], self.values.sorted[-1]
        out = [max(x - hi, lo - x, 0.0) / (widen * self.ext * max(hi - lo, floor))]
        if self.level_len:
            med = float(np.median(np.append(self._recent(self.level_len - 1), x)))
            qlo, qhi = self.values.quantile(0.01), self.values.quantile(0.99)
            out.append(
                max(med - qhi, qlo - med, 0.0) / (widen * self.level_ext * max(qhi - qlo, floor))
            )
        return out

    def _state_ratio(self, v: float, floor: float) -> float:
        """How far ``v`` lies outside the frozen band, in ``level_ext`` × its width."""
        if self.frozen is None:
            return 0.0
        lo, hi = self.frozen
        return max(v - hi, lo - v, 0.0) / (self.level_ext * max(hi - lo, floor))

    def _evaluate(self, x: float) -> tuple[float, float, list[float | None], float | None]:
        if self._last is not None and self._last[0] == x:
            return self._last[1], self._last[2], self._last[3], self._last[4]
        floor = self.eps * (abs(x) + 1.0)
        nds = self._nn_distances(x)
        ratios = self._band_ratios(x, floor) if self.n >= self.warmup else []
        for nd, dists in zip(nds, self.nn_dists, strict=True):
            if nd is not None and len(dists) >= 20:
                ratios.append(nd / max(dists.sorted[-1], floor))
        z: float | None = None
        if self.z_len and self.n >= self.z_len:
            recent = self._recent(self.z_len)
            z = abs(x - float(recent.mean())) / max(float(recent.std()), floor)
            if len(self.zs) >= self.z_min and self.zs.sorted[-1] > 0:
                ratios.append((z / self.zs.sorted[-1]) ** self.z_power)
        m = _pnorm(ratios, self.p)
        raw = m / (self.scale + m) if self.n >= self.warmup else 0.0
        score = raw
        if self.recent_raw and raw <= max(self.recent_raw):
            score *= self.damp
        st = self._state_ratio(x, floor)
        score = max(score, st / (self.scale + st))
        self._last = (x, score, raw, nds, z)
        return score, raw, nds, z

    def score_one(self, x: Features) -> float:
        """Anomaly score of ``x["value"]`` in [0, 1] given what was learnt so far
        (0 for a missing value)."""
        v = _finite(x)
        return 0.0 if v is None else self._evaluate(v)[0]

    def learn_one(self, x: Features) -> None:
        """Take ``x["value"]`` into the model; a missing value or a repeated sample
        (same ``x["timestamp"]`` and value as the last one learnt) is skipped."""
        v = _finite(x)
        if v is None:
            return
        t = x.get("timestamp")
        if t is not None:
            if self.last_sample == (float(t), v):
                return
            self.last_sample = (float(t), v)
        _, raw, nds, z = self._evaluate(v)
        self._last = None
        self._follow_state(v, raw)
        self.recent_raw.append(raw)
        self.values.add(v)
        if z is not None:
            self.zs.add(z)
        for nd, dists in zip(nds, self.nn_dists, strict=True):
            if nd is not None:
                dists.add(nd)
        self.buf[self.pos] = v
        self.buf[self.pos + self.cap] = v
        self.pos = (self.pos + 1) % self.cap
        self.n += 1

    def _follow_state(self, v: float, raw: float) -> None:
        """Freeze the band at an onset outside it; release it on recovery or after ``hold``."""
        if self.frozen is None:
            if self.hold and raw >= self.hold_at and self.n >= self.settle:
                lo, hi = self.values.quantile(0.01), self.values.quantile(0.99)
                if not lo <= v <= hi:
                    self.frozen, self.held = (lo, hi), 0
            return
        self.held += 1
        floor = self.eps * (abs(v) + 1.0)
        med = float(np.median(np.append(self._recent(self.level_len - 1), v)))
        recovered = self.held >= self.level_len and self._state_ratio(med, floor) == 0.0
        if recovered or self.held >= self.hold:
            self.frozen = None
