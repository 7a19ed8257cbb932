"""Callback tracking: orders that expect a payment notification, and the ones that never get one.

A successful ``create_payment`` with an ``out_trade_no`` becomes a pending
order, keyed ``provider|merchant_id|out_trade_no``, with a deadline in event
time; a notification for it removes it, and an order whose deadline passes is
a missing callback.  Pending orders are kept in insertion order (~ event time),
which both expiry and the eviction of the oldest rely on.
"""

from __future__ import annotations

from collections import deque
from itertools import repeat

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
    sids = map(per_atom.__getitem__, atom.tolist())
    # C-speed bulk insert; insertion order ~ event time, which expiry relies on.
    pending.update(zip(keys, zip(deadlines.tolist(), sids, strict=True), strict=True))
    overflow = len(pending) - max_pending
    if overflow <= 0:
        return 0
    for key in list(pending)[:overflow]:
        del pending[key]
    return overflow


def settle_orders(pending: dict[str, PendingOrder], keys: list[str]) -> None:
    """Orders whose notification arrived are no longer pending."""
    deque(map(pending.pop, keys, repeat(None)), maxlen=0)  # pop all, C speed


def expire_orders(pending: dict[str, PendingOrder], before_ms: int) -> np.ndarray | None:
    """Remove the orders whose deadline is before ``before_ms``; returns the series ids
    they count a missing callback for (with repeats), None when none expired.

    >>> pending = {"a|m|1": (5, (0, 2)), "a|m|2": (9, (0,))}
    >>> expire_orders(pending, 6).tolist(), list(pending)
    ([0, 2], ['a|m|2'])
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
    for key in list(pending)[: len(expired)]:
        del pending[key]
    return np.array([s for o in expired for s in o[1]], dtype=np.int64)
