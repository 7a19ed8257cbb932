"""`paywatch alerts …`, the control topic and the Notifications object, without a worker.

(The worker-driven acceptance is in tests/test_notify_e2e.py.)
"""
# ruff: noqa: F811  (pytest fixtures imported from tests.servers are re-bound as parameters)

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.alerting.control import publish_control
from stream.alerting.notifications import Notifications
from stream.alerting.silences import ControlEvent
from stream.cli.main import main as paywatch_main
from stream.config import Config, ConfigError, config_from_dict
from stream.ingest.kafka_client import KafkaUnavailable
from stream.live.control_reader import ControlReader
from tests.servers import closed_port, wait_until  # noqa: F401  (fixture used by name)

NOW = int(time.time() * 1000)


def record(status: str, series: dict[str, str], started: int, **kw: Any) -> dict[str, Any]:
    from stream.judge.judgement import alert_id, fingerprint

    fp = fingerprint("system_error_rate", series)
    return {
        "schema_version": 1,
        "alert_id": alert_id(fp, started),
        "fingerprint": fp,
        "status": status,
        "severity": "critical",
        "rule": "system_error_rate",
        "signal": "error_rate",
        "series": series,
        "started_at": started,
        "resolved_at": started + 60_000 if status == "resolved" else None,
        "window_end": started + (70_000 if status == "resolved" else 10_000),
        "detected_at": NOW,
        "value": 0.4,
        "expected": 0.01,
        "score": 0.9,
        "summary": "error rate 40%",
        "hints": [],
        **kw,
    }


@pytest.fixture
def history_file(tmp_path: Path) -> Path:
    """A history written by Notifications with no routes (as `paywatch run` without any)."""
    cfg = Config()
    cfg.notify.history_path = str(tmp_path / "h.db")
    notes = Notifications(cfg)
    assert notes.routes == []
    paypal = record("firing", {"provider": "paypal"}, NOW - 300_000)
    alipay = record("firing", {"provider": "alipay"}, NOW - 900_000)
    notes.on_alerts([paypal, alipay], NOW - 200_000)
    notes.on_alerts([{**alipay, **record("resolved", {"provider": "alipay"}, NOW - 900_000)}], NOW)
    notes.apply_control(
        ControlEvent.encode(
            ControlEvent.from_dict(
                {"kind": "silence", "id": "s-known", "matchers": ["provider=wechatpay"],
                 "starts_at": NOW, "ends_at": NOW + 3_600_000, "author": "li"}
            )
        ),
        NOW,
    )  # fmt: skip
    notes.tick(NOW + 60_000)
    assert notes.submitted == 0  # nothing to send without routes...
    assert notes.history is not None
    notes.history.close()
    return tmp_path / "h.db"  # ...but history has every record


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = paywatch_main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_list_and_show_read_the_history(
    history_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(capsys, "alerts", "list", "--history", str(history_file))
    assert rc == 0
    header, first, second = out.splitlines()
    assert header.split()[:3] == ["ALERT", "STATUS", "SEVERITY"]
    assert "FIRING" in first and "paypal" in first  # newest first
    assert "RESOLVED" in second and "alipay" in second

    rc, out, _ = run(capsys, "alerts", "list", "--status", "firing", "--history", str(history_file))
    assert rc == 0 and "paypal" in out and "alipay" not in out

    # alipay resolved 14 minutes ago: not active within the last 10.
    rc, out, _ = run(capsys, "alerts", "list", "--since", "10m", "--history", str(history_file))
    assert rc == 0 and "paypal" in out and "alipay" not in out

    aid = record("firing", {"provider": "alipay"}, NOW - 900_000)["alert_id"]
    rc, out, _ = run(capsys, "alerts", "show", aid[:6], "--history", str(history_file))
    assert rc == 0
    assert out.startswith(f"alert {aid}  (resolved, critical)")
    assert "record firing" in out and "record resolved" in out


def test_the_config_names_the_history_file(
    history_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "paywatch.yaml"
    cfg.write_text(yaml.safe_dump({"notify": {"history_path": str(history_file)}}))
    rc, out, _ = run(capsys, "alerts", "list", "--config", str(cfg))
    assert rc == 0 and "paypal" in out

    cfg.write_text(yaml.safe_dump({"notify": {"history_path": "off"}}))
    rc, _, err = run(capsys, "alerts", "list", "--config", str(cfg))
    assert rc == 2 and "notify.history_path is off; pass --history FILE" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "--history", "/nope/h.db"], "no alert history at /nope/h.db"),
        (["list", "--since", "yesterday"], "--since 'yesterday': expected 30m, 2h, 7d"),
        (["show", "zzzzzz"], "unknown alert 'zzzzzz'"),
        (["ack", "zzzzzz", "--bootstrap", "127.0.0.1:1"], "unknown alert 'zzzzzz'"),
        (
            ["silence", "--match", "provider", "--duration", "1h", "--comment", "x"],
            "--match: bad matcher 'provider': expected label=value",
        ),
        (
            ["silence", "--match", "provider=~(", "--duration", "1h", "--comment", "x"],
            "bad regex",
        ),
        (
            ["silence", "--match", "provider=~.*", "--duration", "1h", "--comment", "x"],
            "would match every alert",
        ),
        (
            ["silence", "--match", "provider=alipay", "--duration", "soon", "--comment", "x"],
            "--duration 'soon': expected e.g. 90s, 30m, 2h, 1h30m or 1d",
        ),
        (
            ["silence", "--match", "provider=alipay", "--until", "2020-01-01", "--comment", "x"],
            "--until '2020-01-01': that is in the past",
        ),
    ],
)
def test_user_mistakes_are_one_line(
    args: list[str],
    message: str,
    history_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if "--history" not in args and args[0] in ("list", "show", "ack", "unsilence"):
        args = [*args, "--history", str(history_file)]
    rc, out, err = run(capsys, "alerts", *args)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("paywatch alerts: error: ")
    assert message in err


def test_unreachable_kafka_is_one_line(
    closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run(
        capsys, "alerts", "silence", "--match", "provider=alipay", "--duration", "2h",
        "--comment", "upgrade", "--bootstrap", f"127.0.0.1:{closed_port}",
    )  # fmt: skip
    assert rc == 2
    assert err.strip() == (
        f"paywatch alerts: error: cannot reach Kafka at 127.0.0.1:{closed_port}; check "
        "kafka.bootstrap_servers (or start a local one with `paywatch broker`)"
    )


def test_bad_control_records_are_skipped_with_a_reason(caplog: pytest.LogCaptureFixture) -> None:
    cfg = Config()
    cfg.notify.history_path = "off"
    notes = Notifications(cfg)
    assert notes.history is None
    assert not notes.apply_control(b"{not json", NOW)
    assert not notes.apply_control(b'{"kind": "mute"}', NOW)
    assert not notes.apply_control(b'{"kind": "silence", "id": "s1", "matchers": []}', NOW)
    assert not notes.apply_control(None, NOW)
    assert notes.control_rejected == 4
    assert "control event kind 'mute'" in caplog.text
    assert notes.apply_control(
        b'{"kind":"silence","id":"s2","matchers":["provider=alipay"],"starts_at":0,'
        b'"ends_at":99999999999999}',
        NOW,
    )
    assert notes.silences.get("s2") is not None and notes.control_applied == 1


def test_unusable_history_path_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "h.db").write_bytes(b"this is not sqlite" * 100)
    cfg = config_from_dict({"notify": {"history_path": str(tmp_path / "h.db")}})
    with pytest.raises(ConfigError, match=r"^notify.history_path: history .*h.db"):
        Notifications(cfg)


async def test_worker_reports_a_bad_history_path_before_touching_kafka(
    tmp_path: Path, closed_port: int
) -> None:
    from stream.live.worker import run_worker

    (tmp_path / "h.db").write_bytes(b"this is not sqlite" * 100)
    cfg = config_from_dict(
        {
            "kafka": {"bootstrap_servers": f"127.0.0.1:{closed_port}"},
            "notify": {"history_path": str(tmp_path / "h.db")},
        }
    )
    with pytest.raises(ConfigError, match=r"^notify\.history_path: "):
        await run_worker(cfg, asyncio.Event())


async def test_cli_events_reach_a_control_reader_from_the_beginning_and_live(
    kafka_config: Config,
    history_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    k = kafka_config.kafka
    cfg_file = tmp_path / "paywatch.yaml"
    cfg_file.write_text(
        yaml.safe_dump(
            {
                "kafka": {
                    "bootstrap_servers": k.bootstrap_servers,
                    "control_topic": k.control_topic,
                },
                "notify": {"history_path": str(history_file)},
            }
        )
    )
    cli = ["--config", str(cfg_file)]
    # Published before any reader exists: a reader starting later must still see it.
    rc = await asyncio.to_thread(
        paywatch_main,
        ["alerts", "silence", "--match", "provider=paypal", "--duration", "1h30m",
         "--author", "li", "--comment", "PayPal upgrade", *cli],
    )  # fmt: skip
    assert rc == 0
    seen: list[tuple[ControlEvent, int]] = []
    reader = ControlReader(k, lambda raw, now: seen.append((ControlEvent.decode(raw or b""), now)))
    await reader.start()
    try:
        assert await wait_until(lambda: len(seen) == 1, timeout=10)
        silence = seen[0][0].silence
        assert silence is not None and silence.author == "li"
        assert silence.comment == "PayPal upgrade"
        assert [str(m) for m in silence.matchers] == ['provider="paypal"']
        assert abs(silence.ends_at - silence.starts_at - 5_400_000) < 1  # type: ignore[operator]

        paypal = record("firing", {"provider": "paypal"}, NOW - 300_000)["alert_id"]
        rc = await asyncio.to_thread(
            paywatch_main, ["alerts", "ack", paypal[:8], "--author", "wang", *cli]
        )
        assert rc == 0
        rc = await asyncio.to_thread(paywatch_main, ["alerts", "unsilence", silence.id, *cli])
        assert rc == 0
        # No worker recorded the new silence in this history: a note, not a refusal.
        assert (
            f"note: silence {silence.id} is not in {history_file} (yet)" in capsys.readouterr().err
        )
        assert await wait_until(lambda: len(seen) == 3, timeout=10)
    finally:
        await reader.stop()
    ack, unsilence = seen[1][0], seen[2][0]
    assert (ack.kind, ack.target, ack.author) == ("ack", paypal, "wang")  # the full id
    assert (unsilence.kind, unsilence.silence_id) == ("unsilence", silence.id)


async def test_publish_control_to_unreachable_kafka_raises_kafka_unavailable(
    closed_port: int,
) -> None:
    with pytest.raises(KafkaUnavailable, match="cannot reach Kafka"):
        await publish_control(f"127.0.0.1:{closed_port}", "c", ControlEvent("ack", target="a"))


def test_the_docs_example_config_loads_and_builds_notifications() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "alerts.md").read_text()
    example = text.split("## Complete example", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    env = {
        name: "x1y2z3"
        for name in (
            "DINGTALK_SECRET", "DINGTALK_TOKEN", "ONCALL_MOBILE", "SMTP_USER", "SMTP_PASSWORD",
            "WECOM_BOT_KEY", "TWILIO_SID", "TWILIO_TOKEN", "SMS_FROM", "MANAGER_PHONE",
        )
    }  # fmt: skip
    cfg = config_from_dict(yaml.safe_load(example), env)
    cfg.notify.history_path = "off"
    notes = Notifications(cfg)
    assert notes.routes == ["oncall", "payments-team", "default", "backup", "managers"]
    assert notes.dispatcher.routes["oncall"].escalate_to == "managers"
