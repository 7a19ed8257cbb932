"""Rules: turn a closed window into per-series features, ask the detectors, return judgements.

Features are computed for every series at once with numpy; detectors
(``models/``) are called once per window and candidate series.  A rule only
asks its detector about series that could be anomalous (a cheap vectorised
pre-filter) or that have an open episode (so the lifecycle learns they are quiet).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Protocol

import numpy as np

from models.error_rate import ErrorRateThreshold
from stream.alerts import Judgement, fingerprint
from stream.config import ErrorRateRuleConfig
from stream.windows import SYSTEM_ERROR_COLS, ClosedWindow, SeriesRegistry, WindowState


class Rule(Protocol):
    name: str
    signal: str

    def judge(
        self, win: ClosedWindow, windows: WindowState, active: set[str]
    ) -> list[Judgement]: ...

    def forget(self, sids: np.ndarray) -> None:
        """Drop per-series state of evicted series (their ids will be reused)."""


def series_text(series: dict[str, str]) -> str:
    """Compact series label for one-line summaries.

    >>> series_text({"provider": "alipay", "operation": "create_payment"})
    'alipay/create_payment'
    """
    return "/".join(series.values())


class _FingerprintCache:
    """Fingerprints per series id for one rule, and the reverse map for open episodes."""

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.fp: dict[int, str] = {}
        self.sid: dict[str, int] = {}

    def forget(self, sids: np.ndarray) -> None:
        for sid in sids.tolist():
            fp = self.fp.pop(sid, None)
            if fp is not None:
                self.sid.pop(fp, None)

    def of(self, sid: int, registry: SeriesRegistry) -> str:
        fp = self.fp.get(sid)
        if fp is None:
            fp = fingerprint(self.rule, registry.labels(sid))
            self.fp[sid] = fp
            self.sid[fp] = sid
        return fp


def root_cause_hints(
    win: ClosedWindow,
    registry: SeriesRegistry,
    fine_dims: tuple[str, ...],
    sid: int,
    weights: np.ndarray,
    top: int = 3,
    min_share: float = 0.2,
    min_lift: float = 0.15,
) -> list[dict[str, Any]]:
    """Dimension values beneath a roll-up series that carry far more of ``weights``
    (e.g. its errors) than of its traffic: "merchant m_17 has 80 % of the errors
    but 5 % of the calls".  A provider-wide outage spread evenly gives no hint.

    Looks at the finest level only, so each event is counted once.
    """
    key = registry.keys[sid]
    if key is None:
        return []
    dims, values = key
    if dims == fine_dims or not set(dims) <= set(fine_dims):
        return []
    pos = [fine_dims.index(d) for d in dims]
    volume = win.column("volume")
    total_w = total_v = 0.0
    by_dim: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    for child in np.flatnonzero(volume[: len(registry)] > 0):
        child_key = registry.keys[int(child)]
        if child_key is None or child_key[0] != fine_dims:
            continue
        vals = child_key[1]
        if any(vals[p] != v for p, v in zip(pos, values, strict=True)):
            continue
        w, v = float(weights[child]), float(volume[child])
        total_w += w
        total_v += v
        for d, val in zip(fine_dims, vals, strict=True):
            if d not in dims:
                acc = by_dim[d][val]
                acc[0] += w
                acc[1] += v
    if total_w <= 0:
        return []
    hints: list[dict[str, Any]] = []
    for d, shares in by_dim.items():
        for val, (w, v) in shares.items():
            share = w / total_w
            if share >= min_share and share - v / total_v >= min_lift:
                hints.append({"dimension": d, "value": val, "share": round(share, 3)})
    hints.sort(key=lambda h: -float(h["share"]))
    return hints[:top]


class ErrorRateRule:
    """System-error rate per series against a static threshold (volume-aware)."""

    signal = "error_rate"

    def __init__(self, cfg: ErrorRateRuleConfig, window_s: float) -> None:
        self.name = cfg.rule
        self.cfg = cfg
        self.window_s = window_s
        self.model = ErrorRateThreshold(cfg.threshold, cfg.min_volume, cfg.confidence)
        self.fps = _FingerprintCache(self.name)

    def forget(self, sids: np.ndarray) -> None:
        self.fps.forget(sids)

    def judge(self, win: ClosedWindow, windows: WindowState, active: set[str]) -> list[Judgement]:
        registry = windows.registry
        fine = max(windows.call_levels, key=len)
        volume = win.column("volume")
        errors = win.counts[:, SYSTEM_ERROR_COLS].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(volume > 0, errors / np.maximum(volume, 1), 0.0)
        # Wilson's bound never exceeds the raw rate, so this cannot miss an alert.
        candidates = set(
            np.flatnonzero(
                (volume >= self.cfg.min_volume) & (rate >= self.cfg.threshold / 2)
            ).tolist()
        )
        candidates.update(self.fps.sid[fp] for fp in active if fp in self.fps.sid)
        out: list[Judgement] = []
        for sid in sorted(candidates):
            x = {"volume": float(volume[sid]), "errors": float(errors[sid])}
            score = self.model.score_one(x)
            self.model.learn_one(x)
            series = registry.labels(sid)
            anomalous = score >= 0.5
            severity = (
                "critical" if anomalous and rate[sid] >= self.cfg.critical_threshold else "warning"
            )
            hints = root_cause_hints(win, registry, fine, sid, errors) if anomalous else []
            summary = (
                f"{series_text(series)}: {rate[sid]:.1%} system errors in {int(volume[sid])} calls "
                f"over {self.window_s:g}s (normal < {self.cfg.threshold:.0%})"
            )
            self.fps.of(sid, registry)
            out.append(
                Judgement(
                    rule=self.name,
                    signal=self.signal,
                    series=series,
                    window_start=win.start_ms,
                    window_end=win.end_ms,
                    score=round(score, 4),
                    anomalous=anomalous,
                    severity=severity,
                    value=round(float(rate[sid]), 6),
                    expected=self.cfg.threshold,
                    summary=summary,
                    volume=int(volume[sid]),
                    hints=hints,
                )
            )
        return out
