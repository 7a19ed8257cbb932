"""Acceptance 3: the broker stops and comes back; the worker reconnects and goes on, and
/readyz says "not ready" meanwhile.  A private Tansu broker (not the session's), stopped
and started again on the same port.  Tansu keeps everything in memory, so the topics,
their records and the group's committed offsets are gone after the restart: the test
creates the topics again and asserts that the worker, never restarted, reads and
publishes what is produced after the outage (a record it sends to the DLQ)."""

from __future__ import annotations

import asyncio
import math
import os
import urllib.error
import urllib.request
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from stream.config import Config, config_from_dict
from stream.ingest.kafka_client import ensure_topics
from stream.live.health import PROBE_EVERY_S
from stream.live.worker import run_worker
from stream.offline.kafka_replay import KafkaSpec, read_topic
from stream.sim.broker import LocalBroker, free_port
from tests.servers import wait_until_async
from tests.traffic import traffic

OUTAGE_S = float(os.environ.get("PAYWATCH_OUTAGE_S", "5"))  # 30 for the figure


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())
    except OSError:
        return 0, {}


async def wait_for(check: Any, timeout: float) -> bool:
    return await wait_until_async(lambda: asyncio.to_thread(check), timeout)


async def ride_out_outage(port: int, task: asyncio.Task[Any]) -> None:
    """The broker is down: /readyz turns 503 naming it, and stays so while the worker keeps
    probing (PROBE_EVERY_S apart) for OUTAGE_S; the worker is still up."""
    assert await wait_for(lambda: readyz(port)[0] == 503, 60)
    _, body = readyz(port)
    assert any(r.startswith("broker unreachable") for r in body["reasons"]), body
    probes = max(2, math.ceil(OUTAGE_S / PROBE_EVERY_S))
    assert await wait_for(lambda: readyz(port)[1].get("broker_failures", 0) >= probes,
                          OUTAGE_S * 3 + 60)  # fmt: skip
    assert not task.done(), task.exception() if task.done() else None
    assert readyz(port)[0] == 503


async def produce(cfg: Config, values: list[bytes]) -> None:
    k = cfg.kafka
    producer = AIOKafkaProducer(bootstrap_servers=k.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for v in values:
            await producer.send(k.events_topic, v)
        await producer.flush()
    finally:
        await producer.stop()


async def dlq_reasons(cfg: Config) -> list[str]:
    k = cfg.kafka
    try:
        got = await read_topic(KafkaSpec(k.bootstrap_servers, k.dlq_topic, None, None), idle_s=0.5)
    except Exception:
        return []
    return [orjson.loads(v)["reason"] for *_, v in got if v]


def outage_config(bootstrap: str, metrics_port: int, group: str = "outage") -> Config:
    """A worker on its own topics, with timeouts short enough to notice a broker going away."""
    tag = uuid.uuid4().hex[:8]
    return config_from_dict(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "group_id": f"{group}-{tag}",
                "events_topic": f"events-{tag}",
                "dlq_topic": f"events-{tag}.dlq",
                "alerts_topic": f"alerts-{tag}",
                "state_topic": f"state-{tag}",
                "control_topic": f"control-{tag}",
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
                "request_timeout_ms": 5000,
                "fetch_max_wait_ms": 20,
                "decode_workers": 0,
            },
            "metrics": {"port": metrics_port, "host": "127.0.0.1"},
        }
    )


async def test_the_worker_rides_out_a_broker_restart(tmp_path: Any) -> None:
    broker = LocalBroker(port=free_port(), log_path=tmp_path / "broker.log").start()
    port = free_port()
    cfg = outage_config(broker.bootstrap, port)
    k = cfg.kafka
    topics = [k.events_topic, k.dlq_topic, k.alerts_topic, k.control_topic]
    stop = asyncio.Event()
    task = None
    try:
        await ensure_topics(k.bootstrap_servers, topics)
        await produce(cfg, [orjson.dumps(e) for e in traffic(30)] + [b"before the outage"])
        task = asyncio.create_task(run_worker(cfg, stop, notify=False))
        assert await wait_for(lambda: readyz(port)[0] == 200, 60), readyz(port)
        assert await wait_for_async(lambda: dlq_reasons(cfg), 1, 30)

        broker.stop()
        await ride_out_outage(port, task)

        broker.start()
        await ensure_topics(k.bootstrap_servers, topics)
        await produce(cfg, [b"after the outage"])
        assert await wait_for_async(lambda: dlq_reasons(cfg), 1, 60), "consumption resumed"
        assert await wait_for(lambda: readyz(port)[0] == 200, 60), readyz(port)
        assert not task.done()
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 60)
        broker.stop()


async def wait_for_async(read: Any, n: int, timeout: float) -> bool:
    async def enough() -> bool:
        return len(await read()) >= n

    return await wait_until_async(enough, timeout, every_s=0.3)
