"""Console notifier: alerts as readable lines for a terminal (the demo, `run` without routes).

A provider-wide alert is printed once; alerts of the same rule on series beneath
it (its operations and merchants) are folded into a count instead of thirty
lines, the way inhibition keeps a pager quiet.
"""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime
from typing import TextIO

from stream.alerting.record import AlertRecord
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
    def __init__(self, stream: TextIO | None = None, color: str = "auto") -> None:
        self.out = stream or sys.stdout
        self.color = color == "always" or (color == "auto" and self.out.isatty())
        # (rule, frozen series) of printed firing alerts, to fold alerts beneath them.
        self.shown: dict[str, tuple[str, dict[str, str]]] = {}
        self.folded: dict[str, str] = {}  # child fingerprint -> parent fingerprint
        self.fold_counts: Counter[str] = Counter()  # parent fingerprint -> series folded
        self.fired = 0
        self.resolved = 0

    def _paint(self, key: str, text: str) -> str:
        return f"{_COLORS[key]}{text}{_RESET}" if self.color else text

    def notify(self, records: list[AlertRecord]) -> None:
        folded_now: list[str] = []
        # Broader series first so a provider alert is shown before those beneath it.
        for rec in sorted(records, key=lambda r: (r.window_end, len(r.series))):
            fp = rec.fingerprint
            if rec.status == "firing":
                parent = next(
                    (
                        pfp
                        for pfp, (rule, s) in self.shown.items()
                        if rule == rec.rule and is_beneath(rec.series, s)
                    ),
                    None,
                )
                if parent is not None and fp not in self.shown:
                    self.folded[fp] = parent
                    if not self.fold_counts[parent]:
                        folded_now.append(parent)
                    self.fold_counts[parent] += 1
                    continue
                self.shown[fp] = (rec.rule, rec.series)
                self.fired += 1
                self._line(rec)
            else:
                if self.folded.pop(fp, None) is not None:
                    continue
                if self.shown.pop(fp, None) is not None:
                    self.resolved += 1
                    self._line(rec, folded=self.fold_counts.pop(fp, 0))
        for parent in folded_now:
            _, series = self.shown[parent]
            where = series_text(series)
            print(
                f"           └─ series beneath {where} are affected too (folded into this alert)",
                file=self.out,
            )
        self.out.flush()

    def _line(self, rec: AlertRecord, folded: int = 0) -> None:
        if rec.status == "firing":
            tag = self._paint(rec.severity, f"FIRING   {rec.severity:<8}")
            since = f"since {_hms(rec.started_at)}"
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
