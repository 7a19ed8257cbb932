"""Event v1 vocabulary and the columnar batch a decoded set of Kafka records becomes.

The decoder turns raw record values into these columns so every later stage
(windows, detectors) works on numpy arrays instead of Python dicts.  String
columns are int32 codes into the batch's own string table (``DecodedBatch.strings``);
code ``-1`` means "absent".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np

SCHEMA_VERSION = 1

EVENT_TYPES = ("provider_call", "payment_notification", "metric")

OUTCOMES = ("success", "pending", "failure", "unknown")
OUTCOME_INDEX = {name: i for i, name in enumerate(OUTCOMES)}

OPERATIONS = (
    "create_payment",
    "query_payment",
    "close_payment",
    "refund",
    "query_refund",
    "capture",
    "transfer",
    "cert_fetch",
    "token_fetch",
    "other",
)

ERROR_CLASSES = (
    "provider_error",
    "rate_limited",
    "auth_config",
    "signature",
    "certificate",
    "invalid_request",
    "business_decline",
    "order_state",
    "duplicate",
    "not_found",
    "timeout",
    "network",
    "sdk_error",
)
ERROR_CLASS_INDEX = {name: i for i, name in enumerate(ERROR_CLASSES)}
NO_ERROR_CLASS = -1

# The provider or the path to it is broken: this is what pages people by default.
SYSTEM_ERROR_CLASSES = ("provider_error", "timeout", "network", "rate_limited")
# Our own side is misconfigured (keys, certificates, merchant set-up): an incident even at
# low volume.
CONFIG_ERROR_CLASSES = ("auth_config", "signature", "certificate")

ACK_STATUSES = ("acked", "nacked", "error", "late")
ACK_INDEX = {name: i for i, name in enumerate(ACK_STATUSES)}

METRIC_KINDS = ("gauge", "counter")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record came from: enough to find it again in Kafka or a file."""

    topic: str
    partition: int
    offset: int


class SourceColumns(Sequence[Source]):
    """Sources of a batch as columns: cheap to build and to pickle to a decode process.

    >>> src = SourceColumns(["t"] * 2, [0, 1], [10, 11])
    >>> src[1], len(src)
    (Source(topic='t', partition=1, offset=11), 2)
    """

    __slots__ = ("offsets", "partitions", "topics")

    def __init__(
        self, topics: list[str], partitions: Iterable[int], offsets: Iterable[int]
    ) -> None:
        self.topics = topics
        self.partitions = np.asarray(partitions, dtype=np.int32)
        self.offsets = np.asarray(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.topics)

    @overload
    def __getitem__(self, i: int) -> Source: ...
    @overload
    def __getitem__(self, i: slice) -> SourceColumns: ...
    def __getitem__(self, i: int | slice) -> Source | SourceColumns:
        if isinstance(i, slice):
            return SourceColumns(self.topics[i], self.partitions[i], self.offsets[i])
        return Source(self.topics[i], int(self.partitions[i]), int(self.offsets[i]))


@dataclass(slots=True)
class Rejected:
    """One record that could not be used, with the reason a person can act on."""

    reason: str
    field: str | None
    raw: bytes
    source: Source


def _i64(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=np.int64)


def _i32(n: int = 0) -> np.ndarray:
    return np.full(n, -1, dtype=np.int32)


@dataclass(slots=True)
class CallColumns:
    """``provider_call`` events of one batch, one array element per event."""

    ts: np.ndarray = field(default_factory=_i64)  # int64 ms event time
    provider: np.ndarray = field(default_factory=_i32)  # int32 code
    operation: np.ndarray = field(default_factory=_i32)  # int32 code
    merchant_id: np.ndarray = field(default_factory=_i32)  # int32 code
    outcome: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))  # OUTCOMES index
    error_class: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))  # -1 = none
    latency_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    amount_minor: np.ndarray = field(default_factory=_i64)  # 0 when absent
    out_trade_no: np.ndarray = field(default_factory=_i32)  # int32 code, -1 absent
    signing_key_id: np.ndarray = field(default_factory=_i32)  # int32 code, -1 absent
    partition: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    # Position of the record in the input batch: restores stream order across event types.
    seq: np.ndarray = field(default_factory=_i64)

    def __len__(self) -> int:
        return int(self.ts.shape[0])


@dataclass(slots=True)
class NotificationColumns:
    """``payment_notification`` events of one batch."""

    ts: np.ndarray = field(default_factory=_i64)
    provider: np.ndarray = field(default_factory=_i32)
    merchant_id: np.ndarray = field(default_factory=_i32)
    signature_verified: np.ndarray = field(default_factory=lambda: np.zeros(0, np.bool_))
    ack_status: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))  # ACK_STATUSES
    is_duplicate: np.ndarray = field(default_factory=lambda: np.zeros(0, np.bool_))
    amount_matches: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))  # -1 unknown
    out_trade_no: np.ndarray = field(default_factory=_i32)
    signing_key_id: np.ndarray = field(default_factory=_i32)
    handler_latency_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))  # nan
    partition: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    # Position of the record in the input batch: restores stream order across event types.
    seq: np.ndarray = field(default_factory=_i64)

    def __len__(self) -> int:
        return int(self.ts.shape[0])


@dataclass(slots=True)
class MetricColumns:
    """``metric`` events of one batch; ``series`` is the code of "name{k=v,...}"."""

    ts: np.ndarray = field(default_factory=_i64)
    name: np.ndarray = field(default_factory=_i32)
    series: np.ndarray = field(default_factory=_i32)  # canonical name + sorted labels
    value: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    partition: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    # Position of the record in the input batch: restores stream order across event types.
    seq: np.ndarray = field(default_factory=_i64)

    def __len__(self) -> int:
        return int(self.ts.shape[0])


@dataclass(slots=True)
class DecodedBatch:
    """A batch of records after decoding: valid events as columns, the rest rejected."""

    strings: list[str] = field(default_factory=list)
    calls: CallColumns = field(default_factory=CallColumns)
    notifications: NotificationColumns = field(default_factory=NotificationColumns)
    metrics: MetricColumns = field(default_factory=MetricColumns)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.calls) + len(self.notifications) + len(self.metrics)

    def max_ts(self) -> int | None:
        """Largest event time in the batch, or None when it holds no valid event."""
        parts = [c.ts for c in (self.calls, self.notifications, self.metrics) if len(c)]
        return int(max(int(p.max()) for p in parts)) if parts else None
