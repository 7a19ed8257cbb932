"""Payment-health metrics on ``/metrics``: what the detectors saw in the newest closed window.

Once per closed window (never per event) :meth:`PaymentMetrics.update` reads the
window's counters, latency histograms and the rules' detectors for the exported
series with numpy, and keeps the result as one immutable snapshot; a scrape turns
that snapshot into metric families (in the HTTP server's thread, cached per
window).  Every value is a gauge of the newest window, so it reads the same
whatever the scrape interval, and a series that goes idle, is evicted or falls
under the cap simply is not in the next snapshot: it leaves the exposition.

Exported series: the roll-up levels of ``windows.levels`` (those without
``merchant_id``: provider, provider·operation), merchant levels too with
``metrics.merchant_series``; at most ``metrics.max_series`` of them, coarse levels
first, then the busiest (the rest are counted in ``paywatch_payment_series_dropped``).
docs/operations.md lists every metric, its labels and the cardinality bounds.

The band is the detector's expected value ± 3 standard errors of a simple count
model (binomial for rates, Poisson for volume), as in the HTML report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from models.base import expected_of
from models.sequential import CallbackBank, SeqBank
from models.threshold import ErrorRateThreshold, StaticSLO
from stream.config import Config
from stream.ingest.events import SYSTEM_ERROR_CLASSES
from stream.judge.features import JudgedWindow, Row
from stream.judge.rules import Rule
from stream.series import series_key
from stream.windows import histogram
from stream.windows.columns import COL
from stream.windows.registry import Dims

PREFIX = "paywatch_payment_"
#: Classic bucket bounds (seconds) the window's log-bucketed histograms are folded into.
LATENCY_BUCKETS_S = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
#: ``kind`` label of paywatch_payment_callbacks -> the window column it reads.
CALLBACK_KINDS = {
    "expected": "created",
    "received": "callbacks",
    "missing": "missing_callbacks",
    "verify_failed": "verify_failures",
    "nacked": "nacks",
    "ack_error": "ack_errors",
    "late_ack": "late_acks",
    "duplicate": "duplicates",
    "amount_mismatch": "amount_mismatches",
}
RATE_SIGNALS = {"error_rate": "volume", "config_error": "volume", "notification": "due"}
#: Every family: name -> (type, help).
FAMILIES = {
    "calls": ("gauge", "Calls in the newest closed window"),
    "success_ratio": ("gauge", "Share of the window's calls that succeeded"),
    "system_error_ratio": ("gauge", "Share of the window's calls failing with a system error"),
    "latency_seconds": ("gaugehistogram", "Call latency in the newest closed window"),
    "callbacks": ("gauge", "Callbacks in the newest closed window, by kind"),
    "expected": ("gauge", "The rule's detector's expected value for this window"),
    "band_lower": ("gauge", "Expected value - 3 standard errors"),
    "band_upper": ("gauge", "Expected value + 3 standard errors"),
    "threshold": ("gauge", "Static thresholds of the configured rules"),
    "alert_firing": ("gauge", "1 while the rule's alert for the series fires, else 0"),
    "series": ("gauge", "Series exported in the paywatch_payment_ families"),
    "series_dropped": ("gauge", "Series over metrics.max_series, not exported"),
    "window_end_seconds": ("gauge", "Event-time end of the newest closed window"),
}


def level_name(dims: Dims) -> str:
    """The ``level`` label: ``provider``, ``provider_operation``, ..."""
    return "_".join(dims)


@dataclass(frozen=True)
class Baseline:
    """One rule's expected value and band for some exported series (rows of the snapshot)."""

    rule: str
    signal: str
    rows: np.ndarray
    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


@dataclass
class Snapshot:
    """Everything a scrape shows, computed once per window; never changed once built."""

    labels: list[dict[str, str]] = field(default_factory=list)
    calls: np.ndarray = field(default_factory=lambda: np.zeros(0))
    success: np.ndarray = field(default_factory=lambda: np.zeros(0))
    system_errors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    callbacks: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    has_callbacks: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    buckets: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # cumulative
    latency_sum_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    baselines: list[Baseline] = field(default_factory=list)
    firing: list[tuple[str, str, int, int]] = field(default_factory=list)  # rule, signal, row, 0/1
    dropped: int = 0
    window_end_s: float = math.nan
    families: list[Metric] | None = None


class PaymentMetrics:
    """A prometheus_client collector of the payment-health families (see module doc)."""

    def __init__(self, config: Config, registry: CollectorRegistry | None = None) -> None:
        m = config.metrics
        levels = [tuple(lv) for lv in config.windows.levels]
        if not m.merchant_series:
            levels = [lv for lv in levels if "merchant_id" not in lv]
        self.levels: list[Dims] = sorted(dict.fromkeys(levels), key=len)
        self.max_series = m.max_series
        self.idle_ms = int(config.windows.size_s * 1000) * 30  # 30 windows without an event
        self.thresholds = static_thresholds(config)
        self.bounds_ms = np.asarray(LATENCY_BUCKETS_S) * 1000.0
        self.snapshot = Snapshot()
        if registry is not None:
            registry.register(self)

    # -- prometheus_client's collector protocol (called from the HTTP thread) ---------

    def describe(self) -> list[Metric]:
        return [Metric(PREFIX + name, doc, kind) for name, (kind, doc) in FAMILIES.items()]

    def collect(self) -> list[Metric]:
        snap = self.snapshot  # one read: update() swaps in a new object, never edits it
        if snap.families is None:
            snap.families = families_of(snap, self.thresholds)
        return snap.families

    # -- once per closed window -----------------------------------------------------

    def update(
        self, window: JudgedWindow, rules: Sequence[Rule], firing: Iterable[dict[str, Any]]
    ) -> None:
        """The newest closed window's health, the rules' baselines and the firing alerts."""
        sids, dropped = self._exported(window)
        reg, win = window.registry, window.win
        counts = win.counts[sids]
        calls = counts[:, COL["volume"]].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            success = counts[:, COL["success"]] / calls
            sys_cols = [COL[f"err_{c}"] for c in SYSTEM_ERROR_CLASSES]
            system_errors = counts[:, sys_cols] / calls[:, None]
        levels = [key[0] for key in map(reg.keys.__getitem__, sids.tolist()) if key is not None]
        buckets, lat_sum = self._latency(win.hist_keys, win.hist_counts, sids, len(reg))
        self.snapshot = Snapshot(
            labels=[
                reg.labels(s) | {"level": level_name(lv)}
                for s, lv in zip(sids, levels, strict=True)
            ],
            calls=calls,
            success=success,
            system_errors=system_errors,
            callbacks=counts[:, [COL[c] for c in CALLBACK_KINDS.values()]].astype(np.float64),
            has_callbacks=np.array(["operation" not in lv for lv in levels], bool),
            buckets=buckets,
            latency_sum_s=lat_sum,
            baselines=baselines(window, rules, sids),
            firing=firing_state(window, rules, sids, firing),
            dropped=dropped,
            window_end_s=win.end_ms / 1000.0,
        )

    def _exported(self, window: JudgedWindow) -> tuple[np.ndarray, int]:
        """Series ids to export (coarse levels first, then the busiest) and how many the
        cap left out.  Series without an event for 30 windows are idle: not exported."""
        reg, win = window.registry, window.win
        n = win.counts.shape[0]
        rank = np.full(len(reg.level_codes) + 1, -1, np.int64)  # level code -> priority
        for i, lv in enumerate(self.levels):
            code = reg.level_codes.get(lv)
            if code is not None:
                rank[code] = i
        codes = reg.level_of[:n].astype(np.int64)
        prio = np.where(codes >= 0, rank[codes], -1)
        live = (prio >= 0) & (reg.last_seen[:n] >= win.end_ms - self.idle_ms)
        cand = np.flatnonzero(live)
        order = np.lexsort((-win.counts[cand, COL["volume"]], prio[cand]))
        keep = np.sort(cand[order[: self.max_series]])
        return keep, int(cand.size - keep.size)

    def _latency(
        self, keys: np.ndarray, cnt: np.ndarray, sids: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Classic cumulative buckets (``le``, then +Inf) and the latency sum per series."""
        row_of = np.full(max(n, 1), -1, np.int64)
        row_of[sids] = np.arange(sids.size)
        out = np.zeros((sids.size, len(self.bounds_ms) + 1))
        total = np.zeros(sids.size)
        if keys.size:
            sid = keys // histogram.N_BUCKETS
            row = np.where(sid < row_of.size, row_of[np.minimum(sid, row_of.size - 1)], -1)
            sel = row >= 0
            ms = histogram.value_of(keys[sel] % histogram.N_BUCKETS)
            le = np.searchsorted(self.bounds_ms, ms, side="left")  # value <= bound
            np.add.at(out, (row[sel], le), cnt[sel])
            np.add.at(total, row[sel], ms * cnt[sel] / 1000.0)
        return np.cumsum(out, axis=1), total


def static_thresholds(config: Config) -> list[tuple[dict[str, str], float]]:
    """The configured static thresholds: the error-rate rule's and every SLO's."""
    er = config.detectors.error_rate
    out: list[tuple[dict[str, str], float]] = []
    if er.enabled:
        rule = {"rule": er.rule, "signal": "error_rate"}
        out += [(rule | {"severity": "warning"}, er.threshold)]
        out += [(rule | {"severity": "critical"}, er.critical_threshold)]
    for slo in config.detectors.slos:
        rule = {"rule": slo.rule, "signal": "slo"}
        out += [(rule | {"severity": "warning"}, slo.warning)]
        out += [(rule | {"severity": "critical"}, slo.critical)]
    return out


def _rule_rows(window: JudgedWindow, rule: Rule, sids: np.ndarray) -> np.ndarray:
    """Rows (positions in ``sids``) of the exported series this rule judges."""
    level_banks = getattr(rule, "level_banks", None)
    if level_banks is not None:
        levels = {lv for levels, _ in level_banks() for lv in levels}
    else:
        levels = set(getattr(rule, "levels", ()))
    if not levels:
        return np.zeros(0, np.int64)
    return np.flatnonzero(window.registry.level_mask(levels)[sids])


def baselines(window: JudgedWindow, rules: Sequence[Rule], sids: np.ndarray) -> list[Baseline]:
    """Each learning rule's expected value and band on the exported series it judges
    (static thresholds are a family of their own; river models have no baseline)."""
    out = []
    consts = window.constants((window.win.end_ms - window.win.start_ms) / 1000.0)
    for rule in rules:
        ready_detector = getattr(rule, "ready_detector", None)
        level_banks = getattr(rule, "level_banks", None)
        if ready_detector is None or level_banks is None:
            continue
        rows, values = [], []
        for levels, bank in level_banks():  # e.g. latency: operations, and pooled series
            bank_rows = np.flatnonzero(window.registry.level_mask(set(levels))[sids])
            expected = _bank_expected(bank, sids[bank_rows])
            for i, r in enumerate(bank_rows.tolist()):
                e = expected[i] if expected is not None else math.nan
                if expected is None or e is None:  # no bank read-out: the series' detector
                    det = ready_detector(int(sids[r]))
                    if det is None or isinstance(det, (ErrorRateThreshold, StaticSLO)):
                        continue
                    e = expected_of(det, Row(window.features, consts, int(sids[r])))
                if math.isfinite(e):
                    rows.append(r)
                    values.append(e)
        if rows:
            out.append(_band(window, rule.name, rule.signal, sids, np.array(rows), values))
    return out


def _bank_expected(bank: object, slots: np.ndarray) -> list[float | None] | None:
    """The sequential banks' expected values of ``slots`` in one call (NaN: not ready;
    None: a slot the bank has not grown to, left to its detector), or None for other
    detectors.  The same numbers a copy of each slot as a detector of its own gives,
    without building those copies every window."""
    if isinstance(bank, CallbackBank):
        capacity = bank.banks["missing"].capacity
    elif isinstance(bank, SeqBank):
        capacity = bank.capacity
    else:
        return None
    ready = bank.ready(slots)
    inside = ready & (slots < capacity)
    e = np.full(slots.size, math.nan)
    if inside.any():
        e[inside] = bank.expected_many(slots[inside])
    out: list[float | None] = e.tolist()
    for i in np.flatnonzero(ready & ~inside).tolist():
        out[i] = None
    return out


def _band(
    window: JudgedWindow, rule: str, signal: str, sids: np.ndarray, rows: np.ndarray, e: list[float]
) -> Baseline:
    exp = np.asarray(e, np.float64)
    if signal in RATE_SIGNALS:
        n = window.features[RATE_SIGNALS[signal]][sids[rows]].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            se = np.sqrt(np.clip(exp * (1 - exp), 0, None) / n)
        se = np.where(n > 0, se, np.nan)
        lo, hi = np.clip(exp - 3 * se, 0, 1), np.clip(exp + 3 * se, 0, 1)
    elif signal == "volume":
        se = np.sqrt(np.clip(exp, 0, None))
        lo, hi = np.clip(exp - 3 * se, 0, None), exp + 3 * se
    else:
        lo = hi = np.full(exp.size, np.nan)
    if signal == "latency":
        exp = exp / 1000.0  # the detectors think in ms; Prometheus in seconds
    return Baseline(rule, signal, rows, exp, lo, hi)


def firing_state(
    window: JudgedWindow,
    rules: Sequence[Rule],
    sids: np.ndarray,
    firing: Iterable[dict[str, Any]],
) -> list[tuple[str, str, int, int]]:
    """(rule, signal, row, 1 firing / 0 not) for every rule and exported series it judges."""
    on = {(f["rule"], series_key(f["series"])) for f in firing}
    keys = [series_key(window.registry.labels(int(s))) for s in sids.tolist()]
    return [
        (rule.name, rule.signal, r, int((rule.name, keys[r]) in on))
        for rule in rules
        for r in _rule_rows(window, rule, sids).tolist()
    ]


def families_of(snap: Snapshot, thresholds: list[tuple[dict[str, str], float]]) -> list[Metric]:
    """The snapshot as metric families (one Python pass over its samples, per scrape)."""
    fam = {name: Metric(PREFIX + name, doc, kind) for name, (kind, doc) in FAMILIES.items()}

    def add(name: str, labels: dict[str, str], value: float, suffix: str = "") -> None:
        if math.isfinite(value):
            fam[name].add_sample(PREFIX + name + suffix, labels, float(value))

    for r, labels in enumerate(snap.labels):
        add("calls", labels, snap.calls[r])
        add("success_ratio", labels, snap.success[r])
        for c, cls in enumerate(SYSTEM_ERROR_CLASSES):
            add("system_error_ratio", labels | {"class": cls}, snap.system_errors[r, c])
        if snap.has_callbacks[r]:
            for k, kind in enumerate(CALLBACK_KINDS):
                add("callbacks", labels | {"kind": kind}, snap.callbacks[r, k])
        les = [*(f"{b:g}" for b in LATENCY_BUCKETS_S), "+Inf"]
        for le, v in zip(les, snap.buckets[r].tolist(), strict=True):
            add("latency_seconds", labels | {"le": le}, v, "_bucket")
        add("latency_seconds", labels, snap.buckets[r, -1], "_gcount")
        add("latency_seconds", labels, snap.latency_sum_s[r], "_gsum")
    for b in snap.baselines:
        for i, r in enumerate(b.rows.tolist()):
            labels = snap.labels[r] | {"rule": b.rule, "signal": b.signal}
            add("expected", labels, b.expected[i])
            add("band_lower", labels, b.lower[i])
            add("band_upper", labels, b.upper[i])
    for rule, signal, r, on in snap.firing:
        add("alert_firing", snap.labels[r] | {"rule": rule, "signal": signal}, on)
    for labels, value in thresholds:
        add("threshold", labels, value)
    add("series", {}, len(snap.labels))
    add("series_dropped", {}, snap.dropped)
    add("window_end_seconds", {}, snap.window_end_s)
    return list(fam.values())
