"""``metric`` events: the field-by-field checks and the row (layout: ``schema.METRIC_ROW``)."""

from __future__ import annotations

import math
from typing import Any

from stream.ingest.events import METRIC_KINDS
from stream.ingest.reasons import (
    BadRecord,
    check_labels,
    check_optional_strings,
    missing,
    required_str,
    show,
)
from stream.ingest.schema import METRIC_OPTIONAL_STRINGS, MetricFields, MetricRow

_METRIC_KINDS = frozenset(METRIC_KINDS)


def metric_row(e: Any, seq: int) -> MetricRow:
    """The row of a :class:`~stream.ingest.schema.MetricEvent` (or ``MetricFields``)."""
    name = e.name
    return (e.event_ts, name, metric_series(name, e.labels), e.value, seq)


def metric_series(name: str, labels: dict[str, str] | None) -> str:
    """``name``, or ``name{k=v,...}`` with labels sorted by key.

    >>> metric_series("cpu", {"host": "a", "az": "1"}), metric_series("cpu", None)
    ('cpu{az=1,host=a}', 'cpu')
    """
    if not labels:
        return name
    return name + "{" + ",".join(f"{k}={labels[k]}" for k in sorted(labels)) + "}"


def checked_metric(d: dict[str, Any]) -> Any:
    """A ``metric`` whose envelope passed, checked field by field.

    Raises :class:`BadRecord` for the first broken rule; otherwise returns the
    fields :func:`metric_row` reads as a ``MetricFields``.
    """
    get = d.get
    name = required_str(d, "name")
    value: Any = get("value")
    t = type(value)
    if t is int:
        value = float(value)
    elif t is not float or not -math.inf < value < math.inf:
        if value is None:
            raise missing("value")
        raise BadRecord("value", f"value must be a finite number, got {show(value)}")
    check_optional_strings(d, METRIC_OPTIONAL_STRINGS)
    kind = get("kind")
    if kind is not None and (type(kind) is not str or kind not in _METRIC_KINDS):
        raise BadRecord("kind", f"kind must be gauge or counter, got {show(kind)}")
    labels = get("labels")
    if labels is not None:
        if type(labels) is not dict:
            raise BadRecord("labels", f"labels must be an object of strings, got {show(labels)}")
        for k, v in labels.items():
            if type(v) is not str:
                raise BadRecord(
                    "labels", f"labels must be an object of strings; {show(k)} is {show(v)}"
                )
        check_labels(labels)
    return MetricFields(event_ts=d["event_ts"], name=name, labels=labels, value=value)
