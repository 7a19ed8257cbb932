"""Issue 14's acceptance over the real local broker: 20 orders' callbacks go missing in
the events topic; the worker (Kafka source and publisher) calls the merchant's endpoint
with those orders, signed; the merchant's service produces their callbacks to the same
topic; the worker reads them and the alerts topic gets the resolution: 20 recovered."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.alerting.notifications import Notifications
from stream.alerting.record import AlertRecord
from stream.clock import ManualClock
from stream.config import Config, config_from_dict
from stream.ingest.kafka_client import ensure_topics
from stream.live.worker import run_worker
from stream.sim.produce import produce_events
from tests.merchant_server import MerchantQueryServer, produce_callbacks
from tests.servers import wait_until
from tests.test_actions_recovery import (
    LOST,
    SECRET,
    T0,
    WALL,
    assert_all_recovered,
    callback,
    traffic,
)
from tests.test_worker_kafka import read_topic


def config(kafka_config: Config, tmp_path: Path, url: str) -> Config:
    return config_from_dict({
        "kafka": {**dataclasses.asdict(kafka_config.kafka), "decode_workers": 0},
        "metrics": {"port": 0},
        "notify": {"history_path": str(tmp_path / "history.db"),
                   "routes": [{"name": "default", "group_wait_s": 0, "group_interval_s": 1}]},
        "actions": {"definitions": [{
            "name": "requery", "url": url, "secret_env": "PAYWATCH_TEST_SECRET",
            "match": {"rule": "callbacks"}, "needs_evidence": True}]},
    })  # fmt: skip


def late_callback(order: Mapping[str, str]) -> dict[str, Any]:
    """What the provider sends once queried: the order's callback, received at +520 s."""
    return callback(order["merchant_id"], order["out_trade_no"], T0 + 520_000)


async def test_lost_callbacks_are_requeried_and_come_back_through_kafka(
    kafka_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYWATCH_TEST_SECRET", SECRET)
    k = kafka_config.kafka
    await ensure_topics(k.bootstrap_servers, [k.events_topic, k.dlq_topic, k.alerts_topic])
    clock = ManualClock(WALL)
    server = MerchantQueryServer(SECRET.encode(), clock).start()
    delivered: list[int] = []
    produce = produce_callbacks(k.bootstrap_servers, k.events_topic, late_callback)

    def on_orders(orders: list[dict[str, str]]) -> None:
        produce(orders)  # acknowledged by the broker before the endpoint answers
        delivered.append(len(orders))

    server.on_orders = on_orders
    cfg = config(kafka_config, tmp_path, server.url)
    await produce_events([orjson.loads(e) for e in traffic(0, 520)], k.bootstrap_servers,
                         k.events_topic)  # fmt: skip
    seen: list[AlertRecord] = []
    notifications = Notifications(cfg, clock=clock)
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(cfg, stop, [seen.extend], notifications=notifications, clock=clock)
    )

    def resolved() -> list[AlertRecord]:
        return [a for a in seen if a.rule == "callbacks" and a.status == "resolved"]

    try:
        assert await wait_until(lambda: delivered == [20], timeout=60)
        # Event time moves on past the resolution's wait; the 20 callbacks came first.
        await produce_events([orjson.loads(e) for e in traffic(520, 600)], k.bootstrap_servers,
                             k.events_topic)  # fmt: skip
        assert await wait_until(lambda: bool(resolved()), timeout=60)
        clock.advance(2)  # the resolved group's next evaluation is due
        history = notifications.history
        assert history is not None
        rows = "SELECT * FROM notifications WHERE kind = 'notify'"
        assert await wait_until(
            lambda: any("RESOLVED" in n["title"].upper() for n in history._rows(rows)), timeout=10
        )
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
        server.stop()

    (request,) = server.requests
    assert server.bad_signatures == 0
    by_merchant = [f"T{i}" for i in LOST if i % 2 == 0] + [f"T{i}" for i in LOST if i % 2]
    assert [o["out_trade_no"] for o in request["body"]["orders"]] == by_merchant

    alerts = [a for a in await read_topic(k.bootstrap_servers, k.alerts_topic)
              if a["rule"] == "callbacks"]  # fmt: skip
    assert [a["status"] for a in alerts] == ["firing", "resolved"]
    firing, done = alerts
    assert_all_recovered(firing, done, cfg.notify.history_path)
