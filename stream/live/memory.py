"""A :class:`~stream.live.publisher.Publisher` that keeps what it is given (tests, no broker).

It records the very messages :class:`~stream.live.publisher.KafkaPublisher` would
send, so a test asserts on the wire form: alert v1 JSON and DLQ records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from stream.config import KafkaConfig
from stream.ingest.events import Rejected
from stream.live.publisher import AlertObject, Message, messages


class MemoryPublisher:
    """Collects published messages in order, per :meth:`publish` call."""

    def __init__(self, cfg: KafkaConfig | None = None) -> None:
        self.cfg = cfg or KafkaConfig()
        self.batches: list[list[Message]] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def publish(self, alerts: Sequence[AlertObject], rejected: Sequence[Rejected]) -> None:
        if alerts or rejected:
            self.batches.append(messages(self.cfg, alerts, rejected))

    @property
    def messages(self) -> list[Message]:
        return [m for batch in self.batches for m in batch]

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """The alert v1 objects published, in order."""
        return [orjson.loads(m.value) for m in self.messages if m.topic == self.cfg.alerts_topic]

    @property
    def dlq(self) -> list[dict[str, Any]]:
        """The DLQ records published, in order."""
        return [orjson.loads(m.value) for m in self.messages if m.topic == self.cfg.dlq_topic]
