"""`paywatch demo` as a new user runs it: ends by itself, exit 0, the outage fires and resolves."""

from __future__ import annotations

import subprocess
import sys


def test_demo_shows_the_outage_firing_and_resolving_and_nothing_else() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "stream.cli", "demo", "--duration", "30"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    firing = [line for line in lines if " FIRING " in line]
    resolved = [line for line in lines if " RESOLVED " in line]
    assert len(firing) == 1 and "alipay" in firing[0] and "critical" in firing[0]
    assert len(resolved) == 1 and "alipay" in resolved[0]
    assert "2 malformed sent to the DLQ" in r.stdout
    assert "Traceback" not in r.stderr
