"""The events topic read by a Kafka consumer group (aiokafka), as an :class:`EventSource`.

The group's rebalances reach the worker through :meth:`KafkaEventSource.on_rebalance`
(aiokafka's ``ConsumerRebalanceListener``): on revocation the worker finishes its
batches, checkpoints and commits; on assignment it restores and says where to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

from stream.config import KafkaConfig
from stream.ingest.events import SourceColumns
from stream.ingest.kafka_client import client_kwargs, start_client
from stream.ingest.source import Batch, Offsets, Rebalance, TopicRebalance

log = logging.getLogger("paywatch.kafka")

#: Commit errors that mean the group moved on, not that the worker should stop.
_GROUP_MOVED = (
    CommitFailedError,
    IllegalGenerationError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)


class _Listener(ConsumerRebalanceListener):
    """aiokafka's callbacks, for the events topic's partitions, to a :class:`Rebalance`."""

    def __init__(self, source: KafkaEventSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        handler, topic = self.source.handler, self.source.cfg.events_topic
        if isinstance(handler, TopicRebalance):
            await handler.revoked_tps(set(revoked))
        elif handler is not None:
            await handler.revoked({tp.partition for tp in revoked if tp.topic == topic})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        handler, topic = self.source.handler, self.source.cfg.events_topic
        if handler is None:
            return
        consumer = self.source.consumer
        # Nothing is handed out while the worker restores (the fetcher starts at once).
        consumer.pause(*assigned)
        try:
            if isinstance(handler, TopicRebalance):
                for tp, offset in (await handler.assigned_tps(set(assigned))).items():
                    consumer.seek(tp, offset)
                return
            seeks = await handler.assigned({tp.partition for tp in assigned if tp.topic == topic})
            for partition, offset in seeks.items():
                consumer.seek(TopicPartition(topic, partition), offset)
        finally:
            consumer.resume(*assigned)


class KafkaEventSource:
    """Consumer-group reader of the events topic, in batches; commits are explicit."""

    def __init__(self, cfg: KafkaConfig, *, topics: list[str] | None = None, **overrides: Any):
        self.cfg = cfg
        self.topics = topics or [cfg.events_topic]  # scale_out tasks: + the repartition topic
        self.consumer = AIOKafkaConsumer(
            **client_kwargs(cfg),
            group_id=cfg.group_id,
            client_id=cfg.client_id,
            enable_auto_commit=False,
            auto_offset_reset=cfg.auto_offset_reset,
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            request_timeout_ms=cfg.request_timeout_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **overrides,
        )
        self._to_commit: Offsets = {}
        self._committer: asyncio.Task[None] | None = None
        self._commit_error: BaseException | None = None
        self.handler: Rebalance | TopicRebalance | None = None

    def on_rebalance(self, handler: Rebalance | TopicRebalance) -> None:
        self.handler = handler

    async def start(self) -> None:
        await start_client(self.consumer, self.cfg.bootstrap_servers)
        self.consumer.subscribe(self.topics, listener=_Listener(self))

    async def stop(self) -> None:
        with contextlib.suppress(Exception):  # already raised to the loop, if it could be
            await self.flush_commits()
        await self.consumer.stop()

    async def next_batch(self, timeout_ms: int = 200) -> Batch:
        got = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=self.cfg.max_batch)
        values: list[bytes | None] = []
        topics: list[str] = []
        partitions: list[int] = []
        record_offsets: list[int] = []
        offsets: Offsets = {}
        for tp, records in got.items():
            if not records:
                continue
            values.extend(r.value for r in records)
            record_offsets.extend(r.offset for r in records)
            topics.extend([tp.topic] * len(records))
            partitions.extend([tp.partition] * len(records))
            offsets[tp] = records[-1].offset + 1
        return Batch(values, SourceColumns(topics, partitions, record_offsets), offsets)

    def commit_soon(self, offsets: Offsets) -> None:
        """Commit without waiting for the broker (a round trip per batch the consumer
        would otherwise sit idle through).  Commits stay in order, one in flight at a
        time, later offsets of a partition replacing earlier ones; a failure is raised
        by the next call (or by :meth:`flush_commits`)."""
        self._raise_commit_error()
        if not offsets:
            return
        self._to_commit.update(offsets)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.ensure_future(self._commit_pending())

    async def flush_commits(self) -> None:
        """Wait until every offset handed to :meth:`commit_soon` is committed (those a
        refused commit left pending are tried once more)."""
        if self._to_commit and (self._committer is None or self._committer.done()):
            self._committer = asyncio.ensure_future(self._commit_pending())
        if self._committer is not None:
            await asyncio.shield(self._committer)
        self._raise_commit_error()

    def end_offsets(self) -> dict[TopicPartition, int | None]:
        """The high watermark the broker reported in its last fetch answer, per partition."""
        consumer = self.consumer
        return {tp: consumer.highwater(tp) for tp in consumer.assignment()}

    async def _commit_pending(self) -> None:
        while self._to_commit:
            offsets, self._to_commit = self._to_commit, {}
            try:
                await self.consumer.commit(offsets)
            except _GROUP_MOVED as exc:
                # The group moved on (a rebalance, or a restarted broker that forgot this
                # member): not fatal.  Offsets of partitions still ours go again with the
                # next commit; the next owner of the others replays from the last commit.
                mine = self.consumer.assignment()
                again = {**offsets, **self._to_commit}
                self._to_commit = {tp: o for tp, o in again.items() if tp in mine}
                log.warning("commit refused, the group is rebalancing (%s); retrying", exc)
                return
            except Exception as exc:
                self._commit_error = exc
                return

    def _raise_commit_error(self) -> None:
        if self._commit_error is not None:
            exc, self._commit_error = self._commit_error, None
            raise exc
