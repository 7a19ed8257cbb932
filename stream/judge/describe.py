"""One-line summaries of a judged series: the value shown, its impact, and the text.

``describe(x, expected, detector)`` returns a :class:`Described`; the rule
prefixes the text with the series (``alipay/create_payment: ...``) and rates the
severity from the score and the impact (calls or callbacks affected).

>>> import numpy as np
>>> from models.volume import VolumeDetector
>>> from stream.judge.features import Row
>>> x = Row({"volume": np.array([40.0])}, {}, 0)
>>> describe_volume(x, 100.0, VolumeDetector()).text
'40 calls in the window, ~100 expected (-60%): traffic dropped'
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from models.base import Detector, NamesWorst
from models.threshold import StaticSLO
from stream.judge.features import Row


class Described(NamedTuple):
    value: float  # the value shown (error rate, p95 ms, calls)
    impact: float  # what the severity weighs: calls or callbacks affected
    text: str  # the summary after the series


Describe = Callable[[Row, float, Detector], Described]


def _ms(v: float) -> str:
    return f"{v / 1000:.1f} s" if v >= 1000 else f"{v:.0f} ms"


@dataclass(frozen=True)
class DescribeShare:
    """A share of calls (system errors, timeouts, declines) against the learned normal.

    >>> import numpy as np
    >>> from models.sequential import TIMEOUT_RATE, SequentialDetector
    >>> x = Row({"volume": np.array([40.0]), "timeouts": np.array([3.0])}, {}, 0)
    >>> DescribeShare("timeouts", "timeouts")(x, 0.001, SequentialDetector(TIMEOUT_RATE)).text
    '7.5% timeouts in 40 calls (normal 0.10%)'
    """

    key: str
    label: str

    def __call__(self, x: Row, expected: float, det: Detector) -> Described:
        vol, bad = x["volume"], x[self.key]
        rate = bad / vol if vol else 0.0
        return Described(
            rate, bad, f"{rate:.1%} {self.label} in {vol:.0f} calls (normal {expected:.2%})"
        )


def describe_config(x: Row, expected: float, det: Detector) -> Described:
    vol, err = x["volume"], x["config_errors"]
    rate = err / vol if vol else 0.0
    text = f"{err:.0f} of {vol:.0f} calls fail with auth/signature/certificate errors ({rate:.0%})"
    return Described(rate, err, text)


def describe_latency(x: Row, expected: float, det: Detector) -> Described:
    """Median latency against the series' typical (learned) median."""
    p50 = x["latency_p50"]
    text = (
        f"median latency {_ms(p50)} (normal {_ms(expected)}), p95 {_ms(x['latency_p95'])}, "
        f"{x['volume']:.0f} calls"
    )
    return Described(p50, x["volume"], text)


def describe_volume(x: Row, expected: float, det: Detector) -> Described:
    vol = x["volume"]
    drop = 1 - vol / expected if expected > 0 else 0.0
    text = (
        f"{vol:.0f} calls in the window, ~{expected:.0f} expected ({-drop:+.0%}): traffic dropped"
    )
    return Described(vol, max(0.0, expected - vol), text)


_CALLBACK_COUNTS = {"verify": "verify_failures", "nacks": "nacks", "late_acks": "late_acks"}
_CALLBACK_LABELS = {
    "verify": "signature verification failures",
    "nacks": "callbacks nacked",
    "late_acks": "callbacks acked late",
}


def describe_callbacks(x: Row, expected: float, det: Detector) -> Described:
    """The callback signal the detector finds worst (missing callbacks for a model that
    does not say)."""
    worst = det.worst(x) if isinstance(det, NamesWorst) else "missing"
    cb = x["callbacks"]
    if worst == "missing":
        missing, due = x["missing_callbacks"], x.get("due", x["created"])
        v = missing / due if due else 0.0
        text = (
            f"{missing:.0f} callbacks missing of {due:.0f} payments due "
            f"({v:.0%}, normal {expected:.1%})"
        )
        return Described(v, missing, text)
    key = _CALLBACK_COUNTS[worst]
    v = x[key] / cb if cb else 0.0
    return Described(
        v, x[key], f"{x[key]:.0f} {_CALLBACK_LABELS[worst]} of {cb:.0f} callbacks ({v:.0%})"
    )


def describe_metric(x: Row, expected: float, det: Detector) -> Described:
    v = x["value"]
    return Described(v, 1.0, f"value {v:.4g} is unusual for this series")


def describe_multivariate(x: Row, expected: float, det: Detector) -> Described:
    return Described(x["volume"], x["volume"], "unusual combination of volume, errors and latency")


@dataclass(frozen=True)
class DescribeSLO:
    slo: StaticSLO

    def __call__(self, x: Row, expected: float, det: Detector) -> Described:
        s = self.slo
        v = s.value(x)
        value = math.nan if v is None else v
        name = s.feature if s.per is None else f"{s.feature}/{s.per}"
        shown = f"{value:.2%}" if s.per is not None else f"{value:.4g}"
        text = (
            f"{name} {shown} (warning at {s.warning:g}, critical at {s.critical:g}) "
            f"over {x['volume']:.0f} calls"
        )
        return Described(value, x["volume"], text)
