"""The inhibition stage: a firing alert mutes others (Alertmanager's inhibit rules).

By default alerts of one rule fold along the series tree, in the direction the
evidence points (attribution):

- a provider-wide incident: an alert of series ``{provider=X}`` mutes the same
  rule/signal on series beneath it (``{provider=X, merchant_id=...}``) when it is
  at least as severe, so a provider outage pages once, not per merchant;
- an outage slows calls too (a timed-out call lasts the client's timeout): a
  critical error-rate alert mutes the latency and latency-tail alerts of the series
  beneath it;
- one child carries it: when the broader alert's root-cause hints name a value
  of a firing child's series with at least :data:`CARRIES_SHARE` of the trouble
  (one merchant has most of the provider's config errors), the child pages and
  the broader alert is folded into it ("folded into <alert_id>"); slow calls being one
  trouble, a tail alert folds so into the latency alert of the merchant its hints name
  (and a latency alert into a tail alert), see :func:`may_fold`;
- one merchant at several providers: series are judged per provider (the roll-up
  tasks hold a provider's traffic), so a merchant whose keys broke everywhere fires
  one alert per provider.  The first to fire of one rule for one merchant — unless a
  broader alert of its own provider mutes it (that is the provider's incident) — mutes
  its peers (that rule's alerts of that merchant, at any level) at the other
  providers that are not more severe ("with <alert_id>: the same merchant"), so the
  merchant pages once.  The mute lasts the peer's episode (unless it grows more
  severe): peers end a window or three apart, and the one still firing when the
  first resolves is the same incident, already paged.

Configured :class:`~stream.config.InhibitRule` objects add source → target mutes (with
``first_fires``, whichever of the two began first mutes the other; the built-in rules
pair system errors with timeouts, and timeouts with the latency tail, so).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any, Protocol

from stream.alerting.matchers import from_config, matches_all
from stream.alerting.record import AlertRecord
from stream.config import InhibitRule
from stream.series import SeriesKey, is_beneath

#: Signals an outage's timed-out calls raise too (muted beneath a critical error alert).
LATENCY_SIGNALS = frozenset({"latency", "latency_tail"})
#: The series index also lists critical error-rate alerts of any rule under this rule name.
_CRITICAL_ERRORS = "critical error rate, any rule"
#: The end of the mute reason of a merchant's alert at another provider than its first.
PEER_MUTE_SUFFIX = ": the same merchant"
#: Share of a broader alert's trouble one child must carry for the child to page instead.
CARRIES_SHARE = 0.5

_SeriesIndex = dict[tuple[str, str, SeriesKey], list[AlertRecord]]
_PeerKey = tuple[str, str, str]  # rule, signal, merchant_id
_RuleIndex = dict[tuple[str, str], list[AlertRecord]]  # firing alerts by (rule, signal)
_Sources = dict[tuple[str, ...], list[AlertRecord]]  # inhibiting alerts by their `equal` values


class Inhibitor:
    """Answers "is this alert inhibited, and by which?" over the firing alerts.

    ``firing`` gives the current firing records; call :meth:`invalidate` whenever
    they change, and the index is rebuilt on the next question.
    """

    def __init__(
        self,
        rules: Sequence[InhibitRule],
        firing: Callable[[], Iterable[AlertRecord]],
        *,
        default_inhibit: bool = True,
    ) -> None:
        self.rules = list(rules)
        self.default_inhibit = default_inhibit
        self._firing = firing
        self._sources = [from_config(r.source_match, r.source_match_re) for r in self.rules]
        self._targets = [from_config(r.target_match, r.target_match_re) for r in self.rules]
        self._index: _Index | None = None
        # Peer mutes kept for the muted episode: alert_id -> (reason, rank when muted).
        self._peer_mutes: dict[str, tuple[str, int]] = {}

    def invalidate(self) -> None:
        self._index = None

    def mute_reason(self, alert: AlertRecord) -> str | None:
        """``"inhibited by <alert_id>"``, ``"folded into <alert_id>"``, ``"with
        <alert_id>: the same merchant"`` or None; only firing alerts are muted."""
        if not alert.firing:
            return None
        by_series, by_rule, by_target, by_signal, by_peer = self._inhibit_index()
        if self.default_inhibit:
            reason = self._default_reason(alert, by_series, by_signal)
            if reason is None:
                reason = self._peer_mute(alert, by_series, by_peer)
            if reason is not None:
                return reason
        labels = alert.labels
        for rule, targets, sources in zip(self.rules, self._targets, by_rule, strict=True):
            if sources and matches_all(targets, labels):
                key = tuple(labels.get(k, "") for k in rule.equal)
                for src in sources.get(key, ()):
                    if src.fingerprint != alert.fingerprint and source_first(rule, src, alert):
                        return f"inhibited by {src.alert_id}"
        for rule, is_source, earlier in zip(self.rules, self._sources, by_target, strict=True):
            if earlier and matches_all(is_source, labels):  # first_fires rules only
                key = tuple(labels.get(k, "") for k in rule.equal)
                for tgt in earlier.get(key, ()):
                    if target_first(tgt, alert):
                        return f"inhibited by {tgt.alert_id}"
        return None

    def keep_peer_mute(self, alert_id: str, reason: str, rank: int) -> None:
        """Remember that episode ``alert_id`` was muted as a merchant's peer (a restored
        dispatcher calls this for the mutes it had)."""
        self._peer_mutes[alert_id] = (reason, rank)

    def _peer_mute(
        self,
        alert: AlertRecord,
        by_series: _SeriesIndex,
        by_peer: dict[_PeerKey, list[AlertRecord]],
    ) -> str | None:
        reason = _peer_reason(alert, by_series, by_peer)
        if reason is not None:
            self._peer_mutes[alert.alert_id] = (reason, alert.rank)
            return reason
        kept = self._peer_mutes.get(alert.alert_id)
        return kept[0] if kept is not None and alert.rank <= kept[1] else None

    @staticmethod
    def _default_reason(
        alert: AlertRecord, by_series: _SeriesIndex, by_signal: _RuleIndex
    ) -> str | None:
        # Carried by one child: the child pages, this broader alert folds into it.
        for child in by_signal.get((alert.rule, alert.signal), ()):
            if carries(alert, child):
                return f"folded into {child.alert_id}"
        if alert.signal in LATENCY_SIGNALS:  # slow calls: the tail's carrier is slow too
            for (_, signal), group in by_signal.items():
                if signal in LATENCY_SIGNALS and signal != alert.signal:
                    for child in group:
                        if carries(alert, child):
                            return f"folded into {child.alert_id}"
        src = _broader_source(alert, by_series)
        return None if src is None else f"inhibited by {src.alert_id}"

    def _inhibit_index(self) -> _Index:
        """Firing alerts indexed for inhibition; rebuilt only after alerts changed."""
        if self._index is None:
            by_series: _SeriesIndex = {}
            by_rule: list[_Sources] = [{} for _ in self.rules]
            by_target: list[_Sources] = [{} for _ in self.rules]  # first_fires rules only
            by_signal: _RuleIndex = {}
            by_peer: dict[_PeerKey, list[AlertRecord]] = {}
            for a in self._firing():
                by_series.setdefault((a.rule, a.signal, a.series_key), []).append(a)
                peer = merchant_peer_key(a)
                if peer is not None:
                    by_peer.setdefault(peer, []).append(a)
                if a.signal == "error_rate" and a.severity == "critical":
                    by_series.setdefault((_CRITICAL_ERRORS, a.signal, a.series_key), []).append(a)
                by_signal.setdefault((a.rule, a.signal), []).append(a)
                labels = a.labels
                for rule, sources, idx in zip(self.rules, self._sources, by_rule, strict=True):
                    if matches_all(sources, labels):
                        key = tuple(labels.get(k, "") for k in rule.equal)
                        idx.setdefault(key, []).append(a)
                for rule, targets, idx in zip(self.rules, self._targets, by_target, strict=True):
                    if rule.first_fires and matches_all(targets, labels):
                        key = tuple(labels.get(k, "") for k in rule.equal)
                        idx.setdefault(key, []).append(a)
            groups = (*by_series.values(), *by_signal.values())
            indexed = (v for idx in (*by_rule, *by_target) for v in idx.values())
            for group in (*groups, *indexed):
                group.sort(key=lambda a: (-a.rank, a.fingerprint))  # deterministic reasons
            for peers in by_peer.values():
                peers.sort(key=_first_fired)
            live = {a.alert_id for group in by_signal.values() for a in group}
            self._peer_mutes = {k: v for k, v in self._peer_mutes.items() if k in live}
            self._index = (by_series, by_rule, by_target, by_signal, by_peer)
        return self._index


_Index = tuple[
    _SeriesIndex, list[_Sources], list[_Sources], _RuleIndex, dict[_PeerKey, list[AlertRecord]]
]


def _broader_source(alert: AlertRecord, by_series: _SeriesIndex) -> AlertRecord | None:
    """The firing alert of a broader series that mutes ``alert``: the same rule at
    least as severe (and not carried by it), or for latency a critical error rate."""
    items = alert.series_key
    # Every broader series: the non-empty proper subsets of this one (series are small).
    for size in range(1, len(items)):
        for sub in combinations(items, size):
            for src in by_series.get((alert.rule, alert.signal, sub), ()):
                if src.rank >= alert.rank and not carries(src, alert):
                    return src
            if alert.signal in LATENCY_SIGNALS:
                for src in by_series.get((_CRITICAL_ERRORS, "error_rate", sub), ()):
                    return src
    return None


def merchant_peer_key(alert: AlertRecord) -> _PeerKey | None:
    """What alerts of one rule about one merchant share, at whatever provider and level
    (``[provider, merchant_id]``, ``[provider, operation, merchant_id]``): rule, signal
    and the merchant (None: not a merchant's alert at a provider).

    >>> a = AlertRecord("a", "f", "firing", "warning", "config_errors", "config_error",
    ...                 {"provider": "alipay", "merchant_id": "M1"}, started_at=0)
    >>> merchant_peer_key(a)
    ('config_errors', 'config_error', 'M1')
    """
    series = alert.series
    if "merchant_id" not in series or "provider" not in series:
        return None
    return alert.rule, alert.signal, series["merchant_id"]


def same_merchant(a: AlertRecord, b: AlertRecord) -> bool:
    """Whether ``a`` and ``b`` are one rule's alerts about one merchant at two providers."""
    key = merchant_peer_key(a)
    return (
        key is not None
        and key == merchant_peer_key(b)
        and a.series["provider"] != b.series["provider"]
    )


def _first_fired(a: AlertRecord) -> tuple[int, str]:
    return a.started_at, a.fingerprint


def is_peer_mute(reason: str | None) -> bool:
    """Whether a mute reason is the same-merchant one (:func:`_peer_reason`)."""
    return reason is not None and reason.endswith(PEER_MUTE_SUFFIX)


def _peer_reason(
    alert: AlertRecord, by_series: _SeriesIndex, by_peer: dict[_PeerKey, list[AlertRecord]]
) -> str | None:
    """``"with <alert_id>: the same merchant"`` when a peer of ``alert`` at another
    provider fired first, is at least as severe and is the merchant's own: no broader
    alert without the merchant mutes it (that would be its provider's incident).  At
    its own provider the series tree decides (broader mutes beneath, carried folds).
    A peer muted there by the merchant's broader alert mutes only if that alert fired
    before ``alert`` too: else the merchant's operation alert that fired first at
    alipay, muted by the merchant's alert across alipay's operations, would mute
    paypal's, which fired between the two and would mute the latter in turn — and no
    alert of the merchant would page."""
    key = merchant_peer_key(alert)
    if key is None:
        return None
    provider = alert.series["provider"]
    for src in by_peer.get(key, ()):
        if _first_fired(src) >= _first_fired(alert):
            return None
        if src.series["provider"] == provider or src.rank < alert.rank:
            continue
        above = _broader_source(src, by_series)
        if above is None or (
            "merchant_id" in above.series and _first_fired(above) < _first_fired(alert)
        ):
            return f"with {src.alert_id}{PEER_MUTE_SUFFIX}"
    return None


def carries(parent: AlertRecord, child: AlertRecord, min_share: float = CARRIES_SHARE) -> bool:
    """Whether ``child`` carries ``parent``'s anomaly: it may fold it (:func:`may_fold`)
    and the parent's root-cause hints name a value of the child's series with at least
    ``min_share`` of the trouble.

    >>> p = AlertRecord("p", "fp", "firing", "warning", "config_errors", "config_error",
    ...                 {"provider": "alipay"}, started_at=0,
    ...                 hints=[{"dimension": "merchant_id", "value": "M1", "share": 0.9}])
    >>> c = AlertRecord("c", "fc", "firing", "warning", "config_errors", "config_error",
    ...                 {"provider": "alipay", "operation": "refund", "merchant_id": "M1"},
    ...                 started_at=0)
    >>> carries(p, c), carries(c, p)
    (True, False)
    """
    return may_fold(parent, child) and names(parent.hints, child.series, min_share)


class _Folding(Protocol):
    rule: str
    signal: str
    series: dict[str, str]


def may_fold(parent: _Folding, child: _Folding) -> bool:
    """Whether ``parent`` folds into ``child`` when its hints name the child: an alert of
    the same rule beneath it, or — slow calls being one trouble — a latency alert under a
    tail alert or the other way round, whose series may leave out a label of the
    parent's (a merchant's calls across operations under one operation's tail) but
    agrees with every label the two share.

    >>> from types import SimpleNamespace as A
    >>> tail = A(rule="latency_tail", signal="latency_tail",
    ...          series={"provider": "alipay", "operation": "refund"})
    >>> merchant = A(rule="latency", signal="latency",
    ...              series={"provider": "alipay", "merchant_id": "M1"})
    >>> may_fold(tail, merchant), may_fold(tail, A(**{**vars(merchant), "signal": "error_rate"}))
    (True, False)
    """
    if parent.rule == child.rule:
        return is_beneath(child.series, parent.series)
    if parent.signal == child.signal or not {parent.signal, child.signal} <= LATENCY_SIGNALS:
        return False
    shared = parent.series.keys() & child.series.keys()
    return child.series != parent.series and all(
        parent.series[k] == child.series[k] for k in shared
    )


def names(hints: Iterable[Mapping[str, Any]], series: Mapping[str, str], min_share: float) -> bool:
    """Whether ``hints`` name a value of ``series`` with at least ``min_share``."""
    return any(
        series.get(str(h.get("dimension"))) == h.get("value")
        and float(h.get("share", 0.0)) >= min_share
        for h in hints
    )


def source_first(rule: InhibitRule, source: AlertRecord, target: AlertRecord) -> bool:
    """Whether a firing ``source`` of ``rule`` mutes its ``target`` given when each began:
    always, unless the rule is ``first_fires`` and the target began earlier."""
    return not rule.first_fires or source.started_at <= target.started_at


def target_first(target: AlertRecord, source: AlertRecord) -> bool:
    """Whether the ``target`` of a ``first_fires`` rule mutes its ``source`` instead: it
    began earlier (it paged) and is at least as severe."""
    return target.started_at < source.started_at and target.rank >= source.rank


def rule_mutes(rule: InhibitRule, muter: AlertRecord, muted: AlertRecord) -> bool:
    """Whether ``rule`` lets ``muter`` mute ``muted``, either way round a ``first_fires``
    rule allows (what the dispatcher's index answers, for one pair).

    >>> rule = InhibitRule({"signal": "error_rate"}, {"signal": "timeouts"}, first_fires=True)
    >>> errors = AlertRecord("e", "fe", "firing", "warning", "errors", "error_rate", {},
    ...                      started_at=20)
    >>> timeouts = AlertRecord("t", "ft", "firing", "warning", "timeouts", "timeouts", {},
    ...                        started_at=10)
    >>> rule_mutes(rule, errors, timeouts), rule_mutes(rule, timeouts, errors)
    (False, True)
    """
    if inhibits(rule, muter.labels, muted.labels):
        return source_first(rule, muter, muted)
    return (
        rule.first_fires
        and inhibits(rule, muted.labels, muter.labels)
        and target_first(muter, muted)
    )


def inhibits(rule: InhibitRule, source: Mapping[str, str], target: Mapping[str, str]) -> bool:
    """Whether ``rule`` lets an alert of labels ``source`` mute one of labels ``target``.

    >>> rule = InhibitRule({"signal": "volume"}, {"signal": "error_rate"}, ("provider",))
    >>> inhibits(rule, {"signal": "volume", "provider": "a"}, {"signal": "error_rate",
    ...                                                        "provider": "a"})
    True
    """
    return (
        matches_all(from_config(rule.target_match, rule.target_match_re), target)
        and matches_all(from_config(rule.source_match, rule.source_match_re), source)
        and all(source.get(k, "") == target.get(k, "") for k in rule.equal)
    )
