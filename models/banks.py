"""Vectorised twins of the per-series detectors: one object per rule, state in numpy.

A bank holds the state of one detector kind for MANY series in arrays indexed by a
*slot* (a small non-negative int, e.g. the judge's series id; dense, reused after
``forget``).  ``score_learn_many(slots, x)`` does for every slot at once what
``score_learn_one`` does for one detector, with the same maths in the same order: the
scalar classes in :mod:`models.detectors` stay the reference (and the river-protocol
form).  Results agree to the last bit except where numpy's vector ``log`` rounds
differently from :mod:`math` by an ulp.  The rare, expensive branch (the exact binomial
tail) loops over the few slots that take it, calling the very same function.

``x`` maps feature names to arrays aligned with ``slots`` or to scalars that hold for
every slot (``window_s``); missing keys and NaN/inf values fall back to the defaults
the scalar detector uses.  ``slots`` must not repeat within one call.

Build a bank from a detector factory with :func:`bank_for`: it returns None for
anything a bank cannot reproduce (wrappers, callbacks, river models), which then keep
the per-series path.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from models.detectors import ConfigErrorDetector, ErrorRateDetector, LatencyDetector
from models.error_rate import ErrorRateThreshold
from models.tails import binom_log10_sf

__all__ = ["ErrorRateBank", "Features", "LatencyBank", "ThresholdBank", "bank_for"]

#: Window features of many series: arrays aligned with ``slots``, or scalars for all.
Features = Mapping[str, "np.ndarray | float"]

_MIN_CAPACITY = 16


def _column(x: Features, key: str, default: float, m: int) -> np.ndarray:
    """``models.detectors._get`` for ``m`` slots at once (never a view of ``x``)."""
    v = x.get(key)
    if v is None:
        return np.full(m, default)
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 0:
        f = float(a)
        return np.full(m, f if math.isfinite(f) else default)
    if a.shape != (m,):
        raise ValueError(f"feature {key!r} has shape {a.shape}; the slots need ({m},)")
    bad = ~np.isfinite(a)
    return np.where(bad, default, a) if bad.any() else a.copy()


def _pow(base: float | np.ndarray, exponent: float | np.ndarray) -> float | np.ndarray:
    """``base ** exponent`` with Python's (libm's) rounding, which numpy's vector pow
    does not promise; decay factors take only a few distinct values per call."""
    if np.ndim(base) == 0 and np.ndim(exponent) == 0:
        return float(base) ** float(exponent)
    b, e = np.broadcast_arrays(np.asarray(base, np.float64), np.asarray(exponent, np.float64))
    pairs, inv = np.unique(np.stack([b, e], axis=1), axis=0, return_inverse=True)
    vals = np.array([pb**pe for pb, pe in pairs.tolist()])
    return vals[inv.reshape(-1)]


def _decay_many(x: Features, halflife_s: float, m: int) -> float | np.ndarray:
    """``models.detectors._decay`` per slot (a float when ``window_s`` is one scalar)."""
    ws = x.get("window_s")
    if ws is None or np.ndim(ws) == 0:
        w = 10.0 if ws is None else float(ws)
        return 0.5 ** ((w if math.isfinite(w) else 10.0) / halflife_s)
    return _pow(0.5, _column(x, "window_s", 10.0, m) / halflife_s)


def _cusum_many(s: np.ndarray, h: float, cap: float) -> np.ndarray:
    """``models.detectors._cusum_score`` elementwise."""
    return np.where(s <= h, 0.5 * s / h, np.minimum(1.0, 0.5 + 0.5 * (s - h) / (cap - h)))


def _put(arr: np.ndarray, slots: np.ndarray, values: np.ndarray) -> None:
    """``arr[..., slots] = values``: row by row, which numpy does several times faster."""
    if arr.ndim == 1:
        arr[slots] = values
    else:
        for row, vals in zip(arr, values, strict=True):
            row[slots] = vals


def _as_slots(slots: np.ndarray) -> np.ndarray:
    out = np.asarray(slots, dtype=np.intp)
    if out.ndim != 1:
        raise ValueError(f"slots must be a 1-D array of ints, got shape {out.shape}")
    if out.size and int(out.min()) < 0:
        raise ValueError("slots must be non-negative")
    return out


class _StateBank:
    """Growth, forgetting and pickling of per-slot state arrays named in ``_state``.

    The slot is the LAST axis, so a quantity of many slots is one contiguous row.
    """

    _state: ClassVar[tuple[str, ...]]
    prototype: Any
    n: np.ndarray

    def _row_shape(self, name: str) -> tuple[int, ...]:
        return ()

    def _init_state(self) -> None:
        for name in self._state:
            dtype = np.int64 if name == "n" else np.float64
            setattr(self, name, np.zeros((*self._row_shape(name), 0), dtype))

    @property
    def capacity(self) -> int:
        return int(self.n.shape[0])

    def _reserve(self, slots: np.ndarray) -> None:
        if not slots.size:
            return
        need = int(slots.max()) + 1
        if need <= self.capacity:
            return
        # Amortised doubling: a new series id costs O(1) on average.
        cap = max(need, 2 * self.capacity, _MIN_CAPACITY)
        for name in self._state:
            old = getattr(self, name)
            new = np.zeros((*old.shape[:-1], cap), old.dtype)
            new[..., : old.shape[-1]] = old
            setattr(self, name, new)

    def forget(self, slots: np.ndarray) -> None:
        """Back to fresh state (slots never seen are fine)."""
        s = _as_slots(slots)
        s = s[s < self.capacity]
        for name in self._state:
            getattr(self, name)[..., s] = 0

    def _live(self) -> np.ndarray:
        """Per slot: holds state.  Every learned window counts in ``n``, and nothing
        else moves before one is (a latency CUSUM needs a baseline to rise from)."""
        return self.n != 0

    def __len__(self) -> int:
        """Slots holding state (not fresh)."""
        return int(np.count_nonzero(self._live()))

    def ready(self, slots: np.ndarray) -> np.ndarray:
        """``detector.ready`` per slot."""
        s = _as_slots(slots)
        out = np.zeros(s.size, bool)
        inside = s < self.capacity
        out[inside] = self.n[s[inside]] >= self.prototype.params.min_windows
        return out

    def __getstate__(self) -> dict[str, Any]:
        # Snapshots stop at the last slot holding state: free ids cost nothing.
        live = np.flatnonzero(self._live())
        end = int(live[-1]) + 1 if live.size else 0
        state: dict[str, Any] = {"prototype": self.prototype}
        state.update({name: getattr(self, name)[..., :end].copy() for name in self._state})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.prototype = state["prototype"]
        self._setup()
        for name in self._state:
            setattr(self, name, state[name])

    def _setup(self) -> None:
        raise NotImplementedError


class ErrorRateBank(_StateBank):
    """:class:`~models.detectors.ErrorRateDetector` (or ``ConfigErrorDetector``) state
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

    def score_learn_many(self, slots: np.ndarray, x: Features) -> np.ndarray:
        """``score_learn_one`` of every slot's detector on its window (0.0 while not ready)."""
        slots = _as_slots(slots)
        self._reserve(slots)
        m = slots.size
        p = self.params
        err, vol, dev, var = self.err[slots], self.vol[slots], self.dev[slots], self.var[slots]
        s, n = self.s[slots], self.n[slots]
        ready = n >= p.min_windows

        # _counts
        e = np.maximum(0.0, _column(x, p.errors_key, 0.0, m))
        k = np.maximum(e, _column(x, p.volume_key, 0.0, m))

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
        raw = np.maximum(window, _cusum_many(s_new, p.cusum_h, p.cusum_cap))
        scores = np.where(ready, raw, 0.0)

        # _learn
        d = _decay_many(x, p.halflife_s, m)
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
                dw = _pow(d, w)
                new_err = np.where(guarded, dw * err + w * e, new_err)
                new_vol = np.where(guarded, dw * vol + w * k, new_vol)
            else:
                new_err = np.where(guarded, err, new_err)
                new_vol = np.where(guarded, vol, new_vol)
        self.err[slots], self.vol[slots] = new_err, new_vol
        self.n[slots] = n + 1
        return scores


class LatencyBank(_StateBank):
    """:class:`~models.detectors.LatencyDetector` state for many series, judged in one
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

    def score_learn_many(self, slots: np.ndarray, x: Features) -> np.ndarray:
        """``score_learn_one`` of every slot's detector on its window (0.0 while not ready)."""
        slots = _as_slots(slots)
        self._reserve(slots)
        m = slots.size
        p = self.params
        # (quantile, slot) arrays
        mu, var, s = (a.take(slots, axis=1) for a in (self.mu, self.var, self.s))
        n = self.n[slots]
        ready = n >= p.min_windows
        seen = n > 0

        # _evaluate
        vol = _column(x, p.volume_key, 0.0, m)
        if self._from_spread:
            spread = np.maximum((mu[1] - mu[0]) / 1.645, p.sigma_floor)
            sigma_w = np.where(seen, spread, max(p.sigma_floor, 0.5))
        else:
            sigma_w = np.full(m, max(p.sigma_floor, 0.5))
        y = np.stack([_column(x, key, math.nan, m) for key in p.keys])
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
        raw = _cusum_many(s_new, p.h, p.cap).max(axis=0)
        scores = np.where(ready, raw, 0.0)

        # _learn
        _put(self.s, slots, np.where(ready, s_new, s))
        weight = np.where(ready & (raw >= p.suspect), p.guard_weight, 1.0)
        learn = (weight > 0.0) & (vol >= p.min_volume) & usable.all(axis=0)
        if learn.any():
            d = _decay_many(x, p.halflife_s, m)
            a = (1.0 - d) * np.minimum(1.0, vol / p.full_weight_volume) * weight
            a = np.where(ready, a, np.maximum(a, 1.0 / (n + 1)))  # cold start: plain mean
            _put(self.mu, slots, np.where(learn, mu + a * delta, mu))
            _put(self.var, slots, np.where(learn, (1.0 - a) * (var + a * delta * delta), var))
            self.n[slots] = n + learn
        return scores


class ThresholdBank:
    """The stateless :class:`~models.error_rate.ErrorRateThreshold`, vectorised.

    >>> bank = ThresholdBank(ErrorRateThreshold(0.05, 20, errors_key="system_errors"))
    >>> x = {"volume": np.array([400.0, 400.0, 3.0]), "system_errors": np.array([2.0, 120.0, 3.0])}
    >>> bank.score_many(x).round(3).tolist()       # normal, outage, too small to judge
    [0.0, 1.0, 0.0]
    >>> bank.detector(0) is bank.threshold, len(bank)
    (True, 0)
    """

    def __init__(self, prototype: ErrorRateThreshold) -> None:
        self.threshold = prototype
        self.prototype = prototype
        #: The features this bank reads.
        self.keys = ("volume", prototype.errors_key)

    def __len__(self) -> int:
        return 0

    def detector(self, slot: int) -> ErrorRateThreshold:
        """The shared threshold (it holds no per-series state)."""
        return self.threshold

    def forget(self, slots: np.ndarray) -> None:
        """Nothing to forget."""

    def ready(self, slots: np.ndarray) -> np.ndarray:
        return np.ones(np.asarray(slots).size, bool)

    def score_learn_many(self, slots: np.ndarray, x: Features) -> np.ndarray:
        """``score_many`` (a static threshold learns nothing), shaped like ``slots``."""
        m = np.asarray(slots).size
        return np.broadcast_to(self.score_many(x), (m,)).astype(np.float64)

    def score_many(self, x: Features) -> np.ndarray:
        """``ErrorRateThreshold.score_one`` elementwise (a 0-d array for scalar features)."""
        t = self.threshold
        # score_one reads the raw values (float(x.get(...)), no _get), and so do we.
        volume, errors = np.broadcast_arrays(
            np.asarray(_raw(x, "volume"), np.float64), np.asarray(_raw(x, t.errors_key), np.float64)
        )
        z = _wilson_z(t.confidence)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            p = errors / volume
            denom = 1 + z * z / volume
            centre = p + z * z / (2 * volume)
            margin = z * np.sqrt(p * (1 - p) / volume + z * z / (4 * volume * volume))
            lb = (centre - margin) / denom
        lb = np.where(lb > 0.0, lb, 0.0)  # max(0.0, lb): NaN gives 0.0 as in Python
        lb = np.where(volume <= 0, 0.0, lb)
        half = t.threshold * 0.5
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            low = (lb - half) / t.threshold
            high = np.minimum(1.0, 0.5 + 0.5 * (lb - t.threshold) / t.threshold)
        out = np.where(lb < t.threshold, low, high)
        out = np.where(lb <= half, 0.0, out)
        return np.where(volume < t.min_volume, 0.0, out)


def _raw(x: Features, key: str) -> np.ndarray | float:
    v = x.get(key, 0.0)
    return 0.0 if v is None else v


_Z: dict[float, float] = {}


def _wilson_z(confidence: float) -> float:
    z = _Z.get(confidence)
    if z is None:
        from statistics import NormalDist

        z = _Z[confidence] = NormalDist().inv_cdf(0.5 + confidence / 2)
    return z


Bank = ErrorRateBank | LatencyBank | ThresholdBank


def bank_for(make: Callable[[], Any]) -> Bank | None:
    """The bank twin of the detectors ``make()`` builds, or None to keep one per series.

    Calls ``make()`` once.  Only the exact classes a bank reproduces qualify, and only
    when the object comes fresh (a factory handing out warmed-up detectors keeps the
    per-series path, so every new series still starts from that state).

    >>> from functools import partial
    >>> from models.detectors import VolumeGate
    >>> type(bank_for(partial(ConfigErrorDetector, min_windows=30))).__name__
    'ErrorRateBank'
    >>> bank_for(lambda: VolumeGate(ErrorRateDetector(), 10)) is None
    True
    """
    det = make()
    kind = type(det)
    if kind is ErrorRateDetector or kind is ConfigErrorDetector:
        fresh = det.n == 0 and not (det.err or det.vol or det.dev or det.var or det.s)
        return ErrorRateBank(det) if fresh else None
    if kind is LatencyDetector:
        fresh = det.n == 0 and not any(det.mu) and not any(det.var) and not any(det.s)
        return LatencyBank(det) if fresh else None
    if kind is ErrorRateThreshold:
        return ThresholdBank(det)
    return None
