"""A small PromQL evaluator for the subset paywatch's Grafana dashboard uses, over recorded scrapes.

Supported: number literals; selectors ``name{l="v", l!="v", l=~"re", l!~"re"}``;
``rate(sel[5m])`` (per-second increase between the first and last scrape inside the
range, as Prometheus; no data with fewer than two); ``sum|avg|max|min [by (..)] (e)``;
``histogram_quantile(q, e)`` (linear inside the bucket, as Prometheus);
``vector(n)``; ``+ - * /`` (vector/vector matched one-to-one on the labels, ``__name__``
dropped) and filtering comparisons ``> < >= <= == !=`` against a scalar; ``or``.
Anything else raises ``ValueError`` naming it, so a dashboard query outside the subset
fails its test instead of being skipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Vector = dict[Labels, float]
Value = Vector | float

_TOKEN = re.compile(
    r'\s*(?:(?P<num>\d+(?:\.\d+)?(?:e[+-]?\d+)?)|(?P<str>"(?:[^"\\]|\\.)*")|'
    r"(?P<dur>\[\d+[smh]\])|(?P<id>[A-Za-z_:][\w:]*)|(?P<op>=~|!~|==|!=|>=|<=|[-+*/(){}=,<>]))"
)
AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "sum": sum,
    "avg": lambda v: sum(v) / len(v),
    "max": max,
    "min": min,
}
_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else (math.nan if a == 0 else math.copysign(math.inf, a)),
}
_CMP: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


@dataclass
class Scrape:
    """One ``/metrics`` text exposition, at time ``t`` (seconds)."""

    t: float
    samples: dict[str, Vector] = field(default_factory=dict)  # sample name -> series

    @classmethod
    def parse(cls, t: float, text: str) -> Scrape:
        out: dict[str, Vector] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = float(s.value)
        return cls(t, out)


@dataclass
class Selector:
    name: str
    matchers: list[tuple[str, str, str]]
    range_s: float = 0.0

    def matches(self, labels: Labels) -> bool:
        d = dict(labels)
        for label, op, value in self.matchers:
            got = d.get(label, "")
            if op in ("=", "!="):
                ok = (got == value) == (op == "=")
            else:
                ok = (re.fullmatch(value, got) is not None) == (op == "=~")
            if not ok:
                return False
        return True

    def select(self, scrape: Scrape) -> Vector:
        series = scrape.samples.get(self.name, {})
        return {k: v for k, v in series.items() if self.matches(k)}


class Parser:
    def __init__(self, expr: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        expr = expr.strip()
        while pos < len(expr):
            m = _TOKEN.match(expr, pos)
            if not m or m.end() == pos:
                raise ValueError(f"cannot read {expr[pos:]!r}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0
        self.selectors: list[Selector] = []

    def peek(self) -> str:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else ""

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if want is not None and tok != want:
            raise ValueError(f"expected {want!r}, got {tok!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        node = self.expr()
        if self.i != len(self.tokens):
            raise ValueError(f"unsupported PromQL near {self.peek()!r}")
        return node

    def expr(self) -> Any:
        node = self.comparison()
        while self.peek() == "or":
            self.take()
            node = ("or", node, self.comparison())
        return node

    def comparison(self) -> Any:
        node = self.additive()
        if self.peek() in _CMP:
            op = self.take()
            node = ("cmp", op, node, self.additive())
        return node

    def additive(self) -> Any:
        node = self.multiplicative()
        while self.peek() in ("+", "-"):
            op = self.take()
            node = ("arith", op, node, self.multiplicative())
        return node

    def multiplicative(self) -> Any:
        node = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            node = ("arith", op, node, self.unary())
        return node

    def labels_list(self) -> list[str]:
        self.take("(")
        out = []
        while self.peek() != ")":
            out.append(self.take())
            if self.peek() == ",":
                self.take()
        self.take(")")
        return out

    def unary(self) -> Any:
        kind, tok = self.tokens[self.i]
        if kind == "num":
            self.take()
            return ("num", float(tok))
        if tok == "(":
            self.take()
            node = self.expr()
            self.take(")")
            return node
        if tok in AGGREGATIONS:
            self.take()
            by = self.labels_list() if self.peek() == "by" and self.take() else None
            self.take("(")
            inner = self.expr()
            self.take(")")
            if by is None and self.peek() == "by":
                self.take()
                by = self.labels_list()
            return ("agg", tok, by, inner)
        if tok in ("rate", "histogram_quantile", "vector"):
            return self.function()
        if kind == "id":
            return ("sel", self.selector())
        raise ValueError(f"unsupported PromQL: {tok!r}")

    def function(self) -> Any:
        name = self.take()
        self.take("(")
        if name == "rate":
            sel = self.selector()
            self.take(")")
            if not sel.range_s:
                raise ValueError("rate() needs a range")
            return ("rate", sel)
        if name == "vector":
            n = float(self.take())
            self.take(")")
            return ("vector", n)
        q = float(self.take())
        self.take(",")
        inner = self.expr()
        self.take(")")
        return ("hq", q, inner)

    def selector(self) -> Selector:
        kind, name = self.tokens[self.i]
        if kind != "id":
            raise ValueError(f"expected a metric name, got {name!r}")
        self.take()
        matchers = []
        if self.peek() == "{":
            self.take()
            while self.peek() != "}":
                label = self.take()
                op = self.take()
                value = self.take()
                if op not in ("=", "!=", "=~", "!~") or not value.startswith('"'):
                    raise ValueError(f"bad matcher {label}{op}{value}")
                matchers.append((label, op, value[1:-1].encode().decode("unicode_escape")))
                if self.peek() == ",":
                    self.take()
            self.take("}")
        sel = Selector(name, matchers)
        if self.i < len(self.tokens) and self.tokens[self.i][0] == "dur":
            dur = self.take()[1:-1]
            sel.range_s = float(dur[:-1]) * {"s": 1, "m": 60, "h": 3600}[dur[-1]]
        self.selectors.append(sel)
        return sel


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects."""
    p = Parser(expr)
    p.parse()
    return {s.name for s in p.selectors}


def _drop_name(labels: Labels) -> Labels:
    return tuple(kv for kv in labels if kv[0] != "__name__")


def evaluate(expr: str, scrapes: list[Scrape], at: int) -> Value:
    """The expression's value at ``scrapes[at]`` (earlier scrapes feed ``rate``)."""
    return _eval(Parser(expr).parse(), scrapes, at)


def _eval(node: Any, scrapes: list[Scrape], at: int) -> Value:
    kind = node[0]
    if kind == "num":
        return float(node[1])
    if kind == "vector":
        return {(): float(node[1])}
    if kind == "sel":
        return node[1].select(scrapes[at])
    if kind == "rate":
        sel: Selector = node[1]
        now = scrapes[at]
        inside = [s for s in scrapes[: at + 1] if now.t - sel.range_s <= s.t]
        first, last = sel.select(inside[0]), sel.select(now)
        dt = now.t - inside[0].t
        if len(inside) < 2 or dt <= 0:
            return {}
        return {k: max(0.0, v - first[k]) / dt for k, v in last.items() if k in first}
    if kind == "agg":
        _, op, by, inner = node
        vec = _eval(inner, scrapes, at)
        assert isinstance(vec, dict), "aggregation of a scalar"
        groups: dict[Labels, list[float]] = {}
        for labels, v in vec.items():
            key = tuple(kv for kv in labels if by is not None and kv[0] in by)
            groups.setdefault(key, []).append(v)
        return {k: AGGREGATIONS[op](vs) for k, vs in groups.items()}
    if kind == "hq":
        return _quantile(node[1], _eval(node[2], scrapes, at))
    if kind == "or":
        left, right = _eval(node[1], scrapes, at), _eval(node[2], scrapes, at)
        assert isinstance(left, dict) and isinstance(right, dict)
        return left | {k: v for k, v in right.items() if k not in left}
    if kind == "cmp":
        left, right = _eval(node[2], scrapes, at), _eval(node[3], scrapes, at)
        if not isinstance(left, dict) or isinstance(right, dict):
            raise ValueError("comparisons filter a vector against a scalar")
        return {k: v for k, v in left.items() if _CMP[node[1]](v, right)}
    return _arith(node[1], _eval(node[2], scrapes, at), _eval(node[3], scrapes, at))


def _arith(op: str, left: Value, right: Value) -> Value:
    f = _ARITH[op]
    if isinstance(left, float) and isinstance(right, float):
        return f(left, right)
    if isinstance(left, float):
        assert isinstance(right, dict)
        return {_drop_name(k): f(left, v) for k, v in right.items()}
    if isinstance(right, float):
        return {_drop_name(k): f(v, right) for k, v in left.items()}
    r = {_drop_name(k): v for k, v in right.items()}
    return {_drop_name(k): f(v, r[_drop_name(k)]) for k, v in left.items() if _drop_name(k) in r}


def _quantile(q: float, buckets: Value) -> Vector:
    """``histogram_quantile`` over cumulative ``le`` buckets, per label set without ``le``."""
    assert isinstance(buckets, dict)
    groups: dict[Labels, list[tuple[float, float]]] = {}
    for labels, v in buckets.items():
        d = dict(labels)
        le = float(d.pop("le"))
        groups.setdefault(tuple(sorted(d.items())), []).append((le, v))
    out = {}
    for key, bs in groups.items():
        bs.sort()
        total = bs[-1][1]
        if total <= 0 or not math.isinf(bs[-1][0]):
            continue
        rank = q * total
        lo_le, lo_count = 0.0, 0.0
        for le, count in bs:
            if count >= rank:
                if math.isinf(le):
                    out[key] = lo_le  # the highest finite bound, as Prometheus
                else:
                    width = count - lo_count
                    out[key] = lo_le + (le - lo_le) * ((rank - lo_count) / width if width else 1)
                break
            lo_le, lo_count = le, count
    return out
