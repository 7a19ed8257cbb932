"""Against the real local broker: a four-partition backlog read from the start, and a
worker killed with SIGKILL mid-incident whose successor continues from the checkpoint."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import TopicPartition

from stream.clock import ManualClock
from stream.config import Config
from stream.ingest.kafka_client import ensure_topics
from stream.live.state_store import KafkaStateStore, state_key
from stream.live.tasks import repartition_topic, task_key
from stream.live.worker import run_worker
from stream.offline.backtest import backtest_events
from stream.offline.kafka_replay import KafkaSpec
from stream.offline.kafka_replay import read_topic as replay_topic
from stream.sim.produce import produce_events
from tests.servers import wait_until_async
from tests.test_replay_equivalence import alert_keys, write_jsonl
from tests.test_worker_kafka import WatchedSource, read_topic
from tests.traffic import OUTAGE, T0, traffic

PARTITIONS = 4


def backtest(cfg: Config, events: list[dict[str, Any]], tmp: Path) -> list[dict[str, Any]]:
    out = tmp / "alerts.jsonl"
    backtest_events(write_jsonl(events, tmp / "events.jsonl"), cfg, out, progress=None)
    return [orjson.loads(x) for x in out.read_bytes().splitlines()]


def without_detected_at(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    key = lambda r: (r["window_end"], r["alert_id"], r["status"])  # noqa: E731
    return [{k: v for k, v in r.items() if k != "detected_at"} for r in sorted(records, key=key)]


async def test_a_four_partition_backlog_is_judged_as_the_backtest_judges_it(
    kafka_config: Config, tmp_path: Path
) -> None:
    """25 simulated minutes on four partitions, all in the topic before the worker starts:
    no event is late (the stream's own disorder is none) and the alerts are the backtest's."""
    cfg = kafka_config
    cfg.kafka.decode_workers = 0
    events = traffic(1500)
    for i, ev in enumerate(events):  # 24 merchants, so every partition has traffic
        ev["merchant_id"] = f"{ev['merchant_id']}-{(i // 6) % 4}"
    want = await asyncio.to_thread(backtest, cfg, events, tmp_path)
    assert {"firing", "resolved"} <= {r["status"] for r in want}
    k = cfg.kafka
    await ensure_topics(k.bootstrap_servers, [k.events_topic], partitions=PARTITIONS)
    await ensure_topics(k.bootstrap_servers, [k.alerts_topic])
    produced = await produce_events(events, k.bootstrap_servers, k.events_topic)
    stop = asyncio.Event()
    source = WatchedSource(k)
    worker = asyncio.create_task(
        run_worker(cfg, stop, notify=False, source=source, clock=ManualClock(T0 + 3_600_000))
    )
    try:
        await source.all_committed(produced)  # and the roll-up tasks have read every shipment
        # the backlog really was partitioned
        assert len({tp for tp in source.committed if tp.topic == k.events_topic}) == PARTITIONS
    finally:
        stop.set()
        stats = await asyncio.wait_for(worker, 30)
    assert stats.late == 0
    live = await read_topic(k.bootstrap_servers, k.alerts_topic)
    assert alert_keys(live) == alert_keys(want)
    assert without_detected_at(live) == without_detected_at(want)


def events_committed(source: WatchedSource, topic: str) -> int:
    return sum(o for tp, o in source.committed.items() if tp.topic == topic)


def worker_config(cfg: Config, path: Path) -> Path:
    k = cfg.kafka
    doc = {
        "kafka": {
            key: getattr(k, key)
            for key in (
                "bootstrap_servers",
                "group_id",
                "events_topic",
                "dlq_topic",
                "alerts_topic",
                "state_topic",
                "control_topic",
                "session_timeout_ms",
                "heartbeat_interval_ms",
                "request_timeout_ms",
                "fetch_max_wait_ms",
            )
        }
        | {"decode_workers": 0},
        "metrics": {"port": 0},
        "state": {"checkpoint_every_s": 1.0},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def start_worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )


async def until(
    done: Callable[[], Awaitable[bool]], what: str, log: Path, timeout_s: float = 60
) -> None:
    """Wait for a positive event on the broker; on a time-out, show the worker's log."""
    if not await wait_until_async(done, timeout_s):
        raise AssertionError(f"no {what} in {timeout_s}s; worker log:\n{log.read_text()[-4000:]}")


async def test_a_worker_killed_mid_incident_is_continued_from_its_checkpoint(
    kafka_config: Config, tmp_path: Path
) -> None:
    cfg = kafka_config
    k = cfg.kafka
    events = traffic()
    mid = (OUTAGE[0] + OUTAGE[1]) // 2 // 50  # an event in the middle of the outage
    want = await asyncio.to_thread(backtest, cfg, events, tmp_path)
    await ensure_topics(k.bootstrap_servers, [k.events_topic, k.alerts_topic, k.state_topic])
    await produce_events(events[:mid], k.bootstrap_servers, k.events_topic)
    config, log = worker_config(cfg, tmp_path / "worker.yaml"), tmp_path / "worker.log"
    store = KafkaStateStore(k)
    await store.start()
    first = start_worker(config, log)
    try:

        async def firing_checkpointed() -> bool:
            """The firing is out and both tasks' checkpoints cover everything read: the
            events' (partition 0) and the roll-up's (every shipment up to the topic's end)."""
            alerts = await read_topic(k.bootstrap_servers, k.alerts_topic)
            cp = await store.load(state_key(k, {0}))
            if not (alerts and cp is not None and cp.offsets.get(0) == mid):
                return False
            rtopic = repartition_topic(k)
            shipped = await replay_topic(KafkaSpec(k.bootstrap_servers, rtopic), idle_s=1.0)
            rcp = await store.load(task_key(k, TopicPartition(rtopic, 0)))
            return rcp is not None and rcp.offsets.get(0) == len(shipped)

        await until(firing_checkpointed, "firing alerts and a checkpoint covering them", log)
        first.send_signal(signal.SIGKILL)  # no goodbye: no final checkpoint, no commit
        assert first.wait(10) == -signal.SIGKILL
        fired = await read_topic(k.bootstrap_servers, k.alerts_topic)
        assert fired and {a["status"] for a in fired} == {"firing"}

        await produce_events(events[mid:], k.bootstrap_servers, k.events_topic)
        second = start_worker(config, log)
        resolved_ids = {a["alert_id"] for a in want if a["status"] == "resolved"}

        async def all_resolved() -> bool:
            alerts = await read_topic(k.bootstrap_servers, k.alerts_topic)
            got = {a["alert_id"] for a in alerts if a["status"] == "resolved"}
            return got >= resolved_ids

        await until(all_resolved, "resolution of the incident", log)
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()[-3000:]  # graceful: exit status 0
        assert "restored checkpoint" in log.read_text()
    finally:
        await store.stop()
        for proc in (first, locals().get("second")):
            if isinstance(proc, subprocess.Popen) and proc.poll() is None:
                proc.kill()
                proc.wait(10)
    live = await read_topic(k.bootstrap_servers, k.alerts_topic)
    # One page per incident: each alert fired once and resolved once, under the same id,
    # and nothing is lost — the same records the backtest makes.
    assert Counter((a["alert_id"], a["status"]) for a in live) == Counter(
        (a["alert_id"], a["status"]) for a in want
    )
    assert without_detected_at(live) == without_detected_at(want)
