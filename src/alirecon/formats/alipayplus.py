"""Alipay+ clearing and settlement reports, MPP and ACQP alike (alipayplus.md sections 1-2).

Four reports: ``transaction_detail`` (``transactionItems_``), ``transaction_summary`` (``summary_``), ``fee``
(``feeItems_``) and ``settlement`` (``settlement_``). Only the Transaction Summary Report is fully documented
(spec 6.1); the other three are sectioned files (a summary section, then a detail section, spec 5) whose column
names are mostly [unverified] (spec 6.5). Every such name sits in the tables below marked ``_UNVERIFIED``; a
user corrects one with a header alias (``ParseOptions.aliases["alipayplus.<report>"]``), never by editing code.

Sign conventions (the checks rely on these):

* TDR detail lines: ``amount_minor`` (transactionAmountValue) and ``settlement_minor`` (settlementAmountValue)
  are signed in the *transaction* sense: PAYMENT +, REFUND -.
* FR detail lines: ``record_type`` "FEE", ``raw_type`` = feeType, ``fee_minor`` signed from the participant's
  side: + when the line's fundDirection is CREDIT (the participant receives), - when DEBIT.
* SR detail lines: ``record_type`` "CLEARING_BATCH", ``settlement_minor`` signed from the participant's side
  (CREDIT +, DEBIT -); ``settlement_batch_id`` from the summary's settlementBatchId, else the file name.
* TSR: its one record becomes a "CLEARING_BATCH" line signed like an SR detail line (CREDIT +, DEBIT -);
  ``amount_minor`` (netTransactionAmountValue) takes the same direction [inferred: spec 6.1 gives one
  fundDirection for the row].
* How the files write those signs is undocumented (spec 6.5, gap 4). Default ``by_type`` [inferred]: values
  are written unsigned and transactionType / fundDirection decides, so a written minus sign is a
  ``bad_number`` error. ``ParseOptions.amount_signs["alipayplus.<report>"] = "as_written"`` takes signed
  values as they stand (and no longer demands the type/direction column).
* Summary figures become ``engine.Declared`` with scope "summary": ``value`` as written (non-negative),
  ``direction`` CREDIT/DEBIT (old D/C spelling normalised, spec 7), ``currency``. TDR: count, settlement,
  amount (when present); TSR: count, settlement, amount (when present), batch_id = clearingBatchId;
  FR: count, fee; SR: count, settlement, batch_id = settlementBatchId. TDR/FR figures carry the file name's
  clearing batch id. An empty cycle (count 0, amount 0, DEBIT) is valid (spec 10).

Where the checks find the rest: ``parsed.sections["summary"]`` holds the summary row(s) keyed by column name
(values converted, fundDirection normalised, ``__line`` = physical line), for the TSR too. Dates whose format
is undocumented are kept as written and parsed into ``clearing_date`` (TSR ``clearingDate``) and
``value_date`` (SR ``valueDate``) as ``datetime.date`` in those rows and as ISO text in ``parsed.meta``.
File-name fields are in ``parsed.meta``: participant_id, currency, batch_id, agreement_id, seq (spec 4).

Writing (the sandbox): summary header, summary values, an empty line, detail header, detail rows [inferred,
spec 5 gap 2]; UTF-8, LF. Timestamps are written ISO 8601 with their offset (``2022-04-19T23:59:59+08:00``),
the format of the Alipay+ API [inferred: the report format is undocumented]; the reader also accepts
``yyyy-MM-dd HH:mm:ss`` (taken as UTC+8, spec 8). Dates are written ``yyyy-MM-dd`` [inferred].
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from .. import errors
from ..clock import TimeError, clearing_date, parse_compact_date, parse_date, parse_timestamp
from .base import ReportFormat, Section, SectionedReport, TableReport, Variant, rows_of
from .engine import Column, Declared, Kind, Layout, ParsedFile, ParseOptions, sort_problems
from .writer import render_rows, write_csv

__all__ = [
    "AMOUNT_SIGNS",
    "DETAIL_HEADERS",
    "FAMILY",
    "FEE",
    "REPORTS",
    "SETTLEMENT",
    "SUMMARY_HEADERS",
    "TRANSACTION_DETAIL",
    "TRANSACTION_SUMMARY",
    "UNVERIFIED_COLUMNS",
    "amount_sign",
    "file_name",
    "write_report",
]

FAMILY = "alipayplus"
AMOUNT_SIGNS = ("by_type", "as_written")
DIRECTIONS = ("CREDIT", "DEBIT", "C", "D")  # D/C: the older MPP spelling (spec 7)
TS_STYLE = "iso"  # see the module docstring (Writing)

# Where each column's name comes from (Column.source). Only _DOC_* names are confirmed by a source.
_DOC_TSR = "alipayplus.md 6.1 (seed 002)"
_DOC_TDR = "alipayplus.md 6.2"
_DOC_FR = "alipayplus.md 6.3 (FR totalCount, TSR rule)"
_DOC_SR = "alipayplus.md 6.4"
_UNVERIFIED = "[unverified] alipayplus.md 6.5"

_PREFIXES = {
    "transaction_detail": "transactionItems",
    "transaction_summary": "summary",
    "fee": "feeItems",
    "settlement": "settlement",
}
_DATE_KEYS = {"clearingDate": "clearing_date", "valueDate": "value_date"}


def _name_re(prefix: str) -> re.Pattern[str]:
    """``<prefix>_<participantId>_<CCY>_<batchId>_<agreementId>_<seq>.csv`` (spec 4); anchored on the
    3-letter currency and the 3-digit seq in case an id ever holds an underscore [inferred, spec 4]."""
    return re.compile(
        rf"{prefix}_(?P<participant_id>.+?)_(?P<currency>[A-Z]{{3}})_(?P<batch_id>[^_]+)"
        r"_(?P<agreement_id>.+)_(?P<seq>[0-9]{3})\.(?i:csv)"
    )


# ---------------------------------------------------------------------------------------------
# SQL pieces for the layouts' outputs


def _direction(col: str = "fundDirection") -> str:
    """fundDirection normalised to CREDIT/DEBIT (the ENUM value is already upper-cased)."""
    return f"(CASE {{{col}}} WHEN 'C' THEN 'CREDIT' WHEN 'D' THEN 'DEBIT' ELSE {{{col}}} END)"


def _by_direction(amount: str, col: str = "fundDirection") -> str:
    """Participant perspective: CREDIT (Alipay+ pays the participant) +, DEBIT - (spec 6.1, 2)."""
    return f"(CASE {_direction(col)} WHEN 'CREDIT' THEN {{{amount}}} WHEN 'DEBIT' THEN -{{{amount}}} END)"


def _by_type(amount: str) -> str:
    """Transaction perspective: PAYMENT +, REFUND - [inferred, spec 6.5 gap 4]."""
    return f"(CASE {{transactionType}} WHEN 'PAYMENT' THEN {{{amount}}} WHEN 'REFUND' THEN -{{{amount}}} END)"


def _as_written(amount: str) -> str:
    return f"{{{amount}}}"


def _section_outputs(columns: Sequence[Column]) -> dict[str, str]:
    """Summary rows keep every column under its own name (fundDirection normalised) for the checks."""
    return {c.name: _direction(c.name) if c.name == "fundDirection" else f"{{{c.name}}}" for c in columns}


def _money(name: str, currency: tuple[str, ...], source: str, **kw: Any) -> Column:
    """Alipay+ amounts are integers in minor units (spec 7; TDR/FR/SR [inferred] from the naming)."""
    return Column(name, Kind.AMOUNT, unit="minor", currency=currency, source=source, **kw)


def _fund_direction(source: str, **kw: Any) -> Column:
    """Strict: sums depend on it (spec 6.6 rule 5); CREDIT/DEBIT and the older D/C (spec 7)."""
    return Column("fundDirection", Kind.ENUM, allowed=DIRECTIONS, strict=True, source=source, **kw)


# ---------------------------------------------------------------------------------------------
# Transaction Summary Report: the nine documented columns (spec 6.1), in the documented order

_TSR_COLUMNS = (
    Column("clearingBatchId", required=True, nonempty=True, max_length=32, source=_DOC_TSR),
    # String, format not stated (spec 6.1): kept as text, parsed leniently into ``clearing_date``.
    Column("clearingDate", required=True, nonempty=True, source=_DOC_TSR),
    # "String" holding a count: read as text, converted exactly (spec 6.1 notes).
    Column("totalCount", Kind.INTEGER, required=True, nonempty=True, nonnegative=True, source=_DOC_TSR),
    _fund_direction(_DOC_TSR, required=True, nonempty=True),
    Column("settlementCurrency", Kind.CURRENCY, required=True, nonempty=True, max_length=3, source=_DOC_TSR),
    # Value range 0 - unlimited: the sign is fundDirection's (spec 6.1).
    _money("netSettlementAmountValue", ("settlementCurrency",), _DOC_TSR, required=True, nonempty=True,
           nonnegative=True),
    # Empty when the cycle has no transaction or several transaction currencies (spec 6.1).
    Column("transactionCurrency", Kind.CURRENCY, max_length=3, source=_DOC_TSR),
    _money("netTransactionAmountValue", ("transactionCurrency",), _DOC_TSR, nonnegative=True),
    Column("extendInfo", max_length=2048, source=_DOC_TSR),
)

_TSR_LAYOUT = Layout(
    "alipayplus.transaction_summary",
    _TSR_COLUMNS,
    outputs={
        "record_type": "'CLEARING_BATCH'",
        "account_id": "{@participant_id}",
        "clearing_batch_id": "{clearingBatchId}",
        "settlement_minor": _by_direction("netSettlementAmountValue"),
        "settlement_currency": "{settlementCurrency}",
        "amount_minor": _by_direction("netTransactionAmountValue"),
        "amount_currency": "{transactionCurrency}",
        **_section_outputs(_TSR_COLUMNS),
    },
    amount_unit="minor",
)


# ---------------------------------------------------------------------------------------------
# The sectioned reports. Every name marked _UNVERIFIED is a candidate from spec 6.5 (what the sandbox
# writes); only documented names and what the sign and sums cannot do without are ``required``.
# ``by_type`` (default) and ``as_written`` differ only in the sign rules (see the module docstring).


def _tdr_sections(by_type: bool) -> tuple[Section, Section]:
    summary_cols = (
        Column("totalCount", Kind.INTEGER, required=True, nonempty=True, nonnegative=True, source=_DOC_TDR),
        _money("netSettlementAmountValue", ("settlementCurrency", "@currency"), _UNVERIFIED, nonnegative=by_type),
        Column("settlementCurrency", Kind.CURRENCY, source=_UNVERIFIED),
        _fund_direction(_UNVERIFIED),
        _money("netTransactionAmountValue", ("transactionCurrency",), _UNVERIFIED, nonnegative=by_type),
        Column("transactionCurrency", Kind.CURRENCY, source=_UNVERIFIED),
    )
    sign = _by_type if by_type else _as_written
    detail_cols = (
        # Same id as the TSR's clearingBatchId, so the same String(32) [inferred, spec 6.1].
        Column("clearingBatchId", max_length=32, source=_UNVERIFIED),
        Column("transactionId", source=_UNVERIFIED),
        Column("originalTransactionId", source=_UNVERIFIED),
        Column("transactionRequestId", source=_UNVERIFIED),
        Column("originalTransactionRequestId", source=_UNVERIFIED),
        # Decides the sign under by_type, so it must be there and be PAYMENT or REFUND (AP-D3: the
        # clearing files hold successful payments and refunds only).
        Column("transactionType", Kind.ENUM, allowed=("PAYMENT", "REFUND"), required=by_type, nonempty=by_type,
               strict=by_type, source=_UNVERIFIED),
        Column("transactionTime", Kind.TIMESTAMP, required=True, nonempty=True, source=_DOC_TDR),
        _money("transactionAmountValue", ("transactionCurrency",), _UNVERIFIED, nonnegative=by_type),
        Column("transactionCurrency", Kind.CURRENCY, source=_UNVERIFIED),
        _money("settlementAmountValue", ("settlementCurrency", "@currency"), _DOC_TDR, required=True,
               nonempty=True, nonnegative=by_type),
        Column("settlementCurrency", Kind.CURRENCY, source=_UNVERIFIED),
        Column("quoteCurrencyPair", source=_UNVERIFIED),
        Column("quotePrice", Kind.DECIMAL, source=_UNVERIFIED),
        Column("pspId", source=_UNVERIFIED),
        Column("acquirerId", source=_UNVERIFIED),
        Column("referenceMerchantId", source=_UNVERIFIED),
    )
    detail_outputs = {
        "record_type": "{transactionType}",
        "raw_type": "{transactionType:raw}",
        "account_id": "{@participant_id}",
        # transactionId is Alipay+'s id; the request id is the one the participant's own records carry
        # (spec 15: paymentRequestId is the idempotency key) [inferred].
        "provider_txn_id": "{transactionId}",
        "original_provider_txn_id": "{originalTransactionId}",
        "merchant_ref_id": "{transactionRequestId}",
        "original_merchant_ref_id": "{originalTransactionRequestId}",
        "status": "'SUCCESS'",  # only successful payments and refunds are cleared (spec 6.2, AP-D3)
        "amount_minor": sign("transactionAmountValue"),
        "amount_currency": "{transactionCurrency}",
        "settlement_minor": sign("settlementAmountValue"),
        "settlement_currency": "coalesce({settlementCurrency}, {@currency})",
        "occurred_at": "{transactionTime}",
        "occurred_offset_min": "{transactionTime:offset}",
        "fx_pair": "{quoteCurrencyPair}",
        "fx_rate": "{quotePrice}",
        "clearing_batch_id": "coalesce({clearingBatchId}, {@batch_id})",
    }
    return (
        Section("summary", Layout("alipayplus.transaction_detail.summary", summary_cols,
                                  _section_outputs(summary_cols), amount_unit="minor")),
        Section("detail", Layout("alipayplus.transaction_detail.detail", detail_cols, detail_outputs,
                                 amount_unit="minor"), bulk=True, required=False, max_rows=None),
    )


def _fr_sections(by_type: bool) -> tuple[Section, Section]:
    summary_cols = (
        Column("totalCount", Kind.INTEGER, required=True, nonempty=True, nonnegative=True, source=_DOC_FR),
        _money("netFeeAmountValue", ("feeCurrency", "@currency"), _UNVERIFIED, nonnegative=by_type),
        # Fees are in the settlement currency (ACQP FR/SR pages, spec 4) [inferred]: the name's currency.
        Column("feeCurrency", Kind.CURRENCY, source=_UNVERIFIED),
        _fund_direction(_UNVERIFIED),
    )
    sign = _by_direction if by_type else _as_written
    detail_cols = (
        Column("clearingBatchId", max_length=32, source=_UNVERIFIED),
        Column("feeId", source=_UNVERIFIED),
        Column("transactionId", source=_UNVERIFIED),
        # Lenient: new fee types are kept with a warning (spec 6.6 rule 5).
        Column("feeType", Kind.ENUM, allowed=("INTERCHANGE_FEE", "SERVICE_FEE"), source=_UNVERIFIED),
        _money("feeAmountValue", ("feeCurrency", "@currency"), _UNVERIFIED, required=True, nonempty=True,
               nonnegative=by_type),
        Column("feeCurrency", Kind.CURRENCY, source=_UNVERIFIED),
        _fund_direction(_UNVERIFIED, required=by_type, nonempty=by_type),
    )
    detail_outputs = {
        "record_type": "'FEE'",
        "raw_type": "{feeType:raw}",
        "account_id": "{@participant_id}",
        "provider_txn_id": "{transactionId}",  # the transaction the fee is charged on [inferred]
        "fee_minor": sign("feeAmountValue"),
        "fee_currency": "coalesce({feeCurrency}, {@currency})",
        "clearing_batch_id": "coalesce({clearingBatchId}, {@batch_id})",
    }
    return (
        Section("summary", Layout("alipayplus.fee.summary", summary_cols, _section_outputs(summary_cols),
                                  amount_unit="minor")),
        Section("detail", Layout("alipayplus.fee.detail", detail_cols, detail_outputs, amount_unit="minor"),
                bulk=True, required=False, max_rows=None),
    )


def _sr_sections(by_type: bool) -> tuple[Section, Section]:
    summary_cols = (
        Column("settlementBatchId", source=_UNVERIFIED),
        Column("participantAgreementId", source=_UNVERIFIED),
        Column("settlementCurrency", Kind.CURRENCY, source=_UNVERIFIED),
        _money("netSettlementAmountValue", ("settlementCurrency", "@currency"), _UNVERIFIED, nonnegative=by_type),
        _fund_direction(_UNVERIFIED),
        # Format not documented: kept as text, parsed leniently into ``value_date``.
        Column("valueDate", required=True, nonempty=True, source=_DOC_SR),
        # Number of clearing batches listed [inferred].
        Column("totalCount", Kind.INTEGER, nonnegative=True, source=_UNVERIFIED),
    )
    sign = _by_direction if by_type else _as_written
    detail_cols = (
        # The details list the clearing batches included (spec 6.4); AP-I5/I6 join on this id.
        Column("clearingBatchId", required=True, nonempty=True, max_length=32, source=_UNVERIFIED),
        Column("clearingDate", source=_UNVERIFIED),
        _money("netSettlementAmountValue", ("settlementCurrency", "@currency"), _UNVERIFIED, required=True,
               nonempty=True, nonnegative=by_type),
        Column("settlementCurrency", Kind.CURRENCY, source=_UNVERIFIED),
        _fund_direction(_UNVERIFIED, required=by_type, nonempty=by_type),
    )
    detail_outputs = {
        "record_type": "'CLEARING_BATCH'",
        "account_id": "{@participant_id}",
        "clearing_batch_id": "{clearingBatchId}",
        "settlement_minor": sign("netSettlementAmountValue"),
        "settlement_currency": "coalesce({settlementCurrency}, {@currency})",
        "settlement_batch_id": "{@batch_id}",  # replaced by the summary's settlementBatchId when present
    }
    return (
        Section("summary", Layout("alipayplus.settlement.summary", summary_cols, _section_outputs(summary_cols),
                                  amount_unit="minor")),
        Section("detail", Layout("alipayplus.settlement.detail", detail_cols, detail_outputs, amount_unit="minor"),
                bulk=True, required=False, max_rows=None),
    )


# ---------------------------------------------------------------------------------------------
# Declared figures and the post-parse steps


def _declared(row: Mapping[str, Any], *, batch_id: str | None, money: Sequence[tuple[str, str, str | None]],
              fallback_currency: str | None) -> list[Declared]:
    """``count`` plus each ``(figure, value column, currency column)`` present in a summary row."""
    line = int(row["__line"])
    direction = row.get("fundDirection")
    out: list[Declared] = []
    if row.get("totalCount") is not None:
        out.append(Declared("summary", "count", int(row["totalCount"]), line, batch_id=batch_id))
    for figure, value_col, currency_col in money:
        value = row.get(value_col)
        if value is None:
            continue
        currency = (row.get(currency_col) if currency_col else None) or (
            fallback_currency if figure != "amount" else None
        )
        out.append(Declared("summary", figure, int(value), line, currency=currency, batch_id=batch_id,
                            direction=direction))
    return out


def _tsr_rows(parsed: ParsedFile, con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    if parsed.body is None:
        return []
    rows = rows_of(con, parsed, ", ".join(f'"{c.name}"' for c in _TSR_COLUMNS))
    for row in rows:
        row["__line"] = row.pop("__line_no")
    return rows


def _declare_tsr(parsed: ParsedFile, con: duckdb.DuckDBPyConnection) -> list[Declared]:
    out: list[Declared] = []
    for row in _tsr_rows(parsed, con):
        out += _declared(row, batch_id=row.get("clearingBatchId") or parsed.meta.get("batch_id"),
                         money=(("settlement", "netSettlementAmountValue", "settlementCurrency"),
                                ("amount", "netTransactionAmountValue", "transactionCurrency")),
                         fallback_currency=parsed.meta.get("currency"))
    return out


def _sectioned_declare(money: Sequence[tuple[str, str, str | None]], batch_column: str | None
                       ) -> Callable[[ParsedFile, duckdb.DuckDBPyConnection], list[Declared]]:
    def declare(parsed: ParsedFile, con: duckdb.DuckDBPyConnection) -> list[Declared]:
        out: list[Declared] = []
        for row in parsed.sections.get("summary", []):
            batch = (row.get(batch_column) if batch_column else None) or parsed.meta.get("batch_id")
            out += _declared(row, batch_id=batch, money=money, fallback_currency=parsed.meta.get("currency"))
        return out

    return declare


def _read_date(text: str) -> date | None:
    """yyyy-MM-dd, yyyyMMdd or a timestamp (its UTC+8 day, spec 8): the date formats are undocumented."""
    for parse in (parse_date, parse_compact_date):
        try:
            return parse(text)
        except TimeError:
            pass
    try:
        return clearing_date(parse_timestamp(text))
    except TimeError:
        return None


def _add_dates(parsed: ParsedFile, column: str, header: Sequence[str] | None = None) -> None:
    """Parse a summary date column for the checks; an unreadable one is kept and warned about."""
    key = _DATE_KEYS[column]
    position = next((i + 1 for i, h in enumerate(header or ()) if h.lower() == column.lower()), None)
    for row in parsed.sections.get("summary", []):
        text = row.get(column)
        day = _read_date(text) if text else None
        row[key] = day
        if text and day is None:
            parsed.problems.append(errors.BadDate(
                f"{column}: cannot read {text!r} as a date; kept as written", file=parsed.name,
                line=row["__line"], column=column, column_index=position, severity="warning",
                expected="yyyy-MM-dd, yyyyMMdd or an ISO 8601 timestamp", found=str(text)[:200]))
        if day is not None and key not in parsed.meta:
            parsed.meta[key] = day.isoformat()


def amount_sign(report: ReportFormat, options: ParseOptions) -> str:
    """The configured sign convention of ``report`` (default ``by_type``, see the module docstring)."""
    sign = options.amount_signs.get(report.key(), "by_type")
    if sign not in AMOUNT_SIGNS:
        raise errors.ConfigError(f"amount_signs[{report.key()!r}] must be one of {AMOUNT_SIGNS}, not {sign!r}")
    return sign


@dataclass(frozen=True)
class _SummaryTable(TableReport):
    """The TSR: one header line and one record (spec 5: "one part only")."""

    def parse(self, path: Path, con: duckdb.DuckDBPyConnection | None = None,
              options: ParseOptions | None = None, *, name: str | None = None) -> ParsedFile:
        options = options or ParseOptions()
        parsed = TableReport.parse(self, path, con, options, name=name)
        if parsed.body is None or parsed.con is None:
            return parsed
        rows = _tsr_rows(parsed, parsed.con)
        parsed.sections["summary"] = rows
        if len(rows) != 1:
            parsed.problems.append(errors.BadSection(
                f"the transaction summary has {len(rows)} records, expected exactly 1", file=parsed.name,
                line=rows[1]["__line"] if len(rows) > 1 else 2, expected="one record after the header"))
        _add_dates(parsed, "clearingDate", parsed.header)
        parsed.problems = sort_problems(parsed.problems, options.max_problems)
        return parsed


@dataclass(frozen=True)
class _Sectioned(SectionedReport):
    """A summary section then a detail section, with a configurable sign convention."""

    as_written: tuple[Section, ...] = ()  # the sections under amount_signs = "as_written"
    dates: tuple[str, ...] = ()  # summary date columns the checks read
    batch_column: str | None = None  # summary column that overrides the name's settlement batch id

    def parse(self, path: Path, con: duckdb.DuckDBPyConnection | None = None,
              options: ParseOptions | None = None, *, name: str | None = None) -> ParsedFile:
        options = options or ParseOptions()
        chosen = self if amount_sign(self, options) == "by_type" else replace(self, sections=self.as_written)
        parsed = SectionedReport.parse(chosen, path, con, options, name=name)
        for column in self.dates:
            _add_dates(parsed, column)
        summary = parsed.sections.get("summary", [])
        batch = summary[0].get(self.batch_column) if summary and self.batch_column else None
        if batch and parsed.body is not None and parsed.con is not None:
            parsed.con.execute(f"UPDATE {parsed.body.table} SET settlement_batch_id = ?", [batch])
        parsed.problems = sort_problems(parsed.problems, options.max_problems)
        return parsed


# ---------------------------------------------------------------------------------------------
# The four reports

TRANSACTION_SUMMARY = _SummaryTable(
    family=FAMILY,
    report="transaction_summary",
    name_re=_name_re(_PREFIXES["transaction_summary"]),
    variants=(Variant("v1", _TSR_LAYOUT, markers=("clearingBatchId", "clearingDate", "totalCount",
                                                  "netSettlementAmountValue")),),
    trailer="optional",
    extensions=(".csv",),
    declare=_declare_tsr,
    name_fields={"currency": "settlement_currency", "batch_id": "clearing_batch_id"},
)

TRANSACTION_DETAIL = _Sectioned(
    family=FAMILY,
    report="transaction_detail",
    name_re=_name_re(_PREFIXES["transaction_detail"]),
    sections=_tdr_sections(by_type=True),
    as_written=_tdr_sections(by_type=False),
    declare=_sectioned_declare((("settlement", "netSettlementAmountValue", "settlementCurrency"),
                                ("amount", "netTransactionAmountValue", "transactionCurrency")), None),
    name_fields={"currency": "settlement_currency", "batch_id": "clearing_batch_id"},
)

FEE = _Sectioned(
    family=FAMILY,
    report="fee",
    name_re=_name_re(_PREFIXES["fee"]),
    sections=_fr_sections(by_type=True),
    as_written=_fr_sections(by_type=False),
    declare=_sectioned_declare((("fee", "netFeeAmountValue", "feeCurrency"),), None),
    name_fields={"currency": "fee_currency", "batch_id": "clearing_batch_id"},
)

SETTLEMENT = _Sectioned(
    family=FAMILY,
    report="settlement",
    name_re=_name_re(_PREFIXES["settlement"]),
    sections=_sr_sections(by_type=True),
    as_written=_sr_sections(by_type=False),
    declare=_sectioned_declare((("settlement", "netSettlementAmountValue", "settlementCurrency"),),
                               "settlementBatchId"),
    name_fields={"currency": "settlement_currency", "batch_id": "settlement_batch_id"},
    dates=("valueDate",),
    batch_column="settlementBatchId",
)

REPORTS: tuple[ReportFormat, ...] = (TRANSACTION_DETAIL, TRANSACTION_SUMMARY, FEE, SETTLEMENT)
_BY_NAME: dict[str, ReportFormat] = {r.report: r for r in REPORTS}

DETAIL_HEADERS: dict[str, tuple[str, ...]] = {
    "transaction_detail": tuple(c.name for c in TRANSACTION_DETAIL.sections[1].layout.columns),
    "transaction_summary": tuple(c.name for c in _TSR_COLUMNS),
    "fee": tuple(c.name for c in FEE.sections[1].layout.columns),
    "settlement": tuple(c.name for c in SETTLEMENT.sections[1].layout.columns),
}
SUMMARY_HEADERS: dict[str, tuple[str, ...]] = {
    r.report: tuple(c.name for c in r.sections[0].layout.columns) for r in (TRANSACTION_DETAIL, FEE, SETTLEMENT)
}
# Every column name no source confirms, per report and section: confirm on a real file (spec 6.5).
UNVERIFIED_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    r.report: {s.name: tuple(c.name for c in s.layout.columns if c.source == _UNVERIFIED) for s in r.sections}
    for r in (TRANSACTION_DETAIL, FEE, SETTLEMENT)
}


# ---------------------------------------------------------------------------------------------
# Writers (the sandbox produces its files through these)


def write_report(report: str, *, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any] | None = None,
                 header: Sequence[str] | None = None, summary_header: Sequence[str] | None = None,
                 trailer: bool = False) -> bytes:
    """The bytes of one report file; values keyed by column name (``str`` written as given, None empty).

    Sectioned reports without ``summary`` get no summary section (how the sandbox writes a broken file).
    """
    fmt = _BY_NAME.get(report)
    if fmt is None:
        raise ValueError(f"unknown Alipay+ report {report!r}; expected one of {sorted(_BY_NAME)}")
    head = tuple(header or DETAIL_HEADERS[report])
    if isinstance(fmt, TableReport):
        if summary is not None:
            raise ValueError("the transaction summary has no summary section: pass its record in rows")
        return write_csv(head, render_rows(_TSR_LAYOUT, head, rows, ts_style=TS_STYLE), trailer=trailer)
    assert isinstance(fmt, _Sectioned)
    summary_section, detail_section = fmt.sections
    preamble: list[list[str]] = []
    if summary is not None:
        shead = list(summary_header or SUMMARY_HEADERS[report])
        preamble = [shead, *render_rows(summary_section.layout, shead, [summary], ts_style=TS_STYLE), []]
    cells = render_rows(detail_section.layout, head, rows, ts_style=TS_STYLE)
    return write_csv(head, cells, trailer=trailer, preamble=preamble)


def file_name(report: str, *, participant_id: str, currency: str, batch_id: str, agreement_id: str,
              seq: int = 0) -> str:
    """``<prefix>_<participantId>_<CCY>_<batchId>_<agreementId>_<seq>.csv`` (spec 4); refuses a name that
    would not parse back to the same fields."""
    if report not in _PREFIXES:
        raise ValueError(f"unknown Alipay+ report {report!r}")
    if not 0 <= seq <= 999:
        raise ValueError(f"seq must be 0-999, got {seq}")
    name = f"{_PREFIXES[report]}_{participant_id}_{currency}_{batch_id}_{agreement_id}_{seq:03d}.csv"
    fields = {"participant_id": participant_id, "currency": currency, "batch_id": batch_id,
              "agreement_id": agreement_id, "seq": f"{seq:03d}"}
    if "/" in name or _BY_NAME[report].name_meta(name) != fields:
        raise ValueError(f"these fields do not make an unambiguous file name: {fields}")
    return name
