"""`make bench`: throughput, close→alert latency and memory, against the local broker.

Machines are noisy, so throughput is compared with a ceiling measured in the
same run on the same stream: aiokafka consume + ``orjson.loads`` of every
record, no processing.  The pipeline phase runs the worker itself
(:func:`stream.live.worker.run_worker`, what ``paywatch run`` runs, with its decode
process); both phases commit offsets the same way.  Each phase runs twice,
alternating, and the best run of each counts.  The last line is ``ratio=0.xx``
(pipeline / ceiling).

A scale-out phase (:mod:`benchmarks.scale_out`) then reads the same stream from a
four-partition topic with 1 and with 2 ``paywatch run`` workers of one group, and
compares their events/s and alert sets (``--scale-out-only`` runs it alone).

The stream: 900 simulated seconds at 300 calls/s over 500 merchants (≈ 400 k
events with their callbacks), a provider outage every 5 minutes and a merchant
misconfiguration every 2, so the alert path is exercised too.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from benchmarks.scale_out import report as scale_report
from benchmarks.scale_out import scale_out_phase
from stream.config import Config
from stream.ingest.decode_pool import default_workers
from stream.ingest.kafka_client import ensure_topics
from stream.ingest.kafka_source import KafkaEventSource
from stream.live.worker import BatchTiming, run_worker
from stream.pipeline import Pipeline, StepResult
from stream.sim.broker import LocalBroker
from stream.sim.simulate import Incident, SimConfig, simulate


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_config(bootstrap: str, topic: str) -> Config:
    cfg = Config()
    k = cfg.kafka
    k.bootstrap_servers = bootstrap
    k.events_topic = topic
    k.alerts_topic = f"{topic}.alerts"
    k.dlq_topic = f"{topic}.dlq"
    k.group_id = f"bench-{uuid.uuid4().hex[:6]}"
    k.session_timeout_ms, k.heartbeat_interval_ms, k.fetch_max_wait_ms = 6000, 1000, 20
    return cfg


async def bench_topics(bootstrap: str, prefix: str) -> Config:
    """A fresh events topic (2 partitions) with its alerts and DLQ topics, and the
    benchmark's config reading it."""
    cfg = bench_config(bootstrap, f"{prefix}-{uuid.uuid4().hex[:6]}")
    k = cfg.kafka
    await ensure_topics(bootstrap, [k.events_topic, k.alerts_topic, k.dlq_topic], partitions=2)
    return cfg


async def produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, acks=1, max_batch_size=512 * 1024
    )
    await producer.start()
    t0 = time.perf_counter()
    try:
        futs = []
        for key, value in values:
            futs.append(await producer.send(topic, value, key=key))
            if len(futs) >= 20_000:
                await asyncio.gather(*futs)
                futs.clear()
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return len(values) / (time.perf_counter() - t0)


async def ceiling_rate(cfg: Config, n: int) -> float:
    """Events/s of aiokafka consume + ``orjson.loads`` alone, committing each batch."""
    cfg.kafka.group_id = f"bench-{uuid.uuid4().hex[:6]}"
    source = KafkaEventSource(cfg.kafka)
    await source.start()
    seen, t0 = 0, None
    gc.collect()
    try:
        while seen < n:
            batch = await source.next_batch(timeout_ms=200)
            if batch.values and t0 is None:
                t0 = time.perf_counter()
            seen += len(batch.values)
            for v in batch.values:
                orjson.loads(v)  # type: ignore[arg-type]
            source.commit_soon(batch.offsets)  # as the worker does
        assert t0 is not None
        return seen / (time.perf_counter() - t0)
    finally:
        await source.stop()


async def pipeline_rate(cfg: Config, n: int, decode_workers: int) -> tuple[float, list[float]]:
    """Events/s of the live worker (``run_worker``, the loop ``paywatch run`` uses) until
    it has finished ``n`` events, and per alert record the seconds from processing the
    batch that closed its window to the broker's ack."""
    cfg.kafka.group_id = f"bench-{uuid.uuid4().hex[:6]}"
    cfg.kafka.decode_workers = decode_workers
    cfg.metrics.port = 0
    stop = asyncio.Event()
    latencies: list[float] = []
    first: list[float] = []
    last = [0.0]
    seen = [0]

    def observe(result: StepResult, t: BatchTiming) -> None:
        if t.records:
            first[:1] = first[:1] or [t.received]
            seen[0] += t.records
            last[0] = t.acked
        if result.alerts:
            latencies.extend([t.acked - t.started] * len(result.alerts))
        if seen[0] >= n:
            stop.set()

    gc.collect()
    await run_worker(cfg, stop, notify=False, progress_every_s=3600, observe=observe)
    return seen[0] / (last[0] - first[0]), latencies


LIVE_SPEED = 20.0  # simulated seconds per wall second in the latency phase


async def produce_paced(
    bootstrap: str, topic: str, values: list[tuple[bytes, bytes]], speed: float
) -> None:
    """Send in event-time order, ``speed`` times faster than the events happened."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    await producer.start()
    try:
        t0 = time.perf_counter()
        first: int | None = None
        futs: list[asyncio.Future[Any]] = []
        for key, value in values:
            ts = int(orjson.loads(value)["event_ts"])
            first = ts if first is None else first
            delay = t0 + (ts - first) / 1000 / speed - time.perf_counter()
            if delay > 0.01:
                await asyncio.gather(*futs)
                futs.clear()
                await asyncio.sleep(delay)
            futs.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


def stream_values(
    duration_s: float, rate: float, seed: int, incidents: list[Incident]
) -> list[tuple[bytes, bytes]]:
    cfg = SimConfig(
        seed=seed, duration_s=duration_s, rate=rate, merchants=500, daily=False, incidents=incidents
    )
    out = []
    for ev in simulate(cfg):
        key = f"{ev.get('provider', '')}|{ev.get('merchant_id', '')}".encode()
        out.append((key, orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY)))
    return out


def probe_memory(n: int) -> None:
    """Child-process body: a pipeline holding ``n`` active merchant series; prints its RSS."""
    from stream.ingest.events import SourceColumns

    cfg = Config()
    cfg.windows.max_series_per_level = n + 10
    p = Pipeline(cfg)
    t0 = 1_767_225_600_000
    ops = ("create_payment", "query_payment")
    for window in range(3):  # three windows, every merchant active in each
        for start in range(0, n, 5000):
            vals = [
                orjson.dumps(
                    {
                        "schema_version": 1,
                        "event_type": "provider_call",
                        "service": "s",
                        "event_id": f"{window}-{i}",
                        "event_ts": t0 + window * 10_000 + i % 9000,
                        "provider": ("alipay", "wechatpay")[i % 2],
                        "merchant_id": f"M{i}",
                        "operation": ops[i % 2],
                        "outcome": "success",
                        "latency_ms": 80.0 + i % 50,
                        "out_trade_no": f"o{window}-{i}",
                    }
                )
                for i in range(start, min(n, start + 5000))
            ]
            p.process(vals, SourceColumns(["m"] * len(vals), [0] * len(vals), range(len(vals))))
    fine = ("provider", "operation", "merchant_id")
    merchants = sum(1 for k in p.state.windows.registry.index if k[0] == fine)
    with open("/proc/self/status") as fh:
        status = fh.read()
    rss = int(status.split("VmRSS:")[1].split()[0]) * 1024
    # VmHWM, not ru_maxrss: the latter would include the parent's peak from before exec.
    peak = int(status.split("VmHWM:")[1].split()[0]) * 1024
    print(merchants, len(p.state.windows.registry.index), rss, peak)


def memory_probe(n: int) -> tuple[int, int, int, int]:
    cmd = [sys.executable, "-m", "benchmarks.bench", "--probe-memory", str(n)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    merchants, series, rss, peak = (int(x) for x in out.stdout.split())
    return merchants, series, rss, peak


def bench_incidents(duration: float) -> list[Incident]:
    return [
        Incident(
            "provider_outage",
            120 + 300 * k,
            60,
            provider=("alipay", "wechatpay", "paypal")[k % 3],
        )
        for k in range(int(duration // 300))
    ] + [
        Incident("merchant_misconfig", 200 + 97 * k, 60, merchant_id=f"M{1001 + k}")
        for k in range(int(duration // 120))
    ]


async def scale_out_only(args: argparse.Namespace) -> None:
    """``--scale-out-only``: the scale-out phase alone (its figures without the rest)."""
    with LocalBroker() as broker:
        values = stream_values(args.duration, args.rate, 11, bench_incidents(args.duration))
        log(f"scale-out phase: {len(values):,} events on 4 partitions, 1 then 2 workers …")
        runs = await scale_out_phase(
            broker.bootstrap, f"scale-{uuid.uuid4().hex[:6]}", values, produce
        )
    print(f"stream:                 {len(values):,} events ({args.duration:.0f} s simulated)")
    for line in scale_report(runs):
        print(line)


async def main_async(args: argparse.Namespace) -> None:
    with LocalBroker() as broker:
        cfg = await bench_topics(broker.bootstrap, "bench")
        topic = cfg.kafka.events_topic
        incidents = bench_incidents(args.duration)
        log(f"generating {args.duration:.0f} s of simulated traffic at {args.rate:.0f} calls/s …")
        values = stream_values(args.duration, args.rate, 11, incidents)
        n = len(values)
        log(f"producing {n:,} events to the local broker …")
        produce_rate = await produce(broker.bootstrap, topic, values)
        ceilings, pipes = [], []
        for round_ in range(2):
            log(f"round {round_ + 1}: ceiling (consume + orjson) …")
            ceilings.append(await ceiling_rate(cfg, n))
            log(f"round {round_ + 1}: pipeline (consume → decode → windows → detectors → alerts) …")
            p, _ = await pipeline_rate(cfg, n, args.decode_workers)
            pipes.append(p)
        # Latency is a live figure: replay a stream paced like live traffic (sped up
        # SPEED times) so windows close one at a time, as they do in production.
        live_topic = f"{topic}-live"
        await ensure_topics(broker.bootstrap, [live_topic], partitions=2)
        live_cfg = bench_config(broker.bootstrap, live_topic)
        live_values = stream_values(args.live_s * LIVE_SPEED, args.rate, 12, incidents)
        log(f"live phase: {args.live_s:.0f} s of traffic paced at x{LIVE_SPEED:g} …")
        consumer = asyncio.create_task(
            pipeline_rate(live_cfg, len(live_values), args.decode_workers)
        )
        await produce_paced(broker.bootstrap, live_topic, live_values, LIVE_SPEED)
        _, lat = await consumer
        log("scale-out phase: the same stream on 4 partitions, 1 then 2 workers …")
        scale = await scale_out_phase(broker.bootstrap, f"{topic}-scale", values, produce)
    log(f"memory with {args.series:,} merchant series …")
    merchants, series, rss, peak = memory_probe(args.series)
    ceiling, pipe = max(ceilings), max(pipes)
    lat_ms = np.array(lat) * 1000 if lat else np.array([np.nan])
    print(
        f"paywatch benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"decode processes:       {args.decode_workers} (0 = inline)")
    print(
        f"stream:                 {n:,} events ({args.duration:.0f} s simulated, 2 partitions), "
        f"produced at {produce_rate:,.0f}/s"
    )
    runs_c = ", ".join(f"{c:,.0f}" for c in ceilings)
    runs_p = ", ".join(f"{p:,.0f}" for p in pipes)
    p50, p99 = np.percentile(lat_ms, 50), np.percentile(lat_ms, 99)
    print(f"ceiling (consume+json): {ceiling:,.0f} events/s   (runs: {runs_c})")
    print(f"pipeline (full path):   {pipe:,.0f} events/s   (runs: {runs_p})")
    print(
        f"close → alert acked:    p50 {p50:.1f} ms, p99 {p99:.1f} ms "
        f"over {len(lat)} alert records, live-paced (target p99 ≤ 200 ms)"
    )
    print(
        f"memory:                 {rss / 2**20:,.0f} MiB resident (peak {peak / 2**20:,.0f} MiB) "
        f"with {merchants:,} merchant series, {series:,} series in all (target ≤ 1024 MiB)"
    )
    for line in scale_report(scale):
        print(line)
    print(f"ratio={pipe / ceiling:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__)
    ap.add_argument("--duration", type=float, default=900.0, help="simulated seconds of traffic")
    ap.add_argument("--rate", type=float, default=300.0, help="provider calls per simulated second")
    ap.add_argument(
        "--series", type=int, default=100_000, help="merchant series for the memory probe"
    )
    ap.add_argument(
        "--decode-workers",
        type=int,
        default=default_workers(),
        help="decode processes beside the main one (0 = decode inline)",
    )
    ap.add_argument("--live-s", type=float, default=30.0, help="wall seconds of the live phase")
    ap.add_argument("--probe-memory", type=int, help=argparse.SUPPRESS)
    ap.add_argument(
        "--scale-out-only",
        action="store_true",
        help="run the scale-out phase (1 and 2 workers) alone",
    )
    args = ap.parse_args(argv)
    if args.probe_memory:
        probe_memory(args.probe_memory)
        return 0
    if args.scale_out_only:
        asyncio.run(scale_out_only(args))
        return 0
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
