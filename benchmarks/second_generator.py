"""A second traffic generator, written from issue 11's account of the outside trial and
sharing no code with ``stream/sim``: the detectors' settings were never chosen on it.

Three providers at 0.5-10 calls/s each (log-uniform), 40 merchants with Zipf volumes
(each on one to three providers), a daily curve, latency from a gamma distribution
with a share of retried calls far in the tail (not ``stream/sim``'s log-normal), buyers
who abandon a quarter of created orders (no callback ever) and pay the rest after a
think time, so some callbacks come after the callback deadline.  After a 20-minute
warm-up, eight incidents, one of each kind in random order, each inside its own
20-minute slot; and two confounders (a merchant's promotion, a merchant going quiet).

Each incident's label carries the true parameters the oracle needs (``truth``), as
``stream.sim`` labels do, so :mod:`benchmarks.second_eval` scores it the way ``make
eval`` scores the simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROVIDERS = ("alipay", "wechatpay", "paypal")
PROVIDER_MS = {"alipay": 160.0, "wechatpay": 210.0, "paypal": 420.0}
OPERATIONS = ("create_payment", "query_payment", "refund", "query_refund", "close_payment")
OP_SHARE = np.array([0.45, 0.33, 0.07, 0.07, 0.08])
OP_FACTOR = np.array([1.0, 0.45, 2.6, 0.5, 0.7])
GAMMA_SHAPE = 2.5  # latency = median * gamma(shape) / its median; a retry tail beside it
RETRY_SHARE, RETRY_FACTOR = 0.01, (4.0, 15.0)
NORMAL_ERRORS = {  # share of calls, by class, in normal traffic
    "business_decline": 0.015,
    "provider_error": 0.0015,
    "timeout": 0.0008,
    "invalid_request": 0.001,
}
ABANDON, THINK_MEAN_S, NOTIFY_MEAN_S = 0.25, 20.0, 1.5
CALLBACK_TIMEOUT_S = 60.0  # when an unpaid order's callback counts as missing
WARMUP_S, SLOT_S = 1200.0, 1200.0
T0_MS = 1_793_577_600_000  # 2026-11-02 00:00 UTC
KINDS = (
    "timeouts",
    "merchant_latency",
    "small_merchant_signature",
    "provider_outage",
    "merchant_keys_broken",
    "callbacks_stop",
    "provider_latency",
    "gradual_degradation",
)


@dataclass
class World:
    rng: np.random.Generator
    rates: dict[str, float]  # calls/s per provider at the daily curve's mean
    merchants: dict[str, list[str]]  # per provider, its merchants
    weights: dict[str, np.ndarray]  # per provider, its merchants' shares
    start_hour: float
    labels: list[dict[str, Any]] = field(default_factory=list)

    def curve(self, t: np.ndarray) -> np.ndarray:
        """Demand at second ``t`` relative to the day's mean (low at 04:00, high at 16:00)."""
        hour = self.start_hour + t / 3600.0
        return 1.0 + 0.45 * np.sin(2 * math.pi * (hour - 10.0) / 24.0)

    def merchant_rate(self, p: str, m: str) -> float:
        return self.rates[p] * float(self.weights[p][self.merchants[p].index(m)])


def make_world(seed: int) -> World:
    rng = np.random.default_rng(seed)
    rates = {p: float(np.exp(rng.uniform(math.log(0.5), math.log(10.0)))) for p in PROVIDERS}
    names = [f"S{100 + i}" for i in range(40)]
    zipf = 1.0 / np.arange(1, 41) ** 1.1
    uses = {m: rng.choice(PROVIDERS, size=min(3, 1 + i // 14 + int(i < 6) * 2), replace=False)
            for i, m in enumerate(names)}  # fmt: skip
    merchants = {p: [m for m in names if p in uses[m]] for p in PROVIDERS}
    weights = {}
    for p in PROVIDERS:
        w = np.array([zipf[names.index(m)] for m in merchants[p]])
        weights[p] = w / w.sum()
    return World(rng, rates, merchants, weights, float(rng.uniform(0, 24)))


@dataclass
class Effect:
    """What an incident or confounder does to the calls it touches, from ``start`` to ``end`` s."""

    kind: str
    start: float
    end: float
    provider: str | None = None
    merchant: str | None = None
    error_class: str | None = None
    share: float = 0.0  # of calls failing with ``error_class`` (ramping: at the end)
    ramp: bool = False
    latency: float = 1.0
    volume: float = 1.0
    callbacks: bool = True

    def covers(self, t: np.ndarray, prov: np.ndarray, merch: np.ndarray) -> np.ndarray:
        hit = (t >= self.start) & (t < self.end)
        if self.provider is not None:
            hit &= prov == self.provider
        if self.merchant is not None:
            hit &= merch == self.merchant
        return hit

    def share_at(self, t: np.ndarray) -> np.ndarray:
        if not self.ramp:
            return np.full(t.shape, self.share)
        return self.share * np.clip((t - self.start) / (self.end - self.start), 0.0, 1.0)


def plan(world: World, hours: float) -> list[Effect]:
    """Eight incidents, one per kind in random order, each in its own slot; two confounders."""
    rng = world.rng
    order = rng.permutation(len(KINDS))
    effects: list[Effect] = []
    for slot, k in enumerate(order.tolist()):
        dur = float(rng.uniform(360, 900))
        start = WARMUP_S + slot * SLOT_S + float(rng.uniform(60, SLOT_S - dur - 60))
        effects.append(_incident(world, KINDS[k], start, start + dur))
    end = hours * 3600
    big = world.merchants["alipay"][0] if world.merchants["alipay"] else "S100"
    promo = float(rng.uniform(WARMUP_S, end - 900))
    effects.append(Effect("promotion", promo, promo + 600, merchant=big, volume=3.0))
    quiet_p = max(PROVIDERS, key=lambda p: len(world.merchants[p]))
    quiet_m = world.merchants[quiet_p][len(world.merchants[quiet_p]) // 2]
    quiet = float(rng.uniform(WARMUP_S, end - 1800))
    effects.append(Effect("merchant_quiet", quiet, quiet + 1200, merchant=quiet_m, volume=0.0))
    return effects


def _incident(world: World, kind: str, start: float, end: float) -> Effect:
    rng = world.rng
    prov = str(rng.choice(PROVIDERS))
    if kind == "timeouts":
        return Effect(kind, start, end, prov, error_class="timeout", share=rng.uniform(0.015, 0.03))
    if kind == "provider_outage":
        return Effect(
            kind, start, end, prov, error_class="provider_error", share=rng.uniform(0.3, 0.9)
        )
    if kind == "gradual_degradation":
        share = rng.uniform(0.05, 0.12)
        return Effect(kind, start, end, prov, error_class="provider_error", share=share, ramp=True)
    if kind == "provider_latency":
        return Effect(kind, start, end, prov, latency=float(rng.uniform(1.6, 2.5)))
    if kind == "callbacks_stop":
        return Effect(kind, start, end, prov, callbacks=False)
    # Merchant kinds: a merchant of the right size at some provider.
    pairs = [(p, m, world.merchant_rate(p, m)) for p in PROVIDERS for m in world.merchants[p]]
    if kind == "merchant_latency":  # about 0.2-1 call/s
        p, m, _ = min(pairs, key=lambda x: abs(math.log(x[2] / 0.45)))
        return Effect(kind, start, end, p, m, latency=float(rng.uniform(2.5, 4.0)))
    if kind == "small_merchant_signature":  # about one call every 20 s
        p, m, _ = min(pairs, key=lambda x: abs(math.log(x[2] / 0.05)))
        return Effect(kind, start, end, p, m, error_class="signature", share=1.0)
    # merchant_keys_broken: a merchant on several providers, every call refused.
    multi = [
        m for m in {x[1] for x in pairs} if sum(m in world.merchants[p] for p in PROVIDERS) > 1
    ]
    m = str(rng.choice(sorted(multi)))
    return Effect(kind, start, end, None, m, error_class="auth_config", share=1.0)


def _latency(rng: np.random.Generator, median: np.ndarray) -> np.ndarray:
    g = rng.gamma(GAMMA_SHAPE, 1.0, median.size) / (GAMMA_SHAPE - 1.0 / 3.0)
    retry = rng.random(median.size) < RETRY_SHARE
    g[retry] *= rng.uniform(*RETRY_FACTOR, int(retry.sum()))
    return np.round(median * g, 1)


def calls(world: World, effects: list[Effect], hours: float) -> dict[str, np.ndarray]:
    """Every call's columns, in time order."""
    rng = world.rng
    secs = np.arange(int(hours * 3600), dtype=float)
    cols: dict[str, list[np.ndarray]] = {"t": [], "provider": [], "merchant": []}
    for p in PROVIDERS:
        for m, w in zip(world.merchants[p], world.weights[p], strict=True):
            lam = world.rates[p] * w * world.curve(secs)
            for e in effects:
                if e.volume != 1.0 and e.merchant == m and e.provider in (None, p):
                    lam = np.where((secs >= e.start) & (secs < e.end), lam * e.volume, lam)
            n = rng.poisson(lam)
            t = np.repeat(secs, n) + rng.random(int(n.sum()))
            cols["t"].append(t)
            cols["provider"].append(np.full(t.size, p))
            cols["merchant"].append(np.full(t.size, m))
    t = np.concatenate(cols["t"])
    order = np.argsort(t, kind="stable")
    out = {k: np.concatenate(v)[order] for k, v in cols.items()}
    n = t.size
    op = rng.choice(len(OPERATIONS), size=n, p=OP_SHARE)
    out["operation"] = np.asarray(OPERATIONS)[op]
    base = np.array([PROVIDER_MS[p] for p in out["provider"]]) * OP_FACTOR[op]
    error = np.full(n, "", dtype=object)
    u = rng.random(n)
    edge = 0.0
    for cls, share in NORMAL_ERRORS.items():
        error[(u >= edge) & (u < edge + share)] = cls
        edge += share
    for e in effects:
        hit = e.covers(out["t"], out["provider"], out["merchant"])
        base = np.where(hit, base * e.latency, base)
        if e.error_class is not None:
            fail = hit & (rng.random(n) < e.share_at(out["t"]))
            error[fail] = e.error_class
    out["latency_ms"] = _latency(rng, base)
    out["error"] = error
    return out


def events(
    seed: int, hours: float = 3.0, only: list[str] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(events in time order, labels) of one run; ``only``: keep just these kinds of the
    plan (``[]``: normal traffic alone)."""
    world = make_world(seed)
    effects = plan(world, hours)
    if only is not None:
        effects = [e for e in effects if e.kind in only]
    c = calls(world, effects, hours)
    rng = world.rng
    evs: list[tuple[int, dict[str, Any]]] = []
    for i in range(c["t"].size):
        ts = T0_MS + int(c["t"][i] * 1000)
        p, m, op, err = (
            str(c["provider"][i]),
            str(c["merchant"][i]),
            str(c["operation"][i]),
            c["error"][i],
        )
        ev: dict[str, Any] = {
            "schema_version": 1, "event_type": "provider_call", "event_id": f"c{seed}-{i}",
            "event_ts": ts, "service": "checkout", "host": f"pay-{i % 3}", "provider": p,
            "merchant_id": m, "operation": op, "latency_ms": float(c["latency_ms"][i]),
            "signing_key_id": f"{m}-{p}-k1", "out_trade_no": f"O{seed}{i:09d}",
            "amount_minor": int(rng.integers(100, 50_000)), "currency": "CNY",
        }  # fmt: skip
        if err:
            money = op in ("create_payment", "refund")
            ev["outcome"] = "unknown" if err == "timeout" and money else "failure"
            ev["error_class"] = err
            ev["http_status"] = {"timeout": 504, "provider_error": 500}.get(err, 400)
        else:
            ev["outcome"] = "success"
        evs.append((ts, ev))
        if op == "create_payment" and not err:
            note = _callback(world, effects, ev, c["t"][i], rng)
            if note is not None:
                evs.append((note["event_ts"], note))
    evs.sort(key=lambda x: x[0])
    # An export of the run's time range: callbacks after its end are not in it.
    end_ms = T0_MS + int(hours * 3600 * 1000)
    return [e for ts, e in evs if ts < end_ms], [_label(e, world) for e in effects]


def _callback(
    world: World, effects: list[Effect], call: dict[str, Any], t: float, rng: np.random.Generator
) -> dict[str, Any] | None:
    if rng.random() < ABANDON:
        return None
    at = t + rng.exponential(THINK_MEAN_S) + rng.exponential(NOTIFY_MEAN_S)
    for e in effects:
        if not e.callbacks and e.start <= at < e.end and e.provider == call["provider"]:
            return None
    return {
        "schema_version": 1, "event_type": "payment_notification",
        "event_id": f"n{call['event_id']}", "event_ts": T0_MS + int(at * 1000),
        "service": "checkout", "provider": call["provider"], "merchant_id": call["merchant_id"],
        "notify_id": f"N{call['out_trade_no']}", "signature_verified": True,
        "ack_status": "acked", "out_trade_no": call["out_trade_no"],
        "amount_minor": call["amount_minor"], "currency": "CNY", "trade_state": "SUCCESS",
        "signing_key_id": call["signing_key_id"],
    }  # fmt: skip


def _label(e: Effect, world: World) -> dict[str, Any]:
    series: dict[str, str] = {}
    if e.provider is not None:
        series["provider"] = e.provider
    if e.merchant is not None:
        series["merchant_id"] = e.merchant
    incident = e.kind not in ("promotion", "merchant_quiet")
    return {
        "kind": e.kind, "series": series, "is_incident": incident,
        "start_ms": T0_MS + int(e.start * 1000), "end_ms": T0_MS + int(e.end * 1000),
        "magnitude": e.share or e.latency, "truth": _truth(e, world) if incident else {},
    }  # fmt: skip


def _truth(e: Effect, world: World) -> dict[str, Any]:
    """The oracle's parameters: the share of the judged class before and after, and the
    affected calls per second at the incident's start (for callbacks: the missing share
    of orders, known at their deadline)."""
    mid = world.curve(np.array([e.start]))[0]
    if e.provider is not None and e.merchant is not None:
        rate = world.merchant_rate(e.provider, e.merchant)
    elif e.merchant is not None:
        on = [p for p in PROVIDERS if e.merchant in world.merchants[p]]
        rate = sum(world.merchant_rate(p, e.merchant) for p in on)
    else:
        rate = world.rates[str(e.provider)]
    calls_per_s = rate * mid
    if not e.callbacks:  # every order due is missing; seen at its deadline (60 s)
        late = math.exp(-CALLBACK_TIMEOUT_S / THINK_MEAN_S)  # paid after the deadline
        p0 = ABANDON + (1 - ABANDON) * late
        created = calls_per_s * OP_SHARE[OPERATIONS.index("create_payment")]
        return {"stat": "rate", "p0": p0, "p1": 1.0, "calls_per_s": created,
                "known_after_s": CALLBACK_TIMEOUT_S}  # fmt: skip
    if e.latency != 1.0:
        sigma = float(np.std(np.log(_latency(np.random.default_rng(0), np.full(20_000, 100.0)))))
        return {
            "stat": "latency", "ratio": e.latency, "sigma_log": sigma, "calls_per_s": calls_per_s
        }  # fmt: skip
    if e.error_class is None:
        return {}
    p0 = NORMAL_ERRORS.get(e.error_class, 0.0)
    if e.error_class == "provider_error":  # judged with the other system errors
        p0 = NORMAL_ERRORS["provider_error"] + NORMAL_ERRORS["timeout"]
    truth = {"stat": "rate", "p0": p0, "p1": p0 + e.share * (1 - p0), "calls_per_s": calls_per_s}
    if e.ramp:
        truth["ramp_s"] = e.end - e.start
    return truth
