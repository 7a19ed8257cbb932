"""Acceptance of issue 14 end to end: a live worker (in-memory source, ManualClock) whose
callback alert calls a real local merchant endpoint with the overdue orders; the
"provider" then delivers those callbacks and paywatch reports them recovered."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.alerting.history import AlertHistory
from stream.alerting.notifications import Notifications
from stream.cli import main as paywatch_main
from stream.clock import ManualClock
from stream.config import Config, config_from_dict
from stream.ingest.memory import MemorySource
from stream.live.memory import MemoryPublisher
from stream.live.worker import run_worker
from tests.merchant_server import MerchantQueryServer
from tests.servers import wait_until

T0 = 1_767_225_600_000
WALL = T0 + 3_600_000
SECRET = "merchant-shared-secret"
LOST = range(4000, 4020)  # the 20 orders created at +400 s whose callbacks never come


def call(i: int) -> dict[str, Any]:
    return {"schema_version": 1, "event_type": "provider_call", "event_id": f"c{i}",
            "event_ts": T0 + i * 100, "service": "checkout", "provider": "alipay",
            "merchant_id": f"m{i % 2}", "operation": "create_payment", "outcome": "success",
            "latency_ms": 80.0, "out_trade_no": f"T{i}", "amount_minor": 1000}  # fmt: skip


def callback(merchant: str, trade: str, ts: int) -> dict[str, Any]:
    return {"schema_version": 1, "event_type": "payment_notification", "event_id": f"n{trade}",
            "event_ts": ts, "service": "pay-notify", "provider": "alipay",
            "merchant_id": merchant, "notify_id": f"N{trade}-{ts}", "signature_verified": True,
            "ack_status": "acked", "out_trade_no": trade, "amount_minor": 1000,
            "amount_matches": True}  # fmt: skip


def traffic(start_s: int, end_s: int) -> list[bytes]:
    """10 orders a second, each paid 2 s later (callbacks of LOST orders go missing)."""
    events = []
    for i in range(start_s * 10, end_s * 10):
        events.append(call(i))
        if i not in LOST:
            events.append(callback(f"m{i % 2}", f"T{i}", T0 + i * 100 + 2000))
    events.sort(key=lambda e: e["event_ts"])
    return [orjson.dumps(e) for e in events]


def config(tmp_path: Path, url: str, **action: Any) -> Config:
    return config_from_dict({
        "metrics": {"port": 0},
        "kafka": {"decode_workers": 0},
        "notify": {"history_path": str(tmp_path / "history.db"),
                   "routes": [{"name": "default", "group_wait_s": 0, "group_interval_s": 1}]},
        "actions": {"definitions": [{
            "name": "requery", "url": url, "secret_env": "PAYWATCH_TEST_SECRET",
            "match": {"rule": "callbacks"}, "needs_evidence": True, "backoff_s": 0.05,
            **action}]},
    })  # fmt: skip


class Live:
    def __init__(self, cfg: Config, clock: ManualClock) -> None:
        self.cfg, self.clock = cfg, clock
        self.source = MemorySource(traffic(0, 520), max_batch=500)
        self.publisher = MemoryPublisher(cfg.kafka)
        self.notifications = Notifications(cfg, clock=clock)
        self.stop = asyncio.Event()

    def alerts(self, status: str) -> list[dict[str, Any]]:
        return [a for a in self.publisher.alerts if a["rule"] == "callbacks"
                and a["status"] == status]  # fmt: skip


@asynccontextmanager
async def live(cfg: Config, clock: ManualClock) -> AsyncIterator[Live]:
    w = Live(cfg, clock)
    worker = run_worker(
        cfg, w.stop, notifications=w.notifications, source=w.source, publisher=w.publisher,
        clock=clock,
    )  # fmt: skip
    task = asyncio.create_task(worker)
    try:
        async with asyncio.timeout(60):
            yield w
    finally:
        w.stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
def merchant(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PAYWATCH_TEST_SECRET", SECRET)
    clock = ManualClock(WALL)
    server = MerchantQueryServer(SECRET.encode(), clock).start()
    yield server, clock
    if server.hold is not None:
        server.hold.set()
    server.stop()


def assert_all_recovered(
    firing: dict[str, Any], resolved: dict[str, Any], history_path: str
) -> None:
    """The 20 lost orders were reported, all came back, and the history says so: one
    action run, ok at the first attempt, and the follow-up notification's counts."""
    assert firing["evidence"]["missing_callbacks"]["reported"] == 20
    counts = {k: resolved["evidence"]["missing_callbacks"][k]
              for k in ("reported", "recovered", "still_missing")}  # fmt: skip
    assert counts == {"reported": 20, "recovered": 20, "still_missing": 0}

    with AlertHistory(history_path) as h:
        detail = h.show_alert(firing["alert_id"])
    assert detail is not None
    (run,) = detail["actions"]
    assert (run["result"], run["orders"], run["attempts"]) == ("ok", 20, 1)
    told = [n for n in detail["notifications"] if n["kind"] == "notify"]
    assert "20 of 20 orders recovered, 0 still missing" in told[-1]["body"]


async def test_twenty_lost_callbacks_are_queried_recovered_and_the_alert_resolves(
    tmp_path: Path, merchant: Any, capsys: Any
) -> None:
    server, clock = merchant
    cfg = config(tmp_path, server.url)
    async with live(cfg, clock) as w:
        loop = asyncio.get_running_loop()

        def deliver(orders: list[dict[str, str]]) -> None:  # the provider sends them now
            late = [callback(o["merchant_id"], o["out_trade_no"], T0 + 520_000) for o in orders]
            loop.call_soon_threadsafe(w.source.extend, [orjson.dumps(e) for e in late])

        server.on_orders = deliver
        assert await wait_until(lambda: server.answered == 1, timeout=30)
        await w.source.all_committed()  # the 20 callbacks are in
        w.source.extend(traffic(520, 600))
        assert await wait_until(lambda: bool(w.alerts("resolved")), timeout=30)
        clock.advance(2)  # the resolved group's next evaluation is due
        history = w.notifications.history
        assert history is not None
        rows = "SELECT * FROM notifications WHERE kind = 'notify'"
        assert await wait_until(
            lambda: any("RESOLVED" in n["title"].upper() for n in history._rows(rows)), timeout=10
        )

    (request,) = server.requests
    assert server.bad_signatures == 0
    # Grouped per provider and merchant, oldest first within each.
    by_merchant = [f"T{i}" for i in LOST if i % 2 == 0] + [f"T{i}" for i in LOST if i % 2]
    assert [o["out_trade_no"] for o in request["body"]["orders"]] == by_merchant
    (firing,) = w.alerts("firing")
    (resolved,) = w.alerts("resolved")
    assert_all_recovered(firing, resolved, cfg.notify.history_path)
    assert paywatch_main(["alerts", "show", firing["alert_id"], "--history",
                          cfg.notify.history_path]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "action requery (http, on firing) ok" in out and "20 recovered" in out


async def test_a_hanging_endpoint_never_stalls_consumption(tmp_path: Path, merchant: Any) -> None:
    server, clock = merchant
    server.hold = threading.Event()
    cfg = config(tmp_path, server.url, timeout_s=30)
    async with live(cfg, clock) as w:
        assert await wait_until(lambda: len(server.requests) == 1, timeout=30)
        # The endpoint hangs; the worker consumes and judges six more minutes of traffic,
        # to the end of the episode: the resolution waited for the orders, none came back.
        w.source.extend(traffic(520, 900))
        await w.source.all_committed()
        (resolved,) = w.alerts("resolved")
        assert resolved["evidence"]["missing_callbacks"]["still_missing"] == 20
        assert server.answered == 0  # ... all while the call was hanging
        server.hold.set()
        runner = w.notifications.actions
        assert await wait_until(lambda: any(r.result == "ok" for r in runner.runs), timeout=10)
