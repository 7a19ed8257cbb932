"""An :class:`~stream.ingest.source.EventSource` over records held in memory (tests, no broker).

Records go to partitions of one topic and get offsets as in Kafka; batches are
read from the last position, partition by partition, and commits are recorded,
so a test can wait for the positive event "everything committed" instead of
sleeping, and can read the lag the worker reports.

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
from collections.abc import Callable, Iterable

from aiokafka import TopicPartition

from stream.ingest.events import Source, SourceColumns
from stream.ingest.source import Batch, Offsets


class MemorySource:
    """Records by partition in lists; offsets are list positions."""

    def __init__(
        self,
        records: Iterable[bytes | None] = (),
        *,
        topic: str = "events",
        partitions: int = 1,
        max_batch: int = 1000,
    ) -> None:
        self.topic = topic
        self.max_batch = max_batch
        self.logs: list[list[bytes | None]] = [[] for _ in range(partitions)]
        self.position: Offsets = {self._tp(p): 0 for p in range(partitions)}
        self.committed: Offsets = {}
        self.started = self.stopped = False
        self.polls = 0  # calls of next_batch
        self._round_robin = 0
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

    async def next_batch(self, timeout_ms: int = 200) -> Batch:
        """Up to ``max_batch`` unread records; waits up to ``timeout_ms`` for one to arrive."""
        self.polls += 1
        self._progress.set()
        if not self.lag(self.position):
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout_ms / 1000)
        values: list[bytes | None] = []
        partitions: list[int] = []
        record_offsets: list[int] = []
        offsets: Offsets = {}
        for p, log in enumerate(self.logs):
            tp = self._tp(p)
            start = self.position[tp]
            taken = log[start : start + self.max_batch - len(values)]
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
