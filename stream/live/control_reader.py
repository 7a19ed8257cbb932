"""Following the control topic from Kafka: every record to the worker's notifications.

Each worker reads the whole topic itself — no consumer group, every partition,
from the beginning, then follows it — because every worker must know every
silence and ack (see :mod:`stream.alerting.control` for why, and for the records).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer

from stream.aio import cancel_and_wait
from stream.clock import WALL_CLOCK, Clock
from stream.config import KafkaConfig
from stream.ingest.kafka_client import client_kwargs, follow, start_client

log = logging.getLogger("paywatch.control")

ApplyControl = Callable[[bytes | None, int], Any]


class ControlReader:
    """Feeds every control record to ``apply(raw_value, now_ms)`` from an asyncio task."""

    def __init__(
        self,
        cfg: KafkaConfig,
        apply: ApplyControl,
        *,
        clock: Clock = WALL_CLOCK,
        poll_ms: int = 200,
    ) -> None:
        self.cfg = cfg
        self.apply = apply
        self.clock = clock
        self.poll_ms = poll_ms
        self.records = 0
        self.consumer = AIOKafkaConsumer(
            cfg.control_topic,
            **client_kwargs(cfg),
            client_id=f"{cfg.client_id}-control",
            group_id=None,  # no group: this worker gets every partition
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
            request_timeout_ms=cfg.request_timeout_ms,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await start_client(self.consumer, self.cfg.bootstrap_servers, what=" for the control topic")
        self._task = asyncio.create_task(self._run(), name="paywatch-control")

    async def _run(self) -> None:
        await follow(self.consumer, self.poll_ms, log, "control topic", self._apply_poll)

    def _apply_poll(self, got: dict[Any, list[Any]]) -> None:
        for records in got.values():
            for r in records:
                self.records += 1
                try:
                    self.apply(r.value, self.clock.now_ms())
                except Exception:  # apply logs bad events itself; this is a bug guard
                    log.exception("control record at offset %d not applied", r.offset)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self.consumer.stop()
