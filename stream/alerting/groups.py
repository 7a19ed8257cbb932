"""Alert groups and their timers.

A group is the alerts of one route with equal ``group_by`` values; it is flushed
``group_wait`` after its first alert, then every ``group_interval``.  Timers are
a heap of (due_ms, group key, kind, token), invalidated lazily: an evaluation
timer counts only if its token is the group's current one, an escalation timer
only while the group has not escalated.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Literal

from stream.config import RouteConfig

TimerKind = Literal[0, 1]
EVAL: TimerKind = 0
ESCALATE: TimerKind = 1
Timer = tuple[int, str, int, int]


@dataclass
class Group:
    key: str
    route: RouteConfig
    members: set[str] = field(default_factory=set)  # fingerprints
    sent: dict[str, tuple[str, int]] = field(default_factory=dict)  # fp → (alert_id, rank) told
    last_sent_ms: int | None = None
    repeats: int = 0
    crit_since_ms: int | None = None  # first notification carrying an unacked critical
    escalated: bool = False
    eval_token: int = 0
    next_eval_ms: int = 0


class Groups:
    """Groups by key and the heap of their timers."""

    def __init__(self) -> None:
        self.by_key: dict[str, Group] = {}
        self._timers: list[Timer] = []

    def clear(self) -> None:
        self.by_key, self._timers = {}, []

    def schedule_eval(self, g: Group, due_ms: int) -> None:
        g.eval_token += 1
        g.next_eval_ms = due_ms
        heapq.heappush(self._timers, (due_ms, g.key, EVAL, g.eval_token))

    def schedule_escalation(self, g: Group, due_ms: int) -> None:
        heapq.heappush(self._timers, (due_ms, g.key, ESCALATE, 0))

    def _valid(self, timer: Timer) -> bool:
        _, key, kind, token = timer
        g = self.by_key.get(key)
        if g is None:
            return False
        return token == g.eval_token if kind == EVAL else not g.escalated

    def pop_due(self, now_ms: int) -> tuple[int, Group, int] | None:
        """The next valid timer due by ``now_ms`` as (due_ms, group, kind), or None."""
        while self._timers and self._timers[0][0] <= now_ms:
            timer = heapq.heappop(self._timers)
            if self._valid(timer):
                due, key, kind, _ = timer
                return due, self.by_key[key], kind
        return None

    def next_due(self) -> int | None:
        """When the next timer runs (ms)."""
        while self._timers and not self._valid(self._timers[0]):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None
