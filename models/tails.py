"""Exact tail probabilities for count data, in pure Python (no scipy in ``models/``).

Only the upper tail of the binomial is needed: "this many errors or more, if the
error rate were still the baseline one".  The sum runs from ``k`` upwards, where
terms shrink geometrically, so it is cheap even for a million calls.
"""

from __future__ import annotations

import math

_LN10 = math.log(10.0)


def binom_log10_sf(k: float, n: float, p: float, max_terms: int = 4000) -> float:
    """``log10 P(X >= k)`` for ``X ~ Binomial(n, p)``; 0.0 when ``k`` is at or below the mean.

    Counts may be fractional (quasi-likelihood: counts divided by an overdispersion
    factor); the sum then runs over ``k, k + 1, ...`` with the gamma-function
    binomial coefficient.  Below the mean the tail is at least about one half, so it
    is reported as no surprise at all (0.0) rather than computed.

    >>> round(binom_log10_sf(14, 2000, 0.002), 2)   # 14 errors where 4 are expected
    -4.13
    >>> round(binom_log10_sf(1, 500, 0.001), 3)     # one stray error in 500 calls
    -0.405
    >>> binom_log10_sf(3, 2000, 0.002)              # fewer than expected: no surprise
    0.0
    >>> binom_log10_sf(6, 5, 0.5)
    -inf
    >>> round(binom_log10_sf(14 / 1.5, 2000 / 1.5, 0.002), 2)  # overdispersed by 1.5
    -2.95
    """
    if k <= 0 or p >= 1.0:
        return 0.0
    if k > n or p <= 0.0:
        return -math.inf
    if k <= n * p:
        return 0.0
    log_first = (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )
    odds = p / (1.0 - p)
    total = term = 1.0
    j = k
    for _ in range(max_terms):
        if j + 1 > n:
            break
        term *= (n - j) / (j + 1) * odds
        j += 1
        total += term
        if term < total * 1e-13:
            break
    else:
        # Terms fall at least geometrically past the mean: bound what is left.
        ratio = (n - j) / (j + 1) * odds
        total += term * ratio / (1.0 - ratio) if ratio < 1.0 else 0.0
    return min(0.0, (log_first + math.log(total)) / _LN10)
