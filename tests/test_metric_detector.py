"""MetricDetector: behaviour a user of ``paywatch backtest`` on a metric series would notice."""

from __future__ import annotations

import math
import pickle

import numpy as np

from models.metric import DEFAULT_THRESHOLD, MetricDetector


def _run(det: MetricDetector, values: list[float]) -> list[float]:
    out = []
    for v in values:
        x = {"value": v}
        out.append(det.score_one(x))
        det.learn_one(x)
    return out


def _noisy_flat(n: int, seed: int = 1) -> list[float]:
    """A daily-seasonal gauge (period 96 samples) with bounded noise, like CPU of a web tier."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (50.0 + 5.0 * np.sin(2 * np.pi * t / 96) + rng.uniform(-1.0, 1.0, n)).tolist()


def test_spike_after_flat_series_scores_high_only_at_the_spike() -> None:
    values = _noisy_flat(1200)
    values[1000] = 80.0
    scores = _run(MetricDetector(), values)
    assert scores[1000] >= 0.9
    assert scores[1000] >= DEFAULT_THRESHOLD
    # No alert anywhere else once warmed up: quiet data must stay quiet.
    others = scores[300:1000] + scores[1001:]
    assert max(others) < DEFAULT_THRESHOLD


def test_level_shift_alerts_once_then_becomes_normal() -> None:
    values = _noisy_flat(1500)
    values[1000:] = [v + 30.0 for v in values[1000:]]
    scores = _run(MetricDetector(), values)
    fired = [i for i, s in enumerate(scores) if s >= DEFAULT_THRESHOLD]
    assert fired and 1000 <= fired[0] <= 1005
    assert all(i < 1120 for i in fired), fired  # the new level is learnt, no endless paging


def test_scores_in_unit_interval_and_the_first_warmup_points_score_0() -> None:
    rng = np.random.default_rng(7)
    walk = np.cumsum(rng.normal(0, 1, 3000)) + rng.standard_cauchy(3000)
    det = MetricDetector()
    scores = _run(det, walk.tolist())
    assert all(0.0 <= s <= 1.0 and math.isfinite(s) for s in scores)
    assert scores[: det.warmup] == [0.0] * det.warmup


def test_deterministic_and_state_survives_pickle() -> None:
    values = _noisy_flat(900, seed=3)
    values[700] = 10.0
    assert _run(MetricDetector(), values) == _run(MetricDetector(), values)
    a = MetricDetector()
    _run(a, values[:600])
    b = pickle.loads(pickle.dumps(a))
    assert _run(a, values[600:]) == _run(b, values[600:])


def test_score_one_does_not_learn() -> None:
    det = MetricDetector()
    _run(det, _noisy_flat(400))
    first = det.score_one({"value": 90.0})
    det.score_one({"value": 50.0})
    assert det.score_one({"value": 90.0}) == first
    assert det.n == 400


def test_spike_in_a_quiet_regime_alerts_though_inside_the_long_run_range() -> None:
    # A noisy month, then a quiet one: a +4 blip is within the old ±5 band (no new
    # extreme, no unusual shape next to the noisy past) yet plainly wrong for the
    # current regime, and only it may alert.
    rng = np.random.default_rng(2)
    values = np.concatenate([50 + rng.uniform(-5, 5, 1200), 50 + rng.uniform(-0.5, 0.5, 600)])
    values[1700] += 4.0
    scores = _run(MetricDetector(), values.tolist())
    fired = [i for i, s in enumerate(scores) if s >= DEFAULT_THRESHOLD]
    assert fired == [1700]


def test_missing_values_score_zero_and_change_nothing() -> None:
    values = _noisy_flat(900, seed=4)
    values[800] = 80.0
    gappy: list[float | None] = []
    for i, v in enumerate(values):
        gappy.append(v)
        if i % 50 == 7:  # a gap every 50 points, in every spelling a feed may use
            gappy.extend([None, math.nan, math.inf])
    det = MetricDetector()
    scores = []
    for v in gappy:
        x = {"value": v}
        scores.append(det.score_one(x))
        det.learn_one(x)
    present = [s for v, s in zip(gappy, scores, strict=True) if v is not None and math.isfinite(v)]
    missing = [s for v, s in zip(gappy, scores, strict=True) if v is None or not math.isfinite(v)]
    assert present == _run(MetricDetector(), values)  # as if the gaps were not there
    assert missing and set(missing) == {0.0}
    assert det.n == 900


def test_repeated_sample_is_not_learnt_twice() -> None:
    values = _noisy_flat(700, seed=6)
    once, twice = MetricDetector(), MetricDetector()
    s_once, s_twice = [], []
    for i, v in enumerate(values):
        x = {"value": v, "timestamp": 60.0 * i}
        s_once.append(once.score_one(x))
        once.learn_one(x)
        s_twice.append(twice.score_one(x))
        twice.learn_one(x)
        twice.learn_one(x)  # the same sample delivered again
    assert s_twice == s_once and twice.n == once.n == 700


def test_plateau_at_an_abnormal_level_stays_firing_until_it_recovers() -> None:
    # CPU of a web tier around 50 %, then stuck at 95 % for 60 points, then back.
    values = _noisy_flat(1300, seed=8)
    rng = np.random.default_rng(9)
    values[1000:1060] = (95.0 + rng.uniform(-1.0, 1.0, 60)).tolist()
    scores = _run(MetricDetector(), values)
    assert scores[1000] >= 0.9  # the onset
    assert min(scores[1000:1060]) >= DEFAULT_THRESHOLD  # every point of the plateau
    assert max(scores[1070:]) < DEFAULT_THRESHOLD  # recovered: quiet again
    assert max(scores[300:1000]) < DEFAULT_THRESHOLD


def test_flat_series_is_silent_and_any_change_from_it_alerts() -> None:
    values = [5.0] * 600 + [5.5] + [5.0] * 100
    scores = _run(MetricDetector(), values)
    assert set(scores[:600]) == {0.0}
    assert scores[600] >= 0.9
    assert max(scores[601:]) < DEFAULT_THRESHOLD


def test_periodic_series_with_a_dip_alerts_at_the_dip_only() -> None:
    # Daily cycle 50 ± 5; at the top of a day's cycle the value drops to 44 for 6 points:
    # inside the long-run range (the troughs reach 44), wrong for that time of day.
    values = _noisy_flat(2000, seed=10)
    peak = 96 * 15 + 24  # sin peaks a quarter period into each cycle
    for i in range(peak - 3, peak + 3):
        values[i] -= 11.0
    assert min(values) < values[peak] + 2.0  # not a new extreme
    scores = _run(MetricDetector(), values)
    fired = [i for i, s in enumerate(scores) if s >= DEFAULT_THRESHOLD and i >= 150]
    assert fired and peak - 3 <= fired[0] <= peak + 3
    assert all(peak - 3 <= i <= peak + 12 for i in fired), fired


def test_first_30_points_score_0_then_clear_anomalies_score_with_lower_confidence() -> None:
    rng = np.random.default_rng(11)
    quiet = (20.0 + rng.normal(0.0, 1.0, 200)).tolist()
    det = MetricDetector()
    scores = _run(det, quiet)
    assert scores[:30] == [0.0] * 30 and max(scores[30:]) < DEFAULT_THRESHOLD
    spiky = list(quiet)
    spiky[40] = 60.0  # 40 standard deviations out, at the 41st point
    det2 = MetricDetector()
    early = _run(det2, spiky[:40])
    assert det2.confidence() < 0.5  # the history behind the score is short, and says so
    assert det2.score_one({"value": spiky[40]}) >= 0.8
    assert early[:30] == [0.0] * 30 and det.confidence() == 1.0


def _swinging_cpu(n: int, seed: int) -> np.ndarray:
    """CPU that follows its load (a 360-point cycle of ±8) with noise: 36 % to 68 %."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 52.0 + 8.0 * np.sin(2 * np.pi * t / 360) + 3.0 * rng.standard_normal(n)


def test_a_modest_plateau_scores_higher_the_longer_it_lasts_and_stays_firing() -> None:
    # Stuck at 80 % for 90 points: a few points above anything seen, so its onset alone is
    # no page at 0.9 and its distance from the band stays ~0.75; how long it lasts is
    # what makes it a state anomaly.
    values = _swinging_cpu(1400, seed=4)
    rng = np.random.default_rng(5)
    values[1000:1090] = 80.0 + rng.standard_normal(90)
    scores = np.array(_run(MetricDetector(), values.tolist()))
    assert scores[1000] < 0.9 <= scores[1000:1090].max()
    first = 1000 + int(np.argmax(scores[1000:1090] >= 0.9))
    assert first < 1080 and scores[first:1090].min() >= 0.9  # firing until the end
    assert scores[1000:1090].min() >= DEFAULT_THRESHOLD
    assert scores[1100:].max() < DEFAULT_THRESHOLD  # recovered: quiet again
    assert scores[400:1000].max() < 0.9  # no page before it
    # Without the duration the held state scores its distance alone and never pages.
    flat = np.array(_run(MetricDetector(duration=False), values.tolist()))
    assert flat[1001:1090].max() < 0.8


def test_a_plateau_is_long_only_against_the_series_own_excursions() -> None:
    # The same 90 points at 80 % on a series that once sagged to 30 % for 150 points and
    # recovered: a long excursion is nothing new there, so the plateau's length adds less.
    rng = np.random.default_rng(5)
    plateau = 80.0 + rng.standard_normal(90)
    values = _swinging_cpu(1400, seed=4)
    values[1000:1090] = plateau
    sagged = _swinging_cpu(1400, seed=4)
    sagged[500:650] = 30.0 + rng.standard_normal(150)
    sagged[1000:1090] = plateau
    plain = np.array(_run(MetricDetector(), values.tolist()))[1000:1090]
    scores = np.array(_run(MetricDetector(), sagged.tolist()))[1000:1090]
    assert scores.max() < 0.9 <= plain.max()
    assert scores.min() >= DEFAULT_THRESHOLD  # still a state held until it recovers


def test_a_slow_drift_is_judged_against_the_time_before_it() -> None:
    # A leak: +12 over 100 points, then staying there. The level view's bands lag behind
    # (50, 100 and 200 points, averaged), so the rise is not judged against itself.
    values = np.array(_noisy_flat(1300, seed=2))
    values[1000:1100] += np.linspace(0.0, 12.0, 100)
    values[1100:] += 12.0
    scores = np.array(_run(MetricDetector(), values.tolist()))
    assert scores[300:1000].max() < DEFAULT_THRESHOLD
    assert scores[1000:1100].max() >= 0.8
    # Without a lag the band rises with the leak and the level view scores the rise far
    # lower (compared without the exclusion zone, whose shape records also see it).
    lagged = np.array(_run(MetricDetector(exclusion=False), values.tolist()))
    unlagged = np.array(_run(MetricDetector(level_lags=(0,), exclusion=False), values.tolist()))
    assert lagged[1000:1100].max() >= 0.8
    assert unlagged[1000:1100].max() < 0.7


def test_a_new_shape_pages_though_its_points_are_smaller_than_past_spikes() -> None:
    # A gauge at 0.134 with a single spike of 0.5-1.6 every 150 points and one of 2.3; then,
    # 230 points later, a double spike (0.6 then 0.33): no higher than the usual spikes, a
    # shape never seen.  As the pair slides through the 32-point subsequence each distance
    # is a record by a little; measured on the subsequences that do not overlap it (the
    # exclusion zone) the record is clear, measured on them it stays at the record's 1.
    rng = np.random.default_rng(4)
    values = 0.134 + rng.choice([0.0, -0.002, 0.002, -0.068], 1600, p=[0.5, 0.2, 0.2, 0.1])
    for k in range(100, 1600, 150):
        values[k + rng.integers(0, 20)] = rng.uniform(0.5, 1.6)
    values[1200] = 2.3
    values[1430:1432] = (0.6, 0.33)
    scores = np.array(_run(MetricDetector(), values.tolist()))
    assert scores[1200] >= 0.85
    assert scores[1430:1463].max() >= 0.7
    inclusive = np.array(_run(MetricDetector(exclusion=False), values.tolist()))
    assert inclusive[1430:1463].max() < DEFAULT_THRESHOLD
