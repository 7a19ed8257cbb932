"""Error-class taxonomy: which ``error_class`` a failed provider call belongs to.

The facts live in ``stream/ingest/data/error_codes.csv`` (columns
``provider,code,sub_code,class,meaning``), gathered from WeChat Pay (v3 and v2),
Alipay, PayPal and the gopay SDK.  Row kinds:

* ``wechatpay_v3`` / ``wechatpay_v2`` / ``alipay`` / ``paypal`` rows with a
  provider ``code`` (and optionally a ``sub_code``);
* rows whose code is ``http:NNN``: the provider's fallback for an HTTP status
  (``http:500`` stands for every 5xx of that provider);
* ``gopay`` rows: error texts of the gopay SDK, valid whatever the provider;
* ``transport`` rows: fragments of Go network error strings
  (``context deadline exceeded``, ``connection reset by peer`` ...).

Some rows carry the class ``success`` or ``pending`` (``USERPAYING``, Alipay
``10000``, ``http:202`` ...).  They are not error classes: when the first
match for a failed call is such a row, :meth:`ErrorTaxonomy.classify` answers
``None`` (the provider said "not an error"), it does not keep looking.

>>> tax = ErrorTaxonomy.default()
>>> tax.classify("wechatpay", "SIGN_ERROR", None, 401, None)
'signature'
>>> tax.classify("alipay", "40004", "ACQ.SYSTEM_ERROR", None, None)
'provider_error'
>>> tax.classify("unionpay", None, None, 503, None)
'provider_error'
>>> tax.classify("paypal", None, None, None, 'Post "https://api": context deadline exceeded')
'timeout'
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from stream.ingest.events import ERROR_CLASSES

# Classes a CSV row may carry that say "this is not an error".
NON_ERROR_CLASSES = ("success", "pending")

# Event provider name -> CSV provider rows to consult, most specific first.
PROVIDER_ROWS: dict[str, tuple[str, ...]] = {
    "wechatpay": ("wechatpay_v3", "wechatpay_v2"),
    "wechatpay_v3": ("wechatpay_v3",),
    "wechatpay_v2": ("wechatpay_v2",),
    "alipay": ("alipay",),
    "paypal": ("paypal",),
}

_CSV = "data/error_codes.csv"
_SDK = "gopay"
_TRANSPORT = "transport"
_HTTP = "http:"

# Used when neither the provider's code nor its http:NNN rows decide.
_GENERIC_HTTP = {401: "auth_config", 403: "auth_config", 408: "timeout", 429: "rate_limited"}
_GENERIC_HTTP[504] = "timeout"


def _generic_http(status: int) -> str | None:
    """Generic HTTP fallback: 504/408 timeout, other 5xx provider_error, 429 rate_limited,
    401/403 auth_config, other 4xx invalid_request; anything else is no error class."""
    if status in _GENERIC_HTTP:
        return _GENERIC_HTTP[status]
    if 500 <= status <= 599:
        return "provider_error"
    if 400 <= status <= 499:
        return "invalid_request"
    return None


@dataclass(frozen=True, slots=True)
class _CodeTable:
    """Rows of one CSV provider: (code, sub) and code-only lookups, keys casefolded."""

    exact: dict[tuple[str, str], str]
    by_code: dict[str, str]
    by_sub: dict[str, str]
    http: dict[int, str]


def _fold(s: str) -> str:
    return s.strip().casefold()


def _build_table(rows: Iterable[tuple[str, str, str]]) -> _CodeTable:
    exact: dict[tuple[str, str], str] = {}
    code_only: dict[str, str] = {}
    classes_of_code: dict[str, set[str]] = {}
    classes_of_sub: dict[str, set[str]] = {}
    http: dict[int, str] = {}
    for code, sub, klass in rows:
        if code.startswith(_HTTP):
            http[int(code[len(_HTTP) :])] = klass
            continue
        c = _fold(code)
        classes_of_code.setdefault(c, set()).add(klass)
        if sub:
            exact[(c, _fold(sub))] = klass
            classes_of_sub.setdefault(_fold(sub), set()).add(klass)
        else:
            code_only[c] = klass
    # A code without a code-only row still decides alone when all its sub-codes agree
    # (Alipay 20000 is always provider_error; 40004 spans many classes, so it does not).
    by_code = dict(code_only)
    for c, classes in classes_of_code.items():
        if c not in by_code and len(classes) == 1:
            by_code[c] = next(iter(classes))
    by_sub = {u: next(iter(cs)) for u, cs in classes_of_sub.items() if len(cs) == 1}
    return _CodeTable(exact, by_code, by_sub, http)


class ErrorTaxonomy:
    """Maps (provider, code, sub-code, HTTP status, transport error) to an error class.

    Lookup order of :meth:`classify`, first match wins:

    1. ``transport_error``: the CSV ``transport`` fragments, searched inside the
       text (a Go error reads ``Post "https://...": context deadline exceeded``),
       longest fragment first, matched case-sensitively at word boundaries (so
       ``EOF`` matches ``unexpected EOF`` but not ``geofence``);
    2. the provider's own rows: ``provider_code`` + ``provider_sub_code`` exactly,
       then ``provider_code`` alone (a code-only row), then ``provider_sub_code``
       alone, then ``provider_code`` read as a sub-code (Alipay v3 sends
       ``code=ACQ.TRADE_NOT_EXIST``).  "Alone" matches need every CSV row with that
       code (or sub-code) to agree on one class: Alipay ``20000`` is always
       provider_error, ``40004`` spans many classes and decides nothing.  Codes
       compare case-insensitively.  ``wechatpay`` consults ``wechatpay_v3``, then
       ``wechatpay_v2``;
    3. the gopay SDK rows, for any provider: first by ``provider_code`` as in 2,
       then as a text fragment of ``transport_error`` or ``provider_code``
       (services often put the SDK's error string there);
    4. ``http_status``: the provider's ``http:NNN`` row (``http:500`` covers all
       5xx), else the generic fallback (504/408 timeout, 5xx provider_error,
       429 rate_limited, 401/403 auth_config, other 4xx invalid_request).

    A first match of class ``success``/``pending`` gives ``None``, as does no match.
    """

    def __init__(self, rows: Iterable[tuple[str, str, str, str]]) -> None:
        """Build from ``(provider, code, sub_code, class)`` rows; unknown classes raise."""
        by_provider: dict[str, list[tuple[str, str, str]]] = {}
        fragments: dict[str, str] = {}
        sdk_fragments: list[tuple[str, str, str]] = []
        allowed = set(ERROR_CLASSES) | set(NON_ERROR_CLASSES)
        for provider, code, sub, klass in rows:
            provider, code, sub, klass = provider.strip(), code.strip(), sub.strip(), klass.strip()
            if klass not in allowed:
                raise ValueError(f"error_codes.csv: unknown class {klass!r} for {provider} {code}")
            if not code:
                raise ValueError(f"error_codes.csv: empty code in a {provider} row")
            if provider == _TRANSPORT:
                fragments[code] = klass
            else:
                by_provider.setdefault(provider, []).append((code, sub, klass))
                if provider == _SDK:
                    sdk_fragments.append((code, sub, klass))
        self._tables = {p: _build_table(r) for p, r in by_provider.items()}
        self._sdk = self._tables.get(_SDK, _build_table(()))
        self._transport = fragments
        self._transport_re = _fragment_regex(fragments)
        # Rows with a sub-code first so the more specific text match wins.
        self._sdk_fragments = sorted(sdk_fragments, key=lambda r: (not r[1], -len(r[0])))
        self._cache: dict[tuple[object, ...], str | None] = {}

    @classmethod
    def from_csv_text(cls, text: str) -> ErrorTaxonomy:
        """Parse CSV text with the header ``provider,code,sub_code,class,...``."""
        reader = csv.DictReader(io.StringIO(text))
        return cls(
            (r["provider"] or "", r["code"] or "", r["sub_code"] or "", r["class"] or "")
            for r in reader
        )

    @staticmethod
    @cache
    def default() -> ErrorTaxonomy:
        """The taxonomy shipped as package data (loaded once per process)."""
        try:
            text = resources.files("stream.ingest").joinpath(_CSV).read_text("utf-8")
        except (OSError, TypeError, ValueError):
            # An editable install made while stream/ lacked __init__.py leaves a
            # namespace package that importlib.resources (3.11) cannot read.
            text = Path(__file__).with_name("data").joinpath("error_codes.csv").read_text("utf-8")
        return ErrorTaxonomy.from_csv_text(text)

    def classify(
        self,
        provider: str,
        provider_code: str | None,
        provider_sub_code: str | None,
        http_status: int | None,
        transport_error: str | None,
    ) -> str | None:
        """Error class of a failed call, one of ``ERROR_CLASSES``, or None (see class doc)."""
        key = (provider, provider_code, provider_sub_code, http_status, transport_error)
        cached = self._cache.get(key, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        found = self._lookup(
            provider, provider_code, provider_sub_code, http_status, transport_error
        )
        klass = None if found is None or found in NON_ERROR_CLASSES else found
        if len(self._cache) >= 65536:  # unbounded transport texts must not grow memory forever
            self._cache.clear()
        self._cache[key] = klass
        return klass

    def _lookup(
        self,
        provider: str,
        code: str | None,
        sub: str | None,
        status: int | None,
        transport: str | None,
    ) -> str | None:
        if transport and self._transport_re is not None:
            m = self._transport_re.search(transport)
            if m:
                return self._transport[m.group(1)]
        names = PROVIDER_ROWS.get(provider.lower(), (provider.lower(),))
        tables = [self._tables[n] for n in names if n in self._tables and n != _SDK]
        fcode = _fold(code) if code else ""
        fsub = _fold(sub) if sub else ""
        if fcode:
            for t in tables:
                if fsub and (fcode, fsub) in t.exact:
                    return t.exact[(fcode, fsub)]
            for t in tables:
                if fcode in t.by_code:
                    return t.by_code[fcode]
        if fsub:
            for t in tables:
                if fsub in t.by_sub:
                    return t.by_sub[fsub]
        if fcode:
            # Alipay v3 answers code=ACQ.TRADE_NOT_EXIST: the v2 sub-code in the code field.
            for t in tables:
                if fcode in t.by_sub:
                    return t.by_sub[fcode]
            if fsub and (fcode, fsub) in self._sdk.exact:
                return self._sdk.exact[(fcode, fsub)]
            if fcode in self._sdk.by_code:
                return self._sdk.by_code[fcode]
        texts = [t for t in (transport, code) if t]
        if texts:
            for frag, fsub_row, klass in self._sdk_fragments:
                for text in texts:
                    if frag in text and (
                        not fsub_row or fsub_row in text or _fold(fsub_row) == fsub
                    ):
                        return klass
            # A gopay error text whose sub-code context is absent: all rows of it agree?
            for frag, _sub, _klass in self._sdk_fragments:
                if any(frag in text for text in texts) and _fold(frag) in self._sdk.by_code:
                    return self._sdk.by_code[_fold(frag)]
        if status is not None and status != 0:
            for t in tables:
                if status in t.http:
                    return t.http[status]
                if 500 <= status <= 599 and 500 in t.http:
                    return t.http[500]
            return _generic_http(status)
        return None


_MISSING = object()


def _fragment_regex(fragments: dict[str, str]) -> re.Pattern[str] | None:
    """One alternation of all fragments, longest first, bounded so words are not split."""
    if not fragments:
        return None
    alts = "|".join(re.escape(f) for f in sorted(fragments, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9_])({alts})(?![A-Za-z0-9_])")
