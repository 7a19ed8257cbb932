"""Where the worker's output goes: alert v1 records to the alerts topic, rejections to the DLQ.

:func:`messages` encodes a batch's output as Kafka messages (the one place that
decides topics, keys, values and headers); :class:`KafkaPublisher` sends them
and waits for the broker's acks, :class:`~stream.live.memory.MemoryPublisher`
keeps them in a list (tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaProducer

from stream.config import KafkaConfig
from stream.ingest.dlq import dlq_record
from stream.ingest.events import Rejected
from stream.ingest.kafka_client import start_client

AlertObject = Mapping[str, Any]  # one alert v1 JSON object (AlertRecord.to_dict())


@dataclass(frozen=True)
class Message:
    """One Kafka message as published."""

    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def messages(
    cfg: KafkaConfig, alerts: Sequence[AlertObject], rejected: Sequence[Rejected]
) -> list[Message]:
    """Alerts keyed by fingerprint (one partition per episode), then DLQ records keyed by
    where the record came from, with the reason in a header."""
    out = [
        Message(cfg.alerts_topic, str(rec["fingerprint"]).encode(), orjson.dumps(rec))
        for rec in alerts
    ]
    for rej in rejected:
        src = rej.source
        out.append(
            Message(
                cfg.dlq_topic,
                f"{src.topic}:{src.partition}:{src.offset}".encode(),
                dlq_record(rej),
                (("reason", rej.reason.encode()[:256]),),
            )
        )
    return out


class Publisher(Protocol):
    """Publishes one batch's output; returns once all of it is durably accepted."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, alerts: Sequence[AlertObject], rejected: Sequence[Rejected]) -> None:
        """Alert v1 objects to the alerts topic, rejections to the DLQ; returns when acked."""


class KafkaPublisher:
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

    async def publish(self, alerts: Sequence[AlertObject], rejected: Sequence[Rejected]) -> None:
        """Send everything, then wait until the broker has acknowledged all of it."""
        futures = [
            await self.producer.send(
                m.topic, m.value, key=m.key, headers=list(m.headers) if m.headers else None
            )
            for m in messages(self.cfg, alerts, rejected)
        ]
        if futures:
            await asyncio.gather(*futures)
