"""What the worker reads events from: batches of raw records, committed in order.

Delivery is at-least-once: the worker commits a batch's offsets only after every
alert and DLQ record the batch produced has been acknowledged.  Implementations:
:class:`~stream.ingest.kafka_source.KafkaEventSource` (a consumer group) and
:class:`~stream.ingest.memory.MemorySource` (records in a list, for tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from aiokafka import TopicPartition

from stream.ingest.events import Source

Offsets = dict[TopicPartition, int]  # next offset to read (or commit) per partition


@dataclass
class Batch:
    """Raw record values, where each came from, and the offsets that commit them."""

    values: list[bytes | None]
    sources: Sequence[Source]
    offsets: Offsets  # next offset to commit per partition


class Rebalance(Protocol):
    """Told when the partitions a worker reads change (a consumer group rebalance)."""

    async def revoked(self, partitions: set[int]) -> None:
        """Before ``partitions`` go: finish what was read from them, checkpoint, commit."""

    async def assigned(self, partitions: set[int]) -> dict[int, int]:
        """``partitions`` are read from now on; returns where to resume some of them
        (partition -> next offset, e.g. a checkpoint's); the rest resume where committed."""


@runtime_checkable
class TopicRebalance(Protocol):
    """A :class:`Rebalance` handler for a source reading several topics: told every
    topic-partition (the events topic's and the repartition topic's)."""

    async def revoked_tps(self, tps: set[TopicPartition]) -> None: ...

    async def assigned_tps(self, tps: set[TopicPartition]) -> dict[TopicPartition, int]: ...


class EventSource(Protocol):
    """A partitioned log of raw event records, read in batches by one worker."""

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Commit what was handed to :meth:`commit_soon`, then close."""

    async def next_batch(self, timeout_ms: int = 200) -> Batch:
        """The records that arrive within ``timeout_ms`` (an empty batch when none do)."""

    def commit_soon(self, offsets: Offsets) -> None:
        """Commit in the background, in order; a failure is raised by the next call."""

    async def flush_commits(self) -> None:
        """Wait until every offset handed to :meth:`commit_soon` is committed."""

    def end_offsets(self) -> Mapping[TopicPartition, int | None]:
        """The log end offset of each assigned partition, as last seen (None: not yet known)."""

    def on_rebalance(self, handler: Rebalance | TopicRebalance) -> None:
        """Call ``handler`` when partitions are assigned or revoked (before any is read)."""
