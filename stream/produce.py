"""Produce v1 events from a Python payment service: build, validate, send with the right key.

Entry points: the builders :func:`provider_call`, :func:`payment_notification` and
:func:`metric` (``event_id`` and ``event_ts`` filled in), :func:`encode_event` (validate one
event with the decoder's own rules and return the Kafka ``(key, value)`` for any client)
and :class:`EventProducer` (aiokafka: validate, then send keyed ``provider|merchant_id``).

>>> ev = provider_call(service="checkout-api", provider="wechatpay", merchant_id="1900000109",
...                    operation="create_payment", outcome="success", latency_ms=182.4,
...                    event_ts=1764144000123, event_id="e-1")
>>> encode_event(ev, now_ms=1764144000123)[0]
b'wechatpay|1900000109'
>>> encode_event({**ev, "latency_ms": -5}, now_ms=1764144000123)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
stream.produce.InvalidEvent: latency_ms: ...

Validation is :func:`stream.ingest.decode.decode_batch` itself, so an event this module
accepts is one every paywatch worker accepts (with the same stream-clock bounds: a day
ahead, a week behind ``now``), and a refusal carries the DLQ reason the worker would give.
Nothing here imports the simulator.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
import orjson

from stream.ingest.decode import decode_batch
from stream.ingest.events import SCHEMA_VERSION, Source
from stream.ingest.schema import CallEvent, MetricEvent, NotificationEvent

DAY_S = 24 * 3600.0
_PRODUCER = "producer"  # the source topic named in a rejection


class InvalidEvent(ValueError):
    """An event paywatch would send to the DLQ; ``reason`` is the worker's own text."""

    def __init__(self, reason: str, field: str | None, index: int | None = None) -> None:
        where = f"event {index}: " if index is not None else ""
        super().__init__(f"{where}{field + ': ' if field else ''}{reason}")
        self.reason = reason
        self.field = field
        self.index = index


def _known(struct: Any) -> frozenset[str]:
    return frozenset(f.name for f in msgspec.structs.fields(struct)) | {"event_type"}


_FIELDS = {
    "provider_call": _known(CallEvent),
    "payment_notification": _known(NotificationEvent),
    "metric": _known(MetricEvent),
}


def new_event(
    event_type: str,
    *,
    service: str,
    event_ts: int | None = None,
    event_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A v1 event dict: envelope filled in (``event_ts`` now in ms, ``event_id`` a UUID),
    ``None`` fields left out.  A keyword that is no v1 field of the type is a ``TypeError``
    (a typo would otherwise be ignored by paywatch); put your own fields in ``extra``."""
    known = _FIELDS.get(event_type)
    if known is None:
        raise ValueError(f"unknown event_type {event_type!r}; use one of {', '.join(_FIELDS)}")
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(
            f"{event_type}: no v1 field named {', '.join(unknown)} "
            "(see docs/events.md; pass your own fields in extra={...})"
        )
    event: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_type": event_type,
        "event_id": event_id if event_id is not None else str(uuid.uuid4()),
        "event_ts": event_ts if event_ts is not None else time.time_ns() // 1_000_000,
        "service": service,
    }
    event.update({k: v for k, v in fields.items() if v is not None})
    if extra:
        event.update({k: v for k, v in extra.items() if k not in event})
    return event


def provider_call(
    *,
    service: str,
    provider: str,
    merchant_id: str,
    operation: str,
    outcome: str,
    latency_ms: float,
    **optional: Any,
) -> dict[str, Any]:
    """One call to a provider's API (docs/events.md#provider_call); ``event_ts`` = call start."""
    return new_event(
        "provider_call",
        service=service,
        provider=provider,
        merchant_id=merchant_id,
        operation=operation,
        outcome=outcome,
        latency_ms=latency_ms,
        **optional,
    )


def payment_notification(
    *,
    service: str,
    provider: str,
    merchant_id: str,
    notify_id: str,
    signature_verified: bool,
    ack_status: str,
    **optional: Any,
) -> dict[str, Any]:
    """One callback from a provider (docs/events.md#payment_notification); ``event_ts`` =
    when it was received."""
    return new_event(
        "payment_notification",
        service=service,
        provider=provider,
        merchant_id=merchant_id,
        notify_id=notify_id,
        signature_verified=signature_verified,
        ack_status=ack_status,
        **optional,
    )


def metric(*, service: str, name: str, value: float, **optional: Any) -> dict[str, Any]:
    """A sample of any other number (docs/events.md#metric), e.g. ``cert_days_to_expiry``."""
    return new_event("metric", service=service, name=name, value=value, **optional)


def event_key(event: Mapping[str, Any]) -> bytes:
    """Partitioning key ``provider|merchant_id`` (provider lowercased, as paywatch reads it),
    so one merchant's events stay in order on one partition; ``service`` for metrics."""
    if "provider" in event and "merchant_id" in event:
        return f"{str(event['provider']).lower()}|{event['merchant_id']}".encode()
    return str(event.get("service", "")).encode()


def encode_events(
    events: Sequence[Mapping[str, Any]],
    *,
    now_ms: int | None = None,
    max_future_s: float = DAY_S,
    max_past_s: float = 7 * DAY_S,
) -> list[tuple[bytes, bytes]]:
    """Validate events in one decoder call; ``(key, value)`` per event, or ``InvalidEvent``
    for the first one a worker would reject (its ``index`` says which)."""
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    values = [orjson.dumps(e, option=orjson.OPT_SERIALIZE_NUMPY) for e in events]
    batch = decode_batch(
        values,
        [Source(_PRODUCER, 0, i) for i in range(len(values))],  # offset = index
        reference_ms=now,
        max_future_ms=int(max_future_s * 1000),
        max_past_ms=int(max_past_s * 1000),
    )
    if batch.rejected:
        first = batch.rejected[0]
        index = first.source.offset if len(values) > 1 else None
        raise InvalidEvent(first.reason, first.field, index)
    return [(event_key(e), v) for e, v in zip(events, values, strict=True)]


def encode_event(event: Mapping[str, Any], **kwargs: Any) -> tuple[bytes, bytes]:
    """One validated event as Kafka ``(key, value)``, for any Kafka client (confluent-kafka,
    kafka-python, ...); raises :class:`InvalidEvent` with the worker's reason."""
    return encode_events([event], **kwargs)[0]


class EventProducer:
    """Validated, keyed events to the events topic with aiokafka.

    ``send`` waits for the broker's acknowledgement and returns (partition, offset);
    ``send_many`` validates every event first (nothing is sent when one is invalid), then
    sends them all and waits once.  ``validate=False`` skips the decoder (keys still set).
    Extra keyword arguments go to :class:`aiokafka.AIOKafkaProducer` (security settings...).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = "payments.events",
        *,
        validate: bool = True,
        **producer_config: Any,
    ) -> None:
        from aiokafka import AIOKafkaProducer

        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.validate = validate
        config = {"linger_ms": 5, "acks": "all", **producer_config}
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, **config)

    async def start(self) -> EventProducer:
        from stream.ingest.kafka_client import start_client

        await start_client(self._producer, self.bootstrap_servers, what=" to produce events")
        return self

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> EventProducer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _encode(self, events: Sequence[Mapping[str, Any]]) -> list[tuple[bytes, bytes]]:
        if self.validate:
            return encode_events(events)
        return [(event_key(e), orjson.dumps(e)) for e in events]

    async def send(self, event: Mapping[str, Any]) -> tuple[int, int]:
        """Validate and send one event; returns (partition, offset) once acknowledged."""
        [(key, value)] = self._encode([event])
        meta = await self._producer.send_and_wait(self.topic, value, key=key)
        return int(meta.partition), int(meta.offset)

    async def send_many(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Validate all, then send all; returns how many were acknowledged."""
        import asyncio

        records = self._encode(list(events))
        futures = [await self._producer.send(self.topic, v, key=k) for k, v in records]
        await asyncio.gather(*futures)
        return len(futures)
