"""`make eval` scoring: oracle delays from the true parameters, delays, episodes, confounders."""

from __future__ import annotations

import math

import orjson
import pytest

from benchmarks.eval_run import baseline_config, oracle_delay_s, score_seed, summary
from benchmarks.oracle_run import CallCollector, realized_delay_s
from benchmarks.second_generator import events
from models import budget
from stream.config import load_config
from stream.judge.catalog import build_rules

H = 12.47
T = 1_000_000


def test_oracle_delay_follows_the_true_parameters() -> None:
    # Timeouts 0.1 % -> 2 % at one call a second: Lorden's h / KL.
    rate = {"stat": "rate", "p0": 0.001, "p1": 0.02, "calls_per_s": 1.0}
    assert oracle_delay_s(rate, H) == pytest.approx(H / float(budget.kl_bernoulli(0.02, 0.001)))
    # Ten times the traffic, a tenth of the delay.
    assert oracle_delay_s({**rate, "calls_per_s": 10.0}, H) == pytest.approx(
        oracle_delay_s(rate, H) / 10
    )
    # A ramp to the same share takes longer than the step.
    assert oracle_delay_s({**rate, "ramp_s": 600.0}, H) > oracle_delay_s(rate, H)
    drop = {"stat": "volume", "rate0": 10.0, "rate1": 0.0}
    assert oracle_delay_s(drop, H) == pytest.approx(H / 10)
    assert math.isnan(oracle_delay_s({}, H))


def label(kind: str, series: dict[str, str], is_incident: bool = True) -> dict[str, object]:
    truth = {"stat": "rate", "p0": 0.001, "p1": 0.5, "calls_per_s": 2.0}
    return {"kind": kind, "series": series, "start_ms": T, "end_ms": T + 300_000,
            "is_incident": is_incident, "magnitude": 0.5, "truth": truth}  # fmt: skip


def fire(aid: str, series: dict[str, str], at_s: float) -> dict[str, object]:
    return {"alert_id": aid, "status": "firing", "rule": "r", "series": series,
            "window_end": T + int(at_s * 1000), "summary": ""}  # fmt: skip


def test_scoring_counts_delay_repeat_episodes_false_alerts_and_confounders() -> None:
    m = {"merchant_id": "M1007"}
    labels = [label("merchant_misconfig", m), label("promotion", {"merchant_id": "M1001"}, False)]
    alerts = [
        fire("a", {"provider": "alipay", "merchant_id": "M1007"}, 20),
        fire("b", {"provider": "alipay", "merchant_id": "M1007"}, 90),  # the same series again
        fire("c", {"provider": "alipay", "merchant_id": "M1001"}, 30),  # during the promotion
        fire("d", {"provider": "paypal"}, 4000),  # matches nothing
    ]
    res = score_seed(alerts, labels, seed=1, hours=2.0, h=H)
    (inc,) = res.incidents
    assert inc.delay_s == 20 and inc.max_episodes == 2
    assert inc.oracle_s == pytest.approx(oracle_delay_s(labels[0]["truth"], H))  # type: ignore[arg-type]
    s = summary([res])
    assert s["recall"] == 1.0 and s["false_per_hour"] == 0.5
    assert s["confounder_alerts"] == {"promotion": 1}


def test_the_plain_baseline_judges_static_shares_and_nothing_learned() -> None:
    cfg = load_config(None)
    names = {r.name for r in build_rules(baseline_config(cfg))}
    assert names == {"static_system_errors", "static_timeouts", "static_config_errors",
                     "metric_anomaly"}  # fmt: skip
    assert "system_error_rate" in {r.name for r in build_rules(cfg)}  # the original is untouched


def test_the_oracle_run_pools_a_merchants_broken_keys_across_its_providers() -> None:
    # The second generator's merchant_keys_broken fails every call of one merchant at
    # each of its providers.  The oracle (p1 = 1, p0 floored at 0.1 %) pages at the
    # second failing call counted across providers, the merchant being its series.
    evs, truth = events(202, 3.0)
    (lab,) = [x for x in truth if x["kind"] == "merchant_keys_broken"]
    collector = CallCollector([lab])
    for _ in collector.tee(orjson.dumps(ev) for ev in evs):
        pass
    mine = [
        ev for ev in evs
        if ev["event_type"] == "provider_call" and ev["merchant_id"] == lab["series"]["merchant_id"]
        and lab["start_ms"] <= ev["event_ts"] < lab["end_ms"]
    ]  # fmt: skip
    assert len({ev["provider"] for ev in mine}) >= 2
    assert all(ev["outcome"] == "failure" for ev in mine)
    second = (mine[1]["event_ts"] - lab["start_ms"]) / 1000
    assert realized_delay_s(lab["truth"], lab["kind"], collector.calls(0), H) == pytest.approx(
        second, abs=1e-3
    )
