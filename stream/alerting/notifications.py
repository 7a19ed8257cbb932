"""Notifications for the live worker: dispatcher + delivery + history, built from config.

The worker hands every alert v1 record of a batch to :meth:`Notifications.on_alerts`
and calls :meth:`Notifications.tick` on every loop iteration.  Both only update
in-memory state, write the history file and *queue* messages: sending happens in
the :class:`~stream.alerting.delivery.Deliverer`'s own tasks and threads, so a slow SMTP
server or a refusing robot never holds up the consumer.  The worker goes one step
further with :class:`InOrderThread`: dispatching and history writes (~0.25 ms per
alert record, and SQLite may wait for another worker's write lock) run in one
thread of their own, in the order the calls were made.

Time is the wall clock the worker passes in (``now_ms``): ``group_wait`` and
``group_interval`` are wall-clock durations, whatever pace event time runs at.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any, TypeVar

from stream.alerting.actions import ActionRun, ActionRunner
from stream.alerting.delivery import Deliverer, DeliveryAttempt, Message
from stream.alerting.dispatch import Dispatcher
from stream.alerting.history import AlertHistory, HistoryError, default_path
from stream.alerting.record import AlertRecord
from stream.alerting.routes import route_targets
from stream.alerting.silences import ControlEvent, ControlEventError, SilenceSet
from stream.clock import WALL_CLOCK, Clock
from stream.config import Config, ConfigError

log = logging.getLogger("paywatch.notify")

T = TypeVar("T")
# Messages just emitted and the notification log's state that names them: a journal
# makes the state durable, then hands the messages to delivery (write-ahead).
Journal = Callable[[list[Message], dict[str, Any]], None]
LOG_VERSION = 1


def history_file(config: Config) -> str | None:
    """The history file the config names: ``None`` when ``notify.history_path`` is "off".

    >>> from stream.config import Config, ConfigError
    >>> c = Config()
    >>> c.notify.history_path = "off"
    >>> history_file(c) is None
    True
    >>> c.notify.history_path = "/tmp/h.db"
    >>> history_file(c)
    '/tmp/h.db'
    """
    path = config.notify.history_path.strip()
    if path.lower() == "off":
        return None
    return path or str(default_path())


class Notifications:
    """Everything between alert records and people, for one worker.

    >>> import asyncio
    >>> from stream.config import Config, ConfigError
    >>> cfg = Config()
    >>> cfg.notify.history_path = "off"
    >>> n = Notifications(cfg)
    >>> n.routes  # no routes configured: history only, nothing is sent
    []
    """

    def __init__(
        self, config: Config, *, history: AlertHistory | None = None, clock: Clock = WALL_CLOCK
    ) -> None:
        routes, rules = config.notify_routes()
        self.routes = [r.name for r in routes]
        if history is None:
            path = history_file(config)
            try:
                history = AlertHistory(path) if path is not None else None
            except HistoryError as exc:  # a person can fix this: name the key
                raise ConfigError(f"notify.history_path: {exc}") from None
        self.history = history
        self.silences = SilenceSet()
        self.dispatcher = Dispatcher(
            routes,
            [*rules, *config.builtin_inhibit_rules()],
            self.silences,
            default_inhibit=config.notify.default_inhibit,
            history=history,
        )
        d = config.notify.delivery
        # Every route the dispatcher may address, its built-in "default" included
        # (receiver-less unless configured: such messages are recorded, not sent).
        targets = route_targets(self.dispatcher.routes.values())
        self.deliverer = Deliverer(
            targets,
            max_attempts=d.max_attempts,
            backoff_s=d.backoff_s,
            max_backoff_s=d.max_backoff_s,
            send_timeout_s=d.send_timeout_s,
            on_attempt=self._audit if history is not None else None,
            on_done=self._delivered,
            clock=clock,
        )
        self._sendable = {n for n, t in targets.items() if t.channels or t.fallback}
        # Automatic actions run in the event loop's tasks, never in this thread's way.
        self.actions = ActionRunner(
            config.actions,
            routes_for=lambda labels: [r.name for r in self.dispatcher.router.routes_for(labels)],
            audit=self._audit_action if history is not None else None,
            clock=clock,
        )
        self.submitted = 0
        # Hears of every error caught here (the worker counts them); logged either way.
        self.on_error: Callable[[str, BaseException], None] | None = None
        self.control_applied = 0
        self.control_rejected = 0
        self._started = False
        # The notification log (see :meth:`snapshot`): messages emitted and not yet
        # delivered or given up, by id; with a journal, nothing is sent before the log
        # naming it is durable.
        self.journal: Journal | None = None
        self.on_settled: Callable[[Message], None] | None = None  # a message left the log
        self.owed: dict[str, Message] = {}
        self.positions: dict[int, int] = {}  # alerts-topic offsets the log covers (the feed)
        self._log_lock = threading.Lock()

    def _audit(self, attempt: DeliveryAttempt) -> None:
        assert self.history is not None
        self.history.record_delivery(attempt)

    def _audit_action(self, run: ActionRun) -> None:
        assert self.history is not None
        self.history.record_action(run)

    async def start(self) -> None:
        await self.actions.start()
        await self.deliverer.start()
        self._started = True

    def on_alerts(
        self,
        records: Iterable[AlertRecord],
        now_ms: int,
        positions: Mapping[int, int] | None = None,
    ) -> None:
        """Take a batch's alert records (already published); never raises.  ``positions``:
        the alerts-topic offsets after them (the feed), kept in the notification log."""
        records = list(records)
        for rec in records:
            try:
                self.dispatcher.on_alert(rec, now_ms)
            except Exception as exc:  # one odd record or a history hiccup must not stop the worker
                log.error("alert %s not taken for notification: %s", rec.alert_id, exc)
                self._failed(exc)
        self.actions.submit(records, now_ms)  # after history has the records
        if positions:
            self.positions.update(positions)

    def tick(self, now_ms: int) -> list[Message]:
        """Queue the messages that became due; returns them (for logs and tests)."""
        try:
            due = self.dispatcher.tick(now_ms)
        except Exception as exc:
            log.error("notification dispatch failed: %s", exc)
            self._failed(exc)
            return []
        sendable = []
        for msg in due:
            if msg.route in self._sendable:
                sendable.append(msg)
            else:
                log.debug("route %s has no receivers; %s kept in history", msg.route, msg.title)
        if sendable and self.journal is not None:
            with self._log_lock:
                self.owed.update((m.id, m) for m in sendable)
            self.journal(sendable, self.snapshot())  # it submits once the log is durable
        else:
            self.submit(sendable)
        return due

    def submit(self, messages: Iterable[Message]) -> None:
        for msg in messages:
            self.deliverer.submit(msg)
            self.submitted += 1

    def _delivered(self, message: Message, ok: bool) -> None:
        with self._log_lock:
            settled = self.owed.pop(message.id, None)
        if settled is not None and self.on_settled is not None:
            self.on_settled(settled)

    # -- the notification log -------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The notification log: the dispatcher's state (alerts, groups and what each told,
        acks, timers, episodes over), the messages still owed, and the alerts-topic
        offsets it covers.  Call from the thread that dispatches."""
        with self._log_lock:
            owed = [asdict(m) for m in self.owed.values()]
        return {
            "v": LOG_VERSION,
            "dispatcher": self.dispatcher.snapshot(),
            "owed": owed,
            "positions": {str(p): o for p, o in self.positions.items()},
        }

    def log_now(self) -> None:
        """Hand the notification log as it is now to the journal (a checkpoint)."""
        if self.journal is not None:
            self.journal([], self.snapshot())

    def forget(self) -> None:
        """Another worker owns these alerts now: no state, no timers, nothing owed here
        (silences stay: every worker follows the control topic)."""
        self.dispatcher.restore({"version": 1})
        with self._log_lock:
            self.owed = {}
        self.positions = {}

    def restore(self, state: Mapping[str, Any]) -> dict[int, int]:
        """Take over a :meth:`snapshot`: the dispatcher as it was, the messages it still owed
        queued again (delivery was not confirmed); returns the offsets to resume from."""
        if state.get("v") != LOG_VERSION:
            raise ValueError(f"notification log version {state.get('v')!r} is not {LOG_VERSION}")
        self.dispatcher.restore(state["dispatcher"])
        owed = [Message(**{**m, "alert_ids": tuple(m["alert_ids"])}) for m in state["owed"]]
        with self._log_lock:
            self.owed = {m.id: m for m in owed}
        self.positions = {int(p): int(o) for p, o in state["positions"].items()}
        if owed:
            log.info("sending %d notifications the previous owner had not confirmed", len(owed))
            self.submit(owed)
        return dict(self.positions)

    def _failed(self, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error("notifications", exc)

    def apply_control(self, raw: bytes | str | None, now_ms: int) -> bool:
        """Apply one control-topic record; a bad one is logged with the reason and skipped."""
        if raw is None:
            self.control_rejected += 1
            log.warning("control record without a value skipped")
            return False
        try:
            event = ControlEvent.decode(raw)
        except ControlEventError as exc:
            self.control_rejected += 1
            log.warning("control record skipped: %s", exc)
            return False
        try:
            changed = self.dispatcher.apply_control(event, now_ms)
        except (ControlEventError, HistoryError, ValueError) as exc:
            self.control_rejected += 1
            log.warning("control %s not applied: %s", event.kind, exc)
            return False
        self.control_applied += 1
        if event.kind == "silence" and event.silence is not None:
            s = event.silence
            log.info(
                "silence %s (%s) by %s until %s",
                s.id,
                ", ".join(str(m) for m in s.matchers),
                s.author or "?",
                s.ends_at,
            )
        elif event.kind == "unsilence":
            log.info("silence %s lifted by %s", event.silence_id, event.author or "?")
        elif event.kind == "ack":
            log.info("ack of %s by %s (%s)", event.target, event.author or "?", changed)
        return changed

    async def stop(self, drain_s: float = 2.0) -> None:
        """Give queued deliveries up to ``drain_s`` to finish, then stop (call ``tick`` first)."""
        await self.actions.stop(drain_s)
        if self._started:
            if drain_s > 0:
                await self.deliverer.drain(drain_s)
            await self.deliverer.stop()
            self._started = False
        if self.history is not None:
            self.history.close()


class InOrderThread:
    """Runs a :class:`Notifications`' calls in one background thread, in call order.

    The calls return at once, so the consumer never waits for dispatching or for
    the history file.  Ticks do not pile up: one queued tick at a time, and it
    reads the clock when it runs.  Delivery's ``submit`` is thread-safe.
    """

    def __init__(self, notifications: Notifications, clock: Clock = WALL_CLOCK) -> None:
        self.notifications = notifications
        self.clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paywatch-dispatch")
        self._tick_queued = threading.Event()
        self.on_error: Callable[[str, BaseException], None] | None = None  # the worker counts

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self._executor.submit(self._guard, fn, *args)
        except RuntimeError:  # shut down: the worker is stopping
            log.warning("notifications stopped; %s dropped", getattr(fn, "__name__", fn))

    def _guard(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # the wrapped methods catch their own errors; a bug guard
            log.exception("notification work failed")
            if self.on_error is not None:
                self.on_error("notifications", exc)

    def on_alerts(
        self,
        records: Iterable[AlertRecord],
        now_ms: int,
        positions: Mapping[int, int] | None = None,
    ) -> None:
        self._call(self.notifications.on_alerts, list(records), now_ms, positions)

    def log_now(self) -> None:
        self._call(self.notifications.log_now)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the thread, in order with the other calls; its result."""
        return await asyncio.wrap_future(self._executor.submit(fn, *args))

    def apply_control(self, raw: bytes | str | None, now_ms: int) -> None:
        self._call(self.notifications.apply_control, raw, now_ms)

    def tick(self) -> None:
        if not self._tick_queued.is_set():
            self._tick_queued.set()
            self._call(self._tick)

    def _tick(self) -> None:
        self._tick_queued.clear()
        self.notifications.tick(self.clock.now_ms())

    async def stop(self, drain_s: float) -> None:
        """Finish queued work, queue what is due, let delivery drain, then stop."""
        self._call(self._tick)
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        await self.notifications.stop(drain_s)
