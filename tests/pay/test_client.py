"""The payment client against the sandbox gateway and a capturing transport: the envelope and its signature over the
exact bytes sent, typed outcomes, idempotency keys, timeouts, refused answers, profiles and secrets."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest

from alirecon.config import PAY_PRODUCTION_ENDPOINT, PayConfig
from alirecon.pay.client import (
    CLIENT_TIMEOUT,
    FUNCTIONS,
    REFUND_AMOUNT_EXCEED,
    REPEAT_REQ_INCONSISTENT,
    RESPONSE_REFUSED,
    PayClient,
    PayConfigError,
    PayError,
    money_field,
)
from alirecon.sources.openapi import extract_response_content, sign, verify_signature

from . import support
from .support import CLIENT_ID, MERCHANT_ID, Sandbox, key_lines, private_pem, public_pem

pay_keys = support.pay_keys
sandbox = support.sandbox


def capture(sandbox: Sandbox) -> tuple[PayClient, list[httpx.Request]]:
    """A client whose requests go through the real gateway and are kept byte for byte."""
    seen: list[httpx.Request] = []
    real = httpx.Client()

    def forward(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = real.post(str(request.url), content=request.content, headers=dict(request.headers))
        return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)

    http = httpx.Client(transport=httpx.MockTransport(forward))
    client = PayClient(sandbox.profile(), now=sandbox.clock.now, http=http)
    return client, seen


def test_the_signature_covers_the_exact_request_text_sent(sandbox: Sandbox) -> None:
    client, seen = capture(sandbox)
    result = client.pay("T-1", 1234, "USD", "281234567890123456", order_title="coffee")
    assert result.status == "S"
    sent = seen[0].content.decode("utf-8")
    request_text = extract_response_content(sent, "request")
    assert request_text is not None
    signature = json.loads(sent)["signature"]
    assert verify_signature(request_text, signature, sandbox.keys.client.public_key(), "RSA2")
    assert not verify_signature(request_text.replace("1234", "1235"), signature, sandbox.keys.client.public_key())
    head = json.loads(request_text)["head"]
    assert head["function"] == "alipay.intl.acquiring.offline.pay"
    assert head["clientId"] == CLIENT_ID and head["signType"] == "RSA2" and head["version"] == "2.0.0"
    assert head["reqTime"] == "2026-11-20T10:00:00+08:00"
    body = json.loads(request_text)["body"]
    assert body["order"]["orderAmount"] == {"currency": "USD", "value": "1234"}
    assert body["merchantId"] == MERCHANT_ID and body["productCode"] == "OFFLINE_PAY"
    assert str(seen[0].url).endswith("/api/alipay/intl/acquiring/offline/pay.htm")


def test_each_call_has_its_own_req_msg_id_but_keeps_the_business_key(sandbox: Sandbox) -> None:
    client, seen = capture(sandbox)
    first = client.pay("T-2", 500, "JPY", "28code", order_title="tea")
    again = client.pay("T-2", 500, "JPY", "28code", order_title="tea")
    heads = [json.loads(extract_response_content(r.content.decode(), "request") or "{}")["head"] for r in seen]
    bodies = [json.loads(extract_response_content(r.content.decode(), "request") or "{}")["body"] for r in seen]
    assert heads[0]["reqMsgId"] != heads[1]["reqMsgId"]
    assert bodies[0]["merchantTransId"] == bodies[1]["merchantTransId"] == "T-2"
    assert first.acquirement_id and first.acquirement_id == again.acquirement_id
    assert sandbox.gateway.stats.charges[(MERCHANT_ID, "T-2")] == 1


def test_same_trans_id_with_another_amount_is_refused(sandbox: Sandbox) -> None:
    client = sandbox.client()
    assert client.pay("T-3", 100, "USD", "28code", order_title="x").status == "S"
    other = client.pay("T-3", 101, "USD", "28code", order_title="x")
    assert (other.status, other.code) == ("F", REPEAT_REQ_INCONSISTENT)
    assert [p.amount for p in sandbox.gateway.accepted_payments()] == [100]


def test_a_timeout_is_an_unknown_outcome_that_a_query_settles(sandbox: Sandbox) -> None:
    sandbox.gateway.faults.latency, sandbox.gateway.faults.latency_calls = 0.6, 1
    client = sandbox.client(timeout=0.15)
    result = client.pay("T-4", 990, "THB", "28code", order_title="x")
    assert result.status == "U" and result.timed_out and result.code == CLIENT_TIMEOUT
    time.sleep(0.8)  # the gateway finishes the pay after its latency
    query = client.pay_query("T-4")
    assert (query.status, query.acquirement_status) == ("S", "SUCCESS")
    assert sandbox.gateway.stats.charges[(MERCHANT_ID, "T-4")] == 1


def test_an_altered_answer_is_refused_and_unknown(sandbox: Sandbox) -> None:
    sandbox.gateway.faults.broken_signature = 1
    result = sandbox.client().pay("T-5", 100, "USD", "28code", order_title="x")
    assert (result.status, result.code) == ("U", RESPONSE_REFUSED)
    assert result.acquirement_id is None and not result.body


def test_an_answer_signed_by_another_key_is_refused(sandbox: Sandbox) -> None:
    result = sandbox.client(alipay_public_key=public_pem(sandbox.keys.other)).pay_query("nothing")
    assert (result.status, result.code) == ("U", RESPONSE_REFUSED)


def test_a_request_signed_with_the_wrong_key_is_refused_by_the_gateway(sandbox: Sandbox, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(private_pem(sandbox.keys.other))
    result = sandbox.client(private_key_file=wrong).pay("T-6", 100, "USD", "28code", order_title="x")
    assert (result.status, result.code) == ("F", "INVALID_SIGNATURE")
    assert sandbox.gateway.stats.bad_signatures == 1 and not sandbox.gateway.stats.charges


def test_sha1_rsa_signatures_work_both_ways(sandbox: Sandbox) -> None:
    result = sandbox.client(sign_type="RSA").pay("T-7", 100, "USD", "28code", order_title="x")
    assert result.status == "S"


def test_partial_refunds_up_to_the_original_with_idempotent_retries(sandbox: Sandbox) -> None:
    client = sandbox.client()
    paid = client.pay("T-8", 1000, "USD", "28code", order_title="x")
    assert paid.acquirement_id is not None
    first = client.refund(paid.acquirement_id, "R-1", 600, "USD", reason="damaged")
    retried = client.refund(paid.acquirement_id, "R-1", 600, "USD", reason="damaged")
    assert first.status == retried.status == "S" and first.refund_id == retried.refund_id
    assert client.refund(paid.acquirement_id, "R-1", 500, "USD").code == REPEAT_REQ_INCONSISTENT
    assert client.refund(paid.acquirement_id, "R-2", 401, "USD").code == REFUND_AMOUNT_EXCEED
    assert client.refund(paid.acquirement_id, "R-2", 400, "USD").status == "S"
    assert sandbox.gateway.payments[(MERCHANT_ID, "T-8")].refunded == 1000


@pytest.mark.parametrize("amount", [0, -5, 1.5, True])
def test_amounts_must_be_positive_ints(amount: object) -> None:
    with pytest.raises(PayError):
        money_field(amount, "USD")  # type: ignore[arg-type]


def test_unknown_currency_is_refused() -> None:
    with pytest.raises(PayError, match="XXY"):
        money_field(100, "XXY")


def test_functions_and_paths_follow_the_spec() -> None:
    assert {f.path for f in FUNCTIONS.values()} == {"offline/pay.htm", "offline/payquery.htm",
                                                     "common/paycancel.htm", "common/grefund.htm"}


def test_a_sandbox_profile_never_reaches_production(sandbox: Sandbox) -> None:
    with pytest.raises(PayConfigError, match="sandbox"):
        sandbox.client(endpoint=PAY_PRODUCTION_ENDPOINT)


def test_a_production_profile_never_reaches_a_sandbox(sandbox: Sandbox) -> None:
    with pytest.raises(PayConfigError, match="production"):
        sandbox.client(environment="production")


def test_one_switch_changes_client_id_key_and_merchant(sandbox: Sandbox, tmp_path: Path) -> None:
    prod_key = tmp_path / "prod.pem"
    prod_key.write_bytes(private_pem(sandbox.keys.other))
    sandbox_profile = sandbox.profile().model_dump()
    production = dict(sandbox_profile, environment="production", endpoint=PAY_PRODUCTION_ENDPOINT,
                      client_id="2188400000009999", merchant_id="2188129999999999", private_key_file=prod_key)
    config = PayConfig(active="sandbox", sandbox=sandbox_profile, production=production)
    assert PayClient.from_config(config).pay_query("T-x").status == "F"  # the sandbox answers (ORDER_NOT_EXIST)
    switched = config.model_copy(update={"active": "production"}).profile()
    assert (switched.client_id, switched.merchant_id, switched.private_key_file) == (
        "2188400000009999", "2188129999999999", prod_key)
    with pytest.raises(pydantic.ValidationError):
        PayConfig(active="sandbox", sandbox=dict(sandbox_profile, environment="production"))
    with pytest.raises(pydantic.ValidationError):
        PayConfig(active="production", sandbox=sandbox_profile)


def test_no_secret_in_reprs_logs_or_errors(sandbox: Sandbox, caplog: pytest.LogCaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    client = sandbox.client()
    sandbox.gateway.faults.broken_signature = 1
    client.pay("T-9", 100, "USD", "28secretbuyercode", order_title="x")
    client.pay("T-9", 100, "USD", "28secretbuyercode", order_title="x")
    monkeypatch.setenv("PAY_KEY", "not a key " + key_lines(sandbox.keys.client)[-1])
    with pytest.raises(PayConfigError) as bad:
        sandbox.client(private_key_file=None, private_key_env="PAY_KEY")
    texts = [repr(client), caplog.text, str(bad.value), repr(sandbox.gateway.payments)]
    for text in texts:
        for secret in key_lines(sandbox.keys.client):
            assert secret not in text
        assert "28secretbuyercode" not in text


def scripted(sandbox: Sandbox, answer: Callable[[dict[str, Any]], dict[str, Any]]) -> PayClient:
    """A client whose answers are built by ``answer(request head)`` and signed with the gateway's real key."""

    def reply(request: httpx.Request) -> httpx.Response:
        head = json.loads(extract_response_content(request.content.decode(), "request") or "{}")["head"]
        text = json.dumps(answer(head), separators=(",", ":"))
        signature = sign(text, sandbox.keys.alipay)
        return httpx.Response(200, content=('{"response":' + text + ',"signature":"' + signature + '"}').encode())

    return PayClient(sandbox.profile(), http=httpx.Client(transport=httpx.MockTransport(reply)))


def test_a_replayed_answer_of_another_request_is_refused(sandbox: Sandbox) -> None:
    client = scripted(sandbox, lambda head: {"head": dict(head, reqMsgId="someone-else"),
                                             "body": {"resultInfo": {"resultStatus": "S", "resultCode": "SUCCESS"}}})
    assert (client.pay_query("T").status, client.pay_query("T").code) == ("U", RESPONSE_REFUSED)


def test_an_answer_of_another_function_is_refused(sandbox: Sandbox) -> None:
    client = scripted(sandbox, lambda head: {"head": dict(head, function=FUNCTIONS["payCancel"].name),
                                             "body": {"resultInfo": {"resultStatus": "S", "resultCode": "SUCCESS"}}})
    assert client.pay_query("T").code == RESPONSE_REFUSED


@pytest.mark.parametrize(("info", "expected"), [
    ({"resultStatus": "X", "resultCode": "ODD"}, ("U", "ODD")),
    ({"resultStatus": "U", "resultCode": "SOMETHING_NEW"}, ("U", "SOMETHING_NEW")),
    ({"resultStatus": "F", "resultCode": "ORDER_NOT_EXIST", "resultCodeId": "00001"}, ("F", "ORDER_NOT_EXIST")),
    (None, ("U", RESPONSE_REFUSED)),
])
def test_result_status_first_then_code(sandbox: Sandbox, info: dict[str, str] | None,
                                       expected: tuple[str, str]) -> None:
    body = {"resultInfo": info} if info is not None else {}
    client = scripted(sandbox, lambda head: {"head": head, "body": body})
    result = client.pay_query("T")
    assert (result.status, result.code) == expected
