"""The live rule on ``metric`` events: one ``WatchedMetric`` per metric series, with the
hard limits (static SLOs) of its kind of metric.

A series' limits are chosen once, by its name, when the rule first judges it: the first
configured ``detectors.metrics.limits`` entry whose ``match`` finds the name, then the
built-in ones (utilisation, memory, network errors).  An unusual value warns; a value past
a limit pages at that limit's severity; a plateau at an abnormal level keeps firing until
it recovers (see ``models.metric.WatchedMetric``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.base import Detector
from models.metric import MetricLimit, WatchedMetric
from stream.config import MetricLimitConfig
from stream.judge.describe import Described
from stream.judge.features import JudgedWindow, Row
from stream.judge.judgement import Judgement
from stream.judge.rules import DetectorRule
from stream.series import metric_name


class MetricRule(DetectorRule):
    """A :class:`DetectorRule` whose per-series detectors know their metric's limits."""

    def __init__(self, *args: Any, limits: Sequence[MetricLimitConfig] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Patterns as text (re caches them compiled): checkpoints carry plain values only.
        self.limits = [(lim.match, MetricLimit(lim.warning, lim.critical)) for lim in limits]
        self.critical_when = self._critical
        self.describe = self._describe

    def limit_for(self, series: Mapping[str, str]) -> MetricLimit | None:
        """The hard limits of a metric series (first match wins), or None.

        >>> r = MetricRule("m", "metric", WatchedMetric, [], None, None, 10.0,
        ...                limits=[MetricLimitConfig("cpu.*percent", 90.0, 98.0)])
        >>> r.limit_for({"metric": "worker_cpu_percent{host=a}"})
        MetricLimit(warning=90.0, critical=98.0)
        >>> r.limit_for({"metric": "queue_depth{host=a}"}) is None
        True
        """
        name = metric_name(series)
        return next((lim for rx, lim in self.limits if re.search(rx, name, re.I)), None)

    def judge(self, window: JudgedWindow, active: set[str]) -> list[Judgement]:
        # New series get their detector here, where their name is known.
        mask = window.registry.level_mask(self.levels)
        if self.gate is not None:
            mask &= window.features[self.gate][: mask.size] > 0
        for sid in np.flatnonzero(mask).tolist():
            if sid not in self.models:
                limit = self.limit_for(window.registry.labels(sid))
                self.models[sid] = WatchedMetric(limit, hold_score=self.threshold)
        return super().judge(window, active)

    def _critical(self, x: Row) -> bool:
        det = self.models.get(x.sid)
        return isinstance(det, WatchedMetric) and det.breach(x["value"]) == "critical"

    def _describe(self, x: Row, expected: float, det: Detector) -> Described:
        v = x["value"]
        level = det.breach(v) if isinstance(det, WatchedMetric) else None
        normal = f" (normal {expected:.4g})" if not math.isnan(expected) else ""
        if level is not None and isinstance(det, WatchedMetric) and det.limit is not None:
            at = det.limit.critical if level == "critical" else det.limit.warning
            return Described(v, 1.0, f"value {v:.4g} is past its {level} limit {at:g}{normal}")
        return Described(v, 1.0, f"value {v:.4g} is unusual for this series{normal}")
