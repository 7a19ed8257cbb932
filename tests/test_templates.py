"""Rendering: the facts an on-call person needs, in zh and en, markdown and plain text."""

from __future__ import annotations

from typing import Any

import pytest

from stream.alerting.templates import format_duration, format_series, format_value, render

T0 = 1_764_140_000_000  # 06:53:20 UTC
S = 1000


def alert(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "status": "firing",
        "severity": "critical",
        "rule": "provider_errors",
        "signal": "error_rate",
        "series": {"provider": "alipay", "operation": "create_payment", "merchant_id": "m-1001"},
        "started_at": T0,
        "resolved_at": None,
        "window_end": T0 + 10 * S,
        "value": 0.235,
        "expected": 0.008,
        "score": 0.99,
        "volume": 1234,
        "hints": [
            {"dimension": "error_class", "value": "timeout", "share": 0.87},
            {"dimension": "api_version", "value": "v3", "share": 0.55},
        ],
    }
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("language", "facts"),
    [
        ("en", ["Where: alipay / create_payment / merchant_id=m-1001", "23.5% vs 0.80% expected",
                "29x", "volume 1,234", "Since: 06:53:20 UTC (8m ago)", "error_class=timeout 87%"]),
        ("zh", ["位置：alipay / create_payment / merchant_id=m-1001", "23.5%，预期 0.80%",
                "29 倍", "量 1,234", "开始：06:53:20 UTC（8分钟前）",
                "error_class=timeout 占 87%"]),
    ],
)  # fmt: skip
def test_firing_message_has_the_key_facts(language: str, facts: list[str]) -> None:
    title, body = render([alert()], [], now_ms=T0 + 480 * S, language=language, fmt="text")
    for fact in facts:
        assert fact in body, (fact, body)
    assert "alipay / create_payment / merchant_id=m-1001" in title and "23.5%" in title
    assert ("[CRITICAL]" if language == "en" else "[严重]") in title


@pytest.mark.parametrize(
    ("language", "lasted"),
    [("en", "lasted 12m 30s"), ("zh", "持续 12分30秒")],
)
def test_recovery_message_says_how_long_it_lasted(language: str, lasted: str) -> None:
    rec = alert(status="resolved", resolved_at=T0 + 750 * S)
    title, body = render([], [rec], now_ms=T0 + 800 * S, language=language)
    assert lasted in title and lasted in body
    assert "06:53:20–07:05:50 UTC" in body
    assert title.startswith("[RESOLVED]" if language == "en" else "[已恢复]")


@pytest.mark.parametrize(
    ("language", "tag", "why"),
    [("en", "[CLOSED UNJUDGED]", "Why: paywatch restarted without this alert's state "
      "(no checkpoint), so it cannot tell whether the trouble ended"),
     ("zh", "[已关闭（未判定）]", "原因：paywatch 重启时未能恢复此告警的状态（no checkpoint）")],
)  # fmt: skip
def test_an_episode_closed_unjudged_does_not_read_as_a_recovery(
    language: str, tag: str, why: str
) -> None:
    """A worker that lost its state closes the episodes it left firing: on the phone this
    must not say RESOLVED, which an on-call person reads as "it recovered"."""
    rec = alert(status="resolved", resolved_at=T0 + 750 * S,
                evidence={"state_lost": {"reason": "no checkpoint"}})  # fmt: skip
    title, body = render([], [rec], now_ms=T0 + 800 * S, language=language, fmt="text")
    assert title.startswith(tag) and tag in body
    assert why in body
    assert "RESOLVED" not in title + body and "已恢复" not in title + body


def test_markdown_and_plain_text_flavours() -> None:
    _, md = render([alert()], [], now_ms=T0, fmt="markdown")
    _, txt = render([alert()], [], now_ms=T0, fmt="text")
    assert "**Where:**" in md and "🔴" in md
    assert "\n\n" in md  # DingTalk needs blank lines between paragraphs
    assert "**" not in txt and "🔴" not in txt and "\n\n" not in txt


def test_group_summary_is_compact_for_a_phone() -> None:
    firing = [
        alert(series={"provider": "alipay", "merchant_id": f"m{i}"}, score=i / 100)
        for i in range(40)
    ]
    resolved = [alert(status="resolved", resolved_at=T0 + 60 * S)]
    title, body = render(firing, resolved, now_ms=T0 + 60 * S, muted=3, max_items=5)
    assert title.startswith("[CRITICAL] 40 firing, 1 resolved")
    assert len(title) <= 100
    assert body.count("\n- ") == 6 and "… and 36 more" in body
    assert "merchant_id=m39" in body  # the highest-scored alert comes first
    assert "3 related alerts beneath muted" in body
    assert len(body) < 1200


def test_zh_group_title() -> None:
    firing = [alert(series={"provider": "wechatpay", "merchant_id": f"m{i}"}) for i in range(3)]
    title, body = render(firing, [], now_ms=T0, language="zh")
    assert title == "[严重] 3 条告警中：provider_errors wechatpay"
    assert body.count("开始于 06:53:20") == 3


def test_repeat_and_escalation_are_labelled() -> None:
    _, rep = render([alert()], [], now_ms=T0, kind="repeat", repeat=3)
    assert rep.startswith("Still firing, reminder 3")
    title, esc = render([alert()], [], now_ms=T0, kind="escalation", unacked_ms=900 * S)
    assert "ESCALATED: not acknowledged for 15m" in esc
    assert title.startswith("[ESCALATED] [CRITICAL] alipay")


def test_long_series_keeps_title_short() -> None:
    rec = alert(series={"provider": "paypal", "merchant_id": "x" * 200})
    title, _ = render([rec], [], now_ms=T0)
    assert len(title) == 100 and title.endswith("…")


def test_values_read_naturally_per_signal() -> None:
    assert format_value("error_rate", 0.004) == "0.40%"
    assert format_value("latency", 2300.0) == "2,300 ms"
    assert format_value("latency", 12_500.0) == "12.5 s"
    assert format_value("volume", 120.0) == "120"
    _, body = render([alert(signal="volume", value=120.0, expected=1000.0)], [], now_ms=T0)
    assert "120 vs 1,000 expected (-88%" in body
    assert format_duration(3 * 3600 * S + 5 * 60 * S) == "3h 05m"
    assert format_duration(26 * 3600 * S, "zh") == "1天2小时"
    assert format_series({}) == "*"


def test_render_needs_an_alert() -> None:
    with pytest.raises(ValueError, match="at least one alert"):
        render([], [], now_ms=T0)
