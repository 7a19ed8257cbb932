"""Traffic from a generator paywatch's settings were never chosen on
(:mod:`benchmarks.second_generator`: gamma-shaped latency with retries, a quarter of
created orders abandoned, Zipf merchants at a call a minute to a few a second), through
the default configuration and the dispatcher's inhibition, as ``make eval`` counts pages.
Each test failed before the change its docstring names."""

from __future__ import annotations

from typing import Any

from benchmarks import eval_run
from benchmarks.second_eval import replay
from benchmarks.second_generator import events
from models.incidents import episodes
from stream.alerting.silences import SilenceSet
from stream.config import load_config


def paged(seed: int, hours: float, only: list[str]) -> tuple[list[dict[str, Any]], list[Any]]:
    """(the episodes that paged, the run's labels)."""
    cfg = load_config(None)
    evs, labels = events(seed, hours, only)
    alerts = replay(cfg, evs)
    return list(episodes(eval_run.pages(alerts, SilenceSet(), cfg)).values()), labels


def test_normal_traffic_with_abandoned_orders_and_a_promotion_pages_nothing() -> None:
    """Missing callbacks were counted against the window's created orders (a promotion's
    end made 63 % of them 'missing') and learned from a 1 % prior over 300 s (a provider
    with 25 % abandoned orders paged in its first minutes)."""
    pages, _ = paged(206, 1.5, ["promotion"])
    assert pages == []


def test_a_provider_outage_pages_once() -> None:
    """Merchants muted under the provider were unmuted, one page each, when it resolved
    first (40 pages for this outage); spread errors named the biggest merchant a carrier."""
    pages, labels = paged(201, 1.5, ["provider_outage"])
    (outage,) = labels
    assert [(p["rule"], p["series"]) for p in pages] == [
        ("system_error_rate", {"provider": outage["series"]["provider"]})
    ]


def test_a_provider_slowdown_pages_no_merchant() -> None:
    """The merchants' latency alarms, muted under the provider's, outlived it on their
    few calls and were unmuted when it resolved: 18 merchant pages after the slowdown."""
    pages, labels = paged(203, 2.5, ["provider_latency"])
    (slow,) = labels
    assert pages and all(p["series"]["provider"] == slow["series"]["provider"] for p in pages)
    assert [p["series"] for p in pages if "merchant_id" in p["series"]] == []
    assert all(p["window_end"] <= slow["end_ms"] for p in pages)


def test_the_biggest_merchant_slowing_alone_pages_the_merchant_once() -> None:
    """One window of two lucky calls (-3 nats) ended a latency alarm inside the incident
    (1 nat of hysteresis) and the renewed CUSUM paged the same series again; and the
    provider, 40 % of whose calls are this merchant's, paged three times beside it, its
    pooled alarm flapping with no hint to fold it into the merchant's."""
    pages, labels = paged(203, 1.0, ["merchant_latency"])
    (slow,) = labels
    assert [(p["rule"], p["series"]) for p in pages] == [("latency", slow["series"])]
