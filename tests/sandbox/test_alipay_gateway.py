"""The sandbox Alipay gateway on loopback, driven by a simulated clock, against the real client: signatures
both ways, every validation, dates not closed, empty days, app_auth_token, faults, and URLs that really expire."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from alirecon.clock import UTC8
from alirecon.config import OpenApiConfig
from alirecon.sandbox.alipay_gateway import (
    INVALID_SIGNATURE_SUB_MSG,
    AlipayGateway,
    DirectoryBillStore,
    GatewaySettings,
    IssuedUrl,
    MemoryBillStore,
    account20,
)
from alirecon.sandbox.clock import SimClock
from alirecon.sources.billzip import extract_bill_zip, write_bill_zip
from alirecon.sources.openapi import (
    EMPTY_DATA_WITH_BILL_FILE,
    BillDownload,
    BillNotClosed,
    BillNotReady,
    BillPeriod,
    DownloadExpired,
    GatewayUnreachable,
    OpenApiClient,
    OpenApiConfigError,
    RateLimited,
    ResponseSignatureError,
    TransientApiError,
    VerifiedResponse,
    fetch_bill,
    sign,
    sign_content,
    verify_response,
)

from ..sources import test_openapi
from ..sources.test_openapi import Keys, assert_clean, key_material

keys = test_openapi.keys  # the session's 2048-bit keys, generated once

APP_ID = "2021000000000001"
OTHER_APP = "2021000000000002"
PID = "2088123412341234"
PID_B = "2088567856785678"  # a receiving account that authorised our app (main-account mode)
ACCOUNT = "shop-cn"
KEY_ENV = "ALIRECON_TEST_GATEWAY_APP_KEY"
NOW = datetime(2026, 11, 5, 10, 0, tzinfo=UTC8)


def bill_zip(pid: str, period: str, kind: str = "业务明细") -> bytes:
    body = f"#支付宝{kind}查询\r\n#账号：[{account20(pid)}]\r\n".encode("gbk")
    return write_bill_zip([(f"{account20(pid)}_{period}_{kind}(汇总).csv", body),
                           (f"{account20(pid)}_{period}_{kind}.csv", body + b"1")])


BILLS = {
    (PID, "trade", "2026-11-04"): bill_zip(PID, "20261104"),
    (PID, "signcustomer", "20261104"): bill_zip(PID, "20261104", "账务明细"),
    (PID, "trade", "2026-11-01"): bill_zip(PID, "20261101"),
    (account20(PID), "trade", "202610"): bill_zip(PID, "202610"),
    (PID_B, "trade", "2026-11-04"): bill_zip(PID_B, "20261104"),
}


@dataclass
class Sandbox:
    gateway: AlipayGateway
    clock: SimClock
    keys: Keys
    sleeps: list[float] = field(default_factory=list)
    clients: dict[str, OpenApiClient] = field(default_factory=dict)
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=5))

    def config(self, **overrides: Any) -> OpenApiConfig:
        data: dict[str, Any] = {"gateway": self.gateway.url, "app_id": APP_ID, "private_key_env": KEY_ENV,
                                "alipay_public_key": self.gateway.alipay_public_key_pem, "timeout": 5.0,
                                "retries": 2, "backoff_initial": 0.01, "backoff_max": 0.05, "rate_limit_backoff": 60}
        return OpenApiConfig.model_validate(data | overrides)

    def client(self, **overrides: Any) -> OpenApiClient:
        """One client per configuration, kept for the test (loading and checking a 2048-bit key costs ~50 ms)."""
        key = repr(sorted(overrides.items()))
        if key not in self.clients:
            self.clients[key] = OpenApiClient(self.config(**overrides), account=ACCOUNT, now=self.clock.now,
                                              sleep=self.sleeps.append)
        return self.clients[key]

    def fetch(self, bill_type: str, bill_date: str, **overrides: Any) -> BillDownload:
        return self.client(**overrides).fetch_bill(bill_type, bill_date)

    def params(self, bill_type: str = "trade", bill_date: str = "2026-11-04") -> dict[str, str]:
        """A correctly signed parameter set, as the client would send it."""
        return self.client().signed_params(bill_type, BillPeriod.parse(bill_date))

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.http.close()

    def send(self, params: dict[str, str], *, how: str = "form") -> VerifiedResponse:
        """One raw request (GET with everything in the query, a url-encoded form, or multipart)."""
        url, http = self.gateway.url, self.http
        if how == "get":
            response = http.get(url, params=params)
        elif how == "form":
            response = http.post(url, data=params)
        else:
            response = http.post(url, data=params, files={"attachment": ("note.txt", b"never signed")})
        assert response.status_code == 200
        return verify_response(response.content.decode(response.charset_encoding or "utf-8"),
                               self.gateway.alipay_public_key)


@pytest.fixture
def sandbox(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    monkeypatch.setenv(KEY_ENV, keys.pem("app").decode())
    clock = SimClock(NOW)
    gateway = AlipayGateway(clock, MemoryBillStore(BILLS), alipay_key=keys.alipay)
    gateway.register_app(APP_ID, keys.app.public_key(), PID, registered_on=date(2020, 1, 1))
    gateway.register_app(OTHER_APP, keys.other.public_key(), PID_B)
    with gateway:
        box = Sandbox(gateway, clock, keys)
        yield box
        box.close()


# -- the happy path -----------------------------------------------------------------------------------


def test_daily_and_monthly_bills_are_fetched_verified_and_intact(sandbox: Sandbox) -> None:
    daily = sandbox.fetch("trade", "2026-11-04")
    assert daily.data == BILLS[(PID, "trade", "2026-11-04")]
    assert daily.sha256 == hashlib.sha256(daily.data).hexdigest()
    assert daily.file_name == f"{account20(PID)}_20261104.csv.zip"
    assert "token" not in (daily.url or "") and "bizDates=20261104" in (daily.url or "")
    names = [e.name for e in extract_bill_zip(daily.data, daily.file_name)]
    assert names == [f"{account20(PID)}_20261104_业务明细(汇总).csv", f"{account20(PID)}_20261104_业务明细.csv"]
    account_bill = sandbox.fetch("signcustomer", "2026-11-04")
    assert account_bill.data == BILLS[(PID, "signcustomer", "20261104")]
    monthly = sandbox.fetch("trade", "2026-10")
    assert monthly.data == BILLS[(account20(PID), "trade", "202610")]
    assert monthly.file_name == f"{account20(PID)}_202610.csv.zip"
    stats = sandbox.gateway.stats
    assert stats.answers["10000"] == 3 and stats.issued == 3 and stats.downloads == 3
    assert stats.content_types["application/x-www-form-urlencoded"] == 3


def test_url_anatomy(sandbox: Sandbox) -> None:
    answer = sandbox.send(sandbox.params())
    url = httpx.URL(answer.fields["bill_download_url"])
    acct = account20(PID)
    assert url.path == "/downloadBillFile.resource"
    assert dict(url.params) == {"bizType": "trade", "userId": acct, "fileType": "csv.zip", "bizDates": "20261104",
                                "downloadFileName": f"{acct}_20261104.csv.zip",
                                "fileId": f"/trade/{acct}/20261104.csv.zip",
                                "timestamp": str(int(NOW.timestamp())), "token": url.params["token"]}
    assert len(url.params["token"]) == 32 and int(url.params["token"], 16) >= 0
    assert "%2Ftrade%2F" in str(url)  # fileId is URL-encoded as in real URLs (alipay-cn.md 2.4)
    assert "http:\\/\\/127.0.0.1" in answer.content  # the signed text escapes / as real answers do


@pytest.mark.parametrize("how", ["get", "form", "multipart"])
def test_get_post_and_multipart_are_all_accepted(sandbox: Sandbox, how: str) -> None:
    answer = sandbox.send(sandbox.params(), how=how)
    assert answer.signed and answer.code == "10000" and answer.fields["bill_download_url"]
    expected = {"get": "(none)", "form": "application/x-www-form-urlencoded", "multipart": "multipart/form-data"}
    assert sandbox.gateway.stats.content_types == {expected[how]: 1}


def test_rsa_sha1_gbk_charset_and_the_slash_fallback(sandbox: Sandbox) -> None:
    bill = BILLS[(PID, "trade", "2026-11-04")]
    assert sandbox.fetch("trade", "2026-11-04", sign_type="RSA", charset="gbk").data == bill
    assert "charset=gbk&" in (sandbox.gateway.stats.last_sign_content or "")
    assert "sign_type=RSA&" in (sandbox.gateway.stats.last_sign_content or "")
    sandbox.gateway.settings.sign_unescaped_slashes = True  # the client must retry with \/ -> /
    assert sandbox.fetch("trade", "2026-11-04").data == bill


def test_the_bare_base64_alipay_key_works(sandbox: Sandbox) -> None:
    got = sandbox.fetch("trade", "2026-11-04", alipay_public_key=sandbox.gateway.alipay_public_key_base64)
    assert got.data == BILLS[(PID, "trade", "2026-11-04")]


def test_directory_store(sandbox: Sandbox, tmp_path: Path) -> None:
    (tmp_path / PID / "trade").mkdir(parents=True)
    (tmp_path / PID / "trade" / "20261103.csv.zip").write_bytes(bill_zip(PID, "20261103"))
    (tmp_path / account20(PID) / "signcustomer").mkdir(parents=True)
    (tmp_path / account20(PID) / "signcustomer" / "202609.csv.zip").write_bytes(bill_zip(PID, "202609", "账务明细"))
    sandbox.gateway.store = DirectoryBillStore(tmp_path)
    assert sandbox.fetch("trade", "2026-11-03").data == bill_zip(PID, "20261103")
    assert sandbox.fetch("signcustomer", "2026-09").data == bill_zip(PID, "202609", "账务明细")
    with pytest.raises(BillNotReady):
        sandbox.fetch("trade", "2026-11-04")
    assert DirectoryBillStore(tmp_path).get("../..", "trade", "20261103") is None


# -- signatures --------------------------------------------------------------------------------------


def test_a_bad_request_signature_gets_the_documented_answer(sandbox: Sandbox) -> None:
    params = sandbox.params()
    good_sign = params["sign"]
    params["sign"] = good_sign[:-8] + ("A" if good_sign[-8] != "A" else "B") + good_sign[-7:]
    answer = sandbox.send(params)
    assert not answer.signed and answer.node == "error_response"
    assert (answer.fields["code"], answer.fields["sub_code"]) == ("40002", "isv.invalid-signature")
    built = sign_content(params)
    assert answer.fields["sub_msg"] == INVALID_SIGNATURE_SUB_MSG + built
    assert built.startswith("app_id=2021000000000001&biz_content={") and "sign=" not in built.replace("sign_type", "")


def test_a_client_with_the_wrong_key_is_told_which_setting(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIRECON_TEST_OTHER_KEY", sandbox.keys.pem("other").decode())
    with pytest.raises(OpenApiConfigError) as info:
        sandbox.fetch("trade", "2026-11-04", private_key_env="ALIRECON_TEST_OTHER_KEY")
    assert info.value.sub_code == "isv.invalid-signature" and "private key" in info.value.parameter
    assert ACCOUNT in str(info.value)


def test_the_wrong_alipay_key_rejects_every_answer(sandbox: Sandbox) -> None:
    other_pub = sandbox.keys.public_pem("other")
    with pytest.raises(ResponseSignatureError):
        sandbox.fetch("trade", "2026-11-04", alipay_public_key=other_pub)
    assert sandbox.gateway.stats.downloads == 0


def test_a_broken_response_signature_is_rejected_and_the_url_never_used(sandbox: Sandbox) -> None:
    sandbox.gateway.faults.broken_signature = 1
    with pytest.raises(ResponseSignatureError):
        sandbox.fetch("trade", "2026-11-04")
    assert sandbox.gateway.stats.issued == 1 and sandbox.gateway.stats.downloads == 0
    assert sandbox.fetch("trade", "2026-11-04").data  # the fault was used up


# -- validation of the common parameters (alipay-cn.md 12.2) ----------------------------------------------


@pytest.mark.parametrize(("name", "sub_code"), [
    ("method", "isv.missing-method"), ("app_id", "isv.missing-app-id"), ("sign", "isv.missing-signature"),
    ("sign_type", "isv.missing-signature-type"), ("timestamp", "isv.missing-timestamp"),
    ("version", "isv.missing-version"),
])
def test_missing_parameters(sandbox: Sandbox, name: str, sub_code: str) -> None:
    params = sandbox.params()
    del params[name]
    answer = sandbox.send(params)
    assert (answer.fields["code"], answer.fields["sub_code"]) == ("40001", sub_code)
    assert not answer.signed and sandbox.gateway.stats.issued == 0


@pytest.mark.parametrize(("name", "value", "sub_code"), [
    ("method", "alipay.trade.query", "isv.invalid-method"),
    ("app_id", "2021999999999999", "isv.invalid-app-id"),
    ("sign_type", "MD5", "isv.invalid-signature-type"),
    ("charset", "latin-1", "isv.invalid-charset"),
    ("format", "xml", "isv.invalid-format"),
    ("version", "2.0", "isv.invalid-parameter"),
    ("timestamp", "2026/11/05 10:00:00", "isv.invalid-timestamp"),
    ("timestamp", "2026-11-05 02:00:00", "isv.invalid-timestamp"),  # UTC written as if Beijing time: 8 h off
])
def test_invalid_parameters(sandbox: Sandbox, name: str, value: str, sub_code: str) -> None:
    params = sandbox.params()
    params[name] = value
    answer = sandbox.send(params)
    assert (answer.fields["code"], answer.fields["sub_code"]) == ("40002", sub_code)


def test_a_repeated_parameter_is_refused(sandbox: Sandbox) -> None:
    params = sandbox.params()
    response = sandbox.http.post(sandbox.gateway.url, params={"app_id": APP_ID}, data=params)
    answer = verify_response(response.text, sandbox.gateway.alipay_public_key)
    assert answer.fields["sub_code"] == "isv.invalid-parameter" and "app_id" in answer.fields["sub_msg"]


def test_odd_requests_get_answers_not_crashes(sandbox: Sandbox) -> None:
    params = sandbox.params()
    params["charset"] = ""  # dropped from the string to sign: the signature no longer matches
    assert sandbox.send(params).fields["sub_code"] == "isv.invalid-signature"
    http, url = sandbox.http, sandbox.gateway.url
    assert http.post(url).json()["error_response"]["sub_code"] == "isv.missing-method"
    assert http.post(url + "?method=x", content=b"a=1", headers={"Content-Type": "application/xml"}).json()[
        "error_response"]["sub_code"] == "isv.invalid-parameter"
    assert http.get(sandbox.gateway.base_url + "/other").status_code == 404
    assert http.put(url, content=b"").status_code == 501
    assert http.post(url, content=iter([b"method=x"])).status_code == 411  # chunked
    assert sandbox.gateway.stats.issued == 0


def test_a_skewed_client_clock_is_refused(sandbox: Sandbox) -> None:
    with pytest.raises(OpenApiConfigError) as info:
        fetch_bill(sandbox.config(), ACCOUNT, "trade", "2026-11-04", now=lambda: NOW + timedelta(hours=1))
    assert info.value.sub_code == "isv.invalid-timestamp" and "clock" in info.value.parameter


# -- dates, bill types and empty days --------------------------------------------------------------------


@pytest.mark.parametrize(("now", "bill_date"), [
    (NOW, "2026-11-05"),  # today
    (NOW, "2026-11-06"),  # the future
    (NOW, "2026-11"),  # the current month
    (datetime(2026, 11, 2, 12, 0, tzinfo=UTC8), "2026-10"),  # last month, before its generation day (the 3rd)
    (NOW, "2026-11-31"),  # no such day
    (NOW, "2026/11/04"),
])
def test_dates_not_closed_are_invalid_arguments(sandbox: Sandbox, now: datetime, bill_date: str) -> None:
    sandbox.clock.set(now)
    params = sandbox.params()  # the client refuses open periods itself, so these requests are built by hand
    params["biz_content"] = json.dumps({"bill_type": "trade", "bill_date": bill_date})
    params["sign"] = sign(sign_content(params), sandbox.keys.app)
    answer = sandbox.send(params)
    assert answer.signed and (answer.fields["code"], answer.fields["sub_code"]) == ("40004", "isv.invalid_arguments")
    assert sandbox.gateway.stats.issued == 0
    params["sign"] = params["sign"][::-1]  # the signature is checked before the business parameters
    assert sandbox.send(params).fields["sub_code"] == "isv.invalid-signature"


def test_the_client_maps_an_ungenerated_month_to_not_closed(sandbox: Sandbox) -> None:
    sandbox.clock.set(datetime(2026, 11, 2, 12, 0, tzinfo=UTC8))
    with pytest.raises(BillNotClosed) as info:
        sandbox.fetch("trade", "2026-10")
    assert info.value.sub_code == "isv.invalid_arguments"  # asked: the month is over, but not generated
    sandbox.clock.set(datetime(2026, 11, 3, 0, 0, tzinfo=UTC8))
    assert sandbox.fetch("trade", "2026-10").data == BILLS[(account20(PID), "trade", "202610")]


def test_yesterday_before_its_bill_is_generated_is_not_ready(sandbox: Sandbox) -> None:
    sandbox.clock.set(datetime(2026, 11, 5, 7, 30, tzinfo=UTC8))
    with pytest.raises(BillNotReady) as info:
        sandbox.fetch("trade", "2026-11-04")
    assert not info.value.past_due and info.value.sub_code == "isp.bill_not_exist"
    sandbox.clock.set(datetime(2026, 11, 5, 9, 0, tzinfo=UTC8))
    assert sandbox.fetch("trade", "2026-11-04").data


def test_an_empty_day(sandbox: Sandbox) -> None:
    with pytest.raises(BillNotReady) as info:
        sandbox.fetch("trade", "2026-11-02")  # the store has no bill for it
    assert info.value.past_due  # 3 days later: the scheduler records a day without data
    sandbox.gateway.settings.empty_day = "empty_file"
    got = sandbox.fetch("trade", "2026-11-02")
    assert got.empty and got.bill_file_code == EMPTY_DATA_WITH_BILL_FILE
    assert extract_bill_zip(got.data, got.file_name) == []
    sandbox.gateway.settings.empty_bill = lambda pid, bill_type, period: bill_zip(pid, period)
    assert sandbox.fetch("trade", "2026-11-02").data == bill_zip(PID, "20261102")


def test_bill_types(sandbox: Sandbox) -> None:
    for bill_type in ("merchant_act", "TRADE"):
        with pytest.raises(OpenApiConfigError) as info:
            sandbox.fetch(bill_type, "2026-11-04")
        assert info.value.sub_code == "TYPE_NOT_SUPPORTED" and "bill_type" in info.value.parameter
    sandbox.gateway.settings = GatewaySettings(bill_types=("trade", "signcustomer", "merchant_act"))
    with pytest.raises(BillNotReady):  # supported, but no bill in the store
        sandbox.fetch("merchant_act", "2026-11-04")


def test_dates_before_registration(sandbox: Sandbox) -> None:
    for bill_date in ("2019-12-31", "2019-12"):
        with pytest.raises(OpenApiConfigError) as info:
            sandbox.fetch("trade", bill_date)
        assert info.value.sub_code == "BILL_DATE_BEFORE_REGISTRATION" and info.value.parameter == "bill_date"


# -- app_auth_token (main-account / ISV mode) ------------------------------------------------------------


def test_app_auth_token_fetches_the_authorising_accounts_bill(sandbox: Sandbox,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    token = sandbox.gateway.grant(PID_B, APP_ID)
    monkeypatch.setenv("ALIRECON_TEST_TOKEN", token)
    got = sandbox.fetch("trade", "2026-11-04", app_auth_token_env="ALIRECON_TEST_TOKEN")
    assert got.data == BILLS[(PID_B, "trade", "2026-11-04")] and got.file_name.startswith(account20(PID_B))
    assert f"app_auth_token={token}" in (sandbox.gateway.stats.last_sign_content or "")  # it was signed


def test_unknown_or_foreign_tokens_are_20001(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    foreign = sandbox.gateway.grant(PID_B, OTHER_APP)  # granted to another app
    for token in ("0" * 32, foreign):
        monkeypatch.setenv("ALIRECON_TEST_TOKEN", token)
        with pytest.raises(OpenApiConfigError) as info:
            fetch_bill(sandbox.config(app_auth_token_env="ALIRECON_TEST_TOKEN"), ACCOUNT, "trade", "2026-11-04",
                       now=sandbox.clock.now)
        assert info.value.code == "20001" and "app_auth_token" in info.value.parameter
        assert token not in str(info.value)


# -- faults --------------------------------------------------------------------------------------------


def test_rate_limits_are_retried_after_a_minute(sandbox: Sandbox) -> None:
    sandbox.gateway.faults.rate_limit = 2
    sandbox.gateway.faults.rate_limit_code = "USER_RATE_LIMIT"
    assert sandbox.fetch("trade", "2026-11-04").data
    assert len(sandbox.sleeps) == 2 and min(sandbox.sleeps) >= 60
    assert sandbox.gateway.stats.answers["40004 USER_RATE_LIMIT"] == 2
    sandbox.gateway.faults.rate_limit = 5
    with pytest.raises(RateLimited):
        sandbox.fetch("trade", "2026-11-04")


def test_service_unavailable_once_is_retried(sandbox: Sandbox) -> None:
    sandbox.gateway.faults.unavailable = 1
    assert sandbox.fetch("trade", "2026-11-04").data
    assert sandbox.gateway.stats.answers["20000 isp.unknow-error"] == 1 and len(sandbox.sleeps) == 1
    sandbox.gateway.faults.unavailable = 3
    with pytest.raises(TransientApiError):
        sandbox.fetch("trade", "2026-11-04")


# -- the 30-second URL on the simulated clock ------------------------------------------------------------


def test_urls_really_expire_after_30_simulated_seconds(sandbox: Sandbox) -> None:
    url = sandbox.send(sandbox.params()).fields["bill_download_url"]
    http = sandbox.http
    sandbox.clock.advance(timedelta(seconds=30))
    assert http.get(url).status_code == 200  # still within the 30 seconds
    sandbox.clock.advance(timedelta(seconds=1))
    expired = http.get(url)
    assert expired.status_code == 403 and b"expired" in expired.content
    assert http.get(url.replace("token=", "token=0")).status_code == 403  # unknown token
    assert sandbox.gateway.stats.expired_downloads == 1 and sandbox.gateway.stats.refused_downloads == 1


def _age_first_urls(sandbox: Sandbox, count: int) -> list[IssuedUrl]:
    aged: list[IssuedUrl] = []

    def hook(issued: IssuedUrl) -> None:
        if len(aged) < count:
            aged.append(issued)
            sandbox.clock.advance(timedelta(seconds=31))  # between the query and the download

    sandbox.gateway.faults.after_issue = hook
    return aged


def test_an_old_url_is_replaced_before_downloading(sandbox: Sandbox) -> None:
    aged = _age_first_urls(sandbox, 1)
    got = sandbox.fetch("trade", "2026-11-04")
    assert got.data and got.urls_requested == 2 and len(aged) == 1
    stats = sandbox.gateway.stats
    assert stats.issued == 2 and stats.downloads == 1 and stats.expired_downloads == 0  # the age was in the URL


def test_an_expired_url_without_timestamp_is_refused_and_replaced(sandbox: Sandbox) -> None:
    sandbox.gateway.faults.omit_url_timestamp = True
    _age_first_urls(sandbox, 1)
    got = sandbox.fetch("trade", "2026-11-04")
    assert got.data and got.urls_requested == 2
    stats = sandbox.gateway.stats
    assert stats.issued == 2 and stats.expired_downloads == 1 and stats.downloads == 1  # the 403 path


def test_fresh_urls_are_bounded(sandbox: Sandbox) -> None:
    sandbox.gateway.faults.omit_url_timestamp = True
    _age_first_urls(sandbox, 10)
    with pytest.raises(DownloadExpired):
        sandbox.fetch("trade", "2026-11-04", url_refreshes=2)
    assert sandbox.gateway.stats.issued == 3 and sandbox.gateway.stats.expired_downloads == 3


def test_a_slow_download_times_out_and_is_asked_again(sandbox: Sandbox) -> None:
    sandbox.gateway.faults.slow_download = 0.6
    with pytest.raises(DownloadExpired, match="Timeout"):
        sandbox.fetch("trade", "2026-11-04", timeout=0.2, url_refreshes=1)
    assert sandbox.gateway.stats.issued == 2
    sandbox.gateway.faults.slow_download = 0.05
    assert sandbox.fetch("trade", "2026-11-04", timeout=2).data


# -- TLS ---------------------------------------------------------------------------------------------


def test_tls_with_the_gateway_certificate(keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, keys.pem("app").decode())
    clock = SimClock(NOW)
    gateway = AlipayGateway(clock, MemoryBillStore(BILLS), alipay_key=keys.alipay, tls=True)
    gateway.register_app(APP_ID, keys.app.public_key(), PID)
    with gateway:
        assert gateway.url.startswith("https://") and gateway.ca_pem is not None
        (tmp_path / "ca.pem").write_bytes(gateway.ca_pem)
        box = Sandbox(gateway, clock, keys)
        got = box.fetch("trade", "2026-11-04", ca_file=tmp_path / "ca.pem")
        assert got.data == BILLS[(PID, "trade", "2026-11-04")] and (got.url or "").startswith("https://")
        with pytest.raises(GatewayUnreachable):  # the system CAs do not know the sandbox's certificate
            box.fetch("trade", "2026-11-04", retries=0)
        box.close()


# -- secrets -------------------------------------------------------------------------------------------


def test_no_key_or_token_in_logs_reprs_or_errors(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    token = sandbox.gateway.grant(PID_B, APP_ID, token=f"tok{uuid.uuid4().hex}")
    monkeypatch.setenv("ALIRECON_TEST_TOKEN", token)
    monkeypatch.setenv("ALIRECON_TEST_OTHER_KEY", sandbox.keys.pem("other").decode())
    secrets = [token, *key_material(sandbox.keys.pem("app")), *key_material(sandbox.keys.pem("other"))]
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        sandbox.gateway.faults.rate_limit = 1
        got = sandbox.fetch("trade", "2026-11-04", app_auth_token_env="ALIRECON_TEST_TOKEN")
        texts += [repr(got), str(got.url)]
        # a wrong key: the gateway's answer echoes the string it built, app_auth_token included
        with pytest.raises(OpenApiConfigError) as info:
            sandbox.fetch("trade", "2026-11-04", app_auth_token_env="ALIRECON_TEST_TOKEN",
                          private_key_env="ALIRECON_TEST_OTHER_KEY")
        texts += [str(info.value), repr(info.value), str(info.value.args)]
        with OpenApiClient(sandbox.config(app_auth_token_env="ALIRECON_TEST_TOKEN"), account=ACCOUNT,
                           now=sandbox.clock.now) as client:
            texts += [repr(client), repr(client.query("trade", "2026-11-04")), repr(client.__dict__)]
    assert "***" in str(info.value) and INVALID_SIGNATURE_SUB_MSG in str(info.value)
    download_tokens = [i.token for i in sandbox.gateway.issued.values()]
    assert download_tokens and any(r.name == "httpx" for r in caplog.records)
    texts += [r.getMessage() for r in caplog.records]
    for text in texts:
        assert_clean(text, secrets + download_tokens)
