"""Runners behind ``make bench``, ``make nab`` and ``make eval`` (not shipped)."""
