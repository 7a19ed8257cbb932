"""docs/events.schema.json is the contract producers validate against: it must say what the
decoder does. Checked three ways: the schema is valid JSON Schema 2020-12, every event the
simulator makes (every kind of incident included) validates, and on records mutated at
random the schema accepts exactly the records the decoder accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.ingest.decode import decode_batch
from stream.ingest.events import Source
from stream.sim.simulate import SimConfig, default_incident_suite, encode, simulate

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "events.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
SOURCE = Source("payments.events", 0, 0)


def _is_json_integer(checker: Any, instance: Any) -> bool:
    # paywatch reads 1.0 as a float (the schema's $comment says so): only integer literals.
    return isinstance(instance, int) and not isinstance(instance, bool)


STRICT = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_json_integer),
)(SCHEMA)


def _schema_accepts(raw: bytes) -> bool:
    try:
        doc = json.loads(raw)
    except ValueError:
        return False
    return STRICT.is_valid(doc)


def _decoder_accepts(raw: bytes) -> bool:
    # One record per batch: the stream's clock is the record's own time, so only the
    # contract's rules (not "too far from the clock") decide.
    return not decode_batch([raw], [SOURCE]).rejected


def _sample_events() -> list[dict[str, Any]]:
    cfg = SimConfig(seed=3, duration_s=900, rate=20.0, incidents=default_incident_suite(900))
    return list(simulate(cfg))


EVENTS = _sample_events()
BY_TYPE = {
    t: [e for e in EVENTS if e["event_type"] == t]
    for t in ("provider_call", "payment_notification", "metric")
}


def test_the_schema_is_valid_json_schema_2020_12() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_every_simulated_event_validates() -> None:
    assert all(BY_TYPE.values()), "the simulator makes every event type"
    invalid = [e for e in EVENTS if not STRICT.is_valid(e)]
    assert invalid == []


@pytest.mark.parametrize("event_type", sorted(BY_TYPE))
def test_the_documented_fields_are_the_schemas(event_type: str) -> None:
    documented = (Path(__file__).resolve().parents[1] / "docs" / "events.md").read_text()
    fields = set(SCHEMA["properties"]) | set(SCHEMA["$defs"][event_type]["properties"])
    assert all(f"`{f}`" in documented for f in fields)


ODD_VALUES = st.sampled_from(
    [
        None,
        "",
        "x",
        "WeChatPay",
        "create_payment",
        "success",
        "acked",
        "gauge",
        "timeout",
        0,
        -1,
        1,
        99,
        100,
        200,
        599,
        600,
        0.0,
        1.5,
        -0.5,
        1e300,
        True,
        False,
        [],
        {},
        {"host": "a"},
        {"host": 1},
        [1],
        1_767_225_600,
        1_767_225_600_000,
        946_684_799_999,
        4_102_444_800_000,
        2**63 - 1,
        2**63,
        2**64 - 1,
        2**64,
        -(2**63),
        -(2**63) - 1,
        "1",
    ]
)


def _fields_of(event: dict[str, Any]) -> list[str]:
    own = SCHEMA["$defs"][event["event_type"]]["properties"]
    return sorted({*SCHEMA["properties"], *own, *event, "unknown_extra"})


@st.composite
def mutated_records(draw: st.DrawFn) -> bytes:
    event = dict(draw(st.sampled_from(EVENTS[:: max(1, len(EVENTS) // 400)])))
    fields = _fields_of(event)
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(fields))
        if draw(st.booleans()) and field in event:
            del event[field]
        else:
            event[field] = draw(ODD_VALUES)
    return json.dumps(event).encode()


@settings(max_examples=1500, deadline=None)
@given(mutated_records())
def test_schema_and_decoder_agree_on_mutated_records(raw: bytes) -> None:
    assert _schema_accepts(raw) == _decoder_accepts(raw), raw


def test_unchanged_simulated_records_are_accepted_by_both() -> None:
    for event in EVENTS[:: max(1, len(EVENTS) // 200)]:
        raw = encode(event)
        assert _schema_accepts(raw) and _decoder_accepts(raw)
