"""Rules for callback integrity: duplicate callbacks and amount mismatches (the catalog's
``duplicate_callbacks`` and ``amount_mismatch`` signals; detectors in
:mod:`models.callback_integrity`).

>>> import numpy as np
>>> from stream.judge.features import Row
>>> x = Row({"callbacks": np.array([40.0]), "amount_mismatches": np.array([4.0])}, {}, 0)
>>> describe_amount_mismatch(x, 0.0, AmountMismatchDetector()).text
'4 callbacks of 40 carry an amount that differs from the order (10%)'
"""

from __future__ import annotations

from functools import partial

from models.base import Detector
from models.callback_integrity import AmountMismatchDetector, DuplicateCallbackDetector
from stream.config import AmountMismatchRuleConfig, DuplicateCallbacksRuleConfig
from stream.judge.describe import Described
from stream.judge.features import Row
from stream.windows.registry import Dims


def describe_duplicates(x: Row, expected: float, det: Detector) -> Described:
    cb, dup = x["callbacks"], x["duplicates"]
    v = dup / cb if cb else 0.0
    text = f"{dup:.0f} duplicate callbacks of {cb:.0f} ({v:.0%}, normal {expected:.1%})"
    return Described(v, dup, text)


def describe_amount_mismatch(x: Row, expected: float, det: Detector) -> Described:
    cb, bad = x["callbacks"], x["amount_mismatches"]
    v = bad / cb if cb else 0.0
    text = f"{bad:.0f} callbacks of {cb:.0f} carry an amount that differs from the order ({v:.0%})"
    return Described(v, bad, text)


def _levels(configured: list[list[str]], default: list[Dims]) -> list[Dims]:
    return [tuple(lv) for lv in configured] if configured else default


def duplicate_parts(
    cfg: DuplicateCallbacksRuleConfig, notifications: list[Dims]
) -> tuple[partial[DuplicateCallbackDetector], list[Dims]]:
    """The detector factory and levels ({provider}: a redelivery storm is the provider's)."""
    coarse = [x for x in notifications if "merchant_id" not in x and "signing_key_id" not in x]
    make = partial(DuplicateCallbackDetector, min_windows=cfg.min_windows)
    return make, _levels(cfg.levels, coarse)


def amount_parts(
    cfg: AmountMismatchRuleConfig, notifications: list[Dims]
) -> tuple[partial[AmountMismatchDetector], list[Dims]]:
    """The detector factory and levels ({provider, merchant_id}: whose orders are paid wrongly;
    the provider level when merchants are not windowed)."""
    plain = [x for x in notifications if "signing_key_id" not in x]
    fine = [x for x in plain if "merchant_id" in x] or plain[:1]
    rate = cfg.tolerated_rate
    make = partial(AmountMismatchDetector, floor=rate, cap=rate)
    return make, _levels(cfg.levels, fine)
