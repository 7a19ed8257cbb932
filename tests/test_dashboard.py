"""The provisioned Grafana dashboard against what paywatch really exports.

Every query must name metrics paywatch's collectors register, and every panel must
show data when evaluated (tests/promql.py) over ``/metrics`` scrapes recorded for
real over HTTP from a worker that watched a simulated Alipay outage.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.clock import ManualClock
from stream.config import config_from_dict
from stream.ingest.memory import MemorySource
from stream.live.memory import MemoryPublisher
from stream.live.payment_metrics import FAMILIES, PREFIX
from stream.live.prometheus import WorkerMetrics
from stream.live.worker import BatchTiming, run_worker
from stream.pipeline import StepResult
from stream.sim.simulate import Incident, SimConfig, simulate
from tests.promql import Scrape, evaluate, metric_names
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "paywatch.json"
OUTAGE_S = (250.0, 330.0)  # alipay, 80 % of calls failing, simulated seconds from the start
VARIABLES = {"provider": ".*"}  # the dashboard's "All"


def _dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _expr(expr: str, provider: str = ".*") -> str:
    """Template variables substituted as Grafana does; an unknown one fails the test."""
    for name in re.findall(r"\$(\w+)", expr):
        assert name in VARIABLES, f"query uses ${name}, which the dashboard does not define"
    return expr.replace("$provider", provider)


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _all_exprs() -> list[str]:
    d = _dashboard()
    exprs = [t["expr"] for p in _panels() for t in p["targets"]]
    exprs += [a["expr"] for a in d["annotations"]["list"]]
    for var in d["templating"]["list"]:
        m = re.fullmatch(r"label_values\((.*), *(\w+)\)", var["query"]["query"])
        assert m, f"variable {var['name']}: only label_values(selector, label) is evaluated"
        exprs.append(m.group(1))
    return exprs


def _exported_names() -> set[str]:
    """Sample names paywatch's collectors register (counters as _total, histograms by part)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    }
    names = set()
    metrics = WorkerMetrics(port=0)
    for family in metrics.registry.collect():
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def test_every_dashboard_query_names_a_metric_paywatch_exports() -> None:
    exported = _exported_names()
    used = set()
    for expr in _all_exprs():
        names = metric_names(_expr(expr))
        assert names, f"{expr!r} selects no metric"
        used |= names
    assert not used - exported, f"the dashboard queries metrics nobody exports: {used - exported}"
    # The payment-health row uses the payment families, and the docs list every one.
    assert {n for n in used if n.startswith(PREFIX)} >= {
        PREFIX + "success_ratio",
        PREFIX + "latency_seconds_bucket",
        PREFIX + "expected",
        PREFIX + "band_lower",
        PREFIX + "threshold",
        PREFIX + "callbacks",
        PREFIX + "alert_firing",
    }
    ops = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    for name in FAMILIES:
        assert f"`{PREFIX}{name}`" in ops, f"{PREFIX}{name} is not in docs/operations.md"


def test_the_dashboard_has_a_payment_row_per_provider_and_paywatch_health_below() -> None:
    d = _dashboard()
    rows = [p for p in d["panels"] if p["type"] == "row"]
    assert [r["title"].split(" ")[0] for r in rows] == ["Payment", "paywatch"]
    payment = [p for p in _panels() if p["gridPos"]["y"] < rows[1]["gridPos"]["y"]]
    own = [p for p in _panels() if p["gridPos"]["y"] > rows[1]["gridPos"]["y"]]
    titles = " | ".join(p["title"].lower() for p in payment)
    for topic in ("success rate", "p95", "volume", "callbacks", "alerts firing"):
        assert topic in titles
    assert {"Events/s", "DLQ/s", "Consumer lag"} <= {p["title"] for p in own}
    for p in payment:  # every payment query follows the provider variable (or is global)
        for t in p["targets"]:
            assert 'provider=~"$provider"' in t["expr"] or "threshold" in t["expr"], t["expr"]
    (var,) = d["templating"]["list"]
    assert var["name"] == "provider" and var["includeAll"] and var["allValue"] == ".*"


# --------------------------------------------------------------------------- rendering


def _records() -> tuple[list[bytes], int]:
    sim = SimConfig(
        duration_s=420.0,
        rate=40.0,
        daily=False,
        merchants=20,
        incidents=[
            Incident(
                "provider_outage",
                OUTAGE_S[0],
                OUTAGE_S[1] - OUTAGE_S[0],
                provider="alipay",
                magnitude=0.8,
            )
        ],
    )
    records = [orjson.dumps(e) for e in simulate(sim)]
    records[500:500] = [b"{not json", b'{"schema_version":1}']  # two for the DLQ panel
    return records, sim.start_ms


async def _record_scrapes() -> tuple[list[Scrape], float]:
    port = free_port()
    cfg = config_from_dict(
        {
            "metrics": {"port": port, "host": "127.0.0.1"},
            "kafka": {"decode_workers": 0},
            "detectors": {
                "error_rate": {"min_windows": 5},
                "latency": {"min_windows": 5},
                "volume": {"min_windows": 5},
            },
        }
    )
    records, start_ms = _records()
    source = MemorySource(records, topic=cfg.kafka.events_topic, max_batch=400)
    clock = ManualClock(start_ms + 86_400_000)
    scrapes: list[Scrape] = []

    def scrape(result: StepResult, timing: BatchTiming) -> None:
        clock.advance(1.0)  # time passes between batches: the gauges refresh
        if not result.closed:
            return
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        t = Scrape.parse(0.0, text)
        (end,) = t.samples[PREFIX + "window_end_seconds"].values()
        t.t = end
        scrapes.append(t)

    stop = asyncio.Event()
    task = asyncio.create_task(
        run_worker(
            cfg,
            stop,
            notify=False,
            source=source,
            publisher=MemoryPublisher(cfg.kafka),
            clock=clock,
            observe=scrape,
        )
    )
    async with asyncio.timeout(120):
        await source.all_committed()
    stop.set()
    await asyncio.wait_for(task, 30)
    return scrapes, start_ms / 1000.0


@pytest.fixture(scope="module")
def recorded() -> tuple[list[Scrape], float]:
    return asyncio.run(_record_scrapes())


def _series(expr: str, scrapes: list[Scrape], legend: str = "") -> dict[str, list[float]]:
    """A panel target rendered: per series (its labels as text), one value per scrape."""
    out: dict[str, list[float]] = {}
    for i in range(len(scrapes)):
        value = evaluate(_expr(expr), scrapes, i)
        assert isinstance(value, dict), f"{expr!r} is a scalar"
        for labels, v in value.items():
            key = ",".join(f"{k}={x}" for k, x in labels)
            out.setdefault(key, [float("nan")] * len(scrapes))[i] = v
    return out


def test_every_panel_shows_data_from_a_real_scrape(
    recorded: tuple[list[Scrape], float],
) -> None:
    scrapes, _ = recorded
    assert len(scrapes) >= 30
    for panel in _panels():
        got = [_series(t["expr"], scrapes) for t in panel["targets"]]
        assert any(got), f"panel {panel['title']!r} has no data"
        if panel["type"] == "stat":  # a stat shows the newest value
            assert any(s and any(v[-1] == v[-1] for v in s.values()) for s in got), panel["title"]


def _target(title: str, legend_part: str) -> str:
    (panel,) = [p for p in _panels() if p["title"].startswith(title)]
    (expr,) = [t["expr"] for t in panel["targets"] if legend_part in t["legendFormat"]]
    return str(expr)


def _alipay(expr: str, scrapes: list[Scrape]) -> list[float]:
    (values,) = [v for k, v in _series(expr, scrapes).items() if "provider=alipay" in k]
    return values


def test_the_success_rate_panel_shows_the_outage_below_the_band_and_thresholds(
    recorded: tuple[list[Scrape], float],
) -> None:
    scrapes, start_s = recorded
    t = [s.t - start_s for s in scrapes]  # window ends, seconds into the simulation
    during = [i for i, x in enumerate(t) if OUTAGE_S[0] + 10 < x <= OUTAGE_S[1]]
    before = [i for i, x in enumerate(t) if 60 <= x <= OUTAGE_S[0]]
    assert len(during) >= 5 and len(before) >= 10
    success = _alipay(_target("Success rate", "success"), scrapes)
    clean = _alipay(_target("Success rate", "without system errors"), scrapes)
    band_low = _alipay(_target("Success rate", "band low"), scrapes)
    warning = evaluate(_expr(_target("Success rate", "threshold")), scrapes, len(scrapes) - 1)
    assert isinstance(warning, dict)
    (floor,) = [v for k, v in warning.items() if ("severity", "warning") in k]
    assert floor == pytest.approx(0.95)
    assert min(success[i] for i in before) > 0.9
    assert max(success[i] for i in during) < 0.5  # the drop, in every outage window
    for i in during:
        assert clean[i] < band_low[i] and clean[i] < floor
    assert sum(clean[i] >= band_low[i] for i in before) >= 0.9 * len(before)


def test_latency_volume_and_annotations_render(recorded: tuple[list[Scrape], float]) -> None:
    scrapes, start_s = recorded
    t = [s.t - start_s for s in scrapes]
    p95 = _alipay(_target("Latency", "}} p95"), scrapes)
    p50 = _alipay(_target("Latency", "}} p50"), scrapes)
    assert all(0 < a <= b < 30 for a, b in zip(p50, p95, strict=True) if a == a)
    calls = _alipay(_target("Volume", "calls"), scrapes)
    expected = _alipay(_target("Volume", "expected"), scrapes)
    ready = [i for i, e in enumerate(expected) if e == e and t[i] < OUTAGE_S[0]]
    assert ready and all(abs(calls[i] - expected[i]) < 0.5 * expected[i] for i in ready[-5:])
    (annotation,) = _dashboard()["annotations"]["list"]
    firing_at = [
        t[i] for i in range(len(scrapes)) if _alipay_firing(annotation["expr"], scrapes, i)
    ]
    assert firing_at and OUTAGE_S[0] < firing_at[0] <= OUTAGE_S[0] + 30
    assert all(x > OUTAGE_S[0] for x in firing_at)


def _alipay_firing(expr: str, scrapes: list[Scrape], i: int) -> bool:
    value = evaluate(_expr(expr), scrapes, i)
    assert isinstance(value, dict)
    return any(("provider", "alipay") in k and ("rule", "system_error_rate") in k for k in value)
