"""Event-time tumbling windows per series, aggregated with numpy.

Every ``provider_call`` feeds every configured level (roll-ups): with the default
levels one call counts for ``{provider}``, ``{provider, operation}`` and
``{provider, operation, merchant_id}``.  A batch is grouped by (window, series)
with ``np.unique`` and counted with ``np.bincount``; Python loops run over the
distinct series of a batch, never over its events.

A window ``[start, start + size)`` closes when the watermark — the newest event
time seen minus the allowed lateness — passes its end.  An event whose window
has already closed is *late*: it is counted per series, never silently dropped.
Lateness is judged against the watermark as it stood *before* the event in
stream order, so the same stream gives the same windows whatever the batching
(live ``getmany`` batches or file chunks).

All state lives in :class:`WindowState`, a plain object that pickles, so it can
be checkpointed and restored when a partition moves to another worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stream import histogram
from stream.events import ERROR_CLASSES, OUTCOMES, CallColumns

# Columns of the per-window, per-series counter matrix.
CALL_COLUMNS: tuple[str, ...] = (
    "volume",
    *OUTCOMES,
    *(f"err_{c}" for c in ERROR_CLASSES),
    "err_unclassified",
    "amount_minor",
)
COL = {name: i for i, name in enumerate(CALL_COLUMNS)}
N_COLS = len(CALL_COLUMNS)
_OUTCOME0 = COL[OUTCOMES[0]]
_ERR0 = COL[f"err_{ERROR_CLASSES[0]}"]
_N_ERR = len(ERROR_CLASSES)
_FAILURE = OUTCOMES.index("failure")
_UNKNOWN = OUTCOMES.index("unknown")
LATENCY_QUANTILES = (0.5, 0.95, 0.99)

SeriesKey = tuple[int, tuple[str, ...]]  # (level index, dimension values)


@dataclass
class SeriesRegistry:
    """Stable integer ids for series, so counters can live in dense arrays."""

    levels: list[tuple[str, ...]]
    keys: list[SeriesKey] = field(default_factory=list)
    index: dict[SeriesKey, int] = field(default_factory=dict)

    def id_of(self, key: SeriesKey) -> int:
        sid = self.index.get(key)
        if sid is None:
            sid = len(self.keys)
            self.index[key] = sid
            self.keys.append(key)
        return sid

    def labels(self, sid: int) -> dict[str, str]:
        level, values = self.keys[sid]
        return dict(zip(self.levels[level], values, strict=True))

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class _OpenWindow:
    counts: np.ndarray  # (rows, N_COLS) int64, rows grow with the registry
    lat_keys: list[np.ndarray] = field(default_factory=list)
    lat_counts: list[np.ndarray] = field(default_factory=list)
    pending_lat: int = 0

    def ensure_rows(self, n: int) -> None:
        if self.counts.shape[0] < n:
            grown = np.zeros((max(n, 2 * self.counts.shape[0]), N_COLS), dtype=np.int64)
            grown[: self.counts.shape[0]] = self.counts
            self.counts = grown

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


@dataclass
class ClosedWindow:
    """One closed window: counters and latency quantiles for every known series."""

    start_ms: int
    end_ms: int
    counts: np.ndarray  # (n_series, N_COLS) int64; row = series id
    latency: np.ndarray  # (n_series, 3) p50/p95/p99 in ms, NaN without calls
    late: np.ndarray  # (n_series,) late events attributed to this window's series so far

    def column(self, name: str) -> np.ndarray:
        return self.counts[:, COL[name]]


@dataclass
class WindowState:
    """Open windows, the watermark and late-event counters: everything the window stage keeps."""

    size_ms: int
    lateness_ms: int
    levels: list[tuple[str, ...]]
    registry: SeriesRegistry = field(init=False)
    open: dict[int, _OpenWindow] = field(default_factory=dict)
    max_ts: int | None = None
    # Lower bound for the watermark set from outside (idle streams in live mode).
    forced_watermark: int | None = None
    # End of the newest closed window: nothing before it can be added any more.
    closed_until: int | None = None
    late_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    late_total: int = 0

    def __post_init__(self) -> None:
        self.registry = SeriesRegistry(self.levels)

    @classmethod
    def create(cls, size_s: float, lateness_s: float, levels: list[list[str]]) -> WindowState:
        return cls(int(size_s * 1000), int(lateness_s * 1000), [tuple(lv) for lv in levels])

    @property
    def watermark(self) -> int | None:
        wm = None if self.max_ts is None else self.max_ts - self.lateness_ms
        if self.forced_watermark is not None:
            wm = self.forced_watermark if wm is None else max(wm, self.forced_watermark)
        return wm

    # -- adding ---------------------------------------------------------------

    def _watermark_before_each(self, ts: np.ndarray, seq: np.ndarray | None) -> np.ndarray:
        """Watermark as it stood just before each event, in stream order."""
        order = np.argsort(seq, kind="stable") if seq is not None and len(seq) == len(ts) else None
        t = ts if order is None else ts[order]
        prior = np.iinfo(np.int64).min // 2 if self.max_ts is None else self.max_ts
        running = np.maximum.accumulate(np.r_[prior, t[:-1]]) if len(t) else t
        wm = np.maximum(running, prior) - self.lateness_ms
        if self.forced_watermark is not None:
            wm = np.maximum(wm, self.forced_watermark)
        if order is not None:
            unsorted = np.empty_like(wm)
            unsorted[order] = wm
            wm = unsorted
        return wm

    def _series_ids(self, calls: CallColumns, strings: list[str]) -> list[np.ndarray]:
        """Per level, the series id of every call (vectorised except per distinct series)."""
        cols = {
            "provider": calls.provider,
            "operation": calls.operation,
            "merchant_id": calls.merchant_id,
        }
        base = np.int64(len(strings) + 1)
        out = []
        for li, dims in enumerate(self.levels):
            key = np.zeros(len(calls), dtype=np.int64)
            for d in dims:
                key = key * base + (cols[d].astype(np.int64) + 1)
            uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
            sids = np.empty(len(uniq), dtype=np.int64)
            for j, i in enumerate(first):
                values = tuple(strings[int(cols[d][i])] for d in dims)
                sids[j] = self.registry.id_of((li, values))
            out.append(sids[inv.reshape(-1)])
        if self.late_counts.shape[0] < len(self.registry):
            self.late_counts = np.r_[
                self.late_counts, np.zeros(len(self.registry) - self.late_counts.shape[0], np.int64)
            ]
        return out

    def add_calls(
        self, calls: CallColumns, strings: list[str], seq: np.ndarray | None = None
    ) -> int:
        """Add a batch of calls; returns how many were late (and counted, not windowed)."""
        n = len(calls)
        if n == 0:
            return 0
        ts = calls.ts
        wstart = ts - np.mod(ts, self.size_ms)
        wm_before = self._watermark_before_each(ts, seq)
        late = wstart + self.size_ms <= wm_before
        if self.closed_until is not None:
            late |= wstart < self.closed_until
        sid_levels = self._series_ids(calls, strings)
        n_late = int(late.sum())
        if n_late:
            for sids in sid_levels:
                np.add.at(self.late_counts, sids[late], 1)
            self.late_total += n_late
        self.max_ts = max(int(ts.max()), self.max_ts if self.max_ts is not None else int(ts.min()))
        keep = ~late
        if not keep.any():
            return n_late

        n_levels = len(sid_levels)
        sid = np.concatenate([s[keep] for s in sid_levels])
        ws = np.tile(wstart[keep], n_levels)
        outcome = np.tile(calls.outcome[keep].astype(np.int64), n_levels)
        err = np.tile(calls.error_class[keep].astype(np.int64), n_levels)
        amount = np.tile(calls.amount_minor[keep], n_levels)
        bucket = np.tile(histogram.bucket_of(calls.latency_ms[keep]), n_levels)

        w0 = int(ws.min())
        wi = (ws - w0) // self.size_ms
        n_w = int(wi.max()) + 1
        group, ginv = np.unique(sid * n_w + wi, return_inverse=True)
        ginv = ginv.reshape(-1)
        g = len(group)
        rows = np.zeros((g, N_COLS), dtype=np.int64)
        rows[:, COL["volume"]] = np.bincount(ginv, minlength=g)
        rows[:, _OUTCOME0 : _OUTCOME0 + len(OUTCOMES)] = np.bincount(
            ginv * len(OUTCOMES) + outcome, minlength=g * len(OUTCOMES)
        ).reshape(g, len(OUTCOMES))
        has_err = err >= 0
        rows[:, _ERR0 : _ERR0 + _N_ERR] = np.bincount(
            ginv[has_err] * _N_ERR + err[has_err], minlength=g * _N_ERR
        ).reshape(g, _N_ERR)
        unclassified = ~has_err & ((outcome == _FAILURE) | (outcome == _UNKNOWN))
        rows[:, COL["err_unclassified"]] = np.bincount(ginv[unclassified], minlength=g)
        rows[:, COL["amount_minor"]] = np.bincount(ginv, weights=amount, minlength=g).astype(
            np.int64
        )

        g_sid = group // n_w
        g_w = w0 + (group % n_w) * self.size_ms
        lat_key = sid * histogram.N_BUCKETS + bucket
        ev_w = w0 + wi * self.size_ms
        n_series = len(self.registry)
        for w in np.unique(g_w):
            win = self.open.get(int(w))
            if win is None:
                win = _OpenWindow(np.zeros((n_series, N_COLS), dtype=np.int64))
                self.open[int(w)] = win
            win.ensure_rows(n_series)
            sel = g_w == w
            win.counts[g_sid[sel]] += rows[sel]
            k, c = histogram.consolidate(
                lat_key[ev_w == w], np.ones(int((ev_w == w).sum()), np.int64)
            )
            win.add_latency(k, c)
        return n_late

    # -- closing --------------------------------------------------------------

    def advance_to(self, watermark_ms: int) -> None:
        """Force the watermark forward (idle stream in live mode, or end of input)."""
        if self.forced_watermark is None or watermark_ms > self.forced_watermark:
            self.forced_watermark = watermark_ms

    def close_ready(self) -> list[ClosedWindow]:
        """Close, in order, every open window the watermark has passed."""
        wm = self.watermark
        if wm is None:
            return []
        ready = sorted(w for w in self.open if w + self.size_ms <= wm)
        # Windows with no event at all between closed ones still close (traffic stop),
        # so detectors see the zero-volume windows.
        if ready or (self.closed_until is not None and self.closed_until + self.size_ms <= wm):
            first = self.closed_until if self.closed_until is not None else ready[0]
            last_end = wm - np.mod(wm, self.size_ms)
            starts = range(first, last_end, self.size_ms)
        else:
            starts = range(0)
        closed = [self._close(s) for s in starts]
        return closed

    def flush(self) -> list[ClosedWindow]:
        """Close every open window (end of offline input)."""
        if not self.open:
            return []
        last = max(self.open) + self.size_ms
        self.advance_to(last + self.lateness_ms)
        return self.close_ready()

    def _close(self, start: int) -> ClosedWindow:
        n = len(self.registry)
        win = self.open.pop(start, None)
        if win is None:
            counts = np.zeros((n, N_COLS), dtype=np.int64)
            latency = np.full((n, len(LATENCY_QUANTILES)), np.nan)
        else:
            win.ensure_rows(n)
            counts = win.counts[:n]
            keys, cnt = win.consolidate()
            latency = histogram.quantiles(keys, cnt, np.arange(n), LATENCY_QUANTILES)
        self.closed_until = start + self.size_ms
        late = (
            self.late_counts[:n].copy()
            if self.late_counts.shape[0] >= n
            else np.r_[self.late_counts, np.zeros(n - self.late_counts.shape[0], np.int64)]
        )
        return ClosedWindow(start, start + self.size_ms, counts, latency, late)
