"""A rule that also judges parent series on their children's pooled evidence.

Latency is judged per operation: each operation has its own normal, and a series of
several (a provider's calls, a merchant's) has none, the normal of a mix moving with
the mix.  A merchant whose every call slows down then spreads its evidence over five or
six series of a call or two a window each, each needing minutes to be sure, where the
merchant's calls together are conclusive in seconds.  :class:`PoolingRule` judges the
operation series as :class:`~stream.judge.rules.DetectorRule` does, then adds each
ready child's window evidence (its bank's LLR per alternative, against the child's own
normal) into its parent (``[provider, operation, merchant_id]`` into ``[provider,
merchant_id]``, ``[provider, operation]`` into ``[provider]``) and runs one CUSUM per
parent on the sums (:class:`models.sequential.PooledBank`): the joint LLR of the
parent's calls, against the threshold the same budget gives every series.  Children
still warming up add nothing; a window in which no child has calls is no evidence
either way; a change in the mix of operations is no evidence at all."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.bank import Bank
from models.base import Detector
from models.sequential import PooledBank, PooledParams
from stream.judge.features import JudgedWindow
from stream.judge.judgement import Judgement
from stream.judge.rules import DetectorRule, restart_evidence
from stream.windows.registry import Dims, RegistryKey, SeriesRegistry

#: Memory of a pooled series' recent evidence for attribution (``PoolingRule._hints``).
CARRY_HALFLIFE_S = 120.0


def pool_pairs(levels: list[Dims], pooled: list[Dims]) -> list[tuple[Dims, Dims]]:
    """(child, parent) level pairs: each level of ``pooled`` without ``operation`` under
    the level of ``levels`` that adds ``operation`` to it.

    >>> lv = [("provider",), ("provider", "operation"), ("provider", "operation", "merchant_id")]
    >>> pool_pairs(lv, [("provider",), ("provider", "merchant_id")])[1]
    (('provider', 'operation', 'merchant_id'), ('provider', 'merchant_id'))
    """
    return [
        (child, parent)
        for parent in pooled
        for child in levels
        if "operation" not in parent and set(child) == {*parent, "operation"}
    ]


class ParentIndex:
    """Series ids of one child level -> their parents' ids, cached per child while its
    registry key is the same object (ids of evicted series are reused with a new key).

    >>> reg = SeriesRegistry()
    >>> kid = int(reg.ids_of(("provider", "operation"), ["alipay\\x1frefund"])[0])
    >>> mom = int(reg.ids_of(("provider",), ["alipay"])[0])
    >>> index = ParentIndex(("provider", "operation"), ("provider",))
    >>> index.of(reg, np.array([kid])).tolist() == [mom]
    True
    """

    def __init__(self, child: Dims, parent: Dims) -> None:
        self.child, self.parent = child, parent
        self.pick = [child.index(d) for d in parent]
        self.cache: dict[int, tuple[RegistryKey | None, int]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"child": self.child, "parent": self.parent, "pick": self.pick, "cache": {}}

    def of(self, registry: SeriesRegistry, sids: np.ndarray) -> np.ndarray:
        """The parent id of each child in ``sids`` (-1: the parent is not a series)."""
        keys, index, cache = registry.keys, registry.index, self.cache
        out = np.empty(sids.size, np.int64)
        for i, sid in enumerate(sids.tolist()):
            key = keys[sid]
            hit = cache.get(sid)
            if hit is None or hit[0] is not key:
                parent = -1
                if key is not None:
                    values = key[1]
                    parent = index.get((self.parent, tuple(values[j] for j in self.pick)), -1)
                hit = cache[sid] = (key, parent)
            out[i] = hit[1]
        return out


class PoolingRule(DetectorRule):
    """A :class:`~stream.judge.rules.DetectorRule` (with a sequential bank) that also
    judges the parents of ``pairs`` on their children's pooled evidence."""

    def __init__(self, *args: Any, pairs: list[tuple[Dims, Dims]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        params = self.bank.params  # type: ignore[union-attr]
        self.pooled = PooledBank(PooledParams(ratios=params.ratios, h=params.threshold))
        self.parents = [ParentIndex(child, parent) for child, parent in pairs]
        self.pooled_levels = {parent for _, parent in pairs}
        self._last: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_last", None)  # one window's evidence: transient
        return state

    def _scored(self, candidates: np.ndarray) -> None:
        bank = self.bank  # None: per-series detectors, which are not pooled
        self._last = None if bank is None else (candidates, bank._step)  # type: ignore[attr-defined]

    def level_banks(self) -> list[tuple[set[Dims], Bank | None]]:
        return [*super().level_banks(), (self.pooled_levels, self.pooled)]

    def ready_detector(self, sid: int) -> Detector | None:
        """As :meth:`DetectorRule.ready_detector`; a pooled series' is its pooled CUSUM's."""
        if sid < self.pooled.capacity and self.pooled.n[sid] > 0:
            return self.pooled.detector(sid)
        return super().ready_detector(sid)

    def restart_beneath(
        self, series: dict[str, str], registry: SeriesRegistry, keep: set[str]
    ) -> None:
        super().restart_beneath(series, registry, keep)
        restart_evidence(self.pooled, series, registry, keep, self.fp)

    def restart_series(self, sid: int) -> None:
        super().restart_series(sid)
        self.pooled.restart(np.array([sid], np.int64))

    def forget(self, sids: np.ndarray) -> None:
        super().forget(sids)
        self.pooled.forget(sids)
        recent = self._recent()
        recent[sids[sids < recent.size]] = 0.0
        for index in self.parents:
            for sid in sids.tolist():
                index.cache.pop(sid, None)

    def judge(self, window: JudgedWindow, active: set[str]) -> list[Judgement]:
        reg = window.registry
        codes = [reg.level_codes.get(p.parent, -2) for p in self.parents]
        # Open parents are judged here only: the operations' bank has no normal of a mix
        # (judged there too, a parent would also be reported quiet every window).
        mine = {fp: self.sid_of_fp[fp] for fp in active if fp in self.sid_of_fp}
        parent_fps = {fp for fp, sid in mine.items() if reg.level_of[sid] in codes}
        out = super().judge(window, active - parent_fps if parent_fps else active)
        parents, x = self._pool(window)
        open_parents = np.array(sorted(mine[fp] for fp in parent_fps), np.int64)
        if open_parents.size:  # the lifecycle must see an open parent go quiet
            missing = np.setdiff1d(open_parents, parents)
            quiet = {k: np.zeros(missing.size) for k in self.pooled.keys}
            quiet["expected"] = self.pooled.expected_many(missing)
            parents = np.r_[parents, missing]
            x = {k: np.r_[x.get(k, np.zeros(0)), quiet[k]] for k in quiet if k != "window_s"}
        if not parents.size:
            return out
        scores = self.pooled.score_learn_many(parents, x)
        self._remember(window, parents, x.get("evidence_0", np.zeros(parents.size)))
        report = (scores >= self.threshold) | np.isin(parents, open_parents)
        self._report_bank(window, self.pooled, parents, scores, report, active, out)
        return out

    def _remember(self, window: JudgedWindow, parents: np.ndarray, evidence: np.ndarray) -> None:
        """Each pooled series' recent evidence of its mildest alternative (decayed with
        ``CARRY_HALFLIFE_S``): who carries a broader series' alarm (``_hints``)."""
        n = window.features["volume"].size
        recent = self._recent()
        if recent.size < n:
            recent = np.r_[recent, np.zeros(n - recent.size)]
        recent *= 0.5 ** (self.window_s / CARRY_HALFLIFE_S)
        recent[parents] += evidence
        self.recent = recent

    def _recent(self) -> np.ndarray:
        """The recent evidence per series id (empty in a checkpoint from before it)."""
        return getattr(self, "recent", np.zeros(0))

    def _hints(self, window: JudgedWindow, sid: int) -> list[dict[str, Any]]:
        """A pooled series above another pooled level (a provider above its merchants):
        the one series beneath, itself in alarm, whose recent evidence of a slowdown is
        positive while the others', summed, is not: without it there would be no case,
        so it carries the alarm (its share: of the positive evidence).  A provider-wide
        slowdown gives every merchant positive evidence (each in proportion to its
        calls), so no hint; the biggest merchant slowing alone is named however large
        its share of calls."""
        recent = self._recent()
        reg = window.registry
        key = reg.keys[sid]
        if key is None or not any(set(key[0]) < set(lv) for lv in self.pooled_levels):
            return super()._hints(window, sid)
        kids = reg.beneath(reg.labels(sid), np.flatnonzero(recent))
        if kids.size == 0:
            return []
        ev = recent[kids]
        top = int(np.argmax(ev))
        carrier = int(kids[top])
        alarmed = carrier < self.pooled.capacity and self.pooled.alarm[carrier] > 0
        if not alarmed or ev[top] <= 0 or ev.sum() - ev[top] > 0:
            return []
        labels = reg.labels(carrier)
        finer = [d for d in labels if d not in key[0]]
        if len(finer) != 1:
            return []
        dim = finer[0]
        share = float(ev[top] / ev[ev > 0].sum())
        return [{"dimension": dim, "value": labels[dim], "share": round(share, 3)}]

    def _pool(self, window: JudgedWindow) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The parents with evidence this window and their ``PooledBank`` columns: the
        summed evidence rows of their ready children with calls, and the median their
        calls were expected to have (the children's normal medians, geometric mean
        weighted by calls)."""
        bank: Any = self.bank
        reg, last = window.registry, self._last
        self._last = None
        if bank is None or last is None or not last[0].size:
            return np.zeros(0, np.int64), {}
        cands, step = last
        rows = len(self.pooled.params.ratios)
        calls = window.features[bank.params.volume_key]  # calls with a latency
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        for index in self.parents:
            code = reg.level_codes.get(index.child, -2)
            sel = np.flatnonzero((reg.level_of[cands] == code) & (calls[cands] > 0))
            sel = sel[bank.ready(cands[sel])]
            par = index.of(reg, cands[sel])
            parts.append((par[par >= 0], sel[par >= 0]))
        par = np.concatenate([p for p, _ in parts])
        sel = np.concatenate([s for _, s in parts])
        if not par.size:
            return np.zeros(0, np.int64), {}
        parents, inv = np.unique(par, return_inverse=True)
        x = {
            f"evidence_{r}": np.bincount(inv, weights=step[r, sel], minlength=parents.size)
            for r in range(rows)
        }
        w = calls[cands[sel]]
        log_mu = np.log(np.maximum(bank.expected_many(cands[sel]), 1e-9))
        num = np.bincount(inv, weights=w * log_mu, minlength=parents.size)
        x["expected"] = np.exp(num / np.bincount(inv, weights=w, minlength=parents.size))
        return parents, x
