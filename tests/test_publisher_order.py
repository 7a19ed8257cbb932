"""Records of one partition reach the broker in order even when the connection refuses
one of them: a retried record never lands behind a later one of its partition."""

from __future__ import annotations

from stream.config import KafkaConfig
from stream.live.publisher import KafkaPublisher, Message


class FlakyConnection(KafkaPublisher):
    """The real publisher with its one broker round-trip replaced: the first attempt at
    ``flaky`` fails as a dropped connection does (returned for a retry)."""

    def __init__(self, flaky: bytes) -> None:
        super().__init__(KafkaConfig(bootstrap_servers="localhost:1"))
        self.flaky = flaky
        self.delivered: list[bytes] = []

    async def _send_all(self, batch: list[Message]) -> list[Message]:
        retry = [m for m in batch if m.value == self.flaky]
        self.flaky = b""
        self.delivered.extend(m.value for m in batch if m not in retry)
        return retry


async def test_a_retried_shipment_record_is_not_overtaken_by_the_next_one() -> None:
    pub = FlakyConnection(flaky=b"p0-first")
    shipment = [
        Message("r", b"k", b"p0-first", partition=0),
        Message("r", b"k", b"p1-only", partition=1),
        Message("r", b"k", b"p0-second", partition=0),
    ]
    await pub.send_messages(shipment)
    assert pub.delivered == [b"p1-only", b"p0-first", b"p0-second"]


async def test_a_resolution_is_not_published_before_its_retried_firing_record() -> None:
    pub = FlakyConnection(flaky=b"firing")
    records = [Message("alerts", b"fp1", b"firing"), Message("alerts", b"fp1", b"resolved")]
    await pub.send_messages(records)
    assert pub.delivered == [b"firing", b"resolved"]
