"""A worker that starts without its state closes the alert episodes its group left firing,
against the real local broker: otherwise they would fire for ever (no record would ever
resolve them, and the recovery page would never come).  Another group's episodes on the
same alerts topic are left alone, and a worker that restores its checkpoint closes none."""

from __future__ import annotations

import copy
import logging
from collections import Counter
from typing import Any

import pytest

from stream.config import Config
from stream.ingest.kafka_client import ensure_topics
from stream.sim.produce import produce_events
from tests.servers import wait_until_async
from tests.test_scale_out_kafka import Worker
from tests.test_worker_kafka import read_topic
from tests.traffic import traffic


def still_firing(records: list[dict]) -> set[str]:
    """The episodes whose last record on the topic is a firing one."""
    last = {r["alert_id"]: r["status"] for r in records}
    return {a for a, status in last.items() if status == "firing"}


async def until_logged(caplog: pytest.LogCaptureFixture, *parts: str) -> None:
    """Until a log line holding every one of ``parts`` was written."""

    async def logged() -> bool:
        return any(all(p in r.getMessage() for p in parts) for r in caplog.records)

    assert await wait_until_async(logged, 30), [r.getMessage() for r in caplog.records]


async def cold_start_logged(caplog: pytest.LogCaptureFixture, closed: int, topic: str) -> None:
    """Until a worker of ``topic`` logged its cold start's pass over the alerts topic."""
    await until_logged(caplog, f"closed {closed} episodes left firing", topic)


@pytest.fixture(params=["tasks", "single"])
def cfg(kafka_config: Config, caplog: pytest.LogCaptureFixture, request: Any) -> Config:
    """The test broker's config in each scale-out mode, the worker's log captured."""
    caplog.set_level(logging.INFO, logger="paywatch")
    kafka_config.kafka.decode_workers = 0
    kafka_config.kafka.scale_out = request.param
    return kafka_config


async def stop_mid_outage(cfg: Config) -> list[dict]:
    """The topics, then a worker that stops inside alipay's outage (+120 s .. +200 s) with
    its episodes open; returns the alerts topic's records."""
    k = cfg.kafka
    await ensure_topics(k.bootstrap_servers, [k.events_topic], partitions=2)
    await ensure_topics(k.bootstrap_servers, [k.alerts_topic, k.dlq_topic, k.state_topic])
    first = Worker(cfg)
    produced = await produce_events(traffic()[: 160 * 20], k.bootstrap_servers, k.events_topic)
    await first.source.all_committed(produced)
    await first.leave()
    records = await read_topic(k.bootstrap_servers, k.alerts_topic)
    left = still_firing(records)
    assert left, "the outage fired"
    assert all("alipay" in r["series"].values() for r in records if r["alert_id"] in left)
    return records


def closed_as_left(before: list[dict], after: list[dict], reason: str) -> None:
    """The records ``after`` adds to ``before`` resolve, once each, the episodes ``before``
    left firing, as closed for a lost state."""
    closing = after[len(before) :]
    assert after[: len(before)] == before
    assert Counter(r["alert_id"] for r in closing) == Counter(still_firing(before))
    assert still_firing(after) == set()
    last = {r["alert_id"]: r for r in before}
    for rec in closing:
        was = last[rec["alert_id"]]
        assert rec["status"] == "resolved"
        assert rec["resolved_at"] == was["window_end"]  # ended at its last judged window
        assert (rec["fingerprint"], rec["started_at"]) == (was["fingerprint"], was["started_at"])
        assert rec["summary"].startswith("closed unjudged: paywatch restarted without")
        assert rec["evidence"]["state_lost"]["reason"].startswith(reason)


async def test_a_cold_start_closes_the_episodes_its_group_left_firing(
    cfg: Config, caplog: pytest.LogCaptureFixture
) -> None:
    cfg.state.checkpoint = False  # every start is cold
    k = cfg.kafka
    before = await stop_mid_outage(cfg)

    # A worker of another group on the same alerts topic starts cold: not its episodes.
    other = copy.deepcopy(cfg)
    other.kafka.group_id = f"{k.group_id}-other"
    other.kafka.events_topic = f"{k.events_topic}-other"
    await ensure_topics(k.bootstrap_servers, [other.kafka.events_topic], partitions=2)
    stranger = Worker(other)
    await cold_start_logged(caplog, 0, other.kafka.events_topic)
    await stranger.leave()
    assert await read_topic(k.bootstrap_servers, k.alerts_topic) == before

    # The group's next worker starts without the state of the first: it closes them.
    second = Worker(cfg)
    await cold_start_logged(caplog, len(still_firing(before)), k.events_topic)
    await second.leave()
    after = await read_topic(k.bootstrap_servers, k.alerts_topic)
    closed_as_left(before, after, "checkpoints off")


async def test_a_retune_closes_the_episodes_it_left_firing_a_plain_restart_none(
    cfg: Config, caplog: pytest.LogCaptureFixture
) -> None:
    k = cfg.kafka
    before = await stop_mid_outage(cfg)  # checkpointed as it stopped

    # The same settings: the checkpoint is restored and its episodes go on.
    caplog.clear()
    again = Worker(cfg)
    await until_logged(caplog, "restored checkpoint")
    await until_logged(caplog, "assigned")  # after the cold-start pass, had there been one
    await again.leave()
    assert await read_topic(k.bootstrap_servers, k.alerts_topic) == before

    # Other alerts settings: the checkpoint is refused and the worker starts cold.
    retuned = copy.deepcopy(cfg)
    retuned.alerts.keep_firing_for_windows += 1
    cold = Worker(retuned)
    await cold_start_logged(caplog, len(still_firing(before)), k.events_topic)
    await cold.leave()
    after = await read_topic(k.bootstrap_servers, k.alerts_topic)
    closed_as_left(before, after, "checkpoint not restored: the checkpoint was written under")
