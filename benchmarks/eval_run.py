"""`make eval`: the default configuration on the simulator's incident suite, several seeds.

Every incident kind the simulator can inject runs once per seed after a warm-up
of normal traffic (with a daily curve), plus a promotion burst that must stay
silent.  The detection time of an alert is the end of the window that fired it
(event time); an alert matches an incident when their series match (equal, or
one a roll-up of the other) and it fires between the incident's start and its
end plus a grace period (callbacks are only missed after their timeout).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from models.incidents import GRACE_MS, score_alerts
from stream.config import Config, load_config
from stream.offline.backtest import chunked, replay_batches
from stream.pipeline import Pipeline
from stream.sim.simulate import SimConfig, default_incident_suite, labels, simulate


@dataclass
class SeedResult:
    seed: int
    hours: float
    detections: dict[str, float | None] = field(default_factory=dict)  # kind -> delay s
    false_alerts: list[dict[str, Any]] = field(default_factory=list)
    promotion_alerts: int = 0


def replay(cfg: Config, sim: SimConfig) -> list[dict[str, Any]]:
    """Alert records of the pipeline over the simulated stream (offline, event time)."""
    values = (orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY) for ev in simulate(sim))
    steps = replay_batches(Pipeline(cfg), chunked(enumerate(values), "sim", cfg.kafka.max_batch))
    return [rec.to_dict() for step in steps for rec in step.alerts]


def evaluate_seed(cfg: Config, seed: int, hours: float) -> SeedResult:
    duration = hours * 3600
    sim = SimConfig(seed=seed, duration_s=duration, incidents=default_incident_suite(duration))
    truth = labels(sim)
    scored = score_alerts(replay(cfg, sim), truth, hours, GRACE_MS)
    res = SeedResult(seed, hours)
    for det in scored.detections:
        if det.label["is_incident"]:
            res.detections[det.label["kind"]] = det.delay_s
    res.promotion_alerts = scored.promotion_alerts
    res.false_alerts = [dict(e) for e in scored.false_alerts]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.eval_run", description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--hours", type=float, default=4.0, help="simulated hours per seed")
    ap.add_argument("--config", help="YAML config (default: built-in defaults)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list false alerts")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    results = []
    for seed in args.seeds:
        t0 = time.monotonic()
        r = evaluate_seed(cfg, seed, args.hours)
        results.append(r)
        found = sum(d is not None for d in r.detections.values())
        print(
            f"seed {seed}: {found}/{len(r.detections)} incidents detected, "
            f"{len(r.false_alerts)} false alerts, {r.promotion_alerts} during the promotion "
            f"({time.monotonic() - t0:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
        if args.verbose:
            for e in r.false_alerts:
                print(
                    f"    false: {e['rule']} {e['series']} at +{e['window_end']}: {e['summary']}",
                    file=sys.stderr,
                )
    by_kind: dict[str, list[float | None]] = defaultdict(list)
    for r in results:
        for kind, delay in r.detections.items():
            by_kind[kind].append(delay)
    print(f"{'incident':<22} {'detected':>9} {'median delay':>13}")
    delays: list[float] = []
    for kind, ds in by_kind.items():
        got = [d for d in ds if d is not None]
        delays += got
        med = f"{statistics.median(got):.0f} s" if got else "—"
        print(f"{kind:<22} {len(got):>5}/{len(ds):<3} {med:>13}")
    total = sum(len(ds) for ds in by_kind.values())
    hours = sum(r.hours for r in results)
    false = sum(len(r.false_alerts) for r in results)
    promo = sum(r.promotion_alerts for r in results)
    recall = len(delays) / total if total else 0.0
    med_delay = statistics.median(delays) if delays else float("nan")
    print(f"recall={recall:.2f} ({len(delays)}/{total})  target 1.00")
    print(f"median_delay_s={med_delay:.0f}  target <= 60")
    print(f"false_alerts_per_hour={false / hours:.2f}  target <= 0.5")
    print(f"promotion_alerts={promo}  target 0")
    ok = recall == 1.0 and med_delay <= 60 and false / hours <= 0.5 and promo == 0
    print(f"eval={'pass' if ok else 'fail'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
