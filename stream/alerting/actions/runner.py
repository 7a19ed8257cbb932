"""Run actions on alert records, off the consume path, with the safety rails around them.

:meth:`ActionRunner.submit` may be called from any thread (the notifications thread
does); it hands the records to the runner's event loop and returns at once.  In
the loop each (action, alert, trigger) is decided in order — kill switch, cooldown,
rate limit, dry run — and a run that may go ahead is queued for one of
``max_concurrent`` tasks, which send it with a timeout and retry with backoff.  A
slow or hanging endpoint therefore holds one of those tasks, never the consumer.
Every decision and every run ends in exactly one :class:`ActionRun` audit record.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx
import orjson

from stream.aio import cancel_and_wait
from stream.alerting.actions.contract import (
    ACTION_HEADER,
    BODY_VERSION,
    RUN_HEADER,
    SIGNATURE_HEADER,
    flat_orders,
    read_answer,
    render_template,
    signature_header,
)
from stream.alerting.matchers import from_config, matches_all
from stream.alerting.record import AlertRecord
from stream.clock import WALL_CLOCK, Clock
from stream.config import ActionConfig, ActionsConfig

log = logging.getLogger("paywatch.actions")

_DETAIL_MAX = 500  # characters of an answer or error kept in the audit


@dataclass
class ActionRun:
    """One audit record: what ran (or why not), for which alert, how it ended."""

    ts_ms: int
    action: str
    kind: str
    trigger: str
    alert_id: str
    fingerprint: str
    run_id: str
    result: str  # ok | failed | error | dry_run | disabled | cooldown | rate_limited
    attempts: int = 0
    duration_ms: float = 0.0
    status: int | None = None  # last HTTP status or exit code
    orders: int = 0  # overdue orders handed over
    target: str = ""  # the URL (no query) or the program
    detail: str = ""  # the answer or the errors, attempt by attempt


@dataclass
class _Job:
    action: ActionConfig
    trigger: str
    record: AlertRecord
    run_id: str
    orders: list[dict[str, str]] = field(default_factory=list)


def _target(action: ActionConfig) -> str:
    return action.url.split("?", 1)[0] if action.kind == "http" else action.command[0]


class ActionRunner:
    """Decides, runs and audits the configured actions (see the module docstring)."""

    def __init__(
        self,
        config: ActionsConfig,
        *,
        routes_for: Callable[[Mapping[str, str]], Sequence[str]] | None = None,
        audit: Callable[[ActionRun], None] | None = None,
        clock: Clock = WALL_CLOCK,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.routes_for = routes_for
        self.audit = audit
        self.clock = clock
        self.env = os.environ if env is None else env
        self.matchers = {a.name: from_config(a.match, a.match_re) for a in config.definitions}
        self.runs: collections.deque[ActionRun] = collections.deque(maxlen=1000)
        self.sent = 0  # requests or commands actually started
        self._seen: dict[str, int] = {}  # alert_id -> severity rank announced (escalation)
        self._last: dict[tuple[str, str, str], float] = {}  # (action, fp, trigger) -> ran at
        self._recent: dict[str, collections.deque[float]] = {}  # action -> run times (1 h)
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._early: list[tuple[list[AlertRecord], int]] = []
        self._busy = 0
        self._client: httpx.AsyncClient | None = None

    # -- life ------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient()
        self._tasks = [
            asyncio.create_task(self._work(), name=f"paywatch-action-{i}")
            for i in range(self.config.max_concurrent)
        ]
        early, self._early = self._early, []
        for records, now_ms in early:
            self._decide(records, now_ms)

    async def idle(self) -> None:
        """Until every run submitted so far has finished (tests, and a draining stop)."""
        await asyncio.sleep(0)  # decisions handed over with call_soon_threadsafe run first
        await self._queue.join()

    async def stop(self, drain_s: float = 0.0) -> None:
        if drain_s > 0 and self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle(), drain_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- deciding --------------------------------------------------------------------

    def submit(self, records: Iterable[AlertRecord], now_ms: int) -> None:
        """Take alert records (any thread); decisions and runs happen in the runner's loop."""
        batch = list(records)
        if not batch or not self.config.definitions:
            return
        if self._loop is None:
            self._early.append((batch, now_ms))
            return
        try:
            self._loop.call_soon_threadsafe(self._decide, batch, now_ms)
        except RuntimeError:  # the loop is closed: the worker is stopping
            log.warning("actions stopped; %d alert records not acted on", len(batch))

    def trigger_of(self, rec: AlertRecord) -> str | None:
        """firing (new episode), escalation (announced again, worse), resolved, or None."""
        if not rec.firing:
            return "resolved" if self._seen.pop(rec.alert_id, None) is not None else None
        before = self._seen.get(rec.alert_id)
        self._seen[rec.alert_id] = max(rec.rank, before or 0)
        if before is None:
            return "firing"
        return "escalation" if rec.rank > before else None

    def _wanted(self, action: ActionConfig, trigger: str, rec: AlertRecord) -> bool:
        if trigger not in action.on or not matches_all(self.matchers[action.name], rec.labels):
            return False
        routed = self.routes_for
        if (
            action.routes
            and routed is not None
            and not set(action.routes) & set(routed(rec.labels))
        ):
            return False
        return not action.needs_evidence or bool(flat_orders(rec.to_dict()))

    def _decide(self, records: list[AlertRecord], now_ms: int) -> None:
        for rec in records:
            trigger = self.trigger_of(rec)
            if trigger is None:
                continue
            for action in self.config.definitions:
                if self._wanted(action, trigger, rec):
                    self._gate(_Job(action, trigger, rec, _run_id(action, rec, trigger)), now_ms)

    def _gate(self, job: _Job, now_ms: int) -> None:
        """Kill switch, cooldown, rate limit and dry run, in that order; else queue the run."""
        a, now = job.action, self.clock.monotonic()
        job.orders = flat_orders(job.record.to_dict())
        key = (a.name, job.record.fingerprint, job.trigger)
        recent = self._recent.setdefault(a.name, collections.deque())
        while recent and recent[0] <= now - 3600:
            recent.popleft()
        if not self.config.enabled:
            return self._skip(job, now_ms, "disabled", "actions.enabled is false (kill switch)")
        last = self._last.get(key)
        if last is not None and now - last < a.cooldown_s:
            return self._skip(job, now_ms, "cooldown", f"ran {now - last:.0f} s ago")
        if len(recent) >= a.max_runs_per_hour:
            return self._skip(job, now_ms, "rate_limited", f"{len(recent)} runs in the last hour")
        self._last[key] = now
        recent.append(now)
        if self.config.dry_run or a.dry_run:
            body = self._body(job, now_ms, dry_run=True)
            return self._skip(job, now_ms, "dry_run", f"would send {len(body)} bytes")
        self._queue.put_nowait(job)

    def _skip(self, job: _Job, now_ms: int, result: str, why: str) -> None:
        rec, a = job.record, job.action
        run = ActionRun(now_ms, a.name, a.kind, job.trigger, rec.alert_id, rec.fingerprint,
                        job.run_id, result, orders=len(job.orders), target=_target(a),
                        detail=why)  # fmt: skip
        self._audit(run)

    def _audit(self, run: ActionRun) -> None:
        self.runs.append(run)
        log.info("action %s (%s) on %s: %s %s", run.action, run.trigger, run.alert_id,
                 run.result, run.detail[:120])  # fmt: skip
        if self.audit is not None:
            try:
                self.audit(run)
            except Exception as exc:  # the audit store failing must not stop actions
                log.error("action audit not stored: %s", exc)

    # -- running ---------------------------------------------------------------------

    def _body(self, job: _Job, now_ms: int, dry_run: bool = False) -> bytes:
        context = {
            "schema_version": BODY_VERSION,
            "action": job.action.name,
            "trigger": job.trigger,
            "run_id": job.run_id,
            "sent_at": now_ms,
            "alert": job.record.to_dict(),
            "orders": job.orders,
        }
        if dry_run:
            context["dry_run"] = True
        body = render_template(job.action.body, context) if job.action.body else context
        return orjson.dumps(body)

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                self._audit(await self._run(job))
            except Exception as exc:  # a bug guard: the task must survive any one run
                log.exception("action %s failed unexpectedly", job.action.name)
                self._skip(job, self.clock.now_ms(), "error", repr(exc)[:_DETAIL_MAX])
            finally:
                self._queue.task_done()

    async def _run(self, job: _Job) -> ActionRun:
        """Attempts with backoff until one succeeds, one fails for good, or none are left."""
        a = job.action
        started_ms, t0 = self.clock.now_ms(), time.perf_counter()
        run = ActionRun(started_ms, a.name, a.kind, job.trigger, job.record.alert_id,
                        job.record.fingerprint, job.run_id, "failed", orders=len(job.orders),
                        target=_target(a))  # fmt: skip
        notes: list[str] = []
        for attempt in range(1, a.max_attempts + 1):
            run.attempts = attempt
            body = self._body(job, self.clock.now_ms())
            outcome, retry, status, detail = await self._attempt(a, job, body)
            run.result, run.status = outcome, status
            notes.append(f"#{attempt} {detail}")
            if not retry or attempt == a.max_attempts:
                break
            await asyncio.sleep(min(a.max_backoff_s, a.backoff_s * 2 ** (attempt - 1)))
        run.duration_ms = round((time.perf_counter() - t0) * 1000, 1)
        run.detail = "; ".join(notes)[:_DETAIL_MAX]
        return run

    async def _attempt(
        self, a: ActionConfig, job: _Job, body: bytes
    ) -> tuple[str, bool, int | None, str]:
        """(result, retry?, status, what happened) of one attempt."""
        if a.kind == "command":
            return await self._command(a, job, body)
        secret = self.env.get(a.secret_env) if a.secret_env else None
        if not secret:
            return "error", False, None, f"secret_env {a.secret_env or '?'} is not set: not sent"
        headers = {
            **a.headers,
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_header(secret.encode(), body, self.clock.now_ms() // 1000),
            RUN_HEADER: job.run_id,
            ACTION_HEADER: a.name,
        }
        assert self._client is not None, "start() the runner first"
        self.sent += 1
        try:
            async with asyncio.timeout(a.timeout_s):  # the whole exchange, not each read
                resp = await self._client.post(a.url, content=body, headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            return "failed", True, None, f"no answer within {a.timeout_s:g} s"
        except httpx.HTTPError as exc:
            return "failed", True, None, f"{type(exc).__name__}: {exc}"
        outcome, retry = read_answer(resp.status_code, resp.text)
        return outcome, retry, resp.status_code, f"HTTP {resp.status_code} {resp.text[:200]}"

    async def _command(
        self, a: ActionConfig, job: _Job, body: bytes
    ) -> tuple[str, bool, int | None, str]:
        env = {**self.env, "PAYWATCH_ACTION": a.name, "PAYWATCH_TRIGGER": job.trigger,
               "PAYWATCH_ALERT_ID": job.record.alert_id, "PAYWATCH_RUN_ID": job.run_id}  # fmt: skip
        self.sent += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *a.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
        except OSError as exc:  # not found, not executable: retrying cannot help
            return "failed", False, None, f"cannot start {a.command[0]}: {exc.strerror}"
        try:
            async with asyncio.timeout(a.timeout_s):
                out, _ = await proc.communicate(body)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return "failed", True, None, f"killed after {a.timeout_s:g} s"
        code = proc.returncode
        text = out.decode("utf-8", "replace").strip()[:200]
        return (
            ("ok", False, code, text)
            if code == 0
            else ("failed", True, code, f"exit {code} {text}")
        )


def _run_id(action: ActionConfig, rec: AlertRecord, trigger: str) -> str:
    """Stable per (action, episode, trigger, record): a receiver can deduplicate retries."""
    key = f"{action.name}:{rec.alert_id}:{trigger}:{rec.window_end}:{rec.severity}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]
