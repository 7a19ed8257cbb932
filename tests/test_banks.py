"""The vectorised banks against their scalar reference detectors, window by window."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.bank import bank_for
from models.callbacks import CallbackDetector
from models.combinators import Combined, GuardedBy, VolumeGate
from models.error_rate import ConfigErrorDetector, ErrorRateBank, ErrorRateDetector
from models.latency import LatencyBank, LatencyDetector
from models.threshold import ErrorRateThreshold, StaticSLO, ThresholdBank
from models.volume import VolumeDetector

SLOTS = 40
WINDOWS = 160
LAT_KEYS = ("latency_p50", "latency_p95", "latency_p99")


class Traffic:
    """Random windows for SLOTS series: quiet, tiny and zero-volume merchants, NaN/inf
    values, missing keys, outages that fire and recover, latency regressions, and
    series that skip windows."""

    def __init__(self, seed: int, per_slot_window_s: bool = False) -> None:
        self.rng = np.random.default_rng(seed)
        r = self.rng
        self.volume = np.exp(r.uniform(0.0, 8.0, SLOTS)).round()  # 1 .. ~3000 calls
        self.volume[:4] = [0.0, 1.0, 3.0, 5.0]
        self.rate = r.choice([0.0, 0.0005, 0.002, 0.01], SLOTS)
        self.p95 = r.uniform(50.0, 2000.0, SLOTS)
        self.per_slot_window_s = per_slot_window_s
        # Incidents: slot -> (first window, last window, error rate, latency factor)
        self.incidents: list[tuple[int, int, int, float, float]] = []
        for sid in r.choice(SLOTS, 12, replace=False).tolist():
            start = int(r.integers(10, WINDOWS - 30))
            length = int(r.integers(1, 12))
            self.incidents.append(
                (
                    sid,
                    start,
                    start + length,
                    float(r.choice([0.05, 0.3, 1.0])),
                    float(r.choice([1.0, 3.0, 8.0])),
                )
            )

    def window(self, t: int) -> tuple[np.ndarray, dict[str, Any]]:
        r = self.rng
        slots = np.flatnonzero(r.random(SLOTS) < 0.8)  # each series skips ~20 % of windows
        m = slots.size
        rate = self.rate[slots].copy()
        lat = np.ones(m)
        for sid, start, end, err, factor in self.incidents:
            if start <= t < end:
                hit = slots == sid
                rate[hit], lat[hit] = err, factor
        vol = r.poisson(self.volume[slots]).astype(float)
        vol[r.random(m) < 0.05] = 0.0  # outage of traffic itself
        errors = r.binomial(vol.astype(np.int64), np.minimum(rate, 1.0)).astype(float)
        cfg = r.binomial(vol.astype(np.int64), np.minimum(rate * 0.5, 1.0)).astype(float)
        jitter = np.exp(r.normal(0.0, 0.1, m)) * lat
        p95 = self.p95[slots] * jitter
        x: dict[str, Any] = {
            "window_s": 10.0,
            "volume": vol,
            "system_errors": errors,
            "config_errors": cfg,
            "latency_p50": p95 * 0.4,
            "latency_p95": p95,
            "latency_p99": p95 * 2.0,
        }
        if self.per_slot_window_s:
            x["window_s"] = r.choice([10.0, 20.0, 60.0], m)
        for key in ("latency_p50", "latency_p95", "latency_p99", "volume", "system_errors"):
            bad = r.random(m) < 0.03
            x[key][bad] = r.choice([math.nan, math.inf, -math.inf, -5.0], int(bad.sum()))
        if t % 37 == 5:
            del x["latency_p99"]  # a feature absent altogether: the scalar default applies
        if t % 41 == 7:
            x["config_errors"] = 0.0  # a scalar for every slot
        if t % 43 == 11:
            x["window_s"] = None
        return slots, x


def row(x: dict[str, Any], i: int) -> dict[str, Any]:
    return {k: (v[i] if isinstance(v, np.ndarray) else v) for k, v in x.items()}


def assert_same(bank_det: Any, det: Any, sample: dict[str, Any]) -> None:
    assert bank_det.ready == det.ready
    assert bank_det.n == det.n
    a, b = bank_det.expected(sample), det.expected(sample)
    assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12)
    comps_a, comps_b = bank_det.components(sample), det.components(sample)
    assert comps_a == pytest.approx(comps_b, rel=1e-9, abs=1e-9)


def drive(make: Callable[[], Any], bank: Any, traffic: Traffic) -> dict[str, int]:
    """Feed the same windows to one bank and one scalar detector per slot; compare."""
    scalar: dict[int, Any] = {}
    stats = {"fired": 0, "recovered": 0, "cold": 0, "forgotten": 0, "skipped": 0}
    firing: set[int] = set()
    for t in range(WINDOWS):
        slots, x = traffic.window(t)
        stats["skipped"] += SLOTS - slots.size
        got = bank.score_learn_many(slots, x)
        assert got.dtype == np.float64 and got.shape == slots.shape
        for j, sid in enumerate(slots.tolist()):
            det = scalar.setdefault(sid, make())
            xs = row(x, j)
            want = det.score_learn_one(xs)
            assert got[j] == pytest.approx(want, abs=1e-9), (t, sid, xs)
            if not det.ready:
                stats["cold"] += 1
            if want >= 0.5:
                stats["fired"] += sid not in firing
                firing.add(sid)
            elif sid in firing:
                stats["recovered"] += 1
                firing.discard(sid)
        if t % 10 == 9:  # full state comparison now and then (it is the slow part)
            for sid in slots.tolist():
                assert_same(bank.detector(sid), scalar[sid], row(x, 0))
        if t % 50 == 49:  # evict a few series; their ids come back fresh
            gone = traffic.rng.choice(SLOTS, 3, replace=False)
            bank.forget(gone)
            for sid in gone.tolist():
                stats["forgotten"] += scalar.pop(sid, None) is not None
                firing.discard(sid)
                assert bank.detector(sid).n == 0
    fresh = make()
    assert len(bank) == sum(1 for d in scalar.values() if pickle.dumps(d) != pickle.dumps(fresh))
    return stats


ERROR_RATE_MAKERS: list[Callable[[], ErrorRateDetector]] = [
    partial(ConfigErrorDetector, min_windows=5),
    partial(ErrorRateDetector, min_windows=8, cusum_cap=13.0, min_increase=0.005),
    partial(ErrorRateDetector, min_windows=8, guard_weight=0.3),  # guarded windows still teach
]


@pytest.mark.parametrize("make", ERROR_RATE_MAKERS, ids=["config", "system", "guard_weight"])
@pytest.mark.parametrize("seed", [1, 2])
def test_error_rate_bank_matches_scalar_detectors(make: Callable[[], Any], seed: int) -> None:
    bank = bank_for(make)
    assert isinstance(bank, ErrorRateBank)
    stats = drive(make, bank, Traffic(seed))
    # The stream really exercised cold start, outages, recoveries, skips and eviction.
    assert stats["cold"] > 0 and stats["skipped"] > 0 and stats["forgotten"] > 0
    assert stats["fired"] >= 3 and stats["recovered"] >= 2, stats


def test_error_rate_bank_takes_the_binomial_tail_like_the_scalar() -> None:
    bank = ErrorRateBank(ErrorRateDetector(min_windows=3))
    det = ErrorRateDetector(min_windows=3)
    quiet = {"volume": np.array([2000.0]), "system_errors": np.array([4.0])}
    for _ in range(5):
        bank.score_learn_many(np.array([0]), quiet)
        det.score_learn_one({"volume": 2000.0, "system_errors": 4.0})
    burst = {"volume": 2000.0, "system_errors": 30.0}
    assert det.components(burst)["window"] > 0.5  # the single-window test is what pages
    got = bank.score_learn_many(np.array([0]), {k: np.array([v]) for k, v in burst.items()})
    assert got[0] == det.score_learn_one(burst)


def test_error_rate_bank_with_per_slot_window_lengths() -> None:
    make = partial(ErrorRateDetector, min_windows=8)
    stats = drive(make, ErrorRateBank(make()), Traffic(3, per_slot_window_s=True))
    assert stats["fired"] >= 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_latency_bank_matches_scalar_detectors(seed: int) -> None:
    make = partial(LatencyDetector, min_windows=6)
    bank = bank_for(make)
    assert isinstance(bank, LatencyBank)
    stats = drive(make, bank, Traffic(seed))
    assert stats["cold"] > 0 and stats["forgotten"] > 0
    assert stats["fired"] >= 3 and stats["recovered"] >= 2, stats


@pytest.mark.parametrize(
    "make",
    [
        partial(LatencyDetector, keys=("latency_p99",), se_coef=(3.77,), min_windows=6),
        partial(LatencyDetector, min_windows=6, guard_weight=0.5, min_volume=1.0),
        partial(LatencyDetector, min_windows=0),
    ],
    ids=["p99_only", "guard_weight", "no_cold_start"],
)
def test_latency_bank_other_params(make: Callable[[], Any]) -> None:
    stats = drive(make, LatencyBank(make()), Traffic(4, per_slot_window_s=True))
    assert stats["fired"] >= 1


@given(
    # Call counts: the scalar divides by zero on subnormal volumes.
    volume=st.one_of(
        st.integers(0, 10**7).map(float), st.floats(0.5, 1e7), st.just(math.nan), st.just(math.inf)
    ),
    share=st.floats(0, 1),
    threshold=st.floats(0.001, 0.5),
    min_volume=st.integers(0, 50),
)
@settings(max_examples=300, deadline=None)
def test_threshold_bank_is_score_one_elementwise(
    volume: float, share: float, threshold: float, min_volume: int
) -> None:
    t = ErrorRateThreshold(threshold, min_volume, errors_key="system_errors")
    errors = math.floor(volume * share) if math.isfinite(volume) else 1.0
    bank = ThresholdBank(t)
    x = {"volume": np.array([volume, 400.0]), "system_errors": np.array([errors, 120.0])}
    want = [t.score_one({"volume": volume, "system_errors": errors}), t.score_one(row(x, 1))]
    assert bank.score_many(x).tolist() == want
    assert bank.score_learn_many(np.array([3, 9]), x).tolist() == want


def test_threshold_bank_shares_the_threshold_and_holds_no_state() -> None:
    t = ErrorRateThreshold(0.05, 20)
    bank = bank_for(lambda: t)
    assert isinstance(bank, ThresholdBank)
    assert bank.detector(5) is t and len(bank) == 0
    assert bank.score_many({"volume": 1000.0, "errors": 500.0}) == t.score_one(
        {"volume": 1000.0, "errors": 500.0}
    )
    assert bank.score_many({}).tolist() == 0.0  # no volume: not judged


def test_banks_pickle_with_their_state() -> None:
    traffic = Traffic(5)
    make = partial(ConfigErrorDetector, min_windows=5)
    er, lat = ErrorRateBank(make()), LatencyBank(LatencyDetector(min_windows=6))
    for t in range(40):
        slots, x = traffic.window(t)
        er.score_learn_many(slots, x)
        lat.score_learn_many(slots, x)
    er.forget(np.arange(SLOTS - 5, SLOTS))  # the tail of free ids is not stored
    for bank in (er, lat):
        clone = pickle.loads(pickle.dumps(bank))
        assert type(clone) is type(bank) and len(clone) == len(bank)
        slots, x = traffic.window(40)
        assert clone.score_learn_many(slots, x).tolist() == bank.score_learn_many(slots, x).tolist()
        for sid in range(SLOTS):
            a, b = clone.detector(sid), bank.detector(sid)
            assert pickle.dumps(a) == pickle.dumps(b)
    assert type(pickle.loads(pickle.dumps(er)).detector(0)) is ConfigErrorDetector
    # A thousand forgotten ids cost nothing in the snapshot.
    big = ErrorRateBank(make())
    big.score_learn_many(np.array([0, 5000]), {"volume": 10.0, "config_errors": 0.0})
    big.forget(np.array([5000]))
    assert len(pickle.dumps(big)) < 4000


def test_bank_grows_on_large_slots_and_forget_reuses() -> None:
    bank = ErrorRateBank(ErrorRateDetector(min_windows=2))
    x = {"volume": np.array([100.0]), "system_errors": np.array([1.0])}
    bank.score_learn_many(np.array([3]), x)
    small = bank.capacity
    bank.score_learn_many(np.array([100]), x)
    assert bank.capacity >= 101 and bank.capacity > small
    assert len(bank) == 2 and bank.detector(100).n == 1 and bank.detector(10**6).n == 0
    bank.forget(np.array([3, 100, 10**6]))  # ids beyond the arrays are fine
    assert len(bank) == 0
    assert bank.ready(np.array([3, 10**6])).tolist() == [False, False]
    with pytest.raises(ValueError, match="non-negative"):
        bank.score_learn_many(np.array([-1]), x)
    with pytest.raises(ValueError, match="system_errors"):
        bank.score_learn_many(np.array([1, 2]), x)  # one value for two slots
    assert bank.score_learn_many(np.array([], dtype=int), {}).shape == (0,)


def test_bank_for_picks_exact_classes_only() -> None:
    assert isinstance(bank_for(ErrorRateDetector), ErrorRateBank)
    config = bank_for(partial(ConfigErrorDetector, min_windows=30))
    assert isinstance(config, ErrorRateBank)
    assert type(config.detector(0)) is ConfigErrorDetector
    assert config.detector(0).params.min_windows == 30
    assert config.keys == ("config_errors", "volume", "window_s")
    assert isinstance(bank_for(LatencyDetector), LatencyBank)
    assert isinstance(bank_for(lambda: ErrorRateThreshold(0.05, 20)), ThresholdBank)
    threshold = ErrorRateThreshold(0.05, 20)
    for make in (
        lambda: VolumeGate(ErrorRateDetector(), 10),
        lambda: GuardedBy(ErrorRateDetector(), threshold),
        lambda: Combined(ErrorRateDetector(), threshold),
        CallbackDetector,
        VolumeDetector,
        lambda: StaticSLO("latency_p99", 1500, 3000),
        lambda: type("Sub", (ErrorRateDetector,), {"__slots__": ()})(),  # a subclass may differ
    ):
        assert bank_for(make) is None


def test_bank_for_keeps_warmed_up_factories_per_series() -> None:
    def warmed() -> ErrorRateDetector:
        det = ErrorRateDetector()
        det.learn_one({"volume": 100.0, "system_errors": 1.0})
        return det

    assert bank_for(warmed) is None
