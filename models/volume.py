"""Volume family: a sudden traffic drop of one series against a seasonal expectation.

Detects calls that stop arriving (a provider or merchant integration going dark),
which no error-rate test can see: there are no failed calls, only missing ones.
Surges (promotions) are never anomalous.  No vectorised twin: its per-slot seasonal
profile keeps it on the per-series path.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Any

from models.base import Features, cusum_score, feature, with_overrides


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
        self.params = with_overrides(base, overrides)
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
        window_s = feature(x, "window_s", 10.0)
        n_slots = len(self.prof) // 2
        slot_s = 86400.0 / p.slots_per_day
        t = feature(x, "window_start_ms") / 1000.0 + window_s / 2 + p.utc_offset_s
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
        v = max(0.0, feature(x, p.volume_key))
        lam = self.expected(x)
        if lam <= 0.0:
            return 0.0, 0.0, 0.0, self.s, self.obs, self.want
        llr = v * math.log(p.cusum_ratio) + (1.0 - p.cusum_ratio) * lam
        s = min(p.cusum_cap, max(0.0, self.s + llr))
        obs = p.smooth * self.obs + v
        want = p.smooth * self.want + lam
        rel = min(1.0, max(0.0, 1.0 - (obs / want) * 0.5 / p.drop_ratio))
        cus = cusum_score(s, p.cusum_h, p.cusum_cap)
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
        v = max(0.0, feature(x, p.volume_key))
        window_s = feature(x, "window_s", 10.0)
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
