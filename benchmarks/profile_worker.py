"""In-process profile of the live worker: where a batch's time goes (not shipped).

Runs :func:`stream.live.worker.run_worker` — the loop ``paywatch run`` and ``make bench``
run — on the stream ``make bench`` produces (benchmarks/bench.py: 900 simulated
seconds at 300 calls/s, its outages and misconfigurations), from an in-memory source
(2 partitions by key, batches of ``kafka.max_batch`` taking half from each) to an in-memory
publisher, decoding inline, checkpointing to a store that takes ``--save-ms`` to
acknowledge.  The worker's clock is a ManualClock moved ``--tick-ms`` per batch, so
what it computes (alerts, checkpoints due) is the same in every run; only the timing
varies.  Each stage's inclusive seconds are measured by wrapping its function; the
best of ``--repeat`` runs counts (the machine is shared).  ``--profile`` adds a
cProfile of one more run.

    .venv/bin/python -m benchmarks.profile_worker --repeat 3 [--profile 30]

The last line is ``events/s=N`` (best run, from the first batch received to the last
acknowledged, as bench.py measures) and a digest of what was published, to check a
change leaves it the same.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import gc
import hashlib
import io
import pstats
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any, cast

import orjson

from benchmarks.bench import stream_values
from stream.alerting.actions.evidence import CallbackEvidence
from stream.alerting.lifecycle import AlertLifecycle
from stream.clock import ManualClock
from stream.config import Config
from stream.ingest import decode_pool
from stream.ingest.memory import MemorySource
from stream.judge.features import JudgedWindow
from stream.judge.rules import DetectorRule
from stream.live import worker
from stream.live.memory import MemoryPublisher
from stream.live.payment_metrics import PaymentMetrics
from stream.live.prometheus import WorkerMetrics
from stream.live.state_store import Checkpoint, MemoryStateStore
from stream.pipeline import Pipeline, StepResult
from stream.sim.simulate import Incident
from stream.windows.state import WindowState

TIMES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - t0
            CALLS[name] += 1

    return wrapper


def _atimed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - t0
            CALLS[name] += 1

    return wrapper


#: (stage name, owner, attribute) — inclusive times; nested stages are inside their parent.
STAGES: list[tuple[str, Any, str]] = [
    ("decode (inline)", decode_pool, "decode_batch"),
    ("pipeline.process_decoded", Pipeline, "process_decoded"),
    ("  windows.add_batch", WindowState, "add_batch"),
    ("  windows.close_ready", WindowState, "close_ready"),
    ("  pipeline._close", Pipeline, "_close"),
    ("    features (JudgedWindow.of)", JudgedWindow, "of"),
    ("    rules.judge", DetectorRule, "judge"),
    ("      rules._report", DetectorRule, "_report"),
    ("    lifecycle.observe", AlertLifecycle, "observe"),
    ("    evidence.annotate", CallbackEvidence, "annotate"),
    ("    pipeline._evict_idle", Pipeline, "_evict_idle"),
    ("report: metrics.observe", WorkerMetrics, "observe"),
    ("report: payment metrics", PaymentMetrics, "update"),
    ("checkpoint: snapshot", Pipeline, "snapshot"),
    ("housekeeping", worker.ConsumeLoop, "housekeeping"),
    ("notify", worker.ConsumeLoop, "notify"),
]
ASYNC_STAGES: list[tuple[str, Any, str]] = [
    ("publish (to_dict + publisher)", worker.ConsumeLoop, "publish"),
]


def instrument() -> None:
    for name, owner, attr in STAGES:
        raw = owner.__dict__[attr]
        if isinstance(raw, classmethod):
            setattr(owner, attr, classmethod(_timed(name, raw.__func__)))
        else:
            setattr(owner, attr, _timed(name, raw))
    for name, owner, attr in ASYNC_STAGES:
        setattr(owner, attr, _atimed(name, owner.__dict__[attr]))


class SlowStore(MemoryStateStore):
    """Checkpoints kept in memory, acknowledged after ``delay_s`` (a broker's round trip)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    async def save(self, key: str, checkpoint: Checkpoint) -> None:
        await asyncio.sleep(self.delay_s)
        await super().save(key, checkpoint)


class EvenSource(MemorySource):
    """Batches take the same share of every partition, as a Kafka fetch from one broker
    does (a consumer that drains one partition before the other would hold dozens of
    windows open, waiting for the lagging partition's clock)."""

    def _takes(self) -> list[tuple[int, int]]:
        order = sorted(self.assignment)
        return [(p, self.max_batch // max(1, len(order))) for p in order]


def bench_stream(duration: float, rate: float) -> list[tuple[bytes, bytes]]:
    """bench.py's stream (seed 11, the same incidents)."""
    incidents = [
        Incident(
            "provider_outage", 120 + 300 * k, 60, provider=("alipay", "wechatpay", "paypal")[k % 3]
        )
        for k in range(int(duration // 300))
    ] + [
        Incident("merchant_misconfig", 200 + 97 * k, 60, merchant_id=f"M{1001 + k}")
        for k in range(int(duration // 120))
    ]
    return stream_values(duration, rate, 11, incidents)


async def run_once(
    values: list[tuple[bytes, bytes]], args: argparse.Namespace
) -> tuple[float, str, int, int]:
    """One worker run; returns (events/s, digest of the published messages, alert records,
    checkpoints stored)."""
    cfg = Config()
    cfg.kafka.decode_workers = 0
    cfg.metrics.port = 0
    source = EvenSource(partitions=2, max_batch=cfg.kafka.max_batch)
    for key, value in values:
        source.append(value, zlib.crc32(key) % 2)
    publisher = MemoryPublisher(cfg.kafka)
    store = SlowStore(args.save_ms / 1000)
    clock = ManualClock(1_767_225_600_000)
    stop = asyncio.Event()
    n, seen, first, last, alerts = len(values), [0], [0.0], [0.0], [0]

    def observe(result: StepResult, t: worker.BatchTiming) -> None:
        clock.advance(args.tick_ms / 1000)
        if t.records:
            first[0] = first[0] or t.received
            seen[0] += t.records
            last[0] = t.acked
        alerts[0] += len(result.alerts)
        if seen[0] >= n:
            stop.set()

    gc.collect()
    await worker.run_worker(
        cfg,
        stop,
        notify=False,
        observe=observe,
        source=cast(Any, source),  # MemorySource's rebalance hook predates topic handlers
        publisher=publisher,
        clock=clock,
        state_store=store,
        progress_every_s=3600,
    )
    digest = hashlib.sha256(orjson.dumps(publisher.batches, default=repr)).hexdigest()[:16]
    return seen[0] / (last[0] - first[0]), digest, alerts[0], store.saves


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_worker", description=__doc__)
    ap.add_argument("--duration", type=float, default=900.0)
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs; the best counts")
    ap.add_argument("--tick-ms", type=float, default=80.0, help="worker clock per batch")
    ap.add_argument("--save-ms", type=float, default=20.0, help="a checkpoint's store time")
    ap.add_argument("--profile", type=int, default=0, help="cProfile one more run: top N")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    values = bench_stream(args.duration, args.rate)
    print(f"stream: {len(values):,} events, generated in {time.perf_counter() - t0:.1f} s")
    instrument()
    best: dict[str, float] = {}
    rates, digests = [], set()
    for _ in range(args.repeat):
        TIMES.clear()
        CALLS.clear()
        rate, digest, alerts, saves = asyncio.run(run_once(values, args))
        rates.append(rate)
        digests.add(digest)
        for k, v in TIMES.items():
            best[k] = min(best.get(k, v), v)
    print(
        f"alert records {alerts}, checkpoints stored {saves}, runs: "
        + ", ".join(f"{r:,.0f}" for r in rates)
        + " events/s"
    )
    print(f"{'stage (inclusive, best of runs)':40s} {'s':>7s} {'µs/event':>9s} {'calls':>7s}")
    n = len(values)
    for name, *_ in STAGES + ASYNC_STAGES:
        if name in best:
            print(f"{name:40s} {best[name]:7.3f} {best[name] / n * 1e6:9.2f} {CALLS[name]:7d}")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        asyncio.run(run_once(values, args))
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.profile)
        print(out.getvalue())
    print(f"digest={','.join(sorted(digests))}")
    print(f"events/s={max(rates):,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
