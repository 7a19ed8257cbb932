"""Rules whose root-cause hints weigh the evidence of the whole alarm, not one window.

A hint names a value beneath a series that carries far more of its trouble than of its
calls, beyond chance (:func:`stream.judge.hints.root_cause_hints`: ``P <= 10^-3``).  One
window's few bad calls are seldom proof: a merchant whose keys broke at one call in 20
seconds is 1 of 2 config errors of its provider in the window the provider fires, where
it is 6 of 7 over the minutes the provider's evidence built up in; a merchant three times
slower is 3 of 3 slow calls at 30 % of the calls (p = 0.03), 9 of 9 over three windows
(p = 2e-5).  A hint that misses lets the broader alert page beside the child's.

:class:`CarryRule` keeps, per broader series, its children's weights (their bad calls)
and calls summed over the windows its evidence comes from: while its CUSUM is at least
``suspect * h`` (the windows its baseline refuses to learn from, because they may be an
incident's) or in alarm; when it falls back the sums are dropped.  Its hints test those
sums.  A provider-wide incident spreads the trouble over the children by their traffic:
more windows only make that surer, and no hint names one.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from stream.judge.features import JudgedWindow
from stream.judge.hints import FineChildren, root_cause_hints
from stream.judge.judgement import Judgement
from stream.judge.rules import DetectorRule
from stream.windows.registry import SeriesRegistry

#: Per broader series id: its children's ids, their weights and their calls, summed over
#: the windows of its evidence.
Carried = tuple[np.ndarray, np.ndarray, np.ndarray]


class CarryRule(DetectorRule):
    """A :class:`~stream.judge.rules.DetectorRule` (sequential detectors, banked or one
    per series) whose hints weigh its children across a broader series' evidence."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.carried: dict[int, Carried] = {}
        self._window: JudgedWindow | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_window"] = None  # the window being judged: transient
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"carried": {}, **state})  # a checkpoint from before it

    def judge(self, window: JudgedWindow, active: set[str]) -> list[Judgement]:
        self._window = window
        try:
            return super().judge(window, active)
        finally:
            self._window = None

    def forget(self, sids: np.ndarray) -> None:
        super().forget(sids)
        for sid in sids.tolist():
            self.carried.pop(sid, None)
        for parent, (ids, weight, calls) in list(self.carried.items()):
            kept = ~np.isin(ids, sids)  # an evicted child's id will name another series
            if not kept.all():
                self.carried[parent] = (ids[kept], weight[kept], calls[kept])

    def restart_series(self, sid: int) -> None:
        super().restart_series(sid)
        self.carried.pop(sid, None)

    def restart_beneath(
        self, series: dict[str, str], registry: SeriesRegistry, keep: set[str]
    ) -> None:
        super().restart_beneath(series, registry, keep)
        sids = np.fromiter(self.carried, np.int64, len(self.carried))
        for sid in sids[~self._hot(sids, 0.0)].tolist():  # their evidence restarted
            del self.carried[sid]

    def _scored(self, candidates: np.ndarray) -> None:
        """After every series was judged this window, before any report: add the window
        to the sums of the broader series whose CUSUM is suspect or in alarm, drop the
        sums of those back below."""
        window = self._window
        if window is None:
            return
        reg = window.registry
        coarse = candidates[reg.level_of[candidates] != reg.level_codes.get(window.fine_dims, -2)]
        if not coarse.size:
            return
        hot = self._hot(coarse)
        for sid in coarse[~hot].tolist():
            self.carried.pop(sid, None)
        for sid in coarse[hot].tolist():
            self._carry(window, sid)

    def _hot(self, sids: np.ndarray, suspect: float | None = None) -> np.ndarray:
        """Per series of ``sids``, whether its CUSUM is above ``suspect * h`` (default: its
        detector's ``suspect``; 0: any evidence) or in alarm.  A detector without a
        sequential test (a river model) never is: its hints are one window's."""
        bank = cast(Any, self.bank)
        if bank is not None:
            return _hot_slots(bank, sids, suspect)
        out = np.zeros(sids.size, bool)
        for i, sid in enumerate(sids.tolist()):
            one = getattr(self.models.get(sid), "bank", None)
            if one is not None and hasattr(one, "alarm"):
                out[i] = bool(_hot_slots(one, np.zeros(1, np.int64), suspect)[0])
        return out

    def _carry(self, window: JudgedWindow, sid: int) -> None:
        key = window.registry.keys[sid]
        if key is None:
            return
        children = window.fine_children()
        kids = children.sids[children.beneath(key)]
        weighed = self._weigh(window, sid, kids)
        if weighed is None:  # no evidence either way this window
            return
        weight, calls = weighed
        old = self.carried.get(sid)
        if old is not None:
            kids, weight, calls = (
                np.r_[a, b] for a, b in zip(old, (kids, weight, calls), strict=True)
            )
        ids, inv = np.unique(kids, return_inverse=True)
        self.carried[sid] = (
            ids,
            np.bincount(inv, weights=weight, minlength=ids.size),
            np.bincount(inv, weights=calls, minlength=ids.size),
        )

    def _weigh(
        self, window: JudgedWindow, sid: int, kids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """This window's weight of each child of ``sid`` (its bad calls, ``hints_from``)
        and its calls; None: the window is no evidence for ``sid``'s hints."""
        if self.hints_from is None:
            return None
        f = window.features
        return f[self.hints_from][kids].astype(np.float64), f["volume"][kids].astype(np.float64)

    def _hints(self, window: JudgedWindow, sid: int) -> list[dict[str, Any]]:
        carried = self.carried.get(sid)
        if carried is None:
            return super()._hints(window, sid)
        ids, weight, calls = carried
        n = max(len(window.registry), int(ids.max(initial=-1)) + 1)
        weights, traffic = np.zeros(n), np.zeros(n)
        weights[ids], traffic[ids] = weight, calls
        children = FineChildren.of_sids(window.win, window.registry, window.fine_dims, ids)
        key = window.registry.keys[sid]
        return root_cause_hints(key, window.fine_dims, lambda: children, weights, traffic)


def _hot_slots(bank: Any, slots: np.ndarray, suspect: float | None) -> np.ndarray:
    """:meth:`CarryRule._hot` of a sequential bank's ``slots``."""
    p = bank.params
    inside = slots < bank.capacity
    s = np.where(inside, slots, 0)
    line = (p.suspect if suspect is None else suspect) * p.threshold
    top = bank.s[:, s].max(axis=0)
    above = top >= line if line > 0 else top > 0
    return (above | (bank.alarm[s] > 0)) & inside
