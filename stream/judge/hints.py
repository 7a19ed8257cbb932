"""Root-cause hints: the dimension values beneath a roll-up series that carry its trouble.

"merchant m_17 has 80 % of the errors but 5 % of the calls": a value whose share
of a weight (errors) is well above its share of the traffic.  A provider-wide
outage spread evenly gives no hint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from models.tails import binom_log10_sf
from stream.windows.registry import Dims, RegistryKey, SeriesRegistry
from stream.windows.state import ClosedWindow

#: A hint names a value only when its share of the trouble is this unlikely (log10 p)
#: were the trouble spread over calls alike: 1000 to 1, the lifecycle's reverse test.
HINT_LOG10_P = -3.0


@dataclass
class FineChildren:
    """A window's active series of the finest level and, per dimension, each one's value
    as a code into a value -> code table (built once per window, shared by every hint)."""

    win: ClosedWindow
    dims: Dims
    sids: np.ndarray
    dim_codes: list[tuple[np.ndarray, dict[str, int]]]

    @classmethod
    def of(cls, win: ClosedWindow, registry: SeriesRegistry, fine_dims: Dims) -> FineChildren:
        volume = win.column("volume")[: len(registry)]
        active = np.flatnonzero(volume > 0)
        fine = active[registry.level_of[active] == registry.level_codes.get(fine_dims, -2)]
        return cls.of_sids(win, registry, fine_dims, fine)

    @classmethod
    def of_sids(
        cls, win: ClosedWindow, registry: SeriesRegistry, fine_dims: Dims, fine: np.ndarray
    ) -> FineChildren:
        """The given series of the finest level (say, those with calls in recent windows)."""
        values = [cast(RegistryKey, registry.keys[c])[1] for c in fine.tolist()]
        dim_codes = []
        for pos in range(len(fine_dims)):
            index: dict[str, int] = {}
            codes = [index.setdefault(v[pos], len(index)) for v in values]
            dim_codes.append((np.array(codes, dtype=np.int64), index))
        return cls(win, fine_dims, fine, dim_codes)

    def beneath(self, key: RegistryKey) -> np.ndarray:
        """Mask of the children beneath the series ``key`` (they hold each of its values)."""
        match = np.ones(self.sids.size, bool)
        for d, value in zip(*key, strict=True):
            codes, index = self.dim_codes[self.dims.index(d)]
            match &= codes == index.get(value, -1)
        return match


def root_cause_hints(
    key: RegistryKey | None,
    fine_dims: Dims,
    fine_children: Callable[[], FineChildren],
    weights: np.ndarray,
    calls: np.ndarray | None = None,
    top: int = 3,
    min_share: float = 0.2,
    min_lift: float = 0.15,
    max_log10_p: float = HINT_LOG10_P,
) -> list[dict[str, Any]]:
    """Dimension values beneath the roll-up series ``key`` that carry far more of
    ``weights`` (e.g. its errors) than of its traffic, largest share first.

    Far more: at least ``min_share`` of the weight, ``min_lift`` above the traffic
    share, and more than chance gives it if the weight fell on calls alike
    (``P(X >= w)``, ``X ~ Binomial(total, traffic share)``, at most ``10^max_log10_p``).
    The first windows of a provider-wide incident hold a few errors, most of them the
    biggest merchant's by its traffic alone (4 of 7 at 35 % of the calls: p = 0.2); a
    hint there would name it the carrier and unmute its alerts under the provider's.
    One merchant's broken keys are 3 of 3 errors at 5 % of the calls (p = 1e-4).

    Looks at the finest level only (``fine_dims``), so each event is counted once;
    ``fine_children`` gives that level's series, built on first need.  ``calls`` (per
    series id; default: the window's volume) is the traffic the weights are shares of,
    for weights summed over several windows.
    """
    if key is None:
        return []
    dims = key[0]
    if dims == fine_dims or not set(dims) <= set(fine_dims):
        return []
    children = fine_children()
    dim_codes = children.dim_codes
    match = children.beneath(key)
    rows = children.sids[match]
    volume = children.win.column("volume") if calls is None else calls
    w_all, v_all = weights[rows].astype(np.float64), volume[rows].astype(np.float64)
    total_w, total_v = float(w_all.sum()), float(v_all.sum())
    if total_w <= 0:
        return []
    hints: list[dict[str, Any]] = []
    for pos, d in enumerate(fine_dims):
        if d in dims:
            continue
        codes, index = dim_codes[pos]
        w_sum = np.bincount(codes[match], weights=w_all, minlength=len(index))
        v_sum = np.bincount(codes[match], weights=v_all, minlength=len(index))
        share = w_sum / total_w
        traffic = v_sum / total_v
        lifted = [
            k
            for k in np.flatnonzero((share >= min_share) & (share - traffic >= min_lift)).tolist()
            if binom_log10_sf(w_sum[k], total_w, traffic[k]) <= max_log10_p
        ]
        names = list(index)
        for k in sorted(lifted, key=names.__getitem__):  # ties: by name
            hints.append({"dimension": d, "value": names[k], "share": round(float(share[k]), 3)})
    hints.sort(key=lambda h: -float(h["share"]))
    return hints[:top]
