"""Numenta Anomaly Benchmark scoring of per-row anomaly scores.

Faithful to NAB v1.1 (``nab/sweeper.py``): every row gets a *sweep score*
(what a detection at that row would earn), rows of the probationary period are
dropped, and a single threshold is swept over the whole corpus.  Within one
window only the best (= earliest) detection counts; a window never detected
costs ``A_FN``; every detection outside a window costs up to ``A_FP``, less
when it lies just after a window.  Totals are normalised so that the null
detector (never fires) scores 0 and the perfect one (fires at each window
start) scores 100.

>>> f = NabFile("f", np.array([0.0, 0, 0, 0, 1, 0, 0, 0, 0, 0]), [(4, 7)], probation=0)
>>> r = score_corpus([f], PROFILES["standard"])
>>> round(r.raw, 6), round(r.normalised, 1)
(1.0, 100.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Profile:
    """Weights of one NAB application profile."""

    name: str
    a_tp: float
    a_fp: float
    a_fn: float


# Weights as published with NAB (scoreboard_about.json).
PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", 1.0, 0.11, 1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
}


def scaled_sigmoid(y: float) -> float:
    """NAB's ``scaledSigmoid``: reward of a detection at relative position ``y``.

    ``y = -1`` is a window's left edge, ``0`` its right edge, ``> 0`` past it.

    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(3.0)
    (0.98661, 0.0, -1.0)
    """
    if y >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def probationary_length(n_rows: int, percent: float = 0.15) -> int:
    """Rows at the start of a file that NAB does not score: min(15 %, 750).

    >>> probationary_length(4032), probationary_length(1000)
    (604, 150)
    """
    return int(min(math.floor(percent * n_rows), percent * 5000))


@dataclass(slots=True)
class NabFile:
    """One scored series: per-row anomaly scores and its windows as inclusive row indices."""

    name: str
    scores: np.ndarray
    windows: list[tuple[int, int]]
    probation: int | None = None  # None: NAB's default min(15 %, 750)

    def __post_init__(self) -> None:
        if self.probation is None:
            self.probation = probationary_length(len(self.scores))


def windows_to_indices(
    timestamps: Sequence[str], windows: Sequence[Sequence[str]]
) -> list[tuple[int, int]]:
    """Map NAB window limits (``"2014-04-10 07:15:00.000000"``) to inclusive row indices.

    Timestamps are compared as times, so ``"2014-04-10 07:15:00"`` matches too.

    >>> windows_to_indices(["2014-01-01 00:00:00", "2014-01-01 00:05:00", "2014-01-01 00:10:00"],
    ...                    [["2014-01-01 00:05:00.000000", "2014-01-01 00:10:00.000000"]])
    [(1, 2)]
    """
    from datetime import datetime

    def parse(s: str) -> datetime:
        return datetime.fromisoformat(s.strip())

    times = [parse(t) for t in timestamps]
    out = []
    for start, end in windows:
        s, e = parse(start), parse(end)
        # Windows are labelled on existing rows; bisect keeps it robust anyway.
        idx = [i for i, t in enumerate(times) if s <= t <= e]
        if idx:
            out.append((idx[0], idx[-1]))
    return out


def sweep_scores(n_rows: int, windows: Sequence[tuple[int, int]], profile: Profile) -> np.ndarray:
    """What a detection at each row would earn (NAB ``calcSweepScore``'s weighted score).

    >>> s = sweep_scores(6, [(2, 3)], PROFILES["standard"])
    >>> [round(float(v), 3) for v in s]
    [-0.11, -0.11, 1.0, 0.86, -0.109, -0.11]
    """
    max_tp = scaled_sigmoid(-1.0)
    out = np.empty(n_rows, dtype=np.float64)
    win = sorted(windows)
    k = 0
    prev_right: int | None = None
    prev_width = 0.0
    i = 0
    while i < n_rows:
        if k < len(win) and i == win[k][0]:
            left, right = win[k]
            width = float(right - left + 1)
            for j in range(left, min(right, n_rows - 1) + 1):
                out[j] = scaled_sigmoid(-(right - j + 1) / width) * profile.a_tp / max_tp
            prev_right, prev_width = right, width
            k += 1
            i = right + 1
            continue
        if prev_right is None:
            y = 3.0
        else:
            # A one-row window would divide by zero in NAB too; treat as far past it.
            y = abs(prev_right - i) / (prev_width - 1.0) if prev_width > 1 else 3.0
        out[i] = scaled_sigmoid(y) * profile.a_fp
        i += 1
    return out


@dataclass(slots=True)
class CorpusScore:
    """Result of scoring a corpus under one profile."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    per_file: dict[str, float] = field(default_factory=dict)
    tp: int = 0  # windows detected
    fn: int = 0  # windows missed
    fp: int = 0  # detections outside windows

    @property
    def normalised(self) -> float:
        span = self.perfect - self.null
        return 100.0 * (self.raw - self.null) / span if span else 0.0


def _scorable(f: NabFile, profile: Profile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, sweep scores and window id (-1 outside) of the rows NAB scores."""
    n = len(f.scores)
    sweep = sweep_scores(n, f.windows, profile)
    wid = np.full(n, -1, dtype=np.int64)
    for k, (a, b) in enumerate(f.windows):
        wid[a : b + 1] = k
    p = int(f.probation or 0)
    return np.asarray(f.scores, dtype=np.float64)[p:], sweep[p:], wid[p:]


def _file_score(
    scores: np.ndarray,
    sweep: np.ndarray,
    wid: np.ndarray,
    n_windows: int,
    threshold: float,
    profile: Profile,
) -> tuple[float, int, int, int]:
    det = scores >= threshold
    fp_mask = det & (wid < 0)
    total = float(sweep[fp_mask].sum())
    tp = 0
    for k in range(n_windows):
        hit = det & (wid == k)
        if not (wid == k).any():
            continue  # window entirely in the probationary period: not scored
        if hit.any():
            tp += 1
            total += max(-profile.a_fn, float(sweep[hit].max()))
        else:
            total -= profile.a_fn
    n_scored = len({int(w) for w in wid if w >= 0})
    return total, tp, n_scored - tp, int(fp_mask.sum())


def score_corpus(
    files: Sequence[NabFile], profile: Profile, threshold: float | None = None
) -> CorpusScore:
    """Score ``files`` under ``profile``; sweep the threshold over the corpus unless given.

    A lone false positive in a file without windows costs ``A_FP``:

    >>> g = NabFile("g", np.array([0.0, 0.0, 0.9, 0.0]), [], probation=0)
    >>> round(score_corpus([g], PROFILES["standard"], threshold=0.5).raw, 2)
    -0.11
    """
    parts = [_scorable(f, profile) for f in files]
    n_windows = [len(f.windows) for f in files]
    if threshold is None:
        threshold = _best_threshold(parts, profile)
    res = CorpusScore(profile.name, threshold, 0.0, 0.0, 0.0)
    for f, (s, sw, w), nw in zip(files, parts, n_windows, strict=True):
        raw, tp, fn, fp = _file_score(s, sw, w, nw, threshold, profile)
        res.per_file[f.name] = raw
        res.raw += raw
        res.tp, res.fn, res.fp = res.tp + tp, res.fn + fn, res.fp + fp
        scored = tp + fn
        res.null -= profile.a_fn * scored
        res.perfect += profile.a_tp * scored
    return res


def _best_threshold(
    parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], profile: Profile
) -> float:
    """NAB ``calcScoreByThreshold`` over the whole corpus: the threshold with the best total."""
    scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    sweep = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    # Global window ids so windows of different files stay apart.
    wids, offset = [], 0
    for _, _, w in parts:
        wids.append(np.where(w >= 0, w + offset, -1))
        offset += int(w.max()) + 1 if len(w) and w.max() >= 0 else 0
    wid = np.concatenate(wids) if wids else np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    best_parts = {int(w): -profile.a_fn for w in np.unique(wid[wid >= 0])}
    cur = sum(best_parts.values())
    best_score, best_thr = cur, 1.1  # 1.1: nothing detected, NAB's start
    fp_total = 0.0
    s_sorted = scores[order].tolist()
    sw_sorted = sweep[order].tolist()
    w_sorted = wid[order].tolist()
    n = len(order)
    i = 0
    while i < n:
        thr = s_sorted[i]
        j = i
        while j < n and s_sorted[j] == thr:
            win = w_sorted[j]
            if win < 0:
                fp_total += sw_sorted[j]
            elif sw_sorted[j] > best_parts[win]:
                cur += sw_sorted[j] - best_parts[win]
                best_parts[win] = sw_sorted[j]
            j += 1
        total = cur + fp_total
        if total > best_score:
            best_score, best_thr = total, float(thr)
        i = j
    return best_thr
