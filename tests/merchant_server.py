"""A real local HTTP service playing a merchant's order-query endpoint for paywatch actions.

It checks the ``X-Paywatch-Signature`` header (HMAC-SHA256, docs/actions.md) against
a clock the test controls, counts every request, answers from a script of statuses
(then 200), can hang until released, and hands the orders of each accepted request
to ``on_orders`` — where a test makes the "provider" deliver their callbacks
(:func:`produce_callbacks` sends them to Kafka, as a real merchant's service would).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from stream.alerting.actions.contract import SIGNATURE_HEADER, verify_signature
from stream.clock import Clock
from stream.produce import EventProducer
from tests.servers import HOST, _HttpServer


class MerchantQueryServer(_HttpServer):
    def __init__(self, secret: bytes, clock: Clock) -> None:
        super().__init__()
        self.secret = secret
        self.clock = clock
        self.requests: list[dict[str, Any]] = []  # every request that reached the handler
        self.bad_signatures = 0
        self.answered = 0
        self.script: list[int] = []  # statuses to answer first, in order; then 200
        self.hold: threading.Event | None = None  # set: hang until released
        self.on_orders: Callable[[list[dict[str, str]]], None] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/paywatch/requery"

    def answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        with self.lock:
            body = json.loads(raw)
            self.requests.append({"headers": headers, "body": body})
            signed = verify_signature(
                self.secret, raw, headers.get(SIGNATURE_HEADER, ""), self.clock.now_ms() // 1000
            )
            if not signed:
                self.bad_signatures += 1
            status = self.script.pop(0) if self.script else 200
        if self.hold is not None:
            self.hold.wait(30)
        with self.lock:
            self.answered += 1
        if not signed:
            return 401, {"error": "bad signature"}
        if status == 200 and self.on_orders is not None:
            self.on_orders(body["orders"])
        return status, {"queried": len(body["orders"])}


def produce_callbacks(
    bootstrap: str, topic: str, callback: Callable[[Mapping[str, str]], dict[str, Any]]
) -> Callable[[list[dict[str, str]]], None]:
    """An ``on_orders`` hook: the queried orders' callbacks (``callback(order)`` each) go to
    the events topic, keyed ``provider|merchant_id``, acknowledged before the endpoint
    answers.  ``validate=False``: the producer's stream-clock bounds use the real wall
    clock, while the tests' event time is a fixed day (the worker's clock is the test's)."""

    async def send(orders: list[dict[str, str]]) -> None:
        async with EventProducer(bootstrap, topic, validate=False) as producer:
            await producer.send_many(callback(o) for o in orders)

    return lambda orders: asyncio.run(send(orders))  # runs in the server's request thread
