"""decode_batch's msgspec fast path gives exactly what its orjson path gives, record for record.

The orjson path (``stream.ingest.decode._FAST_DECODE = None``) is the reference: it holds every
reason text.  Each test decodes the same batch both ways and compares every column bit for
bit, the string table, and every rejection.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stream.ingest.decode as decode_mod
from stream.ingest.decode import decode_batch
from stream.ingest.events import DecodedBatch, Source
from stream.ingest.schema import CALL_OPTIONAL_STRINGS, NOTIFICATION_OPTIONAL_STRINGS
from stream.sim.simulate import Incident, SimConfig, simulate

T0 = 1_767_225_600_000


@contextmanager
def counting_fast_path() -> Iterator[list[int]]:
    """Count the records the fast decoder accepted (it raises for the rest)."""
    real = decode_mod._FAST_DECODE
    assert real is not None
    hits = [0]

    def counted(raw: bytes) -> Any:
        out = real(raw)
        hits[0] += 1
        return out

    decode_mod._FAST_DECODE = counted
    try:
        yield hits
    finally:
        decode_mod._FAST_DECODE = real


def decode_both(values: list[Any], **kw: Any) -> tuple[DecodedBatch, DecodedBatch, int]:
    sources = [Source("t", i % 3, 100 + i) for i in range(len(values))]
    with counting_fast_path() as hits:
        fast = decode_batch(values, sources, **kw)
    real = decode_mod._FAST_DECODE
    decode_mod._FAST_DECODE = None
    try:
        slow = decode_batch(values, sources, **kw)
    finally:
        decode_mod._FAST_DECODE = real
    return fast, slow, hits[0]


def assert_same(a: DecodedBatch, b: DecodedBatch) -> None:
    assert a.strings == b.strings
    assert a.rejected == b.rejected
    for kind in ("calls", "notifications", "metrics"):
        ca, cb = getattr(a, kind), getattr(b, kind)
        for name in ca.__slots__:
            x, y = getattr(ca, name), getattr(cb, name)
            # Bytes, not values: -0.0 vs 0.0 and NaN must match too.
            assert (x.dtype, x.shape, x.tobytes()) == (y.dtype, y.shape, y.tobytes()), (kind, name)


def realistic(seed: int, duration_s: float) -> list[bytes]:
    cfg = SimConfig(
        seed=seed,
        start_ms=T0,
        duration_s=duration_s,
        rate=40.0,
        merchants=50,
        daily=False,
        incidents=[
            Incident("provider_outage", 5, 20, provider="alipay"),
            Incident("merchant_misconfig", 10, 20, merchant_id="M1001"),
            Incident("latency_degradation", 30, 20, provider="wechatpay"),
        ],
    )
    return [orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY) for ev in simulate(cfg)]


def test_realistic_stream_takes_the_fast_path_and_decodes_identically() -> None:
    values = realistic(3, 60)
    fast, slow, hits = decode_both(values)
    assert_same(fast, slow)
    assert fast.rejected == []
    assert len(fast.calls) > 1000 and len(fast.notifications) > 100 and len(fast.metrics) > 0
    # Failed calls without error_class get one from the taxonomy on the fast path too.
    assert (fast.calls.error_class >= 0).sum() > 10
    assert hits == len(values)  # every contract-following record went the fast way


# Raw JSON texts that msgspec and orjson read differently unless the fast path guards them.
EDGE_VALUES = [
    b"null",
    b"true",
    b"false",
    b"0",
    b"-0",
    b"-1",
    b"42",
    b"99",
    b"100",
    b"599",
    b"600",
    b"1.0",
    b"-0.0",
    b"1e400",
    b"1e-400",
    b"1" + b"0" * 400,
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"946684799",
    b"1767225600",
    b"1767225600000",
    b"4102444800000",
    b'""',
    b'"x"',
    b'"WeChatPay"',
    b'"failure"',
    b'"timeout"',
    b'"gauge"',
    b'"\\u00e9"',
    b'"\\ud800"',
    b'"\xff"',
    b'"a\x01b"',
    b"[]",
    b"{}",
    b'{"a":"b","c":"d"}',
    b'{"a":1}',
    b'{"a":"b","a":"c"}',
]

BASE_CALL: dict[str, Any] = {
    "schema_version": 1,
    "event_type": "provider_call",
    "event_id": "c",
    "event_ts": T0,
    "service": "s",
    "provider": "alipay",
    "merchant_id": "m",
    "operation": "create_payment",
    "outcome": "failure",
    "latency_ms": 12.5,
    "http_status": 200,
    "provider_code": "40004",
    "provider_sub_code": "ACQ.SYSTEM_ERROR",
}
BASE_NOTE: dict[str, Any] = {
    "schema_version": 1,
    "event_type": "payment_notification",
    "event_id": "n",
    "event_ts": T0,
    "service": "s",
    "provider": "wechatpay",
    "merchant_id": "m",
    "notify_id": "x",
    "signature_verified": True,
    "ack_status": "acked",
    "handler_latency_ms": 3,
    "amount_matches": False,
    "clock_skew_ms": -5,
}
BASE_METRIC: dict[str, Any] = {
    "schema_version": 1,
    "event_type": "metric",
    "event_id": "m",
    "event_ts": T0,
    "service": "s",
    "name": "cpu",
    "value": 1,
    "labels": {"b": "2", "a": "1"},
}
BASES = (BASE_CALL, BASE_NOTE, BASE_METRIC)
FIELDS = sorted(
    {k for b in BASES for k in b}
    | set(CALL_OPTIONAL_STRINGS)
    | set(NOTIFICATION_OPTIONAL_STRINGS)
    | {"amount_minor", "attempt", "error_class", "is_duplicate", "kind", "unit", "provider_ts"}
    | {"signature_verified", "transport_error", "zzz_unknown"}
)


def with_raw(ev: dict[str, Any], key: str, text: bytes) -> bytes:
    """``ev`` as JSON with ``key`` set to raw JSON ``text`` (added last, or duplicated)."""
    body = orjson.dumps({k: v for k, v in ev.items() if k != key})
    return body[:-1] + b"," + orjson.dumps(key) + b":" + text + b"}"


def _parses(text: bytes) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


PARSED = [orjson.loads(t) for t in EDGE_VALUES if _parses(t)]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    ev = dict(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()):
            ev.pop(key, None)
        else:
            ev[key] = draw(st.sampled_from(PARSED))
    if draw(st.booleans()):  # a raw value, maybe unparsable, maybe a second copy of a key
        return with_raw(ev, draw(st.sampled_from(FIELDS)), draw(st.sampled_from(EDGE_VALUES)))
    return orjson.dumps(ev)


PROPS = settings(
    max_examples=int(os.environ.get("PAYWATCH_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPS
@given(st.lists(mutated(), max_size=12))
def test_mutated_records_decode_identically(values: list[bytes]) -> None:
    fast, slow, _ = decode_both(values)
    assert_same(fast, slow)


@PROPS
@given(st.lists(st.one_of(st.none(), st.binary(max_size=60), st.text(max_size=30)), max_size=8))
def test_arbitrary_inputs_decode_identically(values: list[Any]) -> None:
    fast, slow, _ = decode_both(values)
    assert_same(fast, slow)


@pytest.mark.parametrize("text", EDGE_VALUES, ids=lambda t: t.decode("latin-1")[:24])
def test_each_edge_value_in_each_field_decodes_identically(text: bytes) -> None:
    values = [with_raw(base, key, text) for base in BASES for key in FIELDS]
    fast, slow, _ = decode_both([*values, orjson.dumps(BASE_CALL)])
    assert_same(fast, slow)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event_type":"metric","event_type":"provider_call"' + orjson.dumps(BASE_CALL)[1:],
        orjson.dumps(BASE_CALL)[:-1] + b',"event_type":"metric"}',
        b"\xef\xbb\xbf" + orjson.dumps(BASE_CALL),
        b" \n" + orjson.dumps(BASE_NOTE) + b"\n",
        orjson.dumps(BASE_CALL) + b"\x00",
        orjson.dumps(BASE_METRIC)[:-1] + b',"zzz":' + b"[" * 2000 + b"]" * 2000 + b"}",
        orjson.dumps({**BASE_CALL, "ev\u00e9nt": "\u6d4b\u8bd5"}),
        bytearray(orjson.dumps(BASE_CALL)),
        memoryview(orjson.dumps(BASE_NOTE)),
        orjson.dumps(BASE_METRIC).decode(),
    ],
)
def test_odd_but_whole_records_decode_identically(raw: Any) -> None:
    fast, slow, _ = decode_both([raw, orjson.dumps(BASE_NOTE)])
    assert_same(fast, slow)


def test_fast_path_obeys_the_stream_clock_rules() -> None:
    values = realistic(5, 20)
    values.insert(7, orjson.dumps({**BASE_CALL, "event_ts": T0 + 30 * 86_400_000}))
    for kw in ({}, {"reference_ms": T0 + 3 * 86_400_000}, {"reference_ms": T0 - 86_400_000}):
        fast, slow, _ = decode_both(values, **kw)
        assert_same(fast, slow)
        assert any("stream clock" in r.reason for r in fast.rejected)


def test_an_exception_inside_the_fast_path_falls_back_to_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A taxonomy that raises is a decoder bug: the record is rejected, the worker goes on."""

    class Broken:
        def classify(self, *a: Any) -> str | None:
            raise RuntimeError("boom")

    values = [orjson.dumps(BASE_CALL), orjson.dumps({**BASE_CALL, "outcome": "success"})]
    fast, slow, _ = decode_both(values, taxonomy=Broken())
    assert_same(fast, slow)
    assert [r.reason for r in fast.rejected] == ["record could not be decoded (RuntimeError: boom)"]
    assert len(fast.calls) == 1
