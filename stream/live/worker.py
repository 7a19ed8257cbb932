"""The live worker: events → pipeline → alerts topic, DLQ and notifiers.

Offsets are committed only after a batch's alerts and DLQ records are
acknowledged, so a crash replays, never loses (at-least-once); the commit itself
runs in the background, in order, while the next batch is processed.  Notifiers
run after the commit decision and must not block: slow channels queue elsewhere.

Notifications (routes, grouping, silences, delivery, history) are fed the
batch's alert records and ticked on every loop iteration with the worker's
clock; they only queue work, and delivery runs in its own tasks.  The control
topic is followed by a separate task (see :mod:`stream.live.control_reader`).

Events come from an :class:`~stream.ingest.source.EventSource` and output goes to a
:class:`~stream.live.publisher.Publisher`: Kafka by default, in memory in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from stream.alerting.notifications import InOrderThread, Notifications
from stream.alerting.record import AlertRecord
from stream.clock import WALL_CLOCK, Clock
from stream.config import Config
from stream.ingest.decode_pool import DecodePool, OrderedDecoder, default_workers
from stream.ingest.kafka_client import ensure_topics, security_kwargs
from stream.ingest.kafka_source import KafkaEventSource
from stream.ingest.source import Batch, EventSource, Offsets
from stream.live.control_reader import ControlReader
from stream.live.health import BrokerProbe, WorkerHealth
from stream.live.notify_feed import NotifyFeed
from stream.live.orphans import OrphanCloser
from stream.live.prometheus import WorkerMetrics
from stream.live.publisher import AlertObject, KafkaPublisher, Message, Publisher
from stream.live.rebalance import PartitionHandover, TaskHandover
from stream.live.state_store import Checkpointer, KafkaStateStore, StateStore, TaskCheckpointer
from stream.live.tasks import (
    OnePipeline,
    Part,
    TaskSet,
    Work,
    partition_counts,
    repartition_topic,
)
from stream.pipeline import Pipeline, PipelineStats, StepResult

log = logging.getLogger("paywatch.worker")

AlertSink = Callable[[list[AlertRecord]], None]


@dataclass(frozen=True)
class BatchTiming:
    """When one batch passed each point (``time.perf_counter`` seconds)."""

    records: int
    received: float  # came back from the source
    started: float  # windowing began
    acked: float  # its alerts and DLQ records were acknowledged by the publisher


BatchObserver = Callable[[StepResult, BatchTiming], None]


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
    source: EventSource | None = None,
    publisher: Publisher | None = None,
    clock: Clock = WALL_CLOCK,
    state_store: StateStore | None = None,
) -> PipelineStats:
    """Consume until ``stop`` is set; returns the pipeline's counters.

    Notifications come from ``config.notify`` unless ``notifications`` is given
    (tests inspect it) or ``notify`` is False (no routes, history or control topic).
    Their work runs in a thread of its own (:class:`~stream.alerting.notifications.InOrderThread`).
    On stop, pending deliveries get up to ``drain_s`` seconds to finish.
    ``observe`` sees every batch's result and timings (the benchmark uses it).
    ``source`` and ``publisher`` default to Kafka's; given both (tests), the worker
    touches no broker: no topics are created and the control topic is not followed.
    ``clock`` is the wall clock of alert times, idle windows and notifications.
    State is checkpointed to ``state_store`` (default: the state topic), restored on assignment.
    """
    k = config.kafka
    on_kafka = source is None or publisher is None
    health = WorkerHealth(config.metrics.ready_max_lag)  # /readyz; errors survived, counted
    if notify and notifications is None:
        # First: a bad history path is a config error.
        notifications = Notifications(config, clock=clock)
    await _ensure_topics(config, notifications, on_kafka)
    source = source or KafkaEventSource(k, **(consumer_overrides or {}))
    publisher = publisher or KafkaPublisher(k, on_error=health.output_error)
    work, store, checkpointer, handover = await _work(config, source, publisher, state_store, clock)
    source.on_rebalance(handover)  # before start: the first assignment restores the state
    # Dispatching and history writes run in their own thread, off the consumer's loop.
    background = None if notifications is None else InOrderThread(notifications, clock)
    if notifications is not None and background is not None:
        background.on_error = notifications.on_error = health.output_error
    control, feed = _followers(config, background, store, on_kafka, clock, drain_s)
    async with contextlib.AsyncExitStack() as stack:
        if background is not None:
            # Registered first, so it runs last: delivery drains after Kafka is closed.
            stack.push_async_callback(background.stop, drain_s)
            await background.notifications.start()
        await _started(stack, publisher, store, source, control, feed)
        metrics = WorkerMetrics(config.metrics.port, config.metrics.host, config, health)
        stack.callback(metrics.close)
        if on_kafka:
            probe = BrokerProbe(k, health)
            probe.start()
            stack.push_async_callback(probe.stop)
        pool = await _decode_pool(stack, k.decode_workers)
        loop = ConsumeLoop(
            work,
            source,
            publisher,
            clock=clock,
            sinks=sinks or (),
            background=background if feed is None else None,
            pool=pool,
            metrics=metrics,
            observe=observe,
            progress_every_s=progress_every_s,
            health=health,
            checkpointer=checkpointer,
        )
        handover.loop = loop
        log.info(
            "consuming %s from %s as group %s", k.events_topic, k.bootstrap_servers, k.group_id
        )
        await loop.run(stop)
    return work.stats


def _followers(
    config: Config,
    background: InOrderThread | None,
    store: StateStore | None,
    on_kafka: bool,
    clock: Clock,
    drain_s: float,
) -> tuple[ControlReader | None, NotifyFeed | None]:
    """On Kafka, with notifications: the control topic's reader, and the dispatcher's feed —
    it reads the alerts topic itself, one owner per alert, and keeps its notification log
    in the state topic (:mod:`stream.live.notify_feed`)."""
    if background is None or not on_kafka:
        return None, None
    control = ControlReader(config.kafka, background.apply_control, clock=clock)
    return control, NotifyFeed(config, background, store, clock=clock, drain_s=drain_s)


async def _work(
    config: Config,
    source: EventSource,
    publisher: Publisher,
    state_store: StateStore | None,
    clock: Clock,
) -> tuple[
    Work,
    StateStore | None,
    Checkpointer | TaskCheckpointer | None,
    PartitionHandover | TaskHandover,
]:
    """What the loop feeds: tasks (``scale_out: tasks`` on Kafka) or one pipeline; with the
    state store, the checkpointer and the rebalance handler that go with it."""
    tasks = await _tasks(config, source, publisher)
    orphans = None  # closing what a cold start left open reads the alerts topic
    if isinstance(publisher, KafkaPublisher):
        orphans = OrphanCloser(config.kafka, publisher, clock)
    if tasks is None:
        pipeline = Pipeline(config, live=True)
        on_kafka = isinstance(source, KafkaEventSource) or isinstance(publisher, KafkaPublisher)
        store, cp, handover = _checkpoints(config, pipeline, state_store, on_kafka, clock)
        handover.orphans = orphans
        return OnePipeline(pipeline), store, cp, handover
    store = None if not config.state.checkpoint else state_store
    if config.state.checkpoint and store is None:
        store = KafkaStateStore(config.kafka, config.state.chunk_bytes)
    tcp = None
    if store is not None:
        tcp = TaskCheckpointer(tasks, store, config.kafka, config.state, clock)
    return tasks, store, tcp, TaskHandover(tasks, tcp, clock, orphans)


async def _tasks(config: Config, source: EventSource, publisher: Publisher) -> TaskSet | None:
    """``scale_out: tasks`` on Kafka: the task set, the repartition topic created with as
    many partitions as the events topic, and the source subscribed to both."""
    k = config.kafka
    if k.scale_out != "tasks" or not isinstance(source, KafkaEventSource):
        return None
    if not isinstance(publisher, KafkaPublisher):
        return None
    rtopic = repartition_topic(k)
    n = (await partition_counts(k, [k.events_topic]))[k.events_topic] or 1
    await ensure_topics(k.bootstrap_servers, [rtopic], partitions=n, security=security_kwargs(k))
    r = (await partition_counts(k, [rtopic]))[rtopic] or n
    source.topics = [k.events_topic, rtopic]
    log.info("tasks: %d source partitions, %d roll-up partitions (%s)", n, r, rtopic)
    return TaskSet(config, n, r)


async def _started(stack: contextlib.AsyncExitStack, *parts: Any) -> None:
    """Start each part (None: absent); stopped in reverse order when ``stack`` closes."""
    for part in parts:
        if part is not None:
            await part.start()
            stack.push_async_callback(part.stop)


async def _decode_pool(stack: contextlib.AsyncExitStack, configured: int) -> DecodePool | None:
    workers = default_workers() if configured < 0 else configured
    if not workers:
        return None
    pool = DecodePool(workers)
    stack.callback(pool.close)
    await pool.warm_up()
    return pool


def _checkpoints(
    config: Config, pipeline: Pipeline, store: StateStore | None, on_kafka: bool, clock: Clock
) -> tuple[StateStore | None, Checkpointer | None, PartitionHandover]:
    """The state store (the state topic on Kafka), when to checkpoint to it, and the
    rebalance handler that checkpoints on revocation and restores on assignment."""
    checkpointer = None
    if not config.state.checkpoint:
        store = None
    elif store is None and on_kafka:
        store = KafkaStateStore(config.kafka, config.state.chunk_bytes)
    if store is not None:
        checkpointer = Checkpointer(pipeline, store, config.kafka, config.state, clock)
    topic = config.kafka.events_topic
    return store, checkpointer, PartitionHandover(pipeline, checkpointer, clock, topic)


async def _ensure_topics(
    config: Config, notifications: Notifications | None, on_kafka: bool
) -> None:
    """Create the worker's topics (on Kafka); on failure, stop the notifications made before."""
    k = config.kafka
    try:
        if on_kafka:
            await ensure_topics(
                k.bootstrap_servers,
                [k.events_topic, k.dlq_topic, k.alerts_topic, k.control_topic, k.state_topic],
                security=security_kwargs(k),
            )
    except BaseException:
        if notifications is not None:
            await notifications.stop(0)
        raise


class ConsumeLoop:
    """The consumer loop, each batch through named steps:

    :meth:`fetch` (a task, so records that arrive while the decode process works go
    to it at once) → :meth:`decode` (an :class:`OrderedDecoder`: in the child
    process, or here when the child has a queue already) → :meth:`step` (the
    pipeline windows and judges, earlier batches meanwhile decoding) →
    :meth:`publish` (alerts and DLQ, acknowledged) → :meth:`report` (metrics,
    observer) → :meth:`commit` (in the background, in order) → :meth:`notify`
    (notifications and sinks, after the commit decision).  Between batches,
    :meth:`housekeeping` refreshes gauges and logs progress.
    """

    def __init__(
        self,
        work: Work,
        source: EventSource,
        publisher: Publisher,
        *,
        clock: Clock = WALL_CLOCK,
        sinks: Sequence[AlertSink] = (),
        background: InOrderThread | None = None,
        pool: DecodePool | None = None,
        metrics: WorkerMetrics | None = None,
        observe: BatchObserver | None = None,
        progress_every_s: float = 10.0,
        gauges_every_s: float = 1.0,
        health: WorkerHealth | None = None,
        checkpointer: Checkpointer | TaskCheckpointer | None = None,
    ) -> None:
        self.work = work
        self.source = source
        self.publisher = publisher
        self.clock = clock
        self.sinks = sinks
        self.background = background
        self.metrics = metrics
        self.observe = observe
        self.progress_every_s = progress_every_s
        self.gauges_every_s = gauges_every_s
        self.decoder: OrderedDecoder[tuple[Part, float]] = OrderedDecoder(pool)
        self.health = health or WorkerHealth()
        self.done: Offsets = {}  # next offset per partition whose batch is finished
        self.checkpointer = checkpointer
        self.running = True
        self.paused = False  # a rebalance is under way: nothing is read
        self._stepping = False
        self._out: asyncio.Future[None] | None = None  # the last batch's finish()
        # The last batch's offsets once finished, and whether its alerts changed state.
        self._due: tuple[Offsets, bool] | None = None
        self._drained = asyncio.Event()  # a batch finished (pause() waits for the last)
        self._resumed = asyncio.Event()
        self._last_gauges = -math.inf
        self._last_report = clock.monotonic()
        self._last_records = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set and every batch read is finished; then flush the commits."""
        decoder = self.decoder
        fetch: asyncio.Future[Batch] | None = None
        try:
            while not stop.is_set() or len(decoder):
                self.housekeeping()
                reading = not stop.is_set() and not decoder.full and not self.paused
                if self.paused and fetch is None and not len(decoder):
                    await self._until_resumed(stop)  # a rebalance: every batch read is done
                    continue
                if reading and fetch is None:
                    fetch = self.fetch()
                if len(decoder) and (decoder.ready() or not reading):
                    await self.step()
                    continue
                assert fetch is not None
                if len(decoder):
                    either: set[asyncio.Future[Any]] = {fetch, *decoder.decoding()}
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    if not fetch.done():
                        continue  # the child finished first: window its batch
                batch = await fetch
                fetch = None
                if self.paused:
                    continue  # read across a rebalance: the assignment resets the positions
                if batch.values:
                    self.decode(batch)
                elif not len(decoder):
                    await self.idle(batch)
            await self.outputs_done()
            self._checkpoint_due()
        finally:
            self.health.stopping = True
            self.running = False
            self._drained.set()
            for pending in (fetch, self._out):
                if pending is not None and not pending.done():  # a crash: replayed, not lost
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await pending
        if self.checkpointer is not None:  # graceful stop: the state of every batch finished
            await self.checkpointer.checkpoint(self.done)
        await self.source.flush_commits()

    async def pause(self) -> None:
        """Stop reading (a rebalance); returns once every batch read so far is finished."""
        self.paused = True
        self._resumed.clear()
        while self.running and (self._stepping or len(self.decoder) or self._out_pending()):
            self._drained.clear()
            await self._drained.wait()
        self._checkpoint_due()

    def _out_pending(self) -> bool:
        return self._out is not None and not self._out.done()

    async def outputs_done(self) -> None:
        """Wait until the last processed batch is published and committed (raises what
        finishing it raised)."""
        if self._out is not None:
            out, self._out = self._out, None
            await out

    def resume(self) -> None:
        self.paused = False
        self._resumed.set()

    async def _until_resumed(self, stop: asyncio.Event) -> None:
        while self.paused and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resumed.wait(), 0.1)

    def fetch(self) -> asyncio.Future[Batch]:
        return asyncio.ensure_future(self.source.next_batch(timeout_ms=100))

    def decode(self, batch: Batch) -> None:
        received = time.perf_counter()
        for part in self.work.split(batch):  # one part per task (topic-partition)
            args = self.work.decode_args(part)
            self.decoder.submit(
                part.batch.values, part.batch.sources, args, (part, received), part.tp
            )

    async def step(self) -> None:
        """Window and judge the next decoded part, the oldest of its task (with tasks a
        fetch is a part per partition: shipments and roll-ups), then finish it.
        Finishing — publishing, waiting for the broker's acks, committing — runs while
        the next part is processed: one at a time, each after the one before it is
        committed."""
        decoded, (part, received) = await self.decoder.next()
        self._stepping = True
        try:
            self._checkpoint_due()
            now, started = self.clock.now_ms(), time.perf_counter()
            result, shipments = self.work.process(part, decoded, now)
            await self._finish_soon(result, part, now, received, started, shipments)
        finally:
            self._stepping = False
            self._drained.set()

    async def idle(self, batch: Batch) -> None:
        """Nothing arrived: let the watermark follow the clock through the silence."""
        self._stepping = True
        try:
            await self.outputs_done()
            self._checkpoint_due()
            now, started = self.clock.now_ms(), time.perf_counter()
            result = self.work.tick(now)
            await self._finish_soon(result, Part(None, batch), now, started, started, ())
            await self.outputs_done()
        finally:
            self._stepping = False
            self._drained.set()

    async def _finish_soon(
        self,
        result: StepResult,
        part: Part,
        now: int,
        received: float,
        started: float,
        shipments: Sequence[Message],
    ) -> None:
        """Once the batch before is finished, :meth:`finish` this one: in the background
        when more parts wait and it has no alert (throughput: a source task's shipments),
        else at once (an alert's latency)."""
        await self.outputs_done()
        self._due = ({**self.done, **part.batch.offsets}, bool(result.alerts))
        out = asyncio.ensure_future(self.finish(result, part, now, received, started, shipments))
        out.add_done_callback(lambda _: self._drained.set())
        self._out = out
        if len(self.decoder) and not result.alerts:  # on to the next part meanwhile
            await asyncio.sleep(0)  # (it hands its records to the producer first)
        else:  # alerts, or caught up: out now, not behind the next part's processing
            await self.outputs_done()

    def _checkpoint_due(self) -> None:
        """Before the next batch changes the state: its checkpoint as the last batch left
        it, if one is due (:meth:`~stream.live.state_store.Checkpointer.after_batch`),
        stored once that batch is committed.  Taken here rather than right after the
        batch, so its publishing does not wait for the snapshot."""
        due, self._due = self._due, None
        if due is not None and self.checkpointer is not None:
            self.checkpointer.after_batch(*due, after=self._out)

    async def finish(
        self,
        result: StepResult,
        part: Part,
        now: int,
        received: float,
        started: float,
        shipments: Sequence[Message] = (),
    ) -> None:
        """Publish, wait for the acks, report, commit, notify."""
        wire = await self.publish(result, shipments)
        timing = BatchTiming(part.records, received, started, time.perf_counter())
        self.report(result, wire, timing)
        self.commit(part.batch)
        self.notify(result, now)

    async def publish(
        self, result: StepResult, shipments: Sequence[Message] = ()
    ) -> list[AlertObject]:
        """Alerts, DLQ records and shipments to the roll-up tasks out; returns the alert v1
        objects once all of it is acknowledged (then the batch may be committed)."""
        wire: list[AlertObject] = [rec.to_dict() for rec in result.alerts]  # alert v1 JSON
        if shipments and isinstance(self.publisher, KafkaPublisher):
            await asyncio.gather(
                self.publisher.publish(wire, result.rejected),
                self.publisher.send_messages(shipments),
            )
        else:
            await self.publisher.publish(wire, result.rejected)
        return wire

    def report(self, result: StepResult, wire: list[AlertObject], timing: BatchTiming) -> None:
        if self.metrics is not None:
            latency = timing.acked - timing.started if result.closed else None
            self.metrics.observe(self.work.stats, result.rejected, wire, latency)
            view = self.work.last_view
            if result.judged and view is not None and self.metrics.payments is not None:
                self.work.last_view = None  # the newest judged window, once
                self.metrics.payments.update(*view)
        if self.observe is not None:
            self.observe(result, timing)

    def commit(self, batch: Batch) -> None:
        self.source.commit_soon(batch.offsets)
        self.done.update(batch.offsets)

    def notify(self, result: StepResult, now: int) -> None:
        # After the commit decision: at-least-once may hand the dispatcher a replayed
        # record, which it recognises and ignores.
        if self.background is not None:
            if result.alerts:
                self.background.on_alerts(result.alerts, now)
            self.background.tick()
        if result.alerts:
            for sink in self.sinks:
                try:  # a display must never stop consumption
                    sink(result.alerts)
                except Exception as exc:
                    self.health.output_error("sink", exc)

    def housekeeping(self) -> None:
        """Gauges about once a second, a progress line every ``progress_every_s``."""
        work = self.work
        now = self.clock.monotonic()
        if self.metrics is not None and now - self._last_gauges >= self.gauges_every_s:
            self._last_gauges = now
            self.metrics.state(work.firing(), work.active_series())
            ends = self.source.end_offsets()
            if isinstance(self.work, TaskSet):  # the gauge is per partition of the events topic
                ends = {tp: hw for tp, hw in ends.items() if tp.topic == self.work.topic}
            self.metrics.consumer_lag(ends, self.done)
        self.health.observe_offsets(self.source.end_offsets(), self.done)
        if now - self._last_report >= self.progress_every_s:
            elapsed = now - self._last_report
            stats = work.stats
            log.info(
                "%.0f events/s, %d records, %d rejected to DLQ, %d late, %d windows closed, "
                "%d alerts firing",
                (stats.records - self._last_records) / elapsed,
                stats.records,
                stats.rejected,
                stats.late,
                stats.windows_closed,
                len(work.firing()),
            )
            self._last_report, self._last_records = now, stats.records
