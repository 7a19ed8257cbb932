"""`paywatch demo`: local broker + simulated traffic with an outage + worker, on the console.

Event time runs ``SPEED`` times faster than the wall clock, so a minute of
demo shows ten minutes of payment traffic: a calm start, an Alipay outage,
the alert, the recovery.  Two malformed records show the DLQ at work.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stream.aio import cancel_and_wait
from stream.alerting.console import ConsoleNotifier
from stream.alerting.record import AlertRecord
from stream.clock import WALL_CLOCK
from stream.config import Config
from stream.ingest.kafka_client import ensure_topics
from stream.live.worker import run_worker
from stream.sim.broker import LocalBroker
from stream.sim.produce import produce_events
from stream.sim.simulate import Incident, SimConfig, simulate

SPEED = 10.0  # simulated seconds per wall second
STARTUP_S = 6.0  # broker start + consumer group join, before traffic shows up in windows


def demo_plan(duration_s: float, seed: int, start_ms: int) -> SimConfig:
    """Traffic for the demo: calm, then an outage over the middle fifth, then calm again."""
    sim_s = max(60.0, (duration_s - STARTUP_S - 4) * SPEED)
    outage = Incident(
        "provider_outage",
        start_s=round(sim_s * 0.3),
        duration_s=round(sim_s * 0.22),
        provider="alipay",
        magnitude=0.8,
    )
    return SimConfig(
        seed=seed, start_ms=start_ms, duration_s=sim_s, daily=False, incidents=[outage]
    )


def _hms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%S")


def run_demo(duration_s: float = 60.0, seed: int = 7, out: Any = None) -> int:
    out = out or sys.stdout
    logging.getLogger("paywatch").setLevel(logging.WARNING)
    return asyncio.run(_demo(duration_s, seed, out))


async def _demo(duration_s: float, seed: int, out: Any) -> int:
    wall0 = time.monotonic()
    start_ms = WALL_CLOCK.now_ms() // 60_000 * 60_000
    plan = demo_plan(duration_s, seed, start_ms)

    def say(text: str) -> None:
        print(f"demo | {text}", file=out, flush=True)

    say("starting a local Kafka-compatible broker …")
    with LocalBroker() as broker:
        cfg, history = _demo_config(broker.bootstrap)
        k = cfg.kafka
        await ensure_topics(broker.bootstrap, [k.events_topic, k.dlq_topic, k.alerts_topic])
        _announce(say, cfg, plan, start_ms)
        console = ConsoleNotifier(stream=out, inhibit_rules=cfg.builtin_inhibit_rules())
        stop_worker = asyncio.Event()
        worker = asyncio.create_task(
            run_worker(cfg, stop_worker, [_paged(console.notify)], progress_every_s=3600)
        )
        try:
            await _produce(say, cfg, plan, console, deadline=wall0 + duration_s - 3)
        finally:
            stop_worker.set()
            stats = await asyncio.wait_for(worker, 30)
    print(file=out)
    say(
        f"done in {time.monotonic() - wall0:.0f}s: {stats.records:,} events judged, "
        f"{stats.rejected} malformed sent to the DLQ with a reason, {stats.windows_closed} windows "
        f"closed, {console.fired} alerts fired, {console.resolved} resolved"
    )
    say(f"alert history of this demo: paywatch alerts list --history {history}")
    say("next: `paywatch simulate --help`, `paywatch backtest --help`, `paywatch run --help`")
    return 0


def _paged(notify: Callable[[list[AlertRecord]], None]) -> Callable[[list[AlertRecord]], None]:
    """Only what would page reaches the console: info alerts stay on the alerts topic."""
    return lambda records: notify([r for r in records if r.severity != "info"])


def _demo_config(bootstrap: str) -> tuple[Config, Path]:
    """Defaults pointed at the local broker, tuned for a quick group join; and its history."""
    cfg = Config()
    # The demo's alerts go to a history of their own, never into the user's real one.
    history = Path(tempfile.mkdtemp(prefix="paywatch-demo-")) / "history.db"
    cfg.notify.history_path = str(history)
    cfg.metrics.port = 0  # a demo must not collide with a real worker's metrics port
    # An online river model on provider-level feature vectors, live by default: its
    # alerts are info (capped by the catalog), go to the alerts topic and not the console.
    mv = cfg.detectors.multivariate
    mv.enabled, mv.levels, mv.min_windows = True, [["provider"]], 30
    mv.model, mv.params = (
        "river.anomaly.HalfSpaceTrees",
        {"n_trees": 10, "window_size": 20, "seed": 1},
    )
    cfg.validate()
    k = cfg.kafka
    k.bootstrap_servers = bootstrap
    k.session_timeout_ms, k.heartbeat_interval_ms, k.fetch_max_wait_ms = 6000, 1000, 20
    return cfg, history


def _announce(say: Callable[[str], None], cfg: Config, plan: SimConfig, start_ms: int) -> None:
    """What the demo is about to show: broker, topics, traffic and the injected outage."""
    k = cfg.kafka
    (outage,) = plan.incidents
    topics = f"{k.events_topic}, {k.alerts_topic}, {k.dlq_topic}"
    say(f"broker up on {k.bootstrap_servers}; topics {topics}")
    say(
        f"simulating {plan.duration_s / 60:.0f} min of payment traffic at ×{SPEED:g} speed: "
        f"{', '.join(plan.providers)}, {plan.merchants} merchants, "
        f"~{plan.rate * SPEED:.0f} events/s"
    )
    say(
        f"injected incident: {outage.provider} outage from "
        f"{_hms(start_ms + int(outage.start_s * 1000))} to "
        f"{_hms(start_ms + int((outage.start_s + outage.duration_s) * 1000))} (simulated time)"
    )
    say("alerts appear below as they fire and resolve; times are simulated event time\n")


def _demo_events(plan: SimConfig) -> list[dict[str, Any] | bytes]:
    """The simulated traffic with two malformed records a fifth of the way in (for the DLQ)."""
    events: list[dict[str, Any] | bytes] = list(simulate(plan))
    events[len(events) // 5 : len(events) // 5] = [
        b'{"schema_version": 1, "event_type": "provider_call", "latency_ms": "fast"',
        b'{"schema_version": 1, "event_type": "provider_call", "event_id": "x", "event_ts": 0}',
    ]
    return events


async def _produce(
    say: Callable[[str], None],
    cfg: Config,
    plan: SimConfig,
    console: ConsoleNotifier,
    deadline: float,
) -> None:
    """Produce the traffic at demo speed until it ends or the deadline (monotonic) passes,
    with a status line every 10 s."""
    k = cfg.kafka
    sent = 0

    def progress(n: int) -> None:
        nonlocal sent
        sent = n

    producer = asyncio.create_task(
        produce_events(
            _demo_events(plan), k.bootstrap_servers, k.events_topic, speed=SPEED,
            on_progress=progress,
        )
    )  # fmt: skip
    last_status = time.monotonic()
    try:
        while not producer.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            if time.monotonic() - last_status >= 10:
                last_status = time.monotonic()
                say(
                    f"… {sent:,} events produced, {console.fired} alerts fired, "
                    f"{console.resolved} resolved"
                )
        if producer.done():
            producer.result()
            await asyncio.sleep(1.5)  # let the last windows close
    finally:
        await cancel_and_wait(producer)
