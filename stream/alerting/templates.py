"""Messages for people, in Chinese or English, short enough for a phone.

One alert reads as: what (rule, signal), where (series), how bad (value vs
expected, volume if the record has it), since when (HH:MM:SS UTC and how long
ago), root-cause hints.  A recovery says how long it lasted.  A group of alerts
is summarised one line each.  ``fmt="markdown"`` uses the subset DingTalk,
WeCom and Feishu all render (bold, lists, blank-line paragraphs);
``fmt="text"`` is plain for SMS and e-mail subjects.  Titles are always plain.

>>> rec = {"status": "firing", "severity": "critical", "rule": "provider_errors",
...        "signal": "error_rate", "series": {"provider": "alipay"}, "started_at": 0,
...        "value": 0.235, "expected": 0.008, "hints": []}
>>> title, body = render([rec], [], now_ms=480_000, language="en", fmt="text")
>>> title
'[CRITICAL] alipay: error rate 23.5% vs 0.80% expected'
>>> print(body)
[CRITICAL] provider_errors (error rate)
Where: alipay
How bad: 23.5% vs 0.80% expected (29x)
Since: 00:00:00 UTC (8m ago)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from stream.alerting.record import STATE_LOST, AlertRecord
from stream.config import BODY_FORMATS
from stream.judge.judgement import severity_rank

Language = Literal["zh", "en"]
Format = Literal["markdown", "text"]
Kind = Literal["notify", "repeat", "escalation"]

# Dimensions read best from the general to the specific.
_DIM_ORDER = ("provider", "operation", "merchant_id", "channel", "region", "name")
_ICONS = {"critical": "🔴", "warning": "🟠", "info": "🔵", "resolved": "✅", "closed": "⚪"}

_T: dict[str, dict[str, str]] = {
    "en": {
        "critical": "CRITICAL",
        "warning": "WARNING",
        "info": "INFO",
        "resolved": "RESOLVED",
        "where": "Where",
        "how_bad": "How bad",
        "since": "Since",
        "since_short": "since",
        "hints": "Hints",
        "vs": "{v} vs {e} expected",
        "ago": "{d} ago",
        "volume": "volume {n}",
        "affected": "{n} affected",
        "lasted": "lasted {d}",
        "firing_n": "{n} firing",
        "resolved_n": "{n} resolved",
        "more": "… and {n} more",
        "muted": "{n} related alerts beneath muted (inhibited or silenced)",
        "repeat": "Still firing, reminder {n}",
        "escalation": "ESCALATED: not acknowledged for {d}",
        "escalated_tag": "[ESCALATED]",
        "share": "{dim}={val} {pct}",
        "sep": ", ",
        "lp": " (",
        "rp": ")",
        "colon": ": ",
        "overdue": "Overdue orders",
        "overdue_n": "{n} whose callback never came: {orders}",
        "recovery": "Recovery",
        "recovered_n": "{r} of {n} orders recovered, {m} still missing",
        "closed": "CLOSED UNJUDGED",
        "state_lost": "Why",
        "state_lost_text": "paywatch restarted without this alert's state ({reason}), so it "
        "cannot tell whether the trouble ended; it pages again if the trouble persists",
    },
    "zh": {
        "critical": "严重",
        "warning": "警告",
        "info": "提示",
        "resolved": "已恢复",
        "where": "位置",
        "how_bad": "程度",
        "since": "开始",
        "since_short": "开始于",
        "hints": "线索",
        "vs": "{v}，预期 {e}",
        "ago": "{d}前",
        "volume": "量 {n}",
        "affected": "影响 {n} 笔",
        "lasted": "持续 {d}",
        "firing_n": "{n} 条告警中",
        "resolved_n": "{n} 条已恢复",
        "more": "…… 另有 {n} 条",
        "muted": "其下 {n} 条相关告警已抑制或静默",
        "repeat": "仍在告警，第 {n} 次提醒",
        "escalation": "已升级：{d}内无人确认",
        "escalated_tag": "[已升级]",
        "share": "{dim}={val} 占 {pct}",
        "sep": "，",
        "lp": "（",
        "rp": "）",
        "colon": "：",
        "overdue": "超时订单",
        "overdue_n": "{n} 笔未收到回调：{orders}",
        "recovery": "找回",
        "recovered_n": "{n} 笔中已找回 {r} 笔，仍缺 {m} 笔",
        "closed": "已关闭（未判定）",
        "state_lost": "原因",
        "state_lost_text": "paywatch 重启时未能恢复此告警的状态（{reason}），"
        "无法判断问题是否已结束；若问题仍在，将再次告警",
    },
}
_SIGNALS = {
    "en": {
        "error_rate": "error rate",
        "latency": "latency",
        "volume": "volume",
        "notification": "payment callbacks",
        "metric": "metric",
        "duplicate_callbacks": "duplicate callbacks",
        "amount_mismatch": "amount mismatch",
    },
    "zh": {
        "error_rate": "错误率",
        "latency": "延迟",
        "volume": "交易量",
        "notification": "支付回调",
        "metric": "指标",
        "duplicate_callbacks": "重复回调",
        "amount_mismatch": "金额不符",
    },
}


def _lang(language: str) -> str:
    return language if language in _T else "en"


def format_clock(ts_ms: int) -> str:
    """``HH:MM:SS UTC`` of an epoch-ms time.

    >>> format_clock(3_723_000)
    '01:02:03 UTC'
    """
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%H:%M:%S UTC")


def format_duration(ms: int | float, language: str = "en") -> str:
    """A compact duration: ``45s``, ``12m 30s``, ``2h 05m``, ``1d 3h`` (or 秒/分/小时/天).

    >>> format_duration(750_000), format_duration(750_000, "zh")
    ('12m 30s', '12分30秒')
    """
    s = max(0, int(ms // 1000))
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if _lang(language) == "zh":
        if d:
            return f"{d}天{h}小时" if h else f"{d}天"
        if h:
            return f"{h}小时{m}分" if m else f"{h}小时"
        if m:
            return f"{m}分{sec}秒" if sec else f"{m}分钟"
        return f"{sec}秒"
    if d:
        return f"{d}d {h}h" if h else f"{d}d"
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {sec}s" if sec else f"{m}m"
    return f"{sec}s"


def format_series(series: Mapping[str, Any]) -> str:
    """Series values from general to specific; less obvious dimensions keep their name.

    >>> format_series({"merchant_id": "m1", "provider": "alipay", "operation": "refund"})
    'alipay / refund / merchant_id=m1'
    """
    keys = [k for k in _DIM_ORDER if k in series] + sorted(k for k in series if k not in _DIM_ORDER)
    parts = [str(series[k]) if k in ("provider", "operation") else f"{k}={series[k]}" for k in keys]
    return " / ".join(parts) if parts else "*"


# Signals whose value is a share of callbacks, though their name does not say "rate".
_RATIO_SIGNALS = ("duplicate_callbacks", "amount_mismatch")


def _is_ratio(signal: str, *values: float | None) -> bool:
    words = ("rate", "ratio", "share", "notification", *_RATIO_SIGNALS)
    if not any(w in signal for w in words):
        return False
    return all(v is None or 0.0 <= v <= 1.0 for v in values)


def format_value(signal: str, value: float | None, *, ratio: bool | None = None) -> str:
    """A number as a person reads it for this signal: %, ms/s, counts.

    >>> format_value("error_rate", 0.235), format_value("latency", 2300.0)
    ('23.5%', '2,300 ms')
    """
    if value is None:
        return "?"
    v = float(value)
    if ratio if ratio is not None else _is_ratio(signal, v):
        pct = v * 100
        return f"{pct:.2f}%" if abs(pct) < 1 else f"{pct:.1f}%"
    if "latency" in signal:
        return f"{v / 1000:.1f} s" if v >= 10_000 else f"{v:,.0f} ms"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _factor(value: float | None, expected: float | None) -> str:
    """``29x`` when far above the baseline, ``-88%`` when far below, else nothing."""
    if value is None or expected is None or expected <= 0:
        return ""
    r = float(value) / float(expected)
    if r >= 1.5:
        return f"{r:.0f}x" if r >= 10 else f"{r:.1f}x"
    if r <= 0.67:
        return f"-{(1 - r) * 100:.0f}%"
    return ""


def _sev_tag(severity: str, lang: str, fmt: str) -> str:
    word = _T[lang].get(severity, severity.upper())
    return f"{_ICONS.get(severity, '')} {word}".strip() if fmt == "markdown" else f"[{word}]"


def _signal_name(signal: str, lang: str) -> str:
    return _SIGNALS[lang].get(signal, signal)


def _how_bad(rec: Mapping[str, Any], lang: str) -> str:
    t = _T[lang]
    signal = str(rec.get("signal", ""))
    value, expected = rec.get("value"), rec.get("expected")
    ratio = _is_ratio(signal, value, expected)
    text = t["vs"].format(
        v=format_value(signal, value, ratio=ratio), e=format_value(signal, expected, ratio=ratio)
    )
    extras = []
    factor = _factor(value, expected)
    if factor:
        extras.append(factor if lang == "en" else factor.replace("x", " 倍"))
    for key in ("volume", "affected"):
        n = rec.get(key)
        if isinstance(n, int | float) and not isinstance(n, bool):
            extras.append(t[key].format(n=f"{n:,.0f}"))
    if extras:
        text += t["lp"] + t["sep"].join(extras) + t["rp"]
    return text


def _hints(rec: Mapping[str, Any], lang: str, limit: int = 3) -> str:
    out = []
    for h in list(rec.get("hints") or [])[:limit]:
        if not isinstance(h, Mapping):
            continue
        share = h.get("share")
        pct = f"{float(share) * 100:.0f}%" if isinstance(share, int | float) else ""
        out.append(
            _T[lang]["share"].format(dim=h.get("dimension"), val=h.get("value"), pct=pct).strip()
        )
    return _T[lang]["sep"].join(out)


def _since(rec: Mapping[str, Any], now_ms: int, lang: str) -> str:
    start = int(rec.get("started_at") or 0)
    ago = _T[lang]["ago"].format(d=format_duration(now_ms - start, lang))
    return f"{format_clock(start)}{_T[lang]['lp']}{ago}{_T[lang]['rp']}"


def _duration(rec: Mapping[str, Any]) -> int:
    end = rec.get("resolved_at") or rec.get("window_end") or rec.get("started_at") or 0
    return int(end) - int(rec.get("started_at") or 0)


def _line_join(lines: list[str], fmt: str) -> str:
    # DingTalk markdown needs a blank line to break a paragraph; list items keep one newline.
    if fmt == "text":
        return "\n".join(lines)
    out: list[str] = []
    for line in lines:
        if out and not (line.startswith("- ") and out[-1].startswith("- ")):
            out.append("")
        out.append(line)
    return "\n".join(out)


def _bold(text: str, fmt: str) -> str:
    return f"**{text}**" if fmt == "markdown" else text


def _alert_detail(rec: Mapping[str, Any], now_ms: int, lang: str, fmt: str) -> list[str]:
    t = _T[lang]
    head = f"{_sev_tag(str(rec.get('severity', 'info')), lang, fmt)} {rec.get('rule', '?')}"
    sig = f"{t['lp']}{_signal_name(str(rec.get('signal', '')), lang)}{t['rp']}"
    lines = [_bold(head, fmt) + sig]
    lines.append(_label("where", lang, fmt) + format_series(rec.get("series") or {}))
    lines.append(_label("how_bad", lang, fmt) + _how_bad(rec, lang))
    lines.append(_label("since", lang, fmt) + _since(rec, now_ms, lang))
    hints = _hints(rec, lang)
    if hints:
        lines.append(_label("hints", lang, fmt) + hints)
    lines.extend(_evidence_lines(rec, lang, fmt))
    return lines


def _evidence_lines(rec: Mapping[str, Any], lang: str, fmt: str, shown: int = 5) -> list[str]:
    """Missing-callback evidence: the overdue orders (firing), how many came back (both).

    >>> ev = {"missing_callbacks": {"orders": [{"provider": "alipay", "merchant_id": "m1",
    ...       "out_trade_no": ["T1", "T2"]}], "reported": 2, "recovered": 2, "still_missing": 0}}
    >>> _evidence_lines({"status": "resolved", "evidence": ev}, "en", "text")
    ['Recovery: 2 of 2 orders recovered, 0 still missing']
    >>> ev["missing_callbacks"]["recovered"] = 0
    >>> _evidence_lines({"status": "firing", "evidence": ev}, "zh", "text")[0]
    '超时订单：2 笔未收到回调：m1 T1、T2'
    """
    lost = (rec.get("evidence") or {}).get(STATE_LOST)
    if isinstance(lost, Mapping):
        text = _T[lang]["state_lost_text"].format(reason=lost.get("reason", "?"))
        return [_label("state_lost", lang, fmt) + text]
    mc = (rec.get("evidence") or {}).get("missing_callbacks")
    if not isinstance(mc, Mapping):
        return []
    t = _T[lang]
    n, r = int(mc.get("reported") or 0), int(mc.get("recovered") or 0)
    lines = []
    if rec.get("status") == "firing" and not r:
        sep = "、" if lang == "zh" else ", "
        parts = [
            f"{g.get('merchant_id')} {sep.join(list(g.get('out_trade_no') or [])[:shown])}"
            for g in list(mc.get("orders") or [])[:shown]
            if isinstance(g, Mapping)
        ]
        text = t["overdue_n"].format(n=n, orders="; ".join(parts))
        lines.append(_label("overdue", lang, fmt) + text)
    else:
        text = t["recovered_n"].format(n=n, r=r, m=int(mc.get("still_missing") or 0))
        lines.append(_label("recovery", lang, fmt) + text)
    return lines


def _ended_as(rec: Mapping[str, Any]) -> str:
    """``closed`` for an episode closed unjudged (its state was lost), else ``resolved``.

    >>> _ended_as({"evidence": {STATE_LOST: {"reason": "no checkpoint"}}}), _ended_as({})
    ('closed', 'resolved')
    """
    return "closed" if STATE_LOST in (rec.get("evidence") or {}) else "resolved"


def _label(key: str, lang: str, fmt: str) -> str:
    """``**Where:** `` in English, ``**位置：**`` in Chinese (full-width colon, no space)."""
    t = _T[lang]
    return _bold(t[key] + t["colon"].rstrip(), fmt) + ("" if lang == "zh" else " ")


def _resolved_line(rec: Mapping[str, Any], lang: str, fmt: str, compact: bool) -> str:
    t = _T[lang]
    start = int(rec.get("started_at") or 0)
    end = start + _duration(rec)
    lasted = t["lasted"].format(d=format_duration(end - start, lang))
    span = f"{format_clock(start)[:-4]}–{format_clock(end)}"
    where = format_series(rec.get("series") or {})
    tag = _sev_tag(_ended_as(rec), lang, fmt)
    if compact:
        return f"- {tag} {where}{t['colon']}{lasted}{t['lp']}{span}{t['rp']}"
    head = _bold(f"{tag} {rec.get('rule', '?')}", fmt)
    sig = _signal_name(str(rec.get("signal", "")), lang)
    text = f"{head}{t['lp']}{sig}{t['rp']}\n\n{where}{t['colon']}{lasted}{t['lp']}{span}{t['rp']}"
    return "\n\n".join([text, *_evidence_lines(rec, lang, fmt)])


def _firing_line(rec: Mapping[str, Any], lang: str, fmt: str) -> str:
    t = _T[lang]
    sev = _ICONS.get(str(rec.get("severity")), "") if fmt == "markdown" else ""
    since = format_clock(int(rec.get("started_at") or 0))[:-4]
    body = f"{format_series(rec.get('series') or {})}{t['colon']}{_how_bad(rec, lang)}"
    return f"- {sev + ' ' if sev else ''}{body}{t['sep']}{t['since_short']} {since}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _title(
    firing: Sequence[Mapping[str, Any]], resolved: Sequence[Mapping[str, Any]], lang: str
) -> str:
    t = _T[lang]
    if firing:
        worst = max(firing, key=lambda r: severity_rank(str(r.get("severity"))))
        tag = f"[{t.get(str(worst.get('severity')), str(worst.get('severity')).upper())}]"
        if len(firing) == 1 and not resolved:
            rec = firing[0]
            sig = str(rec.get("signal", ""))
            value, expected = rec.get("value"), rec.get("expected")
            ratio = _is_ratio(sig, value, expected)
            what = _signal_name(sig, lang)
            how = t["vs"].format(
                v=format_value(sig, value, ratio=ratio),
                e=format_value(sig, expected, ratio=ratio),
            )
            text = f"{tag} {format_series(rec.get('series') or {})}{t['colon']}{what} {how}"
        else:
            counts = [t["firing_n"].format(n=len(firing))]
            if resolved:
                counts.append(t["resolved_n"].format(n=len(resolved)))
            text = f"{tag} {t['sep'].join(counts)}{t['colon']}{_group_what(firing, lang)}"
    else:
        ended = {_ended_as(r) for r in resolved}
        tag = f"[{t['closed' if ended == {'closed'} else 'resolved']}]"
        if len(resolved) == 1:
            rec = resolved[0]
            lasted = t["lasted"].format(d=format_duration(_duration(rec), lang))
            text = f"{tag} {format_series(rec.get('series') or {})} {rec.get('rule')}{t['sep']}"
            text += lasted
        else:
            text = f"{tag} {t['resolved_n'].format(n=len(resolved))}{t['colon']}"
            text += _group_what(resolved, lang)
    return _clip(text, 100)


def _group_what(recs: Sequence[Mapping[str, Any]], lang: str) -> str:
    """What a group of alerts shares: the rule(s) and the common series prefix."""
    rules = sorted({str(r.get("rule")) for r in recs})
    common: dict[str, Any] = dict(recs[0].get("series") or {})
    for r in recs[1:]:
        s = r.get("series") or {}
        common = {k: v for k, v in common.items() if s.get(k) == v}
    what = rules[0] if len(rules) == 1 else f"{rules[0]} +{len(rules) - 1}"
    return f"{what} {format_series(common)}" if common else what


def render(
    firing: Sequence[AlertRecord | Mapping[str, Any]],
    resolved: Sequence[AlertRecord | Mapping[str, Any]],
    *,
    now_ms: int,
    language: str = "en",
    fmt: str = "markdown",
    muted: int = 0,
    kind: Kind = "notify",
    repeat: int = 0,
    unacked_ms: int = 0,
    max_items: int = 5,
) -> tuple[str, str]:
    """Title (plain, at most 100 chars) and body of one notification for a group.

    ``firing``/``resolved`` are alert records (or alert v1 objects, which may carry
    extra facts such as ``volume``); ``muted`` counts the group's alerts that were
    inhibited or silenced (mentioned, not listed).
    """
    if not firing and not resolved:
        raise ValueError("render needs at least one alert")
    lang = _lang(language)
    fmt = fmt if fmt in BODY_FORMATS else "markdown"
    firing_objs = sorted(map(_as_object, firing), key=_sort_key)
    resolved_objs = sorted(map(_as_object, resolved), key=_sort_key)
    return _render(firing_objs, resolved_objs, now_ms, lang, fmt, muted, kind, repeat,
                   unacked_ms, max_items)  # fmt: skip


def _as_object(rec: AlertRecord | Mapping[str, Any]) -> Mapping[str, Any]:
    return rec.to_dict() if isinstance(rec, AlertRecord) else rec


def _render(
    firing: Sequence[Mapping[str, Any]],
    resolved: Sequence[Mapping[str, Any]],
    now_ms: int,
    lang: str,
    fmt: str,
    muted: int,
    kind: Kind,
    repeat: int,
    unacked_ms: int,
    max_items: int,
) -> tuple[str, str]:
    t = _T[lang]
    lines: list[str] = []
    if kind == "escalation":
        icon = "⏫ " if fmt == "markdown" else ""
        lines.append(_bold(icon + t["escalation"].format(d=format_duration(unacked_ms, lang)), fmt))
    elif kind == "repeat":
        lines.append(t["repeat"].format(n=repeat))
    if len(firing) == 1 and not resolved:
        lines.extend(_alert_detail(firing[0], now_ms, lang, fmt))
    elif len(resolved) == 1 and not firing:
        lines.append(_resolved_line(resolved[0], lang, fmt, compact=False))
    else:
        counts = []
        if firing:
            counts.append(t["firing_n"].format(n=len(firing)))
        if resolved:
            counts.append(t["resolved_n"].format(n=len(resolved)))
        lines.append(
            _bold(t["sep"].join(counts), fmt) + " " + _group_what(firing or resolved, lang)
        )
        shown = 0
        for rec in firing:
            if shown >= max_items:
                break
            lines.append(_firing_line(rec, lang, fmt))
            shown += 1
        for rec in resolved:
            if shown >= max_items:
                break
            lines.append(_resolved_line(rec, lang, fmt, compact=True))
            shown += 1
        rest = len(firing) + len(resolved) - shown
        if rest > 0:
            lines.append("- " + t["more"].format(n=rest))
        if firing and firing[0].get("hints"):
            lines.append(_label("hints", lang, fmt) + _hints(firing[0], lang))
    if muted:
        lines.append(t["muted"].format(n=muted))
    title = _title(firing, resolved, lang)
    if kind == "escalation":  # the subject line alone must say it (SMS, e-mail)
        title = _clip(t["escalated_tag"] + " " + title, 100)
    return title, _line_join(lines, fmt)


def _sort_key(rec: Mapping[str, Any]) -> tuple[int, float, float, str]:
    """Worst first (severity, then score), then the earliest start, then by series."""
    score = rec.get("score")
    return (
        -severity_rank(str(rec.get("severity"))),
        -float(score) if isinstance(score, int | float) else 0.0,
        float(rec.get("started_at") or 0),
        format_series(rec.get("series") or {}),
    )
