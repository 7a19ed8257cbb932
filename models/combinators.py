"""Combinators: detectors made of detectors, themselves detectors.

:class:`Combined` (any or all of several may page), :class:`VolumeGate` (speak only
with enough calls to judge) and :class:`GuardedBy` (learn only what a guard finds
normal).  They wrap any river-protocol detector, so they have no vectorised twin.
"""

from __future__ import annotations

from typing import Any

from models.base import Detector, Features, expected_of, feature, is_ready, score_learn


class Combined:
    """Several detectors on one series, as one: the max of their scores
    (any may page) or, with ``require_all=True``, the min (all must agree).

    ``expected`` comes from the first detector (NaN if it has no baseline).

    >>> from models.error_rate import ErrorRateDetector
    >>> from models.threshold import StaticSLO
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

    def __init__(self, *detectors: Detector, require_all: bool = False) -> None:
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
        flags = [is_ready(d) for d in self.detectors]
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
        return expected_of(self.detectors[0], x)


class VolumeGate:
    """Let ``detector`` page only on windows with at least ``min_volume`` calls.

    It still learns from every window, so its baseline stays current; it just does
    not speak where a handful of calls cannot tell a shift from noise.

    >>> from models.error_rate import ErrorRateDetector
    >>> gate = VolumeGate(ErrorRateDetector(min_windows=1), min_volume=100)
    >>> _ = gate.learn_one({"volume": 10, "system_errors": 0})
    >>> gate.score_one({"volume": 10, "system_errors": 9})
    0.0
    """

    __slots__ = ("detector", "min_volume", "volume_key")

    def __init__(self, detector: Detector, min_volume: float, volume_key: str = "volume") -> None:
        self.detector = detector
        self.min_volume = min_volume
        self.volume_key = volume_key

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.detector, self.min_volume, self.volume_key)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.detector, self.min_volume, self.volume_key = state

    @property
    def ready(self) -> bool:
        return is_ready(self.detector)

    def _open(self, x: Features) -> bool:
        return feature(x, self.volume_key) >= self.min_volume

    def score_one(self, x: Features) -> float:
        return float(self.detector.score_one(x)) if self._open(x) else 0.0

    def learn_one(self, x: Features) -> VolumeGate:
        self.detector.learn_one(x)
        return self

    def score_learn_one(self, x: Features) -> float:
        score = score_learn(self.detector, x)
        return score if self._open(x) else 0.0

    def expected(self, x: Features) -> float:
        return expected_of(self.detector, x)


class GuardedBy:
    """Learn ``detector`` only from windows ``guard`` finds normal (score < 0.5).

    Guarded learning for cold start: a learned detector learns every window until it
    is ready, so an outage in its first minutes would become its baseline — unless a
    detector that needs no history (a static threshold) vetoes those windows.

    >>> from models.error_rate import ErrorRateDetector
    >>> from models.threshold import ErrorRateThreshold
    >>> det = GuardedBy(ErrorRateDetector(min_windows=1),
    ...                 ErrorRateThreshold(0.05, 20, errors_key="system_errors"))
    >>> _ = det.learn_one({"volume": 1000, "system_errors": 600})   # an outage: not learned
    >>> det.detector.n
    0
    """

    __slots__ = ("detector", "guard")

    def __init__(self, detector: Detector, guard: Detector) -> None:
        self.detector = detector
        self.guard = guard

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.detector, self.guard)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.detector, self.guard = state

    @property
    def ready(self) -> bool:
        return is_ready(self.detector)

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
        return expected_of(self.detector, x)
