"""NAB score of the metric detector: ``python -m benchmarks.nab_run /path/to/nab`` (``make nab``).

Every CSV under ``<nab>/data`` goes through ``backtest_csv`` with the one built-in
configuration; the scores it writes are scored with ``models.nab`` against
``<nab>/labels/combined_windows.json``, the threshold swept once over the corpus per
profile as NAB does.  The last line is ``nab_standard=NN.N``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from models.metric import DEFAULT_THRESHOLD
from models.nab import PROFILES, CorpusScore, NabFile, score_corpus, windows_to_indices
from stream.offline.csv_series import backtest_csv


def _read_scores(path: Path) -> np.ndarray:
    with path.open(newline="") as fh:
        return np.array([float(r["anomaly_score"]) for r in csv.DictReader(fh)])


def run_corpus(
    root: Path, files: list[str] | None = None, out: TextIO = sys.stdout
) -> dict[str, CorpusScore]:
    """Backtest and score the NAB corpus at ``root`` (or only the ``files`` given, relative
    to ``root/data``); returns the result per profile."""
    data = root / "data"
    labels_path = root / "labels" / "combined_windows.json"
    if not data.is_dir() or not labels_path.is_file():
        raise ValueError(
            f"{root}: not a NAB directory (needs data/ and labels/combined_windows.json)"
        )
    labels = json.loads(labels_path.read_text())
    rels = (
        files
        if files is not None
        else sorted(p.relative_to(data).as_posix() for p in data.glob("*/*.csv"))
    )
    if not rels:
        raise ValueError(f"{data}: no CSV files")
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.nab_run", description=__doc__)
    ap.add_argument("nab_dir", type=Path, help="NAB checkout: data/ and labels/")
    args = ap.parse_args(argv)
    try:
        results = run_corpus(args.nab_dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"nab_reward_low_FN_rate={results['reward_low_FN_rate'].normalised:.1f}")
    print(f"nab_reward_low_FP_rate={results['reward_low_FP_rate'].normalised:.1f}")
    print(f"nab_standard={results['standard'].normalised:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
