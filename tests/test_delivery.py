"""Delivery through real local servers: SMTP, a signed DingTalk robot, WeCom, webhooks."""
# ruff: noqa: F811  (pytest fixtures imported from tests.servers are re-bound as parameters)

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from stream.alerting.delivery import (
    Channel,
    Deliverer,
    DeliveryAttempt,
    Message,
    RouteTargets,
    mask_url,
)
from tests.servers import (  # noqa: F401  (fixtures are used by name)
    BlackholeServer,
    RobotServer,
    SmtpServer,
    WebhookServer,
    blackhole_server,
    closed_port,
    dingtalk_robot,
    smtp_server,
    wait_until,
    webhook_server,
    wecom_robot,
)


def fast(r: dict[str, RouteTargets], **kw: Any) -> Deliverer:
    """A Deliverer with tiny, jitter-free backoffs."""
    return Deliverer(r, backoff_s=0.01, jitter=0.0, **kw)


def msg(i: int | str = 1, route: str = "ops", severity: str = "critical") -> Message:
    return Message(
        title=f"alipay create_payment error rate 12% (alert {i})",
        body=f"**error_rate** 0.12 vs 0.01 expected\n\nalert `A-{i}`",
        alert_ids=(f"A-{i}",),
        group_key="alipay",
        severity=severity,
        route=route,
    )


def routes(*specs: RouteTargets) -> dict[str, RouteTargets]:
    return {r.name: r for r in specs}


async def run(d: Deliverer, *messages: Message, timeout: float = 10.0) -> None:
    await d.start()
    try:
        for m in messages:
            d.submit(m)
        await d.drain(timeout)
        assert d.pending == 0
    finally:
        await d.stop()


async def test_email_reaches_local_smtp_server(smtp_server: SmtpServer) -> None:
    d = fast(routes(RouteTargets("ops", (Channel(smtp_server.url(), "mail"),))))
    await run(d, msg(7))
    assert len(smtp_server.messages) == 1
    mail = smtp_server.messages[0]
    assert "alert 7" in mail["Subject"]
    assert "A-7" in mail.as_string()
    assert smtp_server.recipients == [["oncall@example.com"]]
    assert smtp_server.logins == ["paywatch"]  # Apprise logged in with the URL's password
    [attempt] = d.attempts
    assert attempt.ok and attempt.alert_ids == ("A-7",) and attempt.channel_name == "mail"
    assert smtp_server.password not in attempt.channel and "****" in attempt.channel


async def test_dingtalk_requests_are_signed_and_accepted(dingtalk_robot: RobotServer) -> None:
    d = fast(routes(RouteTargets("ops", (Channel(dingtalk_robot.url),))))
    await run(d, msg(1), msg(2))
    assert len(dingtalk_robot.requests) == 2
    for req in dingtalk_robot.requests:
        assert req.sign_ok is True and req.errcode == 0
        assert req.body["msgtype"] == "markdown"
    texts = " ".join(r.text for r in dingtalk_robot.requests)
    assert "A-1" in texts and "A-2" in texts
    assert [a.ok for a in d.attempts] == [True, True]


async def test_dingtalk_wrong_secret_is_a_failure_not_a_success(
    dingtalk_robot: RobotServer,
) -> None:
    wrong = dingtalk_robot.url.replace(str(dingtalk_robot.secret), "SECwrongwrongwrong")
    d = fast(routes(RouteTargets("ops", (Channel(wrong),))), max_attempts=2)
    await run(d, msg())
    assert [r.errcode for r in dingtalk_robot.requests] == [310000, 310000]
    assert [r.sign_ok for r in dingtalk_robot.requests] == [False, False]
    assert [(a.attempt, a.ok) for a in d.attempts] == [(1, False), (2, False)]
    assert "310000" in str(d.attempts[0].error)


async def test_refusals_are_retried_then_succeed(dingtalk_robot: RobotServer) -> None:
    dingtalk_robot.fail(310000, "keywords not in content", times=2)
    seen: list[DeliveryAttempt] = []
    d = fast(routes(RouteTargets("ops", (Channel(dingtalk_robot.url),))), on_attempt=seen.append)
    await run(d, msg())
    assert [r.errcode for r in dingtalk_robot.requests] == [310000, 310000, 0]
    assert [(a.attempt, a.ok) for a in seen] == [(1, False), (2, False), (3, True)]
    assert seen == d.attempts
    assert "keywords not in content" in str(seen[0].error)


async def test_retry_absorbs_messages_queued_behind_it(dingtalk_robot: RobotServer) -> None:
    dingtalk_robot.fail(130101, "send too fast", times=2)
    d = fast(routes(RouteTargets("ops", (Channel(dingtalk_robot.url),))))
    await run(d, *(msg(i) for i in range(5)))
    assert [r.errcode for r in dingtalk_robot.requests] == [130101, 130101, 0]
    assert all(f"A-{i}" in dingtalk_robot.requests[-1].text for i in range(5))
    assert d.attempts[-1].ok and d.attempts[-1].batched == 5


async def test_submit_from_another_thread(webhook_server: WebhookServer) -> None:
    d = fast(routes(RouteTargets("ops", (Channel(webhook_server.url),))))
    await d.start()
    try:
        await asyncio.to_thread(d.submit, msg(4))
        assert await wait_until(lambda: len(webhook_server.posts) == 1)
        await d.drain(5)
        assert d.pending == 0
    finally:
        await d.stop()


async def test_repeated_refusal_goes_to_fallback_route_once(
    dingtalk_robot: RobotServer, webhook_server: WebhookServer, closed_port: int
) -> None:
    dingtalk_robot.fail(310000, "keywords not in content", times=None)
    d = fast(
        routes(
            RouteTargets(
                "pager",
                (Channel(dingtalk_robot.url), Channel(f"json://127.0.0.1:{closed_port}/x")),
                fallback="backup",
            ),
            RouteTargets("backup", (Channel(webhook_server.url),), fallback="pager"),
        ),
        max_attempts=3,
    )
    await run(d, msg(9, route="pager"))
    assert len(dingtalk_robot.requests) == 3  # retried, never accepted
    failed = [a for a in d.attempts if a.route == "pager"]
    assert len(failed) == 6 and not any(a.ok for a in failed)
    assert len(webhook_server.posts) == 1
    assert "alert 9" in webhook_server.posts[0]["title"]
    last = d.attempts[-1]
    assert (last.route, last.ok, last.fallback_from) == ("backup", True, "pager")


async def test_fallback_never_loops(closed_port: int) -> None:
    dead = f"json://127.0.0.1:{closed_port}/x"
    d = fast(
        routes(
            RouteTargets("a", (Channel(dead),), fallback="b"),
            RouteTargets("b", (Channel(dead),), fallback="a"),
        ),
        max_attempts=2,
    )
    await run(d, msg(route="a"), timeout=5)
    assert [a.route for a in d.attempts] == ["a", "a", "b", "b"]
    assert not any(a.ok for a in d.attempts)


async def test_dead_channels_do_not_delay_a_live_one(
    blackhole_server: BlackholeServer, webhook_server: WebhookServer, closed_port: int
) -> None:
    d = fast(
        routes(
            RouteTargets(
                "ops",
                (
                    Channel(blackhole_server.url, "hangs"),
                    Channel(f"json://127.0.0.1:{closed_port}/x", "refused"),
                    Channel(webhook_server.url, "live"),
                ),
            )
        ),
        send_timeout_s=3.0,
    )
    await d.start()
    try:
        t0 = time.monotonic()
        for i in range(5):
            d.submit(msg(i))
        submit_s = time.monotonic() - t0
        assert await wait_until(lambda: len(webhook_server.posts) == 5, timeout=2.0)
        live_s = time.monotonic() - t0
        assert submit_s < 0.05
        assert live_s < 1.0, f"live channel took {live_s:.2f} s behind a hung one"
        assert d.pending == 5  # the hung channel is still trying
    finally:
        await d.stop()


async def test_burst_over_robot_limit_is_batched_not_dropped(dingtalk_robot: RobotServer) -> None:
    d = fast(routes(RouteTargets("ops", (Channel(dingtalk_robot.url),))))
    await run(d, *(msg(i) for i in range(21)))
    assert len(dingtalk_robot.requests) <= 20
    assert all(r.errcode == 0 for r in dingtalk_robot.requests)  # never hit the robot's limit
    texts = "\n".join(r.text for r in dingtalk_robot.requests)
    assert all(f"A-{i}" in texts for i in range(21))
    delivered = [i for a in d.attempts if a.ok for i in a.alert_ids]
    assert sorted(delivered) == sorted(f"A-{i}" for i in range(21))
    assert max(a.batched for a in d.attempts) > 1


async def test_over_limit_waits_for_a_slot_then_sends_one_batch(
    webhook_server: WebhookServer,
) -> None:
    d = fast(
        routes(RouteTargets("ops", (Channel(webhook_server.url),), rate_limit_per_min=2)),
        rate_window_s=1.0,
    )
    await d.start()
    try:
        for i in range(5):
            d.submit(msg(i))
        await d.drain(5)
        assert len(webhook_server.posts) == 2  # one alone, the rest on the last slot
        t0 = time.monotonic()
        for i in range(5, 8):
            d.submit(msg(i))
        await d.drain(5)
        assert time.monotonic() - t0 >= 0.5  # waited for the window instead of sending
        assert len(webhook_server.posts) == 3
        assert all(f"A-{i}" in webhook_server.posts[2]["message"] for i in range(5, 8))
    finally:
        await d.stop()


async def test_wecom_errcode_is_a_failure(wecom_robot: RobotServer) -> None:
    wecom_robot.fail(45009, "api freq out of limit", times=1)
    d = fast(routes(RouteTargets("ops", (Channel(wecom_robot.url),))))
    await run(d, msg(3))
    assert [r.errcode for r in wecom_robot.requests] == [45009, 0]
    assert [a.ok for a in d.attempts] == [False, True]
    assert "A-3" in wecom_robot.requests[-1].text


@pytest.mark.parametrize(
    ("url", "secrets", "kept"),
    [
        (
            "dingtalk://SECabc123def@TOKEN0123abcd/",
            ["SECabc123def", "TOKEN0123abcd"],
            "dingtalk://",
        ),
        ("wecombot://wecom-key-42", ["wecom-key-42"], "wecombot://"),
        ("mailto://ops:hunter22@smtp.example.com?to=a@example.com", ["hunter22"], "ops:****@smtp"),
        ("json://u:pw-9x@hooks.example.com/in?token=zz9top", ["pw-9x", "zz9top"], "hooks.example"),
        ("tgram://123456789:AAHbottoken/987", ["AAHbottoken"], "tgram://"),
        ("nope://user:pass@host/tok", ["pass", "tok"], "nope://"),
    ],
)
def test_mask_url_hides_every_secret(url: str, secrets: list[str], kept: str) -> None:
    masked = mask_url(url)
    assert kept in masked
    assert "****" in masked
    for s in secrets:
        assert s not in masked


async def test_secrets_stay_out_of_audit_and_logs(
    dingtalk_robot: RobotServer, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad_mail = smtp_server.url().replace(smtp_server.password, "wrong-password-77")
    dingtalk_robot.fail(310000, "sign not match", times=1)
    # One attempt each: Apprise throttles a second e-mail from one channel by 5.5 s.
    d = fast(
        routes(RouteTargets("ops", (Channel(dingtalk_robot.url), Channel(bad_mail)))),
        max_attempts=1,
    )
    await run(d, msg())
    assert smtp_server.messages == [] and len(d.attempts) == 2
    assert not any(a.ok for a in d.attempts)
    secrets = [dingtalk_robot.token, str(dingtalk_robot.secret), "wrong-password-77"]
    text = caplog.text + repr(d.attempts)
    assert "dingtalk" in caplog.text  # something was logged
    for s in secrets:
        assert s not in text


async def test_submit_never_raises(webhook_server: WebhookServer) -> None:
    seen: list[DeliveryAttempt] = []

    def broken_store(a: DeliveryAttempt) -> None:
        seen.append(a)
        raise RuntimeError("disk full")

    d = fast(routes(RouteTargets("ops", (Channel(webhook_server.url),))), on_attempt=broken_store)
    await d.start()
    d.submit(msg(route="nowhere"))
    d.submit(msg(1))
    await d.drain(5)
    await d.stop()
    d.submit(msg(2))  # after stop: dropped with a log line, no exception
    assert len(webhook_server.posts) == 1
    assert [(a.route, a.ok) for a in seen] == [("nowhere", False), ("ops", True)]


def test_unknown_fallback_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="unknown route 'missing'"):
        Deliverer(routes(RouteTargets("ops", (), fallback="missing")))


async def test_stop_is_prompt_with_sends_in_flight_and_workers_waiting(
    blackhole_server: BlackholeServer, webhook_server: WebhookServer
) -> None:
    d = fast(
        routes(
            RouteTargets("slow", (Channel(blackhole_server.url),)),
            RouteTargets("limited", (Channel(webhook_server.url),), rate_limit_per_min=1),
        ),
        send_timeout_s=10.0,
    )
    await d.start()
    d.submit(msg(1, route="slow"))
    for i in range(3):
        d.submit(msg(i, route="limited"))
    assert await wait_until(lambda: len(webhook_server.posts) == 1)  # all 3 on the one slot
    d.submit(msg(3, route="limited"))  # this one now waits a minute for a slot
    (limited,) = d._workers["limited"]
    assert await wait_until(limited.queue.empty)  # taken off the queue: waiting for the slot
    t0 = time.monotonic()
    async with asyncio.timeout(3):
        await d.stop()
    assert time.monotonic() - t0 < 1.5
    assert d.pending == 2  # the hung send and the one waiting for a slot
