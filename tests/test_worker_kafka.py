"""End to end against the real local broker: events in, alerts and DLQ records out."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from stream.alerting.record import AlertRecord
from stream.config import Config
from stream.ingest.kafka_client import ensure_topics
from stream.live.worker import run_worker
from stream.sim.broker import free_port
from stream.sim.produce import produce_events
from tests.traffic import OUTAGE, T0, traffic


async def read_all(
    bootstrap: str, topic: str, expect: int, timeout_s: float = 20.0
) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(out) < expect and asyncio.get_running_loop().time() < deadline:
            got = await consumer.getmany(timeout_ms=200)
            for records in got.values():
                out.extend(orjson.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return out


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
    await produce_events(events, k.bootstrap_servers, k.events_topic)

    stop = asyncio.Event()
    seen: list[AlertRecord] = []
    kafka_config.metrics.port = free_port()
    worker = asyncio.create_task(run_worker(kafka_config, stop, [seen.extend]))
    try:
        alerts = await read_all(k.bootstrap_servers, k.alerts_topic, expect=2)
        dlq = await read_all(k.bootstrap_servers, k.dlq_topic, expect=2)
        await asyncio.sleep(1.2)  # gauges refresh once a second
        url = f"http://127.0.0.1:{kafka_config.metrics.port}/metrics"
        scraped = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    finally:
        stop.set()
        stats = await asyncio.wait_for(worker, 30)

    metrics = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in scraped.decode().splitlines()
        if line and not line.startswith("#")
    }
    assert metrics['paywatch_events_total{event_type="provider_call"}'] == len(traffic())
    assert sum(v for m, v in metrics.items() if m.startswith("paywatch_dlq_total")) == 2
    assert metrics["paywatch_alert_latency_seconds_count"] >= 1
    assert sum(v for m, v in metrics.items() if m.startswith("paywatch_consumer_lag")) == 0

    provider_level = [a for a in alerts if a["series"] == {"provider": "alipay"}]
    assert [a["status"] for a in provider_level] == ["firing", "resolved"]
    firing, resolved = provider_level
    assert firing["alert_id"] == resolved["alert_id"]
    assert firing["fingerprint"] == resolved["fingerprint"]
    assert firing["started_at"] == T0 + OUTAGE[0]
    assert resolved["resolved_at"] == T0 + OUTAGE[1]
    assert firing["signal"] == "error_rate" and firing["severity"] == "critical"
    assert 0.4 < firing["value"] < 0.6 and 0.5 <= firing["score"] <= 1
    # Nothing but alipay ever alerts: the healthy providers stay quiet.
    assert {a["series"]["provider"] for a in alerts} == {"alipay"}
    # The notifier saw what the topic got, in order.
    assert [r.to_dict() for r in seen] == alerts[: len(seen)]

    reasons = {d["reason"] for d in dlq}
    assert len(dlq) == 2
    assert any("JSON" in r or "json" in r for r in reasons)
    assert {d["field"] for d in dlq} >= {"latency_ms"}
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

    async def run_until_idle(expected: int) -> int:
        """Run a worker until it has seen ``expected`` records and then nothing for 1 s."""
        stop = asyncio.Event()
        seen = [0]

        def count(result: Any, timing: Any) -> None:
            seen[0] += timing.records

        task = asyncio.create_task(run_worker(kafka_config, stop, notify=False, observe=count))
        try:
            last, deadline = -1, asyncio.get_running_loop().time() + 60
            while (seen[0] < expected or seen[0] != last) and not task.done():
                assert asyncio.get_running_loop().time() < deadline, seen[0]
                last = seen[0]
                await asyncio.sleep(1.0)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        return seen[0]

    await produce_events(events[:half], k.bootstrap_servers, k.events_topic)
    assert await run_until_idle(half) == half
    await produce_events(events[half:], k.bootstrap_servers, k.events_topic)
    # Had the first worker's offsets not been committed, this one would read both halves.
    assert await run_until_idle(len(events) - half) == len(events) - half
