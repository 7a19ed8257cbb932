"""`paywatch tune`: a grid over labelled history, ranked by a stated objective, written as YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.config import load_config
from stream.offline.tune import Trial, parse_grid, rank
from tests.test_labels import paywatch, sim_files  # noqa: F401 - shared session fixture


def trial(recall: float, false_h: float, delay: float | None, precision: float = 1.0) -> Trial:
    return Trial({"x": (recall, false_h, delay)}, recall, precision, false_h, delay, 0, 0, 0, 0.0)


def test_recall_objective_respects_the_false_alert_budget_then_delay() -> None:
    noisy = trial(1.0, 3.0, 10)  # finds everything but pages too often
    slow = trial(0.8, 0.2, 90)
    fast = trial(0.8, 0.4, 30)
    blind = trial(0.2, 0.0, 20)
    ranked = rank([noisy, slow, fast, blind], "recall", max_false_per_hour=0.5)
    assert ranked == [fast, slow, blind, noisy]
    # Nothing within budget: the quietest wins.
    assert rank([noisy, trial(0.9, 1.0, 5)], "recall", 0.5)[0].false_per_hour == 1.0
    # F1 weighs precision in.
    a, b = trial(1.0, 2.0, 10, precision=0.2), trial(0.7, 0.1, 10, precision=0.9)
    assert rank([a, b], "f1", 0.5)[0] is b


def test_grid_values_are_typed() -> None:
    assert parse_grid(["alerts.for_windows=1,2", "detectors.latency.enabled=true,false"]) == {
        "alerts.for_windows": [1, 2],
        "detectors.latency.enabled": [True, False],
    }


def test_tune_writes_a_config_run_accepts(tmp_path: Path, sim_files: Any) -> None:  # noqa: F811
    events, labels, _ = sim_files
    base = tmp_path / "base.yaml"
    base.write_text("windows:\n  allowed_lateness_s: 5\n")
    out = tmp_path / "tuned.yaml"
    r = paywatch(
        "tune", "--input", events, "--labels", labels, "--config", base, "--out", out,
        "--grid", "alerts.for_windows=1,2", "--grid", "detectors.error_rate.threshold=0.05,0.15",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    # Progress: plain lines when stderr is not a terminal, ending at 4/4.
    bars = [x for x in r.stderr.splitlines() if x.startswith("[")]
    assert bars[-1].startswith("[########################] 4/4") and "\r" not in r.stderr
    table = r.stdout.splitlines()
    assert table[0].split()[:3] == ["rank", "for_windows", "threshold"]
    assert len(table) == 5
    cfg = yaml.safe_load(out.read_text())
    assert cfg["windows"] == {"allowed_lateness_s": 5}  # the base is kept
    best = table[1].split()
    assert cfg["alerts"]["for_windows"] == int(best[1])
    assert cfg["detectors"]["error_rate"]["threshold"] == float(best[2])
    # The chosen row found the outage (recall column) and the file loads as a config.
    assert float(best[3]) == 1.0
    loaded = load_config(out)
    assert loaded.alerts.for_windows == cfg["alerts"]["for_windows"]
    assert out.read_text().startswith("# paywatch tune:")


@pytest.mark.parametrize(
    ("grid", "needle"),
    [
        ("detectors.error_rate.treshold=0.1", "treshold: unknown key"),
        ("alerts.for_windows", "expected KEY=V1,V2"),
        ("alerts.for_windows=0", "for_windows"),
    ],
)
def test_bad_grid_is_one_line_before_any_replay(
    tmp_path: Path,
    sim_files: Any,  # noqa: F811
    grid: str,
    needle: str,
) -> None:
    events, labels, _ = sim_files
    r = paywatch(
        "tune", "--input", events, "--labels", labels, "--out", tmp_path / "t.yaml", "--grid", grid
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert needle in r.stderr and r.stderr.count("\n") <= 2
    assert "[" not in r.stderr  # refused before the sweep started
    assert not (tmp_path / "t.yaml").exists()


def test_progress_redraws_in_place_on_a_terminal() -> None:
    import io

    from stream.offline.tune import Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    bar = Progress(2, out)
    bar.step(0, "a=1")
    bar.step(1, "a=2")
    bar.step(2, "done")
    text = out.getvalue()
    assert text.count("\r\x1b[2K") == 3 and text.count("\n") == 1 and text.endswith("\n")
    assert "] 2/2" in text.rsplit("\r", 1)[1]


async def test_tune_reads_a_kafka_range_once(kafka_config: Any, tmp_path: Path) -> None:
    import asyncio

    import orjson

    from stream.ingest.kafka_client import ensure_topics
    from stream.sim.produce import produce_events
    from tests.traffic import OUTAGE, T0, traffic

    k = kafka_config.kafka
    await ensure_topics(k.bootstrap_servers, [k.events_topic], partitions=2)
    await produce_events(traffic(), k.bootstrap_servers, k.events_topic)
    labels = tmp_path / "labels.json"
    labels.write_bytes(
        orjson.dumps(
            [
                {
                    "kind": "outage",
                    "start_ms": T0 + OUTAGE[0],
                    "end_ms": T0 + OUTAGE[1],
                    "series": {"provider": "alipay"},
                    "is_incident": True,
                }
            ]
        )
    )
    out = tmp_path / "tuned.yaml"
    r = await asyncio.to_thread(
        paywatch, "tune", "--input", f"kafka://{k.bootstrap_servers}/{k.events_topic}",
        "--labels", labels, "--grid", "alerts.for_windows=1,3", "--out", out,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert [row[2] for row in rows] == ["1.00", "1.00"]  # both find the outage
    assert [row[1] for row in rows] == ["1", "3"]  # the quicker one first
    assert yaml.safe_load(out.read_text()) == {"alerts": {"for_windows": 1}}
