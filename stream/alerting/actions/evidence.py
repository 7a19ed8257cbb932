"""Missing-callback evidence on alert records, and how many of those orders came back.

When a callback alert fires, the orders beneath its series whose callback is
overdue (kept by the window stage, oldest first) go into the record as
``evidence.missing_callbacks``, so an action can hand them to the merchant's
service to query the provider.  paywatch then watches for those orders' callbacks:
every later record of the episode — its resolution above all, the follow-up
people read — says how many were recovered and how many are still missing.

A callback alert resolves when no *new* callbacks go missing, which is usually
before the merchant's queries bring the old ones back; so its resolved record is
held while reported orders are still missing, for at most ``hold_ms`` of event
time, and released as soon as every one came back (or the wait ends, saying how
many are still missing).  A new episode of the same series releases it first.

Pure state, no I/O: it lives in the pipeline's state (checkpointed with it), so
a replay gives the same evidence as the live run.

>>> ev = CallbackEvidence(max_orders=10, hold_ms=60_000)
>>> rec = AlertRecord("a1", "f1", "firing", "critical", "callbacks", "notification",
...                   {"provider": "alipay"}, started_at=0)
>>> ev.annotate([rec], {"alipay|m1|T1": 60_000, "alipay|m1|T2": 61_000}, 70_000)
[AlertRecord(alert_id='a1', ...)]
>>> rec.evidence["missing_callbacks"]["orders"]
[{'provider': 'alipay', 'merchant_id': 'm1', 'out_trade_no': ['T1', 'T2']}]
>>> ev.take_recovered(["alipay|m1|T2"])
>>> done = AlertRecord("a1", "f1", "resolved", "critical", "callbacks", "notification",
...                    {"provider": "alipay"}, started_at=0)
>>> ev.annotate([done], {"alipay|m1|T1": 60_000}, 100_000)   # T1 still missing: held
[]
>>> [r.window_end for r in ev.annotate([], {}, 160_000)]    # the wait is over
[160000]
>>> {k: done.evidence["missing_callbacks"][k] for k in ("reported", "recovered", "still_missing")}
{'reported': 2, 'recovered': 1, 'still_missing': 1}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stream.alerting.record import AlertRecord
from stream.windows.callbacks import overdue_orders

#: The signal of the rule whose alerts carry missing-callback evidence.
CALLBACK_SIGNAL = "notification"


@dataclass
class _Tracked:
    """The orders one episode reported (keys, in order) and those whose callback came since."""

    reported: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)


@dataclass
class CallbackEvidence:
    """Attaches ``evidence.missing_callbacks`` to callback alerts and tracks recoveries.

    ``max_orders`` bounds the orders one alert lists; ``lookback_ms`` keeps orders
    overdue since long before the episode began (a day-old loss) out of a new alert.
    """

    max_orders: int = 1000
    lookback_ms: int = 3_600_000
    hold_ms: int = 300_000  # how long a resolution waits for reported orders to come back
    tracked: dict[str, _Tracked] = field(default_factory=dict)  # fingerprint -> orders
    held: dict[str, tuple[AlertRecord, int]] = field(default_factory=dict)  # fp -> (rec, until)

    def take_recovered(self, keys: list[str]) -> None:
        """Overdue orders whose callback arrived (from the window stage)."""
        if not keys or not self.tracked:
            return
        came = set(keys)
        for t in self.tracked.values():
            t.recovered.extend(k for k in t.reported if k in came and k not in t.recovered)

    def annotate(
        self,
        records: list[AlertRecord],
        overdue: dict[str, int],
        window_end: int,
        detected_at: Callable[[int], int] | None = None,
    ) -> list[AlertRecord]:
        """One window's records with evidence on the callback alerts; resolutions still
        waiting for orders are held back, and released ones join (before the rest)."""
        out = self._release(window_end, detected_at, {r.fingerprint for r in records})
        for rec in records:
            if rec.signal != CALLBACK_SIGNAL:
                out.append(rec)
            elif rec.firing:
                self._on_firing(rec, overdue)
                out.append(rec)
            elif self._on_resolved(rec, overdue) and self.hold_ms > 0:
                self.held[rec.fingerprint] = (rec, window_end + self.hold_ms)
            else:
                self.tracked.pop(rec.fingerprint, None)
                out.append(rec)
        return out

    def release_all(self, window_end: int) -> list[AlertRecord]:
        """End of input: every held resolution, as it stands."""
        return self._release(window_end, None, set(self.held))

    def _release(
        self, window_end: int, detected_at: Callable[[int], int] | None, refire: set[str]
    ) -> list[AlertRecord]:
        out = []
        for fp, (rec, until) in list(self.held.items()):
            t = self.tracked[fp]
            if fp in refire or window_end >= until or len(t.recovered) >= len(t.reported):
                del self.held[fp]
                self.tracked.pop(fp)
                rec.evidence = {"missing_callbacks": self._summary(t, self._missing(t, rec), False)}
                rec.window_end = max(rec.window_end, window_end)
                if detected_at is not None:
                    rec.detected_at = detected_at(window_end)
                out.append(rec)
        return out

    def _on_firing(self, rec: AlertRecord, overdue: dict[str, int]) -> None:
        t = self.tracked.get(rec.fingerprint)
        room = self.max_orders - (len(t.reported) if t else 0)
        since = rec.started_at - self.lookback_ms
        known = set(t.reported) if t else set()
        fresh = {k: d for k, d in overdue.items() if d >= since and k not in known}
        groups, keys, total = overdue_orders(fresh, rec.series, max(room, 0))
        if t is None:
            if not total:
                return  # not a loss of callbacks (e.g. signatures failing): nothing to name
            t = self.tracked[rec.fingerprint] = _Tracked()
        t.reported.extend(keys)  # an escalation adds the orders overdue since
        rec.evidence = {"missing_callbacks": self._summary(t, groups, total > len(keys))}

    def _on_resolved(self, rec: AlertRecord, overdue: dict[str, int]) -> bool:
        """Evidence as it stands; True when reported orders are still missing."""
        t = self.tracked.get(rec.fingerprint)
        if t is None:
            return False
        rec.evidence = {"missing_callbacks": self._summary(t, self._missing(t, rec), False)}
        return len(t.recovered) < len(t.reported)

    def _missing(self, t: _Tracked, rec: AlertRecord) -> list[dict[str, Any]]:
        came = set(t.recovered)
        missing = dict.fromkeys((k for k in t.reported if k not in came), 0)
        return overdue_orders(missing, rec.series, self.max_orders)[0]

    @staticmethod
    def _summary(t: _Tracked, groups: list[dict[str, Any]], truncated: bool) -> dict[str, Any]:
        """``orders``: on firing the orders reported, on resolution those still missing."""
        return {
            "orders": groups,
            "reported": len(t.reported),
            "recovered": len(t.recovered),
            "still_missing": len(t.reported) - len(t.recovered),
            "truncated": truncated,
        }
