"""The action contract: the request body (JSON Schema below), its HMAC-SHA256 signature,
body templates, and how an answer is read.  docs/actions.md explains it to the
people who write the receiving endpoint.

>>> body = b'{"a":1}'
>>> header = signature_header(b"s3cret", body, 1_767_225_600)
>>> header
't=1767225600,v1=7d4120fcebf444efab10ba7cd6c651bf463cefb039db5fad37ff9f7231ac8a4a'
>>> verify_signature(b"s3cret", body, header, now_s=1_767_225_630)
True
>>> verify_signature(b"s3cret", b'{"a":2}', header, now_s=1_767_225_630)
False
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

SIGNATURE_HEADER = "X-Paywatch-Signature"
RUN_HEADER = "X-Paywatch-Run"  # the run's id: the same on every retry (deduplicate on it)
ACTION_HEADER = "X-Paywatch-Action"
TOLERANCE_S = 300  # a receiver refuses signatures older (or newer) than this
BODY_VERSION = 1

#: JSON Schema of the default request body (docs/actions.md shows it; tests validate it).
REQUEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "paywatch action request v1",
    "type": "object",
    "required": ["schema_version", "action", "trigger", "run_id", "sent_at", "alert", "orders"],
    "properties": {
        "schema_version": {"const": BODY_VERSION},
        "action": {"type": "string", "description": "the action's name in the config"},
        "trigger": {"enum": ["firing", "resolved", "escalation"]},
        "run_id": {"type": "string", "description": "same on every retry of one run"},
        "sent_at": {"type": "integer", "description": "epoch ms of this attempt"},
        "dry_run": {"type": "boolean"},
        "alert": {
            "type": "object",
            "description": "the alert v1 record (docs/alerts.md), with its evidence",
            "required": ["alert_id", "fingerprint", "status", "rule", "signal", "series"],
        },
        "orders": {
            "type": "array",
            "description": "overdue orders to query, oldest first (from the alert's evidence)",
            "items": {
                "type": "object",
                "required": ["provider", "merchant_id", "out_trade_no"],
                "properties": {
                    "provider": {"type": "string"},
                    "merchant_id": {"type": "string"},
                    "out_trade_no": {"type": "string"},
                },
                "additionalProperties": False,
            },
        },
    },
}


def sign(secret: bytes, body: bytes, ts_s: int) -> str:
    """Hex HMAC-SHA256 of ``"<ts>." + body`` (the timestamp is signed too: no replays)."""
    return hmac.new(secret, str(ts_s).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(secret: bytes, body: bytes, ts_s: int) -> str:
    return f"t={ts_s},v1={sign(secret, body, ts_s)}"


def verify_signature(secret: bytes, body: bytes, header: str, now_s: int) -> bool:
    """What a receiver does: parse ``t=...,v1=...``, check the age, compare in constant time."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        ts = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now_s - ts) > TOLERANCE_S:
        return False
    return hmac.compare_digest(sign(secret, body, ts), parts.get("v1", ""))


def flat_orders(alert: Mapping[str, Any]) -> list[dict[str, str]]:
    """The alert's overdue orders, one object each, oldest first per provider and merchant."""
    mc = (alert.get("evidence") or {}).get("missing_callbacks") or {}
    return [
        {"provider": str(g["provider"]), "merchant_id": str(g["merchant_id"]), "out_trade_no": t}
        for g in mc.get("orders") or []
        for t in g.get("out_trade_no") or []
    ]


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")


def _lookup(context: Mapping[str, Any], path: str) -> Any:
    value: Any = context
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def render_template(template: Any, context: Mapping[str, Any]) -> Any:
    """Fill ``{{path}}`` placeholders: a string that is only a placeholder takes the value as
    it is (a list, an object, a number); elsewhere the value is written into the string.

    >>> ctx = {"alert": {"rule": "callbacks", "series": {"provider": "alipay"}}, "orders": [1]}
    >>> render_template({"q": "{{orders}}", "t": "{{ alert.rule }} on {{alert.series.provider}}"},
    ...                 ctx)
    {'q': [1], 't': 'callbacks on alipay'}
    """
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template.strip())
        if whole:
            return _lookup(context, whole.group(1))
        return _PLACEHOLDER.sub(lambda m: _text(_lookup(context, m.group(1))), template)
    if isinstance(template, Mapping):
        return {str(k): render_template(v, context) for k, v in template.items()}
    if isinstance(template, list):
        return [render_template(v, context) for v in template]
    return template


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def read_answer(status: int, text: str) -> tuple[str, bool]:
    """(outcome, retry?) of an HTTP answer: 2xx ok; 408, 429 and 5xx are retried; any
    other 4xx is refused for good (retrying the same request cannot help).

    >>> read_answer(200, ""), read_answer(503, ""), read_answer(400, "")
    (('ok', False), ('failed', True), ('failed', False))
    """
    if 200 <= status < 300:
        return "ok", False
    return "failed", status in (408, 429) or status >= 500
