"""Decoding in a child process, so it overlaps consuming and windowing on another core.

JSON parsing and validation cost more than everything after them; on a machine
with a spare core the worker hands each batch's raw values to a child process
and windows the previous batch meanwhile.  Decoding is a pure function of
(values, sources, settings), so results are the same as decoding inline.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from stream.decode import decode_batch
from stream.events import DecodedBatch, Source


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
        self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)

    async def decode(
        self, values: Sequence[bytes | None], sources: Sequence[Source], **kwargs: Any
    ) -> DecodedBatch:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, _decode, values, sources, kwargs)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
