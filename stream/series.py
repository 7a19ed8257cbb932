"""A series names one combination of dimension values, e.g. ``{provider: alipay}``.

The three ways paywatch writes one, each defined once here:

>>> s = {"provider": "alipay", "operation": "create_payment"}
>>> series_key(s)
(('operation', 'create_payment'), ('provider', 'alipay'))
>>> series_text(s)
'alipay/create_payment'
>>> series_labels(s)
'provider=alipay operation=create_payment'
"""

from __future__ import annotations

from collections.abc import Mapping

SeriesKey = tuple[tuple[str, str], ...]


def series_key(series: Mapping[str, str]) -> SeriesKey:
    """Order-free identity of a series (a dict key, comparable across sources)."""
    return tuple(sorted(series.items()))


def series_text(series: Mapping[str, str]) -> str:
    """Compact value path for one-line summaries (dimension order as the level lists them)."""
    return "/".join(series.values())


def series_labels(series: Mapping[str, str], sep: str = " ") -> str:
    """``key=value`` pairs, for where the dimension names matter (``sep`` between them)."""
    return sep.join(f"{k}={v}" for k, v in series.items())


def metric_name(series: Mapping[str, str]) -> str:
    """The metric name of a ``metric`` series (``""`` for other series).

    >>> metric_name({"metric": "cpu_percent{host=a}"}), metric_name({"provider": "alipay"})
    ('cpu_percent', '')
    """
    return series.get("metric", "").split("{", 1)[0]


def metric_labels(series: Mapping[str, str]) -> dict[str, str]:
    """The labels of a ``metric`` series (``name{k=v,...}``), for routing and grouping.

    >>> metric_labels({"metric": "cpu_percent{host=a,service=pay}"})
    {'host': 'a', 'service': 'pay'}
    >>> metric_labels({"metric": "cpu_percent"}), metric_labels({"provider": "alipay"})
    ({}, {})
    """
    _, brace, inner = series.get("metric", "").partition("{")
    if not brace or not inner.endswith("}"):
        return {}
    pairs = (part.partition("=") for part in inner[:-1].split(","))
    return {k: v for k, eq, v in pairs if eq and k}


def is_beneath(child: Mapping[str, str], parent: Mapping[str, str]) -> bool:
    """True when ``child`` is a finer series inside ``parent`` (it has all of parent's values).

    >>> is_beneath({"provider": "alipay", "merchant_id": "m1"}, {"provider": "alipay"})
    True
    >>> is_beneath({"provider": "alipay"}, {"provider": "alipay"})
    False
    """
    return len(child) > len(parent) and all(child.get(k) == v for k, v in parent.items())
