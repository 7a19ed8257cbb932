"""Tasks without a broker: source tasks per partition, a roll-up task fed with their
shipments (as the repartition topic would carry them), replayed shipments counted once,
and the alerts the offline replay makes of the same events."""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from stream.config import Config, config_from_dict
from stream.ingest.decode import decode_batch
from stream.ingest.events import SourceColumns
from stream.ingest.source import Batch
from stream.live import tasks as tasks_module
from stream.live.publisher import Message
from stream.live.tasks import TaskSet, repartition_topic
from stream.pipeline import Pipeline
from stream.sim.simulate import SimConfig, simulate
from tests.test_partitions_memory import offline
from tests.traffic import traffic

WALL = 1_900_000_000_000  # the live clock; it never moves, so no partition goes idle
SOURCES = 2


def config() -> Config:
    return config_from_dict({"metrics": {"port": 0}, "kafka": {"decode_workers": 0}})


class Group:
    """One worker's task set, its shipments carried to its roll-up task by hand."""

    def __init__(self) -> None:
        cfg = config()
        self.tasks = TaskSet(cfg, SOURCES, 1)
        self.topic = cfg.kafka.events_topic
        self.rtp = TopicPartition(repartition_topic(cfg.kafka), 0)
        for tp in [TopicPartition(self.topic, p) for p in range(SOURCES)] + [self.rtp]:
            self.tasks.start(self.tasks.new_task(tp), WALL)
        self.shipped: list[bytes] = []
        self.alerts: list[tuple[str, str, int]] = []
        self.series: list[dict[str, str]] = []

    def feed(self, batch: Batch) -> list[Message]:
        ships: list[Message] = []
        for part in self.tasks.split(batch):
            args = self.tasks.decode_args(part)
            decoded = decode_batch(part.batch.values, part.batch.sources, **args)
            result, out = self.tasks.process(part, decoded, WALL)
            self.alerts.extend((a.alert_id, a.status, a.window_end) for a in result.alerts)
            self.series.extend(a.series for a in result.alerts)
            ships.extend(out)
        return ships

    def source(self, p: int, values: list[bytes], first: int) -> None:
        n = len(values)
        cols = SourceColumns([self.topic] * n, [p] * n, range(first, first + n))
        tp = TopicPartition(self.topic, p)
        ships = self.feed(Batch(list(values), cols, {tp: first + n}))
        assert all(m.partition == 0 for m in ships)
        self.shipped.extend(m.value for m in ships)

    def rollup(self, first: int, last: int) -> None:
        """The roll-up task reads shipments ``first`` to ``last`` of its partition."""
        values: list[bytes | None] = list(self.shipped[first:last])
        cols = SourceColumns([self.rtp.topic] * len(values), [0] * len(values), range(first, last))
        assert not self.feed(Batch(values, cols, {self.rtp: last}))


def by_partition(events: list[dict[str, Any]]) -> list[list[bytes]]:
    parts: list[list[bytes]] = [[] for _ in range(SOURCES)]
    for ev in events:
        key = f"{ev['provider']}|{ev['merchant_id']}".encode()
        parts[zlib.crc32(key) % SOURCES].append(orjson.dumps(ev))
    return parts


def test_roll_ups_count_a_replayed_shipment_once_and_alert_as_the_replay_does() -> None:
    events = traffic(320, spread=True)
    parts = by_partition(events)
    g = Group()
    step = 400
    for i in range(0, max(len(p) for p in parts), step):
        for p, values in enumerate(parts):
            g.source(p, values[i : i + step], i)
        g.rollup(0, len(g.shipped))
    # A source task replays its last batches after a crash (at-least-once): its events are
    # shipped again; the roll-up task recognises them by their source offsets.
    before = len(g.shipped)
    g.source(0, parts[0][-step:], len(parts[0]) - step)
    g.rollup(0, len(g.shipped))  # and the roll-up re-reads every shipment from the start
    assert len(g.shipped) > before
    rollup = g.tasks.tasks[g.rtp].pipeline.state.stats
    assert rollup.calls == len(events)  # each event counted once in the provider series
    want = offline(events)
    assert want["late"] == 0 and {"firing", "resolved"} <= {a[1] for a in want["alerts"]}
    # The group's alerts are the replay's: merchants from the source tasks, provider and
    # operation from the roll-up — each once; the replay's last windows wait for input end.
    assert sorted(g.alerts) == sorted(set(g.alerts))
    assert set(g.alerts) == set(want["alerts"])


def test_source_tasks_only_ship_and_the_roll_up_judges_every_level() -> None:
    """A source task windows and judges nothing (it decodes and ships); the roll-up task
    judges every level, merchants included, so windowing runs once per event."""
    events = traffic(320, spread=True)
    g = Group()
    for p, values in enumerate(by_partition(events)):
        g.source(p, values, 0)
    assert not g.alerts  # nothing judged before the roll-up has the events
    g.rollup(0, len(g.shipped))
    rollup = g.tasks.tasks[g.rtp].pipeline.state
    every = {lv for rule in Pipeline(config()).state.rules for lv in rule.levels}  # type: ignore[attr-defined]
    assert {lv for rule in rollup.rules for lv in rule.levels} == every  # type: ignore[attr-defined]
    for p in range(SOURCES):
        source = g.tasks.tasks[TopicPartition(g.topic, p)].pipeline.state
        assert source.rules == [] and source.windows.registry.active == 0
    assert any("merchant_id" in series for series in g.series)  # merchants page from it
    assert (
        g.tasks.stats.calls
        == rollup.stats.calls
        == sum(ev["event_type"] == "provider_call" for ev in events)
    )


def test_shipments_cut_small_lose_no_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """A source batch larger than a shipment is cut in stream order: the roll-up task,
    which skips what is older than the newest event it took from a partition, gets every
    call and every callback (cut by event kind, callbacks after a later call were lost)."""
    monkeypatch.setattr(tasks_module, "SHIPMENT_ROWS", 64)
    cfg = SimConfig(seed=5, duration_s=120, rate=30, merchants=24, daily=False)
    events = [ev for ev in simulate(cfg) if ev["event_type"] != "metric"]
    parts = by_partition(events)
    g = Group()
    for p, values in enumerate(parts):
        g.source(p, values, 0)  # one batch per partition: many shipments each
    g.rollup(0, len(g.shipped))
    stats = g.tasks.tasks[g.rtp].pipeline.state.stats
    kinds = Counter(ev["event_type"] for ev in events)
    assert (stats.calls, stats.notifications) == (
        kinds["provider_call"],
        kinds["payment_notification"],
    )


def test_each_consumer_group_has_its_own_repartition_topic() -> None:
    """A canary group on the prod events topic must not window prod's shipments (they
    were decoded with prod's settings): the default topic is prefixed with the group."""
    prod = config_from_dict({"kafka": {"group_id": "paywatch"}}).kafka
    canary = config_from_dict({"kafka": {"group_id": "paywatch-canary"}}).kafka
    assert prod.events_topic == canary.events_topic
    assert repartition_topic(prod) != repartition_topic(canary)
    pinned = config_from_dict({"kafka": {"repartition_topic": "old.rp"}}).kafka
    assert repartition_topic(pinned) == "old.rp"  # an explicit name is kept (upgrades)
