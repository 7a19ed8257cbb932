"""Deployments and incidents ``make eval``'s seeds do not have: payments through one
provider only (common: WeChat Pay alone) and one merchant id; a provider-wide incident
just below the critical level; a merchant at every provider.  Each test failed before the
change its docstring names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmarks import eval_run
from models.incidents import episodes
from stream.alerting.silences import SilenceSet
from stream.config import load_config
from stream.sim.simulate import Incident, SimConfig


def paged(sim: SimConfig) -> list[Mapping[str, Any]]:
    """The episodes that page (default configuration, the dispatcher's inhibition)."""
    cfg = load_config(None)
    alerts = eval_run.replay(cfg, sim)
    return list(episodes(eval_run.pages(alerts, SilenceSet(), cfg)).values())


def rules_paged(sim: SimConfig) -> list[tuple[str, Mapping[str, str]]]:
    """(rule, series) of each episode that pages."""
    return [(p["rule"], p["series"]) for p in paged(sim)]


def test_a_sole_providers_traffic_drop_pages_once_within_a_window() -> None:
    """The volume rule's fleet demand was estimated from every series it judges, the
    provider's own among them: with one provider every drop of its traffic was "demand"
    and never paged.  Demand now leaves the series' own provider out."""
    drop = Incident("traffic_drop", 2400, 300, provider="wechatpay", magnitude=0.6)
    sim = SimConfig(
        seed=3, duration_s=3000, rate=20, providers={"wechatpay": 1.0}, incidents=[drop]
    )
    pages = paged(sim)
    start = sim.start_ms + 2400_000
    assert [(p["rule"], p["series"]) for p in pages] == [
        ("traffic_drop", {"provider": "wechatpay"})
    ]
    # Hundreds of calls expected a window: the first full window of the drop is conclusive.
    assert start < pages[0]["window_end"] <= start + 20_000


def test_an_outage_of_a_sole_provider_and_merchant_pages_once() -> None:
    """One merchant at one provider: the timeouts alert, muted under the system errors
    (timeouts are system errors), recovered a minute after them on fewer events and was
    unmuted, paging as the outage ended; now it ends with the alert that muted it."""
    outage = Incident("provider_outage", 5400, 300, provider="wechatpay", magnitude=0.3)
    sim = SimConfig(
        seed=4, duration_s=6000, rate=5, providers={"wechatpay": 1.0}, merchants=1,
        incidents=[outage],
    )  # fmt: skip
    assert rules_paged(sim) == [("system_error_rate", {"provider": "wechatpay"})]


def test_a_gradual_degradation_just_below_the_critical_level_pages_once() -> None:
    """The provider's error rate ramps to 19 %, below the 20 % critical level: its alert
    stays a warning, and merchants and operations whose few calls crossed 20 % in a
    window by chance were critical, more severe than the provider's warning, so the
    dispatcher unmuted them: 5 pages.  A series' critical window that its broader
    series' share makes likely (the chance test of hints, p > 1e-3) is not critical."""
    ramp = Incident("gradual_degradation", 3600, 900, provider="wechatpay", magnitude=0.19)
    sim = SimConfig(
        seed=1, duration_s=5400, rate=20, providers={"wechatpay": 1.0, "alipay": 1.0},
        incidents=[ramp],
    )  # fmt: skip
    assert rules_paged(sim) == [("system_error_rate", {"provider": "wechatpay"})]


def test_a_merchants_keys_broken_at_every_provider_page_the_merchant_once() -> None:
    """Series are judged per provider, so the merchant's config errors fired at each of
    its providers, and each paged (3 pages of the merchant here).  The first to fire now
    mutes its peers at the other providers for their episodes."""
    keys = Incident("merchant_misconfig", 2400, 300, merchant_id="M1001")
    sim = SimConfig(seed=5, duration_s=3000, rate=20, incidents=[keys])
    merchant = [p for p in paged(sim) if p["series"].get("merchant_id") == "M1001"]
    start = sim.start_ms + 2400_000
    assert [(p["rule"], p["series"]) for p in merchant] == [
        ("config_errors", {"provider": "alipay", "merchant_id": "M1001"})
    ]
    assert start < merchant[0]["window_end"] <= start + 10_000
