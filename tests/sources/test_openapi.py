"""The open-platform client: signing vectors (checked with the openssl CLI), response verification, the outcome
of every documented code, the 30-second URL, key loading, and secrets kept out of logs, reprs and errors.

Answers here come from an in-process httpx transport serving bodies signed with a test "Alipay" key, so each
code can be produced exactly; the end-to-end path against the real sandbox gateway is in
tests/sandbox/test_alipay_gateway.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import tomli_w
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from alirecon.clock import UTC8
from alirecon.config import AccountConfig, OpenApiConfig, WorkspaceConfig
from alirecon.errors import ConfigError
from alirecon.sources.billzip import extract_bill_zip, write_bill_zip
from alirecon.sources.openapi import (
    EMPTY_DATA_WITH_BILL_FILE,
    RESPONSE_NODE,
    BadResponse,
    BillNotClosed,
    BillNotReady,
    BillPeriod,
    DownloadExpired,
    DownloadFailed,
    GatewayUnreachable,
    OpenApiClient,
    OpenApiConfigError,
    OpenApiError,
    RateLimited,
    ResponseSignatureError,
    Secret,
    TransientApiError,
    extract_response_content,
    fetch_bill,
    load_private_key,
    load_public_key,
    redact_url,
    sign,
    sign_content,
    verify_response,
)

APP_ID = "2021000000000001"
ACCOUNT = "shop-cn"
NOW = datetime(2026, 11, 5, 10, 0, tzinfo=UTC8)
KEY_ENV = "ALIRECON_TEST_APP_KEY"
TOKEN_ENV = "ALIRECON_TEST_APP_AUTH_TOKEN"
TOKEN = "202611BBd7c1e0a5f3b94e2c8d6a0f1e3b5c7d9"
BILL_HOST = "http://dwbillcenter.example"
ZIP = write_bill_zip([("20881234123412340156_20261104_业务明细.csv", "#支付宝业务明细查询\r\n".encode("gbk"))])


# -- keys (generated once per session: 2048-bit RSA) -------------------------------------------------


@dataclass(frozen=True)
class Keys:
    app: rsa.RSAPrivateKey
    alipay: rsa.RSAPrivateKey
    other: rsa.RSAPrivateKey

    def pem(self, which: str = "app", fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8) -> bytes:
        key: rsa.RSAPrivateKey = getattr(self, which)
        return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())

    def public_pem(self, which: str) -> str:
        key: rsa.RSAPrivateKey = getattr(self, which)
        return key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


@pytest.fixture(scope="session")
def keys() -> Keys:
    def new() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    return Keys(new(), new(), new())


def key_material(pem: bytes) -> list[str]:
    """The key's base64 lines (long enough that a match is not chance) and its one-line form."""
    lines = [ln for ln in pem.decode().splitlines() if ln and not ln.startswith("-----")]
    return [*(ln for ln in lines if len(ln) >= 40), "".join(lines)]


def assert_clean(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"secret material leaked: {secret[:6]}..."


# -- a scripted gateway (httpx transport) ----------------------------------------------------------


def signed_body(fields: dict[str, Any], key: rsa.RSAPrivateKey | None, *, node: str = RESPONSE_NODE,
                sign_unescaped: bool = False) -> str:
    """An answer as Alipay writes it: / escaped as \\/, the signature over the node's exact text, sign last."""
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).replace("/", "\\/")
    body = '{"' + node + '":' + text
    if key is not None:
        signature = sign(text.replace("\\/", "/") if sign_unescaped else text, key)
        body += ',"sign":"' + signature + '"'
    return body + "}"


def bill_url(*, timestamp: datetime | None = NOW, name: str = "20881234123412340156_20261104.csv.zip",
             token: str = "0123456789abcdef0123456789abcdef") -> str:
    url = (f"{BILL_HOST}/downloadBillFile.resource?bizType=trade&userId=20881234123412340156&fileType=csv.zip"
           f"&bizDates=20261104&downloadFileName={name}&fileId=%2Ftrade%2F20881234123412340156%2F20261104.csv.zip")
    if timestamp is not None:
        url += f"&timestamp={int(timestamp.timestamp())}"
    return url + f"&token={token}"


Answer = Callable[[httpx.Request], httpx.Response]


@dataclass
class Scripted:
    """Answers gateway calls from ``answers`` (the last one repeats) and bill downloads from ``downloads``."""

    keys: Keys
    answers: list[Answer] = field(default_factory=list)
    downloads: list[Answer] = field(default_factory=list)
    gateway_requests: list[httpx.Request] = field(default_factory=list)
    download_requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/gateway.do"):
            self.gateway_requests.append(request)
            answers = self.answers
        else:
            self.download_requests.append(request)
            answers = self.downloads or [lambda r: httpx.Response(200, content=ZIP)]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer(request)

    def reply(self, fields: dict[str, Any], *, signed: bool = True, node: str = RESPONSE_NODE,
              key: rsa.RSAPrivateKey | None = None, **kwargs: Any) -> Answer:
        body = signed_body(fields, (key or self.keys.alipay) if signed else None, node=node, **kwargs)
        return lambda request: httpx.Response(200, content=body.encode("utf-8"),
                                              headers={"Content-Type": "application/json;charset=utf-8"})


def success(url: str | None = None, **extra: str) -> dict[str, Any]:
    return {"code": "10000", "msg": "Success", "bill_download_url": url or bill_url(), **extra}


def failure(code: str, sub_code: str, sub_msg: str = "") -> dict[str, Any]:
    msg = {"20000": "Service Currently Unavailable", "20001": "Insufficient Token Permissions",
           "40001": "Missing Required Arguments", "40002": "Invalid Arguments", "40004": "Business Failed",
           "40006": "Insufficient Permissions"}[code]
    return {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg or sub_code}


@pytest.fixture
def app_key_env(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, keys.pem("app").decode())
    return KEY_ENV


def config(keys: Keys, **overrides: Any) -> OpenApiConfig:
    data: dict[str, Any] = {"gateway": "http://gateway.example/gateway.do", "app_id": APP_ID,
                            "private_key_env": KEY_ENV, "alipay_public_key": keys.public_pem("alipay"),
                            "retries": 2, "backoff_initial": 0.5, "backoff_max": 4.0}
    return OpenApiConfig.model_validate(data | overrides)


@dataclass
class Harness:
    scripted: Scripted
    sleeps: list[float]
    now: list[datetime]

    def client(self, cfg: OpenApiConfig) -> OpenApiClient:
        http = httpx.Client(transport=httpx.MockTransport(self.scripted))
        return OpenApiClient(cfg, account=ACCOUNT, http=http, now=lambda: self.now[0], sleep=self.sleeps.append)


@pytest.fixture
def harness(keys: Keys, app_key_env: str) -> Iterator[Harness]:
    yield Harness(Scripted(keys), [], [NOW])


# -- signing vectors ------------------------------------------------------------------------------------


def test_spec_worked_string_to_sign() -> None:
    """alipay-cn.md 3.1: the worked example's string is 219 bytes with a known SHA-256."""
    params = {"sign": "ignored", "version": "1.0", "timestamp": "2019-09-17 10:00:00", "sign_type": "RSA2",
              "method": "alipay.data.dataservice.bill.downloadurl.query", "format": "JSON", "charset": "utf-8",
              "biz_content": '{"bill_type":"trade","bill_date":"2019-09-16"}', "app_id": "2021000000000001",
              "app_auth_token": "", "notify_url": None}
    content = sign_content(params)
    assert content == ('app_id=2021000000000001&biz_content={"bill_type":"trade","bill_date":"2019-09-16"}'
                       '&charset=utf-8&format=JSON&method=alipay.data.dataservice.bill.downloadurl.query'
                       '&sign_type=RSA2&timestamp=2019-09-17 10:00:00&version=1.0')
    raw = content.encode("utf-8")
    assert len(raw) == 219
    assert hashlib.sha256(raw).hexdigest() == "bd2ee21663aeddc4f7a861e72feb4f8ca031865d531f298515f9e160405d794e"


def openssl_sign(content: str, key_pem: Path, digest: str) -> str:
    """``printf '%s' content | openssl dgst -<digest> -sign key.pem | openssl base64 -A`` (alipay-cn.md 3.1)."""
    signature = subprocess.run(["openssl", "dgst", f"-{digest}", "-sign", str(key_pem)], input=content.encode(),
                               capture_output=True, check=True).stdout
    encoded = subprocess.run(["openssl", "base64", "-A"], input=signature, capture_output=True, check=True).stdout
    return encoded.decode("ascii").strip()


@pytest.mark.parametrize(("sign_type", "digest"), [("RSA2", "sha256"), ("RSA", "sha1")])
def test_request_signature_matches_openssl(harness: Harness, keys: Keys, tmp_path: Path, sign_type: str,
                                           digest: str, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "app.pem"
    key_file.write_bytes(keys.pem("app", serialization.PrivateFormat.TraditionalOpenSSL))
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    cfg = config(keys, sign_type=sign_type, private_key_env=None, private_key_file=key_file,
                 app_auth_token_env=TOKEN_ENV, secure=False)
    with harness.client(cfg) as client:
        params = client.signed_params("trade", BillPeriod.parse("2019-09-16"),
                                      timestamp=datetime(2019, 9, 17, 10, 0, tzinfo=UTC8))
    content = sign_content(params)
    assert content == (f'app_auth_token={TOKEN}&app_id=2021000000000001&biz_content={{"bill_date":"2019-09-16",'
                       f'"bill_type":"trade"}}&charset=utf-8&format=json&method=alipay.data.dataservice.bill.'
                       f'downloadurl.query&sign_type={sign_type}&timestamp=2019-09-17 10:00:00&version=1.0')
    assert params["sign"] == openssl_sign(content, key_file, digest)
    assert len(params["sign"]) == 344  # 2048-bit key (alipay-cn.md 2.2)


def test_every_private_key_form_gives_the_same_signature(keys: Keys) -> None:
    pkcs1 = keys.pem("app", serialization.PrivateFormat.TraditionalOpenSSL)
    pkcs8 = keys.pem("app", serialization.PrivateFormat.PKCS8)
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----") and pkcs8.startswith(b"-----BEGIN PRIVATE KEY-----")
    bare1 = "".join(ln for ln in pkcs1.decode().splitlines() if not ln.startswith("-----"))
    bare8 = "\n".join(ln for ln in pkcs8.decode().splitlines() if not ln.startswith("-----"))
    signatures = {sign("content 内容", load_private_key(form)) for form in (pkcs1, pkcs8, bare1, bare8, pkcs8.decode())}
    assert len(signatures) == 1  # PKCS#1 v1.5 is deterministic: same key, same signature


def test_public_key_forms(keys: Keys) -> None:
    pem = keys.public_pem("alipay")
    bare = "".join(ln for ln in pem.splitlines() if not ln.startswith("-----"))
    pkcs1 = keys.alipay.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    numbers = {load_public_key(form).public_numbers() for form in (pem, bare, pkcs1)}
    assert numbers == {keys.alipay.public_key().public_numbers()}


def test_biz_content_is_written_like_the_python_sdk(harness: Harness, keys: Keys) -> None:
    with harness.client(config(keys, smid="2088000000000009")) as client:
        text = client.biz_content("trade_zft_merchant", BillPeriod.parse("2026-10"))
    assert text == '{"bill_date":"2026-10","bill_type":"trade_zft_merchant","secure":"true","smid":"2088000000000009"}'


def test_transport_puts_protocol_parameters_in_the_query_and_the_rest_in_the_body(
        harness: Harness, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    harness.scripted.answers = [harness.scripted.reply(success())]
    with harness.client(config(keys, app_auth_token_env=TOKEN_ENV)) as client:
        client.fetch_bill("trade", "2026-11-04")
    [request] = harness.scripted.gateway_requests
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded;charset=utf-8"
    query = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
    body = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
    assert set(query) == {"app_id", "method", "format", "charset", "sign_type", "timestamp", "version", "sign"}
    assert set(body) == {"biz_content", "app_auth_token"} and body["app_auth_token"] == TOKEN
    assert query["timestamp"] == "2026-11-05 10:00:00"  # Beijing time
    params = query | body  # the signature covers both halves
    keys.app.public_key().verify(base64.b64decode(params["sign"]), sign_content(params).encode(), padding.PKCS1v15(),
                                 hashes.SHA256())


# -- response verification -----------------------------------------------------------------------------


SPEC_BODY = ('{"alipay_data_dataservice_bill_downloadurl_query_response":{"code":"10000","msg":"Success",'
             '"bill_download_url":"http:\\/\\/dwbillcenter.alipay.com\\/downloadBillFile.resource?bizType=trade"},'
             '"sign":"..."}')


def test_spec_worked_extraction() -> None:
    """alipay-cn.md 3.2: 128 bytes, byte for byte as received, and the SHA-256 after the \\/ fallback."""
    content = extract_response_content(SPEC_BODY, RESPONSE_NODE)
    assert content is not None and len(content.encode()) == 128
    assert hashlib.sha256(content.encode()).hexdigest() == \
        "c6cae088f39b754700b433da7127d337825c499bca4df2dec493d2e0bfecb470"
    assert hashlib.sha256(content.replace("\\/", "/").encode()).hexdigest() == \
        "7841120d5c92f5831fa53b05e2627f3fbedc2f616149b74652590e8dc2406ef4"


def test_extraction_is_string_aware() -> None:
    tricky = '{"a":"}{\\"","b":["}",{"c":"{"}]}'
    body = (f'{{"x":"\\"{RESPONSE_NODE}\\":{{}}","nested":{{"{RESPONSE_NODE}":{{"code":"fake"}}}},'
            f' "{RESPONSE_NODE}" : {tricky} , "sign":"s"}}')
    assert extract_response_content(body, RESPONSE_NODE) == tricky
    assert extract_response_content('{"error_response":{"code":"40002"}}', RESPONSE_NODE) is None
    with pytest.raises(ValueError):
        extract_response_content('{"' + RESPONSE_NODE + '":{"code":"1', RESPONSE_NODE)


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | _TEXT,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                     max_leaves=12)


@given(st.dictionaries(_TEXT, _JSON, max_size=5), st.dictionaries(_TEXT, _JSON, max_size=3), st.booleans(),
       st.sampled_from(["", " ", "\n  "]))
def test_extraction_returns_the_exact_node_text(node: dict[str, Any], before: dict[str, Any], escape: bool,
                                                space: str) -> None:
    text = json.dumps(node, ensure_ascii=not escape, separators=(",", ":"))
    if escape:
        text = text.replace("/", "\\/")
    prefix = json.dumps(before)[1:-1]
    member = f'"{RESPONSE_NODE}"{space}:{space}{text}{space}'
    body = "{" + space + (prefix + "," if prefix else "") + member + ',"sign":"x"}'
    assert extract_response_content(body, RESPONSE_NODE) == text


def test_verification_accepts_escaped_and_unescaped_signatures(keys: Keys) -> None:
    alipay = keys.alipay.public_key()
    escaped = verify_response(signed_body(success(), keys.alipay), alipay)
    assert escaped.signed and not escaped.unescaped_slashes
    assert escaped.fields["bill_download_url"] == bill_url()  # parsed from the verified text: \/ decoded
    fallback = verify_response(signed_body(success(), keys.alipay, sign_unescaped=True), alipay)
    assert fallback.signed and fallback.unescaped_slashes


def test_verification_rejects_tampering_and_the_wrong_key(keys: Keys) -> None:
    alipay = keys.alipay.public_key()
    body = signed_body(success(), keys.alipay)
    tampered = body.replace("20261104", "20261103", 1)
    assert tampered != body
    for bad in (tampered, signed_body(success(), keys.other), body.replace('"sign":"', '"sign":"A', 1)):
        with pytest.raises(ResponseSignatureError):
            verify_response(bad, alipay)
    with pytest.raises(ResponseSignatureError):  # a failure that carries a signature is verified too
        verify_response(signed_body(failure("40004", "isp.bill_not_exist"), keys.other), alipay)


def test_unsigned_answers(keys: Keys) -> None:
    alipay = keys.alipay.public_key()
    error = verify_response(signed_body(failure("40002", "isv.invalid-signature"), None, node="error_response"),
                            alipay)
    assert not error.signed and error.node == "error_response" and error.fields["sub_code"] == "isv.invalid-signature"
    assert not verify_response('{"error_response":{"code":"40001"},"sign":""}', alipay).signed
    with pytest.raises(ResponseSignatureError, match="without a signature"):
        verify_response(signed_body(success(), None), alipay)


def test_malformed_answers_are_bad_responses(keys: Keys) -> None:
    alipay = keys.alipay.public_key()
    good = signed_body(success(), keys.alipay)
    node_text = extract_response_content(good, RESPONSE_NODE)
    duplicated = good[:-1] + f',"{RESPONSE_NODE}":{node_text}}}'
    for bad in ("<html>502</html>", "[]", '{"other":{}}', duplicated, '{"' + RESPONSE_NODE + '":"text"}'):
        with pytest.raises(BadResponse):
            verify_response(bad, alipay)


# -- outcomes of every code (alipay-cn.md 2.5) --------------------------------------------------------


def test_success_downloads_the_bill_at_once(harness: Harness, keys: Keys) -> None:
    harness.scripted.answers = [harness.scripted.reply(success())]
    with harness.client(config(keys)) as client:
        got = client.fetch_bill("trade", "2026-11-04")
    assert got.data == ZIP and got.sha256 == hashlib.sha256(ZIP).hexdigest() and got.size == len(ZIP)
    assert got.file_name == "20881234123412340156_20261104.csv.zip" and not got.empty
    assert got.url == redact_url(bill_url()) and "token" not in got.url and got.urls_requested == 1
    assert [e.name for e in extract_bill_zip(got.data, got.file_name)] == [
        "20881234123412340156_20261104_业务明细.csv"]
    [download] = harness.scripted.download_requests
    assert download.headers["User-Agent"].startswith("alirecon/")
    assert "token=0123456789abcdef" in str(download.url)


def test_empty_day_with_a_bill_file(harness: Harness, keys: Keys) -> None:
    empty_zip = write_bill_zip([])
    harness.scripted.answers = [harness.scripted.reply(success(bill_file_code=EMPTY_DATA_WITH_BILL_FILE))]
    harness.scripted.downloads = [lambda r: httpx.Response(200, content=empty_zip)]
    with harness.client(config(keys)) as client:
        got = client.fetch_bill("signcustomer", "2026-11-04")
    assert got.empty and got.data == empty_zip and got.bill_file_code == EMPTY_DATA_WITH_BILL_FILE
    # the code without a URL: an empty day with nothing to download
    harness.scripted.answers = [harness.scripted.reply({"code": "10000", "msg": "Success",
                                                        "bill_file_code": EMPTY_DATA_WITH_BILL_FILE})]
    with harness.client(config(keys)) as client:
        got = client.fetch_bill("signcustomer", "2026-11-04")
    assert got.empty and got.data == b"" and got.url is None


@pytest.mark.parametrize("sub_code", ["isp.bill_not_exist", "BILL_NOT_EXIST", "NO_BILL_DATA"])
def test_not_yet(harness: Harness, keys: Keys, sub_code: str) -> None:
    harness.scripted.answers = [harness.scripted.reply(failure("40004", sub_code))]
    with harness.client(config(keys)) as client:
        with pytest.raises(BillNotReady) as recent:
            client.fetch_bill("trade", "2026-11-04")
        with pytest.raises(BillNotReady) as old:
            client.fetch_bill("trade", "2026-10-01")
    assert not recent.value.past_due and old.value.past_due
    assert recent.value.expected_by == datetime(2026, 11, 5, 9, 0, tzinfo=UTC8)
    assert recent.value.sub_code == sub_code and recent.value.account == ACCOUNT
    assert len(harness.scripted.gateway_requests) == 2  # never retried: the scheduler asks later
    assert harness.sleeps == []


@pytest.mark.parametrize("sub_code", ["isv.invalid_arguments", "INVAILID_ARGUMENTS"])
def test_invalid_arguments_for_an_open_period_is_not_closed(harness: Harness, keys: Keys, sub_code: str) -> None:
    harness.scripted.answers = [harness.scripted.reply(failure("40004", sub_code, "参数不合法"))]
    harness.now[0] = datetime(2026, 11, 2, 10, 0, tzinfo=UTC8)
    with harness.client(config(keys)) as client:
        with pytest.raises(BillNotClosed):
            client.fetch_bill("trade", "2026-10")  # a month before its generation day
        harness.now[0] = NOW
        with pytest.raises(OpenApiConfigError) as old:  # for a long-closed day it is a bad argument
            client.fetch_bill("trade", "2026-09-30")
    assert "bill_date" in old.value.parameter and ACCOUNT in str(old.value)


def test_open_periods_are_refused_before_asking(harness: Harness, keys: Keys) -> None:
    with harness.client(config(keys)) as client:
        for when in ("2026-11-05", "2026-11-06", "2026-11"):
            with pytest.raises(BillNotClosed):
                client.fetch_bill("trade", when)
    assert harness.scripted.gateway_requests == []


@pytest.mark.parametrize(("code", "sub_code"), [("40004", "SYSTEM_RATE_LIMIT"), ("40004", "USER_RATE_LIMIT")])
def test_rate_limits_wait_at_least_a_minute(harness: Harness, keys: Keys, code: str, sub_code: str) -> None:
    scripted = harness.scripted
    scripted.answers = [scripted.reply(failure(code, sub_code)), scripted.reply(failure(code, sub_code)),
                        scripted.reply(success())]
    with harness.client(config(keys)) as client:
        got = client.fetch_bill("trade", "2026-11-04")
    assert got.data == ZIP and len(scripted.gateway_requests) == 3
    assert len(harness.sleeps) == 2 and all(s >= 60 for s in harness.sleeps)
    scripted.answers = [scripted.reply(failure(code, sub_code))]
    with harness.client(config(keys, rate_limit_backoff=90)) as client, pytest.raises(RateLimited):
        client.fetch_bill("trade", "2026-11-04")
    assert harness.sleeps[2:] and all(s >= 90 for s in harness.sleeps[2:])


@pytest.mark.parametrize(("code", "sub_code"), [("20000", "isp.unknow-error"), ("20000", "aop.unknow-error"),
                                                ("40004", "UNKNOWN_ERROR"), ("40004", "UNKNOW_ERROR")])
def test_unavailable_is_retried_with_backoff(harness: Harness, keys: Keys, code: str, sub_code: str) -> None:
    scripted = harness.scripted
    scripted.answers = [scripted.reply(failure(code, sub_code)), scripted.reply(success())]
    with harness.client(config(keys)) as client:
        assert client.fetch_bill("trade", "2026-11-04").data == ZIP
    assert len(harness.sleeps) == 1 and 0.5 <= harness.sleeps[0] < 60
    scripted.answers = [scripted.reply(failure(code, sub_code))]
    with harness.client(config(keys)) as client, pytest.raises(TransientApiError) as info:
        client.fetch_bill("trade", "2026-11-04")
    assert info.value.sub_code == sub_code
    assert harness.sleeps[1:] == sorted(harness.sleeps[1:]) and len(harness.sleeps) == 3  # 2 retries, growing


@pytest.mark.parametrize(("code", "sub_code", "parameter"), [
    ("20001", "aop.invalid-app-auth-token", "app_auth_token"),
    ("20001", "aop.app-auth-token-time-out", "app_auth_token"),
    ("40001", "isv.missing-app-id", "openapi.app_id"),
    ("40001", "isv.missing-signature", "private key"),
    ("40002", "isv.invalid-app-id", "openapi.app_id"),
    ("40002", "isv.invalid-signature", "private key"),
    ("40002", "isv.invalid-signature-type", "openapi.sign_type"),
    ("40002", "isv.invalid-timestamp", "clock"),
    ("40002", "isv.invalid-charset", "openapi.charset"),
    ("40002", "isv.invalid-method", "method"),
    ("40006", "isv.insufficient-isv-permissions", "openapi.app_id"),
    ("40006", "isv.some-new-permission-code", "openapi.app_id"),
    ("40004", "TYPE_NOT_SUPPORTED", "bill_type"),
    ("40004", "BILL_DATE_BEFORE_REGISTRATION", "bill_date"),
])
def test_configuration_errors_name_the_account_and_parameter(harness: Harness, keys: Keys, code: str,
                                                            sub_code: str, parameter: str) -> None:
    harness.scripted.answers = [harness.scripted.reply(failure(code, sub_code), signed=code == "40004",
                                                       node=RESPONSE_NODE if code == "40004" else "error_response")]
    with harness.client(config(keys)) as client, pytest.raises(OpenApiConfigError) as info:
        client.fetch_bill("trade", "2026-11-04")
    exc = info.value
    assert isinstance(exc, ConfigError) and exc.account == ACCOUNT and parameter in exc.parameter
    assert ACCOUNT in str(exc) and parameter in str(exc) and exc.code == code and exc.sub_code == sub_code
    assert len(harness.scripted.gateway_requests) == 1 and harness.sleeps == []  # never retried


def test_an_unknown_business_failure_is_an_error_not_retried(harness: Harness, keys: Keys) -> None:
    harness.scripted.answers = [harness.scripted.reply(failure("40004", "SOMETHING_NEW", "新的错误"))]
    with harness.client(config(keys)) as client, pytest.raises(OpenApiError) as info:
        client.fetch_bill("trade", "2026-11-04")
    assert not isinstance(info.value, TransientApiError) and "SOMETHING_NEW" in str(info.value)
    assert len(harness.scripted.gateway_requests) == 1


def test_http_failures_of_the_gateway(harness: Harness, keys: Keys) -> None:
    scripted = harness.scripted
    scripted.answers = [lambda r: httpx.Response(502, content=b"bad gateway"), scripted.reply(success())]
    with harness.client(config(keys)) as client:
        assert client.fetch_bill("trade", "2026-11-04").data == ZIP
    scripted.answers = [lambda r: httpx.Response(429)]
    with harness.client(config(keys, rate_limit_backoff=61)) as client, pytest.raises(RateLimited):
        client.fetch_bill("trade", "2026-11-04")
    assert harness.sleeps[1:] and min(harness.sleeps[1:]) >= 61
    scripted.answers = [lambda r: httpx.Response(404)]
    with harness.client(config(keys)) as client, pytest.raises(OpenApiError, match=r"openapi\.gateway"):
        client.fetch_bill("trade", "2026-11-04")


def test_a_bad_signature_is_never_used(harness: Harness, keys: Keys) -> None:
    harness.scripted.answers = [harness.scripted.reply(success(), key=keys.other)]
    with harness.client(config(keys)) as client, pytest.raises(ResponseSignatureError):
        client.fetch_bill("trade", "2026-11-04")
    assert harness.scripted.download_requests == [] and len(harness.scripted.gateway_requests) == 1


def test_unreachable_gateway(keys: Keys, app_key_env: str) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    cfg = config(keys, gateway=f"http://127.0.0.1:{port}/gateway.do", retries=1, timeout=2)
    with pytest.raises(GatewayUnreachable, match="gave up after 2 attempts"):
        fetch_bill(cfg, ACCOUNT, "trade", "2026-11-04", now=lambda: NOW, sleep=sleeps.append)
    assert len(sleeps) == 1


# -- the 30-second URL ---------------------------------------------------------------------------------


def test_a_url_older_than_30_seconds_is_replaced_without_downloading(harness: Harness, keys: Keys) -> None:
    scripted = harness.scripted
    stale = bill_url(timestamp=NOW - timedelta(seconds=31), token="a" * 32)
    scripted.answers = [scripted.reply(success(stale)), scripted.reply(success(bill_url(token="b" * 32)))]
    with harness.client(config(keys)) as client:
        got = client.fetch_bill("trade", "2026-11-04")
    assert got.urls_requested == 2 and len(scripted.gateway_requests) == 2
    assert [r.url.params["token"] for r in scripted.download_requests] == ["b" * 32]


@pytest.mark.parametrize("status", [403, 404, 410])
def test_a_refused_download_asks_for_a_fresh_url(harness: Harness, keys: Keys, status: int) -> None:
    scripted = harness.scripted
    scripted.answers = [scripted.reply(success(bill_url(timestamp=None)))]
    scripted.downloads = [lambda r: httpx.Response(status, content=b"expired"),
                          lambda r: httpx.Response(200, content=ZIP)]
    with harness.client(config(keys)) as client:
        got = client.fetch_bill("trade", "2026-11-04")
    assert got.data == ZIP and got.urls_requested == 2 and len(scripted.download_requests) == 2


def test_fresh_urls_are_bounded(harness: Harness, keys: Keys) -> None:
    scripted = harness.scripted
    scripted.answers = [scripted.reply(success())]
    scripted.downloads = [lambda r: httpx.Response(200, content=b"<html>link expired</html>")]  # not a zip
    with harness.client(config(keys, url_refreshes=2)) as client, pytest.raises(DownloadExpired) as info:
        client.fetch_bill("trade", "2026-11-04")
    assert len(scripted.gateway_requests) == 3 and "not a zip" in str(info.value)


def test_a_download_larger_than_the_limit_fails(harness: Harness, keys: Keys) -> None:
    harness.scripted.answers = [harness.scripted.reply(success())]
    harness.scripted.downloads = [lambda r: httpx.Response(200, content=b"PK\x03\x04" + bytes(5000))]
    with harness.client(config(keys, max_download_bytes=4096)) as client, pytest.raises(DownloadFailed):
        client.fetch_bill("trade", "2026-11-04")


def test_a_hostile_download_file_name_is_not_used(harness: Harness, keys: Keys) -> None:
    harness.scripted.answers = [harness.scripted.reply(success(bill_url(name="..%2F..%2Fevil.zip")))]
    with harness.client(config(keys)) as client:
        got = client.fetch_bill("trade", "2026-11-04")
    assert got.file_name == "trade_20261104.csv.zip"


def test_bill_dates(harness: Harness, keys: Keys) -> None:
    assert BillPeriod.parse("2026-02").end.isoformat() == "2026-03-01"
    assert BillPeriod.parse("2026-12").end.isoformat() == "2027-01-01"
    assert BillPeriod.parse("2026-11-04").compact == "20261104" and BillPeriod.month(2026, 1).compact == "202601"
    with harness.client(config(keys)) as client:
        for bad in ("2026-13", "2026-02-30", "20261104", "2026-1-4", "yesterday"):
            with pytest.raises(OpenApiConfigError) as info:
                client.fetch_bill("trade", bad)
            assert info.value.parameter == "bill_date"
    assert harness.scripted.gateway_requests == []


# -- configuration ---------------------------------------------------------------------------------


def test_config_validation(keys: Keys) -> None:
    base = {"app_id": APP_ID, "private_key_env": KEY_ENV, "alipay_public_key": keys.public_pem("alipay")}
    OpenApiConfig.model_validate(base)
    bad: list[tuple[dict[str, Any], str]] = [
        (base | {"private_key_file": "app.pem"}, "exactly one of private_key_file or private_key_env"),
        ({k: v for k, v in base.items() if k != "private_key_env"}, "exactly one of private_key_file"),
        (base | {"alipay_public_key_file": "alipay.pem"}, "exactly one of alipay_public_key_file"),
        (base | {"private_key_env": "-----BEGIN PRIVATE KEY-----"}, "must name an environment variable"),
        (base | {"app_auth_token_env": "202611BB..."}, "must name an environment variable"),
        (base | {"alipay_public_key": keys.pem("other").decode()}, "private key"),
        (base | {"alipay_public_key": "not a key!"}, "PEM public key"),
        (base | {"bill_types": []}, "at least one"),
        (base | {"bill_types": ["trade", "trade"]}, "twice"),
        (base | {"bill_types": ["trade; rm"]}, "letters"),
        (base | {"gateway": "ftp://x/gateway.do"}, "http(s) URL"),
        (base | {"sign_type": "MD5"}, "RSA2"),
        (base | {"app_id": "x" * 33}, "32"),
    ]
    for data, message in bad:
        with pytest.raises(ValidationError) as info:
            OpenApiConfig.model_validate(data)
        assert message in str(info.value), (data, str(info.value))
        assert "input_value" not in str(info.value)  # a secret pasted in the wrong place is not echoed


def test_account_config_round_trips_through_toml(keys: Keys, tmp_path: Path) -> None:
    cfg = WorkspaceConfig(accounts=[AccountConfig(name=ACCOUNT, family="alipay_cn", account_id="2088123412341234",
                                                  openapi=config(keys, monthly=True, smid="2088000000000009"))])
    path = tmp_path / "alirecon.toml"
    cfg.dump(path)
    loaded = WorkspaceConfig.load(path)
    assert loaded.accounts[0].openapi == cfg.accounts[0].openapi
    assert tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True)) == path.read_text(encoding="utf-8")
    assert WorkspaceConfig.model_validate({"accounts": [{"name": "a", "family": "antom", "account_id": "x"}]}
                                          ).accounts[0].openapi is None


def test_key_errors_name_the_setting_not_the_key(keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 app_key_env: str) -> None:
    secrets = key_material(keys.pem("app"))
    broken = keys.pem("app").replace(b"MII", b"XXX", 1)
    (tmp_path / "broken.pem").write_bytes(broken)
    encrypted = keys.app.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"pass-phrase"))
    (tmp_path / "encrypted.pem").write_bytes(encrypted)
    (tmp_path / "public.pem").write_text(keys.public_pem("app"))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"private_key_env": None, "private_key_file": tmp_path / "missing.pem"}, "openapi.private_key_file"),
        ({"private_key_env": None, "private_key_file": tmp_path / "broken.pem"}, "not an RSA private key"),
        ({"private_key_env": None, "private_key_file": tmp_path / "encrypted.pem"}, "encrypted"),
        ({"private_key_env": None, "private_key_file": tmp_path / "public.pem"}, "not an RSA private key"),
        ({"private_key_env": "ALIRECON_TEST_UNSET_VARIABLE"}, "ALIRECON_TEST_UNSET_VARIABLE is not set"),
        ({"private_key_env": "ALIRECON_TEST_BROKEN_KEY"}, "openapi.private_key_env ALIRECON_TEST_BROKEN_KEY: not an"),
        ({"app_auth_token_env": "ALIRECON_TEST_UNSET_VARIABLE"}, "openapi.app_auth_token_env"),
        ({"alipay_public_key": None, "alipay_public_key_file": tmp_path / "missing.pub"},
         "openapi.alipay_public_key_file"),
    ]
    monkeypatch.delenv("ALIRECON_TEST_UNSET_VARIABLE", raising=False)
    monkeypatch.setenv("ALIRECON_TEST_BROKEN_KEY", broken.decode())
    for overrides, message in cases:
        with pytest.raises(OpenApiConfigError) as info:
            OpenApiClient(config(keys, **overrides), account=ACCOUNT)
        text = str(info.value) + repr(info.value)
        assert message in text and ACCOUNT in text and info.value.__cause__ is None
        assert_clean(text, secrets)
    # relative key paths are found from the workspace (key_root)
    (tmp_path / "app.pem").write_bytes(keys.pem("app"))
    cfg = config(keys, private_key_env=None, private_key_file="app.pem")
    OpenApiClient(cfg, account=ACCOUNT, key_root=tmp_path).close()


def test_secrets_stay_out_of_logs_reprs_and_errors(harness: Harness, keys: Keys, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    scripted = harness.scripted
    download_token = "f" * 32
    echo = f"{failure('40002', 'isv.invalid-signature')['sub_msg']}: app_auth_token={TOKEN}&app_id={APP_ID}"
    scripted.answers = [scripted.reply(failure("40004", "SYSTEM_RATE_LIMIT", f"token {TOKEN} throttled")),
                        scripted.reply(success(bill_url(token=download_token))),
                        scripted.reply(success(bill_url(token=download_token))),
                        scripted.reply(failure("40002", "isv.invalid-signature", echo), signed=False,
                                       node="error_response")]
    secrets = [TOKEN, download_token, *key_material(keys.pem("app"))]
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG), harness.client(config(keys, app_auth_token_env=TOKEN_ENV)) as client:
        got = client.fetch_bill("trade", "2026-11-04")
        issued = client.query("trade", "2026-11-04")
        texts += [repr(client), repr(got), str(got.url), repr(issued), issued.redacted]
        with pytest.raises(OpenApiConfigError) as info:
            client.fetch_bill("trade", "2026-11-04")
        texts += [str(info.value), repr(info.value)]
    assert any(r.name == "httpx" for r in caplog.records)  # the request log lines were really captured
    assert any("retry" in r.getMessage() for r in caplog.records)
    texts += [r.getMessage() for r in caplog.records]
    assert "***" in str(info.value)  # the token was there, and was redacted
    for text in texts:
        assert_clean(text, secrets)
    assert repr(Secret(TOKEN)) == "Secret('***')" and TOKEN not in str(Secret(TOKEN))
