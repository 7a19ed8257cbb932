"""The action runner against a real local endpoint: dry run and the kill switch send
nothing, failures are retried within limits and audited, rate limit and cooldown hold,
commands run without a shell, and the request follows the documented contract."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from stream.alerting.actions import ActionRunner
from stream.alerting.actions.contract import REQUEST_SCHEMA, RUN_HEADER
from stream.alerting.history import AlertHistory
from stream.alerting.record import AlertRecord
from stream.clock import ManualClock
from stream.config import ActionsConfig, ConfigError, config_from_dict
from tests.merchant_server import MerchantQueryServer

SECRET = "s3cret"
NOW = 1_767_225_600_000
EVIDENCE = {"missing_callbacks": {"orders": [{"provider": "alipay", "merchant_id": "m1",
            "out_trade_no": ["T1", "T2"]}], "reported": 2, "recovered": 0, "still_missing": 2,
            "truncated": False}}  # fmt: skip


def record(status: str = "firing", alert_id: str = "a1", severity: str = "warning") -> AlertRecord:
    return AlertRecord(alert_id, "f-" + alert_id, status, severity, "callbacks", "notification",
                       {"provider": "alipay"}, started_at=NOW - 60_000, window_end=NOW,
                       evidence=EVIDENCE)  # fmt: skip


def actions(url: str, top: dict[str, Any] | None = None, **action: Any) -> ActionsConfig:
    definition = {"name": "requery", "url": url, "secret_env": "PW_SECRET", "backoff_s": 0.01,
                  "on": ["firing", "resolved", "escalation"], **action}  # fmt: skip
    cfg = config_from_dict({"actions": {**(top or {}), "definitions": [definition]}})
    return cfg.actions


@pytest.fixture
def server() -> Any:
    s = MerchantQueryServer(SECRET.encode(), ManualClock(NOW)).start()
    yield s
    s.stop()


async def run(cfg: ActionsConfig, *records: AlertRecord, history: Any = None) -> ActionRunner:
    clock = ManualClock(NOW)
    audit = history.record_action if history is not None else None
    runner = ActionRunner(cfg, audit=audit, clock=clock, env={"PW_SECRET": SECRET})
    await runner.start()
    try:
        for rec in records:
            runner.submit([rec], NOW)
            await runner.idle()
    finally:
        await runner.stop()
    return runner


async def test_a_run_sends_the_contract_body_signed(server: MerchantQueryServer) -> None:
    runner = await run(actions(server.url), record())
    (req,) = server.requests
    jsonschema.validate(req["body"], REQUEST_SCHEMA)
    assert req["body"]["orders"] == [
        {"provider": "alipay", "merchant_id": "m1", "out_trade_no": "T1"},
        {"provider": "alipay", "merchant_id": "m1", "out_trade_no": "T2"},
    ]
    assert server.bad_signatures == 0 and req["headers"][RUN_HEADER]
    assert [(r.result, r.attempts, r.status) for r in runner.runs] == [("ok", 1, 200)]


@pytest.mark.parametrize(
    ("top", "action", "result"),
    [({"dry_run": True}, {}, "dry_run"), ({}, {"dry_run": True}, "dry_run"),
     ({"enabled": False}, {}, "disabled")],
)  # fmt: skip
async def test_dry_run_and_the_kill_switch_send_nothing(
    server: MerchantQueryServer, top: dict[str, Any], action: dict[str, Any], result: str
) -> None:
    runner = await run(actions(server.url, top, **action), record(), record("resolved"))
    assert [(r.trigger, r.result) for r in runner.runs] == [
        ("firing", result),
        ("resolved", result),
    ]
    assert server.requests == [] and runner.sent == 0


async def test_a_failing_endpoint_is_retried_within_limits_and_audited(
    server: MerchantQueryServer, tmp_path: Path
) -> None:
    server.script = [503, 503, 503, 503]
    with AlertHistory(tmp_path / "h.db") as history:
        history.record_alert(record(), NOW)
        runner = await run(actions(server.url, max_attempts=3), record(), history=history)
        (row,) = history.show_alert("a1")["actions"]  # type: ignore[index]
    assert len(server.requests) == 3  # max_attempts, not one more
    assert (row["result"], row["attempts"], row["status"]) == ("failed", 3, 503)
    assert row["detail"].count("HTTP 503") == 3 and runner.runs[0].result == "failed"


async def test_a_refusal_is_not_retried_and_a_retry_can_succeed(
    server: MerchantQueryServer,
) -> None:
    server.script = [503, 400]
    runner = await run(actions(server.url, max_attempts=5), record())
    assert len(server.requests) == 2 and runner.runs[0].result == "failed"
    server.script = [503]
    runner = await run(actions(server.url, max_attempts=5), record("firing", "a2"))
    assert [(r.result, r.attempts) for r in runner.runs] == [("ok", 2)]


async def test_cooldown_rate_limit_and_triggers(server: MerchantQueryServer) -> None:
    cfg = actions(server.url, max_runs_per_hour=2, cooldown_s=600)
    runner = await run(
        cfg,
        record(),  # firing: runs
        record(severity="critical"),  # escalation of the same episode: runs
        record("firing", "a2"),  # another alert: over the hourly limit
        record("resolved"),  # resolved: over the limit too
    )
    assert [(r.alert_id, r.trigger, r.result) for r in runner.runs] == [
        ("a1", "firing", "ok"),
        ("a1", "escalation", "ok"),
        ("a2", "firing", "rate_limited"),
        ("a1", "resolved", "rate_limited"),
    ]
    assert len(server.requests) == 2


async def test_a_command_runs_without_a_shell_and_gets_the_body(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    script = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_bytes(sys.stdin.buffer.read())"
    cfg = config_from_dict({"actions": {"definitions": [{
        "name": "local", "kind": "command", "command": [sys.executable, "-c", script, str(out)],
    }]}}).actions  # fmt: skip
    runner = await run(cfg, record())
    assert [(r.result, r.status) for r in runner.runs] == [("ok", 0)]
    assert json.loads(out.read_bytes())["alert"]["alert_id"] == "a1"


def test_bad_action_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"actions.definitions\[0\].secret_env"):
        config_from_dict({"actions": {"definitions": [{"name": "q", "url": "http://x"}]}})
    with pytest.raises(ConfigError, match=r"actions.definitions\[0\].on"):
        bad = {"name": "q", "kind": "command", "command": ["x"], "on": ["later"]}
        config_from_dict({"actions": {"definitions": [bad]}})
