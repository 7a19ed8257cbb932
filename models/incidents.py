"""Incident scoring: alert episodes matched to labelled incidents.

The one scorer behind ``paywatch backtest --labels``, ``paywatch tune`` and
``make eval``.  An alert episode (one ``alert_id``) matches an incident when
their series can show the same thing (no dimension disagrees: a provider
roll-up can show one merchant's incident, another provider cannot) and it
fires (``window_end`` of its first firing record, event time) between the
incident's start and its end plus a grace period (callbacks are only missed
after their timeout).

Labels are ``{kind, start_ms, end_ms, series, is_incident}`` mappings (the
simulator's ``write_labels`` format; ``stream.offline.labels`` reads files of
them).  An episode that matches a label with ``is_incident`` false (say, a
promotion burst) is a false alert too: it would have paged someone for nothing.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GRACE_MS = 180_000


def series_matches(series: Mapping[str, str], label: Mapping[str, str]) -> bool:
    """Could an alert on ``series`` show an incident on ``label``?

    >>> series_matches({"provider": "alipay"}, {"provider": "alipay", "merchant_id": "M1"})
    True
    >>> series_matches({"provider": "paypal"}, {"provider": "alipay"})
    False
    """
    return all(series[k] == v for k, v in label.items() if k in series)


def episodes(alerts: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """First firing record of each episode (severity escalations re-announce the same id)."""
    out: dict[str, Mapping[str, Any]] = {}
    for a in alerts:
        if a.get("status") == "firing":
            out.setdefault(str(a["alert_id"]), a)
    return out


@dataclass
class Detection:
    """One labelled incident and what caught it."""

    label: dict[str, Any]
    alert_ids: list[str]
    delay_s: float | None  # first matching alert's window_end - incident start


@dataclass
class LabelScore:
    """Recall, precision, false alerts per hour and delays of alert episodes against labels."""

    detections: list[Detection] = field(default_factory=list)
    false_alerts: list[Mapping[str, Any]] = field(default_factory=list)
    promotion_alerts: int = 0  # matches to labels with is_incident false
    alerts: int = 0  # episodes
    hours: float = 0.0

    @property
    def incidents(self) -> list[Detection]:
        return [d for d in self.detections if d.label["is_incident"]]

    @property
    def detected(self) -> int:
        return sum(d.delay_s is not None for d in self.incidents)

    @property
    def recall(self) -> float:
        n = len(self.incidents)
        return self.detected / n if n else 1.0

    @property
    def precision(self) -> float:
        """Share of episodes that show a real incident (none raised: 1.0)."""
        if not self.alerts:
            return 1.0
        return (self.alerts - len(self.false_alerts) - self.promotion_alerts) / self.alerts

    @property
    def false_per_hour(self) -> float:
        bad = len(self.false_alerts) + self.promotion_alerts
        return bad / self.hours if self.hours > 0 else float(bad)

    @property
    def delays(self) -> list[float]:
        return [d.delay_s for d in self.incidents if d.delay_s is not None]

    @property
    def median_delay_s(self) -> float | None:
        return statistics.median(self.delays) if self.delays else None

    def summary_line(self) -> str:
        med = self.median_delay_s
        return (
            f"recall {self.recall:.2f} ({self.detected}/{len(self.incidents)}), "
            f"precision {self.precision:.2f}, {self.false_per_hour:.2f} false alerts/hour "
            f"over {self.hours:.1f} h, median delay " + ("-" if med is None else f"{med:.0f} s")
        )


def score_alerts(
    alerts: Iterable[Mapping[str, Any]],
    labels: Sequence[Mapping[str, Any]],
    hours: float,
    grace_ms: int = GRACE_MS,
) -> LabelScore:
    """Match alert episodes to labelled incidents (see the module docstring).

    >>> lab = {"kind": "outage", "start_ms": 0, "end_ms": 60_000,
    ...        "series": {"provider": "alipay"}, "is_incident": True}
    >>> fire = {"alert_id": "a1", "status": "firing", "series": {"provider": "alipay"},
    ...         "window_end": 20_000}
    >>> s = score_alerts([fire], [lab], hours=1.0)
    >>> s.recall, s.precision, s.detections[0].delay_s
    (1.0, 1.0, 20.0)
    """
    eps = episodes(alerts)
    res = LabelScore(alerts=len(eps), hours=hours)
    matched: set[str] = set()
    for lab in labels:
        hits = [
            e for e in eps.values()
            if series_matches(e["series"], lab["series"])
            and lab["start_ms"] <= e["window_end"] <= lab["end_ms"] + grace_ms
        ]  # fmt: skip
        ids = [str(e["alert_id"]) for e in hits]
        if not lab["is_incident"]:
            res.promotion_alerts += len(set(ids) - matched)
        matched.update(ids)
        first = min((int(e["window_end"]) for e in hits), default=None)
        delay = None if first is None else (first - int(lab["start_ms"])) / 1000
        res.detections.append(Detection(dict(lab), ids, delay))
    res.false_alerts = [e for aid, e in eps.items() if aid not in matched]
    return res
