"""Is the worker alive, is it ready, and what failed on the way out — served beside its metrics.

:class:`WorkerHealth` is a small status object the worker updates (partitions
assigned, lag from the high watermarks, broker reachable, output errors);
:class:`BrokerProbe` asks the cluster for its metadata every few seconds;
:func:`serve_metrics` serves ``/metrics`` (Prometheus), ``/healthz`` and
``/readyz`` from one small HTTP server on ``metrics.port``:

* ``/healthz`` — 200 while the process answers (liveness: restart it when this fails).
* ``/readyz`` — 200 when partitions are assigned, the records not yet processed are
  at most ``metrics.ready_max_lag`` and the broker answered the last probe; else
  503.  Both answer a small JSON object saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from stream.aio import cancel_and_wait
from stream.config import KafkaConfig
from stream.ingest.kafka_client import client_kwargs

log = logging.getLogger("paywatch.health")

OUTPUTS = ("alerts", "dlq", "broker", "sink", "notifications", "metrics")


class WorkerHealth(Collector):
    """What ``/readyz`` reports; also a Prometheus collector of ``paywatch_ready`` and
    ``paywatch_output_errors_total{output}``.  Written by the worker's loop, read by the
    HTTP thread: plain attribute swaps, each consistent on its own."""

    def __init__(self, max_lag: int = 10_000) -> None:
        self.max_lag = max_lag
        self.assigned: tuple[int, ...] = ()
        self.lag: int | None = None  # None: a high watermark is not known yet
        self.broker: bool | None = None  # None: no broker to probe (in-memory source)
        self.broker_error = ""
        self.broker_failures = 0  # metadata probes failed in a row (0 once one answers)
        self.stopping = False
        self.errors: Counter[str] = Counter()

    def observe_offsets(
        self, highwater: Mapping[TopicPartition, int | None], done: Mapping[TopicPartition, int]
    ) -> None:
        """Assigned partitions and their lag: high watermark minus the next offset processed
        (a partition with nothing processed yet counts from its high watermark on)."""
        self.assigned = tuple(sorted(tp.partition for tp in highwater))
        known = {tp: hw for tp, hw in highwater.items() if hw is not None}
        if len(known) < len(highwater):
            self.lag = None
            return
        self.lag = sum(max(0, hw - done.get(tp, hw)) for tp, hw in known.items())

    def output_error(self, output: str, exc: BaseException) -> None:
        """One error on the way out (a sink, the notifier, a record the broker refused):
        logged and counted; the worker goes on."""
        self.errors[output] += 1
        log.error("%s error (the worker goes on): %s: %s", output, type(exc).__name__, exc)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        why = []
        if self.stopping:
            why.append("stopping")
        if not self.assigned:
            why.append("no partitions assigned")
        if self.lag is None:
            why.append("lag not known yet (no fetch answer)")
        elif self.lag > self.max_lag:
            why.append(f"lag {self.lag} records is over {self.max_lag}")
        if self.broker is False:
            why.append(f"broker unreachable: {self.broker_error}")
        body = {
            "ready": not why,
            "reasons": why,
            "partitions": list(self.assigned),
            "lag": self.lag,
            "broker": {None: "not probed", True: "reachable", False: "unreachable"}[self.broker],
            "broker_failures": self.broker_failures,
        }
        return not why, body

    def collect(self) -> Iterator[Any]:
        ready = GaugeMetricFamily("paywatch_ready", "1 when /readyz answers 200")
        ready.add_metric([], 1.0 if self.readiness()[0] else 0.0)
        yield ready
        errors = CounterMetricFamily(
            "paywatch_output_errors",
            "Errors on the way out that the worker survived (logged, counted, went on)",
            labels=["output"],
        )
        for output in OUTPUTS:
            errors.add_metric([output], float(self.errors[output]))
        yield errors


#: Seconds between the worker's metadata probes of the broker.
PROBE_EVERY_S = 2.0


class BrokerProbe:
    """Asks the cluster for its metadata every ``every_s`` seconds (with the worker's
    security settings); the answer, or its absence within ``timeout_s``, sets
    ``health.broker``."""

    def __init__(
        self,
        cfg: KafkaConfig,
        health: WorkerHealth,
        every_s: float = PROBE_EVERY_S,
        timeout_s: float = 5.0,
    ) -> None:
        self.cfg = cfg
        self.health = health
        self.every_s = every_s
        self.timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="paywatch-broker-probe")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await self.probe_once()
            await asyncio.sleep(self.every_s)

    async def probe_once(self) -> None:
        # A fresh client each time: one left from before an outage may hold dead sockets.
        admin = AIOKafkaAdminClient(
            **client_kwargs(self.cfg), request_timeout_ms=int(self.timeout_s * 1000)
        )
        try:
            await asyncio.wait_for(self._ask(admin), self.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.health.broker is not False:
                log.warning("broker at %s unreachable: %s", self.cfg.bootstrap_servers, exc)
            self.health.broker, self.health.broker_error = False, type(exc).__name__
            self.health.broker_failures += 1
        else:
            if self.health.broker is False:
                log.info("broker at %s reachable again", self.cfg.bootstrap_servers)
            self.health.broker, self.health.broker_error = True, ""
            self.health.broker_failures = 0
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    @staticmethod
    async def _ask(admin: AIOKafkaAdminClient) -> None:
        await admin.start()
        await admin.describe_cluster()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def shutdown(self) -> None:
        """Stop serving and free the port."""
        super().shutdown()
        self.server_close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_metrics(
    port: int, host: str, registry: CollectorRegistry, health: WorkerHealth | None = None
) -> tuple[WSGIServer, threading.Thread]:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` in a daemon thread (the
    shape of prometheus_client's ``start_http_server``; ``shutdown()`` stops it).  Raises
    ``OSError`` when the port cannot be bound."""
    status = health or WorkerHealth()
    registry.register(status)
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok, body = (True, {"alive": True}) if path == "/healthz" else status.readiness()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json")],
            )
            return [orjson.dumps(body)]
        return metrics(environ, start_response)

    server = make_server(host, port, app, _Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="paywatch-metrics", daemon=True)
    thread.start()
    return server, thread
