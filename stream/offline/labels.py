"""Labelled incidents from a file (JSON or CSV), for scoring with :mod:`models.incidents`.

Labels JSON is the simulator's ``write_labels`` format, a list of
``{kind, start_ms, end_ms, series, is_incident, ...}``.  Labels CSV has the
columns ``start,end,series`` (and optionally ``kind``, ``is_incident``), times
ISO or epoch milliseconds, series ``provider=alipay;merchant_id=M1002``.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson


class LabelsError(ValueError):
    """A labels file that cannot be read; the message names the file and the row."""


def parse_series(text: str) -> dict[str, str]:
    """``provider=alipay;merchant_id=M1002`` as a dict (``,`` separates too).

    >>> parse_series("provider=alipay;merchant_id=M1002")
    {'provider': 'alipay', 'merchant_id': 'M1002'}
    """
    out: dict[str, str] = {}
    for part in text.replace(",", ";").split(";"):
        part = part.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"series {text!r}: expected dimension=value;dimension=value")
        out[key.strip()] = value.strip()
    return out


def parse_time_ms(text: str) -> int:
    """ISO time (naive = UTC) or epoch milliseconds (a number below 1e11 is seconds).

    >>> parse_time_ms("2026-01-01T00:00:00Z"), parse_time_ms("1767225600000")
    (1767225600000, 1767225600000)
    """
    t = text.strip()
    try:
        num = float(t)
    except ValueError:
        try:
            dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"time {text!r}: expected ISO (2026-01-01T10:00:00Z) or epoch ms"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return round(dt.timestamp() * 1000)
    return round(num if num > 1e11 else num * 1000)


def _truthy(text: str) -> bool:
    return text.strip().lower() not in ("0", "false", "no", "n", "")


def read_labels(path: str | Path) -> list[dict[str, Any]]:
    """Incidents from a labels file (JSON list or CSV), oldest first."""
    p = Path(path)
    raw = p.read_bytes()
    if p.suffix.lower() == ".csv" or raw.lstrip()[:1] not in (b"[", b"{"):
        out = _read_csv(p, raw.decode("utf-8-sig"))
    else:
        out = _read_json(p, raw)
    return sorted(out, key=lambda lab: (lab["start_ms"], lab["end_ms"]))


def _read_json(p: Path, raw: bytes) -> list[dict[str, Any]]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise LabelsError(f"{p}: not valid JSON ({exc})") from None
    if isinstance(data, dict):
        data = data.get("incidents", data.get("labels"))
    if not isinstance(data, list):
        raise LabelsError(f"{p}: expected a JSON list of incidents")
    out = []
    for i, item in enumerate(data):
        where = f"{p}: incident {i + 1}"
        if not isinstance(item, dict):
            raise LabelsError(f"{where}: expected an object")
        try:
            start = item["start_ms"] if "start_ms" in item else parse_time_ms(str(item["start"]))
            end = item["end_ms"] if "end_ms" in item else parse_time_ms(str(item["end"]))
            series = item.get("series", {})
            if isinstance(series, str):
                series = parse_series(series)
        except KeyError as exc:
            raise LabelsError(f"{where}: missing {exc.args[0]!r}") from None
        except ValueError as exc:
            raise LabelsError(f"{where}: {exc}") from None
        lab = _label(where, item.get("kind"), start, end, series, item.get("is_incident"))
        if isinstance(item.get("truth"), dict):  # the simulator's true parameters (oracle)
            lab["truth"] = item["truth"]
        out.append(lab)
    return out


def _read_csv(p: Path, text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(text.splitlines())
    cols = {c.strip().lower() for c in reader.fieldnames or []}
    if not {"start", "end", "series"} <= cols:
        raise LabelsError(f"{p}: expected a CSV header with start,end,series (got {sorted(cols)})")
    out = []
    for n, row in enumerate(reader, start=2):
        row = {k.strip().lower(): (v or "") for k, v in row.items() if k}
        where = f"{p}: line {n}"
        try:
            start, end = parse_time_ms(row["start"]), parse_time_ms(row["end"])
            series = parse_series(row["series"])
        except ValueError as exc:
            raise LabelsError(f"{where}: {exc}") from None
        inc = _truthy(row["is_incident"]) if row.get("is_incident", "").strip() else None
        out.append(_label(where, row.get("kind") or None, start, end, series, inc))
    return out


def _label(
    where: str, kind: Any, start: Any, end: Any, series: Any, is_incident: Any
) -> dict[str, Any]:
    if not isinstance(start, int) or not isinstance(end, int) or end < start:
        raise LabelsError(f"{where}: start and end must be times with end >= start")
    if not isinstance(series, dict) or not all(isinstance(v, str) for v in series.values()):
        raise LabelsError(f"{where}: series must map dimensions to strings")
    return {
        "kind": str(kind) if kind else "incident",
        "start_ms": start,
        "end_ms": end,
        "series": series,
        "is_incident": True if is_incident is None else bool(is_incident),
    }
