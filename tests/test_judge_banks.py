"""Rules judged by a bank (one vectorised call per window) page exactly as per-series
detectors do, over a simulated suite with every kind of incident."""

from __future__ import annotations

import numpy as np
import orjson

from models.bank import Columns
from models.sequential import VolumeParams
from stream.config import Config
from stream.ingest.events import SourceColumns
from stream.judge.rules import DetectorRule
from stream.pipeline import Pipeline
from stream.sim.simulate import SimConfig, default_incident_suite, simulate


def _alerts(per_series: bool) -> list[dict[str, object]]:
    cfg = Config()
    p = Pipeline(cfg)
    banked = [r for r in p.state.rules if isinstance(r, DetectorRule) and r.bank is not None]
    assert {r.name for r in banked} >= {"config_errors", "latency", "system_error_rate"}
    if per_series:
        for rule in banked:
            rule.bank = None
    sim = SimConfig(seed=3, duration_s=2400, rate=30, merchants=40, daily=False)
    sim.incidents = default_incident_suite(2400, warmup_s=600)
    values = [orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY) for ev in simulate(sim)]
    out: list[dict[str, object]] = []
    for at in range(0, len(values), 4000):
        chunk = values[at : at + 4000]
        src = SourceColumns(["t"] * len(chunk), [0] * len(chunk), range(at, at + len(chunk)))
        out.extend(a.to_dict() for a in p.process(chunk, src).alerts)
    out.extend(a.to_dict() for a in p.flush().alerts)
    return out


def test_banked_rules_page_exactly_like_per_series_detectors() -> None:
    banked, reference = _alerts(False), _alerts(True)
    firing = {a["rule"] for a in reference if a["status"] == "firing"}
    # The suite pages through the banked rules (else this compares nothing).
    assert {"system_error_rate", "latency", "config_errors"} <= firing, firing

    # Except traffic_drop: its bank also knows the fleet's demand (a per-series detector
    # has no fleet), tested below; and latency of a mix of operations (a provider's, a
    # merchant's calls), judged on the pooled evidence of its operations' bank
    # (tests/test_latency_pooled.py), which per-series detectors do not pool.  A pooled
    # episode that ends ends the operations' episodes it explained (the lifecycle), so
    # the operations' latency records are the same until the first pooled one resolves.
    def pooled(a: dict[str, object]) -> bool:
        return a["rule"] == "latency" and "operation" not in a["series"]  # type: ignore[operator]

    cut = min(int(a["window_end"]) for a in banked if pooled(a) and a["status"] == "resolved")  # type: ignore[call-overload]

    def same(alerts: list[dict[str, object]]) -> list[bytes]:
        return [
            orjson.dumps(a)
            for a in alerts
            if a["rule"] != "traffic_drop"
            and not pooled(a)
            and (a["rule"] != "latency" or int(a["window_end"]) < cut)  # type: ignore[call-overload]
        ]

    assert any(a["rule"] == "latency" and int(a["window_end"]) < cut for a in reference)  # type: ignore[call-overload]
    assert same(banked) == same(reference)


def _volume_pages(factors: np.ndarray, groups: list[int] | None = None) -> np.ndarray:
    """Per series, whether the volume bank pages: 8 series at 40 calls a window, 2 h of
    steady traffic then an hour with each series' calls scaled by its row of ``factors``;
    ``groups``: each series' provider (the fleet's demand leaves its own out)."""
    rng = np.random.default_rng(5)
    bank = VolumeParams().bank()
    slots = np.arange(factors.shape[0])
    paged = np.zeros(slots.size, bool)
    for i in range(1080):
        scale = factors[:, min(i - 720, factors.shape[1] - 1)] if i >= 720 else np.ones(slots.size)
        x: Columns = {"volume": rng.poisson(40.0 * scale).astype(float), "window_s": 10.0}
        if groups is not None:
            x["demand_group"] = np.array(groups, float)
        paged |= bank.score_learn_many(slots, x) >= 0.5
    return paged


def test_a_fleet_wide_dip_is_demand_and_one_series_drop_still_pages() -> None:
    t = np.arange(360)
    dip = 1.0 - 0.55 * np.sin(np.pi * np.minimum(t / 72.0, 1.0))  # 55 % over 12 min
    fleet = np.tile(dip, (8, 1))
    assert not _volume_pages(fleet).any()
    one = np.ones((8, 360))
    one[3, :30] = 0.3  # one series loses 70 % for 5 minutes
    assert _volume_pages(one).tolist() == [i == 3 for i in range(8)]


def test_a_providers_drop_is_not_explained_by_its_own_series() -> None:
    # One provider (its own series and its operations): no other provider to tell the
    # fleet's demand from, so a 60 % drop is judged against the forecast and pages.
    drop = np.full((8, 360), 0.4)
    assert _volume_pages(drop, groups=[0] * 8).all()
    # Two providers of four series each: the one that loses 60 % pages, the other
    # (its demand estimated from the first) does not; a dip of both is demand.
    one = np.ones((8, 360))
    one[:4, :30] = 0.4
    assert _volume_pages(one, groups=[0] * 4 + [1] * 4).tolist() == [True] * 4 + [False] * 4
    t = np.arange(360)
    dip = 1.0 - 0.55 * np.sin(np.pi * np.minimum(t / 72.0, 1.0))  # 55 % over 12 min
    assert not _volume_pages(np.tile(dip, (8, 1)), groups=[0] * 4 + [1] * 4).any()
