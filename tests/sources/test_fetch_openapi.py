"""Fetching Alipay China bills through the open platform into a workspace: a real sandbox gateway on loopback,
bills written by the format's own writers, RSA keys generated here. Everything arrives verified, archived as
received and ingested entry by entry with lineage; re-runs skip; a day not generated yet is pending, then
arrives; a forged response is refused and leaves nothing behind; console downloads import through a folder."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alirecon.clock import UTC8
from alirecon.config import AccountConfig, OpenApiConfig, WorkspaceConfig
from alirecon.fetch import daily, fetch_account, ingest_fetched, openapi_periods
from alirecon.formats import alipay_cn as cn
from alirecon.sandbox.alipay_gateway import AlipayGateway, MemoryBillStore, account20
from alirecon.sandbox.clock import SimClock
from alirecon.sources.billzip import write_bill_zip
from alirecon.sources.folder import import_folder
from alirecon.warehouse import Workspace

from . import test_openapi
from .conftest import archive_is_clean
from .test_openapi import Keys, assert_clean, key_material

keys = test_openapi.keys  # the session's 2048-bit keys, generated once

APP_ID = "2021000000000001"
PID = "2088123412341234"
ACCT = account20(PID)
NAME = "shop-cn"
KEY_ENV = "ALIRECON_TEST_FETCH_OPENAPI_KEY"
NOW = datetime(2026, 11, 5, 10, 0, tzinfo=UTC8)  # 11-04 is closed; its bill is due 11-05 09:00
EXPORTED = datetime(2026, 11, 5, 6, 0, tzinfo=UTC8)
DAYS = ("2026-11-03", "2026-11-04")


def trades(day: str) -> list[dict[str, Any]]:
    """Three trades of ``day`` (yyyy-MM-dd), or of the 15th of a month (yyyy-MM: a monthly bill's rows)."""
    done = datetime.fromisoformat(f"{day if len(day) == 10 else day + '-15'}T12:00:00").replace(tzinfo=UTC8)
    return [{"支付宝交易号": f"2026{day[-2:]}{i:020d}", "商户订单号": f"ORD-{day}-{i}", "业务类型": "交易",
             "创建时间": done, "完成时间": done + timedelta(minutes=i), "订单金额（元）": 1000 + i,
             "商家实收（元）": 1000 + i, "服务费（元）": -6} for i in range(3)]


def movements(day: str) -> list[dict[str, Any]]:
    at = datetime.fromisoformat(f"{day if len(day) == 10 else day + '-15'}T12:00:00").replace(tzinfo=UTC8)
    rows = [{"账务流水号": f"F{day[-2:]}{i}", "发生时间": at + timedelta(minutes=i), "业务类型": "交易",
             "收入金额（+元）": 1000 + i, "支出金额（-元）": None} for i in range(3)]
    return cn.account_rows(rows, 50_000)


def bill_files(bill_type: str, day: str) -> list[tuple[str, bytes]]:
    """The two CSV files of one bill zip, summary first as real zips have them (alipay-cn.md 4)."""
    if bill_type == "trade":
        detail, summary, rows, totals = "trade_detail", "trade_summary", trades(day), cn.summarise_trades(trades(day))
    else:
        detail, summary, rows, totals = ("account_detail", "account_summary", movements(day),
                                         cn.summarise_account(movements(day)))
    return [(cn.file_name(summary, ACCT, day), cn.write_report(summary, totals, account=ACCT, period=day,
                                                               exported_at=EXPORTED)),
            (cn.file_name(detail, ACCT, day), cn.write_report(detail, rows, account=ACCT, period=day,
                                                              exported_at=EXPORTED))]


def bill_zip(bill_type: str, day: str) -> bytes:
    return write_bill_zip(bill_files(bill_type, day))


@dataclass
class Setup:
    gateway: AlipayGateway
    clock: SimClock
    store: MemoryBillStore
    ws: Workspace

    def account(self, **overrides: Any) -> AccountConfig:
        data: dict[str, Any] = {"gateway": self.gateway.url, "app_id": APP_ID, "private_key_env": KEY_ENV,
                                "alipay_public_key": self.gateway.alipay_public_key_pem, "timeout": 5.0,
                                "retries": 1, "backoff_initial": 0.01, "backoff_max": 0.02}
        return AccountConfig(name=NAME, family="alipay_cn", account_id=ACCT,
                             openapi=OpenApiConfig.model_validate(data | overrides))

    def fetch(self, since: str = DAYS[0], until: str = DAYS[1], **overrides: Any) -> Any:
        return fetch_account(self.ws, self.account(**overrides), since=date.fromisoformat(since),
                             until=date.fromisoformat(until), now=self.clock.now())


@pytest.fixture
def setup(keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    monkeypatch.setenv(KEY_ENV, keys.pem("app").decode())
    clock = SimClock(NOW)
    store = MemoryBillStore({(PID, t, d): bill_zip(t, d) for t in ("trade", "signcustomer") for d in DAYS})
    gateway = AlipayGateway(clock, store, alipay_key=keys.alipay)
    gateway.register_app(APP_ID, keys.app.public_key(), PID, registered_on=date(2020, 1, 1))
    with gateway, Workspace.init(tmp_path / "ws") as ws:
        yield Setup(gateway, clock, store, ws)


def entry_hashes(*pairs: tuple[str, str]) -> set[str]:
    return {hashlib.sha256(data).hexdigest() for t, d in pairs for _, data in bill_files(t, d)}


def test_closed_periods_only() -> None:
    periods = openapi_periods(NOW, date(2026, 10, 30), date(2026, 11, 5), monthly=True)
    assert [p.text for p in periods] == ["2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03",
                                         "2026-11-04", "2026-10"]  # today and this month are still open



def test_the_default_window_is_the_accounts_window_days(setup: Setup) -> None:
    """Without --since, a fetch asks for the last ``openapi.window_days`` closed days (here: only 11-04)."""
    assert [p.text for p in openapi_periods(NOW, None, None, monthly=False, window_days=2)] == [
        "2026-11-03", "2026-11-04"]
    summary = fetch_account(setup.ws, setup.account(window_days=1), now=setup.clock.now())
    assert sorted(f.path for f in summary.files) == ["signcustomer/2026-11-04", "trade/2026-11-04"]

def test_everything_arrives_is_archived_ingested_with_lineage_and_a_rerun_skips(setup: Setup, keys: Keys) -> None:
    summary = setup.fetch()
    assert summary.error is None and summary.ok, summary.to_dict()
    assert sorted(f.path for f in summary.files if f.status == "new") == [
        "signcustomer/2026-11-03", "signcustomer/2026-11-04", "trade/2026-11-03", "trade/2026-11-04"]
    for f in summary.files:  # the zip archived exactly as the gateway served it
        bill_type, day = f.path.split("/")
        assert f.sha256 == hashlib.sha256(bill_zip(bill_type, day)).hexdigest()
        assert setup.ws.archive.path_of(f.sha256).read_bytes() == bill_zip(bill_type, day)
        assert f.name == f"{ACCT}_{day.replace('-', '')}.csv.zip"
    manifest = setup.ws.remote_files(NAME).to_pylist()
    assert {(r["source"], r["state"]) for r in manifest} == {("openapi", "complete")}
    assert all(r["ingested_at"] is not None for r in manifest)
    assert summary.ingest is not None and summary.ingest.count("new") == 8
    assert {o.status for o in summary.ingest.files} == {"new"}
    assert {o.report for o in summary.ingest.files} == {"trade_detail", "trade_summary", "account_detail",
                                                        "account_summary"}
    # lineage: each bill line points at its CSV entry's own sha256 and line
    parsed = setup.ws.con.execute("SELECT sha256, status FROM files").fetchall()
    assert {s for s, _ in parsed} == entry_hashes(*((t, d) for t in ("trade", "signcustomer") for d in DAYS))
    assert {st for _, st in parsed} == {"parsed"}
    detail = hashlib.sha256(dict(bill_files("trade", DAYS[1]))[cn.file_name("trade_detail", ACCT, DAYS[1])]
                            ).hexdigest()
    lines = setup.ws.con.execute("SELECT count(*), min(line_no) FROM report_lines WHERE source_sha256 = ?",
                                 [detail]).fetchall()
    assert lines[0][0] == 3 and lines[0][1] > 1
    assert archive_is_clean(setup.ws) == []
    assert_clean(repr(summary.to_dict()), key_material(keys.pem("app")))

    issued = setup.gateway.stats.issued
    again = setup.fetch()
    assert again.ok and again.new == 0 and again.skipped == 4
    assert setup.gateway.stats.issued == issued  # nothing was even asked for
    assert again.ingest is not None and again.ingest.files == ()


def test_a_day_not_generated_yet_is_pending_then_arrives(setup: Setup) -> None:
    late = MemoryBillStore({(PID, "trade", DAYS[0]): bill_zip("trade", DAYS[0])})
    setup.gateway.store = late
    first = setup.fetch(bill_types=["trade"])
    assert first.ok and [(f.path, f.status) for f in first.files] == [
        ("trade/2026-11-03", "new"), ("trade/2026-11-04", "pending")]
    assert any("trade/2026-11-04" in n and "pending" in n for n in first.notes)
    assert [r["remote_path"] for r in setup.ws.remote_files(NAME).to_pylist()] == ["trade/2026-11-03"]

    late.put(PID, "trade", DAYS[1], bill_zip("trade", DAYS[1]))
    setup.clock.advance(timedelta(hours=3))
    second = setup.fetch(bill_types=["trade"])
    assert [(f.path, f.status) for f in second.files] == [("trade/2026-11-03", "skipped"),
                                                          ("trade/2026-11-04", "new")]
    assert second.ingest is not None and second.ingest.count("new") == 2


def test_no_bill_past_its_time_is_recorded_as_an_empty_day(setup: Setup) -> None:
    setup.clock.advance(timedelta(days=1))  # 11-02 was due 11-03 09:00 plus a day's grace
    got = setup.fetch(since="2026-11-02", until="2026-11-02", bill_types=["trade"])
    assert got.ok and [(f.path, f.status, f.code, f.size) for f in got.files] == [
        ("trade/2026-11-02", "new", "not_ready", 0)]
    assert got.ingest is not None and got.ingest.files == ()  # nothing to parse, nothing quarantined
    again = setup.fetch(since="2026-11-02", until="2026-11-02", bill_types=["trade"])
    assert [f.status for f in again.files] == ["skipped"]


def test_a_forged_response_fails_and_nothing_of_it_is_archived(setup: Setup) -> None:
    setup.gateway.faults.broken_signature = 1
    got = setup.fetch(until=DAYS[0], bill_types=["trade", "signcustomer"])
    outcomes = {f.path: f for f in got.files}
    assert not got.ok and outcomes["trade/2026-11-03"].status == "failed"
    assert outcomes["trade/2026-11-03"].code == "signature"
    assert outcomes["signcustomer/2026-11-03"].status == "new"  # one bill's failure never stops the others
    archived = set(setup.ws.archive)
    assert hashlib.sha256(bill_zip("trade", DAYS[0])).hexdigest() not in archived
    assert entry_hashes(("trade", DAYS[0])).isdisjoint(archived)
    row = next(r for r in setup.ws.remote_files(NAME).to_pylist() if r["remote_path"] == "trade/2026-11-03")
    assert row["state"] == "failed" and row["sha256"] is None and "ResponseSignatureError" in row["reason"]
    retry = setup.fetch(until=DAYS[0], bill_types=["trade"])  # the fault is used up: fetched next time
    assert [(f.path, f.status) for f in retry.files] == [("trade/2026-11-03", "new")]


def test_a_configuration_refusal_fails_without_secrets(setup: Setup, keys: Keys) -> None:
    got = setup.fetch(until=DAYS[0], bill_types=["settlementMerge"])  # a type the gateway does not serve
    assert [(f.status, f.code) for f in got.files] == [("failed", "config")]
    assert "settlementMerge" in (got.files[0].error or "") or "bill_type" in (got.files[0].error or "")
    assert_clean(repr(got.to_dict()), key_material(keys.pem("app")))


def test_a_missing_private_key_is_the_accounts_error(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    got = setup.fetch()
    assert not got.ok and got.error is not None and KEY_ENV in got.error and got.files == []


def test_daily_runs_openapi_accounts(setup: Setup, tmp_path: Path) -> None:
    cfg = WorkspaceConfig(accounts=[setup.account(bill_types=["trade"])])
    with Workspace.init(tmp_path / "daily", cfg) as ws:
        out = daily(ws, setup.clock.now())
        [fetched] = [f for f in out.fetches if f.account == NAME]
        assert fetched.source == "openapi" and fetched.error is None
        # the default window: the 7 days before today; only the two days with bills are downloaded, the
        # others (no bill, past due) are recorded as empty days
        by_path = {f.path: f for f in fetched.files}
        assert len(by_path) == 7 and all(by_path[f"trade/{d}"].size for d in DAYS)
        assert sum(1 for f in fetched.files if f.size == 0 and f.code == "not_ready") == 5
        assert all(f.status == "new" for f in fetched.files)
        parsed = {s for (s,) in ws.con.execute("SELECT sha256 FROM files WHERE status = 'parsed'").fetchall()}
        assert parsed == entry_hashes(*(("trade", d) for d in DAYS))
        assert out.new_run and out.run_id is not None


def test_folder_import_of_a_console_zip_and_a_bare_gbk_csv(setup: Setup, tmp_path: Path) -> None:
    folder = tmp_path / "console"
    folder.mkdir()
    (folder / f"{ACCT}_20261103.csv.zip").write_bytes(bill_zip("trade", DAYS[0]))
    name, data = bill_files("signcustomer", DAYS[1])[1]
    (folder / name).write_bytes(data)
    assert "账务明细".encode("gbk") in data  # really GBK bytes
    (folder / "notes.zip").write_bytes(write_bill_zip([("readme.txt", b"no bill here")]))
    got = import_folder(setup.ws, folder, account=NAME)
    by_name = {f.name: f for f in got.files}
    assert by_name[f"{ACCT}_20261103.csv.zip"].status == "new"
    assert by_name[name].status == "new"
    assert by_name["notes.zip"].status == "skipped" and by_name["notes.zip"].code == "unknown_format"
    assert got.ingest is not None and got.ingest.count("new") == 3 and got.ingest.ok
    archived = set(setup.ws.archive)
    assert hashlib.sha256(bill_zip("trade", DAYS[0])).hexdigest() in archived  # the zip as downloaded
    assert entry_hashes(("trade", DAYS[0])) <= archived
    parsed = {s for (s,) in setup.ws.con.execute("SELECT sha256 FROM files WHERE status = 'parsed'").fetchall()}
    assert parsed == entry_hashes(("trade", DAYS[0])) | {hashlib.sha256(data).hexdigest()}
    assert ingest_fetched(setup.ws).files == ()  # everything handed over exactly once


def test_a_hostile_console_zip_is_refused_untouched(setup: Setup, tmp_path: Path) -> None:
    folder = tmp_path / "console"
    folder.mkdir()
    good = bill_files("trade", DAYS[0])
    (folder / "bill.zip").write_bytes(write_bill_zip([*good, ("../escape.csv", good[1][1])]))
    got = import_folder(setup.ws, folder, account=NAME)
    assert [(f.status, f.code) for f in got.files] == [("skipped", "unsafe_zip_entry")]
    assert got.ingest is not None and got.ingest.files == ()


def test_an_empty_bill_file_is_archived_and_ingested_once_with_nothing_to_load(setup: Setup) -> None:
    setup.gateway.settings.empty_day = "empty_file"  # EMPTY_DATA_WITH_BILL_FILE (alipay-cn.md 2.4)
    got = setup.fetch(since="2026-11-02", until="2026-11-02", bill_types=["trade"])
    [outcome] = got.files
    assert got.ok and outcome.status == "new" and outcome.code == "empty" and (outcome.size or 0) > 0
    assert got.ingest is not None and got.ingest.files == ()
    assert [r["ingested_at"] is not None for r in setup.ws.remote_files(NAME).to_pylist()] == [True]
    assert ingest_fetched(setup.ws).files == ()



def test_status_tells_bills_arrived_empty_days_and_missing_ones(setup: Setup) -> None:
    """``alirecon status`` for an Alipay China account: a fetched day arrived (its four reports), a day the API
    has no bill for is arrived-empty once the fetch recorded it, a day never fetched is due then late."""
    from alirecon.status import workspace_status

    setup.ws.config.accounts.append(setup.account())
    # 11-02 has no bill at the gateway and is past its expected time plus the grace: an empty day
    assert setup.fetch(since="2026-11-02", until="2026-11-03").error is None

    def states(hour: int) -> dict[str, set[str]]:
        report = workspace_status(setup.ws, now=NOW.replace(hour=hour), since=date(2026, 11, 2),
                                  until=date(2026, 11, 4))
        out: dict[str, set[str]] = {}
        for row in report.rows:
            out.setdefault(row.expected.day.isoformat(), set()).add(f"{row.expected.report}:{row.state}")
        return out

    reports = ("account_detail", "account_summary", "trade_detail", "trade_summary")
    at_ten = states(10)  # 11-04's bills were due at 09:00; the grace is 2 hours
    assert at_ten == {"2026-11-02": {f"{r}:arrived" for r in reports}, "2026-11-03": {f"{r}:arrived" for r in reports},
                      "2026-11-04": {f"{r}:due" for r in reports}}
    assert states(12)["2026-11-04"] == {f"{r}:late" for r in reports}
    assert setup.fetch(since="2026-11-04", until="2026-11-04").ok
    assert states(12)["2026-11-04"] == {f"{r}:arrived" for r in reports}


def test_status_lists_monthly_bills_due_on_their_ready_day(setup: Setup) -> None:
    """With ``monthly = true``, status expects the month's four reports, due on ``monthly_ready_day`` of the next
    month: October's bill (due 11-04 09:00) is late at 11-05 10:00 until fetched; November's is pending. A window
    that does not touch October neither fetches nor expects its bill."""
    from alirecon.status import workspace_status

    for bill_type in ("trade", "signcustomer"):
        setup.store.put(PID, bill_type, "2026-10", bill_zip(bill_type, "2026-10"))
    setup.ws.config.accounts.append(setup.account(monthly=True))

    def monthly(since: date = date(2026, 10, 31)) -> dict[tuple[str, str], str]:
        report = workspace_status(setup.ws, now=NOW, since=since, until=date(2026, 11, 4))
        assert {r["period"] for r in report.to_dict()["reports"]} == {"daily", "monthly"}
        return {(r.expected.label, r.expected.report): r.state for r in report.rows
                if r.expected.period == "monthly"}

    reports = ("account_detail", "account_summary", "trade_detail", "trade_summary")
    assert monthly() == {**{("2026-10 (month)", r): "late" for r in reports},
                         **{("2026-11 (month)", r): "pending" for r in reports}}
    summary = setup.fetch(since="2026-10-31", until="2026-11-04", monthly=True)
    assert {"trade/2026-10", "signcustomer/2026-10"} <= {f.path for f in summary.files if f.status == "new"}
    assert monthly() == {**{("2026-10 (month)", r): "arrived" for r in reports},
                         **{("2026-11 (month)", r): "pending" for r in reports}}
    assert monthly(since=date(2026, 11, 1)) == {("2026-11 (month)", r): "pending" for r in reports}
