"""OrderedDecoder: batches come back in order, decoded the same wherever they were decoded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import orjson

from stream.ingest.decode import decode_batch
from stream.ingest.decode_pool import DecodePool, OrderedDecoder
from stream.ingest.events import SourceColumns

T0 = 1_767_225_600_000


def _batch(k: int, n: int = 3000) -> tuple[list[bytes | None], SourceColumns]:
    values: list[bytes | None] = [
        orjson.dumps(
            {
                "schema_version": 1,
                "event_type": "provider_call",
                "service": "api",
                "event_id": f"{k}-{i}",
                "event_ts": T0 + k * 1000 + i,
                "provider": "alipay",
                "merchant_id": f"M{i % 50}",
                "operation": "create_payment",
                "outcome": "failure" if i % 7 == 0 else "success",
                "latency_ms": 50.0 + i % 30,
                "out_trade_no": f"o{k}-{i}",
            }
        )
        for i in range(n)
    ]
    values[k] = b"not json"  # one bad record per batch, at a different place each time
    return values, SourceColumns(["t"] * n, np.zeros(n, np.int32), np.arange(n) + k * n)


async def test_batches_come_back_in_order_and_decoded_as_inline() -> None:
    pool = DecodePool(1)
    try:
        await pool.warm_up()
        dec: OrderedDecoder[int] = OrderedDecoder(pool, max_pending=4)
        batches = [_batch(k) for k in range(6)]
        for k, (values, sources) in enumerate(batches):
            dec.submit(values, sources, {"reference_ms": T0}, k)
        # The child's queue holds max_pending - 1 = 3; the rest were decoded here.
        assert dec.inline == 3
        for k, (values, sources) in enumerate(batches):
            got, tag = await dec.next()
            want = decode_batch(values, sources, reference_ms=T0)
            assert tag == k
            assert [r.source.offset for r in got.rejected] == [k * 3000 + k]
            assert got.calls.ts.tolist() == want.calls.ts.tolist()
            assert got.calls.outcome.tolist() == want.calls.outcome.tolist()
            names = [got.strings[c] for c in got.calls.merchant_id.tolist()]
            assert names == [want.strings[c] for c in want.calls.merchant_id.tolist()]
        assert len(dec) == 0
    finally:
        pool.close()


async def test_without_a_pool_everything_is_decoded_inline_and_pending_is_bounded() -> None:
    dec: OrderedDecoder[int] = OrderedDecoder(None, max_pending=2)
    values, sources = _batch(0, 10)
    dec.submit(values, sources, {}, 0)
    assert dec.ready() and not dec.full
    dec.submit(values, sources, {}, 1)
    assert dec.full  # the worker windows the oldest before reading more
    assert dec.inline == 0  # "inline" counts only batches taken from a busy child
    assert [(await dec.next())[1] for _ in range(2)] == [0, 1]


async def test_a_ready_batch_goes_ahead_of_other_lanes_but_never_of_its_own() -> None:
    """With tasks, a roll-up task's shipments (no decoding) are windowed while a source
    task's records are still in the child; each task's own batches stay in order."""
    pool = DecodePool(1)
    try:
        await pool.warm_up()
        dec: OrderedDecoder[str] = OrderedDecoder(pool, max_pending=2)  # child queue: 1
        values, sources = _batch(0)
        dec.submit(values, sources, {"reference_ms": T0}, "source 1", lane="source")
        dec.submit(values, sources, {"reference_ms": T0}, "roll-up 1", lane="roll-up")
        dec.submit(values, sources, {"reference_ms": T0}, "source 2", lane="source")
        assert dec.inline == 2  # the child holds "source 1"; the rest decoded here
        got = [(await dec.next())[1] for _ in range(3)]
        assert got == ["roll-up 1", "source 1", "source 2"]
    finally:
        pool.close()


async def test_tombstones_and_a_dead_child_lose_nothing() -> None:
    pool = DecodePool(1)
    try:
        await pool.warm_up()
        values, sources = _batch(1, 50)
        values[7] = None  # a tombstone travels through the child as None
        got = await pool.decode(values, sources, reference_ms=T0)
        reasons = {r.source.offset - 50: r.reason for r in got.rejected}
        assert reasons[7] == "empty record value (null or tombstone)"
        assert len(got.calls) == 48

        pool._procs[0].kill()  # the child dies (OOM killer, a segfault) ...
        pool._procs[0].join(5)
        dec: OrderedDecoder[int] = OrderedDecoder(pool)
        dec.submit(values, sources, {"reference_ms": T0}, 0)  # ... unknown to us
        decoded, tag = await dec.next()  # decoded here instead, nothing lost
        assert tag == 0 and len(decoded.calls) == 48 and len(decoded.rejected) == 2
        assert dec.pool is None  # and from now on everything is decoded here
        dec.submit(values, sources, {"reference_ms": T0}, 1)
        assert (await dec.next())[1] == 1
    finally:
        pool.close()


def test_spools_of_dead_workers_are_removed(tmp_path: Path) -> None:
    from stream.ingest.decode_pool import _remove_stale_spools

    dead = tmp_path / "paywatch-decode-999999999-abc"  # no such process
    alive = tmp_path / f"paywatch-decode-{os.getpid()}-def"
    other = tmp_path / "someone-else"
    for d in (dead, alive, other):
        d.mkdir()
        (d / "0.batch").write_bytes(b"x" * 100)
    _remove_stale_spools(str(tmp_path))
    assert not dead.exists() and alive.exists() and other.exists()
