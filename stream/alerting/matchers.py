"""Label matchers, the one way routes, inhibit rules and silences select alerts.

A matcher is one condition on one label, as in Alertmanager: ``=`` equal, ``!=``
not equal, ``=~`` / ``!~`` full regex match.  A missing label reads as the empty
string.  Config's ``match``/``match_re`` maps become ``=`` and ``=~`` matchers:

>>> ms = from_config({"provider": "alipay"}, {"operation": "create_.*"})
>>> [str(m) for m in ms]
['provider="alipay"', 'operation=~"create_.*"']
>>> matches_all(ms, {"provider": "alipay", "operation": "create_payment"})
True
>>> matches_all(ms, {"provider": "alipay"})
False
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

MatchOp = Literal["=", "!=", "=~", "!~"]
_OPS: tuple[MatchOp, ...] = ("=~", "!~", "!=", "=")  # two-char operators first when parsing
_MATCHER_RE = re.compile(r"""^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$""")


class MatcherError(ValueError):
    """A matcher that cannot be used; the message is one line for a person."""


@dataclass(frozen=True)
class Matcher:
    """One label condition (see the module docstring)."""

    name: str
    op: MatchOp
    value: str
    _rx: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise MatcherError(f"matcher {self.name!r}: unknown operator {self.op!r}")
        if not self.name:
            raise MatcherError("matcher has an empty label name")
        if self.op in ("=~", "!~"):
            try:
                object.__setattr__(self, "_rx", re.compile(self.value))
            except re.error as exc:
                raise MatcherError(
                    f"matcher {self.name}{self.op}{self.value!r}: bad regex ({exc})"
                ) from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        assert self._rx is not None
        hit = self._rx.fullmatch(got) is not None
        return hit if self.op == "=~" else not hit

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse ``name=value``, ``name!="v"``, ``name=~"ali.*"`` (quotes optional).

        >>> Matcher.parse('provider=~"ali.*"').matches({"provider": "alipay"})
        True
        """
        m = _MATCHER_RE.match(text)
        if not m:
            raise MatcherError(
                f"bad matcher {text!r}: expected label=value, label!=value, "
                "label=~regex or label!~regex"
            )
        name, op, value = m.group(1), m.group(2), m.group(3)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        return cls(name, op, value)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "value": self.value}

    @classmethod
    def from_obj(cls, obj: Any) -> Matcher:
        """A matcher from its text, its ``to_dict`` or Alertmanager's API shape."""
        if isinstance(obj, str):
            return cls.parse(obj)
        if isinstance(obj, Mapping):
            if "name" not in obj or "value" not in obj:
                raise MatcherError(f"matcher {dict(obj)!r} needs 'name' and 'value'")
            op = obj.get("op")
            if op is None:  # Alertmanager API shape: isRegex / isEqual
                regex, equal = bool(obj.get("isRegex")), obj.get("isEqual", True)
                op = ("=~" if equal else "!~") if regex else ("=" if equal else "!=")
            return cls(str(obj["name"]), op, str(obj["value"]))  # type: ignore[arg-type]
        raise MatcherError(f"matcher must be a string or an object, got {obj!r}")


def from_config(match: Mapping[str, Any], match_re: Mapping[str, str]) -> tuple[Matcher, ...]:
    """Matchers of a route's or inhibit rule's ``match`` (equal) and ``match_re`` (regex)."""
    return (
        *(Matcher(str(k), "=", str(v)) for k, v in match.items()),
        *(Matcher(str(k), "=~", rx) for k, rx in match_re.items()),
    )


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher holds (no matchers: always true)."""
    return all(m.matches(labels) for m in matchers)
