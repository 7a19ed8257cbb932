"""One page per incident across restarts: the notification log (stream.live.notify_feed).

In memory: a restored log neither re-pages nor forgets what it owes.  Against the real
local broker: a worker killed with SIGKILL mid-incident, a new one continues — a real
local HTTP receiver gets the firing page once and the recovery once.
"""
# ruff: noqa: F811  (pytest fixtures imported from tests.servers are re-bound as parameters)

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import orjson
import yaml

from stream.alerting.delivery import Message
from stream.alerting.history import AlertHistory
from stream.alerting.notifications import Notifications
from stream.alerting.record import AlertRecord
from stream.cli.main import main as paywatch_main
from stream.config import Config
from stream.ingest.kafka_client import ensure_topics
from stream.live.notify_feed import log_key
from stream.live.state_store import KafkaStateStore, state_key
from stream.sim.produce import produce_events
from tests.factories import make_alert
from tests.servers import WebhookServer, wait_until, webhook_server  # noqa: F401
from tests.test_notify_e2e import notify_config, route, split
from tests.test_partitions_kafka import start_worker, until, worker_config
from tests.test_worker_kafka import read_topic
from tests.traffic import OUTAGE, T0, traffic

PROVIDER = {"provider": "alipay"}


def firing() -> AlertRecord:
    return make_alert(PROVIDER, rule="system_error_rate", started=T0, value=0.5, aid="a1")


def resolved(at: int) -> AlertRecord:
    return make_alert(PROVIDER, rule="system_error_rate", started=T0, value=0.01, aid="a1",
                      status="resolved", window_end=at, resolved_at=at)  # fmt: skip


def fresh(cfg: Config) -> tuple[Notifications, list[Message]]:
    """Notifications whose messages are captured instead of sent."""
    notes = Notifications(cfg)
    sent: list[Message] = []
    notes.submit = sent.extend  # type: ignore[method-assign]
    return notes, sent


def test_a_restored_log_tells_the_recovery_once_and_never_re_pages(tmp_path: Path) -> None:
    cfg = notify_config(Config(), tmp_path, [route("oncall", "json://127.0.0.1:9/hook")])
    cfg.notify.history_path = "off"
    first, sent = fresh(cfg)
    first.on_alerts([firing()], T0)
    first.tick(T0 + 1000)
    assert [m.title for m in sent] == ["[CRITICAL] alipay: error rate 50.0% vs 1.0% expected"]
    log = orjson.loads(orjson.dumps(first.snapshot()))  # what the state topic holds

    second, again = fresh(cfg)
    second.restore(log)
    end = T0 + 60_000
    # The replay: the firing record again (nothing), then its resolution (told once).
    second.on_alerts([firing(), resolved(end)], T0 + 2000)
    second.tick(T0 + 3000)
    assert [m.title for m in again] == ["[RESOLVED] alipay system_error_rate, lasted 1m"]
    # Replayed once more after the episode ended: the firing never re-pages.
    second.on_alerts([firing(), resolved(end)], T0 + 4000)
    second.tick(T0 + 60_000)
    assert len(again) == 1


def test_a_message_owed_when_the_owner_died_is_sent_by_the_next(tmp_path: Path) -> None:
    cfg = notify_config(Config(), tmp_path, [route("oncall", "json://127.0.0.1:9/hook")])
    cfg.notify.history_path = "off"
    first, _ = fresh(cfg)
    logged: list[dict[str, Any]] = []
    first.journal = lambda messages, state: logged.append(state)  # stored, never sent
    first.on_alerts([firing()], T0)
    (page,) = first.tick(T0 + 1000)
    assert [m["id"] for m in logged[-1]["owed"]] == [page.id]

    second, sent = fresh(cfg)
    second.restore(orjson.loads(orjson.dumps(logged[-1])))
    assert sent == [page]  # sent by the new owner, and only once:
    second.on_alerts([firing()], T0 + 2000)
    second.tick(T0 + 10_000)
    assert sent == [page]


def notifying_worker_config(cfg: Config, url: str, tmp_path: Path) -> Path:
    path = worker_config(cfg, tmp_path / "worker.yaml")
    doc = yaml.safe_load(path.read_text())
    doc["notify"] = {
        "routes": [route("oncall", url)],
        "history_path": str(tmp_path / "history.db"),
        "delivery": {"max_attempts": 3, "backoff_s": 0.05, "max_backoff_s": 0.2},
    }
    doc["windows"] = {"idle_advance_s": 300.0}  # the stream pauses while the worker is down
    path.write_text(yaml.safe_dump(doc))
    return path


async def test_kill_9_mid_incident_pages_once_and_recovers_once(
    kafka_config: Config, tmp_path: Path, webhook_server: WebhookServer
) -> None:
    """Acceptance 1 at a real HTTP receiver: SIGKILL after the firing page, a new worker
    continues; the incident resolves under its alert_id and each page arrives once."""
    cfg = kafka_config
    k = cfg.kafka
    during, after = split(traffic(spread=True), T0 + OUTAGE[0] + 50_000)
    await ensure_topics(k.bootstrap_servers, [k.events_topic, k.alerts_topic, k.state_topic])
    await produce_events(during, k.bootstrap_servers, k.events_topic)
    config = notifying_worker_config(cfg, webhook_server.url, tmp_path)
    log = tmp_path / "worker.log"
    store = KafkaStateStore(k)
    await store.start()
    first = start_worker(config, log)
    second = None
    try:

        async def paged_and_logged() -> bool:
            if len(webhook_server.posts) != 1:
                return False
            found = await store.load(log_key(cfg, {0}))
            state = await store.load(state_key(k, {0}))  # the pipeline's, as far as the page
            covered = state is not None and state.offsets.get(0) == len(during)
            return covered and found is not None and not orjson.loads(found.blob)["owed"]

        await until(paged_and_logged, "the firing page and a log that has it delivered", log)
        first.send_signal(signal.SIGKILL)  # no goodbye: no final log, no commit
        assert first.wait(10) == -signal.SIGKILL

        await produce_events(after, k.bootstrap_servers, k.events_topic)
        second = start_worker(config, log)

        async def recovered() -> bool:
            return len(webhook_server.posts) >= 2

        await until(recovered, "the recovery page", log)
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()[-3000:]
    finally:
        await store.stop()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
    text = log.read_text()
    assert "restored notification log" in text and "restored checkpoint" in text
    titles = [p["title"] for p in webhook_server.posts]
    assert len(titles) == 2, titles  # nothing sent twice (SIGTERM let delivery drain)
    assert titles[0].startswith("[CRITICAL] alipay") and titles[1].startswith("[RESOLVED]")
    live = await read_topic(k.bootstrap_servers, k.alerts_topic)
    provider = [a for a in live if a["series"] == PROVIDER]
    # Nothing lost: the alert fired and resolved under one alert_id.
    assert {a["status"] for a in provider} == {"firing", "resolved"}
    assert len({a["alert_id"] for a in provider}) == 1


def test_alerts_reads_the_history_files_of_two_workers_as_one(tmp_path: Path, capsys: Any) -> None:
    """The worker that fired the alert died; the one that took over told the recovery.
    Each wrote its own file: `paywatch alerts` given both shows one alert, whole."""
    end = T0 + 60_000
    page = Message("[CRITICAL] alipay", "b", ("a1",), "g", "critical", "oncall", id="1")
    back = Message("[RESOLVED] alipay", "b", ("a1",), "g", "critical", "oncall", id="2")
    files = [tmp_path / "host-a.db", tmp_path / "host-b.db"]
    for path, record, message, at in ((files[0], firing(), page, T0 + 1000),
                                      (files[1], resolved(end), back, end + 1000)):  # fmt: skip
        with AlertHistory(path) as history:
            history.record_alert(record, at)
            history.record_notification(message, at)
    both = [arg for f in files for arg in ("--history", str(f))]
    assert paywatch_main(["alerts", "list", *both]) == 0
    _header, line = capsys.readouterr().out.splitlines()
    assert line.startswith("a1") and "RESOLVED" in line and "not notified" not in line
    assert paywatch_main(["alerts", "show", "a1", *both]) == 0
    detail = capsys.readouterr().out
    assert "record firing" in detail and "record resolved" in detail
    assert detail.count("notified (notify) via oncall") == 2
    assert paywatch_main(["alerts", "list", "--history", str(tmp_path / "nope.db")]) == 2
    assert "no alert history at" in capsys.readouterr().err
