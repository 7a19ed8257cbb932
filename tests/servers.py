"""Real local servers for notification tests, on 127.0.0.1 free ports.

Fixtures (import them into a test module, or re-export them from a conftest):

- ``smtp_server``      -> :class:`SmtpServer`: collects mail; ``.url(to=...)`` gives a ``mailto://``.
- ``dingtalk_robot``   -> :class:`RobotServer`: a DingTalk robot that checks ``timestamp`` +
  ``sign`` (HMAC-SHA256), ``access_token``, keywords and its 20/min limit; ``.url``.
- ``wecom_robot``      -> :class:`RobotServer`: a WeCom group robot (``wecombot://``); ``.url``.
- ``feishu_bot``       -> :class:`FeishuServer`: a signed Feishu custom bot (``feishu://``).
- ``twilio_api``       -> :class:`TwilioServer`: Twilio's Messages API (Apprise patched to it).
- ``webhook_server``   -> :class:`WebhookServer`: records Apprise ``json://`` posts; ``.url``.
- ``blackhole_server`` -> :class:`BlackholeServer`: accepts TCP connections, never answers.
- ``closed_port``      -> int: a port nothing listens on (connection refused).

All servers run in background threads, so they serve sync and async clients alike.
"""

from __future__ import annotations

import asyncio
import base64
import email
import hashlib
import hmac
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def wait_until_async(
    check: Callable[[], Awaitable[bool]], timeout: float, every_s: float = 0.2
) -> bool:
    """Poll an awaitable ``check`` (a broker read, an HTTP probe in a thread) until it is
    true or ``timeout`` seconds pass; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every_s)
    return True


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until true or ``timeout``; returns its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        await asyncio.sleep(0.01)
    return True


# --------------------------------------------------------------------------- SMTP


class SmtpServer:
    """An SMTP server (aiosmtpd, plain, AUTH allowed without TLS) that keeps what it gets."""

    def __init__(self, user: str = "paywatch", password: str = "s3cret-pw") -> None:
        self.user = user
        self.password = password
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []
        self.logins: list[str] = []
        self.port = free_port()
        self._controller = Controller(
            self,
            hostname=HOST,
            port=self.port,
            auth_require_tls=False,
            authenticator=self._authenticate,
        )

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.user
            and auth_data.password.decode() == self.password
        )
        if ok:
            self.logins.append(self.user)
        # handled=False: aiosmtpd then answers 535 itself instead of leaving the client hanging.
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"

    def url(self, to: str = "oncall@example.com", sender: str = "paywatch@example.com") -> str:
        return (
            f"mailto://{self.user}:{quote(self.password, safe='')}@{HOST}:{self.port}"
            f"?from={sender}&to={to}"
        )

    def start(self) -> Self:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


# --------------------------------------------------------------------------- HTTP


class _HttpServer:
    """A threaded HTTP server whose handler calls ``self.answer``."""

    def __init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                status, answer = owner.answer(self.path, dict(self.headers), raw)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        raise NotImplementedError

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class RobotRequest:
    """One request a fake robot received and how it answered."""

    path: str
    query: dict[str, list[str]]
    body: dict[str, Any]
    errcode: int
    errmsg: str
    sign_ok: bool | None = None  # None: robot has no secret

    @property
    def text(self) -> str:
        """The visible text of the message, whatever its msgtype."""
        kind = self.body.get("msgtype", "")
        part = self.body.get(kind, {})
        return str(part.get("content") or part.get("text") or "")


@dataclass
class RobotServer(_HttpServer):
    """A DingTalk (``kind="dingtalk"``) or WeCom (``kind="wecom"``) group robot.

    Answers HTTP 200 with ``{"errcode": 0, "errmsg": "ok"}`` when the request is
    right, and — like the real robots — HTTP 200 with ``errcode != 0`` when not:
    310000 sign/keyword refusals, 300001 unknown token, 93000 unknown WeCom key,
    130101 (DingTalk) / 45009 (WeCom) over 20 messages a minute.  ``fail(...)``
    queues forced refusals (``times=None``: refuse everything until ``recover()``).
    """

    kind: str = "dingtalk"
    token: str = "a1b2c3d4e5f6robottoken"
    secret: str | None = "SEC0f1e2d3c4b5a69788"
    keywords: tuple[str, ...] = ()
    rate_limit_per_min: int = 20
    requests: list[RobotRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        _HttpServer.__init__(self)
        self._forced: deque[tuple[int, str]] = deque()
        self._always: tuple[int, str] | None = None
        self._accepted: deque[float] = deque()

    @property
    def url(self) -> str:
        endpoint = quote(f"http://{HOST}:{self.port}/" + self._path(), safe="")
        if self.kind == "wecom":
            return f"wecombot://{self.token}/?endpoint={endpoint}"
        auth = f"{self.secret}@" if self.secret else ""
        return f"dingtalk://{auth}{self.token}/?endpoint={endpoint}"

    def _path(self) -> str:
        return "cgi-bin/webhook/send" if self.kind == "wecom" else "robot/send"

    def fail(self, errcode: int, errmsg: str, times: int | None = 1) -> None:
        with self.lock:
            if times is None:
                self._always = (errcode, errmsg)
            else:
                self._forced.extend([(errcode, errmsg)] * times)

    def recover(self) -> None:
        with self.lock:
            self._always = None
            self._forced.clear()

    @property
    def accepted(self) -> list[RobotRequest]:
        with self.lock:
            return [r for r in self.requests if r.errcode == 0]

    def _sign_ok(self, query: dict[str, list[str]]) -> bool:
        assert self.secret is not None
        ts, sign = query.get("timestamp", [""])[-1], query.get("sign", [""])[-1]
        if not ts.isdigit() or abs(time.time() * 1000 - int(ts)) > 3_600_000:
            return False
        digest = hmac.new(
            self.secret.encode(), f"{ts}\n{self.secret}".encode(), hashlib.sha256
        ).digest()
        return hmac.compare_digest(sign, base64.b64encode(digest).decode())

    def answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        parts = urlsplit(path)
        query = parse_qs(parts.query)  # decodes once, as the real robots do
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        sign_ok: bool | None = None
        with self.lock:
            code, msg = 0, "ok"
            if parts.path.strip("/") != self._path():
                code, msg = 404, "not found"
            elif self.kind == "wecom":
                if query.get("key", [""])[-1] != self.token:
                    code, msg = 93000, "invalid webhook url"
            elif query.get("access_token", [""])[-1] != self.token:
                code, msg = 300001, "token is not exist"
            elif self.secret:
                sign_ok = self._sign_ok(query)
                if not sign_ok:
                    code, msg = 310000, "sign not match"
            request = RobotRequest(parts.path, query, body, code, msg, sign_ok)
            if code == 0 and self.keywords and not any(k in request.text for k in self.keywords):
                code, msg = 310000, "keywords not in content"
            if code == 0 and self._always:
                code, msg = self._always
            elif code == 0 and self._forced:
                code, msg = self._forced.popleft()
            now = time.monotonic()
            while self._accepted and now - self._accepted[0] >= 60:
                self._accepted.popleft()
            if code == 0 and len(self._accepted) >= self.rate_limit_per_min:
                code, msg = (
                    (45009, "api freq out of limit")
                    if self.kind == "wecom"
                    else (
                        130101,
                        "send too fast, exceed 20 times per minute",
                    )
                )
            if code == 0:
                self._accepted.append(now)
            request.errcode, request.errmsg = code, msg
            self.requests.append(request)
        return 200, {"errcode": code, "errmsg": msg}


class WebhookServer(_HttpServer):
    """Records JSON posts (Apprise ``json://``); answers ``status`` (200 unless told)."""

    def __init__(self) -> None:
        super().__init__()
        self.status = 200
        self.posts: list[dict[str, Any]] = []
        self.refused = 0  # requests answered with another status than 200

    @property
    def url(self) -> str:
        return f"json://{HOST}:{self.port}/hook"

    def answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        with self.lock:
            self.refused += self.status != 200
            if self.status == 200:
                self.posts.append(json.loads(raw))
            return self.status, {}


class BlackholeServer:
    """Completes TCP handshakes (the kernel does) and never reads or answers."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind((HOST, 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"json://{HOST}:{self.port}/hook"

    def stop(self) -> None:
        self._sock.close()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def dingtalk_robot() -> Iterator[RobotServer]:
    server = RobotServer(kind="dingtalk").start()
    yield server
    server.stop()


@pytest.fixture
def wecom_robot() -> Iterator[RobotServer]:
    server = RobotServer(kind="wecom", token="wecom-key-0123456789", secret=None).start()
    yield server
    server.stop()


@pytest.fixture
def webhook_server() -> Iterator[WebhookServer]:
    server = WebhookServer().start()
    yield server
    server.stop()


@pytest.fixture
def blackhole_server() -> Iterator[BlackholeServer]:
    server = BlackholeServer()
    yield server
    server.stop()


@pytest.fixture
def closed_port() -> int:
    return free_port()


# --------------------------------------------------------------------------- Feishu, Twilio


@dataclass
class FeishuRequest:
    """One request a fake Feishu bot received and how it answered."""

    path: str
    body: dict[str, Any]
    code: int
    msg: str
    sign_ok: bool | None = None  # None: the bot has no secret

    @property
    def text(self) -> str:
        """The visible text: a text message's content or an interactive card's header + body."""
        if self.body.get("msg_type") == "text":
            return str(self.body.get("content", {}).get("text", ""))
        card = self.body.get("card", {})
        head = card.get("header", {}).get("title", {}).get("content", "")
        parts = [e.get("text", {}).get("content", "") for e in card.get("elements", [])]
        return "\n".join([head, *parts])


@dataclass
class FeishuServer(_HttpServer):
    """A Feishu custom bot (``POST /open-apis/bot/v2/hook/<token>``), as the real one answers:
    HTTP 200 and ``{"code": 0, "msg": "success"}``, or HTTP 200 with ``code != 0``: 19001
    unknown token, 19021 bad signature (or a timestamp more than an hour off), 19024 keyword
    missing, 11232 over 100 messages a minute.  The signature it checks is Feishu's:
    base64(HMAC-SHA256(key="{timestamp}\\n{secret}", msg=b"")).  ``fail(...)`` as RobotServer.
    """

    token: str = "b7e1c2d3-4f50-4a6b-8c7d-feishu0token"
    secret: str | None = "fsSEC9x8y7z6w5v4u3"
    keywords: tuple[str, ...] = ()
    rate_limit_per_min: int = 100
    requests: list[FeishuRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        _HttpServer.__init__(self)
        self._forced: deque[tuple[int, str]] = deque()
        self._always: tuple[int, str] | None = None
        self._accepted: deque[float] = deque()

    @property
    def url(self) -> str:
        endpoint = quote(f"http://{HOST}:{self.port}/open-apis/bot/v2/hook/", safe="")
        auth = f"{self.secret}@" if self.secret else ""
        return f"feishu://{auth}{self.token}/?endpoint={endpoint}"

    def fail(self, code: int, msg: str, times: int | None = 1) -> None:
        with self.lock:
            if times is None:
                self._always = (code, msg)
            else:
                self._forced.extend([(code, msg)] * times)

    def _sign_ok(self, body: dict[str, Any]) -> bool:
        assert self.secret is not None
        ts, sign = str(body.get("timestamp", "")), str(body.get("sign", ""))
        if not ts.isdigit() or abs(time.time() - int(ts)) > 3600:
            return False
        key = f"{ts}\n{self.secret}".encode()
        expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
        return hmac.compare_digest(sign, expected)

    def _judge(self, path: str, body: dict[str, Any]) -> tuple[int, str, bool | None]:
        if path != f"/open-apis/bot/v2/hook/{self.token}":
            return 19001, "param invalid: incoming webhook access token invalid", None
        sign_ok = self._sign_ok(body) if self.secret else None
        if sign_ok is False:
            return 19021, "sign match fail or timestamp is not within one hour", sign_ok
        if body.get("msg_type") not in ("text", "interactive"):
            return 9499, "Bad Request", sign_ok
        return 0, "success", sign_ok

    def answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        with self.lock:
            code, msg, sign_ok = self._judge(urlsplit(path).path, body)
            request = FeishuRequest(path, body, code, msg, sign_ok)
            if code == 0 and self.keywords and not any(k in request.text for k in self.keywords):
                code, msg = 19024, "Key Words Not Found"
            if code == 0 and self._always:
                code, msg = self._always
            elif code == 0 and self._forced:
                code, msg = self._forced.popleft()
            now = time.monotonic()
            while self._accepted and now - self._accepted[0] >= 60:
                self._accepted.popleft()
            if code == 0 and len(self._accepted) >= self.rate_limit_per_min:
                code, msg = 11232, "frequency limited"
            if code == 0:
                self._accepted.append(now)
            request.code, request.msg = code, msg
            self.requests.append(request)
        if code == 0:
            return 200, {"code": 0, "msg": "success", "data": {}}
        return 200, {"code": code, "msg": msg, "data": {}}


@dataclass
class SmsRequest:
    """One message-create request a fake SMS API received."""

    path: str
    form: dict[str, str]
    status: int
    code: int | None  # the provider's error code, None on success


@dataclass
class TwilioServer(_HttpServer):
    """Twilio's Messages API (``POST /2010-04-01/Accounts/<sid>/Messages.json``, form body,
    HTTP basic auth sid:token), as the real one answers: 201 and the message resource, or an
    HTTP error with ``{"code", "message", "status"}``: 401/20003 bad credentials, 400/21211
    invalid ``To``, and whatever ``fail(status, code, message)`` queues (``times=None``: until
    ``recover()``), e.g. 429/20429 too many requests, 400/21610 unsubscribed recipient.

    Apprise's Twilio plugin has no endpoint option: tests point it here by patching
    ``NotifyTwilio.notify_sms_url`` (see :attr:`sms_url`).
    """

    sid: str = "AC0123456789abcdef0123456789abcdef"
    auth_token: str = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
    from_phone: str = "+15551230000"
    requests: list[SmsRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        _HttpServer.__init__(self)
        self._forced: deque[tuple[int, int, str]] = deque()
        self._always: tuple[int, int, str] | None = None

    @property
    def sms_url(self) -> str:
        """Value for ``NotifyTwilio.notify_sms_url`` (``{sid}`` is filled in by Apprise)."""
        return f"http://{HOST}:{self.port}/2010-04-01/Accounts/{{sid}}/Messages.json"

    def url(self, *to: str) -> str:
        targets = "/".join(t.lstrip("+") for t in to)
        return f"twilio://{self.sid}:{self.auth_token}@{self.from_phone.lstrip('+')}/{targets}"

    def fail(self, status: int, code: int, message: str, times: int | None = 1) -> None:
        with self.lock:
            if times is None:
                self._always = (status, code, message)
            else:
                self._forced.extend([(status, code, message)] * times)

    def recover(self) -> None:
        with self.lock:
            self._always = None
            self._forced.clear()

    @property
    def delivered(self) -> list[SmsRequest]:
        with self.lock:
            return [r for r in self.requests if r.code is None]

    def _error(
        self, path: str, headers: dict[str, str], form: dict[str, str]
    ) -> tuple[int, int, str] | None:
        want = base64.b64encode(f"{self.sid}:{self.auth_token}".encode()).decode()
        if headers.get("Authorization", "") != f"Basic {want}":
            return 401, 20003, "Authenticate"
        if path != f"/2010-04-01/Accounts/{self.sid}/Messages.json":
            return 404, 20404, "The requested resource was not found"
        if not form.get("To", "").lstrip("+").isdigit() or not form.get("Body"):
            return 400, 21211, f"The 'To' number {form.get('To')} is not a valid phone number."
        if self._always:
            return self._always
        if self._forced:
            return self._forced.popleft()
        return None

    def answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
        with self.lock:
            error = self._error(urlsplit(path).path, headers, form)
            if error is None:
                self.requests.append(SmsRequest(path, form, 201, None))
                n = len(self.requests)
                return 201, {"sid": f"SM{n:032x}", "status": "queued", "to": form["To"],
                             "from": form.get("From"), "body": form["Body"]}  # fmt: skip
            status, code, message = error
            self.requests.append(SmsRequest(path, form, status, code))
        info = f"https://www.twilio.com/docs/errors/{code}"
        return status, {"code": code, "message": message, "more_info": info, "status": status}


@pytest.fixture
def feishu_bot() -> Iterator[FeishuServer]:
    server = FeishuServer().start()
    yield server
    server.stop()


@pytest.fixture
def twilio_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[TwilioServer]:
    """A fake Twilio API, with Apprise's Twilio plugin pointed at it for the test."""
    from apprise.plugins.twilio import NotifyTwilio

    server = TwilioServer().start()
    monkeypatch.setattr(NotifyTwilio, "notify_sms_url", server.sms_url)
    yield server
    server.stop()
