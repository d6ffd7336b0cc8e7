"""Alipay China's open platform: ``alipay.data.dataservice.bill.downloadurl.query`` and the bill download.

Why each choice (alipay-cn.md sections 2 and 3, issue 4):
- Requests are signed exactly as the official SDKs sign them (3.1): every non-empty parameter but ``sign``,
  sorted by key, joined raw as ``k=v&...``, encoded in the request charset, RSASSA-PKCS1-v1_5 with SHA-256
  (RSA2) or SHA-1 (RSA), standard Base64. The Java SDK's transport is used (2.1): protocol parameters in
  the query string, ``biz_content`` and ``app_auth_token`` in a form body.
- A response is verified byte for byte as received (3.2): the signed text is the raw value of the
  ``<method>_response`` member, found by a string-aware walk of the top-level object (never by
  re-serialising), retried once with ``\\/`` unescaped as the Java SDK does. The fields we use are parsed
  from that verified text only. A signed response that fails verification, or a success without a
  signature, is rejected (``ResponseSignatureError``) and never used; unsigned error responses are
  accepted as the SDK accepts them (3.2 step 5).
- Outcomes follow the spec's mapping table (2.5, [inferred]): "not yet / no data" and "period not closed"
  are ``BillPending`` results for the scheduler (not failures), rate limits / 20000 / network errors are
  retried with back-off (at least ``rate_limit_backoff``, one minute by default, for rate limits),
  permission and argument refusals are ``OpenApiConfigError`` naming the account and the parameter.
  The live sub_codes are uncertain (2.5, gap 3), so they are compared without their ``isp./isv./aop.``
  prefix and case, and both documented spellings (``INVAILID_ARGUMENTS``, ``UNKNOW_ERROR``) are known.
- The download URL is valid for 30 seconds (2.4): the bill is fetched at once; a URL whose own
  ``timestamp`` is already older than that, or that the download host answers with a 4xx (its real
  behaviour after expiry is unknown: gap 4), is replaced by a fresh one, a bounded number of times.
- Secrets: the private key and the app_auth_token come from a file or the environment, live only inside
  key objects and ``Secret`` wrappers, and are redacted from every gateway text we log or raise.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import random
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from ..clock import UTC8
from ..config import OpenApiConfig
from ..errors import AlireconError, ConfigError
from . import BadRemoteName, FetchError, check_remote_name

__all__ = [
    "EMPTY_DATA_WITH_BILL_FILE",
    "ERROR_NODE",
    "METHOD",
    "RESPONSE_NODE",
    "BadResponse",
    "BillDownload",
    "BillNotClosed",
    "BillNotReady",
    "BillPending",
    "BillPeriod",
    "DownloadExpired",
    "DownloadFailed",
    "DownloadUrl",
    "GatewayUnreachable",
    "OpenApiClient",
    "OpenApiConfigError",
    "OpenApiError",
    "RateLimited",
    "ResponseSignatureError",
    "Secret",
    "SignType",
    "TransientApiError",
    "VerifiedResponse",
    "extract_response_content",
    "fetch_bill",
    "load_private_key",
    "load_public_key",
    "redact_url",
    "response_node",
    "sign",
    "sign_content",
    "verify_response",
    "verify_signature",
]

log = logging.getLogger("alirecon.fetch")

METHOD = "alipay.data.dataservice.bill.downloadurl.query"
VERSION = "1.0"
FORMAT = "json"  # the SDKs send lower-case json (alipay-cn.md 2.2)
ERROR_NODE = "error_response"
EMPTY_DATA_WITH_BILL_FILE = "EMPTY_DATA_WITH_BILL_FILE"
SUCCESS = "10000"
USER_AGENT = "alirecon/0.1 (bill download)"  # [anecdote] the bill CDN may refuse default agents (2.4)
# parameters sent in the query string; the rest go in the form body (alipay-sdk-java-all, alipay-cn.md 2.1)
PROTOCOL_PARAMS = ("method", "version", "app_id", "sign_type", "charset", "timestamp", "format", "sign")

SignType = Literal["RSA2", "RSA"]
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"RSA2": hashes.SHA256, "RSA": hashes.SHA1}


def response_node(method: str = METHOD) -> str:
    """The member holding a method's response: dots become underscores, plus ``_response`` (2.4)."""
    return method.replace(".", "_") + "_response"


RESPONSE_NODE = response_node()


class Secret:
    """A secret value (an app_auth_token) that never shows in a repr, a log line or an exception."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


# ---------------------------------------------------------------------------------------------
# Errors and outcomes


class OpenApiError(FetchError):
    """The gateway answered, but not with a usable bill URL. ``sub_msg`` is already free of secrets."""

    def __init__(self, message: str, *, account: str, bill_type: str | None = None, bill_date: str | None = None,
                 code: str | None = None, sub_code: str | None = None, msg: str | None = None,
                 sub_msg: str | None = None) -> None:
        self.account, self.bill_type, self.bill_date = account, bill_type, bill_date
        self.code, self.sub_code, self.msg, self.sub_msg = code, sub_code, msg, sub_msg
        super().__init__(message)


class TransientApiError(OpenApiError):
    """Worth asking again later: 20000, an unknown error, a 5xx, a body cut short."""


class RateLimited(TransientApiError):
    """SYSTEM_RATE_LIMIT / USER_RATE_LIMIT: "retry after one minute" (alipay-cn.md 2.5)."""


class GatewayUnreachable(TransientApiError):
    """The gateway could not be reached (connection, timeout) after every retry."""


class BadResponse(TransientApiError):
    """The answer is not the JSON the protocol describes (no response node, not JSON, duplicate keys)."""


class ResponseSignatureError(OpenApiError):
    """A response whose signature does not verify with Alipay's public key: forged, altered, or the wrong
    key configured. Never used."""


class DownloadFailed(FetchError):
    """The bill could not be downloaded (too large, a server error on every fresh URL)."""


class DownloadExpired(DownloadFailed):
    """Every fresh download URL had expired (or was refused) before its bill could be read."""


class OpenApiConfigError(ConfigError):
    """A refusal that only a change of configuration can cure (alipay-cn.md 2.5: 20001, 40001, 40002, 40006,
    TYPE_NOT_SUPPORTED, BILL_DATE_BEFORE_REGISTRATION), or a local setting that cannot be used. Names the
    account and the parameter; never a secret."""

    def __init__(self, message: str, *, account: str, parameter: str, code: str | None = None,
                 sub_code: str | None = None) -> None:
        self.account, self.parameter, self.code, self.sub_code = account, parameter, code, sub_code
        super().__init__(message)


class BillPending(AlireconError):
    """Nothing to download yet: not a failure. The caller's scheduler asks again later."""

    reason: ClassVar[str] = "pending"

    def __init__(self, message: str, *, account: str, bill_type: str, bill_date: str, code: str | None = None,
                 sub_code: str | None = None, expected_by: datetime | None = None) -> None:
        self.account, self.bill_type, self.bill_date = account, bill_type, bill_date
        self.code, self.sub_code, self.expected_by = code, sub_code, expected_by
        super().__init__(message)


class BillNotReady(BillPending):
    """isp.bill_not_exist / BILL_NOT_EXIST / NO_BILL_DATA: the bill is not generated yet, or there is no data.
    ``past_due``: the expected availability time plus the grace has passed, so the spec's mapping (2.5)
    says to treat the period as a day without data and record it."""

    reason = "not_ready"

    def __init__(self, message: str, *, past_due: bool, **kwargs: Any) -> None:
        self.past_due = past_due
        super().__init__(message, **kwargs)


class BillNotClosed(BillPending):
    """The day or month is not over yet (or not yet generated, for a month): ``isv.invalid_arguments`` for an
    open period (2.5), or refused locally before asking."""

    reason = "not_closed"


# ---------------------------------------------------------------------------------------------
# Keys


def _key_bytes(data: bytes | str) -> bytes:
    return (data.encode("utf-8") if isinstance(data, str) else bytes(data)).strip()


def load_private_key(data: bytes | str, *, what: str = "private key") -> rsa.RSAPrivateKey:
    """An RSA private key from PEM (``BEGIN RSA PRIVATE KEY`` = PKCS#1, ``BEGIN PRIVATE KEY`` = PKCS#8) or the
    bare Base64 of either DER form, as the Python SDK (PKCS#1) and the Java SDK (PKCS#8) accept (3.1).
    Errors say what was wrong and ``what`` (a file path or variable name), never the key."""
    raw = _key_bytes(data)
    if raw.startswith(b"-----BEGIN") and b"ENCRYPTED" in raw.split(b"\n", 1)[0] + raw[:200]:
        raise ConfigError(f"{what}: the private key is encrypted; give the decrypted key (kept in a file "
                          "readable only by this user, or in the environment)")
    try:
        if raw.startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(raw, password=None)
        else:
            key = serialization.load_der_private_key(base64.b64decode(b"".join(raw.split()), validate=True),
                                                     password=None)
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm):
        raise ConfigError(f"{what}: not an RSA private key in PEM (PKCS#1 or PKCS#8) or bare Base64 form") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{what}: not an RSA key (Alipay signs with RSA only)")
    return key


def load_public_key(data: bytes | str, *, what: str = "public key") -> rsa.RSAPublicKey:
    """An RSA public key from PEM (``BEGIN PUBLIC KEY``, or PKCS#1 ``BEGIN RSA PUBLIC KEY``) or bare Base64
    DER, the form Alipay's console shows (3.1: an X.509 SubjectPublicKeyInfo)."""
    raw = _key_bytes(data)
    try:
        if raw.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(raw)
        else:
            key = serialization.load_der_public_key(base64.b64decode(b"".join(raw.split()), validate=True))
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm):
        raise ConfigError(f"{what}: not an RSA public key in PEM or bare Base64 form") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError(f"{what}: not an RSA public key")
    return key


# ---------------------------------------------------------------------------------------------
# Signing (alipay-cn.md 3.1) and verification (3.2)


def sign_content(params: Mapping[str, str | None]) -> str:
    """The string to sign: non-empty parameters except ``sign``, sorted by key (byte order), ``k=v`` raw."""
    pairs = sorted(((k, v) for k, v in params.items() if k != "sign" and k and v), key=lambda kv: kv[0].encode())
    return "&".join(f"{k}={v}" for k, v in pairs)


def sign(content: str, key: rsa.RSAPrivateKey, sign_type: SignType = "RSA2", charset: str = "utf-8") -> str:
    """Base64 (standard alphabet, one line) of RSASSA-PKCS1-v1_5 over ``content`` in ``charset``."""
    signature = key.sign(content.encode(charset), padding.PKCS1v15(), _HASHES[sign_type]())
    return base64.b64encode(signature).decode("ascii")


def verify_signature(content: str, signature: str, key: rsa.RSAPublicKey, sign_type: SignType = "RSA2",
                     charset: str = "utf-8") -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, content.encode(charset), padding.PKCS1v15(), _HASHES[sign_type]())
    except (InvalidSignature, binascii.Error, ValueError, UnicodeEncodeError):
        return False
    return True


def _string_end(text: str, start: int) -> int:
    """Index just past the JSON string opening at ``start`` (a backslash always escapes the next char)."""
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
        elif ch == '"':
            return i + 1
        else:
            i += 1
    raise ValueError("a string is not closed")


def _value_end(text: str, start: int) -> int:
    """Index just past the JSON value at ``start``, skipping over strings while counting brackets."""
    if text[start] == '"':
        return _string_end(text, start)
    if text[start] not in "{[":
        i = start
        while i < len(text) and text[i] not in ",}] \t\r\n":
            i += 1
        return i
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == '"':
            i = _string_end(text, i)
            continue
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError("an object is not closed")


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def extract_response_content(body: str, node: str) -> str | None:
    """The raw text of the top-level member ``node``'s object value, exactly as received (3.2 steps 1-2):
    the signed content. None when the body has no such member; ``ValueError`` when it is not a JSON object."""
    i = _skip_ws(body, 0)
    if i >= len(body) or body[i] != "{":
        raise ValueError("the body is not a JSON object")
    i += 1
    wanted = f'"{node}"'
    while True:
        i = _skip_ws(body, i)
        if i >= len(body):
            raise ValueError("the body ends inside its object")
        if body[i] == "}":
            return None
        if body[i] != '"':
            raise ValueError(f"a member name was expected at offset {i}")
        key_end = _string_end(body, i)
        key = body[i:key_end]
        i = _skip_ws(body, key_end)
        if i >= len(body) or body[i] != ":":
            raise ValueError(f"':' was expected at offset {i}")
        i = _skip_ws(body, i + 1)
        if i >= len(body):
            raise ValueError("the body ends before a value")
        end = _value_end(body, i)
        if key == wanted and body[i] == "{":
            return body[i:end]
        i = _skip_ws(body, end)
        if i < len(body) and body[i] == ",":
            i += 1


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the member {key!r} appears twice")
        out[key] = value
    return out


@dataclass(frozen=True)
class VerifiedResponse:
    """A gateway answer whose ``content`` verified (or, unsigned, is an error the SDK accepts unverified)."""

    node: str  # the member the fields came from (the method's node or error_response)
    content: str  # the exact text that was verified
    fields: dict[str, Any]  # parsed from ``content`` only
    signed: bool
    unescaped_slashes: bool = False  # verified only after replacing \/ by / (3.2 step 4)

    @property
    def code(self) -> str:
        return str(self.fields.get("code", ""))


def verify_response(body: str, alipay_key: rsa.RSAPublicKey, *, sign_type: SignType = "RSA2",
                    charset: str = "utf-8", method: str = METHOD, account: str = "") -> VerifiedResponse:
    """Locate, verify and parse a gateway answer (3.2). Raises ``ResponseSignatureError`` for a signature that
    does not verify (or a success without one), ``BadResponse`` for a body that is not the protocol's JSON."""
    try:
        doc = json.loads(body, object_pairs_hook=_unique_keys)
    except ValueError as exc:
        raise BadResponse(f"{account}: the gateway's answer is not JSON ({exc}): {body[:200]!r}",
                          account=account) from None
    if not isinstance(doc, dict):
        raise BadResponse(f"{account}: the gateway's answer is not a JSON object", account=account)
    node = response_node(method)
    name = node if node in doc else ERROR_NODE if ERROR_NODE in doc else None
    if name is None:
        raise BadResponse(f"{account}: the answer has neither {node} nor {ERROR_NODE}", account=account)
    try:
        content = extract_response_content(body, name)
    except ValueError as exc:
        raise BadResponse(f"{account}: cannot locate {name} in the answer: {exc}", account=account) from None
    if content is None:
        raise BadResponse(f"{account}: {name} is not an object", account=account)
    fields = json.loads(content, object_pairs_hook=_unique_keys)
    signature = doc.get("sign")
    code = str(fields.get("code", ""))
    if signature is None or signature == "":
        if code == SUCCESS:
            raise ResponseSignatureError(f"{account}: a success response without a signature: rejected",
                                         account=account, code=code)
        return VerifiedResponse(name, content, fields, signed=False)
    if not isinstance(signature, str):
        raise BadResponse(f"{account}: the answer's sign is not a string", account=account)
    if verify_signature(content, signature, alipay_key, sign_type, charset):
        return VerifiedResponse(name, content, fields, signed=True)
    if "\\/" in content:
        unescaped = content.replace("\\/", "/")
        if verify_signature(unescaped, signature, alipay_key, sign_type, charset):
            return VerifiedResponse(name, content, fields, signed=True, unescaped_slashes=True)
    raise ResponseSignatureError(
        f"{account}: the response's signature does not verify with Alipay's public key (openapi.alipay_public_key"
        "[_file]): the answer was altered on the way, or the configured key is not Alipay's key for this app; "
        "rejected, nothing used", account=account, code=code, sub_code=fields.get("sub_code"))


# ---------------------------------------------------------------------------------------------
# Periods


_MONTH_RE = re.compile(r"([0-9]{4})-([0-9]{2})")
_DAY_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


@dataclass(frozen=True)
class BillPeriod:
    """A daily (``yyyy-MM-dd``) or monthly (``yyyy-MM``) bill date (alipay-cn.md 2.3), in UTC+8 days."""

    start: date
    monthly: bool

    @classmethod
    def parse(cls, value: date | str) -> BillPeriod:
        if isinstance(value, datetime):
            return cls(value.date(), False)
        if isinstance(value, date):
            return cls(value, False)
        if m := _DAY_RE.fullmatch(value):
            try:
                return cls(date(int(m[1]), int(m[2]), int(m[3])), False)
            except ValueError:
                pass
        elif (m := _MONTH_RE.fullmatch(value)) and 1 <= int(m[2]) <= 12:
            return cls(date(int(m[1]), int(m[2]), 1), True)
        raise ValueError(f"bill_date {value!r} is neither yyyy-MM-dd nor yyyy-MM")

    @classmethod
    def month(cls, year: int, month: int) -> BillPeriod:
        return cls(date(year, month, 1), True)

    @property
    def text(self) -> str:
        return self.start.strftime("%Y-%m") if self.monthly else self.start.isoformat()

    @property
    def compact(self) -> str:
        """``yyyyMMdd`` / ``yyyyMM``, as in the download URL's ``bizDates`` and the zip's name (2.4, 4)."""
        return self.start.strftime("%Y%m" if self.monthly else "%Y%m%d")

    @property
    def end(self) -> date:
        """The first day after the period."""
        if not self.monthly:
            return self.start + timedelta(days=1)
        return date(self.start.year + self.start.month // 12, self.start.month % 12 + 1, 1)

    @property
    def closes_at(self) -> datetime:
        return datetime.combine(self.end, datetime.min.time(), UTC8)

    def expected_by(self, cfg: OpenApiConfig) -> datetime:
        """When the bill should exist [inferred]: 09:00 the next day; the ``monthly_ready_day`` of the next
        month (alipay-cn.md 2.3: daily ready before 09:00, monthly on the 3rd; 1.1: by the 4th)."""
        day = self.end if not self.monthly else self.end.replace(day=cfg.monthly_ready_day)
        return datetime.combine(day, cfg.daily_ready_time, UTC8)


# ---------------------------------------------------------------------------------------------
# Outcome mapping (alipay-cn.md 2.5, "Client outcome mapping")


def _norm(sub_code: str | None) -> str:
    text = (sub_code or "").strip().lower()
    for prefix in ("isp.", "isv.", "aop."):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


_NOT_READY = {"bill_not_exist", "no_bill_data"}
_NOT_CLOSED = {"invalid_arguments", "invailid_arguments"}  # the documented spelling is INVAILID (sic)
_RATE_LIMITS = {"system_rate_limit", "user_rate_limit"}
_UNKNOWN = {"unknown_error", "unknow_error", "unknow-error", "unknown-error"}
# sub_code -> the setting or parameter to look at (documented codes of 2.5)
_PARAMETERS = {
    "missing-method": "method", "invalid-method": "method",
    "missing-app-id": "openapi.app_id", "invalid-app-id": "openapi.app_id",
    "missing-signature": "the private key (sign)", "missing-signature-key": "the private key (sign)",
    "invalid-signature": "the private key (it does not match the app public key registered for openapi.app_id)",
    "missing-signature-type": "openapi.sign_type", "invalid-signature-type": "openapi.sign_type",
    "missing-timestamp": "timestamp (this machine's clock)",
    "invalid-timestamp": "timestamp (this machine's clock)",
    "missing-version": "version", "invalid-charset": "openapi.charset", "invalid-format": "format",
    "invalid-parameter": "biz_content", "invalid-encrypt": "biz_content",
    "type_not_supported": "bill_type (openapi.bill_types)",
    "bill_date_before_registration": "bill_date",
    "insufficient-isv-permissions": "openapi.app_id (the app lacks this API or bill type)",
    "insufficient-user-permissions": "openapi.app_auth_token_env (the authorising account lacks this API)",
}
_CONFIG_CODES = {"20001", "40001", "40002", "40006"}


@dataclass(frozen=True, repr=False)
class DownloadUrl:
    """A verified download URL. ``url`` holds the one-time token: use ``redacted`` to show it."""

    url: str
    bill_file_code: str | None
    received_at: datetime  # our clock, when the answer arrived
    url_timestamp: datetime | None  # the URL's own ``timestamp`` (the bill host's clock), when present

    @property
    def redacted(self) -> str:
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"DownloadUrl({self.redacted!r}, bill_file_code={self.bill_file_code!r})"


def redact_url(url: str) -> str:
    """``url`` without its ``token`` parameter (the rest kept byte for byte)."""
    base, sep, query = url.partition("?")
    if not sep:
        return url
    query, hash_sep, fragment = query.partition("#")
    kept = [part for part in query.split("&") if part.split("=", 1)[0] != "token"]
    return base + ("?" + "&".join(kept) if kept else "") + hash_sep + fragment


class _RedactUrlTokens(logging.Filter):
    """httpx logs every request URL at INFO: the bill URL's one-time token must not reach the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any("token=" in str(a) for a in record.args):
            record.args = tuple(redact_url(str(a)) if "token=" in str(a) else a for a in record.args)
        return True


if not any(isinstance(f, _RedactUrlTokens) for f in logging.getLogger("httpx").filters):
    logging.getLogger("httpx").addFilter(_RedactUrlTokens())


def _url_timestamp(url: str) -> datetime | None:
    values = parse_qs(urlsplit(url).query).get("timestamp")
    if not values or not values[0].isdigit():
        return None
    seconds = int(values[0])
    if seconds > 10**11:  # milliseconds
        seconds //= 1000
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(frozen=True, repr=False)
class BillDownload:
    """A downloaded bill zip, exactly as received, with what is known about it.

    ``empty``: the gateway said EMPTY_DATA_WITH_BILL_FILE (a valid day without business). If it gave no URL
    for the empty file, ``data`` is ``b""`` and ``url`` is None.
    """

    account: str
    bill_type: str
    bill_date: str  # yyyy-MM-dd or yyyy-MM
    data: bytes
    sha256: str
    file_name: str  # from downloadFileName when it is a plain name, else <bill_type>_<date>.csv.zip
    url: str | None  # the download URL without its token
    bill_file_code: str | None
    downloaded_at: datetime
    urls_requested: int  # 1, or more when a URL expired and a fresh one was asked for

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def empty(self) -> bool:
        return self.bill_file_code == EMPTY_DATA_WITH_BILL_FILE

    def __repr__(self) -> str:
        return (f"BillDownload({self.account!r}, {self.bill_type!r}, {self.bill_date!r}, {self.file_name!r}, "
                f"size={self.size}, sha256={self.sha256[:12]}..., empty={self.empty})")


class _UrlUnusable(Exception):
    """This URL cannot give the bill (expired, refused, cut): ask for a fresh one."""


def _file_name(url: str, bill_type: str, period: BillPeriod) -> str:
    names = parse_qs(urlsplit(url).query).get("downloadFileName")
    if names:
        try:
            return check_remote_name(names[0], "downloadFileName")
        except BadRemoteName as exc:
            log.warning("%s", exc)
    return f"{bill_type}_{period.compact}.csv.zip"


class OpenApiClient:
    """One account's open-platform client: signs queries, verifies answers, downloads bills.

    ``now`` is the clock for request timestamps, the URL age and whether a period is closed (tests and the
    sandbox pass the simulated clock); ``sleep`` is how back-off waits (tests pass a recorder).
    """

    def __init__(self, config: OpenApiConfig, *, account: str, key_root: Path | None = None,
                 http: httpx.Client | None = None, now: Callable[[], datetime] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.account = account
        self._key_root = key_root
        self._now = now or (lambda: datetime.now(UTC))
        self._sleep = sleep
        self._private_key = self._load_private_key()
        self._alipay_key = self._load_alipay_key()
        self._app_auth_token = self._load_token()
        self._own_http = http is None
        self._http = http if http is not None else self._new_http()

    def __repr__(self) -> str:
        cfg = self.config
        return f"OpenApiClient(account={self.account!r}, app_id={cfg.app_id!r}, gateway={cfg.gateway!r})"

    def __enter__(self) -> OpenApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    # -- settings ------------------------------------------------------------------------------------

    def _config_error(self, message: str, parameter: str, **kwargs: Any) -> OpenApiConfigError:
        return OpenApiConfigError(f"account {self.account}: {message}", account=self.account, parameter=parameter,
                                  **kwargs)

    def _path(self, path: Path) -> Path:
        return self._key_root / path if not path.is_absolute() and self._key_root is not None else path

    def _read_secret_source(self, file: Path | None, env: str | None, setting: str) -> tuple[bytes, str]:
        if file is not None:
            path = self._path(file)
            try:
                return path.read_bytes(), f"{setting}_file {path}"
            except OSError as exc:
                raise self._config_error(f"openapi.{setting}_file {path}: {exc.strerror or type(exc).__name__}",
                                         f"openapi.{setting}_file") from None
        assert env is not None
        value = os.environ.get(env)
        if not value:
            raise self._config_error(f"openapi.{setting}_env: the environment variable {env} is not set",
                                     f"openapi.{setting}_env")
        return value.encode("utf-8"), f"{setting}_env {env}"

    def _load_private_key(self) -> rsa.RSAPrivateKey:
        cfg = self.config
        data, where = self._read_secret_source(cfg.private_key_file, cfg.private_key_env, "private_key")
        try:
            return load_private_key(data, what=f"account {self.account}: openapi.{where}")
        except ConfigError as exc:
            raise OpenApiConfigError(str(exc), account=self.account, parameter=f"openapi.{where.split()[0]}") from None

    def _load_alipay_key(self) -> rsa.RSAPublicKey:
        cfg = self.config
        if cfg.alipay_public_key_file is not None:
            path = self._path(cfg.alipay_public_key_file)
            parameter = "openapi.alipay_public_key_file"
            try:
                data: bytes | str = path.read_bytes()
            except OSError as exc:
                raise self._config_error(f"{parameter} {path}: {exc.strerror or type(exc).__name__}",
                                         parameter) from None
        else:
            assert cfg.alipay_public_key is not None
            data, parameter = cfg.alipay_public_key, "openapi.alipay_public_key"
        try:
            return load_public_key(data, what=f"account {self.account}: {parameter}")
        except ConfigError as exc:
            raise OpenApiConfigError(str(exc), account=self.account, parameter=parameter) from None

    def _load_token(self) -> Secret | None:
        env = self.config.app_auth_token_env
        if env is None:
            return None
        value = os.environ.get(env)
        if not value:
            raise self._config_error(f"openapi.app_auth_token_env: the environment variable {env} is not set",
                                     "openapi.app_auth_token_env")
        return Secret(value)

    def _new_http(self) -> httpx.Client:
        cfg = self.config
        verify: Any = cfg.verify
        if cfg.verify and cfg.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(self._path(cfg.ca_file)))
        return httpx.Client(timeout=cfg.timeout, verify=verify, headers={"User-Agent": USER_AGENT},
                            follow_redirects=True)

    def _redact(self, text: str) -> str:
        if self._app_auth_token is not None and self._app_auth_token.reveal():
            text = text.replace(self._app_auth_token.reveal(), "***")
        return text

    # -- the request ---------------------------------------------------------------------------------

    def biz_content(self, bill_type: str, period: BillPeriod) -> str:
        """The business parameters as the Python SDK writes them: sorted keys, no spaces, non-ASCII kept."""
        biz: dict[str, str] = {"bill_type": bill_type, "bill_date": period.text}
        if self.config.smid:
            biz["smid"] = self.config.smid
        if self.config.secure:
            biz["secure"] = "true"
        return json.dumps(biz, ensure_ascii=False, sort_keys=True, separators=(",", ":"))

    def signed_params(self, bill_type: str, period: BillPeriod, *, timestamp: datetime | None = None
                      ) -> dict[str, str]:
        """Every request parameter, ``sign`` included. The timestamp is Beijing time (alipay-cn.md 2.2)."""
        cfg = self.config
        when = (timestamp or self._now()).astimezone(UTC8)
        params = {
            "app_id": cfg.app_id,
            "method": METHOD,
            "format": FORMAT,
            "charset": cfg.charset,
            "sign_type": cfg.sign_type,
            "timestamp": when.strftime("%Y-%m-%d %H:%M:%S"),
            "version": VERSION,
            "biz_content": self.biz_content(bill_type, period),
        }
        if self._app_auth_token is not None:
            params["app_auth_token"] = self._app_auth_token.reveal()
        params["sign"] = sign(sign_content(params), self._private_key, cfg.sign_type, cfg.charset)
        return params

    def _post(self, params: Mapping[str, str]) -> httpx.Response:
        cfg = self.config
        query = {k: v for k, v in params.items() if k in PROTOCOL_PARAMS}
        body = {k: v for k, v in params.items() if k not in PROTOCOL_PARAMS}
        separator = "&" if "?" in cfg.gateway else "?"
        url = cfg.gateway + separator + urlencode(query, encoding=cfg.charset)
        content = urlencode(body, encoding=cfg.charset).encode("ascii")
        headers = {"Content-Type": f"application/x-www-form-urlencoded;charset={cfg.charset}"}
        return self._http.post(url, content=content, headers=headers)

    def _query_once(self, bill_type: str, period: BillPeriod) -> DownloadUrl:
        cfg = self.config
        response = self._post(self.signed_params(bill_type, period))
        who = dict(account=self.account, bill_type=bill_type, bill_date=period.text)
        if response.status_code == 429:
            raise RateLimited(f"account {self.account}: the gateway answered HTTP 429", **who)
        if response.status_code >= 500:
            raise TransientApiError(f"account {self.account}: the gateway answered HTTP {response.status_code}",
                                    **who)
        if response.status_code != 200:
            raise OpenApiError(f"account {self.account}: the gateway answered HTTP {response.status_code} at "
                               f"{cfg.gateway} (openapi.gateway)", **who)
        charset = response.charset_encoding or cfg.charset
        try:
            body = response.content.decode(charset)
        except (UnicodeDecodeError, LookupError):
            raise BadResponse(f"account {self.account}: the gateway's answer is not {charset} text", **who) from None
        verified = verify_response(body, self._alipay_key, sign_type=cfg.sign_type, charset=cfg.charset,
                                   account=f"account {self.account}")
        return self._outcome(verified, bill_type, period)

    def _outcome(self, verified: VerifiedResponse, bill_type: str, period: BillPeriod) -> DownloadUrl:
        """The spec's outcome table (2.5): a URL, or the typed outcome for the code."""
        fields = verified.fields
        code = str(fields.get("code", ""))
        sub_code = str(fields["sub_code"]) if fields.get("sub_code") else None
        msg = self._redact(str(fields.get("msg", "")))
        sub_msg = self._redact(str(fields.get("sub_msg", ""))) or None
        now = self._now()
        if code == SUCCESS and not sub_code:
            url = fields.get("bill_download_url") or None
            bill_file_code = fields.get("bill_file_code") or None
            if url is None and bill_file_code != EMPTY_DATA_WITH_BILL_FILE:
                raise BadResponse(f"account {self.account}: a success without bill_download_url",
                                  account=self.account, bill_type=bill_type, bill_date=period.text, code=code)
            return DownloadUrl(str(url or ""), bill_file_code, now, _url_timestamp(str(url or "")))
        key = _norm(sub_code)
        said = f"{code} {sub_code or ''}: {msg}" + (f"; {sub_msg}" if sub_msg else "")
        who: dict[str, Any] = dict(account=self.account, bill_type=bill_type, bill_date=period.text, code=code,
                                   sub_code=sub_code)
        expected_by = period.expected_by(self.config)
        grace = timedelta(hours=self.config.no_bill_grace_hours)
        if key in _NOT_READY:
            past_due = now > expected_by + grace
            raise BillNotReady(f"account {self.account}: {bill_type} bill of {period.text} not available yet "
                               f"({said}){'; past due: treat as a day without data' if past_due else ''}",
                               past_due=past_due, expected_by=expected_by, **who)
        if key in _NOT_CLOSED and now < expected_by + grace:
            raise BillNotClosed(f"account {self.account}: {period.text} is not closed yet ({said})",
                                expected_by=expected_by, **who)
        if key in _RATE_LIMITS or code == "20000" or key in _UNKNOWN:
            kind = RateLimited if key in _RATE_LIMITS else TransientApiError
            raise kind(f"account {self.account}: {said}", msg=msg, sub_msg=sub_msg, **who)
        parameter = _PARAMETERS.get(key, _PARAMETERS.get(key.replace("_", "-")))
        if key in _NOT_CLOSED:
            parameter = "bill_date / bill_type / smid (biz_content)"
        elif code == "20001":
            parameter = "openapi.app_auth_token_env (app_auth_token)"
        if parameter is None and code in _CONFIG_CODES:
            parameter = {"40006": "openapi.app_id (permissions)"}.get(code, "the request's parameters")
        if parameter is not None:
            raise self._config_error(f"Alipay refused the request ({said}); check {parameter}", parameter,
                                     code=code, sub_code=sub_code)
        raise OpenApiError(f"account {self.account}: Alipay refused the request ({said})", msg=msg, sub_msg=sub_msg,
                           **who)

    # -- retries -------------------------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        cfg = self.config
        exc = state.outcome.exception() if state.outcome else None
        base = min(cfg.backoff_max, cfg.backoff_initial * 2.0 ** (state.attempt_number - 1))
        base += random.uniform(0, cfg.backoff_initial / 2)
        return max(cfg.rate_limit_backoff, base) if isinstance(exc, RateLimited) else base

    def query(self, bill_type: str, bill_date: date | str | BillPeriod) -> DownloadUrl:
        """One verified download URL (network errors, 5xx, 20000 and rate limits retried with back-off).
        Raises ``BillPending`` (not yet / not closed), ``OpenApiConfigError`` or an ``OpenApiError``."""
        period = bill_date if isinstance(bill_date, BillPeriod) else self._period(bill_date)
        now = self._now()
        if now < period.closes_at:
            raise BillNotClosed(f"account {self.account}: {period.text} is not over yet (it closes "
                                f"{period.closes_at.isoformat()}); no bill exists before then",
                                account=self.account, bill_type=bill_type, bill_date=period.text,
                                expected_by=period.expected_by(self.config))

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.info("account %s: %s %s %s: %s; retry %d of %d", self.account, METHOD, bill_type, period.text,
                     self._redact(f"{type(exc).__name__}: {exc}"), state.attempt_number, self.config.retries)

        retrying = Retrying(stop=stop_after_attempt(self.config.retries + 1), wait=self._wait, reraise=True,
                            retry=retry_if_exception(_transient), before_sleep=before_sleep, sleep=self._sleep)
        try:
            issued = retrying(self._query_once, bill_type, period)
        except httpx.TransportError as exc:
            raise GatewayUnreachable(f"account {self.account}: {self.config.gateway}: gave up after "
                                     f"{self.config.retries + 1} attempts: {type(exc).__name__}: {exc}",
                                     account=self.account, bill_type=bill_type, bill_date=period.text) from None
        log.info("account %s: %s %s %s -> %s", self.account, METHOD, bill_type, period.text,
                 issued.redacted or issued.bill_file_code)
        return issued

    def _period(self, bill_date: date | str) -> BillPeriod:
        try:
            return BillPeriod.parse(bill_date)
        except ValueError as exc:
            raise self._config_error(str(exc), "bill_date") from None

    # -- the download --------------------------------------------------------------------------------

    def _download(self, issued: DownloadUrl) -> bytes:
        cfg = self.config
        if issued.url_timestamp is not None:
            age = (self._now() - issued.url_timestamp).total_seconds()
            if age > cfg.url_validity_seconds:
                raise _UrlUnusable(f"the URL is {age:.0f} s old (valid {cfg.url_validity_seconds:g} s)")
        try:
            with self._http.stream("GET", issued.url, headers={"User-Agent": USER_AGENT}) as response:
                if 400 <= response.status_code < 500:
                    raise _UrlUnusable(f"the download host answered HTTP {response.status_code} (expired?)")
                if response.status_code != 200:
                    raise _UrlUnusable(f"the download host answered HTTP {response.status_code}")
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > cfg.max_download_bytes:
                        raise DownloadFailed(f"account {self.account}: {issued.redacted}: larger than "
                                             f"openapi.max_download_bytes ({cfg.max_download_bytes})")
                    chunks.append(chunk)
        except httpx.TransportError as exc:
            raise _UrlUnusable(f"{type(exc).__name__}: {exc}") from None
        data = b"".join(chunks)
        if not data.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # a zip's first record (or an empty zip)
            raise _UrlUnusable(f"the download is not a zip ({len(data)} bytes starting {data[:16]!r})")
        return data

    def fetch_bill(self, bill_type: str, bill_date: date | str | BillPeriod) -> BillDownload:
        """Query, then download at once; an expired or refused URL is replaced (``url_refreshes`` times)."""
        period = bill_date if isinstance(bill_date, BillPeriod) else self._period(bill_date)
        refreshes = 0
        while True:
            issued = self.query(bill_type, period)
            if not issued.url:  # EMPTY_DATA_WITH_BILL_FILE without a file
                return BillDownload(self.account, bill_type, period.text, b"", hashlib.sha256(b"").hexdigest(),
                                    f"{bill_type}_{period.compact}.csv.zip", None, issued.bill_file_code,
                                    self._now(), refreshes + 1)
            try:
                data = self._download(issued)
            except _UrlUnusable as why:
                if refreshes >= self.config.url_refreshes:
                    raise DownloadExpired(f"account {self.account}: {bill_type} {period.text}: {why}; gave up after "
                                          f"{refreshes + 1} download URLs") from None
                refreshes += 1
                log.info("account %s: %s %s: %s; asking for a fresh URL (%d of %d)", self.account, bill_type,
                         period.text, why, refreshes, self.config.url_refreshes)
                continue
            download = BillDownload(self.account, bill_type, period.text, data, hashlib.sha256(data).hexdigest(),
                                    _file_name(issued.url, bill_type, period), issued.redacted,
                                    issued.bill_file_code, self._now(), refreshes + 1)
            log.info("account %s: downloaded %s (%d bytes, sha256 %s)", self.account, download.file_name,
                     download.size, download.sha256)
            return download


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, TransientApiError | httpx.TransportError)


def fetch_bill(cfg: OpenApiConfig, account: str, bill_type: str, bill_date: date | str | BillPeriod, *,
               client: httpx.Client | None = None, now: Callable[[], datetime] | None = None,
               key_root: Path | None = None, sleep: Callable[[float], None] = time.sleep) -> BillDownload:
    """One bill of one account (``account`` is its name in messages): see ``OpenApiClient.fetch_bill``."""
    with OpenApiClient(cfg, account=account, key_root=key_root, http=client, now=now, sleep=sleep) as api:
        return api.fetch_bill(bill_type, bill_date)

