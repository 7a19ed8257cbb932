"""Self-contained HTML reports: a backtest's charts and tables, and the weekly alert review.

One file, no network: charts are inline SVG drawn here, styles are inline CSS.
Each alerting series gets two panels sharing a time axis: the signal with its
expected value and band, and the anomaly score with the rule's threshold.
Alert episodes are shaded red on both, labelled incidents green.

The band is expected ± 3 standard errors of a simple count model — binomial for
rates (error rate, callbacks), Poisson for volume — to show how far a window
may wander by chance; the detectors decide with their own learned models, so a
point outside the band does not by itself mean an alert (the score panel shows
what the detector made of it).
"""

from __future__ import annotations

import html
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.incidents import LabelScore, episodes, series_matches
from stream.judge.judgement import SEVERITIES, severity_rank
from stream.offline.backtest import Trace
from stream.series import series_key, series_labels

MAX_CHARTS = 20
RATE_SIGNALS = {"error_rate", "config_error", "notification"}

CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;
background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde}
h3{font-size:14px;margin:18px 0 4px}.muted{color:#667}
table{border-collapse:collapse;margin:6px 0 12px}td,th{padding:3px 10px;border:1px solid #dde;
text-align:left}th{background:#f1f4fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.kpi{display:inline-block;margin:4px 18px 4px 0;padding:8px 14px;background:#f1f4fa;
border-radius:6px}.kpi b{display:block;font-size:20px}
.legend span{display:inline-block;margin-right:14px}.sw{display:inline-block;width:12px;height:12px;
vertical-align:middle;margin-right:4px;border:1px solid #889}
.chart{margin:2px 0 14px}.ok{color:#17803d}.bad{color:#c0262d}
"""

C_VALUE, C_EXPECTED, C_BAND = "#2457c5", "#555d6e", "#c9d8f5"
C_SCORE, C_THRESHOLD = "#e07b00", "#c0262d"
C_ALERT, C_LABEL = "rgba(220,40,40,0.16)", "rgba(20,150,60,0.22)"
C_NOT_INCIDENT = "rgba(230,160,0,0.22)"  # labelled, must not page (a promotion)


def esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def clock(ms: int | float | None, with_date: bool = True) -> str:
    """UTC time of epoch ms, as shown in reports.

    >>> clock(1767225600000)
    '2026-01-01 00:00:00'
    """
    if ms is None:
        return "-"
    fmt = "%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime(fmt)


def duration(ms: float | None) -> str:
    """``95000`` → ``1m35s``.

    >>> duration(95_000), duration(7_200_000), duration(None)
    ('1m35s', '2h00m', '-')
    """
    if ms is None or ms != ms:
        return "-"
    s = round(ms / 1000)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def series_cell(series: Mapping[str, str]) -> str:
    """A series as tables and headings show it; the whole traffic is ``(all)``.

    >>> series_cell({"provider": "alipay", "merchant_id": "M1"}), series_cell({})
    ('provider=alipay, merchant_id=M1', '(all)')
    """
    return series_labels(series, ", ") or "(all)"


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "-"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}" if a >= 0.01 else f"{v:.1e}"


# -- SVG ------------------------------------------------------------------------


@dataclass
class Panel:
    """One chart panel: lines over a shared time axis, with shaded spans."""

    title: str
    lines: list[tuple[Sequence[float], str, str, bool]]  # values, colour, label, dashed
    band: tuple[Sequence[float], Sequence[float]] | None = None
    hline: tuple[float, str] | None = None  # (y, label)
    y_fixed: tuple[float, float] | None = None


@dataclass
class _Frame:
    """Where a panel's plot area sits in the SVG and which times and values it spans."""

    width: int
    height: int
    t0: int
    tspan: int
    lo: float
    hi: float
    left: int = 64
    right: int = 12
    top: int = 20
    bottom: int = 24

    @property
    def pw(self) -> int:
        return self.width - self.left - self.right

    @property
    def ph(self) -> int:
        return self.height - self.top - self.bottom

    def x(self, t: float) -> float:
        return self.left + (t - self.t0) / self.tspan * self.pw

    def y(self, v: float) -> float:
        return self.top + self.ph - (v - self.lo) / (self.hi - self.lo) * self.ph


def svg_panel(
    t_ms: Sequence[int],
    panel: Panel,
    spans: Sequence[tuple[int, int, str]],
    t_range: tuple[int, int],
    width: int = 1000,
    height: int = 170,
    step_ms: int | None = None,
) -> str:
    """One panel as inline SVG (a gap of more than 1.5 ``step_ms`` breaks the line)."""
    t0, t1 = t_range
    f = _Frame(width, height, t0, max(1, t1 - t0), *_value_range(panel))
    step = step_ms or _window_step(t_ms)
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{esc(panel.title)}">',
        f'<rect x="{f.left}" y="{f.top}" width="{f.pw}" height="{f.ph}" fill="#fbfcfe" '
        'stroke="#ccd"/>',
        f'<text x="{f.left}" y="14" font-size="12" fill="#334">{esc(panel.title)}</text>',
        *_svg_spans(f, spans),
        *_svg_band(f, t_ms, panel, step),
        *_svg_threshold(f, panel),
        *_svg_lines(f, t_ms, panel, step),
        *_svg_axes(f, panel),
        "</svg>",
    ]
    return "".join(out)


def _value_range(panel: Panel) -> tuple[float, float]:
    """The panel's fixed y range, else its data's (zero included when all positive) padded."""
    if panel.y_fixed is not None:
        return panel.y_fixed
    vals = [v for vs, *_ in panel.lines for v in vs if math.isfinite(v)]
    if panel.band is not None:
        vals += [v for v in (*panel.band[0], *panel.band[1]) if math.isfinite(v)]
    if panel.hline is not None:
        vals.append(panel.hline[0])
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    lo = min(lo, 0.0) if lo >= 0 else lo
    pad = (hi - lo) * 0.08 or (abs(hi) * 0.1 or 1.0)
    hi += pad
    if lo < 0:
        lo -= pad
    return lo, hi


def _svg_spans(f: _Frame, spans: Sequence[tuple[int, int, str]]) -> list[str]:
    """Shaded time spans (alert episodes, labelled incidents), clipped to the plot."""
    out = []
    for s, e, colour in spans:
        xs, xe = max(f.left, f.x(s)), min(f.left + f.pw, f.x(e))
        if xe > xs:
            out.append(
                f'<rect x="{xs:.1f}" y="{f.top}" width="{max(1.0, xe - xs):.1f}" '
                f'height="{f.ph}" fill="{colour}"/>'
            )
    return out


def _svg_band(f: _Frame, t_ms: Sequence[int], panel: Panel, step: int) -> list[str]:
    if panel.band is None:
        return []
    out = []
    for seg in _segments(t_ms, panel.band[0], panel.band[1], step):
        upper = " ".join(f"{f.x(t):.1f},{f.y(min(h, f.hi)):.1f}" for t, _, h in seg)
        lower = " ".join(f"{f.x(t):.1f},{f.y(max(lw, f.lo)):.1f}" for t, lw, _ in reversed(seg))
        out.append(f'<polygon points="{upper} {lower}" fill="{C_BAND}" stroke="none"/>')
    return out


def _svg_threshold(f: _Frame, panel: Panel) -> list[str]:
    if panel.hline is None:
        return []
    hv, label = panel.hline
    return [
        f'<line x1="{f.left}" x2="{f.left + f.pw}" y1="{f.y(hv):.1f}" y2="{f.y(hv):.1f}" '
        f'stroke="{C_THRESHOLD}" stroke-dasharray="5,4"/>'
        f'<text x="{f.left + f.pw - 4}" y="{f.y(hv) - 3:.1f}" font-size="10" text-anchor="end" '
        f'fill="{C_THRESHOLD}">{esc(label)}</text>'
    ]


def _svg_lines(f: _Frame, t_ms: Sequence[int], panel: Panel, step: int) -> list[str]:
    """Each line as polylines broken at gaps; a lone point is a dot."""
    out = []
    for values, colour, _, dashed in panel.lines:
        dash = ' stroke-dasharray="4,3"' if dashed else ""
        for seg in _segments(t_ms, values, values, step):
            if len(seg) == 1:
                t, v, _ = seg[0]
                out.append(f'<circle cx="{f.x(t):.1f}" cy="{f.y(v):.1f}" r="1.6" fill="{colour}"/>')
                continue
            pts = " ".join(f"{f.x(t):.1f},{f.y(v):.1f}" for t, v, _ in seg)
            out.append(
                f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"{dash}/>'
            )
    return out


def _svg_axes(f: _Frame, panel: Panel) -> list[str]:
    """Three value ticks and six time ticks (with the date when the span passes a day)."""
    out = []
    ticks = (0.0, 0.5, 1.0) if panel.y_fixed is not None else (f.lo, (f.lo + f.hi) / 2, f.hi)
    for v in ticks:
        out.append(
            f'<text x="{f.left - 6}" y="{f.y(v) + 4:.1f}" font-size="10" text-anchor="end" '
            f'fill="#556">{esc(_fmt(v))}</text>'
        )
    with_date = f.tspan > 86_400_000
    for i in range(6):
        tt = f.t0 + f.tspan * i / 5
        anchor = "start" if i == 0 else "end" if i == 5 else "middle"
        out.append(
            f'<text x="{f.x(tt):.1f}" y="{f.height - 8}" font-size="10" '
            f'text-anchor="{anchor}" fill="#556">{esc(clock(tt, with_date))}</text>'
        )
    return out


def _window_step(t_ms: Sequence[int]) -> int:
    gaps = [b - a for a, b in itertools.pairwise(t_ms) if b > a]
    return min(gaps) if gaps else 1


def _segments(
    t_ms: Sequence[int], lo: Sequence[float], hi: Sequence[float], step: int
) -> Iterable[list[tuple[int, float, float]]]:
    """Runs of finite points with no missing window between them."""
    seg: list[tuple[int, float, float]] = []
    prev: int | None = None
    for t, a, b in zip(t_ms, lo, hi, strict=True):
        if not (math.isfinite(a) and math.isfinite(b)):
            if seg:
                yield seg
            seg, prev = [], None
            continue
        if prev is not None and t - prev > 1.5 * step and seg:
            yield seg
            seg = []
        seg.append((t, a, b))
        prev = t
    if seg:
        yield seg


# -- backtest report -----------------------------------------------------------------


def band_of(trace: Trace) -> tuple[list[float], list[float]] | None:
    """Expected ± 3 standard errors (binomial for rates, Poisson for volume), else None."""
    if trace.signal in RATE_SIGNALS:
        lo, hi = [], []
        for p, n in zip(trace.expected, trace.volume, strict=True):
            if not math.isfinite(p) or n <= 0:
                lo.append(math.nan)
                hi.append(math.nan)
                continue
            se = math.sqrt(max(p * (1 - p), 0.0) / n)
            lo.append(max(0.0, p - 3 * se))
            hi.append(min(1.0, p + 3 * se))
        return lo, hi
    if trace.signal == "volume":
        lo = [max(0.0, e - 3 * math.sqrt(e)) if e >= 0 else math.nan for e in trace.expected]
        hi = [e + 3 * math.sqrt(e) if e >= 0 else math.nan for e in trace.expected]
        return lo, hi
    return None


VALUE_NAMES = {
    "error_rate": "system error rate",
    "config_error": "config error rate",
    "latency": "p95 latency (ms)",
    "volume": "calls per window",
    "notification": "callback problem rate",
    "metric": "value",
    "multivariate": "calls per window",
}


@dataclass
class ChartSpec:
    trace: Trace
    series: dict[str, str]  # as the alerts name it (their key order)
    alert_spans: list[tuple[int, int]]
    label_spans: list[tuple[int, int, bool]]  # (start, end, is_incident)
    worst: tuple[str, float, int]  # severity, score, episodes of its firing records


def chart_specs(
    traces: Iterable[Trace],
    alerts: Sequence[Mapping[str, Any]],
    labels: Sequence[Mapping[str, Any]] | None,
    limit: int = MAX_CHARTS,
) -> list[ChartSpec]:
    """The alerting (rule, series) to chart, worst first: severity, score, breadth."""
    by_key: dict[tuple[str, Any], list[Mapping[str, Any]]] = defaultdict(list)
    for a in alerts:
        by_key[(str(a["rule"]), series_key(a["series"]))].append(a)
    specs = []
    for tr in traces:
        recs = by_key.get((tr.rule, series_key(tr.series)))
        if not recs:
            continue
        end_t = (tr.t_ms[-1] + tr.window_ms) if tr.t_ms else 0
        open_at: dict[str, int] = {}
        spans: list[tuple[int, int]] = []
        for a in recs:
            if a["status"] == "firing":
                open_at.setdefault(str(a["alert_id"]), int(a["started_at"]))
            elif str(a["alert_id"]) in open_at:
                spans.append((open_at.pop(str(a["alert_id"])), int(a["resolved_at"])))
        spans += [(s, end_t) for s in open_at.values()]
        firing = [a for a in recs if a["status"] == "firing"]
        worst = (
            max((str(a["severity"]) for a in firing), key=severity_rank, default="-"),
            max(float(a["score"]) for a in firing) if firing else 0.0,
            len({a["alert_id"] for a in firing}),
        )
        lab_spans = [
            (int(lab["start_ms"]), int(lab["end_ms"]), bool(lab["is_incident"]))
            for lab in labels or []
            if series_matches(tr.series, lab["series"])
        ]
        specs.append(ChartSpec(tr, dict(recs[0]["series"]), sorted(spans), lab_spans, worst))
    # Ties (sequential scores saturate at 1.0): broader series first, then the rule
    # alerting on the most series (the incident's main signal), then the most episodes.
    reach = Counter(c.trace.rule for c in specs)
    specs.sort(
        key=lambda c: (
            -severity_rank(c.worst[0]),
            -c.worst[1],
            len(c.series),
            -reach[c.trace.rule],
            -c.worst[2],
            c.trace.rule,
        )
    )
    return specs[:limit]


MAX_POINTS = 1600  # per line; a day of 10 s windows is 8640


def thin(tr: Trace, max_points: int = MAX_POINTS) -> tuple[Trace, int]:
    """At most ``max_points`` points per line: each run of k windows keeps its lowest and
    highest value (so a spike or a drop stays visible) and its highest score.

    Returns the thinned trace and the time step that counts as contiguous.

    >>> tr = Trace("r", "volume", {}, 0.5, list(range(0, 100_000, 10)), [1.0] * 10_000,
    ...            [1.0] * 10_000, [0.0] * 10_000, [1.0] * 10_000, window_ms=10)
    >>> tr.value[5000] = 9.0
    >>> small, step = thin(tr, 100)
    >>> len(small.t_ms) <= 100, max(small.value), step
    (True, 9.0, 4000)
    """
    n = len(tr.t_ms)
    if n <= max_points:
        return tr, tr.window_ms
    k = math.ceil(n / (max_points // 2))
    out = Trace(tr.rule, tr.signal, tr.series, tr.threshold, window_ms=tr.window_ms)
    for lo in range(0, n, k):
        idx = range(lo, min(n, lo + k))
        finite = [i for i in idx if math.isfinite(tr.value[i])] or list(idx)
        i_min = min(finite, key=lambda i: tr.value[i])
        i_max = max(finite, key=lambda i: tr.value[i])
        top = max(tr.score[i] for i in idx)
        for i in sorted({i_min, i_max}):
            out.t_ms.append(tr.t_ms[i])
            out.value.append(tr.value[i])
            out.expected.append(tr.expected[i])
            out.score.append(top)
            out.volume.append(tr.volume[i])
    return out, tr.window_ms * k * 2


def chart_html(spec: ChartSpec) -> str:
    if not spec.trace.t_ms:
        return ""
    tr, step = thin(spec.trace)
    spans = [(s, e, C_LABEL if real else C_NOT_INCIDENT) for s, e, real in spec.label_spans]
    spans += [(s, e, C_ALERT) for s, e in spec.alert_spans]
    t_range = (tr.t_ms[0], tr.t_ms[-1] + tr.window_ms)
    lines: list[tuple[Sequence[float], str, str, bool]] = [
        (tr.value, C_VALUE, VALUE_NAMES.get(tr.signal, "value"), False)
    ]
    if any(math.isfinite(e) for e in tr.expected):
        lines.append((tr.expected, C_EXPECTED, "expected", True))
    signal = Panel(VALUE_NAMES.get(tr.signal, "value"), lines, band=band_of(tr))
    score = Panel(
        "anomaly score",
        [(tr.score, C_SCORE, "score", False)],
        hline=(tr.threshold, f"threshold {tr.threshold:g}"),
        y_fixed=(0.0, 1.05),
    )
    head = (
        f"<h3>{esc(tr.rule)} · {esc(series_cell(spec.series))}</h3>"
        f'<div class="muted">{len(spec.alert_spans)} alert episode(s), worst '
        f"{esc(spec.worst[0] if severity_rank(spec.worst[0]) else '-')}, "
        f"max score {spec.worst[1]:.2f}</div>"
    )
    return (
        head
        + svg_panel(tr.t_ms, signal, spans, t_range, step_ms=step)
        + svg_panel(tr.t_ms, score, spans, t_range, height=110, step_ms=step)
    )


LEGEND = (
    '<div class="legend">'
    f'<span><i class="sw" style="background:{C_VALUE}"></i>observed</span>'
    f'<span><i class="sw" style="background:{C_EXPECTED}"></i>expected</span>'
    f'<span><i class="sw" style="background:{C_BAND}"></i>expected ±3σ (count model)</span>'
    f'<span><i class="sw" style="background:{C_SCORE}"></i>anomaly score</span>'
    f'<span><i class="sw" style="background:{C_ALERT}"></i>alert firing</span>'
    f'<span><i class="sw" style="background:{C_LABEL}"></i>labelled incident</span>'
    f'<span><i class="sw" style="background:{C_NOT_INCIDENT}"></i>labelled, not an incident'
    "</span>"
    "</div>"
)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: int = 0) -> str:
    """HTML table; the last ``numeric`` columns are right-aligned."""
    out = ["<table>"]
    if any(headers):
        out += ["<tr>", *(f"<th>{esc(h)}</th>" for h in headers), "</tr>"]
    n = len(headers)
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            cls = ' class="n"' if i >= n - numeric else ""
            out.append(f"<td{cls}>{esc(cell)}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def alerts_by_rule(alerts: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, int, int, int]]:
    """(rule, critical, warning, info, total) episodes; an episode counts at its worst."""
    worst: dict[str, tuple[str, str]] = {}
    for a in alerts:
        if a["status"] != "firing":
            continue
        aid = str(a["alert_id"])
        if aid not in worst or severity_rank(str(a["severity"])) > severity_rank(worst[aid][1]):
            worst[aid] = (str(a["rule"]), str(a["severity"]))
    return severity_table(worst.values())


def severity_table(
    pairs: Iterable[tuple[str, str]],
) -> list[tuple[str, int, int, int, int]]:
    """(rule, critical, warning, info, total) rows of (rule, severity) episodes, most first;
    an unknown severity is not counted."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * len(SEVERITIES))
    for rule, severity in pairs:
        if severity in SEVERITIES:
            counts[rule][SEVERITIES.index(severity)] += 1
    return sorted(
        ((r, c[0], c[1], c[2], sum(c)) for r, c in counts.items()), key=lambda r: (-r[4], r[0])
    )


def labels_html(score: LabelScore) -> str:
    med = score.median_delay_s
    kpis = [
        ("recall", f"{score.recall:.2f}", f"{score.detected}/{len(score.incidents)} incidents"),
        ("precision", f"{score.precision:.2f}", f"{score.alerts} alert episodes"),
        ("false alerts / hour", f"{score.false_per_hour:.2f}", f"over {score.hours:.1f} h"),
        ("median delay", "-" if med is None else f"{med:.0f} s", "first alert after start"),
    ]
    out = ["<h2>Against the labels</h2>"]
    out += [
        f'<div class="kpi">{esc(k)}<b>{esc(v)}</b><span class="muted">{esc(s)}</span></div>'
        for k, v, s in kpis
    ]
    rows = []
    for d in score.detections:
        lab = d.label
        if not lab["is_incident"]:
            verdict = f"not an incident: {len(d.alert_ids)} alert(s)" if d.alert_ids else "quiet"
        else:
            verdict = "missed" if d.delay_s is None else "detected"
        rows.append(
            (
                lab["kind"],
                series_cell(lab["series"]),
                clock(lab["start_ms"]),
                duration(lab["end_ms"] - lab["start_ms"]),
                verdict,
                "-" if d.delay_s is None or not lab["is_incident"] else f"{d.delay_s:.0f} s",
                len(d.alert_ids),
            )
        )
    out.append("<h3>Detection per incident</h3>")
    out.append(
        table(["kind", "series", "start (UTC)", "lasts", "result", "delay", "alerts"], rows, 2)
    )
    if score.false_alerts:
        out.append(f"<h3>False alerts ({len(score.false_alerts)})</h3>")
        out.append(
            table(
                ["fired at (UTC)", "rule", "severity", "series", "summary"],
                (
                    (
                        clock(e["window_end"]),
                        e["rule"],
                        e["severity"],
                        series_cell(e["series"]),
                        e.get("summary", ""),
                    )
                    for e in score.false_alerts[:100]
                ),
            )
        )
    return "".join(out)


def page(title: str, body: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        + "".join(body)
        + "</body></html>\n"
    )


def render_backtest_report(
    path: Path,
    *,
    source: str,
    alerts: Sequence[Mapping[str, Any]],
    traces: Iterable[Trace],
    facts: Sequence[tuple[str, str]],
    labels: Sequence[Mapping[str, Any]] | None = None,
    score: LabelScore | None = None,
) -> int:
    """Write the backtest report; returns how many series it charts."""
    specs = chart_specs(traces, alerts, labels)
    eps = episodes(alerts)
    body = [
        "<h1>paywatch backtest</h1>",
        f'<div class="muted">{esc(source)}</div>',
        table(["", ""], facts),
        "<h2>Alerts per rule and severity</h2>",
    ]
    by_rule = alerts_by_rule(alerts)
    if by_rule:
        body.append(table(["rule", "critical", "warning", "info", "episodes"], by_rule, 4))
    else:
        body.append("<p>No alert fired.</p>")
    if score is not None:
        body.append(labels_html(score))
    if specs:
        body.append(f"<h2>Alerting series ({len(specs)} of {len(by_key(eps))}, worst first)</h2>")
        body.append(LEGEND)
        body += [chart_html(s) for s in specs]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(f"paywatch backtest · {source}", body), encoding="utf-8")
    return len(specs)


def by_key(eps: Mapping[str, Mapping[str, Any]]) -> set[tuple[str, Any]]:
    return {(str(e["rule"]), series_key(e["series"])) for e in eps.values()}


# -- weekly review -----------------------------------------------------------------


FLAP_EPISODES = 3  # episodes of one (rule, series) in the span that make it "flapping"


def weekly_review(history: Any, since_ms: int, until_ms: int) -> dict[str, Any]:
    """Figures for the weekly review from an :class:`~stream.alerting.history.AlertHistory`.

    Episodes counted are those that started in [since, until); flapping series are
    the (rule, series) with at least ``FLAP_EPISODES`` of them.
    """
    figures = dict(history.review(since_ms, until_ms))
    rows = [
        r
        for r in history.list_alerts(since_ms=since_ms, until_ms=until_ms, limit=1_000_000)
        if r["started_at"] is not None and r["started_at"] >= since_ms
    ]
    per_series: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        per_series[(str(r["rule"]), series_cell(r["series"]))].append(r)
    flapping = []
    for (rule, series), eps in per_series.items():
        if len(eps) >= FLAP_EPISODES:
            spans = [
                r["resolved_at"] - r["started_at"] for r in eps if r["resolved_at"] is not None
            ]
            med = sorted(spans)[len(spans) // 2] if spans else None
            flapping.append((rule, series, len(eps), med))
    flapping.sort(key=lambda f: (-len(per_series[(f[0], f[1])]), f[0], f[1]))
    figures.update(
        since_ms=since_ms,
        until_ms=until_ms,
        by_rule_severity=severity_table((str(r["rule"]), str(r["severity"])) for r in rows),
        by_series=sorted(
            ((rule, series, len(eps)) for (rule, series), eps in per_series.items()),
            key=lambda x: (-x[2], x[0], x[1]),
        ),
        flapping=flapping,
    )
    return figures


def review_sections(
    review: Mapping[str, Any],
) -> list[tuple[str, list[str], list[Sequence[Any]], int]]:
    """(title, headers, rows, numeric columns) of each part of the review."""
    r = review
    overview: list[Sequence[Any]] = [
        ("alert episodes", r["alerts"]),
        ("notified / never notified", f"{r['notified']} / {r['never_notified']}"),
        ("acknowledged", r["acked"]),
        ("resolved", r["resolved"]),
        ("time to acknowledge (median / p90)",
         f"{duration(r['mtta_ms_median'])} / {duration(r['mtta_ms_p90'])}"),
        ("time to resolve (median / p90)",
         f"{duration(r['mttr_ms_median'])} / {duration(r['mttr_ms_p90'])}"),
        ("notifications sent", r["notifications"]),
        ("failed deliveries", r["failed_deliveries"]),
    ]  # fmt: skip
    return [
        ("Overview", ["", ""], overview, 1),
        (
            "Alerts per rule and severity",
            ["rule", "critical", "warning", "info", "episodes"],
            list(r["by_rule_severity"]),
            4,
        ),
        ("Noisiest rules", ["rule", "episodes"], [list(x) for x in r["noisiest_rules"]], 1),
        ("Alerts per series", ["rule", "series", "episodes"], list(r["by_series"][:50]), 1),
        (
            f"Flapping series (≥ {FLAP_EPISODES} episodes)",
            ["rule", "series", "episodes", "median length"],
            [(a, b, c, duration(d)) for a, b, c, d in r["flapping"]],
            2,
        ),
    ]


def review_text(review: Mapping[str, Any]) -> list[str]:
    """The review as plain text lines (``paywatch alerts report``)."""
    lines = [f"alert review {clock(review['since_ms'])} → {clock(review['until_ms'])} UTC"]
    for title, headers, rows, _ in review_sections(review):
        lines.append("")
        lines.append(title)
        if not rows:
            lines.append("  none")
            continue
        cells = [[str(c) for c in row] for row in rows]
        heads = [h for h in headers]
        show_head = any(heads)
        widths = [
            max(len(heads[i]) if show_head else 0, *(len(row[i]) for row in cells))
            for i in range(len(heads))
        ]
        if show_head:
            lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)))
        for row in cells:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return [line.rstrip() for line in lines]


def render_review_report(path: Path, review: Mapping[str, Any]) -> None:
    """The weekly alert review (see :func:`weekly_review`) as HTML."""
    body = [
        "<h1>paywatch alert review</h1>",
        f'<div class="muted">{esc(clock(review["since_ms"]))} → '
        f"{esc(clock(review['until_ms']))} UTC</div>",
    ]
    for title, headers, rows, numeric in review_sections(review):
        body.append(f"<h2>{esc(title)}</h2>")
        body.append(table(headers, rows, numeric) if rows else "<p>None.</p>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page("paywatch alert review", body), encoding="utf-8")


# -- CSV metric input -------------------------------------------------------------------


def csv_trace(scores_csv: Path, series: dict[str, str], rule: str, threshold: float) -> Trace:
    """The chart of a CSV backtest, from its ``--scores-out`` file."""
    import csv

    from stream.offline.csv_series import parse_timestamp

    tr = Trace(rule, "metric", series, threshold)
    with scores_csv.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            tr.t_ms.append(round(parse_timestamp(row["timestamp"]) * 1000))
            tr.value.append(float(row["value"]))
            tr.score.append(float(row["anomaly_score"]))
            tr.expected.append(math.nan)
            tr.volume.append(0.0)
    steps = sorted(b - a for a, b in itertools.pairwise(tr.t_ms) if b > a)
    tr.window_ms = steps[len(steps) // 2] if steps else 1000
    return tr
