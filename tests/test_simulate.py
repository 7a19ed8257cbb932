"""The traffic simulator: reproducible, valid v1 events, realistic shape, incidents that bite."""

from __future__ import annotations

import csv
import gzip
import hashlib
import itertools
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from stream.ingest.decode import decode_batch
from stream.ingest.events import (
    ACK_STATUSES,
    ERROR_CLASSES,
    OPERATIONS,
    OUTCOMES,
    SYSTEM_ERROR_CLASSES,
    Source,
)
from stream.ingest.taxonomy import ErrorTaxonomy
from stream.sim.simulate import (
    INCIDENT_KINDS,
    RANDOM_SUITE,
    Incident,
    SimConfig,
    default_incident_suite,
    demo_config,
    encode,
    labels,
    merchant_ids,
    parse_incident,
    random_incident_suite,
    simulate,
    write_jsonl,
    write_labels,
)

Event = dict[str, Any]
SUITE_S = 3600.0
ROOT = Path(__file__).resolve().parents[1]
CSV_PATH = ROOT / "stream" / "ingest" / "data" / "error_codes.csv"


@pytest.fixture(scope="module")
def suite_cfg() -> SimConfig:
    return SimConfig(seed=11, duration_s=SUITE_S, incidents=default_incident_suite(SUITE_S))


@pytest.fixture(scope="module")
def suite(suite_cfg: SimConfig) -> list[Event]:
    """One hour at 40 calls/s with one incident of each kind: shared by most tests."""
    return list(simulate(suite_cfg))


def _inc(cfg: SimConfig, kind: str) -> tuple[Incident, int, int]:
    inc = next(i for i in cfg.incidents if i.kind == kind)
    start = cfg.start_ms + int(inc.start_s * 1000)
    return inc, start, start + int(inc.duration_s * 1000)


def _calls(events: list[Event], **match: str) -> list[Event]:
    return [
        e
        for e in events
        if e["event_type"] == "provider_call" and all(e.get(k) == v for k, v in match.items())
    ]


def _between(events: list[Event], t0: int, t1: int) -> list[Event]:
    return [e for e in events if t0 <= e["event_ts"] < t1]


def _during_and_before(events: list[Event], t0: int, t1: int) -> tuple[list[Event], list[Event]]:
    """Events in [t0, t1), and in the span as long just before it."""
    return _between(events, t0, t1), _between(events, t0 - (t1 - t0), t0)


def _share(events: list[Event], pred: Callable[[Event], bool]) -> float:
    return sum(map(pred, events)) / max(1, len(events))


TAXONOMY = ErrorTaxonomy.default()


def _klass(e: Event) -> str | None:
    """The error class as paywatch sees it: given, or derived from the codes."""
    if e["outcome"] in ("success", "pending"):
        return None
    codes = (e.get("provider_code"), e.get("provider_sub_code"), e.get("http_status"))
    return e.get("error_class") or TAXONOMY.classify(
        e["provider"], *codes, e.get("transport_error")
    )


def _system(e: Event) -> bool:
    return _klass(e) in SYSTEM_ERROR_CLASSES


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_gives_identical_bytes_and_another_seed_does_not() -> None:
    cfg = SimConfig(
        seed=3,
        duration_s=120,
        incidents=[parse_incident("cert_rotation:provider=alipay,start=30,duration=40")],
    )
    first = b"".join(map(encode, simulate(cfg)))
    assert first == b"".join(map(encode, simulate(cfg)))
    other = b"".join(map(encode, simulate(SimConfig(seed=4, duration_s=120))))
    assert other != first
    assert len(first) > 100_000  # there is real content to compare


_DIGEST = """
import hashlib, sys
from stream.sim.simulate import SimConfig, default_incident_suite, encode, simulate
cfg = SimConfig(seed=8, duration_s=60, incidents=default_incident_suite(60))
sys.stdout.write(hashlib.sha256(b"".join(map(encode, simulate(cfg)))).hexdigest())
"""


def test_output_is_the_same_in_another_process() -> None:
    """Nothing depends on per-process state such as str hash randomisation."""
    digests = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run([sys.executable, "-c", _DIGEST], env=env, cwd=ROOT,
                              capture_output=True, text=True, check=True)  # fmt: skip
        digests.add(done.stdout)
    cfg = SimConfig(seed=8, duration_s=60, incidents=default_incident_suite(60))
    assert digests == {hashlib.sha256(b"".join(map(encode, simulate(cfg)))).hexdigest()}


def test_events_come_in_event_time_order_with_unique_ids(suite: list[Event]) -> None:
    ts = np.array([e["event_ts"] for e in suite])
    assert (np.diff(ts) >= 0).all()
    ids = [e["event_id"] for e in suite]
    assert len(set(ids)) == len(ids)
    assert Counter(e["event_type"] for e in suite).keys() == {
        "provider_call",
        "payment_notification",
        "metric",
    }


# --------------------------------------------------------------------------- schema


_COMMON = {
    "schema_version": int,
    "event_type": str,
    "event_id": str,
    "event_ts": int,
    "service": str,
}
_REQUIRED = {
    "provider_call": {"provider": str, "merchant_id": str, "operation": str, "outcome": str,
                      "latency_ms": float},
    "payment_notification": {"provider": str, "merchant_id": str, "notify_id": str,
                             "signature_verified": bool, "ack_status": str},
    "metric": {"name": str, "value": float},
}  # fmt: skip
_OPTIONAL = {
    "env": str, "host": str, "region": str, "trace_id": str, "api_version": str, "sdk_method": str,
    "channel": str, "endpoint": str, "http_status": int, "error_class": str, "provider_code": str,
    "provider_sub_code": str, "transport_error": str, "signing_key_id": str, "attempt": int,
    "out_trade_no": str, "provider_trade_no": str, "amount_minor": int, "currency": str,
    "trade_state": str, "notify_kind": str, "provider_event_type": str, "handler_latency_ms": float,
    "is_duplicate": bool, "amount_matches": bool, "verify_error": str, "clock_skew_ms": int,
    "provider_ts": int, "business_ts": int, "unit": str, "kind": str, "labels": dict,
}  # fmt: skip


def test_every_event_has_the_v1_fields_with_the_right_types(suite: list[Event]) -> None:
    for e in suite:
        want = _COMMON | _REQUIRED[e["event_type"]]
        for key, typ in want.items():
            assert type(e[key]) is typ, (key, e)
        for key, value in e.items():
            if key not in want:
                assert type(value) is _OPTIONAL[key], (key, e)
        assert e["schema_version"] == 1
        if e["event_type"] == "provider_call":
            assert e["operation"] in OPERATIONS and e["outcome"] in OUTCOMES
            assert e["latency_ms"] >= 0 and e["provider"] == e["provider"].lower()
            assert e.get("error_class", "business_decline") in ERROR_CLASSES
            if e["outcome"] == "success":
                assert not {"error_class", "transport_error"} & e.keys()
        elif e["event_type"] == "payment_notification":
            assert e["ack_status"] in ACK_STATUSES
        else:
            assert math.isfinite(e["value"]) and all(type(v) is str for v in e["labels"].values())


def test_the_real_decoder_accepts_every_event(suite: list[Event]) -> None:
    sample = suite[:: max(1, len(suite) // 40_000)]
    raw = [encode(e) for e in sample]
    batch = decode_batch(raw, [Source("payments.events", 0, i) for i in range(len(raw))])
    assert batch.rejected == []
    assert batch.accepted == len(sample)


def test_error_codes_are_real_and_agree_with_the_taxonomy(suite: list[Event]) -> None:
    """Codes come from error_codes.csv; a failure without error_class still gets the right class."""
    known = {(r["provider"], r["code"], r["sub_code"]) for r in csv.DictReader(CSV_PATH.open())}
    csv_provider = {"wechatpay": "wechatpay_v3", "alipay": "alipay", "paypal": "paypal"}

    failures = [e for e in _calls(suite) if e["outcome"] in ("failure", "unknown")]
    with_class = without = 0
    for e in failures:
        code, sub = e.get("provider_code"), e.get("provider_sub_code", "")
        if code and e["provider"] in csv_provider:
            assert (csv_provider[e["provider"]], code, sub) in known, e
        derived = TAXONOMY.classify(
            e["provider"], code, sub or None, e.get("http_status"), e.get("transport_error")
        )
        if "error_class" in e:
            with_class += 1
            if e["provider"] != "unionpay":  # no taxonomy rows: its services always send the class
                assert derived == e["error_class"], e
        else:
            without += 1
            assert derived in ERROR_CLASSES, e
    assert 0.1 < without / (with_class + without) < 0.3  # most failures carry error_class


# --------------------------------------------------------------------------- traffic shape


def test_merchant_volume_is_zipf_skewed(suite: list[Event]) -> None:
    counts = Counter(e["merchant_id"] for e in _calls(suite))
    volume = np.array([counts[m] for m in merchant_ids(60)], dtype=float)
    assert len(counts) == 60
    ranked = np.sort(volume)[::-1]
    assert ranked[:6].sum() / ranked.sum() > 0.4  # a few big merchants ...
    assert ranked[0] > 15 * np.median(ranked)  # ... and a long tail
    slope = np.polyfit(np.log(np.arange(1, 61)), np.log(ranked), 1)[0]
    assert -1.5 < slope < -0.7


def test_provider_and_operation_mix(suite: list[Event]) -> None:
    calls = _calls(suite)
    share = {p: n / len(calls) for p, n in Counter(e["provider"] for e in calls).items()}
    assert share["wechatpay"] > share["alipay"] > share["paypal"] > share["unionpay"] > 0.04
    ops = Counter(e["operation"] for e in calls)
    assert ops.most_common(1)[0][0] == "create_payment"
    assert {
        "query_payment",
        "refund",
        "close_payment",
        "query_refund",
        "capture",
        "cert_fetch",
        "token_fetch",
    } <= ops.keys()
    assert 35 < len(calls) / SUITE_S < 70  # default 40/s at the daily mean; this is mid-morning


def test_daily_curve_has_a_night_trough_and_day_peaks() -> None:
    day = 86_400_000
    cfg = SimConfig(seed=5, start_ms=1_772_409_600_000, duration_s=86_400, rate=0.6, metrics=False)
    hours = np.zeros(24)
    for e in simulate(cfg):
        if e["event_type"] == "provider_call":
            local = (e["event_ts"] - cfg.start_ms) % day // 3_600_000  # start is 08:00 Beijing
            hours[(local + 8) % 24] += 1
    assert hours[2:6].mean() * 4 < hours[11:14].mean()  # night trough vs lunch
    assert hours[19:22].mean() > hours[11:14].mean() * 0.8  # evening peak
    assert abs(hours.sum() / 86_400 - 0.6) < 0.05  # rate is the daily mean


def test_weekly_pattern_lifts_the_weekend() -> None:
    monday = 1_772_380_800_000  # 2026-03-02 00:00 in Beijing
    cfg = SimConfig(seed=6, start_ms=monday, duration_s=7 * 86_400, rate=0.1, daily=False,
                    weekly=True, metrics=False)  # fmt: skip
    days = Counter(
        (e["event_ts"] - monday) // 86_400_000
        for e in simulate(cfg)
        if e["event_type"] == "provider_call"
    )
    assert days[5] > 1.08 * days[0] and days[6] > 1.05 * days[1]  # Sat, Sun vs Mon, Tue


def test_background_noise_is_declines_and_rare_system_errors(
    suite: list[Event], suite_cfg: SimConfig
) -> None:
    quiet = _between(_calls(suite), suite_cfg.start_ms, suite_cfg.start_ms + 800_000)  # no incident
    create = [e for e in quiet if e["operation"] == "create_payment"]
    assert 0.01 < _share(create, lambda e: _klass(e) == "business_decline") < 0.05
    assert 0.0005 < _share(quiet, _system) < 0.005
    lat = {
        p: np.median([e["latency_ms"] for e in create if e["provider"] == p])
        for p in ("wechatpay", "paypal")
    }
    assert 100 < lat["wechatpay"] < 300 and lat["paypal"] > lat["wechatpay"]


def test_callbacks_follow_paid_orders_and_are_mostly_acked(suite: list[Event]) -> None:
    created = {
        e["out_trade_no"]: e for e in _calls(suite, operation="create_payment", outcome="success")
    }
    notes = [e for e in suite if e["event_type"] == "payment_notification"]
    assert all(n["out_trade_no"] in created for n in notes)
    assert all(n["event_ts"] > created[n["out_trade_no"]]["event_ts"] for n in notes)
    first = {n["notify_id"]: n for n in reversed(notes)}
    assert (
        0.7 < len(first) / len(created) < 0.97
    )  # some abandoned, some lost in the suite's incidents
    quiet = [n for n in notes if n["event_ts"] < suite[0]["event_ts"] + 800_000]  # before incidents
    acks = Counter(n["ack_status"] for n in quiet)
    assert acks["acked"] / len(quiet) > 0.97 and acks["nacked"] > 0 and acks["late"] > 0
    assert 0 < sum(n["is_duplicate"] for n in notes) < 0.02 * len(notes)
    delay = np.median(
        [n["event_ts"] - created[n["out_trade_no"]]["event_ts"] for n in first.values()]
    )
    assert 2_000 < delay < 30_000


def test_metrics_are_a_small_share(suite: list[Event]) -> None:
    metrics = [e for e in suite if e["event_type"] == "metric"]
    assert 0 < len(metrics) < 0.1 * len(suite)
    assert {m["name"] for m in metrics} == {
        "worker_cpu_percent",
        "notify_queue_depth",
        "cert_days_to_expiry",
    }


# --------------------------------------------------------------------------- incidents


def test_provider_outage_fails_most_calls_of_that_provider_only(
    suite: list[Event], suite_cfg: SimConfig
) -> None:
    inc, t0, t1 = _inc(suite_cfg, "provider_outage")
    calls = _calls(suite, provider=inc.provider or "")
    assert _share(_between(calls, t0, t1), _system) > 0.5
    before = _between(calls, suite_cfg.start_ms, t0)
    after = _between(calls, t1, _inc(suite_cfg, "cert_rotation")[1])
    assert _share(before, _system) < 0.01 and _share(after, _system) < 0.01
    others = [e for e in _between(_calls(suite), t0, t1) if e["provider"] != inc.provider]
    assert _share(others, _system) < 0.01
    money = [
        e for e in _between(calls, t0, t1) if e["operation"] == "create_payment" and _system(e)
    ]
    assert (
        _share(money, lambda e: e["outcome"] == "unknown") > 0.95
    )  # result unknown on 5xx/timeout


def test_latency_degradation_slows_calls_and_adds_timeouts(
    suite: list[Event], suite_cfg: SimConfig
) -> None:
    inc, t0, t1 = _inc(suite_cfg, "latency_degradation")
    calls = [
        e for e in _calls(suite, provider=inc.provider or "") if e["operation"] == "query_payment"
    ]
    during = np.median([e["latency_ms"] for e in _between(calls, t0, t1)])
    before = np.median([e["latency_ms"] for e in _between(calls, t0 - 300_000, t0)])
    assert during > 0.7 * inc.magnitude * before
    assert _share(_between(calls, t0, t1), lambda e: "transport_error" in e) > 0.01


def test_merchant_misconfig_fails_that_merchant_with_auth_errors(
    suite: list[Event], suite_cfg: SimConfig
) -> None:
    inc, t0, t1 = _inc(suite_cfg, "merchant_misconfig")
    mine = _between(_calls(suite, merchant_id=inc.merchant_id or ""), t0, t1)
    assert len(mine) > 100
    assert _share(mine, lambda e: e["outcome"] == "failure") > 0.98
    codes = Counter(e.get("provider_code") or e.get("provider_sub_code") for e in mine)
    assert {"SIGN_ERROR", "40002", "AUTHENTICATION_FAILURE"} & codes.keys()
    others = [e for e in _between(_calls(suite), t0, t1) if e["merchant_id"] != inc.merchant_id]
    assert _share(others, lambda e: e.get("error_class") in ("signature", "auth_config")) < 0.001


def test_traffic_drop_lowers_volume_without_errors(
    suite: list[Event], suite_cfg: SimConfig
) -> None:
    inc, t0, t1 = _inc(suite_cfg, "traffic_drop")
    during, before = _during_and_before(_calls(suite, provider=inc.provider or ""), t0, t1)
    assert len(during) < 0.25 * len(before)
    assert _share(during, lambda e: e["outcome"] != "success") < 0.06


def test_callback_loss_removes_callbacks_of_that_provider(
    suite: list[Event], suite_cfg: SimConfig
) -> None:
    inc, t0, t1 = _inc(suite_cfg, "callback_loss")
    notes = [e for e in suite if e["event_type"] == "payment_notification"]
    lost, before = _during_and_before([n for n in notes if n["provider"] == inc.provider], t0, t1)
    assert len(before) > 500 and lost == []
    assert len(_between([n for n in notes if n["provider"] != inc.provider], t0, t1)) > 100
    paid = _between(
        _calls(suite, provider=inc.provider or "", operation="create_payment", outcome="success"),
        t0,
        t1,
    )
    assert len(paid) > 500  # orders keep being created: only their callbacks go missing


def test_cert_rotation_fails_verification_with_the_new_key(
    suite: list[Event], suite_cfg: SimConfig
) -> None:
    inc, t0, t1 = _inc(suite_cfg, "cert_rotation")
    notes = [
        e
        for e in suite
        if e["event_type"] == "payment_notification" and e["provider"] == inc.provider
    ]
    before, during, after = (
        _between(notes, t0 - 300_000, t0),
        _between(notes, t0, t1),
        _between(notes, t1, t1 + 300_000),
    )
    assert all(n["signature_verified"] for n in before)
    assert during and not any(n["signature_verified"] for n in during)
    assert all(n["ack_status"] == "nacked" and "verify_error" in n for n in during)
    assert _share(after, lambda n: n["signature_verified"]) > 0.95  # the service learnt the new key
    keys_before = {n["signing_key_id"] for n in before}
    assert not keys_before & {n["signing_key_id"] for n in during + after}
    # the provider retries what we nacked: once the new key is known, those verify
    retried = {n["notify_id"] for n in during} & {n["notify_id"] for n in after}
    assert len(retried) > 10


def test_promotion_raises_volume_without_errors_and_is_not_an_incident(
    suite: list[Event], suite_cfg: SimConfig
) -> None:
    inc, t0, t1 = _inc(suite_cfg, "promotion")
    during, before = _during_and_before(_calls(suite, merchant_id=inc.merchant_id or ""), t0, t1)
    assert 2.4 < len(during) / len(before) < 3.6
    assert _share(during, _system) < 0.01
    (label,) = [x for x in labels(suite_cfg) if x["kind"] == "promotion"]
    assert label["is_incident"] is False


def test_operation_narrows_an_incident_to_one_operation() -> None:
    cfg = SimConfig(seed=12, duration_s=600, daily=False, metrics=False, incidents=[
        parse_incident("traffic_drop:provider=wechatpay,operation=query_payment,start=300,duration=300"),
        parse_incident("latency_degradation:provider=alipay,operation=refund,start=300,duration=300"),
    ])  # fmt: skip
    events = list(simulate(cfg))
    mid = cfg.start_ms + 300_000

    def volume(op: str) -> float:
        calls = _calls(events, provider="wechatpay", operation=op)
        return len(_between(calls, mid, cfg.end_ms)) / len(_between(calls, cfg.start_ms, mid))

    def latency(op: str) -> float:
        calls = _calls(events, provider="alipay", operation=op)
        lat = [np.median([e["latency_ms"] for e in _between(calls, t0, t1)])
               for t0, t1 in ((cfg.start_ms, mid), (mid, cfg.end_ms))]  # fmt: skip
        return float(lat[1] / lat[0])

    assert volume("query_payment") < 0.2 and 0.8 < volume("create_payment") < 1.25
    assert latency("refund") > 3.5 and 0.8 < latency("query_payment") < 1.25


def test_labels_are_the_ground_truth(suite_cfg: SimConfig, tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    write_labels(suite_cfg, path)
    got = orjson.loads(path.read_bytes())
    assert [x["kind"] for x in got] == [i.kind for i in suite_cfg.incidents]
    assert all(x["is_incident"] == INCIDENT_KINDS[x["kind"]].is_incident for x in got)
    outage = got[0]
    assert outage["series"] == {"provider": "alipay"}
    assert suite_cfg.start_ms < outage["start_ms"] < outage["end_ms"] < suite_cfg.end_ms
    ends = [(x["start_ms"], x["end_ms"]) for x in got]
    assert all(e0 < s1 for (_, e0), (s1, _) in itertools.pairwise(ends))  # no overlap


def test_demo_config_is_calm_then_an_outage_then_calm() -> None:
    cfg = demo_config(120)
    (label,) = labels(cfg)
    assert label["kind"] == "provider_outage" and label["end_ms"] - label["start_ms"] == 24_000
    events = list(simulate(cfg))
    calls = _calls(events, provider="alipay")
    assert _share(_between(calls, cfg.start_ms, label["start_ms"]), _system) < 0.01
    assert _share(_between(calls, label["start_ms"], label["end_ms"]), _system) > 0.6
    assert _share(_between(calls, label["end_ms"], cfg.end_ms), _system) < 0.01


# --------------------------------------------------------------------------- files and parsing


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_jsonl_round_trip(tmp_path: Path, name: str) -> None:
    events = list(simulate(SimConfig(seed=2, duration_s=30)))
    path = tmp_path / name
    assert write_jsonl(events, path) == len(events)
    opener: Any = gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as f:
        assert [orjson.loads(line) for line in f] == events
    first = path.read_bytes()
    write_jsonl(events, path)
    assert path.read_bytes() == first  # .gz too: no timestamp in the gzip header
    assert (
        first[:2] == b"\x1f\x8b"
        if name.endswith(".gz")
        else first.startswith(b'{"schema_version":1')
    )


def test_parse_incident_reads_the_cli_syntax() -> None:
    inc = parse_incident(
        "latency_degradation: provider=wechatpay, operation=refund,"
        " start=60, duration=30, magnitude=4"
    )
    assert inc == Incident(
        "latency_degradation", 60, 30, provider="wechatpay", operation="refund", magnitude=4
    )
    assert parse_incident(inc.spec()) == inc
    assert parse_incident("promotion:start=0,duration=10").magnitude == 3.0


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("outage:provider=alipay,start=1,duration=2", "unknown kind 'outage'"),
        ("provider_outage:provder=alipay,start=1,duration=2", "unknown key 'provder'"),
        ("provider_outage:provider=alipay,start=1,duration=ten", "duration='ten' is not a number"),
        ("provider_outage:provider=alipay,duration=2", "missing start"),
        ("provider_outage:start=1,duration=2", "needs a target provider"),
        (
            "provider_outage:provider=alipay,start=1,duration=2,magnitude=2",
            "magnitude=2.0 is a share",
        ),
        (
            "traffic_drop:operation=pay,provider=alipay,start=1,duration=2",
            "unknown operation 'pay'",
        ),
        ("traffic_drop:start=1,duration=2", "needs a target provider=... or merchant_id"),
        ("callback_loss:provider,start=1,duration=2", "'provider' is not key=value"),
        ("promotion:start=1,duration=0", "duration must be > 0"),
        ("promotion:start=-5,duration=3", "start_s=-5.0 must be a finite number >= 0"),
        ("promotion:start=5,duration=3,magnitude=0.5", "is a multiplier, must be >= 1"),
        ("callback_loss:provider=alipay,operation=refund,start=1,duration=2", "acts on callbacks"),
    ],
)
def test_parse_incident_names_the_bad_part(spec: str, names: str) -> None:
    with pytest.raises(ValueError, match="incident '") as err:
        parse_incident(spec)
    assert names in str(err.value)
    assert "\n" not in str(err.value)


def test_config_rejects_targets_it_does_not_simulate() -> None:
    with pytest.raises(ValueError, match="provider 'stripe' is not simulated"):
        SimConfig(incidents=[Incident("provider_outage", 1, 2, provider="stripe")])
    with pytest.raises(ValueError, match=r"merchant 'M9999' is not simulated \(M1001..M1060\)"):
        SimConfig(incidents=[Incident("merchant_misconfig", 1, 2, merchant_id="M9999")])
    with pytest.raises(ValueError, match="unknown provider 'stripe'"):
        SimConfig(providers={"stripe": 1.0})
    with pytest.raises(ValueError, match="rate=0"):
        SimConfig(rate=0)


def test_generator_is_fast() -> None:
    """Regression guard; the measured figure (>100k events/s alone) is in the report."""
    cfg = SimConfig(seed=9, duration_s=600)
    t = time.perf_counter()
    n = sum(1 for _ in simulate(cfg))
    rate = n / (time.perf_counter() - t)
    assert n > 30_000 and rate > 30_000, f"{rate:,.0f} events/s"


# --------------------------------------------------------------------------- issue 11 kinds


@pytest.fixture(scope="module")
def kinds_cfg() -> SimConfig:
    """Ten minutes, flat traffic, one of each new kind in its own two minutes."""
    incs = [
        Incident("timeouts", 60, 100, provider="wechatpay", magnitude=0.2),
        Incident("gradual_degradation", 180, 100, provider="alipay", magnitude=0.6),
        Incident("latency_degradation", 300, 100, merchant_id="M1002", magnitude=3.0),
        Incident("maintenance", 420, 100, provider="paypal", magnitude=1.0),
        Incident("merchant_quiet", 420, 100, merchant_id="M1003"),
        Incident("lull", 540, 50, magnitude=0.6),
    ]
    return SimConfig(seed=5, duration_s=600, rate=60, daily=False, incidents=incs)


@pytest.fixture(scope="module")
def kinds(kinds_cfg: SimConfig) -> list[Event]:
    return list(simulate(kinds_cfg))


def test_timeouts_only_raise_timeouts(kinds_cfg: SimConfig, kinds: list[Event]) -> None:
    _, t0, t1 = _inc(kinds_cfg, "timeouts")
    during, before = _during_and_before(_calls(kinds, provider="wechatpay"), t0, t1)
    timeout = lambda e: _klass(e) == "timeout"  # noqa: E731
    assert _share(before, timeout) < 0.01 and 0.15 < _share(during, timeout) < 0.3
    other = lambda e: _system(e) and _klass(e) != "timeout"  # noqa: E731
    assert _share(during, other) < 0.01


def test_gradual_degradation_rises_over_its_span(kinds_cfg: SimConfig, kinds: list[Event]) -> None:
    _, t0, t1 = _inc(kinds_cfg, "gradual_degradation")
    calls = _calls(kinds, provider="alipay")
    mid = (t0 + t1) // 2
    first, second = _between(calls, t0, mid), _between(calls, mid, t1)
    assert _share(first, _system) < 0.2 < _share(second, _system) < 0.6


def test_merchant_latency_slows_only_that_merchant(
    kinds_cfg: SimConfig, kinds: list[Event]
) -> None:
    _, t0, t1 = _inc(kinds_cfg, "latency_degradation")

    def median(events: list[Event]) -> float:
        return float(np.median([e["latency_ms"] for e in events]))

    during, before = _during_and_before(_calls(kinds, merchant_id="M1002"), t0, t1)
    assert median(during) > 2.2 * median(before)
    others, others_before = _during_and_before(_calls(kinds, merchant_id="M1001"), t0, t1)
    assert median(others) < 1.3 * median(others_before)


def test_confounders_move_traffic(kinds_cfg: SimConfig, kinds: list[Event]) -> None:
    _, t0, t1 = _inc(kinds_cfg, "maintenance")
    during, before = _during_and_before(_calls(kinds, provider="paypal"), t0, t1)
    assert len(during) == 0 < len(before)
    during, before = _during_and_before(_calls(kinds, merchant_id="M1003"), t0, t1)
    assert len(during) == 0 < len(before)
    _, t0, t1 = _inc(kinds_cfg, "lull")
    mid = (t0 + t1) // 2
    dip = _between(_calls(kinds), mid - 10_000, mid + 10_000)
    normal = _between(_calls(kinds), t0 - 200_000, t0 - 180_000)  # before the maintenance
    assert len(dip) < 0.6 * len(normal)


def test_labels_carry_the_true_parameters(kinds_cfg: SimConfig) -> None:
    by_kind = {lab["kind"]: lab for lab in labels(kinds_cfg)}
    t = by_kind["timeouts"]["truth"]
    assert t["stat"] == "rate" and t["p0"] < 0.002 and t["p1"] == pytest.approx(0.2, abs=0.002)
    # wechatpay carries 45 % of 60 calls/s.
    assert t["calls_per_s"] == pytest.approx(0.45 * 60, rel=0.01)
    assert by_kind["latency_degradation"]["truth"]["ratio"] == 3.0
    m = by_kind["maintenance"]["truth"]
    assert m["stat"] == "volume" and m["rate1"] == 0.0 and m["rate0"] > 0
    assert not by_kind["lull"]["is_incident"] and not by_kind["maintenance"]["is_incident"]


def test_random_suite_is_seeded_and_covers_every_kind_of_the_table() -> None:
    a = random_incident_suite(3, 4 * 3600)
    assert [i.spec() for i in a] == [i.spec() for i in random_incident_suite(3, 4 * 3600)]
    assert [i.spec() for i in a] != [i.spec() for i in random_incident_suite(4, 4 * 3600)]
    assert sorted(i.kind for i in a) == sorted(k for k, *_ in RANDOM_SUITE)
    ends = [(i.start_s, i.start_s + i.duration_s) for i in a]
    assert all(e0 <= s1 for (_, e0), (s1, _) in itertools.pairwise(ends))  # no overlap
