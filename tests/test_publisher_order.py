"""What reaches the alerts topic when the connection refuses one record of a batch: the
episode's later records follow its retried one again, so its last record is its latest."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaConnectionError

from stream.config import KafkaConfig
from stream.live.publisher import KafkaPublisher, Message


class FlakyBroker:
    """Stands in for the producer's connection only (a refusal cannot be timed on the
    real broker): the first attempt at ``flaky`` fails as a dropped connection does;
    everything else is delivered, in the order it is sent."""

    def __init__(self, flaky: bytes) -> None:
        self.flaky = flaky
        self.topic: list[bytes] = []

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if value == self.flaky:
            self.flaky = b""
            fut.set_exception(KafkaConnectionError("connection dropped"))
        else:
            self.topic.append(value)
            fut.set_result(None)
        return fut


async def publish(records: list[Message], flaky: bytes) -> list[bytes]:
    pub = KafkaPublisher(KafkaConfig(bootstrap_servers="localhost:1"))
    broker = FlakyBroker(flaky)
    pub.producer = broker
    await pub.send_messages(records)
    return broker.topic


async def test_an_episode_ends_on_its_resolution_when_its_firing_record_was_retried() -> None:
    records = [
        Message("alerts", b"fp1", b"firing"),
        Message("alerts", b"fp2", b"other"),
        Message("alerts", b"fp1", b"resolved"),
    ]
    topic = await publish(records, flaky=b"firing")
    assert topic == [b"other", b"resolved", b"firing", b"resolved"]
