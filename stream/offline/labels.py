"""Labelled incidents: read them (JSON or CSV) and score alert records against them.

An alert episode (one ``alert_id``) matches an incident when their series can
show the same thing (no dimension disagrees: a provider roll-up can show one
merchant's incident, another provider cannot) and it fires (``window_end`` of
its first firing record, event time) between the incident's start and its end
plus a grace period (callbacks are only missed after their timeout).

Labels JSON is the simulator's ``write_labels`` format, a list of
``{kind, start_ms, end_ms, series, is_incident, ...}``.  Labels CSV has the
columns ``start,end,series`` (and optionally ``kind``, ``is_incident``), times
ISO or epoch milliseconds, series ``provider=alipay;merchant_id=M1002``.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

GRACE_MS = 180_000


class LabelsError(ValueError):
    """A labels file that cannot be read; the message names the file and the row."""


def series_matches(series: Mapping[str, str], label: Mapping[str, str]) -> bool:
    """Could an alert on ``series`` show an incident on ``label``?

    >>> series_matches({"provider": "alipay"}, {"provider": "alipay", "merchant_id": "M1"})
    True
    >>> series_matches({"provider": "paypal"}, {"provider": "alipay"})
    False
    """
    return all(series[k] == v for k, v in label.items() if k in series)


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
        out.append(_label(where, item.get("kind"), start, end, series, item.get("is_incident")))
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


def episodes(alerts: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """First firing record of each episode (severity escalations re-announce the same id)."""
    out: dict[str, Mapping[str, Any]] = {}
    for a in alerts:
        if a.get("status") == "firing":
            out.setdefault(str(a["alert_id"]), a)
    return out


@dataclass
class Detection:
    """One labelled incident and what caught it."""

    label: dict[str, Any]
    alert_ids: list[str]
    delay_s: float | None  # first matching alert's window_end - incident start


@dataclass
class LabelScore:
    detections: list[Detection] = field(default_factory=list)
    false_alerts: list[Mapping[str, Any]] = field(default_factory=list)
    promotion_alerts: int = 0  # matches to labels with is_incident false
    alerts: int = 0  # episodes
    hours: float = 0.0

    @property
    def incidents(self) -> list[Detection]:
        return [d for d in self.detections if d.label["is_incident"]]

    @property
    def detected(self) -> int:
        return sum(d.delay_s is not None for d in self.incidents)

    @property
    def recall(self) -> float:
        n = len(self.incidents)
        return self.detected / n if n else 1.0

    @property
    def precision(self) -> float:
        """Share of episodes that show a real incident (none raised: 1.0)."""
        if not self.alerts:
            return 1.0
        return (self.alerts - len(self.false_alerts) - self.promotion_alerts) / self.alerts

    @property
    def false_per_hour(self) -> float:
        bad = len(self.false_alerts) + self.promotion_alerts
        return bad / self.hours if self.hours > 0 else float(bad)

    @property
    def delays(self) -> list[float]:
        return [d.delay_s for d in self.incidents if d.delay_s is not None]

    @property
    def median_delay_s(self) -> float | None:
        return statistics.median(self.delays) if self.delays else None

    def summary_line(self) -> str:
        med = self.median_delay_s
        return (
            f"recall {self.recall:.2f} ({self.detected}/{len(self.incidents)}), "
            f"precision {self.precision:.2f}, {self.false_per_hour:.2f} false alerts/hour "
            f"over {self.hours:.1f} h, median delay " + ("-" if med is None else f"{med:.0f} s")
        )


def score_alerts(
    alerts: Iterable[Mapping[str, Any]],
    labels: Sequence[Mapping[str, Any]],
    hours: float,
    grace_ms: int = GRACE_MS,
) -> LabelScore:
    """Match alert episodes to labelled incidents (see the module docstring).

    >>> lab = {"kind": "outage", "start_ms": 0, "end_ms": 60_000,
    ...        "series": {"provider": "alipay"}, "is_incident": True}
    >>> fire = {"alert_id": "a1", "status": "firing", "series": {"provider": "alipay"},
    ...         "window_end": 20_000}
    >>> s = score_alerts([fire], [lab], hours=1.0)
    >>> s.recall, s.precision, s.detections[0].delay_s
    (1.0, 1.0, 20.0)
    """
    eps = episodes(alerts)
    res = LabelScore(alerts=len(eps), hours=hours)
    matched: set[str] = set()
    for lab in labels:
        hits = [
            e for e in eps.values()
            if series_matches(e["series"], lab["series"])
            and lab["start_ms"] <= e["window_end"] <= lab["end_ms"] + grace_ms
        ]  # fmt: skip
        ids = [str(e["alert_id"]) for e in hits]
        if not lab["is_incident"]:
            res.promotion_alerts += len(set(ids) - matched)
        matched.update(ids)
        first = min((int(e["window_end"]) for e in hits), default=None)
        delay = None if first is None else (first - int(lab["start_ms"])) / 1000
        res.detections.append(Detection(dict(lab), ids, delay))
    res.false_alerts = [e for aid, e in eps.items() if aid not in matched]
    return res
