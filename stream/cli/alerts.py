"""``paywatch alerts``: list, show and review the alert history; silence and ack alerts.

Reading goes to the history file a worker writes (``notify.history_path``);
silences and acks are published to the control topic every worker follows.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.cli.inputs import UserError, load_config
from stream.clock import WALL_CLOCK

if TYPE_CHECKING:
    from stream.config import Config


def cmd_alerts(args: argparse.Namespace) -> int:
    from stream.alerting.history import HistoryError

    now = WALL_CLOCK.now_ms()
    try:
        return _ACTIONS[args.action](args, now)
    except HistoryError as exc:
        raise UserError(str(exc)) from None


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, getattr(args, "bootstrap", None))


def _history_paths(args: argparse.Namespace) -> list[Path] | None:
    """--history (repeated: several workers' files), else the config's
    notify.history_path; None when history is off."""
    from stream.alerting.notifications import history_file

    if args.history:
        return [Path(p) for p in args.history]
    path = history_file(_config(args))
    return [Path(path)] if path is not None else None


def _open_history(args: argparse.Namespace, required: bool = True) -> Any:
    from stream.alerting.history import AlertHistory

    paths = _history_paths(args)
    missing = None if paths is None else next((p for p in paths if not p.is_file()), None)
    if paths is None or missing is not None:
        if not required:
            return None
        where = "notify.history_path is off" if paths is None else f"no alert history at {missing}"
        raise UserError(f"{where}; pass --history FILE (the file a worker writes)")
    return AlertHistory(paths[0]) if len(paths) == 1 else AlertHistory.merged(paths)


def _list(args: argparse.Namespace, now: int) -> int:
    from stream.alerting.history import format_alert_rows, parse_since

    since = parse_since(args.since, now) if args.since else None
    with _open_history(args) as history:
        rows = history.list_alerts(status=args.status, since_ms=since, limit=args.limit)
    if not rows:
        print("no alerts", file=sys.stderr)
        return 0
    print(f"{'ALERT':<12}  {'STATUS':<8}  {'SEVERITY':<8}  {'STARTED (UTC)':<19}  "
          f"{'FOR':>8}  RULE  SERIES")  # fmt: skip
    for line in format_alert_rows(rows, now):
        print(line)
    return 0


def _show(args: argparse.Namespace, now: int) -> int:
    from stream.alerting.history import format_alert_detail

    with _open_history(args) as history:
        detail = history.show_alert(args.id)
        if detail is None:
            raise UserError(f"unknown alert {args.id!r} (not in {history.path})")
    for line in format_alert_detail(detail):
        print(line)
    return 0


def _author(args: argparse.Namespace) -> str:
    import getpass

    if args.author:
        return str(args.author)
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _duration_ms(text: str) -> int:
    """``90s``, ``30m``, ``2h``, ``1h30m``, ``1d`` as milliseconds."""
    import re

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    s = text.strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", s)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhdw])|\s", "", s):
        raise UserError(f"--duration {text!r}: expected e.g. 90s, 30m, 2h, 1h30m or 1d")
    ms = int(sum(float(n) * units[u] for n, u in parts) * 1000)
    if ms <= 0:
        raise UserError(f"--duration {text!r}: must be longer than zero")
    return ms


def _until_ms(text: str, now: int) -> int:
    from datetime import UTC, datetime

    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"--until {text!r}: expected an ISO time like 2026-11-26T18:00") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ms = int(dt.timestamp() * 1000)
    if ms <= now:
        raise UserError(f"--until {text!r}: that is in the past")
    return ms


def _publish(args: argparse.Namespace, event: Any) -> None:
    from stream.alerting.control import publish_control
    from stream.ingest.kafka_client import security_kwargs

    cfg = _config(args)
    k = cfg.kafka
    asyncio.run(
        publish_control(k.bootstrap_servers, k.control_topic, event, security=security_kwargs(k))
    )


def _silence(args: argparse.Namespace, now: int) -> int:
    import uuid
    from datetime import UTC, datetime

    from stream.alerting.matchers import Matcher, MatcherError
    from stream.alerting.silences import ControlEvent, ControlEventError, Silence

    try:
        matchers = tuple(Matcher.parse(m) for m in args.match)
    except MatcherError as exc:
        raise UserError(f"--match: {exc}") from None
    ends = _until_ms(args.until, now) if args.until else now + _duration_ms(args.duration)
    author = _author(args)
    try:
        silence = Silence(f"s-{uuid.uuid4().hex[:12]}", matchers, now, ends, author, args.comment)
    except ControlEventError as exc:
        raise UserError(str(exc)) from None
    _publish(args, ControlEvent("silence", silence=silence, author=author, ts_ms=now))
    until = datetime.fromtimestamp(ends / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    print(silence.id)
    print(f"silenced {', '.join(map(str, matchers))} until {until}", file=sys.stderr)
    return 0


def _unsilence(args: argparse.Namespace, now: int) -> int:
    from stream.alerting.silences import ControlEvent

    history = _open_history(args, required=False)
    if history is not None:
        with history:
            known = {row["id"] for row in history.list_silences()}
        if args.id not in known:  # maybe not recorded yet: say so, but send it
            print(f"note: silence {args.id} is not in {history.path} (yet)", file=sys.stderr)
    event = ControlEvent(
        "unsilence", silence_id=args.id, author=_author(args), comment=args.comment,
        ts_ms=now,
    )  # fmt: skip
    _publish(args, event)
    print(f"silence {args.id} ends now", file=sys.stderr)
    return 0


def _ack(args: argparse.Namespace, now: int) -> int:
    from stream.alerting.silences import ControlEvent

    target = args.id
    history = _open_history(args, required=False)
    if history is not None:  # name the full alert_id, and refuse a typo
        with history:
            found = history.find_alert(args.id)
            if found is None:
                raise UserError(f"unknown alert {args.id!r} (not in {history.path})")
        target = found
    author = _author(args)
    _publish(
        args, ControlEvent("ack", target=target, author=author, comment=args.comment, ts_ms=now)
    )
    print(f"alert {target} acknowledged by {author}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace, now: int) -> int:
    from stream.alerting.history import parse_since
    from stream.offline.report import render_review_report, review_text, weekly_review

    since = parse_since(args.since, now)
    with _open_history(args) as history:
        review = weekly_review(history, since, now)
    for line in review_text(review):
        print(line)
    if args.html:
        render_review_report(args.html, review)
        print(f"review → {args.html}", file=sys.stderr)
    return 0


_ACTIONS = {
    "list": _list,
    "show": _show,
    "silence": _silence,
    "unsilence": _unsilence,
    "ack": _ack,
    "report": _report,
}
