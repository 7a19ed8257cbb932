"""From alert v1 records to messages for people: Alertmanager-style routing, grouping,
inhibition, silences, repeats, acks and escalation.

Time is always an argument (``now_ms``): live callers pass the wall clock, replay
passes event time, and the same inputs give the same messages.  ``on_alert`` only
updates state; ``tick`` returns the messages that became due.  Group timers run on
their own schedule (first flush ``group_wait`` after the group's first alert, then
every ``group_interval``), so the output does not depend on how often ``tick`` is
called.

Vocabulary (as in Prometheus Alertmanager):

- route: where alerts of some labels go; the first matching route wins unless
  it has ``continue_``; a route named ``default`` (or a built-in one) takes the rest.
- group: alerts of one route with equal ``group_by`` label values; one message per flush.
- inhibition: a firing alert mutes others.  By default an alert of series
  ``{provider=X}`` mutes the same rule/signal on series beneath it
  (``{provider=X, merchant_id=...}``), so a provider outage pages once, not per merchant.
- silence: a time-boxed mute by label matchers (see ``stream.alerting.silences``).
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

from stream.alerting.delivery import Channel, Message, RouteTargets
from stream.alerting.record import AlertRecord
from stream.alerting.silences import ControlEvent, Silence, SilenceSet, alert_labels
from stream.alerting.templates import FORMATS, LANGUAGES, Kind, render

if TYPE_CHECKING:
    from stream.alerting.history import AlertHistory

SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
ALL_LABELS = "..."  # group_by value meaning "every label": one group per alert


class DispatchConfigError(ValueError):
    """A route or inhibit rule that cannot work; the message is one line for a person."""


def _compile(where: str, patterns: Mapping[str, str]) -> dict[str, re.Pattern[str]]:
    out = {}
    for label, rx in patterns.items():
        try:
            out[label] = re.compile(rx)
        except re.error as exc:
            raise DispatchConfigError(f"{where}: bad regex for {label!r}: {exc}") from None
    return out


def _labels_match(
    labels: Mapping[str, str], match: Mapping[str, str], match_re: Mapping[str, re.Pattern[str]]
) -> bool:
    if any(labels.get(k, "") != str(v) for k, v in match.items()):
        return False
    return all(rx.fullmatch(labels.get(k, "")) for k, rx in match_re.items())


@dataclass(frozen=True)
class RouteConfig:
    """Where alerts go and how often people hear about them.

    ``receivers`` are Apprise URLs (delivery's business); ``fallback`` names the
    route delivery uses when every receiver keeps failing; ``escalate_to`` names the
    route that gets an unacknowledged critical group ``escalate_after_s`` after its
    first notification (a route named as an ``escalate_to`` is reached only that way).
    """

    name: str
    match: Mapping[str, str] = field(default_factory=dict)
    match_re: Mapping[str, str] = field(default_factory=dict)
    receivers: tuple[str, ...] = ()
    group_by: tuple[str, ...] = ("rule", "provider")
    group_wait_s: float = 30.0
    group_interval_s: float = 300.0
    repeat_interval_s: float = 4 * 3600.0
    max_repeats: int | None = None  # None: repeat while firing and unacknowledged
    continue_: bool = False
    language: str = "en"
    body_format: str = "markdown"  # markdown | text (SMS, e-mail subjects)
    fallback: str | None = None
    escalate_after_s: float | None = None
    escalate_to: str | None = None

    def __post_init__(self) -> None:
        where = f"route {self.name!r}"
        if not self.name:
            raise DispatchConfigError("a route needs a name")
        if self.group_wait_s < 0:
            raise DispatchConfigError(f"{where}: group_wait_s must be >= 0")
        for key in ("group_interval_s", "repeat_interval_s"):
            if not getattr(self, key) > 0:
                raise DispatchConfigError(f"{where}: {key} must be > 0")
        if self.max_repeats is not None and self.max_repeats < 0:
            raise DispatchConfigError(f"{where}: max_repeats must be >= 0")
        if self.language not in LANGUAGES:
            raise DispatchConfigError(f"{where}: language must be one of {', '.join(LANGUAGES)}")
        if self.body_format not in FORMATS:
            raise DispatchConfigError(f"{where}: body_format must be one of {', '.join(FORMATS)}")
        if (self.escalate_after_s is None) != (self.escalate_to is None):
            raise DispatchConfigError(f"{where}: escalate_after_s and escalate_to go together")
        if self.escalate_after_s is not None and self.escalate_after_s < 0:
            raise DispatchConfigError(f"{where}: escalate_after_s must be >= 0")
        object.__setattr__(self, "receivers", tuple(self.receivers))
        object.__setattr__(self, "group_by", tuple(self.group_by))
        _compile(where, self.match_re)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> RouteConfig:
        """Build from a config mapping; ``continue`` is accepted for ``continue_``."""
        known = set(cls.__dataclass_fields__)
        data = dict(obj)
        if "continue" in data:
            data["continue_"] = data.pop("continue")
        unknown = sorted(set(data) - known)
        if unknown:
            raise DispatchConfigError(
                f"route {data.get('name')!r}: unknown key(s) {', '.join(unknown)}"
            )
        for key in ("receivers", "group_by"):
            if isinstance(data.get(key), str):
                data[key] = (data[key],)
        return cls(**data)


@dataclass(frozen=True)
class InhibitRule:
    """While an alert matching ``source_match`` fires, mute alerts matching ``target_match``
    whose ``equal`` labels have the same values (a missing label counts as empty)."""

    source_match: Mapping[str, str] = field(default_factory=dict)
    target_match: Mapping[str, str] = field(default_factory=dict)
    equal: tuple[str, ...] = ()
    source_match_re: Mapping[str, str] = field(default_factory=dict)
    target_match_re: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "equal", tuple(self.equal))
        object.__setattr__(self, "_src_re", _compile("inhibit source", self.source_match_re))
        object.__setattr__(self, "_tgt_re", _compile("inhibit target", self.target_match_re))

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> InhibitRule:
        """Build from a config mapping (Alertmanager's key names)."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(obj) - known)
        if unknown:
            raise DispatchConfigError(f"inhibit rule: unknown key(s) {', '.join(unknown)}")
        data = dict(obj)
        if isinstance(data.get("equal"), str):
            data["equal"] = (data["equal"],)
        return cls(**data)

    def is_source(self, labels: Mapping[str, str]) -> bool:
        return _labels_match(labels, self.source_match, self._src_re)  # type: ignore[attr-defined]

    def is_target(self, labels: Mapping[str, str]) -> bool:
        return _labels_match(labels, self.target_match, self._tgt_re)  # type: ignore[attr-defined]

    def inhibits(self, source: Mapping[str, str], target: Mapping[str, str]) -> bool:
        return (
            self.is_target(target)
            and self.is_source(source)
            and all(source.get(k, "") == target.get(k, "") for k in self.equal)
        )


@dataclass
class _Alert:
    record: dict[str, Any]
    labels: dict[str, str]
    groups: set[str] = field(default_factory=set)
    acked_by: str | None = None
    muted: str | None = None  # last mute reason written to history
    items: tuple[tuple[str, str], ...] = ()  # sorted series items, the inhibition index key

    def __post_init__(self) -> None:
        series = self.record.get("series") or {}
        self.items = tuple(sorted((str(k), str(v)) for k, v in series.items()))

    @property
    def fp(self) -> str:
        return str(self.record["fingerprint"])

    @property
    def alert_id(self) -> str:
        return str(self.record["alert_id"])

    @property
    def firing(self) -> bool:
        return self.record.get("status") == "firing"

    @property
    def rank(self) -> int:
        return SEVERITY_RANK.get(str(self.record.get("severity")), 9)


_Sources = dict[tuple[str, ...], list[_Alert]]  # inhibiting alerts by their `equal` values


@dataclass
class _Group:
    key: str
    route: RouteConfig
    members: set[str] = field(default_factory=set)  # fingerprints
    sent: dict[str, tuple[str, int]] = field(default_factory=dict)  # fp → (alert_id, rank) told
    last_sent_ms: int | None = None
    repeats: int = 0
    crit_since_ms: int | None = None  # first notification carrying an unacked critical
    escalated: bool = False
    eval_token: int = 0
    next_eval_ms: int = 0


class Dispatcher:
    """Turns alert v1 records into :class:`~stream.alerting.delivery.Message` objects.

    >>> d = Dispatcher([RouteConfig("oncall", group_wait_s=30)], [], SilenceSet())
    >>> rec = {"alert_id": "a1", "fingerprint": "f1", "status": "firing",
    ...        "severity": "critical", "rule": "errors", "signal": "error_rate",
    ...        "series": {"provider": "alipay"}, "started_at": 0, "window_end": 10_000,
    ...        "value": 0.3, "expected": 0.01}
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
        names = [r.name for r in routes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DispatchConfigError(f"route name(s) used twice: {', '.join(dupes)}")
        self.routes: dict[str, RouteConfig] = {r.name: r for r in routes}
        self.default_route = self.routes.get("default") or RouteConfig("default")
        self.routes.setdefault("default", self.default_route)
        for r in routes:
            if r.escalate_to is not None and r.escalate_to not in self.routes:
                raise DispatchConfigError(
                    f"route {r.name!r}: escalate_to names unknown route {r.escalate_to!r}"
                )
            if r.fallback is not None and r.fallback not in self.routes:
                raise DispatchConfigError(
                    f"route {r.name!r}: fallback names unknown route {r.fallback!r}"
                )
        escalation_only = {r.escalate_to for r in routes if r.escalate_to}
        self._matchable = [
            (r, _compile(f"route {r.name!r}", r.match_re))
            for r in routes
            if r.name != "default" and r.name not in escalation_only
        ]
        self.inhibit_rules = list(inhibit_rules)
        self.silences = silences if silences is not None else SilenceSet()
        self.default_inhibit = default_inhibit
        self.history = history
        self._alerts: dict[str, _Alert] = {}
        self._groups: dict[str, _Group] = {}
        # (due_ms, group_key, kind, token): lazily invalidated timers.
        self._timers: list[tuple[int, str, int, int]] = []
        self._outbox: list[Message] = []
        self._clock = 0
        self._index: (
            tuple[dict[tuple[Any, Any, tuple[tuple[str, str], ...]], list[_Alert]], list[_Sources]]
            | None
        ) = None

    # -- inputs -----------------------------------------------------------------------

    def on_alert(self, record: AlertRecord | Mapping[str, Any], now_ms: int) -> bool:
        """Take one alert v1 record; False when it is a duplicate or stale (ignored).

        The record goes to history even when muted; messages come out of ``tick``.
        """
        self._advance(now_ms)
        rec = record.to_dict() if isinstance(record, AlertRecord) else dict(record)
        for key in ("alert_id", "fingerprint", "status", "series", "rule"):
            if key not in rec:
                raise ValueError(f"alert record lacks {key!r}")
        if self.history is not None:
            self.history.record_alert(rec, now_ms)
        fp = str(rec["fingerprint"])
        cur = self._alerts.get(fp)
        wend = int(rec.get("window_end") or 0)
        if cur is not None:
            same_episode = cur.alert_id == rec["alert_id"]
            if same_episode:
                if not cur.firing:  # episode over: anything more is a replayed duplicate
                    return False
                if rec["status"] == "firing" and wend <= int(cur.record.get("window_end") or 0):
                    return False
            elif int(rec.get("started_at") or 0) < int(cur.record.get("started_at") or 0):
                return False  # an older episode arriving late
        elif rec["status"] != "firing":
            return True  # resolved without a known firing (e.g. after a restart): nothing told
        if cur is None or cur.alert_id != rec["alert_id"]:
            alert = _Alert(rec, alert_labels(rec))
            if cur is not None:
                alert.groups = cur.groups
            self._alerts[fp] = alert
        else:
            alert = cur
            alert.record = rec
            alert.labels = alert_labels(rec)
            alert.__post_init__()
        self._index = None
        self._route(alert, now_ms)
        return True

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
                {"record": a.record, "acked_by": a.acked_by, "muted": a.muted}
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
                for g in self._groups.values()
            ],
            "silences": self.silences.to_list(),
            "outbox": [asdict(m) for m in self._outbox],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a :meth:`snapshot` into this (fresh) dispatcher built from the current config.

        Groups whose route no longer exists are dropped and their alerts routed afresh.
        """
        if state.get("version") != 1:
            raise ValueError(f"dispatcher state version {state.get('version')!r} is not 1")
        self._clock = int(state.get("clock") or 0)
        self._alerts = {}
        for item in state.get("alerts", ()):
            a = _Alert(dict(item["record"]), alert_labels(item["record"]))
            a.acked_by, a.muted = item.get("acked_by"), item.get("muted")
            self._alerts[a.fp] = a
        self._groups, self._timers, self._index = {}, [], None
        for item in state.get("groups", ()):
            route = self.routes.get(item["route"])
            if route is None:
                continue
            g = _Group(item["key"], route, set(item["members"]) & set(self._alerts))
            g.sent = {fp: (str(v[0]), int(v[1])) for fp, v in item.get("sent", {}).items()}
            g.last_sent_ms, g.repeats = item.get("last_sent_ms"), int(item.get("repeats") or 0)
            g.crit_since_ms, g.escalated = item.get("crit_since_ms"), bool(item.get("escalated"))
            self._groups[g.key] = g
            for fp in g.members:
                self._alerts[fp].groups.add(g.key)
            self._schedule_eval(g, int(item["next_eval_ms"]))
            if g.crit_since_ms is not None and route.escalate_after_s is not None:
                due = g.crit_since_ms + int(route.escalate_after_s * 1000)
                heapq.heappush(self._timers, (due, g.key, self._ESC, 0))
        for a in self._alerts.values():
            if a.firing and not a.groups:
                self._route(a, self._clock)
        for item in state.get("silences", ()):
            self.silences.add(Silence.from_dict(item))
        self._outbox = [
            Message(**{**m, "alert_ids": tuple(m["alert_ids"])}) for m in state.get("outbox", ())
        ]

    # -- state for the CLI and tests ----------------------------------------------------

    def firing(self) -> list[dict[str, Any]]:
        """Current firing records (muted ones included)."""
        return [a.record for a in self._alerts.values() if a.firing]

    def group_keys(self) -> list[str]:
        return sorted(self._groups)

    def next_due(self) -> int | None:
        """When the next timer runs (ms), for a live loop that sleeps until then."""
        while self._timers and not self._timer_valid(self._timers[0]):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    # -- routing and grouping -------------------------------------------------------------

    def _routes_for(self, labels: Mapping[str, str]) -> list[RouteConfig]:
        hits = []
        for route, rx in self._matchable:
            if _labels_match(labels, route.match, rx):
                hits.append(route)
                if not route.continue_:
                    return hits
        return hits or [self.default_route]

    def _group_key(self, route: RouteConfig, labels: Mapping[str, str]) -> str:
        keys = sorted(labels) if ALL_LABELS in route.group_by else sorted(route.group_by)
        inner = ",".join(f"{k}={json.dumps(labels.get(k, ''), ensure_ascii=False)}" for k in keys)
        return f"{route.name}:{{{inner}}}"

    def _route(self, alert: _Alert, now_ms: int) -> None:
        wanted = {self._group_key(r, alert.labels): r for r in self._routes_for(alert.labels)}
        for key in alert.groups - set(wanted):  # severity moved it to another route
            g = self._groups.get(key)
            if g is not None:
                g.members.discard(alert.fp)
                g.sent.pop(alert.fp, None)
        alert.groups = set(wanted)
        for key, route in wanted.items():
            g = self._groups.get(key)
            if g is None:
                g = self._groups[key] = _Group(key, route)
                self._schedule_eval(g, now_ms + int(route.group_wait_s * 1000))
            g.members.add(alert.fp)

    # -- timers -----------------------------------------------------------------------------

    _EVAL, _ESC = 0, 1

    def _schedule_eval(self, g: _Group, due_ms: int) -> None:
        g.eval_token += 1
        g.next_eval_ms = due_ms
        heapq.heappush(self._timers, (due_ms, g.key, self._EVAL, g.eval_token))

    def _timer_valid(self, timer: tuple[int, str, int, int]) -> bool:
        _, key, kind, token = timer
        g = self._groups.get(key)
        if g is None:
            return False
        return token == g.eval_token if kind == self._EVAL else not g.escalated

    def _advance(self, now_ms: int) -> None:
        self._clock = max(self._clock, now_ms)
        while self._timers and self._timers[0][0] <= now_ms:
            timer = heapq.heappop(self._timers)
            if not self._timer_valid(timer):
                continue
            due, key, kind, _ = timer
            g = self._groups[key]
            if kind == self._EVAL:
                self._evaluate(g, due)
                if key in self._groups:
                    self._schedule_eval(g, due + int(g.route.group_interval_s * 1000))
            else:
                self._maybe_escalate(g, due)

    # -- muting -----------------------------------------------------------------------------

    def _mute_reason(self, alert: _Alert, now_ms: int) -> str | None:
        s = self.silences.is_silenced(alert.labels, now_ms)
        if s is not None:
            return f"silenced by {s.id}"
        if not alert.firing:
            return None
        by_series, by_rule = self._inhibit_index()
        if self.default_inhibit:
            rec, items = alert.record, alert.items
            # Every broader series: the non-empty proper subsets of this one (series are small).
            for size in range(1, len(items)):
                for sub in combinations(items, size):
                    for src in by_series.get((rec.get("rule"), rec.get("signal"), sub), ()):
                        if src.rank <= alert.rank:
                            return f"inhibited by {src.alert_id}"
        for rule, sources in zip(self.inhibit_rules, by_rule, strict=True):
            if sources and rule.is_target(alert.labels):
                key = tuple(alert.labels.get(k, "") for k in rule.equal)
                for src in sources.get(key, ()):
                    if src is not alert:
                        return f"inhibited by {src.alert_id}"
        return None

    def _inhibit_index(
        self,
    ) -> tuple[dict[tuple[Any, Any, tuple[tuple[str, str], ...]], list[_Alert]], list[_Sources]]:
        """Firing alerts indexed for inhibition; rebuilt only after alerts changed."""
        if self._index is None:
            by_series: dict[tuple[Any, Any, tuple[tuple[str, str], ...]], list[_Alert]] = {}
            by_rule: list[_Sources] = [{} for _ in self.inhibit_rules]
            for a in self._alerts.values():
                if not a.firing:
                    continue
                rec = a.record
                items = tuple(
                    sorted((str(k), str(v)) for k, v in (rec.get("series") or {}).items())
                )
                by_series.setdefault((rec.get("rule"), rec.get("signal"), items), []).append(a)
                for rule, idx in zip(self.inhibit_rules, by_rule, strict=True):
                    if rule.is_source(a.labels):
                        key = tuple(a.labels.get(k, "") for k in rule.equal)
                        idx.setdefault(key, []).append(a)
            for group in (*by_series.values(), *(v for idx in by_rule for v in idx.values())):
                group.sort(key=lambda a: (a.rank, a.fp))  # deterministic "inhibited by"
            self._index = (by_series, by_rule)
        return self._index

    def _note_mute(self, alert: _Alert, reason: str | None, now_ms: int) -> None:
        if reason != alert.muted:
            alert.muted = reason
            if self.history is not None:
                self.history.record_mute(alert.alert_id, reason, now_ms)

    # -- flushing ---------------------------------------------------------------------------

    def _evaluate(self, g: _Group, now_ms: int) -> None:
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
                if told is None or told[0] != a.alert_id or a.rank < told[1]:
                    new.append(a)
            else:
                told = g.sent.pop(fp, None)
                if told is not None and told[0] == a.alert_id and reason is None:
                    resolved.append(a)
                g.members.discard(fp)
                a.groups.discard(g.key)
                if not a.groups and self._alerts.get(fp) is a:
                    del self._alerts[fp]
                    self._index = None
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
        crit = [a for a in unacked if a.rank == 0 and a.fp in g.sent]
        if not crit:
            g.crit_since_ms, g.escalated = None, False
        elif g.crit_since_ms is None and g.route.escalate_after_s is not None:
            g.crit_since_ms = now_ms
            due = now_ms + int(g.route.escalate_after_s * 1000)
            heapq.heappush(self._timers, (due, g.key, self._ESC, 0))
        if not g.members:
            del self._groups[g.key]

    def _maybe_escalate(self, g: _Group, now_ms: int) -> None:
        route = g.route
        if g.escalated or g.crit_since_ms is None or route.escalate_to is None:
            return
        assert route.escalate_after_s is not None
        if now_ms < g.crit_since_ms + route.escalate_after_s * 1000:
            return  # a stale timer from an earlier critical spell
        crit = []
        for fp in sorted(g.members):
            a = self._alerts.get(fp)
            if a is None or not a.firing or a.rank != 0 or a.acked_by is not None:
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
        g: _Group,
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
        severity = min((a.record.get("severity", "info") for a in told), key=_rank)
        msg = Message(
            title=title,
            body=body,
            alert_ids=tuple(a.alert_id for a in [*firing, *resolved]),
            group_key=g.key,
            severity=str(severity),
            route=route.name,
            body_format=route.body_format,
        )
        self._outbox.append(msg)
        if self.history is not None:
            self.history.record_notification(msg, now_ms, kind)


def _rank(severity: Any) -> int:
    return SEVERITY_RANK.get(str(severity), 9)


def route_targets(routes: Iterable[RouteConfig]) -> dict[str, RouteTargets]:
    """Delivery's view of the routes, by name (for ``Deliverer(routes=...)``)."""
    out: dict[str, RouteTargets] = {}
    for r in routes:
        out[r.name] = RouteTargets(
            r.name, tuple(Channel(url) for url in r.receivers), fallback=r.fallback
        )
    return out
