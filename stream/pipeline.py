"""The one pipeline object that runs live (Kafka, wall clock) and offline (files, event time).

decode → windows → rules/detectors → alert lifecycle.  It does no I/O: callers
feed it raw record values and publish what it returns, so ``run`` and
``backtest`` share every decision.  Only ``detected_at`` differs: live it is the
wall clock, offline it is the window's end, which keeps replays byte-identical.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import orjson

from models.budget import cusum_threshold
from models.sequential import RateParams
from stream.alerting.actions.evidence import CallbackEvidence
from stream.alerting.lifecycle import AlertLifecycle, same_series_mutes
from stream.alerting.record import AlertRecord
from stream.config import Config
from stream.ingest.decode import decode_batch
from stream.ingest.events import DecodedBatch, Rejected, Source
from stream.ingest.taxonomy import ErrorTaxonomy
from stream.judge.catalog import build_rules
from stream.judge.features import JudgedWindow
from stream.judge.rules import Rule
from stream.state_codec import StateCodecError, decode, encode
from stream.windows.state import ClosedWindow, WindowState

STATE_VERSION = 2  # 1 was a pickle; 2 is the state codec (stream/state_codec.py)
STATE_FORMAT = "paywatch-state"
EVICT_EVERY_WINDOWS = 60  # idle-series sweeps are cheap but need not run every window


class StateError(ValueError):
    """A checkpoint this pipeline cannot take: another format, version or configuration."""


class StateConfigChanged(StateError):
    """The checkpoint was written under other window, detector or alert settings."""


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
    # The closed windows' features as the rules judged them (payment metrics read them).
    judged: list[JudgedWindow] = field(default_factory=list)


@dataclass
class PipelineState:
    """Everything the pipeline remembers; checkpointed by :meth:`Pipeline.snapshot`."""

    windows: WindowState
    lifecycle: AlertLifecycle
    rules: list[Rule]
    stats: PipelineStats = field(default_factory=PipelineStats)
    last_event_wall_ms: int | None = None
    # Orders named by callback alerts, and which came back (see alerting.actions.evidence).
    evidence: CallbackEvidence = field(default_factory=CallbackEvidence)


class Pipeline:
    """Feed record values in, get alert v1 records and rejected records out."""

    #: Live: the partitions read now (None: every partition seen holds the clock).
    assigned: set[int] | None = None

    def __init__(
        self, config: Config, *, live: bool = False, taxonomy: ErrorTaxonomy | None = None
    ) -> None:
        self.config = config
        self.live = live
        self.taxonomy = taxonomy or ErrorTaxonomy.default()
        self.partition_wall: dict[int, int] = {}  # live: when each partition last had events
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
                config.alerts.for_windows,
                config.alerts.keep_firing_for_windows,
                config.alerts.resolve_min_calls,
                config.alerts.stale_after_s,
                config.alerts.resolve_hold_s,
                relapse_h=_relapse_h(config),
                resolve_hold_max_s=config.alerts.resolve_hold_max_s,
            ),
            rules=rules,
            evidence=CallbackEvidence(max_orders=config.actions.evidence_max_orders),
        )
        self.state.windows.max_overdue_orders = config.actions.max_overdue_orders
        self._follow_inhibition()

    def _follow_inhibition(self) -> None:
        """The lifecycle ends what the dispatcher's inhibition muted (notify settings are
        not in a checkpoint's fingerprint: taken from the running configuration)."""
        life, notify = self.state.lifecycle, self.config.notify
        life.same_series_mutes = same_series_mutes(self.config.builtin_inhibit_rules())
        life.critical_errors_mute_latency = notify.default_inhibit

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
        if self.assigned is not None and wall_ms is not None and batch.accepted:
            self._partitions_active(batch, wall_ms)
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
            # Partitions gone quiet stop holding the clock: the others may close windows.
            closed = st.windows.close_ready() if self._hold(wall_ms) else []
            return self._close(closed, wall_ms) if closed else StepResult()
        silent_for = wall_ms - st.last_event_wall_ms
        st.windows.advance_to(st.windows.max_ts - st.windows.lateness_ms + silent_for)
        return self._close(st.windows.close_ready(), wall_ms)

    def flush(self) -> StepResult:
        """End of offline input: close and judge every window the input covered in full.

        The window the last event falls in is left unjudged: the input ended inside
        it, so its low counts are an artefact of the cut (a replay would otherwise
        end on a traffic drop).
        """
        w = self.state.windows
        if w.max_ts is None:
            return StepResult()
        w.advance_to(w.max_ts - w.max_ts % w.hop_ms)
        out = self._close(w.close_ready(), None)
        if w.closed_until is not None:  # resolutions still waiting for orders: as they stand
            out.alerts.extend(self.state.evidence.release_all(w.closed_until))
        return out

    def _close(self, closed: list[ClosedWindow], wall_ms: int | None) -> StepResult:
        st = self.state
        out = StepResult(closed=closed)
        st.evidence.take_recovered(st.windows.drain_recovered())
        for win in closed:
            active = st.lifecycle.active()
            window = JudgedWindow.of(win, st.windows)  # features once, for every rule
            out.judged.append(window)
            judgements = []
            for rule in st.rules:
                judgements.extend(rule.judge(window, active))

            def detected_at(window_end: int) -> int:
                return wall_ms if (self.live and wall_ms is not None) else window_end

            records = st.lifecycle.observe(win.end_ms, judgements, detected_at)
            self._explain_beneath(records)
            out.alerts.extend(
                st.evidence.annotate(records, st.windows.overdue, win.end_ms, detected_at)
            )
        st.stats.windows_closed += len(closed)
        st.stats.alerts += len(out.alerts)
        if closed and st.stats.windows_closed % EVICT_EVERY_WINDOWS < len(closed):
            self._evict_idle()
        return out

    def _explain_beneath(self, records: list[AlertRecord]) -> None:
        """Each episode that ended restarts its rule's evidence beneath its series."""
        st = self.state
        keep = st.lifecycle.active()
        for rec in records:
            if rec.status != "resolved":
                continue
            for rule in st.rules:
                if rule.name == rec.rule and hasattr(rule, "restart_beneath"):
                    rule.restart_beneath(rec.series, st.windows.registry, keep)
        # An episode ended with another (its carrier, the alert of another signal that
        # muted it; pending ones are dropped silently) restarts its own test too.
        for fp in getattr(st.lifecycle, "restart_own", ()):
            for rule in st.rules:
                sid = getattr(rule, "sid_of_fp", {}).get(fp)  # fingerprints name the rule
                restart = getattr(rule, "restart_series", None)
                if sid is not None and restart is not None:
                    restart(sid)

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
        """The whole state (windows, detectors, open episodes) in the state codec's form,
        with a format name, a version and the fingerprint of the settings it was built under."""
        head = {"format": STATE_FORMAT, "version": STATE_VERSION, "config": self.fingerprint()}
        return msgspec.msgpack.encode([head, encode(self.state)])

    def restore(self, blob: bytes) -> None:
        """Take a :meth:`snapshot`'s state; raises :class:`StateError` when it cannot."""
        try:
            head, body = msgspec.msgpack.decode(blob)
            fmt, version, config = head["format"], head["version"], head["config"]
        except (msgspec.DecodeError, ValueError, TypeError, KeyError):
            raise StateError("not a paywatch checkpoint") from None
        if fmt != STATE_FORMAT:
            raise StateError(f"not a paywatch checkpoint (format {fmt!r})")
        if version != STATE_VERSION:
            raise StateError(
                f"checkpoint version {version!r} is not supported (this paywatch reads "
                f"version {STATE_VERSION}); it starts without it"
            )
        if config != self.fingerprint():
            raise StateConfigChanged(
                "the checkpoint was written under other windows/detectors/alerts settings"
            )
        try:
            state = decode(body, fresh=self.state)
        except StateCodecError as exc:
            raise StateError(str(exc)) from None
        if not isinstance(state, PipelineState):
            raise StateError("the checkpoint does not hold a pipeline state")
        self.state = state
        self._follow_inhibition()
        if self.assigned is not None:
            self.state.windows.hold_clock(self.assigned)

    def fingerprint(self) -> str:
        """Of the settings the state's shape depends on (windows, detectors, alerts)."""
        c = self.config
        parts = [dataclasses.asdict(x) for x in (c.windows, c.detectors, c.alerts)]
        raw = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS, default=repr)
        return hashlib.sha256(raw).hexdigest()[:16]

    # -- partitions (live) --------------------------------------------------------

    def assign(self, partitions: set[int], wall_ms: int) -> None:
        """Live: the partitions read from now on.  Each holds the stream's clock back
        until it has had no event for ``windows.idle_advance_s`` of wall time."""
        self.assigned = set(partitions)
        self.partition_wall = {p: self.partition_wall.get(p, wall_ms) for p in partitions}
        self._hold(wall_ms, force=True)

    def see_partitions(self, newest: dict[int, int], wall_ms: int) -> StepResult:
        """Live roll-up tasks: source partitions have reached these event times (markers
        sent after their events); closes the windows that lets close."""
        for p in newest:
            self.partition_wall[p] = wall_ms
        self._hold(wall_ms)
        self.state.windows.see_partitions(newest)
        return self._close(self.state.windows.close_ready(), wall_ms)

    def _partitions_active(self, batch: DecodedBatch, wall_ms: int) -> None:
        parts = [c.partition for c in (batch.calls, batch.notifications, batch.metrics)]
        for p in np.unique(np.concatenate(parts)).tolist():
            self.partition_wall[p] = wall_ms
        self._hold(wall_ms)

    def _hold(self, wall_ms: int, *, force: bool = False) -> bool:
        """Update which assigned partitions hold the clock; True when that changed."""
        if self.assigned is None:
            return False
        idle_ms = int(self.config.windows.idle_advance_s * 1000)
        held = {p for p in self.assigned if wall_ms - self.partition_wall.get(p, wall_ms) < idle_ms}
        if held == self.state.windows.holding and not force:
            return False
        self.state.windows.hold_clock(held)
        return True


def _relapse_h(config: Config) -> float:
    """The rate detectors' CUSUM threshold (their alternatives, the one budget): what the
    lifecycle's relapse hold derives from; 0 with ``alerts.relapse_hold: false``."""
    if not config.alerts.relapse_hold:
        return 0.0
    budget = config.detectors.false_alarms_per_series_per_30d
    return cusum_threshold(budget, config.windows.size_s, tests=len(RateParams().ratios))
