"""One alert v1 record (see docs: "Alert v1"), typed, with what every consumer asks of it.

The lifecycle makes these; dispatch, templates, console, history and notifications
read them.  JSON is the boundary: :meth:`AlertRecord.to_dict` gives the alert v1
object byte for byte as published (same keys, same order), :meth:`AlertRecord.from_dict`
reads one back (alerts topic, history, checkpoints).

>>> rec = AlertRecord("a1", "f1", "firing", "critical", "errors", "error_rate",
...                   {"provider": "alipay"}, started_at=0, window_end=10_000)
>>> AlertRecord.from_dict(rec.to_dict()) == rec
True
>>> rec.labels
{'provider': 'alipay', 'rule': 'errors', 'signal': 'error_rate', 'severity': 'critical'}
>>> rec.rank > AlertRecord.from_dict({**rec.to_dict(), "severity": "warning"}).rank
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stream.judge.judgement import severity_rank
from stream.series import SeriesKey, metric_labels, series_key, series_text

SCHEMA_VERSION = 1
#: The ``evidence`` key of a record that closed an episode unjudged: the worker started
#: without the state that would have told when it ended (stream/live/orphans.py).
STATE_LOST = "state_lost"
_REQUIRED = ("alert_id", "fingerprint", "status", "series", "rule")


@dataclass(slots=True)
class AlertRecord:
    """One state change of one alert episode (alert v1)."""

    alert_id: str
    fingerprint: str
    status: str  # firing | resolved
    severity: str  # critical | warning | info
    rule: str
    signal: str
    series: dict[str, str]
    started_at: int
    resolved_at: int | None = None
    window_end: int = 0
    detected_at: int = 0
    value: float = 0.0
    expected: float = 0.0
    score: float = 0.0
    summary: str = ""
    hints: list[dict[str, Any]] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    # Optional facts behind the alert (e.g. the orders whose callback is overdue, and how
    # many came back): published only when present, so records without it are unchanged.
    evidence: dict[str, Any] | None = None

    @property
    def firing(self) -> bool:
        return self.status == "firing"

    @property
    def rank(self) -> int:
        """Severity rank, higher is worse (:func:`stream.judge.judgement.severity_rank`)."""
        return severity_rank(self.severity)

    @property
    def labels(self) -> dict[str, str]:
        """What routes, inhibit rules and silences match: series plus rule, signal, severity
        (and a metric's own labels, e.g. ``host``, so metric alerts group per host)."""
        labels = {str(k): str(v) for k, v in self.series.items()}
        for key, value in metric_labels(self.series).items():
            labels.setdefault(key, value)
        for key, value in (
            ("rule", self.rule),
            ("signal", self.signal),
            ("severity", self.severity),
        ):
            if value:
                labels[key] = value
        return labels

    @property
    def series_key(self) -> SeriesKey:
        return series_key(self.series)

    @property
    def series_text(self) -> str:
        return series_text(self.series)

    def to_dict(self) -> dict[str, Any]:
        """The alert v1 JSON object, keys in the published order (``evidence`` last, when set)."""
        out = {
            "schema_version": self.schema_version,
            "alert_id": self.alert_id,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "severity": self.severity,
            "rule": self.rule,
            "signal": self.signal,
            "series": self.series,
            "started_at": self.started_at,
            "resolved_at": self.resolved_at,
            "window_end": self.window_end,
            "detected_at": self.detected_at,
            "value": self.value,
            "expected": self.expected,
            "score": self.score,
            "summary": self.summary,
            "hints": self.hints,
        }
        if self.evidence is not None:
            out["evidence"] = self.evidence
        return out

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> AlertRecord:
        """Read an alert v1 object; optional fields may be missing (older or hand-made records)."""
        for key in _REQUIRED:
            if key not in obj:
                raise ValueError(f"alert record lacks {key!r}")

        def num(key: str) -> float:
            value = obj.get(key)
            return float(value) if value is not None else 0.0

        resolved = obj.get("resolved_at")
        return cls(
            alert_id=str(obj["alert_id"]),
            fingerprint=str(obj["fingerprint"]),
            status=str(obj["status"]),
            severity=str(obj.get("severity") or ""),
            rule=str(obj["rule"]),
            signal=str(obj.get("signal") or ""),
            series={str(k): str(v) for k, v in (obj["series"] or {}).items()},
            started_at=int(obj.get("started_at") or 0),
            resolved_at=int(resolved) if resolved is not None else None,
            window_end=int(obj.get("window_end") or 0),
            detected_at=int(obj.get("detected_at") or 0),
            value=num("value"),
            expected=num("expected"),
            score=num("score"),
            summary=str(obj.get("summary") or ""),
            hints=list(obj.get("hints") or []),
            schema_version=int(obj.get("schema_version") or SCHEMA_VERSION),
            evidence=dict(obj["evidence"]) if isinstance(obj.get("evidence"), Mapping) else None,
        )


def closed_unjudged(rec: AlertRecord) -> bool:
    """Whether ``rec`` closed an episode unjudged (its state was lost, :data:`STATE_LOST`)."""
    return rec.status == "resolved" and STATE_LOST in (rec.evidence or {})
