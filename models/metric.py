"""Univariate streaming anomaly detector for ``metric`` series (CPU, memory, counts, latencies).

Speaks river's anomaly-detector protocol (``learn_one`` / ``score_one``); one configuration
for every series (no per-series settings).  Only the CSV threshold is chosen on the
Numenta Anomaly Benchmark subset (the level view averages its lags instead of picking
one); ``make nab`` prints its leave-one-category-out figures beside the in-sample one.
``WatchedMetric`` is the live wrapper: the same detector plus hard limits and an alert
that holds while a state stays abnormal.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass

import numpy as np

from models.base import Features

# Alert threshold on ``MetricDetector`` scores: just below the 0.5183 that NAB's corpus-wide
# standard-profile sweep picked (any value in between scores the same on the corpus).
DEFAULT_THRESHOLD = 0.518
# The live rule's default (``detectors.metrics.threshold``): see docs/detection.md, "Metric
# events", for what it costs in false alarms per series-hour on the simulator's null run.
LIVE_THRESHOLD = 0.9


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


# What ``MetricDetector._evaluate`` found for one value: (score, raw score, NN distance
# per shape, z-score).
_Eval = tuple[float, float, list[float | None], float | None]


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
      the 1st–99th percentile band of the values before the last ``lag`` ones, in units
      of ``level_ext`` × the band (a level shift that outliers in the history would
      otherwise hide), averaged over the ``level_lags`` 50, 100 and 200.  A lag keeps
      a drift from being judged against its own first steps (a memory leak's band would
      otherwise rise with it and never page); no one lag is right for every drift, and
      picking one on benchmark totals does not carry to other series, so the view takes
      the mean over them (a mean, unlike a max, adds no false alarms of its own);
    * deviation: the z-score of the value against the mean and standard deviation
      of the last ``z_len`` values, over the largest such z-score seen lately,
      raised to ``z_power`` < 1 (z-score records are the most common one-view
      false alarm, so a record must be clearly larger or backed by another view).

    The ratios are fused by their ``p``-norm: a lone record (ratio 1) gives
    ``m = 1``, several views agreeing add up.  The onset score is
    ``m / (scale + m)``: 0.5 is a fused ratio of ``scale``.  An onset score that
    does not exceed every one of the previous ``suppress`` points is damped by
    ``damp``: one incident should alert once, at its first and strongest point.

    Exclusion zone (``exclusion``, on by default): which points are onsets is judged
    as above, but at an onset a shape whose distance is a record (the largest in the
    history) is measured against the largest NN distance of the subsequences that do
    not overlap the current one (the last ``span`` = (length − 1) × step + 1 are left
    out, as matrix-profile discord search leaves trivial matches out).  Those
    overlapping subsequences share the incident's first points: with them in the
    yardstick a shape never seen before that takes several points to pass (a double
    spike sliding through the window) is its own yardstick, each of its distances a
    record by a little, and its ratio stays near 1.  A distance that is no record keeps
    its ratio (an echo of an incident still inside the subsequence is not new).
    Nothing is chosen: the zone is the subsequence's span.

    State, not only change: when a value scores at least ``hold_at`` (0.7) and lies
    outside the 1st–99th percentile band learnt so far, that band is frozen.
    While it is frozen, each value is also scored against it, so a plateau at an
    abnormal level keeps scoring high although the change-based views have learnt it.
    The state's ratio is the larger of the value's distance outside the band (in
    ``level_ext`` × its width) and, with ``duration``, that distance summed over the
    state so far (a CUSUM) over the longest excursion of the level outside the band in
    the history (at least ``level_len``): a state twice as long as anything the series
    has done before counts twice its distance.  A plateau a few points above the usual
    range thus pages once it has lasted, and keeps paging.  The band is released
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
        level_lags: tuple[int, ...] = (50, 100, 200),
        duration: bool = True,
        exclusion: bool = True,
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
        # The level view's bands, fed ``lag`` points late: a drift is judged against the
        # time before it, not against its own first steps.
        self.level_lags = tuple(int(k) for k in level_lags) or (0,)
        self.lag_bands = [RollingSorted(history) if k else self.values for k in self.level_lags]
        self.duration = duration
        self.run = 0  # consecutive learnt points whose level lies outside its band
        self.runs: deque[tuple[int, int]] = deque()  # (end n, length) of past excursions
        # The held state's excess outside the frozen band, summed over its current run.
        self.state_sum = 0.0
        self.nn_dists = [RollingSorted(history) for _ in self.shapes]  # recent NN distances
        # The yardsticks of the onset's strength (``exclusion``): per shape, the NN distances
        # of the subsequences that no longer overlap the current one; ``pending`` holds the
        # last ``span`` distances until they leave the overlap.
        self.exclusion = exclusion
        self.far_dists = [RollingSorted(history) for _ in self.shapes]
        self.pending: list[deque[float]] = [deque() for _ in self.shapes]
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
        # (value, (score, raw score, NN distance per shape, z-score)).
        self._last: tuple[float, _Eval] | None = None

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
        cs: np.ndarray | None = None
        for k, step in self.shapes:
            if step > 1:
                if cs is None:  # once for every shape that averages
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
            per_lag = []
            for band in self.lag_bands:
                b = band if len(band) >= self.warmup else self.values
                qlo, qhi = b.quantile(0.01), b.quantile(0.99)
                # A lagged band holds fewer values than the history: widened by its own size.
                wide = max(1.0, self.settle / len(b)) ** 2
                per_lag.append(
                    max(med - qhi, qlo - med, 0.0) / (wide * self.level_ext * max(qhi - qlo, floor))
                )
            # The mean over the lags: no lag is picked, and a mean adds no false alarms of
            # its own (it never exceeds the largest lag's ratio, as a max would).
            out.append(sum(per_lag) / len(per_lag))
        return out

    def _record(self) -> float:
        """The longest excursion of the level outside its band in the history (at least
        ``level_len``): the yardstick of the duration ratios."""
        return float(max(self.level_len, max((k for _, k in self.runs), default=0)))

    def _state_ratio(self, v: float, floor: float) -> float:
        """How far ``v`` lies outside the frozen band, in ``level_ext`` × its width."""
        if self.frozen is None:
            return 0.0
        lo, hi = self.frozen
        return max(v - hi, lo - v, 0.0) / (self.level_ext * max(hi - lo, floor))

    def _state_score(self, v: float, floor: float) -> float:
        """Score of the held state at ``v``: its distance outside the frozen band and, when
        ``duration`` is on, how long it has lasted over the longest past excursion."""
        st = self._state_ratio(v, floor)
        if st > 0 and self.duration:
            st = max(st, (self.state_sum + st) / self._record())
        return st / (self.scale + st)

    def _evaluate(self, x: float) -> _Eval:
        if self._last is not None and self._last[0] == x:
            return self._last[1]
        floor = self.eps * (abs(x) + 1.0)
        nds = self._nn_distances(x)
        ratios = self._band_ratios(x, floor) if self.n >= self.warmup else []
        far = list(ratios)  # the same ratios, shapes judged on their overlap-free yardsticks
        for nd, dists, fd in zip(nds, self.nn_dists, self.far_dists, strict=True):
            if nd is not None and len(dists) >= 20:
                ratios.append(nd / max(dists.sorted[-1], floor))
                # Only a record is measured against the time before its overlap: a lesser
                # distance (an echo of an incident still inside the subsequence) is not new.
                record = len(fd) >= 20 and nd > dists.sorted[-1]
                far.append(nd / max(fd.sorted[-1], floor) if record else ratios[-1])
        z: float | None = None
        if self.z_len and self.n >= self.z_len:
            recent = self._recent(self.z_len)
            z = abs(x - float(recent.mean())) / max(float(recent.std()), floor)
            if len(self.zs) >= self.z_min and self.zs.sorted[-1] > 0:
                ratios.append((z / self.zs.sorted[-1]) ** self.z_power)
                far.append(ratios[-1])
        m = _pnorm(ratios, self.p)
        raw = m / (self.scale + m) if self.n >= self.warmup else 0.0
        score = raw
        if self.exclusion and self.n >= self.warmup:
            # Which points are onsets is judged on ``raw``; how strong one is, on the time
            # before the subsequences it shares points with.
            mf = _pnorm(far, self.p)
            score = mf / (self.scale + mf)
        if self.recent_raw and raw <= max(self.recent_raw):
            score *= self.damp
        score = max(score, self._state_score(x, floor))
        ev = (score, raw, nds, z)
        self._last = (x, ev)
        return ev

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
        self._follow_run(v)
        self.recent_raw.append(raw)
        for lag, band in zip(self.level_lags, self.lag_bands, strict=True):
            if lag and self.n >= lag:  # the value learnt ``lag`` points before this one
                band.add(float(self.buf[(self.pos - lag) % self.cap]))
        self.values.add(v)
        if z is not None:
            self.zs.add(z)
        for (k, step), nd, dists, fd, pend in zip(
            self.shapes, nds, self.nn_dists, self.far_dists, self.pending, strict=True
        ):
            if nd is None:
                continue
            dists.add(nd)
            pend.append(nd)
            if len(pend) > (k - 1) * step + 1:  # that subsequence no longer overlaps
                fd.add(pend.popleft())
        self.buf[self.pos] = v
        self.buf[self.pos + self.cap] = v
        self.pos = (self.pos + 1) % self.cap
        self.n += 1

    def holding(self, value: float) -> bool:
        """True while an abnormal state is held (see the class notes) and ``value`` lies
        outside the band it is judged on."""
        return (
            self.frozen is not None and self._state_ratio(value, self.eps * (abs(value) + 1.0)) > 0
        )

    def _follow_run(self, v: float) -> None:
        """Count the current excursion of the level (the median of the last ``level_len``)
        outside the 1st–99th percentile band of the history, the band a held state is
        judged on; keep the past ones."""
        outside = False
        if self.level_len and self.n >= self.settle:
            med = float(np.median(np.append(self._recent(self.level_len - 1), v)))
            outside = not self.values.quantile(0.01) <= med <= self.values.quantile(0.99)
        if outside:
            self.run += 1
        elif self.run:
            self.runs.append((self.n, self.run))
            self.run = 0
        while self.runs and self.runs[0][0] < self.n - self.history:
            self.runs.popleft()

    def _follow_state(self, v: float, raw: float) -> None:
        """Freeze the band at an onset outside it; release it on recovery or after ``hold``."""
        if self.frozen is None:
            if self.hold and raw >= self.hold_at and self.n >= self.settle:
                lo, hi = self.values.quantile(0.01), self.values.quantile(0.99)
                if not lo <= v <= hi:
                    self.frozen, self.held, self.state_sum = (lo, hi), 0, 0.0
            return
        self.held += 1
        floor = self.eps * (abs(v) + 1.0)
        st = self._state_ratio(v, floor)
        self.state_sum = self.state_sum + st if st > 0 else 0.0
        med = float(np.median(np.append(self._recent(self.level_len - 1), v)))
        recovered = self.held >= self.level_len and self._state_ratio(med, floor) == 0.0
        if recovered or self.held >= self.hold:
            self.frozen = None


@dataclass(frozen=True, slots=True)
class MetricLimit:
    """Hard limits on one metric (an SLO): a value at or past ``warning`` warns, at or past
    ``critical`` is critical; lower is worse when ``critical < warning`` (e.g. free disk).

    >>> lim = MetricLimit(90.0, 98.0)
    >>> lim.breach(85.0), lim.breach(91.0), lim.breach(99.0)
    (None, 'warning', 'critical')
    >>> MetricLimit(10.0, 2.0).breach(5.0)
    'warning'
    """

    warning: float
    critical: float

    def breach(self, value: float) -> str | None:
        """The severity ``value`` breaches, or None."""
        sign = 1.0 if self.critical >= self.warning else -1.0
        if sign * value >= sign * self.critical:
            return "critical"
        if sign * value >= sign * self.warning:
            return "warning"
        return None


class WatchedMetric:
    """The live detector of one metric series: ``MetricDetector``'s score, raised to
    ``hold_score`` while the series is held in an abnormal state that began with an alert
    (a plateau keeps firing until it recovers) and to 1 while a hard ``limit`` is breached.

    >>> w = WatchedMetric(MetricLimit(90.0, 98.0), hold_score=0.9)
    >>> for i in range(300):
    ...     _ = w.score_one({"value": 50.0 + i % 3}); w.learn_one({"value": 50.0 + i % 3})
    >>> w.score_one({"value": 50.0}) < 0.9, w.score_one({"value": 95.0}), w.breach(95.0)
    (True, 1.0, 'warning')
    """

    def __init__(self, limit: MetricLimit | None = None, hold_score: float = 0.9) -> None:
        self.det = MetricDetector()
        self.limit = limit
        self.hold_score = hold_score
        self.last_score = 0.0
        self.held_alert = False  # the state held now began with a score >= hold_score

    def breach(self, value: float) -> str | None:
        """The hard limit ``value`` breaches ("warning" / "critical"), or None."""
        return self.limit.breach(value) if self.limit is not None else None

    def score_one(self, x: Features) -> float:
        v = _finite(x)
        if v is None:
            return 0.0
        if self.breach(v) is not None:
            return 1.0
        score = self.det.score_one(x)
        if self.held_alert and self.det.holding(v):
            score = max(score, self.hold_score)
        self.last_score = score
        return score

    def learn_one(self, x: Features) -> None:
        was_held = self.det.frozen is not None
        self.det.learn_one(x)
        if self.det.frozen is None:
            self.held_alert = False
        elif not was_held:  # an onset froze the band: hold it only if the onset alerted
            self.held_alert = self.last_score >= self.hold_score

    def expected(self, x: Features | None = None) -> float:
        """The median of the values learnt (NaN before any)."""
        vals = self.det.values
        return vals.quantile(0.5) if len(vals) else math.nan
