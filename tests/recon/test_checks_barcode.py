"""BC-1 to BC-7 on small barcode files written by the same writers the sandbox uses."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest.mock import ANY

from alirecon import pipeline
from alirecon.clock import UTC8
from alirecon.config import ChecksConfig, WorkspaceConfig
from alirecon.formats import barcode as bc
from alirecon.pay.ledger import write_journal_ledger
from alirecon.recon.checks import CHECKS
from alirecon.warehouse import Workspace

from . import support

PID = "2088000000000001"
DAY = date(2026, 9, 3)
T0 = datetime(2026, 9, 3, 10, 0, tzinfo=UTC8)
Row = dict[str, Any]


def tx_row(i: int, kind: str = "PAYMENT", amount: int = 10000, fee: int = 300) -> Row:
    return {"Partner_transaction_id": f"M{i}", "Transaction_id": f"2026090300{i}", "Transaction_amount": amount,
            "Charge_amount": fee, "Currency": "HKD", "Payment_time": T0, "Transaction_type": kind}


def st_row(i: int, kind: str = "P", amount: int = 10000, fee: int = 300, settlement: int | None = None) -> Row:
    return {"Partner_transaction_id": f"M{i}", "Transaction_id": f"2026090300{i}", "Amount": amount, "Fee": fee,
            "Settlement": amount - fee if settlement is None else settlement, "Currency": "HKD",
            "Payment_time": T0, "Settlement_time": T0, "Type": kind, "Status": "L"}


def summary_row(kind: str, count: int, settlement: int, commission: int, ref: str = "REF1") -> Row:
    return {"type": kind, "settlementTime": T0, "count": count, "settlementAmount": settlement,
            "settlementCurrency": "HKD", "commission": commission, "referenceId": ref, "merchantId": "M1"}


def detail_row(i: int, kind: str, amount: int, settlement: int, fee: int, ref: str = "REF1") -> Row:
    return {"merchantId": "M1", "transType": kind, "productCode": "GlobalOfflineAcquire", "acquirementId": f"A{i}",
            "paymentTime": T0, "userSite": "ALIPAY_HK", "referenceId": ref, "settlementTime": T0,
            "merchantTransId": f"T{i}", "orderAmount": amount, "orderCurrency": "HKD", "settlementAmount": settlement,
            "settlementCurrency": "HKD", "fee": fee}


SD_HEADER = bc.HEADERS[("settlement_detail", "v18")]


def checked(tmp_path: Path, files: dict[str, bytes]) -> list[dict[str, Any]]:
    return support.checked(tmp_path, files, "barcode")


def by(results: list[dict[str, Any]], check_id: str, status: str | None = None) -> list[dict[str, Any]]:
    return [r for r in results if r["check_id"] == check_id and (status is None or r["status"] == status)]


def test_checks_are_registered_with_sources() -> None:
    ids = ("BC-1", "BC-2", "BC-3", "BC-4", "BC-5", "BC-6", "BC-7")
    assert set(ids) <= set(CHECKS)
    assert all(CHECKS[c].family == "barcode" and "barcode.md" in CHECKS[c].source for c in ids)


def test_consistent_files_pass(tmp_path: Path) -> None:
    tx = bc.write_report("transaction", [tx_row(1), tx_row(2, "REFUND", 500, 15)], partner=PID, payment_date=DAY)
    st = bc.write_report("settlement", [st_row(1), st_row(2, "R", 500, 15)], partner=PID, payment_date=DAY)
    details = [detail_row(1, "PAYMENT", 10000, 9700, -300), detail_row(2, "REFUND", -500, -485, 15)]
    summary = [summary_row("PAYMENT", 1, 9700, -300), summary_row("REFUND", 1, -485, 15),
               summary_row("TOTAL", 2, 9215, -285)]
    results = checked(tmp_path, {
        bc.file_name("transaction", PID, DAY): tx, bc.file_name("settlement", PID, DAY): st,
        bc.file_name("settlement_detail", "", DAY, currency="HKD"): bc.write_report("settlement_detail", details,
                                                                                     header=SD_HEADER),
        bc.file_name("settlement_summary", "", DAY, currency="HKD"): bc.write_report("settlement_summary", summary)})
    assert [r for r in results if r["status"] != "pass"] == []
    assert {(r["check_id"], r["report"]) for r in by(results, "BC-1")} == {("BC-1", "transaction"),
                                                                          ("BC-1", "settlement")}
    assert {r["report"] for r in by(results, "BC-2")} == {"settlement", "settlement_detail"}
    reasons = {r["reason_code"] for r in by(results, "BC-4")}
    assert {"SUMMARY_TOTAL_COUNT_MISMATCH", "SUMMARY_TOTAL_SETTLEMENT_MISMATCH", "SUMMARY_TOTAL_COMMISSION_MISMATCH",
            "SUMMARY_DETAIL_COUNT_MISMATCH", "SUMMARY_DETAIL_SETTLEMENT_MISMATCH",
            "SUMMARY_DETAIL_COMMISSION_MISMATCH"} == reasons


def test_total_count_disagreeing_fails_with_lineage(tmp_path: Path) -> None:
    name = bc.file_name("transaction", PID, DAY)
    tx = bc.write_report("transaction", [tx_row(1), tx_row(2)], partner=PID, payment_date=DAY, total_count=3)
    results = checked(tmp_path, {name: tx})
    [fail] = by(results, "BC-1", "fail")
    assert (fail["reason_code"], fail["expected"], fail["actual"]) == ("TOTAL_COUNT_MISMATCH", 3, 2)
    assert [(x["name"], x["line"]) for x in fail["lineage"]] == [(name, 1), (name, None)]


def test_row_settlement_mismatch_names_the_line(tmp_path: Path) -> None:
    name = bc.file_name("settlement", PID, DAY)
    rows = [st_row(1), st_row(2, "R", 500, 15, settlement=480), st_row(3, settlement=9701)]
    results = checked(tmp_path, {name: bc.write_report("settlement", rows)})  # no Partner line
    fails = by(results, "BC-2", "fail")
    assert [(f["scope"], f["expected"], f["actual"], f["lineage"][0]["line"]) for f in fails] == [
        (f"{name}/M2", -485, -480, 3), (f"{name}/M3", 9700, 9701, 4)]
    assert by(results, "BC-1") == []  # no Partner line: nothing declared


def test_summary_total_and_details_disagreeing(tmp_path: Path) -> None:
    details = [detail_row(1, "PAYMENT", 10000, 9700, -300), detail_row(2, "PAYMENT", 2000, 1940, -60),
               detail_row(3, "CANCEL", -100, -97, 3)]
    summary = [summary_row("PAYMENT", 1, 11640, -360), summary_row("REFUND", 1, -485, 15),
               summary_row("TOTAL", 3, 11155, -345)]
    sd_name = bc.file_name("settlement_detail", "", DAY, currency="HKD")
    ss_name = bc.file_name("settlement_summary", "", DAY, currency="HKD")
    results = checked(tmp_path, {sd_name: bc.write_report("settlement_detail", details, header=SD_HEADER),
                                 ss_name: bc.write_report("settlement_summary", summary)})
    fails = {(r["reason_code"], r["scope"].rsplit("/", 1)[-1]): (r["expected"], r["actual"])
             for r in by(results, "BC-4", "fail")}
    # PAYMENT: 2 details (9700 + 1940 = 11640, fees -360) where the summary says 1; no REFUND detail; a CANCEL
    # detail without a summary row; TOTAL: 3 where the rows add up to 2 (amounts do add up: 11640 - 485 = 11155)
    assert fails == {
        ("SUMMARY_TOTAL_COUNT_MISMATCH", "TOTAL"): (3, 2),
        ("SUMMARY_DETAIL_COUNT_MISMATCH", "PAYMENT"): (1, 2),
        ("SUMMARY_DETAIL_COUNT_MISMATCH", "REFUND"): (1, 0),
        ("DETAIL_WITHOUT_SUMMARY_ROW", "CANCEL"): (None, 1),
    }
    cancel = next(r for r in by(results, "BC-4", "fail") if r["reason_code"] == "DETAIL_WITHOUT_SUMMARY_ROW")
    assert {x["name"] for x in cancel["lineage"]} == {ss_name, sd_name}


def test_summary_without_details_warns(tmp_path: Path) -> None:
    summary = [summary_row("PAYMENT", 1, 9700, -300)]
    results = checked(tmp_path, {bc.file_name("settlement_summary", "", DAY, currency="HKD"):
                                 bc.write_report("settlement_summary", summary)})
    assert {(r["reason_code"], r["status"]) for r in by(results, "BC-4")} == {
        ("SUMMARY_TOTAL_MISSING", "warn"), ("SUMMARY_WITHOUT_DETAIL", "warn")}


# ---------------------------------------------------------------------------------------------
# BC-3, BC-5, BC-6


def checked_with(tmp_path: Path, files: dict[str, bytes], config: WorkspaceConfig) -> list[dict[str, Any]]:
    """``checked`` under a workspace configuration of the test's own (a tolerance)."""
    with Workspace.init(tmp_path / "ws", config) as ws:
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
        assert ws.ingest([tmp_path / n for n in files]).ok
        return [r for r in pipeline.check(ws).results.to_pylist() if r["family"] == "barcode"]


def cny_row(i: int, ccy: str, amount: int, fee: int, rate: str, rmb_amount: int, rmb_settlement: int,
            kind: str = "P") -> Row:
    return {**st_row(i, kind, amount, fee), "Currency": ccy, "Rate": Decimal(rate), "Rmb_amount": rmb_amount,
            "Rmb_settlement": rmb_settlement}


CNY_ROWS = [
    # 100.00 AUD x 4.8512 = 485.12 CNY exactly; settlement 97.00 x 4.8512 = 470.5664 -> 470.57
    cny_row(1, "AUD", 10000, 300, "4.85120000", 48512, 47057),
    # 12.34 x 4.8512 = 59.863808 -> 59.86, written 59.93: 7 fen off
    cny_row(2, "AUD", 1234, 37, "4.85120000", 5993, 5807),
    # JPY has no decimals: 1000 JPY x 0.04861234 = 48.61 CNY; settlement 970 JPY -> 47.153... -> 47.15, written 47.18
    cny_row(3, "JPY", 1000, 30, "0.04861234", 4861, 4718),
    # a refund: unsigned cells, compared signed on both sides (5.00 x 4.8512 = 24.256 -> 24.26)
    cny_row(4, "AUD", 500, 15, "4.85120000", 2426, 2353, kind="R"),
]


def test_bc3_cny_columns_vs_rate(tmp_path: Path) -> None:
    name = bc.file_name("settlement", PID, DAY)
    results = checked(tmp_path, {name: bc.write_report("settlement", CNY_ROWS)})
    assert [(r["status"], r["reason_code"], r["scope"], r["currency"], r["expected"], r["actual"],
             r["lineage"]) for r in by(results, "BC-3")] == [
        ("fail", "CNY_AMOUNT_MISMATCH", f"{name}/M2/Rmb_amount", "CNY", 5986, 5993,
         [{"sha256": ANY, "name": name, "line": 3}])]


def test_bc3_tolerance_is_configurable(tmp_path: Path) -> None:
    name = bc.file_name("settlement", PID, DAY)
    config = WorkspaceConfig(checks=ChecksConfig(barcode_cny_tolerance_minor=2))
    results = checked_with(tmp_path, {name: bc.write_report("settlement", CNY_ROWS)}, config)
    assert [(r["reason_code"], r["scope"], r["expected"], r["actual"]) for r in by(results, "BC-3", "fail")] == [
        ("CNY_AMOUNT_MISMATCH", f"{name}/M2/Rmb_amount", 5986, 5993),
        ("CNY_SETTLEMENT_MISMATCH", f"{name}/M3/Rmb_settlement", 4715, 4718)]


def test_bc3_passes_and_skips_files_without_cny_columns(tmp_path: Path) -> None:
    rows = [CNY_ROWS[0], CNY_ROWS[3]]
    hk = bc.HEADERS[("settlement", "hk20")]
    v21, hk20 = bc.file_name("settlement", PID, DAY), bc.file_name("settlement", "2088000000000002", DAY)
    results = checked(tmp_path, {v21: bc.write_report("settlement", rows),
                                 hk20: bc.write_report("settlement", [st_row(1)], header=hk)})
    assert [(r["status"], r["scope"]) for r in by(results, "BC-3")] == [("pass", v21)]
    assert "4 CNY cells" in by(results, "BC-3")[0]["detail"]


MID = "2188120000000001"


def hk_row(i: int, kind: str, amount: int, fee: int, settlement: int) -> Row:
    return {"Partner_transaction_id": f"H{i}", "Transaction_id": f"9{i}", "Amount": amount, "Fee": fee,
            "Settlement": settlement, "Currency": "HKD", "Payment_time": "9/3/2026 10:00",
            "Settlement_time": "9/4/2026 9:00", "Product": "CASHIER_PAY", "Type": kind, "Status": "SETTLED"}


def batch_row(batch: str, amount: int, fee: int, settlement: int) -> Row:
    return {"Settle_batch_no": batch, "Settle_date": T0, "Amount": amount, "Fee": fee, "Settlement": settlement,
            "Currency": "HKD"}


def test_bc5_batch_rows_vs_their_settle_files(tmp_path: Path) -> None:
    settle = {b: bc.file_name("hk_settlement", MID, DAY, batch=b) for b in ("B1", "B2", "B3")}
    batch_name = bc.file_name("hk_settlebatch", MID, DAY)
    files = {
        # B1: a payment and a refund; net amount 90.00, fee 3.00 - 0.30 = 2.70, settlement 97.00 - 9.70 = 87.30
        settle["B1"]: bc.write_report("hk_settlement", [hk_row(1, "PAYMENT", 10000, 300, 9700),
                                                        hk_row(2, "REFUND", 1000, 30, -970)]),
        settle["B2"]: bc.write_report("hk_settlement", [hk_row(3, "PAYMENT", 5000, 150, 4850)]),
        settle["B3"]: bc.write_report("hk_settlement", [hk_row(4, "PAYMENT", 2000, 60, 1940)]),  # not in the batch file
        # B2's fee is 1.51 (so its settlement 48.49 says the same): one cent more than its settle file
        batch_name: bc.write_report("hk_settlebatch", [batch_row("B1", 9000, 270, 8730),
                                                       batch_row("B2", 5000, 151, 4849), batch_row("B4", 100, 3, 97)]),
    }
    results = checked(tmp_path, files)
    rows = sorted((r["status"], r["reason_code"], r["scope"], r["expected"], r["actual"]) for r in by(results, "BC-5"))
    assert rows == sorted([
        ("pass", "BATCH_AMOUNT_MISMATCH", f"{batch_name}/B1/amount", 9000, 9000),
        ("pass", "BATCH_FEE_MISMATCH", f"{batch_name}/B1/fee", -270, -270),
        ("pass", "BATCH_SETTLEMENT_MISMATCH", f"{batch_name}/B1/settlement", 8730, 8730),
        ("pass", "BATCH_AMOUNT_MISMATCH", f"{batch_name}/B2/amount", 5000, 5000),
        ("fail", "BATCH_FEE_MISMATCH", f"{batch_name}/B2/fee", -151, -150),
        ("fail", "BATCH_SETTLEMENT_MISMATCH", f"{batch_name}/B2/settlement", 4849, 4850),
        ("fail", "BATCH_WITHOUT_SETTLE_FILE", f"{batch_name}/B4", None, None),
        ("fail", "SETTLE_FILE_NOT_IN_BATCH_FILE", "B3", None, 1),
    ])
    fee = next(r for r in by(results, "BC-5", "fail") if r["reason_code"] == "BATCH_FEE_MISMATCH")
    assert [(x["name"], x["line"]) for x in fee["lineage"]] == [(batch_name, 3), (settle["B2"], None)]
    # the batch row itself adds up (BC-2): only the settle file disagrees
    assert [r["scope"] for r in by(results, "BC-2", "fail")] == []


def test_bc5_needs_a_batch_file(tmp_path: Path) -> None:
    name = bc.file_name("hk_settlement", MID, DAY, batch="B1")
    results = checked(tmp_path, {name: bc.write_report("hk_settlement", [hk_row(1, "PAYMENT", 10000, 300, 9700)])})
    assert by(results, "BC-5") == []


def a_tx(i: int, day: date, kind: str = "PAYMENT") -> Row:
    return {**tx_row(i, kind), "Payment_time": datetime.combine(day, T0.timetz())}


def a_st(i: int, paid: date) -> Row:
    return {**st_row(i), "Payment_time": datetime.combine(paid, T0.timetz())}


def test_bc6_settled_payments_vs_transaction_files(tmp_path: Path) -> None:
    d0, d1, d2, d3 = (DAY + timedelta(days=n) for n in (-1, 0, 1, 2))
    tx = {d: bc.file_name("transaction", PID, d) for d in (d1, d2, d3)}
    st1, st2 = bc.file_name("settlement", PID, d1), bc.file_name("settlement", PID, d2)
    files = {
        tx[d1]: bc.write_report("transaction", [a_tx(1, d1), a_tx(2, d1)], partner=PID, payment_date=d1),
        tx[d2]: bc.write_report("transaction", [a_tx(3, d2)], partner=PID, payment_date=d2),
        tx[d3]: bc.write_report("transaction", [a_tx(6, d3)], partner=PID, payment_date=d3),
        st1: bc.write_report("settlement", [a_st(1, d1)]),
        # M1 and M3: fine; M4 paid on d1 but not in d1's file; M5 paid on d0 (no file of d0); M6 only in d3's file
        st2: bc.write_report("settlement", [a_st(1, d1), a_st(3, d2), a_st(4, d1), a_st(5, d0), a_st(6, d2)]),
    }
    results = checked(tmp_path, files)
    rows = [(r["status"], r["reason_code"], r["scope"], [(x["name"], x["line"]) for x in r["lineage"]])
            for r in by(results, "BC-6")]
    assert sorted(rows) == sorted([
        ("pass", "SETTLED_NOT_IN_TRANSACTION_FILE", st1, [(st1, None)]),
        ("fail", "SETTLED_NOT_IN_TRANSACTION_FILE", f"{st2}/M4", [(st2, 4)]),
        ("fail", "SETTLED_BEFORE_TRANSACTION_FILE", f"{st2}/M6", [(st2, 6), (tx[d3], 3)]),
        ("warn", "TRANSACTION_FILE_MISSING", f"{st2}/{d0:%Y%m%d}", [(st2, 5)]),
    ])


def test_bc6_a_cancelled_payment_is_never_settled(tmp_path: Path) -> None:
    tx = [{**detail_row(i, kind, 10000, 9700, -300), "transStatus": "SUCCESS"} for i, kind in
          ((1, "PAYMENT"), (2, "PAYMENT"))]
    tx.append({**tx[1], "transType": "CANCEL", "orderAmount": -10000})
    tx_name = bc.file_name("transaction_detail", "", DAY, currency="HKD")
    sd_name = bc.file_name("settlement_detail", "", DAY, currency="HKD")
    tx_header = bc.HEADERS[("transaction_detail", "v1")]
    results = checked(tmp_path, {
        tx_name: bc.write_report("transaction_detail", [{k: v for k, v in r.items() if k in tx_header} for r in tx]),
        sd_name: bc.write_report("settlement_detail", [detail_row(1, "PAYMENT", 10000, 9700, -300),
                                                       detail_row(2, "PAYMENT", 10000, 9700, -300)],
                                 header=SD_HEADER)})
    rows = [(r["status"], r["reason_code"], r["scope"], [(x["name"], x["line"]) for x in r["lineage"]])
            for r in by(results, "BC-6")]
    assert rows == [("fail", "CANCELLED_IN_SETTLEMENT", f"{sd_name}/T2", [(sd_name, 3), (tx_name, 4)]),
                    ("pass", "SETTLED_NOT_IN_TRANSACTION_FILE", sd_name, [(sd_name, None)])]


def test_bc6_yields_nothing_without_transaction_files(tmp_path: Path) -> None:
    results = checked(tmp_path, {bc.file_name("settlement", PID, DAY): bc.write_report("settlement", [st_row(1)])})
    assert by(results, "BC-6") == []


# ---------------------------------------------------------------------------------------------
# BC-7


def journal_row(trans_id: str, status: str, when: datetime = T0) -> Row:
    return {"merchant_ref_id": trans_id, "provider_txn_id": None, "record_type": "PAYMENT", "amount": 10000,
            "currency": "HKD", "status": status, "occurred_at": when, "merchant_id": "M1", "pay_state": status,
            "reason": None}


def b1_tx(trans_id: str, kind: str = "PAYMENT") -> Row:
    return {"merchantId": "M1", "productCode": "OFFLINE_PAY", "paymentTime": T0, "transType": kind,
            "transStatus": "SUCCESS", "merchantTransId": trans_id, "acquirementId": f"A-{trans_id}",
            "orderAmount": -10000 if kind == "CANCEL" else 10000, "orderCurrency": "HKD"}


def b1_settled(trans_id: str) -> Row:
    return {**detail_row(0, "PAYMENT", 10000, 9700, -300), "merchantTransId": trans_id,
            "acquirementId": f"A-{trans_id}"}


def journal_checked(tmp_path: Path, journal: list[Row], files: dict[str, bytes]) -> list[dict[str, Any]]:
    """BC-7's rows over ``files`` with ``journal`` (journal_rows' dicts) as the workspace's ledger; line 1 of the
    ledger CSV is its header, so the n-th payment is ledger row n + 1."""
    tmp_path.mkdir(exist_ok=True)
    ledger = write_journal_ledger(journal, tmp_path / "journal.csv")
    with Workspace.init(tmp_path / "ws", WorkspaceConfig(ledgers=[ledger])) as ws:
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
        assert ws.ingest([tmp_path / n for n in files]).ok
        pipeline.ingest_ledgers(ws)
        return by([r for r in pipeline.check(ws).results.to_pylist()], "BC-7")


def test_bc7_journal_vs_files(tmp_path: Path) -> None:
    journal = [journal_row("T-OK", "SUCCESS"), journal_row("T-MISSING", "SUCCESS"),
               journal_row("T-EARLIER", "SUCCESS", T0 - timedelta(days=1)),  # no file of its day: not judged
               journal_row("T-CXL-SETTLED", "CANCELLED"), journal_row("T-CXL-CHARGED", "CANCELLED"),
               journal_row("T-CXL-OK", "CANCELLED"), journal_row("T-STUCK", "MANUAL"),
               journal_row("T-GONE", "UNKNOWN"), journal_row("T-FAILED", "FAILED")]
    tx = [b1_tx("T-OK"), b1_tx("T-CXL-SETTLED"), b1_tx("T-CXL-SETTLED", "CANCEL"), b1_tx("T-CXL-CHARGED"),
          b1_tx("T-STUCK"), b1_tx("T-CXL-OK"), b1_tx("T-CXL-OK", "CANCEL")]
    tx_name = bc.file_name("transaction_detail", "", DAY, currency="HKD")
    sd_name = bc.file_name("settlement_detail", "", DAY, currency="HKD")
    results = journal_checked(tmp_path, journal, {
        tx_name: bc.write_report("transaction_detail", tx),
        sd_name: bc.write_report("settlement_detail", [b1_settled("T-OK"), b1_settled("T-CXL-SETTLED")],
                                 header=SD_HEADER)})
    rows = sorted((r["status"], r["reason_code"], r["scope"], [(x["name"], x["line"]) for x in r["lineage"]])
                  for r in results)
    assert rows == sorted([
        ("fail", "JOURNAL_SUCCESS_NOT_IN_TRANSACTION_FILE", "journal.csv/T-MISSING", [("journal.csv", 3)]),
        ("fail", "JOURNAL_CANCELLED_SETTLED", "journal.csv/T-CXL-SETTLED", [("journal.csv", 5), (sd_name, 3)]),
        ("fail", "JOURNAL_CANCELLED_CHARGED", "journal.csv/T-CXL-CHARGED", [("journal.csv", 6), (tx_name, 5)]),
        ("warn", "JOURNAL_OPEN_CHARGED", "journal.csv/T-STUCK", [("journal.csv", 8), (tx_name, 6)]),
        ("warn", "JOURNAL_OPEN_NOT_CHARGED", "journal.csv/T-GONE", [("journal.csv", 9)]),
    ])


def test_bc7_passes_and_needs_a_journal_and_files(tmp_path: Path) -> None:
    tx_name = bc.file_name("transaction_detail", "", DAY, currency="HKD")
    files = {tx_name: bc.write_report("transaction_detail", [b1_tx("T-OK")])}
    results = journal_checked(tmp_path / "a", [journal_row("T-OK", "SUCCESS"), journal_row("T-NO", "CANCELLED")],
                              files)
    assert [(r["status"], r["scope"], r["detail"]) for r in results] == [
        ("pass", "journal.csv", "2 journaled payments judged: no final state contradicts the files")]
    # no journal ledger: nothing (the plain checks run without BC-7)
    assert by(checked(tmp_path / "b", files), "BC-7") == []
    # a journal but no transaction file: nothing
    sd_name = bc.file_name("settlement_detail", "", DAY, currency="HKD")
    assert journal_checked(tmp_path / "c", [journal_row("T-OK", "SUCCESS")], {
        sd_name: bc.write_report("settlement_detail", [b1_settled("T-OK")], header=SD_HEADER)}) == []


# ---------------------------------------------------------------------------------------------
# Family C (barcode.md 5): BC-2 and BC-3 on the forex transaction file's rows


def c_row(i: int, kind: str, amount: int, fee: int, settlement: int | None, rmb_amount: int,
          rmb_settlement: int | None, rate: str = "7.12340000") -> Row:
    return {"Partner_transaction_id": f"F{i}", "Transaction_id": f"2026090321001{i}", "Amount": amount,
            "Rmb_amount": rmb_amount, "Fee": fee, "Distribute_amount": 0, "Distribute_rmb_amount": 0,
            "Settlement": settlement, "Rmb_settlement": rmb_settlement, "Currency": "USD", "Rate": Decimal(rate),
            "Payment_time": T0, "Settlement_time": T0 if settlement is not None else None, "Type": kind,
            "Status": "L" if settlement is not None else "P", "Remarks": None}


C_ROWS = [
    # 100.00 USD x 7.1234 = 712.34 CNY; settlement 97.00 x 7.1234 = 690.9698 -> 690.97
    c_row(1, "P", 10000, 300, 9700, 71234, 69097),
    # an unsigned refund: 5.00 x 7.1234 = 35.617 -> 35.62; 4.85 x 7.1234 = 34.54849 -> 34.55 (both signed -)
    c_row(2, "R", 500, 15, 485, 3562, 3455),
    # paid, not settled yet: no Settlement, no Rmb_settlement (BC-2 skips it; BC-3 has one CNY cell)
    c_row(4, "P", 2000, 60, None, 14247, None),  # 20.00 x 7.1234 = 142.468 -> 142.47
]


def test_c_rows_pass_bc2_and_bc3(tmp_path: Path) -> None:
    name = bc.file_name("forex_transaction", PID, DAY)
    results = checked(tmp_path, {name: bc.write_report("forex_transaction", C_ROWS)})
    lineage = [{"sha256": ANY, "name": name, "line": None}]
    assert [(r["check_id"], r["status"], r["reason_code"], r["report"], r["scope"], r["lineage"], r["detail"])
            for r in results if r["check_id"] in ("BC-2", "BC-3")] == [
        ("BC-2", "pass", "ROW_SETTLEMENT_MISMATCH", "forex_transaction", name, lineage,
         "2 rows: settlement = amount - fee on each"),
        ("BC-3", "pass", "CNY_AMOUNT_MISMATCH", "forex_transaction", name, lineage,
         "5 CNY cells within 5 fen of the foreign amount x Rate")]
    assert [r for r in results if r["status"] != "pass"] == []


def test_c_rows_fail_bc2_and_bc3_where_injected(tmp_path: Path) -> None:
    name = bc.file_name("forex_transaction", PID, DAY)
    rows = [C_ROWS[0],
            # the refund's Settlement says 4.90 where 5.00 - 0.15 = 4.85 (its CNY cell follows 4.90: 34.90466 -> 34.90)
            c_row(2, "R", 500, 15, 490, 3562, 3490),
            # 12.34 x 7.1234 = 87.902756 -> 87.90, written 88.00: 10 fen off; 11.97 x 7.1234 = 85.267098 -> 85.27
            c_row(3, "P", 1234, 37, 1197, 8800, 8527)]
    results = checked(tmp_path, {name: bc.write_report("forex_transaction", rows)})
    assert [(r["check_id"], r["status"], r["reason_code"], r["report"], r["scope"], r["currency"], r["expected"],
             r["actual"], r["lineage"], r["detail"]) for r in results if r["check_id"] in ("BC-2", "BC-3")] == [
        ("BC-2", "fail", "ROW_SETTLEMENT_MISMATCH", "forex_transaction", f"{name}/F2", "USD", -485, -490,
         [{"sha256": ANY, "name": name, "line": 3}], "amount - fee = -485, settlement = -490 (difference -5)"),
        ("BC-3", "fail", "CNY_AMOUNT_MISMATCH", "forex_transaction", f"{name}/F3/Rmb_amount", "CNY", 8790, 8800,
         [{"sha256": ANY, "name": name, "line": 4}],
         "1234 USD minor x Rate 7.1234 = 8790 fen, Rmb_amount = 8800 (difference 10, tolerance 5)")]
