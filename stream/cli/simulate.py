"""``paywatch simulate``: the simulator to a JSONL file or to Kafka."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable
from typing import Any

from stream.cli.inputs import UserError


def cmd_simulate(args: argparse.Namespace) -> int:
    from stream.sim.simulate import (
        SimConfig,
        default_incident_suite,
        parse_incident,
        simulate,
        write_jsonl,
        write_labels,
    )

    if bool(args.out) == bool(args.to_kafka):
        raise UserError("give exactly one of --out FILE or --to-kafka")
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
    n = asyncio.run(_to_kafka(args, simulate(cfg)))
    print(f"simulate: {n:,} events → {args.topic} on {args.bootstrap}", file=sys.stderr)
    return 0


async def _to_kafka(args: argparse.Namespace, events: Iterable[dict[str, Any]]) -> int:
    from stream.ingest.kafka_client import ensure_topics
    from stream.sim.produce import produce_events

    def progress(n: int) -> None:
        if n % 10_000 < 500:
            print(f"  … {n:,} events sent", file=sys.stderr)

    await ensure_topics(args.bootstrap, [args.topic])
    return await produce_events(
        events, args.bootstrap, args.topic, speed=args.speed, on_progress=progress
    )
