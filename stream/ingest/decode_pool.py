"""Decoding in a child process, so it overlaps consuming and windowing on another core.

JSON parsing and validation cost about as much as everything after them.  On a
machine with a spare core the worker hands each batch to a child process and
windows earlier batches meanwhile; when the child has a queue already, the
next batch is decoded here instead (work sharing).  Decoding is a pure function
of (values, sources, settings), so results are the same wherever a batch is
decoded, and :class:`OrderedDecoder` hands batches back strictly in order.

Transport: a batch (≈3 MB) and its result go through reusable files ("slots")
in a memory-backed directory, and only their names and sizes through a pipe that
this process's event loop reads.  concurrent.futures' process pool moves data
through helper threads that need the GIL for every 64 KiB piece, while this
process holds the GIL as it windows: that cost 10-30 ms per batch, the child
idle meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import mmap
import multiprocessing
import os
import pickle
import shutil
import tempfile
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

import numpy as np

from stream.ingest.decode import decode_batch
from stream.ingest.events import DecodedBatch, Source

T = TypeVar("T")
log = logging.getLogger("paywatch.decode")


def default_workers() -> int:
    """One decode process when there is a second core, none (inline) otherwise."""
    return 1 if (os.cpu_count() or 1) > 1 else 0


def _spool_dir() -> str:
    """Memory-backed when the system has it (Linux /dev/shm), else the temp directory."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


def _remove_stale_spools(where: str) -> None:
    """Spool directories of workers that died without closing (kill -9) hold a few MB of
    memory in /dev/shm each: remove those whose process is gone."""
    for entry in os.scandir(where):
        parts = entry.name.split("-")
        if len(parts) < 4 or parts[:2] != ["paywatch", "decode"] or not parts[2].isdigit():
            continue
        try:
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            pass  # alive, but another user's


IOV_CHUNK = 512  # iovecs per pwritev call (the OS allows at least 1024)


def _write_batch(fd: int, values: Sequence[bytes | None], sources: Sequence[Source]) -> int:
    """Write a batch to a spool slot from offset 0; returns the bytes written.

    Layout: 8-byte header length, pickled (lengths (-1: None), sources), then the
    records back to back, written straight from the record objects (no joined copy).
    Slots are reused, so their memory pages already exist: allocating fresh pages
    for every batch cost as much as the rest of the hand-over."""
    if None in values:
        lengths = np.array([-1 if v is None else len(v) for v in values], np.int64)
        records = [v for v in values if v is not None]
    else:
        lengths = np.fromiter(map(len, values), np.int64, len(values))  # type: ignore[arg-type]
        records = values  # type: ignore[assignment]
    head = pickle.dumps((lengths, sources), protocol=pickle.HIGHEST_PROTOCOL)
    at = os.pwritev(fd, [len(head).to_bytes(8, "little"), head], 0)
    for k in range(0, len(records), IOV_CHUNK):
        at += os.pwritev(fd, records[k : k + IOV_CHUNK], at)
    return at


class _SlotReader:
    """Child side: memory maps of the slots, remapped when a slot grows."""

    def __init__(self) -> None:
        self.maps: dict[str, mmap.mmap] = {}

    def view(self, path: str, size: int) -> mmap.mmap:
        mm = self.maps.get(path)
        if mm is None or len(mm) < size:
            if mm is not None:
                mm.close()
            with open(path, "rb") as fh:
                mm = self.maps[path] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        return mm

    def batch(self, path: str, size: int) -> tuple[list[bytes | None], Sequence[Source]]:
        mm = self.view(path, size)
        head_len = int.from_bytes(mm[:8], "little")
        lengths, sources = pickle.loads(mm[8 : 8 + head_len])
        ends = (np.cumsum(np.maximum(lengths, 0)) + 8 + head_len).tolist()
        starts = [8 + head_len, *ends[:-1]]
        values: list[bytes | None] = list(map(mm.__getitem__, map(slice, starts, ends)))
        for i in np.flatnonzero(lengths < 0).tolist():
            values[i] = None
        return values, sources


def _serve(conn: Connection) -> None:
    """Child process: decode the batch each message names until told to stop (None);
    the pickled result goes to the slot's ``.out`` file, its size back on the pipe."""
    reader = _SlotReader()
    outputs: dict[str, int] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if msg is None:
            return
        path, size, kwargs = msg
        try:
            values, sources = reader.batch(path, size)
            blob = pickle.dumps(decode_batch(values, sources, **kwargs), pickle.HIGHEST_PROTOCOL)
            out = path + ".out"
            fd = outputs.get(out)
            if fd is None:
                fd = outputs[out] = os.open(out, os.O_RDWR | os.O_CREAT, 0o600)
            os.pwrite(fd, blob, 0)
            conn.send(("ok", len(blob)))
        except Exception as exc:  # reported to the awaiting caller, never lost
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class DecodePoolError(RuntimeError):
    """A decode process failed or died."""


class DecodePool:
    """Child processes running :func:`decode_batch`; use ``await pool.decode(...)``.

    Each child takes its batches in order (one pipe each, a FIFO of waiting
    futures); a new batch goes to the child with the fewest in flight.
    """

    def __init__(self, workers: int = 1) -> None:
        # forkserver: never fork a process that holds Kafka sockets and an event loop.
        ctx = multiprocessing.get_context("forkserver")
        self.workers = workers
        _remove_stale_spools(_spool_dir())
        self.spool = tempfile.mkdtemp(prefix=f"paywatch-decode-{os.getpid()}-", dir=_spool_dir())
        self._names = itertools.count()
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self._waiting: dict[int, deque[asyncio.Future[Any]]] = {}
        # Spool slots: path -> (batch fd, result fd); free ones are reused.
        self._slots: dict[str, tuple[int, int]] = {}
        self._free: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        for _ in range(workers):
            parent, child = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="paywatch-decode")
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
            self._waiting[parent.fileno()] = deque()

    def _attach(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop = loop
        for conn in self._conns:
            loop.add_reader(conn.fileno(), self._on_reply, conn)

    def _on_reply(self, conn: Connection) -> None:
        waiting = self._waiting[conn.fileno()]
        try:
            while conn.poll():
                status, text = conn.recv()
                fut = waiting.popleft()
                if status == "ok":
                    fut.set_result(text)
                else:
                    fut.set_exception(DecodePoolError(f"decode process failed: {text}"))
        except (EOFError, OSError):
            assert self._loop is not None
            self._loop.remove_reader(conn.fileno())
            while waiting:
                waiting.popleft().set_exception(DecodePoolError("decode process died"))

    async def decode(
        self, values: Sequence[bytes | None], sources: Sequence[Source], **kwargs: Any
    ) -> DecodedBatch:
        if self._closed:
            raise DecodePoolError("decode pool is closed")
        self._attach()
        conn = min(self._conns, key=lambda c: len(self._waiting[c.fileno()]))
        path = self._free.pop() if self._free else self._new_slot()
        try:
            size = _write_batch(self._slots[path][0], values, sources)
        except OSError as exc:  # e.g. /dev/shm full
            raise DecodePoolError(f"cannot hand a batch to the decode process: {exc}") from None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiting = self._waiting[conn.fileno()]
        waiting.append(fut)
        try:
            conn.send((path, size, kwargs))
        except OSError:
            waiting.remove(fut)
            raise DecodePoolError("decode process died") from None
        try:
            result_size = await fut
            decoded: DecodedBatch = pickle.loads(os.pread(self._slots[path][1], result_size, 0))
        finally:
            self._free.append(path)
        return decoded

    def _new_slot(self) -> str:
        path = os.path.join(self.spool, f"{next(self._names)}.batch")
        flags = os.O_RDWR | os.O_CREAT
        self._slots[path] = (os.open(path, flags, 0o600), os.open(path + ".out", flags, 0o600))
        return path

    async def warm_up(self) -> None:
        """Wait until every child answers (they start in the background)."""
        await asyncio.gather(*(self.decode([], []) for _ in range(self.workers)))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for waiting in self._waiting.values():
            while waiting:
                fut = waiting.popleft()
                if not fut.done():
                    fut.set_exception(DecodePoolError("decode pool is closed"))
        if self._loop is not None and not self._loop.is_closed():
            for conn in self._conns:
                with contextlib.suppress(ValueError, OSError):
                    self._loop.remove_reader(conn.fileno())
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        for conn in self._conns:
            conn.close()
        for fds in self._slots.values():
            for fd in fds:
                os.close(fd)
        self._slots.clear()
        shutil.rmtree(self.spool, ignore_errors=True)


class OrderedDecoder(Generic[T]):
    """Decodes batches in the child processes until ``max_pending - 1`` wait there,
    else inline (work sharing); yields them back in submission order within each
    *lane*.

    ``tag`` travels with each batch (the worker's Kafka offsets).  A batch's ``lane``
    (the task it belongs to) orders it only against the batches of its lane: a batch
    that is ready goes ahead of other lanes' batches still in the child, so a roll-up
    task's shipments are windowed while a source task's records are decoded.  At most
    ``max_pending`` batches wait undelivered, so memory stays bounded when the caller
    falls behind.

    >>> import asyncio
    >>> from stream.ingest.events import Source
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
        # Batches queued per decode process before one is decoded here instead: a queue
        # keeps the child busy while results travel back; a full one means the child is
        # the slower side and this process should take a share.
        self.child_queue = max(1, max_pending - 1)
        self._queue: deque[_Pending[T]] = deque()
        self.inline = 0  # batches decoded here although a pool exists (work sharing)

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def full(self) -> bool:
        return len(self._queue) >= self.max_pending

    def _ready(self) -> int | None:
        """Index of the oldest decoded batch that no older batch of its lane precedes."""
        blocked: set[Hashable] = set()
        for i, p in enumerate(self._queue):
            if p.lane in blocked:
                continue
            if p.decoding.done():
                return i
            blocked.add(p.lane)
        return None

    def ready(self) -> bool:
        return self._ready() is not None

    def decoding(self) -> list[asyncio.Future[DecodedBatch]]:
        """The batches still being decoded (to wait on alongside other things)."""
        return [p.decoding for p in self._queue if not p.decoding.done()]

    def _busy(self) -> int:
        return len(self.decoding())

    def submit(
        self,
        values: Sequence[bytes | None],
        sources: Sequence[Source],
        kwargs: dict[str, Any],
        tag: T,
        lane: Hashable = None,
    ) -> None:
        pool = self.pool
        fut: asyncio.Future[DecodedBatch]
        # Nothing to decode (a roll-up task's part: its shipments are decoded columns):
        # not worth a round trip to the child.
        if values and pool is not None and self._busy() < self.child_queue * pool.workers:
            fut = asyncio.ensure_future(pool.decode(values, sources, **kwargs))
        else:
            if pool is not None and values:
                self.inline += 1
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(decode_batch(values, sources, **kwargs))
        self._queue.append(_Pending(fut, tag, lane, (values, sources, kwargs)))

    async def next(self) -> tuple[DecodedBatch, T]:
        """The next batch, decoded: the oldest ready one (:meth:`ready`), else the oldest
        (waiting for the child if it is still at it).

        Should the child fail or die, the batch is decoded here and so is everything
        after it: a worker keeps going on one core rather than stop."""
        i = self._ready() or 0
        p = self._queue[i]
        try:
            decoded = await p.decoding
        except DecodePoolError as exc:
            if self.pool is not None:
                log.warning("%s; decoding in the main process from now on", exc)
                self.pool = None
            decoded = decode_batch(*p.retry[:2], **p.retry[2])
        del self._queue[i]
        return decoded, p.tag


@dataclass
class _Pending(Generic[T]):
    decoding: asyncio.Future[DecodedBatch]
    tag: T
    lane: Hashable
    retry: tuple[Any, ...]  # (values, sources, kwargs): to decode here should the child fail
