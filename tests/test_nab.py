"""NAB scoring on hand-computed cases, and a quick run on real NAB files."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from models.nab import (
    PROFILES,
    NabFile,
    probationary_length,
    scaled_sigmoid,
    score_corpus,
    windows_to_indices,
)

STD = PROFILES["standard"]
NAB = Path(__file__).resolve().parents[2] / "shared" / "nab"


def _file(
    n: int, hits: dict[int, float], windows: list[tuple[int, int]], probation: int = 0
) -> NabFile:
    s = np.zeros(n)
    for i, v in hits.items():
        s[i] = v
    return NabFile("f", s, windows, probation=probation)


def test_detection_at_window_start_earns_a_tp_and_normalises_to_100() -> None:
    r = score_corpus([_file(100, {40: 1.0}, [(40, 59)])], STD)
    assert r.raw == pytest.approx(1.0)
    assert (r.null, r.perfect, r.normalised) == (-1.0, 1.0, pytest.approx(100.0))
    assert (r.tp, r.fn, r.fp) == (1, 0, 0)


def test_null_detector_normalises_to_0_and_costs_a_fn_per_window() -> None:
    f = _file(100, {}, [(10, 19), (60, 69)])
    for prof in PROFILES.values():
        r = score_corpus([f], prof)
        assert r.raw == pytest.approx(-2 * prof.a_fn)
        assert r.normalised == pytest.approx(0.0)


def test_lone_false_positive_costs_a_fp() -> None:
    r = score_corpus([_file(50, {30: 0.9}, [])], STD, threshold=0.5)
    assert r.raw == pytest.approx(-0.11)
    low_fp = score_corpus([_file(50, {30: 0.9}, [])], PROFILES["reward_low_FP_rate"], threshold=0.5)
    assert low_fp.raw == pytest.approx(-0.22)


def test_only_earliest_detection_in_a_window_counts_and_late_earns_less() -> None:
    # Window rows 20..29 (width 10); detections at 25 and 27: only 25 counts.
    both = score_corpus([_file(60, {25: 0.9, 27: 0.9}, [(20, 29)])], STD, threshold=0.5)
    y = -(29 - 25 + 1) / 10
    expected = scaled_sigmoid(y) / scaled_sigmoid(-1.0)
    assert both.raw == pytest.approx(expected)
    assert 0.0 < expected < 1.0


def test_fp_just_after_a_window_costs_less_than_far_away() -> None:
    near = score_corpus([_file(100, {20: 0.9, 31: 0.9}, [(20, 29)])], STD, threshold=0.5)
    far = score_corpus([_file(100, {20: 0.9, 90: 0.9}, [(20, 29)])], STD, threshold=0.5)
    # 31 is 2 rows past the right edge: y = 2/9 -> sigmoid penalty, far one costs full A_FP.
    assert near.raw == pytest.approx(1.0 + 0.11 * scaled_sigmoid(2 / 9))
    assert far.raw == pytest.approx(1.0 - 0.11)


def test_probationary_rows_are_not_scored() -> None:
    assert probationary_length(4032) == 604 and probationary_length(10000) == 750
    r = score_corpus([_file(100, {5: 1.0}, [], probation=15)], STD, threshold=0.5)
    assert r.raw == 0.0 and r.fp == 0


def test_sweep_picks_the_threshold_with_best_corpus_score() -> None:
    # A strong FP (0.95) would cost 0.11; the true detection at 0.8 gains 2 -> sweep keeps both.
    r = score_corpus([_file(100, {10: 0.95, 50: 0.8}, [(50, 59)])], STD)
    assert r.threshold == 0.8 and r.raw == pytest.approx(1.0 - 0.11)
    # Many FPs at 0.7 are not worth a late-window catch: threshold stays above them.
    hits = {i: 0.7 for i in range(0, 40, 2)} | {50: 0.8}
    r = score_corpus([_file(100, hits, [(50, 59)])], STD)
    assert r.threshold == 0.8


def test_reward_low_fn_profile_doubles_the_miss_cost() -> None:
    r = score_corpus([_file(100, {}, [(40, 49)])], PROFILES["reward_low_FN_rate"])
    assert r.raw == pytest.approx(-2.0)


def test_windows_to_indices_matches_nab_label_format() -> None:
    ts = [f"2014-04-01 00:{m:02d}:00" for m in range(0, 60, 5)]
    assert windows_to_indices(
        ts, [["2014-04-01 00:10:00.000000", "2014-04-01 00:25:00.000000"]]
    ) == [(2, 5)]


@pytest.mark.skipif(not NAB.is_dir(), reason="NAB subset not present")
def test_real_nab_files_score_well_above_null() -> None:
    from benchmarks.nab_run import run_corpus

    files = [
        "realAdExchange/exchange-3_cpm_results.csv",
        "realAdExchange/exchange-4_cpc_results.csv",
        "artificialNoAnomaly/art_daily_small_noise.csv",
    ]
    out = io.StringIO()
    res = run_corpus(NAB, files, out=out)
    std = res["standard"]
    assert std.tp + std.fn == 4  # 1 + 3 labelled windows, art_daily_small_noise has none
    assert std.per_file["artificialNoAnomaly/art_daily_small_noise.csv"] == 0.0  # no false alarm
    assert std.normalised > 40.0
    assert math.isfinite(res["reward_low_FP_rate"].normalised)
    assert out.getvalue().count("rows,") == 3  # one progress line per file


def test_nab_run_prints_profiles_with_standard_last(tmp_path: Path, capsys) -> None:
    from benchmarks.nab_run import main

    # A tiny NAB-shaped corpus: one flat-ish series with a spike in its labelled window.
    (tmp_path / "data" / "synthetic").mkdir(parents=True)
    (tmp_path / "labels").mkdir()
    rows = ["timestamp,value"]
    for i in range(1000):
        v = 10.0 + (i % 5) * 0.2 + (40.0 if i == 800 else 0.0)
        rows.append(f"2020-01-{1 + i // 288:02d} {(i % 288) // 12:02d}:{(i % 12) * 5:02d}:00,{v}")
    (tmp_path / "data" / "synthetic" / "spike.csv").write_text("\n".join(rows) + "\n")
    start, end = rows[1 + 780].split(",")[0], rows[1 + 829].split(",")[0]
    windows = {"synthetic/spike.csv": [[start + ".000000", end + ".000000"]]}
    (tmp_path / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    assert main([str(tmp_path), "--no-sim"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-3].startswith("nab_reward_low_FN_rate=")
    assert lines[-2].startswith("nab_reward_low_FP_rate=")
    assert lines[-1].startswith("nab_standard=")
    # Caught 20 rows into a 50-row window, no false alarm: 2/(1+e^(5*-0.6))-1 / 0.98661 ≈ 0.92.
    assert 85.0 < float(lines[-1].split("=")[1]) < 100.0


def test_nab_run_bad_directory_is_one_line(tmp_path: Path, capsys) -> None:
    from benchmarks.nab_run import main

    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not a NAB directory" in err and "\n" not in err


def test_nab_run_prints_held_out_figures_and_baselines(tmp_path: Path, capsys) -> None:
    from benchmarks.nab_run import main

    # Two categories, one spiky series each: every category is held out once.
    (tmp_path / "labels").mkdir()
    windows = {}
    for cat, at in (("catA", 800), ("catB", 850)):
        (tmp_path / "data" / cat).mkdir(parents=True)
        rows = ["timestamp,value"]
        for i in range(1000):
            v = 10.0 + (i % 5) * 0.2 + (40.0 if i == at else 0.0)
            rows.append(
                f"2020-01-{1 + i // 288:02d} {(i % 288) // 12:02d}:{(i % 12) * 5:02d}:00,{v}"
            )
        (tmp_path / "data" / cat / "s.csv").write_text("\n".join(rows) + "\n")
        start, end = rows[1 + at - 20].split(",")[0], rows[1 + at + 29].split(",")[0]
        windows[f"{cat}/s.csv"] = [[start + ".000000", end + ".000000"]]
    (tmp_path / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    assert main([str(tmp_path), "--no-sim"]) == 0
    out = capsys.readouterr().out
    assert "== leave-one-category-out" in out
    # Five groups (the shipped detector, the one-lag detector and the one without the
    # exclusion zone it replaced, two baselines) x two readings; the shipped detector has
    # nothing but its threshold to choose.
    assert out.count("held out catA") == 10 and out.count("held out catB") == 10
    assert "MetricDetector     rows" in out and "shipped / " in out
    names = ("MetricDetector", "Metric, one lag (50)", "Metric, no excl. zone")
    for name in (*names, "WindowedGaussian", "HalfSpaceTrees"):
        assert f"{name} (alerts):" in out and f"{name} (rows):" in out
    assert out.strip().splitlines()[-1].startswith("nab_standard=")


def test_simulator_part_compares_detectors_at_thresholds_calibrated_on_a_null_run() -> None:
    from benchmarks.nab_sim import NULL_SEED, report

    out = io.StringIO()
    res = report(out, hours=1.0, providers={"wechatpay": 1.0}, seeds=(11,))
    text = out.getvalue()
    assert f"seeds 11 with host incidents, null seed {NULL_SEED} without" in text
    assert "12 incidents" in text and "/series-h" in text
    # Every detector at the Gaussian's own null-run false-alarm rate, and at fixed budgets.
    matched = [ln for ln in text.splitlines() if ln.startswith("matched: ")]
    assert len(matched) == 3 and "the windowed Gaussian's at |z| > 4" in matched[0]
    # Lines per detector: its fixed thresholds, then one per budget (the Gaussian twice: also
    # searched on the scored run for at most the detector's false alarms).
    lines = {"WindowedGaussian": 1 + 6, "MetricDetector": 2 + 3, "HalfSpaceTrees": 3}
    for name, k in lines.items():
        assert text.count(f"  {name} ") == k
    assert text.count("and the Gaussian's threshold searched on these runs") == 3
    # (detected, false alarms) of the same twelve incidents: the live threshold stays quiet
    # and still finds the plain ones; the CSV threshold finds more.
    detected, false_alarms = res["MetricDetector@0.9"]
    assert detected >= 5 and false_alarms <= 2
    assert res["MetricDetector@0.518"][0] > detected
    assert res["WindowedGaussian@1"][0] >= 9


def test_calibration_takes_the_lowest_threshold_within_the_false_alarm_budget() -> None:
    from benchmarks.nab_sim import SKIP, MetricSeries, calibrate, count, series_hours

    # Two quiet series of 10 hours at one sample a minute; five lone score bumps in all.
    times = [60.0 * i for i in range(600)]
    series = [MetricSeries("m", h, times, np.zeros(600), []) for h in ("a", "b")]
    scores = [np.zeros(600), np.zeros(600)]
    for k, (s, at) in enumerate(((0, 100), (0, 300), (1, 200), (1, 400), (1, 500))):
        scores[s][at] = 0.5 + 0.1 * k  # 0.5 ... 0.9
    hours = series_hours(series)
    assert hours == pytest.approx(2 * (599 - SKIP) / 60)
    # At most two false alarms: the two highest bumps (0.8, 0.9) may open, 0.7 may not.
    thr = calibrate(series, scores, 2.0 / hours)
    assert count(series, scores, thr) == (0, 2) and 0.7 < thr <= 0.8
    assert calibrate(series, scores, 0.0) > 0.9  # no false alarm at all: never alerts
