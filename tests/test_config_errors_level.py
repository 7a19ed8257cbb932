"""A merchant's broken keys fail every operation it calls: the merchant's series across
operations (``[provider, merchant_id]``) gathers that evidence whole and pages first;
no error-rate rule judges that mixed series (latency does, on its operations' pooled
evidence, and the merchant's latency is normal here)."""

from __future__ import annotations

from typing import Any

import orjson

from stream.config import load_config
from stream.offline.backtest import chunked, replay_batches
from stream.pipeline import Pipeline
from stream.sim.simulate import Incident, SimConfig, simulate

BROKEN = "M1009"
SIM = SimConfig(
    seed=5, duration_s=1800.0, rate=20.0, merchants=12, daily=False, metrics=False,
    incidents=[Incident("merchant_misconfig", 1200.0, 300.0, merchant_id=BROKEN, magnitude=1.0)],
)  # fmt: skip


def alerts() -> list[Any]:
    cfg = load_config(None)
    values = (orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY) for ev in simulate(SIM))
    steps = replay_batches(Pipeline(cfg), chunked(enumerate(values), "t", cfg.kafka.max_batch))
    return [rec for step in steps for rec in step.alerts]


def test_broken_keys_page_the_merchant_across_operations_first() -> None:
    every = alerts()
    firing = [r for r in every if r.rule == "config_errors" and r.status == "firing"]
    mine = [r for r in firing if r.series.get("merchant_id") == BROKEN]
    assert mine, "the merchant's broken keys were not paged"
    assert "operation" not in mine[0].series, mine[0].series
    assert {r.series.get("merchant_id") for r in firing} <= {BROKEN, None}
    mixed = [r for r in every if "merchant_id" in r.series and "operation" not in r.series]
    assert {r.rule for r in mixed} == {"config_errors"}
