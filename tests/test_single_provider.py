"""A deployment that takes payments through one provider only (common: WeChat Pay alone),
and one merchant id: traffic no simulator seed of ``make eval`` has.  Each test failed
before the change its docstring names."""

from __future__ import annotations

from benchmarks import eval_run
from models.incidents import episodes
from stream.alerting.silences import SilenceSet
from stream.config import load_config
from stream.sim.simulate import Incident, SimConfig


def test_a_sole_providers_traffic_drop_pages_once_within_a_window() -> None:
    """The volume rule's fleet demand was estimated from every series it judges, the
    provider's own among them: with one provider every drop of its traffic was "demand"
    and never paged.  Demand now leaves the series' own provider out."""
    cfg = load_config(None)
    drop = Incident("traffic_drop", 2400, 300, provider="wechatpay", magnitude=0.6)
    sim = SimConfig(
        seed=3, duration_s=3000, rate=20, providers={"wechatpay": 1.0}, incidents=[drop]
    )
    alerts = eval_run.replay(cfg, sim)
    pages = list(episodes(eval_run.pages(alerts, SilenceSet(), cfg)).values())
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
    cfg = load_config(None)
    outage = Incident("provider_outage", 5400, 300, provider="wechatpay", magnitude=0.3)
    sim = SimConfig(
        seed=4, duration_s=6000, rate=5, providers={"wechatpay": 1.0}, merchants=1,
        incidents=[outage],
    )  # fmt: skip
    alerts = eval_run.replay(cfg, sim)
    pages = list(episodes(eval_run.pages(alerts, SilenceSet(), cfg)).values())
    assert [(p["rule"], p["series"]) for p in pages] == [
        ("system_error_rate", {"provider": "wechatpay"})
    ]
