"""Decode and validate raw event v1 records into a columnar :class:`DecodedBatch`.

:func:`decode_batch` checks each record against the event v1 contract of
DESIGN.md and appends the fields later stages need to per-type rows, which
become numpy columns once at the end.  A record that follows the contract to the
letter is parsed and type-checked in one msgspec call; any other goes through
orjson and the per-field checks that name what is wrong (same result, slower).  Anything wrong
with a record turns it into a :class:`Rejected` with one line a person can act
on; the decoder never raises for any record bytes.  :func:`stream.ingest.dlq.dlq_record`
turns a rejection into the DLQ JSON.

Layout: one module per event type (``decode_call``, ``decode_notification``,
``decode_metric``) holds its field-by-field checks and its row function, which
both parse paths use; ``schema`` the structs and row layouts; ``reasons`` the
reason texts; this module the loop over a batch, the stream-clock rules and
the columns.

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
* :func:`stream.ingest.dlq.reason_code` maps a rejection to a short code for metric labels.

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

import gc
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any, cast

import numpy as np
import orjson

from stream.ingest.decode_call import Classify, call_row, checked_call
from stream.ingest.decode_metric import checked_metric, metric_row
from stream.ingest.decode_notification import checked_notification, notification_row
from stream.ingest.dlq import raw_bytes
from stream.ingest.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    DecodedBatch,
    Rejected,
    Source,
    SourceColumns,
)
from stream.ingest.reasons import (
    BadRecord,
    bad_json,
    check_record_size,
    event_type_bad,
    json_kind,
    missing,
    required_str,
    show,
    ts_bad,
)
from stream.ingest.schema import (
    CALL_ROW,
    CODE,
    METRIC_ROW,
    NOTIFICATION_ROW,
    RECORD_MAX_BYTES,
    STRICT_DECODER,
    TS_MAX,
    TS_MIN,
    CallEvent,
    MetricEvent,
    NotificationEvent,
    RowLayout,
)
from stream.ingest.taxonomy import ErrorTaxonomy

DAY_MS = 24 * 3600 * 1000
# A batch whose median is beyond the future limit moves the clock when it holds at least
# this many valid events: the stream jumped (a stall over a weekend, a gap in a replayed
# file); otherwise nothing would ever be accepted again.  A few stray events cannot do it.
JUMP_MIN_EVENTS = 8

# Set to None to send every record through the field-by-field path (the equivalence tests do).
_FAST_DECODE: Callable[[bytes], Any] | None = STRICT_DECODER.decode
_EVENT_TYPES = frozenset(EVENT_TYPES)
_LAYOUTS = (CALL_ROW, NOTIFICATION_ROW, METRIC_ROW)  # the order of the row lists below

Row = tuple[Any, ...]
Rows = list[list[Row]]  # calls, notifications, metrics
Numbered = list[tuple[int, Rejected]]  # rejections with their position in the batch


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
    n = len(values)
    if len(sources) != n:
        raise ValueError(f"decode_batch: {n} values but {len(sources)} sources")
    tax = taxonomy if taxonomy is not None else ErrorTaxonomy.default()
    # Nothing in here makes reference cycles, and collections triggered by the many
    # short-lived objects and the row tuples cost ~10%: the collector waits until the batch
    # is decoded and its rows are freed.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        rows, rejects = _rows(values, sources, tax.classify)
        cols = [_transpose(r) for r in rows]
        ts = _ts_columns(cols)
        ref = _stream_clock(ts, reference_ms, max_future_ms)
        if ref is not None:
            lo, hi = ref - max_past_ms, ref + max_future_ms
            if any(len(t) and (int(t.min()) < lo or int(t.max()) > hi) for t in ts):
                late: Numbered = []
                far = (lo, hi, ref, max_future_ms, max_past_ms, values, sources, late)
                rows = [_drop_far(r, *far) for r in rows]
                cols = [_transpose(r) for r in rows]
                ts = _ts_columns(cols)
                if late:
                    rejects.extend(late)
                    rejects.sort(key=lambda p: p[0])
        return _batch(cols, ts, _partitions(sources), [r for _, r in rejects])
    finally:
        if gc_was_enabled:
            gc.enable()


def _rows(
    values: Sequence[bytes | None], sources: Sequence[Source], classify: Classify
) -> tuple[Rows, Numbered]:
    """Each record as a row of its type, or a numbered rejection (both in input order)."""
    calls: list[Row] = []
    notes: list[Row] = []
    metrics: list[Row] = []
    rejects: Numbered = []
    fast = _FAST_DECODE
    for i in range(len(values)):
        raw = values[i]
        if fast is not None and type(raw) is bytes and len(raw) <= RECORD_MAX_BYTES:
            # Any failure here, even an unexpected one, falls through to the checked path,
            # which then decides, or rejects with the reason text.
            try:
                e = fast(raw)
                t = type(e)
                if t is CallEvent:
                    row = call_row(e, i, classify)
                    if row is not None:
                        calls.append(row)
                        continue
                elif t is NotificationEvent:
                    notes.append(notification_row(e, i))
                    continue
                elif t is MetricEvent:
                    metrics.append(metric_row(e, i))
                    continue
            except Exception:
                pass
        try:
            et, d = _checked_envelope(raw)
            checked: Row
            if et == "provider_call":
                call = call_row(checked_call(d), i, classify)
                if call is None:  # pragma: no cover - checked_call rejects what call_row refuses
                    raise BadRecord("http_status", "http_status must be 0 or 100..599")
                checked, out = call, calls
            elif et == "payment_notification":
                checked, out = notification_row(checked_notification(d), i), notes
            else:
                checked, out = metric_row(checked_metric(d), i), metrics
            check_record_size(raw)  # after the fields, so a reason names an oversized one
            out.append(checked)
        except BadRecord as bad:
            rejects.append((i, Rejected(bad.reason, bad.field, raw_bytes(raw), sources[i])))
        except Exception as exc:  # last resort: a bad record must never stop a worker
            reason = f"record could not be decoded ({type(exc).__name__}: {exc})"[:200]
            rejects.append((i, Rejected(reason, None, raw_bytes(raw), sources[i])))
    return [calls, notes, metrics], rejects


def _checked_envelope(raw: object) -> tuple[str, dict[str, Any]]:
    """Parse a record and check the fields every event has; returns (event_type, fields)."""
    if raw is None:
        raise BadRecord(None, "empty record value (null or tombstone)")
    try:
        d = orjson.loads(raw)  # type: ignore[arg-type]
    except orjson.JSONDecodeError as exc:
        raise bad_json(raw, exc) from None
    if type(d) is not dict:
        raise BadRecord(None, f"record is a JSON {json_kind(d)}, not an object")
    get = d.get
    sv = get("schema_version")
    if sv != SCHEMA_VERSION or type(sv) is not int:
        if sv is None:
            raise missing("schema_version")
        raise BadRecord(
            "schema_version", f"unsupported schema_version {show(sv)} (this worker reads 1)"
        )
    et = get("event_type")
    if type(et) is not str or et not in _EVENT_TYPES:
        raise event_type_bad(et)
    ts = get("event_ts")
    if type(ts) is not int or not TS_MIN <= ts < TS_MAX:
        raise ts_bad(d)
    required_str(d, "event_id")
    required_str(d, "service")
    return et, d


# --- the stream clock ---------------------------------------------------------------------


def _stream_clock(ts: list[np.ndarray], reference_ms: int | None, max_future_ms: int) -> int | None:
    """The reference time of the clock rules: ``reference_ms``, or the batch's median
    event time when there is no reference or the stream jumped beyond the future limit."""
    ref = reference_ms
    n_ok = sum(len(t) for t in ts)
    if n_ok and (ref is None or n_ok >= JUMP_MIN_EVENTS):
        median = int(np.median(np.concatenate(ts)))
        if ref is None or median > ref + max_future_ms:
            ref = median
    return ref


def _drop_far(
    rows: list[Row],
    lo: int,
    hi: int,
    ref: int,
    max_future_ms: int,
    max_past_ms: int,
    values: Sequence[bytes | None],
    sources: Sequence[Source],
    late: Numbered,
) -> list[Row]:
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
        late.append((i, Rejected(reason, "event_ts", raw_bytes(values[i]), sources[i])))
    return kept


def _span(ms: int) -> str:
    """Human duration: ``90 s``, ``3.5 h``, ``2.0 d``.

    >>> _span(90_000), _span(12_600_000), _span(2 * DAY_MS)
    ('90 s', '3.5 h', '2.0 d')
    """
    if ms < 120_000:
        return f"{ms / 1000:.0f} s"
    if ms < 2 * DAY_MS:
        return f"{ms / 3_600_000:.1f} h"
    return f"{ms / DAY_MS:.1f} d"


# --- columns ------------------------------------------------------------------------------


def _transpose(rows: list[Row]) -> list[Row]:
    return list(zip(*rows, strict=True)) if rows else []


def _ts_columns(cols: list[list[Row]]) -> list[np.ndarray]:
    return [np.array(c[0] if c else (), dtype=np.int64) for c in cols]


def _partitions(sources: Sequence[Source]) -> np.ndarray:
    # Columnar sources (the worker's) hold them already, without a Source per record.
    if isinstance(sources, SourceColumns):
        return sources.partitions
    return np.array([src.partition for src in sources], dtype=np.int32)


def _batch(
    cols: list[list[Row]], ts: list[np.ndarray], partitions: np.ndarray, rejected: list[Rejected]
) -> DecodedBatch:
    """The columns of every type, their strings interned into one table at C speed:
    unique strings first (in row order), then one map per column."""
    string_cols = chain.from_iterable(
        [c[k] for k in layout.strings] for layout, c in zip(_LAYOUTS, cols, strict=True) if c
    )
    codes: dict[str | None, int] = dict.fromkeys(chain.from_iterable(string_cols), -1)
    codes.pop(None, None)
    strings = cast(list[str], list(codes))  # None was popped
    codes = dict(zip(strings, range(len(strings)), strict=True))
    codes[None] = -1
    lookup = codes.__getitem__

    def code(col: Row) -> np.ndarray:
        return np.fromiter(map(lookup, col), dtype=np.int32, count=len(col))

    out = DecodedBatch(strings=strings, rejected=rejected)
    out.calls, out.notifications, out.metrics = (
        _columns(layout, c, t, partitions, code) if c else layout.columns()
        for layout, c, t in zip(_LAYOUTS, cols, ts, strict=True)
    )
    return out


def _columns(
    layout: RowLayout,
    cols: list[Row],
    ts: np.ndarray,
    partitions: np.ndarray,
    code: Callable[[Row], np.ndarray],
) -> Any:
    """One type's columns from its transposed rows, as its layout says."""
    arrays = {"ts": ts}
    for (name, dtype), col in zip(layout.fields[1:], cols[1:], strict=True):
        arrays[name] = code(col) if dtype is CODE else np.array(col, dtype=dtype)
    arrays["partition"] = partitions[arrays["seq"]]
    return layout.columns(**arrays)
