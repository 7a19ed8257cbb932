"""The simulator's host metrics and host incidents (CPU plateau, memory leak, network errors)."""

from __future__ import annotations

import numpy as np
import pytest

from stream.sim.simulate import SimConfig, labels, parse_incident, simulate

HOSTS = SimConfig(duration_s=60, rate=1, providers={"wechatpay": 1.0}).hosts()


def _config(*specs: str) -> SimConfig:
    incidents = [parse_incident(s) for s in specs]
    return SimConfig(seed=4, duration_s=900, rate=1.0, providers={"wechatpay": 1.0},
                     incidents=incidents)  # fmt: skip


def _series(cfg: SimConfig, name: str, host: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [(e["event_ts"], e["value"]) for e in simulate(cfg)
            if e["event_type"] == "metric" and e["name"] == name and e["host"] == host]  # fmt: skip
    t, v = np.array(rows).T
    return (t - cfg.start_ms) / 1000.0, v


def test_each_host_incident_shows_in_its_metric_on_its_pod_only() -> None:
    sick, other = HOSTS[0], HOSTS[1]
    cfg = _config(
        f"cpu_plateau:host={sick},start=300,duration=200",
        f"memory_leak:host={sick},start=300,duration=400,magnitude=0.3",
        f"network_errors:host={sick},start=600,duration=100",
    )
    t, cpu = _series(cfg, "worker_cpu_percent", sick)
    during = (t >= 300) & (t < 500)
    assert cpu[during].min() > 90 and cpu[~during].max() < 80
    t, mem = _series(cfg, "memory_used_percent", sick)
    before = mem[t < 300].mean()
    assert mem[(t >= 650) & (t < 700)].mean() > before + 20  # rising to +30 points at its end
    assert abs(mem[t >= 720].mean() - before) < 3  # the pod restarted: back to normal
    t, net = _series(cfg, "net_errors_per_s", sick)
    assert net[(t >= 600) & (t < 700)].mean() > 4 and net[t < 600].mean() < 0.5
    _, other_cpu = _series(cfg, "worker_cpu_percent", other)
    assert other_cpu.max() < 80


def test_host_incidents_are_labelled_with_their_host_and_metric() -> None:
    cfg = _config(f"memory_leak:host={HOSTS[2]},start=100,duration=300")
    (label,) = labels(cfg)
    assert label["series"] == {"host": HOSTS[2]} and label["signal"] == "metric"
    assert label["truth"]["metric"] == "memory_used_percent"
    assert label["start_ms"] == cfg.start_ms + 100_000 and label["end_ms"] == cfg.start_ms + 400_000


def test_without_host_incidents_the_stream_has_no_host_metrics() -> None:
    names = {e["name"] for e in simulate(_config()) if e["event_type"] == "metric"}
    assert names == {"worker_cpu_percent", "notify_queue_depth", "cert_days_to_expiry"}


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("cpu_plateau:start=10,duration=60", "cpu_plateau needs a target host=..."),
        ("cpu_plateau:host=nope,start=10,duration=60", "host 'nope' is not a simulated pod"),
        ("memory_leak:host=x,start=10,duration=60,magnitude=2", "is a share, must be <= 1"),
    ],
)
def test_bad_host_incident_is_a_clear_error(spec: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        _config(spec)
