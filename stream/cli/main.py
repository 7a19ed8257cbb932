"""The `paywatch` command: run, demo, simulate, backtest, tune, broker, alerts, config.

User mistakes (a wrong flag, a missing file, a bad config key, an unreachable
broker) end with one line on stderr that says what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from stream.cli.alerts import cmd_alerts
from stream.cli.backtest import cmd_backtest
from stream.cli.config_check import cmd_config
from stream.cli.inputs import UserError
from stream.cli.parser import build_parser
from stream.cli.run import cmd_broker, cmd_demo, cmd_run, cmd_tune
from stream.cli.simulate import cmd_simulate

VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "demo": cmd_demo,
    "simulate": cmd_simulate,
    "backtest": cmd_backtest,
    "tune": cmd_tune,
    "broker": cmd_broker,
    "alerts": cmd_alerts,
    "config": cmd_config,
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
    from stream.ingest.kafka_client import KafkaUnavailable
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
