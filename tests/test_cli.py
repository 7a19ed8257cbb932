"""The `paywatch` command as a user meets it: help, mistakes, offline backtest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from stream.judge.judgement import alert_id, fingerprint
from tests.traffic import OUTAGE, T0, traffic

ALERT_FIELDS = {
    "schema_version",
    "alert_id",
    "fingerprint",
    "status",
    "severity",
    "rule",
    "signal",
    "series",
    "started_at",
    "resolved_at",
    "window_end",
    "detected_at",
    "value",
    "expected",
    "score",
    "summary",
    "hints",
}


def paywatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args], capture_output=True, text=True, timeout=120
    )


def write_jsonl(path: Path, events: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


@pytest.mark.parametrize("verb", ["", "run", "demo", "simulate", "backtest", "broker", "alerts"])
def test_help_says_what_each_verb_does(verb: str) -> None:
    r = paywatch(*([verb] if verb else []), "--help")
    assert r.returncode == 0
    assert "usage: paywatch" in r.stdout and len(r.stdout.splitlines()) > 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["backtest", "--input", "/nope.jsonl", "--alerts-out", "a.jsonl"],
            "no such file: /nope.jsonl",
        ),
        (["broker", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["backtest"], "the following arguments are required: --input, --alerts-out"),
        (["run", "--config", "/nope.yaml"], "no such file: /nope.yaml"),
        (["explode"], "invalid choice: 'explode'"),
    ],
)
def test_user_mistakes_give_one_line_not_a_traceback(args: list[str], message: str) -> None:
    r = paywatch(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2  # argparse's usage line + the error


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("windows:\n  size_s: -3\n")
    inp = write_jsonl(tmp_path / "in.jsonl", traffic(20))
    r = paywatch(
        "backtest", "--input", str(inp), "--config", str(cfg), "--alerts-out", str(tmp_path / "a")
    )
    assert r.returncode == 2
    assert r.stderr.strip() == f"paywatch backtest: error: {cfg}: windows.size_s: must be > 0"


def test_unreachable_kafka_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: 127.0.0.1:9\n")
    r = paywatch("run", "--config", str(cfg))
    assert r.returncode == 2
    assert "cannot reach Kafka at 127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr


def test_backtest_writes_complete_alert_records_for_an_outage(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "outage.jsonl", traffic())
    out = tmp_path / "alerts.jsonl"
    r = paywatch("backtest", "--input", str(inp), "--alerts-out", str(out))
    assert r.returncode == 0, r.stderr
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    top = [a for a in records if a["series"] == {"provider": "alipay"}]
    assert [a["status"] for a in top] == ["firing", "resolved"]
    for rec in records:
        assert set(rec) == ALERT_FIELDS
        assert rec["schema_version"] == 1 and 0 <= rec["score"] <= 1
        assert rec["fingerprint"] == fingerprint(rec["rule"], rec["series"])
        assert rec["alert_id"] == alert_id(rec["fingerprint"], rec["started_at"])
        assert rec["detected_at"] == rec["window_end"]  # event time offline: replays are identical
    assert top[0]["started_at"] == T0 + OUTAGE[0] and top[1]["resolved_at"] == T0 + OUTAGE[1]
    # Replaying gives byte-identical output.
    out2 = tmp_path / "again.jsonl"
    assert paywatch("backtest", "--input", str(inp), "--alerts-out", str(out2)).returncode == 0
    assert out.read_bytes() == out2.read_bytes()


def test_backtest_of_a_quiet_gzip_file_writes_nothing(tmp_path: Path) -> None:
    import gzip

    quiet = [e for e in traffic() if e["outcome"] == "success"]
    inp = tmp_path / "quiet.jsonl.gz"
    inp.write_bytes(gzip.compress(b"".join(orjson.dumps(e) + b"\n" for e in quiet)))
    out = tmp_path / "alerts.jsonl"
    r = paywatch("backtest", "--input", str(inp), "--alerts-out", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == b""
    assert f"{len(quiet)} records (0 rejected" in r.stderr
