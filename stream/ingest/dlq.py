"""Rejected records on their way out: the DLQ JSON (DESIGN.md) and a short code per reason."""

from __future__ import annotations

import codecs

import orjson

from stream.ingest.events import Rejected

DLQ_RAW_LIMIT = 4096

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
    ("bytes long; the limit is", "too_large"),
    ("long; the limit is", "too_long"),
    ("entries; the limit is", "too_long"),
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

    >>> from stream.ingest.events import Source
    >>> reason_code(Rejected("missing required field 'service'", "service", b"", Source("t", 0, 0)))
    'missing_field'
    """
    reason = rejected.reason
    for fragment, code in _REASON_CODES:
        if fragment in reason:
            return code
    return "other"


def raw_bytes(raw: object) -> bytes:
    """A record value as the bytes a rejection keeps (b"" for None or a non-text value)."""
    if raw is None:
        return b""
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):
        return raw.encode("utf-8", "replace")
    return b""


def dlq_record(rejected: Rejected) -> bytes:
    """The DLQ JSON of one rejection (DESIGN.md): reason, field, source and raw text.

    ``raw`` is the record decoded as UTF-8 (bad bytes become U+FFFD), cut to at
    most 4 KiB of UTF-8 without splitting a character.

    >>> from stream.ingest.events import Source
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
