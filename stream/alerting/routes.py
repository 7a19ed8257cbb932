"""Routes: which configured route(s) an alert goes to, and its group within each.

The first matching route wins unless it has ``continue_``; a route named
``default`` (or a built-in one) takes the rest.  A route named as some route's
``escalate_to`` is reached only by escalation, never by matching.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

from stream.alerting.delivery import Channel, RouteTargets
from stream.alerting.matchers import Matcher, from_config, matches_all
from stream.config import RouteConfig, check_routes

ALL_LABELS = "..."  # group_by value meaning "every label": one group per alert


class Router:
    """The configured routes, by name, plus the matching order.

    >>> r = Router([RouteConfig("pager", match={"severity": "critical"})])
    >>> [x.name for x in r.routes_for({"severity": "critical"})]
    ['pager']
    >>> [x.name for x in r.routes_for({"severity": "info"})]
    ['default']
    """

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        check_routes(routes)
        self.routes: dict[str, RouteConfig] = {r.name: r for r in routes}
        self.default_route = self.routes.get("default") or RouteConfig("default")
        self.routes.setdefault("default", self.default_route)
        escalation_only = {r.escalate_to for r in routes if r.escalate_to}
        self._matchable: list[tuple[RouteConfig, tuple[Matcher, ...]]] = [
            (r, from_config(r.match, r.match_re))
            for r in routes
            if r.name != "default" and r.name not in escalation_only
        ]

    def routes_for(self, labels: Mapping[str, str]) -> list[RouteConfig]:
        hits = []
        for route, matchers in self._matchable:
            if matches_all(matchers, labels):
                hits.append(route)
                if not route.continue_:
                    return hits
        return hits or [self.default_route]


def group_key(route: RouteConfig, labels: Mapping[str, str]) -> str:
    """The group of an alert in ``route``: its ``group_by`` label values (a label the
    alert lacks is left out, as if empty: ``host`` groups metric alerts only).

    >>> group_key(RouteConfig("oncall"), {"rule": "errors", "provider": "alipay"})
    'oncall:{provider="alipay",rule="errors"}'
    >>> group_key(RouteConfig("oncall"), {"rule": "metric_anomaly", "host": "pod-1"})
    'oncall:{host="pod-1",rule="metric_anomaly"}'
    """
    wanted = labels if ALL_LABELS in route.group_by else route.group_by
    keys = sorted(k for k in wanted if labels.get(k, ""))
    inner = ",".join(f"{k}={json.dumps(labels.get(k, ''), ensure_ascii=False)}" for k in keys)
    return f"{route.name}:{{{inner}}}"


def route_targets(routes: Iterable[RouteConfig]) -> dict[str, RouteTargets]:
    """Delivery's view of the routes, by name (for ``Deliverer(routes=...)``)."""
    out: dict[str, RouteTargets] = {}
    for r in routes:
        out[r.name] = RouteTargets(
            r.name, tuple(Channel(url) for url in r.receivers), fallback=r.fallback
        )
    return out
