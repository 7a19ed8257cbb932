"""Console notifier: alerts as readable lines for a terminal (the demo, `run` without routes).

A provider-wide alert is printed once; alerts of the same rule on series beneath
it (its operations and merchants) are folded into a count instead of thirty
lines, the way inhibition keeps a pager quiet.  When one series beneath carries
the broader alert's trouble (:func:`~stream.alerting.inhibit.carries`: one
merchant's broken keys), it is the other way round: that series is printed and
the broader alerts fold into it.  Inhibit rules given (the built-in ones: a
system-error alert mutes the timeouts alert of its series) fold their targets too.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

from stream.alerting.inhibit import carries, rule_mutes, same_merchant
from stream.alerting.matchers import from_config, matches_all
from stream.alerting.record import STATE_LOST, AlertRecord, closed_unjudged
from stream.config import InhibitRule
from stream.series import is_beneath, series_text

_COLORS = {
    "critical": "\033[1;31m",
    "warning": "\033[33m",
    "info": "\033[36m",
    "resolved": "\033[32m",
}
_RESET = "\033[0m"


def _hms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%S")


class ConsoleNotifier:
    def __init__(
        self,
        stream: TextIO | None = None,
        color: str = "auto",
        inhibit_rules: Sequence[InhibitRule] = (),
    ) -> None:
        self.out = stream or sys.stdout
        self.inhibit_rules = list(inhibit_rules)
        self.color = color == "always" or (color == "auto" and self.out.isatty())
        # Printed firing alerts by fingerprint, to fold related alerts into them.
        self.shown: dict[str, AlertRecord] = {}
        self.folded: dict[str, str] = {}  # folded fingerprint -> the shown one it folds into
        self.folded_recs: dict[str, AlertRecord] = {}  # folded fingerprint -> its record
        self.fold_counts: Counter[str] = Counter()  # shown fingerprint -> series folded in
        self.fired = 0
        self.resolved = 0

    def _paint(self, key: str, text: str) -> str:
        return f"{_COLORS[key]}{text}{_RESET}" if self.color else text

    def notify(self, records: list[AlertRecord]) -> None:
        firing_now = [r for r in records if r.status == "firing"]
        # Broader series first so a provider alert is shown before those beneath it;
        # inhibit-rule targets last, so their sources are on screen to fold into.
        for rec in sorted(records, key=lambda r: (r.window_end, self._target(r), len(r.series))):
            fp = rec.fingerprint
            if rec.status == "firing":
                if fp in self.shown or fp in self.folded:
                    continue  # an escalation of what is already on screen
                into = self._folds_into(rec, firing_now)
                if into is not None:
                    self.folded[fp], self.folded_recs[fp] = into, rec
                    if not self.fold_counts[into]:
                        self._fold_note(self.shown[into], rec)  # once, under the shown alert
                    self.fold_counts[into] += 1
                    continue
                self.shown[fp] = rec
                self.fired += 1
                self._line(rec)
            else:
                if self.folded.pop(fp, None) is not None:
                    self.folded_recs.pop(fp, None)
                    continue
                if self.shown.pop(fp, None) is not None:
                    self.resolved += 1
                    self._line(rec, folded=self.fold_counts.pop(fp, 0))
                elif closed_unjudged(rec):  # an episode a worker before this one left firing
                    self._line(rec)
        self.out.flush()

    def _fold_note(self, shown: AlertRecord, folded: AlertRecord) -> None:
        where = series_text(shown.series)
        if is_beneath(folded.series, shown.series):
            text = f"series beneath {where} are affected too (folded into this alert)"
        elif carries(folded, shown):  # the series beneath carries it
            text = f"{series_text(folded.series)} folded into {where}, which carries it"
        elif same_merchant(folded, shown):
            text = f"{series_text(folded.series)} too: the same merchant (folded in)"
        else:  # an inhibit rule's target (e.g. the timeouts of this very series)
            text = f"{folded.rule} of {series_text(folded.series)} is part of it (folded in)"
        print(f"           └─ {text}", file=self.out)

    def _folds_into(self, rec: AlertRecord, firing_now: list[AlertRecord]) -> str | None:
        """The shown alert ``rec`` folds into: a child carrying it, else a broader one."""
        for child in [*self.shown.values(), *firing_now]:
            if carries(rec, child):  # its rule, or a tail's slow merchant (may_fold)
                # The carrier is printed (now or before); fold into it once it is.
                if child.fingerprint not in self.shown:
                    self.shown[child.fingerprint] = child
                    self.fired += 1
                    self._line(child)
                return child.fingerprint
        for pfp, shown in self.shown.items():
            beneath = shown.rule == rec.rule and is_beneath(rec.series, shown.series)
            if beneath and not carries(shown, rec):
                return pfp
            if any(rule_mutes(r, shown, rec) for r in self.inhibit_rules):
                return pfp
            if same_merchant(rec, shown):
                return pfp  # the same merchant at another provider, shown first
        for ffp, folded in self.folded_recs.items():  # beneath an alert folded itself
            beneath = folded.rule == rec.rule and is_beneath(rec.series, folded.series)
            if beneath and not carries(folded, rec):
                return self.folded[ffp]
        return None

    def _target(self, rec: AlertRecord) -> bool:
        """Whether an inhibit rule may fold ``rec`` into another alert."""
        return any(
            matches_all(from_config(r.target_match, r.target_match_re), rec.labels)
            for r in self.inhibit_rules
        )

    def _line(self, rec: AlertRecord, folded: int = 0) -> None:
        if rec.status == "firing":
            tag = self._paint(rec.severity, f"FIRING   {rec.severity:<8}")
            since = f"since {_hms(rec.started_at)}"
        elif closed_unjudged(rec):
            lost = (rec.evidence or {})[STATE_LOST]
            tag = self._paint("info", "CLOSED UNJUDGED  ")
            since = f"{_hms(rec.started_at)}–{_hms(rec.resolved_at or rec.window_end)}"
            print(
                f"[{_hms(rec.window_end)}] {tag} {rec.rule}  {series_text(rec.series)}: paywatch"
                f" restarted without this alert's state ({lost.get('reason', '?')}); it pages"
                f" again if the trouble persists  ({since})",
                file=self.out,
            )
            return
        else:
            tag = self._paint("resolved", "RESOLVED         ")
            since = f"{_hms(rec.started_at)}–{_hms(rec.resolved_at or rec.window_end)}"
        hints = ""
        if rec.hints:
            hints = "  hints: " + ", ".join(
                f"{h['dimension']}={h['value']} ({h['share']:.0%})" for h in rec.hints
            )
        if folded:
            hints += f"  ({folded} series beneath were folded into it)"
        # Event time of the window that produced the record: what the on-call correlates with.
        print(
            f"[{_hms(rec.window_end)}] {tag} {rec.rule}  {rec.summary}  ({since}){hints}",
            file=self.out,
        )
