"""Leave-one-category-out NAB figures of the metric detectors (``python -m benchmarks.nab_loco``).

Every detector (and each of its candidate settings) scores every file of the NAB
directory once; the score arrays stay in memory.  Two readings of the scores:

* ``rows``: NAB as published: every row whose score reaches the threshold is a
  detection (``models.nab.score_corpus`` and its corpus-wide threshold sweep);
* ``alerts``: the alerts paywatch would send: a detection is the row that opens an
  episode (score reaches the threshold after ``RESOLVE_AFTER`` rows below it, as
  ``paywatch backtest`` does).  A state that stays abnormal is one alert, not one
  false positive per row.  The threshold is swept over the quantiles of the scores
  and every figure printed is ``models.nab.score_corpus`` on the resulting
  detections (official windows, weights, probation and normalisation).

Leave-one-category-out: for each of the four categories, the setting and threshold
are the ones with the best total on the other three categories; the held-out
category is scored with them.  ``MetricDetector`` has no setting chosen on NAB: its
level view averages the lags 50, 100 and 200 instead of picking one, so only the
threshold is chosen per category and its held-out figure is the strict one.  "Metric,
one lag (50)" is the detector with the lag 50 picked from 50/100/200 and no duration in
the held state (otherwise as shipped), printed beside it as the alternative that averaging
replaced, and "Metric, no excl. zone" the shipped detector without its exclusion zone
(shape records measured on every past distance, their own overlapping ones included).
The held-out total scores every file with what was chosen without its category,
normalised like the in-sample figure (0 = never fires, 100 = fires at each window
start, over all scored windows of the corpus).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from models.baselines import (
    GAUSSIAN_THRESHOLD,
    HST_THRESHOLD,
    HalfSpaceTreesDetector,
    WindowedGaussian,
)
from models.kpi import DEFAULT_THRESHOLD as KPI_THRESHOLD
from models.kpi import KpiDetector
from models.metric import DEFAULT_THRESHOLD as METRIC_THRESHOLD
from models.metric import MetricDetector
from models.nab import (
    PROFILES,
    CorpusScore,
    NabFile,
    Profile,
    probationary_length,
    score_corpus,
    sweep_scores,
    windows_to_indices,
)
from stream.offline.csv_series import parse_timestamp, read_metric_csv

RESOLVE_AFTER = 12  # rows below the threshold that close an episode (paywatch backtest)
GRID = 400  # threshold candidates: quantiles of the episode-opening scores


@dataclass(slots=True)
class Series:
    rel: str
    category: str
    times: list[float]
    values: np.ndarray
    windows: list[tuple[int, int]]


@dataclass(slots=True)
class Candidate:
    """One detector with one setting; ``scores[rel]`` once run."""

    detector: str
    setting: str
    make: Callable[[], Any]
    default_threshold: float
    scores: dict[str, np.ndarray] = field(default_factory=dict)


def candidates() -> list[Candidate]:
    """Detectors and their candidate settings (the only things chosen on data)."""
    out = [
        Candidate("KpiDetector", f"window={w}", partial(KpiDetector, window=w), KPI_THRESHOLD)
        for w in (128, 256, 512)
    ]
    out.append(Candidate("MetricDetector", "shipped", MetricDetector, METRIC_THRESHOLD))
    # The alternative the lag average replaced: one lag, picked on these files.
    before = partial(MetricDetector, level_lags=(50,), duration=False)
    out.append(Candidate("Metric, one lag (50)", "lag 50", before, METRIC_THRESHOLD))
    # The shipped detector without the exclusion zone (shape records measured on every
    # past distance, their own overlapping ones included), as it was before.
    inclusive = partial(MetricDetector, exclusion=False)
    out.append(Candidate("Metric, no excl. zone", "inclusive", inclusive, METRIC_THRESHOLD))
    out.append(Candidate("WindowedGaussian", "window=200", WindowedGaussian, GAUSSIAN_THRESHOLD))
    out.append(Candidate("HalfSpaceTrees", "river", HalfSpaceTreesDetector, HST_THRESHOLD))
    return out


def load_corpus(root: Path) -> list[Series]:
    data = root / "data"
    labels = json.loads((root / "labels" / "combined_windows.json").read_text())
    out = []
    for p in sorted(data.glob("*/*.csv")):
        rel = p.relative_to(data).as_posix()
        stamps, values = read_metric_csv(p)
        windows = windows_to_indices(stamps, labels.get(rel, []))
        times = [parse_timestamp(s) for s in stamps]
        out.append(Series(rel, rel.split("/")[0], times, values, windows))
    return out


def run_detector(make: Callable[[], Any], s: Series | Any) -> np.ndarray:
    """Score, then learn, each sample of ``s`` (``values`` and ``times``) in order, as live."""
    det = make()
    out = np.empty(len(s.values))
    for i, (v, t) in enumerate(zip(s.values.tolist(), s.times, strict=True)):
        x = {"value": v, "timestamp": t}
        out[i] = det.score_one(x)
        det.learn_one(x)
    return out


def prior_max(scores: np.ndarray, span: int) -> np.ndarray:
    """Largest score of the ``span`` rows before each row (-inf before the first).

    >>> prior_max(np.array([0.1, 0.9, 0.2, 0.3]), 2).tolist()
    [-inf, 0.1, 0.9, 0.9]
    """
    padded = np.r_[np.full(span, -np.inf), scores]
    view = np.lib.stride_tricks.sliding_window_view(padded[:-1], span)
    return view.max(axis=1)


def alert_rows(scores: np.ndarray, threshold: float, resolve: int = RESOLVE_AFTER) -> np.ndarray:
    """1.0 at rows that open an alert episode at ``threshold``, else 0.0.

    >>> alert_rows(np.array([0.0, 0.8, 0.9, 0.1, 0.7]), 0.5, resolve=2).tolist()
    [0.0, 1.0, 0.0, 0.0, 0.0]
    """
    opens = (scores >= threshold) & (prior_max(scores, resolve) < threshold)
    return opens.astype(np.float64)


@dataclass(slots=True)
class _Prepared:
    """Rows NAB scores, concatenated over files, for a fast threshold sweep."""

    scores: np.ndarray
    before: np.ndarray  # prior_max of each row
    sweep: np.ndarray
    wid: np.ndarray  # global window id, -1 outside
    n_windows: int


def _prepare(files: Sequence[Series], scores: dict[str, np.ndarray], prof: Profile) -> _Prepared:
    parts: list[tuple[np.ndarray, ...]] = []
    offset = 0
    for s in files:
        sc = scores[s.rel]
        p = probationary_length(len(sc))
        wid = np.full(len(sc), -1, dtype=np.int64)
        for k, (a, b) in enumerate(s.windows):
            wid[a : b + 1] = offset + k
        offset += len(s.windows)
        sw = sweep_scores(len(sc), s.windows, prof)
        parts.append((sc[p:], prior_max(sc, RESOLVE_AFTER)[p:], sw[p:], wid[p:]))
    cat = [np.concatenate([q[i] for q in parts]) for i in range(4)]
    return _Prepared(cat[0], cat[1], cat[2], cat[3], offset)


def _alerts_total(pr: _Prepared, threshold: float, prof: Profile) -> float:
    """NAB raw total of the alert-opening rows at ``threshold`` (as ``score_corpus``)."""
    det = (pr.scores >= threshold) & (pr.before < threshold)
    total = float(pr.sweep[det & (pr.wid < 0)].sum())
    present = np.zeros(pr.n_windows, dtype=bool)
    present[pr.wid[pr.wid >= 0]] = True
    best = np.full(pr.n_windows, -prof.a_fn)
    hit = det & (pr.wid >= 0)
    np.maximum.at(best, pr.wid[hit], pr.sweep[hit])
    return total + float(best[present].sum())


def best_alert_threshold(pr: _Prepared, prof: Profile) -> tuple[float, float]:
    """(threshold, raw total) with the best total over the quantile grid of opening scores."""
    opening = pr.scores[pr.scores > pr.before]
    if not len(opening):
        return 1.1, _alerts_total(pr, 1.1, prof)
    grid = np.unique(np.quantile(opening, np.linspace(0.0, 1.0, GRID)))
    totals = [_alerts_total(pr, float(t), prof) for t in grid]
    k = int(np.argmax(totals))
    return float(grid[k]), totals[k]


def official(
    files: Sequence[Series], scores: dict[str, np.ndarray], threshold: float, prof: Profile,
    mode: str,
) -> CorpusScore:  # fmt: skip
    """``models.nab.score_corpus`` of ``files`` at a fixed threshold, rows or alert openings."""
    if mode == "rows":
        nab = [NabFile(s.rel, scores[s.rel], s.windows) for s in files]
        return score_corpus(nab, prof, threshold=threshold)
    nab = [NabFile(s.rel, alert_rows(scores[s.rel], threshold), s.windows) for s in files]
    return score_corpus(nab, prof, threshold=0.5)


def choose(
    group: Sequence[Candidate], files: Sequence[Series], prof: Profile, mode: str
) -> tuple[Candidate, float]:
    """The candidate setting and threshold with the best raw total on ``files``."""
    best: tuple[float, Candidate, float] | None = None
    for c in group:
        if mode == "rows":
            nab = [NabFile(s.rel, c.scores[s.rel], s.windows) for s in files]
            r = score_corpus(nab, prof)
            thr, raw = r.threshold, r.raw
        else:
            thr, raw = best_alert_threshold(_prepare(files, c.scores, prof), prof)
        if best is None or raw > best[0]:
            best = (raw, c, thr)
    assert best is not None
    return best[1], best[2]


def _groups(cands: Sequence[Candidate]) -> dict[str, list[Candidate]]:
    out: dict[str, list[Candidate]] = {}
    for c in cands:
        out.setdefault(c.detector, []).append(c)
    return out


def in_sample(
    groups: dict[str, list[Candidate]], corpus: Sequence[Series], out: TextIO
) -> dict[tuple[str, str], float]:
    """Setting and threshold chosen on the whole corpus, per profile (NAB's own procedure)."""
    print("\n== in-sample (setting and threshold chosen on all files, as NAB does)", file=out)
    print(f"{'detector':18s} {'mode':7s} {'standard':>9s} {'low FP':>7s} {'low FN':>7s}  "
          "setting / threshold (standard)", file=out)  # fmt: skip
    res = {}
    for name, group in groups.items():
        for mode in ("rows", "alerts"):
            figs, label = [], ""
            for pname, prof in PROFILES.items():
                c, thr = choose(group, corpus, prof, mode)
                figs.append(official(corpus, c.scores, thr, prof, mode).normalised)
                if pname == "standard":
                    label = f"{c.setting} / {thr:.4g}"
            res[(name, mode)] = figs[0]
            print(f"{name:18s} {mode:7s} {figs[0]:9.1f} {figs[1]:7.1f} {figs[2]:7.1f}  {label}",
                  file=out)  # fmt: skip
    return res


def held_out(
    group: Sequence[Candidate], corpus: Sequence[Series], mode: str, prof: Profile, out: TextIO
) -> CorpusScore:
    """Each category scored with the setting and threshold chosen on the other three; the
    total adds the categories' raw scores, null and perfect totals (so it is normalised
    over all scored windows of the corpus, like the in-sample figure)."""
    total = CorpusScore(prof.name, float("nan"), 0.0, 0.0, 0.0)
    for cat in sorted({s.category for s in corpus}):
        train = [s for s in corpus if s.category != cat]
        test = [s for s in corpus if s.category == cat]
        c, thr = choose(group, train, prof, mode)
        r = official(test, c.scores, thr, prof, mode)
        total.raw, total.null, total.perfect = (
            total.raw + r.raw, total.null + r.null, total.perfect + r.perfect)  # fmt: skip
        total.tp, total.fn, total.fp = total.tp + r.tp, total.fn + r.fn, total.fp + r.fp
        fig = f"{r.normalised:6.1f}" if r.perfect > r.null else "   n/a"
        print(f"  held out {cat:22s} {c.setting:11s} thr {thr:<9.4g} score {fig} "
              f"(raw {r.raw:+.2f}, windows {r.tp}/{r.tp + r.fn}, FP {r.fp})", file=out)  # fmt: skip
    return total


def loco(
    groups: dict[str, list[Candidate]], corpus: Sequence[Series],
    insample: dict[tuple[str, str], float], out: TextIO,
) -> None:  # fmt: skip
    print("\n== leave-one-category-out (standard profile unless stated)", file=out)
    print("   artificialNoAnomaly has no windows: its held-out figure is its raw false-positive "
          "cost (n/a normalised).", file=out)  # fmt: skip
    for name, group in groups.items():
        for mode in ("alerts", "rows"):
            print(f"{name} ({mode}):", file=out)
            tot = {p: held_out(group, corpus, mode, prof, out if p == "standard" else _NULL)
                   for p, prof in PROFILES.items()}  # fmt: skip
            s = tot["standard"]
            lo_fp, lo_fn = tot["reward_low_FP_rate"], tot["reward_low_FN_rate"]
            print(f"  held-out total: standard {s.normalised:.1f} (in-sample "
                  f"{insample[(name, mode)]:.1f}), low FP {lo_fp.normalised:.1f}"
                  f", low FN {lo_fn.normalised:.1f}; windows {s.tp}/"
                  f"{s.tp + s.fn}, FP {s.fp}", file=out, flush=True)  # fmt: skip


class _Null:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass


_NULL: Any = _Null()


def at_defaults(groups: dict[str, list[Candidate]], corpus: Sequence[Series], out: TextIO) -> None:
    """Window recall and false alerts at each detector's shipped threshold (alerts mode), and
    recall at no more false alerts than the windowed Gaussian's."""
    prof = PROFILES["standard"]
    print("\n== alerts at the default setting and threshold (standard profile rows after "
          "probation)", file=out)  # fmt: skip
    base: CorpusScore | None = None
    rows = []
    for name, group in groups.items():
        c = next((g for g in group if g.setting == "window=256"), group[0])
        r = official(corpus, c.scores, c.default_threshold, prof, "alerts")
        rows.append((name, c, r))
        if name == "WindowedGaussian":
            base = r
    budget = base.fp if base is not None else 0
    print(f"{'detector':18s} {'setting':11s} {'threshold':>9s} {'recall':>11s} {'FP':>5s} "
          f"{'NAB':>6s}   recall at FP <= {budget} (the Gaussian's)", file=out)  # fmt: skip
    for name, c, r in rows:
        rec, fp, thr = _recall_within(c, corpus, prof, budget)
        print(f"{name:18s} {c.setting:11s} {c.default_threshold:9.4g} "
              f"{r.tp:3d}/{r.tp + r.fn:<3d} {r.tp / max(r.tp + r.fn, 1):4.0%} {r.fp:5d} "
              f"{r.normalised:6.1f}   {rec} (FP {fp}, thr {thr:.4g})", file=out)  # fmt: skip


def _recall_within(
    c: Candidate, corpus: Sequence[Series], prof: Profile, budget: int
) -> tuple[str, int, float]:
    """Best window recall with at most ``budget`` false alerts, over the threshold grid
    (counted on the prepared rows; the figures printed are ``score_corpus``'s)."""
    pr = _prepare(corpus, c.scores, prof)
    opening = pr.scores[pr.scores > pr.before]
    grid: np.ndarray = np.zeros(0)
    if len(opening):
        grid = np.unique(np.quantile(opening, np.linspace(0.0, 1.0, GRID)))
    best_thr, best_tp = 1.1, -1
    for thr in grid:
        det = (pr.scores >= thr) & (pr.before < thr)
        fp = int((det & (pr.wid < 0)).sum())
        tp = len(np.unique(pr.wid[det & (pr.wid >= 0)]))
        if fp <= budget and tp > best_tp:
            best_thr, best_tp = float(thr), tp
    r = official(corpus, c.scores, best_thr, prof, "alerts")
    return f"{r.tp}/{r.tp + r.fn}", r.fp, best_thr


def report(
    root: Path, names: Sequence[str] | None = None, out: TextIO | None = None,
    known: dict[str, dict[str, np.ndarray]] | None = None,
) -> None:  # fmt: skip
    """Score the ``names`` detectors (all when None) on the NAB directory ``root`` and print
    the in-sample, leave-one-category-out and default-threshold figures.  ``known`` gives
    score arrays already computed per setting label (``"MetricDetector shipped"``), by file."""
    out = out if out is not None else sys.stdout  # read at call time (tests capture it)
    t0 = time.perf_counter()
    corpus = load_corpus(root)
    cats = sorted({s.category for s in corpus})
    print(f"{len(corpus)} files, {sum(len(s.values) for s in corpus)} rows, categories: "
          f"{', '.join(cats)}", file=out, flush=True)  # fmt: skip
    cands = [c for c in candidates() if names is None or c.detector in names]
    for c in cands:
        t1 = time.perf_counter()
        pre = (known or {}).get(f"{c.detector} {c.setting}")
        for s in corpus:
            c.scores[s.rel] = pre[s.rel] if pre is not None else run_detector(c.make, s)
        print(f"scored: {c.detector} {c.setting} in {time.perf_counter() - t1:.1f}s",
              file=out, flush=True)  # fmt: skip
    groups = _groups(cands)
    ins = in_sample(groups, corpus, out)
    loco(groups, corpus, ins, out)
    at_defaults({k: v for k, v in groups.items() if not k.startswith("Metric,")}, corpus, out)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s", file=out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m benchmarks.nab_loco NAB_DIR [DETECTOR,...]", file=sys.stderr)
        return 2
    # A subset of the detectors, e.g. KpiDetector,WindowedGaussian.
    report(Path(args[0]), args[1].split(",") if len(args) == 2 else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
