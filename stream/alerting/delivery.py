"""Verified, retried, rate-limited delivery of finished notifications through Apprise.

``Deliverer.submit`` only enqueues: every (route, channel) pair has its own queue
and worker task, so a slow or dead channel never stalls the consumer path or any
other channel.  Each attempt is audited as a :class:`DeliveryAttempt` with the
channel's secrets masked.

Three robot kinds are sent here instead of through Apprise, because Apprise (2.3)
answers "sent" on HTTP 200 even when the robot refused the message with a JSON
``errcode`` != 0, its DingTalk plugin URL-encodes the ``sign`` twice (so a
robot with a secret answers ``310000 sign not match``), and its Feishu/Lark
plugins cannot sign at all (a robot with "signature verification" on answers
``19021``).  All use Apprise's own URL syntax and validation
(``dingtalk://[secret@]token[/phone...]``, ``wecombot://key``,
``feishu://[secret@]token``, ``lark://[secret@]token``); an optional ``endpoint=``
query argument points them at another base URL (a proxy, or a local fake robot in
tests).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import random
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, urlsplit

import apprise
import requests
from apprise import NotifyFormat, NotifyType
from apprise.manager_plugins import NotificationManager

from stream.clock import WALL_CLOCK, Clock
from stream.clock import sleep as clock_sleep
from stream.judge.judgement import severity_rank

log = logging.getLogger(__name__)
_PLUGINS = NotificationManager()  # a singleton: Apprise's registry of URL schemes

MASK = "****"
# DingTalk and WeCom robots both refuse more than 20 messages a minute per robot.
ROBOT_RATE_LIMIT_PER_MIN = 20
DINGTALK_ENDPOINT = "https://oapi.dingtalk.com/robot/send"
WECOM_ENDPOINT = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
# Feishu (China) and Lark (international) custom bots: the token is appended to this.
FEISHU_ENDPOINT = "https://open.feishu.cn/open-apis/bot/v2/hook/"
LARK_ENDPOINT = "https://open.larksuite.com/open-apis/bot/v2/hook/"
# Feishu/Lark custom bots accept 100 messages a minute (and 5 a second) per bot.
FEISHU_RATE_LIMIT_PER_MIN = 100
# Schemes whose user part (``scheme://secret@token``) is a signing secret.
_SIGNED_ROBOTS = ("dingtalk", "feishu", "lark")
# Robots refuse larger payloads (DingTalk 20000 bytes, WeCom markdown 4096 bytes).
_BODY_LIMIT_BYTES = {"dingtalk": 19000, "wecombot": 4000, "feishu": 18000, "lark": 18000}
_DEFAULT_BODY_LIMIT = 60000
MAX_BATCH = 200  # messages combined into one send at most
_SENSITIVE_QUERY = re.compile(r"token|key|secret|pass|sign|auth|credential", re.I)
_USERINFO_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@?#]*):[^@/?#]*@", re.I)


@dataclass(frozen=True)
class Message:
    """One finished notification, rendered by the dispatcher."""

    title: str
    body: str  # already rendered (markdown when the channel renders it)
    alert_ids: tuple[str, ...]
    group_key: str
    severity: str  # critical | warning | info
    route: str  # route name from config
    body_format: str = "markdown"  # markdown | text
    # The notification log's name for it (the dispatcher numbers what it emits), so a
    # restarted worker knows which messages it still owes; "" outside the log.
    id: str = ""


@dataclass(frozen=True)
class Channel:
    url: str  # an Apprise URL, secrets already substituted from ${ENV}
    name: str = ""  # optional label for logs/audit


@dataclass(frozen=True)
class RouteTargets:
    name: str
    channels: tuple[Channel, ...]
    fallback: str | None = None  # route used when every channel of this route keeps failing
    rate_limit_per_min: int | None = None  # per channel; robots default to 20


@dataclass(frozen=True)
class DeliveryAttempt:
    """One audit record per attempt; ``channel`` never carries a secret."""

    ts_ms: int
    route: str
    channel: str  # channel URL with secrets masked
    alert_ids: tuple[str, ...]
    attempt: int
    ok: bool
    error: str | None
    channel_name: str = ""
    batched: int = 1  # how many messages this attempt carried (rate-limit batching)
    fallback_from: str | None = None  # the route whose failure sent the message here


# --------------------------------------------------------------------------- secrets


def _plugin_class(url: str) -> Any | None:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if not scheme or scheme not in _PLUGINS:
        return None
    return _PLUGINS[scheme]


def url_secrets(url: str) -> set[str]:
    """Secret values inside an Apprise URL: the plugin's private tokens and any password.

    >>> sorted(url_secrets("dingtalk://SEC123@TOK456/"))
    ['SEC123', 'TOK456']
    """
    found: set[str] = set()
    cls = _plugin_class(url)
    results: dict[str, Any] | None = None
    if cls is not None:
        with contextlib.suppress(Exception):
            results = cls.parse_url(url)
    if cls is not None and results:
        private = {k for k, v in cls.template_tokens.items() if v.get("private")} | {"password"}
        if url.split("://", 1)[0].lower() in _SIGNED_ROBOTS:
            private.add("user")  # Apprise's Feishu/Lark plugins do not know it is a secret
        for key in private:
            value = results.get(key)
            values = value if isinstance(value, list | tuple | set) else [value]
            found.update(v for v in values if isinstance(v, str) and v)
    parts = urlsplit(url)
    with contextlib.suppress(ValueError):
        if parts.password:
            found.add(parts.password)
    for key, values in parse_qs(parts.query).items():
        if _SENSITIVE_QUERY.search(key):
            found.update(v for v in values if v)
    return found


def mask_url(url: str) -> str:
    """The URL with every token, key, password and secret replaced by ``****``.

    >>> mask_url("dingtalk://SEC123@TOK456/")
    'dingtalk://****@****/'
    >>> mask_url("mailto://user:pa55@smtp.example.com?to=ops@example.com")
    'mailto://user:****@smtp.example.com?to=ops@example.com'
    >>> mask_url("json://hooks.example.com/alerts?token=abc")
    'json://hooks.example.com/alerts?token=****'
    >>> mask_url("nosuchthing://what:ever@x/y")
    'nosuchthing://****'
    """
    try:
        if not url:
            return ""
        if "://" not in url:
            return MASK
        scheme, rest = url.split("://", 1)
        if _plugin_class(url) is None:
            # Unknown to Apprise: we cannot tell which parts are secret, so show none.
            return f"{scheme}://{MASK}"
        rest = _USERINFO_PASSWORD.sub(r"\1:" + MASK + "@", f"{scheme}://{rest}").split("://", 1)[1]
        for secret in sorted(url_secrets(url), key=len, reverse=True):
            for form in {secret, quote(secret, safe=""), quote(secret)}:
                rest = rest.replace(form, MASK)
        return f"{scheme}://{rest}"
    except Exception:  # masking must never be the reason a secret leaks or a send fails
        return MASK


class _Redactor(logging.Filter):
    """Scrubs known secrets from Apprise's own log records (it logs request URLs)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, secrets: Iterable[str]) -> None:
        # Very short values would scrub random letters out of every line.
        self.secrets |= {s for s in secrets if len(s) >= 4}

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            msg = record.getMessage()
            clean = msg
            for secret in sorted(self.secrets, key=len, reverse=True):
                for form in (secret, quote(secret, safe="")):
                    clean = clean.replace(form, MASK)
            if clean != msg:
                record.msg, record.args = clean, ()
        return True


_REDACTOR = _Redactor()
# Apprise logs service URLs; urllib3 logs request lines (with DingTalk's access_token).
for _name in ("apprise", "urllib3.connectionpool"):
    logging.getLogger(_name).addFilter(_REDACTOR)


# --------------------------------------------------------------------------- messages


def combine(messages: Sequence[Message], limit_bytes: int = _DEFAULT_BODY_LIMIT) -> Message:
    """Many messages as one (rate-limit batching); every alert id stays visible.

    >>> m = combine([Message("A down", "x", ("a1",), "g", "warning", "r"),
    ...              Message("B down", "y", ("b1",), "g", "critical", "r")])
    >>> m.title, m.severity, m.alert_ids
    ('[2 alerts] A down (+1 more)', 'critical', ('a1', 'b1'))
    """
    if len(messages) == 1:
        return messages[0]
    ids = tuple(dict.fromkeys(i for m in messages for i in m.alert_ids))
    severity = max((m.severity for m in messages), key=severity_rank)
    title = f"[{len(messages)} alerts] {messages[0].title} (+{len(messages) - 1} more)"
    full = "\n\n---\n\n".join(
        f"### {m.title}\n\n{m.body}\n\n_alerts: {', '.join(m.alert_ids)}_" for m in messages
    )
    body = full
    if len(full.encode()) > limit_bytes:
        # Too long for the channel: one line per message, still naming every alert.
        lines = [f"- **{m.severity}** {m.title} ({', '.join(m.alert_ids)})" for m in messages]
        body = ""
        for n, line in enumerate(lines):
            tail = f"\n… and {len(lines) - n} more"
            if len((body + line + "\n" + tail).encode()) > limit_bytes:
                body += tail
                break
            body += line + "\n"
    return Message(
        title=title,
        body=body,
        alert_ids=ids,
        group_key="batch:" + ",".join(dict.fromkeys(m.group_key for m in messages)),
        severity=severity,
        route=messages[0].route,
        body_format="markdown" if any(m.body_format == "markdown" for m in messages) else "text",
    )


def _fit(text: str, limit_bytes: int) -> str:
    raw = text.encode()
    if len(raw) <= limit_bytes:
        return text
    return raw[: limit_bytes - 4].decode(errors="ignore") + " …"


# --------------------------------------------------------------------------- senders

SendResult = tuple[bool, str | None]


class _Sender:
    """Sends one message synchronously (runs in a worker thread)."""

    kind = "apprise"
    default_per_min: int | None = None

    def send(self, message: Message, timeout: float) -> SendResult:
        raise NotImplementedError


class _AppriseSender(_Sender):
    _TYPES: ClassVar[dict[str, NotifyType]] = {
        "critical": NotifyType.FAILURE,
        "warning": NotifyType.WARNING,
    }

    def __init__(self, url: str) -> None:
        self.apprise = apprise.Apprise()
        plugin = apprise.Apprise.instantiate(url)
        self.valid = plugin is not None and bool(self.apprise.add(plugin))
        if plugin is not None:
            # Apprise spaces sends of one plugin instance by request_rate_per_sec (5.5 s
            # for most services) by sleeping; our sliding-window limit with batching
            # replaces that, at the same average rate, so bursts are not queued for minutes.
            rate = float(getattr(plugin, "request_rate_per_sec", 0) or 0)
            self.default_per_min = int(60 / rate) if rate > 0 else None
            plugin.request_rate_per_sec = 0

    def send(self, message: Message, timeout: float) -> SendResult:
        if not self.valid:
            return False, "invalid or unsupported Apprise URL"
        logs: list[str] = []
        result = self.apprise.notify(
            body=message.body,
            title=message.title,
            notify_type=self._TYPES.get(message.severity, NotifyType.INFO),
            body_format=NotifyFormat.MARKDOWN
            if message.body_format == "markdown"
            else NotifyFormat.TEXT,
            timeout=timeout,
            log_callback=lambda entry, _service: logs.append(entry.message),
            log_level=logging.WARNING,
        )
        if result:
            return True, None
        return False, (logs[-1] if logs else f"apprise status {result.status.name.lower()}")


class _RobotSender(_Sender):
    """Base for JSON robots that answer ``{"errcode": 0, "errmsg": "ok"}`` on success
    (Feishu: ``{"code": 0, "msg": "success"}``)."""

    default_per_min = ROBOT_RATE_LIMIT_PER_MIN
    code_key, msg_key = "errcode", "errmsg"

    def __init__(self, endpoint: str, verify: bool) -> None:
        self.endpoint = endpoint
        self.verify = verify

    def request(self, message: Message) -> tuple[dict[str, str], dict[str, Any]]:
        raise NotImplementedError

    def send(self, message: Message, timeout: float) -> SendResult:
        params, payload = self.request(message)
        try:
            r = requests.post(
                self.endpoint,
                params=params,
                data=json.dumps(payload, ensure_ascii=False).encode(),
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=timeout,
                verify=self.verify,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            # The exception text carries the full URL (with access_token): name the kind only.
            return False, f"{self.kind} connection error: {type(exc).__name__}"
        if r.status_code != 200:
            return False, f"{self.kind} HTTP {r.status_code}"
        try:
            answer = r.json()
            errcode = int(answer.get(self.code_key, -1))
        except (ValueError, TypeError, AttributeError):
            return False, f"{self.kind} answered HTTP 200 without a JSON {self.code_key}"
        if errcode != 0:
            return False, f"{self.kind} {self.code_key} {errcode}: {answer.get(self.msg_key, '')}"
        return True, None


def _query_args(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def _verify(args: Mapping[str, str]) -> bool:
    return args.get("verify", "yes").lower() not in ("no", "false", "0")


class _DingTalkSender(_RobotSender):
    kind = "dingtalk"

    def __init__(self, plugin: Any, url: str, clock: Clock = WALL_CLOCK) -> None:
        args = _query_args(url)
        super().__init__(args.get("endpoint") or DINGTALK_ENDPOINT, _verify(args))
        self.clock = clock
        self.token: str = plugin.token
        self.secret: str | None = plugin.secret
        self.mobiles: list[str] = list(plugin.targets)

    def request(self, message: Message) -> tuple[dict[str, str], dict[str, Any]]:
        params = {"access_token": self.token}
        if self.secret:
            params.update(dingtalk_sign(self.secret, self.clock.now_ms()))
        limit = _BODY_LIMIT_BYTES["dingtalk"]
        # A robot only notifies a mobile that also appears as @number in the text.
        mentions = " ".join(f"@{m}" for m in self.mobiles)
        payload: dict[str, Any] = {"at": {"atMobiles": self.mobiles, "isAtAll": False}}
        if message.body_format == "markdown":
            text = _fit(f"### {message.title}\n\n{message.body}", limit)
            payload["msgtype"] = "markdown"
            payload["markdown"] = {
                "title": message.title[:100] or "paywatch",
                "text": f"{text}\n\n{mentions}" if mentions else text,
            }
        else:
            text = _fit(f"{message.title}\n{message.body}", limit)
            payload["msgtype"] = "text"
            payload["text"] = {"content": f"{text}\n{mentions}" if mentions else text}
        return params, payload


def dingtalk_sign(secret: str, timestamp_ms: int) -> dict[str, str]:
    """DingTalk's signed-robot query arguments, not yet URL-encoded (requests does it once).

    >>> dingtalk_sign("SEC", 1700000000000)["sign"]
    'r+2we0q01lkZqz38LA5IPNbHN81U1leRf3Au4PSQb6Q='
    """
    digest = hmac.new(
        secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return {"timestamp": str(timestamp_ms), "sign": base64.b64encode(digest).decode()}


class _WeComSender(_RobotSender):
    kind = "wecombot"

    def __init__(self, plugin: Any, url: str) -> None:
        args = _query_args(url)
        super().__init__(args.get("endpoint") or WECOM_ENDPOINT, _verify(args))
        self.key: str = plugin.key

    def request(self, message: Message) -> tuple[dict[str, str], dict[str, Any]]:
        limit = _BODY_LIMIT_BYTES["wecombot"]
        if message.body_format == "markdown":
            content = _fit(f"**{message.title}**\n{message.body}", limit)
            return {"key": self.key}, {"msgtype": "markdown", "markdown": {"content": content}}
        content = _fit(f"{message.title}\n{message.body}", 2000)
        return {"key": self.key}, {"msgtype": "text", "text": {"content": content}}


class _FeishuSender(_RobotSender):
    """Feishu / Lark custom bot; signed (timestamp + sign in the body) when a secret is set."""

    default_per_min = FEISHU_RATE_LIMIT_PER_MIN
    code_key, msg_key = "code", "msg"
    _COLORS: ClassVar[dict[str, str]] = {"critical": "red", "warning": "orange"}

    def __init__(self, plugin: Any, url: str, clock: Clock = WALL_CLOCK) -> None:
        self.kind = url.split("://", 1)[0].lower()
        args = _query_args(url)
        base = args.get("endpoint") or (FEISHU_ENDPOINT if self.kind == "feishu" else LARK_ENDPOINT)
        super().__init__(base.rstrip("/") + "/" + quote(plugin.token, safe=""), _verify(args))
        self.clock = clock
        self.secret: str | None = plugin.user or None

    def request(self, message: Message) -> tuple[dict[str, str], dict[str, Any]]:
        payload: dict[str, Any] = {}
        if self.secret:
            payload.update(feishu_sign(self.secret, self.clock.now_ms() // 1000))
        limit = _BODY_LIMIT_BYTES[self.kind]
        if message.body_format == "markdown":
            # Feishu renders markdown only inside an interactive card (as Apprise sends it).
            title = {"tag": "plain_text", "content": message.title[:100] or "paywatch"}
            text = {"tag": "lark_md", "content": _fit(message.body, limit)}
            payload["msg_type"] = "interactive"
            payload["card"] = {
                "config": {"wide_screen_mode": True},
                "header": {"title": title, "template": self._COLORS.get(message.severity, "blue")},
                "elements": [{"tag": "div", "text": text}],
            }
        else:
            text_only = _fit(f"{message.title}\n{message.body}", limit)
            payload.update(msg_type="text", content={"text": text_only})
        return {}, payload


def feishu_sign(secret: str, timestamp_s: int) -> dict[str, str]:
    """Feishu/Lark signed-bot body fields: ``sign`` is base64(HMAC-SHA256) keyed by
    ``"{timestamp}\\n{secret}"`` over an empty message (Feishu's rule, unlike DingTalk's).

    >>> sorted(feishu_sign("SEC", 1700000000))
    ['sign', 'timestamp']
    """
    key = f"{timestamp_s}\n{secret}".encode()
    digest = hmac.new(key, b"", hashlib.sha256).digest()
    return {"timestamp": str(timestamp_s), "sign": base64.b64encode(digest).decode()}


def _make_sender(url: str, clock: Clock = WALL_CLOCK) -> _Sender:
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("dingtalk", "wecombot", "feishu", "lark"):
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            return _AppriseSender(url)  # reports the URL as invalid on every attempt
        if scheme == "dingtalk":
            return _DingTalkSender(plugin, url, clock)
        if scheme == "wecombot":
            return _WeComSender(plugin, url)
        return _FeishuSender(plugin, url, clock)
    return _AppriseSender(url)


# --------------------------------------------------------------------------- rate limit


class _RateLimiter:
    """Sliding one-minute window of send times for one channel URL."""

    def __init__(
        self, per_min: int | None, window_s: float = 60.0, clock: Clock = WALL_CLOCK
    ) -> None:
        self.per_min = per_min
        self.window_s = window_s
        self.clock = clock
        self.sent: deque[float] = deque()

    def remaining(self) -> int | None:
        if self.per_min is None:
            return None
        now = self.clock.monotonic()
        while self.sent and now - self.sent[0] >= self.window_s:
            self.sent.popleft()
        return max(0, self.per_min - len(self.sent))

    def wait_s(self) -> float:
        if not self.sent:
            return 0.0
        return max(0.0, self.sent[0] + self.window_s - self.clock.monotonic())

    def take(self) -> None:
        if self.per_min is not None:
            self.sent.append(self.clock.monotonic())


# --------------------------------------------------------------------------- worker


class _Tracker:
    """One message on one route: done when every channel delivered or gave up."""

    __slots__ = ("delivered", "fallback_from", "message", "route", "waiting")

    def __init__(self, message: Message, route: str, channels: int, fallback_from: str | None):
        self.message = message
        self.route = route
        self.waiting = channels
        self.delivered = False
        self.fallback_from = fallback_from


class _ChannelWorker:
    def __init__(
        self,
        owner: Deliverer,
        route: str,
        channel: Channel,
        limiter: _RateLimiter,
        sender: _Sender,
    ) -> None:
        self.owner = owner
        self.route = route
        self.channel = channel
        self.masked = mask_url(channel.url)
        self.limiter = limiter
        self.sender = sender
        self.queue: asyncio.Queue[_Tracker] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while not self.owner._stopped:
            first = await self.queue.get()
            batch = [first]
            remaining = self.limiter.remaining()
            if remaining is not None and remaining <= 1:
                # Over (or at the last slot of) the limit: wait for a slot, then carry
                # everything queued by then in one combined message instead of dropping.
                if remaining == 0:
                    await clock_sleep(self.owner.clock, self.limiter.wait_s())
                while not self.queue.empty() and len(batch) < MAX_BATCH:
                    batch.append(self.queue.get_nowait())
            ok = False
            try:
                ok = await self.deliver(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must not kill the channel's worker
                log.exception("delivery to %s failed unexpectedly: %s", self.masked, exc)
            for tracker in batch:
                self.owner._channel_done(tracker, ok)

    async def deliver(self, batch: list[_Tracker]) -> bool:
        owner = self.owner
        limit = _BODY_LIMIT_BYTES.get(self.sender.kind, _DEFAULT_BODY_LIMIT)
        message = combine([t.message for t in batch], limit)
        fallback_from = batch[0].fallback_from
        loop = asyncio.get_running_loop()
        for attempt in range(1, owner.max_attempts + 1):
            if attempt > 1 and not self.queue.empty() and len(batch) < MAX_BATCH:
                # Messages that queued up behind a failing send ride along with its retry,
                # so a backlog collapses into one message when the channel comes back.
                while not self.queue.empty() and len(batch) < MAX_BATCH:
                    batch.append(self.queue.get_nowait())
                message = combine([t.message for t in batch], limit)
            while self.limiter.remaining() == 0:
                await clock_sleep(self.owner.clock, self.limiter.wait_s())
            self.limiter.take()
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that
                # lands as the send finishes, leaving stop() waiting on a live worker.
                async with asyncio.timeout(owner.send_timeout_s + 1.0):
                    ok, error = await loop.run_in_executor(
                        owner._executor, self.sender.send, message, owner.send_timeout_s
                    )
            except TimeoutError:
                ok, error = False, f"no answer within {owner.send_timeout_s:g} s"
            except Exception as exc:
                ok, error = False, f"{type(exc).__name__}"
            if error is not None:
                error = _scrub(error, owner._secrets)
            owner._record(
                DeliveryAttempt(
                    ts_ms=owner.clock.now_ms(),
                    route=self.route,
                    channel=self.masked,
                    alert_ids=message.alert_ids,
                    attempt=attempt,
                    ok=ok,
                    error=error,
                    channel_name=self.channel.name,
                    batched=len(batch),
                    fallback_from=fallback_from,
                )
            )
            if ok:
                return True
            label = self.channel.name or self.masked
            if attempt < owner.max_attempts:
                delay = owner.backoff(attempt)
                log.warning(
                    "notification to %s failed (attempt %d/%d, retry in %.1f s): %s",
                    label,
                    attempt,
                    owner.max_attempts,
                    delay,
                    error,
                )
                await clock_sleep(owner.clock, delay)
            else:
                log.error(
                    "notification to %s failed %d times, giving up: %s", label, attempt, error
                )
        return False


def _running_in(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class Deliverer:
    """Delivers messages to every channel of their route, off the caller's path.

    ``backoff_s`` is either the first retry delay (doubled on each retry) or an
    explicit sequence of delays; each delay gets ±``jitter`` relative noise.
    """

    def __init__(
        self,
        routes: Mapping[str, RouteTargets],
        *,
        max_attempts: int = 4,
        backoff_s: float | Sequence[float] = (0.5, 1.0, 2.0, 4.0),
        jitter: float = 0.2,
        max_backoff_s: float = 60.0,
        send_timeout_s: float = 15.0,
        on_attempt: Callable[[DeliveryAttempt], None] | None = None,
        on_done: Callable[[Message, bool], None] | None = None,
        clock: Clock = WALL_CLOCK,
        max_audit: int = 1000,
        rate_window_s: float = 60.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        for name, route in routes.items():
            if route.fallback is not None and route.fallback not in routes:
                raise ValueError(f"route {name!r} falls back to unknown route {route.fallback!r}")
        self.routes = dict(routes)
        self.max_attempts = max_attempts
        self._backoff = backoff_s
        self.jitter = jitter
        self.max_backoff_s = max_backoff_s
        self.send_timeout_s = send_timeout_s
        self.on_attempt = on_attempt
        # Told once per submitted message when it is delivered or given up (after any
        # fallback), on the event loop: the notification log forgets it then.
        self.on_done = on_done
        self.clock = clock
        self._audit: deque[DeliveryAttempt] = deque(maxlen=max_audit)
        # Registered before any URL is parsed: Apprise logs bad tokens verbatim.
        self._secrets: set[str] = {
            s for route in self.routes.values() for c in route.channels for s in url_secrets(c.url)
        }
        _REDACTOR.add(self._secrets)
        limiters: dict[str, _RateLimiter] = {}
        self._workers: dict[str, list[_ChannelWorker]] = {}
        for name, route in self.routes.items():
            workers = []
            for channel in route.channels:
                sender = _make_sender(channel.url, clock)
                per_min = route.rate_limit_per_min or sender.default_per_min
                # A robot's limit is per robot, so routes sharing a URL share its limiter.
                limiter = limiters.setdefault(
                    channel.url, _RateLimiter(per_min, rate_window_s, clock)
                )
                worker = _ChannelWorker(self, name, channel, limiter, sender)
                if isinstance(worker.sender, _AppriseSender) and not worker.sender.valid:
                    log.error(
                        "route %s: channel %s is not a valid Apprise URL", name, worker.masked
                    )
                workers.append(worker)
            self._workers[name] = workers
        n = sum(len(w) for w in self._workers.values())
        # Own threads: a hung channel must not starve the loop's default executor.
        self._executor = ThreadPoolExecutor(
            max_workers=max(4, 2 * n), thread_name_prefix="paywatch-notify"
        )
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopped = False
        self._warned_routes: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- public API ------------------------------------------------------------------

    @property
    def attempts(self) -> list[DeliveryAttempt]:
        """Recent audit records, oldest first (bounded by ``max_audit``)."""
        return list(self._audit)

    @property
    def pending(self) -> int:
        """Messages accepted but not yet delivered or given up (fallbacks included)."""
        return self._pending

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for workers in self._workers.values():
            for worker in workers:
                if worker.task is None:
                    worker.task = asyncio.create_task(
                        worker.run(), name=f"notify:{worker.route}:{worker.masked}"
                    )

    def submit(self, message: Message) -> None:
        """Queue ``message`` for every channel of ``message.route``; never blocks or raises.

        Safe to call from another thread once ``start`` ran (it hops onto the loop).
        """
        try:
            if self._stopped:
                log.error("deliverer stopped; dropped notification %s", message.alert_ids)
                return
            loop = self._loop
            if loop is not None and not _running_in(loop):
                loop.call_soon_threadsafe(self._enqueue, message, message.route, None)
                return
            self._enqueue(message, message.route, None)
        except Exception:
            log.exception("could not queue notification %s", getattr(message, "alert_ids", "?"))

    async def drain(self, timeout: float) -> None:
        """Wait until every submitted message is delivered or given up, at most ``timeout`` s."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.warning("notifications still pending after %.1f s: %d", timeout, self._pending)

    async def stop(self) -> None:
        self._stopped = True
        tasks = [w.task for ws in self._workers.values() for w in ws if w.task is not None]
        while tasks:  # cancel again if a library swallowed the first cancel
            for task in tasks:
                task.cancel()
            _, still = await asyncio.wait(tasks, timeout=1.0)
            tasks = list(still)
        for ws in self._workers.values():
            for w in ws:
                w.task = None
        if self._pending:
            log.warning("stopped with %d notifications undelivered", self._pending)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based), with jitter."""
        if isinstance(self._backoff, int | float):
            base = float(self._backoff) * 2 ** (attempt - 1)
        else:
            seq = list(self._backoff) or [0.0]
            base = seq[min(attempt - 1, len(seq) - 1)]
        base = min(base, self.max_backoff_s)
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))

    # -- internals -------------------------------------------------------------------

    def _enqueue(self, message: Message, route: str, fallback_from: str | None) -> None:
        workers = self._workers.get(route)
        if workers is None:
            if route not in self._warned_routes:
                self._warned_routes.add(route)
                log.error("no notification route named %r; message dropped", route)
            self._record(
                DeliveryAttempt(
                    ts_ms=self.clock.now_ms(),
                    route=route,
                    channel="",
                    alert_ids=message.alert_ids,
                    attempt=0,
                    ok=False,
                    error=f"unknown route {route!r}",
                    fallback_from=fallback_from,
                )
            )
            self._done(message, False)
            return
        tracker = _Tracker(message, route, len(workers), fallback_from)
        self._pending += 1
        self._idle.clear()
        if not workers:
            self._finish(tracker)
        for worker in workers:
            worker.queue.put_nowait(tracker)

    def _channel_done(self, tracker: _Tracker, ok: bool) -> None:
        tracker.delivered |= ok
        tracker.waiting -= 1
        if tracker.waiting == 0:
            self._finish(tracker)

    def _finish(self, tracker: _Tracker) -> None:
        if not tracker.delivered:
            fallback = self.routes[tracker.route].fallback
            if fallback is not None and tracker.fallback_from is None and fallback != tracker.route:
                # Fallback once: a message already on its fallback route never hops again.
                log.warning(
                    "route %s failed for %s; sending to fallback route %s",
                    tracker.route,
                    ",".join(tracker.message.alert_ids),
                    fallback,
                )
                self._enqueue(
                    dataclasses.replace(tracker.message, route=fallback), fallback, tracker.route
                )
            else:
                log.error("notification %s was not delivered", ",".join(tracker.message.alert_ids))
                self._done(tracker.message, False)
        else:
            self._done(tracker.message, True)
        self._pending -= 1
        if self._pending == 0:
            self._idle.set()

    def _done(self, message: Message, delivered: bool) -> None:
        if self.on_done is not None:
            try:
                self.on_done(message, delivered)
            except Exception:  # the log failing must not stop delivery
                log.exception("on_done callback failed")

    def _record(self, attempt: DeliveryAttempt) -> None:
        self._audit.append(attempt)
        if self.on_attempt is not None:
            try:
                self.on_attempt(attempt)
            except Exception:  # the audit store failing must not stop delivery
                log.exception("on_attempt callback failed")
