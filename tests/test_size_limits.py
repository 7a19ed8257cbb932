"""Valid JSON that is absurd in size: every string field has a limit, a record has one too,
and both decode paths and docs/events.schema.json agree on each of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.ingest import decode as decode_module
from stream.ingest.decode import decode_batch
from stream.ingest.dlq import dlq_record, reason_code
from stream.ingest.events import Source
from stream.ingest.schema import LABELS_MAX, RECORD_MAX_BYTES, STRING_LIMITS
from tests.test_decode import call, metric, note
from tests.test_events_schema import STRICT

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "docs" / "events.schema.json").read_text("utf-8")
)
SOURCE = Source("payments.events", 2, 77)
BUILDERS = {"provider_call": call, "payment_notification": note, "metric": metric}


def _string_fields() -> list[tuple[str, str]]:
    """(event_type, field) for every string field the schema lists."""
    out = []
    for event_type in BUILDERS:
        props = {**SCHEMA["properties"], **SCHEMA["$defs"][event_type]["properties"]}
        for f, spec in props.items():
            t = spec.get("type")
            if "string" in (t if isinstance(t, list) else [t]):
                out.append((event_type, f))
    return out


STRING_FIELDS = _string_fields()


def _decode(raw: bytes, fast: bool) -> list[Any]:
    saved = decode_module._FAST_DECODE
    if not fast:
        decode_module._FAST_DECODE = None
    try:
        return decode_batch([raw], [SOURCE]).rejected
    finally:
        decode_module._FAST_DECODE = saved


def test_every_string_field_of_the_schema_has_the_decoders_limit() -> None:
    assert len(STRING_FIELDS) > 30
    for event_type, f in STRING_FIELDS:
        props = {**SCHEMA["properties"], **SCHEMA["$defs"][event_type]["properties"]}
        assert props[f]["maxLength"] == STRING_LIMITS[f], f


@pytest.mark.parametrize(("event_type", "field"), STRING_FIELDS)
@pytest.mark.parametrize("fast", [True, False])
def test_a_field_at_its_limit_passes_and_one_character_more_is_rejected_naming_it(
    event_type: str, field: str, fast: bool
) -> None:
    limit = STRING_LIMITS[field]
    # "é" is two bytes of UTF-8 but one character: limits count characters, as the schema.
    at = BUILDERS[event_type](**{field: "é" * limit})
    over = BUILDERS[event_type](**{field: "é" * (limit + 1)})
    assert STRICT.is_valid(at) and not STRICT.is_valid(over)
    assert _decode(orjson.dumps(at), fast) == []
    (rej,) = _decode(orjson.dumps(over), fast)
    assert (rej.field, rej.reason) == (
        field,
        f"{field} is {limit + 1:,} characters long; the limit is {limit:,}",
    )
    assert reason_code(rej) == "too_long"


@pytest.mark.parametrize("fast", [True, False])
def test_a_600kb_merchant_id_goes_to_the_dlq_with_the_field_and_the_limit(fast: bool) -> None:
    raw = orjson.dumps(call(merchant_id="m" * 600_000, outcome="failure"))
    (rej,) = _decode(raw, fast)
    assert rej.reason == "merchant_id is 600,000 characters long; the limit is 256"
    dlq = orjson.loads(dlq_record(rej))
    assert dlq["field"] == "merchant_id" and dlq["source"]["offset"] == 77
    assert len(dlq_record(rej)) < 5_000  # the raw text is cut to 4 KiB


@pytest.mark.parametrize("fast", [True, False])
def test_labels_are_bounded_in_number_and_size(fast: bool) -> None:
    many = {f"k{i}": "v" for i in range(LABELS_MAX + 1)}
    assert not STRICT.is_valid(metric(labels=many))
    (rej,) = _decode(orjson.dumps(metric(labels=many)), fast)
    assert rej.reason == f"labels has {LABELS_MAX + 1} entries; the limit is {LABELS_MAX}"
    long_key = metric(labels={"k" * 65: "v"})
    assert not STRICT.is_valid(long_key)
    (rej,) = _decode(orjson.dumps(long_key), fast)
    assert rej.field == "labels" and "the limit is 64" in rej.reason
    fine = metric(labels={f"k{i}": "v" * 256 for i in range(LABELS_MAX)})
    assert STRICT.is_valid(fine) and _decode(orjson.dumps(fine), fast) == []


@pytest.mark.parametrize("fast", [True, False])
def test_a_record_over_64_kib_is_rejected_whatever_makes_it_big(fast: bool) -> None:
    big = orjson.dumps(call(notes="x" * RECORD_MAX_BYTES))  # an unknown field: allowed, ignored
    (rej,) = _decode(big, fast)
    assert rej.field is None
    assert rej.reason == f"record is {len(big):,} bytes long; the limit is 65,536 bytes"
    assert reason_code(rej) == "too_large"
    # A field over its own limit is named even when the record is too big as well.
    (rej,) = _decode(orjson.dumps(call(transport_error="t" * 100_000)), fast)
    assert rej.field == "transport_error"
    ok = orjson.dumps(call(notes="x" * (RECORD_MAX_BYTES - 600)))
    assert len(ok) <= RECORD_MAX_BYTES and _decode(ok, fast) == []
