"""End to end against the real local broker: events in, alerts and DLQ records out.

No sleeps: a test waits for positive events (the worker committed up to the end of
what was produced, the worker polled again) and moves the worker's clock itself.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import TopicPartition

from stream.alerting.record import AlertRecord
from stream.clock import ManualClock
from stream.config import Config, KafkaConfig
from stream.ingest.kafka_client import ensure_topics
from stream.ingest.kafka_source import KafkaEventSource
from stream.ingest.source import Batch, Offsets
from stream.live.worker import BatchTiming, run_worker
from stream.offline.kafka_replay import KafkaSpec
from stream.offline.kafka_replay import read_topic as replay_topic
from stream.pipeline import StepResult
from stream.sim.broker import free_port
from stream.sim.produce import produce_events
from tests.traffic import OUTAGE, T0, traffic

WALL = T0 + 3_600_000  # the worker's clock in these tests


class WatchedSource(KafkaEventSource):
    """Kafka's event source, telling the test how far the worker has read and committed."""

    def __init__(self, cfg: KafkaConfig) -> None:
        super().__init__(cfg)
        self.committed: Offsets = {}
        self.polls = 0
        self._progress = asyncio.Event()

    async def next_batch(self, timeout_ms: int = 200) -> Batch:
        self.polls += 1
        self._progress.set()
        return await super().next_batch(timeout_ms)

    def commit_soon(self, offsets: Offsets) -> None:
        super().commit_soon(offsets)
        self.committed.update(offsets)
        self._progress.set()

    async def until(self, done: Callable[[], bool], timeout_s: float = 60.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not done():
                self._progress.clear()
                await self._progress.wait()

    async def all_committed(self, produced: int) -> None:
        """Until the worker committed ``produced`` records of the events topic and its roll-up
        tasks every record shipped to them: all judged and published."""
        topic = self.cfg.events_topic
        await self.until(
            lambda: sum(o for tp, o in self.committed.items() if tp.topic == topic) >= produced
        )
        for other in self.topics[1:]:  # shipments were acknowledged before that commit
            spec = KafkaSpec(self.cfg.bootstrap_servers, other)
            ends: dict[int, int] = {}
            for _, partition, offset, _ in await replay_topic(spec, idle_s=1.0):
                ends[partition] = max(ends.get(partition, 0), offset + 1)
            await self.until(
                lambda t=other, e=ends: all(  # type: ignore[misc]
                    self.committed.get(TopicPartition(t, p), 0) >= o for p, o in e.items()
                )
            )

    async def polled(self, times: int = 2) -> None:
        """Until the worker asked for records ``times`` more times (a full loop has run)."""
        target = self.polls + times
        await self.until(lambda: self.polls >= target)


async def read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every record of ``topic`` up to its current end, in order (one partition)."""
    records = await replay_topic(KafkaSpec(bootstrap, topic, None, None))
    return [orjson.loads(value) for _, _, _, value in records if value is not None]


async def test_outage_produces_alerts_and_bad_records_go_to_dlq(kafka_config: Config) -> None:
    k = kafka_config.kafka
    await ensure_topics(k.bootstrap_servers, [k.events_topic, k.dlq_topic, k.alerts_topic])
    bad: list[bytes] = [
        b"{not json",
        orjson.dumps(
            {
                "schema_version": 1,
                "event_type": "provider_call",
                "event_id": "x1",
                "event_ts": T0 + 1000,
                "service": "checkout",
                "provider": "alipay",
                "merchant_id": "m1",
                "operation": "create_payment",
                "outcome": "success",
                "latency_ms": -5,
            }
        ),
    ]
    events: list[dict[str, Any] | bytes] = [*traffic()]
    events[100:100] = bad
    produced = await produce_events(events, k.bootstrap_servers, k.events_topic)

    stop = asyncio.Event()
    seen: list[AlertRecord] = []
    alert_batches = [0]

    def count_alert_batches(result: StepResult, timing: BatchTiming) -> None:
        alert_batches[0] += bool(result.alerts and result.closed)

    kafka_config.metrics.port = free_port()
    source = WatchedSource(k)
    clock = ManualClock(WALL)
    worker = asyncio.create_task(
        run_worker(
            kafka_config, stop, [seen.extend], source=source, clock=clock,
            observe=count_alert_batches,
        )
    )  # fmt: skip
    try:
        await source.all_committed(produced)
        # Gauges refresh once a second of the worker's clock: move it, let a loop run.
        clock.advance(1.0)
        await source.polled(2)
        url = f"http://127.0.0.1:{kafka_config.metrics.port}/metrics"
        scraped = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    finally:
        stop.set()
        stats = await asyncio.wait_for(worker, 30)
    alerts = await read_topic(k.bootstrap_servers, k.alerts_topic)
    dlq = await read_topic(k.bootstrap_servers, k.dlq_topic)

    metrics = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in scraped.decode().splitlines()
        if line and not line.startswith("#")
    }
    assert metrics['paywatch_events_total{event_type="provider_call"}'] == len(traffic())
    assert sum(v for m, v in metrics.items() if m.startswith("paywatch_dlq_total")) == 2
    assert metrics["paywatch_alert_latency_seconds_count"] == alert_batches[0]
    assert alert_batches[0] in (1, 2)  # firing and resolved, in one batch or two
    assert sum(v for m, v in metrics.items() if m.startswith("paywatch_consumer_lag")) == 0

    provider_level = [a for a in alerts if a["series"] == {"provider": "alipay"}]
    assert [a["status"] for a in provider_level] == ["firing", "resolved"]
    firing, resolved = provider_level
    assert firing["alert_id"] == resolved["alert_id"]
    assert firing["fingerprint"] == resolved["fingerprint"]
    assert firing["started_at"] == T0 + OUTAGE[0]
    assert resolved["resolved_at"] == T0 + OUTAGE[1]
    assert firing["signal"] == "error_rate" and firing["severity"] == "critical"
    assert (firing["value"], firing["score"]) == (0.507463, 1.0)
    assert firing["detected_at"] == resolved["detected_at"] == WALL
    # Nothing but alipay ever alerts: the healthy providers stay quiet.
    assert {a["series"]["provider"] for a in alerts} == {"alipay"}
    assert len(alerts) == 6  # provider, operation and merchant m0: firing, then resolved
    # The notifier saw what the topic got, in order.
    assert [r.to_dict() for r in seen] == alerts

    assert [(d["field"], d["source"]["offset"]) for d in dlq] == [(None, 100), ("latency_ms", 101)]
    assert dlq[0]["reason"].startswith("record is not valid JSON: ")
    assert dlq[1]["reason"] == "latency_ms must be a finite number >= 0, got -5"
    assert all(d["source"]["topic"] == k.events_topic for d in dlq)
    assert stats.rejected == 2


async def test_a_restarted_worker_resumes_after_the_last_commit(kafka_config: Config) -> None:
    """Offsets are committed in the background; stopping flushes them, so the next worker
    of the group reads each event exactly once (none twice, none lost)."""
    k = kafka_config.kafka
    k.max_batch = 500  # many batches, many commits in flight
    kafka_config.metrics.port = 0
    await ensure_topics(k.bootstrap_servers, [k.events_topic, k.dlq_topic, k.alerts_topic])
    events: list[dict[str, Any] | bytes] = [*traffic(200)]
    half = len(events) // 2

    async def run_to_the_end(produced: int) -> int:
        """Run a worker until it has committed the ``produced`` records of the topic;
        returns how many records it read."""
        stop = asyncio.Event()
        seen = [0]

        def count(result: StepResult, timing: BatchTiming) -> None:
            seen[0] += timing.records

        source = WatchedSource(k)
        task = asyncio.create_task(
            run_worker(kafka_config, stop, notify=False, observe=count, source=source)
        )
        try:
            await source.all_committed(produced)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        return seen[0]

    await produce_events(events[:half], k.bootstrap_servers, k.events_topic)
    assert await run_to_the_end(half) == half
    await produce_events(events[half:], k.bootstrap_servers, k.events_topic)
    # Had the first worker's offsets not been committed, this one would read both halves.
    assert await run_to_the_end(len(events)) == len(events) - half
