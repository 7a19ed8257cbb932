"""Event v1 as the decoder reads it: field bounds, msgspec structs, and the row layout per type.

Each event type has one struct (:class:`CallEvent`, :class:`NotificationEvent`,
:class:`MetricEvent`) that msgspec fills in one C call when a record follows the
contract to the letter; the field-by-field path builds the smaller ``*Fields``
struct (the fields a row is made of) after its own checks.  One row function per
type (``stream.ingest.decode_*``) turns either struct into a row tuple, and one
:class:`RowLayout` per type names the row's fields in order and says how each
becomes a column.  So the layout is written once per type, and both parse paths
go through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from stream.ingest.events import (
    ACK_STATUSES,
    ERROR_CLASSES,
    METRIC_KINDS,
    OPERATIONS,
    OUTCOMES,
    SCHEMA_VERSION,
    CallColumns,
    MetricColumns,
    NotificationColumns,
)

# Absolute bounds on event_ts: [2000-01-01, 2100-01-01) UTC.
TS_MIN = 946_684_800_000
TS_MAX = 4_102_444_800_000
INT64_MAX = 2**63 - 1

ENVELOPE_OPTIONAL_STRINGS = ("env", "host", "region", "trace_id")
CALL_OPTIONAL_STRINGS = (
    *ENVELOPE_OPTIONAL_STRINGS,
    "api_version",
    "sdk_method",
    "channel",
    "endpoint",
    "transport_error",
    "signing_key_id",
    "out_trade_no",
    "provider_trade_no",
    "currency",
    "trade_state",
)
NOTIFICATION_OPTIONAL_STRINGS = (
    *ENVELOPE_OPTIONAL_STRINGS,
    "notify_kind",
    "provider_event_type",
    "out_trade_no",
    "provider_trade_no",
    "currency",
    "trade_state",
    "verify_error",
    "signing_key_id",
)
NOTIFICATION_OPTIONAL_INTS = ("clock_skew_ms", "provider_ts", "business_ts")
METRIC_OPTIONAL_STRINGS = (*ENVELOPE_OPTIONAL_STRINGS, "unit")

# --- size limits ---------------------------------------------------------------------------
# Valid JSON can still be absurd: a 600 KB merchant_id would become a series name, a string
# in every alert about it and a key held in memory.  Every string field has a limit, in
# characters (Unicode code points, as JSON Schema's maxLength and msgspec count), and a
# record has one in bytes; docs/events.md lists them and docs/events.schema.json says the
# same with maxLength.  Names (a provider, a region) are short, ids longer, error texts longest.
NAME_MAX = 64
ID_MAX = 256
TEXT_MAX = 2048
LABELS_MAX = 32  # labels of one metric event; keys are names, values ids
RECORD_MAX_BYTES = 64 * 1024
_NAMES = ("provider", "env", "region", "api_version", "channel", "currency", "trade_state")
_TEXTS = ("endpoint", "transport_error", "verify_error")
_IDS = (
    *("event_id", "service", "merchant_id", "host", "trace_id", "sdk_method", "signing_key_id"),
    *("out_trade_no", "provider_trade_no", "provider_code", "provider_sub_code", "notify_id"),
    *("provider_event_type", "name"),
)
STRING_LIMITS: dict[str, int] = {
    **dict.fromkeys((*_NAMES, "notify_kind", "unit"), NAME_MAX),
    **dict.fromkeys(_IDS, ID_MAX),
    **dict.fromkeys(_TEXTS, TEXT_MAX),
}


# --- structs -------------------------------------------------------------------------------
# The structs may be stricter than the contract, never looser: whatever msgspec refuses goes
# through the field-by-field path, the single source of every reason text.  Unknown fields
# are forbidden because msgspec skips their values without the checks orjson applies
# (invalid UTF-8, numbers overflowing a double).  Integer bounds: orjson reads integers
# beyond 64 bits as floats, so fields without a tighter range are held to int64 here (the
# rest of uint64 takes the orjson path).
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=INT64_MAX)]


def _req(f: str) -> Any:
    """A required string field: non-empty, within its limit."""
    return Annotated[str, msgspec.Meta(min_length=1, max_length=STRING_LIMITS[f])]


def _opt(f: str) -> Any:
    """An optional string field within its limit."""
    return Annotated[str, msgspec.Meta(max_length=STRING_LIMITS[f])] | None


def _code(f: str) -> Any:
    """provider_code / provider_sub_code: a string within its limit or an int64."""
    return Annotated[str, msgspec.Meta(max_length=STRING_LIMITS[f])] | _Int64 | None


_Labels = Annotated[
    dict[
        Annotated[str, msgspec.Meta(max_length=NAME_MAX)],
        Annotated[str, msgspec.Meta(max_length=ID_MAX)],
    ],
    msgspec.Meta(max_length=LABELS_MAX),
]
_Amount = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)] | None
_NonNegFloat = Annotated[float, msgspec.Meta(ge=0.0)]


def _lit(values: Sequence[Any]) -> Any:
    return Literal[tuple(values)]


def _fields(required: Sequence[tuple[str, Any]], optional: Sequence[tuple[str, Any]]) -> Any:
    return [*required, *((f, t, None) for f, t in optional)]


_ENVELOPE_FIELDS = (
    ("schema_version", _lit([SCHEMA_VERSION])),
    ("event_id", _req("event_id")),
    ("event_ts", Annotated[int, msgspec.Meta(ge=TS_MIN, lt=TS_MAX)]),
    ("service", _req("service")),
)
_STRUCT_OPTS: dict[str, Any] = {
    "tag_field": "event_type",
    "kw_only": True,
    "forbid_unknown_fields": True,
    "gc": False,
}
CallEvent: Any = msgspec.defstruct(
    "CallEvent",
    _fields(
        (
            *_ENVELOPE_FIELDS,
            ("provider", _req("provider")),
            ("merchant_id", _req("merchant_id")),
            ("operation", _lit(OPERATIONS)),
            ("outcome", _lit(OUTCOMES)),
            ("latency_ms", _NonNegFloat),
        ),
        (
            *((f, _opt(f)) for f in CALL_OPTIONAL_STRINGS),
            ("amount_minor", _Amount),
            ("http_status", Annotated[int, msgspec.Meta(ge=0, le=599)] | None),
            ("attempt", Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)] | None),
            ("signature_verified", bool | None),
            ("provider_code", _code("provider_code")),
            ("provider_sub_code", _code("provider_sub_code")),
            ("error_class", _lit(ERROR_CLASSES) | None),
        ),
    ),
    tag="provider_call",
    module=__name__,
    **_STRUCT_OPTS,
)
NotificationEvent: Any = msgspec.defstruct(
    "NotificationEvent",
    _fields(
        (
            *_ENVELOPE_FIELDS,
            ("provider", _req("provider")),
            ("merchant_id", _req("merchant_id")),
            ("notify_id", _req("notify_id")),
            ("signature_verified", bool),
            ("ack_status", _lit(ACK_STATUSES)),
        ),
        (
            *((f, _opt(f)) for f in NOTIFICATION_OPTIONAL_STRINGS),
            *((f, _Int64 | None) for f in NOTIFICATION_OPTIONAL_INTS),
            ("amount_minor", _Amount),
            ("handler_latency_ms", _NonNegFloat | None),
            ("is_duplicate", bool | None),
            ("amount_matches", bool | None),
        ),
    ),
    tag="payment_notification",
    module=__name__,
    **_STRUCT_OPTS,
)
MetricEvent: Any = msgspec.defstruct(
    "MetricEvent",
    _fields(
        (*_ENVELOPE_FIELDS, ("name", _req("name")), ("value", float)),
        (
            *((f, _opt(f)) for f in METRIC_OPTIONAL_STRINGS),
            ("kind", _lit(METRIC_KINDS) | None),
            ("labels", _Labels | None),
        ),
    ),
    tag="metric",
    module=__name__,
    **_STRUCT_OPTS,
)
# One C call per record: the struct of its type, or an error for anything not to the letter.
STRICT_DECODER = msgspec.json.Decoder(CallEvent | NotificationEvent | MetricEvent)


def _row_input(name: str, event: Any, fields: Sequence[str]) -> Any:
    """A struct of just the fields a row function reads of ``event``: what the checked
    path builds once a record passed (keyword init of the strict struct, which fills
    some twenty defaults, costs four times as much)."""
    if not set(fields) <= set(event.__struct_fields__):
        raise TypeError(f"{name}: {sorted(set(fields) - set(event.__struct_fields__))}")
    return msgspec.defstruct(
        name, [(f, Any) for f in fields], kw_only=True, gc=False, module=__name__
    )


CallFields: Any = _row_input(
    "CallFields",
    CallEvent,
    (
        "event_ts",
        "provider",
        "operation",
        "merchant_id",
        "outcome",
        "error_class",
        "latency_ms",
        "amount_minor",
        "out_trade_no",
        "signing_key_id",
        "http_status",
        "provider_code",
        "provider_sub_code",
        "transport_error",
    ),
)
NotificationFields: Any = _row_input(
    "NotificationFields",
    NotificationEvent,
    (
        "event_ts",
        "provider",
        "merchant_id",
        "signature_verified",
        "ack_status",
        "is_duplicate",
        "amount_matches",
        "out_trade_no",
        "signing_key_id",
        "handler_latency_ms",
    ),
)
MetricFields: Any = _row_input("MetricFields", MetricEvent, ("event_ts", "name", "labels", "value"))


# --- rows ----------------------------------------------------------------------------------
CODE = None  # dtype of a string field: interned into the batch's table, an int32 code


@dataclass(frozen=True)
class RowLayout:
    """The fields of one event type's row tuple, in order, and the columns they become.

    A field's dtype is its column's numpy dtype, or :data:`CODE` for a string (an
    int32 code into ``DecodedBatch.strings``, ``-1`` for None).  Every row starts
    with the event time and ends with the record's position in the batch (``seq``);
    ``partition`` is not in the row: the columns take it from the batch's sources.
    """

    columns: type[Any]
    fields: tuple[tuple[str, type[np.generic] | None], ...]

    def __post_init__(self) -> None:
        names = [name for name, _ in self.fields]
        expected = [f for f in self.columns.__slots__ if f != "partition"]
        if names != expected or names[0] != "ts" or names[-1] != "seq":
            raise TypeError(f"row layout {names} does not match {self.columns.__name__}")

    @property
    def strings(self) -> list[int]:
        """Positions of the string fields (interned to codes)."""
        return [i for i, (_, dtype) in enumerate(self.fields) if dtype is CODE]


# Row tuples as the row functions build them, field for field as in the layouts below.
CallRow = tuple[int, str, str, str, int, int, float, int, str | None, str | None, int]
NotificationRow = tuple[int, str, str, bool, int, bool, int, str | None, str | None, float, int]
MetricRow = tuple[int, str, str, float, int]

CALL_ROW = RowLayout(
    CallColumns,
    (
        ("ts", np.int64),
        ("provider", CODE),
        ("operation", CODE),
        ("merchant_id", CODE),
        ("outcome", np.int8),
        ("error_class", np.int8),
        ("latency_ms", np.float64),
        ("amount_minor", np.int64),
        ("out_trade_no", CODE),
        ("signing_key_id", CODE),
        ("seq", np.int64),
    ),
)
NOTIFICATION_ROW = RowLayout(
    NotificationColumns,
    (
        ("ts", np.int64),
        ("provider", CODE),
        ("merchant_id", CODE),
        ("signature_verified", np.bool_),
        ("ack_status", np.int8),
        ("is_duplicate", np.bool_),
        ("amount_matches", np.int8),
        ("out_trade_no", CODE),
        ("signing_key_id", CODE),
        ("handler_latency_ms", np.float64),
        ("seq", np.int64),
    ),
)
METRIC_ROW = RowLayout(
    MetricColumns,
    (
        ("ts", np.int64),
        ("name", CODE),
        ("series", CODE),
        ("value", np.float64),
        ("seq", np.int64),
    ),
)
