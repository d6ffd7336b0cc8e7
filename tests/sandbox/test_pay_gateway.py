"""The sandbox payment gateway on loopback: signed answers, idempotency, the query-before-pay race, cancel
semantics, each switchable fault, and the list of accepted payments the world will settle."""

from __future__ import annotations

import json
import threading
import time

import httpx

from alirecon.pay.client import (
    ACCESS_DENIED,
    ORDER_NOT_EXIST,
    ORDER_STATUS_INVALID,
    PROCESS_FAIL,
    UNKNOWN_EXCEPTION,
    parse_response,
)
from alirecon.sandbox.pay_gateway import API_PREFIX, MAX_BODY, PARAM_ILLEGAL

from ..pay import support
from ..pay.support import MERCHANT_ID, OTHER_MERCHANT_ID, Sandbox

pay_keys = support.pay_keys
sandbox = support.sandbox


def test_answers_are_signed_with_the_gateway_key(sandbox: Sandbox) -> None:
    with httpx.Client() as http:
        text = http.post(sandbox.gateway.endpoint + "/offline/payquery.htm", content=b'{"request":{}}').text
    fields = parse_response(text, sandbox.keys.alipay.public_key())
    assert fields["body"]["resultInfo"]["resultStatus"] == "F"  # an unsigned request is refused, in a signed answer


def test_unknown_paths_and_methods_are_404(sandbox: Sandbox) -> None:
    base = sandbox.gateway.endpoint.removesuffix(API_PREFIX)
    with httpx.Client() as http:
        assert http.post(base + "/api/other.htm", content=b"{}").status_code == 404
        assert http.get(sandbox.gateway.endpoint + "/offline/pay.htm").status_code == 404


def test_a_merchant_of_another_client_is_refused(sandbox: Sandbox) -> None:
    assert sandbox.client(merchant_id="2188000000000077").pay_query("T").code == ACCESS_DENIED
    assert sandbox.client(merchant_id=OTHER_MERCHANT_ID).pay_query("T").code == ORDER_NOT_EXIST


def test_a_query_that_overtakes_its_pay_finds_nothing_then_the_payment(sandbox: Sandbox) -> None:
    sandbox.gateway.faults.latency, sandbox.gateway.faults.latency_calls = 0.5, 1
    client = sandbox.client()
    paying = threading.Thread(target=client.pay, args=("T-1", 100, "USD", "28code"), kwargs={"order_title": "x"})
    paying.start()
    time.sleep(0.15)
    early = client.pay_query("T-1")
    paying.join()
    late = client.pay_query("T-1")
    assert (early.status, early.code) == ("F", ORDER_NOT_EXIST)
    assert (late.status, late.acquirement_status) == ("S", "SUCCESS")


def test_order_not_exist_fault_counts_down(sandbox: Sandbox) -> None:
    client = sandbox.client()
    client.pay("T-2", 100, "USD", "28code", order_title="x")
    sandbox.gateway.faults.order_not_exist = 2
    codes = [client.pay_query("T-2").code for _ in range(3)]
    assert codes == [ORDER_NOT_EXIST, ORDER_NOT_EXIST, "SUCCESS"]


def test_acquirement_id_wins_over_merchant_trans_id(sandbox: Sandbox) -> None:
    client = sandbox.client()
    first = client.pay("T-3", 100, "USD", "28code", order_title="x")
    client.pay("T-4", 200, "USD", "28code", order_title="y")
    assert client.pay_query("T-4", acquirement_id=first.acquirement_id).body["merchantTransId"] == "T-3"


def test_cancel_of_a_paid_payment_refunds_it_and_drops_it_from_settlement(sandbox: Sandbox) -> None:
    client = sandbox.client()
    client.pay("T-5", 100, "USD", "28code", order_title="x")
    client.pay("T-6", 300, "USD", "28code", order_title="y")
    assert client.pay_cancel("T-5").status == "S"
    assert client.pay_cancel("T-5").status == "S"  # repeating a cancel is harmless
    assert client.pay_query("T-5").acquirement_status == "CANCELLED"
    assert [p.merchant_trans_id for p in sandbox.gateway.accepted_payments()] == ["T-6"]
    assert client.pay("T-5", 100, "USD", "28code", order_title="x").code == ORDER_STATUS_INVALID


def test_cancel_before_pay_closes_the_id_so_a_late_pay_is_never_charged(sandbox: Sandbox) -> None:
    client = sandbox.client()
    assert client.pay_cancel("T-7").status == "S"
    late = client.pay("T-7", 100, "USD", "28code", order_title="x")
    assert (late.status, late.code) == ("F", ORDER_STATUS_INVALID)
    assert not sandbox.gateway.stats.charges and not sandbox.gateway.accepted_payments()


def test_pay_unknown_charges_but_answers_u(sandbox: Sandbox) -> None:
    sandbox.gateway.faults.pay_unknown = 1
    client = sandbox.client()
    result = client.pay("T-8", 100, "USD", "28code", order_title="x")
    assert (result.status, result.code) == ("U", UNKNOWN_EXCEPTION)
    assert sandbox.gateway.stats.charges[(MERCHANT_ID, "T-8")] == 1
    assert client.pay("T-8", 100, "USD", "28code", order_title="x").status == "S"  # the real status, no new charge
    assert sandbox.gateway.stats.charges[(MERCHANT_ID, "T-8")] == 1


def test_pay_lost_answers_u_and_charges_nothing(sandbox: Sandbox) -> None:
    sandbox.gateway.faults.pay_lost = 1
    client = sandbox.client()
    assert client.pay("T-9", 100, "USD", "28code", order_title="x").status == "U"
    assert client.pay_query("T-9").code == ORDER_NOT_EXIST
    assert not sandbox.gateway.stats.charges


def test_pay_fail_is_remembered_under_its_key(sandbox: Sandbox) -> None:
    sandbox.gateway.faults.pay_fail = 1
    client = sandbox.client()
    first = client.pay("T-10", 100, "USD", "28code", order_title="x")
    again = client.pay("T-10", 100, "USD", "28code", order_title="x")
    assert (first.status, first.code) == (again.status, again.code) == ("F", "EXPIRED_CODE")
    assert client.pay_query("T-10").acquirement_status == "FAIL"


def test_cancel_faults(sandbox: Sandbox) -> None:
    client = sandbox.client()
    client.pay("T-11", 100, "USD", "28code", order_title="x")
    sandbox.gateway.faults.cancel_unknown, sandbox.gateway.faults.cancel_fail = 2, 1
    outcomes = [(r.status, r.code) for r in (client.pay_cancel("T-11") for _ in range(4))]
    assert outcomes == [("U", UNKNOWN_EXCEPTION), ("U", UNKNOWN_EXCEPTION), ("F", PROCESS_FAIL), ("S", "SUCCESS")]


def test_refund_unknown_is_made_and_its_retry_returns_it(sandbox: Sandbox) -> None:
    client = sandbox.client()
    paid = client.pay("T-12", 1000, "USD", "28code", order_title="x")
    assert paid.acquirement_id is not None
    sandbox.gateway.faults.refund_unknown = 1
    assert client.refund(paid.acquirement_id, "R-1", 300, "USD").status == "U"
    retry = client.refund(paid.acquirement_id, "R-1", 300, "USD")
    assert retry.status == "S" and sandbox.gateway.payments[(MERCHANT_ID, "T-12")].refunded == 300


def test_a_refund_of_a_cancelled_payment_is_refused(sandbox: Sandbox) -> None:
    client = sandbox.client()
    paid = client.pay("T-13", 1000, "USD", "28code", order_title="x")
    assert paid.acquirement_id is not None
    client.pay_cancel("T-13")
    assert client.refund(paid.acquirement_id, "R-1", 300, "USD").code == ORDER_STATUS_INVALID


def test_accepted_payments_carry_what_the_files_need(sandbox: Sandbox) -> None:
    client = sandbox.client()
    client.pay("T-14", 1999, "JPY", "28code", order_title="ramen")
    (payment,) = sandbox.gateway.accepted_payments()
    assert (payment.merchant_id, payment.merchant_trans_id, payment.amount, payment.currency) == (
        MERCHANT_ID, "T-14", 1999, "JPY")
    assert payment.acquirement_id and payment.acquirement_id.startswith("20261120")
    assert payment.created_at == sandbox.clock.now()


def test_malformed_amounts_are_param_illegal(sandbox: Sandbox) -> None:
    client = sandbox.client()
    bad = client.call("pay", {"merchantId": MERCHANT_ID, "merchantTransId": "T-15", "identityCode": "28",
                              "order": {"orderAmount": {"currency": "USD", "value": "1.00"}}})
    assert (bad.status, bad.code) == ("F", "PARAM_ILLEGAL")
    assert json.dumps(bad.body).count("PARAM_ILLEGAL") == 1


def test_hostile_bodies_are_refused_and_the_gateway_keeps_serving(sandbox: Sandbox) -> None:
    """Garbage, a truncated envelope, JSON that is not an envelope, no body, an oversized body: each gets a
    clear refusal and no charge; a proper call right after still works."""
    url = sandbox.gateway.endpoint + "/offline/pay.htm"
    with httpx.Client() as http:
        for body in (b"\x00\xff not json", b'{"request": {"head": {"clientId"', b"[1, 2, 3]",
                     json.dumps({"request": {"head": {}, "body": {}}}).encode()):
            answer = http.post(url, content=body)
            assert answer.status_code == 200
            info = json.loads(answer.text)["response"]["body"]["resultInfo"]
            assert (info["resultStatus"], info["resultCode"]) == ("F", PARAM_ILLEGAL), body
        assert http.post(url, content=b"").status_code == 400
        assert http.post(url, content=b"x" * (MAX_BODY + 1)).status_code == 400
    assert sum(sandbox.gateway.stats.charges.values()) == 0
    assert sandbox.client().pay("T-AFTER", 100, "USD", "28code", order_title="x").status == "S"
