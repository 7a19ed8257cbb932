"""Prometheus metrics of a worker, served on ``metrics.port`` (``/metrics``).

The names are the ones docs/operations.md, the Grafana dashboard and the
Prometheus rules in docker/ use.  Each worker has its own registry, so tests can
run several workers in one process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream.config import Config, ConfigError
from stream.ingest.dlq import reason_code
from stream.ingest.events import Rejected
from stream.live.health import WorkerHealth, serve_metrics
from stream.live.payment_metrics import PaymentMetrics
from stream.pipeline import PipelineStats

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class WorkerMetrics:
    def __init__(
        self,
        port: int = 0,
        host: str = "0.0.0.0",
        config: Config | None = None,
        health: WorkerHealth | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Payment health (paywatch_payment_*), fed once per closed window by the worker.
        config = config or Config()
        self.payments = PaymentMetrics(config, r) if config.metrics.payments else None
        self.events = Counter("paywatch_events", "Valid events decoded", ["event_type"], registry=r)
        self.dlq = Counter("paywatch_dlq", "Records written to the DLQ", ["reason"], registry=r)
        self.late = Counter("paywatch_late_events", "Events behind the watermark", registry=r)
        self.windows = Counter("paywatch_windows_closed", "Windows closed", registry=r)
        self.alert_records = Counter(
            "paywatch_alert_records", "Alert records published", ["status"], registry=r
        )
        self.firing = Gauge("paywatch_alerts_firing", "Alerts firing now", ["severity"], registry=r)
        self.series = Gauge("paywatch_series_active", "Series held in memory", registry=r)
        self.lag = Gauge(
            "paywatch_consumer_lag", "Records not yet processed", ["partition"], registry=r
        )
        self.latency = Histogram(
            "paywatch_alert_latency_seconds",
            "Wall time from processing the batch that closed a window to its alert records "
            "being acknowledged by the broker",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._seen = PipelineStats()
        self.server: Any = None
        if port:
            try:
                # /metrics, /healthz and /readyz (stream.live.health) from one server.
                self.server, _ = serve_metrics(port, host, r, health)
            except OSError as exc:
                raise ConfigError(
                    f"metrics.port: cannot serve metrics on {host}:{port} ({exc.strerror}); "
                    "pick another port, or 0 to turn metrics off"
                ) from None

    def observe(
        self,
        stats: PipelineStats,
        rejected: Iterable[Rejected],
        alerts: Iterable[Mapping[str, Any]],
        latency_s: float | None,
    ) -> None:
        """Counters from one loop iteration (deltas of the pipeline's running totals)."""
        seen = self._seen
        for kind in ("calls", "notifications", "metrics"):
            delta = getattr(stats, kind) - getattr(seen, kind)
            if delta:
                event_type = {"calls": "provider_call", "notifications": "payment_notification",
                              "metrics": "metric"}[kind]  # fmt: skip
                self.events.labels(event_type).inc(delta)
                setattr(seen, kind, getattr(stats, kind))
        if stats.late > seen.late:
            self.late.inc(stats.late - seen.late)
            seen.late = stats.late
        if stats.windows_closed > seen.windows_closed:
            self.windows.inc(stats.windows_closed - seen.windows_closed)
            seen.windows_closed = stats.windows_closed
        for rej in rejected:
            self.dlq.labels(reason_code(rej)).inc()
        n_alerts = 0
        for rec in alerts:
            self.alert_records.labels(rec["status"]).inc()
            n_alerts += 1
        if n_alerts and latency_s is not None:
            self.latency.observe(latency_s)

    def state(self, firing: Iterable[Mapping[str, Any]], series: int) -> None:
        """Gauges; cheap enough for every loop iteration but need not be."""
        counts = {"critical": 0, "warning": 0, "info": 0}
        for ep in firing:
            counts[str(ep.get("severity", "warning"))] = counts.get(ep.get("severity", ""), 0) + 1
        for sev, n in counts.items():
            self.firing.labels(sev).set(n)
        self.series.set(series)

    def consumer_lag(
        self, highwater: Mapping[TopicPartition, int | None], done: Mapping[TopicPartition, int]
    ) -> None:
        for tp, hw in highwater.items():
            if hw is not None and tp in done:
                self.lag.labels(str(tp.partition)).set(max(0, hw - done[tp]))

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
