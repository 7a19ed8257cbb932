"""Benchmark and evaluation runners behind ``make bench``, ``make nab`` and ``make eval`` (not shipped)."""
