"""Error-class taxonomy over the shipped error_codes.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from stream.ingest.events import ERROR_CLASSES
from stream.ingest.taxonomy import NON_ERROR_CLASSES, ErrorTaxonomy

CSV_PATH = Path(__file__).resolve().parents[1] / "stream" / "ingest" / "data" / "error_codes.csv"
ROWS = list(csv.DictReader(CSV_PATH.open(encoding="utf-8")))


@pytest.fixture(scope="module")
def tax() -> ErrorTaxonomy:
    return ErrorTaxonomy.default()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("wechatpay", "SIGN_ERROR", None, 401, None), "signature"),
        (("wechatpay", "SIGNERROR", None, None, None), "signature"),  # v2 code via v3→v2 chain
        (("alipay", "40004", "ACQ.SYSTEM_ERROR", None, None), "provider_error"),
        (("paypal", None, None, 429, None), "rate_limited"),
        (("paypal", "RATE_LIMIT_REACHED", None, 429, None), "rate_limited"),
        (
            ("alipay", None, None, None, 'Post "https://openapi": context deadline exceeded'),
            "timeout",
        ),
        (("unionpay", None, None, 503, None), "provider_error"),
        (("unionpay", None, None, 504, None), "timeout"),
        (("unionpay", None, None, 408, None), "timeout"),
        (("unionpay", None, None, 429, None), "rate_limited"),
        (("unionpay", None, None, 401, None), "auth_config"),
        (("unionpay", None, None, 403, None), "auth_config"),
        (("unionpay", None, None, 418, None), "invalid_request"),
        (("wechatpay", None, None, 502, None), "provider_error"),  # http:500 row covers 5xx
        (("alipay", "40004", None, 400, None), "invalid_request"),  # 40004 alone decides nothing
        (("alipay", "20000", "isp.never-seen", None, None), "provider_error"),  # all 20000 agree
        (("alipay", "ACQ.TRADE_NOT_EXIST", None, 400, None), "not_found"),  # v3 code=ACQ.*
        (("paypal", "UNPROCESSABLE_ENTITY", "NEW_ISSUE", 422, None), "business_decline"),
        (("wechatpay", "sign_error", None, None, None), "signature"),  # codes ignore case
        (("WeChatPay", "SIGN_ERROR", None, None, None), "signature"),
    ],
)
def test_classify_known_cases(tax: ErrorTaxonomy, args: tuple, expected: str) -> None:
    assert tax.classify(*args) == expected


def test_a_known_code_outranks_a_sub_code_of_another_code(tax: ErrorTaxonomy) -> None:
    # FAILURE belongs to paypal's webhook verification_status row (signature).
    assert tax.classify("paypal", "INTERNAL_SERVER_ERROR", "FAILURE", 500, None) == "provider_error"
    assert (
        tax.classify("paypal", "NEW_CODE", "INSTRUMENT_DECLINED", 422, None) == "business_decline"
    )


def test_transport_error_wins_over_provider_code(tax: ErrorTaxonomy) -> None:
    got = tax.classify("wechatpay", "SYSTEM_ERROR", None, 500, "read tcp: connection reset by peer")
    assert got == "network"


def test_transport_fragments_match_whole_words_only(tax: ErrorTaxonomy) -> None:
    assert tax.classify("x", None, None, None, "unexpected EOF") == "network"
    assert tax.classify("x", None, None, None, "geofence lookup failed") is None


def test_longest_transport_fragment_wins(tax: ErrorTaxonomy) -> None:
    msg = 'Get "https://api": x509: certificate has expired or is not yet valid: EOF'
    assert tax.classify("paypal", None, None, None, msg) == "network"
    # Client.Timeout beats the shorter generic fragments around it.
    msg = "net/http: request canceled (Client.Timeout exceeded while awaiting headers)"
    assert tax.classify("paypal", None, None, None, msg) == "timeout"


def test_gopay_sdk_errors_apply_to_every_provider(tax: ErrorTaxonomy) -> None:
    assert tax.classify("unionpay", "unmarshal error", None, None, None) == "sdk_error"
    text = "aes.GCMDecrypt(), err:cipher: message authentication failed"
    assert tax.classify("wechatpay", None, None, None, text) == "auth_config"
    assert tax.classify("alipay", None, None, None, "verify signature error") == "signature"
    assert tax.classify("paypal", None, None, None, "cert not match error") == "certificate"


def test_success_and_pending_rows_are_not_error_classes(tax: ErrorTaxonomy) -> None:
    # USERPAYING is "payer still entering the password": the first match decides, no class.
    assert tax.classify("wechatpay", "USERPAYING", None, 500, None) is None
    assert tax.classify("wechatpay", None, None, 202, None) is None
    assert tax.classify("alipay", "10000", None, None, None) is None
    assert (
        tax.classify("paypal", "UNPROCESSABLE_ENTITY", "PAYER_ACTION_REQUIRED", 422, None) is None
    )


def test_nothing_classifiable_gives_none(tax: ErrorTaxonomy) -> None:
    assert tax.classify("wechatpay", None, None, None, None) is None
    assert tax.classify("wechatpay", "SOMETHING_NEW", None, None, None) is None
    assert tax.classify("x", None, None, 302, None) is None
    assert tax.classify("x", None, None, 0, None) is None


def _expected(row_class: str) -> str | None:
    return None if row_class in NON_ERROR_CLASSES else row_class


@pytest.mark.parametrize(
    "row",
    [r for r in ROWS if r["provider"] not in ("transport",) and not r["code"].startswith("http:")],
    ids=lambda r: f"{r['provider']}:{r['code']}:{r['sub_code']}",
)
def test_every_code_row_classifies_as_its_class(tax: ErrorTaxonomy, row: dict[str, str]) -> None:
    provider = "alipay" if row["provider"] == "gopay" else row["provider"]
    got = tax.classify(provider, row["code"], row["sub_code"] or None, None, None)
    assert got == _expected(row["class"])


@pytest.mark.parametrize(
    "row",
    [r for r in ROWS if r["code"].startswith("http:")],
    ids=lambda r: f"{r['provider']}:{r['code']}",
)
def test_every_http_row_classifies_as_its_class(tax: ErrorTaxonomy, row: dict[str, str]) -> None:
    status = int(row["code"][5:])
    assert tax.classify(row["provider"], None, None, status, None) == _expected(row["class"])


@pytest.mark.parametrize(
    "row", [r for r in ROWS if r["provider"] == "transport"], ids=lambda r: r["code"]
)
def test_every_transport_row_matches_inside_a_go_error(
    tax: ErrorTaxonomy, row: dict[str, str]
) -> None:
    text = f'Post "https://api.mch.weixin.qq.com/v3/pay": {row["code"]}'
    assert tax.classify("wechatpay", None, None, None, text) == row["class"]


def test_every_csv_class_is_known() -> None:
    allowed = set(ERROR_CLASSES) | set(NON_ERROR_CLASSES)
    assert {r["class"] for r in ROWS} <= allowed


def test_default_is_loaded_once() -> None:
    assert ErrorTaxonomy.default() is ErrorTaxonomy.default()


def test_unknown_class_in_csv_is_refused() -> None:
    text = "provider,code,sub_code,class,meaning\nalipay,1,,explosion,bad\n"
    with pytest.raises(ValueError, match="explosion"):
        ErrorTaxonomy.from_csv_text(text)


def test_custom_csv() -> None:
    text = (
        "provider,code,sub_code,class,meaning\n"
        "unionpay,61,,business_decline,card declined\n"
        "transport,i/o timeout,,timeout,read timeout\n"
    )
    tax = ErrorTaxonomy.from_csv_text(text)
    assert tax.classify("unionpay", "61", None, None, None) == "business_decline"
    assert tax.classify("unionpay", None, None, None, "read tcp: i/o timeout") == "timeout"
    assert tax.classify("alipay", "61", None, None, None) is None  # rows are per provider
