"""Alert lifecycle: pending → firing → resolved, hysteresis, stable ids."""

from __future__ import annotations

from dataclasses import replace

from stream.alerting.lifecycle import AlertLifecycle
from stream.alerting.record import AlertRecord
from stream.judge.judgement import Judgement

S = {"provider": "alipay"}


def judge(start: int, anomalous: bool, severity: str = "warning", volume: int = 100) -> Judgement:
    return Judgement(
        rule="r",
        signal="error_rate",
        series=S,
        window_start=start,
        window_end=start + 10_000,
        score=0.9 if anomalous else 0.0,
        anomalous=anomalous,
        severity=severity,
        value=0.3 if anomalous else 0.0,
        expected=0.05,
        summary="alipay: errors",
        volume=volume,
    )


def run(life: AlertLifecycle, pattern: str) -> list[AlertRecord]:
    out = []
    for i, ch in enumerate(pattern):
        out += life.observe(i * 10_000 + 10_000, [judge(i * 10_000, ch == "x")], lambda end: end)
    return out


def test_one_odd_window_does_not_fire_when_for_is_two() -> None:
    assert run(AlertLifecycle(for_windows=2), "..x..x..") == []


def test_fires_after_for_and_resolves_after_quiet_windows() -> None:
    recs = run(AlertLifecycle(for_windows=2, keep_firing_for_windows=3), "..xxx.x....")
    assert [r.status for r in recs] == ["firing", "resolved"]
    firing, resolved = recs
    assert firing.started_at == 20_000 and firing.window_end == 40_000
    # The quiet window between two anomalous ones does not end the episode (no flapping).
    assert resolved.resolved_at == 70_000 and resolved.alert_id == firing.alert_id
    assert resolved.summary.startswith("RESOLVED after 50s")


def test_ids_are_stable_across_runs_and_new_per_episode() -> None:
    a = run(AlertLifecycle(), "xx....xx....")
    b = run(AlertLifecycle(), "xx....xx....")
    assert [r.alert_id for r in a] == [r.alert_id for r in b]
    assert a[0].alert_id != a[2].alert_id
    assert len({r.fingerprint for r in a}) == 1


def test_escalation_to_critical_is_announced_once() -> None:
    life = AlertLifecycle()
    recs = life.observe(10, [judge(0, True)], lambda e: e)
    recs += life.observe(20, [judge(10, True, "critical")], lambda e: e)
    recs += life.observe(30, [judge(20, True, "critical")], lambda e: e)
    assert [(r.status, r.severity) for r in recs] == [
        ("firing", "warning"),
        ("firing", "critical"),
    ]


def test_a_series_that_stops_being_judged_resolves_only_when_stale() -> None:
    # No judgement is no evidence: the episode stays open until it goes stale.
    life = AlertLifecycle(keep_firing_for_windows=2, stale_after_s=60)
    life.observe(10_000, [judge(0, True)], lambda e: e)
    assert life.observe(20_000, [], lambda e: e) == []
    assert life.observe(60_000, [], lambda e: e) == []
    (rec,) = life.observe(70_000, [], lambda e: e)
    assert rec.status == "resolved" and rec.window_end == 70_000


def _j(series: dict[str, str], start: int, anomalous: bool, hints: list | None = None) -> Judgement:
    return Judgement(
        rule="r", signal="latency", series=series, window_start=start,
        window_end=start + 10_000, score=0.9 if anomalous else 0.0, anomalous=anomalous,
        severity="warning", value=1.0, expected=1.0, summary="x", volume=100,
        hints=hints or [],
    )  # fmt: skip


def test_a_parent_ends_with_it_the_children_it_muted() -> None:
    """A provider-wide incident: merchants fire after the provider (muted under it); when
    the provider's episode ends, theirs end in the same window, listed first, so no
    merchant is unmuted (and paged) while it recovers on fewer calls."""
    life = AlertLifecycle(keep_firing_for_windows=1, resolve_min_calls=1)
    p, m1 = {"provider": "a"}, {"provider": "a", "merchant_id": "m1"}
    early = {"provider": "a", "merchant_id": "m0"}
    out = life.observe(10_000, [_j(early, 0, True)], lambda e: e)  # its own, before
    out += life.observe(20_000, [_j(p, 10_000, True), _j(early, 10_000, True)], lambda e: e)
    out += life.observe(30_000, [_j(p, 20_000, True), _j(m1, 20_000, True)], lambda e: e)
    ended = life.observe(40_000, [_j(p, 30_000, False), _j(m1, 30_000, True)], lambda e: e)
    assert [(r.status, r.series) for r in ended] == [("resolved", m1), ("resolved", p)]
    assert ended[0].summary.endswith("(with provider=a)")
    assert life.active() == {fp for fp, ep in life.episodes.items() if ep.series == early}


def test_a_child_that_carries_its_parent_outlives_it() -> None:
    """The provider's hints name the merchant: the merchant's episode is its own."""
    life = AlertLifecycle(keep_firing_for_windows=1, resolve_min_calls=1)
    p, m1 = {"provider": "a"}, {"provider": "a", "merchant_id": "m1"}
    hint = [{"dimension": "merchant_id", "value": "m1", "share": 0.9}]
    life.observe(10_000, [_j(p, 0, True, hint)], lambda e: e)
    life.observe(20_000, [_j(p, 10_000, True, hint), _j(m1, 10_000, True)], lambda e: e)
    ended = life.observe(30_000, [_j(p, 20_000, False), _j(m1, 20_000, True)], lambda e: e)
    assert [(r.status, r.series) for r in ended] == [("resolved", p)]


def test_a_parent_folded_into_its_carrier_ends_with_it() -> None:
    """The provider's alert was folded into the merchant that carries it; when the
    merchant's episode ends the provider's ends in the same window, listed before it (left
    open, it was unfolded and paged), and so do the episodes the provider muted."""
    life = AlertLifecycle(keep_firing_for_windows=1, resolve_min_calls=1)
    p, m1 = {"provider": "a"}, {"provider": "a", "merchant_id": "m1"}
    op = {"provider": "a", "operation": "refund"}
    hint = [{"dimension": "merchant_id", "value": "m1", "share": 1.0}]
    life.observe(10_000, [_j(m1, 0, True), _j(p, 0, True, hint)], lambda e: e)
    life.observe(20_000, [_j(m1, 10_000, True), _j(p, 10_000, True), _j(op, 10_000, True)],
                 lambda e: e)  # fmt: skip
    ended = life.observe(30_000, [_j(m1, 20_000, False), _j(p, 20_000, True)], lambda e: e)
    # Each before the one that muted it: op (under p), p (folded into m1), m1.
    assert [(r.status, r.series) for r in ended] == [
        ("resolved", op), ("resolved", p), ("resolved", m1)
    ]  # fmt: skip
    assert ended[1].summary.endswith("(with provider=a merchant_id=m1)")
    assert life.restart_own == {ended[1].fingerprint} and life.active() == set()


def _sig(rule: str, signal: str, series: dict[str, str], start: int, bad: bool) -> Judgement:
    share = 0.5 if bad else 0.0  # of 1000 calls: one healthy window is conclusive
    return replace(_j(series, start, bad), rule=rule, signal=signal, value=share, volume=1000)


def test_system_errors_that_followed_their_timeouts_end_with_them() -> None:
    """Timeouts rising alone: the timeouts alert fires first, the system errors they are
    part of a window later, and the dispatcher mutes the later one under the first (the
    built-in rule's first-fires pairing).  When the timeouts recover, the system-error
    episode ends with them, listed first, and restarts its own test: the incident paged
    once.  Had the system errors begun first, they would have muted the timeouts."""
    life = AlertLifecycle(
        keep_firing_for_windows=1,
        resolve_min_calls=1,
        same_series_mutes=frozenset({("error_rate", "timeouts")}),
    )
    p = {"provider": "a"}

    def window(start: int, timeouts: bool, errors: bool) -> list[Judgement]:
        return [
            _sig("system_error_rate", "error_rate", p, start, errors),
            _sig("timeouts", "timeouts", p, start, timeouts),
        ]

    fired = life.observe(10_000, window(0, True, False), lambda e: e)
    fired += life.observe(20_000, window(10_000, True, True), lambda e: e)
    assert [(r.rule, r.status) for r in fired] == [
        ("timeouts", "firing"), ("system_error_rate", "firing")
    ]  # fmt: skip
    ended = life.observe(30_000, window(20_000, False, True), lambda e: e)
    assert [(r.rule, r.status) for r in ended] == [
        ("system_error_rate", "resolved"), ("timeouts", "resolved")
    ]  # fmt: skip
    assert life.restart_own == {ended[0].fingerprint}
    assert life.episodes == {}


def test_an_alert_ends_with_it_the_alerts_of_other_signals_it_muted() -> None:
    """An outage: system errors fire, then timeouts on the same series (the dispatcher's
    built-in rule mutes them), then the tail share (muted under the timeouts).  The
    system errors recover first on more events; the timeouts, then the tail, end with
    them and restart their own tests, instead of paging as the outage ends.  A timeouts
    alert of another series is its own."""
    life = AlertLifecycle(
        keep_firing_for_windows=1,
        resolve_min_calls=1,
        same_series_mutes=frozenset({("error_rate", "timeouts"), ("timeouts", "latency_tail")}),
    )
    p, q = {"provider": "a"}, {"provider": "b"}

    def window(start: int, errors: bool) -> list[Judgement]:
        return [
            _sig("system_error_rate", "error_rate", p, start, errors),
            _sig("timeouts", "timeouts", p, start, start > 0),
            _sig("latency_tail", "latency_tail", p, start, start > 10_000),
            _sig("timeouts", "timeouts", q, start, start > 0),
        ]

    for start in (0, 10_000, 20_000):
        life.observe(start + 10_000, window(start, True), lambda e: e)
    ended = life.observe(40_000, window(30_000, False), lambda e: e)
    # Each before the one that muted it: the tail (under the timeouts), the timeouts.
    assert [(r.rule, r.status) for r in ended] == [
        ("latency_tail", "resolved"), ("timeouts", "resolved"), ("system_error_rate", "resolved")
    ]  # fmt: skip
    assert ended[0].summary.endswith("(with provider=a)")
    assert life.restart_own == {ended[0].fingerprint, ended[1].fingerprint}
    assert [ep.series for ep in life.episodes.values()] == [q]
