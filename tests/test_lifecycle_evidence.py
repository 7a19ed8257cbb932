"""Lifecycle on evidence: windows without calls neither resolve an episode nor open a new one."""

from __future__ import annotations

from collections.abc import Sequence

from stream.alerting.lifecycle import AlertLifecycle
from stream.alerting.record import AlertRecord
from stream.judge.judgement import Judgement

S = {"provider": "alipay"}


def judge(i: int, anomalous: bool, volume: int, signal: str = "error_rate") -> Judgement:
    return Judgement(
        rule="r",
        signal=signal,
        series=S,
        window_start=i * 10_000,
        window_end=i * 10_000 + 10_000,
        score=0.9 if anomalous else 0.0,
        anomalous=anomalous,
        severity="critical" if anomalous else "info",
        value=0.8 if anomalous else 0.0,
        expected=0.002,
        summary="alipay: errors",
        volume=volume,
    )


def run(life: AlertLifecycle, windows: Sequence[tuple[bool, int] | None]) -> list[AlertRecord]:
    """One window per item: (anomalous, calls), or None when the series is not judged at all."""
    out: list[AlertRecord] = []
    for i, w in enumerate(windows):
        js = [] if w is None else [judge(i, *w)]
        out += life.observe(i * 10_000 + 10_000, js, lambda end: end)
    return out


def test_empty_windows_do_not_resolve_a_firing_episode() -> None:
    life = AlertLifecycle(keep_firing_for_windows=3, resolve_min_calls=20)
    recs = run(life, [(True, 50)] + [(False, 0)] * 10 + [None] * 10)
    assert [r.status for r in recs] == ["firing"]
    assert len(life.firing()) == 1


def test_outage_with_intermittent_empty_windows_pages_once_and_resolves_once() -> None:
    bad, empty, unjudged, good = (True, 40), (False, 0), None, (False, 40)
    outage = [bad, empty, empty, unjudged, bad, empty, empty, empty, bad, unjudged, bad]
    recs = run(AlertLifecycle(keep_firing_for_windows=3, resolve_min_calls=20),
               [good] * 3 + outage + [good] * 5)  # fmt: skip
    assert [r.status for r in recs] == ["firing", "resolved"]
    firing, resolved = recs
    assert firing.alert_id == resolved.alert_id
    # Resolved on the third healthy window after the outage, not on an empty one.
    assert resolved.window_end == (3 + len(outage) + 3) * 10_000


def test_healthy_windows_with_few_calls_resolve_only_after_enough_calls() -> None:
    # A small merchant: two calls a window, every one failing for ten windows. Three
    # healthy windows are not enough evidence; it resolves once 20 healthy calls are in.
    life = AlertLifecycle(keep_firing_for_windows=3, resolve_min_calls=20)
    recs = run(life, [(True, 2)] * 10 + [(False, 2)] * 12)
    assert [r.status for r in recs] == ["firing", "resolved"]
    assert recs[1].window_end == 20 * 10_000  # 10 healthy windows x 2 calls = 20 calls


def test_a_healthy_volume_judgement_is_evidence_without_calls() -> None:
    # A volume detector judges the count itself: a window that looks normal again is evidence.
    life = AlertLifecycle(keep_firing_for_windows=2, resolve_min_calls=20)
    wins = [(True, 0)] + [(False, 0)] * 2
    out: list[AlertRecord] = []
    for i, (anom, vol) in enumerate(wins):
        out += life.observe(i * 10_000 + 10_000, [judge(i, anom, vol, "volume")], lambda e: e)
    assert [r.status for r in out] == ["firing", "resolved"]


def test_severity_change_updates_the_open_episode() -> None:
    life = AlertLifecycle()
    j1 = judge(0, True, 50)
    j1.severity = "warning"
    recs = life.observe(10_000, [j1], lambda e: e)
    recs += life.observe(20_000, [judge(1, True, 50)], lambda e: e)  # critical now
    recs += life.observe(30_000, [judge(2, True, 50)], lambda e: e)
    assert [(r.status, r.severity) for r in recs] == [("firing", "warning"), ("firing", "critical")]
    assert len({r.alert_id for r in recs}) == 1
    assert life.firing()[0]["severity"] == "critical"


def test_error_free_windows_inside_a_small_shift_do_not_end_the_episode() -> None:
    # Timeouts 0.06 % -> 4 % at 25 calls a window: three windows in a row without a
    # timeout happen every few minutes (0.96^75 = 5 %); they are not evidence of health.
    life = AlertLifecycle(keep_firing_for_windows=3, resolve_min_calls=20)

    def w(i: int, anomalous: bool, errors: int) -> Judgement:
        j = judge(i, anomalous, 25)
        j.value, j.expected = errors / 25, 0.0006
        return j

    pattern = [(True, 2), (False, 0), (False, 0), (False, 0), (False, 1), (True, 2)]
    pattern += [(False, 0)] * 3 + [(False, 1)]
    recs: list[AlertRecord] = []
    for i, (anom, errors) in enumerate(pattern):
        recs += life.observe(i * 10_000 + 10_000, [w(i, anom, errors)], lambda e: e)
    assert [r.status for r in recs] == ["firing"]
    # Back at baseline, clean calls resolve it once they favour the baseline 1000 to 1
    # over the episode's 2.9 % (5 in 150 calls, 20 clean calls added): 0.73 nats per
    # clean window, the 10th does it.
    for i in range(len(pattern), len(pattern) + 9):
        recs += life.observe(i * 10_000 + 10_000, [w(i, False, 0)], lambda e: e)
    assert [r.status for r in recs] == ["firing"]
    for i in range(len(pattern) + 9, len(pattern) + 10):
        recs += life.observe(i * 10_000 + 10_000, [w(i, False, 0)], lambda e: e)
    assert [r.status for r in recs] == ["firing", "resolved"]


def test_a_window_the_detector_still_holds_in_alarm_does_not_resolve() -> None:
    # A small merchant inside an outage: windows without a failing call score 0.95 (the
    # detector's alarm holds) but show no harm of their own.  They are no evidence of
    # recovery: one episode, resolved only once the detector lets go.
    life = AlertLifecycle(keep_firing_for_windows=3, resolve_min_calls=20)
    out = life.observe(10_000, [judge(0, True, 3)], lambda end: end)
    for i in range(1, 30):
        h = judge(i, False, 3)
        h.holding, h.score = True, 0.95
        out += life.observe(i * 10_000 + 10_000, [h], lambda end: end)
    out += life.observe(310_000, [judge(30, True, 3)], lambda end: end)
    assert [r.status for r in out] == ["firing"]
    assert len(life.firing()) == 1


def test_a_relapse_within_the_resolve_hold_continues_the_episode() -> None:
    # A burst pages, the evidence says healthy, the shift shows again two minutes later:
    # one episode.  Five healthy minutes after the relapse it resolves, dated to the
    # relapse's last anomalous window.
    life = AlertLifecycle(keep_firing_for_windows=3, resolve_min_calls=20, resolve_hold_s=300)
    bad, good = (True, 40), (False, 40)
    recs = run(life, [bad] + [good] * 12 + [bad] + [good] * 40)
    # The relapse re-announces the open episode (same id: one page), then it resolves.
    assert [r.status for r in recs] == ["firing", "firing", "resolved"]
    firing, relapse, resolved = recs
    assert firing.alert_id == relapse.alert_id == resolved.alert_id
    assert relapse.window_end == 14 * 10_000
    assert resolved.resolved_at == 14 * 10_000  # the relapse's window end
    # Resolved 300 s after the evidence first said healthy again (3 windows later).
    assert resolved.window_end == (14 + 3 + 30) * 10_000


def test_without_a_hold_the_same_relapse_pages_twice() -> None:
    life = AlertLifecycle(keep_firing_for_windows=3, resolve_min_calls=20)
    bad, good = (True, 40), (False, 40)
    recs = run(life, [bad] + [good] * 12 + [bad] + [good] * 40)
    assert [r.status for r in recs] == ["firing", "resolved", "firing", "resolved"]


def shares(life: AlertLifecycle, windows: Sequence[tuple[int, int]]) -> list[AlertRecord]:
    """One window per item: (errors, calls) of a 0.2 % series; 2+ errors in 40 is anomalous."""
    out: list[AlertRecord] = []
    for i, (errors, calls) in enumerate(windows):
        j = judge(i, errors >= 2, calls)
        j.value = errors / calls
        out += life.observe(i * 10_000 + 10_000, [j], lambda end: end)
    return out


# A burst of 20 failures in 40 calls at 4 calls/s on a 0.2 % series.  Three clean windows
# refute its share (reverse test) by the window ending at 40 s; the episode's share by
# then is 20 in 160 calls (+20 clean): 11.1 %, KL 0.343 nats a call, d = 13.16 / 1.37 =
# 9.6 s, hold max(2d, d + 20) = 29.6 s: resolved with the window ending at 70 s.
H = 13.16
BAD, GOOD = (20, 40), (0, 40)


def test_the_derived_hold_is_the_detection_target_of_the_episode_share() -> None:
    life = AlertLifecycle(keep_firing_for_windows=3, resolve_min_calls=20, relapse_h=H)
    recs = shares(life, [BAD] + [GOOD] * 40)
    assert [r.status for r in recs] == ["firing", "resolved"]
    assert recs[1].window_end == 70_000
    assert recs[1].resolved_at == 10_000  # dated to the burst


def test_a_relapse_inside_the_derived_hold_reannounces_the_episode() -> None:
    life = AlertLifecycle(keep_firing_for_windows=3, resolve_min_calls=20, relapse_h=H)
    recs = shares(life, [BAD] + [GOOD] * 4 + [BAD] + [GOOD] * 100)
    assert [r.status for r in recs] == ["firing", "firing", "resolved"]
    assert len({r.alert_id for r in recs}) == 1
    assert recs[1].window_end == 60_000  # the relapse, re-announced as it happens


def test_a_relapse_after_the_derived_hold_is_a_new_episode() -> None:
    life = AlertLifecycle(keep_firing_for_windows=3, resolve_min_calls=20, relapse_h=H)
    recs = shares(life, [BAD] + [GOOD] * 8 + [BAD] + [GOOD] * 100)
    assert [r.status for r in recs] == ["firing", "resolved", "firing", "resolved"]
    assert len({r.alert_id for r in recs}) == 2


def test_a_weak_episode_holds_its_recovery_at_most_resolve_hold_max_s() -> None:
    # Two failures in 40 calls, then clean: the share of a continuing incident (2 in 300
    # calls by the recovery) needs ~16 minutes to re-detect at 4 calls/s; held 120 s.
    life = AlertLifecycle(
        keep_firing_for_windows=3, resolve_min_calls=20, relapse_h=H, resolve_hold_max_s=120
    )
    recs = shares(life, [(2, 40)] + [GOOD] * 40)
    assert [r.status for r in recs] == ["firing", "resolved"]
    recovered = 70_000  # six clean windows give the reverse test its 6.9 nats
    assert recs[1].window_end == recovered + 120_000
