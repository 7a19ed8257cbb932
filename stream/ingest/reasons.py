"""Why a record was rejected: one line a person can act on, naming the field.

The field-by-field checks raise :class:`BadRecord`; the decoder turns it into a
:class:`~stream.ingest.events.Rejected`.  Every reason text of the decoder is
written here or next to the check that raises it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson

from stream.ingest.schema import INT64_MAX, TS_MAX, TS_MIN


class BadRecord(Exception):  # internal control flow, never escapes the decoder
    """A record broke a rule: ``field`` (or None) and a reason for people."""

    def __init__(self, field: str | None, reason: str) -> None:
        self.field = field
        self.reason = reason


def show(v: Any) -> str:
    """Short rendering of an offending value for a reason text.

    >>> show("x" * 100)[-5:], show({1})
    ('xx...', '{1}')
    """
    try:
        s = orjson.dumps(v).decode()
    except (TypeError, orjson.JSONEncodeError):
        s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def absent(d: dict[str, Any], f: str) -> bool:
    return d.get(f) is None


def missing(f: str) -> BadRecord:
    return BadRecord(f, f"missing required field {f!r}")


def required_str(d: dict[str, Any], f: str) -> str:
    """The non-empty string ``d[f]``, or raise naming what is wrong with it."""
    v = d.get(f)
    if type(v) is not str or not v:
        if absent(d, f):
            raise missing(f)
        raise BadRecord(f, f"{f} must be a non-empty string, got {show(d[f])}")
    return v


def need_enum(d: dict[str, Any], f: str, allowed: Sequence[str]) -> BadRecord:
    if absent(d, f):
        return missing(f)
    return BadRecord(f, f"{f} must be one of {', '.join(allowed)}; got {show(d[f])}")


_STR_OR_NONE = frozenset((str, type(None)))


def check_optional_strings(d: dict[str, Any], fields: Sequence[str]) -> None:
    """Optional string fields are strings when present (checked at C speed, then the
    first offender is looked for only when there is one)."""
    get = d.get
    if _STR_OR_NONE.issuperset(map(type, map(get, fields))):
        return
    for f in fields:
        v = get(f)
        if v is not None and type(v) is not str:
            raise BadRecord(f, f"{f} must be a string when present, got {show(v)}")


def nonneg_bad(d: dict[str, Any], f: str, required: bool) -> BadRecord:
    if required and absent(d, f):
        return missing(f)
    return BadRecord(f, f"{f} must be a finite number >= 0, got {show(d[f])}")


def nonneg_float(d: dict[str, Any], f: str, required: bool) -> float | None:
    """A finite number >= 0 as a float; None when optional and absent."""
    v: Any = d.get(f)
    t = type(v)
    if t is float:
        if not 0.0 <= v < math.inf:
            raise nonneg_bad(d, f, required)
        return float(v)
    if t is int:
        if v < 0:
            raise nonneg_bad(d, f, required)
        return float(v)
    if v is None and not required:
        return None
    raise nonneg_bad(d, f, required)


def check_amount(d: dict[str, Any]) -> int | None:
    """``amount_minor``: an integer in 0..int64 max, or None when absent."""
    amt = d.get("amount_minor")
    if amt is not None and (type(amt) is not int or not 0 <= amt <= INT64_MAX):
        raise BadRecord(
            "amount_minor",
            f"amount_minor must be an integer >= 0 (minor units), got {show(amt)}",
        )
    return amt


def check_bool(d: dict[str, Any], f: str, required: bool) -> bool | None:
    """A JSON boolean; None when optional and absent."""
    v = d.get(f)
    if type(v) is bool:
        return v
    if v is None:
        if required:
            raise missing(f)
        return None
    raise BadRecord(f, f"{f} must be true or false, got {show(v)}")


def ts_bad(d: dict[str, Any]) -> BadRecord:
    f = "event_ts"
    if absent(d, f):
        return missing(f)
    v = d[f]
    if type(v) is not int:
        return BadRecord(f, f"event_ts must be an integer (ms since the epoch), got {show(v)}")
    if TS_MIN // 1000 <= v < TS_MAX // 1000:
        return BadRecord(
            f, f"event_ts {v} looks like seconds; it must be milliseconds since the epoch"
        )
    return BadRecord(f, f"event_ts {v} is outside 2000-01-01..2100-01-01 (ms since the epoch)")


def event_type_bad(et: Any) -> BadRecord:
    if et is None:
        return missing("event_type")
    return BadRecord(
        "event_type",
        f"unknown event_type {show(et)} (expected provider_call, payment_notification or metric)",
    )


def json_kind(v: object) -> str:
    if isinstance(v, list):
        return "array"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    return "null"


def bad_json(raw: object, exc: Exception) -> BadRecord:
    if not isinstance(raw, bytes | bytearray | memoryview | str):
        return BadRecord(None, f"record value is {type(raw).__name__}, not bytes")
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError as ue:
            return BadRecord(None, f"record is not valid UTF-8 (bad byte at offset {ue.start})")
        if not raw:
            return BadRecord(None, "empty record value (zero bytes)")
    return BadRecord(None, f"record is not valid JSON: {exc}")
