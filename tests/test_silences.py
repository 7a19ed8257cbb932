"""Silences: matcher types, expiry, recurring maintenance windows, control events."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from stream.alerting.matchers import Matcher, MatcherError
from stream.alerting.silences import (
    ControlEvent,
    ControlEventError,
    Recurrence,
    Silence,
    SilenceSet,
)
from tests.factories import make_alert

LABELS = {"provider": "alipay", "operation": "refund", "merchant_id": "m42", "severity": "warning"}


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("matcher", "hit"),
    [
        ("provider=alipay", True),
        ("provider=paypal", False),
        ('provider!="paypal"', True),
        ("provider!=alipay", False),
        ('merchant_id=~"m4.*"', True),
        ("merchant_id=~m4", False),  # regexes match the whole value, as in Alertmanager
        ('operation!~"create_.*|query_.*"', True),
        ("operation!~refund", False),
        ("region=", True),  # a missing label reads as empty
        ("region!=eu", True),
        ("severity=~critical|warning", True),
    ],
)
def test_each_matcher_type(matcher: str, hit: bool) -> None:
    assert Matcher.parse(matcher).matches(LABELS) is hit


def test_matcher_shapes_and_errors() -> None:
    am = {"name": "provider", "value": "ali.*", "isRegex": True, "isEqual": False}
    assert Matcher.from_obj(am) == Matcher("provider", "!~", "ali.*")
    assert str(Matcher.parse("provider =~ 'ali.*'")) == 'provider=~"ali.*"'
    with pytest.raises(MatcherError, match="bad regex"):
        Matcher.parse("provider=~ali(")
    with pytest.raises(MatcherError, match="bad matcher 'provider'"):
        Matcher.parse("provider")


def silence(**kw: object) -> Silence:
    base: dict[str, object] = {
        "id": "s1",
        "matchers": ["provider=alipay", "merchant_id=~m4.*"],
        "starts_at": 1_000,
        "ends_at": 5_000,
        "author": "li",
        "comment": "bank maintenance",
    }
    base.update(kw)
    return Silence.from_dict(base)


def test_silence_is_active_only_between_start_and_end() -> None:
    s = SilenceSet([silence()])
    assert s.is_silenced(LABELS, 999) is None
    found = s.is_silenced(LABELS, 1_000)
    assert found is not None and found.comment == "bank maintenance"
    assert s.is_silenced(LABELS, 4_999) is not None
    assert s.is_silenced(LABELS, 5_000) is None
    assert s.is_silenced({**LABELS, "merchant_id": "x1"}, 2_000) is None  # every matcher must hold
    assert s.gc(5_000) == 1 and len(s) == 0


def test_alert_labels_include_rule_signal_severity() -> None:
    rec = make_alert({"provider": "paypal"}, rule="r1", signal="volume", severity="info")
    labels = rec.labels
    assert Silence.from_dict(
        {"id": "x", "matchers": {"rule": "r1", "signal": "volume"}, "ends_at": 10}
    ).matches(labels, 5)
    assert labels["provider"] == "paypal" and labels["severity"] == "info"


def test_weekly_window_in_a_time_zone() -> None:
    # Sundays 02:00-04:00 Beijing time = Saturday 18:00-20:00 UTC.
    rec = Recurrence("weekly", "02:00", "04:00", ("sun",), "Asia/Shanghai")
    s = Silence("w", (Matcher.parse("provider=unionpay"),), 0, None, recurrence=rec)
    labels = {"provider": "unionpay"}
    assert datetime(2026, 11, 29).weekday() == 6  # a Sunday
    assert not s.matches(labels, ms("2026-11-28T17:59:59"))
    assert s.matches(labels, ms("2026-11-28T18:00:00"))
    assert s.matches(labels, ms("2026-11-28T19:59:59"))
    assert not s.matches(labels, ms("2026-11-28T20:00:00"))
    assert not s.matches(labels, ms("2026-11-29T18:30:00"))  # Monday in Beijing


def test_daily_window_across_midnight() -> None:
    rec = Recurrence("daily", "23:30", "00:30")
    assert rec.active(ms("2026-11-26T23:45:00"))
    assert rec.active(ms("2026-11-27T00:15:00"))
    assert not rec.active(ms("2026-11-27T00:30:00"))
    assert not rec.active(ms("2026-11-26T12:00:00"))
    weekly = Recurrence("weekly", "23:30", "00:30", ("fri",))
    assert weekly.active(ms("2026-11-28T00:10:00"))  # Saturday 00:10: the Friday window
    assert not weekly.active(ms("2026-11-27T00:10:00"))  # Friday 00:10: Thursday's, not listed


def test_recurring_silence_obeys_its_outer_bounds() -> None:
    rec = {"freq": "daily", "start": "00:00", "end": "24:00", "tz": "UTC"}
    s = silence(recurrence=rec, ends_at=None, starts_at=ms("2026-11-26T00:00:00"))
    assert not s.matches(LABELS, ms("2026-11-25T12:00:00"))
    assert s.matches(LABELS, ms("2030-01-01T12:00:00"))


def test_control_events_round_trip() -> None:
    rec = Recurrence("weekly", "02:00", "04:00", ("sat", "sun"), "Asia/Shanghai")
    events = [
        ControlEvent("silence", silence=silence(recurrence=rec.to_dict()), author="li", ts_ms=7),
        ControlEvent("unsilence", silence_id="s1", author="li", comment="done", ts_ms=8),
        ControlEvent("ack", target="fp-123", author="wang", comment="on it", ts_ms=9),
    ]
    for ev in events:
        raw = ev.encode()
        assert json.loads(raw)["kind"] == ev.kind
        assert ControlEvent.decode(raw) == ev


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("not json", "control event is not JSON"),
        ("[1]", "must be a JSON object"),
        ('{"kind":"mute"}', "kind 'mute': expected silence, unsilence or ack"),
        ('{"kind":"ack"}', "ack needs a 'target'"),
        ('{"kind":"unsilence"}', "unsilence needs the 'id'"),
        ('{"kind":"silence","id":"s","ends_at":5}', "silence needs 'matchers'"),
        ('{"kind":"silence","id":"s","matchers":[],"ends_at":5}', "at least one matcher"),
        ('{"kind":"silence","id":"s","matchers":["x=~.*"],"ends_at":5}', "would match every"),
        ('{"kind":"silence","id":"s","matchers":["x=1"]}', "needs ends_at"),
        ('{"kind":"silence","id":"s","matchers":["x=1"],"starts_at":9,"ends_at":5}', "after"),
        ('{"kind":"silence","id":"s","matchers":["x=1"],"ends_at":"soon"}', "integer millisec"),
        ('{"kind":"silence","matchers":["x=1"],"ends_at":5}', "needs an id"),
        ('{"kind":"silence","id":"s","matchers":["x=1"],"recurrence":{"freq":"weekly",'
         '"start":"02:00","end":"04:00"}}', "weekly recurrence needs weekdays"),
        ('{"kind":"silence","id":"s","matchers":["x=1"],"recurrence":{"freq":"daily",'
         '"start":"2am","end":"04:00"}}', "start '2am': expected HH:MM"),
        ('{"kind":"silence","id":"s","matchers":["x=1"],"recurrence":{"freq":"daily",'
         '"start":"02:00","end":"04:00","tz":"Mars/Base"}}', "unknown time zone"),
    ],
)  # fmt: skip
def test_bad_control_events_give_one_clear_line(raw: str, error: str) -> None:
    with pytest.raises(ControlEventError) as info:
        ControlEvent.decode(raw)
    assert error in str(info.value)
    assert "\n" not in str(info.value)


def test_unsilence_ends_the_silence_at_its_time() -> None:
    s = SilenceSet([silence()])
    assert s.apply(ControlEvent("unsilence", silence_id="s1", ts_ms=3_000))
    assert s.is_silenced(LABELS, 2_999) is not None
    assert s.is_silenced(LABELS, 3_000) is None
    assert not s.apply(ControlEvent("unsilence", silence_id="nope", ts_ms=3_000))
    assert not s.apply(ControlEvent("ack", target="x"))
    # Re-sending a silence with the same id edits it.
    s.apply(ControlEvent("silence", silence=silence(ends_at=9_000)))
    assert s.is_silenced(LABELS, 8_000) is not None
    assert SilenceSet.from_list(s.to_list()).to_list() == s.to_list()
