"""Latency family: a sustained rise of latency quantiles (p50/p95/p99) of one series.

Detects a series getting slower than its own learned baseline — in log space, so
"twice as slow" is the same step at 80 ms and at 2 s — through a CUSUM that one
spike cannot trip but two or three slow windows do.  :class:`LatencyDetector` is the
reference (river's protocol); :class:`LatencyBank` is its vectorised twin.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.bank import (
    Columns,
    StateBank,
    column,
    cusum_many,
    decay_many,
    put_rows,
    register_twin,
)
from models.base import Features, cusum_score, decay, feature, with_overrides


@dataclass(frozen=True, slots=True)
class LatencyParams:
    """Tuning of :class:`LatencyDetector`.

    ``se_coef`` turns the within-window spread of log latency into the sampling error
    of each quantile from ``n`` calls (``coef * sigma / sqrt(n)``; for a log-normal the
    p50, p95 and p99 coefficients are about 1.25, 2.1 and 3.8): the p99 of five calls
    is mostly noise, the p99 of 5 000 is not.

    >>> LatencyDetector(LatencyParams(keys=("latency_p99",), se_coef=(3.77,))).expected({})
    nan
    """

    keys: tuple[str, ...] = ("latency_p50", "latency_p95", "latency_p99")
    se_coef: tuple[float, ...] = (1.25, 2.11, 3.77)
    volume_key: str = "volume"
    halflife_s: float = 7200.0
    min_ratio: float = 1.5  # latency must be at least this multiple of baseline to count
    k: float = 1.0  # CUSUM slack, in standard deviations
    h: float = 8.0  # CUSUM threshold: two windows at z >= 5, or three at z >= 3.7
    cap: float = 12.0
    z_cap: float = 6.0  # one window contributes at most z_cap - k
    min_volume: float = 3.0
    full_weight_volume: float = 20.0  # windows with fewer calls teach less
    sigma_floor: float = 0.05  # log units: latency is never more stable than ~5 %
    min_windows: int = 30
    guard_weight: float = 0.0
    suspect: float = 0.25


_DEFAULT_LATENCY = LatencyParams()


class LatencyDetector:
    """Sustained rise of latency quantiles (p50/p95/p99) against robust baselines.

    Per quantile: exponentially weighted mean and variance of log latency (log makes
    "x2" the same step at 80 ms and at 2 s), a volume-aware z-score of the window,
    and a one-sided CUSUM ``S = max(0, S + min(z, z_cap) - k)`` that only gains when
    the quantile is at least ``min_ratio`` times its baseline.  One spike cannot page;
    p95 x2 for two or three windows does.

    >>> import random
    >>> rng = random.Random(1)
    >>> det = LatencyDetector()
    >>> def window(f=1.0):
    ...     j = rng.gauss(0, 0.05)
    ...     return {"volume": 500, "latency_p50": 80 * f * math.exp(j),
    ...             "latency_p95": 200 * f * math.exp(j), "latency_p99": 400 * f * math.exp(j)}
    >>> for _ in range(200):
    ...     _ = det.learn_one(window())
    >>> round(det.expected({}), -1)                    # baseline p95, ms
    200.0
    >>> scores = []
    >>> for _ in range(3):
    ...     w = window(2.0)
    ...     scores.append(det.score_one(w) >= 0.5)
    ...     _ = det.learn_one(w)
    >>> scores                                         # fires on the 2nd window
    [False, True, True]
    """

    __slots__ = ("mu", "n", "params", "s", "var")

    def __init__(self, params: LatencyParams | None = None, **overrides: Any) -> None:
        base = params if params is not None else _DEFAULT_LATENCY
        self.params = with_overrides(base, overrides)
        q = len(self.params.keys)
        self.mu = array("d", [0.0] * q)
        self.var = array("d", [0.0] * q)
        self.s = array("d", [0.0] * q)
        self.n = 0  # windows learned with a usable latency

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.params, self.mu, self.var, self.s, self.n)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.params, self.mu, self.var, self.s, self.n = state

    @property
    def ready(self) -> bool:
        return self.n >= self.params.min_windows

    def expected(self, x: Features | None = None) -> float:
        """Baseline of the middle quantile (p95 by default), in the input's unit."""
        i = min(1, len(self.mu) - 1)
        return math.exp(self.mu[i]) if self.n else math.nan

    def _sigma_within(self) -> float:
        # Spread of log latency inside a window, from the gap between p50 and p95.
        p = self.params
        if p.keys[:2] == ("latency_p50", "latency_p95") and self.n:
            return max((self.mu[1] - self.mu[0]) / 1.645, p.sigma_floor)
        return max(p.sigma_floor, 0.5)  # a typical spread of payment API latency

    def _evaluate(self, x: Features) -> list[float]:
        """New CUSUM statistic per quantile."""
        p = self.params
        n = feature(x, p.volume_key)
        sigma_w = self._sigma_within()
        out = []
        for i, key in enumerate(p.keys):
            y = feature(x, key, math.nan)
            inc = -p.k
            if n >= p.min_volume and y > 0 and math.isfinite(y) and self.n:
                d = math.log(y) - self.mu[i]
                if d >= math.log(p.min_ratio):
                    se = p.se_coef[i] * sigma_w
                    sd = math.sqrt(max(self.var[i], p.sigma_floor**2) + se * se / n)
                    inc = min(d / sd, p.z_cap) - p.k
            out.append(min(p.cap, max(0.0, self.s[i] + inc)))
        return out

    def components(self, x: Features) -> dict[str, float]:
        """Score per quantile key."""
        p = self.params
        return {
            key: cusum_score(s, p.h, p.cap)
            for key, s in zip(p.keys, self._evaluate(x), strict=True)
        }

    def score_one(self, x: Features) -> float:
        if not self.ready:
            return 0.0
        return max(self.components(x).values())

    def learn_one(self, x: Features) -> LatencyDetector:
        self._learn(x, self._evaluate(x))
        return self

    def score_learn_one(self, x: Features) -> float:
        """``score_one(x)`` then ``learn_one(x)``, evaluating the window once."""
        s_new = self._evaluate(x)
        p = self.params
        score = max(cusum_score(s, p.h, p.cap) for s in s_new) if self.ready else 0.0
        self._learn(x, s_new)
        return score

    def _learn(self, x: Features, s_new: list[float]) -> None:
        p = self.params
        weight = 1.0
        if self.ready:
            self.s = array("d", s_new)
            if max(cusum_score(s, p.h, p.cap) for s in s_new) >= p.suspect:
                weight = p.guard_weight
        n = feature(x, p.volume_key)
        if weight <= 0.0 or n < p.min_volume:
            return
        ys = [feature(x, key, math.nan) for key in p.keys]
        if not all(y > 0 and math.isfinite(y) for y in ys):
            return
        a = (1.0 - decay(x, p.halflife_s)) * min(1.0, n / p.full_weight_volume) * weight
        if not self.ready:
            a = max(a, 1.0 / (self.n + 1))  # cold start: plain average
        for i, y in enumerate(ys):
            delta = math.log(y) - self.mu[i]
            self.mu[i] += a * delta
            self.var[i] = (1.0 - a) * (self.var[i] + a * delta * delta)
        self.n += 1


class LatencyBank(StateBank):
    """:class:`LatencyDetector` state for many series, judged in one
    vectorised pass (``mu``, ``var`` and ``s`` hold one column per quantile key).

    >>> bank = LatencyBank(LatencyDetector(min_windows=5))
    >>> def window(f):
    ...     return {"volume": np.array([500.0, 500.0]), "latency_p50": np.array([80.0, 80.0 * f]),
    ...             "latency_p95": np.array([200.0, 200.0 * f]),
    ...             "latency_p99": np.array([400.0, 400.0 * f])}
    >>> for _ in range(5):
    ...     _ = bank.score_learn_many(np.array([0, 1]), window(1.0))
    >>> [bank.score_learn_many(np.array([0, 1]), window(3.0)).round(2).tolist() for _ in range(3)]
    [[0.0, 0.31], [0.0, 0.75], [0.0, 1.0]]
    >>> round(bank.detector(0).expected({}), 1), bank.detector(1).ready
    (200.0, True)
    """

    _state = ("mu", "var", "s", "n")
    mu: np.ndarray
    var: np.ndarray
    s: np.ndarray

    def __init__(self, prototype: LatencyDetector) -> None:
        self.prototype = LatencyDetector(prototype.params)
        self._setup()
        self._init_state()

    def _setup(self) -> None:
        p = self.params = self.prototype.params
        self.q = len(p.keys)
        self._se_coef = np.asarray(p.se_coef[: self.q], np.float64)
        self._from_spread = p.keys[:2] == ("latency_p50", "latency_p95")
        self._log_min_ratio = math.log(p.min_ratio)
        #: The features this bank reads (gather only these for the slots).
        self.keys = (p.volume_key, *p.keys, "window_s")

    def _row_shape(self, name: str) -> tuple[int, ...]:
        return () if name == "n" else (len(self.params.keys),)

    def detector(self, slot: int) -> LatencyDetector:
        """A standalone detector holding a copy of ``slot``'s state."""
        det = LatencyDetector(self.params)
        if 0 <= slot < self.capacity:
            det.mu = array("d", self.mu[:, slot].tolist())
            det.var = array("d", self.var[:, slot].tolist())
            det.s = array("d", self.s[:, slot].tolist())
            det.n = int(self.n[slot])
        return det

    def score_learn_many(self, slots: np.ndarray, x: Columns) -> np.ndarray:
        """``score_learn_one`` of every slot's detector on its window (0.0 while not ready)."""
        slots = self._claim(slots)
        m = slots.size
        p = self.params
        # (quantile, slot) arrays
        mu, var, s = (a.take(slots, axis=1) for a in (self.mu, self.var, self.s))
        n = self.n[slots]
        ready = n >= p.min_windows
        seen = n > 0

        # _evaluate
        vol = column(x, p.volume_key, 0.0, m)
        if self._from_spread:
            spread = np.maximum((mu[1] - mu[0]) / 1.645, p.sigma_floor)
            sigma_w = np.where(seen, spread, max(p.sigma_floor, 0.5))
        else:
            sigma_w = np.full(m, max(p.sigma_floor, 0.5))
        y = np.stack([column(x, key, math.nan, m) for key in p.keys])
        usable = y > 0  # NaN (missing, NaN or inf) compares False
        log_y = np.log(np.where(usable, y, 1.0))
        delta = log_y - mu
        rise = usable & ((vol >= p.min_volume) & seen) & (delta >= self._log_min_ratio)
        inc = np.full((self.q, m), -p.k)
        if rise.any():
            se = self._se_coef[:, None] * sigma_w
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                sd = np.sqrt(np.maximum(var, p.sigma_floor**2) + se * se / vol)
                z = np.minimum(delta / sd, p.z_cap) - p.k
            inc = np.where(rise, z, inc)
        s_new = np.minimum(p.cap, np.maximum(0.0, s + inc))
        raw = cusum_many(s_new, p.h, p.cap).max(axis=0)
        scores = np.where(ready, raw, 0.0)

        # _learn
        put_rows(self.s, slots, np.where(ready, s_new, s))
        weight = np.where(ready & (raw >= p.suspect), p.guard_weight, 1.0)
        learn = (weight > 0.0) & (vol >= p.min_volume) & usable.all(axis=0)
        if learn.any():
            d = decay_many(x, p.halflife_s, m)
            a = (1.0 - d) * np.minimum(1.0, vol / p.full_weight_volume) * weight
            a = np.where(ready, a, np.maximum(a, 1.0 / (n + 1)))  # cold start: plain mean
            put_rows(self.mu, slots, np.where(learn, mu + a * delta, mu))
            put_rows(self.var, slots, np.where(learn, (1.0 - a) * (var + a * delta * delta), var))
            self.n[slots] = n + learn
        return scores

    @classmethod
    def twin_of(cls, det: LatencyDetector) -> LatencyBank | None:
        """The twin of ``det`` if it is fresh (a warmed-up prototype keeps the scalar path)."""
        fresh = det.n == 0 and not any(det.mu) and not any(det.var) and not any(det.s)
        return cls(det) if fresh else None


register_twin(LatencyDetector, LatencyBank.twin_of)
