"""Callback family: the health of asynchronous payment callbacks of one series.

Detects callbacks that go missing, fail signature verification (a certificate
rotation), are refused (nacks) or acknowledged late: four learned rates, each an
:class:`~models.error_rate.ErrorRateDetector`, of which the worst speaks.
"""

from __future__ import annotations

from dataclasses import replace

from models.base import Features
from models.error_rate import ErrorRateDetector, ErrorRateParams

#: What the callback rates share: per callback received, a 2 % rise can page at all.
_CALLBACK_RATE = ErrorRateParams(volume_key="callbacks", floor=0.002, min_increase=0.02)

#: Rates a :class:`CallbackDetector` watches: name -> parameters (errors over volume key).
CALLBACK_DEFAULTS: dict[str, ErrorRateParams] = {
    # Orders whose callback never came, out of orders created.
    "missing": replace(_CALLBACK_RATE, errors_key="missing_callbacks", volume_key="created"),
    # Signature verification failures: a cert rotation makes a sudden share fail.
    "verify": replace(
        _CALLBACK_RATE,
        errors_key="verify_failures",
        prior_rate=0.0,
        floor=0.001,
        cap=0.05,
        cusum_ratio=5.0,
    ),
    "nacks": replace(_CALLBACK_RATE, errors_key="nacks"),
    # Late acks: a higher normal rate (0.5 %), and only a 5 % rise can page.
    "late_acks": replace(
        _CALLBACK_RATE,
        errors_key="late_acks",
        prior_rate=0.005,
        floor=0.005,
        cap=0.3,
        min_increase=0.05,
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
