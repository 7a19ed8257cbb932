"""The dispatcher's own input on Kafka: one owner per alert, a notification log that
survives restarts, and nothing sent twice after a crash.

The worker does not hand the alert records of its batches to its dispatcher.  Every
worker instead runs this feed: a consumer of ``kafka.alerts_topic`` in a consumer
group of its own (``<kafka.group_id>.notify``), so each partition of the alerts topic
— alert records are keyed by fingerprint — is dispatched by exactly one worker, and
moves to another when that worker leaves or dies.  paywatch creates the alerts topic
with one partition, so one worker of the group notifies (grouping and inhibition see
every alert) and the others stand by.

The notification log is :meth:`Notifications.snapshot
<stream.alerting.notifications.Notifications.snapshot>`: the dispatcher's alerts,
groups and what each group told (alert_id and severity per fingerprint), acks,
timers, the episodes that are over, the messages emitted but not yet confirmed
delivered, and the alerts-topic offsets it covers.  It is checkpointed to
``kafka.state_topic`` (the same chunked, checksummed records as the pipeline's
checkpoints) under ``<group>.notify/<alerts topic>/<partitions>``:

- write-ahead: a message is handed to delivery only once a log naming it is stored;
- when a message is delivered or given up, and every ``state.checkpoint_every_s``;
- on revocation and on a graceful stop (after delivery had ``drain_s`` to finish).

A new owner restores the log, re-sends the messages it still owes, and reads the
alerts topic on from the log's offsets.  Records it reads again — and the records a
restarted pipeline publishes again for the events it replays (same ``alert_id``) —
are recognised by the dispatcher: a group re-pages only an alert_id it has not told,
and an episode that is over stays over.  What is left: a crash between the receiver's
answer and the log write that follows it (milliseconds) re-sends that message once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from stream.aio import cancel_and_wait
from stream.alerting.delivery import Message
from stream.alerting.notifications import InOrderThread
from stream.alerting.record import AlertRecord
from stream.clock import WALL_CLOCK, Clock
from stream.config import Config
from stream.ingest.kafka_client import client_kwargs, follow, start_client
from stream.live.state_store import Checkpoint, StateStore

log = logging.getLogger("paywatch.notify.feed")


def notify_group(config: Config) -> str:
    """The consumer group whose members dispatch the alerts topic."""
    return f"{config.kafka.group_id}.notify"


def log_key(config: Config, partitions: set[int]) -> str:
    """Where the notification log of ``partitions`` of the alerts topic is stored."""
    k = config.kafka
    return f"{notify_group(config)}/{k.alerts_topic}/{','.join(map(str, sorted(partitions)))}"


class _Listener(ConsumerRebalanceListener):
    def __init__(self, feed: NotifyFeed) -> None:
        self.feed = feed

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.feed.revoked()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self.feed.consumer
        consumer.pause(*assigned)  # nothing is handed out before the log is restored
        try:
            seeks = await self.feed.assigned({tp.partition for tp in assigned})
            for partition, offset in seeks.items():
                consumer.seek(TopicPartition(self.feed.topic, partition), offset)
        finally:
            consumer.resume(*assigned)


class NotifyFeed:
    """Reads the alerts topic into the dispatcher and keeps its notification log."""

    def __init__(
        self,
        config: Config,
        background: InOrderThread,
        store: StateStore | None,
        *,
        clock: Clock = WALL_CLOCK,
        drain_s: float = 3.0,
        poll_ms: int = 100,
    ) -> None:
        k = config.kafka
        self.config = config
        self.topic = k.alerts_topic
        self.background = background
        self.notes = background.notifications
        self.store = store
        self.clock = clock
        self.drain_s = drain_s
        self.poll_ms = poll_ms
        self.every_s = config.state.checkpoint_every_s
        self.consumer = AIOKafkaConsumer(
            **client_kwargs(k),
            group_id=notify_group(config),
            client_id=f"{k.client_id}-notify",
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a new group: no alert published so far is missed
            fetch_max_wait_ms=k.fetch_max_wait_ms,
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms,
            request_timeout_ms=k.request_timeout_ms,
        )
        self.partitions: set[int] = set()  # of the alerts topic, dispatched here
        self.records = 0  # alert records read
        self.saved = 0  # notification logs stored
        self.restored = 0  # notification logs taken over
        self.seq = 0
        self._task: asyncio.Task[None] | None = None
        self._saver: asyncio.Task[None] | None = None
        self._next: dict[str, Any] | None = None  # the newest log not yet stored
        self._held: list[Message] = []  # messages waiting for a stored log naming them
        self._last = clock.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.store is not None:
            self.notes.journal = self._journal
            self.notes.on_settled = self._settled
        await start_client(self.consumer, self.config.kafka.bootstrap_servers, what=" (alerts)")
        self.consumer.subscribe([self.topic], listener=_Listener(self))
        self._task = asyncio.create_task(self._run(), name="paywatch-notify-feed")

    async def stop(self) -> None:
        """Graceful: let delivery finish what is due, store the log, commit, leave the group."""
        await cancel_and_wait(self._task)
        self._task = None
        with contextlib.suppress(Exception):  # logged inside; the next owner replays
            await self._hand_over()
        self.notes.journal = None
        self.notes.on_settled = None
        await self.consumer.stop()

    # -- reading ------------------------------------------------------------------------

    async def _run(self) -> None:
        await follow(self.consumer, self.poll_ms, log, "alerts topic", self._on_poll)

    def _on_poll(self, got: dict[Any, list[Any]]) -> None:
        for tp, records in got.items():
            if tp.partition in self.partitions:
                self._dispatch(tp.partition, records)
        self.background.tick()
        due = self.clock.monotonic() - self._last >= self.every_s
        if due and self.partitions:
            self._last = self.clock.monotonic()
            self.background.log_now()

    def _dispatch(self, partition: int, records: list[Any]) -> None:
        alerts = []
        for r in records:
            try:
                alerts.append(AlertRecord.from_dict(orjson.loads(r.value)))
            except Exception as exc:  # not ours to judge: skip it, loudly
                log.warning("alert record at %s/%d not readable: %s", self.topic, r.offset, exc)
        self.records += len(records)
        positions = {partition: records[-1].offset + 1}
        self.background.on_alerts(alerts, self.clock.now_ms(), positions)

    # -- ownership ----------------------------------------------------------------------

    async def revoked(self) -> None:
        """Store the log and forget it: the next owner (maybe this worker) restores it."""
        if not self.partitions:
            return
        try:
            await self._hand_over()
        except Exception as exc:  # the next owner replays from the last stored log
            log.warning("notification log of %s not stored: %s", sorted(self.partitions), exc)
        await self.background.call(self.notes.forget)
        self.partitions = set()

    async def assigned(self, partitions: set[int]) -> dict[int, int]:
        """Restore the log of ``partitions``; returns the offsets to read on from."""
        self.partitions = set(partitions)
        if not partitions or self.store is None:
            return {}
        key = log_key(self.config, partitions)
        try:
            found = await self.store.load(key)
            if found is None:
                return {}
            seeks = await self.background.call(self.notes.restore, orjson.loads(found.blob))
        except Exception as exc:  # unreadable: start from the committed offsets
            log.warning("notification log %s not restored: %s", key, exc)
            return {}
        self.seq, self.restored = found.seq, self.restored + 1
        log.info("restored notification log %s #%d (offsets %s)", key, found.seq, seeks)
        return {p: o for p, o in seeks.items() if p in partitions}

    async def _hand_over(self) -> None:
        """Messages due are emitted, delivery gets ``drain_s``, the log is stored, the
        offsets it covers are committed."""
        await self.background.call(self.notes.tick, self.clock.now_ms())
        await self._flush()
        if self.notes.owed:
            await self.notes.deliverer.drain(self.drain_s)
        await self._flush()
        offsets = {
            TopicPartition(self.topic, p): o
            for p, o in self.notes.positions.items()
            if p in self.partitions
        }
        if offsets:
            await self.consumer.commit(offsets)

    async def _flush(self) -> None:
        """Store the log as the dispatching thread has it now."""
        await self.background.call(self.notes.log_now)  # its journal call is queued first
        if self._saver is not None:
            await asyncio.shield(self._saver)

    # -- the log ------------------------------------------------------------------------

    def _journal(self, messages: list[Message], state: dict[str, Any]) -> None:
        """From the dispatching thread: ``state`` names ``messages``; store, then send."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._write_ahead, messages, state)

    def _settled(self, message: Message) -> None:
        """On the loop: a message was delivered or given up; the log drops it soon."""
        self.background.log_now()

    def _write_ahead(self, messages: list[Message], state: dict[str, Any]) -> None:
        self._next = state  # newer than any not yet stored: it replaces them
        self._held.extend(messages)
        if self._saver is None or self._saver.done():
            self._saver = asyncio.ensure_future(self._save_all())

    async def _save_all(self) -> None:
        while self._next is not None:
            state, messages = self._next, self._held
            self._next, self._held = None, []
            await self._save(state)
            # Sent even when the store failed: a page twice beats a page never.
            self.notes.submit(messages)

    async def _save(self, state: dict[str, Any]) -> None:
        if self.store is None or not self.partitions:
            return
        self.seq += 1
        key = log_key(self.config, self.partitions)
        positions = {int(p): int(o) for p, o in state["positions"].items()}
        cp = Checkpoint(self.seq, positions, orjson.dumps(state), self.clock.now_ms())
        try:
            await self.store.save(key, cp)
            self.saved += 1
        except Exception as exc:
            log.warning("notification log %s #%d not stored: %s", key, cp.seq, exc)
