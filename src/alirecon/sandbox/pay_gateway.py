"""The sandbox barcode payment gateway: ``alipay.intl.acquiring.*`` pay, payQuery, payCancel and refund on loopback.

Why: the payment client and its best-practice flow must be tested against real HTTP, real RSA2 signatures both
ways, real timeouts and the provider's idempotency, without an Alipay account (DESIGN.md "Real parts"). It
follows barcode.md 10.8 (itself [inferred]):

1. The request signature is checked over the received ``request`` text with the key registered for the
   ``clientId`` (``pay.client.parse_response`` with ``member="request"``); a bad one is refused.
2. Idempotency per 10.4: the same merchantId + merchantTransId is the same payment (the stored answer, never a
   second charge); the same key with another amount or buyer code is ``REPEAT_REQ_INCONSISTENT``. Refunds are
   keyed by merchantId + acquirementId + merchantRefundId the same way.
3. Switchable faults (``PayFaults``, read on every request): latency before a call is processed (past the
   client's timeout: the payment happens, the answer comes too late, and a query during the wait finds
   nothing: the race of 10.5 step 2), U answers on pay (charged or lost), ``ORDER_NOT_EXIST`` for the next N
   queries, U or F on cancel, U on refund, broken response signatures.
4. Cancel: a paid payment becomes CANCELLED (refunded), an unknown one is closed so a late pay with its id is
   refused (10.8 item 4: unknown -> closed); cancelled payments are not in ``accepted_payments``.
5. Amounts are minor units (10.2); the settlement files (written later by the world) use major units.
6. Every answer is signed with the gateway's own generated key pair over exactly the emitted response text.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time as time_mod
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..clock import UTC8
from ..money import MoneyError, exponent
from ..pay.client import (
    ACCESS_DENIED,
    FUNCTIONS,
    ORDER_NOT_EXIST,
    ORDER_STATUS_INVALID,
    PROCESS_FAIL,
    REFUND_AMOUNT_EXCEED,
    REPEAT_REQ_INCONSISTENT,
    UNKNOWN_EXCEPTION,
    PayResponseError,
    parse_response,
)
from ..sources.openapi import SignType, load_public_key, sign
from .alipay_gateway import LoopbackService, _Handler
from .clock import SimClock

__all__ = ["API_PREFIX", "GatewayPayment", "GatewayRefund", "PayFaults", "PayGateway", "PayGatewayStats"]

log = logging.getLogger("alirecon.sandbox")

API_PREFIX = "/api/alipay/intl/acquiring"  # the production path (barcode.md 10.1), so only the host differs
MAX_BODY = 256 * 1024
PARAM_ILLEGAL = "PARAM_ILLEGAL"
INVALID_SIGNATURE = "INVALID_SIGNATURE"  # [inferred] the code of a refused request signature (gap 5)
_BY_PATH = {f"{API_PREFIX}/{f.path}": key for key, f in FUNCTIONS.items()}
_CODE_IDS = {"SUCCESS": "00000000", UNKNOWN_EXCEPTION: "00000900"}  # [inferred] resultCodeId values


@dataclass
class GatewayRefund:
    refund_id: str
    merchant_refund_id: str
    amount: int
    currency: str
    refunded_at: datetime


@dataclass
class GatewayPayment:
    """One merchantTransId at the gateway. ``status``: SUCCESS (charged), FAIL (refused, never charged),
    CLOSED (cancelled before any pay: a later pay is refused), CANCELLED (charged, then cancelled = refunded)."""

    merchant_id: str
    merchant_trans_id: str
    acquirement_id: str | None
    amount: int
    currency: str
    identity_code: str = field(repr=False)
    order_title: str
    status: str
    result_code: str
    created_at: datetime
    cancelled_at: datetime | None = None
    refunds: dict[str, GatewayRefund] = field(default_factory=dict)  # by merchantRefundId

    @property
    def refunded(self) -> int:
        return sum(r.amount for r in self.refunds.values())


@dataclass
class PayFaults:
    """Switchable faults; counters count down, one per affected request."""

    latency: float = 0.0  # real seconds a delayed call waits before being processed
    latency_calls: int = 0  # the next N calls of ``latency_functions`` are delayed
    latency_functions: frozenset[str] = frozenset({"pay"})
    pay_unknown: int = 0  # the next N new pays are charged but answered U UNKNOWN_EXCEPTION
    pay_lost: int = 0  # the next N pays are answered U and never charged (lost inside the provider)
    pay_fail: int = 0  # the next N new pays are refused with ``pay_fail_code`` (F, never charged)
    pay_fail_code: str = "EXPIRED_CODE"
    order_not_exist: int = 0  # the next N payQueries answer ORDER_NOT_EXIST (the query overtook its pay)
    query_unknown: int = 0  # the next N payQueries answer U
    cancel_unknown: int = 0  # the next N payCancels answer U and cancel nothing
    cancel_fail: int = 0  # the next N payCancels answer F PROCESS_FAIL
    refund_unknown: int = 0  # the next N new refunds are made but answered U
    # U answers of pay / payQuery / payCancel name the payment's acquirementId when the order exists (a provider
    # that created the order but cannot say how it ended) [inferred: 10.6 lists no body for U]
    unknown_names_payment: bool = False
    broken_signature: int = 0  # the next N answers carry a signature that does not verify


@dataclass
class PayGatewayStats:
    requests: int = 0
    calls: Counter[str] = field(default_factory=Counter)  # by function
    answers: Counter[str] = field(default_factory=Counter)  # "pay S SUCCESS", ...
    charges: Counter[tuple[str, str]] = field(default_factory=Counter)  # (merchantId, merchantTransId) -> charges
    bad_signatures: int = 0


class _PayHandler(_Handler):
    """The open-platform gateway's handler, without Nagle's delay: a flow makes many small calls in a row."""

    disable_nagle_algorithm = True


class _Answer(Exception):
    def __init__(self, status: str, code: str, message: str = "", **extra: Any) -> None:
        self.status, self.code, self.message, self.extra = status, code, message, extra
        super().__init__(f"{status} {code}")


def _fail(code: str, message: str) -> _Answer:
    return _Answer("F", code, message)


class PayGateway(LoopbackService):
    """The simulated acquiring API. ``register_client`` declares a clientId, its public key and its merchant IDs;
    ``start()`` serves on loopback; give clients ``endpoint`` and ``alipay_public_key_pem``."""

    handler = _PayHandler
    thread_name = "alirecon-sandbox-pay-gateway"

    def __init__(self, clock: SimClock, *, alipay_key: rsa.RSAPrivateKey | None = None,
                 faults: PayFaults | None = None, host: str = "127.0.0.1") -> None:
        self.clock = clock
        self.faults = faults or PayFaults()
        self.stats = PayGatewayStats()
        self.host = host
        self.clients: dict[str, tuple[rsa.RSAPublicKey, frozenset[str]]] = {}
        self.payments: dict[tuple[str, str], GatewayPayment] = {}  # (merchantId, merchantTransId)
        self._by_acquirement: dict[str, GatewayPayment] = {}
        self._alipay_key = alipay_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._lock = threading.RLock()

    def register_client(self, client_id: str, public_key: rsa.RSAPublicKey | bytes | str,
                        merchant_ids: tuple[str, ...] | list[str]) -> None:
        key = public_key if isinstance(public_key, rsa.RSAPublicKey) else load_public_key(public_key)
        with self._lock:
            self.clients[client_id] = (key, frozenset(merchant_ids))

    @property
    def alipay_public_key_pem(self) -> str:
        return self._alipay_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")

    def accepted_payments(self) -> list[GatewayPayment]:
        """Charged and not cancelled, in order of payment: what the next day's settlement files must show."""
        with self._lock:
            return sorted((p for p in self.payments.values() if p.status == "SUCCESS"),
                          key=lambda p: (p.created_at, p.merchant_trans_id))

    # -- serving --------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The base URL for ``PayProfile.endpoint``."""
        if self._port is None:
            raise RuntimeError("the gateway has not started")
        return f"http://{self.host}:{self._port}{API_PREFIX}"


    # -- requests -------------------------------------------------------------------------------

    def handle(self, request: _Handler) -> None:
        """Called by the shared handler of ``alipay_gateway`` for every HTTP request."""
        with self._lock:
            self.stats.requests += 1
        function = _BY_PATH.get(request.path.split("?", 1)[0])
        if function is None or request.command != "POST":
            request.reply(404, b"not found", "text/plain")  # its body is drained first
            return
        try:
            length = int(request.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            request.close_connection = True
            request.reply(400, b"a JSON body with a Content-Length is required", "text/plain")
            return
        text = request.read_body(length).decode("utf-8", errors="replace")
        head = _claimed_head(text)  # echoed in a refusal; only a verified head is acted on
        try:
            head, body = self._verified(text, function)
            self._delay(function)
            with self._lock:
                self.stats.calls[function] += 1
                answer = {"pay": self._pay, "payQuery": self._pay_query, "payCancel": self._pay_cancel,
                          "refund": self._refund}[function](body)
        except _Answer as done:
            answer = done
        reply = self._reply(function, head, answer)
        request.reply(200, reply, "application/json; charset=UTF-8")

    def _verified(self, text: str, function: str) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            doc = json.loads(text)
            client_id = str(doc["request"]["head"]["clientId"])
            sign_type: SignType = "RSA" if doc["request"]["head"].get("signType") == "RSA" else "RSA2"
        except (ValueError, KeyError, TypeError):
            raise _fail(PARAM_ILLEGAL, "not a signed request envelope") from None
        with self._lock:
            known = self.clients.get(client_id)
        if known is None:
            raise _fail(ACCESS_DENIED, "unknown clientId")
        try:
            fields = parse_response(text, known[0], member="request", sign_type=sign_type)
        except PayResponseError:
            with self._lock:
                self.stats.bad_signatures += 1
            raise _fail(INVALID_SIGNATURE, "the request signature does not verify") from None
        head, body = fields["head"], fields["body"]
        if head.get("function") != FUNCTIONS[function].name:
            raise _fail(PARAM_ILLEGAL, f"head.function must be {FUNCTIONS[function].name} at this path")
        if body.get("merchantId") not in known[1]:
            raise _fail(ACCESS_DENIED, "merchantId is not this client's")
        return head, body

    def _delay(self, function: str) -> None:
        with self._lock:
            wait = function in self.faults.latency_functions and self.faults.latency_calls > 0
            if wait:
                self.faults.latency_calls -= 1
        if wait:
            time_mod.sleep(self.faults.latency)

    def _reply(self, function: str, head: Mapping[str, Any], answer: _Answer) -> bytes:
        info = {"resultStatus": answer.status, "resultCodeId": _CODE_IDS.get(answer.code, "00000001"),
                "resultCode": answer.code, "resultMsg": answer.message or answer.code}
        response = {"head": {"version": head.get("version", "2.0.0"), "function": FUNCTIONS[function].name,
                             "clientId": head.get("clientId", ""),
                             "respTime": self.clock.now().astimezone(UTC8).isoformat(timespec="seconds"),
                             "reqMsgId": head.get("reqMsgId", "")},
                    "body": {"resultInfo": info, **answer.extra}}
        text = json.dumps(response, ensure_ascii=False, separators=(",", ":"))
        signature = sign(text, self._alipay_key, "RSA" if head.get("signType") == "RSA" else "RSA2")
        with self._lock:
            self.stats.answers[f"{function} {answer.status} {answer.code}"] += 1
            if self.faults.broken_signature > 0:
                self.faults.broken_signature -= 1
                signature = signature[:-8] + ("A" * 8 if not signature.endswith("A" * 8) else "B" * 8)
        return ('{"response":' + text + ',"signature":' + json.dumps(signature) + "}").encode("utf-8")

    # -- the four functions (called under the lock) ---------------------------------------------

    def _pay(self, body: Mapping[str, Any]) -> _Answer:
        merchant_id, trans_id = str(body["merchantId"]), str(body.get("merchantTransId") or "")
        amount, currency = _money((body.get("order") or {}).get("orderAmount"))
        identity_code, title = str(body.get("identityCode") or ""), str((body.get("order") or {}).get("orderTitle", ""))
        if not trans_id or not identity_code:
            return _fail(PARAM_ILLEGAL, "merchantTransId and identityCode are required")
        faults = self.faults
        if faults.pay_lost > 0:
            faults.pay_lost -= 1
            return _Answer("U", UNKNOWN_EXCEPTION, "lost inside the provider")
        known = self.payments.get((merchant_id, trans_id))
        if known is not None:
            if known.status == "CLOSED":
                return _fail(ORDER_STATUS_INVALID, "this merchantTransId was cancelled")
            if (known.amount, known.currency, known.identity_code) != (amount, currency, identity_code):
                return _fail(REPEAT_REQ_INCONSISTENT, "same merchantTransId, different amount or buyer")
            return self._pay_answer(known)  # 10.4: the real status of the transaction
        now = self.clock.now()
        if faults.pay_fail > 0:
            faults.pay_fail -= 1
            payment = GatewayPayment(merchant_id, trans_id, None, amount, currency, identity_code, title, "FAIL",
                                     faults.pay_fail_code, now)
            self.payments[(merchant_id, trans_id)] = payment
            return self._pay_answer(payment)
        payment = GatewayPayment(merchant_id, trans_id, _new_id(now), amount, currency, identity_code, title,
                                 "SUCCESS", "SUCCESS", now)
        self.payments[(merchant_id, trans_id)] = payment
        assert payment.acquirement_id is not None
        self._by_acquirement[payment.acquirement_id] = payment
        self.stats.charges[(merchant_id, trans_id)] += 1
        if faults.pay_unknown > 0:
            faults.pay_unknown -= 1
            return _Answer("U", UNKNOWN_EXCEPTION, "the result is unknown", **self._named(payment))
        return self._pay_answer(payment)

    def _pay_answer(self, payment: GatewayPayment) -> _Answer:
        if payment.status == "FAIL":
            return _fail(payment.result_code, "payment refused")
        if payment.status == "CANCELLED":
            return _fail(ORDER_STATUS_INVALID, "the payment was cancelled")
        return _Answer("S", "SUCCESS", "success", acquirementId=payment.acquirement_id,
                       merchantTransId=payment.merchant_trans_id,
                       paidTime=payment.created_at.astimezone(UTC8).isoformat(timespec="seconds"),
                       orderAmount={"currency": payment.currency, "value": str(payment.amount)})

    def _named(self, payment: GatewayPayment | None) -> dict[str, Any]:
        """The acquirementId a U answer carries under ``faults.unknown_names_payment``."""
        if self.faults.unknown_names_payment and payment is not None and payment.acquirement_id:
            return {"acquirementId": payment.acquirement_id}
        return {}

    def _find(self, body: Mapping[str, Any]) -> GatewayPayment | None:
        """acquirementId wins when both are given (10.2)."""
        merchant_id = str(body["merchantId"])
        if body.get("acquirementId"):
            payment = self._by_acquirement.get(str(body["acquirementId"]))
            return payment if payment is not None and payment.merchant_id == merchant_id else None
        if body.get("merchantTransId"):
            return self.payments.get((merchant_id, str(body["merchantTransId"])))
        raise _fail(PARAM_ILLEGAL, "acquirementId or merchantTransId is required")

    def _pay_query(self, body: Mapping[str, Any]) -> _Answer:
        payment = self._find(body)
        if self.faults.query_unknown > 0:
            self.faults.query_unknown -= 1
            return _Answer("U", UNKNOWN_EXCEPTION, "try again", **self._named(payment))
        if self.faults.order_not_exist > 0:
            self.faults.order_not_exist -= 1
            return _fail(ORDER_NOT_EXIST, "order not found")
        if payment is None:
            return _fail(ORDER_NOT_EXIST, "order not found")
        status = {"SUCCESS": "SUCCESS", "FAIL": "FAIL", "CLOSED": "CLOSED", "CANCELLED": "CANCELLED"}[payment.status]
        extra: dict[str, Any] = {"merchantTransId": payment.merchant_trans_id, "acquirementStatus": status,
                                 "orderAmount": {"currency": payment.currency, "value": str(payment.amount)}}
        if payment.acquirement_id:
            extra["acquirementId"] = payment.acquirement_id
        return _Answer("S", "SUCCESS", "success", **extra)

    def _pay_cancel(self, body: Mapping[str, Any]) -> _Answer:
        payment = self._find(body)
        if self.faults.cancel_unknown > 0:
            self.faults.cancel_unknown -= 1
            return _Answer("U", UNKNOWN_EXCEPTION, "try again", **self._named(payment))
        if self.faults.cancel_fail > 0:
            self.faults.cancel_fail -= 1
            return _fail(PROCESS_FAIL, "cancel refused")
        now = self.clock.now()
        if payment is None:
            trans_id = str(body.get("merchantTransId") or "")
            if not trans_id:  # an unknown acquirementId: nothing to close
                return _fail(ORDER_NOT_EXIST, "order not found")
            payment = GatewayPayment(str(body["merchantId"]), trans_id, None, 0, "", "", "", "CLOSED", "CLOSED", now,
                                     cancelled_at=now)
            self.payments[(payment.merchant_id, trans_id)] = payment
        elif payment.status == "SUCCESS":
            if payment.refunds:
                return _fail(ORDER_STATUS_INVALID, "a refunded payment cannot be cancelled")
            payment.status, payment.cancelled_at = "CANCELLED", now
        elif payment.status == "FAIL":
            payment.status, payment.cancelled_at = "CLOSED", now
        extra = {"merchantTransId": payment.merchant_trans_id}
        if payment.acquirement_id:
            extra["acquirementId"] = payment.acquirement_id
        return _Answer("S", "SUCCESS", "success", **extra)

    def _refund(self, body: Mapping[str, Any]) -> _Answer:
        amount, currency = _money(body.get("refundAmount"))
        refund_key = str(body.get("merchantRefundId") or "")
        payment = self._by_acquirement.get(str(body.get("acquirementId") or ""))
        if not refund_key:
            return _fail(PARAM_ILLEGAL, "merchantRefundId is required")
        if payment is None or payment.merchant_id != body["merchantId"]:
            return _fail(ORDER_NOT_EXIST, "order not found")
        known = payment.refunds.get(refund_key)
        if known is not None:
            if (known.amount, known.currency) != (amount, currency):
                return _fail(REPEAT_REQ_INCONSISTENT, "same merchantRefundId, different amount")
            return self._refund_answer(payment, known)
        if payment.status != "SUCCESS":
            return _fail(ORDER_STATUS_INVALID, f"the payment is {payment.status}")
        if currency != payment.currency:
            return _fail(PARAM_ILLEGAL, "the refund currency is not the payment's")
        if payment.refunded + amount > payment.amount:
            return _fail(REFUND_AMOUNT_EXCEED, "refunds would exceed the original amount")
        now = self.clock.now()
        refund = GatewayRefund(_new_id(now), refund_key, amount, currency, now)
        payment.refunds[refund_key] = refund
        if self.faults.refund_unknown > 0:
            self.faults.refund_unknown -= 1
            return _Answer("U", UNKNOWN_EXCEPTION, "the result is unknown")
        return self._refund_answer(payment, refund)

    @staticmethod
    def _refund_answer(payment: GatewayPayment, refund: GatewayRefund) -> _Answer:
        return _Answer("S", "SUCCESS", "success", acquirementId=payment.acquirement_id, refundId=refund.refund_id,
                       merchantRefundId=refund.merchant_refund_id,
                       refundAmount={"currency": refund.currency, "value": str(refund.amount)})


def _claimed_head(text: str) -> dict[str, Any]:
    try:
        head = json.loads(text)["request"]["head"]
    except (ValueError, KeyError, TypeError):
        return {}
    return head if isinstance(head, dict) else {}


def _money(value: Any) -> tuple[int, str]:
    """A Money object in minor units (10.2); anything else is PARAM_ILLEGAL."""
    if not isinstance(value, dict) or not isinstance(value.get("value"), str) or not value["value"].isdigit():
        raise _fail(PARAM_ILLEGAL, "an amount must be {currency, value} in minor units")
    currency = str(value.get("currency", ""))
    try:
        exponent(currency)
    except MoneyError:
        raise _fail(PARAM_ILLEGAL, "unknown currency") from None
    amount = int(value["value"])
    if amount <= 0:
        raise _fail(PARAM_ILLEGAL, "an amount must be positive")
    return amount, currency


def _new_id(now: datetime) -> str:
    """An id shaped like Alipay's (a date, then digits) [inferred]."""
    return now.astimezone(UTC8).strftime("%Y%m%d") + "".join(str(secrets.randbelow(10)) for _ in range(20))
