"""Kafka I/O with aiokafka: the event source, the alert/DLQ publisher, topic set-up.

Delivery is at-least-once: the worker commits a batch's offsets only after every
alert and DLQ record the batch produced has been acknowledged by the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from stream.config import KafkaConfig
from stream.ingest.dlq import dlq_record
from stream.ingest.events import Rejected, Source, SourceColumns


class KafkaUnavailable(RuntimeError):
    """Kafka could not be reached; the message says where paywatch looked."""


def _unreachable(bootstrap: str, what: str = "") -> KafkaUnavailable:
    return KafkaUnavailable(
        f"cannot reach Kafka at {bootstrap}{what}; check kafka.bootstrap_servers "
        "(or start a local one with `paywatch broker`)"
    )


async def start_client(
    client: Any, bootstrap: str, *, what: str = "", timeout_s: float = 30.0
) -> None:
    """Start an aiokafka client; an unreachable broker becomes one `KafkaUnavailable`."""
    try:
        await asyncio.wait_for(client.start(), timeout_s)
    except (TimeoutError, KafkaConnectionError, OSError):
        with contextlib.suppress(Exception):
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        raise _unreachable(bootstrap, what) from None


async def ensure_topics(
    bootstrap: str, topics: Iterable[str], partitions: int = 1, timeout_s: float = 15.0
) -> None:
    """Create the topics that do not exist yet (existing ones are left alone)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await start_client(admin, bootstrap, timeout_s=timeout_s)
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(t, partitions, 1) for t in dict.fromkeys(topics) if t not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
    finally:
        await admin.close()


@dataclass
class Batch:
    values: list[bytes | None]
    sources: Sequence[Source]
    offsets: dict[TopicPartition, int]  # next offset to commit per partition


class EventSource:
    """Consumer-group reader of the events topic, in batches."""

    def __init__(self, cfg: KafkaConfig, **overrides: Any) -> None:
        self.cfg = cfg
        self.consumer = AIOKafkaConsumer(
            cfg.events_topic,
            bootstrap_servers=cfg.bootstrap_servers,
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
        self._to_commit: dict[TopicPartition, int] = {}
        self._committer: asyncio.Task[None] | None = None
        self._commit_error: BaseException | None = None

    async def start(self) -> None:
        await start_client(self.consumer, self.cfg.bootstrap_servers)

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
        offsets: dict[TopicPartition, int] = {}
        for tp, records in got.items():
            if not records:
                continue
            values.extend(r.value for r in records)
            record_offsets.extend(r.offset for r in records)
            topics.extend([tp.topic] * len(records))
            partitions.extend([tp.partition] * len(records))
            offsets[tp] = records[-1].offset + 1
        return Batch(values, SourceColumns(topics, partitions, record_offsets), offsets)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if offsets:
            await self.consumer.commit(offsets)

    def commit_soon(self, offsets: dict[TopicPartition, int]) -> None:
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
        """Wait until every offset handed to :meth:`commit_soon` is committed."""
        if self._committer is not None:
            await asyncio.shield(self._committer)
        self._raise_commit_error()

    async def _commit_pending(self) -> None:
        while self._to_commit:
            offsets, self._to_commit = self._to_commit, {}
            try:
                await self.consumer.commit(offsets)
            except Exception as exc:
                self._commit_error = exc
                return

    def _raise_commit_error(self) -> None:
        if self._commit_error is not None:
            exc, self._commit_error = self._commit_error, None
            raise exc


class Publisher:
    """Produces alert v1 records and DLQ records; waits for the broker's acks."""

    def __init__(self, cfg: KafkaConfig) -> None:
        self.cfg = cfg
        self.producer = AIOKafkaProducer(
            bootstrap_servers=cfg.bootstrap_servers,
            client_id=f"{cfg.client_id}-publisher",
            acks="all",
            linger_ms=2,
            request_timeout_ms=cfg.request_timeout_ms,
        )

    async def start(self) -> None:
        await start_client(self.producer, self.cfg.bootstrap_servers)

    async def stop(self) -> None:
        await self.producer.stop()

    async def publish(self, alerts: Sequence[dict[str, Any]], rejected: Sequence[Rejected]) -> None:
        """Send everything, then wait until the broker has acknowledged all of it."""
        futures = []
        for rec in alerts:
            futures.append(
                await self.producer.send(
                    self.cfg.alerts_topic,
                    orjson.dumps(rec),
                    key=str(rec["fingerprint"]).encode(),
                )
            )
        for rej in rejected:
            futures.append(
                await self.producer.send(
                    self.cfg.dlq_topic,
                    dlq_record(rej),
                    key=f"{rej.source.topic}:{rej.source.partition}:{rej.source.offset}".encode(),
                    headers=[("reason", rej.reason.encode()[:256])],
                )
            )
        if futures:
            await asyncio.gather(*futures)
