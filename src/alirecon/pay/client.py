"""The barcode (in-store) payment client: ``alipay.intl.acquiring.*`` pay, payQuery, payCancel and refund.

Why each choice (barcode.md section 10, issue 5):
- The envelope is ``{"request":{"head":…,"body":…},"signature":…}`` (10.1). The request object is serialised
  once; those exact UTF-8 bytes are signed and sent, never re-serialised (10.3 step 1 [inferred]).
- Signatures use the open-platform helpers (``sources.openapi.sign``/``verify_signature``): RSASSA-PKCS1-v1_5,
  SHA-256 for ``RSA2`` and SHA-1 for ``RSA`` (10.3 step 2 [inferred]: the pages say SHA1, RSA2 suggests SHA256;
  ``PayProfile.sign_type`` switches it). Responses are verified over the exact text of their ``response``
  object (10.3 step 4 [inferred: symmetric]); an unsigned or altered answer is refused, never used.
- Outcomes act on ``resultStatus`` first and ``resultCode`` second (10.6 [inferred]): ``S``, ``F`` or ``U``.
  A timeout, a network error or a refused answer is an unknown outcome (``U``): only a query settles it
  (10.5 step 1). ``reqMsgId`` is fresh per HTTP call (it is not an idempotency key, 10.1); the business keys
  are the caller's: ``merchantTransId`` for a payment, ``merchantRefundId`` for a refund (10.4), so a retry
  can only ever repeat them.
- A profile marked sandbox never sends to a production host, and the reverse (10.7 profile rule [inferred]).
- Secrets: the private key lives only in its key object; the buyer's payment code never shows in a repr,
  a log line or an exception.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from ..clock import UTC8
from ..config import PAY_PRODUCTION_HOSTS, PayConfig, PayProfile
from ..errors import AlireconError, ConfigError
from ..money import MoneyError, exponent
from ..sources.openapi import (
    extract_response_content,
    load_private_key,
    load_public_key,
    sign,
    verify_signature,
)

__all__ = [
    "ACCESS_DENIED",
    "CLIENT_TIMEOUT",
    "FUNCTIONS",
    "NETWORK_ERROR",
    "ORDER_NOT_EXIST",
    "ORDER_STATUS_INVALID",
    "PROCESS_FAIL",
    "REFUND_AMOUNT_EXCEED",
    "REPEAT_REQ_INCONSISTENT",
    "RESPONSE_REFUSED",
    "UNKNOWN_EXCEPTION",
    "ApiFunction",
    "PayClient",
    "PayConfigError",
    "PayError",
    "PayResponseError",
    "PayResult",
    "ResultStatus",
    "build_envelope",
    "money_field",
    "parse_response",
]

log = logging.getLogger("alirecon.pay")

ResultStatus = Literal["S", "F", "U"]


@dataclass(frozen=True)
class ApiFunction:
    """One function: its ``head.function`` name and its path under the profile's endpoint (10.1, 10.2)."""

    name: str
    path: str


FUNCTIONS: dict[str, ApiFunction] = {
    "pay": ApiFunction("alipay.intl.acquiring.offline.pay", "offline/pay.htm"),
    "payQuery": ApiFunction("alipay.intl.acquiring.offline.payQuery", "offline/payquery.htm"),
    "payCancel": ApiFunction("alipay.intl.acquiring.common.payCancel", "common/paycancel.htm"),
    "refund": ApiFunction("alipay.intl.acquiring.common.refund", "common/grefund.htm"),
}

# result codes (10.6: the AMS equivalents; the acquiring tables themselves were not reachable, gap 5)
ORDER_NOT_EXIST = "ORDER_NOT_EXIST"  # F; payQuery before its pay arrived (seed 004)
ORDER_STATUS_INVALID = "ORDER_STATUS_INVALID"  # F
UNKNOWN_EXCEPTION = "UNKNOWN_EXCEPTION"  # U
PROCESS_FAIL = "PROCESS_FAIL"  # F, AlipayHK cancel: general business failure, do not retry
ACCESS_DENIED = "ACCESS_DENIED"  # F
# same key, different amount: 10.4 says "an error" without its code; the AMS name is used [inferred]
REPEAT_REQ_INCONSISTENT = "REPEAT_REQ_INCONSISTENT"
REFUND_AMOUNT_EXCEED = "REFUND_AMOUNT_EXCEED"  # [inferred] refunds beyond the original (10.8 item 3)
# our own codes for outcomes no answer settled (never sent by Alipay)
CLIENT_TIMEOUT = "CLIENT_TIMEOUT"
NETWORK_ERROR = "NETWORK_ERROR"
RESPONSE_REFUSED = "RESPONSE_REFUSED"


class PayError(AlireconError):
    """A payment call that could not be made or understood. Never holds a key or a payment code."""


class PayConfigError(ConfigError):
    """A profile that cannot be used: a key that does not load, or an endpoint of the other environment."""


class PayResponseError(PayError):
    """An answer that is not the protocol's signed JSON (altered, unsigned, another request's): never used."""


@dataclass(frozen=True)
class PayResult:
    """A typed outcome. ``status`` U covers Alipay's U and every answer we did not get or could not trust
    (``timed_out``, ``CLIENT_TIMEOUT``/``NETWORK_ERROR``/``RESPONSE_REFUSED``): the outcome is unknown."""

    function: str  # pay | payQuery | payCancel | refund
    status: ResultStatus
    code: str
    message: str = ""
    code_id: str | None = None
    body: Mapping[str, Any] = field(default_factory=dict)  # the verified response body
    req_msg_id: str | None = None
    timed_out: bool = False

    @property
    def acquirement_id(self) -> str | None:
        value = self.body.get("acquirementId")
        return str(value) if value else None

    @property
    def acquirement_status(self) -> str | None:
        """payQuery's state of the payment (``acquirementStatus`` [inferred]: 10.2 does not list the field)."""
        value = self.body.get("acquirementStatus")
        return str(value) if value else None

    @property
    def refund_id(self) -> str | None:
        value = self.body.get("refundId")
        return str(value) if value else None

    @property
    def unknown(self) -> bool:
        return self.status == "U"


def money_field(amount: int, currency: str) -> dict[str, str]:
    """A Money object: the value in the smallest currency unit, as a string (10.2: THB "239", USD 1.00 = "100").
    Amounts are exact ints; a bool, a float or a negative is refused."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise PayError(f"an amount must be a positive int of minor units, got {amount!r}")
    try:
        exponent(currency)
    except MoneyError as exc:
        raise PayError(f"currency {currency!r}: {exc}") from None
    return {"currency": currency, "value": str(amount)}


def build_envelope(head: Mapping[str, Any], body: Mapping[str, Any], key: rsa.RSAPrivateKey,
                   sign_type: Literal["RSA2", "RSA"] = "RSA2") -> tuple[bytes, str]:
    """The bytes to send and the request text they sign (10.3): serialised once, signed as is."""
    request_text = json.dumps({"head": dict(head), "body": dict(body)}, ensure_ascii=False, separators=(",", ":"))
    signature = sign(request_text, key, sign_type)
    envelope = '{"request":' + request_text + ',"signature":' + json.dumps(signature) + "}"
    return envelope.encode("utf-8"), request_text


def parse_response(text: str, alipay_key: rsa.RSAPublicKey, *, member: str = "response",
                   sign_type: Literal["RSA2", "RSA"] = "RSA2") -> dict[str, Any]:
    """The verified ``{"head":…,"body":…}`` of an answer (or, with ``member="request"``, of a request).
    Raises ``PayResponseError`` for anything unsigned, altered or not the protocol's JSON."""
    try:
        doc = json.loads(text)
        content = extract_response_content(text, member)
    except ValueError as exc:
        raise PayResponseError(f"the {member} is not the protocol's JSON ({exc})") from None
    if not isinstance(doc, dict) or content is None:
        raise PayResponseError(f"the message has no {member} object")
    signature = doc.get("signature")
    if not isinstance(signature, str) or not signature:
        raise PayResponseError(f"the {member} is not signed: refused")
    if not verify_signature(content, signature, alipay_key, sign_type):
        raise PayResponseError(f"the {member}'s signature does not verify: altered on the way, or the wrong public "
                               "key is configured; refused, nothing used")
    fields = json.loads(content)
    if not isinstance(fields, dict) or not isinstance(fields.get("head"), dict) \
            or not isinstance(fields.get("body"), dict):
        raise PayResponseError(f"the {member} lacks its head or body")
    return fields


def _read_key_source(file: Path | None, env: str | None, key_root: Path | None, setting: str) -> tuple[bytes, str]:
    if file is not None:
        path = key_root / file if key_root is not None and not file.is_absolute() else file
        try:
            return path.read_bytes(), f"{setting}_file {path}"
        except OSError as exc:
            raise PayConfigError(f"pay profile {setting}_file {path}: {exc.strerror or type(exc).__name__}") from None
    assert env is not None
    value = os.environ.get(env)
    if not value:
        raise PayConfigError(f"pay profile {setting}_env: the environment variable {env} is not set")
    return value.encode("utf-8"), f"{setting}_env {env}"


class PayClient:
    """One profile's client. ``now`` stamps ``reqTime`` (tests pass a simulated clock); ``http`` may be shared.

    Every method returns a ``PayResult`` and never raises for an outcome: a timeout, a network error or an
    answer that fails verification is ``U``. ``PayError`` is raised only for a call that cannot be built.
    """

    def __init__(self, profile: PayProfile, *, production_hosts: Sequence[str] = PAY_PRODUCTION_HOSTS,
                 key_root: Path | None = None, http: httpx.Client | None = None,
                 now: Callable[[], datetime] | None = None) -> None:
        self.profile = profile
        self.production_hosts = tuple(h.lower() for h in production_hosts)
        self._check_environment()
        self._now = now or (lambda: datetime.now(UTC))
        data, where = _read_key_source(profile.private_key_file, profile.private_key_env, key_root, "private_key")
        try:
            self._private_key = load_private_key(data, what=f"pay profile {where}")
            if profile.alipay_public_key is not None:
                self._alipay_key = load_public_key(profile.alipay_public_key, what="pay profile alipay_public_key")
            else:
                public, where = _read_key_source(profile.alipay_public_key_file, None, key_root, "alipay_public_key")
                self._alipay_key = load_public_key(public, what=f"pay profile {where}")
        except PayConfigError:
            raise
        except ConfigError as exc:
            raise PayConfigError(str(exc)) from None
        self._own_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=profile.timeout)

    @classmethod
    def from_config(cls, config: PayConfig, **kwargs: Any) -> PayClient:
        """The client of the active profile (``pay.active``: the one switch of 10.7)."""
        return cls(config.profile(), production_hosts=config.production_hosts, **kwargs)

    def __repr__(self) -> str:
        p = self.profile
        return (f"PayClient(environment={p.environment!r}, client_id={p.client_id!r}, merchant_id={p.merchant_id!r}, "
                f"endpoint={p.endpoint!r})")

    def __enter__(self) -> PayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    @property
    def merchant_id(self) -> str:
        return self.profile.merchant_id

    def _check_environment(self) -> None:
        """10.7 [inferred]: a sandbox profile must not reach production, nor a production profile a sandbox."""
        host = (urlsplit(self.profile.endpoint).hostname or "").lower()
        production = host in self.production_hosts
        if self.profile.environment == "sandbox" and production:
            raise PayConfigError(f"a pay profile marked sandbox points at the production host {host}: refused "
                                 "(switch pay.active, or fix the sandbox endpoint)")
        if self.profile.environment == "production" and not production:
            raise PayConfigError(f"a pay profile marked production points at {host}, not a production host "
                                 f"({', '.join(self.production_hosts)}): refused")

    # -- the four functions --------------------------------------------------------------------------

    def pay(self, merchant_trans_id: str, amount: int, currency: str, identity_code: str, *, order_title: str,
            code_type: str = "BARCODE", extra: Mapping[str, Any] | None = None) -> PayResult:
        """``offline.pay`` (10.2). Retries must repeat ``merchant_trans_id`` (10.4); this method never invents one."""
        _check_id(merchant_trans_id, "merchantTransId")
        body: dict[str, Any] = {"merchantId": self.merchant_id, "productCode": "OFFLINE_PAY",
                                "merchantTransId": merchant_trans_id, "codeType": code_type,
                                "identityCode": identity_code,
                                "order": {"orderAmount": money_field(amount, currency), "orderTitle": order_title}}
        body.update(extra or {})
        return self.call("pay", body)

    def pay_query(self, merchant_trans_id: str | None = None, acquirement_id: str | None = None) -> PayResult:
        """``offline.payQuery``: by ``acquirementId`` or ``merchantTransId`` (the former wins, 10.2)."""
        return self.call("payQuery", self._payment_key(merchant_trans_id, acquirement_id))

    def pay_cancel(self, merchant_trans_id: str | None = None, acquirement_id: str | None = None) -> PayResult:
        """``common.payCancel`` for a pay without a clear result (10.2); repeating it is safe."""
        return self.call("payCancel", self._payment_key(merchant_trans_id, acquirement_id))

    def refund(self, acquirement_id: str, merchant_refund_id: str, amount: int, currency: str, *,
               reason: str | None = None) -> PayResult:
        """``common.refund``: partial refunds while their total <= the original (10.2). Retries must repeat
        ``merchant_refund_id`` (10.4)."""
        _check_id(acquirement_id, "acquirementId")
        _check_id(merchant_refund_id, "merchantRefundId")
        body: dict[str, Any] = {"merchantId": self.merchant_id, "acquirementId": acquirement_id,
                                "merchantRefundId": merchant_refund_id, "refundAmount": money_field(amount, currency)}
        if reason:
            body["refundReason"] = reason
        return self.call("refund", body)

    def _payment_key(self, merchant_trans_id: str | None, acquirement_id: str | None) -> dict[str, Any]:
        if not merchant_trans_id and not acquirement_id:
            raise PayError("give merchantTransId or acquirementId")
        body: dict[str, Any] = {"merchantId": self.merchant_id}
        if acquirement_id:
            body["acquirementId"] = acquirement_id
        if merchant_trans_id:
            body["merchantTransId"] = merchant_trans_id
        return body

    # -- the transport -------------------------------------------------------------------------------

    def head(self, function: str, req_msg_id: str) -> dict[str, str]:
        p = self.profile
        return {"version": p.version, "function": FUNCTIONS[function].name, "clientId": p.client_id,
                "reqTime": self._now().astimezone(UTC8).isoformat(timespec="seconds"), "reqMsgId": req_msg_id,
                "reserve": "{}", "signType": p.sign_type}

    def call(self, function: str, body: Mapping[str, Any]) -> PayResult:
        """Sign, send and read one call; every failure to learn the outcome is a ``U`` result."""
        self._check_environment()
        req_msg_id = uuid.uuid4().hex
        content, _ = build_envelope(self.head(function, req_msg_id), body, self._private_key, self.profile.sign_type)
        url = f"{self.profile.endpoint}/{FUNCTIONS[function].path}"
        try:
            response = self._http.post(url, content=content,
                                       headers={"Content-Type": "application/json; charset=UTF-8"},
                                       timeout=self.profile.timeout)
        except httpx.TimeoutException as exc:
            log.info("pay %s %s: timed out (%s)", function, req_msg_id, type(exc).__name__)
            return PayResult(function, "U", CLIENT_TIMEOUT, f"no answer within {self.profile.timeout:g} s",
                             req_msg_id=req_msg_id, timed_out=True)
        except httpx.TransportError as exc:
            log.info("pay %s %s: %s", function, req_msg_id, type(exc).__name__)
            return PayResult(function, "U", NETWORK_ERROR, type(exc).__name__, req_msg_id=req_msg_id)
        if response.status_code != 200:
            return PayResult(function, "U", NETWORK_ERROR, f"HTTP {response.status_code}", req_msg_id=req_msg_id)
        try:
            fields = parse_response(response.content.decode("utf-8"), self._alipay_key,
                                    sign_type=self.profile.sign_type)
            if fields["head"].get("reqMsgId") not in (None, req_msg_id) \
                    or fields["head"].get("function") not in (None, FUNCTIONS[function].name):
                raise PayResponseError("the answer is for another request (reqMsgId or function differs)")
        except (PayResponseError, UnicodeDecodeError) as exc:
            log.warning("pay %s %s: answer refused: %s", function, req_msg_id, exc)
            return PayResult(function, "U", RESPONSE_REFUSED, str(exc), req_msg_id=req_msg_id)
        return _result(function, fields["body"], req_msg_id)


def _check_id(value: str, name: str) -> None:
    if not value or len(value) > 64:
        raise PayError(f"{name} must be 1-64 characters (barcode.md 10.2)")


def _result(function: str, body: Mapping[str, Any], req_msg_id: str) -> PayResult:
    info = body.get("resultInfo")
    if not isinstance(info, dict):
        return PayResult(function, "U", RESPONSE_REFUSED, "the answer has no resultInfo", body=body,
                         req_msg_id=req_msg_id)
    status = info.get("resultStatus")
    code = str(info.get("resultCode") or "")
    if status not in ("S", "F", "U"):  # 10.6 rule: an unrecognised status is not a known outcome
        return PayResult(function, "U", code or RESPONSE_REFUSED, f"resultStatus {status!r}", body=body,
                         req_msg_id=req_msg_id)
    return PayResult(function, status, code, str(info.get("resultMsg") or ""),
                     str(info["resultCodeId"]) if info.get("resultCodeId") else None, body, req_msg_id)
