"""False alerts on normal traffic of shapes neither generator makes (not shipped).

Takes :mod:`benchmarks.second_generator`'s world with no incident and reshapes it:
``lognorm`` draws latency from a log-normal (sigma 0.8) instead of the gamma with
retries; ``bursty`` multiplies the whole fleet's demand by a gamma(8) draw per minute
(35 % spread); ``errs`` triples the normal error shares; ``fast`` puts every provider
at 10-60 calls/s, ``slow`` at 0.05-0.5.  Combine them with ``_`` (``fast_bursty``).
Replays the default configuration offline and prints every firing record and the pages
it makes.

    python -m benchmarks.shape_probe SEED [--hours 3] [--shape lognorm]
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from typing import Any

import numpy as np

import benchmarks.second_generator as gen
from benchmarks import eval_run
from benchmarks.second_eval import replay
from stream.alerting.silences import SilenceSet
from stream.config import Config


def reshape(shape: str, hours: float) -> None:
    """Patch the generator's module for ``shape`` (this process only)."""
    make_world = gen.make_world

    def world(seed: int) -> gen.World:
        w = make_world(seed)
        rng = np.random.default_rng(seed + 999)
        for name, lo, hi in (("fast", 10.0, 60.0), ("slow", 0.05, 0.5)):
            if name in shape:
                w.rates = {
                    p: float(np.exp(rng.uniform(math.log(lo), math.log(hi)))) for p in w.rates
                }
        if "bursty" in shape:
            noise = rng.gamma(8.0, 1 / 8.0, int(hours * 60) + 2)
            base = w.curve
            w.curve = lambda t: base(t) * noise[(np.asarray(t) // 60).astype(int)]  # type: ignore[method-assign]
        return w

    gen.make_world = world
    if "lognorm" in shape:
        gen._latency = lambda rng, median: np.round(
            median * np.exp(rng.normal(0.0, 0.8, median.size)), 1
        )
    if "errs" in shape:
        gen.NORMAL_ERRORS = {k: 3 * v for k, v in gen.NORMAL_ERRORS.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.shape_probe", description=__doc__)
    ap.add_argument("seed", type=int)
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--shape", default="lognorm")
    args = ap.parse_args(argv)
    reshape(args.shape, args.hours)
    evs, _ = gen.events(args.seed, args.hours, only=[])
    cfg = Config()
    alerts = replay(cfg, evs)
    paged = eval_run.pages(alerts, SilenceSet(), cfg)
    fires: list[dict[str, Any]] = [a for a in alerts if a["status"] == "firing"]
    print(
        f"{args.shape} seed {args.seed}, {args.hours:g} h: {len(evs):,} events, "
        f"{len(fires)} firing records, {len(paged)} paging records"
    )
    for (rule, severity), n in Counter((a["rule"], a["severity"]) for a in fires).most_common():
        print(f"  {rule} {severity}: {n}")
    for a in fires:
        at = (a["window_end"] - gen.T0_MS) / 1000
        print(f"  {at:7.0f} s {a['rule']:18s} {a['summary']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
