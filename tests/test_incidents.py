"""Incident scoring (models.incidents): alert episodes against labelled incidents."""

from __future__ import annotations

from typing import Any

import pytest

from models.incidents import score_alerts


def _fire(aid: str, series: dict[str, str], window_end: int, **kw: Any) -> dict[str, Any]:
    return {"alert_id": aid, "status": "firing", "series": series, "window_end": window_end,
            "rule": "r", "severity": "warning", **kw}  # fmt: skip


def test_scoring_matches_rollups_and_counts_the_rest_as_false() -> None:
    labels = [
        {"kind": "outage", "start_ms": 100_000, "end_ms": 200_000,
         "series": {"provider": "alipay", "merchant_id": "M1"}, "is_incident": True},
        {"kind": "latency", "start_ms": 500_000, "end_ms": 600_000,
         "series": {"provider": "paypal"}, "is_incident": True},
        {"kind": "promotion", "start_ms": 700_000, "end_ms": 800_000,
         "series": {"merchant_id": "M9"}, "is_incident": False},
    ]  # fmt: skip
    alerts = [
        _fire("a", {"provider": "alipay"}, 130_000),  # roll-up of the incident: a detection
        {
            "alert_id": "a",
            "status": "resolved",
            "series": {"provider": "alipay"},
            "window_end": 230_000,
        },
        _fire("a", {"provider": "alipay"}, 140_000, severity="critical"),  # same episode
        _fire("b", {"provider": "alipay", "merchant_id": "M1"}, 150_000),
        _fire("c", {"provider": "wechatpay"}, 150_000),  # another provider: false
        _fire("d", {"provider": "alipay"}, 200_000 + 400_000),  # past end + grace: false
        _fire("e", {"provider": "paypal", "merchant_id": "M9"}, 850_000),  # the promotion
    ]
    s = score_alerts(alerts, labels, hours=2.0)
    assert [d.delay_s for d in s.detections[:2]] == [30.0, None]
    assert sorted(s.detections[0].alert_ids) == ["a", "b"]
    assert s.recall == 0.5 and s.detected == 1
    assert {e["alert_id"] for e in s.false_alerts} == {"c", "d"}
    assert s.promotion_alerts == 1
    assert s.alerts == 5 and s.precision == pytest.approx(2 / 5)
    assert s.false_per_hour == pytest.approx(3 / 2)
    assert s.median_delay_s == 30.0


def test_rollups_count_late_but_in_time_and_other_series_are_false() -> None:
    labels = [
        {"kind": "outage", "start_ms": 0, "end_ms": 600_000,
         "series": {"provider": "alipay"}, "is_incident": True},
        {"kind": "outage", "start_ms": 1_000_000, "end_ms": 1_600_000,
         "series": {"provider": "paypal"}, "is_incident": True},
    ]  # fmt: skip
    alerts = [
        _fire("a", {"provider": "alipay", "operation": "refund"}, 120_000),  # 120 s late
        _fire("b", {"provider": "wechatpay"}, 1_100_000),  # wrong series: false alert
        _fire("c", {"provider": "alipay"}, 5_000_000),  # outside any incident: false alert
    ]
    r = score_alerts(alerts, labels, hours=4.0)
    assert r.recall == 0.5
    assert r.precision == pytest.approx(1 / 3)
    assert r.false_per_hour == 0.5
    assert r.delays == [120.0]
