"""Checkpoint forms: the series registry and the order maps are written compactly (arrays
and one string, not an object per series or order); a restored registry gives every
series, known, new or over the cap, the id the original gives it, and orders come back
in their order."""

from __future__ import annotations

import copy

from stream.state_codec import decode, encode
from stream.windows.panes import Pane
from stream.windows.registry import SEP, SeriesRegistry
from stream.windows.state import WindowState

MERCHANT = ("provider", "merchant_id")
PROVIDER = ("provider",)


def _registry() -> SeriesRegistry:
    reg = SeriesRegistry(max_per_level=4)
    reg.ids_of(PROVIDER, ["alipay", "wechatpay", "流量"])
    reg.ids_of(MERCHANT, [f"alipay{SEP}M{i}" for i in range(6)])  # two fold into __other__
    reg.id_of(MERCHANT, ("paypal", "M|9"))  # beyond the cap: the paypal __other__ series
    reg.id_of(("provider", "signing_key_id"), ("alipay", ""))  # an empty value
    reg.evict(reg.ids_of(MERCHANT, [f"alipay{SEP}M1"]))  # a free id, reused later
    return reg


def test_checkpoint_holds_neither_per_series_tuples_nor_derived_maps() -> None:
    state = _registry().__getstate__()
    assert "index" not in state and "joined" not in state
    assert isinstance(state["keys"], dict)  # a few arrays and one string


def test_restored_registry_resolves_every_series_as_the_original() -> None:
    reg = _registry()
    back = decode(encode(reg))
    assert isinstance(back, SeriesRegistry)
    assert back.keys == reg.keys and back.index == reg.index
    assert back.per_level == reg.per_level and back.free == reg.free
    lookups = [f"alipay{SEP}M{i}" for i in (0, 2, 3, 4, 7)] + [f"paypal{SEP}M|9", "x"]
    twin = copy.deepcopy(reg)
    assert back.ids_of(MERCHANT, lookups).tolist() == twin.ids_of(MERCHANT, lookups).tolist()
    assert back.ids_of(PROVIDER, ["流量", "unionpay"]).tolist() == [
        2,
        twin.id_of(PROVIDER, ("unionpay",)),
    ]
    assert back.keys == twin.keys and back.overflowed == twin.overflowed


def test_empty_registry_round_trips() -> None:
    back = decode(encode(SeriesRegistry()))
    assert back.keys == [] and back.index == {} and back.joined == {}


def test_pending_and_overdue_orders_round_trip_in_order() -> None:
    state = WindowState.create(10, 5, [["provider"], ["provider", "merchant_id"]])
    state.pending = {"alipay|M1|o2": (20_000, (0, 3)), "alipay|M1|o1": (10_000, (0, 3))}
    state.pending["paypal|M|é|x"] = (30_000, ())
    state.overdue = {"wechatpay|M2|o9": 5_000, "alipay|M1|o0": 4_000}
    back = decode(encode(state))
    assert list(back.pending.items()) == list(state.pending.items())
    assert list(back.overdue.items()) == list(state.overdue.items())
    written = state.__getstate__()["pending"]
    assert isinstance(written, dict) and "alipay|M1|o2" not in written  # written as arrays


def test_pane_writes_only_the_rows_it_touched_and_restores_them_exactly() -> None:
    pane = Pane.empty(1000)
    pane.counts[[3, 700], 0] = [5, 1]
    pane.mstats[42, 0] = -0.0  # touched by metrics alone, with a signed zero
    written = pane.__getstate__()
    assert written["touched"].tolist() == [3, 42, 700]  # type: ignore[attr-defined]
    back = decode(encode(pane))
    assert back.counts.shape == pane.counts.shape and (back.counts == pane.counts).all()
    assert back.mstats.tobytes() == pane.mstats.tobytes()  # bit for bit: NaN, -inf, -0.0


def test_a_checkpoint_after_series_come_and_go_holds_them_as_they_are_now() -> None:
    reg = _registry()
    decode(encode(reg))  # the keys' checkpoint form is kept from here ...
    reg.ids_of(MERCHANT, [f"wechatpay{SEP}W1"])  # ... until a series comes,
    assert decode(encode(reg)).keys == reg.keys
    reg.evict(reg.ids_of(MERCHANT, [f"alipay{SEP}M0"]))  # goes,
    assert decode(encode(reg)).keys == reg.keys
    reg.id_of(PROVIDER, ("unionpay",))  # or takes a freed id
    back = decode(encode(reg))
    assert back.keys == reg.keys and back.index == reg.index
