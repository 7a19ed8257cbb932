"""Attribution: one merchant's trouble pages the merchant (its parents fold into it); a
provider-wide incident pages once at provider level (merchants fold beneath it)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson

from stream.alerting.console import ConsoleNotifier
from stream.alerting.dispatch import Dispatcher
from stream.alerting.record import AlertRecord
from stream.config import Config, RouteConfig
from stream.judge.hints import FineChildren, root_cause_hints
from stream.offline.backtest import chunked, replay_batches
from stream.pipeline import Pipeline
from stream.windows.columns import COL, N_COLS
from stream.windows.registry import SeriesRegistry
from stream.windows.state import ClosedWindow
from tests.factories import T0, make_alert
from tests.test_notify_e2e import outage_across_merchants

S = 1000
RULE, SIGNAL = "config_errors", "config_error"
PROVIDER = {"provider": "alipay"}
OPERATION = {"provider": "alipay", "operation": "create_payment"}
MERCHANT = {"provider": "alipay", "operation": "create_payment", "merchant_id": "M1007"}
OTHER = {"provider": "alipay", "operation": "create_payment", "merchant_id": "M1001"}


def alert(series: dict[str, str], hints: list[dict[str, Any]] | None = None) -> AlertRecord:
    text = "/".join(series.values())
    return make_alert(
        series, rule=RULE, signal=SIGNAL, severity="warning", hints=hints, summary=text
    )


def merchant_hint(share: float) -> list[dict[str, Any]]:
    return [{"dimension": "merchant_id", "value": "M1007", "share": share}]


def page(records: list[AlertRecord]) -> tuple[list[tuple[str, ...]], Dispatcher]:
    # One group for everything, so the test sees exactly which alerts a message names.
    d = Dispatcher([RouteConfig("oncall", group_by=(), group_wait_s=30)])
    for r in records:
        d.on_alert(r, T0 + 10 * S)
    return [m.alert_ids for m in d.tick(T0 + 60 * S)], d


def test_one_merchant_carrying_the_trouble_pages_the_merchant_with_parents_folded() -> None:
    parent, op, child = (
        alert(PROVIDER, merchant_hint(0.97)),
        alert(OPERATION, merchant_hint(0.95)),
        alert(MERCHANT),
    )
    messages, d = page([parent, op, child])
    assert messages == [(child.alert_id,)]
    assert d.inhibitor.mute_reason(parent) == f"folded into {child.alert_id}"
    assert d.inhibitor.mute_reason(op) == f"folded into {child.alert_id}"


def test_a_provider_wide_incident_pages_once_at_provider_level() -> None:
    # No hint: the errors are spread like the traffic, every merchant is hit.
    parent, op, child, other = alert(PROVIDER), alert(OPERATION), alert(MERCHANT), alert(OTHER)
    messages, d = page([parent, op, child, other])
    assert messages == [(parent.alert_id,)]
    assert d.inhibitor.mute_reason(child) == f"inhibited by {parent.alert_id}"


def test_a_weak_hint_does_not_move_the_page_to_the_merchant() -> None:
    # The merchant has a third of the provider's errors: not the one series that carries it.
    parent, child = alert(PROVIDER, merchant_hint(0.3)), alert(MERCHANT)
    messages, _ = page([parent, child])
    assert messages == [(parent.alert_id,)]


def test_console_prints_the_carrying_merchant_and_folds_the_provider_into_it() -> None:
    out = io.StringIO()
    console = ConsoleNotifier(out, color="never")
    console.notify([alert(PROVIDER, merchant_hint(0.97)), alert(MERCHANT)])
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and console.fired == 1
    assert "FIRING" in lines[0] and "M1007" in lines[0]
    assert lines[1].strip() == "└─ alipay folded into alipay/create_payment/M1007, which carries it"


def _hints(errors: dict[str, float], calls: dict[str, float]) -> list[dict[str, Any]]:
    """Hints of the provider over merchants with these errors and calls in one window."""
    reg = SeriesRegistry()
    dims = ("provider", "merchant_id")
    names = list(calls)
    sids = reg.ids_of(dims, [f"alipay\x1f{m}" for m in names])
    n = len(reg)
    counts = np.zeros((n, N_COLS), np.int64)
    counts[sids, COL["volume"]] = [calls[m] for m in names]
    weights = np.zeros(n)
    weights[sids] = [errors.get(m, 0.0) for m in names]
    win = ClosedWindow(0, 10_000, counts, np.zeros((n, 3)), np.zeros((n, 5)), np.zeros(n))
    children = FineChildren.of(win, reg, dims)
    key = reg.keys[int(reg.ids_of(("provider",), ["alipay"])[0])]
    return root_cause_hints(key, dims, lambda: children, weights)


def test_a_hint_names_a_carrier_only_beyond_chance() -> None:
    """4 of 7 errors from the merchant with 35 % of the calls is what a provider-wide
    incident gives (p = 0.2): no hint, so its alerts stay muted under the provider's.
    3 of 3 from a merchant with 5 % of the calls (p = 1e-4) names it."""
    calls = {"big": 35.0, "mid": 30.0, "small": 5.0, "rest": 30.0}
    assert _hints({"big": 4, "mid": 2, "rest": 1}, calls) == []
    assert _hints({"small": 3}, calls) == [
        {"dimension": "merchant_id", "value": "small", "share": 1.0}
    ]


# --- one merchant at several providers -------------------------------------------------

KEYS = {"merchant_id": "M1007"}


def at(provider: str, *, started: int = T0, severity: str = "warning", **kw: Any) -> AlertRecord:
    series = {"provider": provider, **KEYS}
    return make_alert(series, rule=RULE, signal=SIGNAL, severity=severity, started=started, **kw)


def test_a_merchants_keys_broken_at_every_provider_page_once() -> None:
    """Series are judged per provider: the merchant's alert at each provider paged."""
    first = at("wechatpay")
    later = [at("alipay", started=T0 + 10 * S), at("paypal", started=T0 + 20 * S)]
    messages, d = page([*later, first])
    assert messages == [(first.alert_id,)]
    assert d.inhibitor.mute_reason(later[0]) == f"with {first.alert_id}: the same merchant"


def test_the_peer_still_firing_when_the_first_resolves_does_not_page() -> None:
    first, peer = at("wechatpay"), at("alipay", started=T0 + 10 * S)
    _, d = page([first, peer])
    d.on_alert(at("wechatpay", status="resolved", window_end=T0 + 300 * S), T0 + 300 * S)
    messages = d.tick(T0 + 900 * S)
    told = [(m.alert_ids, m.title.split("]")[0]) for m in messages]
    assert told == [((first.alert_id,), "[RESOLVED")]
    assert d.inhibitor.mute_reason(peer) == f"with {first.alert_id}: the same merchant"
    # A restarted dispatcher keeps the mute.
    fresh = Dispatcher([RouteConfig("oncall", group_by=(), group_wait_s=30)])
    fresh.restore(d.snapshot())
    assert fresh.tick(T0 + 2000 * S) == []


def test_a_peer_more_severe_than_the_first_pages() -> None:
    first, worse = at("wechatpay"), at("alipay", started=T0 + 10 * S, severity="critical")
    messages, _ = page([first, worse])
    assert [set(m) for m in messages] == [{worse.alert_id, first.alert_id}]


def test_the_merchants_alert_under_its_providers_incident_mutes_no_peer() -> None:
    """wechatpay's outage covers its merchant alert: the merchant's own trouble at alipay,
    which began later, is another incident and pages."""
    provider = make_alert({"provider": "wechatpay"}, rule=RULE, signal=SIGNAL, severity="warning")
    under, own = at("wechatpay"), at("alipay", started=T0 + 10 * S)
    messages, d = page([provider, under, own])
    assert [set(m) for m in messages] == [{own.alert_id, provider.alert_id}]
    assert d.inhibitor.mute_reason(own) is None


def test_a_merchant_paged_at_two_levels_and_two_providers_pages_once() -> None:
    """Its alipay operation fires first, paypal next, its calls across alipay's operations
    last.  The alipay operation is muted by the alipay merchant alert, which fired after
    paypal's: paypal's pages, and mutes the alipay merchant alert as its peer.  Each
    muted the next in a ring before: no page at all."""
    op = make_alert({**MERCHANT}, rule=RULE, signal=SIGNAL, severity="warning")
    paypal = at("paypal", started=T0 + 5 * S)
    alipay = at("alipay", started=T0 + 10 * S)
    messages, d = page([op, paypal, alipay])
    assert messages == [(paypal.alert_id,)]
    assert d.inhibitor.mute_reason(op) == f"inhibited by {alipay.alert_id}"
    assert d.inhibitor.mute_reason(alipay) == f"with {paypal.alert_id}: the same merchant"


def test_console_folds_the_merchant_at_another_provider_into_the_first() -> None:
    out = io.StringIO()
    console = ConsoleNotifier(out, color="never")
    console.notify([at("wechatpay"), at("alipay", started=T0 + 10 * S)])
    lines = out.getvalue().splitlines()
    assert console.fired == 1 and len(lines) == 2
    assert lines[1].strip() == "└─ alipay/M1007 too: the same merchant (folded in)"


def test_a_fetch_ending_inside_a_windows_records_pages_no_merchant_beneath_its_provider() -> None:
    """The dispatcher reads the alerts topic in fetches and may evaluate between two.  A
    window's records listed the provider's resolution before its merchants': a fetch
    ending between them left a merchant firing with nothing to mute it, and it paged (the
    30-merchant e2e test, now and then).  Muted resolutions now come first, so every
    prefix of the records pages the provider alone."""
    values = [orjson.dumps(e) for e in outage_across_merchants()]
    steps = replay_batches(Pipeline(Config()), chunked(enumerate(values), "t", 500))
    records = [rec for step in steps for rec in step.alerts]
    provider = {r.alert_id for r in records if "merchant_id" not in r.series}
    d = Dispatcher([RouteConfig("oncall", group_by=(), group_wait_s=0, group_interval_s=1)])
    told: set[str] = set()
    for i, rec in enumerate(records):  # an evaluation after every record
        d.on_alert(rec, T0 + i * S)
        told.update(a for m in d.tick(T0 + i * S + S) for a in m.alert_ids)
    assert len(records) > 60  # 31 series beneath fired and resolved with the provider
    assert told and told <= provider
