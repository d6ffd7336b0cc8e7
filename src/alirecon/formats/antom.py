"""Antom / APO merchant reports: transaction details, settlement details, settlement summary.

Why a table and not code: Antom lets every merchant customise the SFTP reports (antom.md 2.1), and two
schema generations live side by side (antom.md 5: ``v1`` = APO / older Antom, ``v2`` = current Antom).
So every column is found by header name, only the few columns that checks and matching cannot do without
are required, and the report and generation are decided from the header, the file name being a hint only
(antom.md 3, 13.1).

Besides the canonical ``schema.REPORT_LINE`` fields, each parsed body table carries hidden fields named
``col:<provider column>``: every amount without a canonical field in minor units (the fee columns for the
summary figures and AN-3, ``convertedTransactionAmountValue`` for AN-5), the fee currencies, ``count``, and
the text as written of the time columns, ``status`` and ``quotePrice`` (which the canonical fields
normalise). ``provider_rows`` uses them to give a parsed file back as provider rows, the exact inverse of
``write_report``. Hidden fields live only in the parse-time body table; a column that no canonical field
carries also keeps its text in ``extras`` (``Layout.extras_keep``), so the warehouse still sees it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from .. import clock
from .base import TableReport, Variant, rows_of
from .engine import Column, Declared, Kind, Layout, ParsedFile, ParseOptions, _ident, extras_dict
from .writer import render_rows, write_csv, write_xlsx

__all__ = [
    "FAMILY",
    "FEES_V1",
    "FEES_V2",
    "HEADERS",
    "REPORTS",
    "SETTLEMENT_DETAIL",
    "SETTLEMENT_SUMMARY",
    "TRANSACTION_DETAIL",
    "classify_header",
    "declare_summary",
    "file_name",
    "layout_of",
    "provider_rows",
    "write_report",
]

FAMILY = "antom"
TX = "transaction_detail"
SD = "settlement_detail"
SS = "settlement_summary"
HIDDEN = "col:"  # prefix of the hidden per-column fields of the body table (module docstring)

# ---------------------------------------------------------------------------------------------
# Enumerations (antom.md 8). Compared case-insensitively and only warned about: new types flow through.

_TYPES_ALL = ("PAYMENT", "AUTHORIZATION", "CAPTURE", "REFUND", "CANCEL", "DISPUTE")
TYPES_V1 = (
    *_TYPES_ALL, "VOID", "DISPUTE_REVERSAL", "REFUND_REVERSAL", "PAYMENT_REVERSAL", "SETTLEMENT_FEE",
    "COLLATERAL_WITHHOLDING", "RESERVE_WITHHOLDING", "RESERVE_RELEASE", "COLLATERAL_RELEASE",
    "RAPID_DISPUTE_RESOLUTION", "DEFAULT",
)
TYPES_V2 = (
    *_TYPES_ALL, "DISPUTE_REVERSAL", "REFUND_REVERSAL", "PAYMENT_REVERSAL", "SETTLEMENT_FEE", "ADJUSTMENT_FEE",
    "COLLATERAL_WITHHELD", "RESERVE", "RESERVE_RELEASED", "COLLATERAL_RELEASED", "RAPID_DISPUTE_RESOLUTION",
    "CDRN", "DEFAULT",
)
_TYPES = {"v1": TYPES_V1, "v2": TYPES_V2}

# Fee columns and their currency columns. v1: antom.md 6.1 #27-#49; the currency column of
# refundFeeAmountValue is not documented (6.1 #49) [inferred: refundFeeCurrency]. v2: antom.md 6.3.
FEES_V1: tuple[tuple[str, str], ...] = (
    ("feeAmountValue", "feeCurrency"),
    ("taxFeeAmountValue", "taxFeeCurrency"),
    ("processingFeeAmountValue", "processingFeeCurrency"),
    ("nonGuaranteeCouponValue", "nonGuaranteeCouponCurrency"),
    ("disputeHandlingFee", "disputeHandlingFeeCurrency"),
    ("disputeReverseFee", "disputeReverseFeeCurrency"),
    ("interchangeFeeAmountValue", "interchangeFeeCurrency"),
    ("schemeFeeAmountValue", "schemeFeeCurrency"),
    ("acquirerMarkupAmountValue", "acquirerMarkupCurrency"),
    ("refundFeeAmountValue", "refundFeeCurrency"),
)
FEES_V2: tuple[tuple[str, str], ...] = (
    ("paymentMethodFeeAmountValue", "paymentMethodFeeCurrency"),
    ("interchangeFeeAmountValue", "interchangeFeeCurrency"),
    ("schemeFeeAmountValue", "schemeFeeCurrency"),
    ("acquirerMarkupAmountValue", "acquirerMarkupCurrency"),
    ("processingFeeAmountValue", "processingFeeCurrency"),
    ("taxFeeAmountValue", "taxFeeCurrency"),
    ("refundFeeAmountValue", "refundFeeCurrency"),
    ("disputeHandlingFee", "disputeHandlingFeeCurrency"),
    ("financingFeeAmountValue", "financingFeeCurrency"),
    ("rdrFeeAmountValue", "rdrFeeCurrency"),
    ("anticipationFeeAmountValue", "anticipationFeeCurrency"),
    ("riskDecisionServiceFeeAmountValue", "riskDecisionServiceFeeCurrency"),
    ("riskManagementFeeAmountValue", "riskManagementFeeCurrency"),
    ("cdrnFeeAmountValue", "cdrnFeeCurrency"),
    ("iofFeeAmountValue", "iofFeeCurrency"),
    ("withholdingTaxAmountValue", "withholdingTaxFeeCurrency"),
    ("fxFeeAmountValue", "fxFeeAmountCurrency"),
    ("rtauServiceFeeAmountValue", "rtauServiceFeeCurrency"),
    ("ntServiceFeeAmountValue", "ntServiceFeeCurrency"),
    ("revenueBoosterServiceFeeAmountValue", "revenueBoosterServiceFeeCurrency"),
)
_FEES = {"v1": FEES_V1, "v2": FEES_V2}
# Amount columns the field tables type as String(16) (antom.md 6.1, 6.2); the other fee types are a gap.
_STRING16 = frozenset({
    "transactionAmountValue", "settlementAmountValue", "feeAmountValue", "taxFeeAmountValue",
    "processingFeeAmountValue", "nonGuaranteeCouponValue", "disputeHandlingFee", "disputeReverseFee",
    "interchangeFeeAmountValue", "schemeFeeAmountValue", "acquirerMarkupAmountValue", "paymentMethodFeeAmountValue",
})
# Columns that exist only in v2 transaction details (antom.md 6.2, Antom's forbidden-in-settlement list).
_TX_ONLY_V2 = (
    "3DAuthentication", "3DOffered", "accountHolderName", "originalCardSummary", "cardNumber(Last 4 digits)",
    "issuer", "liabilityShift", "reason",
)


# ---------------------------------------------------------------------------------------------
# The column catalogue (antom.md 6.1-6.3). ``required``/``nonempty`` are set per report below.


def _text(name: str, max_length: int | None = None, source: str = "") -> Column:
    return Column(name, Kind.TEXT, max_length=max_length, source=source)


def _time(name: str, source: str, *, max_length: int | None = None, date_ok: bool = False) -> Column:
    return Column(name, Kind.TIMESTAMP, max_length=max_length, date_ok=date_ok, source=source)


def _money(name: str, *currency: str, source: str) -> Column:
    return Column(name, Kind.AMOUNT, max_length=16 if name in _STRING16 else None, currency=currency, source=source)


def _catalogue() -> dict[str, Column]:
    cols = [
        _text("settlementBatchId", 64, "antom.md 6.1 #1"),
        _text("customerId", 64, "antom.md 6.1 #2"),
        _text("acquirer", 64, "antom.md 6.1 #3"),
        _text("PSP", 64, "antom.md 6.2"),
        _text("ARN", 256, "antom.md 6.2"),
        # String(16) is documented, but documented values such as RAPID_DISPUTE_RESOLUTION are longer
        # (antom.md 6.1 #4, 8): no length rule.
        Column("summaryType", Kind.ENUM, source="antom.md 6.1 #4, 8"),
        Column("count", Kind.INTEGER, source="antom.md 6.1 #5"),
        _text("acquirerReferenceNo", 64, "antom.md 6.1 #6"),
        _text("referenceMerchantId", 64, "antom.md 6.1 #7"),
        _text("referenceStoreId", 64, "antom.md 6.1 #8"),
        Column("transactionType", Kind.ENUM, source="antom.md 6.1 #9, 8"),
        _text("transactionId", 64, "antom.md 6.1 #10"),
        _text("originalTransactionId", 64, "antom.md 6.1 #11"),
        _text("transactionRequestId", 64, "antom.md 6.1 #12"),
        _text("originalTransactionRequestId", None, "antom.md 6.1 #13 (type not documented)"),
        _text("referenceTransactionId", 64, "antom.md 6.1 #14"),
        _text("orderDescription", 256, "antom.md 6.1 #15"),
        _text("paymentMethodType", 32, "antom.md 6.1 #16"),
        _text("pspName", 64, "antom.md 6.1 #17"),
        _text("wallet", None, "antom.md 6.2"),
        # v2 status values are not documented (antom.md gap 2): upper-cased, no allowed list.
        Column("status", Kind.ENUM, source="antom.md 6.2"),
        _time("paymentTime", "antom.md 6.1 #18", max_length=64),
        _time("settlementTime", "antom.md 6.1 #19", max_length=64),
        _time("transactionCreationTime", "antom.md 6.2"),
        _time("transactionUpdateTime", "antom.md 6.2"),
        _time("transactionCompletionTime", "antom.md 6.2"),
        # may be a bare date (antom.md 4) [inferred]; a bare date is midnight UTC+8 (antom.md 3) [inferred]
        _time("settlementInitiatedDate", "antom.md 6.2, 4", max_length=64, date_ok=True),
        _text("productCode", 32, "antom.md 6.1 #20"),
        _money("transactionAmountValue", "transactionCurrency", source="antom.md 6.1 #21"),
        Column("transactionCurrency", Kind.CURRENCY, source="antom.md 6.1 #22"),
        _money("convertedTransactionAmountValue", "convertedCurrency", "settlementCurrency", source="antom.md 6.2"),
        Column("convertedCurrency", Kind.CURRENCY, source="antom.md 6.2"),
        _money("settlementAmountValue", "settlementCurrency", source="antom.md 6.1 #23"),
        Column("settlementCurrency", Kind.CURRENCY, source="antom.md 6.1 #24"),
        _text("quoteCurrencyPair", None, "antom.md 6.1 #25"),
        Column("quotePrice", Kind.DECIMAL, source="antom.md 6.1 #26, 10"),
        _text("installmentsNum", None, "antom.md 6.1 #39"),
        _text("issuingCountry", None, "antom.md 6.1 #40"),
        _text("cardBrand", None, "antom.md 6.1 #41"),
        _text("funding", None, "antom.md 6.1 #42"),
        _text("cardCountry", None, "antom.md 6.2 (read by Antom's scripts)"),
        *(_text(name, None, "antom.md 6.2 (v2 transaction details only)") for name in _TX_ONLY_V2),
    ]
    # A fee's currency column, else the settlement currency: fee currencies normally equal it (antom.md 6.3).
    for amount, currency in dict.fromkeys((*FEES_V1, *FEES_V2)):
        cols.append(_money(amount, currency, "settlementCurrency", source="antom.md 6.1 #27-49, 6.3"))
        cols.append(Column(currency, Kind.CURRENCY, source="antom.md 6.1 #27-49, 6.3"))
    return {c.name: c for c in cols}


_CATALOGUE = _catalogue()


def _fee_header(fees: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(name for pair in fees for name in pair)


_V1_FEES_DETAIL = tuple(f for f in FEES_V1 if f[0] not in (
    "interchangeFeeAmountValue", "schemeFeeAmountValue", "acquirerMarkupAmountValue", "refundFeeAmountValue"))
_V1_FEES_IC = tuple(f for f in FEES_V1 if f not in _V1_FEES_DETAIL)

# Documented column orders (antom.md 6.4). Where the documented text stops, the order of the field
# summary is used [inferred] (antom.md gap 1); v2 orders follow the field summary (6.2) then 6.3 [inferred].
HEADERS: dict[tuple[str, str], tuple[str, ...]] = {
    (TX, "v1"): (
        "customerId", "acquirer", "acquirerReferenceNo", "referenceMerchantId", "referenceStoreId", "transactionId",
        "originalTransactionId", "transactionRequestId", "referenceTransactionId", "orderDescription",
        "transactionType", "originalTransactionRequestId", "paymentMethodType", "pspName", "paymentTime",
        "productCode", "transactionAmountValue", "transactionCurrency", "installmentsNum", "issuingCountry",
        "cardBrand", "funding",
    ),
    (SD, "v1"): (
        "settlementBatchId", "customerId", "acquirer", "acquirerReferenceNo", "referenceMerchantId",
        "referenceStoreId", "transactionId", "originalTransactionId", "transactionRequestId",
        "referenceTransactionId", "transactionType", "originalTransactionRequestId", "paymentMethodType", "pspName",
        "paymentTime", "settlementTime", "productCode", "transactionAmountValue", "transactionCurrency",
        "settlementAmountValue", "settlementCurrency", "quoteCurrencyPair", "quotePrice",
        *_fee_header(_V1_FEES_DETAIL), "installmentsNum", "issuingCountry", "cardBrand", "funding",
        *_fee_header(_V1_FEES_IC),
    ),
    (SS, "v1"): (
        "settlementBatchId", "customerId", "acquirer", "summaryType", "settlementTime", "count",
        "settlementAmountValue", "settlementCurrency", *_fee_header(FEES_V1),
    ),
    (TX, "v2"): (
        "settlementBatchId", "customerId", "PSP", "ARN", "referenceMerchantId", "referenceStoreId", "transactionType",
        "transactionId", "transactionRequestId", "originalTransactionRequestId", "referenceTransactionId",
        "orderDescription", "paymentMethodType", "wallet", "status", "transactionCreationTime",
        "transactionUpdateTime", "transactionCompletionTime", "productCode", "transactionAmountValue",
        "transactionCurrency", "convertedTransactionAmountValue", "convertedCurrency", "settlementAmountValue",
        "settlementCurrency", "quoteCurrencyPair", "quotePrice", *_fee_header(FEES_V2), *_TX_ONLY_V2, "cardBrand",
        "cardCountry",
    ),
    (SD, "v2"): (
        "settlementBatchId", "customerId", "PSP", "ARN", "referenceMerchantId", "referenceStoreId", "transactionType",
        "transactionId", "transactionRequestId", "originalTransactionRequestId", "referenceTransactionId",
        "paymentMethodType", "wallet", "transactionCreationTime", "transactionUpdateTime",
        "transactionCompletionTime", "settlementInitiatedDate", "productCode", "transactionAmountValue",
        "transactionCurrency", "convertedTransactionAmountValue", "convertedCurrency", "settlementAmountValue",
        "settlementCurrency", "quoteCurrencyPair", "quotePrice", *_fee_header(FEES_V2), "cardBrand", "cardCountry",
    ),
    (SS, "v2"): (
        "settlementBatchId", "customerId", "PSP", "summaryType", "settlementInitiatedDate", "count",
        "settlementAmountValue", "settlementCurrency", *_fee_header(FEES_V2),
    ),
}

# Known columns outside the documented orders, still recognised by name when a merchant's file has them.
_EXTRA_KNOWN: dict[str, tuple[str, ...]] = {"v1": (), "v2": ("originalTransactionId",)}

# Required = marked mandatory AND needed by the checks (AN-1..AN-9) or matching. Lenient on purpose:
# the documented 2018 headers have no ``acquirer`` (antom.md 6.4). v1 transactionRequestId is APO
# mandatory (6.1 #12); in v2 it is optional (7).
_REQUIRED: dict[tuple[str, str], frozenset[str]] = {
    (TX, "v1"): frozenset({"transactionId", "transactionType", "transactionRequestId"}),
    (TX, "v2"): frozenset({"transactionId", "transactionType"}),
    (SD, "v1"): frozenset({"settlementBatchId", "transactionId", "transactionType", "settlementAmountValue",
                           "settlementCurrency"}),
    (SD, "v2"): frozenset({"settlementBatchId", "transactionId", "transactionType", "settlementAmountValue",
                           "settlementCurrency"}),
    (SS, "v1"): frozenset({"settlementBatchId", "count", "settlementAmountValue", "settlementCurrency"}),
    (SS, "v2"): frozenset({"settlementBatchId", "count", "settlementAmountValue", "settlementCurrency"}),
}
# Only the type must be filled on every detail row: correction (DEFAULT) rows may leave ids, amounts and
# even count empty (antom.md 11), so nothing else is ``nonempty``.
_NONEMPTY = frozenset({"transactionType"})


# ---------------------------------------------------------------------------------------------
# Canonical outputs


def _fee_outputs(fees: Sequence[tuple[str, str]], generation: str) -> dict[str, str]:
    """fee_minor/fee_currency, plus hidden per-column fields (AN-3 and the summary figures need them).

    v1: the one total ``feeAmountValue``. v2 has no total (antom.md 5): ``_sum_fees`` fills it after the
    load from the hidden per-column fields, so each of the twenty amounts is converted once (DuckDB's
    planning time grows with every amount conversion in the query).
    """
    out: dict[str, str] = {}
    for amount, currency in fees:
        out[HIDDEN + amount] = f"{{{amount}}}"
        out[HIDDEN + currency] = f"{{{currency}}}"
    if generation == "v1":
        out["fee_minor"] = "{feeAmountValue}"
        out["fee_currency"] = (
            "CASE WHEN {feeAmountValue} IS NOT NULL THEN coalesce({feeCurrency}, {settlementCurrency}) END")
    else:
        out["fee_minor"] = "CAST(NULL AS BIGINT)"
        out["fee_currency"] = "CAST(NULL AS VARCHAR)"
    return out


def _sum_fees(parsed: ParsedFile) -> None:
    """v2 fee_minor: the sum of the fee columns as written (never re-signed, antom.md 9) in the fees' one
    currency, which normally is the settlement currency (6.3; an empty fee currency means the settlement
    currency). Fees in several currencies: NULL, the per-column fields keep the facts (a sum across
    currencies would be a wrong number) [inferred]. No fee cell at all: NULL.
    """
    if parsed.variant != "v2" or parsed.body is None or parsed.con is None:
        return
    if not {"fee_minor", "fee_currency", "settlement_currency"} <= parsed.body.columns:
        return  # narrowed to other fields (ParseOptions.fields)
    fees = [(_ident(HIDDEN + a), _ident(HIDDEN + c)) for a, c in FEES_V2]
    effective = ", ".join(f"CASE WHEN {a} IS NOT NULL THEN coalesce({c}, settlement_currency) END" for a, c in fees)
    currencies = f"list_distinct(list_filter([{effective}], lambda x: x IS NOT NULL))"
    total = " + ".join(f"coalesce({a}, 0)" for a, _ in fees)
    parsed.con.execute(
        f"UPDATE {parsed.body.table} SET fee_minor = CASE WHEN len({currencies}) = 1 THEN {total} END, "
        f"fee_currency = CASE WHEN len({currencies}) = 1 THEN ({currencies})[1] END"
    )


def _outputs(report: str, generation: str) -> dict[str, str]:
    out: dict[str, str] = {"account_id": "{customerId}", "settlement_batch_id": "{settlementBatchId}"}
    if report == SS:
        # summaryType as written; a missing type means TOTAL only in the declared figures (declare_summary)
        out |= {"record_type": "{summaryType}", "raw_type": "{summaryType:raw}", HIDDEN + "count": "{count}"}
    else:
        out |= {
            "record_type": "{transactionType}",
            "raw_type": "{transactionType:raw}",
            "provider_txn_id": "{transactionId}",
            "merchant_ref_id": "{transactionRequestId}",
            "order_id": "{referenceTransactionId}",
            "original_provider_txn_id": "{originalTransactionId}",
            "original_merchant_ref_id": "{originalTransactionRequestId}",
            "amount_minor": "{transactionAmountValue}",
            "amount_currency": "{transactionCurrency}",
        }
    if report != TX or generation == "v2":
        out |= {"settlement_minor": "{settlementAmountValue}", "settlement_currency": "{settlementCurrency}"}
        out |= _fee_outputs(_FEES[generation], generation)
    if report != SS and (report == SD or generation == "v2"):
        out |= {"fx_rate": "{quotePrice}", "fx_pair": "{quoteCurrencyPair}", HIDDEN + "quotePrice": "{quotePrice:raw}"}
    if generation == "v1":
        times = {"occurred": "paymentTime", "settled": "settlementTime"}
        for prefix, column in times.items():
            out[f"{prefix}_at"] = f"{{{column}}}"
            out[f"{prefix}_offset_min"] = f"{{{column}:offset}}"
    else:
        done, created = "transactionCompletionTime", "transactionCreationTime"
        # the latest known time of the transaction: completion, else creation (antom.md 6.2) [inferred]
        out["occurred_at"] = f"CASE WHEN {{{done}:raw}} IS NOT NULL THEN {{{done}}} ELSE {{{created}}} END"
        out["occurred_offset_min"] = (
            f"CASE WHEN {{{done}:raw}} IS NOT NULL THEN {{{done}:offset}} ELSE {{{created}:offset}} END")
        out["settled_at"] = "{settlementInitiatedDate}"
        out["settled_offset_min"] = "{settlementInitiatedDate:offset}"
    if report == TX and generation == "v2":
        out |= {"status": "{status}", HIDDEN + "status": "{status:raw}"}
    return out


# Canonical fields that carry a provider column unchanged (the rest come from hidden fields or extras).
_VERBATIM: dict[str, str] = {
    "customerId": "account_id",
    "settlementBatchId": "settlement_batch_id",
    "transactionId": "provider_txn_id",
    "transactionRequestId": "merchant_ref_id",
    "referenceTransactionId": "order_id",
    "originalTransactionId": "original_provider_txn_id",
    "originalTransactionRequestId": "original_merchant_ref_id",
    "transactionType": "raw_type",
    "summaryType": "raw_type",
    "transactionAmountValue": "amount_minor",
    "transactionCurrency": "amount_currency",
    "settlementAmountValue": "settlement_minor",
    "settlementCurrency": "settlement_currency",
    "quoteCurrencyPair": "fx_pair",
}


_PLACEHOLDER = re.compile(r"\{([^{}:@]+)(?::[a-z]+)?\}")


def _layout(report: str, generation: str) -> Layout:
    names = dict.fromkeys((*HEADERS[(report, generation)], *_EXTRA_KNOWN[generation]))
    required = _REQUIRED[(report, generation)]
    columns: list[Column] = []
    for name in names:
        col = _CATALOGUE[name]
        allowed: tuple[str, ...] = ()
        if name == "transactionType":
            allowed = _TYPES[generation]
        elif name == "summaryType":
            allowed = (*_TYPES[generation], "TOTAL")
        columns.append(replace(col, required=name in required, nonempty=name in _NONEMPTY and report != SS,
                               allowed=allowed or col.allowed))
    outputs = _outputs(report, generation)
    for col in columns:
        if col.kind is Kind.TIMESTAMP:  # the text as written (provider_rows: a date stays a date)
            outputs[HIDDEN + col.name] = f"{{{col.name}:raw}}"
        elif col.kind is Kind.AMOUNT and col.name not in _VERBATIM:  # e.g. convertedTransactionAmountValue (AN-5)
            outputs.setdefault(HIDDEN + col.name, f"{{{col.name}}}")
    # A column read only for hidden fields keeps its text in extras: the warehouse stores the lines, not the
    # hidden fields, and should still see e.g. every fee column as written.
    canonical = {m.group(1) for out, tpl in outputs.items() if not out.startswith(HIDDEN)
                 for m in _PLACEHOLDER.finditer(tpl)}
    side_only = tuple(n for n in names if HIDDEN + n in outputs and n not in canonical)
    # "null" is an empty cell for Antom's own scripts (antom.md 4). Unit: major by default (antom.md 9),
    # switchable per report with ParseOptions.amount_units["antom.<report>"] = "minor".
    # Lean mode (one-shot reconcile) leaves out what only provider_rows needs to rewrite the file exactly:
    # the texts as written, and in v1 details every hidden field (v2 keeps its fee amounts: they make
    # fee_minor; a summary keeps its figures: declare_summary reads them).
    texts = tuple(out for out, tpl in outputs.items() if out.startswith(HIDDEN)
                  and (tpl.endswith(":raw}") or (generation == "v1" and report != SS)))
    return Layout(f"{FAMILY}.{report}.{generation}", tuple(columns), outputs, amount_unit="major",
                  null_tokens=("null",), extras_keep=side_only, lean_drop=texts)


_LAYOUTS: dict[tuple[str, str], Layout] = {key: _layout(*key) for key in HEADERS}


def layout_of(report: str, variant: str) -> Layout:
    """The column table of one report generation (``v1``/``v2``)."""
    return _LAYOUTS[(report, variant)]


# ---------------------------------------------------------------------------------------------
# Recognising a file


_SETTLEMENT_MARKERS = frozenset({"settlementamountvalue", "settlementbatchid", "settlementtime",
                                 "settlementinitiateddate", "settlementcurrency"})
_TX_MARKERS = frozenset({"status", "orderdescription", *(n.lower() for n in _TX_ONLY_V2)})
# Columns only the v2 schema has (antom.md 5, 6.2, 6.3); ``PSP``/``settlementInitiatedDate``/
# ``transactionCreationTime`` are the brief's markers, the others make customised headers safer [inferred].
_V2_MARKERS = frozenset({"psp", "settlementinitiateddate", "transactioncreationtime", "transactionupdatetime",
                         "transactioncompletiontime", "arn", "wallet", "status", "convertedtransactionamountvalue",
                         "paymentmethodfeeamountvalue"})


def classify_header(header: Sequence[str]) -> tuple[str | None, str]:
    """(report or None, generation) from the header alone (antom.md 13.1, [inferred] details).

    With ``transactionType``: transaction details when a column found only there is present
    (``orderDescription``, ``status``, the v2 card columns), else settlement details when a settlement
    column is present, else transaction details. Without it: settlement summary when ``count`` is there
    with a settlement column or ``summaryType``. v2 when a v2-only column (``PSP``, ``settlementInitiatedDate``,
    ``transactionCreationTime``, ``ARN``, ``wallet``, ``status``, ...) is present, else v1.
    """
    names = {h.strip().lower() for h in header}
    generation = "v2" if names & _V2_MARKERS else "v1"
    if "transactiontype" in names:
        if names & _TX_MARKERS:
            return TX, generation
        return (SD if names & _SETTLEMENT_MARKERS else TX), generation
    if "count" in names and (names & _SETTLEMENT_MARKERS or "summarytype" in names):
        return SS, generation
    return None, generation


@dataclass(frozen=True)
class _HeaderVariant(Variant):
    """A generation of one report; matches when ``classify_header`` says so (markers alone cannot say OR)."""

    report: str = ""

    def matches(self, header: Sequence[str]) -> bool:
        return classify_header(header) == (self.report, self.name)


@dataclass(frozen=True)
class _AntomReport(TableReport):
    """A TableReport that also knows the Dashboard download names (antom.md 2.2) and fills the v2 fee totals."""

    other_names: tuple[re.Pattern[str], ...] = ()

    def parse(self, path: Path, con: duckdb.DuckDBPyConnection | None = None,
              options: ParseOptions | None = None, *, name: str | None = None) -> ParsedFile:
        """TableReport.parse, then the v2 fee totals (``_sum_fees``; ``declare_summary`` does it first)."""
        parsed = super().parse(path, con, options, name=name)
        if self.declare is None:
            _sum_fees(parsed)
        return parsed

    def name_meta(self, name: str) -> dict[str, str] | None:
        for pattern in (self.name_re, *self.other_names):
            m = pattern.fullmatch(name)
            if m:
                return {k: v for k, v in m.groupdict().items() if v is not None}
        return None


def declare_summary(parsed: ParsedFile, con: duckdb.DuckDBPyConnection) -> list[Declared]:
    """One figure per summary row and column (antom.md 6.4, 11).

    scope = upper(summaryType); a file without the column, or a row with an empty cell, states the whole
    batch: ``TOTAL`` [inferred: summaryType is optional in APO summaries (6.1 #4) and an untyped row can
    only be the batch total]. Figures: ``count``, ``settlement``, ``fee`` (the line's fee_minor: v1
    ``feeAmountValue``, v2 the sum of the fee columns) and one per other fee column named like the column,
    in its own currency (else the settlement currency). An empty cell states nothing: no figure.
    """
    if parsed.body is None:
        return []
    _sum_fees(parsed)  # the v2 "fee" figure is the line's fee total
    fees = [f for f in _FEES.get(parsed.variant, FEES_V1) if f[0] != "feeAmountValue"]
    fields = ["record_type", "settlement_batch_id", HIDDEN + "count", "settlement_minor", "settlement_currency",
              "fee_minor", "fee_currency", *(HIDDEN + n for pair in fees for n in pair)]
    out: list[Declared] = []
    for row in rows_of(con, parsed, ", ".join(_ident(f) for f in fields)):
        scope = row["record_type"] or "TOTAL"
        line, batch, settle_ccy = row["__line_no"], row["settlement_batch_id"], row["settlement_currency"]
        figures: list[tuple[str, Any, str | None]] = [
            ("count", row[HIDDEN + "count"], None),
            ("settlement", row["settlement_minor"], settle_ccy),
            ("fee", row["fee_minor"], row["fee_currency"]),
            *((amount, row[HIDDEN + amount], row[HIDDEN + currency] or settle_ccy) for amount, currency in fees),
        ]
        out.extend(Declared(scope=scope, figure=figure, value=int(value), line_no=int(line), currency=ccy,
                            batch_id=batch)
                   for figure, value, ccy in figures if value is not None)
    return out


# File names (antom.md 3). The name is a hint: the header decides (a documented sample carries a summary
# header under a settlementItems_ name). Dashboard names: only one example is documented (antom.md 2.2,
# gap 5); its leading id is not known to be a batch id, so it is not captured [inferred].
_SETTLEMENT_NAME = r"(?:(?P<method>[A-Za-z0-9_]+?)_)?(?P<currency>[A-Z]{3})_(?P<batch_id>[0-9A-Za-z]+)_(?P<seq>\d{3})"
_EXT = r"\.(?:csv|xlsx)"


def _dashboard(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"{prefix}(?:_[0-9A-Za-z]+)*?(?:_(?P<date>\d{{8}}))?{_EXT}", re.IGNORECASE)


def _variants(report: str) -> tuple[Variant, ...]:
    # v1 first: it is the fallback when a file is forced through a report its header does not fit
    return tuple(_HeaderVariant(g, _LAYOUTS[(report, g)], report=report) for g in ("v1", "v2"))


TRANSACTION_DETAIL = _AntomReport(
    family=FAMILY,
    report=TX,
    name_re=re.compile(rf"transactionItems_(?:(?P<date>\d{{8}})|(?P<currency>[A-Z]{{3}}))_(?P<seq>\d{{3}}){_EXT}"),
    variants=_variants(TX),
    other_names=(_dashboard("TRANSACTION_DETAIL"),),
)
SETTLEMENT_DETAIL = _AntomReport(
    family=FAMILY,
    report=SD,
    name_re=re.compile(rf"settlementItems_{_SETTLEMENT_NAME}{_EXT}"),
    variants=_variants(SD),
    name_fields={"currency": "settlement_currency", "batch_id": "settlement_batch_id"},
    other_names=(_dashboard("SETTLEMENT_DETAIL"),),
)
SETTLEMENT_SUMMARY = _AntomReport(
    family=FAMILY,
    report=SS,
    name_re=re.compile(rf"settlementSummary_{_SETTLEMENT_NAME}{_EXT}"),
    variants=_variants(SS),
    declare=declare_summary,
    name_fields={"currency": "settlement_currency", "batch_id": "settlement_batch_id"},
    other_names=(_dashboard("SETTLEMENT_SUMMARY"),),
)
REPORTS = (TRANSACTION_DETAIL, SETTLEMENT_DETAIL, SETTLEMENT_SUMMARY)
_BY_NAME = {r.report: r for r in REPORTS}


# ---------------------------------------------------------------------------------------------
# Writing (the sandbox writes every Antom file through these)


def write_report(report: str, rows: Sequence[Mapping[str, Any]], *, variant: str = "v1", fmt: str = "csv",
                 header: Sequence[str] | None = None, trailer: bool = True) -> bytes:
    """A report file from provider rows (column name -> python value; a ``str`` is written verbatim).

    CSV: UTF-8, LF line ends [inferred: undocumented], ``<END>`` last (antom.md 4). XLSX: first sheet,
    row 1 the header, ``<END>`` in column A of the last row [inferred: antom.md gap 4]. Amounts are written
    in major units (antom.md 9) with the currency named by each amount's currency column.
    """
    layout = layout_of(report, variant)
    names = tuple(header) if header is not None else HEADERS[(report, variant)]
    cells = render_rows(layout, names, rows)
    if fmt == "csv":
        return write_csv(names, cells, trailer=trailer)
    if fmt == "xlsx":
        return write_xlsx(names, cells, trailer=trailer)
    raise ValueError(f"unknown format {fmt!r}: csv or xlsx")


def file_name(report: str, *, date: dt.date | None = None, currency: str | None = None,
              batch_id: str | None = None, seq: int = 0, method: str | None = None, ext: str = "csv") -> str:
    """The default SFTP name (antom.md 3): ``transactionItems_<yyyyMMdd|CCY>_<seq>``,
    ``settlementItems_[<method>_]<CCY>_<batch>_<seq>``, ``settlementSummary_...``."""
    if not 0 <= seq <= 999:
        raise ValueError(f"seq must be 0..999, got {seq}")
    suffix = f"{seq:03d}.{ext.lstrip('.')}"
    if report == TX:
        if date is None and currency is None:
            raise ValueError("a transaction details name needs a date (or, in older samples, a currency)")
        key = date.strftime("%Y%m%d") if date is not None else str(currency)
        name = f"transactionItems_{key}_{suffix}"
    elif report in (SD, SS):
        if not currency or not batch_id:
            raise ValueError("a settlement file name needs the settlement currency and batch id")
        prefix = "settlementItems" if report == SD else "settlementSummary"
        name = "_".join([prefix, *([method] if method else []), currency, batch_id, suffix])
    else:
        raise ValueError(f"unknown Antom report {report!r}")
    meta = _BY_NAME[report].name_meta(name)
    expected = {"currency": currency, "batch_id": batch_id, "method": method,
                "date": date.strftime("%Y%m%d") if date else None}
    if meta is None or any(meta.get(k) != v for k, v in expected.items() if v is not None):
        raise ValueError(f"{name!r} would not read back as {report} with these fields")
    return name


def provider_rows(parsed: ParsedFile) -> list[dict[str, Any]]:
    """The parsed rows as provider rows, the inverse of ``write_report`` (for files that parsed ok).

    Amounts come back as int minor units, times as ``clock.Stamp`` in their written offset (a bare date
    as ``datetime.date``), ``quotePrice`` as ``Decimal`` with its written digits, other cells as text.
    Columns the layout does not know come from ``extras`` (so ``keep_extras`` must be on).
    """
    if parsed.body is None or parsed.con is None:
        return []
    layout = layout_of(parsed.report, parsed.variant)
    present = set(parsed.header)
    fields = sorted(parsed.body.columns)
    select = ", ".join(_ident(f) for f in fields)
    out: list[dict[str, Any]] = []
    for row in rows_of(parsed.con, parsed, select):
        cells: dict[str, Any] = dict(extras_dict(row.get("extras"), parsed.extras_names))
        for col in layout.columns:
            if col.name not in present:
                continue
            hidden = HIDDEN + col.name
            if hidden in parsed.body.columns:
                cells[col.name] = _typed(col, row[hidden], layout)
            elif _VERBATIM.get(col.name) in parsed.body.columns:
                cells[col.name] = row[_VERBATIM[col.name]]
        out.append(cells)
    return out


def _typed(col: Column, value: Any, layout: Layout) -> Any:
    if value is None or col.kind not in (Kind.TIMESTAMP, Kind.DECIMAL):
        return value
    if col.kind is Kind.DECIMAL:
        return Decimal(value)
    if col.date_ok and re.fullmatch(clock.DATE_RE, value):
        return clock.parse_date(value)
    return clock.parse_timestamp(value, default_offset_minutes=layout.default_offset_minutes)
