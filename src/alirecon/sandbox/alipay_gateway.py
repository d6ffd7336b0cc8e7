"""The sandbox's Alipay China open-platform gateway: a real HTTP server on loopback, on a simulated clock.

Why: the bill-download client must be tested against real HTTP, real RSA2 signatures both ways and real
time limits, without an Alipay account (DESIGN.md "Real parts"). This server implements the one method
``alipay.data.dataservice.bill.downloadurl.query`` per alipay-cn.md section 12 (itself [inferred] from the
SDKs and public gateway imitations) and serves the bill zips behind download URLs of section 2.4's shape:

- ``/gateway.do`` accepts GET and POST; query-string, url-encoded and multipart parameters are merged
  (2.1); file parts are never signed (3.1). A parameter given twice is refused (``isv.invalid-parameter``).
- Every common parameter is validated with the documented codes (2.5, 12.2); the request signature is
  rebuilt exactly as the client builds it (``sources.openapi.sign_content``) and checked with the public
  key registered for the ``app_id``; a bad one gets 40002 ``isv.invalid-signature`` with the literal
  ``sub_msg`` followed by the string the gateway built (2.5).
- Answers are signed with the gateway's own generated "Alipay" key pair over exactly the emitted response
  node text, with ``/`` written ``\\/`` as real answers do, ``sign`` last (3.2, 12.5). Protocol refusals
  (40001/40002/20001) are sent unsigned in ``error_response``; business answers are signed (3.2 step 5:
  the client must accept both) [inferred].
- Dates: today, the future, the current month and the previous month before its generation day are
  ``isv.invalid_arguments``; yesterday before ``daily_ready`` and days without a bill are
  ``isp.bill_not_exist`` (or, by setting, success with ``EMPTY_DATA_WITH_BILL_FILE``); unknown bill types
  ``TYPE_NOT_SUPPORTED``; dates before the account's registration ``BILL_DATE_BEFORE_REGISTRATION`` (2.3, 2.5).
- ``app_auth_token`` (ISV / main-account mode, 1.2): a token maps to the account that granted it, for one
  app; an unknown token is 20001 ``aop.invalid-app-auth-token``.
- Download URLs carry a random token and really expire ``url_validity`` (30 s) after issue on the simulated
  clock: then the host answers 403 (its real behaviour after expiry is unknown: gap 4). Their scheme is the
  server's own: https with ``tls=True`` (a throwaway certificate, ``ca_pem``), else http, whatever
  ``secure`` asks (one port serves one protocol; a simplification of 12.6).
- Faults (``GatewayFaults``, mutable while running): rate limits N times, 20000 N times, broken response
  signatures, slow downloads, URLs without their timestamp, and a hook run after each URL is issued (a test
  moves the clock there to expire the URL between the query and the download).

Bills come from a ``BillStore``: ``MemoryBillStore`` ({(pid or account20, bill_type, date): zip bytes}) or
``DirectoryBillStore`` (``<root>/<pid>/<bill_type>/<yyyyMMdd|yyyyMM>.csv.zip``).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import logging
import os
import re
import secrets
import ssl
import tempfile
import threading
import time as time_mod
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Protocol, Self
from urllib.parse import parse_qsl, quote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ..clock import UTC8
from ..sources.billzip import write_bill_zip
from ..sources.openapi import (
    EMPTY_DATA_WITH_BILL_FILE,
    ERROR_NODE,
    METHOD,
    RESPONSE_NODE,
    SignType,
    load_private_key,
    load_public_key,
    sign,
    sign_content,
    verify_signature,
)
from .clock import SimClock

__all__ = [
    "ACCOUNT_SUFFIX",
    "DOWNLOAD_PATH",
    "GATEWAY_PATH",
    "INVALID_SIGNATURE_SUB_MSG",
    "WORLD_APP_ID",
    "WORLD_APP_KEY",
    "AlipayGateway",
    "AuthGrant",
    "BillStore",
    "DirectoryBillStore",
    "GatewayFaults",
    "GatewaySettings",
    "GatewayStats",
    "IssuedUrl",
    "MemoryBillStore",
    "RegisteredApp",
    "account20",
    "pid_of",
    "world_gateway",
]

log = logging.getLogger("alirecon.sandbox")

GATEWAY_PATH = "/gateway.do"
DOWNLOAD_PATH = "/downloadBillFile.resource"
ACCOUNT_SUFFIX = "0156"  # account20 = PID + 0156 (alipay-cn.md 2.4, [inferred])
# the gateway's literal text before the string it built (alipay-cn.md 2.5)
INVALID_SIGNATURE_SUB_MSG = "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，网关生成的验签字符串为："
CHARSETS = {"utf-8": "utf-8", "gbk": "gbk", "gb2312": "gb2312"}
MAX_BODY = 1024 * 1024
_DRAIN_LIMIT = 16 * MAX_BODY  # an unread body up to this size is read and dropped before an early answer
_TIMESTAMP_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
_DAY_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_MONTH_RE = re.compile(r"([0-9]{4})-([0-9]{2})")
_PERIOD_KEY_RE = re.compile(r"[0-9]{6}|[0-9]{8}")
_BILL_TYPE_RE = re.compile(r"[A-Za-z_]{1,20}")


def account20(pid: str) -> str:
    """The 20-digit account of the download URL and the zip names (PID + ``0156``)."""
    return pid if len(pid) == 20 else pid + ACCOUNT_SUFFIX


def pid_of(account: str) -> str:
    """The 16-digit PID of a PID or an account20."""
    return account[:16] if len(account) == 20 and account.endswith(ACCOUNT_SUFFIX) else account


def _period_key(period: str) -> str:
    """``yyyyMMdd`` / ``yyyyMM`` from either that or ``yyyy-MM-dd`` / ``yyyy-MM``."""
    key = period.replace("-", "")
    if not _PERIOD_KEY_RE.fullmatch(key):
        raise ValueError(f"not a bill date: {period!r} (yyyyMMdd, yyyyMM, yyyy-MM-dd or yyyy-MM)")
    return key


# ---------------------------------------------------------------------------------------------
# Bills


class BillStore(Protocol):
    """Where the gateway's bills come from: the zip of (PID, bill type, ``yyyyMMdd``|``yyyyMM``), or None
    when the period has no bill (a day without business)."""

    def get(self, pid: str, bill_type: str, period: str) -> bytes | None: ...


class MemoryBillStore:
    """Bills held in memory, keyed by (PID or account20, bill type, date in any of the four spellings)."""

    def __init__(self, bills: Mapping[tuple[str, str, str], bytes] | None = None) -> None:
        self._bills: dict[tuple[str, str, str], bytes] = {}
        self._lock = threading.Lock()
        for (account, bill_type, period), data in (bills or {}).items():
            self.put(account, bill_type, period, data)

    def put(self, account: str, bill_type: str, period: str, data: bytes) -> None:
        with self._lock:
            self._bills[(pid_of(account), bill_type, _period_key(period))] = bytes(data)

    def get(self, pid: str, bill_type: str, period: str) -> bytes | None:
        with self._lock:
            return self._bills.get((pid_of(pid), bill_type, _period_key(period)))


class DirectoryBillStore:
    """Bills as files: ``<root>/<pid>/<bill_type>/<yyyyMMdd|yyyyMM>.csv.zip`` (an account20 folder also works)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def get(self, pid: str, bill_type: str, period: str) -> bytes | None:
        if not _BILL_TYPE_RE.fullmatch(bill_type) or not pid.isdigit():
            return None  # never a path built from anything but digits and letters
        key = _period_key(period)
        for folder in (pid_of(pid), account20(pid)):
            path = self.root / folder / bill_type / f"{key}.csv.zip"
            if path.is_file():
                return path.read_bytes()
        return None


# ---------------------------------------------------------------------------------------------
# Apps, settings, faults, counters


@dataclass
class RegisteredApp:
    """An application on the open platform: its public key (for request signatures) and its owner's PID."""

    app_id: str
    public_key: rsa.RSAPublicKey
    pid: str
    registered_on: date | None = None  # the account's registration: older dates are refused


@dataclass(frozen=True)
class AuthGrant:
    """An ``app_auth_token``: account ``pid`` authorised ``app_id`` to fetch its bills (alipay-cn.md 1.2)."""

    pid: str
    app_id: str


@dataclass
class GatewaySettings:
    """Behaviour the spec leaves open; each default cites its source."""

    bill_types: tuple[str, ...] = ("trade", "signcustomer")  # alipay-cn.md 2.3 (lower-case only: anecdote)
    # a period without a bill: isp.bill_not_exist (what production code sees, 2.5) or success with
    # EMPTY_DATA_WITH_BILL_FILE and an empty file (accounts with the default configuration, 2.4)
    empty_day: Literal["bill_not_exist", "empty_file"] = "bill_not_exist"
    empty_bill: Callable[[str, str, str], bytes] | None = None  # (pid, bill_type, period) -> zip; default: no entries
    daily_ready: time = time(9, 0)  # "normally ready before 09:00 the next day" (2.3)
    monthly_ready_day: int = 3  # "normally generated on the 3rd of the next month" (2.3)
    url_validity: timedelta = timedelta(seconds=30)  # (2.4)
    timestamp_skew: timedelta | None = timedelta(minutes=30)  # [inferred] tolerance unknown (gap 5)
    url_account_param: Literal["userId", "pid"] = "userId"  # older URLs say userId, the official example pid (2.4)
    sign_unescaped_slashes: bool = False  # sign the text with / instead of \/ (the Java SDK's fallback, 3.2)
    single_use_urls: bool = False  # token reuse within the validity is unknown (gap 4): allowed by default


@dataclass(frozen=True)
class IssuedUrl:
    """A download URL the gateway handed out."""

    token: str
    url: str
    pid: str
    bill_type: str
    period: str  # yyyyMMdd | yyyyMM
    issued_at: datetime
    data: bytes


@dataclass
class GatewayFaults:
    """Switchable faults; read on every request, so changes apply at once. Counters count down."""

    rate_limit: int = 0  # the next N valid queries get 40004 <rate_limit_code>
    rate_limit_code: str = "SYSTEM_RATE_LIMIT"
    unavailable: int = 0  # the next N valid queries get 20000 isp.unknow-error
    broken_signature: int = 0  # the next N signed answers carry a signature that does not verify
    slow_download: float = 0.0  # real seconds to wait before answering a download
    omit_url_timestamp: bool = False  # URLs without their timestamp (the client cannot tell their age)
    after_issue: Callable[[IssuedUrl], None] | None = None  # e.g. move the clock past the URL's validity


@dataclass
class GatewayStats:
    """What the gateway did, so tests assert on behaviour rather than on wall time."""

    requests: int = 0
    http_methods: Counter[str] = field(default_factory=Counter)
    content_types: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)  # "10000", "40004 isp.bill_not_exist", ...
    issued: int = 0
    downloads: int = 0
    expired_downloads: int = 0
    refused_downloads: int = 0
    last_sign_content: str | None = None  # the string the gateway built for the last signed request


class _Refusal(Exception):
    def __init__(self, code: str, sub_code: str, sub_msg: str, *, signed: bool = False) -> None:
        self.code, self.sub_code, self.sub_msg, self.signed = code, sub_code, sub_msg, signed
        super().__init__(f"{code} {sub_code}")


_MSG = {"20000": "Service Currently Unavailable", "20001": "Insufficient Token Permissions",
        "40001": "Missing Required Arguments", "40002": "Invalid Arguments", "40004": "Business Failed",
        "40006": "Insufficient Permissions"}


def _business(sub_code: str, sub_msg: str) -> _Refusal:
    return _Refusal("40004", sub_code, sub_msg, signed=True)


def _self_signed(host: str) -> tuple[bytes, bytes]:
    """A throwaway certificate for ``host`` (an IP or a name) and its key, both PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alirecon sandbox gateway")])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30)).add_extension(x509.SubjectAlternativeName([alt]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# ---------------------------------------------------------------------------------------------
# The gateway


class LoopbackService:
    """A sandbox HTTP service on loopback: a ``ThreadingHTTPServer`` on a daemon thread, whose handler calls
    ``handle(request)``; ``start``/``stop`` or ``with``."""

    handler: type[BaseHTTPRequestHandler]  # set below, once the shared handler is defined
    thread_name = "alirecon-sandbox-http"
    host: str
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _port: int | None = None

    def handle(self, request: _Handler) -> None:
        raise NotImplementedError

    def start(self, port: int = 0) -> int:
        """Listen on ``host:port`` and serve from a daemon thread; return the port."""
        return self._serve(port)

    def _serve(self, port: int, wrap: Callable[[ThreadingHTTPServer], None] | None = None) -> int:
        if self._server is not None:
            raise RuntimeError("already started")
        server = ThreadingHTTPServer((self.host, port), self.handler)
        server.daemon_threads = True
        server.gateway = self  # type: ignore[attr-defined]
        if wrap is not None:
            wrap(server)
        self._server, self._port = server, server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self._port

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(30)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AlipayGateway(LoopbackService):
    """The simulated open platform. ``start()`` serves it on loopback (port 0: any free port) in a thread.

    ``register_app`` declares an app (its public key and owner PID); ``grant`` issues an app_auth_token of
    another account to an app. Give clients ``url`` and ``alipay_public_key_pem``.
    """

    def __init__(self, clock: SimClock, store: BillStore | None = None, *, alipay_key: rsa.RSAPrivateKey | None = None,
                 settings: GatewaySettings | None = None, faults: GatewayFaults | None = None, tls: bool = False,
                 host: str = "127.0.0.1") -> None:
        self.clock = clock
        self.store: BillStore = store if store is not None else MemoryBillStore()
        self.settings = settings or GatewaySettings()
        self.faults = faults or GatewayFaults()
        self.stats = GatewayStats()
        self.host = host
        self.tls = tls
        self.apps: dict[str, RegisteredApp] = {}
        self.grants: dict[str, AuthGrant] = {}
        self.issued: dict[str, IssuedUrl] = {}
        self.ca_pem: bytes | None = None  # the TLS certificate clients must trust (tls=True)
        self._alipay_key = alipay_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._lock = threading.Lock()

    # -- registration ---------------------------------------------------------------------------

    def register_app(self, app_id: str, public_key: rsa.RSAPublicKey | bytes | str, pid: str, *,
                     registered_on: date | None = None) -> RegisteredApp:
        key = public_key if isinstance(public_key, rsa.RSAPublicKey) else load_public_key(public_key)
        app = RegisteredApp(app_id, key, pid_of(pid), registered_on)
        with self._lock:
            self.apps[app_id] = app
        return app

    def grant(self, pid: str, app_id: str, token: str | None = None) -> str:
        """An app_auth_token by which account ``pid`` lets ``app_id`` fetch its bills."""
        token = token or secrets.token_hex(16)
        with self._lock:
            self.grants[token] = AuthGrant(pid_of(pid), app_id)
        return token

    @property
    def alipay_public_key(self) -> rsa.RSAPublicKey:
        return self._alipay_key.public_key()

    @property
    def alipay_public_key_pem(self) -> str:
        """The gateway's "Alipay public key", for the client's ``openapi.alipay_public_key``."""
        return self.alipay_public_key.public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")

    @property
    def alipay_public_key_base64(self) -> str:
        """The same key as the console shows it: bare Base64 DER."""
        der = self.alipay_public_key.public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode("ascii")

    # -- serving --------------------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("the gateway has not started")
        return f"{self.scheme}://{self.host}:{self._port}"

    @property
    def url(self) -> str:
        """The gateway URL for ``openapi.gateway``."""
        return self.base_url + GATEWAY_PATH

    thread_name = "alirecon-sandbox-alipay-gateway"

    def start(self, port: int = 0) -> int:
        """Listen on ``host:port`` (TLS with a fresh self-signed certificate when ``tls``); return the port."""
        return self._serve(port, self._wrap_tls if self.tls else None)

    def _wrap_tls(self, server: ThreadingHTTPServer) -> None:
        cert, key = _self_signed(self.host)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain wants files; the key is a throwaway
            (Path(tmp) / "cert.pem").write_bytes(cert)
            (Path(tmp) / "key.pem").write_bytes(key)
            context.load_cert_chain(Path(tmp) / "cert.pem", Path(tmp) / "key.pem")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.ca_pem = cert

    def details(self) -> dict[str, Any]:
        """What a client needs (``alirecon sandbox serve`` prints it)."""
        return {"gateway": self.url, "alipay_public_key": self.alipay_public_key_pem,
                "apps": {a.app_id: a.pid for a in self.apps.values()}, "simulated_now": self.clock.now().isoformat(),
                "download_url_validity_seconds": self.settings.url_validity.total_seconds()}

    # -- requests -------------------------------------------------------------------------------

    def handle(self, request: _Handler) -> None:
        path = urlsplit(request.path).path
        with self._lock:
            self.stats.requests += 1
            self.stats.http_methods[request.command] += 1
        if path == GATEWAY_PATH:
            self._gateway(request)
        elif path == DOWNLOAD_PATH and request.command == "GET":
            self._download(request)
        else:
            request.reply(404, b"not found", "text/plain")

    def _gateway(self, request: _Handler) -> None:
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            request.reply(411, b"send a Content-Length", "text/plain")
            return
        try:
            length = int(request.headers.get("Content-Length") or 0)
        except ValueError:
            request.reply(400, b"bad Content-Length", "text/plain")
            return
        if length > MAX_BODY:
            request.reply(413, b"request too large", "text/plain")
            return
        body = request.read_body(length) if length else b""
        content_type = request.headers.get("Content-Type", "")
        with self._lock:
            self.stats.content_types[content_type.split(";")[0].strip().lower() or "(none)"] += 1
        charset: str = "utf-8"
        sign_type: SignType = "RSA2"
        try:
            params, charset = _parse_params(urlsplit(request.path).query, body, content_type)
            sign_type = "RSA" if params.get("sign_type") == "RSA" else "RSA2"  # answers signed as the app signs
            node, fields, signed = RESPONSE_NODE, self._query(params, charset), True
        except _Refusal as refusal:
            fields = {"code": refusal.code, "msg": _MSG.get(refusal.code, "Business Failed"),
                      "sub_code": refusal.sub_code, "sub_msg": refusal.sub_msg}
            node, signed = (RESPONSE_NODE, True) if refusal.signed else (ERROR_NODE, False)
        with self._lock:
            self.stats.answers[" ".join(x for x in (fields["code"], fields.get("sub_code", "")) if x)] += 1
        request.reply(200, self._answer(node, fields, signed, sign_type, charset),
                      f"application/json;charset={charset}")

    def _answer(self, node: str, fields: Mapping[str, str], signed: bool, sign_type: SignType, charset: str) -> bytes:
        """``{"<node>":{...},"sign":"..."}`` with ``/`` escaped, the signature over exactly the node's text."""
        text = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).replace("/", "\\/")
        body = '{"' + node + '":' + text
        if signed:
            signed_text = text.replace("\\/", "/") if self.settings.sign_unescaped_slashes else text
            with self._lock:
                broken = self.faults.broken_signature > 0
                if broken:
                    self.faults.broken_signature -= 1
            if broken:
                signed_text += " "  # a valid signature of other bytes: verification must fail
            signature = sign(signed_text, self._alipay_key, sign_type, charset)
            body += ',"sign":"' + signature.replace("/", "\\/") + '"'
        return (body + "}").encode(charset)

    def _query(self, params: dict[str, str], charset: str) -> dict[str, str]:
        """Validate a query (alipay-cn.md 12.2-12.4) and issue a URL, or raise the documented refusal."""
        settings = self.settings
        method = params.get("method")
        if not method:
            raise _Refusal("40001", "isv.missing-method", "缺少方法名参数")
        if method != METHOD:
            raise _Refusal("40002", "isv.invalid-method", "不存在的方法名")
        app_id = params.get("app_id")
        if not app_id:
            raise _Refusal("40001", "isv.missing-app-id", "缺少AppID参数")
        with self._lock:
            app = self.apps.get(app_id)
        if app is None:
            raise _Refusal("40002", "isv.invalid-app-id", "无效的AppID参数")
        for name, sub_code, text in (("sign", "isv.missing-signature", "缺少签名参数"),
                                     ("sign_type", "isv.missing-signature-type", "缺少签名类型参数"),
                                     ("timestamp", "isv.missing-timestamp", "缺少时间戳参数"),
                                     ("version", "isv.missing-version", "缺少版本参数")):
            if not params.get(name):
                raise _Refusal("40001", sub_code, text)
        sign_type = params["sign_type"]
        if sign_type not in ("RSA2", "RSA"):
            raise _Refusal("40002", "isv.invalid-signature-type", "无效的签名类型")
        if params.get("format") and params["format"].lower() != "json":
            raise _Refusal("40002", "isv.invalid-format", "无效的数据格式")
        if params["version"] != "1.0":
            raise _Refusal("40002", "isv.invalid-parameter", "无效的版本参数 version")
        stamp = params["timestamp"]
        try:
            if not _TIMESTAMP_RE.fullmatch(stamp):
                raise ValueError(stamp)
            sent = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC8)
        except ValueError:
            raise _Refusal("40002", "isv.invalid-timestamp", "非法的时间戳参数") from None
        if settings.timestamp_skew is not None and abs(self.clock.now() - sent) > settings.timestamp_skew:
            raise _Refusal("40002", "isv.invalid-timestamp", "时间戳参数与网关时间相差过大")
        content = sign_content(params)
        with self._lock:
            self.stats.last_sign_content = content
        if not verify_signature(content, params["sign"], app.public_key, "RSA" if sign_type == "RSA" else "RSA2",
                                charset):
            raise _Refusal("40002", "isv.invalid-signature", INVALID_SIGNATURE_SUB_MSG + content)
        pid = app.pid
        token = params.get("app_auth_token")
        if token:
            with self._lock:
                grant = self.grants.get(token)
            if grant is None or grant.app_id != app_id:
                raise _Refusal("20001", "aop.invalid-app-auth-token", "无效的应用授权令牌")
            pid = grant.pid
        self._faults()
        try:
            biz = json.loads(params.get("biz_content") or "")
        except ValueError:
            raise _Refusal("40002", "isv.invalid-parameter", "biz_content 不是合法的JSON") from None
        if not isinstance(biz, dict):
            raise _Refusal("40002", "isv.invalid-parameter", "biz_content 不是JSON对象")
        bill_type, bill_date = biz.get("bill_type"), biz.get("bill_date")
        if not isinstance(bill_type, str) or not bill_type or not isinstance(bill_date, str) or not bill_date:
            raise _business("isv.invalid_arguments", "参数不合法: bill_type 和 bill_date 必填")
        if bill_type not in settings.bill_types:
            raise _business("TYPE_NOT_SUPPORTED", f"不支持的账单类型: {bill_type}")
        smid = biz.get("smid")
        if smid is not None and (not isinstance(smid, str) or len(smid) > 20):
            raise _business("isv.invalid_arguments", "参数不合法: smid")
        period = self._period(bill_date, app if pid == app.pid else None, pid)
        data = self.store.get(pid, bill_type, period)
        fields: dict[str, str] = {"code": "10000", "msg": "Success"}
        if data is None:
            if settings.empty_day == "bill_not_exist":
                raise _business("isp.bill_not_exist", "账单不存在")
            factory = settings.empty_bill or (lambda _pid, _type, _period: write_bill_zip([]))
            data = factory(pid, bill_type, period)
            fields["bill_file_code"] = EMPTY_DATA_WITH_BILL_FILE
        fields["bill_download_url"] = self._issue(pid, bill_type, period, data).url
        return fields

    def _faults(self) -> None:
        with self._lock:
            faults = self.faults
            if faults.rate_limit > 0:
                faults.rate_limit -= 1
                raise _business(faults.rate_limit_code, "调用频率超限，请一分钟后重试")
            if faults.unavailable > 0:
                faults.unavailable -= 1
                raise _Refusal("20000", "isp.unknow-error", "系统繁忙", signed=True)

    def _period(self, text: str, app: RegisteredApp | None, pid: str) -> str:
        """``yyyyMMdd`` / ``yyyyMM`` of a date the gateway has a closed, generated bill period for."""
        now = self.clock.now().astimezone(UTC8)
        today = now.date()
        registered = app.registered_on if app is not None else self._registration(pid)
        if m := _DAY_RE.fullmatch(text):
            try:
                day = date(int(m[1]), int(m[2]), int(m[3]))
            except ValueError:
                raise _business("isv.invalid_arguments", f"参数不合法: bill_date {text}") from None
            if day >= today:
                raise _business("isv.invalid_arguments", f"参数不合法: 不能查询当天或未来的账单 {text}")
            if registered is not None and day < registered:
                raise _business("BILL_DATE_BEFORE_REGISTRATION", "账单日期早于账户注册时间")
            if day == today - timedelta(days=1) and now.time() < self.settings.daily_ready:
                raise _business("isp.bill_not_exist", "账单不存在")  # not generated yet
            return day.strftime("%Y%m%d")
        if (m := _MONTH_RE.fullmatch(text)) and 1 <= int(m[2]) <= 12:
            month = (int(m[1]), int(m[2]))
            previous = (today.year - (today.month == 1), (today.month - 2) % 12 + 1)
            if month >= (today.year, today.month):
                raise _business("isv.invalid_arguments", f"参数不合法: 不能查询当月或未来的月账单 {text}")
            if month == previous and today.day < self.settings.monthly_ready_day:
                raise _business("isv.invalid_arguments", f"参数不合法: 月账单尚未生成 {text}")
            if registered is not None and month < (registered.year, registered.month):
                raise _business("BILL_DATE_BEFORE_REGISTRATION", "账单日期早于账户注册时间")
            return f"{month[0]:04d}{month[1]:02d}"
        raise _business("isv.invalid_arguments", f"参数不合法: bill_date {text} (yyyy-MM-dd 或 yyyy-MM)")

    def _registration(self, pid: str) -> date | None:
        with self._lock:
            dates = [a.registered_on for a in self.apps.values() if a.pid == pid and a.registered_on is not None]
        return min(dates) if dates else None

    def _issue(self, pid: str, bill_type: str, period: str, data: bytes) -> IssuedUrl:
        """A URL of section 2.4's anatomy on this server, valid ``url_validity`` from now (simulated)."""
        token = secrets.token_hex(16)
        now = self.clock.now()
        account = account20(pid)
        name = f"{account}_{period}.csv.zip"
        query = [("bizType", bill_type), (self.settings.url_account_param, account), ("fileType", "csv.zip"),
                 ("bizDates", period), ("downloadFileName", name),
                 ("fileId", f"/{bill_type}/{account}/{period}.csv.zip")]
        if not self.faults.omit_url_timestamp:
            query.append(("timestamp", str(int(now.timestamp()))))
        query.append(("token", token))
        url = f"{self.base_url}{DOWNLOAD_PATH}?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query)
        issued = IssuedUrl(token, url, pid, bill_type, period, now, data)
        forget = now - max(self.settings.url_validity * 2, timedelta(hours=1))  # a long `serve` must not grow
        with self._lock:
            for old in [k for k, v in self.issued.items() if v.issued_at < forget]:
                del self.issued[old]
            self.issued[token] = issued
            self.stats.issued += 1
        hook = self.faults.after_issue
        if hook is not None:
            hook(issued)
        return issued

    def _download(self, request: _Handler) -> None:
        query = dict(parse_qsl(urlsplit(request.path).query, keep_blank_values=True))
        with self._lock:
            issued = self.issued.get(query.get("token", ""))
        now = self.clock.now()
        if issued is None or query.get("bizDates") != issued.period or query.get("bizType") != issued.bill_type:
            with self._lock:
                self.stats.refused_downloads += 1
            request.reply(403, b"invalid download link", "text/plain")
            return
        if now - issued.issued_at > self.settings.url_validity:
            with self._lock:
                self.stats.expired_downloads += 1
            request.reply(403, b"the download link has expired", "text/plain")
            return
        if self.settings.single_use_urls:
            with self._lock:
                self.issued.pop(issued.token, None)
        if self.faults.slow_download > 0:
            time_mod.sleep(self.faults.slow_download)
        with self._lock:
            self.stats.downloads += 1
        name = f"{account20(issued.pid)}_{issued.period}.csv.zip"
        request.reply(200, issued.data, "application/octet-stream",
                      {"Content-Disposition": f"attachment; filename={name}"})


# ---------------------------------------------------------------------------------------------
# Parameters: query string + url-encoded or multipart body, in the request's charset (alipay-cn.md 2.1)


def _parse_params(query: str, body: bytes, content_type: str) -> tuple[dict[str, str], str]:
    raw: list[tuple[str, bytes]] = [(k, v.encode("latin-1"))
                                    for k, v in parse_qsl(query, keep_blank_values=True, encoding="latin-1")]
    media = content_type.split(";")[0].strip().lower()
    if body:
        if media == "multipart/form-data":
            raw += _multipart(content_type, body)
        elif media in ("application/x-www-form-urlencoded", ""):
            raw += [(k, v.encode("latin-1"))
                    for k, v in parse_qsl(body.decode("latin-1"), keep_blank_values=True, encoding="latin-1")]
        else:
            raise _Refusal("40002", "isv.invalid-parameter", f"不支持的 Content-Type: {media}")
    names = [k for k, _ in raw]
    repeated = sorted({k for k in names if names.count(k) > 1})
    if repeated:
        raise _Refusal("40002", "isv.invalid-parameter", f"参数重复: {', '.join(repeated)}")
    values = dict(raw)
    charset_text = values.get("charset", b"utf-8").decode("latin-1").lower() or "utf-8"
    charset = CHARSETS.get(charset_text)
    if charset is None:
        raise _Refusal("40002", "isv.invalid-charset", f"无效的字符集 {charset_text}")
    try:
        return {k: v.decode(charset) for k, v in values.items()}, charset
    except UnicodeDecodeError:
        raise _Refusal("40002", "isv.invalid-charset", f"参数不是 {charset} 编码") from None


def _multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """Form fields of a multipart body; file parts are skipped (never signed: alipay-cn.md 3.1)."""
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise _Refusal("40002", "isv.invalid-parameter", "无法解析 multipart 请求体")
    out: list[tuple[str, bytes]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.get_param("filename", header="content-disposition") is not None:
            continue
        payload = part.get_payload(decode=True)
        out.append((name, payload if isinstance(payload, bytes) else b""))
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "alirecon-sandbox-gateway"
    body_read = True  # per request: whether the handler has consumed the body (``_dispatch`` resets it)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        gateway: AlipayGateway = self.server.gateway  # type: ignore[attr-defined]
        self.body_read = False
        try:
            gateway.handle(self)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:  # a sandbox bug must show as a 500, not as a dropped connection
            log.exception("sandbox gateway: %s %s failed", self.command, urlsplit(self.path).path)
            self.close_connection = True
            self.reply(500, b"sandbox gateway error", "text/plain")

    def read_body(self, length: int) -> bytes:
        """The request's body (``length`` bytes, from a Content-Length the caller checked)."""
        self.body_read = True
        return self.rfile.read(length)

    def _drain(self) -> None:
        """Read a body an early answer left unread: closing a socket with unread bytes resets the connection
        and the client loses the answer; keeping it open would read the body as the next request."""
        if self.body_read:
            return
        self.body_read = True
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower() or length < 0 or length > _DRAIN_LIMIT:
            self.close_connection = True  # nothing sane to read: the client may see a reset
            return
        remaining = length  # an oversized body too, in chunks, so that the refusal reaches the client
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 64 * 1024))
            if not chunk:  # the client stopped sending
                break
            remaining -= len(chunk)
        if length > MAX_BODY:
            self.close_connection = True  # refused: no further requests on this connection

    def reply(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        self._drain()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # the request line holds signatures and, for GET clients, the app_auth_token: log the path only
        log.debug("%s %s %s", self.command, urlsplit(self.path).path, args[1] if len(args) > 1 else "")



LoopbackService.handler = _Handler

# ---------------------------------------------------------------------------------------------
# A world's gateway (``alirecon sandbox serve`` and ``alirecon demo``)

WORLD_APP_ID = "2021000000000001"  # the format of a real app_id (alipay-cn.md 2.2)
WORLD_APP_KEY = "alipay-app-key.pem"  # the app's private key, beside the world (mode 0600)


def world_gateway(root: Path, clock: SimClock, pid: str, app_id: str = WORLD_APP_ID) -> tuple[AlipayGateway, Path]:
    """A gateway (not started) over ``<root>/alipay_cn`` with one app of account ``pid``, and the app's private
    key file: ``<root>/alipay-app-key.pem``, created with mode 0600 when missing and kept across runs, so a
    workspace configured once stays valid. The key never leaves that file."""
    key_file = root / WORLD_APP_KEY
    if key_file.is_file():
        key = load_private_key(key_file.read_bytes(), what=str(key_file))
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with os.fdopen(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    gateway = AlipayGateway(clock, DirectoryBillStore(root / "alipay_cn"))
    gateway.register_app(app_id, key.public_key(), pid)
    return gateway, key_file
