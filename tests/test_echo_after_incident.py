"""A provider's incident leaves evidence in the sparse series beneath it (a merchant's
payments at one call a minute): when the provider's episode ends, that evidence is
explained, and those series start over instead of paging on their next failing call
minutes later (an echo: a false page after the incident)."""

from __future__ import annotations

import orjson

from stream.config import load_config
from stream.offline.backtest import chunked, replay_batches
from stream.pipeline import Pipeline
from stream.sim.simulate import Incident, SimConfig, simulate

START, LENGTH, GRACE = 1800.0, 720.0, 180.0
SIM = SimConfig(
    seed=1, duration_s=4800.0, rate=60.0, merchants=60, daily=False, metrics=False,
    incidents=[Incident("gradual_degradation", START, LENGTH, provider="alipay", magnitude=0.2)],
)  # fmt: skip


def test_series_beneath_an_ended_incident_do_not_page_its_echo() -> None:
    cfg = load_config(None)
    values = (orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY) for ev in simulate(SIM))
    steps = replay_batches(Pipeline(cfg), chunked(enumerate(values), "t", cfg.kafka.max_batch))
    firing = [r for s in steps for r in s.alerts if r.status == "firing"]
    alipay = [r for r in firing if r.series.get("provider") == "alipay"]
    start = SIM.start_ms + START * 1000
    end = SIM.start_ms + (START + LENGTH + GRACE) * 1000
    during = [r for r in alipay if start < r.window_end <= end]
    # The incident paged at provider level, and series beneath it gathered evidence.
    assert any(r.series == {"provider": "alipay"} for r in during)
    assert any("merchant_id" in r.series for r in during)
    after = [(r.rule, r.series) for r in alipay if r.window_end > end]
    assert after == []  # was: system_error_rate alipay/create_payment/M1055, 140 s later
