"""Labelled incidents: reading JSON/CSV labels, and `backtest --labels` end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.offline.labels import LabelsError, read_labels
from stream.sim.simulate import SimConfig, parse_incident, simulate, write_jsonl, write_labels

OUTAGE_START_S, OUTAGE_S = 600, 120


@pytest.fixture(scope="session")
def sim_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, SimConfig]:
    """15 simulated minutes, an Alipay outage at +600 s for 120 s: (events, labels, config)."""
    d = tmp_path_factory.mktemp("sim")
    cfg = SimConfig(
        seed=11,
        duration_s=900,
        rate=30,
        incidents=[
            parse_incident(
                f"provider_outage:provider=alipay,start={OUTAGE_START_S},duration={OUTAGE_S}"
            )
        ],
    )
    events, labels = d / "events.jsonl", d / "labels.json"
    write_jsonl(simulate(cfg), events)
    write_labels(cfg, labels)
    return events, labels, cfg


def paywatch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_reads_simulator_json_and_csv_alike(tmp_path: Path, sim_files: Any) -> None:
    _, labels_json, cfg = sim_files
    from_json = read_labels(labels_json)
    start = cfg.start_ms + OUTAGE_START_S * 1000
    assert [(x["kind"], x["start_ms"], x["end_ms"], x["series"]) for x in from_json] == [
        ("provider_outage", start, start + OUTAGE_S * 1000, {"provider": "alipay"})
    ]
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "start,end,series,kind\n"
        "2026-01-01T00:10:00Z,2026-01-01T00:12:00Z,provider=alipay;merchant_id=M1002,outage\n"
        "1767226500000,1767226560000,provider=paypal,\n"
    )
    rows = read_labels(csv)
    assert rows[0] == {
        "kind": "outage",
        "start_ms": 1_767_226_200_000,
        "end_ms": 1_767_226_320_000,
        "series": {"provider": "alipay", "merchant_id": "M1002"},
        "is_incident": True,
    }
    assert rows[1]["series"] == {"provider": "paypal"} and rows[1]["kind"] == "incident"
    assert rows[1]["end_ms"] - rows[1]["start_ms"] == 60_000


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("begin,end,series\n1,2,provider=x\n", "start,end,series"),
        ("start,end,series\nyesterday,2026-01-01,provider=x\n", "line 2"),
        ("start,end,series\n2026-01-02,2026-01-01,provider=x\n", "end >= start"),
        ("start,end,series\n2026-01-01,2026-01-02,alipay\n", "dimension=value"),
    ],
)
def test_bad_labels_csv_names_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(LabelsError, match=needle):
        read_labels(p)


def test_backtest_labels_prints_recall_precision_and_delay(tmp_path: Path, sim_files: Any) -> None:
    events, labels, _ = sim_files
    out = tmp_path / "alerts.jsonl"
    r = paywatch("backtest", "--input", events, "--alerts-out", out, "--labels", labels)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("labels:"))
    assert "recall 1.00 (1/1)" in line and "false alerts/hour" in line
    detected = next(x for x in r.stdout.splitlines() if "provider_outage" in x)
    delay = float(detected.split("detected after ")[1].split(" s")[0])
    assert 0 <= delay <= 60
    # The alert file is what it would be without --labels.
    plain = tmp_path / "plain.jsonl"
    assert paywatch("backtest", "--input", events, "--alerts-out", plain).returncode == 0
    assert plain.read_bytes() == out.read_bytes()
    assert any(
        orjson.loads(x)["series"] == {"provider": "alipay"}
        for x in out.read_bytes().split(b"\n")
        if x
    )


def test_backtest_with_a_broken_labels_file_is_one_line(tmp_path: Path, sim_files: Any) -> None:
    events, _, _ = sim_files
    bad = tmp_path / "labels.json"
    bad.write_text('[{"start_ms": 1, "series": {}}]')
    r = paywatch("backtest", "--input", events, "--alerts-out", tmp_path / "a", "--labels", bad)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "incident 1: missing 'end'" in r.stderr
