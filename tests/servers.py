"""Real local servers for notification tests, on 127.0.0.1 free ports.

Fixtures (import them into a test module, or re-export them from a conftest):

- ``smtp_server``      -> :class:`SmtpServer`: collects mail; ``.url(to=...)`` gives a ``mailto://``.
- ``dingtalk_robot``   -> :class:`RobotServer`: a DingTalk robot that checks ``timestamp`` +
  ``sign`` (HMAC-SHA256), ``access_token``, keywords and its 20/min limit; ``.url``.
- ``wecom_robot``      -> :class:`RobotServer`: a WeCom group robot (``wecombot://``); ``.url``.
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
from collections.abc import Callable, Iterator
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
                if owner.delay_s:
                    time.sleep(owner.delay_s)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        self.delay_s = 0.0
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

    @property
    def url(self) -> str:
        return f"json://{HOST}:{self.port}/hook"

    def answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        with self.lock:
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
