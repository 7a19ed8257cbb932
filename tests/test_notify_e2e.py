"""Acceptance, end to end over real sockets: the live worker against the local broker,
notifying a local SMTP server, a signed DingTalk-robot fake and a JSON webhook.

Event time runs far faster than the wall clock here (traffic is produced at once),
while routing timers (``group_wait_s``) run on the wall clock.  An episode that
starts and ends within one ``group_wait`` is never announced (as in Alertmanager),
so the tests produce traffic in two phases: up to the middle of the outage, then —
once the firing notification has arrived — the rest, which resolves it.
"""
# ruff: noqa: F811  (pytest fixtures imported from tests.servers are re-bound as parameters)

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import yaml

from stream.alerting.history import AlertHistory
from stream.alerting.notifications import InOrderThread, Notifications
from stream.cli.main import main as paywatch_main
from stream.config import Config
from stream.ingest.kafka_client import ensure_topics
from stream.live.worker import run_worker
from stream.sim.produce import produce_events
from tests.factories import make_alert
from tests.servers import (  # noqa: F401  (fixtures are used by name)
    RobotServer,
    SmtpServer,
    WebhookServer,
    dingtalk_robot,
    smtp_server,
    wait_until,
    webhook_server,
)
from tests.test_worker_kafka import read_topic
from tests.traffic import OUTAGE, T0, traffic

REPO = Path(__file__).resolve().parents[1]
PROVIDER = {"provider": "alipay"}


def route(name: str, *receivers: str, **extra: Any) -> dict[str, Any]:
    """A route with wall-clock timers short enough for a test."""
    return {
        "name": name,
        "receivers": list(receivers),
        "group_wait_s": 0.3,
        "group_interval_s": 0.5,
        "repeat_interval_s": 3600,
        **extra,
    }


def notify_config(cfg: Config, tmp_path: Path, routes: list[dict[str, Any]]) -> Config:
    cfg.notify.routes = routes
    cfg.notify.history_path = str(tmp_path / "history.db")
    d = cfg.notify.delivery
    d.max_attempts, d.backoff_s, d.max_backoff_s, d.send_timeout_s = 3, 0.05, 0.2, 5.0
    # The stream pauses between phases: the wall clock must not close windows meanwhile.
    cfg.windows.idle_advance_s = 300.0
    return cfg.validate()


@contextlib.asynccontextmanager
async def worker(cfg: Config) -> AsyncIterator[Notifications]:
    k = cfg.kafka
    # One partition, made before anything is produced (auto-created topics may have more,
    # and then event order across partitions depends on fetch timing).
    await ensure_topics(k.bootstrap_servers, [k.events_topic, k.alerts_topic, k.control_topic])
    notes = Notifications(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(cfg, stop, notifications=notes, drain_s=2.0))
    try:
        yield notes
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def produce(cfg: Config, events: list[dict[str, Any]]) -> None:
    await produce_events(events, cfg.kafka.bootstrap_servers, cfg.kafka.events_topic)


def split(events: list[dict[str, Any]], at_ms: int) -> tuple[list[Any], list[Any]]:
    cut = next(i for i, e in enumerate(events) if e["event_ts"] >= at_ms)
    return events[:cut], events[cut:]


def settled(notes: Notifications) -> Callable[[], bool]:
    """True once nothing is left that could send: no group in the dispatcher, nothing queued."""

    def check() -> bool:
        try:
            return not notes.dispatcher.group_keys() and notes.deliverer.pending == 0
        except RuntimeError:  # the dispatch thread changed its groups while we looked
            return False

    return check


async def evaluated(notes: Notifications, more: int) -> bool:
    """Wait until the dispatcher has run ``more`` further group evaluations."""
    start = notes.dispatcher.evaluations
    return await wait_until(lambda: notes.dispatcher.evaluations >= start + more, timeout=10)


def provider_alert(history: AlertHistory) -> dict[str, Any]:
    (row,) = [a for a in history.list_alerts() if a["series"] == PROVIDER]
    return row


async def test_email_for_firing_then_recovery_and_alerts_list_show(
    kafka_config: Config,
    tmp_path: Path,
    smtp_server: SmtpServer,
    capsys: Any,
) -> None:
    cfg = notify_config(kafka_config, tmp_path, [route("oncall", smtp_server.url())])
    during, after = split(traffic(spread=True), T0 + OUTAGE[0] + 50_000)
    async with worker(cfg) as notes:
        await produce(cfg, during)
        assert await wait_until(lambda: len(smtp_server.messages) >= 1, timeout=15)
        await produce(cfg, after)
        assert await wait_until(lambda: len(smtp_server.messages) >= 2, timeout=15)
        # Nothing else may follow: no group is left that could send, nothing is queued.
        assert await wait_until(settled(notes), timeout=10)

    assert len(smtp_server.messages) == 2
    firing, recovery = smtp_server.messages
    assert smtp_server.recipients == [["oncall@example.com"]] * 2
    assert "CRITICAL" in firing["Subject"] and "alipay" in firing["Subject"]
    assert "alipay" in firing.get_body().get_content()  # type: ignore[union-attr]
    assert "RESOLVED" in recovery["Subject"].upper()  # routes speak English by default
    assert "alipay" in recovery["Subject"] + recovery.get_body().get_content()  # type: ignore[union-attr]

    # `paywatch alerts list/show` read the history the worker wrote.
    with AlertHistory(cfg.notify.history_path) as history:
        alert = provider_alert(history)
    assert alert["status"] == "resolved" and alert["first_notified_ms"] is not None
    assert paywatch_main(["alerts", "list", "--history", cfg.notify.history_path]) == 0
    listed = capsys.readouterr().out.splitlines()
    line = next(x for x in listed if x.startswith(alert["alert_id"][:12]))
    assert "RESOLVED" in line and "critical" in line and "alipay" in line
    assert "not notified" not in line
    # Merchant-level alerts beneath it were inhibited: listed, but never notified.
    assert any("not notified" in x and "m0" in x for x in listed)

    status = ["alerts", "list", "--status", "firing", "--history", cfg.notify.history_path]
    assert paywatch_main(status) == 0
    assert capsys.readouterr().out == ""

    show = ["alerts", "show", alert["alert_id"][:8], "--history", cfg.notify.history_path]
    assert paywatch_main(show) == 0
    detail = capsys.readouterr().out
    assert f"alert {alert['alert_id']}" in detail
    assert "record firing" in detail and "record resolved" in detail
    assert detail.count("notified (notify) via oncall") == 2
    assert detail.count("mailto://") == 2 and " ok" in detail
    assert smtp_server.password not in detail  # the channel is shown masked


async def test_dingtalk_errcode_is_retried_then_falls_back_to_webhook(
    kafka_config: Config,
    tmp_path: Path,
    dingtalk_robot: RobotServer,
    webhook_server: WebhookServer,
) -> None:
    cfg = notify_config(
        kafka_config,
        tmp_path,
        [
            route("oncall", dingtalk_robot.url, fallback="backup"),
            route("backup", webhook_server.url, match={"rule": "only-as-a-fallback"}),
        ],
    )
    during, after = split(traffic(spread=True), T0 + OUTAGE[0] + 50_000)
    dingtalk_robot.fail(310000, "keywords not in content", times=1)  # then it accepts
    async with worker(cfg):
        await produce(cfg, during)
        assert await wait_until(lambda: len(dingtalk_robot.accepted) == 1, timeout=15)
        dingtalk_robot.fail(300001, "token is not exist", times=None)  # from now on: refused
        await produce(cfg, after)
        assert await wait_until(lambda: len(webhook_server.posts) == 1, timeout=15)

    # Every request was signed correctly: refusals came from the robot's errcode only.
    assert all(r.sign_ok for r in dingtalk_robot.requests)
    codes = [r.errcode for r in dingtalk_robot.requests]
    assert codes == [310000, 0, 300001, 300001, 300001]  # retried up to max_attempts (3)
    assert "alipay" in dingtalk_robot.accepted[0].text
    (post,) = webhook_server.posts  # the recovery reached the fallback route
    assert "alipay" in post["title"] and "RESOLVED" in post["title"].upper()

    with AlertHistory(cfg.notify.history_path) as history:
        alert = provider_alert(history)
        detail = history.show_alert(alert["alert_id"])
    assert detail is not None
    attempts = [(d["route"], d["attempt"], d["ok"], d["error"]) for d in detail["deliveries"]]
    assert attempts[:2] == [
        ("oncall", 1, False, "dingtalk errcode 310000: keywords not in content"),
        ("oncall", 2, True, None),
    ]
    assert [a[:3] for a in attempts[2:]] == [
        ("oncall", 1, False),
        ("oncall", 2, False),
        ("oncall", 3, False),
        ("backup", 1, True),
    ]
    assert all("300001" in str(a[3]) for a in attempts[2:5])
    assert all(dingtalk_robot.token not in d["channel"] for d in detail["deliveries"])


def outage_across_merchants(
    merchants: int = 30, per_s: int = 3, seconds: int = 220, outage: tuple[int, int] = (60, 120)
) -> list[dict[str, Any]]:
    """alipay at ``per_s`` calls/s for each merchant (30 a window each); half fail in the outage."""
    events = []
    for t in range(seconds * per_s):
        ts = t * 1000 // per_s
        failing_now = outage[0] * 1000 <= ts < outage[1] * 1000
        for m in range(merchants):
            failing = failing_now and (t + m) % 2 == 0
            ev: dict[str, Any] = {
                "schema_version": 1,
                "event_type": "provider_call",
                "event_id": f"e{t}-{m}",
                "event_ts": T0 + ts + m,
                "service": "checkout",
                "provider": "alipay",
                "merchant_id": f"shop{m:02d}",
                "operation": "create_payment",
                "outcome": "failure" if failing else "success",
                "latency_ms": 90.0 + m,
            }
            if failing:
                ev.update(provider_code="ACQ.SYSTEM_ERROR", http_status=200)
            events.append(ev)
    return events


async def test_provider_outage_over_30_merchants_notifies_once_and_recovers_once(
    kafka_config: Config, tmp_path: Path, webhook_server: WebhookServer
) -> None:
    cfg = notify_config(kafka_config, tmp_path, [route("oncall", webhook_server.url)])
    during, after = split(outage_across_merchants(), T0 + 110_000)
    async with worker(cfg) as notes:
        await produce(cfg, during)
        assert await wait_until(lambda: len(webhook_server.posts) >= 1, timeout=15)
        assert await evaluated(notes, 2)  # two more group evaluations: merchants stay quiet
        assert await wait_until(lambda: notes.deliverer.pending == 0)
        assert len(webhook_server.posts) == 1
        await produce(cfg, after)
        assert await wait_until(lambda: len(webhook_server.posts) >= 2, timeout=15)
        assert await wait_until(settled(notes), timeout=10)

    k = cfg.kafka
    alerts = await read_topic(k.bootstrap_servers, k.alerts_topic)
    merchant_firing = {
        a["series"]["merchant_id"]
        for a in alerts
        if a["status"] == "firing" and "merchant_id" in a["series"]
    }
    assert len(merchant_firing) == 30  # every merchant alerted on the topic...

    assert len(webhook_server.posts) == 2  # ...but people got one page and one recovery
    firing, recovery = webhook_server.posts
    assert "alipay" in firing["title"] and "CRITICAL" in firing["title"]
    assert "shop" not in firing["title"] + firing["message"]  # no merchant is listed...
    assert "31 related alerts beneath muted" in firing["message"]  # ...they are counted
    assert "alipay" in recovery["title"] and "RESOLVED" in recovery["title"].upper()
    with AlertHistory(cfg.notify.history_path) as history:
        provider = provider_alert(history)
        rows = history.list_alerts(limit=1000)
    merchants = [a for a in rows if "merchant_id" in a["series"]]
    assert len(merchants) == 30
    assert all(a["first_notified_ms"] is None for a in merchants)
    assert all(a["muted"] is None or provider["alert_id"] in a["muted"] for a in merchants)
    assert provider["first_notified_ms"] is not None


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_silence_mutes_a_running_worker_until_it_expires_then_ack(
    kafka_config: Config, tmp_path: Path, webhook_server: WebhookServer
) -> None:
    cfg = notify_config(kafka_config, tmp_path, [route("oncall", webhook_server.url)])
    cfg_file = tmp_path / "paywatch.yaml"
    k = cfg.kafka
    cfg_file.write_text(
        yaml.safe_dump(
            {
                "kafka": {
                    "bootstrap_servers": k.bootstrap_servers,
                    "control_topic": k.control_topic,
                },
                "notify": {"history_path": cfg.notify.history_path},
            }
        )
    )
    during, _ = split(traffic(spread=True), T0 + OUTAGE[0] + 50_000)
    async with worker(cfg) as notes:
        r = await asyncio.to_thread(
            cli, "alerts", "silence", "--match", "provider=alipay", "--match", "severity=~crit.*",
            "--duration", "5s", "--author", "li", "--comment", "alipay maintenance",
            "--config", str(cfg_file),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        silence_id = r.stdout.strip()
        assert await wait_until(lambda: notes.silences.get(silence_id) is not None, timeout=10)
        silence = notes.silences.get(silence_id)
        assert silence is not None and silence.ends_at is not None
        ends_at = silence.ends_at

        await produce(cfg, during)
        assert notes.history is not None
        history = notes.history  # thread-safe; the dispatcher itself runs in another thread
        assert await wait_until(lambda: bool(history.list_alerts(status="firing")), timeout=15)
        # The group was evaluated under the silence: the alert is recorded as muted by it.
        silenced = f"silenced by {silence_id}"
        assert await wait_until(
            lambda: any(a["muted"] == silenced for a in history.list_alerts(status="firing")),
            timeout=10,
        )
        assert time.time() * 1000 < ends_at, "the test was too slow to see the silence work"
        assert webhook_server.posts == []

        # Still firing when the silence ends: the next group evaluation notifies.
        assert await wait_until(lambda: len(webhook_server.posts) >= 1, timeout=10)
        assert time.time() * 1000 >= ends_at
        (post,) = webhook_server.posts
        assert "alipay" in post["title"]

        alert = provider_alert(history)
        mutes = history.show_alert(alert["alert_id"])["mutes"]  # type: ignore[index]
        assert [m["reason"] for m in mutes] == [f"silenced by {silence_id}", None]

        # `paywatch alerts ack` with a prefix from the history reaches the running worker.
        r = await asyncio.to_thread(
            cli, "alerts", "ack", alert["alert_id"][:10], "--author", "wang",
            "--comment", "on it", "--config", str(cfg_file),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr

        def acked() -> bool:
            with AlertHistory(cfg.notify.history_path) as h:
                return provider_alert(h)["acked_by"] == "wang"

        assert await wait_until(acked, timeout=10)


async def test_shutdown_hands_over_and_delivers_what_is_due(
    tmp_path: Path, webhook_server: WebhookServer
) -> None:
    """The worker's background dispatcher: calls return at once; stop finishes the queue,
    sends what is due by then and lets delivery drain."""
    cfg = notify_config(Config(), tmp_path, [route("oncall", webhook_server.url, group_wait_s=0)])
    background = InOrderThread(Notifications(cfg))
    await background.notifications.start()
    rec = make_alert(PROVIDER, rule="system_error_rate", started=T0, value=0.5, aid="a1")
    background.on_alerts([rec], int(time.time() * 1000))
    assert webhook_server.posts == []
    await background.stop(drain_s=5)  # no tick in between: stop's own tick sends it
    assert [p["title"] for p in webhook_server.posts] == [
        "[CRITICAL] alipay: error rate 50.0% vs 1.0% expected"
    ]
    with AlertHistory(cfg.notify.history_path) as history:
        detail = history.show_alert("a1")
    assert detail is not None and [d["ok"] for d in detail["deliveries"]] == [True]
