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

import asyncio
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

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to (tests, offline replays)."""

    def __init__(self, now_ms: int = 0) -> None:
        self._start_ms = now_ms
        self._elapsed_s = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now_ms(self) -> int:
        return self._start_ms + round(self._elapsed_s * 1000)

    def monotonic(self) -> float:
        return self._elapsed_s

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._elapsed_s += seconds
        due = [f for t, f in self._sleepers if t <= self._elapsed_s]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self._elapsed_s]
        for fut in due:  # may be called from another thread than the sleepers' loop
            fut.get_loop().call_soon_threadsafe(_wake, fut)

    async def sleep(self, seconds: float) -> None:
        """Return once the clock was advanced by ``seconds`` (retry timers in tests)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._elapsed_s + seconds, fut))
        await fut

    @property
    def sleeping(self) -> int:
        """How many ``sleep`` calls are waiting (a test waits for a timer to be set)."""
        return sum(not f.done() for _, f in self._sleepers)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def sleep(clock: Clock, seconds: float) -> None:
    """Sleep on ``clock``'s time: a :class:`ManualClock` wakes when advanced, any other
    clock sleeps on the event loop."""
    if isinstance(clock, ManualClock):
        await clock.sleep(seconds)
    else:
        await asyncio.sleep(seconds)


WALL_CLOCK = WallClock()
