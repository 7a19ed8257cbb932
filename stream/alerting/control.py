"""The control topic (``paywatch.control``): silences, unsilences and acks for every worker.

Each worker reads the whole topic itself — no consumer group, every partition,
from the beginning, then follows it — because every worker must know every
silence and ack: a silence on ``provider=alipay`` has to mute the alipay alerts of
whichever worker owns those partitions.  Replaying from the beginning on start-up
is what restores silences after a restart (expired ones change nothing).

Records are JSON (see :mod:`stream.alerting.silences`); the key is the silence id or the
ack target, so the history of one silence stays on one partition in order.  Workers
follow the topic with :class:`stream.live.control_reader.ControlReader`.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream.alerting.silences import ControlEvent
from stream.ingest.kafka_client import (
    KafkaUnavailable,
    Security,
    ensure_topics,
    start_client,
)


def control_key(event: ControlEvent) -> bytes:
    """The record key: what the event is about.

    >>> control_key(ControlEvent("ack", target="a1b2"))
    b'a1b2'
    """
    if event.kind == "silence" and event.silence is not None:
        return event.silence.id.encode()
    if event.kind == "unsilence" and event.silence_id is not None:
        return event.silence_id.encode()
    return str(event.target or "").encode()


async def publish_control(
    bootstrap: str,
    topic: str,
    event: ControlEvent,
    *,
    timeout_s: float = 10.0,
    security: Security | None = None,
) -> None:
    """Publish one control event and wait for the broker's ack (used by ``paywatch alerts``);
    ``security``: :func:`~stream.ingest.kafka_client.security_kwargs` of the config."""
    await ensure_topics(bootstrap, [topic], timeout_s=timeout_s, security=security)
    producer = AIOKafkaProducer(
        **(security or {}),
        bootstrap_servers=bootstrap,
        client_id="paywatch-cli",
        acks="all",
        request_timeout_ms=int(timeout_s * 1000),
    )
    await start_client(producer, bootstrap, timeout_s=timeout_s)
    try:
        await asyncio.wait_for(
            producer.send_and_wait(topic, event.encode(), key=control_key(event)), timeout_s
        )
    except (TimeoutError, KafkaError) as exc:
        raise KafkaUnavailable(
            f"Kafka at {bootstrap} did not accept the control event ({type(exc).__name__})"
        ) from None
    finally:
        await producer.stop()
