"""Event time per partition, without a broker: however the partitions' fetches interleave
(a backlog caught up, a skewed partition), the same windows close with the same contents,
no on-time event is late, and the alerts are the offline replay's."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import numpy as np
import orjson
import pytest

from stream.config import Config, config_from_dict
from stream.ingest.events import Source
from stream.ingest.memory import MemorySource
from stream.pipeline import Pipeline
from stream.sim.simulate import Incident, SimConfig, simulate
from stream.windows.columns import COL
from stream.windows.state import ClosedWindow
from tests.traffic import traffic

PARTITIONS = 4
WALL = 1_900_000_000_000  # the live clock; it never moves, so no partition goes idle


def config() -> Config:
    return config_from_dict({"metrics": {"port": 0}, "kafka": {"decode_workers": 0}})


def partitioned(events: list[dict[str, Any]], shuffle: int | None) -> MemorySource:
    """Keyed like the producer (provider|merchant_id): one series' events stay in order;
    ``shuffle`` reads random partitions in random amounts per fetch."""
    src = MemorySource(partitions=PARTITIONS, max_batch=400, shuffle=shuffle)
    for ev in events:
        key = f"{ev.get('provider')}|{ev.get('merchant_id')}".encode()
        src.append(orjson.dumps(ev), zlib.crc32(key) % PARTITIONS)
    return src


def window_contents(pipeline: Pipeline, win: ClosedWindow) -> tuple[Any, ...]:
    """The window by series key (ids depend on arrival order, keys do not)."""
    keys = pipeline.state.windows.registry.keys
    rows = np.flatnonzero(win.counts.any(axis=1))
    by_key = sorted((str(keys[r]), tuple(win.counts[r].tolist())) for r in rows.tolist())
    return (win.start_ms, win.end_ms, tuple(by_key))


async def consume(events: list[dict[str, Any]], shuffle: int | None) -> dict[str, Any]:
    src = partitioned(events, shuffle)
    pipeline = Pipeline(config(), live=True)
    pipeline.assign(set(range(PARTITIONS)), WALL)
    windows: list[tuple[Any, ...]] = []
    alerts: list[tuple[str, str, int]] = []
    while src.lag(src.position):
        batch = await src.next_batch(timeout_ms=0)
        if not batch.values:
            continue
        result = pipeline.process(batch.values, batch.sources, WALL)
        windows.extend(window_contents(pipeline, w) for w in result.closed)
        alerts.extend((a.alert_id, a.status, a.window_end) for a in result.alerts)
    return {"windows": windows, "alerts": alerts, "late": pipeline.state.stats.late}


def offline(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The backtest's way: one stream in event-time order, one partition."""
    pipeline = Pipeline(config())
    values = [orjson.dumps(e) for e in sorted(events, key=lambda e: e["event_ts"])]
    windows: list[tuple[Any, ...]] = []
    alerts: list[tuple[str, str, int]] = []
    for i in range(0, len(values), 1000):
        chunk = values[i : i + 1000]
        result = pipeline.process(chunk, [Source("f", 0, i + j) for j in range(len(chunk))])
        windows.extend(window_contents(pipeline, w) for w in result.closed)
        alerts.extend((a.alert_id, a.status, a.window_end) for a in result.alerts)
    return {"windows": windows, "alerts": alerts, "late": pipeline.state.stats.late}


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return traffic(320)


def test_adversarial_fetch_interleavings_close_the_same_windows(
    events: list[dict[str, Any]],
) -> None:
    runs = [asyncio.run(consume(events, seed)) for seed in (None, 1, 2, 3, 4)]
    want = offline(events)
    assert want["late"] == 0 and {"firing", "resolved"} <= {a[1] for a in want["alerts"]}
    for run in runs:
        assert run["late"] == 0
        # Live closes a window once every partition has passed it; offline's last
        # windows wait for the end of input: compare the windows both closed.
        assert run["windows"] == want["windows"][: len(run["windows"])]
        assert len(run["windows"]) >= len(want["windows"]) - 2
        assert run["alerts"] == want["alerts"]


def test_one_stream_clock_would_make_a_lagging_partition_late(
    events: list[dict[str, Any]],
) -> None:
    """The control: with every partition's events read as one clock (the old single
    watermark), the same skewed fetch order counts on-time events as late."""
    assert asyncio.run(consume_one_clock(events)) > 0


async def consume_one_clock(events: list[dict[str, Any]]) -> int:
    src = partitioned(events, 3)
    pipeline = Pipeline(config(), live=True)
    while src.lag(src.position):
        batch = await src.next_batch(timeout_ms=0)
        if batch.values:
            # Every record as if from partition 0: one watermark for the whole stream.
            sources = [Source(s.topic, 0, s.offset) for s in batch.sources]
            pipeline.process(batch.values, sources, WALL)
    return pipeline.state.stats.late


@pytest.fixture(scope="module")
def with_callbacks() -> list[dict[str, Any]]:
    """Simulated traffic with payment callbacks (some slow, some lost for a minute)."""
    lost = Incident("callback_loss", 120, 60, provider="alipay", magnitude=0.6)
    cfg = SimConfig(seed=5, duration_s=300, rate=30, merchants=24, daily=False, incidents=[lost])
    return [ev for ev in simulate(cfg) if ev["event_type"] != "metric"]


def test_missing_callbacks_do_not_depend_on_the_fetch_interleaving(
    with_callbacks: list[dict[str, Any]],
) -> None:
    """Whether a callback is missing is decided on its own partition's clock: a callback
    that arrives before its partition passed the deadline settles its order however the
    other partitions' fetches hold the windows back; one after it is missing, then
    recovered — the windows' missing-callback counts are the replay's in every run."""
    want = offline(with_callbacks)
    col = COL["missing_callbacks"]
    assert sum(w[2][i][1][col] for w in want["windows"] for i in range(len(w[2]))) > 0
    for seed in (None, 1, 2):
        run = asyncio.run(consume(with_callbacks, seed))
        assert run["windows"] == want["windows"][: len(run["windows"])]
        assert len(run["windows"]) >= len(want["windows"]) - 2
