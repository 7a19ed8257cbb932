"""The series registry's checkpoint form: compact (no per-series tuples, no derived maps),
and a restored registry gives every series, known, new or over the cap, the id the
original gives it."""

from __future__ import annotations

import copy

from stream.state_codec import decode, encode
from stream.windows.registry import SEP, SeriesRegistry

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
