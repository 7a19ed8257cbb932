"""The window state: open panes, the watermark, and the windows that close.

Windows are built from tumbling *panes* of ``hop`` length; a window of ``size``
is the sum of the last ``size / hop`` panes, so hopping windows cost one pane of
work per event, and tumbling windows are the case ``hop == size``.

Event time is kept per input partition, as Kafka Streams does: a partition's
watermark is the newest event time seen in it minus the allowed lateness, and
the stream's watermark is the minimum over the partitions that hold the clock
(every partition seen, or the set given to :meth:`WindowState.hold_clock` —
live, the assigned partitions that are not idle), never moving back.  A pane
closes when the stream's watermark passes its end.  An event is *late* when its
pane is behind its own partition's watermark as it stood before the event in
stream order (or already closed): counted per series, never silently dropped.
So catching up a backlog, a skewed partition or any fetch interleaving gives the
same windows, and the same stream gives the same windows whatever the batching.

Memory is bounded: at most ``max_series_per_level`` series per level (the rest
fold into an ``__other__`` series, counted), series idle for ``idle_evict`` are
evicted, and pending orders are capped.  All state is plain and goes
through the state codec (stream/state_codec.py) for checkpoints.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.ingest.events import CallColumns, MetricColumns, NotificationColumns
from stream.windows import histogram
from stream.windows.arrays import native, order_of
from stream.windows.atoms import Atoms, group_atoms, level_sids
from stream.windows.callbacks import (
    PendingOrder,
    add_orders,
    created_orders,
    expire_orders,
    order_keys,
    pack_orders,
    pack_overdue,
    recover_orders,
    settle_orders,
    unpack_orders,
    unpack_overdue,
)
from stream.windows.columns import (
    COL,
    LATENCY_QUANTILES,
    call_cells,
    call_weights,
    notification_cells,
    timed_mask,
)
from stream.windows.metric_stats import add_samples, merge_mstats, metric_mean
from stream.windows.panes import Pane
from stream.windows.registry import Dims, SeriesRegistry
from stream.windows.rollup import count_late, mark_seen, rollup

CALL_DIMS = ("provider", "operation", "merchant_id")
ORDER_DIMS = ("provider", "merchant_id")  # with out_trade_no, what names an order
METRIC_LEVEL = ("metric",)


def _packed(orders: object) -> bool:
    """An order map in its checkpoint form (see ``pack_orders``)."""
    return isinstance(orders, dict) and isinstance(orders.get("lengths"), np.ndarray)


def _rows(v: np.ndarray, n: int) -> np.ndarray:
    """``v`` for ``n`` series (series registered since it was taken count zero)."""
    return v[:n] if v.size >= n else np.pad(v, (0, n - v.size))


def _dedupe(levels: list[Dims]) -> list[Dims]:
    return list(dict.fromkeys(lv for lv in levels if lv))


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
    # The window's latency histograms (see stream.windows.histogram): sorted keys
    # ``series_id * N_BUCKETS + bucket`` and their counts.
    hist_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    hist_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # Orders whose callback deadline fell in this window (None: use ``created``).
    due: np.ndarray | None = None

    def column(self, name: str) -> np.ndarray:
        return self.counts[:, COL[name]]

    def metric_mean(self) -> np.ndarray:
        return metric_mean(self.metrics)


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
    # Expired orders kept by key (provider|merchant_id|out_trade_no -> deadline ms),
    # oldest first, so alerts can name them and late callbacks count as recovered.
    max_overdue_orders: int = 100_000
    registry: SeriesRegistry = field(init=False)
    notification_levels: list[Dims] = field(init=False)
    open: dict[int, Pane] = field(default_factory=dict)
    recent: deque[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=deque
    )
    max_ts: int | None = None  # newest event time over all partitions
    part_max: dict[int, int] = field(default_factory=dict)  # newest event time per partition
    holding: set[int] | None = None  # partitions that hold the clock (None: every one seen)
    stream_wm: int | None = None  # min over holding partitions' watermarks, monotone
    forced_watermark: int | None = None  # lower bound set from outside (idle live stream)
    closed_until: int | None = None  # end of the newest closed pane
    pending: dict[str, PendingOrder] = field(default_factory=dict)
    late_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    late_total: int = 0
    overdue: dict[str, int] = field(default_factory=dict)
    recovered: list[str] = field(default_factory=list)  # overdue keys whose callback came
    # Pending orders whose callback came too late by event time (see _settle): they expire
    # with their pane as missing, then count as recovered.
    late_callbacks: set[str] = field(default_factory=set)
    orders_evicted: int = 0
    series_evicted: int = 0
    # Created orders per series of the newest closed panes (newest last), and the orders
    # due in each of the window's panes: see ``_due``.
    created_log: deque[np.ndarray] = field(default_factory=deque)
    due_log: deque[np.ndarray] = field(default_factory=deque)
    due_from_created: bool = False  # restored from a checkpoint without the log

    def __getstate__(self) -> dict[str, object]:
        # Orders as a few arrays: thousands of them would otherwise be written one by
        # one on every checkpoint (the live worker checkpoints after alert batches).
        state = self.__dict__.copy()
        state["pending"] = pack_orders(self.pending)
        state["overdue"] = pack_overdue(self.overdue)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if _packed(state.get("pending")):  # checkpoints before packing held the dicts
            state["pending"] = unpack_orders(state["pending"])
        if _packed(state.get("overdue")):
            state["overdue"] = unpack_overdue(state["overdue"])
        state.setdefault("overdue", {})  # checkpoints from before overdue orders were kept
        state.setdefault("recovered", [])
        state.setdefault("late_callbacks", set())
        state.setdefault("max_overdue_orders", 100_000)
        if "created_log" not in state:  # its pending orders are due, unlogged
            state.update(created_log=deque(), due_log=deque(), due_from_created=True)
        self.__dict__.update(state)
        self.late_counts = native(self.late_counts, np.int64)

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
        wm = self.stream_wm
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
        self._advance_stream()
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
            order = order_of(np.concatenate(seqs))  # type: ignore[arg-type]
        else:  # no record positions: treat calls, then notifications, then metrics as the order
            order = np.arange(len(ts))
        part = np.concatenate(
            [
                p.partition if p.partition.size == len(p) else np.zeros(len(p), np.int32)
                for p in parts
            ]
        )
        wm = self._partition_watermarks(ts, part, order)
        pane = ts - np.mod(ts, self.hop_ms)
        late = pane + self.hop_ms <= wm
        if self.closed_until is not None:
            late |= pane < self.closed_until
        out, at = [], 0
        for p in parts:
            out.append(late[at : at + len(p)])
            at += len(p)
        return out

    def _partition_watermarks(
        self, ts: np.ndarray, part: np.ndarray, order: np.ndarray
    ) -> np.ndarray:
        """Per event, its partition's watermark just before it in stream order (``order``);
        updates the newest event time of each partition."""
        wm = np.empty(len(ts), np.int64)
        p_sorted = part[order]
        for p in np.unique(p_sorted).tolist():
            at = order[p_sorted == p]  # this partition's events, in stream order
            t = ts[at]
            prior = self.part_max.get(p, np.iinfo(np.int64).min // 2)
            running = np.maximum.accumulate(np.r_[prior, t[:-1]])
            wm[at] = running - self.lateness_ms
            self.part_max[p] = max(prior, int(t.max()))
        if self.forced_watermark is not None:
            np.maximum(wm, self.forced_watermark, out=wm)
        return wm

    def see_partitions(self, newest: dict[int, int]) -> None:
        """Partitions' newest event times learnt from elsewhere (a roll-up task's watermark
        markers: the source partition has passed ``ts``, its events up to it were sent)."""
        for p, ts in newest.items():
            self.part_max[p] = max(self.part_max.get(p, ts), ts)
        self._advance_stream()

    def hold_clock(self, partitions: set[int] | None) -> None:
        """Which partitions hold the stream's clock back (None: every partition seen).

        A held partition with no event yet stops windows from closing until it has
        one (or is released): its events could still be older than the others'.
        """
        self.holding = None if partitions is None else set(partitions)
        self._advance_stream()

    def _advance_stream(self) -> None:
        held = self.part_max.keys() if self.holding is None else self.holding
        if not held or any(p not in self.part_max for p in held):
            return
        wm = min(self.part_max[p] for p in held) - self.lateness_ms
        if self.stream_wm is None or wm > self.stream_wm:
            self.stream_wm = wm

    def _grow(self) -> None:
        n = len(self.registry)
        if self.late_counts.shape[0] < n + 1024:
            extra = max(1024, n)
            self.late_counts = np.r_[self.late_counts, np.zeros(extra, np.int64)]
            self.registry.last_seen = np.r_[self.registry.last_seen, np.zeros(extra, np.int64)]

    def _level_sids(
        self,
        atoms: Atoms,
        levels: list[Dims],
        str_arr: np.ndarray,
        *,
        whole: bool,
        subset: np.ndarray | None = None,
    ) -> list[np.ndarray]:
        """Per level, the series id of every atom (see :func:`~stream.windows.atoms.level_sids`);
        the per-series arrays then grow to the registry."""
        out = level_sids(self.registry, atoms, levels, str_arr, whole=whole, subset=subset)
        self._grow()
        return out

    def _rollup(
        self,
        atom: np.ndarray,
        atom_sids: list[np.ndarray],
        ts: np.ndarray,
        keep: np.ndarray,
        cats: list[np.ndarray],
        weighted: dict[int, np.ndarray] | None = None,
        bucket: np.ndarray | None = None,
        timed: np.ndarray | None = None,
    ) -> None:
        """Count events into their panes at every level: each array in ``cats`` gives, per
        event, a column to add one to (-1: none); ``weighted`` adds per-event values;
        ``bucket`` is each event's latency bucket, in the histograms if ``timed``.
        Late events (not ``keep``) count as late for their series instead."""
        if not keep.all():
            count_late(self.late_counts, atom, atom_sids, ~keep)
            if not keep.any():
                return
            ts, atom = ts[keep], atom[keep]
            cats = [c[keep] for c in cats]
            weighted = {k: w[keep] for k, w in (weighted or {}).items()}
            bucket = bucket[keep] if bucket is not None else None
            timed = timed[keep] if timed is not None else None
        mark_seen(self.registry.last_seen, atom, ts, atom_sids)
        p0, cells = rollup(atom, atom_sids, ts, self.hop_ms, cats, weighted, bucket, timed)
        for i in cells.panes:
            cells.add_into(self._pane(p0 + i * self.hop_ms), i)

    def _pane(self, start: int) -> Pane:
        pane = self.open.get(start)
        if pane is None:
            pane = Pane.empty(len(self.registry) + len(self.registry) // 4 + 64)
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
        atoms = group_atoms(cols, [*levels, *cb_levels, ORDER_DIMS], len(str_arr))
        sid_levels = self._level_sids(atoms, levels, str_arr, whole=False)
        keep = ~late
        if sid_levels:
            self._rollup(
                atoms.of_event,
                sid_levels,
                calls.ts,
                keep,
                call_cells(calls),
                call_weights(calls),
                histogram.bucket_of(calls.latency_ms),
                timed_mask(calls),
            )
        self._expect_callbacks(calls, str_arr, keep, atoms, cb_levels)
        return int(late.sum())

    def _expect_callbacks(
        self,
        calls: CallColumns,
        str_arr: np.ndarray,
        keep: np.ndarray,
        atoms: Atoms,
        levels: list[Dims],
    ) -> None:
        idx = created_orders(calls, str_arr, keep)
        if not idx.size:
            return
        atom = atoms.of_event[idx]
        # Series only for atoms with a created order, as a per-event pass would make them.
        present = np.flatnonzero(np.bincount(atom, minlength=atoms.n))
        sid_levels = self._level_sids(atoms, levels, str_arr, whole=False, subset=present)
        ts = calls.ts[idx]
        if sid_levels:
            self._rollup(
                atom, sid_levels, ts, np.ones(len(idx), bool), [np.full(len(idx), COL["created"])]
            )
        keys = order_keys(atoms, atom, calls.out_trade_no[idx], str_arr)
        self.orders_evicted += add_orders(
            self.pending,
            keys,
            ts + self.callback_timeout_ms,
            atom,
            sid_levels,
            atoms.n,
            self.max_pending_orders,
        )

    def _add_notifications(
        self, notes: NotificationColumns, str_arr: np.ndarray, late: np.ndarray
    ) -> int:
        cols = {
            "provider": notes.provider,
            "merchant_id": notes.merchant_id,
            "signing_key_id": notes.signing_key_id,
        }
        keep = ~late
        # A level needs every one of its dimensions (callbacks without a key id skip per-key).
        atoms = group_atoms(cols, [*self.notification_levels, ORDER_DIMS], len(str_arr))
        sid_levels = self._level_sids(atoms, self.notification_levels, str_arr, whole=True)
        self._rollup(atoms.of_event, sid_levels, notes.ts, keep, notification_cells(notes))
        matched = keep & (notes.out_trade_no >= 0)
        if matched.any() and (self.pending or self.overdue):
            keys = order_keys(atoms, atoms.of_event[matched], notes.out_trade_no[matched], str_arr)
            if self.pending:
                self._settle(keys, notes.ts[matched])
            if self.overdue:  # a callback after its deadline: the order is recovered
                self.recovered.extend(recover_orders(self.overdue, keys))
                del self.recovered[: -self.max_overdue_orders]  # bounded if nobody drains it
        return int(late.sum())

    def _settle(self, keys: list[str], ts: np.ndarray) -> None:
        """Settle the orders of callbacks that came in time.

        In time is by event time: before the end of the pane holding the order's deadline
        plus the allowed lateness (what a stream in event-time order has read when that
        pane closes) — not before the pane happened to close, which waits for the slowest
        partition and for a batch's end.  So whether a callback is missing never depends
        on how partitions' fetches interleave or on the batching.  A callback after that
        leaves its order pending; the order expires with its pane (a missing callback)
        and is recovered at once, as if the callback had come after the close."""
        far = np.iinfo(np.int64).max // 2
        deadline = np.fromiter(
            (self.pending.get(k, (far, ()))[0] for k in keys), np.int64, len(keys)
        )
        pane_end = deadline - np.mod(deadline, self.hop_ms) + self.hop_ms
        behind = pane_end + self.lateness_ms <= ts
        if not behind.any():
            settle_orders(self.pending, keys)
            return
        pick = behind.tolist()
        settle_orders(self.pending, [k for k, b in zip(keys, pick, strict=True) if not b])
        self.late_callbacks.update(k for k, b in zip(keys, pick, strict=True) if b)

    def _add_metrics(self, metrics: MetricColumns, str_arr: np.ndarray, late: np.ndarray) -> int:
        atoms = group_atoms({"metric": metrics.series}, [METRIC_LEVEL], len(str_arr))
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
            add_samples(self._pane(p).mstats, sids[sel], ts[sel], value[sel])
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
        pane = self.open.pop(start, None) or Pane.empty(n)
        pane.ensure_rows(n)
        end = start + self.hop_ms
        self._expire_orders(end, pane)
        counts, mstats = pane.counts[:n], pane.mstats[:n]
        keys, cnt = pane.consolidate()
        k = self.size_ms // self.hop_ms
        due = self._due(counts[:, COL["created"]].astype(np.float64), n, k)
        if k > 1:
            prior = list(self.recent)
            self.recent.append((start, counts, mstats, keys, cnt))
            while len(self.recent) >= k:
                self.recent.popleft()
            for _, c2, m2, k2, n2 in prior:
                rows = c2.shape[0]
                counts = counts.copy()
                counts[:rows] += c2
                mstats = merge_mstats(mstats, m2)
                keys, cnt = np.r_[keys, k2], np.r_[cnt, n2]
            keys, cnt = histogram.consolidate(keys, cnt)
        latency = histogram.quantiles(keys, cnt, np.arange(n), LATENCY_QUANTILES)
        self.closed_until = end
        late = self.late_counts[:n].copy()
        self.late_counts[:n] = 0
        return ClosedWindow(end - self.size_ms, end, counts, latency, mstats, late, keys, cnt, due)

    def _due(self, created: np.ndarray, n: int, k: int) -> np.ndarray:
        """Per series, the orders whose callback deadline falls in the window closing now:
        the trials of the missing-callback share, whose failures (orders expiring unpaid)
        count in the same window.  Those are the orders created ``callback_timeout``
        earlier (split between two panes when it is not a whole number of panes), not the
        window's own: when creation moves (a promotion ending, the morning ramp) the
        window's own created orders are not the ones that could go missing in it.  Until
        the log reaches back that far none are due on a cold start (no order created
        before it is pending); after a restore from a checkpoint without the log, the
        pane's own created orders stand in for its pending ones.
        """
        q, rem = divmod(self.callback_timeout_ms, self.hop_ms)
        back = q + (2 if rem else 1)
        log = self.created_log
        log.append(created)
        while len(log) > back:
            log.popleft()
        if len(log) < back:
            pane_due = created if self.due_from_created else np.zeros_like(created)
        else:  # log[0] is the pane before log[-1 - q] (the same one when rem is 0)
            r = rem / self.hop_ms
            pane_due = (1 - r) * _rows(log[-1 - q], n) + r * _rows(log[0], n)
        self.due_log.append(pane_due)
        while len(self.due_log) > k:
            self.due_log.popleft()
        return np.sum([_rows(d, n) for d in self.due_log], axis=0)

    def _expire_orders(self, pane_end: int, pane: Pane) -> None:
        """Orders whose callback deadline passed inside this pane count as missing callbacks."""
        sids = expire_orders(self.pending, pane_end, self.overdue, self.max_overdue_orders)
        if sids is not None:
            pane.ensure_rows(len(self.registry))
            np.add.at(pane.counts[:, COL["missing_callbacks"]], sids, 1)
        if self.late_callbacks:  # their callback came after the deadline: recovered now
            gone = [k for k in self.late_callbacks if k not in self.pending]
            self.late_callbacks.difference_update(gone)
            self.recovered.extend(recover_orders(self.overdue, gone))

    def drain_recovered(self) -> list[str]:
        """Keys of overdue orders whose callback arrived since the last call."""
        out, self.recovered = self.recovered, []
        return out

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
