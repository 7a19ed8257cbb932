"""A merchant whose every call slows down spreads its evidence over one series per
operation, a call or two a window each; its calls together (``[provider,
merchant_id]``, each call judged against its own operation's normal) are conclusive
in seconds.  And a merchant whose mix of operations changes is not slower."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import orjson

from models.budget import cusum_threshold, oracle_delay_latency_s
from models.sequential import PooledParams, SequentialDetector
from stream.config import load_config
from stream.ingest.events import SourceColumns
from stream.judge.pooled_rule import PoolingRule
from stream.live.payment_metrics import PaymentMetrics, firing_state
from stream.offline.backtest import SeriesRecorder, chunked, replay_batches
from stream.pipeline import Pipeline
from stream.series import series_key
from stream.sim.simulate import Incident, SimConfig, labels, simulate

SLOW = "M1005"
START, LENGTH = 1800.0, 300.0
SIM = SimConfig(
    seed=11, duration_s=2400.0, rate=20.0, merchants=12, daily=False, metrics=False,
    incidents=[Incident("latency_degradation", START, LENGTH, merchant_id=SLOW, magnitude=3.0)],
)  # fmt: skip


def replay(values: Any) -> tuple[list[Any], Pipeline]:
    cfg = load_config(None)
    pipe = Pipeline(cfg)
    encoded = (orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY) for ev in values)
    steps = replay_batches(pipe, chunked(enumerate(encoded), "t", cfg.kafka.max_batch))
    return [rec for step in steps for rec in step.alerts], pipe


def test_a_slow_merchant_pages_on_its_calls_together_within_the_oracle_target() -> None:
    alerts, _ = replay(simulate(SIM))
    truth = next(lab for lab in labels(SIM) if lab["is_incident"])["truth"]
    h = cusum_threshold(1.0, 10.0, 1)
    oracle = oracle_delay_latency_s(truth["ratio"], truth["sigma_log"], truth["calls_per_s"], h)
    latency = [r for r in alerts if r.rule == "latency" and r.status == "firing"]
    mine = sorted(
        (r for r in latency if r.series.get("merchant_id") == SLOW), key=lambda r: r.window_end
    )
    assert mine, "the slow merchant was not paged"
    # Per provider, the merchant's calls together page no later than any one operation.
    first: dict[tuple[str, bool], int] = {}
    for r in mine:
        first.setdefault((r.series["provider"], "operation" in r.series), r.window_end)
    for (provider, per_operation), end in first.items():
        if per_operation:
            assert first.get((provider, False), math.inf) <= end, (provider, first)
    delay = (min(first.values()) - SIM.start_ms) / 1000 - START
    assert 0 < delay <= max(2 * oracle, oracle + 20), (delay, oracle)
    episodes = Counter(series_key(r.series) for r in mine)
    assert max(episodes.values()) == 1, episodes  # one page per series
    others = {r.series["merchant_id"] for r in latency if "merchant_id" in r.series} - {SLOW}
    assert others == set(), others
    # Above the merchant, only series its slow calls dominate, during its incident.
    over = SIM.start_ms + (START + LENGTH) * 1000
    above = [r for r in latency if "merchant_id" not in r.series]
    assert all(SIM.start_ms + START * 1000 < r.window_end <= over for r in above), above


T0 = 1_767_225_600_000
NORMAL_MS = {"query_payment": 60.0, "create_payment": 700.0}


def mix_shift(seconds: int, switch_s: int) -> list[dict[str, Any]]:
    """One merchant at 1 call/s: 90 % queries (60 ms) until ``switch_s``, then 90 %
    payments (700 ms); every call's latency normal for its operation (spread 0.4)."""
    rng = np.random.default_rng(3)
    events = []
    for i in range(seconds):
        heavy = "create_payment" if i >= switch_s else "query_payment"
        light = "query_payment" if i >= switch_s else "create_payment"
        op = heavy if rng.random() < 0.9 else light
        events.append(
            {
                "schema_version": 1,
                "event_type": "provider_call",
                "event_id": f"ev-{i}",
                "event_ts": T0 + i * 1000,
                "service": "checkout",
                "provider": "alipay",
                "merchant_id": "m1",
                "operation": op,
                "outcome": "success",
                "latency_ms": NORMAL_MS[op] * math.exp(0.4 * rng.standard_normal()),
            }
        )
    return events


def test_a_merchant_whose_mix_of_operations_changes_is_not_paged() -> None:
    alerts, pipe = replay(mix_shift(3600, 2400))
    latency = [r for r in alerts if r.signal == "latency" and r.status == "firing"]
    assert latency == []
    # The merchant's calls together were judged all along: their median went from
    # ~60 ms to ~700 ms, which a baseline of the mix would have paged.
    rule = next(r for r in pipe.state.rules if isinstance(r, PoolingRule))
    reg = pipe.state.windows.registry
    sid = reg.index[(("provider", "merchant_id"), ("alipay", "m1"))]
    assert rule.pooled.n[sid] >= 300
    assert 500 < rule.pooled.expected[sid] < 900  # what its calls were expected to take


def test_a_pooled_alarm_ends_on_a_thousand_to_one_evidence_of_health_not_one_window() -> None:
    # A merchant's calls together swing by several nats a window (one call at its normal
    # speed: about -2 nats against x3), so the pooled alarm ends only after 6.9 nats for
    # health (1000 : 1) — its own reverse test; one such window did end it.
    det = SequentialDetector(PooledParams())

    def window(mild: float, sharp: float) -> float:
        return det.score_learn_one({"evidence_0": mild, "evidence_1": sharp, "expected": 1.0})

    assert [window(3.0, 6.0) >= 0.5 for _ in range(3)] == [False, False, True]
    assert window(-0.5, -4.0) >= 0.5  # one window for health: still firing
    assert [window(-0.5, -2.0) >= 0.5 for _ in range(2)] == [True, False]  # 8 nats: ended


def test_an_open_pooled_series_is_judged_once_a_window() -> None:
    # Its episode open, the operations' bank also took it for one of its own series (no
    # normal of a mix: reported quiet), so one window resolved and re-fired it.
    cfg = load_config(None)
    pipe = Pipeline(cfg)
    rule = next(r for r in pipe.state.rules if isinstance(r, PoolingRule))
    inner, seen = rule.judge, Counter[tuple[int, Any]]()

    def judge(window: Any, active: set[str]) -> list[Any]:
        out = inner(window, active)
        seen.update((j.window_end, series_key(j.series)) for j in out)
        return out

    rule.judge = judge  # type: ignore[method-assign]
    encoded = (orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY) for ev in simulate(SIM))
    for _ in replay_batches(pipe, chunked(enumerate(encoded), "t", cfg.kafka.max_batch)):
        pass
    pooled = [s for _, s in seen if dict(s).get("merchant_id") == SLOW and len(s) == 2]
    assert len(pooled) >= 20  # the slow merchant's series, judged while open
    assert max(seen.values()) == 1


def _pooled(pipe: Pipeline) -> Any:
    return next(r for r in pipe.state.rules if isinstance(r, PoolingRule)).pooled


def _alerts_with_restart(restart_s: float | None) -> list[dict[str, Any]]:
    """The slow-merchant stream through a pipeline, restored from its own checkpoint
    into a fresh one at the first batch after ``restart_s`` (None: no restart)."""
    cfg = load_config(None)
    events = list(simulate(SIM))
    values = [orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY) for ev in events]
    after = [
        i for i, ev in enumerate(events) if ev["event_ts"] >= SIM.start_ms + (restart_s or 0) * 1000
    ]
    restart_at = -(-after[0] // 2000) * 2000 if restart_s is not None else None
    pipe, out = Pipeline(cfg), []
    for at in range(0, len(values), 2000):
        if at == restart_at:
            before = _pooled(pipe)
            assert before.alarm.any()  # a pooled episode is open at the checkpoint
            blob, pipe = pipe.snapshot(), Pipeline(cfg)
            pipe.restore(blob)
            after = _pooled(pipe)
            for name in ("s", "run", "alarm", "expected", "n"):  # snapshots end at the last
                a, b = getattr(after, name), getattr(before, name)  # slot holding state
                assert np.array_equal(a, b[..., : a.shape[-1]]) and not b[..., a.shape[-1] :].any()
        chunk = values[at : at + 2000]
        src = SourceColumns(["t"] * len(chunk), [0] * len(chunk), range(at, at + len(chunk)))
        out += [a.to_dict() for a in pipe.process(chunk, src).alerts]
    return out + [a.to_dict() for a in pipe.flush().alerts]


def test_a_restart_mid_incident_keeps_the_pooled_episode() -> None:
    assert _alerts_with_restart(START + 120) == _alerts_with_restart(None)


def test_charts_record_a_pooled_series_like_any_other() -> None:
    # `paywatch report` charts a provider's latency: its value, and the median its
    # operations' normals expected of the window's calls.
    cfg = load_config(None)
    pipe = Pipeline(cfg)
    rec = SeriesRecorder(pipe, {("latency", series_key({"provider": "alipay"}))})
    encoded = (orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY) for ev in mix_shift(3600, 2400))
    for _ in replay_batches(pipe, chunked(enumerate(encoded), "t", cfg.kafka.max_batch)):
        pass
    (trace,) = rec.traces.values()
    at = dict(zip(trace.t_ms, trace.expected, strict=True))
    early = [e for t, e in at.items() if T0 + 1_200_000 <= t < T0 + 2_400_000]
    late = [e for t, e in at.items() if t >= T0 + 2_500_000]
    # The expectation follows the mix (9 queries in 10: ~77 ms; 9 payments: ~550 ms),
    # and the score stays low: the calls are normal for their operations.
    assert len(early) >= 100 and len(late) >= 90
    assert float(np.median(early)) < 120 < 400 < float(np.median(late)) < 700
    assert max(trace.score) < 0.5


def test_metrics_list_a_pooled_series_under_its_rule() -> None:
    # /metrics' alert_firing gauge has a row per rule and exported series it judges: the
    # provider's latency (pooled) keeps its row.
    cfg = load_config(None)
    pipe, metrics = Pipeline(cfg), PaymentMetrics(cfg)
    values = [orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY) for ev in mix_shift(600, 600)]
    src = SourceColumns(["t"] * len(values), [0] * len(values), range(len(values)))
    window = pipe.process(values, src).judged[-1]
    sids, _ = metrics._exported(window)
    rows = {(rule, r) for rule, _, r, _ in firing_state(window, pipe.state.rules, sids, [])}
    provider = [
        i
        for i, s in enumerate(sids.tolist())
        if window.registry.labels(s) == {"provider": "alipay"}
    ]
    assert [("latency", r) in rows for r in provider] == [True]
