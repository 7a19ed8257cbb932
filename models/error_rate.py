"""Error-rate detectors for one series, judged once per closed window.

Detectors speak river's anomaly-detector protocol — ``learn_one(x)`` and
``score_one(x) -> float`` with ``x`` a dict of window features — so a river
model can stand wherever a paywatch detector does.  Scores are in [0, 1]; a
score of 0.5 or more means "anomalous" to the alert lifecycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


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

    def learn_one(self, x: dict[str, float]) -> ErrorRateThreshold:
        # A static threshold learns nothing; kept for protocol compatibility.
        return self

    def rate(self, x: dict[str, float]) -> float:
        volume = float(x.get("volume", 0.0))
        return float(x.get(self.errors_key, 0.0)) / volume if volume > 0 else 0.0

    def expected(self, x: dict[str, float] | None = None) -> float:
        return self.threshold

    def score_one(self, x: dict[str, float]) -> float:
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
