"""`backtest` replays what `run` saw and decides the same (real local broker, real files)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from stream.clock import ManualClock
from stream.config import Config
from stream.ingest.kafka_client import ensure_topics
from stream.live.worker import run_worker
from stream.offline.backtest import backtest_events
from stream.sim.produce import produce_events
from tests.test_labels import paywatch
from tests.test_worker_kafka import WatchedSource, read_topic
from tests.traffic import OUTAGE, T0, traffic


def write_jsonl(events: list[dict[str, Any]], path: Path) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


def alert_keys(records: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(r["alert_id"], r["status"]) for r in records}


async def test_run_and_backtest_give_the_same_alerts(kafka_config: Config, tmp_path: Path) -> None:
    cfg = kafka_config
    # Live only: the watermark follows the worker's clock after 5 s without events.
    cfg.windows.idle_advance_s = 5.0
    events = traffic()
    jsonl = write_jsonl(events, tmp_path / "events.jsonl")
    out = tmp_path / "alerts.jsonl"
    await asyncio.to_thread(backtest_events, jsonl, cfg, out, progress=None)
    replayed = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert {"firing", "resolved"} <= {r["status"] for r in replayed}
    assert max(r["window_end"] for r in replayed) < events[-1]["event_ts"]  # no tick needed

    k = cfg.kafka
    await ensure_topics(k.bootstrap_servers, [k.events_topic, k.alerts_topic])
    produced = await produce_events(events, k.bootstrap_servers, k.events_topic)
    stop = asyncio.Event()
    source = WatchedSource(k)
    clock = ManualClock(T0 + 3_600_000)
    worker = asyncio.create_task(run_worker(cfg, stop, notify=False, source=source, clock=clock))
    try:
        # Every record read, its alerts published: then any extra alert the live run might
        # add would come from the clock, which moves short of the idle advance.
        await source.all_committed(produced)
        clock.advance(cfg.windows.idle_advance_s - 0.5)
        await source.polled(2)
    finally:
        stop.set()
        stats = await asyncio.wait_for(worker, 30)
    live = await read_topic(k.bootstrap_servers, k.alerts_topic)
    assert alert_keys(live) == alert_keys(replayed), (
        alert_keys(live) ^ alert_keys(replayed),
        stats,
    )
    # Same episodes, same event-time facts; only detected_at (wall clock live) differs.
    strip = [
        {k: v for k, v in r.items() if k != "detected_at"}
        for r in sorted(live, key=lambda r: (r["window_end"], r["alert_id"], r["status"]))
    ]
    want = [
        {k: v for k, v in r.items() if k != "detected_at"}
        for r in sorted(replayed, key=lambda r: (r["window_end"], r["alert_id"], r["status"]))
    ]
    assert strip == want


async def test_kafka_input_replays_all_partitions_between_two_times(
    kafka_config: Config, tmp_path: Path
) -> None:
    k = kafka_config.kafka
    events = traffic()
    await ensure_topics(k.bootstrap_servers, [k.events_topic], partitions=3)
    await produce_events(events, k.bootstrap_servers, k.events_topic)
    url = f"kafka://{k.bootstrap_servers}/{k.events_topic}"

    whole = tmp_path / "file.jsonl"
    r = await asyncio.to_thread(
        paywatch, "backtest", "--input", write_jsonl(events, tmp_path / "ev.jsonl"),
        "--alerts-out", whole,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    from_kafka = tmp_path / "kafka.jsonl"
    html = tmp_path / "kafka.html"
    r = await asyncio.to_thread(
        paywatch, "backtest", "--input", url, "--alerts-out", from_kafka, "--report", html
    )
    assert r.returncode == 0, r.stderr
    assert "provider=alipay</h3>" in html.read_text()  # the recording pass saw the same data
    assert f"{len(events)} records" in r.stderr
    # Three partitions merged back into event-time order: byte-identical to the file.
    assert from_kafka.read_bytes() == whole.read_bytes() and whole.stat().st_size > 0

    # Between two event times (ISO and epoch ms alike): only the outage's neighbourhood.
    lo, hi = T0 + OUTAGE[0] - 60_000, T0 + OUTAGE[1] + 60_000
    part = [e for e in events if lo <= e["event_ts"] < hi]
    want = tmp_path / "part.jsonl"
    r = await asyncio.to_thread(
        paywatch, "backtest", "--input", write_jsonl(part, tmp_path / "p.jsonl"),
        "--alerts-out", want,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = tmp_path / "kpart.jsonl"
    iso = "2026-01-01T00:01:00Z"  # T0 + 60 s
    r = await asyncio.to_thread(
        paywatch, "backtest", "--input", f"{url}?from={iso}&to={hi}", "--alerts-out", got
    )
    assert r.returncode == 0, r.stderr
    assert f"{len(part)} records" in r.stderr
    assert got.read_bytes() == want.read_bytes()
    assert any(orjson.loads(x)["status"] == "firing" for x in got.read_bytes().splitlines())

    r = await asyncio.to_thread(
        paywatch, "backtest", "--input", f"kafka://{k.bootstrap_servers}/no-such-topic",
        "--alerts-out", tmp_path / "none.jsonl",
    )  # fmt: skip
    assert r.returncode == 2 and "topic 'no-such-topic' not found" in r.stderr, r.stderr


def test_kafka_input_mistakes_are_one_line(tmp_path: Path) -> None:
    for url, needle in [
        ("kafka://127.0.0.1:1/", "expected kafka://HOST:PORT/TOPIC"),
        ("kafka://127.0.0.1:1/t?from=yesterday", "from="),
        ("kafka://127.0.0.1:1/t?since=1", "unknown parameter 'since'"),
        ("kafka://127.0.0.1:1/t", "cannot reach Kafka at 127.0.0.1:1"),
    ]:
        r = paywatch("backtest", "--input", url, "--alerts-out", tmp_path / "a.jsonl")
        assert r.returncode == 2, (url, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr, (url, r.stderr)
