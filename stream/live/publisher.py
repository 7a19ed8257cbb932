"""Where the worker's output goes: alert v1 records to the alerts topic, rejections to the DLQ.

:func:`messages` encodes a batch's output as Kafka messages (the one place that
decides topics, keys, values and headers); :class:`KafkaPublisher` sends them
and waits for the broker's acks, :class:`~stream.live.memory.MemoryPublisher`
keeps them in a list (tests).

Alert records are bounded on the wire (:func:`bounded_alert`: strings and hints
cut with a marker), so one is always far below Kafka's 1 MB default.  A record
the broker still refuses for its own sake (too large, corrupt) never stops the
worker: it is logged, counted and sent again trimmed to a minimum; errors of the
connection (the broker away, a leader moving) are retried until they pass, so
nothing is committed past an unpublished record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from stream.config import KafkaConfig
from stream.ingest.dlq import dlq_record
from stream.ingest.events import Rejected
from stream.ingest.kafka_client import client_kwargs, start_client

log = logging.getLogger("paywatch.publisher")

AlertObject = Mapping[str, Any]  # one alert v1 JSON object (AlertRecord.to_dict())
OnError = Callable[[str, BaseException], None]  # (output, error): counted by the worker

# Bounds of an alert record on the wire: each string (summary, series values, hint
# values) and the number of hints.  Inputs are bounded already (docs/events.md), so this
# only bites on a record made from something unforeseen; ~16 KiB at the very most.
ALERT_STRING_MAX = 1024
ALERT_HINTS_MAX = 10
# What the broker refuses for the record's own sake: the record is trimmed and sent again.
_PER_RECORD = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
)
_RETRY_MAX_S = 10.0
# The header naming the consumer group whose worker published an alert record: a group
# that starts without its state closes the episodes it left open, never another group's
# (stream/live/orphans.py).  A header, so the alert v1 object itself is unchanged.
GROUP_HEADER = "paywatch-group"


def _cut(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, with a marker saying how much was cut.

    >>> _cut("abcdefghij" * 10, 30)
    'abcdefghijab…[+88 characters]'
    """
    if len(text) <= limit:
        return text
    marker = "…[+{} characters]"
    keep = max(0, limit - len(marker.format(len(text))))
    return text[:keep] + marker.format(len(text) - keep)


def bounded_alert(rec: AlertObject, limit: int = ALERT_STRING_MAX) -> AlertObject:
    """The alert v1 object with long strings cut and at most ``ALERT_HINTS_MAX`` hints
    (the same object when nothing needs cutting).  Identity fields (ids, fingerprint,
    rule) are short by construction and kept whole."""
    series = rec.get("series") or {}
    hints = rec.get("hints") or []
    summary = str(rec.get("summary") or "")
    if (
        len(summary) <= limit
        and len(hints) <= ALERT_HINTS_MAX
        and all(len(str(v)) <= limit for v in series.values())
        and all(len(str(h.get("value", ""))) <= limit for h in hints)
    ):
        return rec
    out = dict(rec)
    out["series"] = {k: _cut(str(v), limit) for k, v in series.items()}
    out["summary"] = _cut(summary, limit)
    out["hints"] = [
        {**h, "value": _cut(str(h.get("value", "")), limit)} for h in hints[:ALERT_HINTS_MAX]
    ]
    return out


@dataclass(frozen=True)
class Message:
    """One Kafka message as published."""

    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int | None = None  # None: the producer's partitioner picks it from the key


def messages(
    cfg: KafkaConfig, alerts: Sequence[AlertObject], rejected: Sequence[Rejected]
) -> list[Message]:
    """Alerts keyed by fingerprint (one partition per episode), the consumer group that
    judged them in a header (:data:`GROUP_HEADER`), then DLQ records keyed by where the
    record came from, with the reason in a header."""
    group = ((GROUP_HEADER, cfg.group_id.encode()),)
    out = [
        Message(
            cfg.alerts_topic,
            str(rec["fingerprint"]).encode(),
            orjson.dumps(bounded_alert(rec)),
            group,
        )
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


def trimmed(cfg: KafkaConfig, m: Message) -> Message:
    """The smallest faithful form of a message the broker refused for its size: an alert
    keeps its identity, status, numbers and a short summary; a DLQ record its reason and
    source without the raw text.  The message gets a ``trimmed`` header."""
    obj = orjson.loads(m.value)
    if m.topic == cfg.alerts_topic:
        obj = {**bounded_alert(obj, 128), "hints": []}
    else:
        obj = {**obj, "raw": ""}
    return replace(m, value=orjson.dumps(obj), headers=(*m.headers, ("trimmed", b"1")))


class KafkaPublisher:
    """Produces alert v1 records and DLQ records; waits for the broker's acks.

    ``on_error(output, exc)`` hears of every record the broker refused ("alerts" or
    "dlq") and every retried connection error ("broker"): the worker counts them.
    """

    def __init__(self, cfg: KafkaConfig, *, on_error: OnError | None = None, **overrides: Any):
        self.cfg = cfg
        self.on_error = on_error
        self.producer = AIOKafkaProducer(
            **client_kwargs(cfg),
            client_id=f"{cfg.client_id}-publisher",
            acks="all",
            linger_ms=2,
            request_timeout_ms=cfg.request_timeout_ms,
            **overrides,
        )

    async def start(self) -> None:
        await start_client(self.producer, self.cfg.bootstrap_servers)

    async def stop(self) -> None:
        await self.producer.stop()

    async def publish(self, alerts: Sequence[AlertObject], rejected: Sequence[Rejected]) -> None:
        """Send everything, then wait until the broker has acknowledged all of it."""
        await self.send_messages(messages(self.cfg, alerts, rejected))

    async def send_messages(self, batch: Sequence[Message]) -> None:
        """Send ``batch``, retrying what the connection refused, until the broker has
        acknowledged all of it.  A keyed record (an alert) that is refused is sent again
        with its key's later records after it, so an episode's firing record retried
        after its resolution never leaves it firing for every reader."""
        pending, delay = list(batch), 0.5
        while pending:
            pending = await self._send_all(pending)
            if pending:  # the broker is away or moving: the same records again, later
                await asyncio.sleep(delay)
                delay = min(2 * delay, _RETRY_MAX_S)

    async def _send_all(self, batch: list[Message]) -> list[Message]:
        """One attempt at every message; returns, in batch order, those to retry for a
        connection error and, after a refused keyed record, the later records of its key
        again (delivered or not: the last record of a key on the topic stays the latest;
        a duplicate is what at-least-once allows).  A message refused for its own sake
        is replaced by its trimmed form, once."""
        outcome: list[Any] = []
        for m in batch:
            try:
                outcome.append(
                    await self.producer.send(
                        m.topic,
                        m.value,
                        key=m.key,
                        partition=m.partition,
                        headers=list(m.headers) if m.headers else None,
                    )
                )
            except KafkaError as exc:
                outcome.append(exc)
        futures = [(i, f) for i, f in enumerate(outcome) if not isinstance(f, KafkaError)]
        results = await asyncio.gather(*(f for _, f in futures), return_exceptions=True)
        for (i, _), res in zip(futures, results, strict=True):
            outcome[i] = res
        retry: list[Message] = []
        refused: set[tuple[str, bytes]] = set()
        for m, res in zip(batch, outcome, strict=True):
            if isinstance(res, KafkaError):
                self._refused(m, res, retry)
                refused.add((m.topic, m.key))
            elif isinstance(res, BaseException):
                raise res
            elif m.partition is None and (m.topic, m.key) in refused:
                retry.append(m)
        return retry

    def _refused(self, m: Message, exc: KafkaError, retry: list[Message]) -> None:
        output = {self.cfg.alerts_topic: "alerts", self.cfg.dlq_topic: "dlq"}.get(
            m.topic, "repartition"
        )
        if isinstance(exc, _PER_RECORD) and output == "repartition":
            raise exc  # events cannot be trimmed; shipments are cut far below the limit
        if isinstance(exc, _PER_RECORD):
            self._report(output, exc)
            if dict(m.headers).get("trimmed"):
                log.error("%s record %r refused even trimmed (%s); dropped", output, m.key, exc)
                return
            log.error("%s record %r refused (%s); sending it trimmed", output, m.key, exc)
            retry.append(trimmed(self.cfg, m))
        elif exc.retriable or isinstance(exc, KafkaTimeoutError):
            self._report("broker", exc)
            log.warning("publishing to %s failed (%s); retrying", m.topic, exc)
            retry.append(m)
        else:  # authorisation, a missing topic: nothing a retry or a trim would change
            raise exc

    def _report(self, output: str, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(output, exc)
