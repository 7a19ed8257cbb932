"""What the user hands the command line, and the error that says what is wrong with it.

Verbs raise :class:`UserError` for a mistake the user can fix; ``main`` prints it
as one line (exit code 2), never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream.config import Config


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def load_config(path: Path | None, bootstrap: str | None = None) -> Config:
    """The YAML config at ``path`` (defaults without one), ``--bootstrap`` over it."""
    from stream.config import load_config as load

    cfg = load(path)
    if bootstrap:
        cfg.kafka.bootstrap_servers = bootstrap
    return cfg
