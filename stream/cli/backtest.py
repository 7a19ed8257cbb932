"""``paywatch backtest``: replay a file (or a Kafka range) offline, score it, chart it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.cli.inputs import UserError, load_config

if TYPE_CHECKING:
    from models.incidents import LabelScore
    from stream.config import Config
    from stream.offline.backtest import BacktestSummary

Labels = list[dict[str, Any]] | None  # read_labels' incidents, when --labels is given


def cmd_backtest(args: argparse.Namespace) -> int:
    from stream.offline.labels import read_labels

    source: str = args.input
    kafka = source.startswith("kafka://")
    if not kafka:
        _check_input_file(source)
    labels = read_labels(args.labels) if args.labels else None
    if not kafka and Path(source).suffix.lower() == ".csv":
        return _backtest_csv(args, Path(source), labels)
    if args.scores_out:
        raise UserError("--scores-out applies to CSV metric input only")
    from stream.offline.backtest import backtest_events

    cfg = load_config(args.config)
    alerts: list[dict[str, Any]] = []
    keep = alerts.extend if (args.report or labels is not None) else None
    s = backtest_events(source, cfg, args.alerts_out, dlq_out=args.dlq_out, on_alerts=keep)
    st = s.stats
    print(
        f"backtest: {st.records} records ({st.rejected} rejected, {st.late} late), "
        f"{st.windows_closed} windows, {s.alerts} alert records → {args.alerts_out} "
        f"in {s.seconds:.1f}s",
        file=sys.stderr,
    )
    if st.records and st.rejected == st.records:
        raise UserError(
            f"every one of the {st.records} records was rejected: is {source} JSONL of v1 "
            "events? (--dlq-out FILE writes each record with the reason)"
        )
    score = _score(alerts, labels, s.hours)
    if args.report:
        _events_report(args, cfg, s, alerts, labels, score)
    return 0


def _check_input_file(source: str) -> None:
    path = Path(source)
    if path.is_dir():
        raise UserError(f"--input: {source} is a directory, not a file")
    if not path.is_file():
        raise UserError(f"--input: no such file: {source}")


def _score(alerts: list[dict[str, Any]], labels: Labels, hours: float) -> LabelScore | None:
    """Score against the labels and print the result (None without labels)."""
    if labels is None:
        return None
    from models.incidents import score_alerts
    from stream.series import series_labels

    score = score_alerts(alerts, labels, hours)
    print(f"labels: {score.summary_line()}")
    for d in score.detections:
        lab = d.label
        series = series_labels(lab["series"], ",") or "(all)"
        if not lab["is_incident"]:
            got = f"not an incident, {len(d.alert_ids)} alert(s)"
        else:
            got = "MISSED" if d.delay_s is None else f"detected after {d.delay_s:.0f} s"
        print(f"  {lab['kind']:<22} {series:<40} {got}")
    for e in score.false_alerts:
        print(f"  false alert: {e['rule']} {e['series']} at window_end {e['window_end']}")
    return score


def _events_report(
    args: argparse.Namespace,
    cfg: Config,
    s: BacktestSummary,
    alerts: list[dict[str, Any]],
    labels: Labels,
    score: LabelScore | None,
) -> None:
    """The HTML report of an event replay (a second pass records the alerting series)."""
    from stream.offline.backtest import alerting_series, record_traces
    from stream.offline.report import clock, render_backtest_report

    source: str = args.input
    st = s.stats
    wanted = alerting_series(alerts)
    traces = record_traces(source, cfg, wanted) if wanted else []
    facts = [
        ("events", f"{st.records} ({st.rejected} rejected, {st.late} late)"),
        ("event time", f"{clock(s.first_ms)} → {clock(s.last_ms)} UTC ({s.hours:.2f} h)"),
        ("windows closed", str(st.windows_closed)),
        ("alert records", f"{s.alerts} → {args.alerts_out}"),
        ("config", str(args.config or "built-in defaults")),
    ]
    n = render_backtest_report(
        args.report, source=source, alerts=alerts, traces=traces, facts=facts,
        labels=labels, score=score,
    )  # fmt: skip
    print(f"report: {n} series charted → {args.report}", file=sys.stderr)


def _backtest_csv(args: argparse.Namespace, path: Path, labels: Labels) -> int:
    """A ``timestamp,value`` series through the metric detector (report: from its scores)."""
    import tempfile

    from stream.offline.csv_series import backtest_csv

    with tempfile.TemporaryDirectory() as tmp:
        scores = args.scores_out or (Path(tmp) / "scores.csv" if args.report else None)
        summary = backtest_csv(path, scores, args.alerts_out)
        print(f"backtest: {summary}", file=sys.stderr)
        if not (args.report or labels is not None):
            return 0
        import orjson

        raw = args.alerts_out.read_bytes()
        alerts = [orjson.loads(line) for line in raw.splitlines() if line]
        hours = _csv_hours(path) if labels is not None else 0.0
        score = _score(alerts, labels, hours)
        if args.report and scores is not None:
            _csv_report(args, path, scores, summary, alerts, labels, score)
    return 0


def _csv_hours(path: Path) -> float:
    """Hours from the first to the last row of a metric CSV."""
    from stream.offline.csv_series import parse_timestamp, read_metric_csv

    stamps, _ = read_metric_csv(path)
    if not stamps:
        return 0.0
    return (parse_timestamp(stamps[-1]) - parse_timestamp(stamps[0])) / 3600


def _csv_report(
    args: argparse.Namespace,
    path: Path,
    scores: Path,
    summary: dict[str, Any],
    alerts: list[dict[str, Any]],
    labels: Labels,
    score: LabelScore | None,
) -> None:
    from stream.offline.csv_series import RULE
    from stream.offline.report import csv_trace, render_backtest_report

    trace = csv_trace(scores, {"metric": path.stem}, RULE, float(summary["threshold"]))
    facts = [
        ("rows", str(summary["rows"])),
        ("threshold", f"{summary['threshold']:g}"),
        ("alerts fired", str(summary["alerts_fired"])),
        ("max score", f"{summary['max_score']:.3f}"),
    ]
    render_backtest_report(
        args.report, source=str(path), alerts=alerts, traces=[trace], facts=facts,
        labels=labels, score=score,
    )  # fmt: skip
    print(f"report → {args.report}", file=sys.stderr)
