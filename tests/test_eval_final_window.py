"""Replays end without judging the window the input ended inside (no end-of-replay traffic drop)."""

from __future__ import annotations

from pathlib import Path

from stream.config import Config
from stream.offline.backtest import backtest_events
from stream.pipeline import Pipeline
from stream.sim.simulate import SimConfig, simulate, write_jsonl


def test_backtest_does_not_judge_the_final_partial_window(tmp_path: Path) -> None:
    # 20 minutes (the volume detectors are warm after 10) and one second: the last
    # window holds a tenth of its traffic, which judged would look like a drop everywhere.
    sim = SimConfig(seed=3, duration_s=20 * 60 + 1, rate=40, daily=False)
    events = tmp_path / "ev.jsonl"
    write_jsonl(simulate(sim), events)
    alerts: list[dict[str, object]] = []
    pipeline = Pipeline(Config())
    summary = backtest_events(
        events, Config(), None, progress=None, on_alerts=alerts.extend, pipeline=pipeline
    )
    last_event = pipeline.state.windows.max_ts
    assert last_event is not None and summary.last_ms is not None
    # Judged, the cut window paged a traffic drop on every provider; now nothing is
    # said about it (other rules' alerts on earlier windows are not this test's business).
    assert not [a for a in alerts if a["rule"] == "traffic_drop"]
    assert all(int(a["window_end"]) <= last_event - last_event % 10_000 for a in alerts)  # type: ignore[call-overload]
    # Every window before the cut was judged; the one the input ended inside was not.
    assert summary.last_ms == last_event - last_event % 10_000
    assert summary.stats.windows_closed == 120
