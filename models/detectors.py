"""Learned per-series detectors for payment windows: error rate, config errors, latency,
volume, callbacks, a multivariate river wrapper, static SLOs, and how to combine them.

Every detector judges ONE series and speaks river's anomaly-detector protocol, so any
river anomaly model can stand where one of these does:

- ``score_one(x) -> float`` in [0, 1]: 0.5 is the paging threshold ("page-worthy"),
  1.0 means "certainly broken".  It does not change the detector.
- ``learn_one(x) -> self``: call it once for EVERY closed window of the series, after
  ``score_one`` (zero-volume windows too: the volume detector needs them to see an
  outage).  Learning is guarded: a window the detector itself judges anomalous does
  not move the baseline (or moves it by ``guard_weight``), so an outage never becomes
  the new normal.  Nor does a merely suspicious one (score >= ``suspect``, 0.25 by
  default): otherwise a slow-building incident at low volume teaches the baseline as
  fast as the test gathers evidence against it.  Sequential tests (CUSUM) advance
  here too, so a detector that is only scored and never taught cannot see a
  sustained shift.
- ``score_learn_one(x) -> float``: both of the above with one evaluation (use
  :func:`score_learn` to call it on any detector, river's included).
- ``expected(x) -> float``: the baseline to show a person (error rate, p95 ms, volume).
- ``ready``: False until ``min_windows`` windows were learned; before that
  ``score_one`` returns 0.0 (cold start never pages).
- ``components(x) -> dict[str, float]`` (where there are several signals): the
  sub-scores, for summaries ("p95 +120 %", "verify failures").

``x`` is the window's feature dict (see ``FEATURES``).  Time constants are in
seconds and converted per window with ``x["window_s"]`` (10 s if absent).

State is a few floats in ``__slots__`` plus a reference to a frozen, shared
parameter object, so 100 000 detectors fit in tens of MB and pickle for
checkpoints.  Build many detectors from one parameter object to share it::

    params = ErrorRateParams(halflife_s=3600)
    detectors = {series: ErrorRateDetector(params) for series in all_series}
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from models.tails import binom_log10_sf

__all__ = [
    "CALLBACK_DEFAULTS",
    "CONFIG_DEFAULTS",
    "FEATURES",
    "CallbackDetector",
    "Combined",
    "ConfigErrorDetector",
    "Detector",
    "DetectorBank",
    "ErrorRateDetector",
    "ErrorRateParams",
    "Features",
    "LatencyDetector",
    "LatencyParams",
    "MultivariateDetector",
    "StaticSLO",
    "VolumeDetector",
    "VolumeParams",
    "score_learn",
    "severity",
    "warm_start",
    "window_vector",
]

#: One window of one series: feature name -> value (see ``FEATURES``).
Features = Mapping[str, float]

#: Window features the detectors read (per series and window).
FEATURES = (
    "window_start_ms",
    "window_s",
    "volume",
    "success",
    "pending",
    "failure",
    "unknown",
    "system_errors",
    "config_errors",
    "business_declines",
    "timeouts",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "created",
    "callbacks",
    "verify_failures",
    "nacks",
    "late_acks",
    "duplicates",
    "amount_mismatches",
    "missing_callbacks",
)


@runtime_checkable
class Detector(Protocol):
    """What the judge may call on any detector here (and on river anomaly models,
    which lack ``expected``/``ready``).

    >>> isinstance(VolumeDetector(), Detector), isinstance(StaticSLO("x", 1, 2), Detector)
    (True, True)
    """

    def learn_one(self, x: Features) -> Any: ...

    def score_one(self, x: Features) -> float: ...

    def expected(self, x: Features) -> float: ...

    @property
    def ready(self) -> bool: ...


def _get(x: Features, key: str, default: float = 0.0) -> float:
    v = x.get(key, default)
    if v is None:
        return default
    v = float(v)
    return v if math.isfinite(v) else default


def _decay(x: Features, halflife_s: float) -> float:
    """Per-window forgetting factor for an exponential weight with this half-life."""
    return 0.5 ** (_get(x, "window_s", 10.0) / halflife_s)


P = TypeVar("P")


@lru_cache(maxsize=256)
def _with_cached(base: Any, items: tuple[tuple[str, Any], ...]) -> Any:
    return replace(base, **dict(items))


def _with(base: P, overrides: dict[str, Any]) -> P:
    """``base`` with ``overrides``, the same object for the same overrides, so that
    ``partial(ErrorRateDetector, min_windows=10)`` detectors share one parameter object
    in memory and in checkpoints."""
    if not overrides:
        return base
    try:
        return cast(P, _with_cached(base, tuple(sorted(overrides.items()))))
    except TypeError:  # an unhashable override value
        return replace(base, **overrides)  # type: ignore[type-var]


def _cusum_score(s: float, h: float, cap: float) -> float:
    """0.5 at the CUSUM threshold ``h``, 1.0 at its cap, linear below."""
    if s <= h:
        return 0.5 * s / h
    return min(1.0, 0.5 + 0.5 * (s - h) / (cap - h))


# --------------------------------------------------------------------------- error rate


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
        self.params = _with(base, overrides)
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
        e = max(0.0, _get(x, self.params.errors_key))
        # Missing callbacks can outnumber this window's orders: never let k exceed n.
        return e, max(e, _get(x, self.params.volume_key))

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
        return window, _cusum_score(s, p.cusum_h, p.cusum_cap), s

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
        d = _decay(x, p.halflife_s)
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


# --------------------------------------------------------------------------- callbacks

#: Rates a :class:`CallbackDetector` watches: name -> parameters (errors over volume key).
CALLBACK_DEFAULTS: dict[str, ErrorRateParams] = {
    # Orders whose callback never came, out of orders created.
    "missing": ErrorRateParams(
        errors_key="missing_callbacks",
        volume_key="created",
        prior_rate=0.001,
        floor=0.002,
        cap=0.2,
        min_increase=0.02,
        min_windows=30,
    ),
    # Signature verification failures: a cert rotation makes a sudden share fail.
    "verify": ErrorRateParams(
        errors_key="verify_failures",
        volume_key="callbacks",
        prior_rate=0.0,
        floor=0.001,
        cap=0.05,
        min_increase=0.02,
        cusum_ratio=5.0,
        min_windows=30,
    ),
    "nacks": ErrorRateParams(
        errors_key="nacks",
        volume_key="callbacks",
        prior_rate=0.001,
        floor=0.002,
        cap=0.2,
        min_increase=0.02,
        min_windows=30,
    ),
    "late_acks": ErrorRateParams(
        errors_key="late_acks",
        volume_key="callbacks",
        prior_rate=0.005,
        floor=0.005,
        cap=0.3,
        min_increase=0.05,
        min_windows=30,
    ),
}


class CallbackDetector:
    """Asynchronous-callback health of one series: the worst of four learned rates.

    ``missing`` (missing_callbacks / created), ``verify`` (verify_failures /
    callbacks), ``nacks`` and ``late_acks`` (over callbacks), each an
    :class:`ErrorRateDetector` with its entry of :data:`CALLBACK_DEFAULTS` (override
    with ``params={"verify": ErrorRateParams(...)}``).  ``expected`` is the baseline
    missing-callback rate; ``worst(x)`` names the component that scores highest.

    >>> det = CallbackDetector()
    >>> normal = {"created": 100, "callbacks": 100, "verify_failures": 0,
    ...           "nacks": 0, "late_acks": 1, "missing_callbacks": 0}
    >>> for _ in range(40):
    ...     _ = det.learn_one(normal)
    >>> det.score_one(normal)
    0.0
    >>> rotated = dict(normal, verify_failures=60)   # new cert, old key
    >>> det.score_one(rotated) >= 0.5, det.worst(rotated)
    (True, 'verify')
    """

    __slots__ = ("parts",)

    def __init__(self, params: dict[str, ErrorRateParams] | None = None) -> None:
        merged = dict(CALLBACK_DEFAULTS)
        merged.update(params or {})
        self.parts = {name: ErrorRateDetector(p) for name, p in merged.items()}

    def __getstate__(self) -> dict[str, ErrorRateDetector]:
        return self.parts

    def __setstate__(self, state: dict[str, ErrorRateDetector]) -> None:
        self.parts = state

    @property
    def ready(self) -> bool:
        return all(d.ready for d in self.parts.values())

    def components(self, x: Features) -> dict[str, float]:
        return {name: d.score_one(x) for name, d in self.parts.items()}

    def worst(self, x: Features) -> str:
        comps = self.components(x)
        return max(comps, key=lambda k: comps[k])

    def score_one(self, x: Features) -> float:
        return max(self.components(x).values())

    def expected(self, x: Features | None = None) -> float:
        return self.parts["missing"].expected(x)

    def learn_one(self, x: Features) -> CallbackDetector:
        for d in self.parts.values():
            d.learn_one(x)
        return self

    def score_learn_one(self, x: Features) -> float:
        """``score_one(x)`` then ``learn_one(x)``, evaluating the window once."""
        return max(d.score_learn_one(x) for d in self.parts.values())


# --------------------------------------------------------------------------- latency


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
        self.params = _with(base, overrides)
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
        n = _get(x, p.volume_key)
        sigma_w = self._sigma_within()
        out = []
        for i, key in enumerate(p.keys):
            y = _get(x, key, math.nan)
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
            key: _cusum_score(s, p.h, p.cap)
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
        score = max(_cusum_score(s, p.h, p.cap) for s in s_new) if self.ready else 0.0
        self._learn(x, s_new)
        return score

    def _learn(self, x: Features, s_new: list[float]) -> None:
        p = self.params
        weight = 1.0
        if self.ready:
            self.s = array("d", s_new)
            if max(_cusum_score(s, p.h, p.cap) for s in s_new) >= p.suspect:
                weight = p.guard_weight
        n = _get(x, p.volume_key)
        if weight <= 0.0 or n < p.min_volume:
            return
        ys = [_get(x, key, math.nan) for key in p.keys]
        if not all(y > 0 and math.isfinite(y) for y in ys):
            return
        a = (1.0 - _decay(x, p.halflife_s)) * min(1.0, n / p.full_weight_volume) * weight
        if not self.ready:
            a = max(a, 1.0 / (self.n + 1))  # cold start: plain average
        for i, y in enumerate(ys):
            delta = math.log(y) - self.mu[i]
            self.mu[i] += a * delta
            self.var[i] = (1.0 - a) * (self.var[i] + a * delta * delta)
        self.n += 1


# --------------------------------------------------------------------------- volume


@dataclass(frozen=True, slots=True)
class VolumeParams:
    """Tuning of :class:`VolumeDetector`.

    ``drop_ratio``: the smoothed observed/expected ratio at which the relative test
    scores 0.5 (1.0 at zero traffic).  ``cusum_ratio``: the Poisson CUSUM tests "still
    the expected rate" against "this fraction of it", so low-volume series need more
    windows (or a bigger drop) before they page.  ``factor_max`` bounds how far recent
    traffic may lift the seasonal expectation: a promotion (surge) never raises it by
    more, so its end is not mistaken for a drop.

    >>> len(VolumeDetector(VolumeParams(weekly=True)).prof)   # 336 slots: mean, count
    672
    """

    volume_key: str = "volume"
    slots_per_day: int = 48
    weekly: bool = False  # 7 x slots_per_day slots (needs a week to warm)
    utc_offset_s: float = 0.0  # local time for the day boundary (weekly only matters)
    day_weight: float = 0.3  # weight of the newest day in a slot's mean
    level_halflife_s: float = 900.0  # short-term level used before a slot is warm...
    level_up_halflife_s: float = 7200.0  # ...which rises slowly: a surge is not the norm
    factor_halflife_s: float = 3600.0  # recent level relative to the seasonal profile
    factor_min: float = 0.05
    factor_max: float = 1.2
    surge_clip: float = 1.5  # what a surge may teach, as a multiple of the expectation
    slot_warm_share: float = 0.8  # share of a slot's windows seen before it is trusted
    drop_ratio: float = 0.5
    smooth: float = 0.4  # per-window memory of the smoothed ratio (0 = this window only)
    cusum_ratio: float = 0.2
    cusum_h: float = 14.0
    cusum_cap: float = 18.0
    min_windows: int = 60
    guard_weight: float = 0.0
    suspect: float = 0.25


_DEFAULT_VOLUME = VolumeParams()


class VolumeDetector:
    """Sudden traffic DROP of one series against a seasonal expectation.

    Expectation: per time-of-day slot (48 half-hours by default, optionally per
    weekday), a mean over days (``day_weight`` for the newest), interpolated between
    slot centres (but never above the slot's own mean) and scaled by a recent level
    factor (capped at ``factor_max``); until a slot has been seen for most of a day
    (a week if ``weekly``) a short exponentially weighted level stands in.  Two tests
    must agree (the score is the smaller):

    - relative: the smoothed ratio observed / expected at or below ``drop_ratio``;
    - significance: a Poisson CUSUM of "expected rate" vs ``cusum_ratio`` times it, so
      5 calls instead of 10 is noise but 2 000 instead of 10 000 is not.

    Surges (promotions) are never anomalous and are learned only up to
    ``surge_clip`` times the expectation.

    >>> det = VolumeDetector()
    >>> t0 = 1_700_000_000_000
    >>> for i in range(400):
    ...     _ = det.learn_one({"window_start_ms": t0 + 10_000 * i, "window_s": 10, "volume": 1000})
    >>> x = {"window_start_ms": t0 + 4_000_000, "window_s": 10, "volume": 3000}
    >>> round(det.expected(x)), det.score_one(x)        # a surge is not an incident
    (1000, 0.0)
    >>> scores = []
    >>> for i in range(3):
    ...     x = {"window_start_ms": t0 + 10_000 * (400 + i), "window_s": 10, "volume": 250}
    ...     scores.append(det.score_one(x) >= 0.5)
    ...     _ = det.learn_one(x)
    >>> scores
    [False, True, True]
    """

    __slots__ = ("factor", "level", "n", "obs", "params", "prof", "s", "want")

    def __init__(self, params: VolumeParams | None = None, **overrides: Any) -> None:
        base = params if params is not None else _DEFAULT_VOLUME
        self.params = _with(base, overrides)
        n_slots = self.params.slots_per_day * (7 if self.params.weekly else 1)
        # Means in the first half, windows seen in the second (float32 keeps it small).
        self.prof = array("f", [0.0] * (2 * n_slots))
        self.level = 0.0
        self.factor = 1.0
        self.s = 0.0  # Poisson CUSUM for a drop
        self.obs = 0.0  # smoothed observed volume
        self.want = 0.0  # smoothed expected volume
        self.n = 0

    def __getstate__(self) -> tuple[Any, ...]:
        return (
            self.params,
            self.prof,
            self.level,
            self.factor,
            self.s,
            self.obs,
            self.want,
            self.n,
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (self.params, self.prof, self.level, self.factor, self.s, self.obs, self.want, self.n) = (
            state
        )

    @property
    def ready(self) -> bool:
        return self.n >= self.params.min_windows and self.level > 0.0

    def _slot(self, x: Features) -> tuple[int, int, float, float]:
        """(slot index, neighbour index, neighbour weight, windows per slot) of the window."""
        p = self.params
        window_s = _get(x, "window_s", 10.0)
        n_slots = len(self.prof) // 2
        slot_s = 86400.0 / p.slots_per_day
        t = _get(x, "window_start_ms") / 1000.0 + window_s / 2 + p.utc_offset_s
        pos = (t % (slot_s * n_slots)) / slot_s
        i = int(pos) % n_slots
        frac = pos - int(pos) - 0.5
        j = (i + (1 if frac >= 0 else -1)) % n_slots
        return i, j, abs(frac), slot_s / window_s

    def _seasonal(self, x: Features) -> float | None:
        """Profile value at this time, or None while the slot is cold."""
        i, j, w, per_slot = self._slot(x)
        n_slots = len(self.prof) // 2
        warm = self.params.slot_warm_share * per_slot
        if self.prof[n_slots + i] < warm:
            return None
        if self.prof[n_slots + j] < warm:
            return float(self.prof[i])
        # Interpolating follows a ramp inside a slot, but across a step (weekday to
        # weekend) it would expect half the old level: never expect more than the slot.
        return min((1.0 - w) * self.prof[i] + w * self.prof[j], float(self.prof[i]))

    def expected(self, x: Features) -> float:
        """Expected volume of this window (needs ``window_start_ms``)."""
        seasonal = self._seasonal(x)
        if seasonal is None:
            return self.level
        p = self.params
        return seasonal * min(max(self.factor, p.factor_min), p.factor_max)

    def _evaluate(self, x: Features) -> tuple[float, float, float, float, float, float]:
        """(score, relative score, CUSUM score, new CUSUM, new smoothed obs, new smoothed want)."""
        p = self.params
        v = max(0.0, _get(x, p.volume_key))
        lam = self.expected(x)
        if lam <= 0.0:
            return 0.0, 0.0, 0.0, self.s, self.obs, self.want
        llr = v * math.log(p.cusum_ratio) + (1.0 - p.cusum_ratio) * lam
        s = min(p.cusum_cap, max(0.0, self.s + llr))
        obs = p.smooth * self.obs + v
        want = p.smooth * self.want + lam
        rel = min(1.0, max(0.0, 1.0 - (obs / want) * 0.5 / p.drop_ratio))
        cus = _cusum_score(s, p.cusum_h, p.cusum_cap)
        return min(rel, cus), rel, cus, s, obs, want

    def components(self, x: Features) -> dict[str, float]:
        _, rel, cus, *_ = self._evaluate(x)
        return {"relative": rel, "cusum": cus}

    def score_one(self, x: Features) -> float:
        if not self.ready:
            return 0.0
        return self._evaluate(x)[0]

    def learn_one(self, x: Features) -> VolumeDetector:
        self._learn(x, self._evaluate(x))
        return self

    def score_learn_one(self, x: Features) -> float:
        """``score_one(x)`` then ``learn_one(x)``, evaluating the window once."""
        ev = self._evaluate(x)
        score = ev[0] if self.ready else 0.0
        self._learn(x, ev)
        return score

    def _learn(self, x: Features, ev: tuple[float, float, float, float, float, float]) -> None:
        score, _, _, s, obs, want = ev
        weight = 1.0
        if self.ready:
            self.s, self.obs, self.want = s, obs, want
            if score >= self.params.suspect:
                weight = self.params.guard_weight
        self._learn_baseline(x, weight)
        self.n += 1

    def _surge_cap(self, ref: float) -> float:
        """Most a window may teach when ``ref`` is expected: ``surge_clip`` times it,
        plus Poisson noise, so a quiet series's ordinary 2 calls instead of 0.5 are
        learned in full (clipping them would drag its baseline towards zero)."""
        return self.params.surge_clip * ref + 3.0 * math.sqrt(ref) + 2.0

    def _learn_baseline(self, x: Features, weight: float) -> None:
        p = self.params
        v = max(0.0, _get(x, p.volume_key))
        window_s = _get(x, "window_s", 10.0)
        seasonal = self._seasonal(x)
        if weight > 0.0:
            ref = self.expected(x)
            taught = min(v, self._surge_cap(ref)) if self.ready else v
            # Short-term level (cold slots) and the level factor (warm slots).  The
            # level rises slowly above its noise band: under-expecting only delays a
            # page, while a level lifted by a promotion would page when it ends.
            band = 1.1 * self.level + 3.0 * math.sqrt(self.level) + 2.0
            halflife = p.level_up_halflife_s if self.ready and v > band else p.level_halflife_s
            a = (1.0 - 0.5 ** (window_s / halflife)) * weight
            self.level += max(a, weight / (self.n + 1)) * (taught - self.level)
            if seasonal is not None and seasonal > 0:
                a = (1.0 - 0.5 ** (window_s / p.factor_halflife_s)) * weight
                ratio = min(v, self._surge_cap(seasonal)) / seasonal
                self.factor += a * (ratio - self.factor)
        # The slot's mean: a plain average at first, then the newest day weighs
        # day_weight.  A cold slot learns even guarded windows: it has nothing to
        # protect, and otherwise a time never seen before (the first Saturday) that
        # looks like a drop against the level would stay cold and page every week.
        i, _, _, per_slot = self._slot(x)
        n_slots = len(self.prof) // 2
        seen = self.prof[n_slots + i]
        if seasonal is not None:
            taught = min(v, self._surge_cap(self.prof[i]))
        else:
            taught = min(v, self._surge_cap(self.level)) if self.ready else v
            weight = max(weight, 1.0)
        if weight > 0.0:
            a = max(1.0 - (1.0 - p.day_weight) ** (1.0 / per_slot), 1.0 / (seen + 1.0)) * weight
            self.prof[i] += a * (taught - self.prof[i])
            self.prof[n_slots + i] = min(seen + 1.0, 1e6)


# --------------------------------------------------------------------------- multivariate


def window_vector(x: Features) -> dict[str, float]:
    """Normalised features of a window for a multivariate model: rates, logs.

    >>> v = window_vector({"volume": 100, "system_errors": 2, "latency_p95": 199})
    >>> v["system_error_rate"], round(v["log_volume"], 2), round(v["log_p95"], 2)
    (0.02, 4.62, 5.3)
    """
    vol = _get(x, "volume")
    out = {"log_volume": math.log1p(vol)}
    for key in ("system_errors", "config_errors", "business_declines", "timeouts"):
        out[key.removesuffix("s") + "_rate"] = _get(x, key) / vol if vol > 0 else 0.0
    for key in ("latency_p50", "latency_p95", "latency_p99"):
        out["log_" + key.removeprefix("latency_")] = math.log1p(max(0.0, _get(x, key)))
    created = _get(x, "created")
    if "created" in x:
        out["missing_rate"] = _get(x, "missing_callbacks") / created if created > 0 else 0.0
    return out


def _default_multivariate_model(seed: int) -> Any:
    from river import anomaly, compose, preprocessing

    return compose.Pipeline(
        preprocessing.MinMaxScaler(),
        anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=seed),
    )


class MultivariateDetector:
    """Any river anomaly detector over :func:`window_vector`, calibrated to [0, 1].

    Raw river scores have no common scale, so they are mapped with running quantiles
    of the raw scores of normal windows: the median maps to 0, the ``quantile``
    (99.9th percentile by default; at 99.5 % river's HalfSpaceTrees paged dozens of
    times a day on normal synthetic traffic) to 0.5, and one further
    median-to-quantile span to 1.0.  With ``confirm`` (default) the score is the
    smaller of this window's and the previous one's, so a single odd window does not
    page.  Meant as an extra signal
    at coarse levels (a provider, an operation), not a primary pager: one river model
    per series is far heavier than the other detectors.

    >>> import random
    >>> rng = random.Random(3)
    >>> det = MultivariateDetector(min_windows=300)
    >>> def window(err=0.002):
    ...     vol = rng.gauss(1000, 30)
    ...     return {"volume": vol, "system_errors": vol * err, "latency_p50": rng.gauss(80, 4),
    ...             "latency_p95": rng.gauss(200, 10), "latency_p99": rng.gauss(400, 20)}
    >>> for _ in range(600):
    ...     _ = det.learn_one(window())
    >>> bad = window(err=0.3) | {"latency_p95": 5000.0, "latency_p99": 9000.0}
    >>> _ = det.learn_one(bad)
    >>> det.score_one(bad) >= 0.5
    True
    """

    __slots__ = ("confirm", "hi", "mid", "min_windows", "model", "n", "prev", "quantile")

    def __init__(
        self,
        model: Any = None,
        *,
        quantile: float = 0.999,
        min_windows: int = 500,
        confirm: bool = True,
        seed: int = 42,
    ) -> None:
        from river import stats

        self.model = model if model is not None else _default_multivariate_model(seed)
        self.quantile = quantile
        self.mid = stats.Quantile(0.5)
        self.hi = stats.Quantile(quantile)
        self.min_windows = min_windows
        self.confirm = confirm
        self.prev = 0.0  # calibrated score of the previous window
        self.n = 0

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for k, v in zip(self.__slots__, state, strict=True):
            setattr(self, k, v)

    @property
    def ready(self) -> bool:
        return self.n >= self.min_windows

    def expected(self, x: Features | None = None) -> float:
        """The raw-score level calibrated to 0.5 (river scores have no baseline value)."""
        return float(self.hi.get() or 0.0)

    def calibrate(self, raw: float) -> float:
        mid = float(self.mid.get() or 0.0)
        hi = float(self.hi.get() or 0.0)
        span = hi - mid
        if span <= 0:
            span = max(abs(hi), 1e-9) * 0.1
        if raw <= hi:
            return max(0.0, 0.5 * (raw - mid) / span)
        return min(1.0, 0.5 + 0.5 * (raw - hi) / span)

    def _calibrated(self, x: Features) -> float:
        return self.calibrate(float(self.model.score_one(window_vector(x))))

    def score_one(self, x: Features) -> float:
        if not self.ready:
            return 0.0
        cal = self._calibrated(x)
        return min(cal, self.prev) if self.confirm else cal

    def score_learn_one(self, x: Features) -> float:
        """``score_one(x)`` then ``learn_one(x)``."""
        score = self.score_one(x)
        self.learn_one(x)
        return score

    def learn_one(self, x: Features) -> MultivariateDetector:
        vec = window_vector(x)
        raw = float(self.model.score_one(vec))
        cal = self.calibrate(raw)
        if not self.ready or cal < 0.5:
            self.model.learn_one(vec)
            self.mid.update(raw)
            self.hi.update(raw)
        self.prev = cal if self.ready else 0.0
        self.n += 1
        return self


# --------------------------------------------------------------------------- static and combined


@dataclass(slots=True)
class StaticSLO:
    """A fixed threshold on a feature, or on a ratio of two features.

    Direction follows the thresholds: ``critical < warning`` means lower is worse
    (success rate), ``critical > warning`` means higher is worse (p99 latency).  The
    score is 0.5 at ``warning``, 1.0 at ``critical``, linear in between and falling to
    0 a quarter band away on the good side.  Windows with fewer than ``min_volume``
    calls (``volume_key``) or a zero denominator score 0.

    >>> slo = StaticSLO("success", per="volume", warning=0.99, critical=0.95, min_volume=20)
    >>> slo.score_one({"volume": 1000, "success": 995})      # 99.5 %: fine
    0.25
    >>> slo.score_one({"volume": 1000, "success": 980}), slo.level({"volume": 1000, "success": 980})
    (0.625, 'warning')
    >>> slo.level({"volume": 1000, "success": 900})
    'critical'
    >>> StaticSLO("latency_p99", warning=1500, critical=3000).score_one({"latency_p99": 3000})
    1.0
    """

    feature: str
    warning: float
    critical: float
    per: str | None = None
    min_volume: float = 0.0
    volume_key: str = "volume"

    def __post_init__(self) -> None:
        if self.warning == self.critical:
            raise ValueError(f"StaticSLO({self.feature}): warning and critical must differ")

    def value(self, x: Features) -> float | None:
        if _get(x, self.volume_key) < self.min_volume:
            return None
        v = _get(x, self.feature, math.nan)
        if self.per is not None:
            d = _get(x, self.per)
            v = v / d if d > 0 else math.nan
        return v if math.isfinite(v) else None

    def _badness(self, x: Features) -> float | None:
        """0 at warning, 1 at critical, negative on the good side."""
        v = self.value(x)
        return None if v is None else (self.warning - v) / (self.warning - self.critical)

    def level(self, x: Features) -> str | None:
        b = self._badness(x)
        if b is None or b < 0:
            return None
        return "critical" if b >= 1 else "warning"

    def score_one(self, x: Features) -> float:
        b = self._badness(x)
        if b is None:
            return 0.0
        return min(1.0, 0.5 + 0.5 * b) if b >= 0 else max(0.0, 0.5 + 2.0 * b)

    def learn_one(self, x: Features) -> StaticSLO:
        return self

    def score_learn_one(self, x: Features) -> float:
        return self.score_one(x)

    def expected(self, x: Features | None = None) -> float:
        return self.warning

    @property
    def ready(self) -> bool:
        return True


class Combined:
    """Several detectors on one series, as one: the max of their scores
    (any may page) or, with ``require_all=True``, the min (all must agree).

    ``expected`` comes from the first detector.

    >>> slo = StaticSLO("system_errors", per="volume", warning=0.01, critical=0.05)
    >>> both = Combined(ErrorRateDetector(min_windows=1), slo, require_all=True)
    >>> for _ in range(20):
    ...     _ = both.learn_one({"volume": 1000, "system_errors": 0})
    >>> both.score_one({"volume": 1000, "system_errors": 8}) < 0.5   # learned says yes, SLO no
    True
    >>> both.score_one({"volume": 1000, "system_errors": 60}) >= 0.5
    True
    """

    __slots__ = ("detectors", "require_all")

    def __init__(self, *detectors: Any, require_all: bool = False) -> None:
        if not detectors:
            raise ValueError("Combined needs at least one detector")
        self.detectors = list(detectors)
        self.require_all = require_all

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.detectors, self.require_all)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.detectors, self.require_all = state

    @property
    def ready(self) -> bool:
        flags = [getattr(d, "ready", True) for d in self.detectors]
        return all(flags) if self.require_all else any(flags)

    def components(self, x: Features) -> list[float]:
        return [float(d.score_one(x)) for d in self.detectors]

    def score_one(self, x: Features) -> float:
        scores = self.components(x)
        return min(scores) if self.require_all else max(scores)

    def learn_one(self, x: Features) -> Combined:
        for d in self.detectors:
            d.learn_one(x)
        return self

    def score_learn_one(self, x: Features) -> float:
        """``score_one(x)`` then ``learn_one(x)`` on every member."""
        scores = [score_learn(d, x) for d in self.detectors]
        return min(scores) if self.require_all else max(scores)

    def expected(self, x: Features) -> float:
        return float(self.detectors[0].expected(x))


# --------------------------------------------------------------------------- helpers


def severity(
    score: float,
    impact: float,
    *,
    warning_impact: float = 1.0,
    critical_impact: float = 50.0,
    critical_score: float = 0.75,
) -> str:
    """Alert severity from a detector score and the impact (e.g. affected calls per window).

    - ``"critical"``: anomalous (score >= 0.5) with score >= ``critical_score`` and
      ``impact >= critical_impact`` — clearly broken and hurting many payments;
    - ``"warning"``: anomalous and ``impact >= warning_impact``;
    - ``"info"``: not anomalous, or anomalous but affecting (almost) nobody.

    >>> severity(0.95, 400)            # provider outage: 400 failed calls per window
    'critical'
    >>> severity(0.6, 400), severity(0.95, 12)
    ('warning', 'warning')
    >>> severity(0.95, 0.5), severity(0.3, 10_000)
    ('info', 'info')
    """
    if score < 0.5 or impact < warning_impact:
        return "info"
    if score >= critical_score and impact >= critical_impact:
        return "critical"
    return "warning"


class DetectorBank:
    """One detector per series, made on first sight by ``factory``; picklable as a whole
    when the factory is (a class, or ``functools.partial(Class, params)``, not a lambda).

    Pickling the bank stores a shared parameter object once, however many series.

    >>> from functools import partial
    >>> bank = DetectorBank(partial(ErrorRateDetector, ErrorRateParams(min_windows=2)))
    >>> for _ in range(3):
    ...     _ = bank.score_learn(("alipay", "m_1"), {"volume": 100, "system_errors": 0})
    >>> bank.score_learn(("alipay", "m_1"), {"volume": 100, "system_errors": 60}) >= 0.5
    True
    >>> len(bank), bank[("alipay", "m_1")].ready
    (1, True)
    >>> bank.evict([("alipay", "m_1")]); len(bank)
    0
    """

    __slots__ = ("detectors", "factory")

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.detectors: dict[Hashable, Any] = {}

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.factory, self.detectors)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.factory, self.detectors = state

    def __len__(self) -> int:
        return len(self.detectors)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.detectors

    def __getitem__(self, key: Hashable) -> Any:
        det = self.detectors.get(key)
        if det is None:
            det = self.detectors[key] = self.factory()
        return det

    def score_learn(self, key: Hashable, x: Features) -> float:
        """Score then learn this series's window (see :func:`score_learn`)."""
        return score_learn(self[key], x)

    def evict(self, keys: Iterable[Hashable]) -> None:
        """Forget series (e.g. evicted as idle by the windows)."""
        for key in keys:
            self.detectors.pop(key, None)


def score_learn(detector: Any, x: Features) -> float:
    """Score a window, then learn it: what the judge does once per window and series.

    Uses the detector's ``score_learn_one`` (one evaluation instead of two) when it
    has one, else river's ``score_one`` then ``learn_one``.

    >>> det = ErrorRateDetector(min_windows=1)
    >>> score_learn(det, {"volume": 100, "system_errors": 0}), det.ready
    (0.0, True)
    """
    fast = getattr(detector, "score_learn_one", None)
    if fast is not None:
        return float(fast(x))
    score = float(detector.score_one(x))
    detector.learn_one(x)
    return score


D = TypeVar("D")


def warm_start(detector: D, xs: Iterable[Features]) -> D:
    """Teach ``detector`` from replayed history windows (oldest first); returns it.

    Learning stays guarded, so incidents in the history do not become the baseline.

    >>> det = warm_start(ErrorRateDetector(), [{"volume": 100, "system_errors": 1}] * 40)
    >>> det.ready, round(det.expected({}), 4)
    (True, 0.0096)
    """
    learn = detector.learn_one  # type: ignore[attr-defined]
    for x in xs:
        learn(x)
    return detector


class VolumeGate:
    """Let ``detector`` page only on windows with at least ``min_volume`` calls.

    It still learns from every window, so its baseline stays current; it just does
    not speak where a handful of calls cannot tell a shift from noise.

    >>> gate = VolumeGate(ErrorRateDetector(min_windows=1), min_volume=100)
    >>> _ = gate.learn_one({"volume": 10, "system_errors": 0})
    >>> gate.score_one({"volume": 10, "system_errors": 9})
    0.0
    """

    __slots__ = ("detector", "min_volume", "volume_key")

    def __init__(self, detector: Any, min_volume: float, volume_key: str = "volume") -> None:
        self.detector = detector
        self.min_volume = min_volume
        self.volume_key = volume_key

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.detector, self.min_volume, self.volume_key)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.detector, self.min_volume, self.volume_key = state

    @property
    def ready(self) -> bool:
        return bool(getattr(self.detector, "ready", True))

    def _open(self, x: Features) -> bool:
        return _get(x, self.volume_key) >= self.min_volume

    def score_one(self, x: Features) -> float:
        return float(self.detector.score_one(x)) if self._open(x) else 0.0

    def learn_one(self, x: Features) -> VolumeGate:
        self.detector.learn_one(x)
        return self

    def score_learn_one(self, x: Features) -> float:
        score = score_learn(self.detector, x)
        return score if self._open(x) else 0.0

    def expected(self, x: Features) -> float:
        return float(self.detector.expected(x))


class GuardedBy:
    """Learn ``detector`` only from windows ``guard`` finds normal (score < 0.5).

    Guarded learning for cold start: a learned detector learns every window until it
    is ready, so an outage in its first minutes would become its baseline — unless a
    detector that needs no history (a static threshold) vetoes those windows.

    >>> from models.error_rate import ErrorRateThreshold
    >>> det = GuardedBy(ErrorRateDetector(min_windows=1),
    ...                 ErrorRateThreshold(0.05, 20, errors_key="system_errors"))
    >>> _ = det.learn_one({"volume": 1000, "system_errors": 600})   # an outage: not learned
    >>> det.detector.n
    0
    """

    __slots__ = ("detector", "guard")

    def __init__(self, detector: Any, guard: Any) -> None:
        self.detector = detector
        self.guard = guard

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.detector, self.guard)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.detector, self.guard = state

    @property
    def ready(self) -> bool:
        return bool(getattr(self.detector, "ready", True))

    def score_one(self, x: Features) -> float:
        return float(self.detector.score_one(x))

    def learn_one(self, x: Features) -> GuardedBy:
        if self.guard.score_one(x) < 0.5:
            self.detector.learn_one(x)
        return self

    def score_learn_one(self, x: Features) -> float:
        if self.guard.score_one(x) < 0.5:
            return score_learn(self.detector, x)
        return float(self.detector.score_one(x))

    def expected(self, x: Features) -> float:
        return float(self.detector.expected(x))
