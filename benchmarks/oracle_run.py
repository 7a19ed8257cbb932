"""The oracle CUSUM run on each incident's own calls: the theoretical limit in the same run.

``eval_run.oracle_delay_s`` is Lorden's *expected* delay ``h / KL``; one realisation of
an incident can carry more or less evidence than expected (two failing calls where
four were due), and the detector sees that realisation, not the expectation.  This
module runs the CUSUM that knows the simulator's true parameters on exactly the calls
of the incident's series from its start, and reports when it would page (continuous
time, no window close).  It judges rate and volume incidents; latency needs each row's
own normal median, which the oracle would have to learn, so it is left to the expected
delay.

>>> calls = IncidentCalls(np.array([1.0, 2.0, 3.0]), np.array([True, True, True]))
>>> realized_delay_s({"stat": "rate", "p0": 0.001, "p1": 1.0}, "merchant_misconfig", calls, 12.0)
2.0
>>> realized_delay_s({"stat": "volume", "rate0": 10.0, "rate1": 0.0}, "traffic_drop",
...                  IncidentCalls(np.array([]), np.array([], bool)), 12.0)
1.2
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.ingest.decode import decode_batch
from stream.ingest.events import (
    CONFIG_ERROR_CLASSES,
    ERROR_CLASS_INDEX,
    SYSTEM_ERROR_CLASSES,
    DecodedBatch,
    SourceColumns,
)

P0_FLOOR = 1e-3  # as eval_run: no detector can learn that a share is exactly zero
CHUNK = 20_000

#: The error classes whose share each rate incident raises.
BAD_CLASSES: dict[str, tuple[str, ...]] = {
    "provider_outage": SYSTEM_ERROR_CLASSES,
    "gradual_degradation": SYSTEM_ERROR_CLASSES,
    "timeouts": ("timeout",),
    "merchant_misconfig": CONFIG_ERROR_CLASSES,
    # benchmarks.second_generator's kinds of the same shares
    "small_merchant_signature": CONFIG_ERROR_CLASSES,
    "merchant_keys_broken": CONFIG_ERROR_CLASSES,
}


@dataclass
class IncidentCalls:
    """The calls of one incident's series from its start to its end."""

    t_s: np.ndarray  # seconds after the incident's start, ascending
    bad: np.ndarray  # the call is of the incident's error classes


def realized_delay_s(
    truth: Mapping[str, Any], kind: str, calls: IncidentCalls, h: float
) -> float | None:
    """When the oracle CUSUM on these calls reaches ``h`` (None: judged by expectation
    only; ``inf``: never within the incident)."""
    stat = truth.get("stat")
    if stat == "rate" and kind in BAD_CLASSES:
        return _rate(truth, calls, h)
    if stat == "volume":
        return _volume(float(truth["rate0"]), float(truth["rate1"]), calls.t_s, h)
    return None


def _rate(truth: Mapping[str, Any], calls: IncidentCalls, h: float) -> float:
    p0 = max(P0_FLOOR, float(truth["p0"]))
    ramp = float(truth.get("ramp_s", 0.0))
    frac = np.minimum(1.0, calls.t_s / ramp) if ramp > 0 else np.ones(calls.t_s.size)
    p1 = np.maximum(p0 + (float(truth["p1"]) - p0) * frac, p0)
    p1 = np.minimum(p1, 1.0 - 1e-9)
    llr = np.where(calls.bad, np.log(p1 / p0), np.log((1.0 - p1) / (1.0 - p0)))
    s = 0.0
    for t, x in zip(calls.t_s.tolist(), llr.tolist(), strict=True):
        s = max(0.0, s + x)
        if s >= h:
            return float(t)
    return math.inf


def _volume(rate0: float, rate1: float, t_s: np.ndarray, h: float) -> float:
    """Poisson CUSUM of rate0 -> rate1 (< rate0) in continuous time: the evidence grows
    by ``rate0 - rate1`` per second and each call costs ``ln(rate0 / rate1)``."""
    gain = rate0 - rate1
    if gain <= 0:
        return math.inf
    cost = math.inf if rate1 <= 0 else math.log(rate0 / rate1)
    s, last = 0.0, 0.0
    for t in [*t_s.tolist(), math.inf]:
        if s + gain * (t - last) >= h:
            return last + (h - s) / gain
        s = max(0.0, s + gain * (t - last) - cost)
        last = t
    return math.inf


class CallCollector:
    """Collects, while the stream goes by, the calls of each incident's series."""

    def __init__(self, incidents: Sequence[Mapping[str, Any]]) -> None:
        self.incidents = list(incidents)
        self.parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in self.incidents]

    def tee(self, values: Iterable[bytes]) -> Iterator[bytes]:
        """``values`` unchanged; every ``CHUNK`` of them is decoded and sifted."""
        buf: list[bytes] = []
        for v in values:
            buf.append(v)
            if len(buf) >= CHUNK:
                yield from self._sift(buf)
                buf = []
        yield from self._sift(buf)

    def _sift(self, buf: list[bytes]) -> list[bytes]:
        if buf:
            n = len(buf)
            src = SourceColumns(["sim"] * n, np.zeros(n, np.int32), np.arange(n))
            batch = decode_batch(buf, src, max_future_ms=1 << 50, max_past_ms=1 << 50)
            code = {text: k for k, text in enumerate(batch.strings)}
            for i, lab in enumerate(self.incidents):
                self._take(i, lab, batch, code)
        return buf

    def _take(
        self, i: int, lab: Mapping[str, Any], batch: DecodedBatch, code: dict[str, int]
    ) -> None:
        c = batch.calls
        keep = (c.ts >= lab["start_ms"]) & (c.ts < lab["end_ms"])
        for dim, want in lab["series"].items():
            keep &= getattr(c, dim) == code.get(want, -2)
        if not keep.any():
            return
        bad_idx = [ERROR_CLASS_INDEX[k] for k in BAD_CLASSES.get(lab["kind"], ())]
        bad = np.isin(c.error_class[keep], bad_idx)
        self.parts[i].append(((c.ts[keep] - lab["start_ms"]) / 1000.0, bad))

    def calls(self, i: int) -> IncidentCalls:
        parts = self.parts[i]
        if not parts:
            return IncidentCalls(np.zeros(0), np.zeros(0, bool))
        t = np.concatenate([p[0] for p in parts])
        bad = np.concatenate([p[1] for p in parts])
        order = np.argsort(t, kind="stable")
        return IncidentCalls(t[order], bad[order])
