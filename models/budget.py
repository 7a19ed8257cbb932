"""One false-alarm budget, and the CUSUM thresholds and delay bounds it implies.

Every sequential detector (:mod:`models.sequential`) is a CUSUM on the
log-likelihood ratio (LLR) of a window's sufficient statistics: the statistic
``s <- max(0, s + llr)`` pages when ``s >= h``.  Two classical results tie ``h`` to
the false-alarm rate and to the detection delay:

- **False alarms (Lorden 1971).**  Under the normal model the CUSUM is a sequence of
  one-sided SPRTs each crossing ``h`` with probability at most ``e^-h`` (Wald), so the
  average run length to a false alarm is at least ``e^h`` observations (windows
  here): ``ARL0 >= e^h``.  A detector that takes the largest of ``k`` CUSUMs (several
  alternatives) splits the budget: ``h = ln(k * ARL0)``.
- **Delay (Lorden; Siegmund's approximation).**  After a change to a state whose
  expected LLR per second is ``I`` (the Kullback-Leibler divergence of the changed
  model from the normal one, per second of traffic), the CUSUM that knows both
  models crosses ``h`` after about ``(h + e^-h - 1) / I`` seconds (Siegmund) and
  asymptotically ``h / I`` (Lorden, optimal: no test with the same false-alarm rate
  is faster).  :func:`oracle_delay_s` is that bound: the yardstick ``make eval``
  compares each detection with.

The budget is stated once (``detectors.false_alarms_per_series_per_30d``) and
converted to windows with the window length, so it holds whatever the traffic: a
window with few calls has an LLR near 0 and counts toward neither alarm nor
delay, and ``e^-h`` bounds the crossing probability of each started excursion
regardless of how much data each window carries.

>>> h = cusum_threshold(1.0, window_s=10.0)          # 1 false alarm / series / 30 days
>>> round(h, 2), round(arl0_windows(1.0, 10.0))
(12.47, 259200)
>>> round(cusum_threshold(1.0, window_s=10.0, tests=2) - h, 3)   # two alternatives: + ln 2
0.693
"""

from __future__ import annotations

import math

import numpy as np

#: The budget's period: 30 days, in seconds.
PERIOD_S = 30 * 24 * 3600.0


def arl0_windows(false_alarms_per_30d: float, window_s: float) -> float:
    """Windows between false alarms that the budget asks for (ARL0, per series and rule)."""
    if not false_alarms_per_30d > 0:
        raise ValueError("the false-alarm budget must be a positive number per 30 days")
    if not window_s > 0:
        raise ValueError("the window length must be positive")
    return PERIOD_S / false_alarms_per_30d / window_s


def cusum_threshold(false_alarms_per_30d: float, window_s: float, tests: int = 1) -> float:
    """The CUSUM threshold ``h = ln(tests * ARL0)`` (Lorden's bound ``ARL0 >= e^h``)."""
    return math.log(max(1, tests) * arl0_windows(false_alarms_per_30d, window_s))


# --- Kullback-Leibler divergences (nats), the per-observation information ------------


def kl_bernoulli(p1: float | np.ndarray, p0: float | np.ndarray) -> float | np.ndarray:
    """KL(Bernoulli(p1) || Bernoulli(p0)) per call: the LLR's drift after a change to p1.

    >>> round(float(kl_bernoulli(0.02, 0.001)), 5)      # timeouts 0.1 % -> 2 %
    0.0411
    """
    p1 = np.clip(np.asarray(p1, np.float64), 1e-12, 1 - 1e-12)
    p0 = np.clip(np.asarray(p0, np.float64), 1e-12, 1 - 1e-12)
    out = p1 * np.log(p1 / p0) + (1 - p1) * np.log((1 - p1) / (1 - p0))
    return float(out) if out.ndim == 0 else out


def kl_poisson(rate1: float | np.ndarray, rate0: float | np.ndarray) -> float | np.ndarray:
    """KL(Poisson(rate1) || Poisson(rate0)) per unit of time the rates are in.

    >>> round(float(kl_poisson(0.0, 2.0)), 3), round(float(kl_poisson(1.0, 2.0)), 4)
    (2.0, 0.3069)
    """
    r1 = np.asarray(rate1, np.float64)
    r0 = np.maximum(np.asarray(rate0, np.float64), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(r1 > 0, r1 * np.log(np.maximum(r1, 1e-300) / r0), 0.0)
    out = term - r1 + r0
    return float(out) if out.ndim == 0 else out


def kl_gaussian_mean(delta: float, sigma: float) -> float:
    """KL of a Gaussian shifted by ``delta`` from one with the same ``sigma``: δ²/2σ².

    >>> round(kl_gaussian_mean(math.log(3), 0.5), 3)
    2.414
    """
    return delta * delta / (2.0 * sigma * sigma)


# --- The oracle: the delay of the CUSUM that knows the true rates ---------------------


def oracle_delay_s(kl_per_s: float, h: float) -> float:
    """Lorden's delay bound ``h / I`` in seconds, ``I`` the KL divergence per second.

    Infinite when the change carries no information (``I <= 0``).

    >>> round(oracle_delay_s(0.0411 * 1.0, 12.47), 1)    # timeouts 0.1% -> 2% at 1 call/s
    303.4
    """
    return h / kl_per_s if kl_per_s > 0 else math.inf


def oracle_delay_rate_s(p0: float, p1: float, calls_per_s: float, h: float) -> float:
    """Oracle delay of a share of calls (errors of a class, declines, verify failures,
    nacks, missing callbacks) changing from ``p0`` to ``p1`` at ``calls_per_s``.

    >>> round(oracle_delay_rate_s(0.001, 0.02, 1.0, 12.47), 1)     # timeouts, 1 call/s
    303.4
    >>> round(oracle_delay_rate_s(0.001, 1.0, 0.05, 12.47), 1)     # all SIGN_ERROR, 1 call/20 s
    36.1
    """
    return oracle_delay_s(float(kl_bernoulli(p1, p0)) * calls_per_s, h)


def oracle_delay_latency_s(ratio: float, sigma_log: float, calls_per_s: float, h: float) -> float:
    """Oracle delay of a latency whose typical value is multiplied by ``ratio`` (log-latency
    of spread ``sigma_log`` shifted by ``ln ratio``), at ``calls_per_s``.

    >>> round(oracle_delay_latency_s(3.0, 0.5, 0.4, 12.47), 1)     # triples, 0.4 calls/s
    12.9
    """
    return oracle_delay_s(kl_gaussian_mean(math.log(ratio), sigma_log) * calls_per_s, h)


def oracle_delay_volume_s(rate0: float, rate1: float, h: float) -> float:
    """Oracle delay of a call rate (per second) dropping from ``rate0`` to ``rate1``.

    >>> round(oracle_delay_volume_s(10.0, 0.0, 12.47), 2)          # outage at 10 calls/s
    1.25
    """
    return oracle_delay_s(float(kl_poisson(rate1, rate0)), h)
