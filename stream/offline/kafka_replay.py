"""Read a Kafka topic between two event times, for ``paywatch backtest --input kafka://…``.

``kafka://HOST:PORT[,HOST:PORT]/TOPIC?from=ISO&to=ISO`` reads every partition
from its beginning to its current end (no consumer group, nothing committed)
and keeps the events whose ``event_ts`` lies in ``[from, to)``; either bound may
be left out.  Records are then replayed in event-time order (ties: partition,
offset), so the replay does not depend on how the broker interleaved partitions
in its fetches, and is byte-identical from run to run.

Kafka's own record timestamps are not used: producers usually stamp their send
time, not the event's, and some brokers ignore them for time lookups.  The
selected range is held in memory (about the size of the raw records) while it
is sorted.  Records that are not JSON with an ``event_ts`` keep the position
of the record before them in their partition, so the DLQ sees them too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.ingest.events import Source
from stream.ingest.kafka_client import KafkaUnavailable, Security, start_client
from stream.offline.labels import parse_time_ms


@dataclass(frozen=True)
class KafkaSpec:
    bootstrap: str
    topic: str
    from_ms: int | None = None
    to_ms: int | None = None


def parse_kafka_url(url: str) -> KafkaSpec:
    """``kafka://HOST:PORT/TOPIC?from=ISO&to=ISO`` (times ISO, naive = UTC, or epoch ms).

    >>> spec = parse_kafka_url("kafka://127.0.0.1:9092/payments.events?from=2026-01-01T00:00Z")
    >>> spec.bootstrap, spec.topic, spec.from_ms, spec.to_ms
    ('127.0.0.1:9092', 'payments.events', 1767225600000, None)
    """
    parts = urlsplit(url)
    topic = unquote(parts.path.lstrip("/"))
    if parts.scheme != "kafka" or not parts.netloc or not topic or "/" in topic:
        raise ValueError(f"--input {url!r}: expected kafka://HOST:PORT/TOPIC?from=ISO&to=ISO")
    query = parse_qs(parts.query)
    unknown = set(query) - {"from", "to"}
    if unknown:
        raise ValueError(f"--input {url!r}: unknown parameter {sorted(unknown)[0]!r} (from, to)")
    bounds: dict[str, int | None] = {}
    for name in ("from", "to"):
        values = query.get(name)
        try:
            bounds[name] = parse_time_ms(values[-1]) if values else None
        except ValueError as exc:
            raise ValueError(f"--input {name}=: {exc}") from None
    lo, hi = bounds["from"], bounds["to"]
    if lo is not None and hi is not None and hi <= lo:
        raise ValueError(f"--input {url!r}: 'to' must be after 'from'")
    return KafkaSpec(parts.netloc, topic, lo, hi)


Record = tuple[int, int, int, bytes | None]  # (event_ts, partition, offset, value)


async def read_topic(
    spec: KafkaSpec, idle_s: float = 5.0, security: Security | None = None
) -> list[Record]:
    """Every record of the topic's partitions up to their current end, in range
    (``security``: :func:`~stream.ingest.kafka_client.security_kwargs` of the config)."""
    consumer = AIOKafkaConsumer(
        **(security or {}),
        bootstrap_servers=spec.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        request_timeout_ms=10000,
    )
    await start_client(consumer, spec.bootstrap, what=" to replay the topic", timeout_s=15)
    try:
        topics = await consumer.topics()  # refreshes the metadata partitions_for_topic reads
        ids = consumer.partitions_for_topic(spec.topic) if spec.topic in topics else None
        if not ids:
            raise KafkaUnavailable(f"topic {spec.topic!r} not found at {spec.bootstrap}")
        tps = [TopicPartition(spec.topic, p) for p in sorted(ids)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Record] = []
        last_ts = {tp.partition: spec.from_ms or 0 for tp in tps}
        loop = asyncio.get_running_loop()
        idle_until = loop.time() + idle_s
        while True:
            got = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for tp, records in got.items():
                for r in records:
                    ts = _event_ts(r.value)
                    if ts is None:
                        ts = last_ts[tp.partition]
                    last_ts[tp.partition] = ts
                    if (spec.from_ms is None or ts >= spec.from_ms) and (
                        spec.to_ms is None or ts < spec.to_ms
                    ):
                        out.append((ts, tp.partition, r.offset, r.value))
            if got:
                idle_until = loop.time() + idle_s
            # highwater() is what the broker reported in its last fetch answer
            # (end_offsets is wrong on some brokers when producers batch).
            done = True
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is None or await consumer.position(tp) < hw:
                    done = False
            if done or loop.time() > idle_until:
                break
    finally:
        await consumer.stop()
    out.sort(key=lambda r: (r[0], r[1], r[2]))
    return out


def _event_ts(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        ts = orjson.loads(value).get("event_ts")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return ts if isinstance(ts, int) and not isinstance(ts, bool) else None


_last: tuple[KafkaSpec, list[Record]] | None = None


def kafka_batches(
    spec: KafkaSpec, batch_size: int = 5000, security: Security | None = None
) -> Iterator[tuple[list[bytes | None], list[Source]]]:
    """The selected records in event-time order, as pipeline batches.

    The last range read is kept, so a second replay in the same process (the
    report's recording pass) sees exactly the records the first one did, even
    while producers keep appending to the topic.
    """
    global _last
    if _last is not None and _last[0] == spec:
        records = _last[1]
    else:
        records = asyncio.run(read_topic(spec, security=security))
        _last = (spec, records)
    for i in range(0, len(records), batch_size):
        chunk = records[i : i + batch_size]
        yield [r[3] for r in chunk], [Source(spec.topic, r[1], r[2]) for r in chunk]
