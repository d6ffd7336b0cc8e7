"""Checks on small hand-made provider files (written by the same writers the sandbox uses)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from alirecon import pipeline
from alirecon.clock import Stamp
from alirecon.config import AccountConfig, WorkspaceConfig
from alirecon.formats import alipayplus as ap
from alirecon.formats import antom
from alirecon.recon.checks import CHECKS
from alirecon.warehouse import Workspace

T = Stamp(datetime(2026, 11, 2, 3, 0, tzinfo=UTC), 480)


def checked(tmp_path: Path, files: dict[str, bytes], roles: dict[str, str] | None = None) -> list[dict[str, Any]]:
    accounts = [AccountConfig.model_validate({"name": pid, "family": "alipayplus", "account_id": pid, "role": role})
                for pid, role in (roles or {}).items()]
    ws = Workspace.init(tmp_path / "ws", WorkspaceConfig(accounts=accounts))
    try:
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
        report = ws.ingest([tmp_path / n for n in files])
        assert report.ok, [p for f in report.files for p in f.problems]
        return pipeline.check(ws).results.to_pylist()
    finally:
        ws.close()


def failures(results: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(r["check_id"], r["reason_code"], r["scope"]) for r in results if r["status"] == "fail"}


def sd_row(req: str, amount: int, settlement: int, fee: int, ccy: str = "USD", kind: str = "PAYMENT",
           **extra: Any) -> dict[str, Any]:
    return {"settlementBatchId": "B1", "customerId": "C1", "transactionId": "T" + req, "transactionRequestId": req,
            "transactionType": kind, "paymentTime": T, "transactionAmountValue": amount,
            "transactionCurrency": extra.pop("txn_ccy", ccy), "settlementAmountValue": settlement,
            "settlementCurrency": ccy, "feeAmountValue": fee, "feeCurrency": ccy, **extra}


def summary_row(kind: str, count: int | None, settlement: int | None, fee: int | None) -> dict[str, Any]:
    return {"settlementBatchId": "B1", "customerId": "C1", "summaryType": kind, "count": count,
            "settlementAmountValue": settlement, "settlementCurrency": "USD" if settlement is not None else None,
            "feeAmountValue": fee, "feeCurrency": "USD" if fee is not None else None}


SD_NAME = antom.file_name("settlement_detail", currency="USD", batch_id="B1")
SS_NAME = antom.file_name("settlement_summary", currency="USD", batch_id="B1")


def test_every_check_has_an_id_family_and_source() -> None:
    assert {"AP-I1", "AP-I2", "AP-I3", "AP-D1", "AP-I4", "AP-I5", "AP-D2", "AP-I6", "AP-I8",
            "AN-1", "AN-2", "AN-3", "AN-4", "AN-5", "AN-9"} <= set(CHECKS)
    families = ("antom", "alipayplus", "alipay_cn", "barcode")
    assert all(spec.source and spec.family in families for spec in CHECKS.values())


def test_antom_consistent_batch_passes_with_fx_conversion(tmp_path: Path) -> None:
    # 1000 JPY at 0.0067 USD/JPY = 6.70 USD gross, fee -0.13, settlement 6.57
    rows = [sd_row("P1", 1000, 657, -13, txn_ccy="JPY", quoteCurrencyPair="JPY/USD", quotePrice=Decimal("0.0067")),
            sd_row("R1", -500, -329, 6, kind="REFUND", txn_ccy="JPY", quoteCurrencyPair="USD/JPY",
                   quotePrice=Decimal("149.25"))]  # -500 JPY / 149.25 = -3.35 USD; +0.06 fee returned
    summary = [summary_row("TOTAL", 2, 328, -7), summary_row("PAYMENT", 1, 657, -13), summary_row("REFUND", 1, -329, 6)]
    results = checked(tmp_path, {SD_NAME: antom.write_report("settlement_detail", rows),
                                 SS_NAME: antom.write_report("settlement_summary", summary)})
    assert failures(results) == set()
    passed = {r["check_id"] for r in results if r["status"] == "pass"}
    assert {"AN-1", "AN-2", "AN-3", "AN-4", "AN-5", "AN-9"} <= passed


def test_antom_row_arithmetic_tolerance_is_one_minor_unit(tmp_path: Path) -> None:
    rows = [sd_row("P1", 1000, 981, -20), sd_row("P2", 1000, 982, -20)]  # 1 off passes, 2 off fails
    summary = [summary_row("TOTAL", 2, 1963, -40), summary_row("PAYMENT", 2, 1963, -40)]
    results = checked(tmp_path, {SD_NAME: antom.write_report("settlement_detail", rows),
                                 SS_NAME: antom.write_report("settlement_summary", summary)})
    assert failures(results) == {("AN-5", "SD_ROW_ARITHMETIC", "C1/USD/B1/P2")}


def test_antom_default_correction_line(tmp_path: Path) -> None:
    """2C2P: TOTAL settlement = CAPTURE 96 + correction -5 carried in the DEFAULT row's fee (antom.md 11)."""
    rows = [sd_row("P1", 100, 96, -4, kind="CAPTURE")]
    good = [summary_row("TOTAL", 1, 91, -4), summary_row("CAPTURE", 1, 96, -4), summary_row("DEFAULT", None, None, -5)]
    results = checked(tmp_path, {SD_NAME: antom.write_report("settlement_detail", rows),
                                 SS_NAME: antom.write_report("settlement_summary", good)})
    an4 = {(r["scope"], r["status"]) for r in results if r["check_id"] == "AN-4"}
    assert ("C1/USD/B1/settlement", "pass") in an4
    # the details themselves do not carry the correction: AN-1 reports it, AN-4 does not
    assert ("AN-1", "SD_TOTAL_MISMATCH", "C1/USD/B1") in failures(results)


def test_antom_summary_without_details_and_details_without_summary(tmp_path: Path) -> None:
    rows = [sd_row("P1", 100, 98, -2)]
    results = checked(tmp_path, {SD_NAME: antom.write_report("settlement_detail", rows)})
    assert failures(results) == {("AN-1", "SS_MISSING", "C1/USD/B1")}


def _ap_files(pid: str, role_sign: int, tdr_net: int, direction: str, fee_net: int = 0) -> dict[str, bytes]:
    name = lambda rep: ap.file_name(rep, participant_id=pid, currency="USD", batch_id="202611020000200000",  # noqa: E731
                                    agreement_id="G1")
    tdr_rows = [{"clearingBatchId": "202611020000200000", "transactionId": "X1", "transactionRequestId": "Q1",
                 "transactionType": "PAYMENT", "transactionTime": T, "transactionAmountValue": 1000,
                 "transactionCurrency": "USD", "settlementAmountValue": 1000, "settlementCurrency": "USD"}]
    tsr_net = role_sign * 1000 + fee_net
    return {
        name("transaction_detail"): ap.write_report("transaction_detail", rows=tdr_rows, summary={
            "totalCount": 1, "netSettlementAmountValue": tdr_net, "settlementCurrency": "USD",
            "fundDirection": direction}),
        name("fee"): ap.write_report("fee", rows=[], summary={
            "totalCount": 0, "netFeeAmountValue": 0, "feeCurrency": "USD", "fundDirection": "DEBIT"}),
        name("transaction_summary"): ap.write_report("transaction_summary", rows=[{
            "clearingBatchId": "202611020000200000", "clearingDate": "2026-11-02", "totalCount": 1,
            "fundDirection": "CREDIT" if tsr_net > 0 else "DEBIT", "settlementCurrency": "USD",
            "netSettlementAmountValue": abs(tsr_net)}]),
    }


@pytest.mark.parametrize(("role", "direction", "ok"), [("ACQP", "CREDIT", True), ("ACQP", "DEBIT", False),
                                                        ("MPP", "DEBIT", True), ("MPP", "CREDIT", False)])
def test_alipayplus_direction_follows_the_role(tmp_path: Path, role: str, direction: str, ok: bool) -> None:
    sign = 1 if role == "ACQP" else -1
    results = checked(tmp_path, _ap_files("P9", sign, 1000, direction), {"P9": role})
    i2 = [r for r in results if r["check_id"] == "AP-I2"]
    assert [r["status"] for r in i2] == ["pass" if ok else "fail"]


def test_alipayplus_unknown_role_compares_magnitudes(tmp_path: Path) -> None:
    results = checked(tmp_path, _ap_files("P9", 1, 1000, "DEBIT"))
    assert [r["status"] for r in results if r["check_id"] == "AP-I2"] == ["pass"]
    results = checked(tmp_path / "b", _ap_files("P9", 1, 999, "CREDIT"))
    assert [r["status"] for r in results if r["check_id"] == "AP-I2"] == ["fail"]


def test_alipayplus_empty_cycle_is_valid(tmp_path: Path) -> None:
    pid, batch = "P0", "202611030000200000"
    name = lambda rep: ap.file_name(rep, participant_id=pid, currency="USD", batch_id=batch,  # noqa: E731
                                    agreement_id="G1")
    files = {
        name("transaction_detail"): ap.write_report("transaction_detail", rows=[], summary={
            "totalCount": 0, "netSettlementAmountValue": 0, "settlementCurrency": "USD", "fundDirection": "DEBIT"}),
        name("fee"): ap.write_report("fee", rows=[], summary={
            "totalCount": 0, "netFeeAmountValue": 0, "feeCurrency": "USD", "fundDirection": "DEBIT"}),
        name("transaction_summary"): ap.write_report("transaction_summary", rows=[{
            "clearingBatchId": batch, "clearingDate": "2026-11-03", "totalCount": 0, "fundDirection": "DEBIT",
            "settlementCurrency": "USD", "netSettlementAmountValue": 0}]),
    }
    results = checked(tmp_path, files, {pid: "MPP"})
    assert failures(results) == set()
    assert {r["check_id"] for r in results if r["status"] == "pass"} >= {"AP-I1", "AP-I2", "AP-I3", "AP-D1", "AP-I4"}


def test_alipayplus_seq_files_of_one_batch_are_merged(tmp_path: Path) -> None:
    """Two seq files of one clearing batch: their summaries and lines are summed before comparing (spec 4)."""
    pid, batch = "P7", "202611040000200000"

    def name(rep: str, seq: int) -> str:
        return ap.file_name(rep, participant_id=pid, currency="USD", batch_id=batch, agreement_id="G1", seq=seq)

    def tdr(req: str, amount: int) -> bytes:
        row = {"clearingBatchId": batch, "transactionId": "X" + req, "transactionRequestId": req,
               "transactionType": "PAYMENT", "transactionTime": T, "transactionAmountValue": amount,
               "transactionCurrency": "USD", "settlementAmountValue": amount, "settlementCurrency": "USD"}
        return ap.write_report("transaction_detail", rows=[row], summary={
            "totalCount": 1, "netSettlementAmountValue": amount, "settlementCurrency": "USD",
            "fundDirection": "CREDIT"})

    files = {
        name("transaction_detail", 0): tdr("Q1", 700),
        name("transaction_detail", 1): tdr("Q2", 300),
        name("fee", 0): ap.write_report("fee", rows=[], summary={
            "totalCount": 0, "netFeeAmountValue": 0, "feeCurrency": "USD", "fundDirection": "DEBIT"}),
        name("transaction_summary", 0): ap.write_report("transaction_summary", rows=[{
            "clearingBatchId": batch, "clearingDate": "2026-11-04", "totalCount": 2, "fundDirection": "CREDIT",
            "settlementCurrency": "USD", "netSettlementAmountValue": 1000}]),
    }
    results = checked(tmp_path, files, {pid: "ACQP"})
    assert failures(results) == set()
    by_check = {r["check_id"]: r for r in results if r["scope"] == f"{pid}/G1/USD/{batch}"}
    assert (by_check["AP-I1"]["expected"], by_check["AP-I1"]["actual"]) == (2, 2)
    assert (by_check["AP-I4"]["expected"], by_check["AP-I4"]["actual"]) == (1000, 1000)
    assert len(by_check["AP-I1"]["lineage"]) == 4  # both summaries and both files
