"""Seeded, realistic payment traffic (event v1) with injectable incidents and their ground truth.

The simulator stands in for a fleet of payment services built on the gopay SDK:
``provider_call`` events for WeChat Pay, Alipay, PayPal and UnionPay calls,
``payment_notification`` callbacks for paid orders, and a few ``metric``
samples.  It is pure (no Kafka, no clock): ``simulate(cfg)`` yields events in
event-time order, and the same config gives the same events, byte for byte.

Traffic model, in short:

* volume is a Poisson process of ``rate`` calls/s at the daily mean, shaped by
  a daily curve (night trough, lunch and evening peaks, Beijing time by
  default) and optionally a weekly one;
* merchants have Zipf-skewed volume (``M1001`` is the largest) and their own
  provider mix; each provider has its own operation mix, latency (lognormal
  per operation) and real error codes from ``stream/ingest/data/error_codes.csv``;
* background noise: a few % business declines, ~0.2 % system errors
  (5xx / timeouts / rate limits) and a trickle of not-found / order-state errors;
* callbacks follow successful ``create_payment`` calls after a lognormal
  delay, are mostly acked, sometimes nacked (then retried) or duplicated.

Incidents change that model over a time range; ``labels(cfg)`` returns them
as the ground truth an evaluation compares alerts with.

>>> cfg = SimConfig(seed=1, duration_s=5, rate=20)
>>> events = list(simulate(cfg))
>>> all(a["event_ts"] <= b["event_ts"] for a, b in zip(events, events[1:]))
True
>>> parse_incident("provider_outage:provider=alipay,start=120,duration=90").magnitude
0.8
"""

from __future__ import annotations

import contextlib
import gzip
import heapq
import itertools
import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream.ingest.events import OPERATIONS, SCHEMA_VERSION

# 2026-03-02 02:00 UTC, a Monday, 10:00 in Beijing: reproducible and mid-morning traffic.
DEFAULT_START_MS = 1_772_416_800_000

DEFAULT_PROVIDER_SHARES: dict[str, float] = {
    "wechatpay": 0.45,
    "alipay": 0.35,
    "paypal": 0.12,
    "unionpay": 0.08,
}


@dataclass(frozen=True)
class IncidentKind:
    """What an incident kind does and how an evaluation should score it."""

    default: float  # magnitude when none is given
    magnitude: str  # what the magnitude means
    share: bool  # magnitude is a share in [0, 1] (else a multiplier >= 1)
    target: tuple[str, ...]  # at least one of these must be given
    signal: str  # the alert signal that should catch it
    is_incident: bool = True  # False: normal business an alert on is a false positive
    on_calls: bool = True  # acts on provider calls, so ``operation`` narrows it


INCIDENT_KINDS: dict[str, IncidentKind] = {
    "provider_outage": IncidentKind(
        0.8, "share of the provider's calls that fail", True, ("provider",), "error_rate"
    ),
    "latency_degradation": IncidentKind(
        5.0, "latency multiplier", False, ("provider", "merchant_id"), "latency"
    ),
    "merchant_misconfig": IncidentKind(
        1.0, "share of the merchant's calls that fail", True, ("merchant_id",), "error_rate"
    ),
    "traffic_drop": IncidentKind(
        0.9, "share of the traffic that disappears", True, ("provider", "merchant_id"), "volume"
    ),
    "callback_loss": IncidentKind(
        1.0, "share of callbacks lost", True, ("provider",), "notification", on_calls=False
    ),
    "cert_rotation": IncidentKind(
        1.0, "share of callbacks failing verification", True, ("provider",), "notification",
        on_calls=False,
    ),
    "timeouts": IncidentKind(
        0.02, "share of calls that time out", True, ("provider", "merchant_id"), "error_rate"
    ),
    "gradual_degradation": IncidentKind(
        0.1, "share of calls failing at the end (rising linearly from 0)", True,
        ("provider", "merchant_id"), "error_rate",
    ),
    "promotion": IncidentKind(3.0, "traffic multiplier", False, (), "volume", is_incident=False),
    # Money problems in callbacks: the provider redelivering what it delivered (each
    # affected callback once more), and callbacks whose amount is not the order's.
    "duplicate_storm": IncidentKind(
        0.5, "share of callbacks delivered again", True, ("provider",), "duplicate_callbacks",
        on_calls=False,
    ),
    "amount_mismatch": IncidentKind(
        0.2, "share of callbacks with a wrong amount", True, ("provider", "merchant_id"),
        "amount_mismatch", on_calls=False,
    ),
    # Confounders: normal business an alert on is a false positive.
    "lull": IncidentKind(
        0.6, "share of the traffic gone at the lull's deepest (a smooth dip)", True, (),
        "volume", is_incident=False,
    ),
    "maintenance": IncidentKind(
        0.9, "share of the provider's traffic moved away during planned maintenance", True,
        ("provider",), "volume", is_incident=False,
    ),
    "merchant_quiet": IncidentKind(
        1.0, "share of the merchant's traffic that stops (closed, not broken)", True,
        ("merchant_id",), "volume", is_incident=False,
    ),
    # Host incidents, seen only in ``metric`` events of the pod named by ``host=``: a CPU
    # stuck high, memory climbing until the pod restarts, a burst of network errors.
    "cpu_plateau": IncidentKind(
        0.95, "CPU utilisation the pod is stuck at (share of 100 %)", True, ("host",),
        "metric", on_calls=False,
    ),
    "memory_leak": IncidentKind(
        0.35, "memory share the leak adds by its end (rising linearly from 0)", True,
        ("host",), "metric", on_calls=False,
    ),
    "network_errors": IncidentKind(
        40.0, "network error rate multiplier", False, ("host",), "metric", on_calls=False,
    ),
}  # fmt: skip

#: Host incident kinds and the metric each one shows in.
HOST_METRIC_OF = {
    "cpu_plateau": "worker_cpu_percent",
    "memory_leak": "memory_used_percent",
    "network_errors": "net_errors_per_s",
}

#: Kinds that change how much traffic there is (the rest change what calls return).
_VOLUME_KINDS = frozenset({"traffic_drop", "promotion", "lull", "maintenance", "merchant_quiet"})


def _volume_factor(inc: Incident, frac: float) -> float:
    """Traffic multiplier of a volume incident ``frac`` of the way through it."""
    if inc.kind == "promotion":
        return inc.magnitude
    if inc.kind == "lull":  # a smooth dip, deepest half-way: a night, not a cut
        return 1.0 - inc.magnitude * math.sin(math.pi * min(1.0, max(0.0, frac)))
    return 1.0 - inc.magnitude


_MUTATING = frozenset({"create_payment", "close_payment", "refund", "capture", "transfer"})
_BLOCK_MS = 5_000  # shortest block; traffic intensity is constant within one
_METRIC_EVERY_MS = 10_000
_HOST_SERVICES = ("pay-gateway", "refund-service", "pay-notify")
_CERT_METRIC_EVERY_MS = 60_000
_RETRY_DELAYS_S = (15.0, 15.0, 30.0, 180.0, 600.0)  # WeChat Pay's callback retry schedule


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Incident:
    """An injected incident (or a non-incident: promotion) over ``[start_s, start_s + duration_s)``.

    ``magnitude`` defaults per kind (see ``INCIDENT_KINDS``): share failing for
    outages/misconfigurations, share lost for traffic drops and callback loss,
    a multiplier for latency and promotions.
    """

    kind: str
    start_s: float
    duration_s: float
    provider: str | None = None
    merchant_id: str | None = None
    operation: str | None = None
    magnitude: float = math.nan  # nan = the kind's default
    host: str | None = None  # a simulated pod (host incidents only)

    def __post_init__(self) -> None:
        kind = INCIDENT_KINDS.get(self.kind)
        if kind is None:
            raise ValueError(
                f"unknown incident kind {self.kind!r} (expected one of {', '.join(INCIDENT_KINDS)})"
            )
        if math.isnan(self.magnitude):
            object.__setattr__(self, "magnitude", kind.default)
        for name in ("start_s", "duration_s", "magnitude"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{self.kind}: {name}={value} must be a finite number >= 0")
        if self.duration_s <= 0:
            raise ValueError(f"{self.kind}: duration must be > 0 seconds")
        if kind.share and self.magnitude > 1:
            raise ValueError(f"{self.kind}: magnitude={self.magnitude} is a share, must be <= 1")
        if not kind.share and self.magnitude < 1:
            raise ValueError(
                f"{self.kind}: magnitude={self.magnitude} is a multiplier, must be >= 1"
            )
        if kind.target and all(getattr(self, t) is None for t in kind.target):
            raise ValueError(f"{self.kind} needs a target {'=... or '.join(kind.target)}=...")
        if self.operation is not None and not kind.on_calls:
            raise ValueError(f"{self.kind} acts on callbacks: operation= does not apply")
        if self.operation is not None and self.operation not in OPERATIONS:
            raise ValueError(
                f"{self.kind}: unknown operation {self.operation!r} "
                f"(expected one of {', '.join(OPERATIONS)})"
            )

    @property
    def is_incident(self) -> bool:
        return INCIDENT_KINDS[self.kind].is_incident

    def series(self) -> dict[str, str]:
        """The dimensions this incident targets (empty = everything)."""
        dims = {"provider": self.provider, "merchant_id": self.merchant_id}
        dims["operation"] = self.operation
        dims["host"] = self.host
        return {k: v for k, v in dims.items() if v is not None}

    def spec(self) -> str:
        """The text form ``parse_incident`` reads back.

        >>> Incident("traffic_drop", 10, 20, provider="paypal").spec()
        'traffic_drop:provider=paypal,start=10,duration=20,magnitude=0.9'
        """
        parts = [f"{k}={v}" for k, v in self.series().items()]
        parts += [f"start={self.start_s:g}", f"duration={self.duration_s:g}"]
        parts.append(f"magnitude={self.magnitude:g}")
        return f"{self.kind}:{','.join(parts)}"


_SPEC_KEYS = {
    "provider": "provider",
    "merchant": "merchant_id",
    "merchant_id": "merchant_id",
    "operation": "operation",
    "host": "host",
    "start": "start_s",
    "duration": "duration_s",
    "magnitude": "magnitude",
}


def parse_incident(text: str) -> Incident:
    """Read ``kind:key=value,...`` (provider, merchant_id, operation, host, start, duration,
    magnitude).

    Every problem is a ``ValueError`` naming the part that is wrong:

    >>> parse_incident("merchant_misconfig:merchant=M1003,start=60,duration=30").series()
    {'merchant_id': 'M1003'}
    >>> parse_incident("provider_outage:provider=alipay,start=soon")
    Traceback (most recent call last):
    ...
    ValueError: incident 'provider_outage:provider=alipay,start=soon': start='soon' is not a number
    """
    where = f"incident {text!r}"
    kind, _, rest = text.strip().partition(":")
    kind = kind.strip()
    if kind not in INCIDENT_KINDS:
        raise ValueError(
            f"{where}: unknown kind {kind!r} (expected one of {', '.join(INCIDENT_KINDS)})"
        )
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = (s.strip() for s in part.partition("="))
        if not eq or not value:
            raise ValueError(f"{where}: {part!r} is not key=value")
        if key not in _SPEC_KEYS:
            raise ValueError(
                f"{where}: unknown key {key!r} (expected one of "
                "provider, merchant_id, operation, host, start, duration, magnitude)"
            )
        if _SPEC_KEYS[key] in ("start_s", "duration_s", "magnitude"):
            try:
                values[_SPEC_KEYS[key]] = float(value)
            except ValueError:
                raise ValueError(f"{where}: {key}={value!r} is not a number") from None
        else:
            values[_SPEC_KEYS[key]] = value
    for needed in ("start_s", "duration_s"):
        if needed not in values:
            raise ValueError(f"{where}: missing {needed.removesuffix('_s')}=SECONDS")
    try:
        return Incident(kind=kind, **values)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def merchant_ids(n: int) -> list[str]:
    """Merchant ids by volume rank: ``M1001`` is the busiest.

    >>> merchant_ids(3)
    ['M1001', 'M1002', 'M1003']
    """
    return [f"M{1001 + k}" for k in range(n)]


@dataclass
class SimConfig:
    """What to simulate; ``rate`` is mean ``provider_call`` events/s at the daily (weekly) mean."""

    seed: int = 7
    start_ms: int = DEFAULT_START_MS
    duration_s: float = 3600.0
    rate: float = 40.0
    providers: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PROVIDER_SHARES))
    merchants: int = 60
    incidents: list[Incident] = field(default_factory=list)
    zipf_s: float = 1.1  # merchant volume ~ 1 / rank**zipf_s
    daily: bool = True  # daily curve; False = flat traffic
    weekly: bool = False  # weekend uplift on top of the daily curve
    tz_offset_h: float = 8.0  # local time of the daily curve (Beijing)
    system_error_rate: float = 0.002  # background 5xx/timeouts/rate limits, per call
    omit_error_class: float = 0.2  # share of failures that carry only codes, no error_class
    abandon_rate: float = 0.05  # created orders the buyer never pays: no callback
    metrics: bool = True
    # Memory and network-error samples per pod every 10 s (besides CPU). Off by default:
    # they add ~5 events/s; on whenever a host incident is injected.
    host_metrics: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate={self.rate} must be > 0 calls per second")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"duration_s={self.duration_s} must be > 0")
        if self.merchants < 1:
            raise ValueError(f"merchants={self.merchants} must be >= 1")
        if not self.providers:
            raise ValueError("providers must name at least one provider")
        for name, share in self.providers.items():
            if name not in _PROFILES:
                raise ValueError(f"unknown provider {name!r} (simulated: {', '.join(_PROFILES)})")
            if not (math.isfinite(share) and share > 0):
                raise ValueError(f"provider {name}: share={share} must be > 0")
        for name in ("system_error_rate", "omit_error_class", "abandon_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)} must be within [0, 1]")
        known = set(merchant_ids(self.merchants))
        for inc in self.incidents:
            if inc.provider is not None and inc.provider not in self.providers:
                raise ValueError(
                    f"{inc.spec()}: provider {inc.provider!r} is not simulated "
                    f"(simulated: {', '.join(self.providers)})"
                )
            if inc.merchant_id is not None and inc.merchant_id not in known:
                raise ValueError(
                    f"{inc.spec()}: merchant {inc.merchant_id!r} is not simulated "
                    f"(M1001..M{1000 + self.merchants})"
                )
            if inc.host is not None and inc.host not in self.hosts():
                raise ValueError(
                    f"{inc.spec()}: host {inc.host!r} is not a simulated pod "
                    f"(e.g. {self.hosts()[0]})"
                )

    def hosts(self) -> list[str]:
        """The simulated pods that emit host metrics, in emission order."""
        regions = sorted({_PROFILES[p].region for p in self.providers})
        return [h for svc in _HOST_SERVICES for r in regions for h in _pods(svc, r)]

    @property
    def end_ms(self) -> int:
        return self.start_ms + int(self.duration_s * 1000)


def default_incident_suite(
    duration_s: float = 14_400.0, warmup_s: float | None = None
) -> list[Incident]:
    """One incident of each kind (and a promotion), spaced out after a warm-up of normal traffic.

    >>> [i.kind for i in default_incident_suite()][:3]
    ['provider_outage', 'latency_degradation', 'merchant_misconfig']
    """
    warm = duration_s * 0.25 if warmup_s is None else warmup_s
    kinds = [  # (kind, provider, merchant_id)
        ("provider_outage", "alipay", None),
        ("latency_degradation", "wechatpay", None),
        ("merchant_misconfig", None, "M1002"),
        ("traffic_drop", "paypal", None),
        ("callback_loss", "wechatpay", None),
        ("cert_rotation", "alipay", None),
        ("promotion", None, "M1001"),  # the biggest merchant's flash sale
    ]
    slot = (duration_s - warm) / len(kinds)
    if slot <= 0:
        raise ValueError(f"duration_s={duration_s} leaves no room after a {warm:g} s warm-up")
    length = round(min(300.0, slot * 0.4), 3)
    return [
        Incident(kind, round(warm + k * slot + slot * 0.3, 3), length, provider, merchant)
        for k, (kind, provider, merchant) in enumerate(kinds)
    ]


#: What ``random_incident_suite`` draws: (kind, target, magnitude range, duration range s).
#: Targets: ``provider``, ``small_provider`` (moderate volume), ``big_merchant`` (ranks
#: 2-8), ``mid_merchant`` (ranks 5-20), ``small_merchant`` (ranks 25+), ``none``.
RANDOM_SUITE: tuple[tuple[str, str, tuple[float, float], tuple[float, float]], ...] = (
    ("provider_outage", "provider", (0.3, 0.9), (120, 420)),
    ("provider_outage", "small_provider", (0.015, 0.04), (600, 1200)),  # small shift
    ("timeouts", "small_provider", (0.015, 0.04), (600, 1200)),  # timeouts only
    ("merchant_misconfig", "small_merchant", (1.0, 1.0), (300, 900)),  # low volume
    ("merchant_misconfig", "big_merchant", (0.5, 1.0), (180, 600)),  # keys, every provider
    ("latency_degradation", "mid_merchant", (2.5, 4.0), (300, 600)),  # merchant latency
    ("gradual_degradation", "provider", (0.1, 0.3), (600, 1200)),
    ("traffic_drop", "provider", (0.6, 0.95), (180, 420)),
    ("promotion", "big_merchant", (2.0, 4.0), (600, 1200)),  # confounders from here on
    ("lull", "none", (0.4, 0.6), (1200, 2400)),
    ("maintenance", "small_provider", (0.9, 1.0), (300, 900)),
    ("merchant_quiet", "mid_merchant", (1.0, 1.0), (600, 1800)),
)


def random_incident_suite(
    seed: int, duration_s: float, merchants: int = 60, warmup_s: float = 3600.0,
    providers: Mapping[str, float] | None = None,
) -> list[Incident]:  # fmt: skip
    """Every entry of :data:`RANDOM_SUITE` once, in a random order, with random magnitude,
    duration, target and start (each in its own slot after ``warmup_s`` of normal traffic).

    >>> suite = random_incident_suite(1, 4 * 3600)
    >>> len(suite), all(i.start_s >= 3600 for i in suite)
    (12, True)
    >>> [i.spec() for i in suite] == [i.spec() for i in random_incident_suite(1, 4 * 3600)]
    True
    """
    rng = np.random.default_rng([seed, 0x5EED])
    names = list(providers or DEFAULT_PROVIDER_SHARES)
    shares = providers or DEFAULT_PROVIDER_SHARES
    small = [p for p in names if shares[p] <= 0.15] or names
    mids = merchant_ids(merchants)
    pools = {
        "provider": names, "small_provider": small, "big_merchant": mids[1:8],
        "mid_merchant": mids[4:20], "small_merchant": mids[24:] or mids[-1:], "none": [""],
    }  # fmt: skip
    order = rng.permutation(len(RANDOM_SUITE)).tolist()
    slot = (duration_s - warmup_s) / len(RANDOM_SUITE)
    if slot < 300:
        raise ValueError(f"duration_s={duration_s:g} is too short for the random suite")
    out = []
    for k, idx in enumerate(order):
        kind, target, (m0, m1), (d0, d1) = RANDOM_SUITE[idx]
        length = round(min(float(rng.uniform(d0, d1)), slot * 0.8), 1)
        start = round(warmup_s + k * slot + float(rng.uniform(0, slot - length)), 1)
        who = str(rng.choice(pools[target]))
        key = "merchant_id" if "merchant" in target else "provider"
        kw = {key: who} if who else {}
        magnitude = round(float(rng.uniform(m0, m1)), 4)
        out.append(Incident(kind, start, length, magnitude=magnitude, **kw))
    return sorted(out, key=lambda i: i.start_s)


def demo_config(duration_s: float = 180.0, seed: int = 7, start_ms: int | None = None) -> SimConfig:
    """Accelerated demo: normal traffic for half the run, a ~30 s Alipay outage, then recovery."""
    outage = Incident(
        "provider_outage", start_s=duration_s * 0.5, duration_s=min(30.0, duration_s * 0.2),
        provider="alipay", magnitude=0.8,
    )  # fmt: skip
    return SimConfig(
        seed=seed,
        start_ms=DEFAULT_START_MS if start_ms is None else start_ms,
        duration_s=duration_s,
        daily=False,  # a few minutes of a daily curve is flat anyway; keep the demo's story clean
        incidents=[outage],
    )


def labels(cfg: SimConfig) -> list[dict[str, Any]]:
    """Ground truth for evaluation: one dict per injected incident.

    A promotion is listed with ``is_incident: False``: alerting on it is a false positive.
    """
    out = []
    sim = _Sim(cfg) if cfg.incidents else None
    for inc in cfg.incidents:
        start = cfg.start_ms + int(inc.start_s * 1000)
        assert sim is not None
        out.append(
            {
                "kind": inc.kind,
                "start_ms": start,
                "end_ms": start + int(inc.duration_s * 1000),
                "series": inc.series(),
                "is_incident": inc.is_incident,
                "signal": INCIDENT_KINDS[inc.kind].signal,
                "magnitude": inc.magnitude,
                "spec": inc.spec(),
                "truth": sim.truth(inc, start),
            }
        )
    return out


def write_labels(cfg: SimConfig, path: str | Path) -> None:
    """Write ``labels(cfg)`` as a JSON list (the backtest/evaluation ``--labels`` file)."""
    Path(path).write_bytes(orjson.dumps(labels(cfg), option=orjson.OPT_INDENT_2))


# --------------------------------------------------------------------------- provider facts


@dataclass(frozen=True)
class _Fail:
    """A non-success result: the fields it adds to the event and how it behaves."""

    outcome: str  # failure | pending | unknown (unknown only when the operation changes money)
    fields: dict[str, Any]  # error_class, provider_code/_sub_code, http_status, transport_error
    latency: str = "normal"  # normal | fast (rejected early) | timeout (hit the deadline)
    system: bool = False  # 5xx/timeouts: outcome unknown on mutating calls


def _f(cls: str | None, code: str | None = None, sub: str | None = None, http: int | None = None,
       outcome: str = "failure", latency: str = "normal") -> _Fail:  # fmt: skip
    fields: dict[str, Any] = {"error_class": cls, "provider_code": code, "provider_sub_code": sub}
    fields["http_status"] = http
    system = cls in ("provider_error", "timeout") or (http is not None and http >= 500)
    return _Fail(outcome, {k: v for k, v in fields.items() if v is not None}, latency, system)


def _timeout(url: str) -> _Fail:
    err = (
        f'Post "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
    )
    return _Fail("failure", {"error_class": "timeout", "transport_error": err}, "timeout", True)


def _reset(url: str) -> _Fail:
    err = (
        f'Post "{url}": read tcp 10.8.3.17:48122->{url.split("/")[2]}:443: connection reset by peer'
    )
    return _Fail("failure", {"error_class": "network", "transport_error": err}, "normal", True)


@dataclass(frozen=True)
class _Variant:
    """One way to call a provider: an operation with its SDK method, endpoint, channel."""

    operation: str
    share: float
    median_ms: float
    sdk_method: str | None
    endpoint: str
    channel: str | None = None
    success_http: int = 200


@dataclass(frozen=True)
class _Profile:
    """How one provider behaves: its API, error codes, latency, callbacks and keys."""

    api_version: str
    region: str  # where the services calling it run
    currencies: tuple[tuple[str, float], ...]
    variants: tuple[_Variant, ...]
    # operation -> [(fail, probability per call)], on top of the background system errors
    errors: dict[str, tuple[tuple[_Fail, float], ...]]
    system: tuple[tuple[_Fail, float], ...]  # background system errors, weights sum to 1
    outage: tuple[tuple[_Fail, float], ...]
    misconfig: _Fail
    deadline_ms: float
    success_code: str | None
    trade_states: tuple[tuple[str, float], ...]  # for query_payment
    paid_state: str
    notify_event: str
    callback_median_s: float
    key_prefix: str
    explicit_class: bool = False  # no taxonomy rows for this provider: always send error_class


_WX = "https://api.mch.weixin.qq.com"
_ALI = "https://openapi.alipay.com/gateway.do"
_PP = "https://api-m.paypal.com"
_UP = "https://gateway.95516.com"


def _wechat() -> _Profile:
    create = [("jsapi", "V3TransactionJsapi", 0.45), ("native", "V3TransactionNative", 0.25),
              ("app", "V3TransactionApp", 0.2), ("h5", "V3TransactionH5", 0.1)]  # fmt: skip
    variants = [
        _Variant("create_payment", 0.55 * s, 180, m, f"/v3/pay/transactions/{c}", c)
        for c, m, s in create
    ]
    variants += [
        _Variant("query_payment", 0.25, 80, "V3TransactionQueryOrder",
                 "/v3/pay/transactions/out-trade-no/{out_trade_no}"),
        _Variant("close_payment", 0.06, 90, "V3TransactionCloseOrder",
                 "/v3/pay/transactions/out-trade-no/{out_trade_no}/close", success_http=204),
        _Variant("refund", 0.08, 260, "V3Refund", "/v3/refund/domestic/refunds"),
        _Variant("query_refund", 0.05, 90, "V3RefundQuery",
                 "/v3/refund/domestic/refunds/{out_refund_no}"),
        _Variant("cert_fetch", 0.01, 120, "V3GetPlatformCerts", "/v3/certificates"),
    ]  # fmt: skip
    return _Profile(
        api_version="v3", region="cn-shanghai",
        currencies=(("CNY", 1.0),), variants=tuple(variants),
        errors={
            "create_payment": (
                (_f("business_decline", "NOTENOUGH", http=403), 0.008),
                (_f("business_decline", "TRADE_ERROR", http=403), 0.004),
                (_f("business_decline", "RULE_LIMIT", http=403), 0.003),
                (_f(None, "USERPAYING", http=202, outcome="pending"), 0.004),
                (_f("invalid_request", "PARAM_ERROR", http=400, latency="fast"), 0.001),
                (_f("duplicate", "OUT_TRADE_NO_USED", http=400, latency="fast"), 0.0005),
            ),
            "query_payment": ((_f("not_found", "ORDER_NOT_EXIST", http=404), 0.006),),
            "close_payment": ((_f("order_state", "ORDER_CLOSED", http=400), 0.02),),
            "refund": (
                (_f("business_decline", "NOT_ENOUGH", http=403), 0.004),
                (_f("invalid_request", "INVALID_REQUEST", http=400), 0.002),
            ),
            "query_refund": ((_f("not_found", "RESOURCE_NOT_EXISTS", http=404), 0.005),),
        },
        system=(
            (_f("provider_error", "SYSTEM_ERROR", http=500), 0.45),
            (_f("provider_error", "SERVICE_UNAVAILABLE", http=503, latency="fast"), 0.1),
            (_f("rate_limited", "FREQUENCY_LIMITED", http=429, latency="fast"), 0.15),
            (_timeout(_WX + "/v3/pay/transactions/jsapi"), 0.2),
            (_reset(_WX + "/v3/pay/transactions/jsapi"), 0.1),
        ),
        outage=(
            (_f("provider_error", "SYSTEM_ERROR", http=500), 0.6),
            (_f("provider_error", http=502, latency="fast"), 0.2),
            (_timeout(_WX + "/v3/pay/transactions/jsapi"), 0.2),
        ),
        misconfig=_f("signature", "SIGN_ERROR", http=401, latency="fast"),
        deadline_ms=10_000, success_code=None,
        trade_states=(("SUCCESS", 0.82), ("NOTPAY", 0.12), ("CLOSED", 0.04), ("REFUND", 0.02)),
        paid_state="SUCCESS", notify_event="TRANSACTION.SUCCESS", callback_median_s=6.0,
        key_prefix="PUB_KEY_ID_0114",
    )  # fmt: skip


def _alipay() -> _Profile:
    create = [("precreate", "TradePrecreate", "alipay.trade.precreate", 0.4),
              ("app", "TradeAppPay", "alipay.trade.app.pay", 0.3),
              ("wap", "TradeWapPay", "alipay.trade.wap.pay", 0.2),
              ("page", "TradePagePay", "alipay.trade.page.pay", 0.1)]  # fmt: skip
    variants = [_Variant("create_payment", 0.55 * s, 220, m, e, c) for c, m, e, s in create]
    variants += [
        _Variant("query_payment", 0.26, 90, "TradeQuery", "alipay.trade.query"),
        _Variant("close_payment", 0.06, 100, "TradeClose", "alipay.trade.close"),
        _Variant("refund", 0.08, 300, "TradeRefund", "alipay.trade.refund"),
        _Variant("query_refund", 0.04, 95, "TradeFastPayRefundQuery",
                 "alipay.trade.fastpay.refund.query"),
        _Variant("token_fetch", 0.01, 140, "SystemOauthToken", "alipay.system.oauth.token"),
    ]  # fmt: skip

    def acq(cls: str, sub: str, latency: str = "normal") -> _Fail:
        # Alipay's gateway answers business errors with HTTP 200, code 40004 and a sub_code.
        return _f(cls, "40004", sub, 200, latency=latency)

    return _Profile(
        api_version="v2", region="cn-hangzhou",
        currencies=(("CNY", 1.0),), variants=tuple(variants),
        errors={
            "create_payment": (
                (acq("business_decline", "ACQ.BUYER_BALANCE_NOT_ENOUGH"), 0.009),
                (acq("business_decline", "ACQ.BUYER_BANKCARD_BALANCE_NOT_ENOUGH"), 0.004),
                (acq("business_decline", "ACQ.PAYMENT_REQUEST_HAS_RISK"), 0.003),
                (acq("business_decline", "ACQ.BUYER_PAYMENT_AMOUNT_DAY_LIMIT_ERROR"), 0.002),
                (_f(None, "10003", http=200, outcome="pending"), 0.005),
                (acq("invalid_request", "ACQ.INVALID_PARAMETER", latency="fast"), 0.001),
                (acq("duplicate", "ACQ.CONTEXT_INCONSISTENT", latency="fast"), 0.0005),
            ),
            "query_payment": ((acq("not_found", "ACQ.TRADE_NOT_EXIST"), 0.008),),
            "close_payment": ((acq("order_state", "ACQ.TRADE_STATUS_ERROR"), 0.025),),
            "refund": (
                (acq("order_state", "ACQ.TRADE_NOT_ALLOW_REFUND"), 0.004),
                (acq("business_decline", "ACQ.SELLER_BALANCE_NOT_ENOUGH"), 0.002),
            ),
            "query_refund": ((acq("not_found", "ACQ.TRADE_NOT_EXIST"), 0.004),),
        },
        system=(
            (acq("provider_error", "ACQ.SYSTEM_ERROR"), 0.4),
            (_f("provider_error", "20000", "isp.unknow-error", 200), 0.2),
            (_f("provider_error", http=502, latency="fast"), 0.1),
            (_timeout(_ALI), 0.2),
            (_reset(_ALI), 0.1),
        ),
        outage=(
            (acq("provider_error", "ACQ.SYSTEM_ERROR"), 0.4),
            (_f("provider_error", "20000", "isp.unknow-error", 200), 0.2),
            (_f("provider_error", http=504, latency="timeout"), 0.1),
            (_f("provider_error", http=502, latency="fast"), 0.1),
            (_timeout(_ALI), 0.2),
        ),
        misconfig=_f("signature", "40002", "isv.invalid-signature", 200, latency="fast"),
        deadline_ms=10_000, success_code="10000",
        trade_states=(("TRADE_SUCCESS", 0.8), ("WAIT_BUYER_PAY", 0.14), ("TRADE_CLOSED", 0.06)),
        paid_state="TRADE_SUCCESS", notify_event="trade_status_sync", callback_median_s=7.0,
        key_prefix="",
    )  # fmt: skip


def _paypal() -> _Profile:
    variants = (
        _Variant("create_payment", 0.42, 420, "CreateOrder", "/v2/checkout/orders", "checkout"),
        _Variant("capture", 0.28, 650, "OrderCapture", "/v2/checkout/orders/{id}/capture"),
        _Variant("query_payment", 0.17, 230, "OrderDetail", "/v2/checkout/orders/{id}"),
        _Variant("refund", 0.06, 700, "PaymentCaptureRefund", "/v2/payments/captures/{id}/refund"),
        _Variant("query_refund", 0.03, 220, "PaymentRefundDetail", "/v2/payments/refunds/{id}"),
        _Variant("token_fetch", 0.04, 300, "GetAccessToken", "/v1/oauth2/token"),
    )  # fmt: skip
    ue = "UNPROCESSABLE_ENTITY"
    return _Profile(
        api_version="v2", region="ap-southeast-1",
        currencies=(("USD", 0.6), ("EUR", 0.25), ("GBP", 0.1), ("HKD", 0.05)),
        variants=variants,
        errors={
            "create_payment": (
                (_f("invalid_request", "INVALID_REQUEST", http=400, latency="fast"), 0.002),
                (_f("business_decline", ue, "TRANSACTION_REFUSED", 422), 0.003),
            ),
            "capture": (
                (_f("business_decline", ue, "INSTRUMENT_DECLINED", 422), 0.022),
                (_f("business_decline", ue, "CARD_EXPIRED", 422), 0.004),
                (_f("business_decline", ue, "TRANSACTION_REFUSED", 422), 0.006),
                (_f("order_state", ue, "ORDER_NOT_APPROVED", 422, latency="fast"), 0.008),
                (_f("duplicate", ue, "ORDER_ALREADY_CAPTURED", 422, latency="fast"), 0.002),
            ),
            "query_payment": (
                (_f("not_found", "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", 404), 0.005),
            ),
            "refund": ((_f("order_state", ue, "CAPTURE_FULLY_REFUNDED", 422), 0.004),),
            "query_refund": ((_f("not_found", "RESOURCE_NOT_FOUND", None, 404), 0.004),),
        },
        system=(
            (_f("provider_error", "INTERNAL_SERVER_ERROR", http=500), 0.4),
            (_f("provider_error", "SERVICE_UNAVAILABLE", http=503, latency="fast"), 0.15),
            (_f("rate_limited", "RATE_LIMIT_REACHED", http=429, latency="fast"), 0.15),
            (_timeout(_PP + "/v2/checkout/orders"), 0.2),
            (_reset(_PP + "/v2/checkout/orders"), 0.1),
        ),
        outage=(
            (_f("provider_error", "INTERNAL_SERVER_ERROR", http=500), 0.5),
            (_f("provider_error", "SERVICE_UNAVAILABLE", http=503, latency="fast"), 0.3),
            (_timeout(_PP + "/v2/checkout/orders"), 0.2),
        ),
        misconfig=_f("auth_config", "AUTHENTICATION_FAILURE", http=401, latency="fast"),
        deadline_ms=15_000, success_code=None,
        trade_states=(("COMPLETED", 0.7), ("APPROVED", 0.15), ("CREATED", 0.12), ("VOIDED", 0.03)),
        paid_state="APPROVED", notify_event="CHECKOUT.ORDER.APPROVED", callback_median_s=12.0,
        key_prefix="CERT-360caa42-fca2a594-",
    )  # fmt: skip


def _unionpay() -> _Profile:
    # No gopay client and no taxonomy rows: the service sends error_class itself.
    variants = (
        _Variant("create_payment", 0.6, 300, None, "/gateway/api/appTransReq.do", "app"),
        _Variant("query_payment", 0.25, 120, None, "/gateway/api/queryTrans.do"),
        _Variant("refund", 0.1, 350, None, "/gateway/api/backTransReq.do"),
        _Variant("query_refund", 0.05, 120, None, "/gateway/api/queryTrans.do"),
    )
    return _Profile(
        api_version="5.1.0", region="cn-shanghai",
        currencies=(("CNY", 1.0),), variants=variants,
        errors={
            "create_payment": (
                (_f("business_decline", "60", http=200), 0.012),
                (_f("invalid_request", "61", http=200, latency="fast"), 0.004),
                (_f(None, "05", http=200, outcome="pending"), 0.004),
            ),
            "query_payment": ((_f("not_found", "34", http=200), 0.006),),
            "refund": ((_f("duplicate", "12", http=200), 0.002),),
        },
        system=(
            (_f("provider_error", "06", http=200), 0.5),
            (_f("provider_error", http=503, latency="fast"), 0.1),
            (_timeout(_UP + "/gateway/api/appTransReq.do"), 0.3),
            (_reset(_UP + "/gateway/api/appTransReq.do"), 0.1),
        ),
        outage=(
            (_f("provider_error", "06", http=200), 0.5),
            (_f("provider_error", http=503, latency="fast"), 0.3),
            (_timeout(_UP + "/gateway/api/appTransReq.do"), 0.2),
        ),
        misconfig=_f("signature", "11", http=200, latency="fast"),
        deadline_ms=10_000, success_code="00",
        trade_states=(("00", 0.9), ("04", 0.1)),
        paid_state="00", notify_event="backUrl", callback_median_s=5.0, key_prefix="",
        explicit_class=True,
    )  # fmt: skip


_PROFILES: dict[str, _Profile] = {
    "wechatpay": _wechat(),
    "alipay": _alipay(),
    "paypal": _paypal(),
    "unionpay": _unionpay(),
}

_SERVICES = {  # service -> operations it runs; each has three pods per region
    "pay-gateway": ("create_payment", "query_payment", "close_payment", "capture"),
    "refund-service": ("refund", "query_refund"),
    "pay-credentials": ("cert_fetch", "token_fetch"),
}


def _paypal_id(n: int) -> str:
    """17 upper-case characters, shaped like PayPal's order ids ("5O190127TN364715T")."""
    return f"{(n * 0x9E3779B97F4A7C15) & ((1 << 68) - 1):017X}"


# Provider trade numbers from a random 16-digit number: WeChat's and Alipay's are 28 digits.
_TRADE_NO: dict[str, Callable[[int], str]] = {
    "wechatpay": lambda n: f"420000{n % 10**6:06d}{n:016d}",
    "alipay": lambda n: f"2026{n % 10**4:04d}2200{n:016d}",
    "paypal": _paypal_id,
    "unionpay": lambda n: f"{n:021d}",
}


@cache
def _pods(service: str, region: str) -> tuple[str, ...]:
    """Three pod names per service and region, like a Kubernetes deployment's."""
    h = zlib.crc32(f"{service}/{region}".encode())  # not hash(): that changes between runs
    pods = ("x2k4p", "7qbnm", "lr9zd")
    return tuple(f"{service}-{h & 0xFFFFFFF:07x}{h >> 28:x}c-{pod}" for pod in pods)


def _daily_curve(minute_of_day: np.ndarray) -> np.ndarray:
    """Relative traffic by local minute: night trough ~0.2, lunch and evening peaks; mean 1."""

    def bump(center_h: float, width_h: float) -> np.ndarray:
        d = np.abs(minute_of_day / 60.0 - center_h)
        d = np.minimum(d, 24.0 - d)
        return np.exp(-0.5 * (d / width_h) ** 2)

    raw = 0.12 + 0.5 * bump(10.5, 2.0) + 0.6 * bump(12.5, 1.2) + 0.6 * bump(15.5, 2.5)
    return raw + 1.15 * bump(20.5, 2.0)


_DAY = _daily_curve(np.arange(1440, dtype=np.float64))
_DAY /= _DAY.mean()
_WEEK = np.array([0.94, 0.95, 0.96, 0.98, 1.04, 1.08, 1.05])  # Monday..Sunday
_WEEK /= _WEEK.mean()


# --------------------------------------------------------------------------- the generator


class _Pool:
    """Random numbers drawn from numpy in blocks, handed out one at a time to scalar code.

    Callbacks and retries are built one by one; a numpy call per field would cost
    more than the rest of the event.  Same generator, same order: still deterministic.
    """

    def __init__(self, rng: np.random.Generator, size: int = 8192) -> None:
        self.rng, self.size = rng, size
        self._u: list[float] = []
        self._z: list[float] = []
        self._b: list[int] = []

    def u(self) -> float:
        if not self._u:
            self._u = self.rng.random(self.size).tolist()
        return self._u.pop()

    def z(self) -> float:
        if not self._z:
            self._z = self.rng.standard_normal(self.size).tolist()
        return self._z.pop()

    def bits(self) -> int:
        """A random 63-bit integer."""
        if not self._b:
            self._b = self.rng.integers(0, 1 << 63, size=self.size).tolist()
        return self._b.pop()


class _Sim:
    """State of one simulation run; ``events()`` is the generator ``simulate`` returns."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        rng = self.rng
        self.providers = list(cfg.providers)
        self.mids = merchant_ids(cfg.merchants)
        self.mids_num = [m[1:] for m in self.mids]  # out_trade_no prefix
        self.pool = _Pool(rng)
        self._seq = 0
        # event_id: a UUID-shaped id, the run's random prefix + a counter (unique by construction).
        a, b = (int(x) for x in rng.integers(0, 1 << 62, size=2))
        self._id_prefix = f"{a & 0xFFFFFFFF:08x}-{(a >> 32) & 0xFFFF:04x}-4{b & 0xFFF:03x}-"
        self._id_prefix += f"{0x8000 | (b >> 12) & 0x3FFF:04x}-"
        self._keys: dict[tuple[int, int, int], str] = {}

        # Rows: one per (provider, variant), with static fields prepared once.
        rows: list[tuple[int, _Variant]] = []
        for p, name in enumerate(self.providers):
            rows += [(p, v) for v in _PROFILES[name].variants]
        nr = self.nrows = len(rows)
        self.row_provider = np.array([p for p, _ in rows])
        self.row_op = [v.operation for _, v in rows]
        self.row_median = np.array([v.median_ms for _, v in rows])
        self.row_deadline = np.array([_PROFILES[self.providers[p]].deadline_ms for p, _ in rows])

        # Merchant x provider weights: Zipf volume, own provider mix, columns scaled to shares.
        m = cfg.merchants
        zipf = 1.0 / np.arange(1, m + 1) ** cfg.zipf_s
        shares = np.array([cfg.providers[p] for p in self.providers], dtype=np.float64)
        mix = rng.dirichlet(np.maximum(shares / shares.sum() * 4.0, 0.05), size=m)
        w = zipf[:, None] * mix
        w *= (shares / shares.sum()) / w.sum(axis=0)
        vshare = np.array([v.share for _, v in rows])
        self.cell_w = (w[:, self.row_provider] * vshare[None, :]).ravel()  # merchant-major
        self.cell_w /= self.cell_w.sum()

        # Result tables: per row, a cumulative distribution over outcome templates (0 = success).
        self.fails: list[_Fail | None] = [None]
        fail_index: dict[int, int] = {}

        def idx(f: _Fail) -> int:
            if id(f) not in fail_index:
                fail_index[id(f)] = len(self.fails)
                self.fails.append(f)
            return fail_index[id(f)]

        probs: list[dict[int, float]] = []
        self.outage_choices: list[tuple[np.ndarray, np.ndarray]] = []
        for name in self.providers:
            prof = _PROFILES[name]
            ids = np.array([idx(f) for f, _ in prof.outage])
            cum = np.cumsum([w for _, w in prof.outage])
            self.outage_choices.append((ids, cum / cum[-1]))
        # Per provider: the template a misconfigured merchant gets, and its timeout.
        self.misconfig_tpl = np.array([idx(_PROFILES[n].misconfig) for n in self.providers])
        self.timeout_tpl = np.array(
            [next(idx(f) for f, _ in _PROFILES[n].system if f.latency == "timeout")
             for n in self.providers]
        )  # fmt: skip
        for p, v in rows:
            prof = _PROFILES[self.providers[p]]
            row: dict[int, float] = {}
            for f, pr in prof.errors.get(v.operation, ()):
                row[idx(f)] = row.get(idx(f), 0.0) + pr
            for f, share in prof.system:
                row[idx(f)] = row.get(idx(f), 0.0) + cfg.system_error_rate * share
            probs.append(row)
        table = np.zeros((nr, len(self.fails)))
        for r, row in enumerate(probs):
            for k, pr in row.items():
                table[r, k] = pr
        table[:, 0] = 1.0 - table.sum(axis=1)
        self.cum_table = np.cumsum(table, axis=1)
        self.row_probs = table  # per row, the probability of each outcome (ground truth)

        # Pre-built event pieces.
        self.row_static: list[dict[str, Any]] = []
        self.row_hosts: list[tuple[str, ...]] = []
        for p, v in rows:
            name = self.providers[p]
            prof = _PROFILES[name]
            svc = next(s for s, ops in _SERVICES.items() if v.operation in ops)
            static: dict[str, Any] = {"service": svc, "env": "prod", "region": prof.region}
            static |= {"provider": name, "operation": v.operation, "api_version": prof.api_version}
            if v.sdk_method:
                static["sdk_method"] = v.sdk_method
            if v.channel:
                static["channel"] = v.channel
            static["endpoint"] = v.endpoint
            self.row_static.append(static)
            self.row_hosts.append(_pods(svc, prof.region))
        self.fail_fields = [
            (fields, {k: x for k, x in fields.items() if k != "error_class"})
            for fields in (f.fields if f else {} for f in self.fails)
        ]  # fmt: skip
        # UnionPay has no taxonomy rows, so its services always say the class themselves.
        self.row_explicit = np.array([_PROFILES[self.providers[p]].explicit_class for p, _ in rows])
        self.row_op_arr = np.array(self.row_op)
        self.fail_mode = np.array(
            [0] + [{"normal": 0, "fast": 1, "timeout": 2}[f.latency] for f in self.fails if f]
        )
        self.row_has_amount = [op in ("create_payment", "refund", "capture") for op in self.row_op]
        # Provider trade numbers come back from queries, refunds, captures and PayPal's orders.
        self.row_trade_no = [
            _TRADE_NO[self.providers[p]]
            if op in ("query_payment", "refund", "query_refund", "capture")
            or (op == "create_payment" and self.providers[p] == "paypal")
            else None
            for (p, _), op in zip(rows, self.row_op, strict=True)
        ]
        self.row_success = [
            {"outcome": "success", "http_status": v.success_http}
            | ({"provider_code": _PROFILES[self.providers[p]].success_code}
               if _PROFILES[self.providers[p]].success_code else {})
            for p, v in rows
        ]  # fmt: skip
        # Per row, one categorical pick: the currency of money-moving calls, the trade state
        # a query returns.  Cumulative shares padded with 2.0 so no draw goes past the end.
        self.row_picks: list[list[str]] = []
        self.row_pick_cum = np.full((nr, 4), 2.0)
        for r, (p, v) in enumerate(rows):
            prof = _PROFILES[self.providers[p]]
            choice = prof.trade_states if v.operation == "query_payment" else prof.currencies
            self.row_picks.append([c for c, _ in choice])
            cum = np.cumsum([w for _, w in choice])
            self.row_pick_cum[r, : len(choice) - 1] = cum[:-1] / cum[-1]
        self.row_p = [p for p, _ in rows]
        self.row_is_refund = self.row_op_arr == "refund"
        # Request-signing key per (merchant, provider): the merchant's API certificate serial.
        serials = rng.integers(0, 1 << 63, size=(m, len(self.providers), 3)).tolist()
        self.call_keys = [
            [f"{a:016X}{b:016X}{c & 0xFFFFFFFF:08X}" for a, b, c in row] for row in serials
        ]
        self.platform_key_seed = int(rng.integers(0, 1 << 40))
        self.cert_days0 = rng.uniform(40, 330, size=len(self.providers))

        # Incidents in ms offsets, with target indices.
        self.incs = []
        for inc in cfg.incidents:
            s = cfg.start_ms + int(inc.start_s * 1000)
            e = s + int(inc.duration_s * 1000)
            p = self.providers.index(inc.provider) if inc.provider else -1
            mi = self.mids.index(inc.merchant_id) if inc.merchant_id else -1
            self.incs.append((inc, s, e, p, mi))
        # Per provider, what acts on its callbacks: (start, end, merchant or -1, share).
        self.losses: list[list[tuple[int, int, int, float]]] = [[] for _ in self.providers]
        self.rotations: list[list[tuple[int, int, int, float]]] = [[] for _ in self.providers]
        for inc, s, e, p, mi in self.incs:
            if inc.kind in ("callback_loss", "cert_rotation"):
                by_kind = self.losses if inc.kind == "callback_loss" else self.rotations
                by_kind[p].append((s, e, mi, inc.magnitude))
        # Duplicate storms and amount mismatches, likewise (every provider when none is named).
        self.storms: list[list[tuple[int, int, int, float]]] = [[] for _ in self.providers]
        self.mismatches: list[list[tuple[int, int, int, float]]] = [[] for _ in self.providers]
        for inc, s, e, p, mi in self.incs:
            if inc.kind in ("duplicate_storm", "amount_mismatch"):
                by_kind = self.storms if inc.kind == "duplicate_storm" else self.mismatches
                for q in range(len(self.providers)) if p < 0 else [p]:
                    by_kind[q].append((s, e, mi, inc.magnitude))
        self.notify_hosts = [_pods("pay-notify", _PROFILES[p].region) for p in self.providers]
        # Host metrics: their own random stream, so turning them on changes no other event.
        self.host_metrics = cfg.metrics and (
            cfg.host_metrics or any(inc.host is not None for inc in cfg.incidents)
        )
        self.host_rng = np.random.default_rng([cfg.seed, 0x4057])
        hosts = cfg.hosts()
        self.host_mem = dict(
            zip(hosts, self.host_rng.uniform(35, 60, len(hosts)).tolist(), strict=True)
        )
        self.heap: list[tuple[int, int, dict[str, Any]]] = []

    # -- helpers -------------------------------------------------------------

    def _push(self, ev: dict[str, Any]) -> None:
        if ev["event_ts"] < self.cfg.end_ms:
            self._seq += 1
            heapq.heappush(self.heap, (ev["event_ts"], self._seq, ev))

    def _intensity(self, t_ms: int) -> float:
        """Traffic relative to the mean at ``t_ms``: the daily curve times the weekly one."""
        f = 1.0
        if self.cfg.daily:
            local_min = (t_ms / 60_000.0 + self.cfg.tz_offset_h * 60.0) % 1440.0
            f = float(np.interp(local_min, np.arange(1441), np.append(_DAY, _DAY[0])))
        if self.cfg.weekly:
            day = int((t_ms / 86_400_000.0 + self.cfg.tz_offset_h / 24.0 + 3) % 7)  # epoch = Thu
            f *= float(_WEEK[day])
        return f

    def _cell_mask(self, p: int, mi: int, op: str | None) -> np.ndarray:
        mask = np.ones((self.cfg.merchants, self.nrows), dtype=bool)
        if p >= 0:
            mask &= (self.row_provider == p)[None, :]
        if mi >= 0:
            mask[np.arange(self.cfg.merchants) != mi] = False
        if op is not None:
            mask &= np.array([o == op for o in self.row_op])[None, :]
        return mask.ravel()

    # -- ground truth ----------------------------------------------------------

    def _class_share(self, mask: np.ndarray, classes: tuple[str, ...]) -> float:
        """Normal share of the calls of ``mask`` (cells) whose result is of ``classes``
        (``system``: every system error)."""
        cols = np.array(
            [f is not None and (f.fields.get("error_class") in classes
                                or ("system" in classes and f.system)) for f in self.fails]
        )  # fmt: skip
        per_row = self.row_probs[:, cols].sum(axis=1)
        w = np.where(mask, self.cell_w, 0.0)
        rows = np.tile(np.arange(self.nrows), self.cfg.merchants)
        total = float(w.sum())
        return float((w * per_row[rows]).sum() / total) if total > 0 else 0.0

    def truth(self, inc: Incident, start_ms: int) -> dict[str, Any]:
        """The true parameters of an incident on its series, for an oracle delay: the
        normal call rate of the series at its start and what changes (rates or shares)."""
        p = self.providers.index(inc.provider) if inc.provider else -1
        mi = self.mids.index(inc.merchant_id) if inc.merchant_id else -1
        mask = self._cell_mask(p, mi, inc.operation)
        calls = self.cfg.rate * self._intensity(start_ms) * float(self.cell_w[mask].sum())
        out: dict[str, Any] = {"calls_per_s": round(calls, 6)}
        m = inc.magnitude
        stat = {"provider_outage": ("system",), "gradual_degradation": ("system",),
                "timeouts": ("timeout",),
                "merchant_misconfig": ("signature", "auth_config", "certificate")}  # fmt: skip
        if inc.kind in stat:
            p0 = self._class_share(mask, stat[inc.kind])
            out |= {"stat": "rate", "p0": round(p0, 6), "p1": round(m + (1 - m) * p0, 6)}
            if inc.kind == "gradual_degradation":
                out["ramp_s"] = inc.duration_s
        elif inc.kind == "latency_degradation":
            out |= {"stat": "latency", "ratio": m, "sigma_log": 0.45}
        elif inc.kind in ("duplicate_storm", "amount_mismatch"):
            create = self._cell_mask(p, mi, "create_payment")
            cb = self.cfg.rate * self._intensity(start_ms) * float(self.cell_w[create].sum())
            cb *= 1 - self.cfg.abandon_rate
            # Duplicates: ~1 % normally; a storm adds m redeliveries per callback.
            p0, p1 = (
                (0.01, (m + 0.01) / (1 + m))
                if inc.kind == "duplicate_storm"
                else (0.0002, m + (1 - m) * 0.0002)
            )
            out |= {"stat": "rate", "calls_per_s": round(cb, 6), "p0": p0, "p1": round(p1, 6)}
        elif inc.kind in ("callback_loss", "cert_rotation"):
            create = self._cell_mask(p, mi, "create_payment")
            cb = self.cfg.rate * self._intensity(start_ms) * float(self.cell_w[create].sum())
            cb *= 1 - self.cfg.abandon_rate
            p0 = self.cfg.abandon_rate if inc.kind == "callback_loss" else 0.0
            out |= {"stat": "rate", "calls_per_s": round(cb, 6), "p0": p0,
                    "p1": round(m + (1 - m) * p0, 6)}  # fmt: skip
        elif inc.kind in HOST_METRIC_OF:  # seen in the host's metric, not in calls
            out |= {"stat": "metric", "metric": HOST_METRIC_OF[inc.kind], "host": inc.host}
        else:  # volume kinds: Poisson rates before and during (at the deepest)
            out |= {"stat": "volume", "rate0": round(calls, 6),
                    "rate1": round(calls * _volume_factor(inc, 0.5), 6)}  # fmt: skip
        return out

    def _outage_pick(self, prov: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Per call, one of its provider's outage failures (system errors and timeouts)."""
        pick = np.zeros(prov.size, dtype=np.int64)
        for q in np.unique(prov).tolist():
            ids, cumw = self.outage_choices[q]
            rows = prov == q
            pick[rows] = ids[np.minimum(np.searchsorted(cumw, u[rows]), ids.size - 1)]
        return pick

    def _platform_key(self, p: int, merchant: int, version: int) -> str:
        """The provider's callback-signing key id for a merchant; a rotation bumps ``version``."""
        mix = (self.platform_key_seed ^ (p << 48) ^ (merchant << 24) ^ version) * 0x9E3779B97F4A7C15
        body = f"{mix & 0xFFFFFFFFFFFFFFFF:016X}{version:04d}"
        prefix = _PROFILES[self.providers[p]].key_prefix
        key = self._keys[(p, merchant, version)] = f"{prefix}{body}"
        return key

    # -- main loop -----------------------------------------------------------

    def events(self) -> Iterator[dict[str, Any]]:
        cfg = self.cfg
        # Blocks of ~200 expected calls (5-60 s): numpy work per block is amortised, and the
        # daily curve hardly moves within one.
        block_ms = int(min(60_000, max(_BLOCK_MS, 200_000 / cfg.rate)))
        edges = set(range(cfg.start_ms, cfg.end_ms, block_ms)) | {cfg.end_ms}
        for _, s, e, *_ in self.incs:
            edges |= {t for t in (s, e) if cfg.start_ms < t < cfg.end_ms}
        bounds = sorted(edges)
        next_metric = cfg.start_ms
        next_cert = cfg.start_ms
        for t0, t1 in itertools.pairwise(bounds):
            load = self._intensity((t0 + t1) // 2)
            calls = self._calls(t0, t1, load)
            if cfg.metrics:
                while next_metric < t1:
                    self._metrics(next_metric, load)
                    next_metric += _METRIC_EVERY_MS
                while next_cert < t1:
                    self._cert_metrics(next_cert)
                    next_cert += _CERT_METRIC_EVERY_MS
            heap = self.heap
            for ev in calls:
                ts = ev["event_ts"]
                while heap and heap[0][0] <= ts:
                    yield heapq.heappop(heap)[2]
                yield ev
            while heap and heap[0][0] < t1:
                yield heapq.heappop(heap)[2]

    def _calls(self, t0: int, t1: int, load: float) -> list[dict[str, Any]]:
        cfg, rng = self.cfg, self.rng
        weights = self.cell_w
        mid = (t0 + t1) // 2
        active = [(inc, s, e, p, mi) for inc, s, e, p, mi in self.incs if s <= mid < e]
        for inc, s, e, p, mi in active:
            if inc.kind in _VOLUME_KINDS:
                factor = _volume_factor(inc, (mid - s) / max(1, e - s))
                weights = np.where(self._cell_mask(p, mi, inc.operation), weights * factor, weights)
        total = float(weights.sum())
        n = int(rng.poisson(cfg.rate * load * total * (t1 - t0) / 1000.0))
        if n == 0:
            return []
        ts = np.sort(rng.integers(t0, t1, size=n))
        cum = np.cumsum(weights)
        cell = np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), cum.size - 1)
        merchant, row = np.divmod(cell, self.nrows)
        prov = self.row_provider[row]
        u = rng.random((n, 4))  # result, class omission, host, currency/trade state
        tpl = (self.cum_table[row] < u[:, :1]).sum(axis=1)
        tpl = np.minimum(tpl, self.cum_table.shape[1] - 1)
        lat_scale = np.ones(n)
        for inc, s, e, p, mi in active:
            hit = (prov == p) if p >= 0 else np.ones(n, dtype=bool)
            if mi >= 0:
                hit &= merchant == mi
            if inc.operation is not None:
                hit &= self.row_op_arr[row] == inc.operation
            if not hit.any():
                continue
            draw = rng.random(n)
            if inc.kind == "provider_outage":
                ids, cumw = self.outage_choices[p]
                pick = ids[np.minimum(np.searchsorted(cumw, rng.random(n)), ids.size - 1)]
                tpl = np.where(hit & (draw < inc.magnitude), pick, tpl)
            elif inc.kind == "merchant_misconfig":
                pick = self.misconfig_tpl[prov]
                tpl = np.where(hit & (draw < inc.magnitude), pick, tpl)
            elif inc.kind == "gradual_degradation":
                share = inc.magnitude * (mid - s) / max(1, e - s)
                tpl = np.where(hit & (draw < share), self._outage_pick(prov, rng.random(n)), tpl)
            elif inc.kind == "timeouts":
                tpl = np.where(hit & (draw < inc.magnitude), self.timeout_tpl[prov], tpl)
            elif inc.kind == "latency_degradation":
                lat_scale = np.where(hit, lat_scale * inc.magnitude, lat_scale)
                p_timeout = min(0.3, 0.01 * (inc.magnitude - 1))
                tpl = np.where(hit & (draw < p_timeout), self.timeout_tpl[prov], tpl)

        # Latency: lognormal around the row's median; early rejections fast, timeouts at deadline.
        lat = self.row_median[row] * lat_scale * np.exp(0.45 * rng.standard_normal(n))
        lat *= np.where(rng.random(n) < 0.01, 3.0, 1.0)  # a heavy tail of slow calls
        mode = self.fail_mode[tpl]
        lat = np.where(mode == 1, lat * 0.3, lat)
        deadline = self.row_deadline[row]
        lat = np.where((mode == 2) | (lat > deadline), deadline + rng.random(n) * 40, lat)
        tpl = np.where((lat >= deadline) & (mode != 2), self.timeout_tpl[prov], tpl)
        lat = np.round(lat, 1)
        amount = np.maximum(1, rng.lognormal(math.log(6800), 1.1, size=n)).astype(np.int64)
        amount = np.where(self.row_is_refund[row], np.maximum(1, amount // 3), amount)
        trade_no = rng.integers(10**15, 10**16, size=n)
        trace = rng.integers(0, 1 << 63, size=(n, 2)).tolist()
        host = (u[:, 2] * 3).astype(np.int64)
        pick = (self.row_pick_cum[row] < u[:, 3:4]).sum(axis=1)  # currency or trade state
        keep = self.row_explicit[row] | (u[:, 1] >= cfg.omit_error_class)
        callback = ~(rng.random(n) < cfg.abandon_rate)
        delay_z = rng.standard_normal(n).tolist()

        out: list[dict[str, Any]] = []
        fails, fail_fields, prefix = self.fails, self.fail_fields, self._id_prefix
        mids, row_op, row_p, row_static = self.mids, self.row_op, self.row_p, self.row_static
        row_hosts, row_picks, call_keys = self.row_hosts, self.row_picks, self.call_keys
        nums = self.mids_num
        row_success, row_trade_no, row_amount = (
            self.row_success,
            self.row_trade_no,
            self.row_has_amount,
        )
        seq0 = self._seq
        self._seq += n
        columns = (ts, row, merchant, tpl, lat, amount, trade_no, host, pick, keep, callback)
        for i, (t, r, mch, k, lt, amt, tno, h, pk, kp, cb) in enumerate(
            zip(*(c.tolist() for c in columns), strict=True)
        ):
            op = row_op[r]
            seq = seq0 + i + 1
            if op == "create_payment":
                otn = f"{nums[mch]}{t}{seq % 100000:05d}"
            else:  # refers to an order created earlier (minutes to a day ago)
                otn = f"{nums[mch]}{t - 60_000 - tno % 86_400_000}{tno % 100000:05d}"
            tr = trace[i]
            ev: dict[str, Any] = {
                "schema_version": SCHEMA_VERSION,
                "event_type": "provider_call",
                "event_id": f"{prefix}{seq:012x}",
                "event_ts": t,
                **row_static[r],
                "host": row_hosts[r][h],
                "trace_id": f"{tr[0]:016x}{tr[1]:016x}",
                "merchant_id": mids[mch],
                "attempt": 1,
                "signing_key_id": call_keys[mch][row_p[r]],
                "out_trade_no": otn,
                "latency_ms": lt,
            }
            f = fails[k]
            if f is None:
                ev |= row_success[r]
                if row_trade_no[r] is not None:
                    ev["provider_trade_no"] = row_trade_no[r](tno)
                if op == "query_payment":
                    ev["trade_state"] = row_picks[r][pk]
            else:
                # 5xx and timeouts leave a money-moving call's result unknown (DESIGN: outcome).
                ev["outcome"] = "unknown" if f.system and op in _MUTATING else f.outcome
                # Some services send only the raw codes: paywatch's taxonomy must name the class.
                ev |= fail_fields[k][0] if kp else fail_fields[k][1]
            if row_amount[r]:
                ev["amount_minor"] = amt
                ev["currency"] = row_picks[r][pk]
            out.append(ev)
            if f is None and op == "create_payment" and cb:
                self._schedule_callback(ev, row_p[r], mch, delay_z[i])
        return out

    # -- callbacks -----------------------------------------------------------

    def _schedule_callback(self, call: dict[str, Any], p: int, mch: int, z: float) -> None:
        prof = _PROFILES[self.providers[p]]
        delay_ms = min(600.0, max(0.3, prof.callback_median_s * math.exp(0.8 * z))) * 1000
        ts = int(call["event_ts"] + call["latency_ms"] + delay_ms)
        if ts >= self.cfg.end_ms:
            return
        n = self.pool.bits()
        name = self.providers[p]
        if name == "wechatpay":
            notify_id = f"EV-{ts // 1000}{n % 10**10:010d}"
        elif name == "paypal":
            notify_id = f"WH-{n % 16**17:017X}-{(n >> 3) % 10**8:08d}"
        else:
            notify_id = f"{n:016x}{n * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF:016x}"
        base = {
            "schema_version": SCHEMA_VERSION,
            "event_type": "payment_notification",
            "service": "pay-notify",
            "env": "prod",
            "region": prof.region,
            "provider": call["provider"],
            "merchant_id": call["merchant_id"],
            "notify_id": notify_id,
            "notify_kind": "payment",
            "provider_event_type": prof.notify_event,
            "out_trade_no": call["out_trade_no"],
            "provider_trade_no": _TRADE_NO[self.providers[p]](n % 10**16),
            "currency": call["currency"],
            "trade_state": prof.paid_state,
            "business_ts": ts - 300 - n % 700,  # when the buyer paid, just before the callback
        }
        self._deliver(base, call["amount_minor"], p, mch, ts, attempt=1, seen=False)

    def _deliver(self, base: dict[str, Any], amount: int, p: int, mch: int, ts: int,
                 attempt: int, seen: bool) -> None:  # fmt: skip
        """One delivery of a callback; schedules the provider's retry when we did not ack it."""
        pool = self.pool
        for s, e, mi, share in self.losses[p]:
            if s <= ts < e and mi in (-1, mch) and pool.u() < share:
                return  # lost on the way, and with it the provider's later retries
        version, verified = 0, True
        for s, e, mi, share in self.rotations[p]:
            if ts >= s and mi in (-1, mch):
                version += 1  # signed with the new key from the rotation on
                if ts < e and pool.u() < share:
                    verified = False  # ... which we do not hold yet
        handler = round(35.0 * math.exp(0.7 * pool.z()), 1)
        x = pool.u()
        if not verified or x < 0.003:
            ack = "nacked"
        elif x < 0.005:
            ack = "error"
        elif x < 0.011:
            ack, handler = "late", round(5000 + x * 400_000, 1)  # past the provider's 5 s wait
        else:
            ack = "acked"
        mismatch = pool.u() < 0.0002
        for s, e, mi, share in self.mismatches[p]:  # draws only while one is on: same streams
            if s <= ts < e and mi in (-1, mch) and pool.u() < share:
                mismatch = True
        skew = int(80 * pool.z())
        self._seq += 1
        ev = {
            **base,
            "event_id": f"{self._id_prefix}{self._seq:012x}",
            "event_ts": ts,
            "host": self.notify_hosts[p][self._seq % 3],
            "trace_id": f"{pool.bits():016x}{pool.bits():016x}",
            "signature_verified": verified,
            "ack_status": ack,
            "signing_key_id": self._keys.get((p, mch, version))
            or self._platform_key(p, mch, version),
            "amount_minor": amount + 100 if mismatch else amount,
            "amount_matches": not mismatch,
            "is_duplicate": seen,
            "handler_latency_ms": handler,
            "provider_ts": ts - 150 - skew,
            "clock_skew_ms": skew,
        }
        if not verified:
            ev["verify_error"] = "verify signature error: crypto/rsa: verification error"
        self._push(ev)
        processed = seen or ack in ("acked", "late")
        if ack != "acked" and attempt <= len(_RETRY_DELAYS_S):
            nxt = ts + int(_RETRY_DELAYS_S[attempt - 1] * 1000)
            self._deliver(base, amount, p, mch, nxt, attempt + 1, processed)
        elif ack == "acked" and pool.u() < 0.004:  # the provider sends it twice anyway
            nxt = ts + int(500 + pool.u() * 20_000)
            self._deliver(base, amount, p, mch, nxt, attempt + 1, True)
        for s, e, mi, share in self.storms[p] if attempt == 1 else ():
            if s <= ts < e and mi in (-1, mch) and pool.u() < share:  # a storm: once more
                self._deliver(base, amount, p, mch, ts + int(1000 + pool.u() * 4000), 2, True)

    # -- metrics -------------------------------------------------------------

    def _metrics(self, t: int, load: float) -> None:
        """Worker CPU per pod and callback queue depth: a few samples every 10 s (and, with
        host metrics, memory and network errors per pod)."""
        pool = self.pool
        for svc in _HOST_SERVICES:
            for region in sorted({_PROFILES[p].region for p in self.providers}):
                for host in _pods(svc, region):
                    cpu = round(min(100.0, max(0.5, 8 + 30 * load + 3 * pool.z())), 1)
                    jitter = int(pool.u() * 500)
                    labels = {"host": host, "service": svc}
                    if self.host_metrics:
                        cpu = self._host_sample(t, host, cpu, labels, svc)
                    self._push(self._metric(t + jitter, "worker_cpu_percent", cpu, "percent",
                                            host, svc, labels))  # fmt: skip
                    if svc == "pay-notify":
                        depth = float(max(0, round((2 + 3 * load) * (1 + 0.5 * pool.z()))))
                        self._push(self._metric(t + jitter, "notify_queue_depth", depth,
                                                "messages", host, svc, labels))  # fmt: skip

    def _host_sample(
        self, t: int, host: str, cpu: float, labels: dict[str, str], svc: str
    ) -> float:
        """Memory and network errors of ``host`` at ``t`` (own random stream, so the rest of
        the run is unchanged), with its host incidents applied; returns its CPU sample."""
        rng = self.host_rng
        mem = self.host_mem[host] + 1.5 * float(rng.standard_normal())
        errs = 0.2  # network errors per second, normally
        for inc, s, e, *_ in self.incs:
            if inc.host != host or not s <= t < e:
                continue
            if inc.kind == "cpu_plateau":
                cpu = round(min(100.0, 100 * inc.magnitude + float(rng.standard_normal())), 1)
            elif inc.kind == "memory_leak":
                mem += 100 * inc.magnitude * (t - s) / (e - s)
            elif inc.kind == "network_errors":
                errs *= inc.magnitude
        net = float(rng.poisson(errs * _METRIC_EVERY_MS / 1000)) * 1000 / _METRIC_EVERY_MS
        mem = round(min(100.0, max(1.0, mem)), 1)
        self._push(self._metric(t, "memory_used_percent", mem, "percent", host, svc, labels))
        self._push(self._metric(t, "net_errors_per_s", net, "errors/s", host, svc, labels))
        return cpu

    def _cert_metrics(self, t: int) -> None:
        """Days left on each provider's platform certificate; a rotation installs a fresh one."""
        for p, name in enumerate(self.providers):
            days = self.cert_days0[p] - (t - self.cfg.start_ms) / 86_400_000
            for inc, s, _, ip, mi in self.incs:
                if inc.kind == "cert_rotation" and ip == p and mi == -1 and t >= s:
                    days = 365 - (t - s) / 86_400_000
            host = _pods("pay-credentials", _PROFILES[name].region)[0]
            labels = {"provider": name}
            self._push(self._metric(t, "cert_days_to_expiry", round(float(days), 3), "days",
                                    host, "pay-credentials", labels))  # fmt: skip

    def _metric(self, t: int, name: str, value: float, unit: str, host: str, svc: str,
                labels: dict[str, str]) -> dict[str, Any]:  # fmt: skip
        self._seq += 1
        return {
            "schema_version": SCHEMA_VERSION,
            "event_type": "metric",
            "event_id": f"{self._id_prefix}{self._seq:012x}",
            "event_ts": t,
            "service": svc,
            "env": "prod",
            "host": host,
            "name": name,
            "value": value,
            "unit": unit,
            "kind": "gauge",
            "labels": labels,
        }


def simulate(cfg: SimConfig) -> Iterator[dict[str, Any]]:
    """Events of the run in event-time order; same config, same events."""
    return _Sim(cfg).events()


# --------------------------------------------------------------------------- output


def encode(event: Mapping[str, Any]) -> bytes:
    """One event as the bytes of a Kafka message value (orjson, no newline)."""
    return orjson.dumps(event)


def write_jsonl(events: Iterable[Mapping[str, Any]], path: str | Path) -> int:
    """Write events one per line (gzip when the name ends in ``.gz``); returns the count.

    The gzip header carries no timestamp, so the same events give the same file bytes.
    """
    path = Path(path)
    count = 0
    dumps, nl = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    with (
        open(path, "wb") as raw,
        (
            # level 3: twice as fast as the default 6, for a ~20 % larger file
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=3, filename="")
            if path.suffix == ".gz"
            else contextlib.nullcontext(raw)
        ) as out,
    ):
        it = iter(events)
        while chunk := list(itertools.islice(it, 4096)):
            out.write(b"".join([dumps(ev, option=nl) for ev in chunk]))
            count += len(chunk)
    return count
