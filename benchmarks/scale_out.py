"""`make bench`'s scale-out phase: 1, then 2 `paywatch run` workers of one group on a
four-partition topic holding the same stream; events/s of each group and its alert set.

Each worker is a process of its own (what production runs), with the default
``scale_out: tasks``: source tasks per partition, roll-up tasks fed through the
repartition topic.  A run is timed from the group's first commit on the events topic
to the commit of the last event (events/s), and to the moment the roll-up tasks have
committed every shipment (everything judged).  Offsets are read with the admin
client; the repartition topic's end from a consumer's fetch answer (``highwater``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream.ingest.kafka_client import ensure_topics
from stream.offline.kafka_replay import KafkaSpec, read_topic

PARTITIONS = 4


@dataclass
class ScaleRun:
    workers: int
    mode: str  # kafka.scale_out
    events_per_s: float
    judged_s: float  # first commit → every shipment committed by the roll-up tasks
    alerts: Counter[tuple[str, str]]


async def _committed(admin: AIOKafkaAdminClient, group: str, tps: list[TopicPartition]) -> int:
    got = await admin.list_consumer_group_offsets(group, partitions=tps)
    return sum(max(0, m.offset) for m in got.values())


async def _ends(bootstrap: str, tps: list[TopicPartition]) -> int:
    """The partitions' end offsets, from a fetch answer (end_offsets is wrong on Tansu)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)  # a lower bound: the fetch answer tells the rest
        await consumer.getmany(timeout_ms=500)
        return sum(consumer.highwater(tp) or 0 for tp in tps)
    finally:
        await consumer.stop()


def _config(bootstrap: str, topic: str, tag: str, path: Path, mode: str) -> dict[str, str]:
    kafka: dict[str, str] = {
        "bootstrap_servers": bootstrap,
        "group_id": f"scale-{tag}",
        "events_topic": topic,
        "alerts_topic": f"{topic}.alerts-{tag}",
        "dlq_topic": f"{topic}.dlq-{tag}",
        "state_topic": f"{topic}.state-{tag}",
        "control_topic": f"{topic}.control-{tag}",
        "repartition_topic": f"{topic}.rp-{tag}",
        "scale_out": mode,
    }
    timing = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "fetch_max_wait_ms": 20}
    doc = {
        "kafka": {**kafka, **timing},
        # The stream ends; the silence after it (until the run is stopped) is not
        # measured: with the default 15 s a slow run closes the tail as a traffic stop.
        "windows": {"idle_advance_s": 3600},
        "metrics": {"port": 0},
        "notify": {"console": {"enabled": False}},
    }
    path.write_text(yaml.safe_dump(doc))
    return kafka


async def _until(done: Callable[[], Awaitable[bool]], timeout_s: float) -> float:
    """Poll ``done`` every 0.2 s; returns the time (perf_counter) it first held."""
    deadline = time.monotonic() + timeout_s
    while not await done():
        if time.monotonic() > deadline:
            raise TimeoutError("scale-out run did not finish")
        await asyncio.sleep(0.2)
    return time.perf_counter()


async def scale_run(bootstrap: str, topic: str, n: int, workers: int, mode: str) -> ScaleRun:
    tag = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "worker.yaml"
        k = _config(bootstrap, topic, tag, cfg_path, mode)
        log = (Path(tmp) / "workers.log").open("ab")
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "run", "--config", str(cfg_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "XDG_DATA_HOME": tmp},
            )
            for _ in range(workers)
        ]
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            events = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            rollups = [TopicPartition(k["repartition_topic"], p) for p in range(PARTITIONS)]

            async def started() -> bool:
                return await _committed(admin, k["group_id"], events) > 0

            async def read_all() -> bool:
                return await _committed(admin, k["group_id"], events) >= n

            async def judged() -> bool:
                if mode == "single":
                    return True
                end = await _ends(bootstrap, rollups)
                return await _committed(admin, k["group_id"], rollups) >= end

            t0 = await _until(started, 120)
            t1 = await _until(read_all, 600)
            t2 = await _until(judged, 600)
        finally:
            await admin.close()
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(60)
            log.close()
        records = await read_topic(KafkaSpec(bootstrap, k["alerts_topic"]), idle_s=2.0)
    objs = [orjson.loads(value) for *_, value in records if value]
    seen = Counter((a["alert_id"], a["status"]) for a in objs)
    return ScaleRun(workers, mode, n / (t1 - t0), t2 - t0, seen)


Produce = Callable[[str, str, list[tuple[bytes, bytes]]], Awaitable[float]]


async def scale_out_phase(
    bootstrap: str, topic: str, values: list[tuple[bytes, bytes]], produce: Produce
) -> list[ScaleRun]:
    """The same stream on a four-partition topic, read by 1 and then 2 workers (tasks), and
    by one worker with ``scale_out: single`` (one pipeline: what tasks cost)."""
    await ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
    await produce(bootstrap, topic, values)
    runs = [("tasks", 1), ("tasks", 2), ("single", 1)]
    return [await scale_run(bootstrap, topic, len(values), w, mode) for mode, w in runs]


def report(runs: list[ScaleRun]) -> list[str]:
    one = runs[0]
    lines = []
    for r in runs:
        same = "identical alert set" if r.alerts == one.alerts else "ALERT SETS DIFFER"
        who = f"{r.workers} worker{'s' if r.workers > 1 else ''}, {r.mode}"
        lines.append(
            f"scale-out ({who}): {r.events_per_s:,.0f} events/s, all judged in "
            f"{r.judged_s:.1f} s, {sum(r.alerts.values())} alert records ({same} vs 1 worker)"
        )
    return lines
