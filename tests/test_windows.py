"""Event-time windows: right window, roll-ups, lateness, and independence from batching."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from stream.decode import decode_batch
from stream.events import Source
from stream.windows import COL, ClosedWindow, WindowState

T0 = 1_767_225_600_000


def call(
    ts: int,
    provider: str = "alipay",
    merchant: str = "m1",
    outcome: str = "success",
    error_class: str | None = None,
    latency: float = 100.0,
    op: str = "create_payment",
) -> bytes:
    ev: dict[str, Any] = {
        "schema_version": 1,
        "event_type": "provider_call",
        "event_id": f"{ts}-{provider}-{merchant}",
        "event_ts": ts,
        "service": "s",
        "provider": provider,
        "merchant_id": merchant,
        "operation": op,
        "outcome": outcome,
        "latency_ms": latency,
    }
    if error_class:
        ev["error_class"] = error_class
    return orjson.dumps(ev)


def feed(state: WindowState, values: list[bytes]) -> list[ClosedWindow]:
    batch = decode_batch(values, [Source("t", 0, i) for i in range(len(values))], reference_ms=T0)
    assert not batch.rejected
    state.add_calls(batch.calls, batch.strings)
    return state.close_ready()


def new_state(lateness_s: float = 5.0) -> WindowState:
    return WindowState.create(10, lateness_s, [["provider"], ["provider", "merchant_id"]])


def row(state: WindowState, win: ClosedWindow, level: int, *values: str) -> np.ndarray:
    return win.counts[state.registry.index[(level, values)]]


def test_counts_land_in_their_window_at_every_level() -> None:
    st = new_state()
    closed = feed(
        st,
        [
            call(T0 + 1_000),
            call(T0 + 2_000, merchant="m2", outcome="failure", error_class="timeout"),
            call(T0 + 12_000),
            call(T0 + 30_000),  # the last one moves the watermark to +25 s
        ],
    )
    assert [w.start_ms for w in closed] == [T0, T0 + 10_000]
    first = closed[0]
    assert row(st, first, 0, "alipay")[COL["volume"]] == 2
    assert row(st, first, 0, "alipay")[COL["err_timeout"]] == 1
    assert row(st, first, 1, "alipay", "m2")[COL["failure"]] == 1
    assert row(st, first, 1, "alipay", "m1")[COL["success"]] == 1
    assert row(st, closed[1], 0, "alipay")[COL["volume"]] == 1


def test_out_of_order_within_lateness_is_counted_in_its_window() -> None:
    st = new_state(lateness_s=5)
    feed(st, [call(T0 + 12_000)])
    closed = feed(st, [call(T0 + 9_000), call(T0 + 40_000)])  # 9 s arrives after 12 s: within 5 s
    assert row(st, closed[0], 0, "alipay")[COL["volume"]] == 1
    assert st.late_total == 0


def test_events_behind_the_watermark_are_counted_late_not_dropped_silently() -> None:
    st = new_state(lateness_s=5)
    feed(st, [call(T0 + 1_000), call(T0 + 30_000)])  # closes [T0, T0+10 s)
    feed(st, [call(T0 + 2_000, merchant="m9")])
    assert st.late_total == 1
    sid = st.registry.index[(1, ("alipay", "m9"))]
    assert st.late_counts[sid] == 1


def test_silent_stretches_close_empty_windows_so_a_traffic_stop_is_visible() -> None:
    st = new_state()
    closed = feed(st, [call(T0 + 1_000), call(T0 + 61_000)])
    assert [w.start_ms - T0 for w in closed] == [0, 10_000, 20_000, 30_000, 40_000]
    # one call, counted once per level
    assert [int(w.column("volume").sum()) for w in closed] == [2, 0, 0, 0, 0]


def test_latency_quantiles_are_within_two_percent() -> None:
    rng = np.random.default_rng(3)
    lat = rng.lognormal(5.0, 0.8, 5000)
    st = new_state()
    feed(st, [call(T0 + 1 + i % 9000, latency=float(x)) for i, x in enumerate(lat)])
    (win,) = st.flush()
    q = win.latency[st.registry.index[(0, ("alipay",))]]
    exact = np.percentile(lat, [50, 95, 99])
    assert np.all(np.abs(q - exact) / exact < 0.02), (q, exact)


@pytest.mark.parametrize("batch_size", [1, 7, 100])
def test_same_stream_gives_same_windows_whatever_the_batching(batch_size: int) -> None:
    rng = np.random.default_rng(5)
    ts = T0 + np.sort(rng.integers(0, 120_000, 600))
    jitter = rng.integers(-8_000, 1, 600)  # some events arrive late, some very late
    values = [
        call(int(t + j), merchant=f"m{i % 4}")
        for i, (t, j) in enumerate(zip(ts, jitter, strict=True))
    ]

    def run(size: int) -> list[tuple[int, list[int]]]:
        st = new_state()
        out = []
        for i in range(0, len(values), size):
            out += feed(st, values[i : i + size])
        out += st.flush()
        return [(w.start_ms, w.column("volume").tolist()) for w in out] + [(-1, [st.late_total])]

    assert run(batch_size) == run(600)
