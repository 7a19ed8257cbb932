"""The latency-tail rule: its hints weigh each child by its calls over the parent's line.

A merchant whose every call gets three times slower raises its operation's and its
provider's tail share: its calls land over *their* 4x line, few over its own (its median
moved with it).  Weighed by their calls over their own lines, as the tail share counts
them, the children never named it.  :class:`TailRule` weighs each child by its calls
over the parent's line in the window, summed over the parent's evidence as every
:class:`~stream.judge.carry_rule.CarryRule` does; the dispatcher folds a tail alert that
names a merchant into that merchant's latency alert (:mod:`stream.alerting.inhibit`).
"""

from __future__ import annotations

import numpy as np

from stream.judge.carry_rule import CarryRule
from stream.judge.features import JudgedWindow, calls_over, tail_line


class TailRule(CarryRule):
    """A :class:`CarryRule` on the tail share whose children are weighed over the line of
    the series their hint is for."""

    def _weigh(
        self, window: JudgedWindow, sid: int, kids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        line = tail_line(window.win, sid)
        if line is None:  # too few calls for a line: no tail judged, no evidence
            return None
        slow = calls_over(window.win, kids, line).astype(np.float64)
        return slow, window.features["timed_calls"][kids].astype(np.float64)
