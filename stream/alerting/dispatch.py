"""From alert v1 records to messages for people: Alertmanager-style routing, grouping,
inhibition, silences, repeats, acks and escalation.

Time is always an argument (``now_ms``): live callers pass the wall clock, replay
passes event time, and the same inputs give the same messages.  ``on_alert`` only
updates state; ``tick`` returns the messages that became due.  Group timers run on
their own schedule (first flush ``group_wait`` after the group's first alert, then
every ``group_interval``), so the output does not depend on how often ``tick`` is
called.

The stages, each in its own module (vocabulary as in Prometheus Alertmanager):

- routes (:mod:`stream.alerting.routes`): where alerts of some labels go.
- groups (:mod:`stream.alerting.groups`): alerts of one route with equal ``group_by``
  label values; one message per flush, on the group's timers.
- mute stages, in order: silences (:mod:`stream.alerting.silences`), then
  inhibition (:mod:`stream.alerting.inhibit`); the first that mutes names the reason.
- this module: dedup, repeats, acks, escalation and rendering the messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from stream.alerting.delivery import Message
from stream.alerting.groups import EVAL, Group, Groups
from stream.alerting.inhibit import Inhibitor, is_peer_mute
from stream.alerting.record import AlertRecord
from stream.alerting.routes import Router, group_key
from stream.alerting.silences import ControlEvent, Silence, SilenceSet
from stream.alerting.templates import Kind, render
from stream.config import InhibitRule, RouteConfig
from stream.judge.judgement import severity_rank

if TYPE_CHECKING:
    from stream.alerting.history import AlertHistory

CRITICAL = severity_rank("critical")
# Episodes (alert_ids) remembered as over, so a replayed firing record never re-pages;
# a replay reaches back at most a checkpoint interval, far fewer episodes than this.
ENDED_KEPT = 10_000


@dataclass
class _Alert:
    record: AlertRecord
    labels: dict[str, str]
    groups: set[str] = field(default_factory=set)
    acked_by: str | None = None
    muted: str | None = None  # last mute reason written to history

    @classmethod
    def of(cls, record: AlertRecord) -> _Alert:
        return cls(record, record.labels)

    @property
    def fp(self) -> str:
        return self.record.fingerprint

    @property
    def alert_id(self) -> str:
        return self.record.alert_id

    @property
    def firing(self) -> bool:
        return self.record.firing

    @property
    def rank(self) -> int:
        return self.record.rank


class Dispatcher:
    """Turns alert v1 records into :class:`~stream.alerting.delivery.Message` objects.

    >>> d = Dispatcher([RouteConfig("oncall", group_wait_s=30)], [], SilenceSet())
    >>> rec = AlertRecord("a1", "f1", "firing", "critical", "errors", "error_rate",
    ...                   {"provider": "alipay"}, started_at=0, window_end=10_000,
    ...                   value=0.3, expected=0.01)
    >>> d.on_alert(rec, now_ms=10_000)
    True
    >>> d.on_alert(rec, now_ms=11_000)  # the same record again: nothing
    False
    >>> d.tick(39_999)
    []
    >>> [(m.route, m.alert_ids, m.title) for m in d.tick(40_000)]
    [('oncall', ('a1',), '[CRITICAL] alipay: error rate 30.0% vs 1.0% expected')]
    """

    def __init__(
        self,
        routes: Sequence[RouteConfig],
        inhibit_rules: Sequence[InhibitRule] = (),
        silences: SilenceSet | None = None,
        *,
        default_inhibit: bool = True,
        history: AlertHistory | None = None,
    ) -> None:
        self.router = Router(routes)
        self.routes = self.router.routes
        self.silences = silences if silences is not None else SilenceSet()
        self.history = history
        self._alerts: dict[str, _Alert] = {}
        self.inhibitor = Inhibitor(
            inhibit_rules,
            lambda: (a.record for a in self._alerts.values() if a.firing),
            default_inhibit=default_inhibit,
        )
        self._groups = Groups()
        self._outbox: list[Message] = []
        self._clock = 0
        self._ended: dict[str, int] = {}  # alert_id → window_end of its resolution
        self._seq = 0  # messages emitted so far: each message's id in the notification log
        self.evaluations = 0  # group evaluations run so far (a progress mark for live tests)

    # -- inputs -----------------------------------------------------------------------

    def on_alert(self, record: AlertRecord | Mapping[str, Any], now_ms: int) -> bool:
        """Take one alert record (or its alert v1 object); False when it is a duplicate or
        stale (ignored).  The record goes to history even when muted; messages come out
        of ``tick``.
        """
        self._advance(now_ms)
        rec = record if isinstance(record, AlertRecord) else AlertRecord.from_dict(record)
        if self.history is not None:
            self.history.record_alert(rec, now_ms)
        if rec.alert_id in self._ended:
            return False  # the episode is over: a replayed record (after a crash)
        cur = self._alerts.get(rec.fingerprint)
        if not rec.firing:
            self._end(rec)
        if cur is not None:
            if cur.alert_id == rec.alert_id:
                if not cur.firing:  # episode over: anything more is a replayed duplicate
                    return False
                if rec.firing and rec.window_end <= cur.record.window_end:
                    return False
            elif rec.started_at < cur.record.started_at:
                return False  # an older episode arriving late
        elif not rec.firing:
            return True  # resolved without a known firing (e.g. after a restart): nothing told
        alert = _Alert.of(rec)
        if cur is not None:
            alert.groups = cur.groups
            if cur.alert_id == rec.alert_id:
                alert.acked_by, alert.muted = cur.acked_by, cur.muted
        self._alerts[rec.fingerprint] = alert
        self.inhibitor.invalidate()
        self._route(alert, now_ms)
        return True

    def _end(self, rec: AlertRecord) -> None:
        self._ended[rec.alert_id] = rec.window_end
        if len(self._ended) > ENDED_KEPT:
            del self._ended[next(iter(self._ended))]

    def ack(self, target: str, author: str, now_ms: int, comment: str = "") -> list[str]:
        """Acknowledge by alert_id or fingerprint: stops repeats and escalation.

        Returns the alert_ids acknowledged (empty when nothing current matches).
        """
        self._advance(now_ms)
        hit = [a for a in self._alerts.values() if target in (a.alert_id, a.fp)]
        for a in hit:
            a.acked_by = author or "?"
        ids = [a.alert_id for a in hit]
        if self.history is not None:
            self.history.record_ack(target, ids, author, now_ms, comment)
        return ids

    def apply_control(self, event: ControlEvent, now_ms: int) -> bool:
        """Apply one ``paywatch.control`` event (silence, unsilence or ack)."""
        self._advance(now_ms)
        ts = event.ts_ms if event.ts_ms is not None else now_ms
        if event.kind == "ack" and event.target is not None:
            return bool(self.ack(event.target, event.author, ts, event.comment))
        if event.kind == "unsilence" and event.silence_id is not None:
            event = ControlEvent(
                "unsilence", silence_id=event.silence_id, author=event.author, ts_ms=ts
            )
        changed = self.silences.apply(event)
        if self.history is not None:
            if event.kind == "silence" and event.silence is not None:
                self.history.record_silence(event.silence, now_ms)
            elif event.kind == "unsilence" and event.silence_id is not None and changed:
                self.history.expire_silence(event.silence_id, ts)
        return changed

    def tick(self, now_ms: int) -> list[Message]:
        """Messages that became due by ``now_ms``, oldest first."""
        self._advance(now_ms)
        out, self._outbox = self._outbox, []
        return out

    # -- checkpoint ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state, so a restarted worker neither re-pages nor forgets acks."""
        return {
            "version": 1,
            "clock": self._clock,
            "alerts": [
                {"record": a.record.to_dict(), "acked_by": a.acked_by, "muted": a.muted}
                for a in self._alerts.values()
            ],
            "groups": [
                {
                    "key": g.key,
                    "route": g.route.name,
                    "members": sorted(g.members),
                    "sent": {fp: list(v) for fp, v in sorted(g.sent.items())},
                    "last_sent_ms": g.last_sent_ms,
                    "repeats": g.repeats,
                    "crit_since_ms": g.crit_since_ms,
                    "escalated": g.escalated,
                    "next_eval_ms": g.next_eval_ms,
                }
                for g in self._groups.by_key.values()
            ],
            "silences": self.silences.to_list(),
            "outbox": [asdict(m) for m in self._outbox],
            "ended": list(self._ended.items()),
            "seq": self._seq,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a :meth:`snapshot` into this (fresh) dispatcher built from the current config.

        Groups whose route no longer exists are dropped and their alerts routed afresh.
        """
        if state.get("version") != 1:
            raise ValueError(f"dispatcher state version {state.get('version')!r} is not 1")
        self._clock = int(state.get("clock") or 0)
        self._ended = {str(a): int(w) for a, w in state.get("ended", ())}
        self._seq = int(state.get("seq") or 0)
        self._alerts = {}
        for item in state.get("alerts", ()):
            a = _Alert.of(AlertRecord.from_dict(item["record"]))
            a.acked_by, a.muted = item.get("acked_by"), item.get("muted")
            self._alerts[a.fp] = a
            if a.firing and is_peer_mute(a.muted):
                self.inhibitor.keep_peer_mute(a.alert_id, str(a.muted), a.rank)
        self._groups.clear()
        self.inhibitor.invalidate()
        for item in state.get("groups", ()):
            self._restore_group(item)
        for a in self._alerts.values():
            if a.firing and not a.groups:
                self._route(a, self._clock)
        for item in state.get("silences", ()):
            self.silences.add(Silence.from_dict(item))
        self._outbox = [
            Message(**{**m, "alert_ids": tuple(m["alert_ids"])}) for m in state.get("outbox", ())
        ]

    def _restore_group(self, item: Mapping[str, Any]) -> None:
        route = self.routes.get(item["route"])
        if route is None:
            return
        g = Group(item["key"], route, set(item["members"]) & set(self._alerts))
        g.sent = {fp: (str(v[0]), int(v[1])) for fp, v in item.get("sent", {}).items()}
        g.last_sent_ms, g.repeats = item.get("last_sent_ms"), int(item.get("repeats") or 0)
        g.crit_since_ms, g.escalated = item.get("crit_since_ms"), bool(item.get("escalated"))
        self._groups.by_key[g.key] = g
        for fp in g.members:
            self._alerts[fp].groups.add(g.key)
        self._groups.schedule_eval(g, int(item["next_eval_ms"]))
        if g.crit_since_ms is not None and route.escalate_after_s is not None:
            due = g.crit_since_ms + int(route.escalate_after_s * 1000)
            self._groups.schedule_escalation(g, due)

    # -- state for the CLI and tests ----------------------------------------------------

    def firing(self) -> list[AlertRecord]:
        """Current firing records (muted ones included)."""
        return [a.record for a in self._alerts.values() if a.firing]

    def group_keys(self) -> list[str]:
        return sorted(self._groups.by_key)

    def next_due(self) -> int | None:
        """When the next timer runs (ms), for a live loop that sleeps until then."""
        return self._groups.next_due()

    # -- routing and timers -----------------------------------------------------------------

    def _route(self, alert: _Alert, now_ms: int) -> None:
        groups = self._groups.by_key
        wanted = {group_key(r, alert.labels): r for r in self.router.routes_for(alert.labels)}
        for key in alert.groups - set(wanted):  # severity moved it to another route
            g = groups.get(key)
            if g is not None:
                g.members.discard(alert.fp)
                g.sent.pop(alert.fp, None)
        alert.groups = set(wanted)
        for key, route in wanted.items():
            g = groups.get(key)
            if g is None:
                g = groups[key] = Group(key, route)
                self._groups.schedule_eval(g, now_ms + int(route.group_wait_s * 1000))
            g.members.add(alert.fp)

    def _advance(self, now_ms: int) -> None:
        self._clock = max(self._clock, now_ms)
        while (due := self._groups.pop_due(now_ms)) is not None:
            due_ms, g, kind = due
            if kind == EVAL:
                self._evaluate(g, due_ms)
                if g.key in self._groups.by_key:
                    self._groups.schedule_eval(g, due_ms + int(g.route.group_interval_s * 1000))
            else:
                self._maybe_escalate(g, due_ms)

    # -- muting: the silence stage, then the inhibition stage -------------------------------

    def _mute_reason(self, alert: _Alert, now_ms: int) -> str | None:
        return self.silences.mute_reason(alert.labels, now_ms) or self.inhibitor.mute_reason(
            alert.record
        )

    def _note_mute(self, alert: _Alert, reason: str | None, now_ms: int) -> None:
        if reason != alert.muted:
            alert.muted = reason
            if self.history is not None:
                self.history.record_mute(alert.alert_id, reason, now_ms)

    # -- flushing ---------------------------------------------------------------------------

    def _sort_members(
        self, g: Group, now_ms: int
    ) -> tuple[list[_Alert], list[_Alert], list[_Alert], int]:
        """(firing unmuted, new of those, resolved to tell, muted count); drops resolved."""
        firing: list[_Alert] = []
        new: list[_Alert] = []
        resolved: list[_Alert] = []
        muted = 0
        for fp in sorted(g.members):
            a = self._alerts.get(fp)
            if a is None:
                g.members.discard(fp)
                continue
            reason = self._mute_reason(a, now_ms)
            if a.firing:
                self._note_mute(a, reason, now_ms)
                if reason is not None:
                    muted += 1
                    continue
                firing.append(a)
                told = g.sent.get(fp)
                if told is None or told[0] != a.alert_id or a.rank > told[1]:
                    new.append(a)
            else:
                told = g.sent.pop(fp, None)
                if told is not None and told[0] == a.alert_id and reason is None:
                    resolved.append(a)
                g.members.discard(fp)
                a.groups.discard(g.key)
                if not a.groups and self._alerts.get(fp) is a:
                    del self._alerts[fp]
                    self.inhibitor.invalidate()
        return firing, new, resolved, muted

    def _evaluate(self, g: Group, now_ms: int) -> None:
        self.evaluations += 1
        firing, new, resolved, muted = self._sort_members(g, now_ms)
        unacked = [a for a in firing if a.acked_by is None]
        if new or resolved:
            self._emit(g, g.route, firing, resolved, now_ms, "notify", muted)
            g.repeats = 0
            g.last_sent_ms = now_ms
            for a in new:
                g.sent[a.fp] = (a.alert_id, a.rank)
        elif (
            unacked
            and g.last_sent_ms is not None
            and now_ms - g.last_sent_ms >= g.route.repeat_interval_s * 1000
            and (g.route.max_repeats is None or g.repeats < g.route.max_repeats)
        ):
            g.repeats += 1
            g.last_sent_ms = now_ms
            self._emit(g, g.route, firing, [], now_ms, "repeat", muted, repeat=g.repeats)
        # Escalation clock: from the first notification that told of an unacked critical.
        crit = [a for a in unacked if a.rank == CRITICAL and a.fp in g.sent]
        if not crit:
            g.crit_since_ms, g.escalated = None, False
        elif g.crit_since_ms is None and g.route.escalate_after_s is not None:
            g.crit_since_ms = now_ms
            self._groups.schedule_escalation(g, now_ms + int(g.route.escalate_after_s * 1000))
        if not g.members:
            del self._groups.by_key[g.key]

    def _maybe_escalate(self, g: Group, now_ms: int) -> None:
        route = g.route
        if g.escalated or g.crit_since_ms is None or route.escalate_to is None:
            return
        assert route.escalate_after_s is not None
        if now_ms < g.crit_since_ms + route.escalate_after_s * 1000:
            return  # a stale timer from an earlier critical spell
        crit = []
        for fp in sorted(g.members):
            a = self._alerts.get(fp)
            if a is None or not a.firing or a.rank != CRITICAL or a.acked_by is not None:
                continue
            if self._mute_reason(a, now_ms) is None:
                crit.append(a)
        if not crit:
            return
        g.escalated = True
        target = self.routes[route.escalate_to]
        self._emit(
            g, target, crit, [], now_ms, "escalation", 0, unacked_ms=now_ms - g.crit_since_ms
        )

    def _emit(
        self,
        g: Group,
        route: RouteConfig,
        firing: Sequence[_Alert],
        resolved: Sequence[_Alert],
        now_ms: int,
        kind: Kind,
        muted: int,
        *,
        repeat: int = 0,
        unacked_ms: int = 0,
    ) -> None:
        title, body = render(
            [a.record for a in firing],
            [a.record for a in resolved],
            now_ms=now_ms,
            language=route.language,
            fmt=route.body_format,
            muted=muted,
            kind=kind,
            repeat=repeat,
            unacked_ms=unacked_ms,
        )
        told = list(firing) or list(resolved)
        worst = max(told, key=lambda a: a.rank)
        self._seq += 1
        msg = Message(
            id=str(self._seq),
            title=title,
            body=body,
            alert_ids=tuple(a.alert_id for a in [*firing, *resolved]),
            group_key=g.key,
            severity=worst.record.severity or "info",
            route=route.name,
            body_format=route.body_format,
        )
        self._outbox.append(msg)
        if self.history is not None:
            self.history.record_notification(msg, now_ms, kind)
