"""The ``paywatch`` command line.

Entry point: :func:`main` (the console script).
"""

from stream.cli.main import main

__all__ = ["main"]
