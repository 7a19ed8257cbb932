"""Error-rate family: a count of bad calls out of calls against a learned rate.

Detects a series whose share of failing calls (system errors, timeouts, config
errors, ...) rises above what that series normally does, with volume-aware tests so
one failure of a small merchant never pages and a small sustained shift still does.
:class:`ErrorRateDetector` is the reference (river's protocol, one series);
:class:`ConfigErrorDetector` is the same maths tuned for deterministic errors
(:data:`CONFIG_DEFAULTS`); :class:`ErrorRateBank` is their vectorised twin, judging
every series of a rule in one numpy pass with the same arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.bank import (
    Columns,
    StateBank,
    column,
    cusum_many,
    decay_many,
    libm_pow,
    register_twin,
)
from models.base import Features, cusum_score, decay, feature, with_overrides
from models.tails import binom_log10_sf


@dataclass(frozen=True, slots=True)
class ErrorRateParams:
    """Tuning of :class:`ErrorRateDetector` (shared by every series of a rule).

    ``floor`` is the absolute floor: the baseline used in the tests is never below it,
    so a series whose normal rate is 0.01 % does not page when it reaches 0.05 %.
    ``cap`` bounds the learned baseline from above: a rate that high is never normal,
    even for a series broken since its first window.

    One frozen object is shared by every detector built from it:

    >>> params = ErrorRateParams(errors_key="timeouts", halflife_s=3600)
    >>> a, b = ErrorRateDetector(params), ErrorRateDetector(params)
    >>> a.params is b.params, ErrorRateDetector(params, floor=0.01).params.floor
    (True, 0.01)
    """

    errors_key: str = "system_errors"
    volume_key: str = "volume"
    halflife_s: float = 7200.0  # memory of the baseline rate
    prior_rate: float = 0.001  # Beta prior mean before any data
    prior_calls: float = 200.0  # Beta prior strength, in calls
    floor: float = 0.001
    cap: float = 0.2
    min_increase: float = 0.002  # absolute rise that can page at all
    min_errors: float = 3.0  # single-window test needs at least this many errors
    page_log10: float = 8.0  # single window: -log10(p-value) that scores 0.5
    cusum_ratio: float = 3.0  # CUSUM alternative: rate x this (or + min_increase)
    cusum_h: float = 12.0  # CUSUM threshold (log-likelihood ratio, nats)
    cusum_cap: float = 15.0  # CUSUM ceiling: bounds the time to resolve
    dispersion_prior: float = 20.0  # pseudo-variance (in expected errors) behind phi = 1
    max_dispersion: float = 10.0
    min_windows: int = 30
    guard_weight: float = 0.0  # weight of suspect windows in the baseline (0 = skip)
    suspect: float = 0.25  # windows scoring this or more are guarded


#: Defaults for auth/config/signature/certificate errors: normally zero, so any burst counts.
CONFIG_DEFAULTS = ErrorRateParams(
    errors_key="config_errors",
    prior_rate=0.0,
    floor=0.002,
    cap=0.01,
    min_increase=0.02,
    min_errors=3.0,
    page_log10=6.0,
    cusum_ratio=5.0,
    cusum_h=10.0,
    cusum_cap=12.0,
    min_windows=6,
)

_DEFAULT_RATE = ErrorRateParams()


class ErrorRateDetector:
    """A count of bad calls (``errors_key``) out of ``volume_key`` against a learned rate.

    The baseline is an exponentially weighted Beta posterior of the rate (errors and
    calls decay with ``halflife_s``).  Two volume-aware tests run on each window, the
    score is the larger:

    - a single-window binomial test: ``-log10`` of the upper-tail p-value of the
      window's errors under the baseline; 0.5 at ``page_log10`` (p = 1e-8 by default),
      1.0 at twice that.  Needs ``min_errors`` errors and a rate at least
      ``min_increase`` above the baseline, so one failure of a small merchant never
      pages;
    - a binomial CUSUM (baseline rate vs ``cusum_ratio`` times it) for small sustained
      shifts, e.g. timeouts going from 0.1 % to 2 %: 0.5 at ``cusum_h``.

    Real error counts vary more than a binomial (bursts, retries): the detector learns
    an overdispersion factor ``phi`` (squared residuals over binomial variance, both
    exponentially weighted, at least 1, at most ``max_dispersion``) and judges the
    counts divided by it, quasi-likelihood style.

    >>> det = ErrorRateDetector(min_windows=5)
    >>> for _ in range(50):
    ...     _ = det.learn_one({"volume": 2000, "system_errors": 4})    # 0.2 %
    >>> round(det.expected({}), 4)
    0.002
    >>> det.score_one({"volume": 2000, "system_errors": 5}) < 0.5
    True
    >>> det.score_one({"volume": 2000, "system_errors": 40}) >= 0.5  # 2 %
    True
    >>> det.score_one({"volume": 3, "system_errors": 1}) < 0.5     # small merchant
    True
    """

    __slots__ = ("dev", "err", "n", "params", "s", "var", "vol")

    def __init__(self, params: ErrorRateParams | None = None, **overrides: Any) -> None:
        base = params if params is not None else self._default_params()
        self.params = with_overrides(base, overrides)
        self.err = 0.0  # exponentially weighted errors
        self.vol = 0.0  # exponentially weighted calls
        self.dev = 0.0  # exponentially weighted squared residuals of error counts
        self.var = 0.0  # ... and their binomial variances
        self.s = 0.0  # CUSUM statistic
        self.n = 0  # windows learned

    @staticmethod
    def _default_params() -> ErrorRateParams:
        return _DEFAULT_RATE

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.params, self.err, self.vol, self.dev, self.var, self.s, self.n)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.params, self.err, self.vol, self.dev, self.var, self.s, self.n = state

    @property
    def ready(self) -> bool:
        return self.n >= self.params.min_windows

    def baseline(self) -> float:
        """Posterior mean of the error rate (before the floor and cap)."""
        p = self.params
        return (p.prior_rate * p.prior_calls + self.err) / (p.prior_calls + self.vol)

    def expected(self, x: Features | None = None) -> float:
        """Expected error rate of a window (the learned baseline)."""
        return min(self.baseline(), self.params.cap)

    def dispersion(self) -> float:
        """Overdispersion factor phi: 1 for binomial counts, more for bursty ones."""
        p = self.params
        phi = (self.dev + p.dispersion_prior) / (self.var + p.dispersion_prior)
        return min(max(phi, 1.0), p.max_dispersion)

    def _counts(self, x: Features) -> tuple[float, float]:
        e = max(0.0, feature(x, self.params.errors_key))
        # Missing callbacks can outnumber this window's orders: never let k exceed n.
        return e, max(e, feature(x, self.params.volume_key))

    def _evaluate(self, x: Features) -> tuple[float, float, float]:
        """(single-window score, CUSUM score, new CUSUM statistic) for this window."""
        p = self.params
        e, n = self._counts(x)
        p0 = min(max(self.baseline(), p.floor), p.cap)
        phi = self.dispersion()
        window = 0.0
        if n > 0 and e >= p.min_errors and e / n >= p0 + p.min_increase:
            surprise = -binom_log10_sf(e / phi, n / phi, p0)
            window = min(1.0, 0.5 * surprise / p.page_log10)
        s = self.s
        if n > 0:
            p1 = min(0.999, max(p0 * p.cusum_ratio, p0 + p.min_increase))
            llr = e * math.log(p1 / p0) + (n - e) * math.log((1.0 - p1) / (1.0 - p0))
            s = min(p.cusum_cap, max(0.0, s + llr / phi))
        return window, cusum_score(s, p.cusum_h, p.cusum_cap), s

    def components(self, x: Features) -> dict[str, float]:
        """Sub-scores: ``window`` (binomial test) and ``cusum`` (sustained shift)."""
        window, cusum, _ = self._evaluate(x)
        return {"window": window, "cusum": cusum}

    def score_one(self, x: Features) -> float:
        if not self.ready:
            return 0.0
        window, cusum, _ = self._evaluate(x)
        return max(window, cusum)

    def learn_one(self, x: Features) -> ErrorRateDetector:
        self._learn(x, self._evaluate(x))
        return self

    def score_learn_one(self, x: Features) -> float:
        """``score_one(x)`` then ``learn_one(x)``, evaluating the window once."""
        ev = self._evaluate(x)
        score = max(ev[0], ev[1]) if self.ready else 0.0
        self._learn(x, ev)
        return score

    def _learn(self, x: Features, ev: tuple[float, float, float]) -> None:
        p = self.params
        window, cusum, s = ev
        score = max(window, cusum)
        e, n = self._counts(x)
        d = decay(x, p.halflife_s)
        if self.ready:
            self.s = s
            # Dispersion learns from every window that is not an incident, with each
            # residual clipped at 4 sigma: the tails it must learn, but not an outage.
            if score < 0.5:
                rate = min(self.baseline(), p.cap)
                var = n * rate * (1.0 - rate)
                self.dev = d * self.dev + min((e - n * rate) ** 2, 16.0 * var)
                self.var = d * self.var + var
        # During cold start everything is learned and the CUSUM stays at rest.
        weight = p.guard_weight if self.ready and score >= p.suspect else 1.0
        if weight > 0.0:
            d = d**weight
            self.err = d * self.err + weight * e
            self.vol = d * self.vol + weight * n
        self.n += 1


class ConfigErrorDetector(ErrorRateDetector):
    """Auth/config/signature/certificate errors (``config_errors``) for one series.

    Same machinery as :class:`ErrorRateDetector` with :data:`CONFIG_DEFAULTS`: these
    errors are deterministic (a wrong key fails every call), so a burst is an incident
    even at low volume, and the learned baseline is capped at 1 % so a merchant broken
    since its first call still pages once the detector is ready.

    >>> det = ConfigErrorDetector()
    >>> for _ in range(30):
    ...     _ = det.learn_one({"volume": 5, "config_errors": 0})
    >>> det.score_one({"volume": 5, "config_errors": 5})       # every call SIGN_ERROR
    1.0
    >>> det.score_one({"volume": 500, "config_errors": 1})     # one stray error
    0.0
    """

    __slots__ = ()

    @staticmethod
    def _default_params() -> ErrorRateParams:
        return CONFIG_DEFAULTS


class ErrorRateBank(StateBank):
    """:class:`ErrorRateDetector` (or ``ConfigErrorDetector``) state
    for many series, judged in one vectorised pass.

    >>> bank = ErrorRateBank(ConfigErrorDetector(min_windows=3))
    >>> quiet = {"volume": np.array([50.0, 500.0]), "config_errors": np.zeros(2)}
    >>> for _ in range(3):
    ...     _ = bank.score_learn_many(np.array([0, 7]), quiet)
    >>> broken = {"volume": np.array([50.0, 500.0]), "config_errors": np.array([50.0, 1.0])}
    >>> bank.score_learn_many(np.array([0, 7]), broken).round(3).tolist()   # SIGN_ERROR on slot 0
    [1.0, 0.0]
    >>> det = bank.detector(0)
    >>> type(det).__name__, det.ready, det.n, len(bank)
    ('ConfigErrorDetector', True, 4, 2)
    >>> bank.forget(np.array([0])); len(bank), bank.detector(0).n
    (1, 0)
    """

    _state = ("err", "vol", "dev", "var", "s", "n")
    err: np.ndarray
    vol: np.ndarray
    dev: np.ndarray
    var: np.ndarray
    s: np.ndarray

    def __init__(self, prototype: ErrorRateDetector) -> None:
        self.prototype = type(prototype)(prototype.params)  # fresh, whatever it held
        self._setup()
        self._init_state()

    def _setup(self) -> None:
        p = self.params = self.prototype.params
        #: The features this bank reads (gather only these for the slots).
        self.keys = (p.errors_key, p.volume_key, "window_s")

    def detector(self, slot: int) -> ErrorRateDetector:
        """A standalone detector of the prototype's class holding a copy of ``slot``'s state."""
        det = type(self.prototype)(self.params)
        if 0 <= slot < self.capacity:
            det.err, det.vol = float(self.err[slot]), float(self.vol[slot])
            det.dev, det.var = float(self.dev[slot]), float(self.var[slot])
            det.s, det.n = float(self.s[slot]), int(self.n[slot])
        return det

    def score_learn_many(self, slots: np.ndarray, x: Columns) -> np.ndarray:
        """``score_learn_one`` of every slot's detector on its window (0.0 while not ready)."""
        slots = self._claim(slots)
        m = slots.size
        p = self.params
        err, vol, dev, var = self.err[slots], self.vol[slots], self.dev[slots], self.var[slots]
        s, n = self.s[slots], self.n[slots]
        ready = n >= p.min_windows

        # _counts
        e = np.maximum(0.0, column(x, p.errors_key, 0.0, m))
        k = np.maximum(e, column(x, p.volume_key, 0.0, m))

        # _evaluate
        baseline = (p.prior_rate * p.prior_calls + err) / (p.prior_calls + vol)
        p0 = np.minimum(np.maximum(baseline, p.floor), p.cap)
        phi = (dev + p.dispersion_prior) / (var + p.dispersion_prior)
        phi = np.minimum(np.maximum(phi, 1.0), p.max_dispersion)
        window = np.zeros(m)
        calls = k > 0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            rate = e / k
        test = calls & (e >= p.min_errors) & (rate >= p0 + p.min_increase)
        for i in np.flatnonzero(test).tolist():
            f = float(phi[i])
            surprise = -binom_log10_sf(float(e[i]) / f, float(k[i]) / f, float(p0[i]))
            window[i] = min(1.0, 0.5 * surprise / p.page_log10)
        p1 = np.minimum(0.999, np.maximum(p0 * p.cusum_ratio, p0 + p.min_increase))
        with np.errstate(
            divide="ignore", invalid="ignore", over="ignore"
        ):  # p0 = 0 only with floor 0
            llr = e * np.log(p1 / p0) + (k - e) * np.log((1.0 - p1) / (1.0 - p0))
        s_new = np.where(calls, np.minimum(p.cusum_cap, np.maximum(0.0, s + llr / phi)), s)
        raw = np.maximum(window, cusum_many(s_new, p.cusum_h, p.cusum_cap))
        scores = np.where(ready, raw, 0.0)

        # _learn
        d = decay_many(x, p.halflife_s, m)
        self.s[slots] = np.where(ready, s_new, s)
        calm = ready & (raw < 0.5)
        if calm.any():
            rate0 = np.minimum(baseline, p.cap)
            v = k * rate0 * (1.0 - rate0)
            self.dev[slots] = np.where(
                calm, d * dev + np.minimum((e - k * rate0) ** 2, 16.0 * v), dev
            )
            self.var[slots] = np.where(calm, d * var + v, var)
        guarded = ready & (raw >= p.suspect)
        new_err, new_vol = d * err + e, d * vol + k  # weight 1: d ** 1.0 is d
        if guarded.any():
            w = p.guard_weight
            if w > 0.0:
                dw = libm_pow(d, w)
                new_err = np.where(guarded, dw * err + w * e, new_err)
                new_vol = np.where(guarded, dw * vol + w * k, new_vol)
            else:
                new_err = np.where(guarded, err, new_err)
                new_vol = np.where(guarded, vol, new_vol)
        self.err[slots], self.vol[slots] = new_err, new_vol
        self.n[slots] = n + 1
        return scores

    @classmethod
    def twin_of(cls, det: ErrorRateDetector) -> ErrorRateBank | None:
        """The twin of ``det`` if it is fresh (a warmed-up prototype keeps the scalar path)."""
        fresh = det.n == 0 and not (det.err or det.vol or det.dev or det.var or det.s)
        return cls(det) if fresh else None


register_twin(ErrorRateDetector, ErrorRateBank.twin_of)
register_twin(ConfigErrorDetector, ErrorRateBank.twin_of)
