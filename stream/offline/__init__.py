"""Offline: replay files or topics through the same pipeline, score, report and tune.

Entry point: :func:`stream.offline.backtest.backtest_events`.
"""
