"""BC-1, BC-2 and BC-4 on small barcode files written by the same writers the sandbox uses."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

from alirecon.clock import UTC8
from alirecon.formats import barcode as bc
from alirecon.recon.checks import CHECKS

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
    assert {"BC-1", "BC-2", "BC-4"} <= set(CHECKS)
    assert all(CHECKS[c].family == "barcode" and "barcode.md" in CHECKS[c].source for c in ("BC-1", "BC-2", "BC-4"))


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
