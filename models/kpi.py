"""KPI anomaly detector for ``metric`` series whose scores are tail probabilities.

``KpiDetector`` speaks river's protocol (``learn_one`` / ``score_one`` on
``{"value": v, "timestamp": t}``, the input ``MetricDetector`` takes).  Its score is
a calibrated false-alarm probability, not a ratio tuned on one corpus:

    score = min(1, -log10(p) / SCORE_DECADES)

where ``p`` is the probability, under a robust noise model fitted to the series
itself, of a deviation at least as large as the one seen.  With
``SCORE_DECADES = 8``, score 0.5 is ``p = 1e-4`` per point and score 1 is
``p <= 1e-8``, on every series.

Statistic.  Each value is first de-seasonalised (when timestamps show at least
24 points a day and the second day of data shows that a daily profile explains the
series, see ``_Season``); ``y`` is what remains.  Its *baseline* is the median
of the last ``window`` learnt ``y`` (breakdown point 50 %: a new level becomes
the baseline only once it fills half the window).  Four views of the residual
``r = y - baseline`` are judged:

* ``local``: ``y`` minus the median of the 5 values before it (a spike or dip
  against the immediate context, even on a wandering level);
* ``r`` itself and the means of the last 6 and 36 residuals (a short/long
  contrast as in CAD-OSE: level shifts, plateaus and drifts that a single point
  does not show).

Each view ``v`` is standardised by its own scale ``s``, the exponentially weighted
mean ``|v|`` (rate ``2 / window``; the maximum-likelihood Laplace scale, which
absorbs autocorrelation because it is measured on the averaged residuals
themselves), each term clipped at ``CLIP = 4`` scales so that an anomaly barely
moves it, and inflated by two standard errors ``(1 + 2/sqrt(m))`` after ``m``
updates, so early scores are conservative.  The tail of ``a = |v| / s`` is a
peaks-over-threshold fit (SPOT, Siffer et al. 2017, with an exponential excess):
``P(a > u + e) = 0.1 * exp(-e / beta)``, started at the Laplace values
``u = ln 10``, ``beta = 1``.  Exceedances are declustered (a run above ``u`` is
one event, its maximum the excess): ``p`` is then the probability per point of
*starting* so extreme a run, i.e. of a false alert, and recurring spikes (a
nightly job) make the tail heavier until they no longer alert, while a long
plateau counts once.  The four views are combined by Bonferroni:
``p = min(1, 4 * min_j p_j)``.

State, not only change: a plateau at an abnormal level keeps scoring high while
it lasts, because the baseline is a median (it takes ``window / 2`` points of the
new level to move) and a scale grows by at most a factor ``1 + rate * (CLIP - 1)``
per point (x1.6 over 30 points of a plateau at ``window = 256``).  A
level that persists becomes the new normal after about ``window / 2`` points
(128 at the default ``window = 256``: about 10 hours of 5-minute data).

Warm-up: the first ``MIN_POINTS`` (30) learnt values score 0; from then on
scores are given with the conservative early scale above.  Missing values
(``None`` or NaN) score 0 and are not learnt.  Repeated or out-of-order
timestamps are scored and learnt as any value; they do not count towards the
sampling step.  State: the last ``window`` values in arrival and in sorted order,
a daily profile of at most 288 values, the last 36 residuals and six numbers per
view: about 2 x 256 + 330 floats at ``window = 256`` (~7 KB as numpy, ~20 KB as
Python lists).

>>> det = KpiDetector()
>>> scores = []
>>> for i in range(600):
...     x = {"value": 10.0 + (i % 7) * 0.1 + (50.0 if i == 500 else 0.0)}
...     scores.append(det.score_one(x))
...     det.learn_one(x)
>>> scores[500] == 1.0, max(scores[30:500]) < DEFAULT_THRESHOLD, scores[:30] == [0.0] * 30
(True, True, True)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.metric import RollingSorted

SCORE_DECADES = 8.0  # score 1 = tail probability 1e-8
DEFAULT_THRESHOLD = 0.5  # = p 1e-4 per point: ~0.03 false alarms a day at 5-minute steps
CLIP = 4.0  # a point moves a scale by at most CLIP times the scale (x the rate)
MIN_POINTS = 30
LOCAL = 5  # values in the local context of the spike view
SCALES = (1, 6, 36)  # residual means judged against the baseline
_Q = 0.1  # tail mass above the POT threshold u
_LN10 = math.log(10.0)


class _Tail:
    """Scale and peaks-over-threshold tail of one view; ``p(v)`` is its tail probability.

    The scale is the exponentially weighted mean ``|v|`` with each term clipped at
    ``CLIP`` scales, so one anomalous point moves it by at most ``rate * CLIP``
    of itself.  Exceedances of ``u`` are declustered (runs declustering, run
    length 1): a run above ``u`` is one event whose maximum updates the mean excess
    ``beta``, so ``p`` is the probability per point of *starting* so extreme a run,
    i.e. of a false alert, and a long plateau is one event, not many.

    >>> t = _Tail(0.01)
    >>> for v in (1.0, -1.0) * 50:
    ...     t.learn(v)
    >>> round(t.p(0.0), 3), t.p(30.0) < 1e-8
    (1.0, True)
    """

    __slots__ = ("beta", "m", "rate", "run_max", "scale", "u")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.scale = 0.0  # mean |v|: Laplace maximum-likelihood scale
        self.m = 0  # updates so far
        self.u = _LN10  # level exceeded by 10 % of the runs (Laplace: ln 10)
        self.beta = 1.0  # mean excess of a run's maximum over u (Laplace: 1)
        self.run_max = 0.0  # maximum of the current run above u (0: not in a run)

    def _a(self, v: float, floor: float) -> float:
        s = max(self.scale, floor) * (1.0 + 2.0 / math.sqrt(max(self.m, 1)))
        return abs(v) / s

    def p(self, v: float, floor: float = 1e-12) -> float:
        a = self._a(v, floor)
        if a <= self.u:
            return _Q ** (a / self.u)  # log-linear from 1 at a = 0 to 0.1 at u
        return _Q * math.exp(-(a - self.u) / self.beta)

    def learn(self, v: float, floor: float = 1e-12) -> None:
        self.m += 1
        if self.m <= MIN_POINTS:
            self.scale += (abs(v) - self.scale) / self.m  # plain mean to start
            return
        a = abs(v) / max(self.scale, floor)
        self.scale += self.rate * (min(abs(v), CLIP * self.scale) - self.scale)
        if a > self.u:
            self.run_max = max(self.run_max, a)
            return
        step = self.rate * self.beta
        if self.run_max > 0.0:
            # A run just ended: one exceedance for the quantile, its maximum for beta.
            excess = self.run_max - self.u
            self.beta = max(0.25, self.beta + min(1.0, self.rate / _Q) * (excess - self.beta))
            self.u += step / _Q
            self.run_max = 0.0
        self.u = max(0.5, self.u - step)  # Robbins-Monro: u settles where runs start 10 %


class _Season:
    """Daily profile of one series, used only if it explains it (decided once, after 2 days).

    Bins are the sampling step, capped at 288 a day; each bin is an exponentially
    weighted mean (rate 0.3: about three days) of the value minus the baseline.
    """

    __slots__ = ("bins", "dts", "err_flat", "err_season", "first_t", "last_t", "profile", "step")

    def __init__(self) -> None:
        self.step = 0.0
        self.dts: list[float] = []
        self.last_t: float | None = None
        self.bins = 0
        self.profile: list[float | None] = []
        self.first_t: float | None = None
        self.err_flat = 0.0  # summed |value - baseline| from day 2 on
        self.err_season = 0.0  # summed |value - baseline - profile| from day 2 on

    def observe_time(self, t: float) -> None:
        if self.first_t is None:
            self.first_t = t
        if self.last_t is not None and t > self.last_t and not self.step:
            self.dts.append(t - self.last_t)
            if len(self.dts) >= 20:
                self.step = float(np.median(self.dts))
                per_day = round(86400.0 / self.step)
                if per_day >= 24:  # at least hourly: a daily profile is estimable
                    self.bins = min(per_day, 288)
                    self.profile = [None] * self.bins
        self.last_t = t if self.last_t is None else max(self.last_t, t)

    def bin(self, t: float) -> int:
        return int((t % 86400.0) / 86400.0 * self.bins) % self.bins

    def days(self, t: float) -> float:
        return (t - (self.first_t or t)) / 86400.0


class KpiDetector:
    """Streaming anomaly detector for one KPI series; score = calibrated tail probability.

    See the module docstring for the statistic; ``window`` (points) is the
    baseline window: a new level is accepted after ``window / 2`` points.
    """

    def __init__(self, window: int = 256) -> None:
        self.window = int(window)
        self.rate = 2.0 / self.window  # exponential weights with the window's memory
        self.n = 0
        self.base = RollingSorted(self.window)
        self.recent: deque[float] = deque(maxlen=LOCAL)
        self.resid: deque[float] = deque(maxlen=max(SCALES))
        self.tails = [_Tail(self.rate) for _ in range(1 + len(SCALES))]
        self.season = _Season()
        self.use_season: bool | None = None  # decided once, after two days
        self._cache: tuple[float, float | None, float, list[float], float, float] | None = None

    # -- the statistic -------------------------------------------------------------

    def _deseason(self, v: float, t: float | None) -> float:
        """``v`` minus the daily profile at time ``t``, when the profile is in use."""
        if self.use_season and t is not None:
            prof = self.season.profile[self.season.bin(t)]
            if prof is not None:
                return v - prof
        return v

    def _views(self, v: float, t: float | None) -> tuple[list[float], float, float]:
        y = self._deseason(v, t)
        med = self.base.quantile(0.5)
        r = y - med
        loc = y - float(np.median(self.recent)) if self.recent else 0.0
        views = [loc]
        past = list(self.resid)
        for k in SCALES:
            tail = past[len(past) - (k - 1) :] if k > 1 else []
            views.append((r + sum(tail)) / (len(tail) + 1))
        return views, y, med

    def _evaluate(self, v: float, t: float | None) -> tuple[float, list[float], float, float]:
        if self._cache is not None and self._cache[0] == v and self._cache[1] == t:
            return self._cache[2], self._cache[3], self._cache[4], self._cache[5]
        if self.n == 0:
            return 1.0, [0.0] * len(self.tails), v, v
        views, y, med = self._views(v, t)
        floor = 1e-9 * (abs(med) + 1e-3)
        p = min(
            1.0, len(views) * min(tl.p(x, floor) for tl, x in zip(self.tails, views, strict=True))
        )
        self._cache = (v, t, p, views, y, med)
        return p, views, y, med

    # -- river protocol -------------------------------------------------------------

    @staticmethod
    def _read(x: dict[str, Any]) -> tuple[float | None, float | None]:
        v = x.get("value")
        if v is None:
            return None, None
        fv = float(v)
        if not math.isfinite(fv):
            return None, None
        t = x.get("timestamp")
        return fv, (float(t) if t is not None else None)

    def tail_probability(self, x: dict[str, Any]) -> float:
        """``p`` of ``x["value"]`` (1.0 when missing or still warming up)."""
        v, t = self._read(x)
        if v is None or self.n < MIN_POINTS:
            return 1.0
        return self._evaluate(v, t)[0]

    def score_one(self, x: dict[str, Any]) -> float:
        """Score in [0, 1]: ``-log10(p) / 8``, so 0.5 is a 1e-4 per-point false alarm."""
        p = self.tail_probability(x)
        if p <= 0.0:
            return 1.0
        return min(1.0, max(0.0, -math.log10(p) / SCORE_DECADES))

    def learn_one(self, x: dict[str, Any]) -> None:
        """Take ``x["value"]`` into the model; missing values are skipped."""
        v, t = self._read(x)
        if v is None:
            return
        _, views, y, med = self._evaluate(v, t)
        self._cache = None
        floor = 1e-9 * (abs(med) + 1e-3)
        for tl, view in zip(self.tails, views, strict=True):
            tl.learn(view, floor)
        if t is not None:
            self._learn_season(v, t, med)
        self.resid.append(y - med)
        self.recent.append(y)
        self.base.add(y)
        self.n += 1

    def _learn_season(self, v: float, t: float, med: float) -> None:
        s = self.season
        s.observe_time(t)
        if not s.bins or self.n == 0 or self.use_season is False:
            return
        b = s.bin(t)
        prof = s.profile[b]
        days = s.days(t)
        if self.use_season is None and days >= 1.0 and prof is not None:
            s.err_flat += abs(v - med)
            s.err_season += abs(v - med - prof)
        if self.use_season is None and days >= 2.0:
            # Used only if it halves the typical residual of day 2.  The baseline
            # window can stay: the profile is a deviation from it, so de-seasonalised
            # values have the same median; the scales shrink to the new residuals.
            self.use_season = s.err_season < 0.5 * s.err_flat
            self.recent.clear()
            self.resid.clear()
            return
        # Profile = exponentially weighted mean (rate 0.3, ~3 days) of value - baseline.
        s.profile[b] = v - med if prof is None else prof + 0.3 * (v - med - prof)


def score_series(
    values: np.ndarray, timestamps: Sequence[float] | None = None, window: int = 256
) -> np.ndarray:
    """Scores of ``values`` in order (score, then learn, as a live stream would).

    >>> s = score_series(np.r_[np.zeros(40) + 1.0, [np.nan, 9.0]])
    >>> bool(s[41] == 1.0), float(s[40])
    (True, 0.0)
    """
    det = KpiDetector(window)
    out = np.empty(len(values), dtype=np.float64)
    ts = list(timestamps) if timestamps is not None else None
    for i, v in enumerate(np.asarray(values, dtype=np.float64).tolist()):
        x = {"value": v, "timestamp": ts[i] if ts is not None else None}
        out[i] = det.score_one(x)
        det.learn_one(x)
    return out
