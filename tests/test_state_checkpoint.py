"""Checkpoints: the state codec (no pickle) and a worker that restarts from its checkpoint
mid-incident — the same episode resolves under the same alert_id, nothing fires twice."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import msgspec
import orjson
import pytest

from stream.clock import ManualClock
from stream.config import Config, config_from_dict
from stream.ingest.events import Source
from stream.ingest.memory import MemorySource
from stream.live.memory import MemoryPublisher
from stream.live.state_store import MemoryStateStore
from stream.live.worker import run_worker
from stream.pipeline import Pipeline, StateConfigChanged, StateError
from stream.state_codec import StateCodecError, decode, encode
from tests.traffic import OUTAGE, T0, traffic

WALL = T0 + 3_600_000


def config(**windows: Any) -> Config:
    return config_from_dict(
        {"metrics": {"port": 0}, "kafka": {"decode_workers": 0}, "windows": windows}
    )


def feed(pipeline: Pipeline, values: list[bytes], first: int = 0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(0, len(values), 500):
        chunk = values[i : i + 500]
        sources = [Source("t", 0, first + i + j) for j in range(len(chunk))]
        out.extend(a.to_dict() for a in pipeline.process(chunk, sources).alerts)
    return out


def test_a_restored_pipeline_decides_what_the_uninterrupted_one_decides() -> None:
    values = [orjson.dumps(e) for e in traffic()]
    half = len(values) // 2  # mid-outage
    whole = Pipeline(config())
    want = feed(whole, values)
    first = Pipeline(config())
    before = feed(first, values[:half])
    assert [a["status"] for a in before] == ["firing"] * len(before) and before
    second = Pipeline(config())
    second.restore(first.snapshot())
    after = feed(second, values[half:], half)
    assert before + after == want
    assert second.state.stats == whole.state.stats


def test_a_river_model_checkpoints_with_its_random_generator() -> None:
    """The demo's HalfSpaceTrees holds a ``random.Random``: the checkpoint carries its
    state, and the restored model judges as the uninterrupted one."""
    river = {
        "enabled": True,
        "levels": [["provider"]],
        "min_windows": 3,
        "model": "river.anomaly.HalfSpaceTrees",
        "params": {"n_trees": 3, "window_size": 5, "seed": 1},
    }
    cfg = {"metrics": {"port": 0}, "detectors": {"multivariate": river}}
    values = [orjson.dumps(e) for e in traffic()]
    half = len(values) // 2
    whole = Pipeline(config_from_dict(cfg))
    want = feed(whole, values)
    first = Pipeline(config_from_dict(cfg))
    before = feed(first, values[:half])
    second = Pipeline(config_from_dict(cfg))
    second.restore(first.snapshot())
    assert before + feed(second, values[half:], half) == want
    assert any(a["rule"] == "multivariate" for a in want)


def test_checkpoints_that_cannot_be_taken_say_why() -> None:
    p = Pipeline(config())
    head, body = msgspec.msgpack.decode(p.snapshot())
    with pytest.raises(StateError, match="version 99 is not supported"):
        p.restore(msgspec.msgpack.encode([{**head, "version": 99}, body]))
    with pytest.raises(StateError, match="not a paywatch checkpoint"):
        p.restore(pickle.dumps((1, p.state)))  # the old format is never unpickled
    with pytest.raises(StateConfigChanged):
        Pipeline(config(size_s=20)).restore(p.snapshot())


def test_the_codec_never_instantiates_a_class_outside_paywatch() -> None:
    evil = msgspec.msgpack.encode([9, "os:system", [1, "true"]])  # an OBJ naming os.system
    with pytest.raises(StateCodecError, match="outside"):
        decode(evil)
    with pytest.raises(StateCodecError, match="cannot checkpoint"):
        encode(asyncio.Event())


async def run_until_committed(
    records: list[bytes], upto: int, store: MemoryStateStore
) -> list[dict[str, Any]]:
    """A worker over ``records`` (one partition) until it has committed ``upto`` of them
    — then a graceful stop; returns the alerts it published."""
    cfg = config()
    source = MemorySource(records[:upto], topic=cfg.kafka.events_topic, max_batch=500)
    for value in records[upto:]:  # already in the log, but not yet readable
        source.logs[0].append(value)
    source.logs[0][upto:] = []
    publisher = MemoryPublisher(cfg.kafka)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_worker(
            cfg,
            stop,
            notify=False,
            source=source,
            publisher=publisher,
            clock=ManualClock(WALL),
            state_store=store,
        )
    )
    async with asyncio.timeout(60):
        await source.all_committed()
    stop.set()
    await asyncio.wait_for(task, 30)
    return list(publisher.alerts)


async def test_a_restarted_worker_resolves_the_open_episode_under_its_alert_id() -> None:
    records = [orjson.dumps(e) for e in traffic()]
    mid = (OUTAGE[0] + OUTAGE[1]) // 2 // 50  # record index in the middle of the outage
    store = MemoryStateStore()
    first = await run_until_committed(records, mid, store)
    assert first and {a["status"] for a in first} == {"firing"}
    assert store.saves >= 1
    (key,) = store.saved
    assert store.saved[key].offsets == {0: mid}
    # A new worker: the whole log is there; it restores and reads on from the checkpoint.
    second = await run_until_committed(records, len(records), store)
    assert {a["status"] for a in second} == {"resolved"}
    assert sorted(a["alert_id"] for a in second) == sorted(a["alert_id"] for a in first)
    alone = await run_until_committed(records, len(records), MemoryStateStore())
    strip = ("detected_at",)
    assert [{k: v for k, v in a.items() if k not in strip} for a in first + second] == [
        {k: v for k, v in a.items() if k not in strip} for a in alone
    ]


async def test_alert_checkpoints_of_a_catch_up_gather_into_one_a_second() -> None:
    """Live, an alert is checkpointed at once.  Catching up through a backlog, alert
    batches come milliseconds apart and a snapshot is megabytes: after one alert
    checkpoint, the next second's alerts are held and checkpointed together by the
    first batch after the gap."""
    from aiokafka import TopicPartition

    from stream.live.state_store import Checkpointer

    cfg = config()
    clock = ManualClock(WALL)
    store = MemoryStateStore()
    cp = Checkpointer(Pipeline(cfg), store, cfg.kafka, cfg.state, clock)
    cp.partitions = {0}
    tp = TopicPartition(cfg.kafka.events_topic, 0)

    async def batch(offset: int, alerts: bool) -> int:
        clock.advance(0.25)
        cp.after_batch({tp: offset}, alerts)
        if cp._saving is not None:
            await cp._saving
        return store.saved[next(iter(store.saved))].offsets[0] if store.saved else 0

    assert await batch(100, alerts=True) == 100  # 0.25 s: the first alert, at once
    for k in range(2, 5):  # 0.5, 0.75, 1.0 s: alerts held
        assert await batch(k * 100, alerts=True) == 100
    assert await batch(500, alerts=False) == 500  # 1.25 s: the held ones, together
    assert await batch(600, alerts=False) == 500  # nothing held, not due
    assert store.saves == 2
    clock.advance(5.0)  # a quiet spell: the next alert is checkpointed at once
    assert await batch(700, alerts=True) == 700
    cfg.state.alert_checkpoint_gap_s = 0.0  # every alert batch, as before the gap
    assert await batch(800, alerts=True) == 800
    assert await batch(900, alerts=True) == 900
    assert store.saves == 5
