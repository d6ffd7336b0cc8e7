"""Global barcode / in-store reconciliation files (barcode.md 2-5): families A, B1, B2 and C.

Why a driver of its own: the family A files are ``|``-separated, start with a ``Partner:...|Total_count:n`` line
that states a figure the checks need (barcode.md 2.2), and their encoding is undocumented (UTF-8, else
GBK/GB18030, barcode.md 2.1 / 8.9), which DuckDB cannot read. These are daily in-store files, so each file is
decoded once in Python, split into cells (trimmed, empty = NULL, barcode.md 8.5) with exact physical line
numbers, and the cells go through the one engine (``convert_rows``) like every other report.

Reports (``REPORTS``), all header-driven (columns found by name, case-insensitively, barcode.md 8.4):

* family A: ``transaction`` (``<PID>_transaction_<YYYYMMDD>.txt``; 8-, 15- and 17-column versions) and
  ``settlement`` (``<PID>_settlement_<YYYYMMDD>.txt``; 21-column non-HK and 20-column HK versions);
* family B1: ``transaction_detail``, ``settlement_detail``, ``settlement_summary`` (``ALIPAY_*_<cur>_<date>.csv``);
* family B2 (AlipayHK): ``hk_transaction`` (``MID_fptrade_YYYYMMDD.csv``), ``hk_settlement``
  (``MID_settle_YYYYMMDD_BatchID.csv``), ``hk_settlebatch`` (``PID_settlebatch_YYYYMMDD.csv``, barcode.md 4.2: one
  row of totals per batch, as written);
* family C (online cross-border "forex", barcode.md 5): ``forex_transaction`` (``<PID>_fptrade_<YYYYMMDD>.csv``,
  ``<PID>_transaction_<YYYYMMDD>.txt`` as family A's name, website ``<PID>_<YYYYMMDD...>.{csv,txt}``; the header
  line tells C from A and B2): ``|``-separated, no summary line; 16 columns, optional
  ``Original_partner_transaction_ID`` and ``Transaction_id`` (web_cn). Its rows carry the settlement columns, so
  BC-2/BC-3 apply as to A's settlement.

Canonical signs (``schema.REPORT_LINE``): amounts positive for payments and negative for refunds, reversals and
cancels; fee negative = charged to the merchant (as ``alipay_cn``); so settlement = amount + fee on every row.
Family A and the B2 ``Amount``/``Fee`` columns are written unsigned with the sign in the type column
(barcode.md 2.2 observations, 4.1, 8.8), and so is every family C money column (barcode.md 5: a refund nets
-Settlement [inferred]); a refund sample of the A settlement file does not exist (barcode.md
gap 2/3), so ``ParseOptions.amount_signs["barcode.<report>"]`` may say ``as_written`` instead of the default
``by_type`` [inferred]. B2 ``Settlement`` and the B1 summary are signed as written (barcode.md 3.3, 4.1, 8.8).

Declared figures (``schema.DECLARED``): the A ``Partner`` line's ``Total_count`` (scope ``file``, figure
``count``); each B1 summary row (scope = its ``type``, batch_id = ``referenceId``; figures count, settlement,
commission, as written); each non-HK A settlement row's and each C row's ``Rmb_amount`` / ``Rmb_settlement``
(scope ``row``, figures ``rmb_amount`` / ``rmb_settlement``, CNY, signed like the row; its ``Rate`` is the
line's ``fx_rate``).
File metadata: ``partner`` / ``payment_date`` (Partner line), ``name_account`` /
``name_date`` / ``name_month`` / ``name_currency`` / ``batch`` (file name), ``encoding`` (``utf-8`` or ``gb18030``).
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from .. import errors
from ..clock import parse_timestamp
from ..money import parse_major
from .base import DeclareFn, ReportFormat, _finish, _header_problems, _layout_for, _raw_rows_table
from .engine import (
    Column,
    Declared,
    Kind,
    Layout,
    ParsedFile,
    ParseOptions,
    compile_layout,
    convert_rows,
    extras_dict,
    resolve_header,
)
from .writer import format_cell

__all__ = [
    "FAMILY",
    "HEADERS",
    "REPORTS",
    "SIGNS",
    "BarcodeReport",
    "amount_sign",
    "file_name",
    "provider_rows",
    "write_report",
]

FAMILY = "barcode"
SIGNS = ("by_type", "as_written")
_TRIM = " \t"
_MAX_BYTES = 512 * 1024 * 1024  # whole-file decoding: a daily in-store file is far smaller [inferred]

TX, ST = "transaction", "settlement"
B1_TX, B1_SD, B1_SS = "transaction_detail", "settlement_detail", "settlement_summary"
B2_TX, B2_ST = "hk_transaction", "hk_settlement"
B2_BATCH = "hk_settlebatch"
C_TX = "forex_transaction"

# Types whose (unsigned) amounts take money back from the merchant (barcode.md 2.2 #7, 2.3 #12, 3.1 #7, 4.1 #11).
NEGATIVE_TYPES = ("REFUND", "REVERSAL", "REVERSE", "CANCEL", "R")


def _text(name: str, max_length: int | None = None, **kw: Any) -> Column:
    return Column(name, Kind.TEXT, max_length=max_length, **kw)


def _money(name: str, *currency: str, **kw: Any) -> Column:
    return Column(name, Kind.AMOUNT, currency=currency, unit="major", **kw)


def _time(name: str, **kw: Any) -> Column:
    return Column(name, Kind.TIMESTAMP, **kw)


# ---------------------------------------------------------------------------------------------
# Family A (barcode.md 2.2, 2.3)

_S22, _S23 = "barcode.md 2.2", "barcode.md 2.3"
A_TX_COLUMNS = (
    _text("Partner_transaction_id", 64, required=True, nonempty=True, source=_S22 + " #1"),
    _text("Transaction_id", 64, required=True, nonempty=True, source=_S22 + " #2"),
    _money("Transaction_amount", "Currency", required=True, nonempty=True, nonnegative=True, source=_S22 + " #3"),
    _money("Charge_amount", "Currency", required=True, nonnegative=True, source=_S22 + " #4"),
    Column("Currency", Kind.CURRENCY, required=True, nonempty=True, source=_S22 + " #5"),
    _time("Payment_time", required=True, nonempty=True, source=_S22 + " #6"),
    # REVERSE: the old table's spelling; accept all five (barcode.md 2.2 #7)
    Column("Transaction_type", Kind.ENUM, allowed=("PAYMENT", "REVERSAL", "REVERSE", "REFUND", "CANCEL"),
           strict=True, required=True, nonempty=True, source=_S22 + " #7"),
    _text("Remark", 256, source=_S22 + " #8"),
    _text("Secondary_merchant_industry", 4, source=_S22 + " #9"),
    _text("Secondary_merchant_name", source=_S22 + " #10"),
    _text("Secondary_merchant_id", source=_S22 + " (HK variant)"),
    _text("Operator_name", source=_S22 + " #11"),
    _text("Order_scene", source=_S22 + " #12"),
    Column("Trans_currency", Kind.CURRENCY, source=_S22 + " #13"),
    _money("Trans_amount", "Trans_currency", nonnegative=True, source=_S22 + " #14"),
    _text("Trans_forex_rate", source=_S22 + " #15 (placeholders in the docs: kept as text)"),
    _text("Issue", source=_S22 + " (HK variant)"),
)
A_ST_COLUMNS = (
    _text("Partner_transaction_id", 64, required=True, nonempty=True, source=_S23 + " #1"),
    _text("Transaction_id", 64, required=True, nonempty=True, source=_S23 + " #2"),
    _money("Amount", "Currency", required=True, nonempty=True, nonnegative=True, source=_S23 + " #3"),
    _money("Rmb_amount", "=CNY", nonnegative=True, source=_S23 + " #4 (non-HK)"),
    _money("Fee", "Currency", required=True, nonnegative=True, source=_S23 + " #5"),
    _money("Settlement", "Currency", required=True, nonempty=True, source=_S23 + " #6"),
    _money("Rmb_settlement", "=CNY", source=_S23 + " #7 (non-HK)"),
    Column("Currency", Kind.CURRENCY, required=True, nonempty=True, source=_S23 + " #8"),
    Column("Rate", Kind.DECIMAL, source=_S23 + " #9 (non-HK; 8 decimals, read by BC-3)"),
    _time("Payment_time", source=_S23 + " #10"),
    _time("Settlement_time", source=_S23 + " #11"),
    Column("Type", Kind.ENUM, allowed=("P", "R"), strict=True, required=True, nonempty=True, source=_S23 + " #12"),
    Column("Status", Kind.ENUM, allowed=("L",), source=_S23 + " #13"),
    _text("Remarks", 256, source=_S23 + " #14"),
    _text("Secondary_merchant_industry", 4, source=_S23 + " #15"),
    _text("Secondary_merchant_name", source=_S23 + " #16"),
    _text("Secondary_merchant_id", source=_S23 + " (HK #14)"),
    _text("Operator_name", source=_S23 + " #17"),
    _text("Order_scene", source=_S23 + " #18"),
    Column("Trans_currency", Kind.CURRENCY, source=_S23 + " #19"),
    _money("Trans_amount", "Trans_currency", nonnegative=True, source=_S23 + " #20"),
    _text("Trans_forex_rate", source=_S23 + " #21"),
    _text("Issue", source=_S23 + " (HK #20)"),
)


def _names(columns: Sequence[Column], *, skip: Iterable[str] = ()) -> tuple[str, ...]:
    gone = set(skip)
    return tuple(c.name for c in columns if c.name not in gone)


# ---------------------------------------------------------------------------------------------
# Family B1 (barcode.md 3.1-3.3) and B2 (4.1)

_S31, _S32, _S33, _S41 = "barcode.md 3.1", "barcode.md 3.2", "barcode.md 3.3", "barcode.md 4.1"
_B_TYPES = ("PAYMENT", "REFUND", "CANCEL")
B1_TX_COLUMNS = (
    _text("merchantId", 64, required=True, nonempty=True, source=_S31 + " #1"),
    _text("sellerID", 64, source=_S31 + " #2"),
    _text("storeId", 64, source=_S31 + " #3"),
    _text("productCode", 64, required=True, source=_S31 + " #4"),
    _time("paymentTime", required=True, nonempty=True, source=_S31 + " #5"),
    _text("orderTitle", 256, source=_S31 + " #6"),
    Column("transType", Kind.ENUM, allowed=_B_TYPES, required=True, nonempty=True, source=_S31 + " #7"),
    _text("transStatus", 64, source=_S31 + " #8"),
    _text("merchantTransId", 64, required=True, nonempty=True, source=_S31 + " #9"),
    _text("acquirementId", 64, required=True, source=_S31 + " #10"),
    _text("originalAcquirementId", 64, source=_S31 + " #11"),
    # Signed or not is undocumented for refunds (barcode.md 3.1, recorded in abbreviated form): amount_signs.
    _money("orderAmount", "orderCurrency", "@name_currency", required=True, nonempty=True, source=_S31 + " #12"),
    Column("orderCurrency", Kind.CURRENCY, required=True, source=_S31 + " #13"),
    _text("remark", 256, source=_S31 + " #14"),
    _text("userSite", 64, source=_S31 + " #15"),
    _text("siteUserId", 64, source=_S31 + " #16"),
)
B1_SD_COLUMNS = (
    _text("merchantId", 64, required=True, nonempty=True, source=_S32 + " #1"),
    _text("sellerID", 64, source=_S32 + " #2"),
    _text("storeId", 64, source=_S32 + " #3"),
    Column("transType", Kind.ENUM, allowed=_B_TYPES, required=True, nonempty=True, source=_S32 + " #4"),
    _text("productCode", 64, source=_S32 + " #5"),
    _text("remark", 256, source=_S32 + " #6"),
    _text("acquirementId", 64, source=_S32 + " #7 (documented optional, sic)"),
    _text("originalAcquirementId", 64, source=_S32 + " #8"),
    _time("paymentTime", source=_S32 + " #9"),
    _text("userSite", 64, source=_S32 + " #10"),
    _text("referenceId", 64, required=True, nonempty=True, source=_S32 + " #11"),
    _time("settlementTime", source=_S32 + " #12"),
    _text("merchantTransId", 64, required=True, nonempty=True, source=_S32 + " #13"),
    _money("orderAmount", "orderCurrency", "@name_currency", required=True, nonempty=True, source=_S32 + " #14"),
    Column("orderCurrency", Kind.CURRENCY, source=_S32 + " #15"),
    # Columns 16+ are not in any available version of the page (barcode.md 3.2 [inferred] names): optional.
    _money("settlementAmount", "settlementCurrency", "@name_currency", source=_S32 + " #16+ [inferred]"),
    Column("settlementCurrency", Kind.CURRENCY, source=_S32 + " #16+ [inferred]"),
    _money("fee", "settlementCurrency", "@name_currency", source=_S32 + " #16+ [inferred]"),
)
B1_SS_COLUMNS = (
    Column("type", Kind.ENUM, allowed=(*_B_TYPES, "TOTAL"), required=True, nonempty=True, source=_S33 + " #1"),
    _time("settlementTime", required=True, source=_S33 + " #2"),
    Column("count", Kind.INTEGER, required=True, nonempty=True, nonnegative=True, source=_S33 + " #3"),
    _money("settlementAmount", "settlementCurrency", required=True, nonempty=True, source=_S33 + " #4"),
    Column("settlementCurrency", Kind.CURRENCY, required=True, nonempty=True, source=_S33 + " #5"),
    _money("commission", "settlementCurrency", required=True, source=_S33 + " #6 (sign as written)"),
    _text("referenceId", 64, required=True, nonempty=True, source=_S33 + " #7"),
    _text("merchantId", 64, source=_S33 + " #8"),
)
B2_COLUMNS = (
    _text("Partner_transaction_id", 64, required=True, nonempty=True, source=_S41 + " #1"),
    _text("Transaction_id", 64, required=True, nonempty=True, source=_S41 + " #2"),
    _money("Amount", "Currency", required=True, nonempty=True, nonnegative=True, source=_S41 + " #3 (unsigned)"),
    _money("Fee", "Currency", nonnegative=True, source=_S41 + " #4"),
    _money("Settlement", "Currency", source=_S41 + " #5 (signed; empty in the transaction file)"),
    Column("Currency", Kind.CURRENCY, required=True, nonempty=True, source=_S41 + " #6"),
    _text("Payment_time", 64, source=_S41 + " #7 (M/D/YYYY H:MM[:SS], read by the checks)"),
    _text("Settlement_time", 64, source=_S41 + " #8"),
    _text("Issue", 64, source=_S41 + " #9"),
    _text("Product", 64, source=_S41 + " #10"),
    Column("Type", Kind.ENUM, allowed=_B_TYPES, required=True, nonempty=True, source=_S41 + " #11"),
    _text("Status", 64, source=_S41 + " #12"),
    _text("Remarks", 256, source=_S41 + " #13"),
    _text("Original_partner_transaction_ID", 64, source=_S41 + " #14 (header spelling; matched case-insensitively)"),
)

_S42 = "barcode.md 4.2"
B2_BATCH_COLUMNS = (
    _text("Settle_batch_no", 32, required=True, nonempty=True, source=_S42 + " batch #1"),
    _time("Settle_date", source=_S42 + " batch #2"),
    _money("Amount", "Currency", required=True, nonempty=True, source=_S42 + " batch #3 (total)"),
    _money("Fee", "Currency", required=True, source=_S42 + " batch #4 (total commission)"),
    _money("Settlement", "Currency", required=True, nonempty=True, source=_S42 + " batch #5 (total)"),
    Column("Currency", Kind.CURRENCY, required=True, nonempty=True, source=_S42 + " batch #6"),
)

# ---------------------------------------------------------------------------------------------
# Family C: online cross-border "forex" files (barcode.md 5). One file, the transaction file: it carries the
# settlement columns too (Settlement_time empty until settled). The spec names no C settlement file of its own
# (only a status value, "settlement file L", barcode.md 5 #15), so none is described here.

_S5 = "barcode.md 5"
C_TX_COLUMNS = (
    _text("Partner_transaction_id", 64, required=True, nonempty=True, source=_S5 + " #1"),
    # optional per web_cn ("Transaction_ID" must be enabled; barcode.md 5, 7): header names match case-insensitively
    _text("Transaction_id", 64, source=_S5 + " #2 (optional column, web_cn)"),
    # Number(8,2); one decimal ("555.0") is legal (barcode.md 5 observations); unsigned, the sign is the Type's
    _money("Amount", "Currency", required=True, nonempty=True, nonnegative=True, source=_S5 + " #3"),
    _money("Rmb_amount", "=CNY", nonnegative=True, source=_S5 + " #4"),
    _money("Fee", "Currency", required=True, nonnegative=True, source=_S5 + " #5"),
    _money("Distribute_amount", "Currency", nonnegative=True, source=_S5 + " #6 (split amount)"),
    _money("Distribute_rmb_amount", "=CNY", nonnegative=True, source=_S5 + " #7"),
    _money("Settlement", "Currency", required=True, source=_S5 + " #8"),
    _money("Rmb_settlement", "=CNY", source=_S5 + " #9"),
    Column("Currency", Kind.CURRENCY, required=True, nonempty=True, source=_S5 + " #10"),
    Column("Rate", Kind.DECIMAL, source=_S5 + " #11 (8 decimals in samples; read by BC-3)"),
    _time("Payment_time", required=True, nonempty=True, source=_S5 + " #12"),
    _time("Settlement_time", source=_S5 + " #13 (empty until settled)"),
    Column("Type", Kind.ENUM, allowed=("P", "R"), strict=True, required=True, nonempty=True, source=_S5 + " #14"),
    # P paid / L liquidated (payments), F failed / L (refunds); an unknown value is a warning, as in family A
    Column("Status", Kind.ENUM, allowed=("P", "L", "F"), source=_S5 + " #15"),
    _text("Remarks", 256, source=_S5 + " #16"),
    _text("Original_partner_transaction_ID", 64, source=_S5 + " (optional column, web_cn; position [inferred])"),
)

HEADERS: dict[tuple[str, str], tuple[str, ...]] = {
    (TX, "v15"): _names(A_TX_COLUMNS, skip=("Secondary_merchant_id", "Issue")),
    (TX, "hk17"): _names(A_TX_COLUMNS),
    (TX, "v8"): _names(A_TX_COLUMNS)[:8],
    (ST, "v21"): _names(A_ST_COLUMNS, skip=("Secondary_merchant_id", "Issue")),
    (ST, "hk20"): _names(A_ST_COLUMNS, skip=("Rmb_amount", "Rmb_settlement", "Rate")),
    (B1_TX, "v1"): _names(B1_TX_COLUMNS),
    (B1_SD, "v15"): _names(B1_SD_COLUMNS)[:15],
    (B1_SD, "v18"): _names(B1_SD_COLUMNS),
    (B1_SS, "v1"): _names(B1_SS_COLUMNS),
    (B2_TX, "v1"): _names(B2_COLUMNS),
    (B2_ST, "v1"): _names(B2_COLUMNS),
    (B2_BATCH, "v1"): _names(B2_BATCH_COLUMNS),
    (C_TX, "v16"): _names(C_TX_COLUMNS, skip=("Original_partner_transaction_ID",)),
    # web_cn's optional column, appended [inferred: its position is not documented; columns are found by name]
    (C_TX, "web_cn"): _names(C_TX_COLUMNS),
}
_DEFAULT_VARIANT = {TX: "v15", ST: "v21", B1_TX: "v1", B1_SD: "v15", B1_SS: "v1", B2_TX: "v1", B2_ST: "v1",
                    B2_BATCH: "v1", C_TX: "v16"}


# ---------------------------------------------------------------------------------------------
# Layouts


def _negative(column: str) -> str:
    return f"({{{column}}} IN ({', '.join(repr(t) for t in NEGATIVE_TYPES)}))"


def _signed(amount: str, type_column: str, sign: str) -> str:
    """The canonical amount: unsigned in the file, the sign from the type (``by_type``) or as written."""
    if sign == "as_written":
        return f"{{{amount}}}"
    return f"CASE WHEN {_negative(type_column)} THEN -{{{amount}}} ELSE {{{amount}}} END"


def _fee(fee: str, type_column: str, sign: str) -> str:
    """Negative = charged. Unsigned fees are returned on refunds/cancels [inferred: barcode.md 9 BC-2 holds for
    refund rows of family C and B2 only so]; ``as_written`` reads a positive cell as charged."""
    if sign == "as_written":
        return f"-{{{fee}}}"
    return f"CASE WHEN {_negative(type_column)} THEN {{{fee}}} ELSE -{{{fee}}} END"


def _everything(columns: Sequence[Column]) -> tuple[str, ...]:
    """Every column keeps its text in ``extras``: ``provider_rows`` gives the file back exactly from them."""
    return tuple(c.name for c in columns)


def _relaxed(columns: Sequence[Column], sign: str) -> tuple[Column, ...]:
    """``as_written``: a minus sign is legal where ``by_type`` forbids it."""
    if sign == "by_type":
        return tuple(columns)
    return tuple(replace(c, nonnegative=False) if c.kind is Kind.AMOUNT else c for c in columns)


def _a_transaction_layout(sign: str) -> Layout:
    t = "Transaction_type"
    outputs = {
        "record_type": f"CASE {{{t}}} WHEN 'REVERSE' THEN 'REVERSAL' ELSE {{{t}}} END",
        "raw_type": f"{{{t}:raw}}",
        "account_id": "{@account}",
        "merchant_ref_id": "{Partner_transaction_id}",
        "provider_txn_id": "{Transaction_id}",
        "amount_minor": _signed("Transaction_amount", t, sign),
        "amount_currency": "{Currency}",
        "fee_minor": _fee("Charge_amount", t, sign),
        "fee_currency": "CASE WHEN {Charge_amount} IS NOT NULL THEN {Currency} END",
        "occurred_at": "{Payment_time}",
        "occurred_offset_min": "{Payment_time:offset}",
    }
    cols = _relaxed(A_TX_COLUMNS, sign)
    return Layout(f"{FAMILY}.{TX}.{sign}", cols, outputs, extras_keep=_everything(cols))


def _a_settlement_layout(sign: str, report: str = ST, columns: Sequence[Column] = A_ST_COLUMNS) -> Layout:
    """Family A's settlement file; family C's file has the same P/R rows with the same money columns (barcode.md
    5 vs 2.3), so ``report``/``columns`` give it this layout too (plus its refund -> payment link)."""
    t = "Type"
    outputs = {
        "record_type": "CASE {Type} WHEN 'P' THEN 'PAYMENT' WHEN 'R' THEN 'REFUND' ELSE {Type} END",
        "raw_type": "{Type:raw}",
        "status": "{Status}",
        "account_id": "{@account}",
        "merchant_ref_id": "{Partner_transaction_id}",
        "provider_txn_id": "{Transaction_id}",
        "amount_minor": _signed("Amount", t, sign),
        "amount_currency": "{Currency}",
        "settlement_minor": _signed("Settlement", t, sign),
        "settlement_currency": "{Currency}",
        "fee_minor": _fee("Fee", t, sign),
        "fee_currency": "CASE WHEN {Fee} IS NOT NULL THEN {Currency} END",
        "occurred_at": "{Payment_time}",
        "occurred_offset_min": "{Payment_time:offset}",
        "settled_at": "{Settlement_time}",
        "settled_offset_min": "{Settlement_time:offset}",
        # BC-3 (barcode.md 2.3 #4, #7, #9): the rate Amount -> Rmb_amount, and the CNY columns signed like the
        # foreign ones (hidden: read by ``_declare_rmb``; absent in the 20-column HK variant)
        "fx_rate": "{Rate}",
        "fx_pair": "CASE WHEN {Rate} IS NOT NULL THEN {Currency} || '/CNY' END",
        "col:Rmb_amount": _signed("Rmb_amount", t, sign),
        "col:Rmb_settlement": _signed("Rmb_settlement", t, sign),
    }
    if any(c.name == "Original_partner_transaction_ID" for c in columns):
        outputs["original_merchant_ref_id"] = "{Original_partner_transaction_ID}"
    cols = _relaxed(columns, sign)
    return Layout(f"{FAMILY}.{report}.{sign}", cols, outputs, extras_keep=_everything(cols))


def _b1_detail_layout(report: str, sign: str) -> Layout:
    columns = B1_TX_COLUMNS if report == B1_TX else B1_SD_COLUMNS
    refund = "({transType} = 'REFUND')"
    outputs = {
        "record_type": "{transType}",
        "raw_type": "{transType:raw}",
        "account_id": "{merchantId}",
        # A refund row's merchantTransId probably holds the merchantRefundId (barcode.md 3.1 [inferred]).
        "merchant_ref_id": "{merchantTransId}",
        "provider_txn_id": "{acquirementId}",
        "original_provider_txn_id": f"CASE WHEN {refund} THEN {{originalAcquirementId}} END",
        "amount_minor": _signed("orderAmount", "transType", sign),
        "amount_currency": "coalesce({orderCurrency}, {@name_currency})",
        "occurred_at": "{paymentTime}",
        "occurred_offset_min": "{paymentTime:offset}",
    }
    if report == B1_SD:
        outputs |= {
            "settlement_batch_id": "{referenceId}",
            "settled_at": "{settlementTime}",
            "settled_offset_min": "{settlementTime:offset}",
            "settlement_minor": _signed("settlementAmount", "transType", sign),
            "settlement_currency": "CASE WHEN {settlementAmount} IS NOT NULL "
                                   "THEN coalesce({settlementCurrency}, {@name_currency}) END",
            # as written, negative = charged, like the summary's commission (barcode.md 3.3 sample) [inferred]
            "fee_minor": "{fee}" if sign == "as_written" else _fee("fee", "transType", sign),
            "fee_currency": "CASE WHEN {fee} IS NOT NULL THEN coalesce({settlementCurrency}, {@name_currency}) END",
        }
    # as_written is the default here: B1 amounts carry their sign (barcode.md 3.3 observations) [inferred].
    cols = _relaxed(columns, "as_written")
    return Layout(f"{FAMILY}.{report}.{sign}", cols, outputs, extras_keep=_everything(cols))


def _b1_summary_layout() -> Layout:
    outputs = {
        "record_type": "{type}",
        "raw_type": "{type:raw}",
        "account_id": "{merchantId}",
        "settlement_batch_id": "{referenceId}",
        "settlement_minor": "{settlementAmount}",
        "settlement_currency": "{settlementCurrency}",
        "fee_minor": "{commission}",  # negative in the sample: charged (barcode.md 3.3)
        "fee_currency": "CASE WHEN {commission} IS NOT NULL THEN {settlementCurrency} END",
        "settled_at": "{settlementTime}",
        "settled_offset_min": "{settlementTime:offset}",
        "col:count": "{count}",  # hidden: read by the declared figures, kept when options.fields narrows
    }
    return Layout(f"{FAMILY}.{B1_SS}", B1_SS_COLUMNS, outputs, extras_keep=_everything(B1_SS_COLUMNS))


def _b2_layout(report: str, sign: str) -> Layout:
    t = "Type"
    outputs = {
        "record_type": "{Type}",
        "raw_type": "{Type:raw}",
        "status": "{Status}",
        "account_id": "{@account}",
        "merchant_ref_id": "{Partner_transaction_id}",
        "provider_txn_id": "{Transaction_id}",
        "original_merchant_ref_id": "{Original_partner_transaction_ID}",
        "amount_minor": _signed("Amount", t, sign),
        "amount_currency": "{Currency}",
        "fee_minor": _fee("Fee", t, sign),
        "fee_currency": "CASE WHEN {Fee} IS NOT NULL THEN {Currency} END",
        "settlement_minor": "{Settlement}",  # already signed (barcode.md 4.1, 8.8): never re-signed
        "settlement_currency": "CASE WHEN {Settlement} IS NOT NULL THEN {Currency} END",
        "settlement_batch_id": "{@batch}",
    }
    cols = _relaxed(B2_COLUMNS, sign)
    if report == B2_ST:
        cols = tuple(replace(c, nonempty=True) if c.name == "Settlement" else c for c in cols)
    return Layout(f"{FAMILY}.{report}.{sign}", cols, outputs, extras_keep=_everything(cols))


def _b2_batch_layout() -> Layout:
    """One row per settlement batch: totals as written [inferred: the sample's Settlement = Amount - Fee holds, so
    Fee is the commission charged; barcode.md 4.2], compared with the batch's settle file by BC-5."""
    outputs = {
        "record_type": "'SETTLEMENT'",
        "account_id": "{@account}",
        "settlement_batch_id": "{Settle_batch_no}",
        "amount_minor": "{Amount}",
        "amount_currency": "{Currency}",
        "fee_minor": "-{Fee}",
        "fee_currency": "CASE WHEN {Fee} IS NOT NULL THEN {Currency} END",
        "settlement_minor": "{Settlement}",
        "settlement_currency": "{Currency}",
        "settled_at": "{Settle_date}",
        "settled_offset_min": "{Settle_date:offset}",
    }
    return Layout(f"{FAMILY}.{B2_BATCH}", B2_BATCH_COLUMNS, outputs, extras_keep=_everything(B2_BATCH_COLUMNS))


def _layouts(report: str, sign: str) -> Layout:
    if report == B2_BATCH:
        return _b2_batch_layout()
    if report == TX:
        return _a_transaction_layout(sign)
    if report == ST:
        return _a_settlement_layout(sign)
    if report == C_TX:
        return _a_settlement_layout(sign, C_TX, C_TX_COLUMNS)
    if report in (B1_TX, B1_SD):
        return _b1_detail_layout(report, sign)
    if report == B1_SS:
        return _b1_summary_layout()
    return _b2_layout(report, sign)


_DEFAULT_SIGN = {TX: "by_type", ST: "by_type", B1_TX: "as_written", B1_SD: "as_written", B1_SS: "as_written",
                 B2_TX: "by_type", B2_ST: "by_type", B2_BATCH: "as_written",
                 C_TX: "by_type"}  # family C: unsigned, refunds net -Settlement (barcode.md 5 [inferred])
_LAYOUTS: dict[tuple[str, str], Layout] = {(r, s): _layouts(r, s) for r in _DEFAULT_SIGN for s in SIGNS}


def amount_sign(report: str, options: ParseOptions) -> str:
    """The configured sign convention of ``report`` (module docstring)."""
    sign = options.amount_signs.get(f"{FAMILY}.{report}", _DEFAULT_SIGN[report])
    if sign not in SIGNS:
        raise errors.ConfigError(f"amount_signs['{FAMILY}.{report}'] must be one of {SIGNS}, not {sign!r}")
    return sign


# ---------------------------------------------------------------------------------------------
# Decoding and splitting


def _decode(data: bytes, name: str, delimiter: str) -> tuple[str, str] | errors.FormatError:
    """UTF-8 (BOM stripped), else GB18030 (the GBK superset) (barcode.md 8.9 [inferred]).

    A file whose non-ASCII text before the first bad byte was valid UTF-8 is a UTF-8 file with a broken byte,
    not GBK (GBK text is almost never valid UTF-8), so it is not re-read as GB18030 mojibake. Otherwise, both
    failing, the error of the encoding that read further (most likely the intended one), at its line and cell."""
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as exc:
        utf8 = exc
    if not data[:utf8.start].isascii():
        worst, encoding = utf8, "utf-8"
    else:
        try:
            return data.decode("gb18030"), "gb18030"
        except UnicodeDecodeError as exc:
            worst, encoding = (exc, "gb18030") if exc.start >= utf8.start else (utf8, "utf-8")
    line_start = data.rfind(b"\n", 0, worst.start) + 1
    line = data.count(b"\n", 0, worst.start) + 1
    prefix = data[line_start:worst.start].decode(encoding, errors="replace")
    bad = data[worst.start:worst.start + 4]
    return errors.BadEncoding(f"byte 0x{bad[0]:02x} is neither UTF-8 nor GBK/GB18030 text", file=name, line=line,
                              column_index=prefix.count(delimiter) + 1, expected="UTF-8 or GBK / GB18030",
                              found=repr(bad))


def _split(text: str, delimiter: str) -> list[str]:
    """Cells of one line, trimmed (barcode.md 8.5). ``|`` files are never quoted; ``,`` files may be (RFC 4180)."""
    if delimiter == "|":
        cells = text.split("|")
    else:
        try:
            cells = next(csv.reader([text], delimiter=delimiter), [])
        except csv.Error:
            cells = text.split(delimiter)
    return [c.strip(_TRIM) for c in cells]


_PARTNER_KEYS = ("Partner", "Payment_time", "Total_count")
_PARTNER_RE = re.compile(r"\s*Partner\s*:")
_BARE_PARTNER_RE = re.compile(r"\s*[0-9]+\s*\|[^|]*\|\s*[0-9]*\s*")


def _is_partner_line(text: str) -> bool:
    """``Partner:...`` or three bare values starting with a partner ID (names absent, barcode.md 2.2)."""
    return bool(_PARTNER_RE.match(text) or _BARE_PARTNER_RE.fullmatch(text))


def _partner_line(text: str, line_no: int, name: str, problems: list[errors.FormatError]) -> dict[str, str]:
    """``Partner:<pid>|Payment_time: <date>|Total_count:<n>`` (barcode.md 2.2 line 1, 8.3): key:value with optional
    spaces; the doc says field names may be absent, so three bare values are read by position."""
    cells = text.split("|")
    values: dict[str, str] = {}
    for i, cell in enumerate(cells):
        key, sep, value = cell.partition(":")
        if sep and key.strip() in _PARTNER_KEYS:
            values[key.strip()] = value.strip()
        elif not sep and len(cells) == len(_PARTNER_KEYS):
            values[_PARTNER_KEYS[i]] = cell.strip()
        else:
            problems.append(errors.BadSection(f"summary cell {cell.strip()!r} is not Partner / Payment_time / "
                                              "Total_count", file=name, line=line_no, column_index=i + 1,
                                              expected="Key:value", found=cell[:80]))
    for i, key in enumerate(_PARTNER_KEYS):
        if key not in values:
            problems.append(errors.BadSection(f"the summary line has no {key}", file=name, line=line_no,
                                              column=key, column_index=i + 1, expected=f"{key}:<value>",
                                              found=text[:80]))
    pid = values.get("Partner")
    if pid is not None and not re.fullmatch(r"2088[0-9]{12}", pid):
        # the doc's own sample has 12 digits (barcode.md 2.2): digits are a warning, anything else an error
        digits = pid.isdigit()
        problems.append(errors.BadValue("Partner is not a 16-digit 2088... partner ID", file=name, line=line_no,
                                        column="Partner", column_index=1, expected="2088 + 12 digits", found=pid,
                                        severity="warning" if digits else "error"))
    count = values.get("Total_count")
    if count is not None and not count.isdigit():
        problems.append(errors.BadNumber("Total_count is not a count", file=name, line=line_no,
                                         column="Total_count", column_index=3, expected="a non-negative integer",
                                         found=count))
        del values["Total_count"]
    day = values.get("Payment_time")
    if day is not None:
        try:
            date.fromisoformat(day[:10])
        except ValueError:
            problems.append(errors.BadDate("Payment_time is not a date", file=name, line=line_no,
                                           column="Payment_time", column_index=2, expected="YYYY-MM-DD", found=day))
    return values


# ---------------------------------------------------------------------------------------------
# The driver


@dataclass(frozen=True)
class BarcodeReport(ReportFormat):
    """One barcode report: optional ``Partner:`` line, a header line, records (module docstring)."""

    family: str
    report: str
    name_re: re.Pattern[str]
    delimiter: str
    markers: tuple[str, ...]  # header names (case-insensitive) that identify the report
    partner_line: str = "none"  # required | optional | none
    extensions: tuple[str, ...] = (".txt",)
    declare: DeclareFn | None = None  # figures derived from the lines (the B1 summary's rows)
    # header names that rule the report out: the family C header holds every family A settlement marker
    excludes: tuple[str, ...] = ()
    # reports whose names this one shares (family C: A's ``_transaction_`` and B2's ``_fptrade_``, barcode.md 1, 5):
    # under such a name only the header makes it this report, so a broken header still goes to the name's owner
    defer_names_to: tuple[str, ...] = ()

    def name_checks(self) -> Mapping[str, str]:
        return {}

    def _header_of(self, head: Sequence[Sequence[str]]) -> list[str] | None:
        for cells in head[:2]:
            joined = ",".join(cells)  # the registry splits on commas; a '|' line comes back (nearly) whole
            if self.partner_line != "none" and _is_partner_line(joined):
                continue
            return [c.strip() for c in (joined.split("|") if self.delimiter == "|" else cells)]
        return None

    def identify(self, name: str, head: Sequence[Sequence[str]]) -> int:
        if not any(name.lower().endswith(e) for e in self.extensions):
            return 0
        by_name = self.name_meta(name) is not None
        header = self._header_of(head)
        names = {h.lower() for h in header or ()}
        by_header = all(m.lower() in names for m in self.markers) and names.isdisjoint(x.lower() for x in self.excludes)
        if by_header:
            return 3 if by_name else 2
        if any(_BY_NAME[r].name_meta(name) is not None for r in self.defer_names_to):
            return 0
        return 1 if by_name else 0

    def layout(self, options: ParseOptions) -> Layout:
        return _layout_for(self, _LAYOUTS[(self.report, amount_sign(self.report, options))], options, body=True)

    def parse(self, path: Path, con: duckdb.DuckDBPyConnection | None = None,
              options: ParseOptions | None = None, *, name: str | None = None) -> ParsedFile:
        parsed, con, options = self._start(path, con, options, name)
        data = parsed.path.read_bytes()
        parsed.sha256, parsed.size = hashlib.sha256(data).hexdigest(), len(data)
        if "name_account" in parsed.meta:
            parsed.meta["account"] = parsed.meta["name_account"]
        if len(data) > _MAX_BYTES:
            parsed.problems.append(errors.LineTooLong(f"file larger than {_MAX_BYTES} bytes", file=parsed.name,
                                                      line=None))
            return parsed
        decoded = _decode(data, parsed.name, self.delimiter)
        if isinstance(decoded, errors.FormatError):
            parsed.problems.append(decoded)
            return parsed
        text, parsed.meta["encoding"] = decoded
        return self._parse_text(parsed, con, options, text)

    def _parse_text(self, parsed: ParsedFile, con: duckdb.DuckDBPyConnection, options: ParseOptions,
                    text: str) -> ParsedFile:
        name = parsed.name
        lines = [(i + 1, line.rstrip("\r")) for i, line in enumerate(text.split("\n"))]
        while lines and not lines[-1][1].strip():
            lines.pop()
        lines = [(n, t) for n, t in lines if t.strip()]  # blank lines are no records
        if not lines:
            parsed.problems.append(errors.EmptyFile("the file has no header line", file=name, line=1,
                                                    expected="a header line"))
            return parsed
        pos = 0
        if self.partner_line != "none" and _is_partner_line(lines[0][1]):
            line_no, first = lines[0]
            values = _partner_line(first, line_no, name, parsed.problems)
            parsed.meta |= {"partner": values.get("Partner", ""), "payment_date": values.get("Payment_time", "")}
            parsed.meta.setdefault("account", values.get("Partner", ""))
            if values.get("Total_count") is not None:
                parsed.declared.append(Declared("file", "count", int(values["Total_count"]), line_no))
            if parsed.meta.get("name_account") not in (None, values.get("Partner")):
                parsed.problems.append(errors.NameMismatch(
                    "the file name's partner ID differs from the Partner line", file=name, line=line_no,
                    column="Partner", column_index=1, expected=parsed.meta["name_account"],
                    found=values.get("Partner"), severity="warning"))
            pos = 1
        elif self.partner_line == "required":
            parsed.problems.append(errors.BadSection("the Partner:...|Payment_time:...|Total_count:n line is "
                                                     "missing", file=name, line=lines[0][0], column_index=1,
                                                     expected="Partner:<pid>|Payment_time:<date>|Total_count:<n>",
                                                     found=lines[0][1][:80]))
        if pos >= len(lines):
            parsed.problems.append(errors.EmptyFile("no header line after the summary line", file=name,
                                                    line=lines[-1][0] + 1, expected="a header line"))
            return parsed
        header_line, header_text = lines[pos]
        header = _split(header_text, self.delimiter)
        parsed.header = header
        layout = self.layout(options)
        parsed.variant = _variant_of(self.report, header)
        _header_problems(parsed, layout, header, header_line)
        rows: list[tuple[int, list[str | None]]] = []
        # a short last record with no line end: the transfer stopped mid-record (not just a malformed row)
        cut_line = lines[-1][0] if not text.endswith("\n") else None
        for line_no, raw in lines[pos + 1:]:
            cells = _split(raw, self.delimiter)
            if line_no == cut_line and len(cells) < len(header):
                parsed.problems.append(errors.TruncatedFile(
                    "the file ends in the middle of a record (no line end)", file=name, line=line_no,
                    expected=f"{len(header)} cells and a line end", found=f"{len(cells)} cells: {raw[-40:]}"))
            if len(cells) == len(header) + 1 and cells[-1] == "":
                parsed.problems.append(errors.SurplusTrailingCell(
                    "one extra empty cell at the end of the record", file=name, line=line_no,
                    column_index=len(cells), expected=f"{len(header)} cells", found=f"{len(cells)} cells"))
                cells.pop()
            if len(cells) != len(header):
                parsed.problems.append(errors.WrongColumnCount(
                    f"{len(cells)} cells where the header has {len(header)}", file=name, line=line_no,
                    column_index=min(len(cells), len(header)) + 1, expected=f"{len(header)} cells",
                    found=f"{len(cells)} cells: {raw[:80]}"))
                continue
            rows.append((line_no, [c if c != "" else None for c in cells]))
        compiled = compile_layout(layout, header, parsed.meta)
        body = convert_rows(con, rows, compiled, len(header))

        def raw_source() -> str:
            return _raw_rows_table(con, rows, len(header), parsed)

        from_partner_line = list(parsed.declared)
        _finish(parsed, con, body, compiled, raw_source, options, self.declare)
        parsed.declared = from_partner_line + (parsed.declared if self.declare is not None else [])
        return parsed


def _variant_of(report: str, header: Sequence[str]) -> str:
    """The documented version whose column set the header has (case-insensitive), else ``custom``."""
    names = {h.lower() for h in header}
    for (r, variant), cols in HEADERS.items():
        if r == report and {c.lower() for c in cols} == names:
            return variant
    return "custom"


def _declare_summary(parsed: ParsedFile, con: duckdb.DuckDBPyConnection) -> list[Declared]:
    """Each B1 summary row states a count, a settlement and a commission for its type (barcode.md 3.3)."""
    if parsed.body is None:
        return []
    out: list[Declared] = []
    rows = con.execute(
        f"SELECT {parsed.body.line_sql}, record_type, settlement_batch_id, settlement_currency, settlement_minor, "
        f"fee_minor, \"col:count\" FROM {parsed.body.table} WHERE __bad IS NULL "
        "ORDER BY rowid").fetchall()
    for line, kind, ref, ccy, settlement, fee, count in rows:
        scope = str(kind or "")
        out.append(Declared(scope, "count", count, int(line), None, ref))
        out.append(Declared(scope, "settlement", settlement, int(line), ccy, ref))
        out.append(Declared(scope, "commission", fee, int(line), ccy, ref))
    return out


def _declare_rmb(parsed: ParsedFile, con: duckdb.DuckDBPyConnection) -> list[Declared]:
    """The CNY figures each non-HK settlement row states (barcode.md 2.3 #4, #7): scope ``row``, figures
    ``rmb_amount`` / ``rmb_settlement`` (signed like the row's amount), on the row's line; BC-3 compares them
    with amount x Rate."""
    if parsed.body is None:
        return []
    rows = con.execute(
        f"SELECT {parsed.body.line_sql}, \"col:Rmb_amount\", \"col:Rmb_settlement\" "
        f"FROM {parsed.body.table} WHERE __bad IS NULL ORDER BY rowid").fetchall()
    out: list[Declared] = []
    for line, rmb_amount, rmb_settlement in rows:
        for figure, value in (("rmb_amount", rmb_amount), ("rmb_settlement", rmb_settlement)):
            if value is not None:
                out.append(Declared("row", figure, int(value), int(line), "CNY"))
    return out


_PID = r"(?P<name_account>[0-9]{12,16})"
TRANSACTION = BarcodeReport(FAMILY, TX, re.compile(rf"{_PID}_transaction_(?P<name_date>[0-9]{{8}})\.txt"), "|",
                            ("Partner_transaction_id", "Transaction_amount", "Charge_amount", "Transaction_type"),
                            partner_line="required")
SETTLEMENT = BarcodeReport(FAMILY, ST, re.compile(rf"{_PID}_settlement_(?P<name_date>[0-9]{{8}})\.txt"), "|",
                           ("Partner_transaction_id", "Amount", "Fee", "Settlement", "Settlement_time", "Type"),
                           partner_line="optional", declare=_declare_rmb, excludes=("Distribute_amount",))
_B1 = r"_(?P<name_currency>[A-Z]{3})_(?P<name_date>[0-9]{8})\.csv"
TRANSACTION_DETAIL = BarcodeReport(FAMILY, B1_TX, re.compile("ALIPAY_TRANSACTION_DETAIL" + _B1), ",",
                                   ("merchantId", "merchantTransId", "acquirementId", "transStatus", "orderAmount"),
                                   extensions=(".csv",))
SETTLEMENT_DETAIL = BarcodeReport(FAMILY, B1_SD, re.compile("ALIPAY_SETTLEMENT_DETAIL" + _B1), ",",
                                  ("merchantId", "merchantTransId", "referenceId", "orderAmount", "transType"),
                                  extensions=(".csv",))
SETTLEMENT_SUMMARY = BarcodeReport(FAMILY, B1_SS, re.compile("ALIPAY_SETTLEMENT_SUMMARY" + _B1), ",",
                                   ("type", "count", "settlementAmount", "commission", "referenceId"),
                                   extensions=(".csv",), declare=_declare_summary)
_B2_MARKERS = ("Partner_transaction_id", "Amount", "Fee", "Settlement", "Product", "Type",
               "Original_partner_transaction_ID")
HK_TRANSACTION = BarcodeReport(FAMILY, B2_TX,
                               re.compile(r"(?P<name_account>[^_]+)_fptrade_(?P<name_date>[0-9]{8})\.csv"), ",",
                               _B2_MARKERS, extensions=(".csv",))
HK_SETTLEMENT = BarcodeReport(FAMILY, B2_ST, re.compile(r"(?P<name_account>[^_]+)_settle_(?P<name_date>[0-9]{8})_"
                                                        r"(?P<batch>[^_.]+)\.csv"),
                              ",", _B2_MARKERS, extensions=(".csv",))
HK_SETTLEBATCH = BarcodeReport(FAMILY, B2_BATCH,
                                re.compile(r"(?P<name_account>[^_]+)_settlebatch_(?P<name_date>[0-9]{8})\.csv"), ",",
                                ("Settle_batch_no", "Settle_date", "Amount", "Fee", "Settlement", "Currency"),
                                extensions=(".csv",))
# Family C names (barcode.md 5): SFTP <PID>_fptrade_<YYYYMMDD>.csv (shared with B2, told apart by the
# '|'-separated header), <PID>_transaction_<YYYYMMDD>.txt (shared with family A, told apart by the header line,
# barcode.md 1) and the website download <PID>_<YYYYMMDD | YYYYMM | YYYYMMDD + 6 digits>.{csv,txt} (.xls: no reader).
FOREX_TRANSACTION = BarcodeReport(
    FAMILY, C_TX,
    re.compile(rf"{_PID}_(?:(?:fptrade_(?=[0-9]{{8}}\.csv$)|transaction_(?=[0-9]{{8}}\.txt$))?"
               r"(?P<name_date>[0-9]{8})(?:[0-9]{6})?|(?P<name_month>[0-9]{6}))\.(?:csv|txt)"),
    "|", ("Partner_transaction_id", "Amount", "Rmb_amount", "Fee", "Distribute_amount", "Settlement", "Type"),
    extensions=(".csv", ".txt"), declare=_declare_rmb, defer_names_to=(TX, B2_TX))
REPORTS: tuple[ReportFormat, ...] = (TRANSACTION, SETTLEMENT, TRANSACTION_DETAIL, SETTLEMENT_DETAIL,
                                     SETTLEMENT_SUMMARY, HK_TRANSACTION, HK_SETTLEMENT, HK_SETTLEBATCH,
                                     FOREX_TRANSACTION)
_BY_NAME: dict[str, BarcodeReport] = {r.report: r for r in (TRANSACTION, SETTLEMENT, TRANSACTION_DETAIL,
                                                            SETTLEMENT_DETAIL, SETTLEMENT_SUMMARY, HK_TRANSACTION,
                                                            HK_SETTLEMENT, HK_SETTLEBATCH, FOREX_TRANSACTION)}


# ---------------------------------------------------------------------------------------------
# Reading back and writing


def _typed(col: Column, text: str, row: Mapping[str, Any], meta: Mapping[str, str]) -> Any:
    if col.kind is Kind.AMOUNT:
        for ref in col.currency:
            ccy = ref[1:] if ref.startswith("=") else meta.get(ref[1:]) if ref.startswith("@") else row.get(ref)
            if ccy:
                return parse_major(text, str(ccy))
        return text
    if col.kind is Kind.TIMESTAMP:
        return parse_timestamp(text)
    if col.kind is Kind.INTEGER:
        return int(text)
    return text


def provider_rows(parsed: ParsedFile) -> list[dict[str, Any]]:
    """The parsed table as rows keyed by documented column name (the inverse of ``write_report``): amounts int
    minor units, times ``clock.Stamp``, counts int, texts str, empty cells None. Needs ``keep_extras``."""
    if parsed.body is None or parsed.con is None:
        return []
    layout = _LAYOUTS[(parsed.report, _DEFAULT_SIGN[parsed.report])]
    found, _ = resolve_header(layout, parsed.header)
    if "extras" not in parsed.body.columns:
        raise ValueError(f"{parsed.name}: provider_rows needs the texts in extras (parse with keep_extras)")
    out: list[dict[str, Any]] = []
    for (extras,) in parsed.con.execute(f"SELECT extras FROM {parsed.body.table} ORDER BY rowid").fetchall():
        texts = extras_dict(extras, parsed.extras_names)
        row: dict[str, Any] = {c.name: texts.get(parsed.header[found[c.name]]) for c in layout.columns
                               if c.name in found}
        typed = dict(row)
        for col in layout.columns:
            if row.get(col.name) is not None and col.kind is not Kind.CURRENCY:
                typed[col.name] = _typed(col, row[col.name], row, parsed.meta)
        out.append(typed)
    return out


def file_name(report: str, account: str, day: date, *, currency: str | None = None, batch: str | None = None) -> str:
    """The documented name (barcode.md 2.1, 3, 4.1, 5: family C's SFTP name), checked to read back as ``report``."""
    ymd = day.strftime("%Y%m%d")
    name = {
        TX: f"{account}_transaction_{ymd}.txt", ST: f"{account}_settlement_{ymd}.txt",
        B1_TX: f"ALIPAY_TRANSACTION_DETAIL_{currency}_{ymd}.csv",
        B1_SD: f"ALIPAY_SETTLEMENT_DETAIL_{currency}_{ymd}.csv",
        B1_SS: f"ALIPAY_SETTLEMENT_SUMMARY_{currency}_{ymd}.csv",
        B2_TX: f"{account}_fptrade_{ymd}.csv", B2_ST: f"{account}_settle_{ymd}_{batch}.csv",
        B2_BATCH: f"{account}_settlebatch_{ymd}.csv", C_TX: f"{account}_fptrade_{ymd}.csv",
    }[report]
    if _BY_NAME[report].name_meta(name) is None:
        raise ValueError(f"{name!r} would not read back as {FAMILY}.{report}")
    return name


def _cell(text: str, delimiter: str) -> str:
    """RFC 4180 quoting for ``,`` files where needed; ``|`` files have no quoting (a ``|`` in a cell is refused)."""
    if delimiter == "|":
        if "|" in text or "\n" in text or "\r" in text:
            raise ValueError(f"a '|'-separated file cannot hold {text!r}")
        return text
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_report(report: str, rows: Iterable[Mapping[str, Any]], *, partner: str | None = None,
                 payment_date: date | str | None = None, total_count: int | None = None,
                 header: Sequence[str] | None = None, encoding: str = "utf-8", newline: str = "\n",
                 meta: Mapping[str, str] | None = None) -> bytes:
    """A file's bytes from provider rows (documented column name -> python value).

    Values: amounts int minor units (written in major units with the currency's decimals), times ``Stamp`` or
    aware ``datetime`` (``yyyy-MM-dd HH:mm:ss`` in UTC+8 for families A/B2/C, ISO 8601 with offset for B1), counts
    int, texts str; a ``str`` is written as given (how a test injects a bad cell), None as empty. ``header``:
    another version or order (``HEADERS``). Family A transaction files (and settlement files when ``partner``
    is given) start with ``Partner:<partner>|Payment_time: <date>|Total_count:<n>`` (the doc sample's spelling,
    barcode.md 2.2); ``total_count`` overrides the row count (a file that disagrees with itself). ``encoding``:
    ``utf-8`` or ``gb18030``/``gbk``; ``meta``: file-name facts (``name_currency``) for B1 amounts.
    """
    if report not in _BY_NAME:
        raise ValueError(f"unknown barcode report {report!r}; expected one of {sorted(_BY_NAME)}")
    spec = _BY_NAME[report]
    layout = _LAYOUTS[(report, _DEFAULT_SIGN[report])]
    names = tuple(header) if header is not None else HEADERS[(report, _DEFAULT_VARIANT[report])]
    by_name = {c.name: c for c in layout.columns}
    style = "iso" if report in (B1_TX, B1_SD, B1_SS) else "plain"
    rows = list(rows)
    lines: list[str] = []
    if report == TX or (report == ST and partner is not None):
        if partner is None or payment_date is None:
            raise ValueError("a family A transaction file needs partner and payment_date for its Partner line")
        day = payment_date.isoformat() if isinstance(payment_date, date) else payment_date
        count = len(rows) if total_count is None else total_count
        lines.append(f"Partner:{partner}|Payment_time: {day}|Total_count:{count}")
    lines.append(spec.delimiter.join(names))
    for row in rows:
        cells = [_cell(format_cell(by_name.get(n), row.get(n), row, meta=meta, ts_style=style), spec.delimiter)
                 for n in names]
        lines.append(spec.delimiter.join(cells))
    return "".join(line + newline for line in lines).encode(encoding)
