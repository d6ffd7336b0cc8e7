"""The sandbox barcode merchant: a day of payments through the real flow and gateway, the next day's B1 files.

The day runs once per module (about a second and a half: one pay is really delayed past the client's timeout).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest

from alirecon import pipeline
from alirecon.clock import UTC8
from alirecon.config import WorkspaceConfig
from alirecon.pay.client import CLIENT_TIMEOUT, ORDER_NOT_EXIST
from alirecon.pay.flow import PayJournal
from alirecon.sandbox.clock import SimClock
from alirecon.sandbox.pay_gateway import GatewayPayment, PayGateway
from alirecon.sandbox.sftp_server import ProviderTree, RemoteFile, SandboxServer
from alirecon.sandbox.world_barcode import (
    BARCODE_MERCHANT,
    JOURNAL_NAME,
    PLAN,
    PUBLISH_TIME,
    BarcodeDay,
    BarcodeMerchant,
    expected_findings,
    plan_payments,
    render_files,
    settlement_day,
)
from alirecon.status import workspace_status
from alirecon.warehouse import Workspace

DAY = date(2026, 11, 2)  # a Monday
NEXT = DAY + timedelta(days=1)  # an ordinary day: two payments, no faults
MID = BARCODE_MERCHANT.account_id


@dataclass
class Ran:
    day: BarcodeDay
    gateway: PayGateway
    merchant: BarcodeMerchant
    world: Path
    tree: ProviderTree


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    root = tmp_path_factory.mktemp("barcode")
    world = root / "world"
    world.mkdir()
    (world / "publish.json").write_text("{}", encoding="utf-8")
    (world / "truth.json").write_text(json.dumps({"exceptions": [], "accounts": [], "injections": []}),
                                      encoding="utf-8")
    clock = SimClock(datetime(2026, 11, 2, 10, tzinfo=UTC8))
    tree = ProviderTree([])
    with PayGateway(clock) as gateway:
        merchant = BarcodeMerchant(gateway, root / "ws")
        day = merchant.run_day(DAY, seed=7, clock=clock, world_root=world, tree=tree, until=NEXT)
    return Ran(day, gateway, merchant, world, tree)


def test_every_payment_ends_in_the_state_its_fault_leads_to(ran: Ran) -> None:
    planned = ran.day.planned
    assert {p.fault for p in planned} == set(PLAN)  # every fault of the plan is exercised
    assert {t: r.state for t, r in ran.day.records.items()} == {p.merchant_trans_id: PLAN[p.fault][2] for p in planned}
    assert all(r.final and (r.state == "SUCCESS" or r.reason) for r in ran.day.records.values())
    # the gateway's own records: charged exactly the payments the plan says it keeps, never one twice
    assert ran.day.charged == {p.merchant_trans_id for p in planned if PLAN[p.fault][3]}
    assert max(ran.gateway.stats.charges.values()) == 1
    statuses = {p.merchant_trans_id: p.status for p in ran.gateway.payments.values()}
    by_fault = {p.fault: p.merchant_trans_id for p in planned}
    assert statuses[by_fault["cancel_after_limit"]] == "CANCELLED"  # charged, then refunded by the cancel
    assert by_fault["manual_not_charged"] not in statuses  # lost inside the provider: nothing to settle


def test_the_faults_took_the_documented_paths(ran: Ran) -> None:
    by_fault = {p.fault: p.merchant_trans_id for p in ran.day.planned}
    with PayJournal(ran.merchant.workspace / JOURNAL_NAME) as journal:
        def codes(fault: str) -> list[tuple[str, str | None]]:
            return [(s.function, s.code) for s in journal.steps(MID, by_fault[fault]) if s.phase == "after"]

        assert codes("timeout")[0] == ("pay", CLIENT_TIMEOUT)
        assert codes("unknown_not_exist") == [("pay", "UNKNOWN_EXCEPTION"), ("payQuery", ORDER_NOT_EXIST),
                                              ("payQuery", "SUCCESS")]
        assert [c for f, c in codes("lost_not_exist") if f == "payQuery"] == [ORDER_NOT_EXIST] * 3
        limit = journal.get(MID, by_fault["cancel_after_limit"])
        assert limit is not None and limit.cancels == 1 and "time limit" in (
            " ".join(s.message or "" for s in journal.steps(MID, by_fault["cancel_after_limit"])))
        for fault in ("manual_charged", "manual_not_charged"):
            assert [f for f, _ in codes(fault)].count("payCancel") == 4  # the first try and three more (10.5 step 4)


def test_expected_findings_follow_the_two_sides_records() -> None:
    assert expected_findings([("A", "SUCCESS", True), ("B", "CANCELLED", False), ("C", "FAILED", False),
                              ("D", "MANUAL", False)]) == []
    found = expected_findings([("M", "MANUAL", True), ("F", "FAILED", True), ("S", "SUCCESS", False),
                               ("Q", "QUERYING", True)])
    assert [(e["match_key"], e["exception_class"], e["reason_code"]) for e in found] == [
        ("M", "status_mismatch", "LEDGER_NOT_SUCCESS"), ("F", "status_mismatch", "LEDGER_NOT_SUCCESS"),
        ("S", "missing_in_report", "NOT_IN_REPORT"), ("Q", "status_mismatch", "LEDGER_NOT_SUCCESS")]
    assert {e["report"] for e in found} == {"transaction_detail"} and {e["family"] for e in found} == {"barcode"}


def test_files_parse_pass_the_checks_and_settle_the_journal(ran: Ran, tmp_path: Path) -> None:
    day = ran.day
    folder = f"download/{MID}"
    assert day.files == {  # each business day settles itself; its files are published the next morning
        f"{folder}/{d:%Y%m%d}/ALIPAY_{kind}_USD_{d:%Y%m%d}.csv": datetime.combine(d + timedelta(days=1), PUBLISH_TIME,
                                                                                  UTC8)
        for d in (DAY, NEXT) for kind in ("TRANSACTION_DETAIL", "SETTLEMENT_DETAIL", "SETTLEMENT_SUMMARY")}
    assert [p.fault for p in day.planned if p.at.date() == NEXT] == ["none", "none"]
    config = WorkspaceConfig(ledgers=[ran.merchant.ledger_config()], accounts=[ran.merchant.account_config(None)])
    with Workspace.init(tmp_path / "ws", config) as ws:
        ingest = ws.ingest([ran.world / "provider" / rel for rel in day.files])
        assert ingest.ok and ingest.count("new") == 6
        pipeline.ingest_ledgers(ws)
        checks = pipeline.check(ws).results.to_pylist()
        run = pipeline.reconcile(ws)
        lines = ws.con.execute(f"SELECT report, merchant_ref_id, amount_minor, fee_minor, settlement_minor FROM "
                               f"({ws.report_lines_sql()}) WHERE family = 'barcode'").fetchall()
        # status expects the daily transaction detail (opt-in, schedule.py): both days arrived; the next one is
        # due at 09:00 UTC+8 the day after (schedule.barcode_publish_time) and late after the grace
        nxt = NEXT + timedelta(days=1)
        status = {hour: workspace_status(ws, now=datetime.combine(nxt + timedelta(days=1), time(hour), UTC8),
                                         since=DAY, until=nxt) for hour in (8, 10, 12)}
    for hour, state in ((8, "pending"), (10, "due"), (12, "late")):
        rows = {(r.expected.report, r.expected.day): r.state for r in status[hour].rows}
        assert rows == {("transaction_detail", DAY): "arrived", ("transaction_detail", NEXT): "arrived",
                        ("transaction_detail", nxt): state}, hour
    assert {r.expected.due_at for r in status[8].rows if r.expected.day == nxt} == {
        datetime.combine(nxt + timedelta(days=1), PUBLISH_TIME, UTC8)}
    barcode_checks = [c for c in checks if c["family"] == "barcode"]
    assert {c["check_id"] for c in barcode_checks} >= {"BC-2", "BC-4"}
    assert [c for c in barcode_checks if c["status"] == "fail"] == []
    amounts = {p.merchant_trans_id: p.amount for p in ran.gateway.accepted_payments()}
    for report in ("transaction_detail", "settlement_detail"):
        assert {ref: amount for r, ref, amount, _, _ in lines if r == report} == amounts
    assert all(s == a + f and f < 0 for r, _, a, f, s in lines if r == "settlement_detail")
    found = sorted((r["exception_class"], r["reason_code"], r["match_key"]) for r in run.exceptions.to_pylist())
    assert found == sorted((e["exception_class"], e["reason_code"], e["match_key"]) for e in day.exceptions)
    manual_charged = next(p.merchant_trans_id for p in day.planned if p.fault == "manual_charged")
    assert found == [("status_mismatch", "LEDGER_NOT_SUCCESS", manual_charged)]
    truth = json.loads((ran.world / "truth.json").read_text(encoding="utf-8"))
    assert truth["exceptions"] == day.exceptions
    assert json.loads((ran.world / "publish.json").read_text(encoding="utf-8")) == {
        rel: at.isoformat() for rel, at in day.files.items()}


def test_a_file_published_later_is_served_only_from_its_time(tmp_path: Path) -> None:
    local = tmp_path / "late.csv"
    local.write_bytes(b"type\n")
    at = datetime(2026, 11, 3, 9, tzinfo=UTC8)
    clock = SimClock(at - timedelta(hours=1))
    server = SandboxServer(ProviderTree([]), clock, users={"u": "p"})
    assert server.visible_files() == {}
    path = "/download/1/20261102/late.csv"
    server.tree.add(RemoteFile(path, local, at, 5))  # while the server runs: the tree is read per request
    assert server.visible_files() == {} and server.listing("/download/1", clock.now()) is None
    clock.set(at)
    assert list(server.visible_files()) == [path]
    assert [name for name, _ in server.listing("/download/1/20261102", clock.now()) or []] == ["late.csv"]
    with pytest.raises(ValueError, match="already"):
        server.tree.add(RemoteFile(path, local, at, 5))
    with pytest.raises(ValueError, match="time zone"):
        server.tree.add(RemoteFile("/other.csv", local, datetime(2026, 11, 3, 9), 5))


def test_plan_and_settlement_day() -> None:
    assert plan_payments(DAY, 1) == plan_payments(DAY, 1) != plan_payments(DAY, 2)
    assert len({p.merchant_trans_id for p in plan_payments(DAY, 1)}) == len(plan_payments(DAY, 1))
    assert settlement_day(DAY) == DAY  # Monday settles itself
    assert settlement_day(date(2026, 11, 7)) == date(2026, 11, 9)  # Saturday -> Monday (barcode.md 2.1)


def test_the_journal_is_where_alirecon_pay_keeps_it() -> None:
    from alirecon.cli import PAY_JOURNAL_NAME

    assert JOURNAL_NAME == PAY_JOURNAL_NAME


def test_weekend_payments_settle_together_on_monday() -> None:
    sat, sun, mon = date(2026, 11, 7), date(2026, 11, 8), date(2026, 11, 9)
    paid = [GatewayPayment(MID, f"T-{n}", f"2026{n:020d}", 1000 * n, "USD", "280000000000000000", "Tea", "SUCCESS",
                           "SUCCESS", datetime.combine(d, time(12), UTC8)) for n, d in ((1, sat), (2, sun))]
    files = render_files(MID, paid, [sat, sun])

    def at(d: date) -> datetime:
        return datetime.combine(d, PUBLISH_TIME, UTC8)

    assert {rel: when for rel, (_, when) in files.items()} == {
        f"download/{MID}/20261107/ALIPAY_TRANSACTION_DETAIL_USD_20261107.csv": at(sun),
        f"download/{MID}/20261108/ALIPAY_TRANSACTION_DETAIL_USD_20261108.csv": at(mon),
        f"download/{MID}/20261109/ALIPAY_SETTLEMENT_DETAIL_USD_20261109.csv": at(mon + timedelta(days=1)),
        f"download/{MID}/20261109/ALIPAY_SETTLEMENT_SUMMARY_USD_20261109.csv": at(mon + timedelta(days=1))}
    detail = files[f"download/{MID}/20261109/ALIPAY_SETTLEMENT_DETAIL_USD_20261109.csv"][0].decode()
    assert "T-1" in detail and "T-2" in detail
    summary = files[f"download/{MID}/20261109/ALIPAY_SETTLEMENT_SUMMARY_USD_20261109.csv"][0].decode().splitlines()
    # 10.00 + 20.00 less 1.8% each (0.18 + 0.36): count 2, net 29.46, commission -0.54 on PAYMENT and TOTAL
    assert [line.split(",")[:6] for line in summary[1:]] == [
        [kind, "2026-11-09T23:00:00+08:00", "2", "29.46", "USD", "-0.54"] for kind in ("PAYMENT", "TOTAL")]
