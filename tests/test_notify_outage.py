"""Acceptance 4 against the real local broker: the notification endpoint (a real local
HTTP server) is down for five minutes of the worker's clock.

The worker runs on a :class:`~stream.clock.ManualClock`: routing timers and delivery's
retry back-off both wait on it, so five minutes pass in a few wall seconds and the
test decides when they have passed.
"""
# ruff: noqa: F811  (pytest fixtures imported from tests.servers are re-bound as parameters)

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from stream.alerting.history import AlertHistory
from stream.alerting.notifications import Notifications
from stream.clock import ManualClock
from stream.config import Config
from stream.ingest.kafka_client import ensure_topics
from stream.live.worker import run_worker
from stream.sim.produce import produce_events
from tests.servers import WebhookServer, wait_until, wait_until_async, webhook_server  # noqa: F401
from tests.test_notify_e2e import split
from tests.test_worker_kafka import WatchedSource, read_topic
from tests.traffic import OUTAGE, T0, traffic

WALL = T0 + 3_600_000
OUTAGE_S = 300.0
STEP_S = 5.0


def told(posts: list[dict[str, Any]]) -> list[str]:
    """The title of every message the receiver got; a combined post counts each inside."""
    titles = []
    for post in posts:
        if re.match(r"\[\d+ alerts\]", post["title"]):
            titles += re.findall(r"^### (.+)$", post["message"], re.M)
        else:
            titles.append(post["title"])
    return titles


def outage_config(cfg: Config, url: str, tmp_path: Path) -> Config:
    cfg.kafka.decode_workers = 0
    cfg.notify.routes = [
        {"name": "oncall", "receivers": [url], "group_wait_s": 30, "group_interval_s": 60}
    ]
    cfg.notify.history_path = str(tmp_path / "history.db")
    cfg.windows.idle_advance_s = 3600.0  # moving the clock must not close windows
    return cfg.validate()  # delivery keeps its defaults: 15 attempts, 1 s doubling to 60 s


async def test_endpoint_down_five_minutes_pages_arrive_after_and_consumption_goes_on(
    kafka_config: Config, tmp_path: Path, webhook_server: WebhookServer
) -> None:
    cfg = outage_config(kafka_config, webhook_server.url, tmp_path)
    k = cfg.kafka
    during, after = split(traffic(spread=True), T0 + OUTAGE[0] + 50_000)
    await ensure_topics(k.bootstrap_servers, [k.events_topic, k.alerts_topic, k.control_topic])
    clock = ManualClock(WALL)
    notes = Notifications(cfg, clock=clock)
    source = WatchedSource(k)
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(cfg, stop, notifications=notes, source=source, clock=clock, drain_s=0)
    )
    webhook_server.status = 503  # the endpoint is down from the start
    try:
        await produce_events(during, k.bootstrap_servers, k.events_topic)
        await source.all_committed(len(during))

        async def provider(status: str) -> bool:
            alerts = await read_topic(k.bootstrap_servers, k.alerts_topic)
            return any(a["series"] == {"provider": "alipay"} and a["status"] == status
                       for a in alerts)  # fmt: skip

        # The alert record is on the topic at once: not a second of the clock has passed.
        assert await wait_until_async(lambda: provider("firing"), 15)
        assert clock.monotonic() == 0
        # The notification feed (its own consumer group) has read it: its group_wait runs
        # from now.  Advancing the clock before that would start the timer 30 s later.
        assert await wait_until(lambda: bool(notes.dispatcher.group_keys()), 10)
        clock.advance(30)  # group_wait: the page is due, and refused
        assert await wait_until(lambda: webhook_server.refused >= 1, 10)

        # During the outage: the rest of the incident is consumed and committed, it
        # resolves on the topic, while delivery keeps retrying on the clock.
        await produce_events(after, k.bootstrap_servers, k.events_topic)
        await source.all_committed(len(during) + len(after))
        assert await wait_until_async(lambda: provider("resolved"), 15)
        while clock.monotonic() < OUTAGE_S:
            clock.advance(STEP_S)
            assert await wait_until(lambda: clock.sleeping >= 1, 10)  # still retrying
        assert webhook_server.posts == [] and webhook_server.refused >= 6

        webhook_server.status = 200  # back after five minutes
        for _ in range(int(120 / STEP_S)):
            if notes.deliverer.pending == 0 and not notes.dispatcher.group_keys():
                break
            clock.advance(STEP_S)
            await wait_until(lambda: clock.sleeping >= 1 or notes.deliverer.pending == 0, 5)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)

    # Each page exactly once, after the endpoint came back.
    assert told(webhook_server.posts) == [
        "[CRITICAL] alipay: error rate 50.7% vs 0.05% expected",
        "[RESOLVED] alipay system_error_rate, lasted 1m 20s",
    ]
    with AlertHistory(cfg.notify.history_path) as history:
        (row,) = [a for a in history.list_alerts() if a["series"] == {"provider": "alipay"}]
        attempts = history.show_alert(row["alert_id"])["deliveries"]  # type: ignore[index]
    # Every refusal is in the history, then the deliveries: none failed after recovery.
    oks = [bool(a["ok"]) for a in attempts]
    first_ok = oks.index(True)
    assert oks[first_ok:] == [True] * len(webhook_server.posts)
    assert first_ok == webhook_server.refused >= 6
