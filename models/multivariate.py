"""Multivariate family: any river anomaly model over a window's normalised features.

Detects windows whose combination of rates, volume and latency is unusual even when
no single signal crosses its own test, using river's HalfSpaceTrees by default.
Heavier than the other families: meant for coarse levels, not as a primary pager.
"""

from __future__ import annotations

import math
from typing import Any, cast

from models.base import Detector, Features, feature


def window_vector(x: Features) -> dict[str, float]:
    """Normalised features of a window for a multivariate model: rates, logs.

    >>> v = window_vector({"volume": 100, "system_errors": 2, "latency_p95": 199})
    >>> v["system_error_rate"], round(v["log_volume"], 2), round(v["log_p95"], 2)
    (0.02, 4.62, 5.3)
    """
    vol = feature(x, "volume")
    out = {"log_volume": math.log1p(vol)}
    for key in ("system_errors", "config_errors", "business_declines", "timeouts"):
        out[key.removesuffix("s") + "_rate"] = feature(x, key) / vol if vol > 0 else 0.0
    for key in ("latency_p50", "latency_p95", "latency_p99"):
        out["log_" + key.removeprefix("latency_")] = math.log1p(max(0.0, feature(x, key)))
    created = feature(x, "created")
    if "created" in x:
        out["missing_rate"] = feature(x, "missing_callbacks") / created if created > 0 else 0.0
    return out


def _default_multivariate_model(seed: int) -> Detector:
    from river import anomaly, compose, preprocessing

    model = compose.Pipeline(
        preprocessing.MinMaxScaler(),
        anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=seed),
    )
    # river annotates x as a dict; it only reads it as a mapping, as the protocol says.
    return cast(Detector, model)


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
        model: Detector | None = None,
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
