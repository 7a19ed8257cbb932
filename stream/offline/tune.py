"""``paywatch tune``: sweep detector parameters over labelled history, keep the best.

Every combination of the ``--grid`` values is applied on top of the base config
(``--config`` or the built-in defaults), replayed through the same pipeline as
``backtest`` and scored against the labels (:mod:`models.incidents`).  Objectives:

- ``recall`` (default): most labelled incidents found among the combinations
  with at most ``--max-false-per-hour`` false alerts per hour; ties go to the
  shorter median detection delay, then to fewer false alerts.  When no
  combination meets the limit, the fewest false alerts per hour wins.
- ``f1``: the harmonic mean of recall and precision; ties as above.

The chosen combination is written as YAML: the base config's own keys plus the
tuned ones, which ``paywatch run --config`` accepts as it is.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from models.incidents import score_alerts
from stream.config import ConfigError, config_from_dict, load_config

DEFAULT_GRID: dict[str, list[Any]] = {
    "detectors.error_rate.threshold": [0.03, 0.05, 0.08],
    "alerts.for_windows": [1, 2],
}


class TuneError(ValueError):
    """A bad grid or objective, named in one line."""


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """``key=v1,v2`` specs as {key: [values]}; values are read as YAML scalars.

    >>> parse_grid(["detectors.error_rate.threshold=0.03,0.05", "alerts.for_windows=1,2"])
    {'detectors.error_rate.threshold': [0.03, 0.05], 'alerts.for_windows': [1, 2]}
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, eq, values = spec.partition("=")
        key = key.strip()
        if not eq or not key or not values.strip():
            raise TuneError(f"--grid {spec!r}: expected KEY=V1,V2 (e.g. alerts.for_windows=1,2)")
        try:
            grid[key] = [yaml.safe_load(v.strip()) for v in values.split(",") if v.strip()]
        except yaml.YAMLError:
            raise TuneError(f"--grid {spec!r}: a value is not a plain number or word") from None
    return grid


def with_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with dotted keys set.

    >>> with_overrides({"alerts": {"for_windows": 1}}, {"detectors.latency.min_windows": 9})
    {'alerts': {'for_windows': 1}, 'detectors': {'latency': {'min_windows': 9}}}
    """
    out = copy.deepcopy(base)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise TuneError(f"--grid {dotted}: {p} is not a section")
            node = child
        node[leaf] = value
    return out


@dataclass
class Trial:
    overrides: dict[str, Any]
    recall: float
    precision: float
    false_per_hour: float
    median_delay_s: float | None
    detected: int
    incidents: int
    episodes: int
    seconds: float

    @property
    def f1(self) -> float:
        r, p = self.recall, self.precision
        return 2 * r * p / (r + p) if r + p else 0.0

    def delay(self) -> float:
        return math.inf if self.median_delay_s is None else self.median_delay_s


def rank(trials: Sequence[Trial], objective: str, max_false_per_hour: float) -> list[Trial]:
    """Best first, by the objective described in the module docstring."""
    if objective == "f1":
        return sorted(trials, key=lambda t: (-t.f1, t.delay(), t.false_per_hour))
    if objective != "recall":
        raise TuneError(f"--objective {objective!r}: expected recall or f1")
    ok = [t for t in trials if t.false_per_hour <= max_false_per_hour]
    rest = [t for t in trials if t.false_per_hour > max_false_per_hour]
    ok.sort(key=lambda t: (-t.recall, t.delay(), t.false_per_hour))
    rest.sort(key=lambda t: (t.false_per_hour, -t.recall, t.delay()))
    return ok + rest


class Progress:
    """A bar on stderr: redrawn in place on a terminal, one plain line per step otherwise."""

    def __init__(self, total: int, out: IO[str] = sys.stderr) -> None:
        self.total, self.out = total, out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.t0 = time.monotonic()

    def step(self, done: int, note: str) -> None:
        width = 24
        filled = width * done // max(1, self.total)
        elapsed = time.monotonic() - self.t0
        eta = elapsed / done * (self.total - done) if done else 0.0
        bar = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}"
        line = f"{bar}  {elapsed:.0f}s elapsed, ~{eta:.0f}s left  {note}"
        if self.tty:
            self.out.write("\r\x1b[2K" + line[:200])
            if done == self.total:
                self.out.write("\n")
        else:
            self.out.write(line + "\n")
        self.out.flush()


def sweep(
    input_path: str | Path,
    labels: Sequence[dict[str, Any]],
    base: dict[str, Any],
    grid: dict[str, list[Any]],
    progress: Progress | None = None,
) -> list[Trial]:
    """Replay once per grid combination and score each (sequential, in grid order)."""
    from stream.offline.backtest import replay_alerts

    keys = list(grid)
    combos = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*grid.values())]
    configs = []
    for combo in combos:  # check every combination before the long part starts
        try:
            configs.append(config_from_dict(with_overrides(base, combo)))
        except ConfigError as exc:
            raise TuneError(f"--grid {_text(combo)}: {exc}") from None
    trials = []
    for i, (combo, cfg) in enumerate(zip(combos, configs, strict=True)):
        if progress is not None:
            progress.step(i, _text(combo))
        t0 = time.monotonic()
        alerts, summary = replay_alerts(input_path, cfg)
        s = score_alerts(alerts, labels, summary.hours)
        trials.append(
            Trial(combo, s.recall, s.precision, s.false_per_hour, s.median_delay_s, s.detected,
                  len(s.incidents), s.alerts, time.monotonic() - t0)
        )  # fmt: skip
    if progress is not None:
        progress.step(len(combos), "done")
    return trials


def _text(combo: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in combo.items())


def format_table(trials: Sequence[Trial]) -> list[str]:
    """Ranked trials as text (the first row is the choice)."""
    keys = list(trials[0].overrides) if trials else []
    short = [k.split(".")[-1] if k.count(".") else k for k in keys]
    widths = [max(len(s), 8) for s in short]
    head = "  ".join(s.rjust(w) for s, w in zip(short, widths, strict=True))
    lines = [f"rank  {head}  recall  precision  false/h  median delay  episodes"]
    for n, t in enumerate(trials, start=1):
        vals = "  ".join(str(t.overrides[k]).rjust(w) for k, w in zip(keys, widths, strict=True))
        delay = "-" if t.median_delay_s is None else f"{t.median_delay_s:.0f} s"
        lines.append(
            f"{n:>4}  {vals}  {t.recall:>6.2f}  {t.precision:>9.2f}  {t.false_per_hour:>7.2f}  "
            f"{delay:>12}  {t.episodes:>8}"
        )
    return lines


def load_base(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    load_config(path)  # one clear line (ConfigError) if the base itself is wrong
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return dict(data)


def write_yaml(path: Path, config: dict[str, Any], best: Trial, objective: str) -> None:
    head = (
        f"# paywatch tune: {_text(best.overrides)}\n"
        f"# objective {objective}: recall {best.recall:.2f} ({best.detected}/{best.incidents}), "
        f"precision {best.precision:.2f}, {best.false_per_hour:.2f} false alerts/hour, "
        f"median delay {'-' if best.median_delay_s is None else f'{best.median_delay_s:.0f} s'}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def materialise(url: str, path: Path) -> Path:
    """Read a ``kafka://`` range once into a JSONL file, in the order a replay uses."""
    from stream.offline.kafka_replay import kafka_batches, parse_kafka_url

    with path.open("wb") as fh:
        for values, _ in kafka_batches(parse_kafka_url(url)):
            fh.write(b"".join((v or b"") + b"\n" for v in values))
    return path


def run_tune(args: argparse.Namespace) -> int:
    """``paywatch tune`` (errors raise TuneError/ValueError, printed as one line)."""
    from stream.offline.labels import read_labels

    labels = read_labels(args.labels)
    if not any(lab["is_incident"] for lab in labels):
        raise TuneError(f"{args.labels}: no incident to tune for (all labels are non-incidents)")
    source = str(args.input)
    if not source.startswith("kafka://"):
        if not Path(source).is_file():
            raise TuneError(f"--input: no such file: {source}")
        if Path(source).suffix.lower() == ".csv":
            raise TuneError("--input: tune replays JSONL events (CSV metric input is not tunable)")
    base = load_base(args.config)
    grid = parse_grid(args.grid) if args.grid else DEFAULT_GRID
    n = math.prod(len(v) for v in grid.values())
    print(f"tune: {n} combination(s) of {', '.join(grid)} over {source}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        if source.startswith("kafka://"):
            source = str(materialise(source, Path(tmp) / "events.jsonl"))
        trials = sweep(source, labels, base, grid, Progress(n))
    ranked = rank(trials, args.objective, args.max_false_per_hour)
    for line in format_table(ranked):
        print(line)
    best = ranked[0]
    if args.objective == "recall" and best.false_per_hour > args.max_false_per_hour:
        print(
            f"note: no combination stays within {args.max_false_per_hour} false alerts/hour; "
            "chose the quietest",
            file=sys.stderr,
        )
    write_yaml(args.out, with_overrides(base, best.overrides), best, args.objective)
    print(f"chose {_text(best.overrides)} → {args.out}", file=sys.stderr)
    return 0
