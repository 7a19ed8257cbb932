"""Roll-ups: count a batch once per (atom, pane) group, then address the counts to the
atom's series at every level.

Counting runs per group with ``np.bincount`` (one call for every categorical
column at once); each group's non-zero cells then go to its atom's series at
every level, stacked level after level, so the work per event does not grow
with the number of levels.  Several atoms share a coarse series, so the cells
are added into panes with ``np.add.at``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.windows import histogram
from stream.windows.arrays import stack_index, unique
from stream.windows.columns import N_COLS
from stream.windows.panes import Pane


def count_late(
    late_counts: np.ndarray, atom: np.ndarray, atom_sids: list[np.ndarray], late: np.ndarray
) -> None:
    """Add late events to ``late_counts`` of their atom's series at every level."""
    per_atom = np.bincount(atom[late], minlength=atom_sids[0].size)
    hit = np.flatnonzero(per_atom)
    for sids in atom_sids:
        s = sids[hit]
        ok = s >= 0
        np.add.at(late_counts, s[ok], per_atom[hit][ok])


def mark_seen(
    last_seen: np.ndarray, atom: np.ndarray, ts: np.ndarray, atom_sids: list[np.ndarray]
) -> None:
    """Raise ``last_seen`` of every series to the newest event time of its atoms."""
    newest = np.full(atom_sids[0].size, np.iinfo(np.int64).min, np.int64)
    np.maximum.at(newest, atom, ts)
    for sids in atom_sids:
        ok = sids >= 0
        np.maximum.at(last_seen, sids[ok], newest[ok])


@dataclass
class Groups:
    """Events grouped by (atom, pane) key, and their latency buckets per group."""

    key: np.ndarray  # sorted distinct keys: atom * panes + pane index
    of_event: np.ndarray  # group index of each event
    lat_group: np.ndarray | None = None  # per (group, bucket) cell: group index
    lat_bucket: np.ndarray | None = None
    lat_count: np.ndarray | None = None


def group_events(
    gkey: np.ndarray, n_keys: int, bucket: np.ndarray | None, timed: np.ndarray | None = None
) -> Groups:
    """Groups of events by ``gkey`` (in ``[0, n_keys)``), with one sort at most; the
    latency histogram holds the events ``timed`` (default: all).

    >>> g = group_events(np.array([3, 0, 3]), 4, np.array([7, 2, 7]))
    >>> g.key.tolist(), g.of_event.tolist(), g.lat_count.tolist()
    ([0, 3], [1, 0, 1], [1, 2])
    >>> g = group_events(np.array([3, 0, 3]), 4, np.array([7, 2, 5]), np.array([1, 0, 1], bool))
    >>> g.key.tolist(), g.lat_group.tolist(), g.lat_bucket.tolist(), g.lat_count.tolist()
    ([0, 3], [1, 1], [5, 7], [1, 1])
    """
    nb = histogram.N_BUCKETS
    if bucket is not None and n_keys < 2**62 // nb:
        # One sort gives both the (atom, pane) groups and their latency buckets.
        lk, _, linv = unique(gkey * nb + bucket)
        lat_n = _counts(linv, lk.size, timed)
        lat_gk, lat_b = np.divmod(lk, nb)
        new = np.r_[True, lat_gk[1:] != lat_gk[:-1]]
        lat_g = np.cumsum(new) - 1
        cells = lat_n > 0
        return Groups(lat_gk[new], lat_g[linv], lat_g[cells], lat_b[cells], lat_n[cells])
    if bucket is None and n_keys <= 4 * gkey.size + 4096:
        # Few possible groups: mark them in a dense table instead of sorting events.
        seen = np.bincount(gkey, minlength=n_keys) > 0
        return Groups(np.flatnonzero(seen), (np.cumsum(seen) - 1)[gkey])
    group, _, ginv = unique(gkey)
    if bucket is None:
        return Groups(group, ginv)
    lk, _, linv = unique(ginv * nb + bucket)
    lat_g, lat_b = np.divmod(lk, nb)
    lat_n = _counts(linv, lk.size, timed)
    cells = lat_n > 0
    return Groups(group, ginv, lat_g[cells], lat_b[cells], lat_n[cells])


def _counts(inv: np.ndarray, size: int, timed: np.ndarray | None) -> np.ndarray:
    """Events per cell of ``inv``, only those ``timed`` (default: all)."""
    if timed is None:
        return np.bincount(inv, minlength=size)
    return np.bincount(inv[timed], minlength=size)


def group_rows(
    groups: Groups, cats: list[np.ndarray], weighted: dict[int, np.ndarray] | None
) -> np.ndarray:
    """(groups, N_COLS) counts: each array in ``cats`` gives, per event, a column to add
    one to (-1: none); ``weighted`` adds per-event values to a column."""
    g, ginv = len(groups.key), groups.of_event
    # One bincount for every categorical column at once: cell = group * N_COLS + column.
    cells = [ginv[c >= 0] * N_COLS + c[c >= 0] for c in cats]
    flat = np.bincount(np.concatenate(cells), minlength=g * N_COLS) if cells else None
    rows = flat.reshape(g, N_COLS) if flat is not None else np.zeros((g, N_COLS), np.int64)
    for col, w in (weighted or {}).items():
        rows[:, col] += np.bincount(ginv, weights=w, minlength=g).astype(np.int64)
    return rows


@dataclass
class LatencyCells:
    """Latency histogram counts addressed to series (every level), by pane index."""

    to: np.ndarray  # series id of each cell (-1: none)
    key: np.ndarray  # histogram key: series id * N_BUCKETS + bucket
    pane: np.ndarray
    n: np.ndarray


@dataclass
class SeriesCells:
    """A batch's counts addressed to series, every level at once, by pane index."""

    panes: list[int]  # pane indices that have any group
    to: np.ndarray  # flat cell of a pane's counts: series id * N_COLS + column
    pane: np.ndarray
    n: np.ndarray
    lat: LatencyCells | None = None

    def add_into(self, acc: Pane, i: int) -> None:
        """Add the cells of pane index ``i`` into ``acc``."""
        sel = (self.pane == i) & (self.to >= 0)  # -1 * N_COLS + col < 0: no series
        # add.at: several atoms can share one series (coarse levels, __other__).
        np.add.at(acc.counts.reshape(-1), self.to[sel], self.n[sel])
        lat = self.lat
        if lat is not None:
            sel = (lat.pane == i) & (lat.to >= 0)
            # Keys repeat across atoms of one series: consolidate() merges them.
            acc.add_latency(lat.key[sel], lat.n[sel])


def to_series(
    groups: Groups, rows: np.ndarray, atom_sids: list[np.ndarray], n_panes: int
) -> SeriesCells:
    """Address each group's non-zero cells to its atom's series at every level."""
    g = len(groups.key)
    nz = np.flatnonzero(rows)
    cell_g, cell_col, cell_val = nz // N_COLS, nz % N_COLS, rows.reshape(-1)[nz]
    g_atom, g_pi = np.divmod(groups.key, n_panes)
    # Every level at once: the series of each group, stacked level after level.
    g_sid = np.concatenate([sids[g_atom] for sids in atom_sids])
    n_lv = len(atom_sids)
    out = SeriesCells(
        np.flatnonzero(np.bincount(g_pi, minlength=n_panes)).tolist(),
        g_sid[stack_index(cell_g, g, n_lv)] * N_COLS + np.tile(cell_col, n_lv),
        np.tile(g_pi[cell_g], n_lv),
        np.tile(cell_val, n_lv),
    )
    lat_g, lat_b, lat_n = groups.lat_group, groups.lat_bucket, groups.lat_count
    if lat_g is not None and lat_b is not None and lat_n is not None:
        lat_to = g_sid[stack_index(lat_g, g, n_lv)]
        out.lat = LatencyCells(
            lat_to,
            lat_to * histogram.N_BUCKETS + np.tile(lat_b, n_lv),
            np.tile(g_pi[lat_g], n_lv),
            np.tile(lat_n, n_lv),
        )
    return out


def rollup(
    atom: np.ndarray,
    atom_sids: list[np.ndarray],
    ts: np.ndarray,
    hop_ms: int,
    cats: list[np.ndarray],
    weighted: dict[int, np.ndarray] | None,
    bucket: np.ndarray | None,
    timed: np.ndarray | None = None,
) -> tuple[int, SeriesCells]:
    """Count events (all on time) per (atom, pane) and address the counts to series;
    returns the first pane's start and the cells, by pane index from there.  The
    latency histograms hold the events ``timed`` (default: all)."""
    pane_of = ts - np.mod(ts, hop_ms)
    p0 = int(pane_of.min())
    pi = (pane_of - p0) // hop_ms
    n_p = int(pi.max()) + 1
    groups = group_events(atom * n_p + pi, atom_sids[0].size * n_p, bucket, timed)
    return p0, to_series(groups, group_rows(groups, cats, weighted), atom_sids, n_p)
