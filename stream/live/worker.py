"""The live worker: Kafka events → pipeline → alerts topic, DLQ and notifiers.

Offsets are committed only after a batch's alerts and DLQ records are
acknowledged, so a crash replays, never loses (at-least-once); the commit itself
runs in the background, in order, while the next batch is processed.  Notifiers
run after the commit decision and must not block: slow channels queue elsewhere.

Notifications (routes, grouping, silences, delivery, history) are fed the
batch's alert records and ticked on every loop iteration with the wall clock;
they only queue work, and delivery runs in its own tasks.  The control topic is
followed by a separate task (see :mod:`stream.alerting.control`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from stream.alerting.control import ControlReader
from stream.alerting.notifications import InOrderThread, Notifications
from stream.alerting.record import AlertRecord
from stream.config import Config, KafkaConfig
from stream.ingest.decode_pool import DecodePool, OrderedDecoder, default_workers
from stream.ingest.kafka import Batch, EventSource, Publisher, ensure_topics
from stream.live.prometheus import WorkerMetrics
from stream.pipeline import Pipeline, PipelineStats, StepResult

log = logging.getLogger("paywatch.worker")

AlertSink = Callable[[list[AlertRecord]], None]


@dataclass(frozen=True)
class BatchTiming:
    """When one batch passed each point (``time.perf_counter`` seconds)."""

    records: int
    received: float  # came back from Kafka
    started: float  # windowing began
    acked: float  # its alerts and DLQ records were acknowledged by the broker


BatchObserver = Callable[[StepResult, BatchTiming], None]


def wall_ms() -> int:
    return int(time.time() * 1000)


async def run_worker(
    config: Config,
    stop: asyncio.Event,
    sinks: Sequence[AlertSink] | None = None,
    *,
    progress_every_s: float = 10.0,
    consumer_overrides: dict[str, Any] | None = None,
    notifications: Notifications | None = None,
    notify: bool = True,
    drain_s: float = 3.0,
    observe: BatchObserver | None = None,
) -> PipelineStats:
    """Consume until ``stop`` is set; returns the pipeline's counters.

    Notifications come from ``config.notify`` unless ``notifications`` is given
    (tests inspect it) or ``notify`` is False (no routes, history or control topic).
    Their work runs in a thread of its own (:class:`~stream.alerting.notifications.InOrderThread`).
    On stop, pending deliveries get up to ``drain_s`` seconds to finish.
    ``observe`` sees every batch's result and timings (the benchmark uses it).
    """
    k = config.kafka
    if notify and notifications is None:
        notifications = Notifications(config)  # first: a bad history path is a config error
    try:
        await ensure_topics(
            k.bootstrap_servers, [k.events_topic, k.dlq_topic, k.alerts_topic, k.control_topic]
        )
    except BaseException:
        if notifications is not None:
            await notifications.stop(0)
        raise
    pipeline = Pipeline(config, live=True)
    source = EventSource(k, **(consumer_overrides or {}))
    publisher = Publisher(k)
    # Dispatching and history writes run in their own thread, off the consumer's loop.
    background = None if notifications is None else InOrderThread(notifications)
    control = None if background is None else ControlReader(k, background.apply_control)
    async with contextlib.AsyncExitStack() as stack:
        if background is not None:
            # Registered first, so it runs last: delivery drains after Kafka is closed.
            stack.push_async_callback(background.stop, drain_s)
            await background.notifications.start()
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        await source.start()
        stack.push_async_callback(source.stop)
        if control is not None:
            await control.start()
            stack.push_async_callback(control.stop)
        metrics = WorkerMetrics(config.metrics.port, config.metrics.host)
        stack.callback(metrics.close)
        workers = default_workers() if k.decode_workers < 0 else k.decode_workers
        pool = DecodePool(workers) if workers else None
        if pool is not None:
            stack.callback(pool.close)
            await pool.warm_up()
        await _consume(
            pipeline,
            source,
            publisher,
            background,
            stop,
            sinks or [],
            k,
            progress_every_s,
            pool,
            metrics,
            observe,
        )
    return pipeline.state.stats


async def _consume(
    pipeline: Pipeline,
    source: EventSource,
    publisher: Publisher,
    background: InOrderThread | None,
    stop: asyncio.Event,
    sinks: Sequence[AlertSink],
    k: KafkaConfig,
    progress_every_s: float,
    pool: DecodePool | None = None,
    metrics: WorkerMetrics | None = None,
    observe: BatchObserver | None = None,
) -> None:
    """The consumer loop.  Batches are decoded by an :class:`OrderedDecoder` (in the
    child process, or here when the child has a queue already) while earlier ones are
    windowed and judged; offsets are committed in order, each after its own batch's
    output is acknowledged."""
    last_report = time.monotonic()
    last_records = 0
    log.info("consuming %s from %s as group %s", k.events_topic, k.bootstrap_servers, k.group_id)

    done: dict[TopicPartition, int] = {}
    last_gauges = 0.0

    async def window_next() -> None:
        decoded, (batch, received) = await decoder.next()
        now, started = wall_ms(), time.perf_counter()
        result = pipeline.process_decoded(decoded, len(batch.values), now)
        await finish(result, batch, now, received, started)

    async def finish(
        result: StepResult, batch: Batch, now: int, received: float, started: float
    ) -> None:
        wire = [rec.to_dict() for rec in result.alerts]  # alert v1 JSON objects
        await publisher.publish(wire, result.rejected)
        acked = time.perf_counter()
        if metrics is not None:
            latency = acked - started if result.closed else None
            metrics.observe(pipeline.state.stats, result.rejected, wire, latency)
        if observe is not None:
            observe(result, BatchTiming(len(batch.values), received, started, acked))
        source.commit_soon(batch.offsets)
        done.update(batch.offsets)
        if background is not None:
            # After the commit decision, like the sinks: at-least-once may hand the
            # dispatcher a replayed record, which it recognises and ignores.
            if result.alerts:
                background.on_alerts(result.alerts, now)
            background.tick()
        if result.alerts:
            for sink in sinks:
                sink(result.alerts)

    def housekeeping() -> None:
        nonlocal last_gauges, last_report, last_records
        if metrics is not None and time.monotonic() - last_gauges >= 1.0:
            last_gauges = time.monotonic()
            metrics.state(pipeline.state.lifecycle.firing(), pipeline.state.windows.registry.active)
            consumer = source.consumer
            metrics.consumer_lag({tp: consumer.highwater(tp) for tp in consumer.assignment()}, done)
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

    decoder: OrderedDecoder[tuple[Batch, float]] = OrderedDecoder(pool)
    # The next read from Kafka runs as a task, so records that arrive while we wait for
    # the child go to it at once: the child never idles while we window.
    fetch: asyncio.Future[Batch] | None = None
    try:
        while not stop.is_set() or len(decoder):
            housekeeping()
            reading = not stop.is_set() and not decoder.full
            if reading and fetch is None:
                fetch = asyncio.ensure_future(source.next_batch(timeout_ms=100))
            if len(decoder) and (decoder.head_ready() or not reading):
                await window_next()
                continue
            assert fetch is not None
            if len(decoder):
                either: set[asyncio.Future[Any]] = {fetch, decoder.head()}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    continue  # the child finished first: window its batch
            batch = await fetch
            fetch = None
            if batch.values:
                tag = (batch, time.perf_counter())
                decoder.submit(batch.values, batch.sources, pipeline.decode_args(), tag)
            elif not len(decoder):
                now = wall_ms()
                started = time.perf_counter()
                await finish(pipeline.tick(now), batch, now, started, started)
    finally:
        if fetch is not None:
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fetch
    await source.flush_commits()
