"""Alerting: judgements become alert records, and alert records reach people.

Entry points: :class:`stream.alerting.lifecycle.AlertLifecycle` (pending → firing →
resolved) and :class:`stream.alerting.notifications.Notifications` (routes, grouping,
inhibition, silences, delivery, history).
"""
