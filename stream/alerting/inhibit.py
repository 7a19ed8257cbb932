"""The inhibition stage: a firing alert mutes others (Alertmanager's inhibit rules).

By default an alert of series ``{provider=X}`` mutes the same rule/signal on
series beneath it (``{provider=X, merchant_id=...}``) when it is at least as
severe, so a provider outage pages once, not per merchant.  Configured
:class:`~stream.config.InhibitRule` objects add source → target mutes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import combinations

from stream.alerting.matchers import from_config, matches_all
from stream.alerting.record import AlertRecord
from stream.config import InhibitRule
from stream.series import SeriesKey

_SeriesIndex = dict[tuple[str, str, SeriesKey], list[AlertRecord]]
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
        self._index: tuple[_SeriesIndex, list[_Sources]] | None = None

    def invalidate(self) -> None:
        self._index = None

    def mute_reason(self, alert: AlertRecord) -> str | None:
        """``"inhibited by <alert_id>"`` or None; only firing alerts are inhibited."""
        if not alert.firing:
            return None
        by_series, by_rule = self._inhibit_index()
        if self.default_inhibit:
            items = alert.series_key
            # Every broader series: the non-empty proper subsets of this one (series are small).
            for size in range(1, len(items)):
                for sub in combinations(items, size):
                    for src in by_series.get((alert.rule, alert.signal, sub), ()):
                        if src.rank >= alert.rank:
                            return f"inhibited by {src.alert_id}"
        labels = alert.labels
        for rule, targets, sources in zip(self.rules, self._targets, by_rule, strict=True):
            if sources and matches_all(targets, labels):
                key = tuple(labels.get(k, "") for k in rule.equal)
                for src in sources.get(key, ()):
                    if src.fingerprint != alert.fingerprint:
                        return f"inhibited by {src.alert_id}"
        return None

    def _inhibit_index(self) -> tuple[_SeriesIndex, list[_Sources]]:
        """Firing alerts indexed for inhibition; rebuilt only after alerts changed."""
        if self._index is None:
            by_series: _SeriesIndex = {}
            by_rule: list[_Sources] = [{} for _ in self.rules]
            for a in self._firing():
                by_series.setdefault((a.rule, a.signal, a.series_key), []).append(a)
                labels = a.labels
                for rule, sources, idx in zip(self.rules, self._sources, by_rule, strict=True):
                    if matches_all(sources, labels):
                        key = tuple(labels.get(k, "") for k in rule.equal)
                        idx.setdefault(key, []).append(a)
            for group in (*by_series.values(), *(v for idx in by_rule for v in idx.values())):
                group.sort(key=lambda a: (-a.rank, a.fingerprint))  # deterministic "inhibited by"
            self._index = (by_series, by_rule)
        return self._index


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
