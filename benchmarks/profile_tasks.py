"""Profile of the live worker against the real local broker, ``scale_out: tasks`` beside
``single`` (not shipped).

Starts the local broker, produces ``make bench``'s stream (benchmarks/bench.py) to a
two-partition topic, then runs, ``--repeat`` times alternating: the ceiling
(consume + orjson), the worker with ``scale_out: tasks`` and with ``scale_out: single``
(:func:`benchmarks.bench.pipeline_rate`: what ``make bench`` times).  Each stage's
inclusive seconds in the main process are measured by wrapping its function (decoding
runs in the decode process); the best of the runs counts.  ``--profile N`` adds one
cProfiled tasks run (top N by own time).  Alert sets of the modes are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import io
import pstats
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

from aiokafka import TopicPartition

from benchmarks.bench import bench_config, bench_topics, ceiling_rate, pipeline_rate, produce
from benchmarks.profile_worker import CALLS, TIMES, _atimed, _timed, bench_stream
from stream.config import Config
from stream.ingest.decode import decode_batch
from stream.ingest.events import SourceColumns
from stream.ingest.source import Batch
from stream.live import state_store, tasks, worker
from stream.live.publisher import KafkaPublisher
from stream.pipeline import Pipeline
from stream.sim.broker import LocalBroker
from stream.windows.state import WindowState

STAGES: list[tuple[str, Any, str]] = [
    ("loop.decode (split + submit)", worker.ConsumeLoop, "decode"),
    ("  tasks.split", tasks.TaskSet, "split"),
    ("    tasks._unpack (shipments)", tasks.TaskSet, "_unpack"),
    ("tasks.process", tasks.TaskSet, "process"),
    ("  pipeline.process_decoded", Pipeline, "process_decoded"),
    ("    windows.add_batch", WindowState, "add_batch"),
    ("    pipeline._close", Pipeline, "_close"),
    ("  pipeline.see_partitions", Pipeline, "see_partitions"),
    ("  tasks._ship", tasks.TaskSet, "_ship"),
    ("    tasks._record", tasks.TaskSet, "_record"),
    ("tasks.tick", tasks.TaskSet, "tick"),
    ("report (metrics, observer)", worker.ConsumeLoop, "report"),
    ("housekeeping", worker.ConsumeLoop, "housekeeping"),
    ("checkpoint: after_batch (snapshots)", state_store.TaskCheckpointer, "after_batch"),
    ("  task.snapshot", tasks.Task, "snapshot"),
]
ASYNC_STAGES: list[tuple[str, Any, str]] = [
    ("loop.step (process, wait for the batch before)", worker.ConsumeLoop, "step"),
    ("loop.finish (publish .. notify, in background)", worker.ConsumeLoop, "finish"),
    ("  loop.publish (awaits acks)", worker.ConsumeLoop, "publish"),
    ("    publisher.send_messages", KafkaPublisher, "send_messages"),
]


def instrument() -> None:
    for name, owner, attr in STAGES:
        setattr(owner, attr, _timed(name, owner.__dict__[attr]))
    for name, owner, attr in ASYNC_STAGES:
        setattr(owner, attr, _atimed(name, owner.__dict__[attr]))


async def alert_set(bootstrap: str, topic: str) -> Counter[tuple[str, str]]:
    import orjson

    from stream.offline.kafka_replay import KafkaSpec, read_topic

    records = await read_topic(KafkaSpec(bootstrap, topic), idle_s=2.0)
    objs = [orjson.loads(v) for *_, v in records if v]
    return Counter((a["alert_id"], a["status"]) for a in objs)


async def run_mode(bootstrap: str, topic: str, n: int, mode: str, workers: int) -> float:
    cfg = bench_config(bootstrap, topic)
    cfg.kafka.scale_out = mode
    tag = uuid.uuid4().hex[:6]
    cfg.kafka.alerts_topic = f"{topic}.alerts-{mode}-{tag}"
    cfg.kafka.repartition_topic = f"{topic}.rp-{tag}"
    cfg.kafka.state_topic = f"{topic}.state-{tag}"
    rate, _ = await pipeline_rate(cfg, n, workers)
    LAST_ALERTS[mode] = cfg.kafka.alerts_topic
    return rate


LAST_ALERTS: dict[str, str] = {}


async def main_async(args: argparse.Namespace) -> None:
    with LocalBroker() as broker:
        cfg = await bench_topics(broker.bootstrap, "prof")
        topic = cfg.kafka.events_topic
        values = bench_stream(args.duration, args.rate)
        n = len(values)
        await produce(broker.bootstrap, topic, values)
        print(f"stream: {n:,} events on 2 partitions")
        instrument()
        best: dict[str, dict[str, float]] = {"tasks": {}, "single": {}}
        calls: dict[str, dict[str, int]] = {"tasks": {}, "single": {}}
        rates: dict[str, list[float]] = {"ceiling": [], "tasks": [], "single": []}
        for _ in range(args.repeat):
            rates["ceiling"].append(await ceiling_rate(cfg, n))
            for mode in args.modes.split(","):
                TIMES.clear()
                CALLS.clear()
                rates[mode].append(await run_mode(broker.bootstrap, topic, n, mode, args.workers))
                for k, v in TIMES.items():
                    best[mode][k] = min(best[mode].get(k, v), v)
                calls[mode].update(CALLS)
        for mode, rs in rates.items():
            if rs:
                print(
                    f"{mode:8s} best {max(rs):9,.0f} events/s  runs: "
                    + ", ".join(f"{r:,.0f}" for r in rs)
                )
        if rates["tasks"]:
            print(f"ratio tasks/ceiling {max(rates['tasks']) / max(rates['ceiling']):.2f}")
        for mode in args.modes.split(","):
            print(f"\n[{mode}] {'stage (inclusive, best of runs)':48s} {'s':>7s} {'µs/event':>9s}")
            for name, *_ in STAGES + ASYNC_STAGES:
                if name in best[mode]:
                    s = best[mode][name]
                    c = calls[mode].get(name, 0)
                    print(f"{'':9s}{name:48s} {s:7.3f} {s / n * 1e6:9.2f} {c:7d}")
        sets = {m: await alert_set(broker.bootstrap, t) for m, t in LAST_ALERTS.items()}
        if len(sets) == 2:
            same = sets["tasks"] == sets["single"]
            print(
                f"\nalert records tasks {sum(sets['tasks'].values())}, single "
                f"{sum(sets['single'].values())}: {'identical' if same else 'DIFFER'}"
            )
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            await run_mode(broker.bootstrap, topic, n, "tasks", args.workers)
            prof.disable()
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.profile)
            print(out.getvalue())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_tasks", description=__doc__)
    ap.add_argument("--duration", type=float, default=900.0)
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--modes", default="tasks,single")
    ap.add_argument("--workers", type=int, default=1, help="decode processes")
    ap.add_argument("--profile", type=int, default=0)
    ap.add_argument(
        "--inproc", action="store_true", help="no broker: the tasks' CPU, decoding inline"
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.inproc:
        inproc_report(bench_stream(args.duration, args.rate), args.modes.split(","), args.repeat)
        return 0
    asyncio.run(main_async(args))
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


# -- in process: the tasks' CPU without a broker --------------------------------------


def inproc(values: list[tuple[bytes, bytes]], mode: str, per_part: int = 2500) -> dict[str, float]:
    """Seconds per step of the tasks (or one pipeline) fed the stream in batches of
    ``per_part`` records per partition, shipments carried by hand, decoding inline."""
    cfg = Config()
    wall = 1_900_000_000_000
    topic = cfg.kafka.events_topic
    parts: list[list[bytes]] = [[], []]
    for key, value in values:
        parts[zlib.crc32(key) % 2].append(value)
    work: tasks.TaskSet | tasks.OnePipeline
    if mode == "tasks":
        work = tasks.TaskSet(cfg, 2, 2)
        rtopic = tasks.repartition_topic(cfg.kafka)
        for tp in [TopicPartition(t, p) for t in (topic, rtopic) for p in range(2)]:
            work.start(work.new_task(tp), wall)
    else:
        work = tasks.OnePipeline(Pipeline(cfg, live=True))
        work.pipeline.assign({0, 1}, wall)
    t: dict[str, float] = {"decode": 0.0, "split": 0.0, "source": 0.0, "rollup": 0.0}
    alerts: list[tuple[str, str]] = []
    rpos = [0, 0]

    def feed(batch: Batch) -> list[tasks.Message]:
        out: list[tasks.Message] = []
        t0 = time.perf_counter()
        got = work.split(batch)
        t["split"] += time.perf_counter() - t0
        for part in got:
            t0 = time.perf_counter()
            decoded = decode_batch(part.batch.values, part.batch.sources, **work.decode_args(part))
            t1 = time.perf_counter()
            result, ships = work.process(part, decoded, wall)
            t2 = time.perf_counter()
            t["decode"] += t1 - t0
            t["rollup" if part.rollup else "source"] += t2 - t1
            alerts.extend((a.alert_id, a.status) for a in result.alerts)
            out.extend(ships)
        return out

    for batch in _fetches(parts, topic, per_part):
        ships = feed(batch)
        if ships:
            feed(_carried(ships, rpos))
    t["alerts"] = len(alerts)
    raw = "\n".join(f"{a} {s}" for a, s in sorted(set(alerts))).encode()
    t["digest"] = int(hashlib.sha256(raw).hexdigest()[:12], 16)
    return t


def _fetches(parts: list[list[bytes]], topic: str, per_part: int) -> Iterator[Batch]:
    """Batches taking ``per_part`` records of each partition, as one broker's fetch does."""
    for i in range(0, max(len(p) for p in parts), per_part):
        vals: list[bytes | None] = []
        tps: dict[TopicPartition, int] = {}
        offs: list[int] = []
        cols_t: list[str] = []
        cols_p: list[int] = []
        for p, pv in enumerate(parts):
            chunk = pv[i : i + per_part]
            if chunk:
                vals.extend(chunk)
                offs.extend(range(i, i + len(chunk)))
                cols_t.extend([topic] * len(chunk))
                cols_p.extend([p] * len(chunk))
                tps[TopicPartition(topic, p)] = i + len(chunk)
        yield Batch(vals, SourceColumns(cols_t, cols_p, offs), tps)


def _carried(ships: list[tasks.Message], rpos: list[int]) -> Batch:
    """Shipments as the repartition topic hands them back (``rpos``: next offsets)."""
    rv: list[bytes | None] = []
    rt: list[str] = []
    rp: list[int] = []
    ro: list[int] = []
    rtps: dict[TopicPartition, int] = {}
    for m in ships:
        assert m.partition is not None
        rv.append(m.value)
        rt.append(m.topic)
        rp.append(m.partition)
        ro.append(rpos[m.partition])
        rpos[m.partition] += 1
        rtps[TopicPartition(m.topic, m.partition)] = rpos[m.partition]
    return Batch(rv, SourceColumns(rt, rp, ro), rtps)


def inproc_report(values: list[tuple[bytes, bytes]], modes: list[str], repeat: int) -> None:
    """``--inproc``: best-of-``repeat`` seconds per step and mode, and the alert sets' digest
    (equal digests: the modes made the same alert records)."""
    n = len(values)
    for mode in modes:
        runs = [inproc(values, mode) for _ in range(repeat)]
        r = min(runs, key=lambda x: x["split"] + x["source"] + x["rollup"])
        cpu = r["split"] + r["source"] + r["rollup"]
        steps = " ".join(f"{k} {r[k]:.2f}" for k in ("decode", "split", "source", "rollup"))
        print(
            f"{mode:7s} {n:,} events: {cpu:.2f} s beside decoding = {n / cpu:,.0f} events/s "
            f"| {steps} s | {r['alerts']:.0f} alert records, digest {r['digest']:.0f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
