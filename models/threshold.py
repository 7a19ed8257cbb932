"""Threshold family: fixed limits that need no history.

Detects a window that breaks a limit a person chose: :class:`ErrorRateThreshold`
(an error rate whose Wilson lower bound reaches a threshold, so small samples need
stronger evidence) and :class:`StaticSLO` (any feature or ratio against warning and
critical levels).  Being ready from the first window, they also guard the cold start
of learned detectors (see :class:`models.combinators.GuardedBy`).
:class:`ThresholdBank` is the vectorised twin of :class:`ErrorRateThreshold`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from models.bank import Columns, register_twin
from models.base import Features, feature


def wilson_lower_bound(errors: float, volume: float, confidence: float = 0.95) -> float:
    """Lower end of the Wilson score interval for an error proportion.

    Small samples need much stronger evidence than big ones:

    >>> round(wilson_lower_bound(1, 1), 3)   # one failure out of one call
    0.207
    >>> round(wilson_lower_bound(100, 1000), 3)
    0.083
    >>> wilson_lower_bound(0, 0)
    0.0
    """
    if volume <= 0:
        return 0.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = errors / volume
    denom = 1 + z * z / volume
    centre = p + z * z / (2 * volume)
    margin = z * math.sqrt(p * (1 - p) / volume + z * z / (4 * volume * volume))
    return max(0.0, (centre - margin) / denom)


@dataclass
class ErrorRateThreshold:
    """Static error-rate threshold with a minimum volume and a confidence bound.

    The window is anomalous when, with ``min_volume`` calls or more, the lower
    confidence bound of its error rate reaches ``threshold``.  The score maps
    that bound to [0, 1] with 0.5 exactly at the threshold and 1.0 at twice it.

    >>> det = ErrorRateThreshold(threshold=0.05, min_volume=20)
    >>> det.score_one({"volume": 400, "errors": 2})      # 0.5 %: normal
    0.0
    >>> det.score_one({"volume": 400, "errors": 120}) >= 0.5   # 30 %: outage
    True
    >>> det.score_one({"volume": 3, "errors": 3})        # tiny merchant: not judged
    0.0
    """

    threshold: float = 0.05
    min_volume: int = 20
    confidence: float = 0.95
    errors_key: str = "errors"
    ready: bool = True  # a static threshold needs no history

    def learn_one(self, x: Features) -> ErrorRateThreshold:
        # A static threshold learns nothing; kept for protocol compatibility.
        return self

    def rate(self, x: Features) -> float:
        volume = float(x.get("volume", 0.0))
        return float(x.get(self.errors_key, 0.0)) / volume if volume > 0 else 0.0

    def expected(self, x: Features | None = None) -> float:
        return self.threshold

    def score_one(self, x: Features) -> float:
        volume = float(x.get("volume", 0.0))
        if volume < self.min_volume:
            return 0.0
        lb = wilson_lower_bound(float(x.get(self.errors_key, 0.0)), volume, self.confidence)
        if lb <= self.threshold * 0.5:
            return 0.0
        # Linear from 0 at threshold/2 through 0.5 at the threshold to 1 at twice it.
        if lb < self.threshold:
            return (lb - self.threshold * 0.5) / self.threshold
        return min(1.0, 0.5 + 0.5 * (lb - self.threshold) / self.threshold)


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
        if feature(x, self.volume_key) < self.min_volume:
            return None
        v = feature(x, self.feature, math.nan)
        if self.per is not None:
            d = feature(x, self.per)
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


class ThresholdBank:
    """The stateless :class:`ErrorRateThreshold`, vectorised.

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
        self.keys: tuple[str, ...] = ("volume", prototype.errors_key)

    def __len__(self) -> int:
        return 0

    def detector(self, slot: int) -> ErrorRateThreshold:
        """The shared threshold (it holds no per-series state)."""
        return self.threshold

    def forget(self, slots: np.ndarray) -> None:
        """Nothing to forget."""

    def ready(self, slots: np.ndarray) -> np.ndarray:
        return np.ones(np.asarray(slots).size, bool)

    def score_learn_many(self, slots: np.ndarray, x: Columns) -> np.ndarray:
        """``score_many`` (a static threshold learns nothing), shaped like ``slots``."""
        m = np.asarray(slots).size
        return np.broadcast_to(self.score_many(x), (m,)).astype(np.float64)

    def score_many(self, x: Columns) -> np.ndarray:
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


def _raw(x: Columns, key: str) -> np.ndarray | float:
    v = x.get(key, 0.0)
    return 0.0 if v is None else v


_Z: dict[float, float] = {}


def _wilson_z(confidence: float) -> float:
    z = _Z.get(confidence)
    if z is None:
        from statistics import NormalDist

        z = _Z[confidence] = NormalDist().inv_cdf(0.5 + confidence / 2)
    return z


register_twin(ErrorRateThreshold, ThresholdBank)
