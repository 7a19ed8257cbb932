"""`backtest --report` and `alerts report`: self-contained HTML a person can open and read."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from models.metric import DEFAULT_THRESHOLD
from stream.alerting.history import AlertHistory
from stream.alerting.record import AlertRecord
from stream.config import Config
from stream.offline.backtest import SeriesRecorder, replay_alerts
from stream.pipeline import Pipeline
from tests.test_labels import paywatch, sim_files  # noqa: F401 - shared session fixture

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)


def read_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB/RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), (depth, ctype)
            channels = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r[i] for i in range(len(r)) if i % channels < 3) for r in rows]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, sim_files: Any) -> tuple[Path, str]:  # noqa: F811
    events, labels, _ = sim_files
    d = tmp_path_factory.mktemp("report")
    html = d / "report.html"
    r = paywatch(
        "backtest", "--input", events, "--alerts-out", d / "alerts.jsonl",
        "--labels", labels, "--report", html,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "series charted" in r.stderr
    return html, html.read_text(encoding="utf-8")


def test_report_is_one_self_contained_file(report: tuple[Path, str]) -> None:
    _, text = report
    # Nothing fetched from anywhere: no scripts, stylesheets, images or fonts by URL.
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", text)
    assert "http" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert text.count("<svg") >= 4  # at least two series, two panels each


def test_report_shows_charts_and_the_label_scores(report: tuple[Path, str]) -> None:
    _, text = report
    # The provider-level outage is charted first (the worst; scores tie at 1.00, so the
    # broadest series of the rule alerting most widely), with its alert span shaded.
    first = text.index("<h3>", text.index("Alerting series"))
    assert text[first:].startswith("<h3>system_error_rate · provider=alipay</h3>")
    assert "anomaly score" in text and "threshold 0.5" in text
    assert "rgba(220,40,40,0.16)" in text  # alert span
    assert "rgba(20,150,60,0.22)" in text  # the labelled incident
    assert "<b>1.00</b>" in text  # recall KPI
    assert "provider_outage" in text and "detected" in text
    assert "Alerts per rule and severity" in text and "system_error_rate" in text


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report: tuple[Path, str], tmp_path: Path) -> None:
    html, _ = report
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}", "--window-size=1200,2000", html.resolve().as_uri(),
        ],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert shot.exists(), "chromium wrote no screenshot"
    width, height, rows = read_png(shot.read_bytes())
    assert (width, height) == (1200, 2000)
    colours: set[bytes] = set()
    non_white = total = 0
    for row in rows[::4]:
        for i in range(0, len(row), 3 * 4):
            px = row[i : i + 3]
            colours.add(px)
            total += 1
            non_white += px != b"\xff\xff\xff"
    assert len(colours) > 50, f"only {len(colours)} colours: blank page?"
    assert non_white / total > 0.05
    # The series colours made it to the screen: the observed line's blue, the score's orange.
    assert any(abs(c[0] - 0x24) < 40 and abs(c[2] - 0xC5) < 40 and c[1] < 0x90 for c in colours)
    assert any(c[0] > 0xC0 and 0x50 < c[1] < 0xA0 and c[2] < 0x40 for c in colours)


def test_recording_for_charts_does_not_change_the_alerts(sim_files: Any) -> None:  # noqa: F811
    events, _, _ = sim_files
    plain, _ = replay_alerts(events, Config().validate())
    pipeline = Pipeline(Config().validate())
    rec = SeriesRecorder(pipeline, None)
    observed, _ = replay_alerts(events, Config().validate(), pipeline)
    assert observed == plain and plain
    traces = {(t.rule, tuple(sorted(t.series.items()))): t for t in rec.traces.values()}
    tr = traces[("system_error_rate", (("provider", "alipay"),))]
    # 90 windows of 10 s, the last not judged (the input ended inside it); during the
    # outage the observed rate and score are high.
    assert len(tr.t_ms) == 89 and tr.t_ms == sorted(tr.t_ms)
    firing = next(a for a in plain if a["series"] == {"provider": "alipay"})
    i = tr.t_ms.index(firing["window_end"] - 10_000)
    assert tr.value[i] == pytest.approx(firing["value"]) and tr.score[i] >= 0.5
    assert max(tr.value[:50]) < 0.05


def test_csv_report_shows_value_score_threshold_and_spans(tmp_path: Path) -> None:
    csv = tmp_path / "cpu.csv"
    rows = ["timestamp,value"]
    for i in range(600):
        v = 40 + (i % 7) + (400 if 450 <= i < 460 else 0)
        rows.append(f"2026-01-01 00:{i // 60:02d}:{i % 60:02d},{v}")
    csv.write_text("\n".join(rows) + "\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("start,end,series\n2026-01-01T00:07:30Z,2026-01-01T00:07:40Z,metric=cpu\n")
    html = tmp_path / "cpu.html"
    r = paywatch(
        "backtest", "--input", csv, "--alerts-out", tmp_path / "a.jsonl", "--report", html,
        "--labels", labels,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "labels: recall 1.00 (1/1), precision 1.00" in r.stdout
    assert "detected after 0 s" in r.stdout
    text = html.read_text()
    assert "metric=cpu" in text and "anomaly score" in text
    assert f"threshold {DEFAULT_THRESHOLD:g}" in text
    assert "rgba(220,40,40,0.16)" in text  # the spike's alert span
    assert "rgba(20,150,60,0.22)" in text  # and its label


def _record(aid: str, fp: str, status: str, start: int, end: int | None, **kw: Any) -> AlertRecord:
    obj = {
        "schema_version": 1, "alert_id": aid, "fingerprint": fp, "status": status,
        "severity": kw.get("severity", "warning"), "rule": kw.get("rule", "system_error_rate"),
        "signal": "error_rate", "series": kw.get("series", {"provider": "alipay"}),
        "started_at": start, "resolved_at": end, "window_end": end or start,
        "detected_at": end or start, "value": 0.3, "expected": 0.01, "score": 0.9,
        "summary": "s", "hints": [],
    }  # fmt: skip
    return AlertRecord.from_dict(obj)


def test_alerts_report_gives_the_weekly_review(tmp_path: Path) -> None:
    import time

    now = int(time.time() * 1000)
    hour = 3_600_000
    db = tmp_path / "history.sqlite"
    with AlertHistory(db) as h:
        for n in range(4):  # one flapping series: 4 short episodes
            s = now - 48 * hour + n * hour
            h.record_alert(_record(f"flap{n}", "fpA", "firing", s, None), s)
            h.record_alert(_record(f"flap{n}", "fpA", "resolved", s, s + 120_000), s + 120_000)
        s = now - 5 * hour
        h.record_alert(
            _record("big", "fpB", "firing", s, None, severity="critical", rule="latency",
                    series={"provider": "paypal"}), s,
        )  # fmt: skip
        msg = SimpleNamespace(alert_ids=["big"], route="oncall", group_key="g", severity="critical",
                              title="t", body="b")  # fmt: skip
        h.record_notification(msg, s + 5_000)
        h.record_ack("big", ["big"], "ana", s + 65_000)
        h.record_alert(_record("old", "fpC", "firing", now - 30 * 24 * hour, None), now)
    html = tmp_path / "review.html"
    r = paywatch("alerts", "report", "--history", db, "--since", "7d", "--html", html)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r"alert episodes\s+5\n", out)  # the 30-day-old one is outside the week
    assert re.search(r"time to acknowledge \(median / p90\)\s+1m00s / 1m00s", out)
    assert re.search(r"time to resolve \(median / p90\)\s+2m00s / 2m00s", out)
    flapping = out[out.index("Flapping series") :]
    assert re.search(r"system_error_rate\s+provider=alipay\s+4\s+2m00s", flapping)
    assert "paypal" not in flapping
    per_rule = out[out.index("Alerts per rule and severity") : out.index("Noisiest rules")]
    assert re.search(r"system_error_rate\s+0\s+4\s+0\s+4", per_rule)
    assert re.search(r"latency\s+1\s+0\s+0\s+1", per_rule)
    text = html.read_text()
    assert "Flapping series" in text and "provider=paypal" in text and "<table>" in text


def test_alerts_report_without_history_is_one_line(tmp_path: Path) -> None:
    r = paywatch("alerts", "report", "--history", tmp_path / "nope.sqlite")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no alert history" in r.stderr
