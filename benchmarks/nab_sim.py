"""The metric detector and the windowed-Gaussian baseline on the simulator's metric events
(``python -m benchmarks.nab_sim``; the last part of ``make nab``).

Four simulated hours of every ``metric`` series the simulator emits (CPU, memory and
network errors per pod, callback queue depth, certificate days left; one sample per
10 s), with twelve host incidents injected after an hour of normal traffic: CPU
plateaus, memory-leak ramps and network-error bursts, each on one pod, with random
magnitudes from barely visible to plain (``stream.sim.simulate`` labels them with the
host and the metric they show in).  Both detectors score every
series in the same run; an alert is an episode opening (the score reaches the threshold
after ``RESOLVE_AFTER`` samples below it, as in ``benchmarks.nab_loco``).  An incident
is detected when its metric opens an alert between its start and its end; every other
opening, on any series, is a false alarm.  The first ``MetricDetector`` warm-up (30
samples) of each series is not counted for either detector.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from benchmarks.nab_loco import RESOLVE_AFTER, alert_rows, run_detector
from models.baselines import GAUSSIAN_THRESHOLD, WindowedGaussian
from models.metric import DEFAULT_THRESHOLD, MetricDetector
from stream.sim.simulate import (
    DEFAULT_PROVIDER_SHARES,
    HOST_METRIC_OF,
    Incident,
    SimConfig,
    simulate,
)

SKIP = 30  # samples per series not counted (MetricDetector's warm-up)
HOURS = 4.0
GRID = 200


#: Host incidents of the run: (kind, longest duration s, magnitude range), each drawn once
#: per round.  Magnitudes run from barely visible to plain, so recall is not saturated.
HOST_INCIDENTS = (
    ("cpu_plateau", 900.0, (0.7, 0.95)),  # stuck at 70-95 % CPU (normal 40-60 %)
    ("memory_leak", 1800.0, (0.1, 0.35)),  # +10 to +35 points of memory by its end
    ("network_errors", 300.0, (5.0, 40.0)),  # network error rate x5 to x40 (normal 0.2/s)
)
ROUNDS = 4


def sim_config(
    seed: int = 11, hours: float = HOURS, providers: dict[str, float] | None = None
) -> SimConfig:
    """``ROUNDS`` rounds of host incidents (plateau, leak, burst; random magnitudes), each
    on its own pod, after a warm-up (an hour, or a quarter of a shorter run) of normal
    samples."""
    duration = hours * 3600.0
    warm = min(3600.0, duration / 4)
    shares = providers or dict(DEFAULT_PROVIDER_SHARES)
    hosts = SimConfig(duration_s=60, rate=1, providers=shares).hosts()
    kinds = list(HOST_INCIDENTS) * ROUNDS
    slot = (duration - warm) / len(kinds)
    rng = np.random.default_rng([seed, 0xB0B])
    picks = rng.choice(len(hosts), size=len(kinds), replace=len(kinds) > len(hosts)).tolist()
    incidents = [
        Incident(
            kind, warm + k * slot + 0.2 * slot, min(length, 0.7 * slot), host=hosts[h],
            magnitude=round(float(rng.uniform(m0, m1)), 3),
        )
        for k, ((kind, length, (m0, m1)), h) in enumerate(zip(kinds, picks, strict=True))
    ]  # fmt: skip
    return SimConfig(
        seed=seed, duration_s=duration, rate=1.0, providers=shares, incidents=incidents
    )


@dataclass(slots=True)
class MetricSeries:
    name: str
    host: str
    times: list[float]  # seconds
    values: np.ndarray
    windows: list[tuple[int, int]]  # inclusive row ranges of its incidents


def load_series(cfg: SimConfig) -> list[MetricSeries]:
    """Every metric series of the run, with the rows of the incidents that show in it."""
    samples: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for ev in simulate(cfg):
        if ev["event_type"] == "metric":
            key = (ev["name"], ev["host"], str(sorted(ev["labels"].items())))
            samples.setdefault(key, []).append((ev["event_ts"], float(ev["value"])))
    out = []
    for (name, host, _), rows in sorted(samples.items()):
        rows.sort()
        ts = np.array([t for t, _ in rows])
        windows = []
        for inc in cfg.incidents:
            if inc.host == host and HOST_METRIC_OF.get(inc.kind) == name:
                s = cfg.start_ms + int(inc.start_s * 1000)
                idx = np.flatnonzero((ts >= s) & (ts < s + int(inc.duration_s * 1000)))
                windows.append((int(idx[0]), int(idx[-1])))
        times = (ts / 1000.0).tolist()
        out.append(MetricSeries(name, host, times, np.array([v for _, v in rows]), windows))
    return out


def count(series: list[MetricSeries], scores: list[np.ndarray], thr: float) -> tuple[int, int]:
    """(incidents detected, false alarms) at ``thr``."""
    tp = fp = 0
    for s, sc in zip(series, scores, strict=True):
        opens = np.flatnonzero(alert_rows(sc, thr, RESOLVE_AFTER))
        opens = opens[opens >= SKIP]
        inside = np.zeros(len(opens), dtype=bool)
        for a, b in s.windows:
            hit = (opens >= a) & (opens <= b)
            tp += bool(hit.any())
            inside |= hit
        fp += int((~inside).sum())
    return tp, fp


def curve(
    series: list[MetricSeries], scores: list[np.ndarray], extra: tuple[float, ...]
) -> list[tuple[float, int, int]]:
    """(threshold, detected, false alarms) over a grid of score quantiles and ``extra``."""
    allsc = np.concatenate(scores)
    grid = np.quantile(allsc[allsc > 0], np.linspace(0.5, 1.0, GRID))
    return [(t, *count(series, scores, t)) for t in np.unique(np.r_[grid, extra]).tolist()]


def best_within(points: list[tuple[float, int, int]], budget: int) -> tuple[int, int, float]:
    """(detected, false alarms, threshold): most incidents detected with <= ``budget`` false
    alarms (fewest false alarms among equals)."""
    ok = [(tp, -fp, -thr) for thr, tp, fp in points if fp <= budget]
    tp, nfp, nthr = max(ok, default=(0, 0, -1.1))
    return tp, -nfp, -nthr


def report(
    out: TextIO | None = None, seed: int = 11, hours: float = HOURS,
    providers: dict[str, float] | None = None,
) -> dict[str, tuple[int, int]]:  # fmt: skip
    """Print recall and false alarms of both detectors on the same simulated series; returns
    (detected, false alarms) by ``detector@threshold`` and ``detector<=budget``."""
    out = out if out is not None else sys.stdout
    t0 = time.perf_counter()
    cfg = sim_config(seed, hours, providers)
    series = load_series(cfg)
    n_inc = sum(len(s.windows) for s in series)
    kinds = ", ".join(sorted({i.kind for i in cfg.incidents}))
    print(f"\n== simulator metric events (seed {seed}, {hours:g} h): {len(series)} series, "
          f"{sum(len(s.values) for s in series)} samples, {n_inc} host incidents ({kinds})",
          file=out, flush=True)  # fmt: skip
    dets: list[tuple[str, Callable[[], Any], tuple[float, ...]]] = [
        ("WindowedGaussian", WindowedGaussian, (GAUSSIAN_THRESHOLD,)),
        ("MetricDetector", MetricDetector, (DEFAULT_THRESHOLD, 0.9)),
    ]
    curves, res = {}, {}
    print(f"{'detector':18s} {'threshold':>9s} {'recall':>10s} {'false alarms':>12s}", file=out)
    for name, make, thresholds in dets:
        curves[name] = curve(series, [run_detector(make, s) for s in series], thresholds)
        for thr in thresholds:
            tp, fp = next((tp, fp) for t, tp, fp in curves[name] if t == thr)
            res[f"{name}@{thr:.3g}"] = (tp, fp)
            print(f"{name:18s} {thr:9.4g} {tp:3d}/{n_inc:<3d} {tp / max(n_inc, 1):4.0%} {fp:12d}",
                  file=out)  # fmt: skip
    # Equal false alarms: each detector's best threshold within the same budget.
    budgets = sorted({0, *(fp for _, fp in res.values())})
    print("recall at equal false alarms (each detector's best threshold within the budget):",
          file=out)  # fmt: skip
    for b in budgets:
        cells = []
        for name, *_ in dets:
            tp, fp, thr = best_within(curves[name], b)
            res[f"{name}<={b}"] = (tp, fp)
            cells.append(f"{name} {tp}/{n_inc} (FA {fp}, thr {thr:.4g})")
        print(f"  <= {b:4d} false alarms: " + "; ".join(cells), file=out)
    print(f"simulator part: {time.perf_counter() - t0:.0f}s", file=out)
    return res


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    report(seed=int(args[0]) if args else 11)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
