"""Atoms: a batch's events grouped by every dimension the levels use, and each atom's series.

An atom is one distinct combination (e.g. provider, operation, merchant_id);
series ids, strings and counting then run per atom, never per event.  Each
level's series of an atom comes from its dimension values, through the
registry's numeric twin for known series and by joined strings for new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.windows.arrays import unique_rows
from stream.windows.registry import NO_KEYS, PACK_DIMS, PACK_RADIX, SEP, Dims, SeriesRegistry


@dataclass
class Atoms:
    """Events grouped by every dimension a set of levels uses."""

    of_event: np.ndarray  # (events,) atom index of each event
    codes: dict[str, np.ndarray]  # per dimension, the string code of each atom
    n: int  # number of atoms
    dims: Dims  # atoms are sorted by these dimensions' codes, in this order


def group_atoms(cols: dict[str, np.ndarray], levels: list[Dims], base: int) -> Atoms:
    """Group events by every dimension ``levels`` use; ``cols`` holds their string codes
    (``base``: how many strings the batch has, plus one).

    >>> a = group_atoms({"provider": np.array([3, 1, 3])}, [("provider",)], 5)
    >>> a.of_event.tolist(), a.codes["provider"].tolist(), a.n
    ([1, 0, 1], [1, 3], 2)
    """
    dims = list(dict.fromkeys(d for lv in levels for d in lv))
    n = len(next(iter(cols.values())))
    if not dims:
        return Atoms(np.zeros(n, np.int64), {}, 1, ())
    first, of_event = unique_rows([cols[d] for d in dims], base)
    return Atoms(of_event, {d: cols[d][first] for d in dims}, len(first), tuple(dims))


def level_sids(
    reg: SeriesRegistry,
    atoms: Atoms,
    levels: list[Dims],
    str_arr: np.ndarray,
    *,
    whole: bool,
    subset: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Per level, the series id of every atom (-1: none), for the atoms in ``subset``.

    ``whole``: a level needs all its dimensions (an atom missing one has no series
    there, e.g. callbacks without a ``signing_key_id``); otherwise absent is ``""``.
    Distinct values are resolved in sorted code order, as a per-event ``np.unique``
    would, so new series get the same ids as they would without roll-ups.
    """
    u = atoms.n
    rows = np.arange(u) if subset is None else subset
    out = []
    vcode = None
    for dims in levels:
        sids = np.full(u, -1, np.int64)
        r = rows
        if whole:
            has = np.ones(r.size, bool)
            for d in dims:
                has &= atoms.codes[d][r] >= 0
            r = r[has]
        packed = None
        if vcode is None and r.size and len(dims) <= PACK_DIMS:
            vcode = _value_codes(reg, atoms, levels, str_arr)
        if vcode is not None and vcode.size and r.size and len(dims) <= PACK_DIMS:
            # Known series: through the numeric twin, no strings.
            packed = vcode[atoms.codes[dims[0]][r]]
            for d in dims[1:]:
                packed = packed * PACK_RADIX + vcode[atoms.codes[d][r]]
            found = reg.find_packed(dims, packed)
            sids[r] = found
            miss = found < 0
            r, packed = r[miss], packed[miss]
        if r.size:
            _resolve_by_strings(reg, atoms, dims, str_arr, r, packed, sids)
        out.append(sids)
    return out


def _resolve_by_strings(
    reg: SeriesRegistry,
    atoms: Atoms,
    dims: Dims,
    str_arr: np.ndarray,
    r: np.ndarray,
    packed: np.ndarray | None,
    sids: np.ndarray,
) -> None:
    """Series of atoms ``r`` (new ones mostly) by joined values, in sorted order, into
    ``sids``; what the twin can hold (``packed`` keys) goes into it."""
    cols = [atoms.codes[d][r] for d in dims]
    # A level that is a prefix of the atoms' dimensions is already sorted.
    sorted_ = atoms.dims[: len(dims)] == dims
    first, inv = unique_rows(cols, len(str_arr), presorted=sorted_)
    joined_arr = str_arr[cols[0][first]]
    for c in cols[1:]:
        joined_arr = joined_arr + SEP + str_arr[c[first]]
    joined = joined_arr.tolist()
    got = reg.ids_of(dims, joined)
    sids[r] = got[inv]
    if packed is not None:
        # Into the twin: only what ``joined`` holds, and no SEP inside a value.
        table, n_sep = reg.joined[dims], len(dims) - 1
        ok = [
            j
            for j, (v, sid) in enumerate(zip(joined, got.tolist(), strict=True))
            if table.get(v) == sid and v.count(SEP) == n_sep
        ]
        if ok:
            reg.add_packed(dims, packed[first[ok]], got[ok])


def _value_codes(
    reg: SeriesRegistry, atoms: Atoms, levels: list[Dims], str_arr: np.ndarray
) -> np.ndarray:
    """Twin value code of each batch string the atoms use (-1 for the others)."""
    used = np.zeros(len(str_arr), bool)
    for d in {d for lv in levels for d in lv}:
        used[atoms.codes[d]] = True  # code -1 marks the last entry: the "" string
    need = np.flatnonzero(used)
    if need.size >= PACK_RADIX:  # more values than codes: strings only this time
        return NO_KEYS
    vcode = np.full(len(str_arr), -1, np.int64)
    vcode[need] = reg.codes_of(str_arr[need].tolist())
    return vcode
