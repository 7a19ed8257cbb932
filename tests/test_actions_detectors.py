"""Duplicate storms and amount mismatches in the simulator page once each (their own
rules); the promotion burst — three times the traffic of the biggest merchant — does not."""

from __future__ import annotations

from stream.config import Config
from stream.ingest.events import Source
from stream.pipeline import Pipeline
from stream.sim.simulate import Incident, SimConfig, encode, simulate


def test_duplicate_storm_and_amount_mismatch_page_once_each_and_the_promotion_does_not() -> None:
    incidents = [
        Incident("duplicate_storm", 600, 120, provider="wechatpay"),
        Incident("amount_mismatch", 900, 120, provider="alipay", merchant_id="M1004"),
        Incident("promotion", 1200, 180, merchant_id="M1001"),
    ]
    sim = SimConfig(seed=3, duration_s=1500, rate=40, incidents=incidents)
    values = [encode(e) for e in simulate(sim)]
    pipeline = Pipeline(Config().validate())
    alerts = []
    for at in range(0, len(values), 5000):
        chunk = values[at : at + 5000]
        alerts += pipeline.process(
            chunk, [Source("e", 0, at + k) for k in range(len(chunk))]
        ).alerts
    alerts += pipeline.flush().alerts
    firing = [a for a in alerts if a.firing]
    assert len({a.alert_id for a in firing}) == 2  # one episode each, whatever re-announces
    episodes = {
        (a.rule, tuple(sorted(a.series.items())), (a.started_at - sim.start_ms) // 1000)
        for a in firing
    }
    assert sorted(episodes) == [
        ("amount_mismatch", (("merchant_id", "M1004"), ("provider", "alipay")), 910),
        ("duplicate_callbacks", (("provider", "wechatpay"),), 600),
    ]
