"""docs/config.md cannot drift from the config classes: every key the loader accepts is
documented with its real default, and every key a table documents exists.

How a key is found: the section for ``windows.size_s`` is the one whose heading names the
longest prefix in backticks (``## `windows` ``); inside it the rest of the path
(``size_s``, or ``console.enabled`` under ``## `notify` ``) appears in backticks followed by
its default in backticks, as a table row (`` `key` | `default` ``) or in prose
(`` `key` (`default` ``).  The default is read as YAML and compared with the class's.
Route keys (``notify.routes`` entries) are checked the same way against docs/alerts.md.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.config import ConfigKey, RouteConfig, config_keys

DOCS = Path(__file__).resolve().parents[1] / "docs"
ALERTS_MD = (DOCS / "alerts.md").read_text(encoding="utf-8")
_HEADING = re.compile(r"^(#{2,4}) (.*)$", re.M)


def sections(text: str) -> dict[str, str]:
    """Text under each heading, keyed by every backticked name in the heading."""
    out: dict[str, str] = {}
    heads = list(_HEADING.finditer(text))
    for i, h in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        for name in re.findall(r"`([^`]+)`", h.group(2)):
            out.setdefault(name, text[h.end() : end])
    return out


# docs/config.md first; a section may also live on another page (a heading naming it).
SECTIONS: dict[str, str] = {}
for _page in [DOCS / "config.md", *sorted(DOCS.glob("*.md"))]:
    for _name, _text in sections(_page.read_text(encoding="utf-8")).items():
        SECTIONS.setdefault(_name, _text)


def documented_default(section: str, key: str) -> str | None:
    """The backticked default after the key, or ``required`` (a table cell)."""
    m = re.search(rf"`{re.escape(key)}`\s*(?:\|\s*|\()(?:`([^`]*)`|(required))", section)
    return (m.group(1) if m.group(1) is not None else m.group(2)) if m else None


def locate(path: str) -> tuple[str, str]:
    """(section text, key as written in it) for a dotted config path."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in SECTIONS:
            return SECTIONS[prefix], ".".join(parts[cut:])
    raise AssertionError(f"docs/: no section heading names `{parts[0]}` (for {path})")


def same(documented: str, default: Any) -> bool:
    try:
        value = yaml.safe_load(documented)
    except yaml.YAMLError:
        return False
    if isinstance(default, tuple):
        default = list(default)
    return bool(value == default)


KEYS = [k for k in config_keys() if k.default is not dataclasses.MISSING]


@pytest.mark.parametrize("key", KEYS, ids=[k.path for k in KEYS])
def test_every_config_key_is_documented_with_its_default(key: ConfigKey) -> None:
    if key.path in SECTIONS and key.default == []:
        return  # a list of entries with a section of its own (``detectors.slos``)
    section, name = locate(key.path.replace("[]", ""))
    documented = documented_default(section, name)
    assert documented is not None, f"docs/config.md: `{name}` (default) missing for {key.path}"
    if documented == "required" and "[]" in key.path:
        return  # a key every list entry must set: its class default is a placeholder
    assert same(documented, key.default), (
        f"docs/config.md says {key.path} defaults to {documented!r}; the code says {key.default!r}"
    )


def test_every_key_a_table_documents_exists() -> None:
    known = {k.path.replace("[]", "") for k in config_keys()}
    stale = []
    for prefix, section in SECTIONS.items():
        if prefix not in {k.split(".")[0] for k in known} and not any(
            k.startswith(prefix + ".") for k in known
        ):
            continue
        for name in re.findall(r"^\| `([a-z_.]+)` \|", section, re.M):
            if f"{prefix}.{name}" not in known:
                stale.append(f"{prefix}.{name}")
    assert stale == []


ROUTE_FIELDS = [
    ("continue" if f.name == "continue_" else f.name, f.default)
    for f in dataclasses.fields(RouteConfig)
]


@pytest.mark.parametrize(("name", "default"), ROUTE_FIELDS, ids=[n for n, _ in ROUTE_FIELDS])
def test_every_route_key_is_in_the_alerts_route_table(name: str, default: Any) -> None:
    row = re.search(rf"^\| `{name}`(?: / `[a-z_]+`)? \| ([^|]+) \|", ALERTS_MD, re.M) or re.search(
        rf"^\| `[a-z_]+` / `{name}` \| ([^|]+) \|", ALERTS_MD, re.M
    )
    assert row is not None, f"docs/alerts.md: no row for route key `{name}`"
    cell = row.group(1).strip().strip("`")
    if default is dataclasses.MISSING or default is None:
        return  # required, or "none"/"unlimited" in words
    if isinstance(default, float | int) and not isinstance(default, bool):
        assert float(cell) == default, f"route {name}: docs say {cell}, code says {default}"
    elif name != "language":  # documented as "notify.language", which fills it in
        assert same(cell, default), f"route {name}: docs say {cell}, code says {default!r}"
