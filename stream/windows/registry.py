"""The series registry: a stable integer id per series, so counters live in dense arrays.

A series is a level (its dimension names) and the values of those dimensions;
a batch's series resolve in bulk, by values joined with ``SEP`` or, for known
series, by their packed value codes (a numeric twin of the same lookup).

>>> reg = SeriesRegistry(max_per_level=2)
>>> dims = ("provider", "merchant_id")
>>> reg.ids_of(dims, ["alipay" + SEP + "m1", "alipay" + SEP + "m2", "alipay" + SEP + "m3"]).tolist()
[0, 1, 2]
>>> reg.keys[2], reg.overflowed[dims]
((('provider', 'merchant_id'), ('alipay', '__other__')), 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np

from stream.windows.arrays import native

OTHER = "__other__"
PACK_RADIX = 2**20  # value codes stay below this, so up to PACK_DIMS of them fit an int64
PACK_DIMS = 3
NO_KEYS = np.zeros(0, np.int64)
SEP = "\x1f"  # joins dimension values into one lookup key (never inside ids)

Dims = tuple[str, ...]
RegistryKey = tuple[Dims, tuple[str, ...]]  # (dimension names, values)


@dataclass
class SeriesRegistry:
    """Stable integer ids for series, so counters live in dense arrays.

    Ids of evicted series are reused; ``max_per_level`` caps each level and
    folds the overflow into one ``__other__`` series per parent.
    """

    max_per_level: int = 100_000
    keys: list[RegistryKey | None] = field(default_factory=list)
    index: dict[RegistryKey, int] = field(default_factory=dict)
    per_level: dict[Dims, int] = field(default_factory=dict)
    free: list[int] = field(default_factory=list)
    overflowed: dict[Dims, int] = field(default_factory=dict)  # new series folded into __other__
    last_seen: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # Per level: joined values -> id, so a batch's series resolve with one C-level map().
    joined: dict[Dims, dict[str, int]] = field(default_factory=dict)
    # Level of every id as a small integer (-1: free), so rules select levels with numpy.
    level_codes: dict[Dims, int] = field(default_factory=dict)
    level_of: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    # A numeric twin of ``joined``: dimension values get small codes, a series' codes pack
    # into one int64, and per level a sorted array of packed keys finds known series
    # with no string built. It only ever holds what ``joined`` holds, starts over when
    # the codes run out, and is rebuilt on demand, so checkpoints leave it out.
    value_codes: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    packed: dict[Dims, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False, compare=False
    )
    # ``keys`` changes rarely (a new or evicted series) and is checkpointed often: its
    # checkpoint form is kept until it does (``edits`` counts the changes).
    edits: int = field(default=0, repr=False, compare=False)
    keys_form: tuple[int, dict[str, object]] | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, object]:
        # The live worker checkpoints after every batch whose alerts changed state, so the
        # registry is written compactly: ``keys`` as a few arrays and one string (not a
        # tuple of strings per series), ``index`` and ``joined`` not at all (they follow
        # from ``keys``).  A third of the time a snapshot took before.
        state = self.__dict__.copy()
        state["value_codes"], state["packed"] = {}, {}
        del state["index"], state["joined"], state["edits"], state["keys_form"]
        if self.keys_form is None or self.keys_form[0] != self.edits:
            self.keys_form = (self.edits, _pack_keys(self.keys))
        state["keys"] = self.keys_form[1]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("value_codes", {})  # checkpoints from before the twin
        self.__dict__.setdefault("packed", {})
        self.edits, self.keys_form = 0, None
        if isinstance(self.keys, dict):
            self.keys = _unpack_keys(self.keys)
        if "index" not in state:  # checkpoints from before kept it
            self._index_keys()
        self.last_seen = native(self.last_seen, np.int64)
        self.level_of = native(self.level_of, np.int16)

    def _index_keys(self) -> None:
        """``index`` and ``joined`` from ``keys`` (what :meth:`__getstate__` leaves out).

        ``joined`` then holds every series, where the running registry caches only the ones
        looked up by joined values: a lookup gives the same id either way."""
        self.index, self.joined = {}, {}
        for sid, key in enumerate(self.keys):
            if key is not None:
                self.index[key] = sid
                self.joined.setdefault(key[0], {})[SEP.join(key[1])] = sid

    def codes_of(self, values: list[str]) -> np.ndarray:
        """Codes of dimension values, new ones added. They all start over before 2**20,
        or before they outnumber twice the series (a flood of one-off values)."""
        codes = self.value_codes
        if len(codes) + len(values) >= min(PACK_RADIX, 2 * len(self.index) + 65_536):
            codes.clear()
            self.packed.clear()
        out = np.fromiter(map(codes.get, values, repeat(-1)), np.int64, len(values))
        for i in np.flatnonzero(out < 0).tolist():
            out[i] = codes.setdefault(values[i], len(codes))
        return out

    def find_packed(self, dims: Dims, keys: np.ndarray) -> np.ndarray:
        """Ids of the series with these packed keys (-1: not in the twin)."""
        known, sids = self.packed.get(dims, (NO_KEYS, NO_KEYS))
        if not known.size:
            return np.full(keys.size, -1, np.int64)
        at = np.minimum(np.searchsorted(known, keys), known.size - 1)
        return np.where(known[at] == keys, sids[at], -1)

    def add_packed(self, dims: Dims, keys: np.ndarray, sids: np.ndarray) -> None:
        known, ids = self.packed.get(dims, (NO_KEYS, NO_KEYS))
        keys, first = np.unique(keys, return_index=True)
        at = np.searchsorted(known, keys)
        self.packed[dims] = (np.insert(known, at, keys), np.insert(ids, at, sids[first]))

    def _drop_packed(self, gone: list[RegistryKey]) -> None:
        by_level: dict[Dims, list[int]] = {}
        for dims, values in gone:
            if dims in self.packed and len(values) <= PACK_DIMS:
                key = 0
                for v in values:
                    c = self.value_codes.get(v)
                    if c is None:
                        break
                    key = key * PACK_RADIX + c
                else:
                    by_level.setdefault(dims, []).append(key)
        for dims, drop in by_level.items():
            known, ids = self.packed[dims]
            keep = ~np.isin(known, drop)
            self.packed[dims] = (known[keep], ids[keep])

    def _set_level(self, sid: int, dims: Dims | None) -> None:
        if sid >= self.level_of.size:
            grown = np.full(max(1024, 2 * self.level_of.size), -1, np.int16)
            grown[: self.level_of.size] = self.level_of
            self.level_of = grown
        code = -1 if dims is None else self.level_codes.setdefault(dims, len(self.level_codes))
        self.level_of[sid] = code

    def level_mask(self, levels: set[Dims]) -> np.ndarray:
        """Boolean mask over ids: which series belong to one of ``levels``."""
        codes = [c for dims, c in self.level_codes.items() if dims in levels]
        return np.isin(self.level_of[: len(self.keys)], codes)

    def ids_of(self, dims: Dims, joined_values: list[str]) -> np.ndarray:
        """Ids for many series of one level, values joined with ``SEP``."""
        table = self.joined.setdefault(dims, {})
        sids = np.fromiter(map(table.get, joined_values, repeat(-1)), np.int64, len(joined_values))
        new = np.flatnonzero(sids < 0).tolist()
        if not new:
            return sids
        keys, index, got = self.keys, self.index, []
        first_new = len(keys)
        count = self.per_level.get(dims, 0)
        for i in new:
            joined = joined_values[i]
            key = (dims, tuple(joined.split(SEP)))
            sid = index.get(key)
            if sid is None and not self.free and count < self.max_per_level:
                sid = len(keys)  # the common case of id_of, inlined: a new id at the end
                keys.append(key)
                index[key] = sid
                count += 1
            elif sid is None:  # reuse a free id, or fold into __other__
                self.per_level[dims] = count
                sid = self.id_of(*key)
                count = self.per_level.get(dims, 0)
            if keys[sid] == key:
                table[joined] = sid  # folded overflow keys are not cached: the cap may free up
            got.append(sid)
        self.per_level[dims] = count
        sids[new] = got
        if len(keys) > first_new:  # every id appended here is of this level
            self.edits += 1
            while self.level_of.size < len(keys):
                self._set_level(self.level_of.size, None)  # grows as id_of would
            code = self.level_codes.setdefault(dims, len(self.level_codes))
            self.level_of[first_new : len(keys)] = code
        return sids

    def id_of(self, dims: Dims, values: tuple[str, ...]) -> int:
        key = (dims, values)
        sid = self.index.get(key)
        if sid is not None:
            return sid
        if self.per_level.get(dims, 0) >= self.max_per_level:
            other = (dims, (*values[:-1], OTHER))
            if other != key:
                self.overflowed[dims] = self.overflowed.get(dims, 0) + 1
                return self.id_of(*other)
        if self.free:
            sid = self.free.pop()
            self.keys[sid] = key
        else:
            sid = len(self.keys)
            self.keys.append(key)
        self.index[key] = sid
        self.per_level[dims] = self.per_level.get(dims, 0) + 1
        self._set_level(sid, dims)
        self.edits += 1
        return sid

    def labels(self, sid: int) -> dict[str, str]:
        key = self.keys[sid]
        if key is None:
            return {}
        return dict(zip(key[0], key[1], strict=True))

    def beneath(self, series: dict[str, str], among: np.ndarray | None = None) -> np.ndarray:
        """Ids of the series strictly beneath ``series`` (every label of it, and more),
        of all or only of the ids ``among``.

        >>> reg = SeriesRegistry()
        >>> _ = reg.ids_of(("provider",), ["alipay", "paypal"])
        >>> _ = reg.ids_of(("provider", "operation"), ["alipay\x1frefund", "paypal\x1frefund"])
        >>> reg.beneath({"provider": "alipay"}).tolist()
        [2]
        >>> reg.beneath({"provider": "paypal"}, among=np.array([2])).tolist()
        []
        """
        codes = [c for dims, c in self.level_codes.items() if set(series) < set(dims)]
        ids = np.arange(len(self.keys)) if among is None else np.asarray(among, np.int64)
        ids = ids[ids < min(len(self.keys), self.level_of.size)]
        ids = ids[np.isin(self.level_of[ids], codes)]
        want = set(series.items())
        keys = self.keys
        out = [sid for sid in ids.tolist() if want <= set(zip(*keys[sid], strict=True))]
        return np.array(out, np.int64)

    def evict(self, sids: np.ndarray) -> None:
        gone = [k for k in map(self.keys.__getitem__, sids.tolist()) if k is not None]
        self._drop_packed(gone)
        for sid in sids.tolist():
            key = self.keys[sid]
            if key is None:
                continue
            del self.index[key]
            self.joined.get(key[0], {}).pop(SEP.join(key[1]), None)
            self.per_level[key[0]] -= 1
            self.keys[sid] = None
            self._set_level(sid, None)
            self.free.append(sid)
            self.edits += 1

    def __len__(self) -> int:
        """Size of the id space (dense arrays need this many rows)."""
        return len(self.keys)

    @property
    def active(self) -> int:
        return len(self.index)


def _pack_keys(keys: list[RegistryKey | None]) -> dict[str, object]:
    """``keys`` as: the levels, each key's level (-1: a free id) and number of values, and
    every value's length, the values themselves concatenated (exact for any string)."""
    levels: dict[Dims, int] = {}
    level: list[int] = []
    width: list[int] = []
    values: list[str] = []
    for key in keys:
        if key is None:
            level.append(-1)
            width.append(0)
            continue
        level.append(levels.setdefault(key[0], len(levels)))
        width.append(len(key[1]))
        values.extend(key[1])
    return {
        "levels": list(levels),
        "level": np.array(level, np.int32),
        "width": np.array(width, np.int32),
        "lengths": np.fromiter(map(len, values), np.int64, len(values)),
        "values": "".join(values),
    }


def _unpack_keys(packed: dict[str, Any]) -> list[RegistryKey | None]:
    levels: list[Dims] = [tuple(d) for d in packed["levels"]]
    text: str = packed["values"]
    ends = np.cumsum(packed["lengths"]).tolist()
    values = [text[a:b] for a, b in zip([0, *ends][:-1], ends, strict=True)]
    keys: list[RegistryKey | None] = []
    at = 0
    for lv, w in zip(packed["level"].tolist(), packed["width"].tolist(), strict=True):
        keys.append(None if lv < 0 else (levels[lv], tuple(values[at : at + w])))
        at += w
    return keys
