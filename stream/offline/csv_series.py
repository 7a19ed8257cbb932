"""Offline replay of one metric series from a ``timestamp,value`` CSV (``paywatch backtest``).

The series runs through ``models.metric.MetricDetector`` in file order; scores go to
``--scores-out`` (one row per input row) and alert v1 records to ``--alerts-out``.
An empty value (or ``nan``, ``null``, ``NA``, ``None``) is a gap in the data: the row
is kept, scores 0, is not learnt, and neither opens nor resolves an alert.
Everything is derived from event time, so the same file always gives the same output.
"""

from __future__ import annotations

import csv
import math
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from models.metric import DEFAULT_THRESHOLD, MetricDetector
from stream.judge.judgement import alert_id, fingerprint

RULE = "metric_anomaly"
SIGNAL = "metric"
# Consecutive rows below the threshold before an episode is resolved.
RESOLVE_AFTER = 12
# Rows behind the "expected" value (rolling median) reported in alerts.
EXPECTED_WINDOW = 100
# Value spellings read as a gap in the data (compared lower-case, stripped).
MISSING = frozenset({"", "nan", "null", "na", "n/a", "none"})


def parse_timestamp(text: str) -> float:
    """Event time in epoch seconds; naive times are UTC, bare numbers are epoch s (or ms).

    >>> parse_timestamp("2014-04-01 00:00:00"), parse_timestamp("2014-04-01T00:00:00Z")
    (1396310400.0, 1396310400.0)
    >>> parse_timestamp("1396310400000")
    1396310400.0
    """
    t = text.strip()
    try:
        num = float(t)
    except ValueError:
        dt = datetime.fromisoformat(t)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    if not math.isfinite(num):
        raise ValueError(f"timestamp {text!r} is not finite")
    return num / 1000.0 if num > 1e11 else num


def read_metric_csv(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read a ``timestamp,value`` CSV: timestamps verbatim, values as float64, NaN
    where the value is missing (an empty field or one of ``MISSING``).

    Raises ValueError with one line naming the file and line of the first bad row.
    """
    p = Path(path)
    try:
        fh = p.open(newline="", encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{p}: cannot open ({e.strerror or e})") from None
    timestamps: list[str] = []
    values: list[float] = []
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{p}: empty file, expected a 'timestamp,value' header")
            if [h.strip().lower() for h in header] != ["timestamp", "value"]:
                raise ValueError(
                    f"{p}:1: header is {','.join(header)!r}, expected 'timestamp,value'"
                )
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) != 2:
                    raise ValueError(f"{p}:{line}: expected 2 columns, got {len(row)}")
                ts, raw = row
                try:
                    parse_timestamp(ts)
                except ValueError:
                    raise ValueError(f"{p}:{line}: bad timestamp {ts!r}") from None
                if raw.strip().lower() in MISSING:
                    timestamps.append(ts)
                    values.append(math.nan)
                    continue
                try:
                    v = float(raw)
                except ValueError:
                    raise ValueError(f"{p}:{line}: value {raw!r} is not a number") from None
                if not math.isfinite(v):
                    raise ValueError(f"{p}:{line}: value {raw!r} is not finite")
                timestamps.append(ts)
                values.append(v)
        except UnicodeDecodeError:
            raise ValueError(f"{p}: not UTF-8 text") from None
        except csv.Error as e:
            raise ValueError(f"{p}:{reader.line_num}: {e}") from None
    if not timestamps:
        raise ValueError(f"{p}: no data rows after the header")
    return timestamps, np.asarray(values, dtype=np.float64)


def _alert(
    status: str,
    series: dict[str, str],
    started_ms: int,
    window_end_ms: int,
    value: float,
    expected: float,
    score: float,
    summary: str,
    severity: str,
) -> dict[str, Any]:
    fp = fingerprint(RULE, series)  # the same ids as the event pipeline's lifecycle
    return {
        "schema_version": 1,
        "alert_id": alert_id(fp, started_ms),
        "fingerprint": fp,
        "status": status,
        "severity": severity,
        "rule": RULE,
        "signal": SIGNAL,
        "series": series,
        "started_at": started_ms,
        "resolved_at": window_end_ms if status == "resolved" else None,
        "window_end": window_end_ms,
        # Offline: no wall clock, so replays are byte-identical.
        "detected_at": window_end_ms,
        "value": value,
        "expected": expected,
        "score": score,
        "summary": summary,
        "hints": [],
    }


def score_series(values: np.ndarray, detector: MetricDetector | None = None) -> np.ndarray:
    """Scores of ``values`` in order (score, then learn, as a live stream would); NaN is
    a missing value (score 0, not learnt)."""
    det = detector if detector is not None else MetricDetector()
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values.tolist()):
        x = {"value": v}
        out[i] = det.score_one(x)
        det.learn_one(x)
    return out


def backtest_csv(
    input_path: str | Path,
    scores_out: Path | None,
    alerts_out: Path | None,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """Replay one CSV series through the metric detector; write scores and alerts.

    Returns a summary: rows, alerts fired, threshold, max score and run time.
    """
    t0 = time.perf_counter()
    path = Path(input_path)
    timestamps, values = read_metric_csv(path)
    scores, episodes = _replay(path.stem, timestamps, values, threshold)
    if scores_out is not None:
        _write_scores(Path(scores_out), timestamps, values, scores, episodes.flags)
    if alerts_out is not None:
        with Path(alerts_out).open("wb") as fb:
            for rec in episodes.alerts:
                fb.write(orjson.dumps(rec) + b"\n")
    return {
        "input": str(path),
        "rows": len(values),
        "threshold": threshold,
        "missing_values": int(np.isnan(values).sum()),
        "alerts_fired": sum(1 for a in episodes.alerts if a["status"] == "firing"),
        "max_score": float(scores.max()) if len(scores) else 0.0,
        "seconds": round(time.perf_counter() - t0, 3),
    }


class _Episodes:
    """Alert episodes of one series: one fires when a row scores at the threshold, and
    resolves after ``RESOLVE_AFTER`` rows in a row below it."""

    def __init__(self, name: str, threshold: float, rows: int) -> None:
        self.name, self.threshold = name, threshold
        self.series = {"metric": name}
        self.alerts: list[dict[str, Any]] = []
        self.flags = np.zeros(rows, dtype=np.int8)  # 1 where the row scored at the threshold
        self.open_start: int | None = None
        self.severity = "warning"
        self.below = 0

    def row(self, i: int, t_ms: int, v: float, expected: float, s: float) -> None:
        if math.isnan(v):
            return  # a gap in the data says nothing about the episode
        if s >= self.threshold:
            self.flags[i] = 1
            self.below = 0
            if self.open_start is None:
                self.open_start = t_ms
                # The episode keeps the severity it fired with.
                self.severity = "critical" if s >= 0.9 else "warning"
                summary = (
                    f"{self.name}: {v:.6g} is unusual (expected ~{expected:.6g}), score {s:.2f}"
                )
                self._emit("firing", t_ms, t_ms, v, expected, s, summary)
        elif self.open_start is not None:
            self.below += 1
            if self.below >= RESOLVE_AFTER:
                summary = f"{self.name}: back to normal ({v:.6g}, expected ~{expected:.6g})"
                self._emit("resolved", self.open_start, t_ms, v, expected, s, summary)
                self.open_start, self.below = None, 0

    def _emit(
        self,
        status: str,
        start_ms: int,
        t_ms: int,
        value: float,
        expected: float,
        score: float,
        summary: str,
    ) -> None:
        self.alerts.append(
            _alert(
                status, self.series, start_ms, t_ms, value, expected, score, summary, self.severity
            )
        )


def _replay(
    name: str, timestamps: list[str], values: np.ndarray, threshold: float
) -> tuple[np.ndarray, _Episodes]:
    """Score every row (score, then learn) and follow the alert episodes it makes."""
    times_ms = [round(parse_timestamp(t) * 1000) for t in timestamps]
    det = MetricDetector()
    recent: deque[float] = deque(maxlen=EXPECTED_WINDOW)
    scores = np.empty(len(values), dtype=np.float64)
    episodes = _Episodes(name, threshold, len(values))
    for i, v in enumerate(values.tolist()):
        x = {"value": v, "timestamp": times_ms[i] / 1000.0}
        s = det.score_one(x)
        det.learn_one(x)
        scores[i] = s
        expected = float(np.median(recent)) if recent else v
        if not math.isnan(v):
            recent.append(v)
        episodes.row(i, times_ms[i], v, expected, s)
    return scores, episodes


def _write_scores(
    path: Path, timestamps: list[str], values: np.ndarray, scores: np.ndarray, flags: np.ndarray
) -> None:
    """``timestamp,value,anomaly_score,alert``, one row per input row (floats round-trip)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "value", "anomaly_score", "alert"])
        for ts, v, s, a in zip(
            timestamps, values.tolist(), scores.tolist(), flags.tolist(), strict=True
        ):
            w.writerow([ts, repr(v), repr(s), a])
