"""Decode and validate raw event v1 records into a columnar :class:`DecodedBatch`.

:func:`decode_batch` checks each record against the event v1 contract of
DESIGN.md and appends the fields later stages need to per-type rows, which
become numpy columns once at the end.  A record that follows the contract to the
letter is parsed and type-checked in one msgspec call; any other goes through
orjson and the per-field checks that name what is wrong (same result, slower).  Anything wrong
with a record turns it into a :class:`Rejected` with one line a person can act
on; the decoder never raises for any record bytes.  :func:`dlq_record` turns a
rejection into the DLQ JSON.

Decisions beyond the letter of the contract:

* ``provider`` is normalised to lowercase (``"WeChatPay"`` counts as
  ``wechatpay``) rather than rejected: a capitalised name is a cosmetic slip
  that must not cost the event.  Enum fields (``operation``, ``outcome``,
  ``ack_status``, ``error_class``, ``kind``) must match exactly.
* An optional field that is ``null`` counts as absent; a required one that is
  ``null`` is missing.  Required strings must be non-empty.
* ``provider_code`` / ``provider_sub_code`` may be JSON integers (Alipay's
  ``40004``); they are read as their decimal text.  Every other optional string
  field must be a string.
* ``http_status`` ``0`` means "no HTTP response" (Go's zero value) and counts
  as absent; otherwise it must be an integer in 100..599.
* Integers are never booleans: ``"latency_ms": true`` is rejected.
* A failed or unknown ``provider_call`` without ``error_class`` gets one from
  the taxonomy; when nothing there matches it stays ``-1`` (an ``unknown``
  outcome is not assumed to be a timeout).
* Metric ``series`` is ``name`` alone, or ``name{k=v,...}`` with labels sorted
  by key (envelope fields such as ``host`` are not part of it).
* ``event_ts`` must lie in [2000-01-01, 2100-01-01) and near the stream's clock
  (see :func:`decode_batch`); a value in the seconds range is called out as such.
* :func:`reason_code` maps a rejection to a short code for metric labels.

>>> from stream.ingest.events import Source
>>> rec = (b'{"schema_version":1,"event_type":"metric","event_id":"e1",'
...        b'"event_ts":1767225600000,"service":"api","name":"cpu","value":0.5,'
...        b'"labels":{"host":"a"}}')
>>> batch = decode_batch([rec, b"oops"], [Source("t", 0, 1), Source("t", 0, 2)])
>>> batch.strings[batch.metrics.series[0]], float(batch.metrics.value[0])
('cpu{host=a}', 0.5)
>>> batch.rejected[0].reason
'record is not valid JSON: unexpected character, expected a JSON value: line 1 column 1 (char 0)'
"""

from __future__ import annotations

import codecs
import gc
import math
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Annotated, Any, Literal, cast

import msgspec
import numpy as np
import orjson

from stream.ingest.events import (
    ACK_INDEX,
    ACK_STATUSES,
    ERROR_CLASS_INDEX,
    ERROR_CLASSES,
    EVENT_TYPES,
    METRIC_KINDS,
    OPERATIONS,
    OUTCOME_INDEX,
    OUTCOMES,
    SCHEMA_VERSION,
    CallColumns,
    DecodedBatch,
    MetricColumns,
    NotificationColumns,
    Rejected,
    Source,
    SourceColumns,
)
from stream.ingest.taxonomy import ErrorTaxonomy

DAY_MS = 24 * 3600 * 1000
# Absolute bounds on event_ts: [2000-01-01, 2100-01-01) UTC.
TS_MIN = 946_684_800_000
TS_MAX = 4_102_444_800_000
INT64_MAX = 2**63 - 1
# A batch whose median is beyond the future limit moves the clock when it holds at least
# this many valid events: the stream jumped (a stall over a weekend, a gap in a replayed
# file); otherwise nothing would ever be accepted again.  A few stray events cannot do it.
JUMP_MIN_EVENTS = 8
DLQ_RAW_LIMIT = 4096

_INF = math.inf
_OPERATIONS = frozenset(OPERATIONS)
_METRIC_KINDS = frozenset(METRIC_KINDS)
_EVENT_TYPES = frozenset(EVENT_TYPES)
_FAILED = (OUTCOME_INDEX["failure"], OUTCOME_INDEX["unknown"])
_ENVELOPE_OPT_STR = ("env", "host", "region", "trace_id")
_CALL_OPT_STR = (
    *_ENVELOPE_OPT_STR,
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
_NOTIFY_OPT_STR = (
    *_ENVELOPE_OPT_STR,
    "notify_kind",
    "provider_event_type",
    "out_trade_no",
    "provider_trade_no",
    "currency",
    "trade_state",
    "verify_error",
    "signing_key_id",
)
_METRIC_OPT_STR = (*_ENVELOPE_OPT_STR, "unit")
_NOTIFY_OPT_INT = ("clock_skew_ms", "provider_ts", "business_ts")


# --- fast path -----------------------------------------------------------------------------
# A record that follows the contract to the letter (only known fields, every value of its
# type and range) is decoded and type-checked in one C call by msgspec into one of the
# structs below, leaving Python only the checks msgspec cannot express.  Whatever msgspec
# refuses -- or any doubt -- goes through the orjson path further down, the single source
# of every reason text; so the structs may be stricter than the contract, never looser.
# Unknown fields are forbidden here because msgspec skips their values without the checks
# orjson applies (invalid UTF-8, numbers overflowing a double).  Integer bounds: orjson
# reads integers beyond 64 bits as floats, so fields without a tighter range are held to
# int64 here (the rest of uint64 takes the orjson path).
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=INT64_MAX)]
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_OptStr = str | None
_Amount = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)] | None
_NonNegFloat = Annotated[float, msgspec.Meta(ge=0.0)]


def _lit(values: Sequence[Any]) -> Any:
    return Literal[tuple(values)]


def _fields(required: Sequence[tuple[str, Any]], optional: Sequence[tuple[str, Any]]) -> Any:
    return [*required, *((f, t, None) for f, t in optional)]


_ENVELOPE_FIELDS = (
    ("schema_version", _lit([SCHEMA_VERSION])),
    ("event_id", _NonEmpty),
    ("event_ts", Annotated[int, msgspec.Meta(ge=TS_MIN, lt=TS_MAX)]),
    ("service", _NonEmpty),
)
_STRUCT_OPTS: dict[str, Any] = {
    "tag_field": "event_type",
    "kw_only": True,
    "forbid_unknown_fields": True,
    "gc": False,
}
_FastCall = msgspec.defstruct(
    "_FastCall",
    _fields(
        (
            *_ENVELOPE_FIELDS,
            ("provider", _NonEmpty),
            ("merchant_id", _NonEmpty),
            ("operation", _lit(OPERATIONS)),
            ("outcome", _lit(OUTCOMES)),
            ("latency_ms", _NonNegFloat),
        ),
        (
            *((f, _OptStr) for f in _CALL_OPT_STR),
            ("amount_minor", _Amount),
            ("http_status", Annotated[int, msgspec.Meta(ge=0, le=599)] | None),
            ("attempt", Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)] | None),
            ("signature_verified", bool | None),
            ("provider_code", str | _Int64 | None),
            ("provider_sub_code", str | _Int64 | None),
            ("error_class", _lit(ERROR_CLASSES) | None),
        ),
    ),
    tag="provider_call",
    **_STRUCT_OPTS,
)
_FastNote = msgspec.defstruct(
    "_FastNote",
    _fields(
        (
            *_ENVELOPE_FIELDS,
            ("provider", _NonEmpty),
            ("merchant_id", _NonEmpty),
            ("notify_id", _NonEmpty),
            ("signature_verified", bool),
            ("ack_status", _lit(ACK_STATUSES)),
        ),
        (
            *((f, _OptStr) for f in _NOTIFY_OPT_STR),
            *((f, _Int64 | None) for f in _NOTIFY_OPT_INT),
            ("amount_minor", _Amount),
            ("handler_latency_ms", _NonNegFloat | None),
            ("is_duplicate", bool | None),
            ("amount_matches", bool | None),
        ),
    ),
    tag="payment_notification",
    **_STRUCT_OPTS,
)
_FastMetric = msgspec.defstruct(
    "_FastMetric",
    _fields(
        (*_ENVELOPE_FIELDS, ("name", _NonEmpty), ("value", float)),
        (
            *((f, _OptStr) for f in _METRIC_OPT_STR),
            ("kind", _lit(METRIC_KINDS) | None),
            ("labels", dict[str, str] | None),
        ),
    ),
    tag="metric",
    **_STRUCT_OPTS,
)
# Set to None to send every record through the orjson path (the equivalence tests do).
_FAST_DECODE: Callable[[bytes], Any] | None = msgspec.json.Decoder(
    _FastCall | _FastNote | _FastMetric
).decode


class _Bad(Exception):  # internal control flow, never escapes this module
    """A record broke a rule: ``field`` (or None) and a reason for people."""

    def __init__(self, field: str | None, reason: str) -> None:
        self.field = field
        self.reason = reason


def _show(v: Any) -> str:
    """Short rendering of an offending value for a reason text."""
    try:
        s = orjson.dumps(v).decode()
    except (TypeError, orjson.JSONEncodeError):
        s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _absent(d: dict[str, Any], f: str) -> bool:
    return d.get(f) is None


def _need_str(d: dict[str, Any], f: str) -> _Bad:
    if _absent(d, f):
        return _Bad(f, f"missing required field {f!r}")
    return _Bad(f, f"{f} must be a non-empty string, got {_show(d[f])}")


def _required_str(d: dict[str, Any], f: str) -> str:
    v = d.get(f)
    if type(v) is not str or not v:
        raise _need_str(d, f)
    return v


def _need_enum(d: dict[str, Any], f: str, allowed: Sequence[str]) -> _Bad:
    if _absent(d, f):
        return _Bad(f, f"missing required field {f!r}")
    return _Bad(f, f"{f} must be one of {', '.join(allowed)}; got {_show(d[f])}")


def _opt_str_bad(f: str, v: Any) -> _Bad:
    return _Bad(f, f"{f} must be a string when present, got {_show(v)}")


def _nonneg_bad(d: dict[str, Any], f: str, required: bool) -> _Bad:
    if required and _absent(d, f):
        return _Bad(f, f"missing required field {f!r}")
    return _Bad(f, f"{f} must be a finite number >= 0, got {_show(d[f])}")


def _ts_bad(d: dict[str, Any]) -> _Bad:
    f = "event_ts"
    if _absent(d, f):
        return _Bad(f, "missing required field 'event_ts'")
    v = d[f]
    if type(v) is not int:
        return _Bad(f, f"event_ts must be an integer (ms since the epoch), got {_show(v)}")
    if TS_MIN // 1000 <= v < TS_MAX // 1000:
        return _Bad(f, f"event_ts {v} looks like seconds; it must be milliseconds since the epoch")
    return _Bad(f, f"event_ts {v} is outside 2000-01-01..2100-01-01 (ms since the epoch)")


def _event_type_bad(et: Any) -> _Bad:
    if et is None:
        return _Bad("event_type", "missing required field 'event_type'")
    return _Bad(
        "event_type",
        f"unknown event_type {_show(et)} (expected provider_call, payment_notification or metric)",
    )


def _sub_code(v: Any, f: str) -> str | None:
    """provider_code/sub_code: a string, or an integer read as its decimal text."""
    if v is None:
        return None
    t = type(v)
    if t is str:
        return v
    if t is int:
        return str(v)
    raise _Bad(f, f"{f} must be a string when present, got {_show(v)}")


def decode_batch(
    values: Sequence[bytes | None],
    sources: Sequence[Source],
    *,
    reference_ms: int | None = None,
    max_future_ms: int = DAY_MS,
    max_past_ms: int = 7 * DAY_MS,
    taxonomy: ErrorTaxonomy | None = None,
) -> DecodedBatch:
    """Decode one batch of record values; ``sources[i]`` says where ``values[i]`` came from.

    Every input ends up either as one row of ``calls``/``notifications``/``metrics``
    or as one entry of ``rejected`` (in input order).  Besides the absolute
    bounds [2000-01-01, 2100-01-01), an event is rejected when its ``event_ts``
    is more than ``max_future_ms`` ahead of, or ``max_past_ms`` behind,
    ``reference_ms`` — the stream's clock; when None, the median event time of
    the batch's otherwise valid events stands in for it.  When at least
    ``JUMP_MIN_EVENTS`` valid events have a median beyond the future limit, the
    stream's clock has jumped forward and that median replaces ``reference_ms``
    (else a stream that paused longer than ``max_future_ms`` would be rejected
    forever by a caller whose reference only moves with accepted events).  String columns are
    codes into ``batch.strings`` (-1 = absent).  Never raises for any record
    content; raises ``ValueError`` only when the two sequences differ in length.
    """
    # Nothing in here makes reference cycles, and collections triggered by the many
    # short-lived objects and the row tuples cost ~10%: the collector waits until the batch
    # is decoded and its rows are freed.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _decode(values, sources, reference_ms, max_future_ms, max_past_ms, taxonomy)
    finally:
        if gc_was_enabled:
            gc.enable()


def _decode(
    values: Sequence[bytes | None],
    sources: Sequence[Source],
    reference_ms: int | None,
    max_future_ms: int,
    max_past_ms: int,
    taxonomy: ErrorTaxonomy | None,
) -> DecodedBatch:
    n = len(values)
    if len(sources) != n:
        raise ValueError(f"decode_batch: {n} values but {len(sources)} sources")
    tax = taxonomy if taxonomy is not None else ErrorTaxonomy.default()
    classify = tax.classify

    calls: list[tuple[Any, ...]] = []
    notes: list[tuple[Any, ...]] = []
    metrics: list[tuple[Any, ...]] = []
    rejects: list[tuple[int, Rejected]] = []
    # Columnar sources (the worker's) give partitions without building a Source per record.
    partitions: list[int] = (
        sources.partitions.tolist()
        if isinstance(sources, SourceColumns)
        else [src.partition for src in sources]
    )

    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    operations = _OPERATIONS
    outcome_index = OUTCOME_INDEX
    ack_index = ACK_INDEX
    ec_index = ERROR_CLASS_INDEX
    failed = _FAILED
    metric_kinds = _METRIC_KINDS
    event_types = _EVENT_TYPES
    metric_opt = _METRIC_OPT_STR
    call_opt = _CALL_OPT_STR
    note_opt = _NOTIFY_OPT_STR
    note_int = _NOTIFY_OPT_INT
    ts_min, ts_max, inf, int64_max = TS_MIN, TS_MAX, _INF, INT64_MAX
    nan = math.nan
    fast = _FAST_DECODE
    fast_call, fast_note, fast_metric = _FastCall, _FastNote, _FastMetric

    for i in range(n):
        raw = values[i]
        if fast is not None and type(raw) is bytes:
            # Any failure here, even an unexpected one, falls through to the orjson path,
            # which then decides, or rejects with the reason text.
            try:
                e = fast(raw)
                t = type(e)
                if t is fast_call:
                    hs = e.http_status
                    if hs is None or hs == 0 or hs >= 100:
                        prov = e.provider.lower()
                        fast_oc = outcome_index[e.outcome]
                        ecn = e.error_class
                        if ecn is not None:
                            ec = ec_index[ecn]
                        elif fast_oc in failed:
                            pc = e.provider_code
                            psc = e.provider_sub_code
                            klass = classify(
                                prov,
                                str(pc) if type(pc) is int else pc,
                                str(psc) if type(psc) is int else psc,
                                hs or None,
                                e.transport_error or None,
                            )
                            ec = -1 if klass is None else ec_index[klass]
                        else:
                            ec = -1
                        amt = e.amount_minor
                        calls.append(
                            (
                                e.event_ts,
                                prov,
                                e.operation,
                                e.merchant_id,
                                fast_oc,
                                ec,
                                e.latency_ms,
                                0 if amt is None else amt,
                                e.out_trade_no,
                                e.signing_key_id,
                                partitions[i],
                                i,
                            )
                        )
                        continue
                elif t is fast_note:
                    hl = e.handler_latency_ms
                    am = e.amount_matches
                    notes.append(
                        (
                            e.event_ts,
                            e.provider.lower(),
                            e.merchant_id,
                            e.signature_verified,
                            ack_index[e.ack_status],
                            e.is_duplicate is True,
                            -1 if am is None else int(am),
                            e.out_trade_no,
                            e.signing_key_id,
                            nan if hl is None else hl,
                            partitions[i],
                            i,
                        )
                    )
                    continue
                elif t is fast_metric:
                    name = e.name
                    series = _metric_series(name, e.labels)
                    metrics.append((e.event_ts, name, series, e.value, partitions[i], i))
                    continue
            except Exception:
                pass
        try:
            if raw is None:
                raise _Bad(None, "empty record value (null or tombstone)")
            try:
                d = loads(raw)
            except decode_error as exc:
                raise _bad_json(raw, exc) from None
            if type(d) is not dict:
                raise _Bad(None, f"record is a JSON {_json_kind(d)}, not an object")
            get: Callable[[str], Any] = d.get

            # --- envelope ---
            sv = get("schema_version")
            if sv != SCHEMA_VERSION or type(sv) is not int:
                if sv is None:
                    raise _Bad("schema_version", "missing required field 'schema_version'")
                raise _Bad(
                    "schema_version",
                    f"unsupported schema_version {_show(sv)} (this worker reads 1)",
                )
            et = get("event_type")
            if type(et) is not str or et not in event_types:
                raise _event_type_bad(et)
            ts = get("event_ts")
            if type(ts) is not int or not ts_min <= ts < ts_max:
                raise _ts_bad(d)
            _required_str(d, "event_id")
            _required_str(d, "service")
            part = partitions[i]

            if et == "provider_call":
                prov = _required_str(d, "provider")
                prov = prov.lower()
                mid = _required_str(d, "merchant_id")
                op = get("operation")
                if type(op) is not str or op not in operations:
                    raise _need_enum(d, "operation", OPERATIONS)
                oc = get("outcome")
                outcome = outcome_index.get(oc) if type(oc) is str else None
                if outcome is None:
                    raise _need_enum(d, "outcome", OUTCOMES)
                lat = get("latency_ms")
                t = type(lat)
                if t is float:
                    if not 0.0 <= lat < inf:
                        raise _nonneg_bad(d, "latency_ms", True)
                elif t is int:
                    if lat < 0:
                        raise _nonneg_bad(d, "latency_ms", True)
                    lat = float(lat)
                else:
                    raise _nonneg_bad(d, "latency_ms", True)
                for f in call_opt:
                    v = get(f)
                    if v is not None and type(v) is not str:
                        raise _opt_str_bad(f, v)
                amt = get("amount_minor")
                if amt is None:
                    amt = 0
                elif type(amt) is not int or not 0 <= amt <= int64_max:
                    raise _Bad(
                        "amount_minor",
                        f"amount_minor must be an integer >= 0 (minor units), got {_show(amt)}",
                    )
                hs = get("http_status")
                if hs is not None and (type(hs) is not int or not (100 <= hs <= 599 or hs == 0)):
                    raise _Bad(
                        "http_status",
                        f"http_status must be an integer HTTP status 100..599, got {_show(hs)}",
                    )
                v = get("attempt")
                if v is not None and (type(v) is not int or v < 0):
                    raise _Bad("attempt", f"attempt must be an integer >= 0, got {_show(v)}")
                v = get("signature_verified")
                if v is not None and type(v) is not bool:
                    raise _Bad(
                        "signature_verified",
                        f"signature_verified must be true or false, got {_show(v)}",
                    )
                pc = get("provider_code")
                psc = get("provider_sub_code")
                if (pc is not None and type(pc) is not str) or (
                    psc is not None and type(psc) is not str
                ):
                    pc = _sub_code(pc, "provider_code")
                    psc = _sub_code(psc, "provider_sub_code")
                ecn = get("error_class")
                if ecn is None:
                    ec = -1
                    if outcome in failed:
                        klass = classify(prov, pc, psc, hs or None, get("transport_error") or None)
                        if klass is not None:
                            ec = ec_index[klass]
                else:
                    ec = ec_index.get(ecn, -2) if type(ecn) is str else -2
                    if ec == -2:
                        raise _Bad(
                            "error_class",
                            f"error_class must be one of {', '.join(ERROR_CLASSES)};"
                            f" got {_show(ecn)}",
                        )
                calls.append(
                    (
                        ts,
                        prov,
                        op,
                        mid,
                        outcome,
                        ec,
                        lat,
                        amt,
                        get("out_trade_no"),
                        get("signing_key_id"),
                        part,
                        i,
                    )
                )

            elif et == "payment_notification":
                prov = _required_str(d, "provider")
                prov = prov.lower()
                mid = _required_str(d, "merchant_id")
                _required_str(d, "notify_id")
                sig = get("signature_verified")
                if type(sig) is not bool:
                    if sig is None:
                        raise _Bad(
                            "signature_verified", "missing required field 'signature_verified'"
                        )
                    raise _Bad(
                        "signature_verified",
                        f"signature_verified must be true or false, got {_show(sig)}",
                    )
                ack = get("ack_status")
                ak = ack_index.get(ack) if type(ack) is str else None
                if ak is None:
                    raise _need_enum(d, "ack_status", ACK_STATUSES)
                for f in note_opt:
                    v = get(f)
                    if v is not None and type(v) is not str:
                        raise _opt_str_bad(f, v)
                for f in note_int:
                    v = get(f)
                    if v is not None and type(v) is not int:
                        raise _Bad(f, f"{f} must be an integer (ms) when present, got {_show(v)}")
                amt = get("amount_minor")
                if amt is not None and (type(amt) is not int or not 0 <= amt <= int64_max):
                    raise _Bad(
                        "amount_minor",
                        f"amount_minor must be an integer >= 0 (minor units), got {_show(amt)}",
                    )
                hl = get("handler_latency_ms")
                t = type(hl)
                if hl is None:
                    hl = nan
                elif t is float:
                    if not 0.0 <= hl < inf:
                        raise _nonneg_bad(d, "handler_latency_ms", False)
                elif t is int:
                    if hl < 0:
                        raise _nonneg_bad(d, "handler_latency_ms", False)
                    hl = float(hl)
                else:
                    raise _nonneg_bad(d, "handler_latency_ms", False)
                dup = get("is_duplicate")
                if dup is None:
                    dup = False
                elif type(dup) is not bool:
                    raise _Bad(
                        "is_duplicate", f"is_duplicate must be true or false, got {_show(dup)}"
                    )
                am = get("amount_matches")
                if am is None:
                    am = -1
                elif type(am) is bool:
                    am = int(am)
                else:
                    raise _Bad(
                        "amount_matches",
                        f"amount_matches must be true or false, got {_show(am)}",
                    )
                notes.append(
                    (
                        ts,
                        prov,
                        mid,
                        sig,
                        ak,
                        dup,
                        am,
                        get("out_trade_no"),
                        get("signing_key_id"),
                        hl,
                        part,
                        i,
                    )
                )

            elif et == "metric":
                name = _required_str(d, "name")
                val = get("value")
                t = type(val)
                if t is float:
                    if not -inf < val < inf:
                        raise _Bad("value", f"value must be a finite number, got {_show(val)}")
                elif t is int:
                    val = float(val)
                elif val is None:
                    raise _Bad("value", "missing required field 'value'")
                else:
                    raise _Bad("value", f"value must be a finite number, got {_show(val)}")
                for f in metric_opt:
                    v = get(f)
                    if v is not None and type(v) is not str:
                        raise _opt_str_bad(f, v)
                v = get("kind")
                if v is not None and (type(v) is not str or v not in metric_kinds):
                    raise _Bad("kind", f"kind must be gauge or counter, got {_show(v)}")
                labels = get("labels")
                if labels:
                    if type(labels) is not dict:
                        raise _Bad(
                            "labels",
                            f"labels must be an object of strings, got {_show(labels)}",
                        )
                    for k, lv in labels.items():
                        if type(lv) is not str:
                            raise _Bad(
                                "labels",
                                f"labels must be an object of strings; {_show(k)} is {_show(lv)}",
                            )
                    series = _metric_series(name, labels)
                elif labels is None or type(labels) is dict:
                    series = name
                else:
                    raise _Bad(
                        "labels", f"labels must be an object of strings, got {_show(labels)}"
                    )
                metrics.append((ts, name, series, val, part, i))

            else:  # pragma: no cover - event_types was checked above
                raise _event_type_bad(et)
        except _Bad as bad:
            rejects.append((i, Rejected(bad.reason, bad.field, _raw_bytes(raw), sources[i])))
        except Exception as exc:  # last resort: a bad record must never stop a worker
            rejects.append(
                (
                    i,
                    Rejected(
                        f"record could not be decoded ({type(exc).__name__}: {exc})"[:200],
                        None,
                        _raw_bytes(raw),
                        sources[i],
                    ),
                )
            )

    # Columns first: one pass over the rows, and the clock rules below run on numpy arrays.
    cc, nc, mc = _columns(calls), _columns(notes), _columns(metrics)
    ts_cols = _ts_columns(cc, nc, mc)
    ref = reference_ms
    n_ok = len(calls) + len(notes) + len(metrics)
    if n_ok and (ref is None or n_ok >= JUMP_MIN_EVENTS):
        median = int(np.median(np.concatenate(ts_cols)))
        if ref is None or median > ref + max_future_ms:
            ref = median
    late: list[tuple[int, Rejected]] = []
    if ref is not None:
        lo, hi = ref - max_past_ms, ref + max_future_ms
        if any(len(t) and (int(t.min()) < lo or int(t.max()) > hi) for t in ts_cols):
            far = (lo, hi, ref, max_future_ms, max_past_ms, values, sources, late)
            calls = _drop_far(calls, *far)
            notes = _drop_far(notes, *far)
            metrics = _drop_far(metrics, *far)
            cc, nc, mc = _columns(calls), _columns(notes), _columns(metrics)
            ts_cols = _ts_columns(cc, nc, mc)
    if late:
        rejects.extend(late)
        rejects.sort(key=lambda p: p[0])

    # Intern all string columns at C speed: unique strings first, then one map per column.
    string_cols = [*cc[1:4], *cc[8:10], *nc[1:3], *nc[7:9], *mc[1:3]]
    codes: dict[str | None, int] = dict.fromkeys(chain.from_iterable(string_cols), -1)
    codes.pop(None, None)
    strings = cast(list[str], list(codes))  # None was popped
    codes = dict(zip(strings, range(len(strings)), strict=True))
    codes[None] = -1
    lookup = codes.__getitem__

    def code(col: tuple[Any, ...]) -> np.ndarray:
        return np.fromiter(map(lookup, col), dtype=np.int32, count=len(col))

    out = DecodedBatch(strings=strings, rejected=[r for _, r in rejects])
    if cc:
        out.calls = CallColumns(
            ts=ts_cols[0],
            provider=code(cc[1]),
            operation=code(cc[2]),
            merchant_id=code(cc[3]),
            outcome=np.array(cc[4], dtype=np.int8),
            error_class=np.array(cc[5], dtype=np.int8),
            latency_ms=np.array(cc[6], dtype=np.float64),
            amount_minor=np.array(cc[7], dtype=np.int64),
            out_trade_no=code(cc[8]),
            signing_key_id=code(cc[9]),
            partition=np.array(cc[10], dtype=np.int32),
            seq=np.array(cc[11], dtype=np.int64),
        )
    if nc:
        out.notifications = NotificationColumns(
            ts=ts_cols[1],
            provider=code(nc[1]),
            merchant_id=code(nc[2]),
            signature_verified=np.array(nc[3], dtype=np.bool_),
            ack_status=np.array(nc[4], dtype=np.int8),
            is_duplicate=np.array(nc[5], dtype=np.bool_),
            amount_matches=np.array(nc[6], dtype=np.int8),
            out_trade_no=code(nc[7]),
            signing_key_id=code(nc[8]),
            handler_latency_ms=np.array(nc[9], dtype=np.float64),
            partition=np.array(nc[10], dtype=np.int32),
            seq=np.array(nc[11], dtype=np.int64),
        )
    if mc:
        out.metrics = MetricColumns(
            ts=ts_cols[2],
            name=code(mc[1]),
            series=code(mc[2]),
            value=np.array(mc[3], dtype=np.float64),
            partition=np.array(mc[4], dtype=np.int32),
            seq=np.array(mc[5], dtype=np.int64),
        )
    return out


def _columns(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return list(zip(*rows, strict=True)) if rows else []


def _ts_columns(*cols: list[tuple[Any, ...]]) -> list[np.ndarray]:
    return [np.array(c[0] if c else (), dtype=np.int64) for c in cols]


def _drop_far(
    rows: list[tuple[Any, ...]],
    lo: int,
    hi: int,
    ref: int,
    max_future_ms: int,
    max_past_ms: int,
    values: Sequence[bytes | None],
    sources: Sequence[Source],
    late: list[tuple[int, Rejected]],
) -> list[tuple[Any, ...]]:
    """Keep rows whose event time is within [lo, hi]; reject the rest into ``late``."""
    if not rows:
        return rows
    kept = [r for r in rows if lo <= r[0] <= hi]
    if len(kept) == len(rows):
        return rows
    for r in rows:
        ts, i = r[0], r[-1]
        if ts > hi:
            reason = (
                f"event_ts is {_span(ts - ref)} ahead of the stream clock"
                f" (limit {_span(max_future_ms)})"
            )
        elif ts < lo:
            reason = (
                f"event_ts is {_span(ref - ts)} behind the stream clock"
                f" (limit {_span(max_past_ms)})"
            )
        else:
            continue
        late.append((i, Rejected(reason, "event_ts", _raw_bytes(values[i]), sources[i])))
    return kept


def _metric_series(name: str, labels: dict[str, str] | None) -> str:
    """``name``, or ``name{k=v,...}`` with labels sorted by key.

    >>> _metric_series("cpu", {"host": "a", "az": "1"}), _metric_series("cpu", None)
    ('cpu{az=1,host=a}', 'cpu')
    """
    if not labels:
        return name
    return name + "{" + ",".join(f"{k}={labels[k]}" for k in sorted(labels)) + "}"


def _span(ms: int) -> str:
    """Human duration: ``90 s``, ``3.5 h``, ``2.0 d``."""
    if ms < 120_000:
        return f"{ms / 1000:.0f} s"
    if ms < 2 * DAY_MS:
        return f"{ms / 3_600_000:.1f} h"
    return f"{ms / DAY_MS:.1f} d"


def _raw_bytes(raw: object) -> bytes:
    if raw is None:
        return b""
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):
        return raw.encode("utf-8", "replace")
    return b""


def _json_kind(v: object) -> str:
    if isinstance(v, list):
        return "array"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    return "null"


def _bad_json(raw: object, exc: Exception) -> _Bad:
    if not isinstance(raw, bytes | bytearray | memoryview | str):
        return _Bad(None, f"record value is {type(raw).__name__}, not bytes")
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError as ue:
            return _Bad(None, f"record is not valid UTF-8 (bad byte at offset {ue.start})")
        if not raw:
            return _Bad(None, "empty record value (zero bytes)")
    return _Bad(None, f"record is not valid JSON: {exc}")


# Reason text fragment -> short code, first match wins (bounded label values for metrics).
_REASON_CODES = (
    ("empty record value", "empty"),
    ("record value is ", "not_bytes"),
    ("record is not valid UTF-8", "not_utf8"),
    ("record is not valid JSON", "not_json"),
    ("record is a JSON ", "not_object"),
    ("missing required field", "missing_field"),
    ("unsupported schema_version", "schema_version"),
    ("unknown event_type", "event_type"),
    ("ahead of the stream clock", "ts_future"),
    ("behind the stream clock", "ts_past"),
    ("looks like seconds", "ts_range"),
    ("is outside 2000-01-01", "ts_range"),
    ("must be one of", "bad_enum"),
    ("must be gauge or counter", "bad_enum"),
    ("finite number", "bad_number"),
    ("integer >= 0", "bad_number"),
    ("HTTP status", "bad_number"),
    (" must be ", "wrong_type"),
)
REASON_CODES = (*dict.fromkeys(c for _, c in _REASON_CODES), "other")


def reason_code(rejected: Rejected) -> str:
    """A short, bounded code for a rejection (one of ``REASON_CODES``), e.g. for metric labels.

    >>> reason_code(Rejected("missing required field 'service'", "service", b"", Source("t", 0, 0)))
    'missing_field'
    """
    reason = rejected.reason
    for fragment, code in _REASON_CODES:
        if fragment in reason:
            return code
    return "other"


def dlq_record(rejected: Rejected) -> bytes:
    """The DLQ JSON of one rejection (DESIGN.md): reason, field, source and raw text.

    ``raw`` is the record decoded as UTF-8 (bad bytes become U+FFFD), cut to at
    most 4 KiB of UTF-8 without splitting a character.

    >>> r = Rejected("missing required field 'service'", "service", b'{"a":1}', Source("t", 3, 9))
    >>> rec = orjson.loads(dlq_record(r))
    >>> rec["field"], rec["source"], rec["raw"]
    ('service', {'topic': 't', 'partition': 3, 'offset': 9}, '{"a":1}')
    """
    raw = rejected.raw
    head = raw[: DLQ_RAW_LIMIT + 4]
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    # final=False holds back a character cut by the slice instead of replacing it.
    text = decoder.decode(head, final=len(head) == len(raw))
    enc = text.encode("utf-8")
    if len(enc) > DLQ_RAW_LIMIT:
        text = enc[:DLQ_RAW_LIMIT].decode("utf-8", "ignore")
    src = rejected.source
    return orjson.dumps(
        {
            "reason": rejected.reason,
            "field": rejected.field,
            "source": {"topic": src.topic, "partition": src.partition, "offset": src.offset},
            "raw": text,
        }
    )
