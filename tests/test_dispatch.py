"""Dispatcher: grouping, inhibition, silences, repeats, acks, escalation, routing, dedup."""
# ruff: noqa: F811  (pytest fixtures imported from tests.servers are re-bound as parameters)

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.alerting.delivery import Deliverer, DeliveryAttempt, Message
from stream.alerting.dispatch import Dispatcher
from stream.alerting.history import AlertHistory
from stream.alerting.inhibit import inhibits
from stream.alerting.matchers import Matcher
from stream.alerting.record import AlertRecord
from stream.alerting.routes import route_targets
from stream.alerting.silences import ControlEvent, Recurrence, Silence, SilenceSet
from stream.config import Config, InhibitRule, RouteConfig, RouteConfigError
from tests.factories import make_alert, resolved
from tests.servers import WebhookServer, wait_until, webhook_server  # noqa: F401

S = 1000
MIN = 60 * S
T0 = 1_764_140_000_000  # 2025-11-26T06:53:20Z


def rec(
    series: dict[str, str],
    *,
    status: str = "firing",
    rule: str = "provider_errors",
    signal: str = "error_rate",
    severity: str = "critical",
    started: int = T0,
    window_end: int | None = None,
    resolved_at: int | None = None,
    value: float = 0.3,
    expected: float = 0.01,
) -> AlertRecord:
    return make_alert(
        series, status=status, rule=rule, signal=signal, severity=severity, started=started,
        window_end=window_end, resolved_at=resolved_at, value=value, expected=expected,
    )  # fmt: skip


def resolve(r: AlertRecord, at: int) -> AlertRecord:
    return resolved(r, at)


def route(name: str = "oncall", **kw: Any) -> RouteConfig:
    kw.setdefault("group_wait_s", 30)
    kw.setdefault("group_interval_s", 300)
    kw.setdefault("repeat_interval_s", 3600)
    return RouteConfig(name, **kw)


def run(
    d: Dispatcher, until: int, step: int = 10 * S, start: int = T0
) -> list[tuple[int, Message]]:
    """Tick every ``step`` like a live loop; return (time, message) pairs."""
    out: list[tuple[int, Message]] = []
    for t in range(start, until + 1, step):
        out.extend((t, m) for m in d.tick(t))
    return out


def outage(n_merchants: int = 30) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    provider = rec({"provider": "alipay"})
    merchants = [
        rec({"provider": "alipay", "merchant_id": f"m{i:02d}"}) for i in range(n_merchants)
    ]
    return provider, merchants


def test_provider_outage_over_30_merchants_pages_once_then_recovers_once(tmp_path: Path) -> None:
    history = AlertHistory(tmp_path / "h.db")
    d = Dispatcher([route()], [], SilenceSet(), history=history)
    provider, merchants = outage()
    arrive = T0 + 10 * S
    for r in [*merchants[:15], provider, *merchants[15:]]:  # merchants first: order must not matter
        assert d.on_alert(r, arrive)

    assert d.tick(arrive + 29 * S) == []
    first = d.tick(arrive + 30 * S)
    assert len(first) == 1
    msg = first[0]
    assert msg.alert_ids == (provider.alert_id,)
    assert msg.route == "oncall" and msg.severity == "critical"
    assert "alipay" in msg.title and "30.0%" in msg.title
    assert "30 related alerts beneath muted" in msg.body

    # Still firing and unchanged: nothing until repeat_interval.
    assert run(d, arrive + 20 * MIN, start=arrive + 31 * S) == []

    end = arrive + 20 * MIN
    for r in [provider, *merchants]:
        d.on_alert(resolve(r, end), end)
    recovered = run(d, end + 10 * MIN, start=end)
    assert len(recovered) == 1
    _, rmsg = recovered[0]
    assert rmsg.alert_ids == (provider.alert_id,)
    assert rmsg.title.startswith("[RESOLVED]")
    assert "lasted 20m" in rmsg.body
    assert d.group_keys() == [] and d.firing() == []
    assert run(d, end + 5 * 3600 * S, step=MIN, start=end + 10 * MIN) == []

    # Muted alerts are still in history, with the reason; only one page went out for them all.
    listed = history.list_alerts(limit=100)
    assert len(listed) == 31 and {a["status"] for a in listed} == {"resolved"}
    shown = history.show_alert(merchants[3].alert_id)
    assert shown is not None
    assert shown["alert"]["muted"] == f"inhibited by {provider.alert_id}"
    assert [m["reason"] for m in shown["mutes"]] == [f"inhibited by {provider.alert_id}"]
    assert shown["notifications"] == []
    pshow = history.show_alert(provider.alert_id)
    assert pshow is not None and len(pshow["notifications"]) == 2


def test_merchant_alert_pages_when_no_provider_alert_covers_it() -> None:
    d = Dispatcher([route()], [], SilenceSet())
    _, merchants = outage(2)
    other_rule = rec({"provider": "alipay"}, rule="latency_p99", signal="latency")
    for r in [*merchants, other_rule]:
        d.on_alert(r, T0)
    sent = {a for m in d.tick(T0 + 30 * S) for a in m.alert_ids}
    # A latency alert on the provider does not explain merchant error rates.
    assert sent == {merchants[0].alert_id, merchants[1].alert_id, other_rule.alert_id}


def test_a_critical_provider_error_alert_mutes_latency_beneath_it() -> None:
    # An outage's timed-out calls last the client's timeout: a merchant's median latency
    # jumps with it.  One incident, one page; a warning error alert does not mute it.
    d = Dispatcher([route()], [], SilenceSet())
    provider = rec({"provider": "paypal"}, rule="system_error_rate")
    slow = {"provider": "paypal", "operation": "query_payment", "merchant_id": "M1"}
    lat = rec(slow, rule="latency", signal="latency", severity="warning")
    d.on_alert(provider, T0)
    d.on_alert(lat, T0)
    sent = {a for m in d.tick(T0 + 30 * S) for a in m.alert_ids}
    assert sent == {provider.alert_id}
    mild = Dispatcher([route()], [], SilenceSet())
    mild.on_alert(rec({"provider": "paypal"}, severity="warning"), T0)
    mild.on_alert(lat, T0)
    assert lat.alert_id in {a for m in mild.tick(T0 + 30 * S) for a in m.alert_ids}


def test_warning_provider_alert_does_not_hide_critical_merchant() -> None:
    d = Dispatcher([route(group_by=("...",))], [], SilenceSet())
    p = rec({"provider": "alipay"}, severity="warning")
    m = rec({"provider": "alipay", "merchant_id": "m1"}, severity="critical")
    d.on_alert(p, T0)
    d.on_alert(m, T0)
    sent = {a for msg in d.tick(T0 + 30 * S) for a in msg.alert_ids}
    assert sent == {p.alert_id, m.alert_id}


def test_default_inhibition_can_be_turned_off() -> None:
    d = Dispatcher([route()], [], SilenceSet(), default_inhibit=False)
    provider, merchants = outage(3)
    for r in [provider, *merchants]:
        d.on_alert(r, T0)
    (msg,) = d.tick(T0 + 30 * S)
    assert len(msg.alert_ids) == 4
    assert "4 firing" in msg.title


def test_group_interval_batches_later_changes() -> None:
    d = Dispatcher([route(group_interval_s=120)], [], SilenceSet())
    a = rec({"provider": "paypal", "operation": "capture"})
    b = rec({"provider": "paypal", "operation": "refund"}, started=T0 + 40 * S)
    d.on_alert(a, T0)
    got = run(d, T0 + 49 * S, step=S)
    d.on_alert(b, T0 + 50 * S)  # after the first flush at T0+30s
    got += run(d, T0 + 10 * MIN, step=S, start=T0 + 50 * S)
    assert [(t - T0, m.alert_ids) for t, m in got] == [
        (30 * S, (a.alert_id,)),
        (150 * S, (a.alert_id, b.alert_id)),  # next group_interval tick, both listed
    ]
    assert "2 firing" in got[1][1].title


def test_repeat_interval_and_max_repeats() -> None:
    d = Dispatcher(
        [route(group_interval_s=60, repeat_interval_s=600, max_repeats=2)], [], SilenceSet()
    )
    d.on_alert(rec({"provider": "wechatpay"}), T0)
    got = run(d, T0 + 3 * 3600 * S, step=5 * S)
    assert [t - T0 for t, _ in got] == [30 * S, 630 * S, 1230 * S]
    assert "reminder 1" in got[1][1].body and "reminder 2" in got[2][1].body


def test_ack_stops_repeats_and_a_new_alert_still_pages() -> None:
    d = Dispatcher([route(group_interval_s=60, repeat_interval_s=600)], [], SilenceSet())
    a = rec({"provider": "wechatpay", "operation": "refund"})
    d.on_alert(a, T0)
    assert len(d.tick(T0 + 30 * S)) == 1
    assert d.ack(a.fingerprint, "li", T0 + 2 * MIN) == [a.alert_id]
    assert run(d, T0 + 2 * 3600 * S, step=MIN, start=T0 + 2 * MIN) == []
    b = rec({"provider": "wechatpay", "operation": "query_payment"}, started=T0 + 2 * 3600 * S)
    d.on_alert(b, T0 + 2 * 3600 * S)
    (msg,) = [m for _, m in run(d, T0 + 2 * 3600 * S + 2 * MIN, start=T0 + 2 * 3600 * S)]
    assert b.alert_id in msg.alert_ids
    assert d.ack("no-such-alert", "li", T0) == []


def test_ack_through_control_event() -> None:
    d = Dispatcher([route(group_interval_s=60, repeat_interval_s=300)], [], SilenceSet())
    a = rec({"provider": "alipay"})
    d.on_alert(a, T0)
    d.tick(T0 + 30 * S)
    ev = ControlEvent.decode(json.dumps({"kind": "ack", "target": a.alert_id, "author": "li"}))
    assert d.apply_control(ev, T0 + MIN)
    assert run(d, T0 + 3600 * S, step=MIN, start=T0 + MIN) == []


def _escalating() -> Dispatcher:
    team = route(
        "team", group_interval_s=60, repeat_interval_s=3600, escalate_after_s=900,
        escalate_to="manager",
    )  # fmt: skip
    return Dispatcher([team, route("manager", language="zh")], [], SilenceSet())


def test_unacked_critical_escalates_once_after_delay() -> None:
    d = _escalating()
    d.on_alert(rec({"provider": "alipay"}), T0)
    got = run(d, T0 + 2 * 3600 * S, step=S)
    assert [(t - T0, m.route) for t, m in got] == [
        (30 * S, "team"),
        (930 * S, "manager"),  # 15 min after the first page, exactly
        (3630 * S, "team"),  # the team's own repeat
    ]
    esc = got[1][1]
    assert "已升级" in esc.body and "15分钟" in esc.body
    assert esc.severity == "critical"


def test_acked_or_warning_groups_never_escalate() -> None:
    d = _escalating()
    a = rec({"provider": "alipay"})
    d.on_alert(a, T0)
    d.tick(T0 + 30 * S)
    d.ack(a.alert_id, "li", T0 + 10 * MIN)
    assert [m.route for _, m in run(d, T0 + 3600 * S)] == []

    d = _escalating()
    d.on_alert(rec({"provider": "alipay"}, severity="warning"), T0)
    assert [m.route for _, m in run(d, T0 + 3000 * S)] == ["team"]


def test_resolved_before_escalation_does_not_escalate() -> None:
    d = _escalating()
    a = rec({"provider": "alipay"})
    d.on_alert(a, T0)
    d.on_alert(resolve(a, T0 + 5 * MIN), T0 + 5 * MIN)
    assert [m.route for _, m in run(d, T0 + 3600 * S)] == ["team", "team"]


def test_same_record_twice_does_nothing() -> None:
    d = Dispatcher([route()], [], SilenceSet())
    a = rec({"provider": "alipay"})
    assert d.on_alert(a, T0) is True
    assert d.on_alert(a.to_dict(), T0 + S) is False  # as read back from the alerts topic
    (msg,) = d.tick(T0 + 30 * S)
    assert msg.alert_ids == (a.alert_id,)
    r = resolve(a, T0 + MIN)
    assert d.on_alert(r, T0 + MIN) is True
    assert d.on_alert(r, T0 + MIN) is False
    assert d.on_alert(a, T0 + MIN) is False  # a replayed firing after its own resolution
    assert len(run(d, T0 + 3600 * S, start=T0 + MIN)) == 1


def test_severity_upgrade_is_announced_again() -> None:
    d = Dispatcher([route(group_interval_s=60)], [], SilenceSet())
    warn = rec({"provider": "paypal"}, severity="warning")
    d.on_alert(warn, T0)
    assert [m.severity for m in d.tick(T0 + 30 * S)] == ["warning"]
    crit = dataclasses.replace(warn, severity="critical", window_end=warn.window_end + 10 * S)
    assert d.on_alert(crit, T0 + 40 * S)
    assert [m.severity for _, m in run(d, T0 + 5 * MIN, start=T0 + 40 * S)] == ["critical"]


def test_routing_by_severity_and_labels_first_match_wins_unless_continue() -> None:
    routes = [
        route("pager", match={"severity": "critical"}, continue_=True),
        route("china", match_re={"provider": "alipay|wechatpay"}, language="zh"),
        route("paypal-team", match={"provider": "paypal"}),
        route("default"),
    ]
    d = Dispatcher(routes, [], SilenceSet(), default_inhibit=False)
    cases = {
        "crit-ali": rec({"provider": "alipay"}),
        "warn-wx": rec({"provider": "wechatpay"}, severity="warning"),
        "warn-pp": rec({"provider": "paypal"}, severity="warning"),
        "info-union": rec({"provider": "unionpay"}, severity="info"),
    }
    for r in cases.values():
        d.on_alert(r, T0)
    by_alert: dict[str, set[str]] = {}
    for m in d.tick(T0 + 30 * S):
        for aid in m.alert_ids:
            by_alert.setdefault(aid, set()).add(m.route)
    assert by_alert == {
        cases["crit-ali"].alert_id: {"pager", "china"},  # continue_ let it reach china too
        cases["warn-wx"].alert_id: {"china"},
        cases["warn-pp"].alert_id: {"paypal-team"},
        cases["info-union"].alert_id: {"default"},
    }


def test_silence_mutes_until_it_ends_then_the_alert_pages() -> None:
    until = T0 + 20 * MIN
    silences = SilenceSet([Silence("s1", (Matcher.parse("provider=alipay"),), T0, until, "li")])
    d = Dispatcher([route(group_interval_s=60)], [], silences)
    a = rec({"provider": "alipay"})
    b = rec({"provider": "paypal"}, rule="other")
    d.on_alert(a, T0)
    d.on_alert(b, T0)
    got = run(d, T0 + 30 * MIN, step=S)
    assert [(t - T0, m.alert_ids) for t, m in got] == [
        (30 * S, (b.alert_id,)),
        (1230 * S, (a.alert_id,)),  # first group tick at/after the silence's end
    ]


def test_unsilence_event_ends_a_silence_early() -> None:
    d = Dispatcher([route(group_interval_s=60)], [], SilenceSet())
    on = {"kind": "silence", "id": "s9", "matchers": ['provider=~"ali.*"'], "starts_at": T0,
          "ends_at": T0 + 3600 * S, "author": "li", "comment": "upgrade"}  # fmt: skip
    assert d.apply_control(ControlEvent.from_dict(on), T0)
    d.on_alert(rec({"provider": "alipay"}), T0)
    assert run(d, T0 + 5 * MIN, step=S) == []
    assert d.apply_control(ControlEvent.from_dict({"kind": "unsilence", "id": "s9"}), T0 + 5 * MIN)
    got = run(d, T0 + 10 * MIN, step=S, start=T0 + 5 * MIN)
    assert len(got) == 1 and got[0][0] - T0 <= 6 * MIN + 30 * S


def test_recurring_maintenance_window_mutes_only_inside_it() -> None:
    # Daily 07:00-07:30 UTC window; T0 is 06:53:20 UTC.
    window = Recurrence("daily", "07:00", "07:30")
    s = Silence("maint", (Matcher.parse("provider=unionpay"),), 0, None, "ops", recurrence=window)
    d = Dispatcher([route(group_wait_s=0, group_interval_s=60)], [], SilenceSet([s]))
    inside = T0 + 10 * MIN  # 07:03:20
    d.on_alert(rec({"provider": "unionpay"}, started=inside), inside)
    got = run(d, T0 + 60 * MIN, step=S, start=inside)
    assert len(got) == 1
    sent_at = got[0][0]
    assert sent_at >= T0 + 36 * MIN + 40 * S  # 07:30:00
    assert sent_at < T0 + 38 * MIN


def test_configured_inhibit_rule_with_equal_labels() -> None:
    rule = InhibitRule(
        source_match={"signal": "volume", "severity": "critical"},
        target_match={"signal": "error_rate"},
        equal=("provider",),
    )
    d = Dispatcher([route(group_by=("...",))], [rule], SilenceSet())
    drop = rec({"provider": "alipay"}, rule="volume_drop", signal="volume")
    same = rec({"provider": "alipay", "operation": "refund"}, rule="refund_errors")
    other = rec({"provider": "paypal"}, rule="refund_errors")
    for r in (drop, same, other):
        d.on_alert(r, T0)
    sent = {a for m in d.tick(T0 + 30 * S) for a in m.alert_ids}
    assert sent == {drop.alert_id, other.alert_id}


def test_builtin_rule_an_outage_pages_once_not_once_per_rule() -> None:
    """Timeouts are system errors: the timeouts alert of a series with a system-error
    alert is muted (and its merchants with it); another series' timeouts still page."""
    rules = Config().builtin_inhibit_rules()
    d = Dispatcher([route(group_by=("...",))], rules, SilenceSet())
    errors = rec({"provider": "alipay"}, rule="system_error_rate")
    timeouts = rec({"provider": "alipay"}, rule="timeouts", signal="timeouts", severity="warning")
    beneath = rec(
        {"provider": "alipay", "merchant_id": "m1"}, rule="timeouts", signal="timeouts",
        severity="warning",
    )  # fmt: skip
    other = rec({"provider": "paypal"}, rule="timeouts", signal="timeouts", severity="warning")
    for r in (errors, timeouts, beneath, other):
        d.on_alert(r, T0)
    sent = {a for m in d.tick(T0 + 30 * S) for a in m.alert_ids}
    assert sent == {errors.alert_id, other.alert_id}
    assert d.inhibitor.mute_reason(timeouts) == f"inhibited by {errors.alert_id}"


def test_builtin_rule_timeouts_that_fired_first_mute_the_system_errors_after_them() -> None:
    """Timeouts rising alone fire before the system errors they are part of: the timeouts
    alert paged, so the system-error alert of the same series that follows is the same
    incident and is muted by it; one that is more severe (an outage beyond the timeouts)
    pages.  Another series' system errors page."""
    rules = Config().builtin_inhibit_rules()
    d = Dispatcher([route(group_by=("...",))], rules, SilenceSet())
    timeouts = rec({"provider": "paypal"}, rule="timeouts", signal="timeouts", severity="warning")
    d.on_alert(timeouts, T0)
    assert {a for m in d.tick(T0 + 30 * S) for a in m.alert_ids} == {timeouts.alert_id}
    kw: dict[str, Any] = {"rule": "system_error_rate", "severity": "warning"}
    errors = rec({"provider": "paypal"}, started=T0 + 10 * S, **kw)
    other = rec({"provider": "alipay"}, started=T0 + 10 * S, **kw)
    for r in (errors, other):
        d.on_alert(r, T0 + 40 * S)
    assert {a for m in d.tick(T0 + 400 * S) for a in m.alert_ids} == {other.alert_id}
    assert d.inhibitor.mute_reason(errors) == f"inhibited by {timeouts.alert_id}"
    assert d.inhibitor.mute_reason(timeouts) is None  # the first to fire is not muted back
    worse = dataclasses.replace(errors, severity="critical")
    assert d.inhibitor.mute_reason(worse) is None


def test_inhibit_rule_from_config() -> None:
    rule = InhibitRule.from_dict(
        {"source_match": {"rule": "provider_down"}, "target_match_re": {"signal": ".*"},
         "equal": "provider"}
    )  # fmt: skip
    assert inhibits(rule, {"rule": "provider_down", "provider": "a"}, {"provider": "a"})
    assert not inhibits(rule, {"rule": "provider_down", "provider": "a"}, {"provider": "b"})
    with pytest.raises(RouteConfigError, match="inhibit rule: unknown key"):
        InhibitRule.from_dict({"source": {}})


def test_messages_do_not_depend_on_how_often_tick_is_called() -> None:
    def feed(tick_step: int | None) -> list[tuple[str, tuple[str, ...], str]]:
        d = Dispatcher([route(group_interval_s=60, repeat_interval_s=600)], [], SilenceSet())
        provider, merchants = outage(5)
        events = [(T0, r) for r in [provider, *merchants]]
        events.append((T0 + 3 * MIN, rec({"provider": "paypal"}, started=T0 + 3 * MIN)))
        events += [(T0 + 40 * MIN, resolve(r, T0 + 40 * MIN)) for r in [provider, *merchants]]
        out: list[Message] = []
        t = T0
        for at, r in events:
            if tick_step:
                while t < at:
                    out += d.tick(t)
                    t += tick_step
            d.on_alert(r, at)
        out += d.tick(T0 + 2 * 3600 * S)
        return [(m.route, m.alert_ids, m.title) for m in out]

    live = feed(S)
    assert live == feed(None) == feed(7 * S)
    assert len(live) >= 4


def test_config_mistakes_are_one_line_errors() -> None:
    with pytest.raises(RouteConfigError, match="escalate_to names unknown route 'boss'"):
        Dispatcher([route("a", escalate_after_s=60, escalate_to="boss")], [], SilenceSet())
    with pytest.raises(RouteConfigError, match="used twice: a"):
        Dispatcher([route("a"), route("a")], [], SilenceSet())
    with pytest.raises(RouteConfigError, match="language must be one of zh, en"):
        route("a", language="fr")
    with pytest.raises(RouteConfigError, match="bad regex for 'provider'"):
        route("a", match_re={"provider": "ali("})
    with pytest.raises(RouteConfigError, match="unknown key"):
        RouteConfig.from_dict({"name": "a", "group_wiat_s": 3})
    r = RouteConfig.from_dict({"name": "a", "continue": True, "receivers": "json://x"})
    assert r.continue_ and r.receivers == ("json://x",)


async def test_dispatched_message_is_delivered_and_audited(
    webhook_server: WebhookServer, tmp_path: Path
) -> None:
    history = AlertHistory(tmp_path / "h.db")
    d = Dispatcher(
        [route("ops", receivers=(webhook_server.url,), body_format="text")], [], SilenceSet(),
        history=history,
    )  # fmt: skip
    a = rec({"provider": "alipay", "operation": "create_payment"})
    d.on_alert(a, T0)
    (msg,) = d.tick(T0 + 30 * S)

    def audit(att: DeliveryAttempt) -> None:
        history.record_delivery(att)

    deliverer = Deliverer(route_targets(d.routes.values()), backoff_s=0.01, on_attempt=audit)
    await deliverer.start()
    try:
        deliverer.submit(msg)
        assert await wait_until(lambda: len(webhook_server.posts) == 1)
        await deliverer.drain(5)
    finally:
        await deliverer.stop()
    post = webhook_server.posts[0]
    assert "alipay / create_payment" in post["message"]
    shown = history.show_alert(a.alert_id)
    assert shown is not None
    assert [x["ok"] for x in shown["deliveries"]] == [True]
    assert shown["deliveries"][0]["route"] == "ops"


def test_restart_from_snapshot_gives_the_same_messages() -> None:
    def make() -> Dispatcher:
        team = route(
            "team", group_interval_s=60, repeat_interval_s=600, escalate_after_s=900,
            escalate_to="boss",
        )  # fmt: skip
        return Dispatcher([team, route("boss")], [], SilenceSet())

    provider, merchants = outage(4)
    paypal = rec({"provider": "paypal"}, started=T0 + 3 * MIN)
    events = [(T0, r) for r in [provider, *merchants]] + [(T0 + 3 * MIN, paypal)]
    events.append((T0 + 5 * MIN, {"ack": paypal.alert_id}))
    events += [(T0 + 40 * MIN, resolve(r, T0 + 40 * MIN)) for r in [provider, *merchants]]

    def play(restart_at: int | None) -> list[tuple[str, tuple[str, ...], str]]:
        d = make()
        out: list[Message] = []
        pending = list(events)
        for t in range(T0, T0 + 2 * 3600 * S, 10 * S):
            if restart_at is not None and t == restart_at:
                state = json.loads(json.dumps(d.snapshot()))
                d = make()
                d.restore(state)
            while pending and pending[0][0] <= t:
                at, r = pending.pop(0)
                if isinstance(r, dict):  # {"ack": target}
                    d.ack(r["ack"], "li", at)
                else:
                    d.on_alert(r, at)
            out += d.tick(t)
        return [(m.route, m.alert_ids, m.title) for m in out]

    straight = play(None)
    assert [r for r, _, _ in straight].count("boss") == 1
    for restart in (T0 + 20 * S, T0 + 4 * MIN, T0 + 20 * MIN, T0 + 41 * MIN):
        assert play(restart) == straight, restart


def test_silenced_alert_and_ack_are_in_history(tmp_path: Path) -> None:
    history = AlertHistory(tmp_path / "h.db")
    s = Silence("s1", (Matcher.parse("provider=alipay"),), T0, T0 + 10 * MIN, "li", "upgrade")
    d = Dispatcher([route(group_interval_s=60)], [], SilenceSet(), history=history)
    d.apply_control(ControlEvent("silence", silence=s, author="li"), T0)
    a = rec({"provider": "alipay"})
    d.on_alert(a, T0)
    assert run(d, T0 + 5 * MIN, step=S) == []
    shown = history.show_alert(a.alert_id)
    assert shown is not None and shown["alert"]["muted"] == "silenced by s1"
    assert shown["notifications"] == []
    got = run(d, T0 + 12 * MIN, step=S, start=T0 + 5 * MIN + S)
    assert len(got) == 1
    d.ack(a.fingerprint, "wang", T0 + 13 * MIN, "rolling back")
    shown = history.show_alert(a.alert_id)
    assert shown is not None
    assert [m["reason"] for m in shown["mutes"]] == ["silenced by s1", None]
    assert shown["alert"]["acked_by"] == "wang" and len(shown["notifications"]) == 1
    assert [x["id"] for x in history.list_silences()] == ["s1"]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),  # which series
            st.integers(0, 60),  # minutes after T0
            st.sampled_from(["firing", "resolved", "ack"]),
            st.sampled_from(["critical", "warning"]),
        ),
        max_size=25,
    )
)
def test_invariants_over_random_alert_streams(steps: list[tuple[int, int, str, str]]) -> None:
    series = [
        {"provider": "alipay"},
        {"provider": "alipay", "merchant_id": "m1"},
        {"provider": "alipay", "operation": "refund"},
        {"provider": "paypal"},
    ]
    # Build a lifecycle-shaped stream: an episode starts on firing, ends on resolved.
    events: list[tuple[int, AlertRecord | dict[str, str]]] = []
    open_ep: dict[int, dict[str, Any]] = {}
    for idx, minute, kind, sev in sorted(steps, key=lambda s: s[1]):
        at = T0 + minute * MIN
        if kind == "firing" and idx not in open_ep:
            open_ep[idx] = rec(series[idx], severity=sev, started=at, window_end=at)
            events.append((at, open_ep[idx]))
        elif kind == "resolved" and idx in open_ep:
            events.append((at, resolve(open_ep.pop(idx), at)))
        elif kind == "ack" and idx in open_ep:
            events.append((at, {"ack": open_ep[idx].alert_id}))

    def play(step: int | None) -> list[Message]:
        team = route("team", group_interval_s=60, repeat_interval_s=600, max_repeats=3,
                     escalate_after_s=300, escalate_to="boss")  # fmt: skip
        d = Dispatcher([team, route("boss")], [], SilenceSet())
        out: list[Message] = []
        t = T0
        for at, r in events:
            while step and t < at:
                out += d.tick(t)
                t += step
            if isinstance(r, dict):  # {"ack": target}
                d.ack(r["ack"], "li", at)
            else:
                d.on_alert(r, at)
        return out + d.tick(T0 + 6 * 3600 * S)

    msgs = play(10 * S)
    assert [(m.route, m.alert_ids, m.title) for m in msgs] == [
        (m.route, m.alert_ids, m.title) for m in play(None)
    ]
    told: set[str] = set()
    for m in msgs:
        assert m.alert_ids
        if m.title.startswith("[RESOLVED]"):
            assert set(m.alert_ids) <= told  # never a recovery for something never announced
        else:
            told |= set(m.alert_ids)
    assert sum(m.route == "boss" for m in msgs) <= len(events)
