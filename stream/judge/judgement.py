"""What a rule says about one series in one closed window, and the ids that follow from it.

Identifiers are pure functions of the input: ``fingerprint`` of (rule, series) and
``alert_id`` of (fingerprint, start of the episode), so a replay of the same stream
gives the same ids as the live run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

SEVERITIES = ("critical", "warning", "info")  # worst first
"""Severity names, worst first; :func:`severity_rank` orders them."""


def severity_rank(severity: str) -> int:
    """Higher is worse; an unknown name ranks below ``info``.

    >>> sorted(["info", "critical", "warning"], key=severity_rank, reverse=True)
    ['critical', 'warning', 'info']
    """
    try:
        return len(SEVERITIES) - SEVERITIES.index(severity)
    except ValueError:
        return 0


def fingerprint(rule: str, series: Mapping[str, str]) -> str:
    """Stable id of one (rule, series).

    >>> fingerprint("system_error_rate", {"provider": "alipay"})
    '3eb195dcc5db55fc'
    """
    blob = orjson.dumps([rule, dict(series)], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:16]


def alert_id(fp: str, started_at: int) -> str:
    """Stable id of one episode of a (rule, series)."""
    return hashlib.sha256(f"{fp}:{started_at}".encode()).hexdigest()[:20]


@dataclass(slots=True)
class Judgement:
    """A detector's verdict on one series in one closed window."""

    rule: str
    signal: str
    series: dict[str, str]
    window_start: int
    window_end: int
    score: float
    anomalous: bool
    severity: str
    value: float
    expected: float
    summary: str
    volume: int = 0
    hints: list[dict[str, Any]] = field(default_factory=list)
    # The detector still holds its alarm although this window is not anomalous (a window
    # without errors inside an outage): no evidence of recovery either way.
    holding: bool = False

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rule, self.series)
