"""Decoding in a child process, so it overlaps consuming and windowing on another core.

JSON parsing and validation cost about as much as everything after them.  On a
machine with a spare core the worker hands a batch's raw values to a child
process and windows earlier batches meanwhile; when the child is still busy
with one batch, the next is decoded here instead (work sharing), so neither
core waits on the other.  Decoding is a pure function of (values, sources,
settings), so results are the same wherever a batch is decoded, and
:class:`OrderedDecoder` hands batches back strictly in the order they came.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Generic, TypeVar

from stream.decode import decode_batch
from stream.events import DecodedBatch, Source

T = TypeVar("T")


def _decode(
    values: Sequence[bytes | None], sources: Sequence[Source], kwargs: dict[str, Any]
) -> DecodedBatch:
    return decode_batch(values, sources, **kwargs)


def default_workers() -> int:
    """One decode process when there is a second core, none (inline) otherwise."""
    return 1 if (os.cpu_count() or 1) > 1 else 0


class DecodePool:
    """A small process pool for :func:`decode_batch`; use ``await pool.decode(...)``."""

    def __init__(self, workers: int = 1) -> None:
        # forkserver: never fork a process that holds Kafka sockets and an event loop.
        ctx = multiprocessing.get_context("forkserver")
        self.workers = workers
        self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)

    async def decode(
        self, values: Sequence[bytes | None], sources: Sequence[Source], **kwargs: Any
    ) -> DecodedBatch:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, _decode, values, sources, kwargs)

    async def warm_up(self) -> None:
        """Start the child processes now rather than on the first batch."""
        await self.decode([], [])

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class OrderedDecoder(Generic[T]):
    """Decodes batches in the child processes when one is free, else inline; yields
    them back in submission order.

    ``tag`` travels with each batch (the worker's Kafka offsets).  At most
    ``max_pending`` batches wait undelivered, so memory stays bounded when the
    caller falls behind.

    >>> import asyncio
    >>> from stream.events import Source
    >>> async def demo():
    ...     dec = OrderedDecoder(None)          # no pool: everything inline
    ...     dec.submit([b'{"x":1}'], [Source("t", 0, 0)], {}, "first")
    ...     decoded, tag = await dec.next()
    ...     return len(decoded.rejected), tag, len(dec)
    >>> asyncio.run(demo())
    (1, 'first', 0)
    """

    def __init__(self, pool: DecodePool | None, max_pending: int = 4) -> None:
        self.pool = pool
        self.max_pending = max_pending
        self._queue: deque[tuple[asyncio.Future[DecodedBatch], T]] = deque()
        self.inline = 0  # batches decoded here although a pool exists (work sharing)

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def full(self) -> bool:
        return len(self._queue) >= self.max_pending

    def head_ready(self) -> bool:
        return bool(self._queue) and self._queue[0][0].done()

    def _busy(self) -> int:
        return sum(1 for fut, _ in self._queue if not fut.done())

    def submit(
        self,
        values: Sequence[bytes | None],
        sources: Sequence[Source],
        kwargs: dict[str, Any],
        tag: T,
    ) -> None:
        pool = self.pool
        fut: asyncio.Future[DecodedBatch]
        if pool is not None and self._busy() < pool.workers:
            fut = asyncio.ensure_future(pool.decode(values, sources, **kwargs))
        else:
            if pool is not None:
                self.inline += 1
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(decode_batch(values, sources, **kwargs))
        self._queue.append((fut, tag))

    async def next(self) -> tuple[DecodedBatch, T]:
        """The oldest batch, decoded (waits for the child if it is still at it)."""
        fut, tag = self._queue[0]
        decoded = await fut
        self._queue.popleft()
        return decoded, tag
