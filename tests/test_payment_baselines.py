"""The payment metrics' baselines read the sequential banks in one call per rule: the
same expected values, on the same series, as each series' own detector gives."""

from __future__ import annotations

import math

import numpy as np
import orjson

from models.base import expected_of
from stream.config import Config
from stream.ingest.events import Source
from stream.judge.features import JudgedWindow, Row
from stream.judge.rules import Rule
from stream.live.payment_metrics import PaymentMetrics, baselines
from stream.pipeline import Pipeline
from stream.sim.simulate import Incident, SimConfig, simulate


def _per_series(window: JudgedWindow, rules: list[Rule], sids: np.ndarray) -> dict[str, dict]:
    """Rule -> {row: expected} from a detector of each series' own (the slow read-out)."""
    consts = window.constants((window.win.end_ms - window.win.start_ms) / 1000.0)
    out: dict[str, dict] = {}
    mask_of = window.registry.level_mask
    for rule in rules:
        ready_detector = getattr(rule, "ready_detector", None)
        if ready_detector is None or getattr(rule, "levels", None) is None:
            continue
        # Latency's series of several operations are judged on pooled evidence.
        levels = {*rule.levels, *getattr(rule, "pooled_levels", ())}  # type: ignore[attr-defined]
        for r in np.flatnonzero(mask_of(levels)[sids]).tolist():
            det = ready_detector(int(sids[r]))
            if det is None or type(det).__name__ in ("ErrorRateThreshold", "StaticSLO"):
                continue
            e = expected_of(det, Row(window.features, consts, int(sids[r])))
            if math.isfinite(e):
                out.setdefault(rule.name, {})[r] = e
    return out


def test_bank_baselines_equal_each_series_detector() -> None:
    cfg = Config()
    sim = SimConfig(
        seed=3,
        duration_s=900,
        rate=60,
        merchants=40,
        daily=False,
        incidents=[Incident("provider_outage", 500, 120, provider="alipay")],
    )
    values = [orjson.dumps(e, option=orjson.OPT_SERIALIZE_NUMPY) for e in simulate(sim)]
    pipeline = Pipeline(cfg)
    metrics = PaymentMetrics(cfg)
    compared = 0
    for at in range(0, len(values), 2000):
        chunk = values[at : at + 2000]
        result = pipeline.process(chunk, [Source("t", 0, at + j) for j in range(len(chunk))])
        for window in result.judged:
            sids, _ = metrics._exported(window)
            rules = pipeline.state.rules
            got = {
                b.rule: dict(zip(b.rows.tolist(), b.expected.tolist(), strict=True))
                for b in baselines(window, rules, sids)
            }
            want = _per_series(window, rules, sids)
            for b in baselines(window, rules, sids):  # latency is exported in seconds
                if b.signal == "latency":
                    want[b.rule] = {r: e / 1000.0 for r, e in want[b.rule].items()}
            assert got == want
            compared += sum(len(v) for v in want.values())
    assert compared > 1000  # warmed-up series of every learning rule were compared
