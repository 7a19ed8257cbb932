"""Rules: turn a closed window into per-series features, ask the detectors, return judgements.

Features are computed for every series at once with numpy.  A rule whose
detector has a vectorised twin in :mod:`models.banks` (the built-in error-rate,
config-error, latency and static-threshold detectors) judges all its series in
one call per window; any other detector — a river model, a wrapper — is kept
one per series and called once per window with a read-only view of that
series' row.  A rule judges only the series of its levels that carry its signal
(calls, callbacks, metric samples) — plus any series with an open episode, so
the lifecycle learns when it is quiet again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, cast

import numpy as np

from models.bank import bank_for
from models.base import FEATURES, score_learn, severity
from models.callbacks import CallbackDetector
from models.combinators import Combined, GuardedBy, VolumeGate
from models.error_rate import ConfigErrorDetector, ErrorRateDetector
from models.latency import LatencyDetector, LatencyParams
from models.metric import MetricDetector
from models.multivariate import MultivariateDetector
from models.threshold import ErrorRateThreshold, StaticSLO
from models.volume import VolumeDetector
from stream.config import Config
from stream.judge.judgement import Judgement, fingerprint
from stream.windows.columns import COL, CONFIG_ERROR_COLS, SYSTEM_ERROR_COLS
from stream.windows.registry import Dims, RegistryKey, SeriesRegistry
from stream.windows.state import METRIC_LEVEL, ClosedWindow, WindowState

CALL_FEATURES = ("volume", "success", "pending", "failure", "unknown")
# The callback features, as the detectors name them (FEATURES ends with them).
NOTIFICATION_FEATURES = FEATURES[FEATURES.index("created") :]


class Rule(Protocol):
    name: str
    signal: str
    sid_of_fp: dict[str, int]  # fingerprint -> series id, for series this rule has judged

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


def window_features(win: ClosedWindow) -> dict[str, np.ndarray]:
    """Every detector feature of every series, as arrays (computed once per window)."""
    cached = getattr(win, "_features", None)
    if cached is not None:
        return cached
    c = win.counts
    f: dict[str, np.ndarray] = {name: c[:, COL[name]] for name in CALL_FEATURES}
    f["system_errors"] = c[:, SYSTEM_ERROR_COLS].sum(axis=1)
    f["config_errors"] = c[:, CONFIG_ERROR_COLS].sum(axis=1)
    f["business_declines"] = c[:, COL["err_business_decline"]]
    f["timeouts"] = c[:, COL["err_timeout"]]
    f["latency_p50"], f["latency_p95"], f["latency_p99"] = win.latency.T
    for name in NOTIFICATION_FEATURES:
        f[name] = c[:, COL[name]]
    f["metric_count"] = win.metrics[:, 0]
    f["value"] = win.metric_mean()
    object.__setattr__(win, "_features", f)
    return f


class Row(Mapping[str, float]):
    """One series' features as a read-only mapping (no dict built per series)."""

    __slots__ = ("consts", "feats", "sid")

    def __init__(self, feats: dict[str, np.ndarray], consts: dict[str, float], sid: int) -> None:
        self.feats, self.consts, self.sid = feats, consts, sid

    def __contains__(self, key: object) -> bool:
        return key in self.feats or key in self.consts

    def __iter__(self) -> Iterator[str]:
        yield from self.feats
        yield from self.consts

    def __len__(self) -> int:
        return len(self.feats) + len(self.consts)

    def __getitem__(self, key: str) -> float:
        arr = self.feats.get(key)
        if arr is not None:
            return float(arr[self.sid])
        return self.consts[key]

    def get(self, key: str, default: Any = None) -> Any:
        arr = self.feats.get(key)
        if arr is not None:
            return float(arr[self.sid])
        return self.consts.get(key, default)


def root_cause_hints(
    win: ClosedWindow,
    registry: SeriesRegistry,
    fine_dims: Dims,
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
    children, dim_codes = _fine_children(win, registry, fine_dims)
    match = np.ones(children.size, bool)
    for d, value in zip(dims, values, strict=True):
        codes, index = dim_codes[fine_dims.index(d)]
        match &= codes == index.get(value, -1)
    rows = children[match]
    w_all, v_all = weights[rows].astype(np.float64), win.column("volume")[rows].astype(np.float64)
    total_w, total_v = float(w_all.sum()), float(v_all.sum())
    if total_w <= 0:
        return []
    hints: list[dict[str, Any]] = []
    for pos, d in enumerate(fine_dims):
        if d in dims:
            continue
        codes, index = dim_codes[pos]
        w_sum = np.bincount(codes[match], weights=w_all, minlength=len(index))
        v_sum = np.bincount(codes[match], weights=v_all, minlength=len(index))
        share = w_sum / total_w
        lifted = np.flatnonzero((share >= min_share) & (share - v_sum / total_v >= min_lift))
        names = list(index)
        for k in sorted(lifted.tolist(), key=names.__getitem__):  # ties: by name
            hints.append({"dimension": d, "value": names[k], "share": round(float(share[k]), 3)})
    hints.sort(key=lambda h: -float(h["share"]))
    return hints[:top]


def _fine_children(
    win: ClosedWindow, registry: SeriesRegistry, fine_dims: Dims
) -> tuple[np.ndarray, list[tuple[np.ndarray, dict[str, int]]]]:
    """The window's active series of the finest level and, per dimension, each one's
    value as a code into a value -> code table (built once per window, shared by
    every hint)."""
    cache: dict[Dims, Any] = win.__dict__.setdefault("_fine", {})
    got = cache.get(fine_dims)
    if got is None:
        volume = win.column("volume")[: len(registry)]
        active = np.flatnonzero(volume > 0)
        fine = active[registry.level_of[active] == registry.level_codes.get(fine_dims, -2)]
        values = [cast(RegistryKey, registry.keys[c])[1] for c in fine.tolist()]
        dim_codes = []
        for pos in range(len(fine_dims)):
            index: dict[str, int] = {}
            codes = [index.setdefault(v[pos], len(index)) for v in values]
            dim_codes.append((np.array(codes, dtype=np.int64), index))
        got = cache[fine_dims] = (fine, dim_codes)
    return got


def _ms(v: float) -> str:
    return f"{v / 1000:.1f} s" if v >= 1000 else f"{v:.0f} ms"


# describe(x, expected, detector) -> (value shown, impact for severity, text after the series)
Describe = Callable[[Row, float, Any], tuple[float, float, str]]


@dataclass(frozen=True)
class _DescribeErrors:
    """System-error summary; names the learned baseline only where one is learned."""

    threshold: float
    learned: bool

    def __call__(self, x: Row, expected: float, det: Any) -> tuple[float, float, str]:
        vol, err = x["volume"], x["system_errors"]
        rate = err / vol if vol else 0.0
        text = f"{rate:.1%} system errors in {vol:.0f} calls ("
        if self.learned:
            text += f"normal {expected:.2%}, "
        return rate, err, text + f"pages above {self.threshold:.0%})"


def _describe_config(x: Row, expected: float, det: Any) -> tuple[float, float, str]:
    vol, err = x["volume"], x["config_errors"]
    rate = err / vol if vol else 0.0
    return (
        rate,
        err,
        (f"{err:.0f} of {vol:.0f} calls fail with auth/signature/certificate errors ({rate:.0%})"),
    )


def _describe_latency(x: Row, expected: float, det: Any) -> tuple[float, float, str]:
    p95 = x["latency_p95"]
    return (
        p95,
        x["volume"],
        (
            f"p95 latency {_ms(p95)} (normal {_ms(expected)}), p99 {_ms(x['latency_p99'])}, "
            f"{x['volume']:.0f} calls"
        ),
    )


def _describe_volume(x: Row, expected: float, det: Any) -> tuple[float, float, str]:
    vol = x["volume"]
    drop = 1 - vol / expected if expected > 0 else 0.0
    return (
        vol,
        max(0.0, expected - vol),
        (
            f"{vol:.0f} calls in the window, ~{expected:.0f} expected ({-drop:+.0%}): "
            "traffic dropped"
        ),
    )


def _describe_callbacks(x: Row, expected: float, det: Any) -> tuple[float, float, str]:
    worst = det.worst(x) if hasattr(det, "worst") else "missing"
    created, cb = x["created"], x["callbacks"]
    if worst == "missing":
        v = x["missing_callbacks"] / created if created else 0.0
        return (
            v,
            x["missing_callbacks"],
            (
                f"{x['missing_callbacks']:.0f} callbacks missing of {created:.0f} payments created "
                f"({v:.0%}, normal {expected:.1%})"
            ),
        )
    key = {"verify": "verify_failures", "nacks": "nacks", "late_acks": "late_acks"}[worst]
    label = {
        "verify": "signature verification failures",
        "nacks": "callbacks nacked",
        "late_acks": "callbacks acked late",
    }[worst]
    v = x[key] / cb if cb else 0.0
    return v, x[key], f"{x[key]:.0f} {label} of {cb:.0f} callbacks ({v:.0%})"


def _describe_metric(x: Row, expected: float, det: Any) -> tuple[float, float, str]:
    v = x["value"]
    return v, 1.0, f"value {v:.4g} is unusual for this series"


def _describe_multivariate(x: Row, expected: float, det: Any) -> tuple[float, float, str]:
    return x["volume"], x["volume"], "unusual combination of volume, errors and latency"


class DetectorRule:
    """One rule: a detector per series of some levels (or one bank for all of them),
    judged once per window."""

    def __init__(
        self,
        name: str,
        signal: str,
        make: Callable[[], Any],
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
        self.models: dict[int, Any] = {}
        # Built-in detectors have a vectorised twin that judges every series in one call.
        self.bank = bank_for(make)
        # Called with (series id, features, detector, score) for every judged series.
        self.observe: Callable[[int, Row, Any, float], None] | None = None
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

    def _fingerprint(self, sid: int, registry: SeriesRegistry) -> str:
        fp = self.fp.get(sid)
        if fp is None:
            fp = fingerprint(self.name, registry.labels(sid))
            self.fp[sid] = fp
            self.sid_of_fp[fp] = sid
        return fp

    def judge(self, win: ClosedWindow, windows: WindowState, active: set[str]) -> list[Judgement]:
        registry = windows.registry
        feats = window_features(win)
        mask = registry.level_mask(self.levels)
        if self.gate is not None:
            mask &= feats[self.gate][: mask.size] > 0
        candidates = np.flatnonzero(mask)
        open_sids = [self.sid_of_fp[fp] for fp in active if fp in self.sid_of_fp]
        if open_sids:
            candidates = np.union1d(candidates, open_sids)
        consts = {
            "window_start_ms": float(win.start_ms),
            "window_s": self.window_s,
            "timestamp": win.start_ms / 1000,
        }
        out: list[Judgement] = []
        observe = self.observe
        if self.bank is not None:
            # All series in one vectorised call; Python runs only for the few reported.
            x_all = _columns(self.bank.keys, feats, candidates, consts)
            scores = self.bank.score_learn_many(candidates, x_all)
            report = scores >= self.threshold
            if open_sids:
                report |= np.isin(candidates, open_sids)
            if observe is not None:
                report[:] = True
            for k in np.flatnonzero(report).tolist():
                sid = int(candidates[k])
                det: Any = self.bank.detector(sid)
                x = Row(feats, consts, sid)
                if observe is not None:
                    observe(sid, x, det, float(scores[k]))
                self._report(win, windows, feats, x, det, float(scores[k]), active, out)
            return out
        for sid in candidates.tolist():
            det = self.models.get(sid)
            if det is None:
                det = self.models[sid] = self.make()
            x = Row(feats, consts, sid)
            score = score_learn(det, x)
            if not getattr(det, "ready", True):
                score = 0.0
            if observe is not None:
                observe(sid, x, det, score)
            self._report(win, windows, feats, x, det, score, active, out)
        return out

    def _report(
        self,
        win: ClosedWindow,
        windows: WindowState,
        feats: dict[str, np.ndarray],
        x: Row,
        det: Any,
        score: float,
        active: set[str],
        out: list[Judgement],
    ) -> None:
        """Append the judgement of one scored series when it is anomalous or has an open
        episode (the lifecycle must see it go quiet)."""
        sid, registry = x.sid, windows.registry
        fp = self.fp.get(sid)
        anomalous = score >= self.threshold
        if not anomalous and (fp is None or fp not in active):
            return
        # river models have no baseline to show; paywatch's detectors do.
        expected = float(det.expected(x)) if hasattr(det, "expected") else math.nan
        value, impact, text = self.describe(x, expected, det)
        sev = severity(score, impact) if anomalous else "info"
        if anomalous and self.critical_when is not None and self.critical_when(x):
            sev = "critical"
        if sev == "critical" and self.max_severity != "critical":
            sev = self.max_severity
        if anomalous and sev == "info" and self.max_severity != "info":
            anomalous = False  # anomalous but hurting (almost) nobody: no page
        series = registry.labels(sid)
        hints = []
        if anomalous and self.hints_from is not None:
            fine = max(windows.call_levels, key=len)
            hints = root_cause_hints(win, registry, fine, sid, feats[self.hints_from])
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
            )
        )


def _columns(
    keys: tuple[str, ...], feats: dict[str, np.ndarray], rows: np.ndarray, consts: dict[str, float]
) -> dict[str, Any]:
    """The features a bank reads (``keys``), for the judged series only."""
    out: dict[str, Any] = {}
    for key in keys:
        arr = feats.get(key)
        if arr is not None:
            out[key] = arr[rows].astype(np.float64)
        elif key in consts:
            out[key] = consts[key]
    return out


def _finite(v: float) -> float:
    return round(float(v), 6) if math.isfinite(v) else 0.0


def _levels(configured: list[list[str]], default: list[Dims]) -> list[Dims]:
    return [tuple(lv) for lv in configured] if configured else default


@dataclass(frozen=True)
class _ErrorRateFactory:
    """Static threshold, plus the learned baseline when enabled (picklable, unlike a closure)."""

    static: ErrorRateThreshold
    learned: bool
    min_windows: int
    min_volume: float = 0.0

    def __call__(self) -> Any:
        if not self.learned:
            return self.static
        # After an outage the CUSUM sits at its cap and drifts down by n * (p1 - p0) per
        # window: with p1 only 3x a 0.15 % baseline that takes minutes, during which the
        # recovered series flaps. A cap just above the threshold and an alternative at
        # least half a point above the baseline bring it down in two or three windows,
        # and a 0.2 % -> 0.7 % rise at 2 000 calls still pages within about two.
        learned = VolumeGate(
            ErrorRateDetector(min_windows=self.min_windows, cusum_cap=13.0, min_increase=0.005),
            self.min_volume,
        )
        # The static threshold vetoes learning from windows it pages on, cold start included.
        guarded = GuardedBy(learned, self.static)
        return Combined(guarded, self.static)  # the first one's baseline is what people see


@dataclass(frozen=True)
class _CriticalRate:
    """Critical whatever the score once the error rate reaches the configured level."""

    rate: float
    min_volume: int

    def __call__(self, x: Row) -> bool:
        return x["system_errors"] >= self.rate * max(x["volume"], self.min_volume)


def _same(detector: Any) -> Any:
    """A stateless detector can be shared by every series."""
    return detector


@dataclass(frozen=True)
class _SLOCritical:
    slo: StaticSLO

    def __call__(self, x: Row) -> bool:
        return self.slo.level(x) == "critical"


@dataclass(frozen=True)
class _DescribeSLO:
    slo: StaticSLO

    def __call__(self, x: Row, expected: float, det: Any) -> tuple[float, float, str]:
        s = self.slo
        v = s.value(x)
        value = math.nan if v is None else v
        name = s.feature if s.per is None else f"{s.feature}/{s.per}"
        shown = f"{value:.2%}" if s.per is not None else f"{value:.4g}"
        return (
            value,
            x["volume"],
            (
                f"{name} {shown} (warning at {s.warning:g}, critical at {s.critical:g}) "
                f"over {x['volume']:.0f} calls"
            ),
        )


def build_rules(config: Config) -> list[Rule]:
    """The rule set a config asks for (defaults: every signal, sensible levels)."""
    d = config.detectors
    w = config.windows
    ws = w.size_s
    call_levels = [tuple(lv) for lv in w.levels]
    coarse = [lv for lv in call_levels if "merchant_id" not in lv] or call_levels[:1]
    notif_levels = list(
        dict.fromkeys(
            [tuple(x for x in lv if x != "operation") for lv in call_levels]
            + [("provider", "signing_key_id")]
        )
    )
    rules: list[Rule] = []
    er = d.error_rate
    if er.enabled:
        static = ErrorRateThreshold(er.threshold, er.min_volume, er.confidence, "system_errors")
        critical = _CriticalRate(er.critical_threshold, er.min_volume)
        # Learned baselines where there is traffic to learn from (roll-ups); a merchant's
        # few calls a window are judged by the static, confidence-bounded threshold only.
        for levels, learned in (
            (coarse, er.learned),
            ([lv for lv in call_levels if lv not in coarse], False),
        ):
            make = _ErrorRateFactory(static, learned, er.min_windows, er.learned_min_volume)
            describe = _DescribeErrors(er.threshold, learned)
            if levels:
                rules.append(
                    DetectorRule(er.rule, "error_rate", make, levels, "volume", describe,
                                 ws, hints_from="system_errors", critical_when=critical)
                )  # fmt: skip
    ce = d.config_errors
    if ce.enabled:
        make_config = partial(ConfigErrorDetector, min_windows=ce.min_windows)
        rules.append(
            DetectorRule(ce.rule, "config_error", make_config, call_levels, "volume",
                         _describe_config, ws, hints_from="config_errors")
        )  # fmt: skip
    lt = d.latency
    if lt.enabled:
        # p99 of a 10 s window is mostly its slowest call (one timeout makes it 10 s):
        # judge p50 and p95, unless configured otherwise.
        keys = tuple(f"latency_{q}" for q in lt.quantiles)
        coef = {"p50": 1.25, "p95": 2.11, "p99": 3.77}
        lat_params = LatencyParams(
            keys=keys,
            se_coef=tuple(coef[q] for q in lt.quantiles),
            min_windows=lt.min_windows,
            min_volume=lt.min_volume,
        )
        make_latency = partial(LatencyDetector, lat_params)
        rules.append(
            DetectorRule(lt.rule, "latency", make_latency, call_levels, "volume",
                         _describe_latency, ws)
        )  # fmt: skip
    vo = d.volume
    if vo.enabled:
        make_volume = partial(VolumeDetector, min_windows=vo.min_windows)
        rules.append(
            DetectorRule(vo.rule, "volume", make_volume, _levels(vo.levels, coarse), None,
                         _describe_volume, ws)
        )  # fmt: skip
    cb = d.callbacks
    if cb.enabled:
        levels = _levels(cb.levels, [lv for lv in notif_levels if "merchant_id" not in lv])
        # Per signing key there are as many series as merchants' keys, almost all clean:
        # judge a key only in windows where its signatures fail (or while it alerts).
        per_key = [lv for lv in levels if "signing_key_id" in lv]
        for group, gate in (([lv for lv in levels if lv not in per_key], None),
                            (per_key, "verify_failures")):  # fmt: skip
            if group:
                rules.append(
                    DetectorRule(cb.rule, "notification", CallbackDetector, group, gate,
                                 _describe_callbacks, ws)
                )  # fmt: skip
    mv = d.multivariate
    if mv.enabled:
        rules.append(
            DetectorRule(mv.rule, "multivariate", MultivariateDetector,
                         _levels(mv.levels, call_levels[:1]), "volume", _describe_multivariate,
                         ws, max_severity="info")
        )  # fmt: skip
    for slo_cfg in d.slos:
        slo = StaticSLO(slo_cfg.feature, slo_cfg.warning, slo_cfg.critical,
                        per=slo_cfg.per or None, min_volume=slo_cfg.min_volume)  # fmt: skip
        rules.append(
            DetectorRule(slo_cfg.rule, "slo", partial(_same, slo),
                         _levels(slo_cfg.levels, call_levels), "volume", _DescribeSLO(slo), ws,
                         critical_when=_SLOCritical(slo))
        )  # fmt: skip
    mt = d.metrics
    if mt.enabled:
        rules.append(
            DetectorRule(mt.rule, "metric", MetricDetector, [METRIC_LEVEL], "metric_count",
                         _describe_metric, ws, threshold=mt.threshold,
                         max_severity="warning")
        )  # fmt: skip
    return rules
