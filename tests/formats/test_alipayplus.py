"""Alipay+ reports: the documented TSR cases, sign conventions, sections, names, detection, bad input.

Every file is produced by the module's own writer (as the sandbox does) or typed out where the point is
a broken layout; expectations come from the spec (alipayplus.md), not from the implementation.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alirecon import errors
from alirecon.clock import Stamp
from alirecon.config import ParseConfig
from alirecon.formats import alipayplus as ap
from alirecon.formats.engine import ParsedFile, ParseOptions, extras_dict
from alirecon.formats.registry import detect
from alirecon.money import parse_major

CURRENCIES = ("JPY", "USD", "KWD")
DIRECTION = {"CREDIT": "CREDIT", "DEBIT": "DEBIT", "C": "CREDIT", "D": "DEBIT"}
PARTICIPANT_SIGN = {"CREDIT": 1, "DEBIT": -1}  # participant perspective (spec 2, 6.1)


def parse(report: Any, path: Path, data: bytes, con: Any = None, options: ParseOptions | None = None) -> ParsedFile:
    path.write_bytes(data)
    return report.parse(path, con, options)


def codes(parsed: ParsedFile) -> list[tuple[str, int | None, int | None]]:
    return [(p.code, p.line, p.column_index) for p in parsed.problems]


def declared(parsed: ParsedFile) -> set[tuple[Any, ...]]:
    return {(d.scope, d.figure, d.value, d.currency, d.direction, d.batch_id, d.line_no) for d in parsed.declared}


# ---------------------------------------------------------------------------------------------
# The Transaction Summary Report (spec 6.1, seed 002)

SPEC_TSR = [  # spec 6.1: (column, required, max length)
    ("clearingBatchId", True, 32),
    ("clearingDate", True, None),
    ("totalCount", True, None),
    ("fundDirection", True, None),
    ("settlementCurrency", True, 3),
    ("netSettlementAmountValue", True, None),
    ("transactionCurrency", False, 3),
    ("netTransactionAmountValue", False, None),
    ("extendInfo", False, 2048),
]


def test_tsr_has_exactly_the_nine_documented_columns() -> None:
    layout = ap.TRANSACTION_SUMMARY.variants[0].layout
    assert [(c.name, c.required, c.max_length) for c in layout.columns] == SPEC_TSR
    assert ap.DETAIL_HEADERS["transaction_summary"] == tuple(name for name, _, _ in SPEC_TSR)
    amounts = [c for c in layout.columns if c.name.endswith("AmountValue")]
    assert all(c.unit == "minor" for c in amounts)


SEED_002_CASES = [
    # name, clearing date, amount as documented, transaction currency/amount present
    ("summary_A1234567890_EUR_202204190000200000_20210001_000.csv", date(2022, 4, 19), "19.6", True, 1960),
    ("summary_A1234567890_EUR_202204280000200000_20210000_000.csv", date(2022, 4, 28), "81.15", True, 8115),
    ("summary_A1234567890_EUR_202201101107957472_202109171107900901003800022697_000.csv", date(2022, 1, 10), "0.5",
     False, 50),
]


@pytest.mark.parametrize(("name", "day", "major", "single_currency", "minor"), SEED_002_CASES)
def test_seed_002_summary_cases(tmp_path: Path, con: Any, name: str, day: date, major: str,
                                single_currency: bool, minor: int) -> None:
    meta = ap.TRANSACTION_SUMMARY.name_meta(name)
    assert meta is not None
    row: dict[str, Any] = {
        "clearingBatchId": meta["batch_id"],
        "clearingDate": day,
        "totalCount": 7,
        "fundDirection": "DEBIT",  # the MPP pays Alipay+ in all three cases
        "settlementCurrency": "EUR",
        "netSettlementAmountValue": parse_major(major, "EUR"),
        # case 3: several transaction currencies -> both empty (spec 6.1 column 7)
        "transactionCurrency": "EUR" if single_currency else None,
        "netTransactionAmountValue": parse_major(major, "EUR") if single_currency else None,
        }
    parsed = parse(ap.TRANSACTION_SUMMARY, tmp_path / name, ap.write_report("transaction_summary", rows=[row]), con)
    assert parsed.ok, codes(parsed)
    batch = meta["batch_id"]
    expected = {("summary", "count", 7, None, None, batch, 2),
                ("summary", "settlement", minor, "EUR", "DEBIT", batch, 2)}
    if single_currency:
        expected.add(("summary", "amount", minor, "EUR", "DEBIT", batch, 2))
    assert declared(parsed) == expected
    [line] = parsed.lines_arrow().to_pylist()
    assert (line["record_type"], line["settlement_minor"], line["settlement_currency"], line["clearing_batch_id"]) == (
        "CLEARING_BATCH", -minor, "EUR", batch)
    assert line["amount_minor"] == (-minor if single_currency else None)
    [summary] = parsed.sections["summary"]
    assert summary["clearing_date"] == day and parsed.meta["clearing_date"] == day.isoformat()
    assert summary["clearingDate"] == day.isoformat()


@pytest.mark.parametrize(("written", "direction", "sign"), [("C", "CREDIT", 1), ("d", "DEBIT", -1),
                                                             ("CREDIT", "CREDIT", 1)])
def test_tsr_accepts_old_d_c_spelling(tmp_path: Path, con: Any, written: str, direction: str, sign: int) -> None:
    row = {"clearingBatchId": "B", "clearingDate": "2022-04-19", "totalCount": 1, "fundDirection": written,
           "settlementCurrency": "USD", "netSettlementAmountValue": 125}
    parsed = parse(ap.TRANSACTION_SUMMARY, tmp_path / "summary_P_USD_B_AG_000.csv",
                   ap.write_report("transaction_summary", rows=[row]), con)
    assert parsed.ok, codes(parsed)
    assert {d.direction for d in parsed.declared if d.figure == "settlement"} == {direction}
    assert parsed.lines_arrow().column("settlement_minor").to_pylist() == [sign * 125]


def test_tsr_bad_cells_are_precise(tmp_path: Path, con: Any) -> None:
    data = (b"clearingBatchId,clearingDate,totalCount,fundDirection,settlementCurrency,netSettlementAmountValue\n"
            b"B,2022-04-19,1,X,EUR,19.6\n")
    parsed = parse(ap.TRANSACTION_SUMMARY, tmp_path / "summary_P_EUR_B_AG_000.csv", data, con)
    # an unknown direction is fatal (sums depend on it); a decimal point in minor units is an error
    assert codes(parsed) == [("bad_value", 2, 4), ("bad_number", 2, 6)]


def test_tsr_must_have_one_record(tmp_path: Path, con: Any) -> None:
    row = {"clearingBatchId": "B", "clearingDate": "2022-04-19", "totalCount": 0, "fundDirection": "DEBIT",
           "settlementCurrency": "EUR", "netSettlementAmountValue": 0}
    parsed = parse(ap.TRANSACTION_SUMMARY, tmp_path / "summary_P_EUR_B_AG_000.csv",
                   ap.write_report("transaction_summary", rows=[row, row]), con)
    assert codes(parsed) == [("bad_section", 3, None)]
    parsed = parse(ap.TRANSACTION_SUMMARY, tmp_path / "summary_P_EUR_B_AG_000.csv",
                   ap.write_report("transaction_summary", rows=[]), con)
    assert [p.code for p in parsed.errors] == ["bad_section"]


def test_tsr_missing_documented_column(tmp_path: Path, con: Any) -> None:
    header = [c for c, _, _ in SPEC_TSR if c != "clearingDate"]
    row = {"clearingBatchId": "B", "totalCount": 0, "fundDirection": "DEBIT", "settlementCurrency": "EUR",
           "netSettlementAmountValue": 0}
    parsed = parse(ap.TRANSACTION_SUMMARY, tmp_path / "summary_P_EUR_B_AG_000.csv",
                   ap.write_report("transaction_summary", rows=[row], header=header), con)
    assert [(p.code, p.column) for p in parsed.errors] == [("missing_column", "clearingDate")]


# ---------------------------------------------------------------------------------------------
# Empty cycles (spec 10): count 0, amount 0, default direction DEBIT, no detail lines

EMPTY_SUMMARIES = {
    "transaction_detail": {"totalCount": 0, "netSettlementAmountValue": 0, "settlementCurrency": "USD",
                           "fundDirection": "DEBIT"},
    "fee": {"totalCount": 0, "netFeeAmountValue": 0, "feeCurrency": "USD", "fundDirection": "DEBIT"},
    "settlement": {"settlementBatchId": "S1", "settlementCurrency": "USD", "netSettlementAmountValue": 0,
                   "fundDirection": "D", "valueDate": date(2022, 4, 21), "totalCount": 0},
}


@pytest.mark.parametrize("report", sorted(EMPTY_SUMMARIES))
def test_empty_cycle_is_valid(tmp_path: Path, con: Any, report: str) -> None:
    fmt = ap.REPORTS[[r.report for r in ap.REPORTS].index(report)]
    name = ap.file_name(report, participant_id="P1", currency="USD", batch_id="S1", agreement_id="20210001")
    parsed = parse(fmt, tmp_path / name, ap.write_report(report, rows=[], summary=EMPTY_SUMMARIES[report]), con)
    assert parsed.ok, codes(parsed)
    assert parsed.row_count == 0 and parsed.lines_arrow().num_rows == 0
    figures = {d.figure: (d.value, d.direction) for d in parsed.declared}
    money_figure = "fee" if report == "fee" else "settlement"
    assert figures == {"count": (0, None), money_figure: (0, "DEBIT")}


def test_empty_tsr_is_valid(tmp_path: Path, con: Any) -> None:
    row = {"clearingBatchId": "B", "clearingDate": "2022-04-19", "totalCount": 0, "fundDirection": "DEBIT",
           "settlementCurrency": "USD", "netSettlementAmountValue": 0}
    parsed = parse(ap.TRANSACTION_SUMMARY, tmp_path / "summary_P_USD_B_AG_000.csv",
                   ap.write_report("transaction_summary", rows=[row], trailer=True), con)
    assert parsed.ok, codes(parsed)
    assert {(d.figure, d.value, d.direction) for d in parsed.declared} == {("count", 0, None),
                                                                          ("settlement", 0, "DEBIT")}


# ---------------------------------------------------------------------------------------------
# Round trips: write -> parse -> the same canonical lines and declared figures

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 ,\"-]{0,15}", fullmatch=True)
digits = st.from_regex(r"[0-9]{8,18}", fullmatch=True)
amounts = st.integers(0, 10**15)
directions = st.sampled_from(sorted(DIRECTION))
OFFSETS = (-300, 0, 330, 480, 525, 600)


@st.composite
def stamps(draw: st.DrawFn) -> Stamp:
    utc = draw(st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31))).replace(tzinfo=UTC)
    return Stamp(utc, draw(st.sampled_from(OFFSETS)))


@st.composite
def names(draw: st.DrawFn, report: str, currency: str) -> tuple[str, dict[str, str]]:
    fields = {"participant_id": draw(st.from_regex(r"[A-Z][A-Za-z0-9]{0,15}", fullmatch=True)),
              "currency": currency, "batch_id": draw(digits),
              "agreement_id": draw(st.from_regex(r"[0-9]{8}|[0-9]{30}", fullmatch=True)),
              "seq": f"{draw(st.integers(0, 999)):03d}"}
    return ap.file_name(report, **{**fields, "seq": int(fields["seq"])}), fields


def summary_figures(draw: Any, amount_column: str, currency_column: str, currency: str) -> dict[str, Any]:
    return {"totalCount": draw(st.integers(0, 10**6)), amount_column: draw(amounts),
            currency_column: draw(st.sampled_from([currency, None])), "fundDirection": draw(directions)}


def lines_of(parsed: ParsedFile, fields: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in parsed.lines_arrow().to_pylist():
        row: dict[str, Any] = {f: line[f] for f in fields}
        if "extras" in row:
            row["extras"] = extras_dict(row["extras"], parsed.extras_names)
        out.append(row)
    return out


@settings(max_examples=25)
@given(data=st.data(), currency=st.sampled_from(CURRENCIES))
def test_round_trip_transaction_detail(tmp_path: Path, con: Any, data: st.DataObject, currency: str) -> None:
    name, meta = data.draw(names("transaction_detail", currency))
    summary = summary_figures(data.draw, "netSettlementAmountValue", "settlementCurrency", currency)
    summary.update(netTransactionAmountValue=data.draw(st.none() | amounts), transactionCurrency="JPY")
    rows: list[dict[str, Any]] = []
    expected: list[dict[str, Any]] = []
    for i in range(data.draw(st.integers(0, 6))):
        kind = data.draw(st.sampled_from(["PAYMENT", "REFUND"]))
        when = data.draw(stamps())
        txn_currency = data.draw(st.sampled_from(CURRENCIES))
        row: dict[str, Any] = {"clearingBatchId": data.draw(st.none() | digits), "transactionId": data.draw(ids),
               "originalTransactionId": data.draw(st.none() | ids), "transactionRequestId": data.draw(ids),
               "originalTransactionRequestId": data.draw(st.none() | ids), "transactionType": kind,
               "transactionTime": when, "transactionAmountValue": data.draw(amounts),
               "transactionCurrency": txn_currency, "settlementAmountValue": data.draw(amounts),
               "settlementCurrency": data.draw(st.sampled_from([currency, None])),
               "quoteCurrencyPair": f"{txn_currency}/{currency}",
               "quotePrice": data.draw(st.decimals(Decimal("0.000001"), Decimal("99999"), places=6)),
               "pspId": data.draw(st.none() | ids), "acquirerId": data.draw(st.none() | ids),
               "referenceMerchantId": data.draw(st.none() | ids)}
        rows.append(row)
        sign = 1 if kind == "PAYMENT" else -1  # transaction sense: refunds negative
        expected.append({
            "record_type": kind, "raw_type": kind, "account_id": meta["participant_id"],
            "provider_txn_id": row["transactionId"], "original_provider_txn_id": row["originalTransactionId"],
            "merchant_ref_id": row["transactionRequestId"],
            "original_merchant_ref_id": row["originalTransactionRequestId"], "status": "SUCCESS",
            "amount_minor": sign * row["transactionAmountValue"], "amount_currency": txn_currency,
            "settlement_minor": sign * row["settlementAmountValue"], "settlement_currency": currency,
            "occurred_at": when.utc, "occurred_offset_min": when.offset_minutes,
            "fx_pair": row["quoteCurrencyPair"], "fx_rate": row["quotePrice"],
            "clearing_batch_id": row["clearingBatchId"] or meta["batch_id"], "line_no": 5 + i,
            "extras": {k: row[k] for k in ("pspId", "acquirerId", "referenceMerchantId") if row[k] is not None}})
    parsed = parse(ap.TRANSACTION_DETAIL, tmp_path / name,
                   ap.write_report("transaction_detail", rows=rows, summary=summary), con)
    assert parsed.ok, codes(parsed)
    assert parsed.meta == meta
    assert lines_of(parsed, list(expected[0]) if expected else ["line_no"]) == expected
    batch, direction = meta["batch_id"], DIRECTION[summary["fundDirection"]]
    want = {("summary", "count", summary["totalCount"], None, None, batch, 2),
            ("summary", "settlement", summary["netSettlementAmountValue"], currency, direction, batch, 2)}
    if summary["netTransactionAmountValue"] is not None:
        want.add(("summary", "amount", summary["netTransactionAmountValue"], "JPY", direction, batch, 2))
    assert declared(parsed) == want
    parsed.close()


@settings(max_examples=25)
@given(data=st.data(), currency=st.sampled_from(CURRENCIES))
def test_round_trip_fee(tmp_path: Path, con: Any, data: st.DataObject, currency: str) -> None:
    name, meta = data.draw(names("fee", currency))
    summary = summary_figures(data.draw, "netFeeAmountValue", "feeCurrency", currency)
    rows: list[dict[str, Any]] = []
    expected: list[dict[str, Any]] = []
    for i in range(data.draw(st.integers(0, 6))):
        direction = data.draw(directions)
        row: dict[str, Any] = {"clearingBatchId": data.draw(st.none() | digits), "feeId": data.draw(st.none() | ids),
               "transactionId": data.draw(ids),
               "feeType": data.draw(st.sampled_from(["INTERCHANGE_FEE", "SERVICE_FEE"])),
               "feeAmountValue": data.draw(amounts), "feeCurrency": data.draw(st.sampled_from([currency, None])),
               "fundDirection": direction}
        rows.append(row)
        expected.append({
            "record_type": "FEE", "raw_type": row["feeType"], "account_id": meta["participant_id"],
            "provider_txn_id": row["transactionId"],
            "fee_minor": PARTICIPANT_SIGN[DIRECTION[direction]] * row["feeAmountValue"], "fee_currency": currency,
            "settlement_minor": None, "clearing_batch_id": row["clearingBatchId"] or meta["batch_id"],
            "line_no": 5 + i, "extras": {"feeId": row["feeId"]} if row["feeId"] is not None else {}})
    parsed = parse(ap.FEE, tmp_path / name, ap.write_report("fee", rows=rows, summary=summary), con)
    assert parsed.ok, codes(parsed)
    assert parsed.meta == meta
    assert lines_of(parsed, list(expected[0]) if expected else ["line_no"]) == expected
    batch = meta["batch_id"]
    assert declared(parsed) == {
        ("summary", "count", summary["totalCount"], None, None, batch, 2),
        ("summary", "fee", summary["netFeeAmountValue"], currency, DIRECTION[summary["fundDirection"]], batch, 2)}
    parsed.close()


@settings(max_examples=25)
@given(data=st.data(), currency=st.sampled_from(CURRENCIES))
def test_round_trip_settlement(tmp_path: Path, con: Any, data: st.DataObject, currency: str) -> None:
    name, meta = data.draw(names("settlement", currency))
    summary = summary_figures(data.draw, "netSettlementAmountValue", "settlementCurrency", currency)
    value_date = data.draw(st.dates(date(2000, 1, 1), date(2099, 12, 31)))
    summary.update(settlementBatchId=data.draw(st.none() | digits), participantAgreementId=meta["agreement_id"],
                   valueDate=value_date)
    rows: list[dict[str, Any]] = []
    expected: list[dict[str, Any]] = []
    for i in range(data.draw(st.integers(0, 6))):
        direction = data.draw(directions)
        row: dict[str, Any] = {"clearingBatchId": data.draw(digits),
               "clearingDate": data.draw(st.none() | st.dates(date(2000, 1, 1), date(2099, 12, 31))),
               "netSettlementAmountValue": data.draw(amounts),
               "settlementCurrency": data.draw(st.sampled_from([currency, None])), "fundDirection": direction}
        rows.append(row)
        expected.append({
            "record_type": "CLEARING_BATCH", "account_id": meta["participant_id"],
            "clearing_batch_id": row["clearingBatchId"],
            "settlement_minor": PARTICIPANT_SIGN[DIRECTION[direction]] * row["netSettlementAmountValue"],
            "settlement_currency": currency,
            "settlement_batch_id": summary["settlementBatchId"] or meta["batch_id"], "line_no": 5 + i,
            "extras": {"clearingDate": row["clearingDate"].isoformat()} if row["clearingDate"] else {}})
    parsed = parse(ap.SETTLEMENT, tmp_path / name, ap.write_report("settlement", rows=rows, summary=summary), con)
    assert parsed.ok, codes(parsed)
    assert parsed.meta == {**meta, "value_date": value_date.isoformat()}
    assert parsed.sections["summary"][0]["value_date"] == value_date
    assert lines_of(parsed, list(expected[0]) if expected else ["line_no"]) == expected
    batch = summary["settlementBatchId"] or meta["batch_id"]
    assert declared(parsed) == {
        ("summary", "count", summary["totalCount"], None, None, batch, 2),
        ("summary", "settlement", summary["netSettlementAmountValue"], currency,
         DIRECTION[summary["fundDirection"]], batch, 2)}
    parsed.close()


@settings(max_examples=25)
@given(data=st.data(), currency=st.sampled_from(CURRENCIES))
def test_round_trip_transaction_summary(tmp_path: Path, con: Any, data: st.DataObject, currency: str) -> None:
    name, meta = data.draw(names("transaction_summary", currency))
    txn_currency = data.draw(st.none() | st.sampled_from(CURRENCIES))
    day = data.draw(st.dates(date(2000, 1, 1), date(2099, 12, 31)))
    row: dict[str, Any] = {
        "clearingBatchId": meta["batch_id"], "clearingDate": day, "totalCount": data.draw(st.integers(0, 10**6)),
        "fundDirection": data.draw(directions), "settlementCurrency": currency,
        "netSettlementAmountValue": data.draw(amounts), "transactionCurrency": txn_currency,
        "netTransactionAmountValue": data.draw(amounts) if txn_currency else None,
        "extendInfo": data.draw(st.none() | ids)}
    parsed = parse(ap.TRANSACTION_SUMMARY, tmp_path / name,
                   ap.write_report("transaction_summary", rows=[row], trailer=data.draw(st.booleans())), con)
    assert parsed.ok, codes(parsed)
    direction = DIRECTION[row["fundDirection"]]
    sign = PARTICIPANT_SIGN[direction]
    assert lines_of(parsed, ["record_type", "settlement_minor", "settlement_currency", "amount_minor",
                             "amount_currency", "clearing_batch_id", "account_id", "line_no"]) == [{
        "record_type": "CLEARING_BATCH", "settlement_minor": sign * row["netSettlementAmountValue"],
        "settlement_currency": currency,
        "amount_minor": sign * row["netTransactionAmountValue"] if txn_currency else None,
        "amount_currency": txn_currency, "clearing_batch_id": meta["batch_id"],
        "account_id": meta["participant_id"], "line_no": 2}]
    want = {("summary", "count", row["totalCount"], None, None, meta["batch_id"], 2),
            ("summary", "settlement", row["netSettlementAmountValue"], currency, direction, meta["batch_id"], 2)}
    if txn_currency:
        want.add(("summary", "amount", row["netTransactionAmountValue"], txn_currency, direction, meta["batch_id"],
                  2))
    assert declared(parsed) == want
    assert parsed.sections["summary"][0]["extendInfo"] == row["extendInfo"]
    assert parsed.sections["summary"][0]["clearing_date"] == day
    parsed.close()


# ---------------------------------------------------------------------------------------------
# File names (spec 4)


def test_file_name_fields_incl_30_digit_agreement() -> None:
    name = "summary_A1234567890_EUR_202201101107957472_202109171107900901003800022697_000.csv"
    assert ap.TRANSACTION_SUMMARY.name_meta(name) == {
        "participant_id": "A1234567890", "currency": "EUR", "batch_id": "202201101107957472",
        "agreement_id": "202109171107900901003800022697", "seq": "000"}
    # ids stay opaque text: leading zeros survive
    assert ap.FEE.name_meta("feeItems_P_JPY_000123_0042_999.csv") == {
        "participant_id": "P", "currency": "JPY", "batch_id": "000123", "agreement_id": "0042", "seq": "999"}
    # an underscore inside the participant id: anchored on the currency and the seq (spec 4)
    assert ap.SETTLEMENT.name_meta("settlement_MY_P2_USD_S1_20210001_007.csv") == {
        "participant_id": "MY_P2", "currency": "USD", "batch_id": "S1", "agreement_id": "20210001", "seq": "007"}


@pytest.mark.parametrize("name", [
    "summary_A1_EUR_B_AG_00.csv",  # 2-digit seq
    "summary_A1_eur_B_AG_000.csv",  # currency not upper case
    "summary_A1_EUR_B_000.csv",  # agreement id missing
    "summary_A1_EUR_B_AG_000.txt",
    "transactionItems_20220419_000.csv",  # an Antom merchant file (spec 16)
])
def test_file_name_rejects(name: str) -> None:
    assert all(r.name_meta(name) is None for r in ap.REPORTS)


def test_file_name_writer() -> None:
    name = ap.file_name("transaction_detail", participant_id="A1", currency="USD", batch_id="202204190000200000",
                        agreement_id="20210001", seq=12)
    assert name == "transactionItems_A1_USD_202204190000200000_20210001_012.csv"
    for bad in ({"seq": 1000}, {"seq": -1}, {"batch_id": "a_b"}, {"currency": "usd"}):
        kwargs: dict[str, Any] = {"participant_id": "A1", "currency": "USD", "batch_id": "B", "agreement_id": "G"}
        with pytest.raises(ValueError):
            ap.file_name("fee", **{**kwargs, **bad})


# ---------------------------------------------------------------------------------------------
# Detection by the registry (name + header, header alone)

SAMPLES = {
    "transaction_detail": ({"totalCount": 1, "netSettlementAmountValue": 5, "settlementCurrency": "USD",
                            "fundDirection": "DEBIT"},
                           [{"transactionType": "PAYMENT", "transactionTime": datetime(2022, 4, 19, tzinfo=UTC),
                             "settlementAmountValue": 5, "settlementCurrency": "USD"}]),
    "fee": ({"totalCount": 1, "netFeeAmountValue": 5, "feeCurrency": "USD", "fundDirection": "DEBIT"},
            [{"feeType": "SERVICE_FEE", "feeAmountValue": 5, "feeCurrency": "USD", "fundDirection": "DEBIT"}]),
    "settlement": ({"valueDate": date(2022, 4, 21), "netSettlementAmountValue": 5, "settlementCurrency": "USD",
                    "fundDirection": "DEBIT"},
                   [{"clearingBatchId": "B", "netSettlementAmountValue": 5, "settlementCurrency": "USD",
                     "fundDirection": "DEBIT"}]),
    "transaction_summary": (None, [{"clearingBatchId": "B", "clearingDate": "2022-04-19", "totalCount": 1,
                                    "fundDirection": "DEBIT", "settlementCurrency": "USD",
                                    "netSettlementAmountValue": 5}]),
}


@pytest.mark.parametrize("report", sorted(SAMPLES))
def test_detection_by_name_and_header_and_header_alone(tmp_path: Path, con: Any, report: str) -> None:
    summary, rows = SAMPLES[report]
    data = ap.write_report(report, rows=rows, summary=summary)
    name = ap.file_name(report, participant_id="P", currency="USD", batch_id="B", agreement_id="G", seq=3)
    (tmp_path / name).write_bytes(data)
    assert detect(tmp_path / name, reports=ap.REPORTS).report == report
    (tmp_path / "download (1).csv").write_bytes(data)
    found = detect(tmp_path / "download (1).csv", reports=ap.REPORTS)
    assert found.report == report
    parsed = found.parse(tmp_path / "download (1).csv", con)
    assert parsed.ok and parsed.row_count == 1, codes(parsed)


def test_detection_rejects_unknown_header(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_bytes(b"foo,bar\n1,2\n")
    with pytest.raises(errors.UnknownFormat):
        detect(tmp_path / "x.csv", reports=ap.REPORTS)


# ---------------------------------------------------------------------------------------------
# Header aliases: the unverified names are correctable without code (spec 6.5)

ALIASED = (b"totalCount,netAmountValue,settlementCurrency,fundDirection\n1,700,USD,DEBIT\n\n"
           b"transactionType,txnTime,settleAmt\nREFUND,2022-04-19 23:59:59,700\n")


def test_header_aliases(tmp_path: Path, con: Any) -> None:
    path = tmp_path / "transactionItems_P_USD_B_G_000.csv"
    assert not parse(ap.TRANSACTION_DETAIL, path, ALIASED, con).ok  # the renamed header opens no section
    options = ParseOptions(aliases={"alipayplus.transaction_detail": {
        "transactionTime": ["txnTime"], "settlementAmountValue": ["settleAmt"],
        "netSettlementAmountValue": ["netAmountValue"]}})
    parsed = parse(ap.TRANSACTION_DETAIL, path, ALIASED, con, options)
    assert parsed.ok, codes(parsed)
    [line] = parsed.lines_arrow().to_pylist()
    assert (line["settlement_minor"], line["occurred_at"], line["line_no"]) == (
        -700, datetime(2022, 4, 19, 15, 59, 59, tzinfo=UTC), 5)  # no offset written: UTC+8 (spec 8)
    assert ("summary", "settlement", 700, "USD", "DEBIT", "B", 2) in declared(parsed)


def test_unknown_column_in_a_detail_header_is_kept(tmp_path: Path, con: Any) -> None:
    """A provider column we do not know yet must not turn the header into a data row (spec 6.6 rule 3)."""
    text = (b"totalCount,netSettlementAmountValue,settlementCurrency,fundDirection\n1,700,USD,DEBIT\n\n"
            b"transactionType,transactionTime,settlementAmountValue,brandNewColumn\n"
            b"PAYMENT,2022-04-19 23:59:59,700,xyz\n")
    parsed = parse(ap.TRANSACTION_DETAIL, tmp_path / "transactionItems_P_USD_B_G_000.csv", text, con)
    assert parsed.ok, codes(parsed)
    [line] = parsed.lines_arrow().to_pylist()
    extras = extras_dict(line["extras"], parsed.extras_names)
    assert (line["settlement_minor"], line["line_no"], extras) == (700, 5, {"brandNewColumn": "xyz"})


# ---------------------------------------------------------------------------------------------
# Bad input specific to sections (spec 5) and to the sign convention

SUMMARY = "totalCount,netSettlementAmountValue,settlementCurrency,fundDirection\n1,5,USD,DEBIT\n"
DETAIL = "transactionType,transactionTime,settlementAmountValue\n"
NAME = "transactionItems_P_USD_B_G_000.csv"


@pytest.mark.parametrize(("text", "expected"), [
    (DETAIL + "PAYMENT,2022-04-19 10:00:00,5\n", [("bad_section", 1, None)]),  # summary section missing
    ("a,b\n" + SUMMARY + "\n" + DETAIL, [("bad_section", 1, None), ("bad_section", 1, None)]),  # record first
    (SUMMARY + "2,9,USD,DEBIT\n\n" + DETAIL, [("bad_section", 3, None)]),  # summary with two rows
    (SUMMARY + "\n" + DETAIL + "PAYMENT,2022-04-19 10:00:00,5\nREFUND,2022-04-19 10:00:00,5,9\n"
     "REFUND,2022-04-19 10:00:00\n", [("wrong_column_count", 6, 4), ("wrong_column_count", 7, 3)]),
    (SUMMARY + "\n" + DETAIL + "PAYMENT,2022-04-19 10:00:00,-5\n", [("bad_number", 5, 3)]),  # minus under by_type
    (SUMMARY + "\n" + DETAIL + "CANCEL,2022-04-19 10:00:00,5\n", [("bad_value", 5, 1)]),  # cannot be signed
    (SUMMARY.replace("1,5", "1,-5") + "\n" + DETAIL, [("bad_number", 2, 2)]),
])
def test_bad_sections(tmp_path: Path, con: Any, text: str, expected: list[tuple[str, int, int | None]]) -> None:
    parsed = parse(ap.TRANSACTION_DETAIL, tmp_path / NAME, text.encode(), con)
    assert codes(parsed) == expected
    assert all(p.file == NAME for p in parsed.problems)


def test_as_written_sign_convention(tmp_path: Path, con: Any) -> None:
    rows = "REFUND,2022-04-19 10:00:00,-5\nPAYMENT,2022-04-19 10:00:00,5\n"
    text = SUMMARY.replace("1,5", "1,-5") + "\n" + DETAIL + rows
    options = ParseConfig(amount_signs={"alipayplus.transaction_detail": "as_written"}).to_options()
    parsed = parse(ap.TRANSACTION_DETAIL, tmp_path / NAME, text.encode(), con, options)
    assert parsed.ok, codes(parsed)
    assert parsed.lines_arrow().column("settlement_minor").to_pylist() == [-5, 5]
    assert {(d.figure, d.value) for d in parsed.declared} == {("count", 1), ("settlement", -5)}
    with pytest.raises(errors.ConfigError):
        ap.TRANSACTION_DETAIL.parse(tmp_path / NAME, con,
                                    ParseOptions(amount_signs={"alipayplus.transaction_detail": "signed"}))


def test_fee_and_settlement_negative_amounts_are_errors(tmp_path: Path, con: Any) -> None:
    fee = ap.write_report("fee", summary=EMPTY_SUMMARIES["fee"],
                          rows=[{"feeAmountValue": "-3", "fundDirection": "CREDIT"}])
    assert codes(parse(ap.FEE, tmp_path / "feeItems_P_USD_B_G_000.csv", fee, con)) == [("bad_number", 5, 5)]
    sr = ap.write_report("settlement", summary=EMPTY_SUMMARIES["settlement"],
                         rows=[{"clearingBatchId": "B", "netSettlementAmountValue": 3, "fundDirection": "X"}])
    assert codes(parse(ap.SETTLEMENT, tmp_path / "settlement_P_USD_S_G_000.csv", sr, con)) == [("bad_value", 5, 5)]


def test_unreadable_value_date_is_kept_with_a_warning(tmp_path: Path, con: Any) -> None:
    summary = {**EMPTY_SUMMARIES["settlement"], "valueDate": "21/04/2022"}
    parsed = parse(ap.SETTLEMENT, tmp_path / "settlement_P_USD_S_G_000.csv",
                   ap.write_report("settlement", rows=[], summary=summary), con)
    assert parsed.ok
    assert [(p.code, p.severity, p.line, p.column) for p in parsed.problems] == [
        ("bad_date", "warning", 2, "valueDate")]
    assert parsed.sections["summary"][0]["valueDate"] == "21/04/2022"
    assert parsed.sections["summary"][0]["value_date"] is None and "value_date" not in parsed.meta


def test_timestamp_written_iso_with_offset_and_read_plain(tmp_path: Path, con: Any) -> None:
    when = Stamp(datetime(2022, 4, 19, 15, 59, 59, tzinfo=UTC), 480)
    data = ap.write_report("transaction_detail", summary=SAMPLES["transaction_detail"][0],
                           rows=[{"transactionType": "PAYMENT", "transactionTime": when, "settlementAmountValue": 1}])
    assert b",2022-04-19T23:59:59+08:00," in data
    plain = data.replace(b"2022-04-19T23:59:59+08:00", b"2022-04-19 23:59:59")
    parsed = parse(ap.TRANSACTION_DETAIL, tmp_path / NAME, plain, con)
    [line] = parsed.lines_arrow().to_pylist()
    assert line["occurred_at"] == when.utc and line["occurred_at"] + timedelta(hours=8) == datetime(
        2022, 4, 19, 23, 59, 59, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# Only documented columns (and what the signs need) are required (spec 6.5, 6.6)


def test_required_columns_are_documented_or_sign_bearing() -> None:
    def required(sections: Any) -> dict[str, set[str]]:
        return {s.name: {c.name for c in s.layout.columns if c.required} for s in sections}

    assert required(ap.TRANSACTION_DETAIL.sections) == {
        "summary": {"totalCount"}, "detail": {"transactionTime", "settlementAmountValue", "transactionType"}}
    assert required(ap.TRANSACTION_DETAIL.as_written)["detail"] == {"transactionTime", "settlementAmountValue"}
    assert required(ap.FEE.sections) == {"summary": {"totalCount"}, "detail": {"feeAmountValue", "fundDirection"}}
    assert required(ap.SETTLEMENT.sections) == {
        "summary": {"valueDate"}, "detail": {"clearingBatchId", "netSettlementAmountValue", "fundDirection"}}
    # spec 6.2-6.4: the only names a source confirms; every other name must be marked unverified (6.5)
    documented = {("transaction_detail", "summary"): {"totalCount"},
                  ("transaction_detail", "detail"): {"transactionTime", "settlementAmountValue"},
                  ("fee", "summary"): {"totalCount"}, ("settlement", "summary"): {"valueDate"}}
    for report in (ap.TRANSACTION_DETAIL, ap.FEE, ap.SETTLEMENT):
        for section in report.sections:
            names = {c.name for c in section.layout.columns}
            confirmed = documented.get((report.report, section.name), set())
            assert set(ap.UNVERIFIED_COLUMNS[report.report][section.name]) == names - confirmed
