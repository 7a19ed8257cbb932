"""The worker on in-memory events and publisher, with a clock the test moves: no broker,
no sleeps, and exactly what it publishes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

from stream.clock import ManualClock
from stream.config import Config, config_from_dict
from stream.ingest.memory import MemorySource
from stream.live.memory import MemoryPublisher
from stream.live.worker import run_worker
from stream.pipeline import PipelineStats
from tests.traffic import OUTAGE, T0, traffic

WALL = T0 + 3_600_000  # the worker's clock: an hour after the traffic's event time
PROVIDERS = ("alipay", "wechatpay", "paypal")
ALIPAY_SERIES = [
    {"provider": "alipay"},
    {"provider": "alipay", "operation": "create_payment"},
    # Only m0's alipay calls fail (even i with i % 3 == 0).
    {"provider": "alipay", "operation": "create_payment", "merchant_id": "m0"},
]


def config() -> Config:
    return config_from_dict({"metrics": {"port": 0}, "kafka": {"decode_workers": 0}})


class Worker:
    """A running worker and its in-memory ends."""

    def __init__(self, cfg: Config, records: list[bytes]) -> None:
        self.cfg = cfg
        self.source = MemorySource(records, topic=cfg.kafka.events_topic, max_batch=500)
        self.publisher = MemoryPublisher(cfg.kafka)
        self.clock = ManualClock(WALL)
        self.stop = asyncio.Event()
        self.stats: PipelineStats | None = None

    def alerts(self) -> list[tuple[Any, ...]]:
        keys = ("status", "series", "started_at", "resolved_at", "window_end", "detected_at")
        return [tuple(a[k] for k in keys) for a in self.publisher.alerts]


@asynccontextmanager
async def running(records: list[bytes]) -> AsyncIterator[Worker]:
    w = Worker(config(), records)
    task = asyncio.create_task(
        run_worker(
            w.cfg, w.stop, notify=False, source=w.source, publisher=w.publisher, clock=w.clock
        )
    )
    try:
        async with asyncio.timeout(60):
            await w.source.all_committed()
            yield w
    finally:
        w.stop.set()
        w.stats = await asyncio.wait_for(task, 30)


def encoded(events: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(e) for e in events]


async def test_an_outage_publishes_exactly_its_alerts_and_the_bad_records() -> None:
    records = encoded(traffic())
    records[100:100] = [b"{not json", b'{"schema_version":1}']
    async with running(records) as w:
        pass
    start, end = T0 + OUTAGE[0], T0 + OUTAGE[1]
    assert w.alerts() == [
        *(("firing", s, start, None, start + 10_000, WALL) for s in ALIPAY_SERIES),
        # Three healthy windows say it recovered (end + 30 s); the relapse hold of an
        # outage this sharp is about 20 s (the detection target d + 20 s, d ~ 0.1 s), so
        # the recovery is announced with the window that ends 30 s later.
        *(("resolved", s, start, end, end + 60_000, WALL) for s in ALIPAY_SERIES),
    ]
    firing = w.publisher.alerts[0]
    assert (firing["severity"], firing["signal"], firing["rule"]) == (
        "critical",
        "error_rate",
        "system_error_rate",
    )
    topic = w.cfg.kafka.events_topic
    assert w.publisher.dlq == [
        {
            "reason": "record is not valid JSON: unexpected character, expected a string key:"
            " line 1 column 2 (char 1)",
            "field": None,
            "source": {"topic": topic, "partition": 0, "offset": 100},
            "raw": "{not json",
        },
        {
            "reason": "missing required field 'event_type'",
            "field": "event_type",
            "source": {"topic": topic, "partition": 0, "offset": 101},
            "raw": '{"schema_version":1}',
        },
    ]
    # The wire form: alerts keyed by fingerprint, DLQ records by source, reason in a header.
    alert_keys = [m.key for m in w.publisher.messages if m.topic == w.cfg.kafka.alerts_topic]
    assert alert_keys == [a["fingerprint"].encode() for a in w.publisher.alerts]
    dlq = [m for m in w.publisher.messages if m.topic == w.cfg.kafka.dlq_topic]
    assert [(m.key, m.headers) for m in dlq] == [
        (f"{topic}:0:100".encode(), (("reason", w.publisher.dlq[0]["reason"].encode()),)),
        (f"{topic}:0:101".encode(), (("reason", b"missing required field 'event_type'"),)),
    ]
    assert w.source.committed == w.source.end_offsets()
    assert w.source.stopped and w.publisher.stopped
    assert w.stats is not None
    assert (w.stats.records, w.stats.rejected, w.stats.calls) == (len(records), 2, len(records) - 2)


async def test_a_silent_stream_closes_its_windows_when_the_clock_moves_on() -> None:
    """Traffic stops mid-outage: nothing happens until ``idle_advance_s`` of silence on the
    worker's clock; then the watermark follows the clock and windows close.  Empty windows
    are no evidence of recovery: the episode stays open until ``stale_after_s`` of them
    have closed (which also shows the silent windows do close)."""
    async with running(encoded(traffic(150))) as w:
        start = T0 + OUTAGE[0]
        firing = [("firing", s, start, None, start + 10_000, WALL) for s in ALIPAY_SERIES]
        assert w.alerts() == firing
        w.clock.advance(w.cfg.windows.idle_advance_s - 0.1)
        await w.source.polled(2)
        assert w.alerts() == firing
        w.clock.advance(45.1)
        await w.source.polled(2)
        assert w.alerts() == firing  # silent windows closed, and resolved nothing
        w.clock.advance(w.cfg.alerts.stale_after_s)
        await w.source.polled(2)
        now = WALL + 1_860_000  # the worker's clock: 14.9 + 45.1 + 1800 s on
        # Ten minutes without a call is traffic gone: every provider and operation pages.
        silent = T0 + 600_000
        levels = [{"provider": p} for p in PROVIDERS]
        levels += [{"provider": p, "operation": "create_payment"} for p in PROVIDERS]
        drops = [("firing", s, silent, None, silent + 10_000, now) for s in levels]
        # The outage resolves as stale: at its last evidence (the last event), in the
        # window stale_after_s later.
        last = T0 + 150_000
        stale = last + int(w.cfg.alerts.stale_after_s * 1000)
        resolved = [("resolved", s, start, last, stale, now) for s in ALIPAY_SERIES]
        assert w.alerts() == [*firing, *drops, *resolved]
    assert w.publisher.dlq == []
