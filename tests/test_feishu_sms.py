"""Feishu (signed custom bot) and SMS (Twilio through Apprise) against real local HTTP servers
playing each provider's API, error answers included: success, a provider error code that is
retried until it passes, and one that never passes and sends the message to the fallback route.

Feishu goes through paywatch's own sender (Apprise's plugin cannot sign); its ``?endpoint=``
argument points it at the local bot.  Apprise's Twilio plugin has no endpoint option, so the
``twilio_api`` fixture patches the plugin's ``notify_sms_url`` class attribute for the test.
Apprise has no Alibaba Cloud SMS plugin (2.3), so there is nothing of it to test here.
"""
# ruff: noqa: F811  (pytest fixtures imported from tests.servers are re-bound as parameters)

from __future__ import annotations

import logging
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
    FeishuServer,
    TwilioServer,
    WebhookServer,
    feishu_bot,
    twilio_api,
    webhook_server,
)

ONCALL = "+8613800138000"


def fast(r: dict[str, RouteTargets], **kw: Any) -> Deliverer:
    """A Deliverer with tiny, jitter-free backoffs."""
    return Deliverer(r, backoff_s=0.01, jitter=0.0, **kw)


def msg(i: int = 1, route: str = "ops", body_format: str = "markdown") -> Message:
    return Message(
        title=f"alipay error rate 12% (alert {i})",
        body=f"**system_error_rate** 0.12 vs 0.002 expected\n\nalert `A-{i}`",
        alert_ids=(f"A-{i}",),
        group_key="alipay",
        severity="critical",
        route=route,
        body_format=body_format,
    )


def routes(*specs: RouteTargets) -> dict[str, RouteTargets]:
    return {r.name: r for r in specs}


async def run(d: Deliverer, *messages: Message) -> None:
    await d.start()
    try:
        for m in messages:
            d.submit(m)
        await d.drain(10)
        assert d.pending == 0
    finally:
        await d.stop()


# --------------------------------------------------------------------------- Feishu


async def test_feishu_signed_card_is_accepted(feishu_bot: FeishuServer) -> None:
    d = fast(routes(RouteTargets("ops", (Channel(feishu_bot.url),))))
    await run(d, msg(1), msg(2, body_format="text"))
    card, text = feishu_bot.requests
    assert (card.code, card.sign_ok, card.body["msg_type"]) == (0, True, "interactive")
    assert card.body["card"]["header"]["template"] == "red"  # critical
    assert "alert 1" in card.text and "A-1" in card.text
    assert (text.code, text.sign_ok, text.body["msg_type"]) == (0, True, "text")
    assert "A-2" in text.text
    assert [a.ok for a in d.attempts] == [True, True]


async def test_feishu_wrong_secret_is_a_failure_with_the_code(feishu_bot: FeishuServer) -> None:
    wrong = feishu_bot.url.replace(str(feishu_bot.secret), "fsSECwrongwrong")
    d = fast(routes(RouteTargets("ops", (Channel(wrong),))), max_attempts=2)
    await run(d, msg())
    assert [(r.code, r.sign_ok) for r in feishu_bot.requests] == [(19021, False)] * 2
    assert [(a.attempt, a.ok) for a in d.attempts] == [(1, False), (2, False)]
    assert "feishu code 19021" in str(d.attempts[0].error)


async def test_feishu_unsigned_bot_and_lark_scheme(feishu_bot: FeishuServer) -> None:
    feishu_bot.secret = None  # a bot without "signature verification"
    lark = feishu_bot.url.replace("feishu://", "lark://")
    d = fast(routes(RouteTargets("ops", (Channel(lark),))))
    await run(d, msg(5))
    [req] = feishu_bot.requests
    assert (req.code, req.sign_ok) == (0, None) and "sign" not in req.body
    assert "A-5" in req.text


async def test_feishu_error_code_is_retried_then_succeeds(feishu_bot: FeishuServer) -> None:
    feishu_bot.fail(11232, "frequency limited", times=2)
    seen: list[DeliveryAttempt] = []
    d = fast(routes(RouteTargets("ops", (Channel(feishu_bot.url),))), on_attempt=seen.append)
    await run(d, msg(3))
    assert [r.code for r in feishu_bot.requests] == [11232, 11232, 0]
    assert [(a.attempt, a.ok) for a in seen] == [(1, False), (2, False), (3, True)]
    assert "frequency limited" in str(seen[0].error)
    assert "A-3" in feishu_bot.requests[-1].text


async def test_feishu_refusing_goes_to_fallback_route(
    feishu_bot: FeishuServer, webhook_server: WebhookServer
) -> None:
    feishu_bot.keywords = ("paywatch",)  # the bot's keyword rule: our text never has it
    d = fast(
        routes(
            RouteTargets("oncall", (Channel(feishu_bot.url),), fallback="backup"),
            RouteTargets("backup", (Channel(webhook_server.url),)),
        ),
        max_attempts=3,
    )
    await run(d, msg(9, route="oncall"))
    assert [r.code for r in feishu_bot.requests] == [19024] * 3
    assert len(webhook_server.posts) == 1 and "alert 9" in webhook_server.posts[0]["title"]
    last = d.attempts[-1]
    assert (last.route, last.ok, last.fallback_from) == ("backup", True, "oncall")


async def test_feishu_secret_and_token_never_reach_audit_or_logs(
    feishu_bot: FeishuServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    feishu_bot.fail(9499, "Bad Request", times=1)
    d = fast(routes(RouteTargets("ops", (Channel(feishu_bot.url),))))
    await run(d, msg())
    assert [a.ok for a in d.attempts] == [False, True]
    masked = mask_url(feishu_bot.url)
    assert masked.startswith("feishu://****@****/")
    text = caplog.text + repr(d.attempts) + masked
    for secret in (str(feishu_bot.secret), feishu_bot.token):
        assert secret not in text


# --------------------------------------------------------------------------- SMS (Twilio)


async def test_twilio_sms_is_delivered(twilio_api: TwilioServer) -> None:
    d = fast(routes(RouteTargets("sms", (Channel(twilio_api.url(ONCALL)),))))
    await run(d, msg(4, route="sms", body_format="text"))
    [sms] = twilio_api.delivered
    assert (sms.form["From"], sms.form["To"]) == (twilio_api.from_phone, ONCALL)
    assert "A-4" in sms.form["Body"] or "alert 4" in sms.form["Body"]
    assert [a.ok for a in d.attempts] == [True]
    assert twilio_api.auth_token not in d.attempts[0].channel


async def test_twilio_error_code_is_retried_then_succeeds(twilio_api: TwilioServer) -> None:
    twilio_api.fail(429, 20429, "Too Many Requests", times=2)
    d = fast(routes(RouteTargets("sms", (Channel(twilio_api.url(ONCALL)),))))
    await run(d, msg(6, route="sms", body_format="text"))
    assert [r.code for r in twilio_api.requests] == [20429, 20429, None]
    assert [(a.attempt, a.ok) for a in d.attempts] == [(1, False), (2, False), (3, True)]
    assert "20429" in str(d.attempts[0].error)


async def test_twilio_refusal_goes_to_fallback_route(
    twilio_api: TwilioServer, feishu_bot: FeishuServer
) -> None:
    twilio_api.fail(400, 21610, "Attempt to send to unsubscribed recipient", times=None)
    d = fast(
        routes(
            RouteTargets("sms", (Channel(twilio_api.url(ONCALL)),), fallback="chat"),
            RouteTargets("chat", (Channel(feishu_bot.url),)),
        ),
        max_attempts=2,
    )
    await run(d, msg(8, route="sms", body_format="text"))
    assert [r.code for r in twilio_api.requests] == [21610, 21610]
    sms_attempts = [a for a in d.attempts if a.route == "sms"]
    assert [a.ok for a in sms_attempts] == [False, False]
    assert "unsubscribed recipient" in str(sms_attempts[-1].error)
    [req] = feishu_bot.requests
    assert req.code == 0 and "A-8" in req.text
    assert (d.attempts[-1].route, d.attempts[-1].fallback_from) == ("chat", "sms")


async def test_twilio_wrong_credentials_are_a_failure(twilio_api: TwilioServer) -> None:
    bad = twilio_api.url(ONCALL).replace(twilio_api.auth_token, "0" * 32)
    d = fast(routes(RouteTargets("sms", (Channel(bad),))), max_attempts=1)
    await run(d, msg(route="sms", body_format="text"))
    assert [r.code for r in twilio_api.requests] == [20003]
    assert [a.ok for a in d.attempts] == [False]
