"""The one pipeline object that runs live (Kafka, wall clock) and offline (files, event time).

decode → windows → rules/detectors → alert lifecycle.  It does no I/O: callers
feed it raw record values and publish what it returns, so ``run`` and
``backtest`` share every decision.  Only ``detected_at`` differs: live it is the
wall clock, offline it is the window's end, which keeps replays byte-identical.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stream.alerting.lifecycle import AlertLifecycle
from stream.alerting.record import AlertRecord
from stream.config import Config
from stream.ingest.decode import decode_batch
from stream.ingest.events import DecodedBatch, Rejected, Source
from stream.ingest.taxonomy import ErrorTaxonomy
from stream.judge.catalog import build_rules
from stream.judge.features import JudgedWindow
from stream.judge.rules import Rule
from stream.windows.state import ClosedWindow, WindowState

STATE_VERSION = 1
EVICT_EVERY_WINDOWS = 60  # idle-series sweeps are cheap but need not run every window


@dataclass
class PipelineStats:
    records: int = 0
    rejected: int = 0
    calls: int = 0
    notifications: int = 0
    metrics: int = 0
    late: int = 0
    windows_closed: int = 0
    alerts: int = 0


@dataclass
class StepResult:
    alerts: list[AlertRecord] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    closed: list[ClosedWindow] = field(default_factory=list)


@dataclass
class PipelineState:
    """Everything the pipeline remembers; pickles for checkpoints."""

    windows: WindowState
    lifecycle: AlertLifecycle
    rules: list[Rule]
    stats: PipelineStats = field(default_factory=PipelineStats)
    last_event_wall_ms: int | None = None


class Pipeline:
    """Feed record values in, get alert v1 records and rejected records out."""

    def __init__(
        self, config: Config, *, live: bool = False, taxonomy: ErrorTaxonomy | None = None
    ) -> None:
        self.config = config
        self.live = live
        self.taxonomy = taxonomy or ErrorTaxonomy.default()
        w = config.windows
        rules: list[Rule] = build_rules(config)
        self.state = PipelineState(
            windows=WindowState.create(
                w.size_s,
                w.allowed_lateness_s,
                w.levels,
                hop_s=w.hop_s,
                callback_timeout_s=w.callback_timeout_s,
                max_pending_orders=w.max_pending_orders,
                idle_evict_s=w.idle_evict_s,
                max_series_per_level=w.max_series_per_level,
            ),
            lifecycle=AlertLifecycle(
                config.alerts.for_windows, config.alerts.keep_firing_for_windows
            ),
            rules=rules,
        )

    # -- feeding ----------------------------------------------------------------

    def decode_args(self) -> dict[str, Any]:
        """Decoder settings as they stand now (also what a decode process needs)."""
        w = self.config.windows
        return {
            "reference_ms": self.state.windows.max_ts,
            "max_future_ms": int(w.max_future_s * 1000),
            "max_past_ms": int(w.max_past_s * 1000),
        }

    def process(
        self, values: Sequence[bytes | None], sources: Sequence[Source], wall_ms: int | None = None
    ) -> StepResult:
        """Decode, window and judge one batch; returns alerts for windows it closed."""
        batch = decode_batch(values, sources, taxonomy=self.taxonomy, **self.decode_args())
        return self.process_decoded(batch, len(values), wall_ms)

    def process_decoded(
        self, batch: DecodedBatch, records: int, wall_ms: int | None = None
    ) -> StepResult:
        """Window and judge a batch decoded elsewhere (e.g. by a :class:`DecodePool`)."""
        st = self.state
        st.stats.records += records
        st.stats.rejected += len(batch.rejected)
        st.stats.calls += len(batch.calls)
        st.stats.notifications += len(batch.notifications)
        st.stats.metrics += len(batch.metrics)
        st.stats.late += st.windows.add_batch(
            batch.strings, batch.calls, batch.notifications, batch.metrics
        )
        if batch.accepted:
            st.last_event_wall_ms = wall_ms
        result = self._close(st.windows.close_ready(), wall_ms)
        result.rejected = batch.rejected
        return result

    def tick(self, wall_ms: int) -> StepResult:
        """Live only: let the watermark follow the wall clock through a silent stream.

        Without this, a total traffic stop — the classic incident where nothing is
        logged because no request arrives — would never close another window.
        """
        st = self.state
        idle_ms = int(self.config.windows.idle_advance_s * 1000)
        if (
            st.last_event_wall_ms is None
            or st.windows.max_ts is None
            or wall_ms - st.last_event_wall_ms < idle_ms
        ):
            return StepResult()
        silent_for = wall_ms - st.last_event_wall_ms
        st.windows.advance_to(st.windows.max_ts - st.windows.lateness_ms + silent_for)
        return self._close(st.windows.close_ready(), wall_ms)

    def flush(self) -> StepResult:
        """End of offline input: close every open window and judge it."""
        return self._close(self.state.windows.flush(), None)

    def _close(self, closed: list[ClosedWindow], wall_ms: int | None) -> StepResult:
        st = self.state
        out = StepResult(closed=closed)
        for win in closed:
            active = st.lifecycle.active()
            window = JudgedWindow.of(win, st.windows)  # features once, for every rule
            judgements = []
            for rule in st.rules:
                judgements.extend(rule.judge(window, active))

            def detected_at(window_end: int) -> int:
                return wall_ms if (self.live and wall_ms is not None) else window_end

            out.alerts.extend(st.lifecycle.observe(win.end_ms, judgements, detected_at))
        st.stats.windows_closed += len(closed)
        st.stats.alerts += len(out.alerts)
        if closed and st.stats.windows_closed % EVICT_EVERY_WINDOWS < len(closed):
            self._evict_idle()
        return out

    def _evict_idle(self) -> None:
        st = self.state
        firing = st.lifecycle.active()
        protect = {sid for rule in st.rules for fp, sid in rule.sid_of_fp.items() if fp in firing}
        evicted = st.windows.evict_idle(protect)
        if evicted.size:
            for rule in st.rules:
                rule.forget(evicted)

    # -- checkpoints ------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Serialise the whole state (windows, detectors, open episodes)."""
        return pickle.dumps((STATE_VERSION, self.state), protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, blob: bytes) -> None:
        version, state = pickle.loads(blob)
        if version != STATE_VERSION:
            raise ValueError(f"state version {version} is not supported (expected {STATE_VERSION})")
        self.state = state
