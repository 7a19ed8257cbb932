"""Event-time windows per series, aggregated with numpy.

Every event feeds every level it has the dimensions for (roll-ups): with the
default levels a ``provider_call`` counts for ``{provider}``,
``{provider, operation}`` and ``{provider, operation, merchant_id}``; a
``payment_notification`` for ``{provider}``, ``{provider, merchant_id}`` and
``{provider, signing_key_id}`` (so a new key failing verification stands out);
a ``metric`` for its own ``{metric}`` series (name plus sorted labels).

Windows are built from tumbling *panes* of ``hop`` length; a window of ``size``
is the sum of the last ``size / hop`` panes, so hopping windows cost one pane of
work per event, and tumbling windows are the case ``hop == size``.

A batch is first grouped into *atoms*, the distinct combinations of every
dimension the levels use (e.g. provider, operation, merchant_id), with one sort.
Series ids are resolved per atom and level, events are counted once per
(atom, pane) with ``np.bincount``, and each atom's counts, latency buckets and
newest time are then added into its series at every level; so the work per
event does not grow with the number of levels, and Python loops run over new
series only, never over events.

A pane closes when the watermark — the newest event time seen minus the
allowed lateness — passes its end.  An event whose pane has already closed is
*late*: counted per series, never silently dropped.  Lateness is judged against
the watermark as it stood before the event in stream order, so the same stream
gives the same windows whatever the batching (live batches or file chunks).

Callbacks: a successful ``create_payment`` with an ``out_trade_no`` expects a
notification; if none arrives within ``callback_timeout`` (event time), it is
counted as a missing callback in the pane where the timeout passed.  Pending
orders are bounded (``max_pending_orders``; the oldest are evicted and counted).

Memory is bounded too: at most ``max_series_per_level`` series per level (the
rest fold into an ``__other__`` series, counted), and series idle for
``idle_evict`` are evicted.  All state is plain and pickles for checkpoints.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from stream.ingest.events import (
    ACK_INDEX,
    CONFIG_ERROR_CLASSES,
    ERROR_CLASSES,
    OUTCOME_INDEX,
    OUTCOMES,
    SYSTEM_ERROR_CLASSES,
    CallColumns,
    MetricColumns,
    NotificationColumns,
)
from stream.windows import histogram

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
METRIC_STATS = ("count", "sum", "max", "last_ts", "last")
_M = {name: i for i, name in enumerate(METRIC_STATS)}

SYSTEM_ERROR_COLS = [COL[f"err_{c}"] for c in SYSTEM_ERROR_CLASSES]
CONFIG_ERROR_COLS = [COL[f"err_{c}"] for c in CONFIG_ERROR_CLASSES]
_OUTCOME0 = COL[OUTCOMES[0]]
_ERR0 = COL[f"err_{ERROR_CLASSES[0]}"]
_N_ERR = len(ERROR_CLASSES)
_FAILURE = OUTCOME_INDEX["failure"]
_UNKNOWN = OUTCOME_INDEX["unknown"]
_SUCCESS = OUTCOME_INDEX["success"]
LATENCY_QUANTILES = (0.5, 0.95, 0.99)
OTHER = "__other__"
PACK_RADIX = 2**20  # value codes stay below this, so up to PACK_DIMS of them fit an int64
PACK_DIMS = 3
_NO_KEYS = np.zeros(0, np.int64)
SEP = "\x1f"  # joins dimension values into one lookup key (never inside ids)
CALL_DIMS = ("provider", "operation", "merchant_id")
ORDER_DIMS = ("provider", "merchant_id")  # with out_trade_no, what names an order
METRIC_LEVEL = ("metric",)

Dims = tuple[str, ...]
SeriesKey = tuple[Dims, tuple[str, ...]]  # (dimension names, values)


def _native(a: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    """``a`` seen through numpy's own dtype object. Arrays restored from a pickle carry
    an equal but distinct one, which sends ``np.add.at`` and friends down a ~10x slower
    path."""
    return a.view(dtype)


def _dedupe(levels: list[Dims]) -> list[Dims]:
    return list(dict.fromkeys(lv for lv in levels if lv))


@dataclass
class SeriesRegistry:
    """Stable integer ids for series, so counters live in dense arrays.

    Ids of evicted series are reused; ``max_per_level`` caps each level and
    folds the overflow into one ``__other__`` series per parent.
    """

    max_per_level: int = 100_000
    keys: list[SeriesKey | None] = field(default_factory=list)
    index: dict[SeriesKey, int] = field(default_factory=dict)
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

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["value_codes"], state["packed"] = {}, {}
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("value_codes", {})  # checkpoints from before the twin
        self.__dict__.setdefault("packed", {})
        self.last_seen = _native(self.last_seen, np.int64)
        self.level_of = _native(self.level_of, np.int16)

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
        known, sids = self.packed.get(dims, (_NO_KEYS, _NO_KEYS))
        if not known.size:
            return np.full(keys.size, -1, np.int64)
        at = np.minimum(np.searchsorted(known, keys), known.size - 1)
        return np.where(known[at] == keys, sids[at], -1)

    def add_packed(self, dims: Dims, keys: np.ndarray, sids: np.ndarray) -> None:
        known, ids = self.packed.get(dims, (_NO_KEYS, _NO_KEYS))
        keys, first = np.unique(keys, return_index=True)
        at = np.searchsorted(known, keys)
        self.packed[dims] = (np.insert(known, at, keys), np.insert(ids, at, sids[first]))

    def _drop_packed(self, gone: list[SeriesKey]) -> None:
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
        return sid

    def labels(self, sid: int) -> dict[str, str]:
        key = self.keys[sid]
        if key is None:
            return {}
        return dict(zip(key[0], key[1], strict=True))

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

    def __len__(self) -> int:
        """Size of the id space (dense arrays need this many rows)."""
        return len(self.keys)

    @property
    def active(self) -> int:
        return len(self.index)


@dataclass
class _Pane:
    counts: np.ndarray  # (rows, N_COLS) int64; rows grow with the registry
    mstats: np.ndarray  # (rows, len(METRIC_STATS)) float64
    lat_keys: list[np.ndarray] = field(default_factory=list)
    lat_counts: list[np.ndarray] = field(default_factory=list)
    pending_lat: int = 0

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.counts = _native(self.counts, np.int64)
        self.mstats = _native(self.mstats, np.float64)

    @classmethod
    def empty(cls, rows: int) -> _Pane:
        return cls(np.zeros((rows, N_COLS), np.int64), _empty_mstats(rows))

    def ensure_rows(self, n: int) -> None:
        have = self.counts.shape[0]
        if have < n:
            grow = max(n, 2 * have)
            self.counts = np.vstack([self.counts, np.zeros((grow - have, N_COLS), np.int64)])
            self.mstats = np.vstack([self.mstats, _empty_mstats(grow - have)])

    def add_latency(self, keys: np.ndarray, counts: np.ndarray) -> None:
        self.lat_keys.append(keys)
        self.lat_counts.append(counts)
        self.pending_lat += keys.size
        # Fold chunks together now and then so memory stays bounded by distinct buckets.
        if self.pending_lat > 1_000_000:
            self.consolidate()

    def consolidate(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.lat_keys:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        k, c = histogram.consolidate(np.concatenate(self.lat_keys), np.concatenate(self.lat_counts))
        self.lat_keys, self.lat_counts, self.pending_lat = [k], [c], k.size
        return k, c


def _empty_mstats(rows: int) -> np.ndarray:
    m = np.zeros((rows, len(METRIC_STATS)), np.float64)
    m[:, _M["max"]] = -np.inf
    m[:, _M["last_ts"]] = -np.inf
    m[:, _M["last"]] = np.nan
    return m


@dataclass
class ClosedWindow:
    """One closed window: counters, latency quantiles and metric stats for every series id.

    Rows are series ids; rows of free (evicted) ids are zero.
    """

    start_ms: int
    end_ms: int
    counts: np.ndarray  # (n, N_COLS) int64
    latency: np.ndarray  # (n, 3) p50/p95/p99 ms; NaN without calls
    metrics: np.ndarray  # (n, 5) count, sum, max, last_ts, last
    late: np.ndarray  # (n,) late events per series since the previous window

    def column(self, name: str) -> np.ndarray:
        return self.counts[:, COL[name]]

    def metric_mean(self) -> np.ndarray:
        c = self.metrics[:, _M["count"]]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, self.metrics[:, _M["sum"]] / np.maximum(c, 1), np.nan)


def _unique(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(key, return_index=True, return_inverse=True)`` over a stable argsort,
    which is 2-3x faster than the default one on int64 keys.

    >>> [a.tolist() for a in _unique(np.array([5, 3, 5, 1]))]
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


def _stack_index(idx: np.ndarray, size: int, times: int) -> np.ndarray:
    """``idx`` into each of ``times`` stacked arrays of ``size``.

    >>> _stack_index(np.array([0, 2]), 3, 2).tolist()
    [0, 2, 3, 5]
    """
    return (idx[None, :] + size * np.arange(times)[:, None]).reshape(-1)


def _order_of(seq: np.ndarray) -> np.ndarray:
    """``np.argsort(seq, kind="stable")``; record positions are distinct small integers,
    so usually a scatter does it without a sort.

    >>> _order_of(np.array([4, 0, 2])).tolist(), _order_of(np.array([1, 1, 0])).tolist()
    ([1, 2, 0], [2, 0, 1])
    """
    if seq.size and seq.min() >= 0 and seq.max() < 4 * seq.size:
        at = np.full(int(seq.max()) + 1, -1, np.int64)
        at[seq] = np.arange(seq.size)
        order = at[at >= 0]
        if order.size == seq.size:  # no position twice
            return order
    return np.argsort(seq, kind="stable")


def _unique_rows(
    cols: list[np.ndarray], base: int, *, presorted: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of code columns (codes in ``[-1, base - 1)``) in lexicographic order:
    index of each one's first occurrence, and each input's row number among them.
    ``presorted``: rows are already in that order, so runs are found without a sort.

    >>> first, inv = _unique_rows([np.array([2, 0, 2]), np.array([1, -1, 1])], 4)
    >>> first.tolist(), inv.tolist()
    ([1, 0], [1, 0, 1])
    >>> first, inv = _unique_rows([np.array([0, 0, 2]), np.array([-1, -1, 1])], 4, presorted=True)
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
        _, first, inv = _unique(key)
    else:  # too many strings to pack safely
        _, first, inv = np.unique(np.stack(cols), axis=1, return_index=True, return_inverse=True)
    return first, inv.reshape(-1)


@dataclass
class _Atoms:
    """Events grouped by every dimension a set of levels uses."""

    of_event: np.ndarray  # (events,) atom index of each event
    codes: dict[str, np.ndarray]  # per dimension, the string code of each atom
    n: int  # number of atoms
    dims: Dims  # atoms are sorted by these dimensions' codes, in this order


# A pending order: (callback deadline in event ms, series ids it counts for).
_PendingOrder = tuple[int, tuple[int, ...]]


@dataclass
class WindowState:
    """Open panes, the watermark, pending orders and counters: all the window stage keeps."""

    size_ms: int
    lateness_ms: int
    call_levels: list[Dims]
    hop_ms: int = 0  # 0 = tumbling (hop == size)
    callback_timeout_ms: int = 60_000
    max_pending_orders: int = 1_000_000
    idle_evict_ms: int = 3_600_000
    max_series_per_level: int = 100_000
    registry: SeriesRegistry = field(init=False)
    notification_levels: list[Dims] = field(init=False)
    open: dict[int, _Pane] = field(default_factory=dict)
    recent: deque[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=deque
    )
    max_ts: int | None = None
    forced_watermark: int | None = None  # lower bound set from outside (idle live stream)
    closed_until: int | None = None  # end of the newest closed pane
    pending: dict[str, _PendingOrder] = field(default_factory=dict)
    late_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    late_total: int = 0
    orders_evicted: int = 0
    series_evicted: int = 0

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.late_counts = _native(self.late_counts, np.int64)

    def __post_init__(self) -> None:
        if self.hop_ms <= 0:
            self.hop_ms = self.size_ms
        if self.size_ms % self.hop_ms:
            raise ValueError("window size must be a whole multiple of the hop")
        self.registry = SeriesRegistry(self.max_series_per_level)
        self.call_levels = _dedupe([tuple(lv) for lv in self.call_levels])
        self.notification_levels = _dedupe(
            [tuple(d for d in lv if d != "operation") for lv in self.call_levels]
            + [("provider", "signing_key_id")]
        )

    @classmethod
    def create(
        cls,
        size_s: float,
        lateness_s: float,
        levels: list[list[str]],
        *,
        hop_s: float = 0.0,
        callback_timeout_s: float = 60.0,
        max_pending_orders: int = 1_000_000,
        idle_evict_s: float = 3600.0,
        max_series_per_level: int = 100_000,
    ) -> WindowState:
        return cls(
            int(size_s * 1000),
            int(lateness_s * 1000),
            [tuple(lv) for lv in levels],
            hop_ms=int(hop_s * 1000),
            callback_timeout_ms=int(callback_timeout_s * 1000),
            max_pending_orders=max_pending_orders,
            idle_evict_ms=int(idle_evict_s * 1000),
            max_series_per_level=max_series_per_level,
        )

    @property
    def levels(self) -> list[Dims]:
        """Every series level, in the order a reader expects (calls first)."""
        return _dedupe([*self.call_levels, *self.notification_levels, METRIC_LEVEL])

    @property
    def watermark(self) -> int | None:
        wm = None if self.max_ts is None else self.max_ts - self.lateness_ms
        if self.forced_watermark is not None:
            wm = self.forced_watermark if wm is None else max(wm, self.forced_watermark)
        return wm

    # -- adding -------------------------------------------------------------------

    def add_batch(
        self,
        strings: list[str],
        calls: CallColumns,
        notifications: NotificationColumns,
        metrics: MetricColumns,
    ) -> int:
        """Add one decoded batch; returns how many events were late (counted, not windowed)."""
        parts: list[CallColumns | NotificationColumns | MetricColumns] = [
            calls,
            notifications,
            metrics,
        ]
        sizes = [len(p) for p in parts]
        if not sum(sizes):
            return 0
        late = self._late_masks(parts)
        self._grow()
        n_late = 0
        str_arr = np.asarray([*strings, ""], dtype=object)  # code -1 -> ""
        if sizes[0]:
            n_late += self._add_calls(calls, str_arr, late[0])
        if sizes[1]:
            n_late += self._add_notifications(notifications, str_arr, late[1])
        if sizes[2]:
            n_late += self._add_metrics(metrics, str_arr, late[2])
        batch_max = max(int(p.ts.max()) for p in parts if len(p))
        self.max_ts = batch_max if self.max_ts is None else max(self.max_ts, batch_max)
        self.late_total += n_late
        return n_late

    def add_calls(self, calls: CallColumns, strings: list[str]) -> int:
        """Calls only (tests, notebooks)."""
        return self.add_batch(strings, calls, NotificationColumns(), MetricColumns())

    def _late_masks(
        self, parts: list[CallColumns | NotificationColumns | MetricColumns]
    ) -> list[np.ndarray]:
        """Per event: is its pane already behind the watermark as it stood just before it?"""
        ts = np.concatenate([p.ts for p in parts])
        seqs = [p.seq if p.seq.size == len(p) else None for p in parts]
        if all(s is not None for s in seqs):
            order = _order_of(np.concatenate(seqs))  # type: ignore[arg-type]
        else:  # no record positions: treat calls, then notifications, then metrics as the order
            order = np.arange(len(ts))
        t = ts[order]
        prior = np.iinfo(np.int64).min // 2 if self.max_ts is None else self.max_ts
        running = np.maximum.accumulate(np.r_[prior, t[:-1]])
        wm_sorted = np.maximum(running, prior) - self.lateness_ms
        if self.forced_watermark is not None:
            wm_sorted = np.maximum(wm_sorted, self.forced_watermark)
        wm = np.empty_like(wm_sorted)
        wm[order] = wm_sorted
        pane = ts - np.mod(ts, self.hop_ms)
        late = pane + self.hop_ms <= wm
        if self.closed_until is not None:
            late |= pane < self.closed_until
        out, at = [], 0
        for p in parts:
            out.append(late[at : at + len(p)])
            at += len(p)
        return out

    def _grow(self) -> None:
        n = len(self.registry)
        if self.late_counts.shape[0] < n + 1024:
            extra = max(1024, n)
            self.late_counts = np.r_[self.late_counts, np.zeros(extra, np.int64)]
            self.registry.last_seen = np.r_[self.registry.last_seen, np.zeros(extra, np.int64)]

    def _atoms(self, cols: dict[str, np.ndarray], levels: list[Dims], base: int) -> _Atoms:
        """Group events by every dimension ``levels`` use (an *atom*): series ids, strings
        and counting then run per atom, never per event."""
        dims = list(dict.fromkeys(d for lv in levels for d in lv))
        n = len(next(iter(cols.values())))
        if not dims:
            return _Atoms(np.zeros(n, np.int64), {}, 1, ())
        first, of_event = _unique_rows([cols[d] for d in dims], base)
        return _Atoms(of_event, {d: cols[d][first] for d in dims}, len(first), tuple(dims))

    def _level_sids(
        self,
        atoms: _Atoms,
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
        reg = self.registry
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
                vcode = self._value_codes(atoms, levels, str_arr)
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
                # The rest (new series mostly) by joined values, in sorted order.
                cols = [atoms.codes[d][r] for d in dims]
                # A level that is a prefix of the atoms' dimensions is already sorted.
                sorted_ = atoms.dims[: len(dims)] == dims
                first, inv = _unique_rows(cols, len(str_arr), presorted=sorted_)
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
            out.append(sids)
        self._grow()
        return out

    def _value_codes(self, atoms: _Atoms, levels: list[Dims], str_arr: np.ndarray) -> np.ndarray:
        """Twin value code of each batch string the atoms use (-1 for the others)."""
        used = np.zeros(len(str_arr), bool)
        for d in {d for lv in levels for d in lv}:
            used[atoms.codes[d]] = True  # code -1 marks the last entry: the "" string
        need = np.flatnonzero(used)
        if need.size >= PACK_RADIX:  # more values than codes: strings only this time
            return _NO_KEYS
        vcode = np.full(len(str_arr), -1, np.int64)
        vcode[need] = self.registry.codes_of(str_arr[need].tolist())
        return vcode

    def _rollup(
        self,
        atom: np.ndarray,
        atom_sids: list[np.ndarray],
        ts: np.ndarray,
        keep: np.ndarray,
        cats: list[np.ndarray],
        weighted: dict[int, np.ndarray] | None = None,
        bucket: np.ndarray | None = None,
    ) -> None:
        """Count events into their panes at every level: each array in ``cats`` gives, per
        event, a column to add one to (-1: none); ``weighted`` adds per-event values.

        Counting runs once per (atom, pane) group; each group's row then goes to the
        atom's series at every level (several atoms share a coarse series, hence add.at).
        """
        u = atom_sids[0].size
        if not keep.all():
            per_atom = np.bincount(atom[~keep], minlength=u)
            hit = np.flatnonzero(per_atom)
            for sids in atom_sids:
                s = sids[hit]
                ok = s >= 0
                np.add.at(self.late_counts, s[ok], per_atom[hit][ok])
            if not keep.any():
                return
            ts, atom = ts[keep], atom[keep]
            cats = [c[keep] for c in cats]
            weighted = {k: w[keep] for k, w in (weighted or {}).items()}
            bucket = bucket[keep] if bucket is not None else None
        newest = np.full(u, np.iinfo(np.int64).min, np.int64)
        np.maximum.at(newest, atom, ts)
        for sids in atom_sids:
            ok = sids >= 0
            np.maximum.at(self.registry.last_seen, sids[ok], newest[ok])
        pane_of = ts - np.mod(ts, self.hop_ms)
        p0 = int(pane_of.min())
        pi = (pane_of - p0) // self.hop_ms
        n_p = int(pi.max()) + 1
        lat_g = lat_b = lat_n = None
        gkey = atom * n_p + pi
        if bucket is not None and u * n_p < 2**62 // histogram.N_BUCKETS:
            # One sort gives both the (atom, pane) groups and their latency buckets.
            lk, _, linv = _unique(gkey * histogram.N_BUCKETS + bucket)
            lat_n = np.bincount(linv, minlength=lk.size)
            lat_gk, lat_b = np.divmod(lk, histogram.N_BUCKETS)
            new = np.r_[True, lat_gk[1:] != lat_gk[:-1]]
            group, lat_g = lat_gk[new], np.cumsum(new) - 1
            ginv = lat_g[linv]
        elif bucket is None and u * n_p <= 4 * ts.size + 4096:
            # Few possible groups: mark them in a dense table instead of sorting events.
            seen = np.bincount(gkey, minlength=u * n_p) > 0
            group, ginv = np.flatnonzero(seen), (np.cumsum(seen) - 1)[gkey]
        else:
            group, _, ginv = _unique(gkey)
            if bucket is not None:
                lk, _, linv = _unique(ginv * histogram.N_BUCKETS + bucket)
                lat_n = np.bincount(linv, minlength=lk.size)
                lat_g, lat_b = np.divmod(lk, histogram.N_BUCKETS)
        g = len(group)
        # One bincount for every categorical column at once: cell = group * N_COLS + column.
        cells = [ginv[c >= 0] * N_COLS + c[c >= 0] for c in cats]
        flat = np.bincount(np.concatenate(cells), minlength=g * N_COLS) if cells else None
        rows = flat.reshape(g, N_COLS) if flat is not None else np.zeros((g, N_COLS), np.int64)
        for col, w in (weighted or {}).items():
            rows[:, col] += np.bincount(ginv, weights=w, minlength=g).astype(np.int64)
        # Only non-zero cells travel up the levels.
        nz = np.flatnonzero(rows)
        cell_g, cell_col, cell_val = nz // N_COLS, nz % N_COLS, rows.reshape(-1)[nz]
        g_atom, g_pi = np.divmod(group, n_p)
        # Every level at once: the series of each group, stacked level after level.
        g_sid = np.concatenate([sids[g_atom] for sids in atom_sids])
        n_lv = len(atom_sids)
        cell_to = g_sid[_stack_index(cell_g, g, n_lv)] * N_COLS + np.tile(cell_col, n_lv)
        cell_pi, cell_n = np.tile(g_pi[cell_g], n_lv), np.tile(cell_val, n_lv)
        if lat_g is not None and lat_b is not None and lat_n is not None:
            lat_to = g_sid[_stack_index(lat_g, g, n_lv)]
            lat_key = lat_to * histogram.N_BUCKETS + np.tile(lat_b, n_lv)
            lat_pi, lat_cnt = np.tile(g_pi[lat_g], n_lv), np.tile(lat_n, n_lv)
        for i in np.flatnonzero(np.bincount(g_pi, minlength=n_p)).tolist():
            acc = self._pane(p0 + i * self.hop_ms)
            sel = (cell_pi == i) & (cell_to >= 0)  # -1 * N_COLS + col < 0: no series
            # add.at: several atoms can share one series (coarse levels, __other__).
            np.add.at(acc.counts.reshape(-1), cell_to[sel], cell_n[sel])
            if lat_g is not None:
                sel = (lat_pi == i) & (lat_to >= 0)
                # Keys repeat across atoms of one series: consolidate() merges them.
                acc.add_latency(lat_key[sel], lat_cnt[sel])

    def _pane(self, start: int) -> _Pane:
        pane = self.open.get(start)
        if pane is None:
            pane = _Pane.empty(len(self.registry) + len(self.registry) // 4 + 64)
            self.open[start] = pane
        pane.ensure_rows(len(self.registry))
        return pane

    def _add_calls(self, calls: CallColumns, str_arr: np.ndarray, late: np.ndarray) -> int:
        cols = {
            "provider": calls.provider,
            "operation": calls.operation,
            "merchant_id": calls.merchant_id,
        }
        levels = [lv for lv in self.call_levels if set(lv) <= set(CALL_DIMS)]
        # Callback series (levels within provider, merchant_id) come from the same atoms.
        cb_levels = [
            lv for lv in self.notification_levels if set(lv) <= {"provider", "merchant_id"}
        ]
        atoms = self._atoms(cols, [*levels, *cb_levels, ORDER_DIMS], len(str_arr))
        sid_levels = self._level_sids(atoms, levels, str_arr, whole=False)
        keep = ~late
        outcome = calls.outcome.astype(np.int64)
        err = calls.error_class.astype(np.int64)
        n = len(calls)
        unclassified = (err < 0) & ((outcome == _FAILURE) | (outcome == _UNKNOWN))
        cats = [
            np.full(n, COL["volume"], np.int64),
            _OUTCOME0 + outcome,
            np.where(err >= 0, _ERR0 + err, np.where(unclassified, COL["err_unclassified"], -1)),
        ]
        weighted = {COL["amount_minor"]: calls.amount_minor} if calls.amount_minor.any() else None
        if sid_levels:
            self._rollup(
                atoms.of_event,
                sid_levels,
                calls.ts,
                keep,
                cats,
                weighted,
                histogram.bucket_of(calls.latency_ms),
            )
        self._expect_callbacks(calls, str_arr, keep, atoms, cb_levels)
        return int(late.sum())

    def _order_keys(
        self, atoms: _Atoms, atom: np.ndarray, trade: np.ndarray, str_arr: np.ndarray
    ) -> list[str]:
        """``provider|merchant_id|out_trade_no`` of orders; ``atom`` holds each order's atom.

        The ``provider|merchant_id|`` prefix is joined once per atom, not per order.
        """
        present = np.flatnonzero(np.bincount(atom, minlength=atoms.n))
        prefix = np.empty(atoms.n, object)
        p, m = atoms.codes["provider"][present], atoms.codes["merchant_id"][present]
        prefix[present] = str_arr[p] + "|" + str_arr[m] + "|"
        return (prefix[atom] + str_arr[trade]).tolist()

    def _expect_callbacks(
        self,
        calls: CallColumns,
        str_arr: np.ndarray,
        keep: np.ndarray,
        atoms: _Atoms,
        levels: list[Dims],
    ) -> None:
        hits = np.flatnonzero(str_arr == "create_payment")
        if not hits.size:
            return
        created = (
            keep
            & (calls.operation == hits[0])
            & (calls.outcome == _SUCCESS)
            & (calls.out_trade_no >= 0)
        )
        if not created.any():
            return
        idx = np.flatnonzero(created)
        atom = atoms.of_event[idx]
        # Series only for atoms with a created order, as a per-event pass would make them.
        present = np.flatnonzero(np.bincount(atom, minlength=atoms.n))
        sid_levels = self._level_sids(atoms, levels, str_arr, whole=False, subset=present)
        ts = calls.ts[idx]
        if sid_levels:
            self._rollup(
                atom, sid_levels, ts, np.ones(len(idx), bool), [np.full(len(idx), COL["created"])]
            )
        keys = self._order_keys(atoms, atom, calls.out_trade_no[idx], str_arr)
        deadlines = ts + self.callback_timeout_ms
        # One tuple of series ids per atom, shared by its orders (less memory, less work).
        per_atom = list(zip(*[s.tolist() for s in sid_levels], strict=True)) or [()] * atoms.n
        sids = map(per_atom.__getitem__, atom.tolist())
        # C-speed bulk insert; insertion order ~ event time, which expiry relies on.
        self.pending.update(zip(keys, zip(deadlines.tolist(), sids, strict=True), strict=True))
        overflow = len(self.pending) - self.max_pending_orders
        if overflow > 0:
            for key in list(self.pending)[:overflow]:
                del self.pending[key]
            self.orders_evicted += overflow

    def _add_notifications(
        self, notes: NotificationColumns, str_arr: np.ndarray, late: np.ndarray
    ) -> int:
        cols = {
            "provider": notes.provider,
            "merchant_id": notes.merchant_id,
            "signing_key_id": notes.signing_key_id,
        }
        ack = notes.ack_status.astype(np.int64)
        n = len(notes)
        ack_col = np.full(len(ACK_INDEX), -1, np.int64)
        ack_col[ACK_INDEX["nacked"]] = COL["nacks"]
        ack_col[ACK_INDEX["error"]] = COL["ack_errors"]
        ack_col[ACK_INDEX["late"]] = COL["late_acks"]
        cats = [
            np.full(n, COL["callbacks"], np.int64),
            np.where(notes.signature_verified, -1, COL["verify_failures"]),
            ack_col[ack],
            np.where(notes.is_duplicate, COL["duplicates"], -1),
            np.where(notes.amount_matches == 0, COL["amount_mismatches"], -1),
        ]
        keep = ~late
        # A level needs every one of its dimensions (callbacks without a key id skip per-key).
        atoms = self._atoms(cols, [*self.notification_levels, ORDER_DIMS], len(str_arr))
        sid_levels = self._level_sids(atoms, self.notification_levels, str_arr, whole=True)
        self._rollup(atoms.of_event, sid_levels, notes.ts, keep, cats)
        matched = keep & (notes.out_trade_no >= 0)
        if matched.any() and self.pending:
            keys = self._order_keys(
                atoms, atoms.of_event[matched], notes.out_trade_no[matched], str_arr
            )
            deque(map(self.pending.pop, keys, repeat(None)), maxlen=0)  # pop all, C speed
        return int(late.sum())

    def _add_metrics(self, metrics: MetricColumns, str_arr: np.ndarray, late: np.ndarray) -> int:
        atoms = self._atoms({"metric": metrics.series}, [METRIC_LEVEL], len(str_arr))
        (by_atom,) = self._level_sids(atoms, [METRIC_LEVEL], str_arr, whole=False)
        sids = by_atom[atoms.of_event]
        keep = ~late
        if late.any():
            np.add.at(self.late_counts, sids[late], 1)
        if not keep.any():
            return int(late.sum())
        sids, ts, value = sids[keep], metrics.ts[keep], metrics.value[keep]
        np.maximum.at(self.registry.last_seen, sids, ts)
        pane = ts - np.mod(ts, self.hop_ms)
        for p in np.unique(pane).tolist():
            sel = pane == p
            s, t, v = sids[sel], ts[sel], value[sel]
            acc = self._pane(p)
            m = acc.mstats
            np.add.at(m[:, _M["count"]], s, 1)
            np.add.at(m[:, _M["sum"]], s, v)
            np.maximum.at(m[:, _M["max"]], s, v)
            order = np.lexsort((t, s))
            s_o, t_o, v_o = s[order], t[order], v[order]
            last = np.r_[s_o[1:] != s_o[:-1], True]
            s_l, t_l, v_l = s_o[last], t_o[last], v_o[last]
            newer = t_l >= m[s_l, _M["last_ts"]]
            m[s_l[newer], _M["last_ts"]] = t_l[newer]
            m[s_l[newer], _M["last"]] = v_l[newer]
        return int(late.sum())

    # -- closing ------------------------------------------------------------------

    def advance_to(self, watermark_ms: int) -> None:
        """Force the watermark forward (idle stream in live mode, or end of input)."""
        if self.forced_watermark is None or watermark_ms > self.forced_watermark:
            self.forced_watermark = watermark_ms

    def close_ready(self) -> list[ClosedWindow]:
        """Close, in order, every pane the watermark has passed; one window per pane."""
        wm = self.watermark
        if wm is None or (not self.open and self.closed_until is None):
            return []
        first = self.closed_until if self.closed_until is not None else min(self.open)
        last_end = wm - wm % self.hop_ms
        # Panes with no event at all still close (a traffic stop must be seen as zeros).
        return [self._close(s) for s in range(first, last_end, self.hop_ms)]

    def flush(self) -> list[ClosedWindow]:
        """Close every open pane (end of offline input)."""
        if not self.open:
            return []
        self.advance_to(max(self.open) + self.hop_ms)
        return self.close_ready()

    def _close(self, start: int) -> ClosedWindow:
        n = len(self.registry)
        pane = self.open.pop(start, None) or _Pane.empty(n)
        pane.ensure_rows(n)
        end = start + self.hop_ms
        self._expire_orders(end, pane)
        counts, mstats = pane.counts[:n], pane.mstats[:n]
        keys, cnt = pane.consolidate()
        k = self.size_ms // self.hop_ms
        if k > 1:
            prior = list(self.recent)
            self.recent.append((start, counts, mstats, keys, cnt))
            while len(self.recent) >= k:
                self.recent.popleft()
            for _, c2, m2, k2, n2 in prior:
                rows = c2.shape[0]
                counts = counts.copy()
                counts[:rows] += c2
                mstats = _merge_mstats(mstats, m2)
                keys, cnt = np.r_[keys, k2], np.r_[cnt, n2]
            keys, cnt = histogram.consolidate(keys, cnt)
        latency = histogram.quantiles(keys, cnt, np.arange(n), LATENCY_QUANTILES)
        self.closed_until = end
        late = self.late_counts[:n].copy()
        self.late_counts[:n] = 0
        return ClosedWindow(end - self.size_ms, end, counts, latency, mstats, late)

    def _expire_orders(self, pane_end: int, pane: _Pane) -> None:
        """Orders whose callback deadline passed inside this pane count as missing callbacks."""
        if not self.pending:
            return
        expired: list[_PendingOrder] = []
        for order in self.pending.values():
            if order[0] >= pane_end:
                break
            expired.append(order)
        if not expired:
            return
        for key in list(self.pending)[: len(expired)]:
            del self.pending[key]
        sids = np.array([s for o in expired for s in o[1]], dtype=np.int64)
        pane.ensure_rows(len(self.registry))
        np.add.at(pane.counts[:, COL["missing_callbacks"]], sids, 1)

    def evict_idle(self, protect: set[int] | None = None) -> np.ndarray:
        """Forget series idle for longer than ``idle_evict``; returns their (now free) ids."""
        wm = self.watermark
        if wm is None:
            return np.zeros(0, np.int64)
        n = len(self.registry)
        idle = np.flatnonzero(self.registry.last_seen[:n] < wm - self.idle_evict_ms)
        idle = np.array(
            [
                s
                for s in idle.tolist()
                if self.registry.keys[s] is not None and (protect is None or s not in protect)
            ],
            dtype=np.int64,
        )
        if idle.size:
            for pane in self.open.values():
                if pane.counts.shape[0] >= n and pane.counts[idle].any():
                    return np.zeros(0, np.int64)  # not idle after all; retry next time
            self.registry.evict(idle)
            self.late_counts[idle] = 0
            self.series_evicted += int(idle.size)
            for i, (s, c, m, k, cnt) in enumerate(self.recent):
                c = c.copy()
                c[idle[idle < c.shape[0]]] = 0
                self.recent[i] = (s, c, m, k, cnt)
        return idle


def _merge_mstats(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    rows = max(a.shape[0], b.shape[0])
    out = _empty_mstats(rows)
    out[: a.shape[0]] = a
    m = out[: b.shape[0]]
    m[:, _M["count"]] += b[:, _M["count"]]
    m[:, _M["sum"]] += b[:, _M["sum"]]
    m[:, _M["max"]] = np.maximum(m[:, _M["max"]], b[:, _M["max"]])
    newer = b[:, _M["last_ts"]] > m[:, _M["last_ts"]]
    m[newer, _M["last_ts"]] = b[newer, _M["last_ts"]]
    m[newer, _M["last"]] = b[newer, _M["last"]]
    return out
