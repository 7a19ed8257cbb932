"""The live worker: Kafka events → pipeline → alerts topic, DLQ and notifiers.

Offsets are committed only after a batch's alerts and DLQ records are
acknowledged, so a crash replays, never loses (at-least-once).  Notifiers run
after the commit decision and must not block: slow channels queue elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from stream.config import Config
from stream.kafka_io import EventSource, Publisher, ensure_topics
from stream.pipeline import Pipeline, PipelineStats

log = logging.getLogger("paywatch.worker")

AlertSink = Callable[[list[dict[str, Any]]], None]


def wall_ms() -> int:
    return int(time.time() * 1000)


async def run_worker(
    config: Config,
    stop: asyncio.Event,
    sinks: Sequence[AlertSink] | None = None,
    *,
    progress_every_s: float = 10.0,
    consumer_overrides: dict[str, Any] | None = None,
) -> PipelineStats:
    """Consume until ``stop`` is set; returns the pipeline's counters."""
    k = config.kafka
    await ensure_topics(
        k.bootstrap_servers, [k.events_topic, k.dlq_topic, k.alerts_topic, k.control_topic]
    )
    pipeline = Pipeline(config, live=True)
    source = EventSource(k, **(consumer_overrides or {}))
    publisher = Publisher(k)
    await publisher.start()
    try:
        await source.start()
    except Exception:
        await publisher.stop()
        raise
    sinks = sinks or []
    stats = pipeline.state.stats
    last_report = time.monotonic()
    last_records = 0
    log.info("consuming %s from %s as group %s", k.events_topic, k.bootstrap_servers, k.group_id)
    try:
        while not stop.is_set():
            batch = await source.next_batch(timeout_ms=100)
            now = wall_ms()
            if batch.values:
                result = pipeline.process(batch.values, batch.sources, now)
            else:
                result = pipeline.tick(now)
            await publisher.publish(result.alerts, result.rejected)
            await source.commit(batch.offsets)
            if result.alerts:
                for sink in sinks:
                    sink(result.alerts)
            if time.monotonic() - last_report >= progress_every_s:
                elapsed = time.monotonic() - last_report
                stats = pipeline.state.stats
                log.info(
                    "%.0f events/s, %d records, %d rejected to DLQ, %d late, %d windows closed, "
                    "%d alerts firing",
                    (stats.records - last_records) / elapsed,
                    stats.records,
                    stats.rejected,
                    stats.late,
                    stats.windows_closed,
                    len(pipeline.state.lifecycle.firing()),
                )
                last_report, last_records = time.monotonic(), stats.records
    finally:
        await source.stop()
        await publisher.stop()
    return pipeline.state.stats
