"""An :class:`~stream.ingest.source.EventSource` over records held in memory (tests, no broker).

Records go to partitions of one topic and get offsets as in Kafka; batches are
read from the last position, partition by partition (or, given ``shuffle``, from
a random subset of partitions in a random order and amounts, as a consumer
fetching several brokers may see them), and commits are recorded,
so a test can wait for the positive event "everything committed" instead of
sleeping, and can read the lag the worker reports.  Rebalances are simulated:
every partition is assigned before the first batch, :meth:`MemorySource.reassign`
moves to another set (revoke, then assign, resuming at the committed offsets or
where the handler says), as a consumer group does.

>>> import asyncio
>>> src = MemorySource([b"a", b"b", b"c"], partitions=2, max_batch=2)
>>> batch = asyncio.run(src.next_batch())
>>> batch.values, [(s.partition, s.offset) for s in batch.sources]
([b'a', b'c'], [(0, 0), (0, 1)])
>>> src.commit_soon(batch.offsets)
>>> src.lag()
1
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterable
from typing import cast

from aiokafka import TopicPartition

from stream.ingest.events import Source, SourceColumns
from stream.ingest.source import Batch, Offsets, Rebalance, TopicRebalance


class MemorySource:
    """Records by partition in lists; offsets are list positions."""

    def __init__(
        self,
        records: Iterable[bytes | None] = (),
        *,
        topic: str = "events",
        partitions: int = 1,
        max_batch: int = 1000,
        shuffle: int | None = None,
    ) -> None:
        self.topic = topic
        self.max_batch = max_batch
        self.logs: list[list[bytes | None]] = [[] for _ in range(partitions)]
        self.position: Offsets = {self._tp(p): 0 for p in range(partitions)}
        self.committed: Offsets = {}
        self.started = self.stopped = False
        self.polls = 0  # calls of next_batch
        self._round_robin = 0
        self._shuffle = None if shuffle is None else random.Random(shuffle)
        self._handler: Rebalance | None = None
        self.assignment: set[int] = set()
        self._next_assignment: set[int] | None = set(range(partitions))
        self._arrived = asyncio.Event()  # a record was appended
        self._progress = asyncio.Event()  # the reader polled or committed
        self.extend(records)

    def _tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    def append(self, value: bytes | None, partition: int | None = None) -> Source:
        """Add one record, to ``partition`` or round robin; returns where it went."""
        if partition is None:
            partition = self._round_robin
            self._round_robin = (partition + 1) % len(self.logs)
        log = self.logs[partition]
        log.append(value)
        self._arrived.set()
        return Source(self.topic, partition, len(log) - 1)

    def extend(self, values: Iterable[bytes | None]) -> None:
        for value in values:
            self.append(value)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def on_rebalance(self, handler: Rebalance | TopicRebalance) -> None:
        if not hasattr(handler, "revoked"):  # tasks read two topics; this source has one
            raise TypeError("the in-memory source reads one topic: use kafka.scale_out single")
        self._handler = cast(Rebalance, handler)

    def reassign(self, partitions: set[int]) -> None:
        """Before the next batch: revoke the current partitions and assign ``partitions``."""
        self._next_assignment = set(partitions)
        self._arrived.set()

    async def _rebalance(self) -> None:
        new, self._next_assignment = self._next_assignment, None
        assert new is not None
        if self._handler is not None:
            await self._handler.revoked(self.assignment)
        self.assignment = new
        for p in new:  # as Kafka: resume at the committed offset
            self.position[self._tp(p)] = self.committed.get(self._tp(p), 0)
        if self._handler is not None:
            for p, offset in (await self._handler.assigned(new)).items():
                self.position[self._tp(p)] = offset

    def _takes(self) -> list[tuple[int, int]]:
        """(partition, how many records) to read now, in reading order."""
        order = sorted(self.assignment)
        if self._shuffle is None:
            return [(p, self.max_batch) for p in order]
        rng = self._shuffle
        rng.shuffle(order)
        return [(p, rng.randint(0, self.max_batch)) for p in order[: rng.randint(1, len(order))]]

    async def next_batch(self, timeout_ms: int = 200) -> Batch:
        """Up to ``max_batch`` unread records; waits up to ``timeout_ms`` for one to arrive."""
        self.polls += 1
        self._progress.set()
        if self._next_assignment is not None:
            await self._rebalance()
        if not self._unread():
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout_ms / 1000)
        values: list[bytes | None] = []
        partitions: list[int] = []
        record_offsets: list[int] = []
        offsets: Offsets = {}
        for p, most in self._takes():
            log, tp = self.logs[p], self._tp(p)
            start = self.position[tp]
            taken = log[start : start + min(most, self.max_batch - len(values))]
            if not taken:
                continue
            values.extend(taken)
            partitions.extend([p] * len(taken))
            record_offsets.extend(range(start, start + len(taken)))
            offsets[tp] = self.position[tp] = start + len(taken)
        topics = [self.topic] * len(values)
        return Batch(values, SourceColumns(topics, partitions, record_offsets), offsets)

    def commit_soon(self, offsets: Offsets) -> None:
        self.committed.update(offsets)
        self._progress.set()

    async def flush_commits(self) -> None:
        return None

    def end_offsets(self) -> dict[TopicPartition, int | None]:
        return {self._tp(p): len(log) for p, log in enumerate(self.logs)}

    def _unread(self) -> int:
        return sum(len(self.logs[p]) - self.position[self._tp(p)] for p in self.assignment)

    def lag(self, upto: Offsets | None = None) -> int:
        """Records beyond ``upto`` (default: the committed offsets), over all partitions."""
        done = self.committed if upto is None else upto
        return sum(len(log) - done.get(self._tp(p), 0) for p, log in enumerate(self.logs))

    async def all_committed(self) -> None:
        """Return once every record appended so far has been committed."""
        await self._until(lambda: not self.lag())

    async def polled(self, times: int = 2) -> None:
        """Return once the reader has asked for records ``times`` more times: a loop that
        polls again after each batch has then finished every batch it read before."""
        target = self.polls + times
        await self._until(lambda: self.polls >= target)

    async def _until(self, done: Callable[[], bool]) -> None:
        while not done():
            self._progress.clear()
            await self._progress.wait()
