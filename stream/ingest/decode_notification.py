"""``payment_notification`` events: the field-by-field checks and the row (layout:
``schema.NOTIFICATION_ROW``)."""

from __future__ import annotations

import math
from typing import Any

from stream.ingest.events import ACK_INDEX, ACK_STATUSES
from stream.ingest.reasons import (
    BadRecord,
    check_amount,
    check_bool,
    check_optional_strings,
    need_enum,
    nonneg_float,
    required_str,
    show,
)
from stream.ingest.schema import (
    NOTIFICATION_OPTIONAL_INTS,
    NOTIFICATION_OPTIONAL_STRINGS,
    NotificationFields,
    NotificationRow,
)


def notification_row(e: Any, seq: int) -> NotificationRow:
    """The row of a :class:`~stream.ingest.schema.NotificationEvent` (or
    ``NotificationFields``): absent
    ``handler_latency_ms`` is NaN, absent ``amount_matches`` -1 (unknown)."""
    latency = e.handler_latency_ms
    matches = e.amount_matches
    return (
        e.event_ts,
        e.provider.lower(),
        e.merchant_id,
        e.signature_verified,
        ACK_INDEX[e.ack_status],
        e.is_duplicate is True,
        -1 if matches is None else int(matches),
        e.out_trade_no,
        e.signing_key_id,
        math.nan if latency is None else latency,
        seq,
    )


def checked_notification(d: dict[str, Any]) -> Any:
    """A ``payment_notification`` whose envelope passed, checked field by field.

    Raises :class:`BadRecord` for the first broken rule; otherwise returns the
    fields :func:`notification_row` reads as a ``NotificationFields``.
    """
    get = d.get
    provider = required_str(d, "provider")
    merchant_id = required_str(d, "merchant_id")
    required_str(d, "notify_id")
    signature_verified = check_bool(d, "signature_verified", True)
    ack = get("ack_status")
    if type(ack) is not str or ack not in ACK_INDEX:
        raise need_enum(d, "ack_status", ACK_STATUSES)
    check_optional_strings(d, NOTIFICATION_OPTIONAL_STRINGS)
    for f in NOTIFICATION_OPTIONAL_INTS:
        v = get(f)
        if v is not None and type(v) is not int:
            raise BadRecord(f, f"{f} must be an integer (ms) when present, got {show(v)}")
    check_amount(d)
    latency = nonneg_float(d, "handler_latency_ms", False)
    is_duplicate = check_bool(d, "is_duplicate", False)
    amount_matches = check_bool(d, "amount_matches", False)
    return NotificationFields(
        event_ts=d["event_ts"],
        provider=provider,
        merchant_id=merchant_id,
        signature_verified=signature_verified,
        ack_status=ack,
        is_duplicate=is_duplicate,
        amount_matches=amount_matches,
        out_trade_no=get("out_trade_no"),
        signing_key_id=get("signing_key_id"),
        handler_latency_ms=latency,
    )
