"""``paywatch run``, ``demo``, ``tune`` and ``broker``: the verbs that hand over to one stage."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

from stream.cli.inputs import load_config


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

    cfg = load_config(args.config, args.bootstrap)
    sinks = []
    if cfg.notify.console.enabled:
        _, rules = cfg.notify_routes()
        console = ConsoleNotifier(
            color=cfg.notify.console.color,
            inhibit_rules=[*rules, *cfg.builtin_inhibit_rules()],
        )
        sinks.append(console.notify)
    asyncio.run(_until_signal(lambda stop: run_worker(cfg, stop, sinks)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from stream.sim.demo import run_demo

    return run_demo(duration_s=args.duration, seed=args.seed)


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
