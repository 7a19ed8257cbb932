"""Reference detectors for metric series, with the river protocol ``KpiDetector`` uses.

* ``WindowedGaussian``: NAB's windowed Gaussian (``nab/detectors/gaussian``): a Gaussian
  fitted to the last ``window`` values; the score is ``1 - Q(|z|)``, one minus the
  upper-tail probability of the standardised value (NAB computes it on the folded
  value the same way).  NAB refits every 100 points over 6400; here the fit is
  incremental over the last ``window`` points (issue 12's baseline: 200 points,
  alert at ``|z| > 4``, i.e. ``DEFAULT_THRESHOLD``).
* ``HalfSpaceTreesDetector``: ``river.anomaly.HalfSpaceTrees`` on the value scaled
  by river's own ``preprocessing.MinMaxScaler`` (river's documented pipeline).

>>> g = WindowedGaussian(window=50)
>>> for i in range(60):
...     g.learn_one({"value": float(i % 5)})
>>> g.score_one({"value": 2.0}) < 0.6, g.score_one({"value": 40.0}) > GAUSSIAN_THRESHOLD
(True, True)
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
from river import anomaly, compose, preprocessing

GAUSSIAN_THRESHOLD = 1.0 - 0.5 * math.erfc(4.0 / math.sqrt(2.0))  # |z| > 4
HST_THRESHOLD = 0.5  # river's scores are a mass ratio; 0.5 has no probability meaning


def _value(x: dict[str, Any]) -> float | None:
    v = x.get("value")
    if v is None:
        return None
    fv = float(v)
    return fv if math.isfinite(fv) else None


class WindowedGaussian:
    """Gaussian tail of the value against the mean and deviation of the last ``window``."""

    def __init__(self, window: int = 200) -> None:
        self.window = window
        self.values: deque[float] = deque(maxlen=window)

    def score_one(self, x: dict[str, Any]) -> float:
        v = _value(x)
        n = len(self.values)
        if v is None or n < 2:
            return 0.0
        arr = np.fromiter(self.values, dtype=np.float64, count=n)
        mean, std = float(arr.mean()), float(arr.std())  # two-pass: no cancellation
        if std <= 1e-12 * (abs(mean) + 1.0):
            return 0.0 if abs(v - mean) <= 1e-12 * (abs(mean) + 1.0) else 1.0
        z = abs(v - mean) / std
        return 1.0 - 0.5 * math.erfc(z / math.sqrt(2.0))

    def learn_one(self, x: dict[str, Any]) -> None:
        v = _value(x)
        if v is None:
            return
        self.values.append(v)


class HalfSpaceTreesDetector:
    """river's HalfSpaceTrees on min-max scaled values (river's defaults otherwise)."""

    def __init__(self, seed: int = 42, window_size: int = 250) -> None:
        self.model = compose.Pipeline(
            preprocessing.MinMaxScaler(),
            anomaly.HalfSpaceTrees(seed=seed, window_size=window_size),
        )

    def score_one(self, x: dict[str, Any]) -> float:
        v = _value(x)
        return 0.0 if v is None else float(self.model.score_one({"value": v}))

    def learn_one(self, x: dict[str, Any]) -> None:
        v = _value(x)
        if v is not None:
            self.model.learn_one({"value": v})
