"""stream.produce, the producer helper for Python services: events it builds are the ones a
worker accepts, keyed ``provider|merchant_id`` on the real local broker; an event a worker
would reject is refused before anything is sent, with the worker's own reason."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.ingest.decode import decode_batch
from stream.ingest.events import Source
from stream.ingest.kafka_client import ensure_topics
from stream.produce import (
    EventProducer,
    InvalidEvent,
    encode_event,
    metric,
    payment_notification,
    provider_call,
)
from stream.sim.broker import LocalBroker


def _call(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "service": "checkout-api",
        "provider": "wechatpay",
        "merchant_id": "1900000109",
        "operation": "create_payment",
        "outcome": "success",
        "latency_ms": 182.4,
        "out_trade_no": "T20251126000123",
        "amount_minor": 8888,
        "currency": "CNY",
        "http_status": 200,
    }
    return provider_call(**{**fields, **overrides})


async def _read(bootstrap: str, topic: str, n: int, timeout_s: float = 15.0) -> list[Any]:
    """The first ``n`` records of ``topic`` (partition 0), waiting until they are there."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=20
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got: list[Any] = []
        async with asyncio.timeout(timeout_s):
            while len(got) < n:
                batch = await consumer.getmany(tp, timeout_ms=200)
                got += batch.get(tp, [])
        return got
    finally:
        await consumer.stop()


async def test_events_reach_the_topic_keyed_and_accepted_by_the_decoder(
    broker: LocalBroker,
) -> None:
    topic = f"events-{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker.bootstrap, [topic])
    events = [
        _call(provider="WeChatPay"),  # a capitalised provider is read as wechatpay
        payment_notification(
            service="notify-gateway",
            provider="alipay",
            merchant_id="2021000117673683",
            notify_id="N-1",
            signature_verified=True,
            ack_status="acked",
            out_trade_no="T1",
        ),
        metric(service="cert-watcher", name="cert_days_to_expiry", value=12.0, unit="days"),
    ]
    async with EventProducer(broker.bootstrap, topic) as producer:
        first = await producer.send(events[0])
        assert await producer.send_many(events[1:]) == 2
    assert first == (0, 0)
    records = await _read(broker.bootstrap, topic, 3)
    assert [r.key for r in records] == [b"wechatpay|1900000109", b"alipay|2021000117673683",
                                        b"cert-watcher"]  # fmt: skip
    values = [r.value for r in records]
    batch = decode_batch(values, [Source(topic, 0, r.offset) for r in records])
    assert batch.rejected == []
    assert (len(batch.calls), len(batch.notifications), len(batch.metrics)) == (1, 1, 1)
    sent = orjson.loads(values[0])
    assert sent["schema_version"] == 1 and sent["event_type"] == "provider_call"
    assert abs(sent["event_ts"] - time.time() * 1000) < 60_000 and len(sent["event_id"]) == 36


async def test_an_invalid_event_is_refused_with_the_reason_and_never_sent(
    broker: LocalBroker,
) -> None:
    topic = f"events-{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker.bootstrap, [topic])
    async with EventProducer(broker.bootstrap, topic) as producer:
        assert await producer.send(_call(out_trade_no="A")) == (0, 0)
        with pytest.raises(InvalidEvent) as one:
            await producer.send(_call(latency_ms=-5, out_trade_no="BAD"))
        assert one.value.field == "latency_ms" and one.value.index is None
        with pytest.raises(InvalidEvent) as many:
            await producer.send_many([_call(out_trade_no="B"), _call(operation="pay")])
        assert (many.value.field, many.value.index) == ("operation", 1)
        assert "operation" in many.value.reason
        # The next event takes the next offset: neither refused send wrote anything.
        assert await producer.send(_call(out_trade_no="C")) == (0, 1)
    records = await _read(broker.bootstrap, topic, 2)
    assert [orjson.loads(r.value)["out_trade_no"] for r in records] == ["A", "C"]


def test_the_decoder_decides_validity_including_the_stream_clock() -> None:
    now = 1_764_144_000_000
    ev = _call(event_ts=now - 1000)
    key, value = encode_event(ev, now_ms=now)
    assert (key, orjson.loads(value)) == (b"wechatpay|1900000109", ev)
    with pytest.raises(InvalidEvent, match="event_ts"):
        encode_event(_call(event_ts=now + 2 * 86_400_000), now_ms=now)  # two days ahead
    with pytest.raises(InvalidEvent) as missing:
        encode_event({k: v for k, v in ev.items() if k != "merchant_id"}, now_ms=now)
    assert missing.value.field == "merchant_id"


def test_builders_refuse_a_misspelt_field_and_keep_your_own_in_extra() -> None:
    with pytest.raises(TypeError, match="latency"):
        provider_call(service="s", provider="alipay", merchant_id="m", operation="refund",
                      outcome="success", latency_ms=1.0, latency=3)  # fmt: skip
    ev = _call(trace_id=None, extra={"team": "payments"})
    assert "trace_id" not in ev and ev["team"] == "payments"
    encode_event(ev)  # unknown keys are ignored by the decoder


def test_importable_without_the_simulator() -> None:
    code = (
        "import sys, stream.produce; "
        "bad = sorted(m for m in sys.modules if m.startswith(('stream.sim', 'stream.live'))); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
