"""NAB score of the metric detector: ``python -m benchmarks.nab_run /path/to/nab`` (``make nab``).

Every CSV under ``<nab>/data`` goes through ``backtest_csv`` with the one built-in
configuration; the scores it writes are scored with ``models.nab`` against
``<nab>/labels/combined_windows.json``, the threshold swept once over the corpus per
profile as NAB does.  Then, in the same command, ``benchmarks.nab_loco`` prints the
leave-one-category-out figures of the metric detector (setting and threshold chosen
without the category scored) beside its in-sample one, and the same figures for the
windowed-Gaussian and river HalfSpaceTrees baselines on the same files (``--no-loco``
skips them), and ``benchmarks.nab_sim``: the metric detector and the windowed Gaussian
on the simulator's metric events with host incidents, recall and false alarms from the
same run (``--no-sim`` skips it).  The last line is ``nab_standard=NN.N`` (in-sample, as
NAB publishes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from benchmarks import nab_sim
from benchmarks.nab_loco import report
from models.metric import DEFAULT_THRESHOLD
from models.nab import PROFILES, CorpusScore, NabFile, score_corpus, windows_to_indices
from stream.offline.csv_series import backtest_csv


def _read_scores(path: Path) -> np.ndarray:
    with path.open(newline="") as fh:
        return np.array([float(r["anomaly_score"]) for r in csv.DictReader(fh)])


def nab_files_of(root: Path, files: list[str] | None = None) -> tuple[Path, Path, list[str]]:
    """(data dir, labels file, CSV files relative to data) of the NAB directory ``root``;
    ValueError when it is not one."""
    data = root / "data"
    labels_path = root / "labels" / "combined_windows.json"
    if not data.is_dir() or not labels_path.is_file():
        raise ValueError(
            f"{root}: not a NAB directory (needs data/ and labels/combined_windows.json)"
        )
    rels = (
        files
        if files is not None
        else sorted(p.relative_to(data).as_posix() for p in data.glob("*/*.csv"))
    )
    if not rels:
        raise ValueError(f"{data}: no CSV files")
    return data, labels_path, rels


def run_corpus(
    root: Path,
    files: list[str] | None = None,
    out: TextIO = sys.stdout,
    keep: dict[str, np.ndarray] | None = None,
) -> dict[str, CorpusScore]:
    """Backtest and score the NAB corpus at ``root`` (or only the ``files`` given, relative
    to ``root/data``); returns the result per profile (and fills ``keep`` with the score
    arrays by file, when given)."""
    data, labels_path, rels = nab_files_of(root, files)
    labels = json.loads(labels_path.read_text())
    nab_files: list[NabFile] = []
    rows = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for k, rel in enumerate(rels, 1):
            scores_path = Path(tmp) / "scores.csv"
            summary = backtest_csv(data / rel, scores_path, None)
            with scores_path.open(newline="") as fh:
                timestamps = [r["timestamp"] for r in csv.DictReader(fh)]
            scores = _read_scores(scores_path)
            windows = windows_to_indices(timestamps, labels.get(rel, []))
            nab_files.append(NabFile(rel, scores, windows))
            if keep is not None:
                keep[rel] = scores
            rows[rel] = summary["rows"]
            print(
                f"[{k}/{len(rels)}] {rel}: {summary['rows']} rows, "
                f"{summary['alerts_fired']} alerts, {summary['seconds']:.1f}s",
                file=out,
                flush=True,
            )
    results = {name: score_corpus(nab_files, prof) for name, prof in PROFILES.items()}
    fixed = score_corpus(nab_files, PROFILES["standard"], threshold=DEFAULT_THRESHOLD)
    std = results["standard"]
    print(f"\n{'file':58s} {'rows':>6s} {'windows':>7s} {'standard':>9s}", file=out)
    for f in nab_files:
        print(
            f"{f.name:58s} {rows[f.name]:6d} {len(f.windows):7d} {std.per_file[f.name]:9.3f}",
            file=out,
        )
    print(
        f"\n{len(rels)} files in {time.perf_counter() - t0:.1f}s; standard: threshold "
        f"{std.threshold:.4f}, windows detected {std.tp}/{std.tp + std.fn}, "
        f"false positives {std.fp}; at the shipped threshold {DEFAULT_THRESHOLD}: "
        f"{fixed.normalised:.1f}",
        file=out,
    )
    return results


def _comparisons(
    args: argparse.Namespace, keep: dict[str, np.ndarray], pending: list[Future[Any]] | None
) -> None:
    """Leave-one-category-out and baselines on NAB, then the simulator's comparison."""
    cats = {rel.split("/")[0] for rel in keep}
    if not args.no_loco and len(cats) < 2:
        print("\nleave-one-category-out skipped: it needs at least two categories")
    elif not args.no_loco:
        print("\n== leave-one-category-out and baselines (benchmarks.nab_loco)", flush=True)
        known = {"MetricDetector shipped": keep}
        names = (
            "MetricDetector", "Metric, one lag (50)", "Metric, no excl. zone",
            "WindowedGaussian", "HalfSpaceTrees",
        )  # fmt: skip
        report(args.nab_dir, names, known=known)
    if pending is not None:
        nab_sim.report(pending=pending)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.nab_run", description=__doc__)
    ap.add_argument("nab_dir", type=Path, help="NAB checkout: data/ and labels/")
    ap.add_argument(
        "--no-loco", action="store_true", help="skip the leave-one-category-out and baselines"
    )
    ap.add_argument(
        "--no-sim", action="store_true", help="skip the simulator's metric-event comparison"
    )
    args = ap.parse_args(argv)
    keep: dict[str, np.ndarray] = {}
    try:
        nab_files_of(args.nab_dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with ProcessPoolExecutor(min(2, os.cpu_count() or 1)) as ex:
        # The simulator's runs go on in other processes while the NAB files are scored.
        pending = None if args.no_sim else nab_sim.submit(ex)
        results = run_corpus(args.nab_dir, keep=keep)
        _comparisons(args, keep, pending)
    print("\nin-sample (setting and threshold chosen on these files, as NAB publishes):")
    print(f"nab_reward_low_FN_rate={results['reward_low_FN_rate'].normalised:.1f}")
    print(f"nab_reward_low_FP_rate={results['reward_low_FP_rate'].normalised:.1f}")
    print(f"nab_standard={results['standard'].normalised:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
