"""What every detector is: the protocol, the window features, and helpers shared by the families.

The families live one per module — :mod:`models.error_rate`, :mod:`models.threshold`,
:mod:`models.latency`, :mod:`models.volume`, :mod:`models.callbacks`,
:mod:`models.multivariate`, :mod:`models.metric` — with :mod:`models.combinators` to
combine them and, beside a detector, its vectorised twin (see :mod:`models.bank`).

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
from collections.abc import Iterable, Mapping
from dataclasses import replace
from functools import lru_cache
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

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
    """river's anomaly-detector protocol: all the judge needs of a detector.

    Every detector here has it, and so has any river anomaly model.  What some
    detectors offer beyond it is a protocol of its own (:class:`HasBaseline`,
    :class:`HasColdStart`, :class:`ScoresAndLearns`, :class:`NamesWorst`).

    >>> from river.anomaly import HalfSpaceTrees
    >>> from models.threshold import StaticSLO
    >>> from models.volume import VolumeDetector
    >>> detectors = (VolumeDetector(), StaticSLO("x", 1, 2), HalfSpaceTrees())
    >>> [isinstance(d, Detector) for d in detectors]
    [True, True, True]
    >>> isinstance(HalfSpaceTrees(), HasBaseline), isinstance(VolumeDetector(), HasBaseline)
    (False, True)
    """

    def learn_one(self, x: Features) -> Any: ...  # self here; None in river

    def score_one(self, x: Features) -> float: ...


@runtime_checkable
class HasBaseline(Protocol):
    """A detector with a baseline to show a person: the error rate, p95 or volume it
    expects of this window.  river models have none (see :func:`expected_of`)."""

    def expected(self, x: Features) -> float: ...


@runtime_checkable
class HasColdStart(Protocol):
    """A detector that must learn before it judges: ``ready`` is False (and scores
    0.0) until then.  river models have no such flag (see :func:`is_ready`)."""

    @property
    def ready(self) -> bool: ...


@runtime_checkable
class ScoresAndLearns(Protocol):
    """A detector that scores and learns a window with one evaluation (see
    :func:`score_learn`)."""

    def score_learn_one(self, x: Features) -> float: ...


@runtime_checkable
class NamesWorst(Protocol):
    """A detector of several signals that names the one scoring highest (for summaries)."""

    def worst(self, x: Features) -> str: ...


# The probes below use getattr, not isinstance: a Protocol isinstance check costs
# microseconds, and the judge asks once per series and window.


def is_ready(detector: Detector) -> bool:
    """``detector.ready`` (:class:`HasColdStart`), True for a model without the flag.

    >>> from river.anomaly import HalfSpaceTrees
    >>> from models.error_rate import ErrorRateDetector
    >>> is_ready(ErrorRateDetector()), is_ready(HalfSpaceTrees())
    (False, True)
    """
    return bool(getattr(detector, "ready", True))


def expected_of(detector: Detector, x: Features) -> float:
    """``detector.expected(x)`` (:class:`HasBaseline`), NaN for a model without one.

    >>> from river.anomaly import HalfSpaceTrees
    >>> from models.threshold import StaticSLO
    >>> expected_of(StaticSLO("x", 1, 2), {}), expected_of(HalfSpaceTrees(), {})
    (1.0, nan)
    """
    expected = getattr(detector, "expected", None)
    return math.nan if expected is None else float(expected(x))


def feature(x: Features, key: str, default: float = 0.0) -> float:
    v = x.get(key, default)
    if v is None:
        return default
    v = float(v)
    return v if math.isfinite(v) else default


def decay(x: Features, halflife_s: float) -> float:
    """Per-window forgetting factor for an exponential weight with this half-life."""
    return 0.5 ** (feature(x, "window_s", 10.0) / halflife_s)


P = TypeVar("P")


@lru_cache(maxsize=256)
def _with_cached(base: Any, items: tuple[tuple[str, Any], ...]) -> Any:
    return replace(base, **dict(items))


def with_overrides(base: P, overrides: dict[str, Any]) -> P:
    """``base`` with ``overrides``, the same object for the same overrides, so that
    ``partial(ErrorRateDetector, min_windows=10)`` detectors share one parameter object
    in memory and in checkpoints."""
    if not overrides:
        return base
    try:
        return cast(P, _with_cached(base, tuple(sorted(overrides.items()))))
    except TypeError:  # an unhashable override value
        return replace(base, **overrides)  # type: ignore[type-var]


def cusum_score(s: float, h: float, cap: float) -> float:
    """0.5 at the CUSUM threshold ``h``, 1.0 at its cap, linear below."""
    if s <= h:
        return 0.5 * s / h
    return min(1.0, 0.5 + 0.5 * (s - h) / (cap - h))


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


def score_learn(detector: Detector, x: Features) -> float:
    """Score a window, then learn it: what the judge does once per window and series.

    Uses the detector's ``score_learn_one`` (:class:`ScoresAndLearns`: one evaluation
    instead of two) when it has one, else river's ``score_one`` then ``learn_one``.

    >>> from models.error_rate import ErrorRateDetector
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


D = TypeVar("D", bound=Detector)


def warm_start(detector: D, xs: Iterable[Features]) -> D:
    """Teach ``detector`` from replayed history windows (oldest first); returns it.

    Learning stays guarded, so incidents in the history do not become the baseline.

    >>> from models.error_rate import ErrorRateDetector
    >>> det = warm_start(ErrorRateDetector(), [{"volume": 100, "system_errors": 1}] * 40)
    >>> det.ready, round(det.expected({}), 4)
    (True, 0.0096)
    """
    learn = detector.learn_one
    for x in xs:
        learn(x)
    return detector
