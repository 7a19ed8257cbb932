"""Alert history in a real SQLite file: round trips, queries, review figures, schema."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from stream.alerting.delivery import DeliveryAttempt, Message
from stream.alerting.history import (
    SCHEMA_VERSION,
    AlertHistory,
    HistoryError,
    default_path,
    format_alert_detail,
    format_alert_rows,
    parse_since,
)
from stream.alerting.matchers import Matcher
from stream.alerting.record import AlertRecord
from stream.alerting.silences import Silence
from tests.factories import make_alert

S = 1000
MIN = 60 * S
T0 = 1_764_140_000_000


def rec(aid: str, status: str = "firing", started: int = T0, **kw: Any) -> AlertRecord:
    kw.setdefault("summary", "alipay error rate 30%")
    return make_alert(status=status, started=started, aid=aid, **kw)


def message(*ids: str, route: str = "ops") -> Message:
    return Message("t", "b", tuple(ids), "ops:{provider=alipay}", "critical", route)


@pytest.fixture
def h(tmp_path: Path) -> AlertHistory:
    return AlertHistory(tmp_path / "sub" / "history.db")


def test_round_trip_of_one_episode(h: AlertHistory) -> None:
    fire = rec("a@1")
    assert h.record_alert(fire, T0 + 10 * S)
    assert not h.record_alert(dataclasses.replace(fire), T0 + 11 * S)  # the same record twice
    nid = h.record_notification(message("a@1"), T0 + 40 * S)
    assert nid > 0
    secret = "0123456789abcdef0123456789abcdef"
    for n, ok in ((1, False), (2, True)):
        h.record_delivery(
            DeliveryAttempt(T0 + 41 * S, "ops", f"dingtalk://{secret}/", ("a@1",), n, ok,
                            None if ok else "HTTP 500")
        )  # fmt: skip
    assert h.record_ack(fire.fingerprint, [], "li", T0 + 5 * MIN, "looking") == ["a@1"]
    end = T0 + 20 * MIN
    assert h.record_alert(rec("a@1", "resolved", resolved_at=end, window_end=end + 30 * S), end)

    shown = h.show_alert("a@1")
    assert shown is not None
    a = shown["alert"]
    assert a["status"] == "resolved" and a["resolved_at"] == end
    assert a["series"] == {"provider": "alipay"}
    assert a["first_notified_ms"] == T0 + 40 * S and a["acked_ms"] == T0 + 5 * MIN
    assert [r["status"] for r in shown["records"]] == ["firing", "resolved"]
    assert [n["alert_ids"] for n in shown["notifications"]] == [["a@1"]]
    assert [(d["attempt"], d["ok"], d["error"]) for d in shown["deliveries"]] == [
        (1, False, "HTTP 500"),
        (2, True, None),
    ]
    assert all(secret not in d["channel"] for d in shown["deliveries"])
    assert shown["deliveries"][0]["channel"].startswith("dingtalk://")
    assert [(k["author"], k["comment"]) for k in shown["acks"]] == [("li", "looking")]
    # Looked up by fingerprint and by a unique prefix too.
    assert h.find_alert(rec("a@1").fingerprint) == "a@1"
    assert h.find_alert("a@1"[:2]) is None  # too short to guess
    assert h.show_alert("nope") is None


def test_list_filters_by_status_and_since(h: AlertHistory) -> None:
    h.record_alert(rec("old@1", started=T0 - 3 * 3600 * S), T0)
    h.record_alert(
        rec("old@1", "resolved", started=T0 - 3 * 3600 * S, resolved_at=T0 - 2 * 3600 * S), T0
    )
    h.record_alert(rec("new@1", started=T0 - 10 * MIN), T0)
    h.record_alert(rec("long@1", started=T0 - 5 * 3600 * S), T0)  # still firing
    ids = lambda rows: [r["alert_id"] for r in rows]  # noqa: E731
    assert ids(h.list_alerts()) == ["new@1", "old@1", "long@1"]
    assert ids(h.list_alerts(status="firing")) == ["new@1", "long@1"]
    assert ids(h.list_alerts(status="resolved")) == ["old@1"]
    since = parse_since("1h", T0)
    assert ids(h.list_alerts(since_ms=since)) == ["new@1", "long@1"]  # overlapping the last hour
    assert ids(h.list_alerts(limit=1)) == ["new@1"]
    with pytest.raises(HistoryError, match="--status 'open'"):
        h.list_alerts(status="open")


def test_review_gives_mtta_and_mttr(h: AlertHistory) -> None:
    for i, (ack_after, fix_after) in enumerate([(2, 10), (4, 30), (None, 20)]):
        aid = f"x{i}@1"
        start = T0 + i * 3600 * S
        h.record_alert(rec(aid, started=start), start)
        h.record_notification(message(aid), start + MIN)
        if ack_after is not None:
            h.record_ack(aid, [aid], "li", start + MIN + ack_after * MIN)
        end = start + fix_after * MIN
        h.record_alert(rec(aid, "resolved", started=start, resolved_at=end, window_end=end), end)
    h.record_alert(rec("quiet@1", started=T0, severity="warning", rule="latency"), T0)
    h.record_delivery(ts_ms=T0 + MIN, route="ops", channel="json://localhost/x",
                      alert_ids=("x0@1",), attempt=1, ok=False, error="refused")  # fmt: skip
    r = h.review(T0, T0 + 7 * 86400 * S)
    assert r["alerts"] == 4 and r["notified"] == 3 and r["never_notified"] == 1
    assert r["acked"] == 2 and r["mtta_ms_median"] == 3 * MIN
    assert r["resolved"] == 3 and r["mttr_ms_median"] == 20 * MIN and r["mttr_ms_p90"] == 30 * MIN
    assert r["by_severity"] == {"critical": 3, "warning": 1}
    assert r["noisiest_rules"][0] == ("provider_errors", 3)
    assert r["notifications"] == 3 and r["failed_deliveries"] == 1
    assert h.review(T0 - 10, T0)["alerts"] == 0


def test_silences_and_mutes_are_kept(h: AlertHistory) -> None:
    s = Silence("s1", (Matcher.parse("provider=alipay"),), T0, T0 + 3600 * S, "li", "upgrade")
    h.record_silence(s, T0)
    assert [x["id"] for x in h.list_silences(active_at_ms=T0 + MIN)] == ["s1"]
    h.expire_silence("s1", T0 + 2 * MIN)
    assert h.list_silences(active_at_ms=T0 + 3 * MIN) == []
    assert h.list_silences()[0]["data"]["comment"] == "upgrade"
    h.record_alert(rec("m@1"), T0)
    h.record_mute("m@1", "silenced by s1", T0 + MIN)
    shown = h.show_alert("m@1")
    assert shown is not None and shown["alert"]["muted"] == "silenced by s1"


def test_file_is_wal_versioned_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with AlertHistory(path) as h:
        h.record_alert(rec("a@1"), T0)
        assert h.schema_version == SCHEMA_VERSION
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    with AlertHistory(path) as h:
        assert [a["alert_id"] for a in h.list_alerts()] == ["a@1"]


def test_unusable_files_are_one_line_errors(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(HistoryError, match="newer than this paywatch understands"):
        AlertHistory(newer)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(HistoryError, match="not a usable SQLite file") as info:
        AlertHistory(junk)
    assert "\n" not in str(info.value)


def test_parse_since() -> None:
    assert parse_since("30m", T0) == T0 - 30 * MIN
    assert parse_since("7d", T0) == T0 - 7 * 86400 * S
    assert parse_since("2025-11-26T07:00:00Z", 0) == 1_764_140_400_000
    assert parse_since("2025-11-26T15:00:00+08:00", 0) == 1_764_140_400_000
    assert parse_since("1764140400000", 0) == 1_764_140_400_000
    with pytest.raises(HistoryError, match="--since 'yesterday'"):
        parse_since("yesterday", T0)


def test_default_path_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_path() == tmp_path / "paywatch" / "history.db"


def test_delivery_audits_from_many_threads(h: AlertHistory) -> None:
    h.record_alert(rec("a@1"), T0)

    def worker(n: int) -> None:
        for i in range(50):
            h.record_delivery(ts_ms=T0 + i, route="ops", channel="json://localhost/x",
                              alert_ids=("a@1",), attempt=n, ok=True, error=None)  # fmt: skip

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shown = h.show_alert("a@1")
    assert shown is not None and len(shown["deliveries"]) == 200


def test_cli_formatting_of_list_and_show(h: AlertHistory) -> None:
    h.record_alert(rec("0123456789abcdef0123", started=T0), T0)
    h.record_notification(message("0123456789abcdef0123"), T0 + 40 * S)
    h.record_ack("0123456789abcdef0123", [], "li", T0 + 2 * MIN, "on it")
    h.record_alert(rec("fffff00000aaaaa11111", started=T0 + MIN, severity="warning"), T0 + MIN)
    lines = format_alert_rows(h.list_alerts(), now_ms=T0 + 10 * MIN)
    assert len(lines) == 2
    assert lines[0].startswith("fffff00000aa  FIRING    warning")
    assert "9m" in lines[0] and "not notified" in lines[0]
    assert "acked by li" in lines[1] and "2025-11-26 06:53:20" in lines[1]
    assert h.find_alert("01234567") == "0123456789abcdef0123"  # a prefix from the list
    detail = h.show_alert("01234567")
    assert detail is not None
    text = "\n".join(format_alert_detail(detail))
    assert "record firing" in text and "notified (notify) via ops" in text
    assert "acked by li (on it)" in text
