"""The console notifier: provider alerts printed once, series beneath folded into them."""

from __future__ import annotations

import dataclasses
import io

from stream.alerting.console import ConsoleNotifier
from stream.alerting.record import AlertRecord
from stream.config import Config

T = 1_767_225_600_000
PARENT = {"provider": "alipay"}
CHILD = {"provider": "alipay", "operation": "create_payment"}


def rec(status: str, series: dict[str, str], window_end: int) -> AlertRecord:
    fp = "fp-" + "-".join(series.values())
    return AlertRecord(
        f"a-{fp}",
        fp,
        status,
        "critical",
        "system_error_rate",
        "error_rate",
        series,
        started_at=T,
        resolved_at=window_end if status == "resolved" else None,
        window_end=window_end,
        summary=f"{'/'.join(series.values())}: errors",
    )


def test_a_parent_resolved_in_the_batch_that_folds_a_child_beneath_it() -> None:
    """A backlog closes several windows in one batch: the child fires (window 2) beneath the
    firing parent, which resolves in window 3 of the same batch.  This raised KeyError and
    took the worker down; now the fold note is printed, then the resolution."""
    out = io.StringIO()
    console = ConsoleNotifier(out, color="never")
    console.notify([rec("firing", PARENT, T + 10_000)])
    console.notify([rec("firing", CHILD, T + 20_000), rec("resolved", PARENT, T + 30_000)])
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert "FIRING" in lines[0] and "alipay: errors" in lines[0]
    assert lines[1].strip() == "└─ series beneath alipay are affected too (folded into this alert)"
    assert "RESOLVED" in lines[2] and "(1 series beneath were folded into it)" in lines[2]
    assert (console.fired, console.resolved) == (1, 1)
    # The child's own resolution later is folded (not printed), and nothing is left behind.
    console.notify([rec("resolved", CHILD, T + 40_000)])
    assert len(out.getvalue().splitlines()) == 3
    assert console.shown == {} and console.folded == {} and not console.fold_counts


def test_children_folded_beneath_a_parent_that_stays_firing() -> None:
    out = io.StringIO()
    console = ConsoleNotifier(out, color="never")
    console.notify([rec("firing", PARENT, T + 10_000), rec("firing", CHILD, T + 10_000)])
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "FIRING" in lines[0] and "└─ series beneath alipay" in lines[1]


def test_the_timeouts_of_an_outage_fold_into_its_system_error_alert() -> None:
    """The built-in inhibit rule on the console: same series, timeouts beneath system
    errors — even when the timeouts alert comes first in the batch; its operations too."""
    out = io.StringIO()
    console = ConsoleNotifier(out, color="never", inhibit_rules=Config().builtin_inhibit_rules())
    timeouts = [
        dataclasses.replace(rec("firing", s, T + 10_000), rule="timeouts", signal="timeouts",
                            fingerprint=f"to-{len(s)}", severity="warning")
        for s in (PARENT, CHILD)
    ]  # fmt: skip
    console.notify([*timeouts, rec("firing", PARENT, T + 10_000)])
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "FIRING   critical system_error_rate" in lines[0]
    assert lines[1].strip() == "└─ timeouts of alipay is part of it (folded in)"
    assert console.fired == 1 and set(console.folded) == {"to-1", "to-2"}


def test_system_errors_after_their_timeouts_fold_into_the_timeouts_alert() -> None:
    """Timeouts rising alone are on screen first; the system-error alert of the same
    series that follows folds into them (the dispatcher mutes it so: first fires), unless
    it is more severe."""
    out = io.StringIO()
    console = ConsoleNotifier(out, color="never", inhibit_rules=Config().builtin_inhibit_rules())
    timeouts = dataclasses.replace(
        rec("firing", PARENT, T + 10_000), rule="timeouts", signal="timeouts",
        fingerprint="to", severity="warning",
    )  # fmt: skip
    console.notify([timeouts])
    later = dataclasses.replace(rec("firing", PARENT, T + 30_000), started_at=T + 20_000)
    console.notify([dataclasses.replace(later, severity="warning")])
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "FIRING   warning  timeouts" in lines[0]
    assert lines[1].strip() == "└─ system_error_rate of alipay is part of it (folded in)"
    worse = dataclasses.replace(later, fingerprint="worse")  # critical: its own line
    console.notify([worse])
    assert console.fired == 2 and "FIRING   critical system_error_rate" in out.getvalue()


def test_an_episode_closed_unjudged_after_a_restart_is_printed_as_such() -> None:
    """A worker that started without the state closes what its group left firing
    (stream/live/orphans.py); the console never showed those episodes, and says so
    rather than nothing, or a recovery."""
    out = io.StringIO()
    console = ConsoleNotifier(out, color="never")
    closing = dataclasses.replace(
        rec("resolved", PARENT, T + 600_000),
        evidence={"state_lost": {"reason": "no checkpoint"}},
    )
    console.notify([closing, rec("resolved", CHILD, T + 600_000)])
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "CLOSED UNJUDGED" in lines[0] and "RESOLVED" not in lines[0]
    assert "alipay: paywatch restarted without this alert's state (no checkpoint)" in lines[0]
