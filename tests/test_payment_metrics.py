"""Payment-health metrics: which series are exported, the cap, idle series, classic buckets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stream.config import ConfigError, config_from_dict
from stream.ingest.events import Source
from stream.live.payment_metrics import PREFIX, PaymentMetrics
from stream.pipeline import Pipeline
from tests.promql import Scrape, evaluate
from tests.traffic import T0


def _call(i: int, ts: int, provider: str, merchant: str, latency: float) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_type": "provider_call",
        "event_id": f"ev-{provider}-{i}",
        "event_ts": ts,
        "service": "checkout",
        "provider": provider,
        "merchant_id": merchant,
        "operation": "create_payment",
        "outcome": "success",
        "latency_ms": latency,
    }


def _run(cfg_extra: dict[str, Any], events: list[dict[str, Any]]) -> tuple[Scrape, Pipeline]:
    cfg = config_from_dict(cfg_extra)
    pipeline = Pipeline(cfg)
    registry = CollectorRegistry()
    metrics = PaymentMetrics(cfg, registry)
    values = [orjson.dumps(e) for e in events]
    for at in range(0, len(values), 200):
        chunk = values[at : at + 200]
        result = pipeline.process(chunk, [Source("t", 0, at + j) for j in range(len(chunk))])
        if result.judged:
            metrics.update(
                result.judged[-1], pipeline.state.rules, pipeline.state.lifecycle.firing()
            )
    return Scrape.parse(0.0, generate_latest(registry).decode()), pipeline


def _traffic(seconds: int, providers: tuple[str, ...], merchants: int = 6) -> list[dict[str, Any]]:
    return [
        _call(i, T0 + i * 50, providers[i % len(providers)], f"m{i % merchants}", 50.0 + i % 200)
        for i in range(seconds * 20)
    ]


def _series(scrape: Scrape, name: str) -> list[dict[str, str]]:
    return [dict(k) for k in scrape.samples.get(PREFIX + name, {})]


def test_roll_up_levels_only_by_default_and_no_merchant_label() -> None:
    scrape, _ = _run({}, _traffic(60, ("alipay", "paypal")))
    levels = {s["level"] for s in _series(scrape, "calls")}
    assert levels == {"provider", "provider_operation"}
    assert not any(
        "merchant_id" in s for name in scrape.samples for s in map(dict, scrape.samples[name])
    )
    (n,) = scrape.samples[PREFIX + "series"].values()
    assert n == 4  # 2 providers + 2 provider·operation series


def test_the_cap_keeps_coarse_levels_first_and_counts_the_rest() -> None:
    cfg = {"metrics": {"merchant_series": True, "max_series": 6}}
    scrape, _ = _run(cfg, _traffic(60, ("alipay", "paypal"), merchants=6))
    exported = _series(scrape, "calls")
    assert len(exported) == 6
    # 4 roll-up series, then 2 of the 12 merchant series (alipay has m0, m2, m4, paypal
    # m1, m3, m5; each per provider and per provider and operation): 10 are left out,
    # and counted.
    assert sum(s["level"] in ("provider", "provider_operation") for s in exported) == 4
    (dropped,) = scrape.samples[PREFIX + "series_dropped"].values()
    assert dropped == 10


def test_an_idle_series_leaves_the_exposition() -> None:
    both = _traffic(60, ("alipay", "paypal"))
    # then 6 minutes (36 windows) of paypal only: alipay had no event for 30 windows
    later = [_call(10_000 + i, T0 + 60_000 + i * 50, "paypal", "m1", 80.0) for i in range(360 * 20)]
    scrape, pipeline = _run({}, both + later)
    providers = {s["provider"] for s in _series(scrape, "calls")}
    assert providers == {"paypal"}
    for name in ("alert_firing", "latency_seconds_bucket", "expected"):
        assert all(s["provider"] == "paypal" for s in _series(scrape, name)), name
    # ... while the window state still holds alipay (not evicted yet): idleness alone hides it
    assert any(k and k[1][0] == "alipay" for k in pipeline.state.windows.registry.keys)


def test_classic_buckets_hold_every_call_and_give_the_windows_quantiles() -> None:
    scrape, _ = _run({}, _traffic(60, ("alipay",)))
    sel = '{level="provider",provider="alipay"}'
    (calls,) = evaluate(f"paywatch_payment_calls{sel}", [scrape], 0).values()  # type: ignore[union-attr]
    (inf,) = evaluate(
        'paywatch_payment_latency_seconds_bucket{level="provider",provider="alipay",le="+Inf"}',
        [scrape],
        0,
    ).values()  # type: ignore[union-attr]
    assert inf == calls == 200  # 10 s windows of 20 calls/s
    (p50,) = evaluate(
        f"histogram_quantile(0.5, paywatch_payment_latency_seconds_bucket{sel})", [scrape], 0
    ).values()  # type: ignore[union-attr]
    # latencies 50..249 ms in the window: the median (~150 ms) lies in the 0.1-0.2 s bucket
    assert 0.1 < p50 <= 0.2


def test_max_series_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"metrics\.max_series"):
        config_from_dict({"metrics": {"max_series": 0}})
