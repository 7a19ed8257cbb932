"""Nothing on the way in or out stops a worker: absurd records go to the DLQ, a failing
sink or notifier is logged and counted, a record the broker refuses is sent trimmed, and
/healthz and /readyz say how the worker is, over real HTTP."""

from __future__ import annotations

import asyncio
import gc
import os
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import MessageSizeTooLargeError
from prometheus_client import CollectorRegistry

from stream.alerting.record import AlertRecord
from stream.clock import ManualClock
from stream.config import Config, config_from_dict
from stream.ingest.events import Rejected, Source
from stream.ingest.kafka_client import ensure_topics
from stream.ingest.memory import MemorySource
from stream.live.health import WorkerHealth, serve_metrics
from stream.live.memory import MemoryPublisher
from stream.live.publisher import ALERT_STRING_MAX, KafkaPublisher, bounded_alert
from stream.live.worker import run_worker
from stream.offline.kafka_replay import KafkaSpec
from stream.offline.kafka_replay import read_topic as replay_topic
from stream.sim.broker import free_port
from tests.traffic import T0, traffic

WALL = T0 + 3_600_000


def config() -> Config:
    return config_from_dict({"metrics": {"port": 0}, "kafka": {"decode_workers": 0}})


def get(url: str) -> tuple[int, dict[str, Any] | str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        body, status = err.read(), err.code
    try:
        return status, orjson.loads(body)
    except orjson.JSONDecodeError:
        return status, body.decode()


class OffsetsPublisher(MemoryPublisher):
    """Keeps the DLQ's source offsets and the alerts, not every DLQ message: what a test of
    the worker's memory may hold without measuring itself."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.dlq_offsets: list[int] = []
        self.dlq_reasons: set[str] = set()

    async def publish(self, alerts: Any, rejected: Any) -> None:
        await super().publish(alerts, ())
        self.dlq_offsets += [r.source.offset for r in rejected]
        self.dlq_reasons.update(r.reason[:24] for r in rejected)


async def run_memory_worker(
    records: list[bytes], sinks: list[Any] | None = None, *, lean: bool = False, **kw: Any
) -> tuple[MemorySource, MemoryPublisher, Any]:
    cfg = config()
    source = MemorySource(records, topic=cfg.kafka.events_topic, max_batch=500)
    publisher = OffsetsPublisher(cfg.kafka) if lean else MemoryPublisher(cfg.kafka)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_worker(
            cfg,
            stop,
            sinks,
            notify=False,
            source=source,
            publisher=publisher,
            clock=ManualClock(WALL),
            **kw,
        )
    )
    async with asyncio.timeout(120):
        await source.all_committed()
    stop.set()
    stats = await asyncio.wait_for(task, 30)
    return source, publisher, stats


# --- bad input -----------------------------------------------------------------------------


async def test_a_600kb_merchant_id_goes_to_the_dlq_and_the_worker_goes_on() -> None:
    events = traffic()
    poison = {**events[2450], "merchant_id": "m" * 600_000, "outcome": "failure"}
    records = [orjson.dumps(e) for e in events]
    records.insert(2451, orjson.dumps(poison))  # mid-outage, as in the issue
    _, publisher, stats = await run_memory_worker(records)
    assert [d["reason"] for d in publisher.dlq] == [
        "merchant_id is 600,000 characters long; the limit is 256"
    ]
    assert publisher.dlq[0]["source"]["offset"] == 2451
    # The records after it were judged: the outage fired and every record is committed.
    assert any(a["status"] == "firing" and a["series"] == {"provider": "alipay"}
               for a in publisher.alerts)  # fmt: skip
    assert stats.records == len(records) and stats.rejected == 1
    assert max(len(m.value) for m in publisher.messages) < 16_384


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_acceptance_6_scaled_malformed_huge_and_many_new_merchants() -> None:
    """Acceptance 6 at a tenth of its size so it runs in seconds: 10 000 malformed records,
    100 records with a 1 MB field, 10 000 new merchant ids (valid calls).  The worker stays
    up, every bad record is in the DLQ, and resident memory grows by less than 150 MiB
    (docs/reliability.md has the full-size run: 621 MiB -> see there)."""
    n_bad, n_huge, n_merchants = 10_000, 100, 10_000
    base = traffic(60)
    cut = b'{"schema_version":1,"event_type":"provider_call"'  # JSON cut short
    huge = orjson.dumps({**base[0], "transport_error": "x" * 1_000_000})
    mixed: list[bytes] = []
    bad_offsets = []
    for i in range(n_bad):
        mixed += [cut + str(i).encode()]
        bad_offsets.append(len(base) + len(mixed) - 1)
        mixed += [orjson.dumps({**base[i % len(base)], "merchant_id": f"new-{i}"})]
        if i % (n_bad // n_huge) == 0:
            mixed.append(huge)  # one object: parsed every time, held once
            bad_offsets.append(len(base) + len(mixed) - 1)
    records = [orjson.dumps(e) for e in base] + mixed
    gc.collect()
    rss_before = _rss_bytes()
    source, publisher, stats = await run_memory_worker(records, lean=True)
    gc.collect()
    growth = _rss_bytes() - rss_before
    assert isinstance(publisher, OffsetsPublisher)
    assert sorted(publisher.dlq_offsets) == bad_offsets  # every bad record, once
    assert stats.rejected == n_bad + n_huge and stats.calls == len(base) + n_merchants
    assert publisher.dlq_reasons == {"record is not valid JSON", "transport_error is 1,000"}
    assert growth < 150 * 2**20, f"RSS grew {growth / 2**20:.0f} MiB"
    assert source.lag() == 0


# --- outputs that fail ---------------------------------------------------------------------


async def test_a_sink_that_raises_is_counted_and_consumption_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def broken_sink(records: list[AlertRecord]) -> None:
        calls.append(len(records))
        raise KeyError("parent")

    records = [orjson.dumps(e) for e in traffic()]
    with caplog.at_level("ERROR", logger="paywatch.health"):
        source, publisher, stats = await run_memory_worker(records, [broken_sink])
    assert calls, "the sink was given the alerts"
    logged = [r.getMessage() for r in caplog.records if r.name == "paywatch.health"]
    assert logged == ["sink error (the worker goes on): KeyError: 'parent'"] * len(calls)
    assert stats.records == len(records) and source.lag() == 0
    assert sum(calls) == len(publisher.alerts)


def test_the_notification_thread_counts_what_it_survives() -> None:
    from stream.alerting.notifications import InOrderThread, Notifications

    cfg = config()
    cfg.notify.history_path = "off"
    notes = Notifications(cfg)
    errors: list[str] = []
    notes.on_error = lambda output, exc: errors.append(output)
    notes.dispatcher.on_alert = _boom  # type: ignore[method-assign,assignment]
    rec = AlertRecord("a", "f", "firing", "critical", "r", "error_rate", {"provider": "p"}, 0)
    notes.on_alerts([rec], 0)
    assert errors == ["notifications"]
    thread = InOrderThread(notes)
    thread.on_error = lambda output, exc: errors.append(output + ":thread")
    thread._guard(_boom)
    assert errors == ["notifications", "notifications:thread"]


def _boom(*_: Any) -> None:
    raise RuntimeError("boom")


def test_alert_records_are_bounded_on_the_wire() -> None:
    rec = AlertRecord(
        "a1", "f1", "firing", "critical", "r", "metric", {"series": "s" * 700_000}, 0,
        summary="y" * 900_000,
        hints=[{"dimension": "merchant_id", "value": "v" * 50_000, "share": 0.5}] * 40,
    ).to_dict()  # fmt: skip
    out = bounded_alert(rec)
    assert len(orjson.dumps(out)) < 16_384
    assert out["series"]["series"].endswith("…[+698997 characters]")
    assert len(out["series"]["series"]) == ALERT_STRING_MAX
    assert out["summary"].startswith("yyy") and len(out["hints"]) == 10
    assert (out["alert_id"], out["fingerprint"], out["status"]) == ("a1", "f1", "firing")
    small = AlertRecord("a", "f", "firing", "info", "r", "s", {"provider": "p"}, 0).to_dict()
    assert bounded_alert(small) is small


async def test_a_record_the_broker_refuses_is_counted_and_sent_trimmed(
    kafka_config: Config,
) -> None:
    k = kafka_config.kafka
    await ensure_topics(k.bootstrap_servers, [k.alerts_topic, k.dlq_topic])
    errors: list[tuple[str, type[BaseException]]] = []
    # A producer limit below the bounded record's size stands in for a broker's.
    publisher = KafkaPublisher(
        k, on_error=lambda out, exc: errors.append((out, type(exc))), max_request_size=4_000
    )
    big = AlertRecord(
        "a-big", "f-big", "firing", "critical", "r", "error_rate", {"provider": "p" * 900},
        0, summary="z" * 1_000, hints=[{"dimension": "merchant_id", "value": "v" * 1000,
                                         "share": 0.1}] * 10,
    ).to_dict()  # fmt: skip
    small = AlertRecord("a-small", "f-small", "firing", "warning", "r", "s", {"provider": "q"}, 0)
    rej = Rejected("missing required field 'service'", "service", b"{}", Source("ev", 0, 5))
    await publisher.start()
    try:
        await asyncio.wait_for(publisher.publish([big, small.to_dict()], [rej]), 30)
    finally:
        await publisher.stop()
    assert errors == [("alerts", MessageSizeTooLargeError)]
    got = await replay_topic(KafkaSpec(k.bootstrap_servers, k.alerts_topic, None, None))
    alerts = {a["alert_id"]: a for a in (orjson.loads(v) for *_, v in got if v)}
    assert set(alerts) == {"a-big", "a-small"}
    assert alerts["a-big"]["series"]["provider"].endswith("characters]")
    assert len(alerts["a-big"]["summary"]) <= 128 and alerts["a-big"]["hints"] == []
    dlq = await replay_topic(KafkaSpec(k.bootstrap_servers, k.dlq_topic, None, None))
    assert [orjson.loads(v)["field"] for *_, v in dlq if v] == ["service"]


# --- /healthz and /readyz ------------------------------------------------------------------


def test_healthz_and_readyz_over_http() -> None:
    port = free_port()
    health = WorkerHealth(max_lag=100)
    server, _ = serve_metrics(port, "127.0.0.1", CollectorRegistry(), health)
    url = f"http://127.0.0.1:{port}"
    tp = TopicPartition("events", 0)
    try:
        assert get(url + "/healthz") == (200, {"alive": True})
        status, body = get(url + "/readyz")
        assert status == 503 and "no partitions assigned" in body["reasons"]  # type: ignore[index]
        health.observe_offsets({tp: None}, {})
        assert get(url + "/readyz")[1]["reasons"] == ["lag not known yet (no fetch answer)"]  # type: ignore[index]
        health.observe_offsets({tp: 500}, {tp: 300})
        assert get(url + "/readyz")[1]["reasons"] == ["lag 200 records is over 100"]  # type: ignore[index]
        health.observe_offsets({tp: 500}, {tp: 450})
        health.broker = True
        assert get(url + "/readyz") == (
            200,
            {"ready": True, "reasons": [], "partitions": [0], "lag": 50, "broker": "reachable",
             "broker_failures": 0},
        )  # fmt: skip
        health.broker, health.broker_error = False, "KafkaConnectionError"
        status, body = get(url + "/readyz")
        assert status == 503
        assert body["reasons"] == ["broker unreachable: KafkaConnectionError"]  # type: ignore[index]
        health.output_error("sink", KeyError("x"))
        metrics = get(url + "/metrics")[1]
        assert 'paywatch_output_errors_total{output="sink"} 1.0' in metrics
        assert "paywatch_ready 0.0" in metrics
    finally:
        server.shutdown()


@pytest.mark.parametrize("path", ["/nothing"])
def test_other_paths_are_the_metrics_apps(path: str) -> None:
    port = free_port()
    server, _ = serve_metrics(port, "127.0.0.1", CollectorRegistry())
    try:
        status, body = get(f"http://127.0.0.1:{port}{path}")
        assert status == 200 and "paywatch_ready" in body
    finally:
        server.shutdown()
