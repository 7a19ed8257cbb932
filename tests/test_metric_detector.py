"""MetricDetector: behaviour a user of ``paywatch backtest`` on a metric series would notice."""

from __future__ import annotations

import math
import pickle

import numpy as np

from models.metric import DEFAULT_THRESHOLD, MetricDetector


def _run(det: MetricDetector, values: list[float]) -> list[float]:
    out = []
    for v in values:
        x = {"value": v, "timestamp": 0.0}
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


def test_scores_in_unit_interval_and_cold_start_is_silent() -> None:
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
