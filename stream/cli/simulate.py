"""`paywatch simulate`: the simulator to a JSONL file or to Kafka."""

from __future__ import annotations

import argparse
import asyncio
import sys

from stream.ingest.kafka import ensure_topics
from stream.sim.produce import produce_events
from stream.sim.simulate import (
    SimConfig,
    default_incident_suite,
    parse_incident,
    simulate,
    write_jsonl,
    write_labels,
)


class SimulateUsageError(ValueError):
    pass


def run_simulate(args: argparse.Namespace) -> int:
    if bool(args.out) == bool(args.to_kafka):
        raise SimulateUsageError("give exactly one of --out FILE or --to-kafka")
    incidents = [parse_incident(spec) for spec in args.incident]
    if args.suite:
        incidents += default_incident_suite(args.duration)
    kwargs = {} if args.rate is None else {"rate": args.rate}
    cfg = SimConfig(seed=args.seed, duration_s=args.duration, incidents=incidents, **kwargs)
    if args.labels_out:
        write_labels(cfg, args.labels_out)
    if args.out:
        n = write_jsonl(simulate(cfg), args.out)
        print(f"simulate: {n:,} events → {args.out}", file=sys.stderr)
        return 0

    def progress(n: int) -> None:
        if n % 10_000 < 500:
            print(f"  … {n:,} events sent", file=sys.stderr)

    async def go() -> int:
        await ensure_topics(args.bootstrap, [args.topic])
        return await produce_events(
            simulate(cfg), args.bootstrap, args.topic, speed=args.speed, on_progress=progress
        )

    n = asyncio.run(go())
    print(f"simulate: {n:,} events → {args.topic} on {args.bootstrap}", file=sys.stderr)
    return 0
