"""Alert lifecycle per (rule, series): pending → firing → resolved, as alert v1 records.

A series must be anomalous for ``for_windows`` windows before it fires.  It
resolves on evidence, not on silence: a window counts toward recovery only when
it was judged healthy *and* carried calls (a window with no or few calls says
nothing about an error rate), and the episode resolves once
``keep_firing_for_windows`` such windows in a row have carried at least
``resolve_min_calls`` calls between them.  Empty windows in the middle of an
outage therefore neither resolve it nor start a second episode: one incident,
one episode, one page.  Signals whose detector judges the count itself (volume,
callbacks, metrics) treat every judged window as evidence.  A series with no
evidence at all for ``stale_after_s`` (it went away) resolves so the alert does
not stay open forever.  A severity change re-announces the open episode under
the same ``alert_id``.

Ids come from :mod:`stream.judge.judgement`, so a replay of the same stream gives
the same ids as the live run.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from models.budget import oracle_delay_rate_s
from stream.alerting.inhibit import CARRIES_SHARE, LATENCY_SIGNALS, may_fold, names
from stream.alerting.record import AlertRecord
from stream.config import InhibitRule
from stream.judge.judgement import Judgement, alert_id, severity_rank
from stream.series import is_beneath, series_labels

#: Signals whose value is a share of the window's calls (errors of a class): their
#: recovery is a reverse test, the log-likelihood ratio of the baseline share against
#: the share seen while firing, summed over the healthy windows' calls.
RATE_SIGNALS = frozenset(
    {"error_rate", "timeouts", "config_error", "business_declines", "latency_tail"}
)
#: Evidence (nats) the healthy windows must give the baseline over the incident's share:
#: e^6.9 = 1000 to 1, so a few lucky error-free windows inside an incident do not end it.
RESOLVE_LLR = 6.9

#: Signals whose detectors judge the count of the window itself (a drop to zero is
#: their anomaly), so every judged window is evidence whatever its call volume.
EVIDENCE_WITHOUT_CALLS = frozenset({"volume", "notification", "metric"})


@dataclass(slots=True)
class _Episode:
    rule: str
    signal: str
    series: dict[str, str]
    started_at: int
    anomalous_windows: int = 0
    quiet_windows: int = 0
    firing: bool = False
    severity: str = "warning"
    last_anomalous_end: int = 0
    alert_id: str = ""
    quiet_calls: int = 0  # calls of the healthy windows since the last anomalous one
    last_evidence_end: int = 0  # end of the last window that carried evidence either way
    # Rate signals: calls and events of the class from the episode's start to its last
    # anomalous window (the incident's share), and of the healthy run since then.
    fire_calls: int = 0
    fire_events: float = 0.0
    run_calls: int = 0
    run_events: float = 0.0
    healthy_llr: float = 0.0  # reverse test: nats for the baseline since the last anomaly
    recovered_end: int = 0  # window end when the evidence first said healthy (0: not yet)
    hold_s: float = 0.0  # how long this recovery is held before it resolves (see relapse_hold_s)
    hints: list[dict[str, Any]] = field(default_factory=list)  # of its last firing record


@dataclass
class AlertLifecycle:
    """Tracks every open episode; turns judgements into alert v1 state-change records."""

    for_windows: int = 1
    keep_firing_for_windows: int = 3
    resolve_min_calls: int = 20
    stale_after_s: float = 1800.0
    # After the evidence says healthy the episode stays open this long; a relapse within
    # it continues the episode (Prometheus' keep_firing_for): a burst that raised a sharp
    # alternative, refuted, then a smaller shift that lasts, is one incident, one page.
    resolve_hold_s: float = 0.0
    # The CUSUM threshold of the false-alarm budget (0: off).  With it, a rate episode's
    # recovery is held for the time the detector needs to re-detect the episode's share
    # at the calls it sees now (``relapse_hold_s``), at most ``resolve_hold_max_s``.
    relapse_h: float = 0.0
    resolve_hold_max_s: float = 600.0
    # What the dispatcher's inhibition mutes besides a rule's own series beneath (on while
    # ``notify.default_inhibit``): (source signal, target signal) pairs on the same
    # series of which the first to begin mutes the other (timeouts and system errors,
    # the tail and timeouts), and the latency beneath a critical error-rate alert.
    # Episodes muted so end with their source.
    same_series_mutes: frozenset[tuple[str, str]] = frozenset()
    critical_errors_mute_latency: bool = False
    episodes: dict[str, _Episode] = field(default_factory=dict)

    def active(self) -> set[str]:
        """Fingerprints with an open episode: these need a judgement every window."""
        return set(self.episodes)

    def firing(self) -> list[dict[str, Any]]:
        return [
            {
                "fingerprint": fp,
                "alert_id": e.alert_id,
                "rule": e.rule,
                "series": e.series,
                "severity": e.severity,
                "started_at": e.started_at,
            }
            for fp, e in self.episodes.items()
            if e.firing
        ]

    def observe(
        self,
        window_end: int,
        judgements: list[Judgement],
        detected_at: Callable[[int], int],
    ) -> list[AlertRecord]:
        """Apply one window's judgements.  A series with an episode but no judgement, or a
        healthy judgement without calls, is no evidence: its episode stays as it is.

        ``detected_at(window_end)`` gives the record's wall-clock time (event time offline).
        """
        records: list[AlertRecord] = []
        seen: set[str] = set()
        self._ended: list[_Episode] = []  # episodes this window resolved (transient)
        # Episodes resolved with another (a carrier, a source of another signal that muted
        # them): their own evidence must restart too.
        self.restart_own: set[str] = set()
        for j in judgements:
            fp = j.fingerprint
            ep = self.episodes.get(fp)
            if j.anomalous:
                seen.add(fp)
                records.extend(self._anomalous(fp, ep, j, window_end, detected_at))
            elif ep is not None and self._is_evidence(j):
                seen.add(fp)
                if j.holding:  # still in alarm: neither anomalous nor evidence of health
                    ep.last_evidence_end = j.window_end
                    ep.recovered_end = 0
                else:
                    records.extend(self._quiet(fp, ep, j, window_end, detected_at))
        for fp in [fp for fp in self.episodes if fp not in seen]:
            records.extend(self._no_evidence(fp, self.episodes[fp], window_end, detected_at))
        # Episodes that ended end those they explain: the muted ones beneath them, then
        # the parents folded into them once no carrier is left, then what those muted.
        # Each list grows as it is walked: what an explained episode muted ends with it.
        ended, self._ended = self._ended, []
        explained: list[AlertRecord] = []
        for ep in ended:  # a list's iterator reaches the items appended as it goes
            explained += self._end_explained(ep, window_end, detected_at, ended)
        carried: list[_Episode] = []
        carried_records: list[AlertRecord] = []
        for ep in list(ended):
            carried_records += self._end_carried(ep, window_end, detected_at, carried)
        for ep in carried:
            explained += self._end_explained(ep, window_end, detected_at, carried)
        out = carried_records + explained + records
        return self._muted_inside(out, [*self.episodes.values(), *ended, *carried])

    def _end_carried(
        self,
        child: _Episode,
        window_end: int,
        detected_at: Callable[[int], int],
        ended: list[_Episode],
    ) -> list[AlertRecord]:
        """Resolve, with ``child``, its rule's episodes above it that it carried (their
        hints name it) and that no other open episode beneath them still carries: the
        dispatcher folded them into it, and one that outlived its carrier was unfolded
        and paged (a merchant's broken keys: its provider's alert, a window after the
        merchant's resolved).  Listed before it (:meth:`_muted_inside`), so the
        dispatcher never sees them unfolded; their evidence restarts (``restart_own``),
        so one still in trouble fires anew; they join ``ended``, so the episodes they
        muted can end with them."""
        out: list[AlertRecord] = []
        for fp, ep in list(self.episodes.items()):
            if not ep.firing or not _folded_into(ep, child):
                continue
            if any(o.firing and _folded_into(ep, o) for o in self.episodes.values()):
                continue
            self.restart_own.add(fp)
            out.append(self._end_with(fp, ep, child, window_end, detected_at, ended))
        return out

    def _end_with(
        self,
        fp: str,
        ep: _Episode,
        other: _Episode,
        window_end: int,
        detected_at: Callable[[int], int],
        ended: list[_Episode],
    ) -> AlertRecord:
        """Resolve ``ep`` as explained by ``other``'s end; it joins ``ended``."""
        rec = self._resolve(fp, ep, None, window_end, detected_at, ended=False)[0]
        rec.summary = f"{rec.summary} (with {series_labels(other.series)})"
        ended.append(ep)
        return rec

    def _end_explained(
        self,
        parent: _Episode,
        window_end: int,
        detected_at: Callable[[int], int],
        ended: list[_Episode],
    ) -> list[AlertRecord]:
        """Resolve, with ``parent``, the episodes it muted that started during it
        (:meth:`_muted_by`): their trouble was its incident (one incident, one page).  Left
        open, a provider-wide incident would end in a page per merchant still recovering,
        a merchant with a call a window needing minutes of evidence where its provider
        needs one window; and the timeouts alert of an outage, slower to resolve on fewer
        events than the system errors that muted it, would page as the outage ends.  One
        still in trouble fires anew (its evidence restarts with the parent's end, see
        ``Pipeline._explain_beneath``): a page that it is."""
        out: list[AlertRecord] = []
        for fp, ep in list(self.episodes.items()):
            if ep.started_at < parent.started_at or not self._muted_by(parent, ep):
                continue
            if ep.rule != parent.rule:  # not beneath in its own rule: restart its own test
                self.restart_own.add(fp)
            if not ep.firing:
                del self.episodes[fp]
                continue
            out.append(self._end_with(fp, ep, parent, window_end, detected_at, ended))
        return out

    def _muted_inside(self, records: list[AlertRecord], eps: list[_Episode]) -> list[AlertRecord]:
        """A window's records with its resolutions in an order whose every prefix the
        dispatcher reads right: it reads the alerts topic in fetches and may evaluate
        between two, so a muted alert's resolution comes before the resolution of the one
        that mutes it (a provider resolved with its last merchant's record in the next
        fetch paged the merchant).  Only resolutions move, among their own places, and
        only as far as that needs (earliest first of those free to go); firing records
        keep theirs (a new group waits ``group_wait`` anyway)."""
        places = [i for i, r in enumerate(records) if r.status == "resolved"]
        if len(places) < 2:
            return records
        by_id = {ep.alert_id: ep for ep in eps if ep.alert_id}
        ended = [by_id.get(records[i].alert_id) for i in places]
        at = {id(ep): k for k, ep in enumerate(ended) if ep is not None}
        index = _EpisodeIndex([ep for ep in ended if ep is not None])
        waits = [0] * len(ended)  # per resolution: how many it mutes are still to go
        muters: list[list[int]] = [[] for _ in ended]
        for k, ep in enumerate(ended):
            for o in self._muters(ep, index) if ep is not None else ():
                muters[k].append(at[id(o)])
                waits[at[id(o)]] += 1
        free = [k for k, w in enumerate(waits) if w == 0]
        order: list[int] = []
        while free:
            k = heapq.heappop(free)
            order.append(k)
            for j in muters[k]:
                waits[j] -= 1
                if waits[j] == 0:
                    heapq.heappush(free, j)
        order += [k for k in range(len(ended)) if waits[k] > 0]  # a cycle: as listed
        out = list(records)
        for place, k in zip(places, order, strict=True):
            out[place] = records[places[k]]
        return out

    def _muters(self, ep: _Episode, index: _EpisodeIndex) -> list[_Episode]:
        """The episodes of ``index`` the dispatcher mutes ``ep`` under, in its order of
        precedence: a child it is folded into, else what mutes it (:meth:`_muted_by`)."""
        near = {id(o): o for o in index.muter_candidates(ep)}
        near.pop(id(ep), None)
        folded = [o for o in near.values() if _folded_into(ep, o)]
        return folded or [o for o in near.values() if self._muted_by(o, ep)]

    def _muted_by(self, parent: _Episode, ep: _Episode) -> bool:
        """Whether the dispatcher mutes ``ep`` while ``parent`` fires (its default
        inhibition, :mod:`stream.alerting.inhibit`): the same rule beneath unless ``ep``
        carries ``parent``; on the same series, of two signals a built-in rule pairs,
        the one that began first (:class:`~stream.config.InhibitRule` ``first_fires``);
        latency beneath a critical error rate."""
        if ep.rule == parent.rule:
            return is_beneath(ep.series, parent.series) and not names(
                parent.hints, ep.series, CARRIES_SHARE
            )
        if (parent.signal, ep.signal) in self.same_series_mutes:  # first fires (config)
            return ep.series == parent.series and parent.started_at <= ep.started_at
        if (ep.signal, parent.signal) in self.same_series_mutes:  # the narrower began first
            return (
                ep.series == parent.series
                and parent.started_at < ep.started_at
                and severity_rank(parent.severity) >= severity_rank(ep.severity)
            )
        return (
            self.critical_errors_mute_latency
            and parent.signal == "error_rate"
            and parent.severity == "critical"
            and ep.signal in LATENCY_SIGNALS
            and is_beneath(ep.series, parent.series)
        )

    @staticmethod
    def _is_evidence(j: Judgement) -> bool:
        return j.volume > 0 or j.signal in EVIDENCE_WITHOUT_CALLS

    def _anomalous(
        self,
        fp: str,
        ep: _Episode | None,
        j: Judgement,
        window_end: int,
        detected_at: Callable[[int], int],
    ) -> list[AlertRecord]:
        if ep is None:
            ep = _Episode(j.rule, j.signal, j.series, started_at=j.window_start)
            self.episodes[fp] = ep
        ep.anomalous_windows += 1
        relapsed = ep.firing and ep.recovered_end > 0
        ep.quiet_windows = ep.quiet_calls = ep.recovered_end = 0
        ep.healthy_llr = 0.0
        ep.fire_calls += max(0, j.volume) + ep.run_calls
        ep.fire_events += max(0.0, j.value) * max(0, j.volume) + ep.run_events
        ep.run_calls, ep.run_events = 0, 0.0
        ep.last_anomalous_end = ep.last_evidence_end = j.window_end
        if not ep.firing and ep.anomalous_windows >= self.for_windows:
            ep.firing = True
            ep.severity = j.severity
            ep.alert_id = alert_id(fp, ep.started_at)
            ep.hints = list(j.hints)  # what the dispatcher attributes by (see _folded_into)
            return [self._record(ep, fp, "firing", j, detected_at(window_end))]
        if ep.firing and (relapsed or severity_rank(j.severity) > severity_rank(ep.severity)):
            # Escalation, or a relapse while its recovery was held, is news for the
            # on-call: the same episode (one page), re-announced with what is seen now.
            ep.severity = max(ep.severity, j.severity, key=severity_rank)
            ep.hints = list(j.hints)
            return [self._record(ep, fp, "firing", j, detected_at(window_end))]
        return []

    def _quiet(
        self,
        fp: str,
        ep: _Episode,
        j: Judgement,
        window_end: int,
        detected_at: Callable[[int], int],
    ) -> list[AlertRecord]:
        """A window judged healthy on evidence."""
        if not ep.firing:
            # A pending episode that does not persist was noise: forget it silently.
            del self.episodes[fp]
            return []
        ep.quiet_windows += 1
        ep.last_evidence_end = j.window_end
        healthy = j.signal in EVIDENCE_WITHOUT_CALLS
        ep.quiet_calls += self.resolve_min_calls if healthy else max(0, j.volume)
        ep.run_calls += max(0, j.volume)
        ep.run_events += max(0.0, j.value) * max(0, j.volume)
        if j.signal in RATE_SIGNALS:
            llr = _reverse_llr(ep, j, self.resolve_min_calls)
            ep.healthy_llr = max(0.0, ep.healthy_llr + llr)
            if ep.healthy_llr < RESOLVE_LLR:
                return []
        if (
            ep.quiet_windows < self.keep_firing_for_windows
            or ep.quiet_calls < self.resolve_min_calls
        ):
            return []
        if not ep.recovered_end:
            ep.recovered_end = j.window_end
            if j.signal in RATE_SIGNALS and self.relapse_h > 0:
                hold = relapse_hold_s(ep, j, self.relapse_h, self.resolve_min_calls)
                ep.hold_s = min(hold, self.resolve_hold_max_s)
        if not self._held_long_enough(ep, j.window_end):
            return []
        return self._resolve(fp, ep, j, window_end, detected_at)

    def _held_long_enough(self, ep: _Episode, window_end: int) -> bool:
        """Whether a recovered episode has stayed healthy for its hold: ``resolve_hold_s``
        or, longer, the time a relapse would take to be detected (``ep.hold_s``)."""
        return window_end - ep.recovered_end >= max(self.resolve_hold_s, ep.hold_s) * 1000

    def _no_evidence(
        self, fp: str, ep: _Episode, window_end: int, detected_at: Callable[[int], int]
    ) -> list[AlertRecord]:
        """No judgement, or a healthy one without calls: nothing changes unless it went
        stale, or it recovered and the hold has passed."""
        if ep.recovered_end and self._held_long_enough(ep, window_end):
            return self._resolve(fp, ep, None, window_end, detected_at)
        if window_end - ep.last_evidence_end < self.stale_after_s * 1000:
            return []
        if not ep.firing:
            del self.episodes[fp]
            return []
        return self._resolve(fp, ep, None, window_end, detected_at)

    def _resolve(
        self,
        fp: str,
        ep: _Episode,
        j: Judgement | None,
        window_end: int,
        detected_at: Callable[[int], int],
        ended: bool = True,
    ) -> list[AlertRecord]:
        del self.episodes[fp]
        if ended and hasattr(self, "_ended"):
            self._ended.append(ep)
        rec = self._record(ep, fp, "resolved", j, detected_at(window_end), window_end=window_end)
        rec.resolved_at = ep.last_anomalous_end
        return [rec]

    @staticmethod
    def _record(
        ep: _Episode,
        fp: str,
        status: str,
        j: Judgement | None,
        detected_at: int,
        window_end: int | None = None,
    ) -> AlertRecord:
        duration_s = (ep.last_anomalous_end - ep.started_at) // 1000
        if status == "resolved":
            summary = f"RESOLVED after {duration_s}s: " + (
                j.summary if j else series_labels(ep.series)
            )
        else:
            summary = j.summary if j else series_labels(ep.series)
        return AlertRecord(
            alert_id=ep.alert_id,
            fingerprint=fp,
            status=status,
            severity=ep.severity,
            rule=ep.rule,
            signal=ep.signal,
            series=ep.series,
            started_at=ep.started_at,
            resolved_at=None,
            window_end=j.window_end if j else (window_end if window_end is not None else 0),
            detected_at=detected_at,
            value=float(j.value) if j else 0.0,
            expected=float(j.expected) if j else 0.0,
            score=float(j.score) if j else 0.0,
            summary=summary,
            hints=list(j.hints) if j else [],
        )


def same_series_mutes(rules: Iterable[InhibitRule]) -> frozenset[tuple[str, str]]:
    """(source, target) signals of the ``first_fires`` inhibit rules that pair one signal
    with another by signal alone: on the same series at least, whatever their ``equal``;
    of the two, the one that began first mutes the other.

    >>> same_series_mutes([InhibitRule({"signal": "error_rate"}, {"signal": "timeouts"},
    ...                                first_fires=True)])
    frozenset({('error_rate', 'timeouts')})
    """
    return frozenset(
        (r.source_match["signal"], r.target_match["signal"])
        for r in rules
        if r.first_fires
        and set(r.source_match) == {"signal"} == set(r.target_match)
        and not r.source_match_re
        and not r.target_match_re
    )


class _EpisodeIndex:
    """Episodes by series and by series value, to find what may mute one without
    comparing every pair (a provider outage resolves thousands of merchants at once)."""

    def __init__(self, eps: Iterable[_Episode]) -> None:
        self.by_series: dict[frozenset[tuple[str, str]], list[_Episode]] = {}
        self.by_value: dict[tuple[str, str], list[_Episode]] = {}
        for ep in eps:
            self.by_series.setdefault(frozenset(ep.series.items()), []).append(ep)
            for item in ep.series.items():
                self.by_value.setdefault(item, []).append(ep)

    def muter_candidates(self, ep: _Episode) -> Iterable[_Episode]:
        """Episodes of ``ep``'s series or a broader one (what mutes beneath or on the same
        series), and those whose series has a value ``ep``'s hints name (a child it is
        folded into)."""
        items = list(ep.series.items())
        for size in range(len(items) + 1):
            for sub in combinations(items, size):
                yield from self.by_series.get(frozenset(sub), ())
        for h in ep.hints:
            yield from self.by_value.get((str(h.get("dimension")), str(h.get("value"))), ())


def _folded_into(parent: _Episode, child: _Episode) -> bool:
    """Whether the dispatcher folds ``parent`` into ``child`` (``inhibit.carries``): it
    may (:func:`~stream.alerting.inhibit.may_fold`) and its hints, of its last firing
    record (what the dispatcher saw), name the child."""
    return may_fold(parent, child) and names(
        getattr(parent, "hints", ()), child.series, CARRIES_SHARE
    )


def _share(events: float, calls: float, p0: float, prior_calls: int) -> float:
    """A share of bad calls, shrunk by ``prior_calls`` clean calls, at least ``2 p0``."""
    return min(max(events / (calls + prior_calls), 2 * p0), 1 - 1e-6)


def relapse_hold_s(ep: _Episode, j: Judgement, h: float, prior_calls: int = 20) -> float:
    """How long a recovery must hold before it is announced: the detection target
    ``max(2 d, d + 20 s)`` of the incident continuing, ``d`` Lorden's delay ``h / I`` of
    the episode's share (from its start to now) against the baseline at the calls per
    second of the healthy run.
    A relapse inside it is the same incident (the detector would not yet have found it
    had it never stopped), so it continues the episode instead of paging again.  At
    thousands of calls a second that is 20 s; at one call a minute, long (capped by
    ``resolve_hold_max_s``).

    >>> ep = _Episode("r", "timeouts", {}, 0, fire_calls=80, fire_events=6.0, run_calls=30)
    >>> ep.last_anomalous_end = 0
    >>> j = Judgement("r", "timeouts", {}, 20_000, 30_000, 0.0, False, "info", 0.0, 0.002, "", 10)
    >>> round(relapse_hold_s(ep, j, 13.16))     # 6 in 130: 4.6 % vs 0.2 % at 1 call/s, d = 130 s
    259
    """
    p0 = min(max(j.expected, 1e-4), 0.5)
    # Under "the incident goes on", its share is every bad call since the episode
    # started over every call, the healthy run included (the anomalous windows alone
    # are the unlucky ones and overstate it, which would make the hold too short).
    p1 = _share(ep.fire_events + ep.run_events, ep.fire_calls + ep.run_calls, p0, prior_calls)
    seconds = max(1e-3, (j.window_end - ep.last_anomalous_end) / 1000)
    calls_per_s = ep.run_calls / seconds
    d = oracle_delay_rate_s(p0, p1, calls_per_s, h) if calls_per_s > 0 else math.inf
    return max(2 * d, d + 20.0)


def _reverse_llr(ep: _Episode, j: Judgement, prior_calls: int = 20) -> float:
    """Log-likelihood ratio of one healthy window's calls: baseline share (``expected``)
    against the episode's share from its start to its last anomalous window (the
    anomalous windows alone overstate it: they are the unlucky ones; ``prior_calls``
    clean calls are added, so one failure in a small merchant's three calls is not
    taken for a 33 % share).  Positive when the
    window looks like the baseline; one error at a tiny baseline makes it strongly negative.

    >>> ep = _Episode("r", "timeouts", {}, 0, fire_calls=100, fire_events=4.0)
    >>> j = Judgement("r", "timeouts", {}, 0, 10_000, 0.0, False, "info", 0.0, 0.001, "", 20)
    >>> round(_reverse_llr(ep, j), 2)      # 20 calls without a timeout: 0.66 nats for health
    0.66
    """
    n = max(0, j.volume)
    if n == 0 or ep.fire_calls <= 0:
        return 0.0
    p0 = min(max(j.expected, 1e-4), 0.5)
    p1 = _share(ep.fire_events, ep.fire_calls, p0, prior_calls)
    k = min(n, max(0.0, j.value) * n)
    return k * math.log(p0 / p1) + (n - k) * math.log((1 - p0) / (1 - p1))
