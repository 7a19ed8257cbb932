"""Sequential detectors: CUSUMs on the log-likelihood ratio of each window's sufficient
statistics, so evidence accumulates across windows instead of being judged (and gated)
one window at a time.

Three families, each a vectorised bank (one numpy pass per rule and window for every
series, slot-indexed state as in :mod:`models.bank`), and a fourth that pools them:

- :class:`RateBank`: a share of calls (system errors, timeouts, config errors,
  business declines, missing callbacks, verify failures, nacks).  Binomial LLR of the
  window's ``k`` bad calls out of ``n`` against the series' learned rate ``p0``, for a
  few alternatives ``p1 = max(r * p0, p0 + min_increase)``; quasi-likelihood
  (divided by a learned overdispersion ``phi``).
- :class:`LatencyBank`: the location of log-latency.  The window's median log-latency
  ``m`` of ``n`` calls is about Normal(mu0, 1.57 sigma^2 / n) (the median's efficiency
  on normal data); Gaussian LLR for a shift ``delta`` (latency x 1.5, x 3), with the
  standardised value clipped so one slow call adds a bounded amount of evidence.
- :class:`VolumeBank`: a drop of the call count.  Poisson LLR of ``k`` calls against a
  damped-trend (Holt) forecast ``lam0`` times the fleet's demand this window (the
  median of calls over forecast of the other providers' series in the bank), for drops
  to ``rho`` times that; quasi-likelihood as above.
- :class:`PooledBank`: CUSUMs on evidence summed from other series' banks (a merchant's
  calls across operations: the sum of its operations' latency LLRs, each call against
  its own operation's normal).

Each CUSUM is ``s <- min(cap, max(0, s + llr / phi))``; the detector's score is 0.5 when
the largest of its CUSUMs reaches ``h`` (see :mod:`models.budget`: ``h = ln(k ARL0)``
from the one false-alarm budget) and 1.0 at ``cap = h + resolve_nats``.  A window
without calls has LLR 0: it neither adds evidence nor resets it, and an open alert
falls below 0.5 only after ``resolve_nats`` of evidence that the series is healthy,
weighed against the alternative that explains the episode best; then the CUSUM restarts at 0.

Baselines learn only from windows whose CUSUM stays below ``suspect * h`` (never from a
window they page on or a slowly building incident; the suspect windows of a share or
a latency wait until the test decides, :meth:`RateBank._learn`), shrunk toward a prior
rate (the rule's ``prior_rate``, or with ``pooled`` the bank's pooled rate of every series) by
``prior_calls`` calls, so a series with little data starts from a sane normal.
Warm-up: ``min_windows`` windows with calls and ``warm_calls`` calls; before that a
rate detector with a ``cold_rate`` is judged against that never-normal rate (a
signature error needs no history) and the others score 0.

:class:`SequentialDetector` is the one-series form (river's protocol): a bank of one
slot, so the scalar and vectorised forms are the same code.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from models.bank import (
    Columns,
    StateBank,
    as_slots,
    column,
    cusum_many,
    decay_many,
    put_rows,
    register_twin,
)
from models.base import Features, feature
from models.budget import cusum_threshold, kl_bernoulli

#: Variance of a sample median relative to the mean's, normal data (pi / 2).
MEDIAN_VAR = math.pi / 2

#: Hysteresis of an alarm: its CUSUM is capped at ``h + resolve_nats`` and the alarm ends
#: at ``h - resolve_nats``.  The false-recovery budget is the lifecycle's reverse test
#: after it (``stream.alerting.lifecycle.RESOLVE_LLR``, 6.9 nats: <= 0.1 %, Wald).
RESOLVE_NATS = 1.0
#: A latency alarm (an operation's or a pooled one) has no such reverse test after it
#: (latency is not a share): its own hysteresis is that test, 2 x 3.45 = 6.9 nats
#: (1000 : 1) of evidence for health before it ends.  With 1 nat, one window of two
#: lucky calls (-3 nats against x3) ended a merchant's latency alarm inside its incident
#: and the renewed CUSUM paged it again minutes later (docs/detection.md).
LATENCY_RESOLVE_NATS = 3.45
POOLED_RESOLVE_NATS = LATENCY_RESOLVE_NATS


def _h(h: float, tests: int) -> float:
    """``h``, or the default budget's (1 false alarm / series / 30 days, 10 s windows)."""
    return h if h > 0 else cusum_threshold(1.0, 10.0, tests)


class _Thresholds:
    """The CUSUM threshold of a detector's parameters, from its budget and its alternatives."""

    __slots__ = ()
    h: float
    ratios: tuple[float, ...]
    resolve_nats: float
    suspect: float

    @property
    def threshold(self) -> float:
        return _h(self.h, len(self.ratios))

    def patience_calls(self, kl_per_call: np.ndarray) -> np.ndarray:
        """Calls an excursion above ``suspect * h`` may last before it is learned anyway:
        twice what the mildest alternative, were it true, needs to carry the CUSUM from
        there to ``h`` (its drift: ``kl_per_call``).  One that outlasts this is no change
        the detector tests for but a baseline that is off."""
        return 2.0 * (1.0 - self.suspect) * self.threshold / np.maximum(kl_per_call, 1e-12)

    @property
    def cap_s(self) -> float:
        """Where evidence is capped: a recovery then needs ``resolve_nats`` to clear."""
        return self.threshold + self.resolve_nats


@dataclass(frozen=True, slots=True)
class RateParams(_Thresholds):
    """Tuning of a :class:`RateBank` (one per rule, shared by its series).

    >>> p = RateParams()
    >>> round(p.threshold, 2), round(p.cap_s, 2)
    (13.56, 14.56)
    """

    errors_key: str = "system_errors"
    volume_key: str = "volume"
    # Alternatives p1 = r * p0 ... spaced ~2.6x apart: any true ratio from x2.5 to x50
    # keeps >= 85 % of the oracle's information per call (x3/x20 alone: 67 % near x9)
    # for ln(3/2) = 0.41 nats more threshold than two (docs/detection.md).
    ratios: tuple[float, ...] = (3.0, 8.0, 20.0)
    min_increase: float = 0.002  # ... or p0 + this, whichever is larger
    p1_max: float = 0.9
    prior_rate: float = 0.001  # the pooled prior before any data
    prior_calls: float = 200.0  # shrinkage toward the prior rate, in calls
    # Learn the prior from every series of the bank (the rule's pooled rate).  Off by
    # default: a per-series detector cannot see the pool, and banks must judge exactly
    # as per-series detectors do.
    pooled: bool = False
    floor: float = 0.0005  # p0 never below: 0.01 % -> 0.05 % is not an incident
    cap: float = 0.2  # p0 never above: that rate is never normal
    cold_rate: float = 0.0  # judged during warm-up against this rate (0: not judged)
    halflife_s: float = 7200.0
    h: float = 0.0  # CUSUM threshold (0: from the default budget, see with_budget)
    resolve_nats: float = RESOLVE_NATS  # hysteresis (nats)
    suspect: float = 0.5  # windows with CUSUM >= suspect * h wait until the test decides
    min_windows: int = 30
    warm_calls: float = 0.0
    dispersion_prior: float = 20.0
    max_dispersion: float = 10.0

    def bank(self) -> RateBank:
        return RateBank(self)

    def expected_delay_s(self, p0: float, p1: float, calls_per_s: float) -> float:
        """This detector's delay (Lorden, ``h`` over the LLR drift of its best alternative)
        when the true share goes from ``p0`` to ``p1``; inf when no alternative drifts up.

        >>> round(RateParams().expected_delay_s(0.001, 0.02, 1.0), 0)   # the oracle: 303 s
        330.0
        >>> round(RateParams().expected_delay_s(0.0017, 0.0153, 9.0), 0)  # x9 (x3/x20 alone: 109 s)
        75.0
        """
        best = 0.0
        for r in self.ratios:
            a = min(self.p1_max, max(p0 * r, p0 + self.min_increase))
            drift = p1 * math.log(a / p0) + (1 - p1) * math.log((1 - a) / (1 - p0))
            best = max(best, drift)
        return self.threshold / (best * calls_per_s) if best > 0 else math.inf


#: Auth/config/signature/certificate errors: normally none, so a few are conclusive; judged
#: from the first call against a 1 % rate that is never normal, the learned rate capped there.
CONFIG_RATE = RateParams(
    errors_key="config_errors",
    ratios=(5.0, 1000.0),
    prior_rate=0.0005,
    floor=0.002,
    cap=0.01,
    cold_rate=0.01,
    min_windows=6,
)
#: Business declines (insufficient funds, risk): a drift, never an outage signal.
DECLINE_RATE = RateParams(
    errors_key="business_declines", ratios=(2.0,), prior_rate=0.02, min_increase=0.02, cap=0.5
)
#: The tail share of latency: calls slower than 4x their window's median (stalled calls),
#: whatever the median does; a share like any other, learned per series, of the calls in
#: windows with enough calls for a median (``tail_calls``).
TAIL_RATE = RateParams(errors_key="slow_calls", volume_key="tail_calls", prior_rate=0.002)
#: Timeouts alone: a provider slowing down shows here before it shows as errors.
TIMEOUT_RATE = RateParams(errors_key="timeouts", cold_rate=0.05)
#: System errors (provider_error, timeout, network, rate_limited).
SYSTEM_RATE = RateParams(errors_key="system_errors", cold_rate=0.05)


class SeqBank(StateBank):
    """What the three banks share: the CUSUM rows ``s`` (one per alternative), the
    pooled prior, the one-slot detector view and pickling."""

    _pooled: ClassVar[tuple[str, ...]] = ()
    #: State of the windows held aside while the test is undecided (see RateBank._learn).
    _pending: ClassVar[tuple[str, ...]] = ()
    params: Any
    s: np.ndarray
    run: np.ndarray  # per row, the evidence since the alarm started (uncapped), else 0
    alarm: np.ndarray  # 1 + the row the alarm is judged against while it lasts, else 0
    _step: np.ndarray  # the last window's LLR per row (transient, not pickled)
    _raw: np.ndarray  # the last window's statistic per row before the cap (transient)

    def __init__(self, params: Any) -> None:
        self.prototype = params
        self._setup()
        self._init_state()
        for name in self._pooled:
            setattr(self, name, 0.0)

    def _setup(self) -> None:
        self.params = self.prototype
        self.keys = self._keys()

    def _keys(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _tests(self) -> int:
        raise NotImplementedError

    def _row_shape(self, name: str) -> tuple[int, ...]:
        return (self._tests(),) if name in ("s", "run") else ()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update({name: getattr(self, name) for name in self._pooled})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "run" not in state:  # a snapshot from before the recovery test kept it
            state = {**state, "run": np.zeros_like(state["s"])}
        for name in self._pending:  # ... or from before windows were held aside
            if name not in state:
                state = {**state, name: np.zeros(state["n"].shape, np.float64)}
        super().__setstate__(state)
        for name in self._pooled:
            setattr(self, name, state[name])

    def ready(self, slots: np.ndarray) -> np.ndarray:
        s = np.asarray(slots, np.intp)
        out = np.zeros(s.size, bool)
        inside = s < self.capacity
        out[inside] = self._ready(s[inside])
        return out

    def _ready(self, slots: np.ndarray) -> np.ndarray:
        return self.n[slots] >= self.params.min_windows

    def detector(self, slot: int) -> SequentialDetector:
        """A standalone detector holding a copy of ``slot``'s state (and the pool)."""
        det = SequentialDetector(self.params)
        one = det.bank
        one._reserve(np.array([0]))
        if 0 <= slot < self.capacity:
            for name in self._state:
                getattr(one, name)[..., 0] = getattr(self, name)[..., slot]
        for name in self._pooled:
            setattr(one, name, getattr(self, name))
        return det

    def expected_many(self, slots: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def score_learn_many(self, slots: np.ndarray, x: Columns) -> np.ndarray:
        raise NotImplementedError

    def with_evidence(self) -> np.ndarray:
        """Slots whose CUSUMs hold evidence or an alarm (what :meth:`restart` clears)."""
        return np.flatnonzero((self.s.max(axis=0, initial=0.0) > 0) | (self.alarm > 0))

    def restart(self, slots: np.ndarray) -> None:
        """Evidence and alarm back to 0 for ``slots`` (their baselines stay): what they
        gathered is explained, e.g. by a parent's incident that has ended (the caller
        keeps the slots of series whose own episodes go on)."""
        s = as_slots(slots)
        s = s[s < self.capacity]
        self.s[:, s] = 0.0
        self.run[:, s] = 0.0
        self.alarm[s] = 0.0
        for name in self._pending:
            getattr(self, name)[s] = 0.0

    def _cusum(self, slots: np.ndarray, llr: np.ndarray, judged: np.ndarray) -> np.ndarray:
        """Advance the CUSUM rows of ``slots``; returns the new statistic (R, m)."""
        p = self.params
        self._step = llr  # this window's evidence per row, for _score's recovery test
        self._raw = self.s[:, slots] + llr  # ... and the statistic before the cap
        s = np.clip(self._raw, 0.0, p.cap_s)
        s = np.where(judged, s, 0.0)
        for row, vals in zip(self.s, s, strict=True):
            row[slots] = vals
        return s

    def _score(
        self, slots: np.ndarray, s: np.ndarray, judged: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(score per slot, calm: learnable) from the new CUSUM rows.

        Hysteresis (the reverse test): once a CUSUM reached ``h`` the slot stays anomalous
        (score >= 0.5) until it has fallen to ``h - resolve_nats``, i.e. until the calls
        since carried that much evidence of health.  That evidence is weighed against
        the alternative that explains the episode best: the row with the most evidence
        (uncapped, ``run``) from the window that raised the alarm on (rows go from the
        mildest to the sharpest change; ``alarm`` holds 1 + its row).  In a window that
        favours the normal model, milder rows are held at or below it, else after a
        large incident the mildest row (x3 of a 0.2 % rate drifts down by ~0.003 nats a
        call) would keep a cured series paging for half an hour.  The best row, not the
        sharpest that ever crossed: a 60 % traffic drop that dips to -90 % for a minute
        is still judged against rho 0.4, so a window at -30 % (which refutes rho 0.05 by
        20 nats) does not end it.  A window that favours a milder alternative keeps it.
        """
        p = self.params
        h, rows = p.threshold, np.arange(s.shape[0])[:, None]
        was = self.alarm[slots] > 0
        crossed = np.where(s >= h, rows, -1).max(axis=0)  # sharpest row at h, -1: none
        # The evidence of each alternative since the alarm started, uncapped; at the
        # start, what each row had gathered, this window uncapped (a burst of 20 missing
        # callbacks in 100 favours x20 by 27 nats over x3, though both hit the cap).  The
        # alarm is judged against the row that explains the episode best (maximum
        # likelihood among the alternatives).
        run = np.where(was, self.run[:, slots] + self._step, self._raw)
        best = s.shape[0] - 1 - np.argmax(run[::-1], axis=0)  # ties: the sharper row
        fired = np.where(was, best, crossed)
        held = fired >= 0
        if held.any():
            lead = s[np.maximum(fired, 0), np.arange(s.shape[1])]
            against = np.broadcast_to(self._step, s.shape) <= 0  # window favours normal
            s = np.where(held & (rows < fired) & against, np.minimum(s, lead), s)
        top = s.max(axis=0)
        alarm = judged & held & ((top >= h) | (was & (top > h - p.resolve_nats)))
        # Renewal: an alarm that ended restarts its CUSUM from 0 (Page's procedure after
        # a signal).  Left at ``h - resolve_nats`` one error would page again at once, and
        # a baseline above ``suspect * h`` would stay frozen: ``ARL0 >= e^h`` holds only
        # for a CUSUM started at 0.
        s = np.where(was & ~alarm, 0.0, s)
        top = s.max(axis=0)
        put_rows(self.s, slots, s)
        put_rows(self.run, slots, np.where(alarm, run, 0.0))
        self.alarm[slots] = np.where(alarm, 1.0 + fired, 0.0)
        score = cusum_many(top, h, p.cap_s)
        score = np.where(alarm, np.maximum(score, 0.5), np.where(judged, score, 0.0))
        return score, top < p.suspect * h


def _phi(dev: np.ndarray, var: np.ndarray, prior: float, top: float) -> np.ndarray:
    return np.clip((dev + prior) / (var + prior), 1.0, top)


class RateBank(SeqBank):
    """Binomial CUSUMs of a share of calls for many series (see the module docstring).

    >>> bank = RateBank(RateParams(errors_key="config_errors", cold_rate=0.01, ratios=(5, 1e3)))
    >>> calls = {"volume": np.ones(2), "config_errors": np.array([1.0, 0.0])}
    >>> [bank.score_learn_many(np.array([0, 1]), calls).round(2).tolist() for _ in range(3)]
    [[0.17, 0.0], [0.34, 0.0], [0.67, 0.0]]
    """

    _state = ("err", "vol", "pend_err", "pend_vol", "dev", "var", "s", "run", "alarm", "n")
    _pooled = ("pool_err", "pool_vol")
    _pending = ("pend_err", "pend_vol")
    err: np.ndarray
    vol: np.ndarray
    pend_err: np.ndarray  # bad calls of the windows since the CUSUM rose to suspect * h
    pend_vol: np.ndarray  # ... and their calls: learned or dropped once the test decides
    dev: np.ndarray
    var: np.ndarray
    s: np.ndarray
    pool_err: float
    pool_vol: float

    def _keys(self) -> tuple[str, ...]:
        return (self.params.errors_key, self.params.volume_key, "window_s")

    def _tests(self) -> int:
        return len(self.params.ratios)

    def _ready(self, slots: np.ndarray) -> np.ndarray:
        p = self.params
        return (self.n[slots] >= p.min_windows) & (self.vol[slots] >= p.warm_calls)

    def ready(self, slots: np.ndarray) -> np.ndarray:
        """Judging: warmed up, or from the first call with a ``cold_rate``."""
        if self.params.cold_rate > 0:
            return np.ones(np.asarray(slots).size, bool)
        return super().ready(slots)

    def prior_rate(self) -> float:
        """The pooled rate of every series of the rule, what a new series is shrunk to."""
        p = self.params
        return (p.prior_rate * p.prior_calls + self.pool_err) / (p.prior_calls + self.pool_vol)

    def expected_many(self, slots: np.ndarray) -> np.ndarray:
        """``p0`` per slot: the shrunk, clamped normal rate (before the cold-start rate)."""
        p = self.params
        shrunk = (p.prior_calls * self.prior_rate() + self.err[slots]) / (
            p.prior_calls + self.vol[slots]
        )
        return np.clip(shrunk, p.floor, p.cap)

    def score_learn_many(self, slots: np.ndarray, x: Columns) -> np.ndarray:
        slots = self._claim(slots)
        p, m = self.params, slots.size
        e = np.maximum(0.0, column(x, p.errors_key, 0.0, m))
        k = np.maximum(e, column(x, p.volume_key, 0.0, m))
        ready = self._ready(slots)
        base = self.expected_many(slots)
        p0 = base if p.cold_rate <= 0 else np.where(ready, base, np.maximum(base, p.cold_rate))
        judged = ready if p.cold_rate <= 0 else np.ones(m, bool)
        dev, var = self.dev[slots], self.var[slots]
        phi = _phi(dev, var, p.dispersion_prior, p.max_dispersion)
        r = np.asarray(p.ratios)[:, None]
        p1 = np.maximum(np.minimum(p.p1_max, np.maximum(p0 * r, p0 + p.min_increase)), p0)
        llr = e * np.log(p1 / p0) + (k - e) * np.log((1.0 - p1) / (1.0 - p0))
        s = self._cusum(slots, llr / phi, judged)
        score, calm = self._score(slots, s, judged)
        patience = self._patience(p0, p1[0], phi)
        self._learn(slots, x, e, k, base, calm, ready, patience)
        self.n[slots] += k > 0
        return score

    def _patience(self, p0: np.ndarray, p1: np.ndarray, phi: np.ndarray) -> np.ndarray:
        """Calls an excursion above ``suspect * h`` may last before it is learned anyway:
        twice what the mildest alternative, were it true, needs to carry the CUSUM from
        there to ``h`` (its drift is ``KL(p1 || p0) / phi`` a call).  An excursion that
        outlasts this is no incident the detector tests for but a baseline that is off
        (learned low from a quiet start): held unlearned, it froze the baseline and paged
        an hour later on the normal rate (probe on unseen traffic: a provider at 0.23 %
        system errors learned 0.11 %, froze for 50 minutes, paged).

        >>> bank = RateBank(RateParams())
        >>> round(float(bank._patience(np.array([0.002]), np.array([0.006]), np.ones(1))[0]))
        5218
        """
        return self.params.patience_calls(np.asarray(kl_bernoulli(p1, p0)) / phi)

    def _learn(
        self,
        slots: np.ndarray,
        x: Columns,
        e: np.ndarray,
        k: np.ndarray,
        base: np.ndarray,
        calm: np.ndarray,
        ready: np.ndarray,
        patience: np.ndarray,
    ) -> None:
        """Baseline from the windows the test judged normal; dispersion from the calm
        windows of ready series.

        A window whose CUSUM is at or above ``suspect * h`` is held aside (``pend_*``)
        until the test decides: dropped if the alarm is raised (the incident's windows),
        learned with the rest if the CUSUM falls back below the line or the excursion
        outlasts its :meth:`_patience`.  Dropping every such window, as before, left out
        exactly the windows that hold the normal clusters of errors: a baseline biased
        low, and in the trap above never corrected."""
        p, m = self.params, slots.size
        d = decay_many(x, p.halflife_s, m)
        calm_ready = calm & ready
        alarm = self.alarm[slots] > 0
        pe = d * self.pend_err[slots] + e
        pv = d * self.pend_vol[slots] + k
        learn = (calm | (pv >= patience)) & ~alarm
        self.pend_err[slots] = np.where(learn | alarm, 0.0, pe)
        self.pend_vol[slots] = np.where(learn | alarm, 0.0, pv)
        err, vol = self.err[slots], self.vol[slots]
        self.err[slots] = np.where(learn, d * err + pe, err)
        self.vol[slots] = np.where(learn, d * vol + pv, vol)
        # Overdispersion from calm windows of ready series, residuals clipped at 4 sigma.
        v = k * base * (1.0 - base)
        dev, var = self.dev[slots], self.var[slots]
        self.dev[slots] = np.where(
            calm_ready, d * dev + np.minimum((e - k * base) ** 2, 16 * v), dev
        )
        self.var[slots] = np.where(calm_ready, d * var + v, var)
        dp = float(np.max(d)) if np.ndim(d) else float(d)
        if not p.pooled:
            return
        used = learn & (pv > 0)
        self.pool_err = dp * self.pool_err + float(pe[used].sum())
        self.pool_vol = dp * self.pool_vol + float(pv[used].sum())


@dataclass(frozen=True, slots=True)
class LatencyParams(_Thresholds):
    """Tuning of a :class:`LatencyBank`.

    >>> round(LatencyParams().threshold, 2)
    13.16
    """

    p50_key: str = "latency_p50"
    volume_key: str = "volume"
    ratios: tuple[float, ...] = (1.5, 3.0)  # alternatives: latency x r (log shift ln r)
    sigma_prior: float = 0.5  # spread of log-latency before data
    prior_windows: float = 10.0  # ... and its weight, in windows
    clip: float = 1.5  # standardised median clipped to [-clip-delta', delta'+clip]
    halflife_s: float = 3600.0
    h: float = 0.0
    resolve_nats: float = LATENCY_RESOLVE_NATS
    suspect: float = 0.5
    min_windows: int = 30
    warm_calls: float = 30.0

    def bank(self) -> LatencyBank:
        return LatencyBank(self)


#: A latency window held aside: its calls-weighted log-medians, calls, residuals, windows.
_HELD = ("pend_num", "pend_den", "pend_vnum", "pend_vden")


class LatencyBank(SeqBank):
    """Gaussian CUSUMs of the window's median log-latency (see the module docstring).

    >>> bank = LatencyBank(LatencyParams(min_windows=5, warm_calls=0))
    >>> slots = np.array([0])
    >>> def window(ms):
    ...     return {"volume": 4.0, "latency_p50": np.array([ms])}
    >>> for i in range(40):
    ...     _ = bank.score_learn_many(slots, window(150.0 if i % 2 else 260.0))
    >>> round(float(bank.expected_many(slots)[0]))
    197
    >>> [float(bank.score_learn_many(slots, window(600.0))[0]) >= 0.5 for _ in range(3)]
    [False, True, True]
    """

    _state = ("mu_num", "mu_den", "v_num", "v_den", *_HELD, "s", "run", "alarm", "n")
    _pending = _HELD
    mu_num: np.ndarray
    mu_den: np.ndarray
    v_num: np.ndarray
    v_den: np.ndarray
    s: np.ndarray

    def _keys(self) -> tuple[str, ...]:
        return (self.params.p50_key, self.params.volume_key, "window_s")

    def _tests(self) -> int:
        return len(self.params.ratios)

    def _ready(self, slots: np.ndarray) -> np.ndarray:
        p = self.params
        return (self.n[slots] >= p.min_windows) & (self.mu_den[slots] >= p.warm_calls)

    def expected_many(self, slots: np.ndarray) -> np.ndarray:
        """Typical (median) latency in ms per slot; NaN before any data."""
        den = self.mu_den[slots]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, np.exp(self.mu_num[slots] / den), np.nan)

    def score_learn_many(self, slots: np.ndarray, x: Columns) -> np.ndarray:
        slots = self._claim(slots)
        p, m = self.params, slots.size
        k = np.maximum(0.0, column(x, p.volume_key, 0.0, m))
        med = column(x, p.p50_key, 0.0, m)
        has = (k > 0) & (med > 0)
        y = np.log(np.where(has, med, 1.0))
        mu_num, mu_den = self.mu_num[slots], self.mu_den[slots]
        mu0 = np.where(mu_den > 0, mu_num / np.where(mu_den > 0, mu_den, 1.0), y)
        v_num, v_den = self.v_num[slots], self.v_den[slots]
        sig2 = (p.prior_windows * p.sigma_prior**2 + v_num) / (p.prior_windows + v_den)
        n = np.maximum(k, 1.0)
        se = np.sqrt(MEDIAN_VAR * sig2 / n)
        ready = self._ready(slots)
        dprime = np.log(np.asarray(p.ratios))[:, None] / se  # (R, m)
        z = np.clip((y - mu0) / se, -p.clip - dprime, dprime + p.clip)
        llr = np.where(has, dprime * z - 0.5 * dprime * dprime, 0.0)
        s = self._cusum(slots, llr, ready)
        score, calm = self._score(slots, s, ready)
        resid = np.minimum(n * (y - mu0) ** 2 / MEDIAN_VAR, 16.0 * sig2)
        self._learn(slots, x, (n * y, n, resid), has, mu_den > 0, calm, sig2)
        self.n[slots] += has
        return score

    def _learn(
        self,
        slots: np.ndarray,
        x: Columns,
        window: tuple[np.ndarray, np.ndarray, np.ndarray],
        has: np.ndarray,
        spread: np.ndarray,
        calm: np.ndarray,
        sig2: np.ndarray,
    ) -> None:
        """The location (weighted by calls) and the spread from the windows the test
        judged normal.  As :meth:`RateBank._learn`: a window at or above ``suspect * h``
        waits aside until the alarm drops it, the CUSUM falls back, or the excursion
        outlasts twice the calls the mildest shift needs from there to ``h``
        (``KL = (ln r)^2 / (2 * MEDIAN_VAR * sigma^2)`` a call).  Dropping those windows
        dropped the slow ones a heavy tail makes normally: a spread biased low."""
        p, m = self.params, slots.size
        d = np.where(has, decay_many(x, p.halflife_s, m), 1.0)  # a window without calls: none
        ny, calls, resid = window
        spread = has & spread
        new = (np.where(has, ny, 0.0), np.where(has, calls, 0.0), np.where(spread, resid, 0.0),
               spread.astype(np.float64))  # fmt: skip
        held = [d * getattr(self, name)[slots] + v for name, v in zip(_HELD, new, strict=True)]
        patience = p.patience_calls(math.log(p.ratios[0]) ** 2 / (2.0 * MEDIAN_VAR * sig2))
        alarm = self.alarm[slots] > 0
        learn = (calm | (held[1] >= patience)) & ~alarm & has
        for name, base, v in zip(_HELD, ("mu_num", "mu_den", "v_num", "v_den"), held, strict=True):
            learned = getattr(self, base)
            learned[slots] = np.where(learn, d * learned[slots] + v, learned[slots])
            getattr(self, name)[slots] = np.where(learn | alarm, 0.0, v)


@dataclass(frozen=True, slots=True)
class VolumeParams(_Thresholds):
    """Tuning of a :class:`VolumeBank`.

    >>> round(VolumeParams().threshold, 2)
    13.16
    """

    volume_key: str = "volume"
    ratios: tuple[float, ...] = (0.4, 0.05)  # alternatives: the rate drops to rho * lam0
    # The level's weight per window minimises the forecast's error: Poisson noise
    # (~ a*lam/2) plus the lag behind normal demand moving ``demand_slope_per_h`` (a
    # share of the level per hour; lag ~ slope/a): a = (4 (slope*w)^2 lam)^(1/3),
    # so a busy series follows the daily curve within a minute or two and a quiet one
    # averages over many windows.  ``level_halflife_s`` is the slowest it may be (and
    # the memory of the dispersion estimate); ``level_fastest_s`` the fastest.
    demand_slope_per_h: float = 0.3
    level_halflife_s: float = 1200.0
    level_fastest_s: float = 60.0
    trend_halflife_s: float = 3600.0
    damping: float = 0.98  # per window: the trend fades when not renewed
    clip_sigma: float = 4.0  # what one window may teach the level, in sigmas
    dispersion_prior: float = 20.0
    max_dispersion: float = 50.0
    h: float = 0.0
    resolve_nats: float = RESOLVE_NATS
    suspect: float = 0.5
    min_windows: int = 60
    # Fleet demand: the median of calls / forecast over the other providers' series
    # expecting at least this many calls, once there are this many (below: no fleet,
    # factor 1).
    demand_min_calls: float = 10.0
    demand_min_series: int = 3
    # Alternatives at or below this ratio mean "traffic gone": judged without demand.
    gone_rho: float = 0.1

    def bank(self) -> VolumeBank:
        return VolumeBank(self)


class VolumeBank(SeqBank):
    """Poisson CUSUMs of a drop of the call count against a damped-trend forecast.

    >>> bank = VolumeBank(VolumeParams(min_windows=10))
    >>> slots = np.array([0])
    >>> for _ in range(30):
    ...     _ = bank.score_learn_many(slots, {"volume": np.array([20.0])})
    >>> [round(float(bank.score_learn_many(slots, {"volume": np.array([v])})[0]), 2)
    ...  for v in (14.0, 0.0)]           # 2 calls/s: one empty window is conclusive
    [0.0, 1.0]
    """

    _state = ("level", "trend", "dev", "var", "s", "run", "alarm", "n")
    level: np.ndarray
    trend: np.ndarray
    dev: np.ndarray
    var: np.ndarray
    s: np.ndarray

    def _keys(self) -> tuple[str, ...]:
        return (self.params.volume_key, "window_s", "demand_group")

    def _tests(self) -> int:
        return len(self.params.ratios)

    def expected_many(self, slots: np.ndarray) -> np.ndarray:
        """Calls expected in the next window per slot."""
        p = self.params
        return np.maximum(self.level[slots] + p.damping * self.trend[slots], 0.0)

    def _level_weight(self, x: Columns, lam0: np.ndarray, m: int) -> np.ndarray:
        """The level's smoothing weight per slot (see ``VolumeParams``)."""
        p = self.params
        w = column(x, "window_s", 10.0, m)
        slope = p.demand_slope_per_h * w / 3600.0
        best = np.cbrt(4.0 * slope**2 * lam0)
        slowest = 1.0 - decay_many(x, p.level_halflife_s, m)
        fastest = 1.0 - decay_many(x, p.level_fastest_s, m)
        return np.clip(best, slowest, fastest)

    def demand(
        self, k: np.ndarray, lam0: np.ndarray, ready: np.ndarray, groups: np.ndarray | None = None
    ) -> np.ndarray:
        """The fleet's demand factor per slot this window, at most 1: the median of calls
        over forecast of the *other* groups' series judged together.

        Demand scales every series' rate at once (``lambda_i = g * lambda0_i``: a lull,
        the night); a failure takes a provider's share away.  The median is a robust
        estimate of ``g``, and it leaves out the slot's own group (``groups``: its
        provider; None: each slot alone), so a provider's drop does not explain itself:
        with its own series in, a provider losing 60 % pulled the median towards the
        40 % of each series it has, and a deployment with one provider saw every drop of
        it as demand.  A slot with fewer than ``demand_min_series`` other series expecting
        ``demand_min_calls`` has no fleet: factor 1 (a single series, one provider).

        >>> bank = VolumeBank(VolumeParams())
        >>> k, lam0, ready = np.array([40.0, 40, 40, 40]), np.full(4, 100.0), np.ones(4, bool)
        >>> bank.demand(k, lam0, ready).tolist()                    # a fleet at 40 %
        [0.4, 0.4, 0.4, 0.4]
        >>> bank.demand(k, lam0, ready, np.zeros(4)).tolist()      # one provider: no fleet
        [1.0, 1.0, 1.0, 1.0]
        """
        p, m = self.params, k.size
        use = ready & (lam0 >= p.demand_min_calls)
        g = np.ones(m)
        if int(np.count_nonzero(use)) < p.demand_min_series:
            return g
        groups = np.arange(m) if groups is None else groups
        ratio = k / np.where(use, lam0, 1.0)
        for group in np.unique(groups).tolist():
            others = use & (groups != group)
            if int(np.count_nonzero(others)) >= p.demand_min_series:
                g[groups == group] = min(1.0, float(np.median(ratio[others])))
        return g

    def score_learn_many(self, slots: np.ndarray, x: Columns) -> np.ndarray:
        slots = self._claim(slots)
        p, m = self.params, slots.size
        k = np.maximum(0.0, column(x, p.volume_key, 0.0, m))
        n = self.n[slots]
        level, trend = self.level[slots], self.trend[slots]
        lam0 = self.expected_many(slots)
        ready = n >= p.min_windows
        phi = _phi(self.dev[slots], self.var[slots], p.dispersion_prior, p.max_dispersion)
        rho = np.asarray(p.ratios)[:, None]
        # Demand explains a dip of every depth while the fleet itself is not gone (a lull
        # at half the traffic makes a series' empty window likely); once the fleet's own
        # demand is at or below ``gone_rho`` it explains only partial dips, so a fleet
        # falling silent pages.
        groups = column(x, "demand_group", 0.0, m) if "demand_group" in x else None
        g_all = self.demand(k, lam0, ready, groups)
        g = np.where(rho > p.gone_rho, g_all, np.where(g_all > p.gone_rho, g_all, 1.0))
        lam = g * lam0
        llr = k * np.log(rho) + lam * (1.0 - rho)
        s = self._cusum(slots, llr / phi, ready)
        score, calm = self._score(slots, s, ready)
        # Holt's damped trend, learned from calm windows, each innovation clipped.  Until
        # the smoothing weight has that much history the level is the running mean (the
        # EWMA started at one window's count overshoots for hundreds of windows), and
        # the trend is learned only once the level is warm.
        a = np.maximum(self._level_weight(x, lam0, m), 1.0 / (n + 1.0))
        b = np.where(ready, 1.0 - decay_many(x, p.trend_halflife_s, m), 0.0)
        width = p.clip_sigma * np.sqrt(phi * lam0 + 1.0)
        innov = np.clip(k - lam0, -width, width)
        new_level = np.where(n == 0, k, lam0 + a * innov)
        new_trend = np.where(n == 0, 0.0, p.damping * trend + b * (new_level - level - trend))
        self.level[slots] = np.where(calm, new_level, level)
        self.trend[slots] = np.where(calm, new_trend, trend)
        d = decay_many(x, p.level_halflife_s, m)
        fit = calm & ready
        dev, var = self.dev[slots], self.var[slots]
        self.dev[slots] = np.where(fit, d * dev + np.minimum(innov**2, 16 * (phi * lam0 + 1)), dev)
        self.var[slots] = np.where(fit, d * var + lam0, var)
        self.n[slots] = n + 1
        return score


@dataclass(frozen=True, slots=True)
class PooledParams(_Thresholds):
    """Tuning of a :class:`PooledBank`: the alternatives of the bank whose evidence it
    pools (one CUSUM row each) and the budget.

    >>> PooledParams().threshold == LatencyParams().threshold
    True
    """

    ratios: tuple[float, ...] = LatencyParams().ratios  # as the bank it pools
    h: float = 0.0
    resolve_nats: float = POOLED_RESOLVE_NATS
    suspect: float = 0.5
    min_windows: int = 0

    def bank(self) -> PooledBank:
        return PooledBank(self)


class PooledBank(SeqBank):
    """CUSUMs of evidence pooled from other series: a parent's LLR per alternative in a
    window is the sum of its children's (their calls are independent, so the sum is the
    LLR of the parent's calls all changing at once).  A merchant's latency across its
    operations is judged so, each call against its own operation's normal, without a
    baseline of the mix that moves with the mix.  Columns: ``evidence_<row>`` and
    ``expected`` (the value the children's baselines expect of this window's calls).

    >>> det = SequentialDetector(PooledParams())
    >>> x = {"evidence_0": 1.5, "evidence_1": 6.0, "expected": 120.0}
    >>> [round(det.score_learn_one(x), 2) for _ in range(3)]
    [0.23, 0.46, 1.0]
    >>> det.score_learn_one({"evidence_0": 0.0, "evidence_1": 0.0, "expected": 0.0})
    1.0
    """

    _state = ("expected", "s", "run", "alarm", "n")
    expected: np.ndarray

    def _keys(self) -> tuple[str, ...]:
        return (*(f"evidence_{r}" for r in range(self._tests())), "expected", "window_s")

    def _tests(self) -> int:
        return len(self.params.ratios)

    def _ready(self, slots: np.ndarray) -> np.ndarray:
        return self.n[slots] >= max(1, self.params.min_windows)  # judged once: has a normal

    def expected_many(self, slots: np.ndarray) -> np.ndarray:
        return self.expected[slots]

    def score_learn_many(self, slots: np.ndarray, x: Columns) -> np.ndarray:
        slots = self._claim(slots)
        m = slots.size
        llr = np.stack([column(x, f"evidence_{r}", 0.0, m) for r in range(self._tests())])
        judged = np.ones(m, bool)  # no evidence (0): neither adds nor resets
        s = self._cusum(slots, llr, judged)
        score, _ = self._score(slots, s, judged)
        self.expected[slots] = column(x, "expected", 0.0, m)
        self.n[slots] += 1
        return score


class CallbackParams:
    """The three callback shares judged together (one rule): missing of due, verify
    failures and nacks of callbacks."""

    def __init__(self, h: float = 0.0, min_windows: int = 30) -> None:
        tests = 3 * len(RateParams().ratios)  # three shares x their alternatives
        hh = _h(h, tests)
        base = RateParams(volume_key="callbacks", h=hh, min_windows=min_windows)
        self.parts: dict[str, RateParams] = {
            # Buyers abandon created orders (no callback ever): a share from a few % to
            # most orders, unknown in advance, so it is learned from the series' own
            # orders (a weak prior, ``prior_calls`` 20) and judged only once 100 orders
            # were due: a share of 30 % is then known to +-15 % (one standard error,
            # sqrt(0.7 / 30)), where 300 s of a quiet provider knew it only as a blend
            # with the prior's 1 % and paged its normal share as an excess.
            "missing": replace(
                base,
                errors_key="missing_callbacks",
                volume_key="due",
                prior_rate=0.01,
                prior_calls=20.0,
                warm_calls=100.0,
                cap=0.8,
            ),
            "verify": replace(base, errors_key="verify_failures", cold_rate=0.02, floor=0.002),
            "nacks": replace(base, errors_key="nacks", prior_rate=0.005),
        }
        self.min_windows = min_windows
        self.threshold = hh

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CallbackParams) and other.parts == self.parts

    def __hash__(self) -> int:
        return hash(tuple(self.parts.values()))

    def bank(self) -> CallbackBank:
        return CallbackBank(self)


@dataclass
class CallbackBank:
    """Three :class:`RateBank` s, the score their largest (``worst`` names it)."""

    params: CallbackParams
    banks: dict[str, RateBank] = field(init=False)

    def __post_init__(self) -> None:
        self.banks = {name: RateBank(p) for name, p in self.params.parts.items()}
        self.keys = tuple(dict.fromkeys(k for b in self.banks.values() for k in b.keys))
        self.last: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return max(len(b) for b in self.banks.values())

    def forget(self, slots: np.ndarray) -> None:
        for b in self.banks.values():
            b.forget(slots)

    def with_evidence(self) -> np.ndarray:
        return np.unique(np.concatenate([b.with_evidence() for b in self.banks.values()]))

    def restart(self, slots: np.ndarray) -> None:
        for b in self.banks.values():
            b.restart(slots)

    def ready(self, slots: np.ndarray) -> np.ndarray:
        return np.logical_or.reduce([b.ready(slots) for b in self.banks.values()])

    def score_learn_many(self, slots: np.ndarray, x: Columns) -> np.ndarray:
        scores = [b.score_learn_many(slots, x) for b in self.banks.values()]
        return np.max(scores, axis=0)

    def components_many(self, slot: int) -> dict[str, float]:
        """Each share's CUSUM score for ``slot`` (what ``worst`` picks from)."""
        out = {}
        for name, b in self.banks.items():
            top = float(b.s[:, slot].max()) if slot < b.capacity else 0.0
            out[name] = float(cusum_many(np.array(top), b.params.threshold, b.params.cap_s))
        return out

    def expected_many(self, slots: np.ndarray) -> np.ndarray:
        return self.banks["missing"].expected_many(slots)

    def detector(self, slot: int) -> SequentialDetector:
        det = SequentialDetector(self.params)
        one = det.bank
        assert isinstance(one, CallbackBank)
        for name, b in self.banks.items():
            one.banks[name] = b.detector(slot).bank
        return det


class SequentialDetector:
    """One series' sequential detector (river's protocol): a bank of one slot.

    >>> det = SequentialDetector(CONFIG_RATE)     # no history: judged at once
    >>> [det.score_learn_one({"volume": 1, "config_errors": 1}) >= 0.5 for _ in range(3)]
    [False, False, True]
    >>> det.ready, round(det.expected({}), 4)      # judging, though still warming up
    (True, 0.0055)
    """

    __slots__ = ("bank", "params")
    _ONE = np.array([0])

    def __init__(self, params: Any) -> None:
        self.params = params
        self.bank: Any = params.bank()

    def __getstate__(self) -> tuple[Any, Any]:
        return (self.params, self.bank)

    def __setstate__(self, state: tuple[Any, Any]) -> None:
        self.params, self.bank = state

    def _x(self, x: Features) -> dict[str, np.ndarray | float]:
        return {k: np.array([feature(x, k)]) for k in self.bank.keys if k != "window_s"} | {
            "window_s": feature(x, "window_s", 10.0)
        }

    @property
    def ready(self) -> bool:
        return bool(self.bank.ready(self._ONE)[0])

    def score_learn_one(self, x: Features) -> float:
        return float(self.bank.score_learn_many(self._ONE, self._x(x))[0])

    def score_one(self, x: Features) -> float:
        return float(copy.deepcopy(self.bank).score_learn_many(self._ONE, self._x(x))[0])

    def learn_one(self, x: Features) -> SequentialDetector:
        self.score_learn_one(x)
        return self

    def expected(self, x: Features | None = None) -> float:
        if isinstance(self.bank, SeqBank):
            self.bank._reserve(self._ONE)
        return float(self.bank.expected_many(self._ONE)[0])

    def worst(self, x: Features) -> str:
        """The callback share scoring highest (``missing`` for the other families)."""
        if isinstance(self.bank, CallbackBank):
            comp = self.bank.components_many(0)
            return max(comp, key=comp.__getitem__)
        return "missing"


class SlotView:
    """One slot of a sequential bank as a report reads it — its expected value and the
    worst callback share — read in place: the numbers :meth:`SeqBank.detector`'s copy
    gives, without building a one-slot bank per reported series and window.  Valid until
    the bank learns again (the judge reads it at once); never learns.
    """

    __slots__ = ("bank", "slot")

    def __init__(self, bank: SeqBank | CallbackBank, slot: int) -> None:
        self.bank = bank
        self.slot = slot

    def expected(self, x: Features | None = None) -> float:
        return float(self.bank.expected_many(np.array([self.slot]))[0])

    def worst(self, x: Features) -> str:
        if isinstance(self.bank, CallbackBank):
            comp = self.bank.components_many(self.slot)
            return max(comp, key=comp.__getitem__)
        return "missing"


def slot_view(bank: Any, slot: int) -> Any:
    """A :class:`SlotView` of ``slot`` where the bank holds it (a sequential bank that has
    grown to it), else the bank's detector copy."""
    inner = bank.banks["missing"] if isinstance(bank, CallbackBank) else bank
    if isinstance(inner, SeqBank) and 0 <= slot < inner.capacity:
        return SlotView(bank, slot)
    return bank.detector(slot)


def _twin(det: SequentialDetector) -> Any:
    """The bank of a fresh detector (a warmed-up one keeps the per-series path)."""
    return det.params.bank() if len(det.bank) == 0 else None


register_twin(SequentialDetector, _twin)


def budgeted(params: Any, false_alarms_per_30d: float, window_s: float) -> Any:
    """``params`` with its threshold derived from the budget (``h = ln(k * ARL0)``)."""
    if isinstance(params, CallbackParams):
        return CallbackParams(
            cusum_threshold(false_alarms_per_30d, window_s, 6), params.min_windows
        )
    return replace(params, h=cusum_threshold(false_alarms_per_30d, window_s, len(params.ratios)))


__all__ = [
    "CONFIG_RATE",
    "DECLINE_RATE",
    "SYSTEM_RATE",
    "TAIL_RATE",
    "TIMEOUT_RATE",
    "CallbackBank",
    "CallbackParams",
    "LatencyBank",
    "LatencyParams",
    "PooledBank",
    "PooledParams",
    "RateBank",
    "RateParams",
    "SequentialDetector",
    "VolumeBank",
    "VolumeParams",
    "budgeted",
    "kl_bernoulli",
]
