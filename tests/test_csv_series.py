"""CSV backtest of one metric series: scores-out and alerts-out as DESIGN.md specifies."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from models.metric import DEFAULT_THRESHOLD
from stream.offline.csv_series import backtest_csv, read_metric_csv

ALERT_FIELDS = {
    "schema_version", "alert_id", "fingerprint", "status", "severity", "rule", "signal", "series",
    "started_at", "resolved_at", "window_end", "detected_at", "value", "expected", "score",
    "summary", "hints",
}  # fmt: skip


def _series_csv(path: Path, n: int = 800, spike_at: int = 600) -> list[str]:
    rng = np.random.default_rng(5)
    t = np.arange(n)
    values = 20 + 3 * np.sin(2 * np.pi * t / 96) + rng.uniform(-0.5, 0.5, n)
    values[spike_at] = 60.0
    # Mixed but valid timestamp spellings must come back verbatim.
    stamps = [
        f"2014-04-{1 + i // 288:02d} {(i % 288) // 12:02d}:{(i % 12) * 5:02d}:00" for i in range(n)
    ]
    stamps[1] = stamps[1].replace(" ", "T") + "Z"
    with path.open("w") as fh:
        fh.write("timestamp,value\n")
        for s, v in zip(stamps, values, strict=True):
            fh.write(f"{s},{v}\n")
    return stamps


def test_scores_out_has_one_row_per_input_row_in_order(tmp_path: Path) -> None:
    src = tmp_path / "cpu_web.csv"
    stamps = _series_csv(src)
    scores, alerts = tmp_path / "scores.csv", tmp_path / "alerts.jsonl"
    summary = backtest_csv(src, scores, alerts)
    with scores.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["timestamp", "value", "anomaly_score", "alert"]
    assert [r[0] for r in rows[1:]] == stamps
    _, values = read_metric_csv(src)
    assert [float(r[1]) for r in rows[1:]] == values.tolist()
    sc = [float(r[2]) for r in rows[1:]]
    flags = [int(r[3]) for r in rows[1:]]
    assert all(0.0 <= s <= 1.0 for s in sc)
    assert flags == [int(s >= summary["threshold"]) for s in sc]
    assert flags[600] == 1 and sum(flags) == 1  # the spike, and nothing else
    assert summary["rows"] == 800 and summary["alerts_fired"] == 1
    assert summary["missing_values"] == 0


def test_empty_values_are_gaps_not_errors(tmp_path: Path) -> None:
    src = tmp_path / "cpu_web.csv"
    _series_csv(src)
    lines = src.read_text().splitlines()
    # Gaps as exporters write them: empty fields, NaN, null; one of them inside the episode.
    for row, spelling in ((100, ""), (301, "NaN"), (450, "null"), (603, "")):
        stamp = lines[row + 1].split(",")[0]
        lines[row + 1] = f"{stamp},{spelling}"
    src.write_text("\n".join(lines) + "\n")
    scores, alerts = tmp_path / "scores.csv", tmp_path / "alerts.jsonl"
    summary = backtest_csv(src, scores, alerts)
    assert summary["rows"] == 800 and summary["missing_values"] == 4
    with scores.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 800
    for i in (100, 301, 450, 603):
        assert rows[i]["value"] == "nan" and float(rows[i]["anomaly_score"]) == 0.0
    flags = [int(r["alert"]) for r in rows]
    assert flags[600] == 1 and sum(flags) == 1  # the spike is still found, and only it
    recs = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert [r["status"] for r in recs] == ["firing", "resolved"]


def test_alerts_out_is_alert_v1_firing_then_resolved_and_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "cpu_web.csv"
    _series_csv(src)
    a1, a2 = tmp_path / "a1.jsonl", tmp_path / "a2.jsonl"
    backtest_csv(src, None, a1)
    backtest_csv(src, None, a2)
    assert a1.read_bytes() == a2.read_bytes()  # replay gives byte-identical alerts
    recs = [json.loads(line) for line in a1.read_text().splitlines()]
    assert [r["status"] for r in recs] == ["firing", "resolved"]
    fire, res = recs
    for r in recs:
        assert set(r) == ALERT_FIELDS
        assert (
            r["schema_version"] == 1 and r["rule"] == "metric_anomaly" and r["signal"] == "metric"
        )
        assert r["series"] == {"metric": "cpu_web"}
        assert r["detected_at"] == r["window_end"]
        assert "\n" not in r["summary"]
    assert fire["alert_id"] == res["alert_id"] and fire["fingerprint"] == res["fingerprint"]
    # Row 600 is 2014-04-03 02:00:00 UTC.
    assert fire["started_at"] == res["started_at"] == 1396490400000
    assert fire["resolved_at"] is None and res["resolved_at"] > fire["started_at"]
    assert (
        fire["value"] == 60.0
        and 15.0 < fire["expected"] < 25.0
        and fire["score"] >= DEFAULT_THRESHOLD
    )


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("timestamp,value\n2014-04-01 00:00:00,1.0\n2014-04-01 00:05:00,abc\n", ":3: value 'abc'"),
        ("timestamp,value\n2014-04-01 00:00:00,1.0\nyesterday,2.0\n", ":3: bad timestamp"),
        ("timestamp,value\n2014-04-01 00:00:00,1.0,7\n", ":2: expected 2 columns"),
        ("time,val\n2014-04-01 00:00:00,1.0\n", ":1: header"),
        ("timestamp,value\n2014-04-01 00:00:00,inf\n", "not finite"),
        ("", "empty file"),
        ("timestamp,value\n", "no data rows"),
    ],
)
def test_bad_csv_gives_one_clear_line(tmp_path: Path, content: str, needle: str) -> None:
    src = tmp_path / "bad.csv"
    src.write_text(content)
    with pytest.raises(ValueError) as exc:
        backtest_csv(src, tmp_path / "s.csv", None)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg and "bad.csv" in msg
    assert not (tmp_path / "s.csv").exists()  # nothing half-written


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot open"):
        read_metric_csv(tmp_path / "nope.csv")
