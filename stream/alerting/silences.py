"""Silences and the control events that carry them (Alertmanager vocabulary).

A silence mutes notifications for alerts whose labels match all of its
matchers (:mod:`stream.alerting.matchers`) while it is active.  Labels of an alert
are its ``series`` dict plus ``rule``, ``signal`` and ``severity``
(:attr:`~stream.alerting.record.AlertRecord.labels`).  Silences,
unsilences and acks travel as JSON objects on the ``paywatch.control`` topic::

    {"kind": "silence", "id": "s1", "matchers": ["provider=\\"alipay\\""],
     "starts_at": 0, "ends_at": 3600000, "author": "li", "comment": "upgrade"}
    {"kind": "unsilence", "id": "s1", "author": "li", "ts": 1800000}
    {"kind": "ack", "target": "<alert_id or fingerprint>", "author": "li", "ts": 60000}

Time is always passed in (``now_ms``), never read from the clock, so replay
gives the same answers as live.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stream.alerting.matchers import Matcher, MatcherError, matches_all

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ControlEventError(ValueError):
    """A control event or silence that cannot be used; the message is one line for a person."""


def _parse_hhmm(text: str, what: str) -> int:
    """``HH:MM`` → minutes after midnight."""
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", str(text).strip())
    if not m or int(m.group(1)) > 24 or int(m.group(2)) > 59:
        raise ControlEventError(f"recurrence {what} {text!r}: expected HH:MM")
    minutes = int(m.group(1)) * 60 + int(m.group(2))
    if minutes > 24 * 60:
        raise ControlEventError(f"recurrence {what} {text!r}: past 24:00")
    return minutes


@dataclass(frozen=True)
class Recurrence:
    """A maintenance window repeating daily or on given weekdays, in a time zone.

    ``start``/``end`` are ``HH:MM`` local times; an end before the start crosses
    midnight (22:00–02:00 belongs to the day it starts on).  ``weekdays`` uses
    mon..sun and only matters for ``freq="weekly"``.
    """

    freq: Literal["daily", "weekly"]
    start: str
    end: str
    weekdays: tuple[str, ...] = ()
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if self.freq not in ("daily", "weekly"):
            raise ControlEventError(f"recurrence freq {self.freq!r}: expected daily or weekly")
        _parse_hhmm(self.start, "start")
        _parse_hhmm(self.end, "end")
        days = tuple(str(d).strip().lower()[:3] for d in self.weekdays)
        bad = [d for d in days if d not in _WEEKDAYS]
        if bad:
            raise ControlEventError(f"recurrence weekdays {bad!r}: expected mon..sun")
        if self.freq == "weekly" and not days:
            raise ControlEventError("weekly recurrence needs weekdays, e.g. ['sun']")
        object.__setattr__(self, "weekdays", days)
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ControlEventError(f"recurrence tz {self.tz!r}: unknown time zone") from None

    def active(self, now_ms: int) -> bool:
        local = datetime.fromtimestamp(now_ms / 1000, tz=UTC).astimezone(ZoneInfo(self.tz))
        start, end = _parse_hhmm(self.start, "start"), _parse_hhmm(self.end, "end")
        minute = local.hour * 60 + local.minute + local.second / 60
        # The window may have started today, or yesterday if it crosses midnight.
        if start < end:
            candidates = [(local, start <= minute < end)]
        else:
            candidates = [(local, minute >= start), (local - timedelta(days=1), minute < end)]
        for day, inside in candidates:
            if inside and (self.freq == "daily" or _WEEKDAYS[day.weekday()] in self.weekdays):
                return True
        return False

    def to_dict(self) -> dict[str, Any]:
        return {
            "freq": self.freq,
            "start": self.start,
            "end": self.end,
            "weekdays": list(self.weekdays),
            "tz": self.tz,
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Recurrence:
        if not isinstance(obj, Mapping):
            raise ControlEventError(f"recurrence must be an object, got {obj!r}")
        for key in ("freq", "start", "end"):
            if key not in obj:
                raise ControlEventError(f"recurrence needs {key!r}")
        days = obj.get("weekdays") or ()
        if isinstance(days, str):
            days = [d for d in re.split(r"[,\s]+", days) if d]
        tz = obj.get("tz") or "UTC"
        return cls(obj["freq"], str(obj["start"]), str(obj["end"]), tuple(days), tz)


@dataclass(frozen=True)
class Silence:
    """Mute notifications of matching alerts between ``starts_at`` and ``ends_at`` (ms).

    ``ends_at=None`` is allowed only with a recurrence (a standing maintenance window).

    >>> s = Silence("s1", (Matcher.parse("provider=alipay"), Matcher.parse("merchant_id!=m9")),
    ...             starts_at=0, ends_at=60_000, author="li", comment="upgrade")
    >>> s.matches({"provider": "alipay", "merchant_id": "m1"}, now_ms=1_000)
    True
    >>> s.matches({"provider": "alipay", "merchant_id": "m1"}, now_ms=60_000)  # expired
    False
    >>> Silence.from_dict(s.to_dict()) == s
    True
    """

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: int
    ends_at: int | None
    author: str = ""
    comment: str = ""
    recurrence: Recurrence | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise ControlEventError("silence needs an id")
        if not self.matchers:
            raise ControlEventError(f"silence {self.id}: needs at least one matcher")
        if all(m.matches({}) for m in self.matchers):
            raise ControlEventError(
                f"silence {self.id}: its matchers would match every alert; name a label value"
            )
        if self.ends_at is None and self.recurrence is None:
            raise ControlEventError(f"silence {self.id}: needs ends_at (or a recurrence)")
        if self.ends_at is not None and self.ends_at <= self.starts_at:
            raise ControlEventError(f"silence {self.id}: ends_at must be after starts_at")

    def active(self, now_ms: int) -> bool:
        if now_ms < self.starts_at or (self.ends_at is not None and now_ms >= self.ends_at):
            return False
        return self.recurrence is None or self.recurrence.active(now_ms)

    def expired(self, now_ms: int) -> bool:
        return self.ends_at is not None and now_ms >= self.ends_at

    def matches(self, labels: Mapping[str, str], now_ms: int) -> bool:
        return self.active(now_ms) and matches_all(self.matchers, labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [m.to_dict() for m in self.matchers],
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "author": self.author,
            "comment": self.comment,
            "recurrence": self.recurrence.to_dict() if self.recurrence else None,
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Silence:
        if not isinstance(obj, Mapping):
            raise ControlEventError(f"silence must be an object, got {type(obj).__name__}")
        raw = obj.get("matchers")
        try:
            if isinstance(raw, Mapping):  # {"provider": "alipay"} shorthand: equality matchers
                matchers = tuple(Matcher(str(k), "=", str(v)) for k, v in raw.items())
            elif isinstance(raw, list | tuple):
                matchers = tuple(Matcher.from_obj(m) for m in raw)
            else:
                raise ControlEventError("silence needs 'matchers' (a list or a label→value object)")
        except MatcherError as exc:
            raise ControlEventError(str(exc)) from None
        rec = obj.get("recurrence")
        return cls(
            id=str(obj.get("id") or ""),
            matchers=matchers,
            starts_at=_int_field(obj, "starts_at", default=0),
            ends_at=_int_field(obj, "ends_at", default=None),
            author=str(obj.get("author") or ""),
            comment=str(obj.get("comment") or obj.get("reason") or ""),
            recurrence=Recurrence.from_dict(rec) if rec else None,
        )


def _int_field(obj: Mapping[str, Any], key: str, default: int | None) -> Any:
    value = obj.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ControlEventError(f"{key} must be integer milliseconds, got {value!r}")
    return int(value)


ControlKind = Literal["silence", "unsilence", "ack"]


@dataclass(frozen=True)
class ControlEvent:
    """One record of the control topic: a new silence, an unsilence or an ack.

    >>> ev = ControlEvent.decode(b'{"kind":"ack","target":"a1","author":"li","ts":5}')
    >>> ev.kind, ev.target, ev.ts_ms
    ('ack', 'a1', 5)
    >>> ControlEvent.decode(ev.encode()) == ev
    True
    """

    kind: ControlKind
    silence: Silence | None = None  # kind == "silence"
    silence_id: str | None = None  # kind == "unsilence"
    target: str | None = None  # kind == "ack": an alert_id or a fingerprint
    author: str = ""
    comment: str = ""
    ts_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "silence":
            assert self.silence is not None
            out.update(self.silence.to_dict())
        elif self.kind == "unsilence":
            out.update(id=self.silence_id, author=self.author)
            if self.comment:
                out["comment"] = self.comment
        else:
            out.update(target=self.target, author=self.author)
            if self.comment:
                out["comment"] = self.comment
        if self.ts_ms is not None:
            out["ts"] = self.ts_ms
        return out

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, obj: Any) -> ControlEvent:
        if not isinstance(obj, Mapping):
            got = type(obj).__name__
            raise ControlEventError(f"control event must be a JSON object, got {got}")
        kind = obj.get("kind")
        ts = _int_field(obj, "ts", default=None)
        author, comment = str(obj.get("author") or ""), str(obj.get("comment") or "")
        if kind == "silence":
            return cls("silence", silence=Silence.from_dict(obj), author=author, ts_ms=ts)
        if kind == "unsilence":
            if not obj.get("id"):
                raise ControlEventError("unsilence needs the 'id' of the silence")
            return cls(
                "unsilence", silence_id=str(obj["id"]), author=author, comment=comment, ts_ms=ts
            )
        if kind == "ack":
            target = obj.get("target") or obj.get("alert_id") or obj.get("fingerprint")
            if not target:
                raise ControlEventError("ack needs a 'target' (an alert_id or a fingerprint)")
            return cls("ack", target=str(target), author=author, comment=comment, ts_ms=ts)
        raise ControlEventError(f"control event kind {kind!r}: expected silence, unsilence or ack")

    @classmethod
    def decode(cls, raw: bytes | str) -> ControlEvent:
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ControlEventError(f"control event is not JSON ({exc})") from None
        return cls.from_dict(obj)


class SilenceSet:
    """The silences in force, fed by control events.

    >>> ss = SilenceSet()
    >>> ss.apply(ControlEvent.decode('{"kind":"silence","id":"s1",'
    ...     '"matchers":{"provider":"paypal"},"starts_at":0,"ends_at":100}'))
    True
    >>> ss.is_silenced({"provider": "paypal"}, now_ms=50).id
    's1'
    >>> ss.is_silenced({"provider": "paypal"}, now_ms=100) is None
    True
    """

    def __init__(self, silences: Iterable[Silence] = ()) -> None:
        self._by_id: dict[str, Silence] = {}
        for s in silences:
            self.add(s)

    def add(self, silence: Silence) -> None:
        self._by_id[silence.id] = silence  # same id again replaces: edits are re-sends

    def expire(self, silence_id: str, now_ms: int | None = None) -> bool:
        """End a silence at ``now_ms`` (or drop it at once); False when the id is unknown."""
        s = self._by_id.get(silence_id)
        if s is None:
            return False
        if now_ms is None or now_ms <= s.starts_at:
            del self._by_id[silence_id]
        elif s.ends_at is None or now_ms < s.ends_at:
            self._by_id[silence_id] = Silence(
                s.id, s.matchers, s.starts_at, now_ms, s.author, s.comment, s.recurrence
            )
        return True

    def apply(self, event: ControlEvent) -> bool:
        """Apply a silence or unsilence; acks are the dispatcher's (False here)."""
        if event.kind == "silence" and event.silence is not None:
            self.add(event.silence)
            return True
        if event.kind == "unsilence" and event.silence_id is not None:
            return self.expire(event.silence_id, event.ts_ms)
        return False

    def is_silenced(self, labels: Mapping[str, str], now_ms: int) -> Silence | None:
        for sid in sorted(self._by_id):
            s = self._by_id[sid]
            if s.matches(labels, now_ms):
                return s
        return None

    def mute_reason(self, labels: Mapping[str, str], now_ms: int) -> str | None:
        """The silence stage of the dispatcher: why these labels are muted now, if they are."""
        s = self.is_silenced(labels, now_ms)
        return f"silenced by {s.id}" if s is not None else None

    def get(self, silence_id: str) -> Silence | None:
        return self._by_id.get(silence_id)

    def active(self, now_ms: int) -> list[Silence]:
        return [s for _, s in sorted(self._by_id.items()) if s.active(now_ms)]

    def gc(self, now_ms: int) -> int:
        """Drop expired silences; returns how many."""
        dead = [sid for sid, s in self._by_id.items() if s.expired(now_ms)]
        for sid in dead:
            del self._by_id[sid]
        return len(dead)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Any:
        return iter(sorted(self._by_id.values(), key=lambda s: s.id))

    def to_list(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self]

    @classmethod
    def from_list(cls, items: Iterable[Mapping[str, Any]]) -> SilenceSet:
        return cls(Silence.from_dict(i) for i in items)
