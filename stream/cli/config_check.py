"""``paywatch config check``: validate a config and show what it means before it is deployed.

Prints the effective configuration as YAML (every default filled in, secrets masked), then,
as YAML comments, the routes and which routes and channels each alert class (rule ×
severity) reaches.  The whole output stays a loadable YAML file.  Beyond what loading
checks, every receiver must be a URL Apprise can use.  A mistake exits 2 with one line
naming the key (``main`` turns the :class:`ConfigError` into it).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import yaml

from stream.alerting.delivery import MASK, mask_url
from stream.alerting.matchers import Matcher, from_config
from stream.config import Config, ConfigError, InhibitRule, RouteConfig, config_to_dict
from stream.judge.catalog import CATALOG
from stream.judge.judgement import SEVERITIES

# Labels an alert class fixes; any other label (the series: provider, operation,
# merchant_id) depends on which series alerts, so a route matching on it is conditional.
CLASS_LABELS = ("rule", "signal", "severity")
# Keys whose values are secrets (Kafka SASL passwords, action headers such as Authorization).
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|api_?key|credential|authoriz|auth(?!or)", re.I)


def cmd_config(args: argparse.Namespace) -> int:
    from stream.cli.inputs import load_config

    cfg = load_config(args.config)
    check_receivers(cfg)
    print(render(cfg, str(args.config) if args.config else "built-in defaults"), end="")
    return 0


@contextlib.contextmanager
def _quiet_apprise() -> Iterator[None]:
    """Apprise logs a refused URL verbatim (secrets included): keep it quiet while checking."""
    logger = logging.getLogger("apprise")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_receivers(cfg: Config) -> None:
    """Every receiver of every route is a URL Apprise (or paywatch's robot senders) can use."""
    import apprise

    routes, _ = cfg.notify_routes()
    with _quiet_apprise():
        for i, route in enumerate(routes):
            for j, url in enumerate(route.receivers):
                if apprise.Apprise.instantiate(url) is None:
                    raise ConfigError(
                        f"notify.routes[{i}].receivers[{j}]: not a URL Apprise can use: "
                        f"{mask_url(url)} (see https://github.com/caronc/apprise/wiki)"
                    )


# --------------------------------------------------------------------------- effective config


def _route_dict(route: RouteConfig) -> dict[str, Any]:
    return {"continue" if k == "continue_" else k: v for k, v in _plain(route).items()}


def _plain(obj: RouteConfig | InhibitRule) -> dict[str, Any]:
    """A config dataclass's fields as YAML writes them (tuples as lists, mappings as dicts)."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[f.name] = value
    return out


def masked(value: Any, key: str = "") -> Any:
    """``value`` with secrets replaced: values of secret-named keys, and URL credentials.

    >>> masked({"receivers": ["dingtalk://SEC1@TOK2/"], "sasl_password": "x", "port": 1})
    {'receivers': ['dingtalk://****@****/'], 'sasl_password': '****', 'port': 1}
    >>> masked({"headers": {"Authorization": "Bearer abc", "X-Team": "pay"}})
    {'headers': {'Authorization': '****', 'X-Team': 'pay'}}
    """
    if isinstance(value, dict):
        return {k: masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, key) for v in value]
    if isinstance(value, str) and value:
        if _SECRET_KEY.search(key):
            return MASK
        if "://" in value:
            return mask_url(value)
    return value


def effective(cfg: Config) -> dict[str, Any]:
    """The configuration as data, defaults filled in (routes too), secrets masked."""
    data = config_to_dict(cfg)
    routes, rules = cfg.notify_routes()
    data["notify"]["routes"] = [_route_dict(r) for r in routes]
    data["notify"]["inhibit_rules"] = [_plain(r) for r in rules]
    return dict(masked(data))


# --------------------------------------------------------------------------- who hears what


@dataclass(frozen=True)
class AlertClass:
    rule: str
    signal: str
    severity: str

    @property
    def labels(self) -> dict[str, str]:
        return {"rule": self.rule, "signal": self.signal, "severity": self.severity}


def alert_classes(cfg: Config) -> list[AlertClass]:
    """Every (rule, severity) the configured rules can alert with, in judging order."""
    out = []
    for spec in CATALOG:
        top = SEVERITIES.index(spec.max_severity)
        # A rule pages with warning up to its cap; only an info-capped rule alerts as info.
        severities = SEVERITIES[top : SEVERITIES.index("warning") + 1] or (spec.max_severity,)
        for section in spec.sections(cfg.detectors):
            out += [AlertClass(section.rule, spec.signal, sev) for sev in severities]
    return out


@dataclass(frozen=True)
class Reach:
    """A route an alert class reaches; ``when`` lists series conditions ("" = always)."""

    route: RouteConfig
    when: str = ""


def reach(routes: Sequence[RouteConfig], cls: AlertClass) -> list[Reach]:
    """The routes ``cls`` reaches, as the dispatcher's Router picks them: the first match
    wins unless it says ``continue``; ``default`` takes alerts no route matched; escalation
    targets are never matched.  A route matching on series labels reaches only those
    series, and a later route only the series earlier non-``continue`` routes let through."""
    by_name = {r.name: r for r in routes}
    default = by_name.get("default") or RouteConfig("default")
    escalation_only = {r.escalate_to for r in routes if r.escalate_to}
    hits: list[Reach] = []
    taken: list[str] = []  # conditions of earlier matched, non-continue routes
    for route in routes:
        if route.name == "default" or route.name in escalation_only:
            continue
        matchers = from_config(route.match, route.match_re)
        if not all(m.matches(cls.labels) for m in matchers if m.name in CLASS_LABELS):
            continue
        own = _series_condition(route)
        hits.append(Reach(route, " and ".join([*([own] if own else []), *map(_not, taken)])))
        if not own and not route.continue_:
            return hits
        if own and not route.continue_:
            taken.append(own)
    if all(h.when for h in hits):  # some alerts of the class may match no route
        unmatched = [_not(c) for h in hits if (c := _series_condition(h.route))]
        hits.append(Reach(default, " and ".join(dict.fromkeys(unmatched))))
    return hits


def _not(condition: str) -> str:
    return f"not ({condition})" if " and " in condition else f"not {condition}"


def _condition(matchers: Sequence[Matcher]) -> str:
    return " and ".join(str(m) for m in matchers)


def _series_condition(route: RouteConfig) -> str:
    """The route's conditions on series labels (those an alert class does not fix)."""
    matchers = from_config(route.match, route.match_re)
    return _condition([m for m in matchers if m.name not in CLASS_LABELS])


def _channels(route: RouteConfig) -> str:
    if not route.receivers:
        return "no receivers: alerts topic, console and history only"
    return ", ".join(mask_url(u) for u in route.receivers)


def _route_lines(routes: Sequence[RouteConfig]) -> list[str]:
    configured = {r.name for r in routes}
    lines = ["routes, tried in order (an alert matching none goes to `default`):"]
    for r in [*routes, *([] if "default" in configured else [RouteConfig("default")])]:
        match = _condition(from_config(r.match, r.match_re)) or "everything"
        extra = [f"continue: {str(r.continue_).lower()}"] if r.continue_ else []
        if r.fallback:
            extra.append(f"fallback: {r.fallback}")
        if r.escalate_to:
            extra.append(f"escalate_to: {r.escalate_to} after {r.escalate_after_s:g} s")
        builtin = "" if r.name in configured else " (built-in)"
        lines.append(f"  {r.name}{builtin}: match {match}; {'; '.join([*extra, ''])}"
                     f"-> {_channels(r)}")  # fmt: skip
    return lines


def _reach_lines(cfg: Config, routes: Sequence[RouteConfig]) -> list[str]:
    lines = [
        "who hears what (alert class = rule x severity -> route: channels; a route shown",
        "`when` a series condition holds gets only the alerts of series that match it):",
    ]
    classes = alert_classes(cfg)
    for c in classes:
        lines.append(f"  {c.rule} {c.severity}")
        for h in reach(routes, c):
            when = f" when {h.when}" if h.when else ""
            lines.append(f"    -> {h.route.name}{when}: {_channels(h.route)}")
    reached = {h.route.name for c in classes for h in reach(routes, c)}
    spare = [r.name for r in routes if r.name not in reached]
    if spare:
        lines.append(
            "routes no alert class matches (reached only as a fallback or escalation, "
            f"or by no alert at all): {', '.join(spare)}"
        )
    return lines


class _Dumper(yaml.SafeDumper):
    """Block style, except short lists of plain values (levels, group_by) on one line."""

    def represent_list(self, data: Any) -> yaml.Node:  # type: ignore[override]
        flat = all(not isinstance(v, dict | list) or _scalars(v) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


def _scalars(value: Any) -> bool:
    return isinstance(value, list) and not any(isinstance(v, dict | list) for v in value)


_Dumper.add_representer(list, _Dumper.represent_list)


def render(cfg: Config, source: str) -> str:
    """The report: effective YAML, then routes and reach as comments (still valid YAML)."""
    routes, _ = cfg.notify_routes()
    body = yaml.dump(effective(cfg), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    notes = [
        f"paywatch config check: {source}: OK",
        "effective configuration: every default filled in, secrets masked (****)",
    ]
    comments = [*_route_lines(routes), "", *_reach_lines(cfg, routes)]
    head = "".join(f"# {line}\n" for line in notes)
    tail = "".join(f"# {line}\n".replace("# \n", "#\n") for line in comments)
    return f"{head}{body}\n{tail}"
