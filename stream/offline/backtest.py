"""Offline replay: a JSONL file (or a Kafka topic) of v1 events through the very
pipeline the worker runs.

Purely event time: ``detected_at`` is the window end, so the same input and
config give byte-identical alert output.
"""

from __future__ import annotations

import gzip
import math
import sys
import time
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from stream.config import Config, KafkaConfig
from stream.ingest.dlq import dlq_record
from stream.ingest.events import Source, SourceColumns
from stream.judge.features import JudgedWindow
from stream.judge.rules import DetectorRule
from stream.pipeline import Pipeline, PipelineStats, StepResult
from stream.series import SeriesKey, series_key


@dataclass
class BacktestSummary:
    stats: PipelineStats
    alerts: int
    firing: int
    seconds: float
    first_ms: int | None = None  # event-time span replayed (first window start, last end)
    last_ms: int | None = None

    @property
    def hours(self) -> float:
        if self.first_ms is None or self.last_ms is None:
            return 0.0
        return (self.last_ms - self.first_ms) / 3_600_000


def open_text(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return typing.cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


Batches = Iterator[tuple[list[bytes | None], Sequence[Source]]]


def chunked(
    records: Iterable[tuple[int, bytes | None]], topic: str, batch_size: int = 5000
) -> Batches:
    """(offset, value) pairs in batches with columnar sources."""
    batch: list[bytes | None] = []
    offsets: list[int] = []
    for offset, value in records:
        batch.append(value)
        offsets.append(offset)
        if len(batch) >= batch_size:
            yield batch, SourceColumns([topic] * len(batch), [0] * len(batch), offsets)
            batch, offsets = [], []
    if batch:
        yield batch, SourceColumns([topic] * len(batch), [0] * len(batch), offsets)


def read_batches(path: Path, batch_size: int = 5000) -> Batches:
    """Lines of a JSONL file (``.gz`` too) as (values, sources) with line numbers as
    offsets; blank lines are skipped."""
    with open_text(path) as fh:
        lines = ((n, line.rstrip(b"\r\n")) for n, line in enumerate(fh, 1) if line.strip())
        yield from chunked(lines, str(path), batch_size)


def replay_batches(
    pipeline: Pipeline, batches: Iterable[tuple[list[bytes | None], Sequence[Source]]]
) -> Iterator[StepResult]:
    """Every step of an offline replay, the final flush included."""
    for values, sources in batches:
        yield pipeline.process(values, sources)
    yield pipeline.flush()


def input_batches(
    source: str | Path, batch_size: int = 5000, kafka: KafkaConfig | None = None
) -> Batches:
    """Batches of a JSONL file, or of a Kafka topic given as ``kafka://HOST:PORT/TOPIC?...``
    (read with the security settings of ``kafka``, when given)."""
    if isinstance(source, str) and source.startswith("kafka://"):
        from stream.ingest.kafka_client import security_kwargs
        from stream.offline.kafka_replay import kafka_batches, parse_kafka_url

        security = security_kwargs(kafka) if kafka is not None else None
        return kafka_batches(parse_kafka_url(source), batch_size, security)
    return read_batches(Path(source), batch_size)


def backtest_events(
    input_path: str | Path,
    config: Config,
    alerts_out: Path | None,
    *,
    dlq_out: Path | None = None,
    progress: IO[str] | None = sys.stderr,
    on_alerts: Callable[[list[dict[str, Any]]], None] | None = None,
    pipeline: Pipeline | None = None,
) -> BacktestSummary:
    """Replay ``input_path`` (file or ``kafka://`` URL); write alert v1 records (JSONL)
    to ``alerts_out`` (None: write nothing) and hand each batch's to ``on_alerts``.

    ``pipeline`` lets a caller observe the replay (see :class:`SeriesRecorder`).
    """
    t0 = time.monotonic()
    pipeline = pipeline or Pipeline(config, live=False)
    n_alerts = 0
    first_ms: int | None = None
    last_ms: int | None = None
    last_progress = t0
    if alerts_out is not None:
        alerts_out.parent.mkdir(parents=True, exist_ok=True)
    dlq_fh = open(dlq_out, "wb") if dlq_out else None  # noqa: SIM115
    out = open(alerts_out, "wb") if alerts_out else None  # noqa: SIM115
    try:

        def take(result: StepResult) -> None:
            nonlocal n_alerts, first_ms, last_ms
            if result.closed:
                first = min(w.start_ms for w in result.closed)
                first_ms = first if first_ms is None else min(first_ms, first)
                last_ms = max(last_ms or 0, max(w.end_ms for w in result.closed))
            wire = [rec.to_dict() for rec in result.alerts]  # alert v1 JSON objects
            if out is not None:
                for obj in wire:
                    out.write(orjson.dumps(obj) + b"\n")
            if on_alerts is not None and wire:
                on_alerts(wire)
            n_alerts += len(result.alerts)

        batches = input_batches(input_path, config.kafka.max_batch, config.kafka)
        for result in replay_batches(pipeline, batches):
            take(result)
            if dlq_fh is not None:
                for rej in result.rejected:
                    dlq_fh.write(dlq_record(rej) + b"\n")
            if progress is not None and time.monotonic() - last_progress > 2:
                last_progress = time.monotonic()
                s = pipeline.state.stats
                print(f"  … {s.records} records, {n_alerts} alert records", file=progress)
    finally:
        if dlq_fh is not None:
            dlq_fh.close()
        if out is not None:
            out.close()
    return BacktestSummary(
        stats=pipeline.state.stats,
        alerts=n_alerts,
        firing=len(pipeline.state.lifecycle.firing()),
        seconds=time.monotonic() - t0,
        first_ms=first_ms,
        last_ms=last_ms,
    )


def replay_alerts(
    input_path: str | Path, config: Config, pipeline: Pipeline | None = None
) -> tuple[list[dict[str, Any]], BacktestSummary]:
    """Every alert record of a replay, in memory (for tuning and scoring)."""
    alerts: list[dict[str, Any]] = []
    summary = backtest_events(
        input_path, config, None, progress=None, on_alerts=alerts.extend, pipeline=pipeline
    )
    return alerts, summary


# -- observing a replay for charts --------------------------------------------


@dataclass
class Trace:
    """One (rule, series) over time: what its chart shows."""

    rule: str
    signal: str
    series: dict[str, str]
    threshold: float
    t_ms: list[int] = field(default_factory=list)  # window starts
    value: list[float] = field(default_factory=list)
    expected: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    volume: list[float] = field(default_factory=list)
    window_ms: int = 10_000


class SeriesRecorder:
    """Records value, expected and score of chosen (rule, series) every window.

    Install on a fresh pipeline before replaying: it sets each rule's ``observe``
    hook and wraps its ``judge`` (the judge keeps no per-series score otherwise).
    ``wanted`` None records every series — only for small inputs.
    """

    def __init__(self, pipeline: Pipeline, wanted: set[tuple[str, SeriesKey]] | None) -> None:
        self.wanted = wanted
        self.traces: dict[tuple[str, SeriesKey], Trace] = {}
        window_ms = int(pipeline.config.windows.size_s * 1000)
        for rule in pipeline.state.rules:
            if isinstance(rule, DetectorRule):
                self._wrap(rule, window_ms)

    def _wrap(self, rule: DetectorRule, window_ms: int) -> None:
        log: list[tuple[Any, Any, float]] = []
        rule.observe = lambda sid, x, det, score: log.append((det, x, score))
        judge = rule.judge
        traces, wanted = self.traces, self.wanted
        labels_cache: dict[int, tuple[Any, SeriesKey]] = {}

        def observed(window: JudgedWindow, active: set[str]) -> Any:
            log.clear()
            out = judge(window, active)
            win, reg = window.win, window.registry
            for det, x, score in log:
                sid = x.sid
                got = labels_cache.get(sid)
                if got is None or got[0] is not reg.keys[sid]:
                    got = (reg.keys[sid], series_key(reg.labels(sid)))
                    labels_cache[sid] = got
                key = (rule.name, got[1])
                if wanted is not None and key not in wanted:
                    continue
                tr = traces.get(key)
                if tr is None:
                    tr = traces[key] = Trace(
                        rule.name, rule.signal, dict(got[1]), rule.threshold, window_ms=window_ms
                    )
                expected = float(det.expected(x)) if hasattr(det, "expected") else math.nan
                value = rule.describe(x, expected, det)[0]
                tr.t_ms.append(win.start_ms)
                tr.value.append(float(value))
                tr.expected.append(expected)
                tr.score.append(float(min(1.0, max(0.0, score))))
                tr.volume.append(float(x.get("volume", 0.0)))
            log.clear()
            return out

        rule.judge = observed  # type: ignore[method-assign]


def alerting_series(alerts: Iterable[dict[str, Any]]) -> set[tuple[str, SeriesKey]]:
    return {(str(a["rule"]), series_key(a["series"])) for a in alerts if a["status"] == "firing"}


def record_traces(
    input_path: str | Path, config: Config, wanted: set[tuple[str, SeriesKey]] | None
) -> list[Trace]:
    """Replay again, recording the chosen series (a second pass keeps memory bounded)."""
    pipeline = Pipeline(config, live=False)
    rec = SeriesRecorder(pipeline, wanted)
    backtest_events(input_path, config, None, progress=None, pipeline=pipeline)
    return list(rec.traces.values())
