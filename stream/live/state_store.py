"""Checkpoints of the worker's state, tied to the offsets they cover.

With ``kafka.scale_out: tasks`` (the default on Kafka) the state is split into tasks
(:mod:`stream.live.tasks`): one per partition of the events topic and one per partition
of the repartition topic.  :class:`TaskCheckpointer` writes each task under its own key,
``<group>/<topic>/<partition>`` (:func:`~stream.live.tasks.task_key`), with the next
offset of that partition, and restores it on whichever worker the partition is assigned
to — at start-up, after a crash, and on every rebalance — so a partition's windows,
detectors and open episodes follow the partition.  With ``scale_out: single``
(:class:`Checkpointer`) the whole worker's state is one checkpoint keyed by the *set* of
partitions it owns and comes back only when the same set is assigned again.

A checkpoint holds the pipeline's :meth:`~stream.pipeline.Pipeline.snapshot` (the state
codec, no pickle; a roll-up task adds the source offsets it has counted).  Restoring
seeks the partition to the checkpoint's offset, so the events after it are read again
and the state is exactly what it was (alerts they produce again keep their
``alert_id``).

On Kafka (:class:`KafkaStateStore`) a checkpoint is written to ``kafka.state_topic``
(compacted in production) as chunks of at most ``state.chunk_bytes`` followed by a
header naming them; chunks alternate between two slots, so writing a checkpoint never
overwrites the chunks of the one the current header names (a crash mid-write leaves
the previous checkpoint whole).  :class:`MemoryStateStore` keeps them in a dict (tests).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from aiokafka import AIOKafkaProducer, TopicPartition

from stream.clock import Clock
from stream.config import KafkaConfig, StateConfig
from stream.ingest.kafka_client import client_kwargs, read_topic_to_end, start_client
from stream.ingest.source import Offsets
from stream.live.tasks import Task, TaskSet, task_key
from stream.pipeline import Pipeline, StateError

log = logging.getLogger("paywatch.state")

HEADER_VERSION = 1


@dataclass
class Checkpoint:
    """One stored state and the next offset per partition of the events topic it covers."""

    seq: int
    offsets: dict[int, int]
    blob: bytes
    written_ms: int = 0


class StateStore(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def load(self, key: str) -> Checkpoint | None:
        """The newest whole checkpoint under ``key`` (None: there is none)."""

    async def save(self, key: str, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` under ``key``; returns once it is durable."""

    async def load_many(self, keys: list[str]) -> dict[str, Checkpoint | None]:
        """:meth:`load` of several keys at once (one read of the state topic)."""


@dataclass
class MemoryStateStore:
    """Checkpoints in a dict: what a test restarts a worker with."""

    saved: dict[str, Checkpoint] = field(default_factory=dict)
    saves: int = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def load(self, key: str) -> Checkpoint | None:
        return self.saved.get(key)

    async def save(self, key: str, checkpoint: Checkpoint) -> None:
        self.saved[key] = checkpoint
        self.saves += 1

    async def load_many(self, keys: list[str]) -> dict[str, Checkpoint | None]:
        return {k: self.saved.get(k) for k in keys}


class _Header(msgspec.Struct):
    v: int
    seq: int
    slot: int
    chunks: int
    sha256: str
    offsets: dict[int, int]
    written_ms: int


class _Chunk(msgspec.Struct):
    seq: int
    i: int
    data: bytes


class KafkaStateStore:
    """Checkpoints as records of the state topic: chunks, then a header naming them."""

    def __init__(self, cfg: KafkaConfig, chunk_bytes: int = 512 * 1024) -> None:
        self.cfg = cfg
        self.chunk_bytes = chunk_bytes
        self.producer = AIOKafkaProducer(
            **client_kwargs(cfg),
            client_id=f"{cfg.client_id}-state",
            acks="all",
            max_request_size=chunk_bytes + 64 * 1024,
        )

    async def start(self) -> None:
        await start_client(self.producer, self.cfg.bootstrap_servers, what=" (state topic)")

    async def stop(self) -> None:
        await self.producer.stop()

    async def save(self, key: str, checkpoint: Checkpoint) -> None:
        blob, size, slot = checkpoint.blob, self.chunk_bytes, checkpoint.seq % 2
        pieces = [blob[i : i + size] for i in range(0, len(blob), size)] or [b""]
        topic = self.cfg.state_topic
        sent = [
            await self.producer.send(
                topic,
                msgspec.msgpack.encode(_Chunk(checkpoint.seq, i, piece)),
                key=f"{key}/{slot}/{i}".encode(),
            )
            for i, piece in enumerate(pieces)
        ]
        await asyncio.gather(*sent)
        header = _Header(
            HEADER_VERSION,
            checkpoint.seq,
            slot,
            len(pieces),
            hashlib.sha256(blob).hexdigest(),
            checkpoint.offsets,
            checkpoint.written_ms,
        )
        await self.producer.send_and_wait(topic, msgspec.msgpack.encode(header), key=key.encode())

    async def load(self, key: str) -> Checkpoint | None:
        return (await self.load_many([key]))[key]

    async def load_many(self, keys: list[str]) -> dict[str, Checkpoint | None]:
        latest = await self._read_latest(keys)
        return {key: self._assemble(key, latest) for key in keys}

    def _assemble(self, key: str, latest: dict[str, bytes]) -> Checkpoint | None:
        raw = latest.get(key)
        if raw is None:
            return None
        try:
            head = msgspec.msgpack.decode(raw, type=_Header)
        except msgspec.DecodeError as exc:
            log.warning("checkpoint header %s is not readable (%s): starting without it", key, exc)
            return None
        if head.v != HEADER_VERSION:
            log.warning("checkpoint %s has header version %s: starting without it", key, head.v)
            return None
        parts = []
        for i in range(head.chunks):
            chunk = latest.get(f"{key}/{head.slot}/{i}")
            piece = None if chunk is None else msgspec.msgpack.decode(chunk, type=_Chunk)
            if piece is None or piece.seq != head.seq:
                log.warning("checkpoint %s #%d is incomplete: starting without it", key, head.seq)
                return None
            parts.append(piece.data)
        blob = b"".join(parts)
        if hashlib.sha256(blob).hexdigest() != head.sha256:
            log.warning("checkpoint %s #%d is corrupt: starting without it", key, head.seq)
            return None
        return Checkpoint(head.seq, head.offsets, blob, head.written_ms)

    async def _read_latest(self, keys: list[str]) -> dict[str, bytes]:
        """The newest value of every record key under ``keys``, reading the topic to its end."""
        wanted = set(keys)
        latest: dict[str, bytes] = {}

        def take(r: Any) -> None:
            k = r.key.decode() if r.key else ""
            if r.value is not None and (k in wanted or k.rsplit("/", 2)[0] in wanted):
                latest[k] = r.value

        await read_topic_to_end(
            self.cfg,
            self.cfg.state_topic,
            take,
            what=" (state topic)",
            max_partition_fetch_bytes=self.chunk_bytes + 64 * 1024,
        )
        return latest


def state_key(cfg: KafkaConfig, partitions: set[int]) -> str:
    """The checkpoint key of a worker owning ``partitions`` of the events topic."""
    return f"{cfg.group_id}/{cfg.events_topic}/{','.join(map(str, sorted(partitions)))}"


class CheckpointTiming:
    """When a checkpoint is due: every ``checkpoint_every_s`` of the clock and, with
    ``checkpoint_on_alert``, after a batch whose alerts changed state — at once, unless
    an alert checkpoint was taken less than ``alert_checkpoint_gap_s`` ago.  Alerts of
    batches inside the gap are held and checkpointed by the first batch after it (``idle``
    batches come every fetch timeout, so that is soon even when the stream goes quiet).
    Live, alerts come seconds apart and each is checkpointed at once; catching up through
    a backlog, a second's alert batches share one checkpoint.

    >>> from stream.clock import ManualClock
    >>> clock = ManualClock(0)
    >>> t = CheckpointTiming(StateConfig(), clock)
    >>> t.due(alerts=True)  # an alert: at once
    True
    >>> t.taken(); clock.advance(0.1)
    >>> t.due(alerts=True)  # another, 0.1 s later: held
    False
    >>> clock.advance(0.9)
    >>> t.due(alerts=False)  # the gap is over: the held alert is checkpointed
    True
    """

    def __init__(self, cfg: StateConfig, clock: Clock) -> None:
        self.cfg = cfg
        self.clock = clock
        self._last = clock.monotonic()
        self._last_alert = -math.inf
        self._alerts = False  # alerts changed state since the last checkpoint

    def due(self, alerts: bool) -> bool:
        self._alerts |= alerts and self.cfg.checkpoint_on_alert
        now = self.clock.monotonic()
        if now - self._last >= self.cfg.checkpoint_every_s:
            return True
        return self._alerts and now - self._last_alert >= self.cfg.alert_checkpoint_gap_s

    def taken(self) -> None:
        self._last = self.clock.monotonic()
        if self._alerts:
            self._last_alert, self._alerts = self._last, False


class Checkpointer:
    """When to checkpoint the pipeline, and restoring it when partitions are assigned.

    Checkpoints are taken between batches (so the state matches the offsets of every
    batch processed), when :class:`CheckpointTiming` says one is due.  The
    snapshot is taken at once, before the next batch is processed; storing it waits
    until its batch's outputs are acknowledged and committed, then runs in the
    background, one at a time.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        store: StateStore,
        kafka: KafkaConfig,
        cfg: StateConfig,
        clock: Clock,
    ) -> None:
        self.pipeline = pipeline
        self.store = store
        self.kafka = kafka
        self.cfg = cfg
        self.clock = clock
        self.partitions: set[int] | None = None  # what the pipeline's state covers
        self.positions: dict[int, int] = {}  # next offset per partition the state covers
        self.seq = 0
        self.written = 0  # checkpoints stored
        self.failed = 0  # snapshots that could not be taken
        self.restored: Checkpoint | None = None
        self.cold = "no checkpoint"  # why the last restore found nothing to take
        self.timing = CheckpointTiming(cfg, clock)
        self._dirty = False
        self._saving: asyncio.Task[None] | None = None

    def after_batch(
        self, done: Offsets, alerts: bool, after: asyncio.Future[None] | None = None
    ) -> None:
        """A batch is processed (``done``: the offsets once it is finished): if a checkpoint
        is due, snapshot the state now, before the next batch changes it, and store it in
        the background once ``after`` — finishing the batch: outputs acknowledged, offsets
        committed — has succeeded."""
        self._dirty = True
        self._take_positions(done)
        if self.timing.due(alerts) and self._idle():
            item = self._snapshot()
            if item is not None:
                self._saving = asyncio.ensure_future(_once_done(after, lambda: self._save(item)))

    async def checkpoint(self, done: Offsets) -> None:
        """Checkpoint now and wait until it is stored (revocation, shutdown)."""
        self._take_positions(done)
        if self._saving is not None:
            await asyncio.shield(self._saving)
        item = self._snapshot() if self._dirty and self.partitions else None
        if item is not None:
            await self._save(item)

    async def restore(self, partitions: set[int]) -> dict[int, int]:
        """``partitions`` are assigned: take their checkpoint (when there is one for this very
        set and the state in memory is not theirs already); returns where to resume."""
        if partitions == self.partitions:
            return {}  # the state in memory is theirs and newer than any checkpoint
        key = state_key(self.kafka, partitions)
        self.cold = "no checkpoint"
        try:
            found = await self.store.load(key)
            if found is not None:
                self.pipeline.restore(found.blob)
        except StateError as exc:
            log.warning(
                "checkpoint %s not restored: %s; starting from the state in memory", key, exc
            )
            found, self.cold = None, f"checkpoint not restored: {exc}"
        except Exception as exc:  # the store unreachable: run on, without it
            log.warning("checkpoint %s not read (%s); starting from the state in memory", key, exc)
            found, self.cold = None, "checkpoints not read"
        self.partitions = set(partitions)
        self._dirty = True
        if found is None:
            self.positions = {p: o for p, o in self.positions.items() if p in partitions}
            return {}
        log.info("restored checkpoint %s #%d (offsets %s)", key, found.seq, found.offsets)
        self.restored, self.seq = found, found.seq
        self.positions = {p: o for p, o in found.offsets.items() if p in partitions}
        return dict(self.positions)

    def _take_positions(self, done: Offsets) -> None:
        for tp, offset in done.items():
            if self.partitions is None or tp.partition in self.partitions:
                self.positions[tp.partition] = offset

    def _idle(self) -> bool:
        return self._saving is None or self._saving.done()

    def _snapshot(self) -> tuple[str, Checkpoint] | None:
        """The state now, or None when it cannot be written (logged and counted: the worker
        runs on; a restart then replays from the last checkpoint that could)."""
        self.timing.taken()
        try:
            blob = self.pipeline.snapshot()
        except Exception as exc:
            self.failed += 1
            if self.failed == 1 or self.failed % 100 == 0:
                log.error("checkpoint not taken (%d so far): %s", self.failed, exc)
            return None
        self.seq += 1
        self._dirty = False
        key = state_key(self.kafka, self.partitions or set())
        return key, Checkpoint(self.seq, dict(self.positions), blob, self.clock.now_ms())

    async def _save(self, item: tuple[str, Checkpoint]) -> None:
        key, cp = item
        try:
            await self.store.save(key, cp)
            self.written += 1
        except Exception as exc:  # a lost checkpoint costs a longer replay, not the worker
            log.warning("checkpoint %s #%d not stored: %s", key, cp.seq, exc)
            self._dirty = True


class TaskCheckpointer:
    """Checkpoints per task (``scale_out: tasks``): each task's state under its own key
    (:func:`~stream.live.tasks.task_key`: group, topic, partition) with the next offset of
    its partition, so a partition's state follows the partition to whichever worker gets it.

    Same timing as :class:`Checkpointer` (:class:`CheckpointTiming`), between batches;
    only tasks that read something since their last checkpoint are written.
    """

    def __init__(
        self, tasks: TaskSet, store: StateStore, kafka: KafkaConfig, cfg: StateConfig, clock: Clock
    ) -> None:
        self.tasks = tasks
        self.store = store
        self.kafka = kafka
        self.cfg = cfg
        self.clock = clock
        self.seq: dict[str, int] = {}
        self.written = 0
        self.failed = 0
        self.restored: list[str] = []
        self.timing = CheckpointTiming(cfg, clock)
        self._saving: asyncio.Task[None] | None = None

    def after_batch(
        self, done: Offsets, alerts: bool, after: asyncio.Future[None] | None = None
    ) -> None:
        """As :meth:`Checkpointer.after_batch`, for the tasks that changed."""
        idle = self._saving is None or self._saving.done()
        if self.timing.due(alerts) and idle:
            items = self._snapshots(done)
            if items:
                self._saving = asyncio.ensure_future(_once_done(after, lambda: self._save(items)))

    async def checkpoint(self, done: Offsets) -> None:
        """Checkpoint every task that changed, and wait until stored (revocation, stop)."""
        if self._saving is not None:
            await asyncio.shield(self._saving)
        items = self._snapshots(done)
        if items:
            await self._save(items)

    async def restore(
        self, tps: set[TopicPartition]
    ) -> tuple[list[Task], dict[TopicPartition, int]]:
        """New tasks for ``tps``, from their checkpoints where there are any; returns them and
        where to resume their partitions (the rest resume at the committed offsets)."""
        tasks = [self.tasks.new_task(tp) for tp in sorted(tps)]
        keys = [task_key(self.kafka, t.tp) for t in tasks]
        cold = "no checkpoint"
        try:
            found = await self.store.load_many(keys)
        except Exception as exc:  # the store unreachable: run on, cold
            log.warning("checkpoints %s not read (%s); starting without them", keys, exc)
            found, cold = {}, "checkpoints not read"
        seeks: dict[TopicPartition, int] = {}
        for task, key in zip(tasks, keys, strict=True):
            task.cold = cold
            cp = found.get(key)
            if cp is None:
                continue
            try:
                task.restore(cp.blob)
            except StateError as exc:
                log.warning("checkpoint %s not restored: %s; the task starts cold", key, exc)
                fresh = tasks[tasks.index(task)] = self.tasks.new_task(task.tp)
                fresh.cold = f"checkpoint not restored: {exc}"
                continue
            self.seq[key] = cp.seq
            self.restored.append(key)
            if task.tp.partition in cp.offsets:
                seeks[task.tp] = cp.offsets[task.tp.partition]
            log.info("restored checkpoint %s #%d (offsets %s)", key, cp.seq, cp.offsets)
        return tasks, seeks

    def _snapshots(self, done: Offsets) -> list[tuple[str, Checkpoint]]:
        self.timing.taken()
        out = []
        for tp, task in list(self.tasks.tasks.items()):
            if not task.dirty or tp not in done:
                continue
            key = task_key(self.kafka, tp)
            try:
                blob = task.snapshot()
            except Exception as exc:
                self.failed += 1
                if self.failed == 1 or self.failed % 100 == 0:
                    log.error("checkpoint %s not taken (%d so far): %s", key, self.failed, exc)
                continue
            task.dirty = False
            self.seq[key] = self.seq.get(key, 0) + 1
            cp = Checkpoint(self.seq[key], {tp.partition: done[tp]}, blob, self.clock.now_ms())
            out.append((key, cp))
        return out

    async def _save(self, items: list[tuple[str, Checkpoint]]) -> None:
        for key, cp in items:
            try:
                await self.store.save(key, cp)
                self.written += 1
            except Exception as exc:  # a lost checkpoint costs a longer replay, not the worker
                log.warning("checkpoint %s #%d not stored: %s", key, cp.seq, exc)
                task = self.tasks.tasks.get(_tp_of(key))
                if task is not None:
                    task.dirty = True


async def _once_done(
    after: asyncio.Future[None] | None, save: Callable[[], Awaitable[None]]
) -> None:
    """``save()`` once ``after`` has succeeded; nothing if it failed (its batch was not
    committed; the worker reports the failure)."""
    if after is not None:
        try:
            await asyncio.shield(after)
        except BaseException:
            return
    await save()


def _tp_of(key: str) -> TopicPartition:
    _, topic, partition = key.rsplit("/", 2)
    return TopicPartition(topic, int(partition))
