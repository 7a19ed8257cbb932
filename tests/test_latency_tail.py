"""The latency tail share: a few calls of one merchant stall for seconds while its median
holds; the tail rule pages that merchant once, and normal traffic pages nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from benchmarks import second_generator
from benchmarks.eval_run import pages
from stream.alerting.inhibit import CARRIES_SHARE, names
from stream.alerting.silences import SilenceSet
from stream.config import load_config
from stream.judge.features import TAIL_MIN_CALLS, TAIL_RATIO, slow_calls
from stream.judge.tail_rule import TailRule
from stream.offline.backtest import chunked, replay_batches
from stream.pipeline import Pipeline
from stream.series import series_key
from stream.sim.simulate import Incident, SimConfig, simulate
from stream.windows import histogram
from stream.windows.state import ClosedWindow

SIM = SimConfig(seed=21, duration_s=3600.0, rate=20.0, merchants=12, daily=False, metrics=False)
STALL = (2400_000, 3000_000)  # ms after the start: ten minutes in the last third
MERCHANT = "M1001"


def stalled(events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One call in ten of MERCHANT's stalls for 30x its latency during STALL."""
    lo, hi = SIM.start_ms + STALL[0], SIM.start_ms + STALL[1]
    for i, ev in enumerate(events):
        hit = ev.get("merchant_id") == MERCHANT and ev.get("event_type") == "provider_call"
        if hit and lo <= ev["event_ts"] < hi and i % 10 == 0:
            ev = {**ev, "latency_ms": float(ev["latency_ms"]) * 30}
        yield ev


def alerts(events: Iterator[dict[str, Any]]) -> list[Any]:
    cfg = load_config(None)
    values = (orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY) for ev in events)
    steps = replay_batches(Pipeline(cfg), chunked(enumerate(values), "t", cfg.kafka.max_batch))
    return [rec for step in steps for rec in step.alerts]


def _window(ms: list[float]) -> ClosedWindow:
    arr = np.array(ms)
    keys, counts = histogram.consolidate(histogram.bucket_of(arr), np.ones(arr.size, np.int64))
    return ClosedWindow(
        0, 10_000, np.zeros((1, 1), np.int64), np.array([[np.median(arr), arr.max(), arr.max()]]),
        np.zeros((1, 5)), np.zeros(1), keys, counts,
    )  # fmt: skip


def test_slow_calls_count_calls_over_four_times_their_window_median() -> None:
    # Upper median of six calls: the 4th, 120 ms, so 480 ms is the line.
    win = _window([100.0, 105.0, 110.0, 120.0, 500.0, 900.0])
    assert TAIL_RATIO == 4.0
    slow, judged = slow_calls(win)
    assert (slow.tolist(), judged.tolist()) == ([2.0], [6.0])


def test_a_window_of_few_calls_has_no_median_to_be_slow_against() -> None:
    # Of two calls the lower "median" would make the other 9x slow; under TAIL_MIN_CALLS
    # calls nothing is judged, so the share's trials are only calls that could be slow.
    assert TAIL_MIN_CALLS == 6
    slow, judged = slow_calls(_window([100.0, 900.0, 110.0, 95.0, 1000.0]))
    assert (slow.tolist(), judged.tolist()) == ([0.0], [0.0])


def test_heavy_tailed_low_volume_traffic_pages_no_tail() -> None:
    """Gamma-shaped latency with retries, merchants at a call or two a window (the second
    generator's normal traffic, no incidents): the window-median tail share paged 4 of its
    merchants' operations in these 3 hours before the minimum calls."""
    world = second_generator.make_world(201)
    calls = second_generator.calls(world, [], 3.0)
    lat = calls["latency_ms"]
    evs = (
        {"schema_version": 1, "event_type": "provider_call", "event_id": f"e{i}",
         "event_ts": second_generator.T0_MS + int(calls["t"][i] * 1000), "service": "s",
         "provider": str(calls["provider"][i]), "merchant_id": str(calls["merchant"][i]),
         "operation": str(calls["operation"][i]), "outcome": "success",
         "latency_ms": float(lat[i])}
        for i in range(lat.size)
    )  # fmt: skip
    tail = [r for r in alerts(evs) if r.rule == "latency_tail"]
    assert tail == []


def test_stalled_calls_page_the_merchant_once_and_normal_traffic_nothing() -> None:
    every = alerts(stalled(simulate(SIM)))
    firing = [r for r in every if r.rule == "latency_tail" and r.status == "firing"]
    assert firing, "ten minutes of stalled calls were not paged"
    # The merchant's series page first (its operations and the providers above it, whose
    # hints name it, follow); no other merchant's.
    assert firing[0].series.get("merchant_id") == MERCHANT
    assert {r.series["merchant_id"] for r in firing if "merchant_id" in r.series} == {MERCHANT}
    episodes: dict[str, set[str]] = {}
    for r in firing:
        episodes.setdefault(r.fingerprint, set()).add(r.alert_id)
    assert all(len(ids) == 1 for ids in episodes.values())  # one episode per series
    start = SIM.start_ms + STALL[0]
    assert all(start <= r.window_end <= SIM.start_ms + STALL[1] for r in firing)
    assert not any(r.rule == "latency_tail" for r in alerts(simulate(SIM)))


SLOWING = SimConfig(
    seed=11, duration_s=2400.0, rate=20.0, merchants=12, daily=False, metrics=False,
    incidents=[Incident("latency_degradation", 1800.0, 300.0, merchant_id="M1005", magnitude=3.0)],
)  # fmt: skip


def test_a_slowing_merchants_tail_above_it_folds_into_its_latency_alert() -> None:
    """Every call of a big merchant three times slower: its calls land over its
    providers' and operations' 4x lines, and their tail alerts fire.  Weighed over the
    parents' lines across their evidence, their hints name the merchant from the first
    record, so they fold into its latency alert: the merchant pages, no tail does (each
    provider's tail paged before, and the merchant not at all: its alerts muted each other
    in a ring)."""
    every = alerts(simulate(SLOWING))
    providers = [
        r for r in every
        if r.rule == "latency_tail" and r.status == "firing" and list(r.series) == ["provider"]
    ]  # fmt: skip
    assert sorted(r.series["provider"] for r in providers) == ["alipay", "paypal", "wechatpay"]
    assert all(names(r.hints, {"merchant_id": "M1005"}, CARRIES_SHARE) for r in providers)
    paged = pages([r.to_dict() for r in every], SilenceSet(), load_config(None))
    firing = {(a["rule"], series_key(a["series"])) for a in paged if a["status"] == "firing"}
    mine = [k for k in firing if k[0] == "latency" and ("merchant_id", "M1005") in k[1]]
    assert len(mine) == 1, firing  # its alert at one provider, the others its peers
    assert not [k for k in firing if k[0] == "latency_tail"], firing


def test_a_merchant_whose_keys_broke_pages_no_latency() -> None:
    """70 % of a big merchant's calls refused for its credentials, answered at once: in
    the latency histograms they dragged its windows' median down, and its calls that
    went through read as 4x slower (five latency_tail alerts, its providers' too).  A
    refused call is no sample of the provider's latency: config errors page alone."""
    sim = SimConfig(
        seed=12, duration_s=2400.0, rate=20.0, merchants=12, daily=False, metrics=False,
        incidents=[Incident("merchant_misconfig", 1800.0, 600.0, merchant_id="M1001",
                            magnitude=0.7)],
    )  # fmt: skip
    firing = [r for r in alerts(simulate(sim)) if r.status == "firing"]
    assert {r.series.get("merchant_id") for r in firing if r.rule == "config_errors"} >= {"M1001"}
    assert [r for r in firing if r.signal in ("latency", "latency_tail")] == []


def test_an_evicted_child_leaves_the_tail_sums_it_was_in() -> None:
    """Its id is reused by another series: left in a parent's sums, a hint would name that
    one (or find no series at all)."""
    (rule,) = [r for r in Pipeline(load_config(None)).state.rules if isinstance(r, TailRule)]
    rule.carried = {
        1: (np.array([5, 6]), np.array([1.0, 2.0]), np.array([3.0, 4.0])),
        2: (np.array([6]), np.array([1.0]), np.array([1.0])),
    }
    rule.forget(np.array([6, 9]))
    assert {k: v[0].tolist() for k, v in rule.carried.items()} == {1: [5], 2: []}
    rule.forget(np.array([1]))
    assert list(rule.carried) == [2]
