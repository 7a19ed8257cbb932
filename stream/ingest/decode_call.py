"""``provider_call`` events: the field-by-field checks and the row (layout: ``schema.CALL_ROW``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stream.ingest.events import (
    ERROR_CLASS_INDEX,
    ERROR_CLASSES,
    OPERATIONS,
    OUTCOME_INDEX,
    OUTCOMES,
)
from stream.ingest.reasons import (
    BadRecord,
    check_amount,
    check_bool,
    check_length,
    check_optional_strings,
    need_enum,
    nonneg_float,
    required_str,
    show,
)
from stream.ingest.schema import CALL_OPTIONAL_STRINGS, CallFields, CallRow

# ErrorTaxonomy.classify: (provider, code, sub_code, http_status, transport_error) -> class
Classify = Callable[[str, str | None, str | None, int | None, str | None], str | None]

_OPERATIONS = frozenset(OPERATIONS)
_FAILED = (OUTCOME_INDEX["failure"], OUTCOME_INDEX["unknown"])


def call_row(e: Any, seq: int, classify: Classify) -> CallRow | None:
    """The row of a :class:`~stream.ingest.schema.CallEvent` (or ``CallFields``).

    None when its ``http_status`` is 1..99, which the struct cannot rule out: the
    field-by-field path then rejects the record with the reason.  A failed or
    unknown call without ``error_class`` gets one from the taxonomy (-1 if none).
    """
    hs = e.http_status
    if hs is not None and 0 < hs < 100:
        return None
    provider = e.provider.lower()
    outcome = OUTCOME_INDEX[e.outcome]
    named = e.error_class
    if named is not None:
        error_class = ERROR_CLASS_INDEX[named]
    elif outcome in _FAILED:
        pc = e.provider_code
        psc = e.provider_sub_code
        klass = classify(
            provider,
            str(pc) if type(pc) is int else pc,
            str(psc) if type(psc) is int else psc,
            hs or None,
            e.transport_error or None,
        )
        error_class = -1 if klass is None else ERROR_CLASS_INDEX[klass]
    else:
        error_class = -1
    amount = e.amount_minor
    return (
        e.event_ts,
        provider,
        e.operation,
        e.merchant_id,
        outcome,
        error_class,
        e.latency_ms,
        0 if amount is None else amount,
        e.out_trade_no,
        e.signing_key_id,
        seq,
    )


def checked_call(d: dict[str, Any]) -> Any:
    """A ``provider_call`` whose envelope passed, checked field by field.

    Raises :class:`BadRecord` for the first broken rule; otherwise returns the
    fields :func:`call_row` reads as a ``CallFields``.
    """
    get = d.get
    provider = required_str(d, "provider")
    merchant_id = required_str(d, "merchant_id")
    op = get("operation")
    if type(op) is not str or op not in _OPERATIONS:
        raise need_enum(d, "operation", OPERATIONS)
    oc = get("outcome")
    if type(oc) is not str or oc not in OUTCOME_INDEX:
        raise need_enum(d, "outcome", OUTCOMES)
    latency = nonneg_float(d, "latency_ms", True)
    check_optional_strings(d, CALL_OPTIONAL_STRINGS)
    amount = check_amount(d)
    hs = get("http_status")
    if hs is not None and (type(hs) is not int or not (100 <= hs <= 599 or hs == 0)):
        raise BadRecord(
            "http_status", f"http_status must be an integer HTTP status 100..599, got {show(hs)}"
        )
    v = get("attempt")
    if v is not None and (type(v) is not int or v < 0):
        raise BadRecord("attempt", f"attempt must be an integer >= 0, got {show(v)}")
    check_bool(d, "signature_verified", False)
    pc = get("provider_code")
    psc = get("provider_sub_code")
    if (pc is not None and type(pc) is not str) or (psc is not None and type(psc) is not str):
        pc = _sub_code(pc, "provider_code")
        psc = _sub_code(psc, "provider_sub_code")
    check_length("provider_code", pc)
    check_length("provider_sub_code", psc)
    named = get("error_class")
    if named is not None and (type(named) is not str or named not in ERROR_CLASS_INDEX):
        raise BadRecord(
            "error_class",
            f"error_class must be one of {', '.join(ERROR_CLASSES)}; got {show(named)}",
        )
    return CallFields(
        event_ts=d["event_ts"],
        provider=provider,
        operation=op,
        merchant_id=merchant_id,
        outcome=oc,
        error_class=named,
        latency_ms=latency,
        amount_minor=amount,
        out_trade_no=get("out_trade_no"),
        signing_key_id=get("signing_key_id"),
        http_status=hs,
        provider_code=pc,
        provider_sub_code=psc,
        transport_error=get("transport_error"),
    )


def _sub_code(v: Any, f: str) -> str | None:
    """provider_code/sub_code: a string, or an integer read as its decimal text."""
    if v is None:
        return None
    t = type(v)
    if t is str:
        return str(v)
    if t is int:
        return str(v)
    raise BadRecord(f, f"{f} must be a string when present, got {show(v)}")
