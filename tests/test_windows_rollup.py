"""Roll-ups: events are counted once per combination of dimensions, then added into
every level's series. These pin what a coarse series receives from many combinations."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from stream.ingest.decode import decode_batch
from stream.ingest.events import Source
from stream.windows.arrays import unique_rows
from stream.windows.columns import COL
from stream.windows.state import ClosedWindow, WindowState
from tests.test_windows import T0, call, created, note

P, PO, POM = ("provider",), ("provider", "operation"), ("provider", "operation", "merchant_id")
PM, PK = ("provider", "merchant_id"), ("provider", "signing_key_id")


def feed(st: WindowState, values: list[bytes]) -> list[ClosedWindow]:
    batch = decode_batch(values, [Source("t", 0, i) for i in range(len(values))], reference_ms=T0)
    assert not batch.rejected, batch.rejected
    st.add_batch(batch.strings, batch.calls, batch.notifications, batch.metrics)
    return st.close_ready()


def sid(st: WindowState, dims: tuple[str, ...], *values: str) -> int:
    return st.registry.index[(dims, values)]


def default_state(**kw: Any) -> WindowState:
    return WindowState.create(10, 0, [list(P), list(PO), list(POM)], **kw)


def test_many_combinations_roll_into_one_coarse_series_across_two_panes() -> None:
    st = default_state()
    ops, merchants = ("create_payment", "refund", "query_payment"), ("m1", "m2", "m3", "m4")
    batch = []
    # Pane [T0, T0+10 s): 12 combinations of alipay, 2 calls each; 3 of wechatpay.
    for i, (op, m) in enumerate((op, m) for op in ops for m in merchants):
        batch += [call(T0 + 100 + i, merchant=m, op=op, latency=100.0)] * 2
    batch += [call(T0 + 200, provider="wechatpay", merchant="m1", latency=50.0)] * 3
    # Pane [T0+10 s, T0+20 s), same batch: 5 alipay refunds failing, spread over merchants.
    batch += [
        call(
            T0 + 10_500 + i,
            merchant=merchants[i % 4],
            op="refund",
            outcome="failure",
            error_class="timeout",
            latency=1000.0,
        )
        for i in range(5)
    ]
    closed = feed(st, [*batch, call(T0 + 30_000, provider="paypal")])
    first, second = closed[0], closed[1]
    ali = sid(st, P, "alipay")
    assert first.counts[ali, COL["volume"]] == 24 and first.counts[ali, COL["success"]] == 24
    assert second.counts[ali, COL["volume"]] == 5 and second.counts[ali, COL["err_timeout"]] == 5
    assert first.counts[sid(st, P, "wechatpay"), COL["volume"]] == 3
    refund = sid(st, PO, "alipay", "refund")
    assert first.counts[refund, COL["volume"]] == 8 and second.counts[refund, COL["failure"]] == 5
    m1_refund = sid(st, POM, "alipay", "refund", "m1")
    assert first.counts[m1_refund, COL["volume"]] == 2
    assert second.counts[m1_refund, COL["volume"]] == 2  # refund failures 0 and 4 went to m1
    # Latency of the coarse series is the merge of its combinations' histograms.
    assert np.allclose(first.latency[ali], 100.0, rtol=0.02)
    assert np.allclose(second.latency[ali], 1000.0, rtol=0.02)
    assert np.allclose(first.latency[sid(st, P, "wechatpay")], 50.0, rtol=0.02)
    # Every level counted each call exactly once.
    for win, n in ((first, 27), (second, 5)):
        for dims in (P, PO, POM):
            rows = [s for k, s in st.registry.index.items() if k[0] == dims]
            assert int(win.counts[rows, COL["volume"]].sum()) == n, dims


def test_coarse_latency_quantiles_merge_combinations_with_different_latencies() -> None:
    st = default_state()
    # 90 fast calls spread over 3 merchants, 10 slow ones at a fourth: p50 fast, p99 slow.
    values = [call(T0 + i, merchant=f"m{i % 3}", latency=20.0) for i in range(90)]
    values += [call(T0 + 100 + i, merchant="slow", latency=2000.0) for i in range(10)]
    (win,) = feed(st, [*values, call(T0 + 20_000)])[:1]
    p50, p95, p99 = win.latency[sid(st, P, "alipay")]
    assert abs(p50 - 20) / 20 < 0.02 and abs(p95 - 2000) / 2000 < 0.02
    assert abs(p99 - 2000) / 2000 < 0.02
    assert abs(win.latency[sid(st, POM, "alipay", "create_payment", "m0")][2] - 20) < 0.5


def test_callbacks_without_a_key_id_count_at_every_level_they_have_but_the_per_key_one() -> None:
    st = WindowState.create(10, 0, [list(P), list(PM)])
    closed = feed(
        st,
        [
            note(T0 + 1_000, "o1", key="K1", verified=False),
            note(T0 + 2_000, "o2", key=None, verified=False),
            note(T0 + 3_000, "o3", key=None, merchant="m2", ack="nacked"),
            note(T0 + 4_000, "o4", key="K1", merchant="m2"),
            call(T0 + 20_000),
        ],
    )
    w = closed[0]
    prov = sid(st, P, "alipay")
    assert w.counts[prov, COL["callbacks"]] == 4 and w.counts[prov, COL["verify_failures"]] == 2
    assert w.counts[sid(st, PM, "alipay", "m1"), COL["verify_failures"]] == 2
    assert w.counts[sid(st, PM, "alipay", "m2"), COL["nacks"]] == 1
    k1 = sid(st, PK, "alipay", "K1")
    assert w.counts[k1, COL["callbacks"]] == 2 and w.counts[k1, COL["verify_failures"]] == 1
    # No per-key series is made up for callbacks that carry no key.
    assert [k for k in st.registry.index if k[0] == PK] == [(PK, ("alipay", "K1"))]


def test_late_events_are_counted_per_series_at_every_level_they_belong_to() -> None:
    st = default_state()
    feed(st, [call(T0 + 1_000), note(T0 + 1_500, "x", key=None), call(T0 + 30_000)])
    late = feed(
        st,
        [
            call(T0 + 2_000, merchant="m1"),
            call(T0 + 2_500, merchant="m2", op="refund"),
            call(T0 + 3_000, merchant="m2", op="refund"),
            note(T0 + 4_000, "y", key=None, merchant="m2"),
            note(T0 + 4_500, "z", key="K9"),
        ],
    )
    assert late == [] and st.late_total == 5
    counts = {st.registry.keys[s]: int(st.late_counts[s]) for s in np.flatnonzero(st.late_counts)}
    assert counts == {
        (P, ("alipay",)): 5,  # 3 calls + 2 callbacks: the provider level is shared
        (PO, ("alipay", "create_payment")): 1,
        (PO, ("alipay", "refund")): 2,
        (POM, ("alipay", "create_payment", "m1")): 1,
        (POM, ("alipay", "refund", "m2")): 2,
        (PM, ("alipay", "m2")): 1,
        (PM, ("alipay", "m1")): 1,
        (PK, ("alipay", "K9")): 1,
    }
    # Late events do not make a series look recently active.
    assert st.registry.last_seen[sid(st, POM, "alipay", "refund", "m2")] == 0
    assert st.registry.last_seen[sid(st, P, "alipay")] == T0 + 30_000


def test_last_seen_is_the_newest_counted_event_of_each_series_at_every_level() -> None:
    st = default_state()
    feed(
        st,
        [
            call(T0 + 5_000, merchant="m1"),
            call(T0 + 9_000, merchant="m2"),
            call(T0 + 7_000, merchant="m1", op="refund"),
        ],
    )
    seen = st.registry.last_seen
    assert seen[sid(st, P, "alipay")] == T0 + 9_000
    assert seen[sid(st, PO, "alipay", "create_payment")] == T0 + 9_000
    assert seen[sid(st, PO, "alipay", "refund")] == T0 + 7_000
    assert seen[sid(st, POM, "alipay", "create_payment", "m1")] == T0 + 5_000


def test_orders_of_many_merchants_expect_callbacks_at_both_callback_levels() -> None:
    st = default_state(callback_timeout_s=20)
    feed(st, [created(T0 + 1_000 + i, f"o{i}", merchant=f"m{i % 3}") for i in range(9)])
    assert st.pending["alipay|m1|o4"][1] == (sid(st, P, "alipay"), sid(st, PM, "alipay", "m1"))
    feed(st, [note(T0 + 5_000, "o0", merchant="m0"), note(T0 + 6_000, "o1", merchant="m1")])
    closed = feed(st, [call(T0 + 40_000)])
    first = closed[0]
    prov = sid(st, P, "alipay")
    assert first.counts[prov, COL["created"]] == 9 and first.counts[prov, COL["callbacks"]] == 2
    assert first.counts[sid(st, PM, "alipay", "m2"), COL["created"]] == 3
    missing = {w.start_ms - T0: int(w.counts[prov, COL["missing_callbacks"]]) for w in closed}
    assert missing == {0: 0, 10_000: 0, 20_000: 7, 30_000: 0}
    by_merchant = [
        int(closed[2].counts[sid(st, PM, "alipay", m), COL["missing_callbacks"]])
        for m in ("m0", "m1", "m2")
    ]
    assert by_merchant == [2, 2, 3]


def test_levels_without_a_callback_level_still_track_orders() -> None:
    st = WindowState.create(10, 0, [["operation"]], callback_timeout_s=20)
    closed = feed(st, [created(T0 + 1_000, "o1"), created(T0 + 2_000, "o2"), call(T0 + 40_000)])
    op = sid(st, ("operation",), "create_payment")
    assert closed[0].counts[op, COL["volume"]] == 2
    assert not st.pending  # both expired, with no series to count them in


def test_level_in_another_dimension_order_matches_the_usual_order() -> None:
    st = WindowState.create(
        10, 0, [list(POM), ["merchant_id", "operation", "provider"], ["merchant_id"]]
    )
    values = [
        call(T0 + i, provider=p, merchant=m, op=o)
        for i, (p, m, o) in enumerate(
            [("alipay", "m2", "refund"), ("wechatpay", "m1", "refund"), ("alipay", "m1", "capture")]
            * 2
        )
    ]
    (w,) = feed(st, [*values, call(T0 + 20_000)])[:1]
    mop = ("merchant_id", "operation", "provider")
    for p, m, o in (("alipay", "m2", "refund"), ("wechatpay", "m1", "refund")):
        a, b = sid(st, POM, p, o, m), sid(st, mop, m, o, p)
        assert w.counts[a, COL["volume"]] == w.counts[b, COL["volume"]] == 2
    assert w.counts[sid(st, ("merchant_id",), "m1"), COL["volume"]] == 4


def test_distinct_rows_stay_exact_when_codes_are_too_many_to_pack_in_an_int64() -> None:
    rng = np.random.default_rng(0)
    big = 2**22 - 2  # with 2**22 strings, 3 columns span 2**66 combinations
    cols = [rng.choice([-1, 0, 3, big], 300).astype(np.int32) for _ in range(3)]
    first, inv = unique_rows(cols, 2**22)
    rows = list(zip(*[c.tolist() for c in cols], strict=True))
    assert [rows[f] for f in first.tolist()] == sorted(set(rows))
    assert all(rows[first[i]] == r for i, r in zip(inv.tolist(), rows, strict=True))


def test_amounts_add_up_in_coarse_series() -> None:
    st = default_state()

    def paid(ts: int, merchant: str, amount: int) -> bytes:
        ev = orjson.loads(call(ts, merchant=merchant))
        ev["amount_minor"] = amount
        return orjson.dumps(ev)

    closed = feed(st, [paid(T0 + 1, "m1", 1999), paid(T0 + 2, "m2", 501), paid(T0 + 3, "m1", 1)])
    closed += feed(st, [call(T0 + 20_000)])
    w = closed[0]
    assert w.counts[sid(st, P, "alipay"), COL["amount_minor"]] == 2501
    assert w.counts[sid(st, POM, "alipay", "create_payment", "m1"), COL["amount_minor"]] == 2000


def test_a_restored_checkpoint_counts_on_identically_and_at_full_speed() -> None:
    import pickle

    first = [
        call(T0 + 1_000 + i, merchant=f"m{i % 5}", op=("refund", "capture")[i % 2])
        for i in range(40)
    ]
    later = [call(T0 + 4_000 + i, merchant=f"m{i % 7}") for i in range(30)] + [call(T0 + 30_000)]
    a = default_state()
    feed(a, first)
    b = pickle.loads(pickle.dumps(a))
    wa, wb = feed(a, later), feed(b, later)
    assert [w.counts.tolist() for w in wa] == [w.counts.tolist() for w in wb]
    assert wb[0].counts[sid(b, P, "alipay"), COL["volume"]] == 70
    # Restored arrays use numpy's own dtype objects: np.add.at on an equal-but-distinct
    # dtype takes a path ~10x slower.
    assert b.late_counts.dtype is np.dtype(np.int64)
    assert b.registry.last_seen.dtype is np.dtype(np.int64)
