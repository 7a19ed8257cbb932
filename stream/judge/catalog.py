"""The rule catalog: which rules a configuration asks for, as a table of rule specs.

Each :class:`RuleSpec` names a signal, the config section(s) it reads (one per
enabled section; one per entry for ``slos``) and how a section becomes rules: one
:class:`RulePart` per set of levels judged alike.  :func:`build_rules` walks the
table in order, which is the order rules judge a window in (and so the order of
their alerts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from models.base import Detector
from models.metric import WatchedMetric
from models.multivariate import MultivariateDetector
from models.river_plug import RiverFactory
from models.sequential import (
    CONFIG_RATE,
    DECLINE_RATE,
    SYSTEM_RATE,
    TAIL_RATE,
    TIMEOUT_RATE,
    CallbackParams,
    LatencyParams,
    SequentialDetector,
    VolumeParams,
    budgeted,
)
from models.tails import binom_log10_sf
from models.threshold import StaticSLO
from stream.config import (
    CallbacksRuleConfig,
    Config,
    ConfigErrorsRuleConfig,
    DeclinesRuleConfig,
    DetectorsConfig,
    ErrorRateRuleConfig,
    LatencyRuleConfig,
    LatencyTailRuleConfig,
    MetricsRuleConfig,
    MultivariateRuleConfig,
    SLORuleConfig,
    TimeoutsRuleConfig,
    VolumeRuleConfig,
)
from stream.judge import callback_integrity as integrity
from stream.judge.carry_rule import CarryRule
from stream.judge.describe import (
    Describe,
    DescribeShare,
    DescribeSLO,
    describe_callbacks,
    describe_config,
    describe_latency,
    describe_metric,
    describe_multivariate,
    describe_volume,
)
from stream.judge.features import Row
from stream.judge.hints import HINT_LOG10_P
from stream.judge.metric_rule import MetricRule
from stream.judge.pooled_rule import PoolingRule, pool_pairs
from stream.judge.rules import DetectorRule, Rule
from stream.judge.tail_rule import TailRule
from stream.windows.registry import Dims
from stream.windows.state import METRIC_LEVEL


@dataclass(frozen=True)
class Levels:
    """The series levels rules choose from, derived from ``windows.levels``.

    >>> lv = Levels.of([["provider"], ["provider", "merchant_id"]])
    >>> lv.coarse, lv.notifications[-1]
    ([('provider',)], ('provider', 'signing_key_id'))
    """

    calls: list[Dims]
    coarse: list[Dims]  # without merchant_id (merchants are few calls a window), else the first
    notifications: list[Dims]
    # Call levels whose series are one kind of call: a merchant's calls across operations
    # (refunds beside queries) are left out when another level splits them by operation,
    # their normal latency and error rate being a mix that moves with the mix.  Config
    # errors judge those (a merchant's keys and certificates serve every operation), and
    # latency on their operations' pooled evidence (stream.judge.pooled_rule).
    per_operation: list[Dims] = field(default_factory=list)
    # The false-alarm budget and the window length every sequential threshold derives from.
    false_alarms: float = 1.0
    window_s: float = 10.0

    @classmethod
    def of(cls, levels: list[list[str]]) -> Levels:
        calls = [tuple(lv) for lv in levels]
        coarse = [lv for lv in calls if "merchant_id" not in lv] or calls[:1]
        notifications = list(
            dict.fromkeys(
                [tuple(x for x in lv if x != "operation") for lv in calls]
                + [("provider", "signing_key_id")]
            )
        )
        split = any({"merchant_id", "operation"} <= set(lv) for lv in calls)
        per_op = [
            lv for lv in calls if not (split and "merchant_id" in lv and "operation" not in lv)
        ]
        return cls(calls, coarse, notifications, per_op)


@dataclass(frozen=True)
class RulePart:
    """One rule of a section: its detector factory, levels, gate and summary."""

    make: Callable[[], Detector]
    levels: list[Dims]
    describe: Describe
    gate: str | None = "volume"  # feature that must be > 0 for a series to be judged
    critical_when: Callable[[Row], bool] | None = None
    threshold: float = 0.5
    rule_class: Callable[..., DetectorRule] = DetectorRule  # e.g. a partial of a subclass


class RuleSection(Protocol):
    rule: str  # the rule's name in alerts


S = TypeVar("S", bound=RuleSection)


@dataclass(frozen=True)
class RuleSpec(Generic[S]):
    """A signal, the config sections that ask for it, and how one becomes rules."""

    signal: str
    sections: Callable[[DetectorsConfig], list[S]]
    parts: Callable[[S, Levels], list[RulePart]]
    hints_from: str | None = None  # the feature whose root cause the judgement hints at
    max_severity: str = "critical"


def _levels(configured: list[list[str]], default: list[Dims]) -> list[Dims]:
    return [tuple(lv) for lv in configured] if configured else default


@dataclass(frozen=True)
class _CriticalRate:
    """Critical whatever the score once the error rate reaches the configured level."""

    rate: float
    min_volume: int

    def __call__(self, x: Row) -> bool:
        return x["system_errors"] >= self.rate * max(x["volume"], self.min_volume)

    def by_chance(self, x: Row, broader: Row) -> bool:
        """Whether ``x``'s errors this window are likely at the share of a ``broader``
        series' calls: ``log10 P(X >= errors) > HINT_LOG10_P`` for ``X ~ Binomial(calls,
        its share)`` (a merchant's 2 of 5 calls failing where its provider fails 19 %:
        p = 0.25).

        >>> import numpy as np
        >>> c = _CriticalRate(0.2, 20)
        >>> row = lambda e, n: Row({"system_errors": np.array([e]), "volume": np.array([n])}, {}, 0)
        >>> c(row(4, 5)), c.by_chance(row(4, 5), row(190, 1000))
        (True, True)
        >>> c.by_chance(row(5, 5), row(2, 1000))  # its provider is fine: a worse incident
        False
        """
        calls = broader["volume"]
        share = broader["system_errors"] / calls if calls > 0 else 0.0
        return binom_log10_sf(x["system_errors"], x["volume"], share) > HINT_LOG10_P


D = TypeVar("D", bound=Detector)


def _same(detector: D) -> D:
    """A stateless detector can be shared by every series."""
    return detector


@dataclass(frozen=True)
class _SLOCritical:
    slo: StaticSLO

    def __call__(self, x: Row) -> bool:
        return self.slo.level(x) == "critical"


def _sequential(params: Any, lv: Levels) -> Callable[[], Detector]:
    """A factory of sequential detectors whose threshold derives from the budget."""
    return partial(SequentialDetector, budgeted(params, lv.false_alarms, lv.window_s))


def _error_rate_parts(er: ErrorRateRuleConfig, lv: Levels) -> list[RulePart]:
    # Sequential at every level: evidence accumulates, so a merchant's few calls a
    # window count too (no minimum volume); critical once the rate reaches the level.
    critical = _CriticalRate(er.critical_threshold, er.min_volume)
    params = replace(SYSTEM_RATE, min_windows=er.min_windows)
    describe = DescribeShare("system_errors", "system errors")
    return [
        RulePart(
            _sequential(params, lv), lv.per_operation, describe, critical_when=critical,
            rule_class=CarryRule,
        )
    ]  # fmt: skip


def _timeout_parts(to: TimeoutsRuleConfig, lv: Levels) -> list[RulePart]:
    params = replace(TIMEOUT_RATE, min_windows=to.min_windows)
    describe = DescribeShare("timeouts", "timeouts")
    return [RulePart(_sequential(params, lv), lv.per_operation, describe, rule_class=CarryRule)]


def _decline_parts(bd: DeclinesRuleConfig, lv: Levels) -> list[RulePart]:
    params = replace(DECLINE_RATE, min_windows=bd.min_windows)
    describe = DescribeShare("business_declines", "business declines")
    return [RulePart(_sequential(params, lv), _levels(bd.levels, lv.coarse), describe)]


def _config_error_parts(ce: ConfigErrorsRuleConfig, lv: Levels) -> list[RulePart]:
    # Judged from the first call (no history needed): 2-3 failing calls page.
    params = replace(CONFIG_RATE, min_windows=ce.min_windows)
    return [RulePart(_sequential(params, lv), lv.calls, describe_config, rule_class=CarryRule)]


def _latency_parts(lt: LatencyRuleConfig, lv: Levels) -> list[RulePart]:
    # Median log-latency, sequential: no minimum volume (one call a window counts).  A
    # series of several operations (a provider's calls, a merchant's) has no normal of
    # its own, the mix moving with the mix: it is judged on its operations' pooled
    # evidence, each call against its own operation's normal.
    # A median is of the calls with a latency of the provider's (not those refused for
    # the merchant's credentials): its variance is over those.
    params = LatencyParams(min_windows=lt.min_windows, volume_key="timed_calls")
    pairs = pool_pairs(lv.calls, lv.calls)
    parents = {parent for _, parent in pairs}
    judged = [x for x in lv.per_operation if x not in parents]
    pooled = partial(PoolingRule, pairs=pairs) if pairs else DetectorRule
    return [RulePart(_sequential(params, lv), judged, describe_latency, rule_class=pooled)]


def _latency_tail_parts(lt: LatencyTailRuleConfig, lv: Levels) -> list[RulePart]:
    params = replace(TAIL_RATE, min_windows=lt.min_windows)
    describe = DescribeShare("slow_calls", "calls over 4x the median")
    return [RulePart(_sequential(params, lv), lv.per_operation, describe, rule_class=TailRule)]


def _volume_parts(vo: VolumeRuleConfig, lv: Levels) -> list[RulePart]:
    # Every window counts here, an empty one most of all: no gate.
    make = _sequential(VolumeParams(min_windows=vo.min_windows), lv)
    return [RulePart(make, _levels(vo.levels, lv.coarse), describe_volume, gate=None)]


def _callback_parts(cb: CallbacksRuleConfig, lv: Levels) -> list[RulePart]:
    levels = _levels(cb.levels, [x for x in lv.notifications if "merchant_id" not in x])
    # Per signing key there are as many series as merchants' keys, almost all clean:
    # judge a key only in windows where its signatures fail (or while it alerts).
    per_key = [x for x in levels if "signing_key_id" in x]
    groups = (([x for x in levels if x not in per_key], None), (per_key, "verify_failures"))
    return [
        RulePart(_sequential(CallbackParams(), lv), group, describe_callbacks, gate=gate)
        for group, gate in groups
        if group
    ]


def _duplicate_parts(cfg: Any, lv: Levels) -> list[RulePart]:
    make, levels = integrity.duplicate_parts(cfg, lv.notifications)
    return [RulePart(make, levels, integrity.describe_duplicates, gate="callbacks")]


def _amount_parts(cfg: Any, lv: Levels) -> list[RulePart]:
    make, levels = integrity.amount_parts(cfg, lv.notifications)
    return [RulePart(make, levels, integrity.describe_amount_mismatch, gate="callbacks")]


def _multivariate_parts(mv: MultivariateRuleConfig, lv: Levels) -> list[RulePart]:
    levels = _levels(mv.levels, lv.calls[:1])
    make: Callable[[], Detector]
    if mv.model or mv.params:  # a river model named in the config (validated at load)
        path = mv.model or "river.anomaly.HalfSpaceTrees"
        params = tuple(sorted(mv.params.items()))
        make = RiverFactory(path, params, mv.feature, mv.min_windows)
    else:
        make = partial(MultivariateDetector, min_windows=mv.min_windows)
    return [RulePart(make, levels, describe_multivariate)]


def _slo_parts(s: SLORuleConfig, lv: Levels) -> list[RulePart]:
    slo = StaticSLO(s.feature, s.warning, s.critical, per=s.per or None, min_volume=s.min_volume)
    return [
        RulePart(
            partial(_same, slo),
            _levels(s.levels, lv.per_operation),
            DescribeSLO(slo),
            critical_when=_SLOCritical(slo),
        )
    ]


def _metric_parts(mt: MetricsRuleConfig, lv: Levels) -> list[RulePart]:
    return [
        RulePart(
            partial(WatchedMetric, hold_score=mt.threshold),
            [METRIC_LEVEL],
            describe_metric,
            gate="metric_count",
            threshold=mt.threshold,
            rule_class=partial(MetricRule, limits=mt.all_limits()),
        )
    ]


class ToggledSection(RuleSection, Protocol):
    enabled: bool


T = TypeVar("T", bound=ToggledSection)


def _on(section: T) -> list[T]:
    """The section when enabled."""
    return [section] if section.enabled else []


#: Every signal, in judging order.
CATALOG: tuple[RuleSpec[Any], ...] = (
    RuleSpec("error_rate", lambda d: _on(d.error_rate), _error_rate_parts, "system_errors"),
    RuleSpec("timeouts", lambda d: _on(d.timeouts), _timeout_parts, "timeouts"),
    RuleSpec("config_error", lambda d: _on(d.config_errors), _config_error_parts, "config_errors"),
    RuleSpec("business_declines", lambda d: _on(d.business_declines), _decline_parts, None, "info"),
    RuleSpec("latency", lambda d: _on(d.latency), _latency_parts),
    RuleSpec("latency_tail", lambda d: _on(d.latency_tail), _latency_tail_parts, "slow_calls"),
    RuleSpec("volume", lambda d: _on(d.volume), _volume_parts),
    RuleSpec("notification", lambda d: _on(d.callbacks), _callback_parts),
    RuleSpec("duplicate_callbacks", lambda d: _on(d.duplicate_callbacks), _duplicate_parts),
    RuleSpec("amount_mismatch", lambda d: _on(d.amount_mismatch), _amount_parts),
    RuleSpec("multivariate", lambda d: _on(d.multivariate), _multivariate_parts, None, "info"),
    RuleSpec("slo", lambda d: d.slos, _slo_parts),
    # An unusual value warns; a breached hard limit pages at its own severity.
    RuleSpec("metric", lambda d: _on(d.metrics), _metric_parts),
)


def build_rules(config: Config) -> list[Rule]:
    """The rule set a config asks for (defaults: every signal, sensible levels)."""
    window_s = config.windows.size_s
    levels = replace(
        Levels.of(config.windows.levels),
        false_alarms=config.detectors.false_alarms_per_series_per_30d,
        window_s=window_s,
    )
    return [
        part.rule_class(
            section.rule,
            spec.signal,
            part.make,
            part.levels,
            part.gate,
            part.describe,
            window_s,
            threshold=part.threshold,
            max_severity=spec.max_severity,
            hints_from=spec.hints_from,
            critical_when=part.critical_when,
        )
        for spec in CATALOG
        for section in spec.sections(config.detectors)
        for part in spec.parts(section, levels)
    ]
