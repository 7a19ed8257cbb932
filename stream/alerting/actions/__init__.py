"""Automatic actions on alerts: an HTTP call or a local command, run off the consume path.

Entry point: :class:`~stream.alerting.actions.runner.ActionRunner` (built and fed by
:class:`~stream.alerting.notifications.Notifications`).  The request body, its
signature and the answers expected are in :mod:`stream.alerting.actions.contract`
(and docs/actions.md); :mod:`stream.alerting.actions.evidence` puts the orders whose
callback never came into callback alerts and counts those that come back.
"""

from stream.alerting.actions.runner import ActionRun, ActionRunner

__all__ = ["ActionRun", "ActionRunner"]
