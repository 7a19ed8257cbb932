"""Small, hand-made event streams whose right answer is known."""

from __future__ import annotations

from typing import Any

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
OUTAGE = (120_000, 200_000)  # alipay fails from +120 s to +200 s


def traffic(seconds: int = 320, spread: bool = False) -> list[dict[str, Any]]:
    """20 calls/s over 3 providers and 6 merchants; alipay has an 80 s outage.

    Only m0's alipay calls fail, unless ``spread``: then half the calls of both alipay
    merchants (m0, m3) fail alike — a provider-wide outage, which pages at provider
    level (one merchant carrying the errors pages that merchant instead)."""
    events = []
    for i in range(seconds * 20):
        offset = i * 50
        provider = ("alipay", "wechatpay", "paypal")[i % 3]
        half = i // 6 % 2 == 0 if spread else i % 2 == 0
        failing = provider == "alipay" and OUTAGE[0] <= offset < OUTAGE[1] and half
        ev: dict[str, Any] = {
            "schema_version": 1,
            "event_type": "provider_call",
            "event_id": f"ev-{i}",
            "event_ts": T0 + offset,
            "service": "checkout",
            "provider": provider,
            "merchant_id": f"m{i % 6}",
            "operation": "create_payment",
            "outcome": "failure" if failing else "success",
            "latency_ms": 120.0 + (i % 17),
        }
        if failing:
            # No error_class: paywatch must derive it from the provider code.
            ev["provider_code"] = "ACQ.SYSTEM_ERROR" if i % 4 else "40004"
            ev["provider_sub_code"] = "ACQ.SYSTEM_ERROR"
            ev["http_status"] = 200
        events.append(ev)
    return events
