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
  the broader alert is folded into it ("folded into <alert_id>").

Configured :class:`~stream.config.InhibitRule` objects add source → target mutes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import combinations

from stream.alerting.matchers import from_config, matches_all
from stream.alerting.record import AlertRecord
from stream.config import InhibitRule
from stream.series import SeriesKey, is_beneath

#: Signals an outage's timed-out calls raise too (muted beneath a critical error alert).
LATENCY_SIGNALS = frozenset({"latency", "latency_tail"})
#: The series index also lists critical error-rate alerts of any rule under this rule name.
_CRITICAL_ERRORS = "critical error rate, any rule"
#: Share of a broader alert's trouble one child must carry for the child to page instead.
CARRIES_SHARE = 0.5

_SeriesIndex = dict[tuple[str, str, SeriesKey], list[AlertRecord]]
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
        self._index: tuple[_SeriesIndex, list[_Sources], _RuleIndex] | None = None

    def invalidate(self) -> None:
        self._index = None

    def mute_reason(self, alert: AlertRecord) -> str | None:
        """``"inhibited by <alert_id>"``, ``"folded into <alert_id>"`` or None; only
        firing alerts are muted."""
        if not alert.firing:
            return None
        by_series, by_rule, by_signal = self._inhibit_index()
        if self.default_inhibit:
            reason = self._default_reason(alert, by_series, by_signal)
            if reason is not None:
                return reason
        labels = alert.labels
        for rule, targets, sources in zip(self.rules, self._targets, by_rule, strict=True):
            if sources and matches_all(targets, labels):
                key = tuple(labels.get(k, "") for k in rule.equal)
                for src in sources.get(key, ()):
                    if src.fingerprint != alert.fingerprint:
                        return f"inhibited by {src.alert_id}"
        return None

    @staticmethod
    def _default_reason(
        alert: AlertRecord, by_series: _SeriesIndex, by_signal: _RuleIndex
    ) -> str | None:
        # Carried by one child: the child pages, this broader alert folds into it.
        for child in by_signal.get((alert.rule, alert.signal), ()):
            if carries(alert, child):
                return f"folded into {child.alert_id}"
        items = alert.series_key
        # Every broader series: the non-empty proper subsets of this one (series are small).
        for size in range(1, len(items)):
            for sub in combinations(items, size):
                for src in by_series.get((alert.rule, alert.signal, sub), ()):
                    if src.rank >= alert.rank and not carries(src, alert):
                        return f"inhibited by {src.alert_id}"
                if alert.signal in LATENCY_SIGNALS:
                    for src in by_series.get((_CRITICAL_ERRORS, "error_rate", sub), ()):
                        return f"inhibited by {src.alert_id}"
        return None

    def _inhibit_index(self) -> tuple[_SeriesIndex, list[_Sources], _RuleIndex]:
        """Firing alerts indexed for inhibition; rebuilt only after alerts changed."""
        if self._index is None:
            by_series: _SeriesIndex = {}
            by_rule: list[_Sources] = [{} for _ in self.rules]
            by_signal: _RuleIndex = {}
            for a in self._firing():
                by_series.setdefault((a.rule, a.signal, a.series_key), []).append(a)
                if a.signal == "error_rate" and a.severity == "critical":
                    by_series.setdefault((_CRITICAL_ERRORS, a.signal, a.series_key), []).append(a)
                by_signal.setdefault((a.rule, a.signal), []).append(a)
                labels = a.labels
                for rule, sources, idx in zip(self.rules, self._sources, by_rule, strict=True):
                    if matches_all(sources, labels):
                        key = tuple(labels.get(k, "") for k in rule.equal)
                        idx.setdefault(key, []).append(a)
            groups = (*by_series.values(), *by_signal.values())
            for group in (*groups, *(v for idx in by_rule for v in idx.values())):
                group.sort(key=lambda a: (-a.rank, a.fingerprint))  # deterministic reasons
            self._index = (by_series, by_rule, by_signal)
        return self._index


def carries(parent: AlertRecord, child: AlertRecord, min_share: float = CARRIES_SHARE) -> bool:
    """Whether ``child`` (a series beneath ``parent``) carries ``parent``'s anomaly: the
    parent's root-cause hints name a value of the child's series with at least
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
    if not is_beneath(child.series, parent.series):
        return False
    return any(
        child.series.get(str(h.get("dimension"))) == h.get("value")
        and float(h.get("share", 0.0)) >= min_share
        for h in parent.hints
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
