"""Test data built the way the code builds it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from stream.alerting.record import AlertRecord
from stream.judge.judgement import alert_id, fingerprint

T0 = 1_764_140_000_000  # 2025-11-26T06:53:20Z


def make_alert(
    series: Mapping[str, str] | None = None,
    *,
    status: str = "firing",
    rule: str = "provider_errors",
    signal: str = "error_rate",
    severity: str = "critical",
    started: int = T0,
    window_end: int | None = None,
    resolved_at: int | None = None,
    detected_at: int | None = None,
    value: float = 0.3,
    expected: float = 0.01,
    score: float = 0.99,
    summary: str = "x",
    hints: list[dict[str, Any]] | None = None,
    aid: str | None = None,
) -> AlertRecord:
    """An alert record with the lifecycle's fingerprint and alert_id (``aid`` overrides it)."""
    series = dict(series if series is not None else {"provider": "alipay"})
    fp = fingerprint(rule, series)
    end = window_end if window_end is not None else started + 10_000
    return AlertRecord(
        alert_id=aid if aid is not None else alert_id(fp, started),
        fingerprint=fp,
        status=status,
        severity=severity,
        rule=rule,
        signal=signal,
        series=series,
        started_at=started,
        resolved_at=resolved_at,
        window_end=end,
        detected_at=detected_at if detected_at is not None else end,
        value=value,
        expected=expected,
        score=score,
        summary=summary,
        hints=list(hints or []),
    )


def resolved(alert: AlertRecord, at: int, window_end: int | None = None) -> AlertRecord:
    """The resolved record of ``alert``'s episode, ending at ``at``."""
    end = window_end if window_end is not None else at + 30_000
    return dataclasses.replace(alert, status="resolved", resolved_at=at, window_end=end)
