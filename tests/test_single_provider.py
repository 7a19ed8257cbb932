"""A deployment that takes payments through one provider only (common: WeChat Pay alone).

The volume rule's fleet demand was estimated from every series it judges, the
provider's own among them: with one provider, every drop of its traffic was "demand"
and never paged.  Demand now leaves the series' own provider out."""

from __future__ import annotations

from benchmarks import eval_run
from models.incidents import episodes
from stream.alerting.silences import SilenceSet
from stream.config import load_config
from stream.sim.simulate import Incident, SimConfig


def test_a_sole_providers_traffic_drop_pages_once_within_a_window() -> None:
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
