"""Callback integrity family: callbacks that arrive twice, or with the wrong amount.

A duplicate or a mismatched amount is a money problem, not noise: a duplicate storm
(the provider redelivering what it already delivered) risks double fulfilment and
floods the notify service; a callback whose amount differs from the order's means
someone is paid, or charged, the wrong sum.  Both are counts out of callbacks, so
both are :class:`~models.error_rate.ErrorRateDetector` with their own defaults —
and :class:`~models.error_rate.ErrorRateBank` is their vectorised twin:

- :class:`DuplicateCallbackDetector` judges duplicates against the series' learned
  rate (providers redeliver ~1 % as a matter of course: unacked, late-acked, or
  just twice), paging on a rise of at least 5 points;
- :class:`AmountMismatchDetector` learns nothing: its baseline is pinned at a
  tolerated rate (0.1 % by default, ``floor == cap``), so any *sustained* mismatch
  pages — three mismatches in a window, or a few over several windows that the
  CUSUM accumulates — while one stray mismatch in a busy stream does not.  No
  warm-up either: a mismatch is never normal.
"""

from __future__ import annotations

from models.bank import register_twin
from models.error_rate import ErrorRateBank, ErrorRateDetector, ErrorRateParams

#: Duplicate callbacks over callbacks received, against the series' own rate.
DUPLICATE_DEFAULTS = ErrorRateParams(
    errors_key="duplicates",
    volume_key="callbacks",
    prior_rate=0.01,
    floor=0.01,
    cap=0.1,
    min_increase=0.05,
    min_errors=5.0,
    cusum_ratio=4.0,
    min_windows=30,
)

#: Mismatched amounts over callbacks received: a pinned baseline, no learning, no warm-up.
AMOUNT_DEFAULTS = ErrorRateParams(
    errors_key="amount_mismatches",
    volume_key="callbacks",
    prior_rate=0.0,
    floor=0.001,
    cap=0.001,  # floor == cap: the tolerated rate, whatever the stream did before
    min_increase=0.01,
    min_errors=3.0,
    page_log10=6.0,
    cusum_ratio=20.0,  # each mismatch adds log(20) ~ 3 nats, each clean callback -0.02
    cusum_h=8.0,
    cusum_cap=10.0,
    max_dispersion=1.0,  # judge the counts as they are: a burst is not "normal variance"
    min_windows=0,
)


class DuplicateCallbackDetector(ErrorRateDetector):
    """Duplicate callbacks (``duplicates`` out of ``callbacks``) for one series.

    >>> det = DuplicateCallbackDetector(min_windows=5)
    >>> normal = {"callbacks": 1000, "duplicates": 10}
    >>> for _ in range(30):
    ...     _ = det.learn_one(normal)
    >>> det.score_one(normal) < 0.5, det.score_one({"callbacks": 3000, "duplicates": 30}) < 0.5
    (True, True)
    >>> det.score_one({"callbacks": 1500, "duplicates": 500}) >= 0.5   # a redelivery storm
    True
    """

    __slots__ = ()

    @staticmethod
    def _default_params() -> ErrorRateParams:
        return DUPLICATE_DEFAULTS


class AmountMismatchDetector(ErrorRateDetector):
    """Callbacks whose amount differs from the order's (``amount_mismatches``) for one series.

    >>> det = AmountMismatchDetector()
    >>> det.score_one({"callbacks": 2000, "amount_mismatches": 1}) < 0.5    # one stray
    True
    >>> det.score_one({"callbacks": 20, "amount_mismatches": 4}) >= 0.5     # a merchant's bug
    True
    >>> for _ in range(3):   # one mismatch a window at a small merchant, window after window
    ...     score = det.score_learn_one({"callbacks": 10, "amount_mismatches": 1})
    >>> score >= 0.5
    True
    """

    __slots__ = ()

    @staticmethod
    def _default_params() -> ErrorRateParams:
        return AMOUNT_DEFAULTS


register_twin(DuplicateCallbackDetector, ErrorRateBank.twin_of)
register_twin(AmountMismatchDetector, ErrorRateBank.twin_of)
