"""KpiDetector: the behaviours issue 12 asks of a metric detector that generalises."""

from __future__ import annotations

import math

import numpy as np

from models.kpi import DEFAULT_THRESHOLD, MIN_POINTS, KpiDetector, score_series

DAY = 86400.0
STEP = 300.0  # 5-minute samples: 288 a day


def _run(det: KpiDetector, values: list[float], times: list[float] | None = None) -> list[float]:
    out = []
    for i, v in enumerate(values):
        x = {"value": v, "timestamp": times[i] if times is not None else None}
        out.append(det.score_one(x))
        det.learn_one(x)
    return out


def _noise(n: int, seed: int = 3) -> list[float]:
    rng = np.random.default_rng(seed)
    return (50.0 + rng.normal(0.0, 1.0, n)).tolist()


def test_missing_values_score_zero_and_are_not_learnt() -> None:
    det = KpiDetector()
    _run(det, _noise(200))
    n = det.n
    for missing in (float("nan"), None, float("inf")):
        assert det.score_one({"value": missing}) == 0.0
        det.learn_one({"value": missing})
    assert det.n == n
    # A gap does not disturb what follows: the next normal value is still quiet.
    assert det.score_one({"value": 50.0}) < DEFAULT_THRESHOLD


def test_plateau_at_abnormal_level_stays_firing_until_it_recovers() -> None:
    values = _noise(600)
    values[400:430] = [95.0] * 30  # 30 windows pinned at 95 % CPU
    scores = _run(KpiDetector(), values)
    assert min(scores[400:430]) >= DEFAULT_THRESHOLD
    # It resolves once the value is back (a few points of the 36-point view later).
    assert max(scores[470:]) < DEFAULT_THRESHOLD


def test_persistent_new_level_becomes_normal_after_half_the_window() -> None:
    values = _noise(1200)
    values[400:] = [v + 30.0 for v in values[400:]]
    det = KpiDetector(window=256)
    scores = _run(det, values)
    assert min(scores[400:500]) >= DEFAULT_THRESHOLD
    assert max(scores[400 + 256 // 2 + 60 :]) < DEFAULT_THRESHOLD


def test_flat_series_never_alerts_and_gives_no_nan() -> None:
    scores = _run(KpiDetector(), [7.0] * 1000)
    assert all(s == 0.0 for s in scores)
    assert not any(math.isnan(s) for s in scores)
    # ...and the first change after it is as surprising as it gets.
    det = KpiDetector()
    _run(det, [7.0] * 100)
    assert det.score_one({"value": 7.5}) == 1.0


def test_periodic_series_with_a_dip_inside_the_normal_range_is_caught() -> None:
    n = 6 * 288
    t = np.arange(n)
    rng = np.random.default_rng(5)
    values = 50.0 + 20.0 * np.sin(2 * np.pi * t / 288) + rng.normal(0.0, 1.0, n)
    dip = 5 * 288 + 72  # the daily peak of day 6
    values[dip : dip + 6] -= 20.0  # down to the daily mean: normal for the series, not the hour
    times = (1_400_000_000.0 + STEP * t).tolist()
    scores = score_series(values, times)
    assert max(scores[dip : dip + 6]) >= DEFAULT_THRESHOLD
    later = np.r_[scores[3 * 288 + 100 : dip - 10], scores[dip + 60 :]]
    assert (later >= DEFAULT_THRESHOLD).mean() < 0.005  # at most a stray alarm a day


def test_first_points_score_zero_then_useful_with_lower_confidence() -> None:
    values = _noise(400)
    det = KpiDetector()
    early = _run(det, values[:MIN_POINTS])
    assert early == [0.0] * MIN_POINTS  # warm-up: nothing is judged before 30 points
    # From point 30 a large spike already alerts...
    assert det.score_one({"value": 80.0}) >= DEFAULT_THRESHOLD
    moderate = {"value": 56.0}  # a 6-sigma value
    early_score = det.score_one(moderate)
    _run(det, values[MIN_POINTS:])
    # ...but a moderate deviation scores lower early (scale inflated by 2 / sqrt(m)).
    assert early_score < det.score_one(moderate)


def test_scores_are_in_unit_interval_on_heavy_tailed_data() -> None:
    rng = np.random.default_rng(9)
    values = np.cumsum(rng.standard_t(2, 3000))
    values[::97] += rng.standard_cauchy(len(values[::97])) * 50
    scores = score_series(values)
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    assert not np.isnan(scores).any()


def test_repeated_timestamps_are_scored_and_learnt() -> None:
    det = KpiDetector()
    scores = _run(det, _noise(300), [1_400_000_000.0 + STEP * (i // 2) for i in range(300)])
    assert det.n == 300 and max(scores) < 1.0
