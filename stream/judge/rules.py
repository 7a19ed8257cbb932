"""A rule: a detector per series of some levels (or one bank for all of them), judged once
per window.

A rule whose detector has a vectorised twin in :mod:`models.bank` (the built-in
error-rate, config-error, latency and static-threshold detectors) judges all its
series in one call per window; any other detector — a river model, a wrapper — is
kept one per series and called once per window with a read-only view of that
series' row.  A rule judges only the series of its levels that carry its signal
(calls, callbacks, metric samples) — plus any series with an open episode, so the
lifecycle learns when it is quiet again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from models.bank import Bank, bank_for
from models.base import Detector, expected_of, is_ready, score_learn, severity
from models.sequential import slot_view
from stream.judge.describe import Describe
from stream.judge.features import JudgedWindow, Row, bank_columns
from stream.judge.hints import root_cause_hints
from stream.judge.judgement import Judgement, fingerprint, severity_rank
from stream.series import series_text
from stream.windows.registry import Dims, SeriesRegistry


class Rule(Protocol):
    name: str
    signal: str
    sid_of_fp: dict[str, int]  # fingerprint -> series id, for series this rule has judged

    def judge(self, window: JudgedWindow, active: set[str]) -> list[Judgement]: ...

    def forget(self, sids: np.ndarray) -> None:
        """Drop per-series state of evicted series (their ids will be reused)."""


#: Called with (series id, features, detector, score) for every judged series.
Observer = Callable[[int, Row, Detector, float], None]


class DetectorRule:
    """One rule: a detector per series of some levels (or one bank for all of them),
    judged once per window."""

    def __init__(
        self,
        name: str,
        signal: str,
        make: Callable[[], Detector],
        levels: list[Dims],
        gate: str | None,
        describe: Describe,
        window_s: float,
        *,
        threshold: float = 0.5,
        max_severity: str = "critical",
        hints_from: str | None = None,
        critical_when: Callable[[Row], bool] | None = None,
    ) -> None:
        self.name = name
        self.signal = signal
        self.make = make
        self.levels = set(levels)
        self.gate = gate  # feature that must be > 0 for a series to be judged (None: all)
        self.describe = describe
        self.window_s = window_s
        self.threshold = threshold
        self.max_severity = max_severity
        self.hints_from = hints_from
        self.critical_when = critical_when  # e.g. a static critical threshold
        self.models: dict[int, Detector] = {}
        # Built-in detectors have a vectorised twin that judges every series in one call.
        self.bank = bank_for(make)
        self.observe: Observer | None = None
        self.fp: dict[int, str] = {}
        self.sid_of_fp: dict[str, int] = {}

    def forget(self, sids: np.ndarray) -> None:
        if self.bank is not None:
            self.bank.forget(sids)
        for sid in sids.tolist():
            self.models.pop(sid, None)
            fp = self.fp.pop(sid, None)
            if fp is not None:
                self.sid_of_fp.pop(fp, None)

    def restart_beneath(
        self, series: dict[str, str], registry: SeriesRegistry, keep: set[str]
    ) -> None:
        """This rule's episode of ``series`` has ended: the evidence the series beneath it
        gathered meanwhile is its incident's, so their sequential tests start over
        (series with an open episode, fingerprints in ``keep``, keep theirs).  Else a
        sparse child (a merchant's refunds) kept that evidence for hours and paged on
        its next failing call."""
        restart_evidence(self.bank, series, registry, keep, self.fp)
        if self.bank is None and self.models:  # per-series sequential detectors alike
            sids = registry.beneath(series, np.fromiter(self.models, np.int64, len(self.models)))
            for sid in sids.tolist():
                if self.fp.get(sid) not in keep:
                    self.restart_series(sid)

    def restart_series(self, sid: int) -> None:
        """The sequential test of ``sid`` itself starts over (its episode was explained by
        another's end); detectors without one (river models, thresholds) are left as
        they are."""
        bank, slot = (self.bank, sid) if self.bank is not None else (
            getattr(self.models.get(sid), "bank", None), 0
        )  # fmt: skip
        restart = getattr(bank, "restart", None)
        if restart is not None:
            restart(np.array([slot], np.int64))

    def ready_detector(self, sid: int) -> Detector | None:
        """The ready detector judging ``sid`` (a bank's: a copy of its row), else None.

        For read-outs such as the expected value on ``/metrics``; never learns."""
        if self.bank is not None:
            ready = bool(self.bank.ready(np.array([sid], np.int64))[0])
            return self.bank.detector(sid) if ready else None
        det = self.models.get(sid)
        return det if det is not None and is_ready(det) else None

    def _fingerprint(self, sid: int, registry: SeriesRegistry) -> str:
        fp = self.fp.get(sid)
        if fp is None:
            fp = fingerprint(self.name, registry.labels(sid))
            self.fp[sid] = fp
            self.sid_of_fp[fp] = sid
        return fp

    def judge(self, window: JudgedWindow, active: set[str]) -> list[Judgement]:
        feats = window.features
        mask = window.registry.level_mask(self.levels)
        if self.gate is not None:
            mask &= feats[self.gate][: mask.size] > 0
        candidates = np.flatnonzero(mask)
        open_sids = [self.sid_of_fp[fp] for fp in active if fp in self.sid_of_fp]
        if open_sids:
            candidates = np.union1d(candidates, open_sids)
        consts = window.constants(self.window_s)
        out: list[Judgement] = []
        observe = self.observe
        if self.bank is not None:
            # All series in one vectorised call; Python runs only for the few reported.
            x_all = bank_columns(self.bank.keys, feats, candidates, consts)
            if "demand_group" in self.bank.keys:  # fleet demand, one provider left out at a time
                x_all = {**x_all, "demand_group": window.provider_codes(candidates)}
            scores = self.bank.score_learn_many(candidates, x_all)
            self._scored(candidates)
            report = scores >= self.threshold
            if open_sids:
                report |= np.isin(candidates, open_sids)
            self._report_bank(window, self.bank, candidates, scores, report, active, out)
            return out
        scored = []
        for sid in candidates.tolist():
            det = self.models.get(sid)
            if det is None:
                det = self.models[sid] = self.make()
            x = Row(feats, consts, sid)
            score = score_learn(det, x)
            scored.append((sid, x, det, score if is_ready(det) else 0.0))
        self._scored(candidates)  # every series learned this window before any report
        for sid, x, det, score in scored:
            if observe is not None:
                observe(sid, x, det, score)
            self._report(window, x, det, score, active, out)
        return out

    def _critical_by_chance(self, window: JudgedWindow, x: Row) -> bool:
        """Whether a broader series of this rule, itself not critical, makes ``x``'s
        critical window likely (``critical_when.by_chance``): a merchant's few calls
        crossing the critical level inside its provider's incident are that incident,
        not a worse one (more severe, the dispatcher would unmute it and page)."""
        by_chance = getattr(self.critical_when, "by_chance", None)
        if by_chance is None or self.critical_when is None:
            return False
        consts = window.constants(self.window_s)
        for sid in window.broader(x.sid, self.levels):
            parent = Row(window.features, consts, sid)
            if not self.critical_when(parent) and by_chance(x, parent):
                return True
        return False

    def _hints(self, window: JudgedWindow, sid: int) -> list[dict[str, Any]]:
        """Root-cause hints of an anomalous series: the values beneath it at the finest
        level that carry far more of ``hints_from`` (its errors) than of its calls."""
        if self.hints_from is None:
            return []
        weights = window.features[self.hints_from]
        key = window.registry.keys[sid]
        return root_cause_hints(key, window.fine_dims, window.fine_children, weights)

    def level_banks(self) -> list[tuple[set[Dims], Bank | None]]:
        """Which bank judges which levels (None: a detector per series), for read-outs
        such as the expected values on ``/metrics``."""
        return [(self.levels, self.bank)]

    def _report_bank(
        self,
        window: JudgedWindow,
        bank: Bank,
        sids: np.ndarray,
        scores: np.ndarray,
        report: np.ndarray,
        active: set[str],
        out: list[Judgement],
    ) -> None:
        """Report the series of ``sids`` a bank scored where ``report`` (observers: all)."""
        observe = self.observe
        if observe is not None:
            report[:] = True
        consts = window.constants(self.window_s)
        for k in np.flatnonzero(report).tolist():
            sid = int(sids[k])
            # Observers may keep what they are given: a copy; the report reads in place.
            twin = bank.detector(sid) if observe is not None else slot_view(bank, sid)
            x = Row(window.features, consts, sid)
            if observe is not None:
                observe(sid, x, twin, float(scores[k]))
            self._report(window, x, twin, float(scores[k]), active, out)

    def _scored(self, candidates: np.ndarray) -> None:
        """Called after the bank (or each series' detector) judged ``candidates`` this
        window, before any is reported (a hook)."""

    def _report(
        self,
        window: JudgedWindow,
        x: Row,
        det: Detector,
        score: float,
        active: set[str],
        out: list[Judgement],
    ) -> None:
        """Append the judgement of one scored series when it is anomalous or has an open
        episode (the lifecycle must see it go quiet)."""
        sid, registry, win = x.sid, window.registry, window.win
        fp = self.fp.get(sid)
        anomalous = score >= self.threshold
        if not anomalous and (fp is None or fp not in active):
            return
        # river models have no baseline to show; paywatch's detectors do.
        expected = expected_of(det, x)
        value, impact, text = self.describe(x, expected, det)
        sev = severity(score, impact) if anomalous else "info"
        critical = self.critical_when is not None and self.critical_when(x)
        if anomalous and critical and not self._critical_by_chance(window, x):
            sev = "critical"
        if severity_rank(sev) > severity_rank(self.max_severity):  # e.g. river models: info
            sev = self.max_severity
        holding = False
        if anomalous and sev == "info" and self.max_severity != "info":
            # Anomalous but hurting (almost) nobody this window: no page, and while the
            # detector holds its alarm no evidence of recovery either.
            anomalous, holding = False, True
        series = registry.labels(sid)
        hints = self._hints(window, sid) if anomalous else []
        self._fingerprint(sid, registry)
        out.append(
            Judgement(
                rule=self.name,
                signal=self.signal,
                series=series,
                window_start=win.start_ms,
                window_end=win.end_ms,
                score=round(min(1.0, max(0.0, score)), 4),
                anomalous=anomalous,
                severity=sev,
                value=_finite(value),
                expected=_finite(expected),
                summary=f"{series_text(series)}: {text}",
                volume=int(x["volume"]) if x["volume"] == x["volume"] else 0,
                hints=hints,
                holding=holding,
            )
        )


def _finite(v: float) -> float:
    return round(float(v), 6) if math.isfinite(v) else 0.0


def restart_evidence(
    bank: object, series: dict[str, str], reg: SeriesRegistry, keep: set[str], fp: dict[int, str]
) -> None:
    """:meth:`DetectorRule.restart_beneath` for one bank (none: per-series detectors)."""
    with_evidence = getattr(bank, "with_evidence", None)
    if with_evidence is None:
        return
    sids = reg.beneath(series, with_evidence())
    bank.restart(np.array([s for s in sids.tolist() if fp.get(s) not in keep], np.int64))  # type: ignore[attr-defined]
