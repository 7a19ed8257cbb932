"""Acceptance 2 against the real local broker: workers join and leave one consumer group
mid-incident, partitions and their state move, and the group publishes exactly the alerts
one `paywatch backtest` makes of the same events — the provider-level outage fires once and
resolves once, nothing fires from re-learning or from a hand-over."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from stream.clock import ManualClock
from stream.config import Config
from stream.ingest.kafka_client import ensure_topics
from stream.live.tasks import repartition_topic
from stream.live.worker import run_worker
from stream.offline.kafka_replay import KafkaSpec
from stream.offline.kafka_replay import read_topic as replay_topic
from stream.sim.produce import produce_events
from tests.servers import wait_until_async
from tests.test_partitions_kafka import PARTITIONS, backtest, without_detected_at
from tests.test_worker_kafka import WatchedSource, read_topic
from tests.traffic import T0, traffic

WALL = T0 + 3_600_000


class Worker:
    """One `run_worker` of the group, in this process, with its own stop switch."""

    def __init__(self, cfg: Config) -> None:
        self.source = WatchedSource(cfg.kafka)
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            run_worker(cfg, self.stop, notify=False, source=self.source, clock=ManualClock(WALL))
        )

    async def leave(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


async def all_assigned(workers: list[Worker]) -> bool:
    """Every worker owns partitions and the group's eight partitions are all owned."""
    owned = [w.source.consumer.assignment() for w in workers]
    return all(owned) and len(set().union(*owned)) == 2 * PARTITIONS


def committed(workers: list[Worker]) -> dict[TopicPartition, int]:
    """The group's commits: per partition, the furthest any worker got (owners change)."""
    out: dict[TopicPartition, int] = {}
    for w in workers:
        for tp, offset in w.source.committed.items():
            out[tp] = max(out.get(tp, 0), offset)
    return out


async def until_judged(cfg: Config, workers: list[Worker], produced: int) -> None:
    """Until the group committed every event produced and every shipment to the roll-ups."""
    k = cfg.kafka

    async def events_done() -> bool:
        got = committed(workers)
        return sum(o for tp, o in got.items() if tp.topic == k.events_topic) >= produced

    assert await wait_until_async(events_done, 30), committed(workers)
    rtopic = repartition_topic(k)
    ends: dict[int, int] = {}
    for _, partition, offset, _ in await replay_topic(KafkaSpec(k.bootstrap_servers, rtopic), 1.0):
        ends[partition] = max(ends.get(partition, 0), offset + 1)

    async def rollups_done() -> bool:
        got = committed(workers)
        return all(got.get(TopicPartition(rtopic, p), 0) >= o for p, o in ends.items())

    assert await wait_until_async(rollups_done, 30), (committed(workers), ends)


def provider_wide_outage() -> list[dict[str, Any]]:
    """320 s; alipay fails on every merchant from +120 s to +200 s; 24 merchants so every
    partition carries every provider."""
    events = traffic(320, spread=True)
    for i, ev in enumerate(events):
        ev["merchant_id"] = f"{ev['merchant_id']}-{(i // 6) % 4}"
    return events


async def test_workers_join_and_leave_mid_incident_and_page_as_one(
    kafka_config: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="paywatch")
    cfg = kafka_config
    cfg.kafka.decode_workers = 0
    cfg.kafka.max_batch = 500  # many batches: hand-overs fall between them
    cfg.state.checkpoint_every_s = 1.0
    k = cfg.kafka
    events = provider_wide_outage()
    want = await asyncio.to_thread(backtest, cfg, events, tmp_path)
    provider = [a for a in want if a["series"] == {"provider": "alipay"}]
    assert [a["status"] for a in provider] == ["firing", "resolved"]
    await ensure_topics(k.bootstrap_servers, [k.events_topic], partitions=PARTITIONS)
    await ensure_topics(k.bootstrap_servers, [k.alerts_topic, k.dlq_topic, k.state_topic])
    cut1, cut2 = 100 * 20, 160 * 20  # +100 s (before the outage), +160 s (inside it)

    produced = await produce_events(events[:cut1], k.bootstrap_servers, k.events_topic)
    first, second = Worker(cfg), Worker(cfg)
    await until_judged(cfg, [first, second], produced)
    third = Worker(cfg)  # joins: a rebalance over three workers
    workers = [first, second, third]
    assert await wait_until_async(lambda: all_assigned(workers), 30), "the group rebalanced"
    produced += await produce_events(events[cut1:cut2], k.bootstrap_servers, k.events_topic)
    await until_judged(cfg, workers, produced)
    assert all(w.source.committed for w in workers), "every worker took partitions"
    firing = await read_topic(k.bootstrap_servers, k.alerts_topic)
    assert [a["status"] for a in firing if a["series"] == {"provider": "alipay"}] == ["firing"]

    caplog.clear()
    await first.leave()  # mid-incident: its tasks and their state go to the other two
    produced += await produce_events(events[cut2:], k.bootstrap_servers, k.events_topic)
    await until_judged(cfg, workers, produced)
    restored = [r.getMessage() for r in caplog.records if "restored checkpoint" in r.getMessage()]
    assert restored, "the leaving worker's tasks were restored from their checkpoints"
    await asyncio.gather(second.leave(), third.leave())

    live = await read_topic(k.bootstrap_servers, k.alerts_topic)
    # One page per incident: the provider-level outage fired once and resolved once under
    # one alert_id, and the group's records are the backtest's, nothing more, nothing less.
    alipay = [a for a in live if a["series"] == {"provider": "alipay"}]
    assert [a["status"] for a in alipay] == ["firing", "resolved"]
    assert len({a["alert_id"] for a in alipay}) == 1
    assert Counter((a["alert_id"], a["status"]) for a in live) == Counter(
        (a["alert_id"], a["status"]) for a in want
    )
    assert without_detected_at(live) == without_detected_at(want)
