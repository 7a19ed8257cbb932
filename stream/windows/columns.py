"""The counter columns of a window row, and which of them each event counts in.

A series' row in a pane (and in a :class:`~stream.windows.state.ClosedWindow`) is
``COLUMNS`` wide: call outcomes and error classes, then the callback counters.

>>> COLUMNS[:3], COL["missing_callbacks"] == N_COLS - 1
(('volume', 'success', 'pending'), True)
"""

from __future__ import annotations

import numpy as np

from stream.ingest.events import (
    ACK_INDEX,
    CONFIG_ERROR_CLASSES,
    ERROR_CLASSES,
    OUTCOME_INDEX,
    OUTCOMES,
    SYSTEM_ERROR_CLASSES,
    CallColumns,
    NotificationColumns,
)

CALL_COLUMNS: tuple[str, ...] = (
    "volume",
    *OUTCOMES,
    *(f"err_{c}" for c in ERROR_CLASSES),
    "err_unclassified",
    "amount_minor",
)
NOTIFICATION_COLUMNS: tuple[str, ...] = (
    "created",  # successful create_payment calls that expect a callback
    "callbacks",
    "verify_failures",
    "nacks",
    "ack_errors",
    "late_acks",
    "duplicates",
    "amount_mismatches",
    "missing_callbacks",
)
COLUMNS = CALL_COLUMNS + NOTIFICATION_COLUMNS
COL = {name: i for i, name in enumerate(COLUMNS)}
N_COLS = len(COLUMNS)
LATENCY_QUANTILES = (0.5, 0.95, 0.99)  # the columns of a closed window's latency

SYSTEM_ERROR_COLS = [COL[f"err_{c}"] for c in SYSTEM_ERROR_CLASSES]
CONFIG_ERROR_COLS = [COL[f"err_{c}"] for c in CONFIG_ERROR_CLASSES]
_OUTCOME0 = COL[OUTCOMES[0]]
_ERR0 = COL[f"err_{ERROR_CLASSES[0]}"]
_FAILURE = OUTCOME_INDEX["failure"]
_UNKNOWN = OUTCOME_INDEX["unknown"]


def call_cells(calls: CallColumns) -> list[np.ndarray]:
    """Per call, the columns it adds one to: each array gives one column per event (-1: none)."""
    outcome = calls.outcome.astype(np.int64)
    err = calls.error_class.astype(np.int64)
    n = len(calls)
    unclassified = (err < 0) & ((outcome == _FAILURE) | (outcome == _UNKNOWN))
    return [
        np.full(n, COL["volume"], np.int64),
        _OUTCOME0 + outcome,
        np.where(err >= 0, _ERR0 + err, np.where(unclassified, COL["err_unclassified"], -1)),
    ]


#: Error classes of calls refused for the merchant's credentials (auth, signature,
#: certificate): the provider answers them at once, before any processing.
_REFUSED = np.array([ERROR_CLASSES.index(c) for c in CONFIG_ERROR_CLASSES], np.int64)


def timed_mask(calls: CallColumns) -> np.ndarray | None:
    """Per call, whether its latency is a sample of the provider's: not a call refused
    for the merchant's credentials (None: every call is).  Those return at once;
    counted, a merchant whose keys broke would drag its windows' median down to them,
    and its calls that went through would read as 4x slower than it (the tail share)."""
    timed = ~np.isin(calls.error_class.astype(np.int64), _REFUSED)
    return None if timed.all() else timed


def call_weights(calls: CallColumns) -> dict[int, np.ndarray] | None:
    """Per-call values summed into a column (the amount), None when there are none."""
    return {COL["amount_minor"]: calls.amount_minor} if calls.amount_minor.any() else None


def notification_cells(notes: NotificationColumns) -> list[np.ndarray]:
    """Per callback, the columns it adds one to (as :func:`call_cells`)."""
    ack = notes.ack_status.astype(np.int64)
    n = len(notes)
    ack_col = np.full(len(ACK_INDEX), -1, np.int64)
    ack_col[ACK_INDEX["nacked"]] = COL["nacks"]
    ack_col[ACK_INDEX["error"]] = COL["ack_errors"]
    ack_col[ACK_INDEX["late"]] = COL["late_acks"]
    return [
        np.full(n, COL["callbacks"], np.int64),
        np.where(notes.signature_verified, -1, COL["verify_failures"]),
        ack_col[ack],
        np.where(notes.is_duplicate, COL["duplicates"], -1),
        np.where(notes.amount_matches == 0, COL["amount_mismatches"], -1),
    ]
