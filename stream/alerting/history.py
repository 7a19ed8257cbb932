"""Alert history: one embedded SQLite file (WAL) of alert records, notifications,
delivery attempts, silences, acks and mutes, for ``paywatch alerts`` and the weekly review.

The default file is ``$XDG_DATA_HOME/paywatch/history.db`` (``~/.local/share/...``).
The schema is versioned with ``PRAGMA user_version``; older files are migrated
on open, newer ones are refused with one clear line.

>>> h = AlertHistory(":memory:")
>>> h.record_alert(AlertRecord("a1", "f1", "firing", "warning", "r", "latency",
...     {"provider": "paypal"}, started_at=1000, window_end=2000), now_ms=2000)
True
>>> [(a["alert_id"], a["status"]) for a in h.list_alerts()]
[('a1', 'firing')]
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import statistics
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stream.alerting.record import AlertRecord

SCHEMA_VERSION = 2

_SCHEMA_V1 = """
CREATE TABLE alert_records (
    id INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    window_end INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    record TEXT NOT NULL,
    UNIQUE (alert_id, status, window_end)
);
CREATE INDEX alert_records_alert ON alert_records (alert_id);
CREATE TABLE alerts (
    alert_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    rule TEXT, signal TEXT, severity TEXT, series TEXT,
    status TEXT NOT NULL,
    started_at INTEGER, resolved_at INTEGER,
    first_seen_ms INTEGER, last_seen_ms INTEGER,
    value REAL, expected REAL, summary TEXT,
    first_notified_ms INTEGER,
    acked_ms INTEGER, acked_by TEXT,
    muted TEXT
);
CREATE INDEX alerts_started ON alerts (started_at);
CREATE INDEX alerts_fingerprint ON alerts (fingerprint, started_at);
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    route TEXT NOT NULL, group_key TEXT NOT NULL, kind TEXT NOT NULL, severity TEXT,
    title TEXT, body TEXT, alert_ids TEXT NOT NULL
);
CREATE TABLE notification_alerts (
    alert_id TEXT NOT NULL, notification_id INTEGER NOT NULL,
    PRIMARY KEY (alert_id, notification_id)
);
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL, route TEXT NOT NULL, channel TEXT NOT NULL,
    alert_ids TEXT NOT NULL, attempt INTEGER NOT NULL, ok INTEGER NOT NULL, error TEXT
);
CREATE TABLE delivery_alerts (
    alert_id TEXT NOT NULL, delivery_id INTEGER NOT NULL,
    PRIMARY KEY (alert_id, delivery_id)
);
CREATE TABLE silences (
    id TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL, starts_at INTEGER, ends_at INTEGER,
    author TEXT, comment TEXT, data TEXT NOT NULL
);
CREATE TABLE acks (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL, target TEXT NOT NULL, alert_id TEXT, author TEXT, comment TEXT
);
CREATE INDEX acks_alert ON acks (alert_id);
CREATE TABLE mutes (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL, alert_id TEXT NOT NULL, reason TEXT
);
CREATE INDEX mutes_alert ON mutes (alert_id);
"""
# v2: the audit of automatic actions (one row per run, or per run decided against).
_SCHEMA_V2 = """
CREATE TABLE action_runs (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL, action TEXT NOT NULL, kind TEXT NOT NULL, trigger TEXT NOT NULL,
    alert_id TEXT NOT NULL, fingerprint TEXT, run_id TEXT, result TEXT NOT NULL,
    attempts INTEGER NOT NULL, duration_ms REAL, status INTEGER, orders INTEGER,
    target TEXT, detail TEXT
);
CREATE INDEX action_runs_alert ON action_runs (alert_id);
"""
_ACTION_COLUMNS = (
    "ts_ms", "action", "kind", "trigger", "alert_id", "fingerprint", "run_id", "result",
    "attempts", "duration_ms", "status", "orders", "target", "detail",
)  # fmt: skip
# Index i migrates user_version i to i + 1.
_MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1, _SCHEMA_V2)


# One alert written by two workers: resolved wins, the earliest first sighting and
# notification, the latest sighting, value and mute, any ack.
_MERGE_ALERTS = """
INSERT INTO main.alerts SELECT * FROM src.alerts WHERE true
ON CONFLICT (alert_id) DO UPDATE SET
    status = CASE WHEN 'resolved' IN (alerts.status, excluded.status) THEN 'resolved'
                  ELSE excluded.status END,
    resolved_at = COALESCE(alerts.resolved_at, excluded.resolved_at),
    first_seen_ms = MIN(alerts.first_seen_ms, excluded.first_seen_ms),
    last_seen_ms = MAX(alerts.last_seen_ms, excluded.last_seen_ms),
    first_notified_ms = CASE WHEN alerts.first_notified_ms IS NULL
                             THEN excluded.first_notified_ms
                             WHEN excluded.first_notified_ms IS NULL
                             THEN alerts.first_notified_ms
                             ELSE MIN(alerts.first_notified_ms, excluded.first_notified_ms) END,
    acked_ms = COALESCE(alerts.acked_ms, excluded.acked_ms),
    acked_by = COALESCE(alerts.acked_by, excluded.acked_by),
    muted = CASE WHEN excluded.last_seen_ms >= alerts.last_seen_ms THEN excluded.muted
                 ELSE alerts.muted END
"""


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in db.execute(f"PRAGMA main.table_info({table})")]


class HistoryError(Exception):
    """The history file cannot be used, or a query argument is wrong (one line)."""


def default_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "paywatch" / "history.db"


def parse_since(text: str | int, now_ms: int) -> int:
    """``--since`` as epoch ms: ``90s``, ``30m``, ``2h``, ``7d``, ``2w``, an ISO date/time
    (UTC unless it says otherwise) or epoch milliseconds.

    >>> parse_since("2h", now_ms=10_000_000)
    2800000
    >>> parse_since("1970-01-01T00:00:05", now_ms=0)
    5000
    """
    if isinstance(text, int):
        return text
    s = text.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", s, re.I)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2).lower()]
        return now_ms - int(float(m.group(1)) * unit * 1000)
    if s.isdigit():
        return int(s)
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise HistoryError(
            f"--since {text!r}: expected 30m, 2h, 7d, an ISO date like 2026-11-26T07:00 "
            "or epoch milliseconds"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _mask(channel: str) -> str:
    if "****" in channel:
        return channel
    try:
        from stream.alerting.delivery import mask_url
    except ImportError:  # delivery not importable: keep only the scheme
        return channel.split("://", 1)[0] + "://****"
    return mask_url(channel)


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return float(ordered[idx])


class AlertHistory:
    """The history store.  Thread-safe (delivery audits arrive from worker threads)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        target = str(path) if path is not None else str(default_path())
        if target != ":memory:":
            try:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise HistoryError(f"history {target}: cannot create its folder ({exc})") from None
        self.path = target
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout = 5000")
            if target != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"history {target}: not a usable SQLite file ({exc})") from None

    # -- plumbing ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise HistoryError(
                f"history {self.path}: schema {version} is newer than this paywatch "
                f"understands ({SCHEMA_VERSION}); upgrade paywatch"
            )
        for v in range(version, SCHEMA_VERSION):
            # One transaction per step: a crash mid-migration leaves the old version intact.
            self._db.executescript(
                f"BEGIN IMMEDIATE; {_MIGRATIONS[v]} PRAGMA user_version = {v + 1}; COMMIT;"
            )

    @classmethod
    def merged(cls, paths: Sequence[str | os.PathLike[str]]) -> AlertHistory:
        """Several history files read as one, in memory (each worker writes the file on its
        own machine; the alerts move with the notify group's partition when a worker dies).
        An alert written by two workers (a hand-over) becomes one row: the later status,
        the first notification, every record, notification and delivery attempt."""
        merged = cls(":memory:")
        for path in paths:
            if not Path(path).is_file():
                raise HistoryError(f"no alert history at {path}")
            cls(path).close()  # refuses a newer schema, migrates an older one
            merged._merge(str(path))
        merged.path = " + ".join(map(str, paths))  # what error messages name
        return merged

    def _merge(self, path: str) -> None:
        with self._lock:  # ATTACH cannot run inside a transaction
            self._db.execute("ATTACH DATABASE ? AS src", (path,))
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT OR IGNORE INTO alert_records (alert_id, fingerprint, status, "
                    "window_end, received_ms, record) SELECT alert_id, fingerprint, status, "
                    "window_end, received_ms, record FROM src.alert_records"
                )
                db.execute(_MERGE_ALERTS)
                for table, link, key in (
                    ("notifications", "notification_alerts", "notification_id"),
                    ("deliveries", "delivery_alerts", "delivery_id"),
                ):
                    shift = db.execute(f"SELECT COALESCE(MAX(id), 0) FROM main.{table}")
                    offset = int(shift.fetchone()[0])
                    cols = ", ".join(c for c in _columns(db, table) if c != "id")
                    db.execute(
                        f"INSERT INTO main.{table} (id, {cols}) "
                        f"SELECT id + {offset}, {cols} FROM src.{table}"
                    )
                    db.execute(
                        f"INSERT OR IGNORE INTO main.{link} (alert_id, {key}) "
                        f"SELECT alert_id, {key} + {offset} FROM src.{link}"
                    )
                db.execute("INSERT OR IGNORE INTO main.silences SELECT * FROM src.silences")
                for table in ("acks", "mutes", "action_runs"):
                    cols = ", ".join(c for c in _columns(db, table) if c != "id")
                    db.execute(f"INSERT INTO main.{table} ({cols}) SELECT {cols} FROM src.{table}")
        finally:
            with self._lock:
                self._db.execute("DETACH DATABASE src")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AlertHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, tuple(args)).fetchall()]

    # -- writes (the dispatcher and the deliverer call these) ----------------------------------

    def record_alert(self, alert: AlertRecord, now_ms: int) -> bool:
        """Store an alert record; False when this exact state change is already stored."""
        record = alert.to_dict()
        rid, status = str(record["alert_id"]), str(record["status"])
        wend = int(record.get("window_end") or 0)
        blob = json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO alert_records "
                "(alert_id, fingerprint, status, window_end, received_ms, record) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (rid, str(record["fingerprint"]), status, wend, now_ms, blob),
            )
            if cur.rowcount == 0:
                return False
            db.execute(
                """INSERT INTO alerts (alert_id, fingerprint, rule, signal, severity, series,
                       status, started_at, resolved_at, first_seen_ms, last_seen_ms,
                       value, expected, summary)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (alert_id) DO UPDATE SET
                       status = CASE WHEN alerts.status = 'resolved' THEN 'resolved'
                                     ELSE excluded.status END,
                       severity = CASE WHEN excluded.status = 'firing'
                                       THEN excluded.severity ELSE alerts.severity END,
                       resolved_at = COALESCE(excluded.resolved_at, alerts.resolved_at),
                       last_seen_ms = MAX(alerts.last_seen_ms, excluded.last_seen_ms),
                       value = CASE WHEN excluded.status = 'firing'
                                    THEN excluded.value ELSE alerts.value END,
                       expected = CASE WHEN excluded.status = 'firing'
                                       THEN excluded.expected ELSE alerts.expected END,
                       summary = excluded.summary""",
                (
                    rid,
                    str(record["fingerprint"]),
                    record.get("rule"),
                    record.get("signal"),
                    record.get("severity"),
                    json.dumps(record.get("series") or {}, ensure_ascii=False, sort_keys=True),
                    status,
                    record.get("started_at"),
                    record.get("resolved_at") if status == "resolved" else None,
                    now_ms,
                    now_ms,
                    record.get("value"),
                    record.get("expected"),
                    record.get("summary"),
                ),
            )
            if status == "resolved":
                # A resolved record without resolved_at still ends the episode, at its window.
                db.execute(
                    "UPDATE alerts SET resolved_at = COALESCE(resolved_at, ?) WHERE alert_id = ?",
                    (wend or None, rid),
                )
        return True

    def record_notification(self, message: Any, ts_ms: int, kind: str = "notify") -> int:
        """Store a message handed to delivery (a ``delivery.Message``); returns its id."""
        ids = [str(i) for i in message.alert_ids]
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO notifications (ts_ms, route, group_key, kind, severity, title, body,"
                " alert_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ts_ms,
                    message.route,
                    message.group_key,
                    kind,
                    message.severity,
                    message.title,
                    message.body,
                    json.dumps(ids),
                ),
            )
            nid = int(cur.lastrowid or 0)
            db.executemany(
                "INSERT OR IGNORE INTO notification_alerts VALUES (?, ?)", [(i, nid) for i in ids]
            )
            db.executemany(
                "UPDATE alerts SET first_notified_ms = COALESCE(first_notified_ms, ?) "
                "WHERE alert_id = ?",
                [(ts_ms, i) for i in ids],
            )
        return nid

    def record_delivery(self, audit: Any = None, /, **fields: Any) -> int:
        """Store one delivery attempt: a ``delivery.DeliveryAttempt`` (usable directly
        as ``Deliverer(on_attempt=history.record_delivery)``) or the same fields as keywords:
        ts_ms, route, channel, alert_ids, attempt, ok, error.  The channel is masked again."""
        if audit is not None:
            fields = {
                k: getattr(audit, k)
                for k in ("ts_ms", "route", "channel", "alert_ids", "attempt", "ok", "error")
            }
        ids = [str(i) for i in fields.get("alert_ids") or ()]
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO deliveries (ts_ms, route, channel, alert_ids, attempt, ok, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    int(fields["ts_ms"]),
                    str(fields["route"]),
                    _mask(str(fields["channel"])),
                    json.dumps(ids),
                    int(fields.get("attempt") or 1),
                    1 if fields.get("ok") else 0,
                    fields.get("error"),
                ),
            )
            did = int(cur.lastrowid or 0)
            db.executemany(
                "INSERT OR IGNORE INTO delivery_alerts VALUES (?, ?)", [(i, did) for i in ids]
            )
        return did

    def record_action(self, run: Any) -> int:
        """Store one action audit record (an ``actions.ActionRun``); returns its id."""
        cols = _ACTION_COLUMNS
        marks = ", ".join("?" * len(cols))
        with self._tx() as db:
            cur = db.execute(
                f"INSERT INTO action_runs ({', '.join(cols)}) VALUES ({marks})",
                tuple(getattr(run, c) for c in cols),
            )
        return int(cur.lastrowid or 0)

    def list_actions(self, alert_id: str) -> list[dict[str, Any]]:
        """The action audit of one episode, oldest first."""
        return self._rows(
            "SELECT * FROM action_runs WHERE alert_id = ? ORDER BY ts_ms, id", (alert_id,)
        )

    def record_ack(
        self, target: str, alert_ids: Sequence[str], author: str, ts_ms: int, comment: str = ""
    ) -> list[str]:
        """Store an ack; with no alert_ids given, the target is looked up here
        (an alert_id, or a fingerprint's latest episode).  Returns the ids acked."""
        ids = list(alert_ids) or self._resolve_target(target)
        with self._tx() as db:
            targets: list[str | None] = list(ids) or [None]  # an unknown target is kept too
            for aid in targets:
                db.execute(
                    "INSERT INTO acks (ts_ms, target, alert_id, author, comment) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (ts_ms, target, aid, author, comment),
                )
            db.executemany(
                "UPDATE alerts SET acked_ms = ?, acked_by = ? "
                "WHERE alert_id = ? AND acked_ms IS NULL",
                [(ts_ms, author, aid) for aid in ids],
            )
        return ids

    def _resolve_target(self, target: str) -> list[str]:
        rows = self._rows(
            "SELECT alert_id FROM alerts WHERE alert_id = ? OR fingerprint = ? "
            "ORDER BY started_at DESC LIMIT 1",
            (target, target),
        )
        return [rows[0]["alert_id"]] if rows else []

    def record_mute(self, alert_id: str, reason: str | None, ts_ms: int) -> None:
        """An alert became muted (``reason``) or notifiable again (``None``)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO mutes (ts_ms, alert_id, reason) VALUES (?, ?, ?)",
                (ts_ms, alert_id, reason),
            )
            db.execute("UPDATE alerts SET muted = ? WHERE alert_id = ?", (reason, alert_id))

    def record_silence(self, silence: Any, ts_ms: int) -> None:
        """Store a ``stream.alerting.silences.Silence`` (same id again replaces it)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO silences (id, created_ms, starts_at, ends_at, author, comment, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "starts_at = excluded.starts_at, ends_at = excluded.ends_at, "
                "author = excluded.author, comment = excluded.comment, data = excluded.data",
                (
                    silence.id,
                    ts_ms,
                    silence.starts_at,
                    silence.ends_at,
                    silence.author,
                    silence.comment,
                    json.dumps(silence.to_dict(), ensure_ascii=False),
                ),
            )

    def expire_silence(self, silence_id: str, ts_ms: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE silences SET ends_at = ? WHERE id = ? AND (ends_at IS NULL OR ends_at > ?)",
                (ts_ms, silence_id, ts_ms),
            )

    # -- queries (``paywatch alerts ...`` and the weekly review) ------------------------------

    def list_alerts(
        self,
        *,
        status: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        severity: str | None = None,
        rule: str | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        """Alert episodes, newest first.  ``since``/``until`` select episodes that overlap
        the span (still-firing ones overlap any span after their start)."""
        if status not in (None, "firing", "resolved"):
            raise HistoryError(f"--status {status!r}: expected firing or resolved")
        where, args = self._span(since_ms, until_ms)
        for col, val in (("status", status), ("severity", severity), ("rule", rule)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT * FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, alert_id LIMIT ?"
        rows = self._rows(sql, [*args, int(limit)])
        for r in rows:
            r["series"] = json.loads(r["series"] or "{}")
        return rows

    @staticmethod
    def _span(since_ms: int | None, until_ms: int | None) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if since_ms is not None:
            where.append("(resolved_at IS NULL OR resolved_at >= ?)")
            args.append(since_ms)
        if until_ms is not None:
            where.append("started_at < ?")
            args.append(until_ms)
        return where, args

    def find_alert(self, ident: str) -> str | None:
        """The alert_id for an alert_id, a fingerprint (latest episode) or a unique prefix."""
        exact = self._resolve_target(ident)
        if exact:
            return exact[0]
        if len(ident) < 4:
            return None
        like = ident.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._rows(
            "SELECT alert_id FROM alerts WHERE alert_id LIKE ? ESCAPE '\\' LIMIT 2", (like,)
        )
        if len(rows) > 1:
            raise HistoryError(f"alert {ident!r} is ambiguous; give more characters")
        return rows[0]["alert_id"] if rows else None

    def show_alert(self, ident: str) -> dict[str, Any] | None:
        """One episode with its records, notifications, deliveries, acks and mutes."""
        aid = self.find_alert(ident)
        if aid is None:
            return None
        alert = self._rows("SELECT * FROM alerts WHERE alert_id = ?", (aid,))[0]
        alert["series"] = json.loads(alert["series"] or "{}")
        records = [
            json.loads(r["record"])
            for r in self._rows(
                "SELECT record FROM alert_records WHERE alert_id = ? ORDER BY window_end, id",
                (aid,),
            )
        ]
        notes = self._rows(
            "SELECT n.* FROM notifications n JOIN notification_alerts l "
            "ON l.notification_id = n.id WHERE l.alert_id = ? ORDER BY n.ts_ms, n.id",
            (aid,),
        )
        deliveries = self._rows(
            "SELECT d.* FROM deliveries d JOIN delivery_alerts l "
            "ON l.delivery_id = d.id WHERE l.alert_id = ? ORDER BY d.ts_ms, d.id",
            (aid,),
        )
        for row in (*notes, *deliveries):
            row["alert_ids"] = json.loads(row["alert_ids"])
        for d in deliveries:
            d["ok"] = bool(d["ok"])
        return {
            "alert": alert,
            "records": records,
            "notifications": notes,
            "deliveries": deliveries,
            "acks": self._rows("SELECT * FROM acks WHERE alert_id = ? ORDER BY ts_ms", (aid,)),
            "mutes": self._rows("SELECT * FROM mutes WHERE alert_id = ? ORDER BY ts_ms", (aid,)),
            "actions": self.list_actions(aid),
        }

    def list_silences(self, active_at_ms: int | None = None) -> list[dict[str, Any]]:
        """Silences, newest first; with ``active_at_ms`` only those not yet ended then."""
        sql, args = "SELECT * FROM silences", []
        if active_at_ms is not None:
            sql += " WHERE starts_at <= ? AND (ends_at IS NULL OR ends_at > ?)"
            args = [active_at_ms, active_at_ms]
        rows = self._rows(sql + " ORDER BY created_ms DESC, id", args)
        for r in rows:
            r["data"] = json.loads(r["data"])
        return rows

    def review(self, since_ms: int, until_ms: int) -> dict[str, Any]:
        """Weekly-review figures for episodes that started in [since, until).

        MTTA: first notification → first ack.  MTTR: started_at → resolved_at.
        """
        alerts = self._rows(
            "SELECT * FROM alerts WHERE started_at >= ? AND started_at < ?", (since_ms, until_ms)
        )
        mtta = [
            a["acked_ms"] - a["first_notified_ms"]
            for a in alerts
            if a["acked_ms"] is not None and a["first_notified_ms"] is not None
        ]
        mttr = [
            a["resolved_at"] - a["started_at"]
            for a in alerts
            if a["resolved_at"] is not None and a["started_at"] is not None
        ]
        by_rule: dict[str, int] = {}
        by_sev: dict[str, int] = {}
        for a in alerts:
            by_rule[a["rule"]] = by_rule.get(a["rule"], 0) + 1
            by_sev[a["severity"]] = by_sev.get(a["severity"], 0) + 1
        with self._lock:
            notes = self._db.execute(
                "SELECT COUNT(*) FROM notifications WHERE ts_ms >= ? AND ts_ms < ?",
                (since_ms, until_ms),
            ).fetchone()[0]
            failed = self._db.execute(
                "SELECT COUNT(*) FROM deliveries WHERE ts_ms >= ? AND ts_ms < ? AND ok = 0",
                (since_ms, until_ms),
            ).fetchone()[0]
        return {
            "alerts": len(alerts),
            "by_severity": by_sev,
            "noisiest_rules": sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))[:5],
            "notified": sum(1 for a in alerts if a["first_notified_ms"] is not None),
            "never_notified": sum(1 for a in alerts if a["first_notified_ms"] is None),
            "acked": len(mtta),
            "resolved": len(mttr),
            "mtta_ms_median": statistics.median(mtta) if mtta else None,
            "mtta_ms_p90": _percentile(mtta, 0.9),
            "mttr_ms_median": statistics.median(mttr) if mttr else None,
            "mttr_ms_p90": _percentile(mttr, 0.9),
            "notifications": int(notes),
            "failed_deliveries": int(failed),
        }


def _clock(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_alert_rows(rows: Sequence[Mapping[str, Any]], now_ms: int) -> list[str]:
    """One line per episode for ``paywatch alerts list`` (newest first, as given)."""
    from stream.alerting.templates import format_duration, format_series

    out = []
    for r in rows:
        start = int(r.get("started_at") or 0)
        end = r.get("resolved_at")
        span = format_duration((int(end) if end is not None else now_ms) - start)
        flags = []
        if r.get("acked_by"):
            flags.append(f"acked by {r['acked_by']}")
        if r.get("muted") and r.get("status") == "firing":
            flags.append(str(r["muted"]))
        if r.get("first_notified_ms") is None:
            flags.append("not notified")
        out.append(
            f"{str(r['alert_id'])[:12]:<12}  {str(r['status']).upper():<8}  "
            f"{r.get('severity')!s:<8}  {_clock(start)}  {span:>8}  {r.get('rule')}  "
            f"{format_series(r.get('series') or {})}" + (f"  [{'; '.join(flags)}]" if flags else "")
        )
    return out


def format_alert_detail(detail: Mapping[str, Any]) -> list[str]:
    """``paywatch alerts show ID``: the episode, then a timeline of everything that happened."""
    from stream.alerting.templates import format_series

    a = detail["alert"]
    lines = [
        f"alert {a['alert_id']}  ({a['status']}, {a['severity']})",
        f"  rule {a['rule']} / {a['signal']}  series {format_series(a['series'])}",
        f"  fingerprint {a['fingerprint']}",
        f"  started {_clock(a['started_at'])}  resolved {_clock(a['resolved_at'])}",
    ]
    events: list[tuple[int, str]] = []
    for rec in detail["records"]:
        ts = int(rec.get("window_end") or 0)
        events.append((ts, f"record {rec['status']}: value {rec.get('value')} "
                           f"expected {rec.get('expected')}" + _evidence_text(rec)))  # fmt: skip
    for n in detail["notifications"]:
        events.append((n["ts_ms"], f"notified ({n['kind']}) via {n['route']}: {n['title']}"))
    for d in detail["deliveries"]:
        state = "ok" if d["ok"] else f"failed: {d['error']}"
        events.append((d["ts_ms"], f"delivery #{d['attempt']} {d['channel']} {state}"))
    for k in detail["acks"]:
        note = f" ({k['comment']})" if k.get("comment") else ""
        events.append((k["ts_ms"], f"acked by {k['author']}{note}"))
    for m in detail["mutes"]:
        events.append((m["ts_ms"], m["reason"] or "unmuted"))
    for r in detail.get("actions", ()):
        events.append((r["ts_ms"], format_action_run(r)))
    lines += [f"  {_clock(ts)}  {text}" for ts, text in sorted(events, key=lambda e: e[0])]
    return lines


def _evidence_text(rec: Mapping[str, Any]) -> str:
    """``; 20 overdue orders reported, 20 recovered, 0 still missing`` (callback alerts)."""
    mc = (rec.get("evidence") or {}).get("missing_callbacks")
    if not isinstance(mc, Mapping):
        return ""
    return (f"; {mc.get('reported')} overdue orders reported, {mc.get('recovered')} recovered, "
            f"{mc.get('still_missing')} still missing")  # fmt: skip


def format_action_run(r: Mapping[str, Any]) -> str:
    """One audit line: what ran, why (trigger), the result, how long, and the detail.

    >>> format_action_run({"action": "requery", "kind": "http", "trigger": "firing",
    ...     "result": "ok", "attempts": 2, "duration_ms": 41.5, "orders": 20,
    ...     "target": "http://pay/q", "detail": "#1 HTTP 503; #2 HTTP 200"})[:74]
    'action requery (http, on firing) ok after 2 attempt(s) in 42 ms, 20 orders'
    """
    took = f" after {r.get('attempts')} attempt(s) in {float(r.get('duration_ms') or 0):.0f} ms"
    ran = bool(r.get("attempts"))
    return (f"action {r.get('action')} ({r.get('kind')}, on {r.get('trigger')}) {r.get('result')}"
            f"{took if ran else ''}, {r.get('orders') or 0} orders → {r.get('target')}: "
            f"{r.get('detail') or ''}")  # fmt: skip
