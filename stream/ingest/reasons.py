"""Why a record was rejected: one line a person can act on, naming the field.

The field-by-field checks raise :class:`BadRecord`; the decoder turns it into a
:class:`~stream.ingest.events.Rejected`.  Every reason text of the decoder is
written here or next to the check that raises it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import orjson

from stream.ingest.schema import (
    INT64_MAX,
    LABELS_MAX,
    NAME_MAX,
    RECORD_MAX_BYTES,
    STRING_LIMITS,
    TS_MAX,
    TS_MIN,
)


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


def too_long(f: str, length: int, limit: int, unit: str = "characters") -> BadRecord:
    """A value over its size limit; the text names the field, its size and the limit.

    >>> too_long("merchant_id", 600_000, 256).reason
    'merchant_id is 600,000 characters long; the limit is 256'
    """
    return BadRecord(f, f"{f} is {length:,} {unit} long; the limit is {limit:,}")


def check_length(f: str, v: str | None) -> None:
    """``v`` (the value of string field ``f``, or None) is within ``f``'s limit."""
    limit = STRING_LIMITS[f]
    if v is not None and len(v) > limit:
        raise too_long(f, len(v), limit)


def check_record_size(raw: object) -> None:
    """The whole record within ``RECORD_MAX_BYTES`` (what no field limit bounds: unknown
    fields, many labels)."""
    if isinstance(raw, bytes | bytearray | memoryview | str) and len(raw) > RECORD_MAX_BYTES:
        raise BadRecord(
            None, f"record is {len(raw):,} bytes long; the limit is {RECORD_MAX_BYTES:,} bytes"
        )


def required_str(d: dict[str, Any], f: str) -> str:
    """The non-empty string ``d[f]`` within its limit, or raise naming what is wrong with it."""
    v = d.get(f)
    if type(v) is not str or not v:
        if absent(d, f):
            raise missing(f)
        raise BadRecord(f, f"{f} must be a non-empty string, got {show(d[f])}")
    if len(v) > STRING_LIMITS[f]:
        raise too_long(f, len(v), STRING_LIMITS[f])
    return v


def need_enum(d: dict[str, Any], f: str, allowed: Sequence[str]) -> BadRecord:
    if absent(d, f):
        return missing(f)
    return BadRecord(f, f"{f} must be one of {', '.join(allowed)}; got {show(d[f])}")


_STR_OR_NONE = frozenset((str, type(None)))


@functools.cache
def _by_limit(fields: tuple[str, ...]) -> tuple[tuple[int, tuple[str, ...]], ...]:
    limits = sorted({STRING_LIMITS[f] for f in fields})
    return tuple((n, tuple(f for f in fields if STRING_LIMITS[f] == n)) for n in limits)


def check_optional_strings(d: dict[str, Any], fields: tuple[str, ...]) -> None:
    """Optional string fields are strings within their limits when present (checked at C
    speed, then the first offender is looked for only when there is one)."""
    get = d.get
    if not _STR_OR_NONE.issuperset(map(type, map(get, fields))):
        for f in fields:
            v = get(f)
            if v is not None and type(v) is not str:
                raise BadRecord(f, f"{f} must be a string when present, got {show(v)}")
    for limit, group in _by_limit(fields):
        # filter(None, ...) drops absent fields (and empty strings, which fit any limit).
        if max(map(len, filter(None, map(get, group))), default=0) > limit:
            for f in group:
                check_length(f, get(f))


def check_labels(labels: dict[str, Any]) -> None:
    """A metric's labels: at most ``LABELS_MAX``, keys names and values ids in length."""
    if len(labels) > LABELS_MAX:
        raise BadRecord("labels", f"labels has {len(labels):,} entries; the limit is {LABELS_MAX}")
    for k, v in labels.items():
        if len(k) > NAME_MAX:
            raise BadRecord("labels", f"labels key {show(k)} is {len(k):,} characters long; "
                            f"the limit is {NAME_MAX}")  # fmt: skip
        if len(v) > STRING_LIMITS["name"]:
            raise BadRecord("labels", f"labels[{show(k)}] is {len(v):,} characters long; "
                            f"the limit is {STRING_LIMITS['name']}")  # fmt: skip


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
