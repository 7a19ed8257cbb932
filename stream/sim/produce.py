"""Produce simulated v1 events to Kafka the way payment services do (key ``provider|merchant_id``).

Used by ``paywatch simulate --to-kafka``, the demo and the integration tests; services use
:mod:`stream.produce` (build, validate, send), whose key rule this shares.
With ``speed`` > 0 events are paced so event time runs ``speed`` times faster
than the wall clock, which is how the demo shows an hour of traffic in a minute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from stream.ingest.kafka_client import start_client
from stream.produce import event_key  # the one key rule, shared with services' producers


async def produce_events(
    events: Iterable[dict[str, Any] | bytes],
    bootstrap: str,
    topic: str,
    *,
    speed: float = 0.0,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[int], None] | None = None,
    chunk: int = 500,
) -> int:
    """Send events (dicts, or raw bytes for deliberately malformed records); returns the count."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, acks=1)
    await start_client(producer, bootstrap)
    sent = 0
    first_ts: int | None = None
    wall0 = time.monotonic()
    pending: list[asyncio.Future[Any]] = []
    try:
        for ev in events:
            if stop is not None and stop.is_set():
                break
            if isinstance(ev, bytes):
                value, key, ts = ev, b"malformed", None
            else:
                value = orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY)
                key, ts = event_key(ev), ev.get("event_ts")
            if speed > 0 and isinstance(ts, int):
                if first_ts is None:
                    first_ts = ts
                due = wall0 + (ts - first_ts) / 1000 / speed
                delay = due - time.monotonic()
                if delay > 0.005:
                    if pending:
                        await asyncio.gather(*pending)
                        pending.clear()
                    if on_progress:
                        on_progress(sent)
                    await asyncio.sleep(delay)
            pending.append(await producer.send(topic, value, key=key))
            sent += 1
            if len(pending) >= chunk:
                await asyncio.gather(*pending)
                pending.clear()
                if on_progress:
                    on_progress(sent)
        if pending:
            await asyncio.gather(*pending)
        if on_progress:
            on_progress(sent)
    finally:
        await producer.stop()
    return sent
