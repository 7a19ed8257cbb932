"""Offline replay: a JSONL file of v1 events through the very pipeline the worker runs.

Purely event time: ``detected_at`` is the window end, so the same input and
config give byte-identical alert output.
"""

from __future__ import annotations

import gzip
import sys
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from stream.config import Config
from stream.decode import dlq_record
from stream.events import Source
from stream.pipeline import Pipeline, PipelineStats


@dataclass
class BacktestSummary:
    stats: PipelineStats
    alerts: int
    firing: int
    seconds: float


def open_text(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return typing.cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


def read_batches(
    path: Path, batch_size: int = 5000
) -> Iterator[tuple[list[bytes | None], list[Source]]]:
    """Lines of a JSONL file (``.gz`` too) as (values, sources); blank lines are skipped."""
    topic = str(path)
    values: list[bytes | None] = []
    sources: list[Source] = []
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            values.append(line)
            sources.append(Source(topic, 0, lineno))
            if len(values) >= batch_size:
                yield values, sources
                values, sources = [], []
    if values:
        yield values, sources


def backtest_events(
    input_path: Path,
    config: Config,
    alerts_out: Path,
    *,
    dlq_out: Path | None = None,
    progress: IO[str] | None = sys.stderr,
) -> BacktestSummary:
    """Replay ``input_path``; write alert v1 records (JSONL) to ``alerts_out``."""
    t0 = time.monotonic()
    pipeline = Pipeline(config, live=False)
    n_alerts = 0
    last_progress = t0
    alerts_out.parent.mkdir(parents=True, exist_ok=True)
    dlq_fh = open(dlq_out, "wb") if dlq_out else None  # noqa: SIM115
    try:
        with open(alerts_out, "wb") as out:

            def write(records: list[dict[str, Any]]) -> None:
                for rec in records:
                    out.write(orjson.dumps(rec) + b"\n")

            for values, sources in read_batches(input_path, config.kafka.max_batch):
                result = pipeline.process(values, sources)
                write(result.alerts)
                n_alerts += len(result.alerts)
                if dlq_fh is not None:
                    for rej in result.rejected:
                        dlq_fh.write(dlq_record(rej) + b"\n")
                if progress is not None and time.monotonic() - last_progress > 2:
                    last_progress = time.monotonic()
                    s = pipeline.state.stats
                    print(f"  … {s.records} records, {n_alerts} alert records", file=progress)
            result = pipeline.flush()
            write(result.alerts)
            n_alerts += len(result.alerts)
    finally:
        if dlq_fh is not None:
            dlq_fh.close()
    return BacktestSummary(
        stats=pipeline.state.stats,
        alerts=n_alerts,
        firing=len(pipeline.state.lifecycle.firing()),
        seconds=time.monotonic() - t0,
    )
