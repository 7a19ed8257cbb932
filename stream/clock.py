"""Time as a dependency: every reading of the wall clock goes through a :class:`Clock`.

Live code gets :class:`WallClock`; tests pass a :class:`ManualClock` and move time
themselves, so "nothing happened for five minutes" is a statement about a clock the
test controls, not a sleep that passes on a slow machine without testing anything.

>>> clock = ManualClock(1_000)
>>> clock.now_ms()
1000
>>> clock.advance(2.5)
>>> clock.now_ms(), clock.monotonic()
(3500, 2.5)
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock milliseconds (for records people read) and monotonic seconds (for timers)."""

    def now_ms(self) -> int: ...

    def monotonic(self) -> float: ...


class WallClock:
    """The machine's clock."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to (tests, offline replays)."""

    def __init__(self, now_ms: int = 0) -> None:
        self._start_ms = now_ms
        self._elapsed_s = 0.0

    def now_ms(self) -> int:
        return self._start_ms + round(self._elapsed_s * 1000)

    def monotonic(self) -> float:
        return self._elapsed_s

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._elapsed_s += seconds


WALL_CLOCK = WallClock()
