"""decode_batch: every event type into its columns, every bad-input rule into `rejected`."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.ingest.decode import JUMP_MIN_EVENTS, decode_batch
from stream.ingest.dlq import DLQ_RAW_LIMIT, REASON_CODES, dlq_record, reason_code
from stream.ingest.events import (
    ACK_INDEX,
    ERROR_CLASS_INDEX,
    OPERATIONS,
    OUTCOME_INDEX,
    DecodedBatch,
    Rejected,
    Source,
)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000

_MISSING = object()


def call(**over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "schema_version": 1,
        "event_type": "provider_call",
        "event_id": "c-1",
        "event_ts": T0,
        "service": "checkout",
        "env": "prod",
        "provider": "wechatpay",
        "merchant_id": "m-1",
        "operation": "create_payment",
        "outcome": "success",
        "latency_ms": 120.5,
        "http_status": 200,
        "amount_minor": 1999,
        "currency": "CNY",
        "out_trade_no": "ord-1",
        "signing_key_id": "SERIAL1",
    }
    return _apply(ev, over)


def note(**over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "schema_version": 1,
        "event_type": "payment_notification",
        "event_id": "n-1",
        "event_ts": T0,
        "service": "notify-gw",
        "provider": "alipay",
        "merchant_id": "m-2",
        "notify_id": "nid-1",
        "signature_verified": True,
        "ack_status": "acked",
        "out_trade_no": "ord-2",
        "handler_latency_ms": 8,
        "is_duplicate": True,
        "amount_matches": False,
        "signing_key_id": "K2",
        "provider_ts": T0 - 500,
    }
    return _apply(ev, over)


def metric(**over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "schema_version": 1,
        "event_type": "metric",
        "event_id": "x-1",
        "event_ts": T0,
        "service": "checkout",
        "name": "cert_days_left",
        "value": 12,
        "unit": "d",
        "kind": "gauge",
        "labels": {"provider": "wechatpay", "merchant_id": "m-1"},
    }
    return _apply(ev, over)


def _apply(ev: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if v is _MISSING:
            ev.pop(k, None)
        else:
            ev[k] = v
    return ev


def run(records: list[Any], **kw: Any) -> DecodedBatch:
    """Decode dicts (JSON-encoded here) or raw values; source partition = input position."""
    values = [orjson.dumps(r) if isinstance(r, dict) else r for r in records]
    sources = [Source("payments.events", i, 1000 + i) for i in range(len(values))]
    return decode_batch(values, sources, **kw)


def one_reject(record: Any, **kw: Any) -> Rejected:
    batch = run([record], **kw)
    assert batch.accepted == 0, "expected the record to be rejected"
    assert len(batch.rejected) == 1
    return batch.rejected[0]


def s(batch: DecodedBatch, code: int) -> str | None:
    return None if code == -1 else batch.strings[code]


# --- good events ---------------------------------------------------------------------------


def test_provider_call_lands_in_call_columns() -> None:
    b = run([call()])
    c = b.calls
    assert len(c) == 1 and len(b.notifications) == 0 and len(b.metrics) == 0
    assert b.rejected == []
    assert int(c.ts[0]) == T0
    assert s(b, c.provider[0]) == "wechatpay"
    assert s(b, c.operation[0]) == "create_payment"
    assert s(b, c.merchant_id[0]) == "m-1"
    assert c.outcome[0] == OUTCOME_INDEX["success"]
    assert c.error_class[0] == -1
    assert c.latency_ms[0] == 120.5
    assert c.amount_minor[0] == 1999
    assert s(b, c.out_trade_no[0]) == "ord-1"
    assert s(b, c.signing_key_id[0]) == "SERIAL1"
    assert c.partition[0] == 0
    assert c.ts.dtype == np.int64 and c.provider.dtype == np.int32 and c.outcome.dtype == np.int8


def test_optional_fields_absent_or_null() -> None:
    b = run([call(out_trade_no=None, signing_key_id=_MISSING, amount_minor=_MISSING, env=None)])
    assert b.calls.out_trade_no[0] == -1
    assert b.calls.signing_key_id[0] == -1
    assert b.calls.amount_minor[0] == 0


def test_notification_lands_in_notification_columns() -> None:
    b = run([note(), note(event_id="n-2", handler_latency_ms=_MISSING, amount_matches=_MISSING)])
    n = b.notifications
    assert len(n) == 2 and b.rejected == []
    assert s(b, n.provider[0]) == "alipay"
    assert s(b, n.merchant_id[0]) == "m-2"
    assert bool(n.signature_verified[0]) is True
    assert n.ack_status[0] == ACK_INDEX["acked"]
    assert bool(n.is_duplicate[0]) is True
    assert n.amount_matches[0] == 0 and n.amount_matches[1] == -1
    assert s(b, n.out_trade_no[0]) == "ord-2"
    assert s(b, n.signing_key_id[0]) == "K2"
    assert n.handler_latency_ms[0] == 8.0 and math.isnan(n.handler_latency_ms[1])
    assert list(n.partition) == [0, 1]


def test_notification_defaults() -> None:
    ev = note(is_duplicate=_MISSING, signature_verified=False, ack_status="late")
    n = run([ev]).notifications
    assert bool(n.is_duplicate[0]) is False
    assert bool(n.signature_verified[0]) is False
    assert n.ack_status[0] == ACK_INDEX["late"]


def test_metric_series_is_name_plus_sorted_labels() -> None:
    b = run([metric(), metric(labels=_MISSING, value=-3.5, name="queue_depth")])
    m = b.metrics
    assert s(b, m.name[0]) == "cert_days_left"
    assert s(b, m.series[0]) == "cert_days_left{merchant_id=m-1,provider=wechatpay}"
    assert s(b, m.series[1]) == "queue_depth"
    assert m.value.tolist() == [12.0, -3.5]  # ints become floats; negatives are fine


def test_all_three_types_share_one_string_table() -> None:
    b = run([call(), note(provider="wechatpay"), metric()])
    assert b.accepted == 3
    assert b.calls.provider[0] == b.notifications.provider[0]
    assert len(set(b.strings)) == len(b.strings)  # interned once each


def test_provider_is_normalised_to_lowercase() -> None:
    b = run([call(provider="WeChatPay"), note(provider="ALIPAY")])
    assert s(b, b.calls.provider[0]) == "wechatpay"
    assert s(b, b.notifications.provider[0]) == "alipay"


def test_unknown_keys_are_ignored() -> None:
    assert run([call(some_future_field={"x": [1, 2]})]).accepted == 1


def test_integer_provider_code_and_zero_http_status_are_accepted() -> None:
    ev = call(outcome="failure", provider="alipay", provider_code=20000, http_status=0)
    b = run([ev])
    assert b.calls.error_class[0] == ERROR_CLASS_INDEX["provider_error"]


def test_failed_call_without_error_class_is_classified() -> None:
    deadline = 'Post "https://api": context deadline exceeded'
    evs = [
        call(outcome="failure", provider_code="SIGN_ERROR", http_status=401),
        call(outcome="unknown", http_status=None, transport_error=deadline),
        call(outcome="failure", provider="paypal", http_status=429),
        call(outcome="failure", provider="alipay", provider_code="40004",
             provider_sub_code="ACQ.SYSTEM_ERROR", http_status=200),
    ]  # fmt: skip
    ec = run(evs).calls.error_class.tolist()
    assert ec == [
        ERROR_CLASS_INDEX["signature"],
        ERROR_CLASS_INDEX["timeout"],
        ERROR_CLASS_INDEX["rate_limited"],
        ERROR_CLASS_INDEX["provider_error"],
    ]


def test_given_error_class_is_kept_and_unknown_outcome_is_not_assumed_timeout() -> None:
    evs = [
        call(outcome="failure", error_class="business_decline", http_status=500),
        call(outcome="unknown", http_status=_MISSING),
        call(outcome="success", http_status=500),  # only failed calls are classified
    ]
    ec = run(evs).calls.error_class.tolist()
    assert ec == [ERROR_CLASS_INDEX["business_decline"], -1, -1]


def test_all_operations_and_outcomes_accepted() -> None:
    evs = [call(operation=op, outcome=oc) for op in OPERATIONS for oc in OUTCOME_INDEX]
    assert run(evs).accepted == len(evs)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        (None, "empty record"),
        (b"", "empty record"),
        (b"not json", "not valid JSON"),
        (b'{"a": 1', "not valid JSON"),
        (b'{"latency_ms": NaN}', "not valid JSON"),
        (b'{"latency_ms": 1e400}', "not valid JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'{"service": "caf\xe9"}', "not valid UTF-8"),
        (b"[1, 2]", "JSON array, not an object"),
        (b'"event"', "JSON string, not an object"),
        (b"null", "JSON null, not an object"),
        (b"42", "JSON number, not an object"),
    ],
)
def test_undecodable_records(raw: bytes | None, reason_part: str) -> None:
    r = one_reject(raw)
    assert reason_part in r.reason
    assert r.field is None
    assert r.raw == (raw or b"")
    assert r.source == Source("payments.events", 0, 1000)


def test_non_bytes_value_is_rejected_not_raised() -> None:
    r = one_reject(12345)
    assert "not bytes" in r.reason


M = _MISSING
BAD_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # (case id, event, field, reason fragment)
    ("sv-missing", call(schema_version=M), "schema_version", "missing required field"),
    ("sv-2", call(schema_version=2), "schema_version", "unsupported schema_version 2"),
    ("sv-str", call(schema_version="1"), "schema_version", "unsupported schema_version"),
    ("sv-bool", call(schema_version=True), "schema_version", "unsupported schema_version"),
    ("sv-float", call(schema_version=1.0), "schema_version", "unsupported schema_version"),
    ("et-missing", call(event_type=M), "event_type", "missing required field"),
    ("et-unknown", call(event_type="refund"), "event_type", "unknown event_type"),
    ("et-int", call(event_type=3), "event_type", "unknown event_type"),
    ("id-missing", call(event_id=M), "event_id", "missing required field"),
    ("id-empty", call(event_id=""), "event_id", "non-empty string"),
    ("id-int", call(event_id=7), "event_id", "non-empty string"),
    ("ts-missing", call(event_ts=M), "event_ts", "missing required field"),
    ("ts-null", call(event_ts=None), "event_ts", "missing required field"),
    ("ts-str", call(event_ts="2026-01-01"), "event_ts", "must be an integer"),
    ("ts-float", call(event_ts=float(T0)), "event_ts", "must be an integer"),
    ("ts-bool", call(event_ts=True), "event_ts", "must be an integer"),
    ("ts-seconds", call(event_ts=T0 // 1000), "event_ts", "looks like seconds"),
    ("ts-1970", call(event_ts=5), "event_ts", "outside 2000-01-01..2100-01-01"),
    ("ts-2200", call(event_ts=7_258_118_400_000), "event_ts", "outside 2000-01-01..2100-01-01"),
    ("ts-neg", call(event_ts=-T0), "event_ts", "outside"),
    ("service-missing", call(service=M), "service", "missing required field"),
    ("env-int", call(env=3), "env", "must be a string"),
    ("host-list", note(host=["a"]), "host", "must be a string"),
    ("provider-missing", call(provider=M), "provider", "missing required field"),
    ("provider-int", call(provider=1), "provider", "non-empty string"),
    ("merchant-missing", call(merchant_id=M), "merchant_id", "missing required field"),
    ("operation-bad", call(operation="pay"), "operation", "must be one of create_payment"),
    ("operation-case", call(operation="Refund"), "operation", "must be one of"),
    ("operation-missing", call(operation=M), "operation", "missing required field"),
    ("outcome-bad", call(outcome="ok"), "outcome", "must be one of success, pending"),
    ("outcome-list", call(outcome=["success"]), "outcome", "must be one of"),
    ("latency-missing", call(latency_ms=M), "latency_ms", "missing required field"),
    ("latency-neg", call(latency_ms=-1), "latency_ms", "latency_ms must be a finite number >= 0"),
    ("latency-negf", call(latency_ms=-0.5), "latency_ms", "finite number >= 0"),
    ("latency-str", call(latency_ms="12"), "latency_ms", "finite number >= 0"),
    ("latency-bool", call(latency_ms=True), "latency_ms", "finite number >= 0"),
    ("amount-neg", call(amount_minor=-5), "amount_minor", "integer >= 0"),
    ("amount-float", call(amount_minor=19.99), "amount_minor", "integer >= 0"),
    ("amount-bool", call(amount_minor=False), "amount_minor", "integer >= 0"),
    ("amount-huge", call(amount_minor=2**63), "amount_minor", "integer >= 0"),
    ("http-999", call(http_status=999), "http_status", "100..599"),
    ("http-str", call(http_status="500"), "http_status", "100..599"),
    ("error-class-bad", call(error_class="boom"), "error_class", "must be one of provider_error"),
    ("attempt-neg", call(attempt=-1), "attempt", "integer >= 0"),
    ("sigv-str", call(signature_verified="yes"), "signature_verified", "true or false"),
    ("code-list", call(provider_code=["X"]), "provider_code", "must be a string"),
    ("transport-int", call(transport_error=5), "transport_error", "must be a string"),
    ("otn-int", call(out_trade_no=123), "out_trade_no", "must be a string"),
    ("notify-id-missing", note(notify_id=M), "notify_id", "missing required field"),
    ("notify-sig-missing", note(signature_verified=M), "signature_verified", "missing required"),
    ("notify-sig-int", note(signature_verified=1), "signature_verified", "true or false"),
    ("notify-ack-bad", note(ack_status="ok"), "ack_status", "must be one of acked, nacked"),
    ("notify-ack-missing", note(ack_status=M), "ack_status", "missing required field"),
    ("notify-merchant-missing", note(merchant_id=M), "merchant_id", "missing required field"),
    ("notify-handler-neg", note(handler_latency_ms=-2), "handler_latency_ms", "finite number >= 0"),
    ("notify-handler-str", note(handler_latency_ms="2"), "handler_latency_ms", ">= 0"),
    ("notify-dup-str", note(is_duplicate="no"), "is_duplicate", "true or false"),
    ("notify-amount-match-int", note(amount_matches=1), "amount_matches", "true or false"),
    ("notify-amount-neg", note(amount_minor=-1), "amount_minor", "integer >= 0"),
    ("notify-provider-ts-str", note(provider_ts="x"), "provider_ts", "must be an integer"),
    ("metric-name-missing", metric(name=M), "name", "missing required field"),
    ("metric-value-missing", metric(value=M), "value", "missing required field"),
    ("metric-value-str", metric(value="1"), "value", "must be a finite number"),
    ("metric-value-bool", metric(value=True), "value", "must be a finite number"),
    ("metric-kind-bad", metric(kind="summary"), "kind", "gauge or counter"),
    ("metric-labels-list", metric(labels=["a"]), "labels", "object of strings"),
    ("metric-labels-str", metric(labels="a=b"), "labels", "object of strings"),
    ("metric-labels-int-value", metric(labels={"a": 1}), "labels", "object of strings"),
    ("metric-unit-int", metric(unit=1), "unit", "must be a string"),
]


@pytest.mark.parametrize(
    ("event", "field", "reason_part"),
    [c[1:] for c in BAD_CASES],
    ids=[c[0] for c in BAD_CASES],
)
def test_bad_event_is_rejected_with_field_and_reason(
    event: dict[str, Any], field: str, reason_part: str
) -> None:
    r = one_reject(event)
    assert r.field == field
    assert reason_part in r.reason, r.reason
    assert orjson.loads(r.raw) == event  # the raw bytes are kept for the DLQ


@pytest.mark.parametrize(
    ("record", "code"),
    [
        (None, "empty"),
        (7, "not_bytes"),
        (b"\xff", "not_utf8"),
        (b"{", "not_json"),
        (b"[]", "not_object"),
        (call(service=M), "missing_field"),
        (call(schema_version=2), "schema_version"),
        (call(event_type="x"), "event_type"),
        (call(event_ts=T0 + 3 * DAY), "ts_future"),
        (call(event_ts=T0 - 9 * DAY), "ts_past"),
        (call(event_ts=5), "ts_range"),
        (call(outcome="ok"), "bad_enum"),
        (metric(kind="x"), "bad_enum"),
        (call(latency_ms=-3), "bad_number"),
        (call(amount_minor=-3), "bad_number"),
        (call(http_status=7), "bad_number"),
        (call(env=1), "wrong_type"),
        (note(signature_verified="y"), "wrong_type"),
        (metric(labels=[]), "wrong_type"),
    ],
)
def test_reason_codes_are_short_and_bounded(record: Any, code: str) -> None:
    r = one_reject(record, reference_ms=T0)
    assert reason_code(r) == code
    assert code in REASON_CODES


def test_every_bad_case_has_a_specific_reason_code() -> None:
    for _, event, _, _ in BAD_CASES:
        assert reason_code(one_reject(event)) != "other"


def test_garbage_collector_state_is_restored() -> None:
    import gc

    run([call()])
    assert gc.isenabled()
    gc.disable()
    try:
        run([call(), b"x"])
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_reasons_stay_short_whatever_the_value() -> None:
    r = one_reject(metric(labels={"k" * 10_000: 5}))
    assert r.field == "labels" and len(r.reason) < 150
    r = one_reject(call(operation="x" * 10_000))
    assert r.field == "operation" and len(r.reason) < 300


def test_unknown_event_type_is_reported_before_other_fields() -> None:
    r = one_reject({"schema_version": 1, "event_type": "refund_call", "event_id": "x"})
    assert r.field == "event_type"
    assert 'unknown event_type "refund_call"' in r.reason


def test_rejections_keep_input_order_and_sources() -> None:
    batch = run([b"x", call(), call(latency_ms=-1), note(), b"y", metric(value="v")])
    assert batch.accepted == 2
    assert [r.source.partition for r in batch.rejected] == [0, 2, 4, 5]
    assert [r.source.offset for r in batch.rejected] == [1000, 1002, 1004, 1005]


def test_timestamps_far_from_the_reference_clock() -> None:
    evs = [
        call(event_ts=T0),
        call(event_ts=T0 + 2 * DAY),  # 2 days ahead: rejected (limit 24 h)
        call(event_ts=T0 + 23 * 3_600_000),  # within 24 h
        note(event_ts=T0 - 8 * DAY),  # 8 days behind: rejected (limit 7 d)
        metric(event_ts=T0 - 6 * DAY),
    ]
    b = run(evs, reference_ms=T0)
    assert b.accepted == 3
    reasons = {r.source.partition: (r.field, r.reason) for r in b.rejected}
    assert reasons[1] == ("event_ts", "event_ts is 2.0 d ahead of the stream clock (limit 24.0 h)")
    assert reasons[3] == ("event_ts", "event_ts is 8.0 d behind the stream clock (limit 7.0 d)")
    assert b.calls.ts.tolist() == [T0, T0 + 23 * 3_600_000]


def test_limits_are_configurable() -> None:
    b = run([call(event_ts=T0 + 5 * 60_000)], reference_ms=T0, max_future_ms=60_000)
    assert b.accepted == 0 and "ahead" in b.rejected[0].reason


def test_reference_defaults_to_batch_median() -> None:
    evs = [call(event_ts=T0 + k * 1000) for k in range(5)] + [call(event_ts=T0 - 30 * DAY)]
    b = run(evs)
    assert b.accepted == 5
    assert [r.source.partition for r in b.rejected] == [5]
    assert "behind the stream clock" in b.rejected[0].reason


def test_a_whole_batch_ahead_moves_the_clock_a_few_strays_do_not() -> None:
    later = T0 + 3 * DAY  # e.g. traffic resuming after a weekend stall
    jump = run([call(event_ts=later + k) for k in range(JUMP_MIN_EVENTS)], reference_ms=T0)
    assert jump.accepted == JUMP_MIN_EVENTS
    few = run([call(event_ts=later + k) for k in range(JUMP_MIN_EVENTS - 1)], reference_ms=T0)
    assert few.accepted == 0
    mixed = [call(event_ts=T0 + k) for k in range(10)] + [call(event_ts=later)] * 9
    b = run(mixed, reference_ms=T0)
    assert b.accepted == 10 and len(b.rejected) == 9  # the majority is the clock


def test_strings_of_far_events_are_not_interned() -> None:
    b = run([call(), call(merchant_id="ghost", event_ts=T0 + 9 * DAY)], reference_ms=T0)
    assert "ghost" not in b.strings


def test_length_mismatch_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="2 values but 1 sources"):
        decode_batch([b"{}", b"{}"], [Source("t", 0, 0)])


def test_empty_batch() -> None:
    b = run([])
    assert b.accepted == 0 and b.rejected == [] and b.max_ts() is None


# --- DLQ record ----------------------------------------------------------------------------


def test_dlq_record_contract() -> None:
    r = one_reject(call(latency_ms=-1))
    rec = orjson.loads(dlq_record(r))
    assert set(rec) == {"reason", "field", "source", "raw"}
    assert rec["field"] == "latency_ms"
    assert rec["reason"] == "latency_ms must be a finite number >= 0, got -1"
    assert rec["source"] == {"topic": "payments.events", "partition": 0, "offset": 1000}
    assert orjson.loads(rec["raw"])["latency_ms"] == -1


def test_dlq_record_of_undecodable_bytes() -> None:
    rec = orjson.loads(dlq_record(one_reject(b"\xffabc")))
    assert rec["raw"] == "\ufffdabc"
    assert rec["field"] is None
    assert orjson.loads(dlq_record(one_reject(None)))["raw"] == ""


def test_dlq_raw_is_cut_to_4kib_on_a_character_boundary() -> None:
    euro = "€" * 3000  # 3 bytes each: 4096 is not a multiple of 3
    rec = orjson.loads(dlq_record(Rejected("r", None, euro.encode(), Source("t", 0, 0))))
    assert rec["raw"] == "€" * (DLQ_RAW_LIMIT // 3)
    mixed = ("a" + "é" * 3000).encode()
    raw = orjson.loads(dlq_record(Rejected("r", None, mixed, Source("t", 0, 0))))["raw"]
    assert len(raw.encode()) <= DLQ_RAW_LIMIT and "\ufffd" not in raw
    assert mixed.decode().startswith(raw) and len(raw.encode()) >= DLQ_RAW_LIMIT - 3
    short = b'{"x": "\xe2\x82"}'  # a truncated character inside a short record is replaced
    assert (
        "\ufffd" in orjson.loads(dlq_record(Rejected("r", None, short, Source("t", 0, 0))))["raw"]
    )


# --- properties ----------------------------------------------------------------------------


def check_partition(values: list[Any]) -> DecodedBatch:
    """Decode; every input must land exactly once, in a column or in `rejected`."""
    sources = [Source("p", i, i) for i in range(len(values))]
    batch = decode_batch(values, sources, reference_ms=T0)
    assert batch.accepted + len(batch.rejected) == len(values)
    seen = [
        *batch.calls.partition.tolist(),
        *batch.notifications.partition.tolist(),
        *batch.metrics.partition.tolist(),
        *(r.source.partition for r in batch.rejected),
    ]
    assert sorted(seen) == list(range(len(values)))
    for col in (batch.calls, batch.notifications, batch.metrics):
        for name in ("provider", "merchant_id", "operation", "name", "series"):
            codes = getattr(col, name, None)
            if codes is not None and len(codes):
                assert int(codes.min()) >= 0 and int(codes.max()) < len(batch.strings)
    for r in batch.rejected:
        assert r.reason and isinstance(r.reason, str) and len(r.reason) <= 300  # one line
        assert "\n" not in r.reason
        assert not r.reason.startswith("record could not be decoded"), r.reason  # no hidden bug
        assert orjson.loads(dlq_record(r))["reason"] == r.reason
    return batch


PROPS = settings(
    max_examples=int(os.environ.get("PAYWATCH_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=12,
)


@PROPS
@given(st.lists(st.one_of(st.none(), st.binary(max_size=80)), max_size=20))
def test_random_bytes_never_raise(values: list[bytes | None]) -> None:
    check_partition(values)


@PROPS
@given(st.lists(json_values, max_size=15))
def test_random_json_never_raises(docs: list[Any]) -> None:
    check_partition([orjson.dumps(d) for d in docs])


BASES = (call(), note(), metric())
FIELDS = sorted({k for b in BASES for k in b} | {"error_class", "provider_code", "value"})


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    ev = dict(draw(st.sampled_from(BASES)))
    key = draw(st.sampled_from(FIELDS))
    how = draw(st.sampled_from(("drop", "replace", "keep")))
    if how == "drop":
        ev.pop(key, None)
    elif how == "replace":
        ev[key] = draw(json_values)
    raw = orjson.dumps(ev)
    if draw(st.booleans()) and raw:  # sometimes also corrupt one byte
        pos = draw(st.integers(0, len(raw) - 1))
        raw = raw[:pos] + bytes([draw(st.integers(0, 255))]) + raw[pos + 1 :]
    return raw


@PROPS
@given(st.lists(near_valid(), max_size=15))
def test_near_valid_events_never_raise(values: list[bytes]) -> None:
    check_partition(values)


@st.composite
def valid_call(draw: st.DrawFn) -> dict[str, Any]:
    ev = call(
        event_ts=draw(st.integers(T0 - 7 * DAY, T0 + DAY)),
        provider=draw(st.sampled_from(["wechatpay", "alipay", "paypal", "unionpay"])),
        merchant_id=draw(st.text(min_size=1, max_size=8)),
        operation=draw(st.sampled_from(OPERATIONS)),
        outcome=draw(st.sampled_from(list(OUTCOME_INDEX))),
        latency_ms=draw(
            st.floats(min_value=0, max_value=1e9, allow_nan=False) | st.integers(0, 10**9)
        ),
        amount_minor=draw(st.integers(0, 2**63 - 1)),
        http_status=draw(st.none() | st.integers(100, 599)),
        provider_code=draw(st.none() | st.text(max_size=12)),
        transport_error=draw(st.none() | st.text(max_size=30)),
    )
    return ev


@PROPS
@given(st.lists(valid_call(), min_size=1, max_size=10))
def test_valid_calls_are_always_accepted_with_their_values(evs: list[dict[str, Any]]) -> None:
    b = check_partition([orjson.dumps(e) for e in evs])
    assert b.rejected == []
    c = b.calls
    assert c.ts.tolist() == [e["event_ts"] for e in evs]
    assert c.latency_ms.tolist() == [float(e["latency_ms"]) for e in evs]
    assert c.amount_minor.tolist() == [e["amount_minor"] for e in evs]
    assert [b.strings[k] for k in c.merchant_id] == [e["merchant_id"] for e in evs]
    assert [b.strings[k] for k in c.operation] == [e["operation"] for e in evs]
    assert c.outcome.tolist() == [OUTCOME_INDEX[e["outcome"]] for e in evs]
    ok = c.error_class[c.outcome < OUTCOME_INDEX["failure"]]
    assert (ok == -1).all()  # success/pending calls are never given an error class
