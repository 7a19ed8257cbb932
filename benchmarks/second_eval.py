"""Detection on traffic paywatch was not tuned on: :mod:`benchmarks.second_generator`.

Replays each seed's events through the default configuration offline (as ``paywatch
backtest`` does) and scores them as ``make eval`` scores the simulator: per incident
the delay beside the expected oracle delay and, for rate incidents, the oracle CUSUM run
on the incident's own calls (:mod:`benchmarks.oracle_run`), then recall, false alerts per hour, the
most episodes one (rule, series) raised for one incident and alerts during
confounders; and the same figures of ``make eval``'s plain baseline.  Nothing in
paywatch's settings was chosen on this generator: every figure here is held out.

    python -m benchmarks.second_eval [--seeds 201 ... 206] [--hours 3] [-v]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from benchmarks import eval_run
from benchmarks.oracle_run import CallCollector
from benchmarks.second_generator import events
from models import budget
from stream.alerting.silences import SilenceSet
from stream.config import Config, load_config
from stream.offline.backtest import chunked, replay_batches
from stream.pipeline import Pipeline

SEEDS = [201, 202, 203, 204, 205, 206]


def replay(
    cfg: Config, evs: Sequence[dict[str, Any]], collector: CallCollector | None = None
) -> list[dict[str, Any]]:
    """Alert records of the pipeline over ``evs`` (offline); ``collector`` gathers each
    incident's calls on the way."""
    values: Iterable[bytes] = (orjson.dumps(ev) for ev in evs)
    if collector is not None:
        values = collector.tee(values)
    steps = replay_batches(Pipeline(cfg), chunked(enumerate(values), "second", cfg.kafka.max_batch))
    return [rec.to_dict() for step in steps for rec in step.alerts]


def evaluate(cfg: Config, seed: int, hours: float, h: float) -> eval_run.SeedResult:
    """One seed scored as ``make eval`` scores the simulator, with the oracle CUSUM run on
    each rate incident's own calls beside its expected delay."""
    evs, truth = events(seed, hours)
    incidents = [lab for lab in truth if lab["is_incident"]]
    collector = CallCollector(incidents)
    alerts = replay(cfg, evs, collector)
    paged = eval_run.pages(alerts, SilenceSet(), cfg)
    res = eval_run.score_seed(alerts, truth, seed, hours, h, paged)
    return eval_run.with_oracle_runs(res, collector, h)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.second_eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--config", help="YAML config (default: built-in defaults)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list false alerts")
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    budget_30d = float(getattr(cfg.detectors, "false_alarms_per_series_per_30d", 1.0))
    h = budget.cusum_threshold(budget_30d, cfg.windows.size_s)
    print("second generator, default config:", file=sys.stderr)
    res = eval_run._run(cfg, args.seeds, args.hours, h, args.verbose, evaluate)
    eval_run.print_incidents(res)
    eval_run.print_summary(f"second generator, seeds {args.seeds}", eval_run.summary(res))
    if not args.no_baseline:
        base = eval_run._run(
            eval_run.baseline_config(cfg), args.seeds, args.hours, h, False, evaluate
        )
        eval_run.print_summary(f"plain baseline, seeds {args.seeds}", eval_run.summary(base))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
