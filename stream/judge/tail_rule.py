"""The latency-tail rule, whose root-cause hints weigh the evidence of the whole alarm.

A merchant whose every call gets three times slower raises its operation's and its
provider's tail share: its calls land over *their* 4x line (its own median moved with
it, so few of them are over its own).  Two things kept the hints of such a parent from
naming the merchant: the children were weighed by their calls over their own lines, and
one window's few slow calls are no proof (3 of 3 from a merchant with 30 % of the
calls: p = 0.03 against the 10^-3 a hint needs).

:class:`TailRule` weighs each child by its calls over the parent's line, and sums them
over the windows the parent's evidence comes from: while the parent's CUSUM is at
least ``suspect * h`` (the windows its baseline refuses to learn from, because they may
be an incident's) or in alarm.  When the CUSUM falls back the sums are dropped.  Three
windows of 3 of 3 make 9 of 9 (p = 2e-5), so the parent's alert names the merchant from
its first record, and the dispatcher folds it into the merchant's latency alert
(:mod:`stream.alerting.inhibit`).  A provider-wide slowdown spreads the slow calls over
the children by their traffic: no hint, the provider pages.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from stream.judge.features import JudgedWindow, calls_over, tail_line
from stream.judge.hints import FineChildren, root_cause_hints
from stream.judge.judgement import Judgement
from stream.judge.rules import DetectorRule
from stream.windows.registry import SeriesRegistry

#: Per parent series id: its children's ids, their calls over the parent's line, and
#: their calls, summed over the windows of the parent's evidence.
Carried = tuple[np.ndarray, np.ndarray, np.ndarray]


class TailRule(DetectorRule):
    """A :class:`~stream.judge.rules.DetectorRule` on the tail share (a sequential rate
    bank) whose hints weigh children over the parent's line, across its evidence."""

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
        for parent, (ids, slow, calls) in list(self.carried.items()):
            kept = ~np.isin(ids, sids)  # an evicted child's id will name another series
            if not kept.all():
                self.carried[parent] = (ids[kept], slow[kept], calls[kept])

    def restart_series(self, sid: int) -> None:
        super().restart_series(sid)
        self.carried.pop(sid, None)

    def restart_beneath(
        self, series: dict[str, str], registry: SeriesRegistry, keep: set[str]
    ) -> None:
        super().restart_beneath(series, registry, keep)
        bank: Any = self.bank
        for sid in list(self.carried):
            if sid >= bank.capacity or bank.s[:, sid].max() <= 0:
                del self.carried[sid]

    def _scored(self, candidates: np.ndarray) -> None:
        """After the bank judged this window: add it to the sums of the parents whose
        CUSUM is suspect or in alarm, drop the sums of those back below."""
        window, bank = self._window, cast(Any, self.bank)
        if window is None or bank is None:
            return
        reg = window.registry
        coarse = candidates[reg.level_of[candidates] != reg.level_codes.get(window.fine_dims, -2)]
        if not coarse.size:
            return
        p: Any = bank.params
        hot = (bank.s[:, coarse].max(axis=0) >= p.suspect * p.threshold) | (bank.alarm[coarse] > 0)
        for sid in coarse[~hot].tolist():
            self.carried.pop(sid, None)
        for sid in coarse[hot].tolist():
            self._carry(window, sid)

    def _carry(self, window: JudgedWindow, sid: int) -> None:
        line = tail_line(window.win, sid)
        key = window.registry.keys[sid]
        if line is None or key is None:  # too few calls for a line: no evidence either way
            return
        children = window.fine_children()
        kids = children.sids[children.beneath(key)]
        slow = calls_over(window.win, kids, line).astype(np.float64)
        calls = window.features["timed_calls"][kids].astype(np.float64)
        old = self.carried.get(sid)
        if old is not None:
            kids, slow, calls = (np.r_[a, b] for a, b in zip(old, (kids, slow, calls), strict=True))
        ids, inv = np.unique(kids, return_inverse=True)
        self.carried[sid] = (
            ids,
            np.bincount(inv, weights=slow, minlength=ids.size),
            np.bincount(inv, weights=calls, minlength=ids.size),
        )

    def _hints(self, window: JudgedWindow, sid: int) -> list[dict[str, Any]]:
        carried = self.carried.get(sid)
        if carried is None:
            return super()._hints(window, sid)
        ids, slow, calls = carried
        n = max(len(window.registry), int(ids.max(initial=-1)) + 1)
        weights, traffic = np.zeros(n), np.zeros(n)
        weights[ids], traffic[ids] = slow, calls
        children = FineChildren.of_sids(window.win, window.registry, window.fine_dims, ids)
        key = window.registry.keys[sid]
        return root_cause_hints(key, window.fine_dims, lambda: children, weights, traffic)
