"""Metric events live, with the default config: per-kind hard limits, warning anomalies,
a plateau that stays firing, and one page per sick host."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from stream.alerting.dispatch import Dispatcher
from stream.alerting.record import AlertRecord
from stream.alerting.silences import SilenceSet
from stream.config import RouteConfig, config_from_dict
from stream.ingest.events import SourceColumns
from stream.pipeline import Pipeline

T0 = 1_764_140_000_000
W = 10_000  # the default window, ms
N = 360  # windows per run: 300 normal, then the incident, then recovery


def event(t: int, name: str, value: float, host: str) -> dict[str, Any]:
    return {
        "schema_version": 1, "event_type": "metric", "event_id": f"{name}-{host}-{t}",
        "event_ts": t, "service": "pay-gateway", "host": host, "name": name,
        "value": value, "unit": "", "kind": "gauge",
        "labels": {"host": host, "service": "pay-gateway"},
    }  # fmt: skip


Sample = Callable[[int, str, np.random.Generator], dict[str, float]]


def normal(w: int, host: str, rng: np.random.Generator) -> dict[str, float]:
    return {
        "worker_cpu_percent": round(40 + rng.normal(0, 3), 1),
        "memory_used_percent": round(50 + rng.normal(0, 1), 1),
        "net_errors_per_s": float(rng.poisson(2)) / 10,
    }


def run(sample: Sample, cfg: dict[str, Any] | None = None) -> list[AlertRecord]:
    """One sample per metric, host and 10 s window through the default pipeline."""
    rng = np.random.default_rng(5)
    events = [
        event(T0 + w * W + 3000, name, value, host)
        for w in range(N)
        for host in ("h1", "h2")
        for name, value in sample(w, host, rng).items()
    ]
    values: list[bytes | None] = [orjson.dumps(e) for e in events]
    pipeline = Pipeline(config_from_dict(cfg or {}))
    out = pipeline.process(values, SourceColumns(["t"] * len(values), [0] * len(values),
                                                 range(len(values))))  # fmt: skip
    return out.alerts + pipeline.flush().alerts


def window(t_ms: int) -> int:
    return (t_ms - T0) // W


def sick_h1(w: int, host: str, rng: np.random.Generator, sick: tuple[str, ...] = ("h1",)
            ) -> dict[str, float]:  # fmt: skip
    """The ``sick`` hosts' CPU, memory and network errors all go bad for windows 300-339."""
    values = normal(w, host, rng)
    if host in sick and 300 <= w < 340:
        values = {"worker_cpu_percent": round(95 + rng.normal(0, 0.5), 1),
                  "memory_used_percent": round(93 + rng.normal(0, 0.3), 1),
                  "net_errors_per_s": 20.0}  # fmt: skip
    return values


def test_a_sick_host_with_three_bad_metrics_is_one_page() -> None:
    alerts = run(sick_h1)
    firing = [a for a in alerts if a.firing]
    assert sorted(a.series["metric"].split("{")[0] for a in firing) == [
        "memory_used_percent", "net_errors_per_s", "worker_cpu_percent",
    ]  # fmt: skip
    assert {a.labels["host"] for a in firing} == {"h1"}  # the healthy host is quiet
    assert {(a.rule, a.signal, a.severity) for a in firing} == {
        ("metric_anomaly", "metric", "warning")
    }
    # The default route groups by host: the three alerts are one page.
    d = Dispatcher([RouteConfig("default")], [], SilenceSet())
    for a in firing:
        assert d.on_alert(a, a.detected_at or a.window_end)
    due = max(a.window_end for a in firing) + 31_000
    pages = d.tick(due)
    assert len(pages) == 1 and len(pages[0].alert_ids) == 3


def test_two_sick_hosts_are_two_pages() -> None:
    alerts = run(lambda w, host, rng: sick_h1(w, host, rng, sick=("h1", "h2")))
    firing = [a for a in alerts if a.firing]
    d = Dispatcher([RouteConfig("default")], [], SilenceSet())
    for a in firing:
        assert d.on_alert(a, a.detected_at or a.window_end)
    pages = d.tick(max(a.window_end for a in firing) + 31_000)
    hosts = {a.alert_id: a.labels["host"] for a in firing}
    assert sorted([hosts[i] for i in p.alert_ids] for p in pages) == [["h1"] * 3, ["h2"] * 3]


def test_a_plateau_stays_firing_until_it_recovers() -> None:
    # Queue depth (no hard limit) stuck at 30 for 40 windows, against 12 ± 2: past the
    # onset, the change-based score alone falls to ~0.8, below the rule's 0.9.
    def plateau(w: int, host: str, rng: np.random.Generator) -> dict[str, float]:
        depth = 30 + rng.normal(0, 2) if host == "h1" and 300 <= w < 340 else 12 + rng.normal(0, 2)
        return {"notify_queue_depth": round(depth, 1)}

    alerts = [a for a in run(plateau) if a.labels.get("host") == "h1"]
    assert [a.status for a in alerts] == ["firing", "resolved"]
    fired, resolved = alerts
    assert window(fired.started_at) == 300 and fired.severity == "warning"
    # Firing through all 40 windows of the plateau; resolved only once the value is back.
    assert 340 <= window(resolved.window_end) <= 345
    assert "past its" not in fired.summary and "is unusual" in fired.summary


def test_a_modest_plateau_pages_once_it_has_lasted_and_stays_firing() -> None:
    # Queue depth swinging 12 ± 2 stuck at 20 for 50 windows: its onset is no page at 0.9,
    # but a state held that long is; it then fires until the depth is back.
    def plateau(w: int, host: str, rng: np.random.Generator) -> dict[str, float]:
        base = 12 + 2 * np.sin(2 * np.pi * w / 120)
        sick = host == "h1" and 300 <= w < 350
        depth = 20 + rng.normal(0, 1) if sick else base + rng.normal(0, 1.5)
        return {"notify_queue_depth": round(float(depth), 1)}

    alerts = [a for a in run(plateau) if a.labels.get("host") == "h1"]
    assert [a.status for a in alerts] == ["firing", "resolved"]
    fired, resolved = alerts
    assert 300 < window(fired.started_at) < 345
    assert 350 <= window(resolved.window_end) <= 355


def test_a_hard_limit_breach_pages_at_its_severity() -> None:
    def breach(w: int, host: str, rng: np.random.Generator) -> dict[str, float]:
        values = normal(w, host, rng)
        values["disk_free_percent"] = round(60 + rng.normal(0, 1), 1)
        if host == "h1" and 300 <= w < 320:
            values["worker_cpu_percent"] = 99.5  # past the built-in critical limit (98)
        if host == "h2" and 300 <= w < 320:
            values["disk_free_percent"] = 10.0  # past a configured floor's warning (15)
        return values

    limits = [{"match": "^disk_free_percent$", "warning": 15, "critical": 5}]
    alerts = run(breach, {"detectors": {"metrics": {"limits": limits}}})
    firing = {(a.labels["host"], a.series["metric"].split("{")[0]): a for a in alerts if a.firing}
    assert set(firing) == {("h1", "worker_cpu_percent"), ("h2", "disk_free_percent")}
    cpu, disk = firing["h1", "worker_cpu_percent"], firing["h2", "disk_free_percent"]
    assert cpu.severity == "critical" and "past its critical limit 98" in cpu.summary
    assert disk.severity == "warning" and "past its warning limit 15" in disk.summary
    assert window(cpu.started_at) == window(disk.started_at) == 300


def test_metric_events_can_be_turned_off_and_builtin_limits_dropped() -> None:
    off = run(sick_h1, {"detectors": {"metrics": {"enabled": False}}})
    assert off == []
    # Without the built-in limits the sick host still warns, as an anomaly.
    no_limits = run(sick_h1, {"detectors": {"metrics": {"builtin_limits": False}}})
    summaries = [a.summary for a in no_limits if a.firing]
    assert summaries and all("is unusual" in s for s in summaries)


def test_a_checkpoint_mid_incident_restores_the_metric_detectors() -> None:
    rng = np.random.default_rng(5)
    events = [
        orjson.dumps(event(T0 + w * W + 3000, name, value, host))
        for w in range(N)
        for host in ("h1", "h2")
        for name, value in sick_h1(w, host, rng).items()
    ]
    cut = len(events) * 310 // N  # ten windows into the incident

    def feed(p: Pipeline, values: list[bytes], first: int, end: bool) -> list[dict[str, Any]]:
        src = SourceColumns(
            ["t"] * len(values), [0] * len(values), range(first, first + len(values))
        )
        batch: list[bytes | None] = list(values)
        alerts = p.process(batch, src).alerts + (p.flush().alerts if end else [])
        return [a.to_dict() for a in alerts]

    first = Pipeline(config_from_dict({}))
    fired = feed(first, events[:cut], 0, end=False)
    assert [a["status"] for a in fired] == ["firing"] * 3
    second = Pipeline(config_from_dict({}))
    second.restore(first.snapshot())
    rest = feed(second, events[cut:], cut, end=True)
    assert rest == feed(first, events[cut:], cut, end=True)
    assert [(a["status"], a["alert_id"] in {f["alert_id"] for f in fired}) for a in rest] == [
        ("resolved", True)
    ] * 3
