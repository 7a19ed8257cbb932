"""Callback tracking: orders that expect a payment notification, and the ones that never get one.

A successful ``create_payment`` with an ``out_trade_no`` becomes a pending
order, keyed ``provider|merchant_id|out_trade_no``, with a deadline in event
time; a notification for it removes it, and an order whose deadline passes is
a missing callback.  Pending orders are kept in insertion order (~ event time),
which both expiry and the eviction of the oldest rely on.

Expired orders are not forgotten at once: their keys stay in an *overdue* map
(bounded, oldest first), so an alert can name the orders whose callback never
came (:func:`overdue_orders`), and a callback that arrives after all counts as a
recovery (:func:`recover_orders`).
"""

from __future__ import annotations

from collections import deque
from itertools import repeat
from typing import Any

import numpy as np

from stream.ingest.events import OUTCOME_INDEX, CallColumns
from stream.windows.atoms import Atoms

# A pending order: (callback deadline in event ms, series ids it counts for).
PendingOrder = tuple[int, tuple[int, ...]]
_SUCCESS = OUTCOME_INDEX["success"]


def created_orders(calls: CallColumns, str_arr: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Positions of the calls (among those kept) that create an order expecting a callback."""
    hits = np.flatnonzero(str_arr == "create_payment")
    if not hits.size:
        return np.zeros(0, np.int64)
    created = (
        keep
        & (calls.operation == hits[0])
        & (calls.outcome == _SUCCESS)
        & (calls.out_trade_no >= 0)
    )
    return np.flatnonzero(created)


def order_keys(atoms: Atoms, atom: np.ndarray, trade: np.ndarray, str_arr: np.ndarray) -> list[str]:
    """``provider|merchant_id|out_trade_no`` of orders; ``atom`` holds each order's atom.

    The ``provider|merchant_id|`` prefix is joined once per atom, not per order.
    """
    present = np.flatnonzero(np.bincount(atom, minlength=atoms.n))
    prefix = np.empty(atoms.n, object)
    p, m = atoms.codes["provider"][present], atoms.codes["merchant_id"][present]
    prefix[present] = str_arr[p] + "|" + str_arr[m] + "|"
    return (prefix[atom] + str_arr[trade]).tolist()


def add_orders(
    pending: dict[str, PendingOrder],
    keys: list[str],
    deadlines: np.ndarray,
    atom: np.ndarray,
    sid_levels: list[np.ndarray],
    n_atoms: int,
    max_pending: int,
) -> int:
    """Add orders (each counts for its atom's series at every level); returns how many of
    the oldest were evicted to stay within ``max_pending``."""
    # One tuple of series ids per atom, shared by its orders (less memory, less work).
    per_atom = list(zip(*[s.tolist() for s in sid_levels], strict=True)) or [()] * n_atoms
    order = np.argsort(deadlines, kind="stable")  # a batch mixes partitions: sort it
    sids = map(per_atom.__getitem__, atom[order].tolist())
    ordered = [keys[i] for i in order.tolist()]
    new = list(zip(ordered, zip(deadlines[order].tolist(), sids, strict=True), strict=True))
    if new and pending and next(reversed(pending.values()))[0] > new[0][1][0]:
        new = _merge_tail(pending, new)
    # C-speed bulk insert, in deadline order, which expiry relies on.
    pending.update(new)
    overflow = len(pending) - max_pending
    if overflow <= 0:
        return 0
    for key in list(pending)[:overflow]:
        del pending[key]
    return overflow


def _merge_tail(
    pending: dict[str, PendingOrder], new: list[tuple[str, PendingOrder]]
) -> list[tuple[str, PendingOrder]]:
    """Orders of another partition behind those pending (their deadlines are earlier):
    take the pending orders due after the earliest new one off the end, and return them
    merged with the new ones in deadline order — so expiry, which stops at the first order
    not yet due, expires the same orders whatever the partitions' interleaving.  Costs the
    orders within the partitions' skew, not all pending ones.

    >>> pending = {"a": (5, ()), "b": (9, ())}
    >>> [k for k, _ in _merge_tail(pending, [("c", (7, ()))])], list(pending)
    (['c', 'b'], ['a'])
    """
    first = new[0][1][0]
    moved: list[tuple[str, PendingOrder]] = []
    while pending:
        key, order = pending.popitem()  # the newest deadline
        if order[0] <= first:
            pending[key] = order  # back at the end, where it was
            break
        moved.append((key, order))
    moved.reverse()
    return sorted(moved + new, key=lambda kv: kv[1][0])  # stable: ties keep arrival order


def settle_orders(pending: dict[str, PendingOrder], keys: list[str]) -> None:
    """Orders whose notification arrived are no longer pending."""
    deque(map(pending.pop, keys, repeat(None)), maxlen=0)  # pop all, C speed


def expire_orders(
    pending: dict[str, PendingOrder],
    before_ms: int,
    overdue: dict[str, int] | None = None,
    max_overdue: int = 0,
) -> np.ndarray | None:
    """Remove the orders whose deadline is before ``before_ms``; returns the series ids
    they count a missing callback for (with repeats), None when none expired.  With
    ``overdue``, the expired keys move there (key -> deadline), at most ``max_overdue``
    of them (the oldest go first).

    >>> pending = {"a|m|1": (5, (0, 2)), "a|m|2": (9, (0,))}
    >>> late: dict[str, int] = {}
    >>> expire_orders(pending, 6, late, 10).tolist(), list(pending), late
    ([0, 2], ['a|m|2'], {'a|m|1': 5})
    """
    if not pending:
        return None
    expired: list[PendingOrder] = []
    for order in pending.values():
        if order[0] >= before_ms:
            break
        expired.append(order)
    if not expired:
        return None
    keys = list(pending)[: len(expired)]
    for key in keys:
        del pending[key]
    if overdue is not None and max_overdue > 0:
        overdue.update(zip(keys, (o[0] for o in expired), strict=True))
        trim_oldest(overdue, max_overdue)
    return np.array([s for o in expired for s in o[1]], dtype=np.int64)


def trim_oldest(orders: dict[str, int], limit: int) -> None:
    """Drop the oldest entries (insertion order) beyond ``limit``."""
    extra = len(orders) - limit
    if extra > 0:
        for key in list(orders)[:extra]:
            del orders[key]


def recover_orders(overdue: dict[str, int], keys: list[str]) -> list[str]:
    """Overdue orders whose callback has now arrived: removed, and returned (as given).

    >>> late = {"a|m|1": 5, "a|m|2": 6}
    >>> recover_orders(late, ["a|m|2", "a|m|9"]), late
    (['a|m|2'], {'a|m|1': 5})
    """
    if not overdue:
        return []
    hits = overdue.keys() & set(keys)  # set operations run in C: batches are large
    if not hits:
        return []
    found = [k for k in keys if k in hits and overdue.pop(k, None) is not None]
    return found


def overdue_orders(
    overdue: dict[str, int], series: dict[str, str], limit: int
) -> tuple[list[dict[str, object]], list[str], int]:
    """The overdue orders beneath ``series`` (``provider`` and maybe ``merchant_id``).

    Returns (groups per provider and merchant, oldest first, each with at most the
    ``limit`` oldest ``out_trade_no`` in all; the keys listed; how many there are in
    all).  Series of other dimensions (a signing key) have no orders.

    >>> late = {"a|m1|1": 5, "b|m1|2": 6, "a|m2|3": 7, "a|m1|4": 8}
    >>> groups, keys, total = overdue_orders(late, {"provider": "a"}, 2)
    >>> [f"{g['merchant_id']}:{g['out_trade_no']}" for g in groups], keys, total
    (["m1:['1']", "m2:['3']"], ['a|m1|1', 'a|m2|3'], 3)
    """
    if not overdue or set(series) - {"provider", "merchant_id"} or "provider" not in series:
        return [], [], 0
    prefix = series["provider"] + "|"
    if "merchant_id" in series:
        prefix += series["merchant_id"] + "|"
    matched = [k for k in overdue if k.startswith(prefix)]
    groups: dict[tuple[str, str], list[str]] = {}
    for key in matched[:limit]:
        provider, merchant, trade = key.split("|", 2)
        groups.setdefault((provider, merchant), []).append(trade)
    listed: list[dict[str, object]] = [
        {"provider": p, "merchant_id": m, "out_trade_no": trades}
        for (p, m), trades in groups.items()
    ]
    return listed, matched[:limit], len(matched)


def _join(keys: list[str]) -> tuple[str, np.ndarray]:
    return "".join(keys), np.fromiter(map(len, keys), np.int64, len(keys))


def _split(text: str, lengths: np.ndarray) -> list[str]:
    ends = np.cumsum(lengths).tolist()
    return [text[a:b] for a, b in zip([0, *ends][:-1], ends, strict=True)]


def pack_orders(pending: dict[str, PendingOrder]) -> dict[str, object]:
    """Pending orders for a checkpoint as one string and three arrays, in order: a few
    objects to write where there are thousands of orders (``unpack_orders`` reverses it)."""
    text, lengths = _join(list(pending))
    orders = list(pending.values())
    deadlines = np.fromiter((o[0] for o in orders), np.int64, len(orders))
    widths = np.fromiter((len(o[1]) for o in orders), np.int64, len(orders))
    flat = [sid for o in orders for sid in o[1]]
    sids = np.array(flat, np.int64)
    return {
        "keys": text,
        "lengths": lengths,
        "deadlines": deadlines,
        "widths": widths,
        "sids": sids,
    }


def unpack_orders(packed: dict[str, Any]) -> dict[str, PendingOrder]:
    """
    >>> pending = {"a|m|1": (5, (0, 2)), "a|m|é": (9, ())}
    >>> unpack_orders(pack_orders(pending)) == pending
    True
    """
    keys = _split(packed["keys"], packed["lengths"])
    flat = packed["sids"].tolist()
    ends = np.cumsum(packed["widths"]).tolist()
    sids = [tuple(flat[a:b]) for a, b in zip([0, *ends][:-1], ends, strict=True)]
    return dict(zip(keys, zip(packed["deadlines"].tolist(), sids, strict=True), strict=True))


def pack_overdue(overdue: dict[str, int]) -> dict[str, object]:
    """Overdue orders (key -> deadline) for a checkpoint: one string and two arrays."""
    text, lengths = _join(list(overdue))
    deadlines = np.fromiter(overdue.values(), np.int64, len(overdue))
    return {"keys": text, "lengths": lengths, "deadlines": deadlines}


def unpack_overdue(packed: dict[str, Any]) -> dict[str, int]:
    """
    >>> unpack_overdue(pack_overdue({"a|m|1": 5, "b|m|2": 6}))
    {'a|m|1': 5, 'b|m|2': 6}
    """
    keys = _split(packed["keys"], packed["lengths"])
    return dict(zip(keys, packed["deadlines"].tolist(), strict=True))
