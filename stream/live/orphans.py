"""Alert episodes a cold start left open, closed so that none fires for ever.

A task that starts without its state knows none of the episodes its series had open.
That happens when there is no checkpoint yet, when checkpoints are off, when the
checkpoint was written under other ``windows``, ``detectors`` or ``alerts`` settings
(a retune), or by an incompatible version.  Nothing would ever end those episodes: no
record would resolve them, the dispatcher would keep them firing and the recovery page
would never come, while the trouble, if it lasts, pages again as a new episode once the
detectors have warmed up.

So such a task, before it reads anything, reads the alerts topic to its end and takes
the last record of every episode published by its own consumer group (the header
:data:`~stream.live.publisher.GROUP_HEADER`) on a series it owns.  For each one still
firing it publishes a ``resolved`` record saying why: "closed unjudged".  This is
Alertmanager's resolve timeout in spirit: an alert nobody keeps alive ends, visibly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson

from stream.alerting.record import STATE_LOST, AlertRecord
from stream.clock import Clock
from stream.config import KafkaConfig
from stream.ingest.kafka_client import read_topic_to_end
from stream.live.publisher import GROUP_HEADER, Publisher

log = logging.getLogger("paywatch.orphans")


def closing_record(rec: AlertRecord, now_ms: int, reason: str) -> AlertRecord:
    """The ``resolved`` record of an episode left open by a lost state: ended at its last
    judged window, ``detected_at`` now, the summary and ``evidence`` saying why.

    >>> rec = AlertRecord("a1", "f1", "firing", "critical", "system_error_rate",
    ...     "error_rate", {"provider": "alipay"}, started_at=0, window_end=60_000,
    ...     summary="alipay system errors 40%")
    >>> done = closing_record(rec, 90_000, "no checkpoint")
    >>> done.status, done.resolved_at, done.detected_at, done.alert_id
    ('resolved', 60000, 90000, 'a1')
    >>> done.summary  # doctest: +NORMALIZE_WHITESPACE
    "closed unjudged: paywatch restarted without this alert's state (no checkpoint) and
    pages again if the trouble persists; last: alipay system errors 40%"
    >>> done.evidence
    {'state_lost': {'reason': 'no checkpoint'}}
    """
    return replace(
        rec,
        status="resolved",
        resolved_at=rec.window_end,
        detected_at=now_ms,
        summary=(
            f"closed unjudged: paywatch restarted without this alert's state ({reason}) "
            f"and pages again if the trouble persists; last: {rec.summary}"
        ),
        evidence={**(rec.evidence or {}), STATE_LOST: {"reason": reason}},
    )


async def left_open(
    k: KafkaConfig, owns: Callable[[AlertRecord], bool]
) -> tuple[list[AlertRecord], int]:
    """The last record of every episode this group published that is still firing on a
    series ``owns`` claims, and how many records the alerts topic held."""
    mine = (GROUP_HEADER, k.group_id.encode())
    last: dict[str, AlertRecord] = {}
    read = 0

    def take(r: Any) -> None:
        nonlocal read
        read += 1
        if r.value is None or mine not in (r.headers or ()):
            return
        try:
            rec = AlertRecord.from_dict(orjson.loads(r.value))
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
            return  # not an alert record: nothing of ours to close
        last[rec.alert_id] = rec  # one episode's records share a key, so a partition

    await read_topic_to_end(k, k.alerts_topic, take, what=" (alerts topic)")
    return [rec for rec in last.values() if rec.firing and owns(rec)], read


class OrphanCloser:
    """Closes the episodes a cold start left open (what a rebalance handler calls)."""

    def __init__(self, kafka: KafkaConfig, publisher: Publisher, clock: Clock) -> None:
        self.kafka = kafka
        self.publisher = publisher
        self.clock = clock

    async def close(self, owns: Callable[[AlertRecord], bool], reason: str, what: str) -> int:
        """Publish the closing record of every episode :func:`left_open` finds; returns
        how many.  A failure is logged, never raised: the worker runs on, and those
        episodes stay firing until an operator acknowledges them."""
        try:
            found, read = await left_open(self.kafka, owns)
            now = self.clock.now_ms()
            closing = [closing_record(rec, now, reason).to_dict() for rec in found]
            if closing:
                await self.publisher.publish(closing, [])
        except Exception as exc:
            log.warning(
                "%s started without its state, and the episodes it left firing could not "
                "be closed (%s): they stay firing; acknowledge them with `paywatch alerts ack`",
                what,
                exc,
            )
            return 0
        log.log(
            logging.INFO if read else logging.DEBUG,  # a new deployment has no alerts yet
            "%s started without its state (%s): read %d alert records, closed %d episodes "
            "left firing",
            what,
            reason,
            read,
            len(closing),
        )
        return len(closing)
