"""numpy helpers of the window stage: grouping integer keys fast, and arrays back from a pickle."""

from __future__ import annotations

import numpy as np


def native(a: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    """``a`` seen through numpy's own dtype object. Arrays restored from a pickle carry
    an equal but distinct one, which sends ``np.add.at`` and friends down a ~10x slower
    path."""
    return a.view(dtype)


def unique(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(key, return_index=True, return_inverse=True)`` over a stable argsort,
    which is 2-3x faster than the default one on int64 keys.

    >>> [a.tolist() for a in unique(np.array([5, 3, 5, 1]))]
    [[1, 3, 5], [3, 1, 0], [2, 1, 2, 0]]
    """
    order = np.argsort(key, kind="stable")
    s = key[order]
    new = np.empty(s.size, bool)
    new[:1] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    inv = np.empty(s.size, np.int64)
    inv[order] = np.cumsum(new) - 1
    return s[new], order[new], inv


def stack_index(idx: np.ndarray, size: int, times: int) -> np.ndarray:
    """``idx`` into each of ``times`` stacked arrays of ``size``.

    >>> stack_index(np.array([0, 2]), 3, 2).tolist()
    [0, 2, 3, 5]
    """
    return (idx[None, :] + size * np.arange(times)[:, None]).reshape(-1)


def order_of(seq: np.ndarray) -> np.ndarray:
    """``np.argsort(seq, kind="stable")``; record positions are distinct small integers,
    so usually a scatter does it without a sort.

    >>> order_of(np.array([4, 0, 2])).tolist(), order_of(np.array([1, 1, 0])).tolist()
    ([1, 2, 0], [2, 0, 1])
    """
    if seq.size and seq.min() >= 0 and seq.max() < 4 * seq.size:
        at = np.full(int(seq.max()) + 1, -1, np.int64)
        at[seq] = np.arange(seq.size)
        order = at[at >= 0]
        if order.size == seq.size:  # no position twice
            return order
    return np.argsort(seq, kind="stable")


def unique_rows(
    cols: list[np.ndarray], base: int, *, presorted: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of code columns (codes in ``[-1, base - 1)``) in lexicographic order:
    index of each one's first occurrence, and each input's row number among them.
    ``presorted``: rows are already in that order, so runs are found without a sort.

    >>> first, inv = unique_rows([np.array([2, 0, 2]), np.array([1, -1, 1])], 4)
    >>> first.tolist(), inv.tolist()
    ([1, 0], [1, 0, 1])
    >>> first, inv = unique_rows([np.array([0, 0, 2]), np.array([-1, -1, 1])], 4, presorted=True)
    >>> first.tolist(), inv.tolist()
    ([0, 2], [0, 0, 1])
    """
    if presorted:
        new = np.zeros(cols[0].size, bool)
        new[:1] = True
        for c in cols:
            new[1:] |= c[1:] != c[:-1]
        return np.flatnonzero(new), np.cumsum(new) - 1
    if float(base) ** len(cols) < 2**62:  # one int64 key per row
        key = cols[0].astype(np.int64) + 1
        for c in cols[1:]:
            key = key * base + (c.astype(np.int64) + 1)
        _, first, inv = unique(key)
    else:  # too many strings to pack safely
        _, first, inv = np.unique(np.stack(cols), axis=1, return_index=True, return_inverse=True)
    return first, inv.reshape(-1)
