"""paywatch's configuration: one YAML file, every key optional, defaults that work.

Loading is strict so a typo cannot silently fall back to a default: an unknown
key or a value of the wrong type fails with a :class:`ConfigError` that names the
key's full path (``windows.size_s``) and what was expected.  ``${VAR}`` and
``${VAR:-default}`` in string values are replaced from the environment, so
secrets (robot tokens, SMTP passwords) never live in the file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from models.base import FEATURES

T = TypeVar("T")

DIMENSIONS = ("provider", "operation", "merchant_id")
# Window features a static SLO may name: the call features of the detectors' one list.
_FEATURES = FEATURES[FEATURES.index("volume") : FEATURES.index("latency_p99") + 1]


class ConfigError(ValueError):
    """A configuration problem a person can fix; the message names the key."""


@dataclass
class KafkaConfig:
    bootstrap_servers: str = "localhost:9092"
    group_id: str = "paywatch"
    client_id: str = "paywatch"
    events_topic: str = "payments.events"
    dlq_topic: str = "payments.events.dlq"
    alerts_topic: str = "payments.alerts"
    state_topic: str = "paywatch.state"
    control_topic: str = "paywatch.control"
    # Largest batch handed to the pipeline at once; bigger batches vectorise better.
    max_batch: int = 5000
    # How long a fetch may wait for data; low keeps window-close -> alert latency low.
    fetch_max_wait_ms: int = 50
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000
    request_timeout_ms: int = 30000
    auto_offset_reset: str = "earliest"
    # Processes that decode batches beside the consumer (-1: one when the machine has
    # a second core, 0: decode inline). Decoding is the costliest step per event.
    decode_workers: int = -1
    # How several workers share the work (docs/reliability.md "Scaling out"): "tasks"
    # republishes the events by provider to the repartition topic and judges every series
    # (provider, operation, metric, merchant) once in the group, in roll-up tasks with one
    # state per repartition partition; "single" keeps one state for every partition a
    # worker reads (right with one worker only; in-memory tests).
    scale_out: str = "tasks"
    # The repartition topic of the roll-up tasks, one per consumer group
    # ("": <group_id>.<events_topic>.repartition.by-provider).
    repartition_topic: str = ""
    # Security, for every client paywatch makes (docs/operations.md "Kafka security"):
    # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.  SASL mechanisms: PLAIN, SCRAM-SHA-256,
    # SCRAM-SHA-512, with a username and a password (write ${KAFKA_PASSWORD}: from the
    # environment).  SSL: a CA file to trust the brokers, and a certificate with its key
    # for client authentication (mTLS); empty = the system's CAs, no client certificate.
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_plain_username: str = ""
    sasl_plain_password: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def check_kafka_security(k: KafkaConfig) -> None:
    """A security setting that cannot work is a ``ConfigError`` naming its key."""
    protocol = k.security_protocol
    if protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(
            f"kafka.security_protocol: must be one of {', '.join(SECURITY_PROTOCOLS)}; "
            f"got {protocol!r}"
        )
    sasl = ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password")
    if protocol.startswith("SASL_"):
        if k.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(
                f"kafka.sasl_mechanism: {protocol} needs one of {', '.join(SASL_MECHANISMS)}; "
                f"got {k.sasl_mechanism!r}"
            )
        for key in sasl[1:]:
            if not getattr(k, key):
                raise ConfigError(f"kafka.{key}: {protocol} with {k.sasl_mechanism} needs it")
    else:
        for key in sasl:
            if getattr(k, key):
                raise ConfigError(
                    f"kafka.{key}: set only with security_protocol SASL_PLAINTEXT or SASL_SSL "
                    f"(it is {protocol})"
                )
    files = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    for key in files:
        path = getattr(k, key)
        if path and protocol not in ("SSL", "SASL_SSL"):
            raise ConfigError(
                f"kafka.{key}: set only with security_protocol SSL or SASL_SSL (it is {protocol})"
            )
        if path and not os.path.isfile(path):
            raise ConfigError(f"kafka.{key}: file not found: {path}")
    if k.ssl_keyfile and not k.ssl_certfile:
        raise ConfigError("kafka.ssl_keyfile: needs ssl_certfile (the certificate it belongs to)")


@dataclass
class WindowConfig:
    size_s: float = 10.0
    # Events up to this much behind the newest event still land in their window.
    allowed_lateness_s: float = 5.0
    # Series levels; every event feeds every level (roll-ups).
    levels: list[list[str]] = field(
        default_factory=lambda: [
            ["provider"],
            ["provider", "operation"],
            ["provider", "merchant_id"],
            ["provider", "operation", "merchant_id"],
        ]
    )
    # Decoder guard rails for timestamps relative to the stream's clock.
    max_future_s: float = 24 * 3600.0
    max_past_s: float = 7 * 24 * 3600.0
    # Hopping windows: a window of size_s every hop_s (0 = tumbling, hop = size).
    hop_s: float = 0.0
    # A successful create_payment whose callback has not arrived after this long
    # counts as a missing callback.
    callback_timeout_s: float = 60.0
    # Bounds that keep memory flat whatever the traffic: pending orders awaiting a
    # callback, series per level (the rest fold into "__other__"), idle series.
    max_pending_orders: int = 1_000_000
    max_series_per_level: int = 100_000
    idle_evict_s: float = 3600.0
    # Live only: when no event arrives for this long (wall clock), the watermark
    # follows the wall clock so a total traffic stop still closes windows.
    idle_advance_s: float = 15.0


@dataclass
class ErrorRateRuleConfig:
    """System errors (provider_error, timeout, network, rate_limited) per window."""

    enabled: bool = True
    rule: str = "system_error_rate"
    # Error rate from which an alert is critical, measured over at least min_volume
    # calls (the sequential detector decides whether it pages at all).
    critical_threshold: float = 0.20
    min_volume: int = 20
    # Cold start: windows with calls before the learned rate is used (until then a
    # series is judged against 5 %, a rate never normal).
    min_windows: int = 30
    # Read but unused since the sequential detector (kept so older files load).
    threshold: float = 0.05
    confidence: float = 0.95
    learned: bool = True
    learned_min_volume: int = 100


@dataclass
class ConfigErrorsRuleConfig:
    """auth_config / signature / certificate errors: an incident even at low volume."""

    enabled: bool = True
    rule: str = "config_errors"
    min_windows: int = 6


@dataclass
class TimeoutsRuleConfig:
    """Timeouts alone (a share of calls, sequential): a provider slowing down shows here
    before its system-error rate moves."""

    enabled: bool = True
    rule: str = "timeouts"
    min_windows: int = 30


@dataclass
class DeclinesRuleConfig:
    """Business declines (insufficient funds, risk): a slow drift, info severity only."""

    enabled: bool = True
    rule: str = "business_declines"
    # Levels judged ([] = the levels without merchant_id).
    levels: list[list[str]] = field(default_factory=list)
    min_windows: int = 60


@dataclass
class LatencyRuleConfig:
    enabled: bool = True
    rule: str = "latency"
    min_windows: int = 30
    # Quantiles judged: p50, p95 and/or p99 (p99 of a small window is its slowest call).
    quantiles: list[str] = field(default_factory=lambda: ["p50", "p95"])
    # Windows with fewer calls are not judged (they still teach, with less weight):
    # below ~40 calls one timeout is the window's p95.
    min_volume: float = 40.0


@dataclass
class LatencyTailRuleConfig:
    # The share of calls slower than 4x their window's median (stalled calls), judged
    # like an error share: a few calls hanging for seconds while the median holds.
    enabled: bool = True
    rule: str = "latency_tail"
    min_windows: int = 30


@dataclass
class VolumeRuleConfig:
    """Traffic drops against a time-of-day expectation; surges never page."""

    enabled: bool = True
    rule: str = "traffic_drop"
    # Levels judged ([] = the levels without merchant_id: merchants are too spiky).
    levels: list[list[str]] = field(default_factory=list)
    min_windows: int = 60


@dataclass
class CallbacksRuleConfig:
    """Missing callbacks, signature-verify failures (per signing key), nacks, late acks."""

    enabled: bool = True
    rule: str = "callbacks"
    # Levels judged ([] = {provider} and {provider, signing_key_id}: one merchant's few
    # callbacks a window are too few to judge, and a provider-wide loss shows at the top).
    levels: list[list[str]] = field(default_factory=list)


@dataclass
class DuplicateCallbacksRuleConfig:
    """Duplicate callbacks (the provider delivering a callback again) against a learned rate."""

    enabled: bool = True
    rule: str = "duplicate_callbacks"
    # Levels judged ([] = {provider}: a storm of redeliveries is the provider's).
    levels: list[list[str]] = field(default_factory=list)
    min_windows: int = 30


@dataclass
class AmountMismatchRuleConfig:
    """Callbacks whose amount differs from the order's: pages on any sustained mismatch."""

    enabled: bool = True
    rule: str = "amount_mismatch"
    # Levels judged ([] = {provider, merchant_id}: whose orders are paid wrongly).
    levels: list[list[str]] = field(default_factory=list)
    # Share of callbacks that may mismatch before evidence builds up (never learned).
    tolerated_rate: float = 0.001


@dataclass
class MultivariateRuleConfig:
    """A river model over window features: an extra, informational signal."""

    enabled: bool = False
    rule: str = "multivariate"
    levels: list[list[str]] = field(default_factory=list)
    # Any river anomaly model or drift detector by dotted path, with its parameters
    # ("" = MinMaxScaler | HalfSpaceTrees(n_trees=10, height=8, window_size=250)).
    # Anomaly models judge the window's feature vector; drift detectors (river.drift.*)
    # follow one of its features, named by `feature`.
    model: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    feature: str = ""
    # Windows a series' model learns from before it may alert.
    min_windows: int = 500


@dataclass
class MetricLimitConfig:
    """A hard limit (static SLO) on the metrics whose name matches ``match`` (a regular
    expression searched in the name, case-insensitive): the window's mean value at or past
    ``warning`` warns, at or past ``critical`` is critical (lower is worse when
    ``critical < warning``)."""

    match: str = ""
    warning: float = 0.0
    critical: float = 0.0


#: Built-in hard limits per kind of metric (``detectors.metrics.builtin_limits``), checked
#: after the configured ``limits``; the first entry whose ``match`` finds the name applies.
BUILTIN_METRIC_LIMITS = (
    MetricLimitConfig(r"(cpu|util).*(percent|pct)", 90.0, 98.0),  # utilisation, %
    MetricLimitConfig(r"(cpu|util).*ratio", 0.9, 0.98),  # utilisation, 0..1
    MetricLimitConfig(r"mem.*(percent|pct)", 90.0, 97.0),  # memory used, %
    MetricLimitConfig(r"mem.*ratio", 0.9, 0.97),  # memory used, 0..1
    MetricLimitConfig(r"(net|network).*(err|drop)", 5.0, 50.0),  # network errors per second
)


@dataclass
class MetricsRuleConfig:
    """Univariate streaming detector on `metric` events (CPU, memory, network errors,
    queue depth, ...), one per series, with hard limits per kind of metric.

    On by default: an unusual value warns (``MetricDetector``; a plateau at an abnormal
    level keeps firing until it recovers), a breached hard limit pages at its severity.
    Alerts carry the metric's labels (``host``, ``service``, ...), and the default route
    groups by ``host``: one sick host is one page.
    """

    enabled: bool = True
    rule: str = "metric_anomaly"
    # Score that pages. Higher than the NAB-tuned 0.52 of `backtest` on CSV: live
    # metrics are many and noisy, and a pager needs fewer, surer alerts.
    threshold: float = 0.9
    # Hard limits by metric name, checked before the built-in ones.
    limits: list[MetricLimitConfig] = field(default_factory=list)
    # The built-in limits per kind (BUILTIN_METRIC_LIMITS: utilisation, memory, network errors).
    builtin_limits: bool = True

    def all_limits(self) -> list[MetricLimitConfig]:
        """Configured limits, then the built-in ones when on (first match wins)."""
        return [*self.limits, *(BUILTIN_METRIC_LIMITS if self.builtin_limits else ())]


@dataclass
class SLORuleConfig:
    """A static threshold with warning and critical levels on a window feature or ratio,
    e.g. success rate ``success / volume`` below 99 % warns and below 95 % is critical."""

    rule: str = ""
    feature: str = ""
    warning: float = 0.0
    critical: float = 0.0
    per: str = ""  # denominator feature ("" = the feature itself)
    min_volume: float = 20.0
    levels: list[list[str]] = field(default_factory=list)  # [] = every call level


@dataclass
class DetectorsConfig:
    # The one false-alarm budget: false alarms per series and rule per 30 days under
    # normal traffic. Every sequential detector's CUSUM threshold derives from it
    # (h = ln(tests x ARL0), see docs/detection.md), whatever the traffic volume.
    false_alarms_per_series_per_30d: float = 1.0
    error_rate: ErrorRateRuleConfig = field(default_factory=ErrorRateRuleConfig)
    timeouts: TimeoutsRuleConfig = field(default_factory=TimeoutsRuleConfig)
    config_errors: ConfigErrorsRuleConfig = field(default_factory=ConfigErrorsRuleConfig)
    business_declines: DeclinesRuleConfig = field(default_factory=DeclinesRuleConfig)
    latency: LatencyRuleConfig = field(default_factory=LatencyRuleConfig)
    latency_tail: LatencyTailRuleConfig = field(default_factory=LatencyTailRuleConfig)
    volume: VolumeRuleConfig = field(default_factory=VolumeRuleConfig)
    callbacks: CallbacksRuleConfig = field(default_factory=CallbacksRuleConfig)
    duplicate_callbacks: DuplicateCallbacksRuleConfig = field(
        default_factory=DuplicateCallbacksRuleConfig
    )
    amount_mismatch: AmountMismatchRuleConfig = field(default_factory=AmountMismatchRuleConfig)
    multivariate: MultivariateRuleConfig = field(default_factory=MultivariateRuleConfig)
    metrics: MetricsRuleConfig = field(default_factory=MetricsRuleConfig)
    slos: list[SLORuleConfig] = field(default_factory=list)


@dataclass
class LifecycleConfig:
    # Consecutive anomalous windows before pending becomes firing.
    for_windows: int = 1
    # Consecutive quiet windows before firing becomes resolved (hysteresis).  Only
    # windows judged healthy that carried calls count: an empty window is no evidence.
    keep_firing_for_windows: int = 3
    # ... and those healthy windows must carry at least this many calls between them.
    resolve_min_calls: int = 20
    # A firing series with no evidence at all (no calls, no judgement) for this long
    # resolves: it went away, and an alert must not stay open forever.
    stale_after_s: float = 1800.0
    # Once the evidence says healthy, the episode stays open this long before it
    # resolves; a relapse within it continues the same episode (no second page).
    # 0 = resolve at once (docs/detection.md has make eval with 300).
    resolve_hold_s: float = 0.0
    # Rate signals (error shares): hold a recovery for as long as the detector would
    # need to re-detect the episode's share at the series' current calls per second
    # (the detection target max(2d, d + 20 s), d = h / KL; docs/detection.md), so a
    # lull inside one incident is not announced as its end.  At most resolve_hold_max_s.
    relapse_hold: bool = True
    resolve_hold_max_s: float = 600.0


@dataclass
class ConsoleConfig:
    enabled: bool = True
    color: str = "auto"  # auto | always | never


@dataclass
class DeliveryConfig:
    # 15 attempts ride out a receiver down ~9 minutes (1+2+4+…+60 s between them);
    # the route's fallback is used only after the last.
    max_attempts: int = 15
    # First retry delay; doubled on each retry (with jitter), capped at max_backoff_s.
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    send_timeout_s: float = 15.0


@dataclass
class NotifyConfig:
    language: str = "en"  # en | zh
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    # Alertmanager-style routes (see docs/config.md); without any, alerts go to the
    # console and the alerts topic only.
    routes: list[dict[str, Any]] = field(default_factory=list)
    inhibit_rules: list[dict[str, Any]] = field(default_factory=list)
    # A provider-wide alert mutes the same rule's alerts on series beneath it, and of a
    # series' system-error and timeouts alerts the first to fire mutes the other
    # (builtin_inhibit_rules).
    default_inhibit: bool = True
    # SQLite file for alert, notification and delivery history ("" = the default
    # under $XDG_DATA_HOME/paywatch, "off" = keep none).
    history_path: str = ""
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)


LANGUAGES = ("zh", "en")  # languages of notification texts
BODY_FORMATS = ("markdown", "text")  # text: SMS, e-mail subjects


class RouteConfigError(ConfigError):
    """A route or inhibit rule that cannot work; the message is one line for a person."""


def _check_regexes(where: str, patterns: typing.Mapping[str, str]) -> None:
    for label, rx in patterns.items():
        try:
            re.compile(rx)
        except re.error as exc:
            raise RouteConfigError(f"{where}: bad regex for {label!r}: {exc}") from None


@dataclass(frozen=True)
class RouteConfig:
    """Where alerts go and how often people hear about them (Alertmanager vocabulary).

    ``receivers`` are Apprise URLs (delivery's business); ``fallback`` names the
    route delivery uses when every receiver keeps failing; ``escalate_to`` names the
    route that gets an unacknowledged critical group ``escalate_after_s`` after its
    first notification (a route named as an ``escalate_to`` is reached only that way).
    """

    name: str
    match: typing.Mapping[str, str] = field(default_factory=dict)
    match_re: typing.Mapping[str, str] = field(default_factory=dict)
    receivers: tuple[str, ...] = ()
    group_by: tuple[str, ...] = ("rule", "provider", "host")
    group_wait_s: float = 30.0
    group_interval_s: float = 300.0
    repeat_interval_s: float = 4 * 3600.0
    max_repeats: int | None = None  # None: repeat while firing and unacknowledged
    continue_: bool = False
    language: str = "en"
    body_format: str = "markdown"  # markdown | text (SMS, e-mail subjects)
    fallback: str | None = None
    escalate_after_s: float | None = None
    escalate_to: str | None = None

    def __post_init__(self) -> None:
        where = f"route {self.name!r}"
        if not self.name:
            raise RouteConfigError("a route needs a name")
        if self.group_wait_s < 0:
            raise RouteConfigError(f"{where}: group_wait_s must be >= 0")
        for key in ("group_interval_s", "repeat_interval_s"):
            if not getattr(self, key) > 0:
                raise RouteConfigError(f"{where}: {key} must be > 0")
        if self.max_repeats is not None and self.max_repeats < 0:
            raise RouteConfigError(f"{where}: max_repeats must be >= 0")
        if self.language not in LANGUAGES:
            raise RouteConfigError(f"{where}: language must be one of {', '.join(LANGUAGES)}")
        if self.body_format not in BODY_FORMATS:
            raise RouteConfigError(f"{where}: body_format must be one of {', '.join(BODY_FORMATS)}")
        if (self.escalate_after_s is None) != (self.escalate_to is None):
            raise RouteConfigError(f"{where}: escalate_after_s and escalate_to go together")
        if self.escalate_after_s is not None and self.escalate_after_s < 0:
            raise RouteConfigError(f"{where}: escalate_after_s must be >= 0")
        object.__setattr__(self, "receivers", tuple(self.receivers))
        object.__setattr__(self, "group_by", tuple(self.group_by))
        _check_regexes(where, self.match_re)

    @classmethod
    def from_dict(cls, obj: typing.Mapping[str, Any]) -> RouteConfig:
        """Build from a config mapping; ``continue`` is accepted for ``continue_``."""
        known = set(cls.__dataclass_fields__)
        data = dict(obj)
        if "continue" in data:
            data["continue_"] = data.pop("continue")
        unknown = sorted(set(data) - known)
        if unknown:
            raise RouteConfigError(
                f"route {data.get('name')!r}: unknown key(s) {', '.join(unknown)}"
            )
        for key in ("receivers", "group_by"):
            if isinstance(data.get(key), str):
                data[key] = (data[key],)
        return cls(**data)


@dataclass(frozen=True)
class InhibitRule:
    """While an alert matching ``source_match`` fires, mute alerts matching ``target_match``
    whose ``equal`` labels have the same values (a missing label counts as empty).

    ``first_fires``: of a source and a target, the one that began first pages and mutes
    the other — the source as before when it began no later, the target when it began
    earlier and is at least as severe — for two views of one trouble that either may
    show first (timeouts are system errors)."""

    source_match: typing.Mapping[str, str] = field(default_factory=dict)
    target_match: typing.Mapping[str, str] = field(default_factory=dict)
    equal: tuple[str, ...] = ()
    source_match_re: typing.Mapping[str, str] = field(default_factory=dict)
    target_match_re: typing.Mapping[str, str] = field(default_factory=dict)
    first_fires: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "equal", tuple(self.equal))
        _check_regexes("inhibit source", self.source_match_re)
        _check_regexes("inhibit target", self.target_match_re)

    @classmethod
    def from_dict(cls, obj: typing.Mapping[str, Any]) -> InhibitRule:
        """Build from a config mapping (Alertmanager's key names)."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(obj) - known)
        if unknown:
            raise RouteConfigError(f"inhibit rule: unknown key(s) {', '.join(unknown)}")
        data = dict(obj)
        if isinstance(data.get("equal"), str):
            data["equal"] = (data["equal"],)
        return cls(**data)


def check_routes(routes: typing.Sequence[RouteConfig]) -> None:
    """Checks across routes: unique names, ``escalate_to``/``fallback`` name a route."""
    names = [r.name for r in routes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RouteConfigError(f"route name(s) used twice: {', '.join(dupes)}")
    known = {*names, "default"}  # the dispatcher adds a built-in default route
    for r in routes:
        for key in ("escalate_to", "fallback"):
            target = getattr(r, key)
            if target is not None and target not in known:
                raise RouteConfigError(f"route {r.name!r}: {key} names unknown route {target!r}")


@dataclass
class MetricsConfig:
    # Prometheus metrics on http://host:port/metrics, with /healthz and /readyz beside
    # them (0 turns all three off).
    port: int = 9108
    host: str = "0.0.0.0"
    # /readyz answers 503 while more records than this wait on the assigned partitions.
    ready_max_lag: int = 10_000
    # Payment-health metrics (paywatch_payment_*), updated once per closed window for
    # the roll-up levels (provider, provider+operation). Merchant series only when
    # merchant_series is on; either way at most max_series series are exported (the
    # rest are counted in paywatch_payment_series_dropped).
    payments: bool = True
    merchant_series: bool = False
    max_series: int = 2000


ACTION_KINDS = ("http", "command")
ACTION_TRIGGERS = ("firing", "resolved", "escalation")


@dataclass
class ActionConfig:
    """One automatic action on alerts (see docs/actions.md): an HTTP call or a local command."""

    name: str = ""
    kind: str = "http"  # http | command
    # When it runs: firing (a new episode), resolved, escalation (severity went up).
    on: list[str] = field(default_factory=lambda: ["firing"])
    # Which alerts: label matchers as in routes (rule, signal, severity, provider, ...),
    # and/or the routes the alert goes to ([] = any route).
    match: dict[str, str] = field(default_factory=dict)
    match_re: dict[str, str] = field(default_factory=dict)
    routes: list[str] = field(default_factory=list)
    # Only alerts that name overdue orders (missing-callback evidence).
    needs_evidence: bool = False
    # http: POST to url; the body is signed with HMAC-SHA256 using the secret in the
    # environment variable secret_env. body: a JSON template ({} = the contract body).
    url: str = ""
    secret_env: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    # command: argv (no shell); the request body arrives on stdin.
    command: list[str] = field(default_factory=list)
    timeout_s: float = 10.0
    max_attempts: int = 3
    backoff_s: float = 1.0  # first retry delay, doubled per retry, capped at max_backoff_s
    max_backoff_s: float = 30.0
    max_runs_per_hour: int = 60  # rate limit of this action (runs, not attempts)
    cooldown_s: float = 300.0  # per alert fingerprint and trigger
    dry_run: bool = False


@dataclass
class ActionsConfig:
    """Automatic actions on alerts; ``enabled: false`` is the kill switch for all of them."""

    enabled: bool = True
    dry_run: bool = False  # every action: audit what would be sent, send nothing
    max_concurrent: int = 4
    # Overdue orders a callback alert names at most (oldest first), and kept in all.
    evidence_max_orders: int = 1000
    max_overdue_orders: int = 100_000
    definitions: list[ActionConfig] = field(default_factory=list)

    def check(self) -> None:
        if self.max_concurrent < 1 or self.evidence_max_orders < 0 or self.max_overdue_orders < 0:
            raise ConfigError("actions: max_concurrent must be >= 1, the order bounds >= 0")
        names = [a.name for a in self.definitions]
        for i, a in enumerate(self.definitions):
            where = f"actions.definitions[{i}]"
            if not a.name or names.count(a.name) > 1:
                raise ConfigError(f"{where}.name: every action needs a name of its own")
            if a.kind not in ACTION_KINDS:
                raise ConfigError(f"{where}.kind: must be {' or '.join(ACTION_KINDS)}")
            bad = [t for t in a.on if t not in ACTION_TRIGGERS]
            if bad or not a.on:
                raise ConfigError(f"{where}.on: use {', '.join(ACTION_TRIGGERS)}")
            if a.kind == "http" and not a.url.startswith(("http://", "https://")):
                raise ConfigError(f"{where}.url: an http action needs an http(s):// URL")
            if a.kind == "http" and not a.secret_env:
                raise ConfigError(f"{where}.secret_env: name the variable holding the secret")
            if a.kind == "command" and not a.command:
                raise ConfigError(f"{where}.command: a command action needs its argv")
            if a.max_attempts < 1 or a.max_runs_per_hour < 1:
                raise ConfigError(f"{where}: max_attempts and max_runs_per_hour must be >= 1")
            for key in ("timeout_s", "backoff_s", "max_backoff_s"):
                _positive(f"{where}.{key}", getattr(a, key))
            if a.cooldown_s < 0:
                raise ConfigError(f"{where}.cooldown_s: must be >= 0")
            _check_regexes(where, a.match_re)


@dataclass
class StateConfig:
    """Checkpoints of the worker's state to ``kafka.state_topic`` (docs/operations.md)."""

    # Windows, detectors and open episodes are checkpointed, with the offsets they cover,
    # and restored at start-up and when the same partitions are assigned again.  State
    # that starts cold first closes the episodes its group left firing ("closed unjudged").
    checkpoint: bool = True
    # Wall-clock seconds between checkpoints (a restart replays at most this much); the
    # dispatcher's notification log is checkpointed as often (and before every send).
    checkpoint_every_s: float = 30.0
    # Also checkpoint right after a batch whose alerts changed state, so a restart
    # does not publish them again.
    checkpoint_on_alert: bool = True
    # ... unless one was taken less than this many wall-clock seconds ago: catching up
    # through a backlog (alert batches milliseconds apart, each snapshot megabytes), a
    # second's alerts go into one checkpoint, and a crash republishes at most that
    # second's records, which the dispatcher recognises.  0: after every such batch.
    alert_checkpoint_gap_s: float = 1.0
    # Checkpoints are split into records of at most this many bytes (Kafka's default
    # message size limit is 1 MiB).
    chunk_bytes: int = 512 * 1024


# state.chunk_bytes bounds: a chunk is one record of the state topic (plus 64 KiB of slack).
MIN_CHUNK_BYTES = 1024
MAX_CHUNK_BYTES = 64 * 1024 * 1024


@dataclass
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    windows: WindowConfig = field(default_factory=WindowConfig)
    detectors: DetectorsConfig = field(default_factory=DetectorsConfig)
    alerts: LifecycleConfig = field(default_factory=LifecycleConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    actions: ActionsConfig = field(default_factory=ActionsConfig)
    state: StateConfig = field(default_factory=StateConfig)

    def validate(self) -> Config:
        """Cross-field checks that types alone cannot express."""
        self.actions.check()
        self._check_windows()
        self._check_detectors()
        self._check_outputs()
        check_kafka_security(self.kafka)
        self._check_state()
        if self.kafka.scale_out not in ("tasks", "single"):
            raise ConfigError(
                f"kafka.scale_out: must be tasks or single; got {self.kafka.scale_out!r}"
            )
        return self

    def _check_state(self) -> None:
        st = self.state
        _positive("state.checkpoint_every_s", st.checkpoint_every_s)
        gap = st.alert_checkpoint_gap_s
        if not gap >= 0:
            raise ConfigError(f"state.alert_checkpoint_gap_s: must be >= 0 seconds; got {gap}")
        if not MIN_CHUNK_BYTES <= st.chunk_bytes <= MAX_CHUNK_BYTES:
            raise ConfigError(
                f"state.chunk_bytes: must be between {MIN_CHUNK_BYTES} and {MAX_CHUNK_BYTES} "
                f"(each chunk is one record of kafka.state_topic; keep it under the broker's "
                f"message.max.bytes, 1 MiB by default); got {st.chunk_bytes}"
            )

    def _check_windows(self) -> None:
        _positive("windows.size_s", self.windows.size_s)
        _positive(
            "detectors.false_alarms_per_series_per_30d",
            self.detectors.false_alarms_per_series_per_30d,
        )
        if self.windows.hop_s < 0:
            raise ConfigError("windows.hop_s: must be >= 0")
        if self.windows.hop_s and (self.windows.size_s * 1000) % (self.windows.hop_s * 1000):
            raise ConfigError("windows.hop_s: size_s must be a whole multiple of hop_s")
        _positive("windows.callback_timeout_s", self.windows.callback_timeout_s)
        _positive("windows.idle_evict_s", self.windows.idle_evict_s)
        if self.windows.max_pending_orders < 1 or self.windows.max_series_per_level < 1:
            raise ConfigError("windows: max_pending_orders and max_series_per_level must be >= 1")
        if self.windows.allowed_lateness_s < 0:
            raise ConfigError("windows.allowed_lateness_s: must be >= 0")
        if not self.windows.levels:
            raise ConfigError("windows.levels: at least one level is needed")
        for i, level in enumerate(self.windows.levels):
            if not level:
                raise ConfigError(f"windows.levels[{i}]: a level needs at least one dimension")
            for dim in level:
                if dim not in DIMENSIONS:
                    raise ConfigError(
                        f"windows.levels[{i}]: unknown dimension {dim!r}; "
                        f"use {', '.join(DIMENSIONS)}"
                    )

    def _check_detectors(self) -> None:
        er = self.detectors.error_rate
        for key in ("threshold", "critical_threshold", "confidence"):
            value = getattr(er, key)
            if not 0 < value < 1:
                raise ConfigError(f"detectors.error_rate.{key}: must be between 0 and 1")
        if er.critical_threshold < er.threshold:
            raise ConfigError("detectors.error_rate.critical_threshold: must be >= threshold")
        det = self.detectors
        rule_names = [
            r.rule
            for r in (
                det.error_rate,
                det.config_errors,
                det.latency,
                det.volume,
                det.callbacks,
                det.duplicate_callbacks,
                det.amount_mismatch,
                det.multivariate,
                det.metrics,
            )
            if r.enabled
        ]
        rule_names += [slo.rule for slo in det.slos]
        for i, lim in enumerate(det.metrics.limits):
            where = f"detectors.metrics.limits[{i}]"
            try:
                re.compile(lim.match)
            except re.error as exc:
                raise ConfigError(f"{where}.match: bad regular expression: {exc}") from None
            if not lim.match or lim.warning == lim.critical:
                raise ConfigError(f"{where}: needs 'match', and warning and critical must differ")
        for i, slo in enumerate(det.slos):
            where = f"detectors.slos[{i}]"
            if not slo.rule or not slo.feature:
                raise ConfigError(f"{where}: 'rule' and 'feature' are required")
            known = _FEATURES
            for key in ("feature", "per"):
                name = getattr(slo, key)
                if name and name not in known:
                    raise ConfigError(f"{where}.{key}: unknown feature {name!r}; use one of "
                                      f"{', '.join(known)}")  # fmt: skip
            if slo.warning == slo.critical:
                raise ConfigError(f"{where}: warning and critical must differ")
            for j, level in enumerate(slo.levels):
                if not level or any(dim not in DIMENSIONS for dim in level):
                    raise ConfigError(f"{where}.levels[{j}]: use dimensions of windows.levels")
        if len(set(rule_names)) != len(rule_names):
            raise ConfigError("detectors: two enabled rules share a rule name")
        for q in det.latency.quantiles:
            if q not in ("p50", "p95", "p99"):
                raise ConfigError(f"detectors.latency.quantiles: unknown quantile {q!r}")
        if not det.latency.quantiles:
            raise ConfigError("detectors.latency.quantiles: name at least one of p50, p95, p99")
        for key in ("error_rate", "config_errors", "latency", "volume"):
            if getattr(det, key).min_windows < 0:
                raise ConfigError(f"detectors.{key}.min_windows: must be >= 0")
        self._check_river()
        for key in (
            "volume",
            "multivariate",
            "callbacks",
            "duplicate_callbacks",
            "amount_mismatch",
        ):
            allowed = (*DIMENSIONS, "signing_key_id") if key == "callbacks" else DIMENSIONS
            for i, level in enumerate(getattr(det, key).levels):
                if not level or any(dim not in allowed for dim in level):
                    raise ConfigError(
                        f"detectors.{key}.levels[{i}]: use dimensions of windows.levels"
                    )

    def _check_river(self) -> None:
        """A river model named by dotted path must exist and take its parameters."""
        mv = self.detectors.multivariate
        if not (mv.model or mv.params):
            return
        from models.river_plug import check_river_model  # imports river only when named

        try:
            check_river_model(mv.model or "river.anomaly.HalfSpaceTrees", mv.params, mv.feature)
        except ValueError as exc:
            raise ConfigError(f"detectors.multivariate.model: {exc}") from None

    def _check_outputs(self) -> None:
        """Lifecycle, notifications, metrics and Kafka settings."""
        if self.alerts.for_windows < 1 or self.alerts.keep_firing_for_windows < 1:
            raise ConfigError("alerts: for_windows and keep_firing_for_windows must be >= 1")
        if self.alerts.resolve_min_calls < 0:
            raise ConfigError("alerts.resolve_min_calls: must be >= 0")
        if not self.alerts.resolve_hold_s >= 0:
            raise ConfigError("alerts.resolve_hold_s: must be >= 0 (seconds)")
        if not self.alerts.resolve_hold_max_s >= 0:
            raise ConfigError("alerts.resolve_hold_max_s: must be >= 0 (seconds)")
        _positive("alerts.stale_after_s", self.alerts.stale_after_s)
        if self.notify.language not in ("en", "zh"):
            raise ConfigError("notify.language: must be 'en' or 'zh'")
        self.notify_routes()
        d = self.notify.delivery
        if d.max_attempts < 1:
            raise ConfigError("notify.delivery.max_attempts: must be >= 1")
        for key in ("backoff_s", "max_backoff_s", "send_timeout_s"):
            _positive(f"notify.delivery.{key}", getattr(d, key))
        if self.notify.console.color not in ("auto", "always", "never"):
            raise ConfigError("notify.console.color: must be auto, always or never")
        if not 0 <= self.metrics.port <= 65535:
            raise ConfigError("metrics.port: must be a TCP port (0 turns metrics off)")
        if self.metrics.max_series < 1:
            raise ConfigError("metrics.max_series: must be >= 1")
        if self.kafka.max_batch < 1:
            raise ConfigError("kafka.max_batch: must be >= 1")

    def notify_routes(self) -> tuple[list[RouteConfig], list[InhibitRule]]:
        """Routes and inhibit rules of ``notify``; errors name the config key."""
        routes, rules = [], []
        for i, raw in enumerate(self.notify.routes):
            try:
                data = dict(raw)
                data.setdefault("language", self.notify.language)
                routes.append(RouteConfig.from_dict(data))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"notify.routes[{i}]: {exc}") from None
        for i, raw in enumerate(self.notify.inhibit_rules):
            try:
                rules.append(InhibitRule.from_dict(raw))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"notify.inhibit_rules[{i}]: {exc}") from None
        try:
            check_routes(routes)
        except RouteConfigError as exc:
            raise ConfigError(f"notify.routes: {exc}") from None
        return routes, rules

    def builtin_inhibit_rules(self) -> list[InhibitRule]:
        """Inhibit rules on while ``notify.default_inhibit``, beside the configured ones:
        timeouts are system errors, so a system-error alert mutes the timeouts alert of
        the same series (one incident, one page), and a timeouts alert mutes its series'
        latency-tail alert.  Matched on signals, which renaming a rule does not change;
        ``equal`` on every series dimension; ``first_fires``: when the narrower signal
        fired first (timeouts rising before the system errors they are part of), it is
        the one that paged, and it mutes the broader one instead.

        >>> rule, _ = Config().builtin_inhibit_rules()
        >>> rule.source_match, rule.target_match, rule.equal
        ({'signal': 'error_rate'}, {'signal': 'timeouts'}, ('provider', 'operation', 'merchant_id'))
        """
        if not self.notify.default_inhibit:
            return []
        dims = tuple(dict.fromkeys(d for level in self.windows.levels for d in level))
        return [
            InhibitRule({"signal": "error_rate"}, {"signal": "timeouts"}, dims, first_fires=True),
            # A timed-out call is a slow call: the tail share rises with the timeouts.
            InhibitRule({"signal": "timeouts"}, {"signal": "latency_tail"}, dims, first_fires=True),
        ]


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key}: must be > 0")


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(text: str, key: str, env: typing.Mapping[str, str] | None = None) -> str:
    """Replace ``${VAR}`` / ``${VAR:-default}`` from the environment.

    >>> substitute_env("token=${T}", "k", {"T": "abc"})
    'token=abc'
    >>> substitute_env("${MISSING:-none}", "k", {})
    'none'
    """
    env = os.environ if env is None else env

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{key}: environment variable {name} is not set")

    return _ENV.sub(repl, text)


def _substitute_any(value: Any, key: str, env: typing.Mapping[str, str] | None) -> Any:
    """``${VAR}`` substitution inside free-form values (route definitions)."""
    if isinstance(value, str):
        return substitute_env(value, key, env)
    if isinstance(value, list):
        return [_substitute_any(v, f"{key}[{i}]", env) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _substitute_any(v, f"{key}.{k}", env) for k, v in value.items()}
    return value


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_type_name(inner)}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp)
    )


def _convert(tp: Any, value: Any, key: str, env: typing.Mapping[str, str] | None) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, key, env)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(typing.cast(type, tp), value, key, env)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__}")
        return [_convert(inner, v, f"{key}[{i}]", env) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        _, vt = typing.get_args(tp)
        return {str(k): _convert(vt, v, f"{key}.{k}", env) for k, v in value.items()}
    if tp is Any:
        return _substitute_any(value, key, env)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return substitute_env(value, key, env)
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - programming error


def _build(
    cls: type[T], data: dict[str, Any], prefix: str, env: typing.Mapping[str, str] | None
) -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(typing.cast(Any, cls))}
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = f"{prefix}.{raw_key}" if prefix else str(raw_key)
        if raw_key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{key}: unknown key (known here: {known})")
        kwargs[raw_key] = _convert(hints[raw_key], value, key, env)
    return cls(**kwargs)


def config_from_dict(
    data: dict[str, Any] | None, env: typing.Mapping[str, str] | None = None
) -> Config:
    """Build and validate a :class:`Config` from parsed YAML.

    >>> config_from_dict({"windows": {"size_s": 5}}).windows.size_s
    5.0
    >>> config_from_dict({"windows": {"sise_s": 5}})
    Traceback (most recent call last):
    ...
    stream.config.ConfigError: windows.sise_s: unknown key (known here: ...)
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the config file must hold a mapping at the top level")
    return _build(Config, data, "", env).validate()


def load_config(path: str | Path | None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Load a YAML file, or the built-in defaults when ``path`` is None."""
    if path is None:
        return Config().validate()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from None
    try:
        return config_from_dict(data, env)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


# -- introspection: what `paywatch config check` prints and docs/config.md is tested against --


@dataclass(frozen=True)
class ConfigKey:
    """One key a config file may set: ``path`` as written in docs (``windows.size_s``; a key
    of every entry of a list of sections reads ``detectors.slos[].rule``), type and default."""

    path: str
    type: Any
    default: Any


def config_keys(cls: type = Config, prefix: str = "") -> list[ConfigKey]:
    """Every leaf key of ``cls`` with its default, in declaration order.

    >>> [k for k in config_keys() if k.path == "windows.size_s"]
    [ConfigKey(path='windows.size_s', type=<class 'float'>, default=10.0)]
    """
    hints = typing.get_type_hints(cls)
    keys: list[ConfigKey] = []
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        tp = hints[f.name]
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        (inner,) = typing.get_args(tp) if typing.get_origin(tp) is list else (None,)
        if dataclasses.is_dataclass(tp):
            keys += config_keys(typing.cast(type, tp), f"{path}.")
        elif inner is not None and dataclasses.is_dataclass(inner):
            keys.append(ConfigKey(path, tp, default))
            keys += config_keys(typing.cast(type, inner), f"{path}[].")
        else:
            keys.append(ConfigKey(path, tp, default))
    return keys


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The configuration as plain YAML-ready data, every default filled in."""
    return dataclasses.asdict(cfg)
