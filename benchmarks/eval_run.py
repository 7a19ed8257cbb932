"""`make eval`: detection delay against the oracle, on randomised simulated incidents.

Each seed simulates ``--hours`` of traffic with a daily curve: an hour of normal
traffic, then every entry of the simulator's ``RANDOM_SUITE`` once, in random
order, with random magnitude, target, duration and start — incidents (outages,
small shifts at moderate volume, timeouts only, low-volume merchant failures,
merchant-wide key breakage, merchant latency, gradual degradation, traffic drops)
and confounders that must stay silent (promotion, lull, planned maintenance, a
merchant going quiet).  The default configuration replays each stream offline.

Per incident it prints the delay (end of the window of the first matching alert
minus the incident's start, event time), the oracle delay — Lorden's bound
``h / KL`` of the CUSUM that knows the simulator's true rates
(:mod:`models.budget`), with ``h`` from the configured false-alarm budget — and
their ratio; the target is ``max(2 x oracle, oracle + 20 s)``.  Beside it, the same
oracle CUSUM run on the incident's own calls (:mod:`benchmarks.oracle_run`: one
realisation carries more or less evidence than expected) and whether the delay is
within the same target of that run — printed, not the acceptance reading.  Then recall,
false alerts per hour, the most alert episodes one (rule, series) raised for one
incident, pages per incident (every series and rule together; an episode pages for one
incident, the latest begun before it fired), and alerts during confounders: for the
tuning seeds (where settings may be chosen) and, separately, for held-out seeds (the
figures to quote); and for
the held-out seeds the same figures of a plain baseline (:func:`baseline_config`:
static 5 % error shares, nothing learned) replayed through the same pipeline.

A zero baseline share (no config errors at all in normal traffic) is floored at
``P0_FLOOR`` for the oracle: no detector can learn that a share is exactly zero.

Planned maintenance is announced: the on-call team silences the provider for the
announced window (from ``MAINTENANCE_LEAD_S`` before it to ``MAINTENANCE_TAIL_S``
after it), as it would in production (``paywatch.control`` silences, docs/alerts.md).
Alert records are still published; what counts is a page: an episode that at some
moment while it fires is neither silenced nor muted by the dispatcher's inhibition
stage (attribution: a provider-wide alert mutes the series beneath it, a broader alert
one child carries folds into the child; Alertmanager notifies a still-firing alert when
its silence expires or its inhibitor resolves).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from benchmarks.oracle_run import P0_FLOOR, CallCollector, realized_delay_s
from models import budget
from models.incidents import GRACE_MS, episodes, series_matches
from stream.alerting.inhibit import Inhibitor
from stream.alerting.matchers import Matcher
from stream.alerting.record import AlertRecord
from stream.alerting.silences import Silence, SilenceSet
from stream.config import Config, SLORuleConfig, load_config
from stream.offline.backtest import chunked, replay_batches
from stream.pipeline import Pipeline
from stream.series import series_key
from stream.sim.simulate import SimConfig, labels, random_incident_suite, simulate

MAINTENANCE_LEAD_S = 300
MAINTENANCE_TAIL_S = 600
TUNING_SEEDS = [1, 2]
HELD_OUT_SEEDS = [101, 102, 103, 104, 105]


def oracle_delay_s(truth: Mapping[str, Any], h: float) -> float:
    """Lorden's delay bound for the incident the simulator describes in ``truth``, plus
    ``known_after_s`` when its evidence can only be seen that late (a missing callback,
    at its deadline).

    >>> round(oracle_delay_s({"stat": "rate", "p0": 0.0, "p1": 1.0, "calls_per_s": 0.05}, 12.47))
    36
    """
    return _oracle_delay_s(truth, h) + float(truth.get("known_after_s", 0.0))


def _oracle_delay_s(truth: Mapping[str, Any], h: float) -> float:
    stat = truth.get("stat")
    calls = float(truth.get("calls_per_s", 0.0))
    if stat == "latency":
        return budget.oracle_delay_latency_s(truth["ratio"], truth["sigma_log"], calls, h)
    if stat == "volume":
        return budget.oracle_delay_volume_s(truth["rate0"], truth["rate1"], h)
    if stat != "rate":
        return math.nan
    p0, p1 = max(P0_FLOOR, float(truth["p0"])), float(truth["p1"])
    ramp = float(truth.get("ramp_s", 0.0))
    if ramp <= 0:
        return budget.oracle_delay_rate_s(p0, p1, calls, h)
    # A linear ramp p0 -> p1: the time the accumulated information reaches h.
    t = np.arange(1.0, 4 * ramp + 1.0)
    p = p0 + (p1 - p0) * np.minimum(1.0, t / ramp)
    info = np.cumsum(np.asarray(budget.kl_bernoulli(p, p0)) * calls)
    hit = np.flatnonzero(info >= h)
    return float(t[hit[0]]) if hit.size else math.inf


@dataclass
class IncidentResult:
    seed: int
    kind: str
    series: dict[str, str]
    magnitude: float
    delay_s: float | None
    oracle_s: float
    max_episodes: int  # most episodes one (rule, series) raised for this incident
    # The oracle CUSUM run on this incident's own calls (None: latency, by expectation).
    run_s: float | None = None
    pages: int = 0  # episodes that paged for this incident, every series and rule together

    @property
    def target_s(self) -> float:
        return max(2 * self.oracle_s, self.oracle_s + 20)

    @property
    def run_target_s(self) -> float:
        """The target against the oracle on the same calls (the expected one if none)."""
        o = self.oracle_s if self.run_s is None else self.run_s
        return max(2 * o, o + 20)

    @property
    def ratio(self) -> float:
        if self.delay_s is None or not self.oracle_s > 0:
            return math.inf
        return self.delay_s / self.oracle_s


@dataclass
class SeedResult:
    seed: int
    hours: float
    incidents: list[IncidentResult] = field(default_factory=list)
    false_alerts: list[Mapping[str, Any]] = field(default_factory=list)
    confounder_alerts: Counter[str] = field(default_factory=Counter)
    confounder_episodes: list[Mapping[str, Any]] = field(default_factory=list)


def replay(
    cfg: Config, sim: SimConfig, collector: CallCollector | None = None
) -> list[dict[str, Any]]:
    """Alert records of the pipeline over the simulated stream (offline, event time);
    ``collector`` gathers each incident's calls on the way."""
    values: Iterable[bytes] = (
        orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY) for ev in simulate(sim)
    )
    if collector is not None:
        values = collector.tee(values)
    steps = replay_batches(Pipeline(cfg), chunked(enumerate(values), "sim", cfg.kafka.max_batch))
    return [rec.to_dict() for step in steps for rec in step.alerts]


def planned_silences(truth: Sequence[Mapping[str, Any]]) -> SilenceSet:
    """The silences an on-call team declares for the announced maintenance windows."""
    return SilenceSet(
        Silence(
            f"maintenance-{i}",
            tuple(Matcher.parse(f"{k}={v}") for k, v in lab["series"].items()),
            int(lab["start_ms"]) - MAINTENANCE_LEAD_S * 1000,
            int(lab["end_ms"]) + MAINTENANCE_TAIL_S * 1000,
            author="eval",
            comment="planned maintenance",
        )
        for i, lab in enumerate(truth)
        if lab["kind"] == "maintenance"
    )


def pages(
    alerts: Sequence[Mapping[str, Any]], silences: SilenceSet, cfg: Config
) -> list[Mapping[str, Any]]:
    """The records of episodes that page: at some moment while they fire, neither
    silenced nor muted by the dispatcher's inhibition stage (a provider-wide alert mutes
    the series beneath it; a broader alert one child carries folds into the child).
    Mutes are re-evaluated whenever the firing set changes and when a silence ends, as
    the dispatcher does."""
    _, rules = cfg.notify_routes()
    recs = sorted((AlertRecord.from_dict(a) for a in alerts), key=lambda r: r.window_end)
    firing: dict[str, AlertRecord] = {}
    inhibitor = Inhibitor(
        [*rules, *cfg.builtin_inhibit_rules()], firing.values,
        default_inhibit=cfg.notify.default_inhibit,
    )  # fmt: skip
    ends = sorted({s.ends_at for s in silences if s.ends_at is not None})
    times = sorted({r.window_end for r in recs} | set(ends))
    paged: set[str] = set()
    i = 0
    for t in times:
        while i < len(recs) and recs[i].window_end <= t:
            rec = recs[i]
            if rec.firing:
                firing[rec.fingerprint] = rec
            else:
                firing.pop(rec.fingerprint, None)
            i += 1
        inhibitor.invalidate()
        for rec in firing.values():
            if rec.alert_id in paged or silences.mute_reason(rec.labels, t):
                continue
            if inhibitor.mute_reason(rec) is None:
                paged.add(rec.alert_id)
    return [a for a in alerts if str(a["alert_id"]) in paged]


def _matches(ep: Mapping[str, Any], lab: Mapping[str, Any]) -> bool:
    return series_matches(ep["series"], lab["series"]) and (
        lab["start_ms"] <= ep["window_end"] <= lab["end_ms"] + GRACE_MS
    )


def _owner(ep: Mapping[str, Any], incidents: Sequence[Mapping[str, Any]]) -> Any:
    """The incident an episode pages for: of those it matches, the latest to begin (an
    incident that starts within the grace after another on the same provider owns what
    fires after its start)."""
    hits = [lab for lab in incidents if _matches(ep, lab) and lab["start_ms"] <= ep["window_end"]]
    return max(hits, key=lambda lab: int(lab["start_ms"]), default=None)


def score_seed(
    alerts: Sequence[Mapping[str, Any]], truth: Sequence[Mapping[str, Any]], seed: int,
    hours: float, h: float, paged: Sequence[Mapping[str, Any]] | None = None,
) -> SeedResult:  # fmt: skip
    """Recall and delay from every firing record (detection: the first record on the
    alerts topic for the series inside the incident — a new episode, or an open one
    re-announced: an escalation, or a relapse while its recovery was held); false
    alerts, alerts during confounders and episodes per series from the records that
    page (``paged``, default: all).  An episode that matches a real
    incident is that incident's, even when a confounder overlaps it."""
    pages_ = episodes(alerts if paged is None else paged)
    firing = [a for a in alerts if a.get("status") == "firing"]
    res = SeedResult(seed, hours)
    incident = [lab for lab in truth if lab["is_incident"]]
    explained = {aid for aid, e in pages_.items() if any(_matches(e, lab) for lab in incident)}
    owner = {aid: _owner(e, incident) for aid, e in pages_.items()}
    for lab in truth:
        hits = [e for e in pages_.values() if _matches(e, lab)]
        if lab["is_incident"]:  # an episode pages for one incident: the latest begun
            hits = [e for e in hits if owner[str(e["alert_id"])] is lab]
        if not lab["is_incident"]:
            hits = [e for e in hits if str(e["alert_id"]) not in explained]
            res.confounder_alerts[lab["kind"]] += len(hits)
            res.confounder_episodes.extend({**e, "confounder": lab["kind"]} for e in hits)
            continue
        first = min((int(a["window_end"]) for a in firing if _matches(a, lab)), default=None)
        per_series = Counter((e["rule"], series_key(e["series"])) for e in hits)
        res.incidents.append(
            IncidentResult(
                seed, lab["kind"], dict(lab["series"]), float(lab["magnitude"]),
                None if first is None else (first - lab["start_ms"]) / 1000,
                oracle_delay_s(lab.get("truth", {}), h), max(per_series.values(), default=0),
                pages=len(hits),
            )
        )  # fmt: skip
    confounding = {str(e["alert_id"]) for e in res.confounder_episodes}
    res.false_alerts = [
        e for aid, e in pages_.items() if aid not in explained and aid not in confounding
    ]
    return res


def evaluate_seed(cfg: Config, seed: int, hours: float, h: float) -> SeedResult:
    duration = hours * 3600
    sim = SimConfig(seed=seed, duration_s=duration, incidents=random_incident_suite(seed, duration))
    truth = labels(sim)
    incidents = [lab for lab in truth if lab["is_incident"]]
    collector = CallCollector(incidents)
    alerts = replay(cfg, sim, collector)
    paged = pages(alerts, planned_silences(truth), cfg)
    return with_oracle_runs(score_seed(alerts, truth, seed, hours, h, paged), collector, h)


def with_oracle_runs(res: SeedResult, collector: CallCollector, h: float) -> SeedResult:
    """``res`` with each incident's oracle CUSUM run on the calls ``collector`` gathered
    (its incidents in the order ``score_seed`` lists them)."""
    for i, (lab, inc) in enumerate(zip(collector.incidents, res.incidents, strict=True)):
        inc.run_s = realized_delay_s(lab.get("truth", {}), lab["kind"], collector.calls(i), h)
    return res


#: Every learned detector the plain baseline turns off.
LEARNED_RULES = ("error_rate", "timeouts", "config_errors", "business_declines", "latency",
                 "latency_tail", "volume", "callbacks", "duplicate_callbacks",
                 "amount_mismatch", "multivariate")  # fmt: skip


def baseline_config(cfg: Config) -> Config:
    """The plain baseline, what a team writes by hand without paywatch's detectors: a
    share of system errors, timeouts or config errors at or above 5 % of at least 20
    calls in one window warns (20 % is critical), at every level; nothing learned, so
    no latency or traffic-drop test (their normal differs per series).  Same windows,
    lifecycle, silences and inhibition as the detector it is compared with."""
    out = copy.deepcopy(cfg)
    for name in LEARNED_RULES:
        getattr(out.detectors, name).enabled = False
    out.detectors.slos = [
        SLORuleConfig(rule=f"static_{f}", feature=f, per="volume", warning=0.05, critical=0.2)
        for f in ("system_errors", "timeouts", "config_errors")
    ]
    return out


def _fmt(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.0f}"


def print_incidents(results: Sequence[SeedResult]) -> None:
    print(f"{'seed':>4} {'incident':<20} {'series':<22} {'mag':>6} {'delay s':>8} "
          f"{'oracle s':>8} {'ratio':>6} {'target s':>8} {'ok':>3} {'eps':>3} "
          f"{'run s':>6} {'ok':>3}")  # fmt: skip
    for r in results:
        for i in r.incidents:
            where = "/".join(i.series.values()) or "(all)"
            ok = i.delay_s is not None and i.delay_s <= i.target_s
            ok_run = i.delay_s is not None and i.delay_s <= i.run_target_s
            ratio = "—" if not math.isfinite(i.ratio) else f"{i.ratio:.1f}"
            print(f"{i.seed:>4} {i.kind:<20} {where:<22} {i.magnitude:>6.3g} {_fmt(i.delay_s):>8} "
                  f"{_fmt(i.oracle_s):>8} {ratio:>6} {_fmt(i.target_s):>8} "
                  f"{'yes' if ok else 'NO':>3} {i.max_episodes:>3} {_fmt(i.run_s):>6} "
                  f"{'yes' if ok_run else 'NO':>3}")  # fmt: skip


def summary(results: Sequence[SeedResult]) -> dict[str, Any]:
    incs = [i for r in results for i in r.incidents]
    hours = sum(r.hours for r in results)
    detected = [i for i in incs if i.delay_s is not None]
    conf: Counter[str] = Counter()
    for r in results:
        conf.update(r.confounder_alerts)
    return {
        "incidents": len(incs),
        "recall": len(detected) / len(incs) if incs else 1.0,
        "within_target": sum(i.delay_s is not None and i.delay_s <= i.target_s for i in incs),
        "within_run_target": sum(
            i.delay_s is not None and i.delay_s <= i.run_target_s for i in incs
        ),
        "worst_ratio": max((i.ratio for i in incs), default=math.nan),
        "median_delay_s": float(np.median([i.delay_s for i in detected])) if detected else None,
        "false_per_hour": sum(len(r.false_alerts) for r in results) / hours if hours else 0.0,
        "max_episodes": max((i.max_episodes for i in incs), default=0),
        "pages": sum(i.pages for i in incs),
        "pages_per_incident": sum(i.pages for i in incs) / len(incs) if incs else 0.0,
        "max_pages": max((i.pages for i in incs), default=0),
        "confounder_alerts": dict(conf),
        "false_by_rule": dict(
            Counter(str(e["rule"]) for r in results for e in r.false_alerts).most_common()
        ),
        "hours": hours,
    }


def print_summary(name: str, s: Mapping[str, Any]) -> None:
    worst = s["worst_ratio"]
    print(
        f"{name}: recall {s['recall']:.2f} ({round(s['recall'] * s['incidents'])}/"
        f"{s['incidents']}), within target {s['within_target']}/{s['incidents']} (of the "
        f"oracle on the same calls: {s['within_run_target']}/{s['incidents']}), worst ratio "
        f"{'∞ (missed)' if not math.isfinite(worst) else f'{worst:.1f}'}, median delay "
        f"{_fmt(s['median_delay_s'])} s, false alerts/h {s['false_per_hour']:.2f} over "
        f"{s['hours']:.0f} h, max episodes per incident per series {s['max_episodes']}, "
        f"pages per incident {s['pages_per_incident']:.2f} ({s['pages']} pages, most "
        f"{s['max_pages']}), "
        f"alerts during confounders {s['confounder_alerts'] or 0}; false alerts by rule "
        f"{s['false_by_rule'] or 0}"
    )


def _run(
    cfg: Config, seeds: Sequence[int], hours: float, h: float, verbose: bool,
    evaluate: Callable[[Config, int, float, float], SeedResult] | None = None,
) -> list[SeedResult]:  # fmt: skip
    """Each seed's result (``evaluate``: of another stream than the simulator's)."""
    out = []
    for seed in seeds:
        t0 = time.monotonic()
        r = (evaluate or evaluate_seed)(cfg, seed, hours, h)
        out.append(r)
        found = sum(i.delay_s is not None for i in r.incidents)
        print(f"  seed {seed}: {found}/{len(r.incidents)} incidents detected, "
              f"{len(r.false_alerts)} false alerts, confounders {dict(r.confounder_alerts)} "
              f"({time.monotonic() - t0:.0f}s)", file=sys.stderr, flush=True)  # fmt: skip
        if verbose:
            for e in r.false_alerts:
                print(f"    false: {e['rule']} {e['series']}: {e['summary']}", file=sys.stderr)
            for e in r.confounder_episodes:
                print(f"    during {e['confounder']}: {e['rule']} {e['series']}: {e['summary']}",
                      file=sys.stderr)  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.eval_run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--tuning-seeds", type=int, nargs="*", default=TUNING_SEEDS)
    ap.add_argument("--seeds", type=int, nargs="+", default=HELD_OUT_SEEDS, help="held out")
    ap.add_argument("--hours", type=float, default=4.0, help="simulated hours per seed")
    ap.add_argument("--config", help="YAML config (default: built-in defaults)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list false alerts")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the static-threshold baseline on held-out seeds")  # fmt: skip
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    budget_30d = float(getattr(cfg.detectors, "false_alarms_per_series_per_30d", 1.0))
    h = budget.cusum_threshold(budget_30d, cfg.windows.size_s)
    print(f"oracle: CUSUM threshold h = {h:.2f} ({budget_30d:g} false alarm per series per "
          f"30 days, {cfg.windows.size_s:g} s windows)", file=sys.stderr)  # fmt: skip
    print("tuning seeds:", file=sys.stderr)
    tuning = _run(cfg, args.tuning_seeds, args.hours, h, args.verbose)
    print("held-out seeds:", file=sys.stderr)
    held = _run(cfg, args.seeds, args.hours, h, args.verbose)
    print_incidents(held)
    if tuning:
        print_summary(f"tuning seeds {args.tuning_seeds}", summary(tuning))
    s = summary(held)
    print_summary(f"held-out seeds {args.seeds}", s)
    if not args.no_baseline:
        print("plain baseline (static 5 % shares), held-out seeds:", file=sys.stderr)
        base = _run(baseline_config(cfg), args.seeds, args.hours, h, verbose=False)
        print_summary(f"plain baseline, held-out seeds {args.seeds}", summary(base))
    ok = (
        s["recall"] == 1.0
        and s["within_target"] == s["incidents"]
        and s["false_per_hour"] <= 0.25
        and s["max_episodes"] <= 1
        and not any(s["confounder_alerts"].values())
    )
    print(
        f"eval={'pass' if ok else 'fail'} (recall 1.00, every delay within target, <= 0.25 "
        "false alerts/h, one episode per incident per series, none during confounders)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
