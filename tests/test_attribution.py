"""Attribution: one merchant's trouble pages the merchant (its parents fold into it); a
provider-wide incident pages once at provider level (merchants fold beneath it)."""

from __future__ import annotations

import io
from typing import Any

from stream.alerting.console import ConsoleNotifier
from stream.alerting.dispatch import Dispatcher
from stream.alerting.record import AlertRecord
from stream.config import RouteConfig
from tests.factories import T0, make_alert

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
