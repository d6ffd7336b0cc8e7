"""Antom reports: the documented samples, a writer/reader round trip per report x generation x format,
file names, detection, summary figures, the amount unit and ``null`` cells.

Expected values come from the spec (antom.md), not from the implementation: the round trip derives each
canonical field from the provider row by the mapping the spec and the brief state.
"""

from __future__ import annotations

import string
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from alirecon import errors
from alirecon.clock import Stamp
from alirecon.formats import antom, registry
from alirecon.formats.engine import Kind, ParsedFile, ParseOptions, extras_dict

TX, SD, SS = "transaction_detail", "settlement_detail", "settlement_summary"
REPORT = {TX: antom.TRANSACTION_DETAIL, SD: antom.SETTLEMENT_DETAIL, SS: antom.SETTLEMENT_SUMMARY}
NAMES = {
    TX: "transactionItems_20181225_000",
    SD: "settlementItems_KaKaoPay_USD_2018122611021040123_000",
    SS: "settlementSummary_KaKaoPay_USD_2018122611021040123_000",
}
UTC8 = timezone(timedelta(hours=8))

# antom.md 6.4: the documented 2018 transaction header and its refund row
TX_2018_HEADER = (
    "customerId,referenceMerchantId,referenceStoreId,transactionId,originalTransactionId,transactionRequestId,"
    "referenceTransactionId,orderDescription,paymentMethodType,pspName,transactionType,paymentTime,productCode,"
    "transactionAmountValue,transactionCurrency"
)
TX_2018_REFUND = (
    "1022188000000000001,,,2018122519074102000000000041675,2018122519074101000000000112612,20190326L648423000404,"
    ",,KAKAOPAY,KaKaoPay,REFUND,2018-12-25T10:00:00+08:30,AGREEMENT_PAYMENT,-9000,KRW"
)
# antom.md 6.4: the documented 2023 summary header and its PAYMENT row
SS_2023_HEADER = (
    "settlementBatchId,customerId,acquirer,summaryType,settlementTime,count,settlementAmountValue,settlementCurrency,"
    "feeAmountValue,feeCurrency,processingFeeAmountValue,processingFeeCurrency,nonGuaranteeCouponValue,"
    "nonGuaranteeCouponCurrency,disputeHandlingFee,disputeHandlingFeeCurrency,disputeReverseFee,"
    "disputeReverseFeeCurrency,interchangeFeeAmountValue,interchangeFeeCurrency,schemeFeeAmountValue,"
    "schemeFeeCurrency,acquirerMarkupAmountValue,acquirerMarkupCurrency"
)
SS_2023_PAYMENT = (
    "2018122611021040123,1022188000000000001,Alipay_SG,PAYMENT,2018-12-26T10:00:00+08:30,1,1450,USD,-50,USD"
    ",,,,,,,,,,,,,,"
)


def parse(path: Path, data: bytes, report: str, con: Any = None, options: ParseOptions | None = None) -> ParsedFile:
    path.write_bytes(data)
    return REPORT[report].parse(path, con, options)


def problems(parsed: ParsedFile) -> list[tuple[str, int | None, str | None]]:
    return [(p.code, p.line, p.column) for p in parsed.problems]


# ---------------------------------------------------------------------------------------------
# Documented samples


def test_2018_transaction_sample_refund(tmp_path: Path, con: Any) -> None:
    data = f"{TX_2018_HEADER}\n{TX_2018_REFUND}\n<END>\n".encode()
    parsed = parse(tmp_path / "transactionItems_20181225_000.csv", data, TX, con)
    assert parsed.ok, problems(parsed)
    assert parsed.variant == "v1"  # the 2018 header has no acquirer column and must still parse as v1
    assert parsed.meta == {"date": "20181225", "seq": "000"}
    [line] = parsed.lines_arrow().to_pylist()
    assert line["record_type"] == "REFUND"
    assert line["raw_type"] == "REFUND"
    assert (line["amount_minor"], line["amount_currency"]) == (-9000, "KRW")  # KRW has no decimals
    assert line["occurred_at"] == datetime(2018, 12, 25, 1, 30, tzinfo=UTC)
    assert line["occurred_offset_min"] == 8 * 60 + 30
    assert line["account_id"] == "1022188000000000001"
    assert line["provider_txn_id"] == "2018122519074102000000000041675"
    assert line["original_provider_txn_id"] == "2018122519074101000000000112612"
    assert line["merchant_ref_id"] == "20190326L648423000404"
    assert line["order_id"] is None and line["status"] is None and line["settlement_minor"] is None
    assert line["line_no"] == 2
    assert extras_dict(line["extras"], parsed.extras_names) == {"paymentMethodType": "KAKAOPAY", "pspName": "KaKaoPay",
                                    "productCode": "AGREEMENT_PAYMENT"}


@pytest.mark.parametrize(("unit", "settlement", "fee"), [("minor", 1450, -50), ("major", 145000, -5000)])
def test_2023_summary_sample_in_both_units(tmp_path: Path, con: Any, unit: str, settlement: int, fee: int) -> None:
    data = f"{SS_2023_HEADER}\n{SS_2023_PAYMENT}\n<END>\n".encode()
    options = ParseOptions(amount_units={"antom.settlement_summary": unit})
    parsed = parse(tmp_path / "settlementSummary_USD_2018122611021040123_000.csv", data, SS, con, options)
    assert parsed.ok, problems(parsed)
    [line] = parsed.lines_arrow().to_pylist()
    assert (line["record_type"], line["settlement_batch_id"]) == ("PAYMENT", "2018122611021040123")
    assert (line["settlement_minor"], line["settlement_currency"]) == (settlement, "USD")
    assert (line["fee_minor"], line["fee_currency"]) == (fee, "USD")  # signs as written (antom.md 9)
    assert line["settled_at"] == datetime(2018, 12, 26, 1, 30, tzinfo=UTC)
    batch = "2018122611021040123"
    assert {(d.scope, d.figure, d.value, d.currency, d.batch_id, d.line_no) for d in parsed.declared} == {
        ("PAYMENT", "count", 1, None, batch, 2),
        ("PAYMENT", "settlement", settlement, "USD", batch, 2),
        ("PAYMENT", "fee", fee, "USD", batch, 2),
    }


def test_default_unit_is_major(tmp_path: Path, con: Any) -> None:
    data = f"{SS_2023_HEADER}\n{SS_2023_PAYMENT.replace(',1450,', ',14.50,').replace(',-50,', ',-0.50,')}\n<END>\n"
    parsed = parse(tmp_path / "s.csv", data.encode(), SS, con)
    assert parsed.ok, problems(parsed)
    [line] = parsed.lines_arrow().to_pylist()
    assert (line["settlement_minor"], line["fee_minor"]) == (1450, -50)


def test_minor_unit_rejects_decimals(tmp_path: Path, con: Any) -> None:
    data = f"{SS_2023_HEADER}\n{SS_2023_PAYMENT.replace(',1450,', ',14.50,')}\n<END>\n".encode()
    parsed = parse(tmp_path / "s.csv", data, SS, con, ParseOptions(amount_units={"antom.settlement_summary": "minor"}))
    assert problems(parsed) == [("bad_number", 2, "settlementAmountValue")]


# ---------------------------------------------------------------------------------------------
# Round trip: random valid rows -> write -> parse -> the canonical lines and the same bytes

CURRENCIES = ("JPY", "USD", "KWD", "KRW", "EUR")
OFFSETS = (-600, -330, 0, 330, 480, 510, 525, 840)
TEXT = string.ascii_letters + string.digits + "_."


def _ok_text(text: str) -> bool:
    # a leading =, @, +x or -x is a spreadsheet formula (an error); "null" is an empty cell (antom.md 4)
    return text != "null" and not (text[:1] in "=@\t\r" or (text[:1] in "+-" and text[1:2] not in "0123456789."))


ids = st.text(TEXT, min_size=1, max_size=24).filter(_ok_text)
descriptions = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "Zs"), include_characters=',"\n\r'),
                       min_size=1, max_size=40).filter(_ok_text)
stamps = st.builds(lambda moment, offset: Stamp(moment, offset),
                   st.datetimes(datetime(2001, 1, 1), datetime(2035, 1, 1), timezones=st.just(UTC)),
                   st.sampled_from(OFFSETS))
amounts = st.integers(-10**11, 10**11)
prices = st.builds(lambda digits, places: Decimal(digits).scaleb(-places), st.integers(1, 10**9), st.integers(0, 8))


@st.composite
def provider_row(draw: st.DrawFn, report: str, variant: str) -> dict[str, Any]:
    layout = antom.layout_of(report, variant)
    header = antom.HEADERS[(report, variant)]
    cols = {c.name: c for c in layout.columns}
    types = antom.TYPES_V1 if variant == "v1" else antom.TYPES_V2
    row: dict[str, Any] = {}
    for name in header:
        col = cols[name]
        if name == "transactionType":  # mandatory, any case (compared case-insensitively, antom.md 8)
            row[name] = draw(st.sampled_from(types).map(lambda t: t.lower()) | st.sampled_from(types))
            continue
        if name == "settlementBatchId" and report != TX:  # M String(64) (antom.md 6.1 #1)
            row[name] = draw(ids)
            continue
        if not draw(st.booleans()):
            continue
        if name == "summaryType":
            value: Any = draw(st.sampled_from((*types, "TOTAL")))
        elif name == "status":
            value = draw(st.sampled_from(("SUCCESS", "success", "FAIL", "PROCESSING")))
        elif name == "orderDescription":
            value = draw(descriptions)
        elif name == "settlementInitiatedDate":
            value = draw(stamps | st.dates(date(2001, 1, 1), date(2035, 1, 1)))
        elif col.kind is Kind.AMOUNT:
            value = draw(amounts)
        elif col.kind is Kind.CURRENCY:
            value = draw(st.sampled_from(CURRENCIES))
        elif col.kind is Kind.TIMESTAMP:
            value = draw(stamps)
        elif col.kind is Kind.INTEGER:
            value = draw(st.integers(0, 10**6))
        elif col.kind is Kind.DECIMAL:
            value = draw(prices)
        else:
            value = draw(ids)
        row[name] = value
    for name in header:  # every amount needs a currency: its own column, else the settlement currency
        col = cols[name]
        if col.kind is Kind.AMOUNT and name in row and not any(row.get(c) for c in col.currency):
            row[col.currency[0]] = draw(st.sampled_from(CURRENCIES))
    return row


def _utc(value: Stamp | date | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, Stamp):
        moment: datetime = value.utc
        return moment
    return datetime.combine(value, time(0), UTC8).astimezone(UTC)  # a bare date: midnight UTC+8 [inferred]


def _offset(value: Stamp | date | None) -> int | None:
    if value is None:
        return None
    return value.offset_minutes if isinstance(value, Stamp) else 480


def expected_line(report: str, variant: str, row: dict[str, Any]) -> dict[str, Any]:
    """The canonical fields of one provider row, by the mapping of the brief / antom.md."""
    get = row.get
    kind = "summaryType" if report == SS else "transactionType"
    out: dict[str, Any] = {
        "family": "antom", "report": report,
        "record_type": str(get(kind)).upper() if get(kind) else None, "raw_type": get(kind),
        "account_id": get("customerId"), "settlement_batch_id": get("settlementBatchId"),
        "provider_txn_id": get("transactionId"), "merchant_ref_id": get("transactionRequestId"),
        "order_id": get("referenceTransactionId"), "original_provider_txn_id": get("originalTransactionId"),
        "original_merchant_ref_id": get("originalTransactionRequestId"),
        "amount_minor": get("transactionAmountValue"), "amount_currency": get("transactionCurrency"),
        "settlement_minor": get("settlementAmountValue"), "settlement_currency": get("settlementCurrency"),
        "status": str(get("status")).upper() if get("status") else None,
        "fx_rate": get("quotePrice"), "fx_pair": get("quoteCurrencyPair"),
        "clearing_batch_id": None,
    }
    settle = get("settlementCurrency")
    if variant == "v1":
        fee = get("feeAmountValue")
        out["fee_minor"] = fee
        out["fee_currency"] = (get("feeCurrency") or settle) if fee is not None else None
        occurred, settled = get("paymentTime"), get("settlementTime")
    else:
        present = [(get(a), get(c) or settle) for a, c in antom.FEES_V2 if get(a) is not None]
        currencies = {c for _, c in present}
        single = len(currencies) == 1  # a sum across currencies would be wrong: NULL
        out["fee_minor"] = sum(v for v, _ in present) if single else None
        out["fee_currency"] = currencies.pop() if single else None
        occurred = get("transactionCompletionTime") or get("transactionCreationTime")
        settled = get("settlementInitiatedDate")
    out |= {"occurred_at": _utc(occurred), "occurred_offset_min": _offset(occurred),
            "settled_at": _utc(settled), "settled_offset_min": _offset(settled)}
    return out


def _present(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is not None}


def check_round_trip(tmp_path: Path, con: Any, report: str, variant: str, fmt: str,
                     rows: list[dict[str, Any]]) -> None:
    data = antom.write_report(report, rows, variant=variant, fmt=fmt)
    name = f"{NAMES[report]}.{fmt}"
    with parse(tmp_path / name, data, report, con) as parsed:
        assert parsed.ok, problems(parsed)
        assert parsed.variant == variant
        lines = parsed.lines_arrow().to_pylist()
        assert len(lines) == len(rows)
        line_no = 2
        for row, line in zip(rows, lines, strict=True):
            assert line["line_no"] == line_no  # 1-based physical line (xlsx: sheet row)
            if fmt == "csv":  # a quoted LF inside a cell moves the next record down
                line_no += sum(v.count("\n") for v in row.values() if isinstance(v, str))
            line_no += 1
            for key, value in expected_line(report, variant, row).items():
                assert line[key] == value, (key, row)
            assert line["source_name"] == name
        # parse -> write gives the provider rows back, and the same bytes
        back = antom.provider_rows(parsed)
        assert [_present(r) for r in back] == [_present(r) for r in rows]
        assert antom.write_report(report, back, variant=variant, fmt=fmt) == data


GENERATIONS = [(report, variant) for report in (TX, SD, SS) for variant in ("v1", "v2")]


# Each parse plans a wide query (v2: ~70 columns, ~0.1 s) whatever the file size: few examples of
# several rows each, xlsx fewer than csv (it shares the SQL), and no shrinking.
EXAMPLES = {"csv": 8, "xlsx": 4}


@pytest.mark.parametrize(("report", "variant"), GENERATIONS)
@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_round_trip(tmp_path: Path, con: Any, report: str, variant: str, fmt: str) -> None:
    @settings(max_examples=EXAMPLES[fmt], phases=(Phase.explicit, Phase.reuse, Phase.generate))
    @given(rows=st.lists(provider_row(report, variant), min_size=1, max_size=4))
    def round_trip(rows: list[dict[str, Any]]) -> None:
        check_round_trip(tmp_path, con, report, variant, fmt, rows)

    round_trip()


@pytest.mark.parametrize("report", [TX, SD, SS])
def test_empty_report_is_valid(tmp_path: Path, con: Any, report: str) -> None:
    """No records: header + <END> only (antom.md 4, AN-10); an empty batch, not an error."""
    data = antom.write_report(report, [])
    assert data.count(b"\n") == 2
    with parse(tmp_path / f"{NAMES[report]}.csv", data, report, con) as parsed:
        assert parsed.ok and parsed.row_count == 0 and parsed.declared == []
        assert parsed.lines_arrow().num_rows == 0


def test_round_trip_edge_values(tmp_path: Path, con: Any) -> None:
    """Currency exponents 0/2/3, refunds, quotes, commas, LF, CR and CRLF in a cell, in one file."""
    moment = Stamp(datetime(2022, 4, 19, 15, 59, 59, 999000, tzinfo=UTC), 480)
    rows: list[dict[str, Any]] = [
        {"settlementBatchId": "B1", "transactionType": "PAYMENT", "transactionId": "T1", "transactionAmountValue": 1,
         "transactionCurrency": "KWD", "settlementAmountValue": -1, "settlementCurrency": "JPY", "paymentTime": moment},
        {"settlementBatchId": "B1", "transactionType": "refund", "transactionId": "T2",
         "transactionAmountValue": -123456789, "transactionCurrency": "USD", "settlementAmountValue": 0,
         "settlementCurrency": "USD", "feeAmountValue": 25, "taxFeeAmountValue": -3, "taxFeeCurrency": "KWD"},
        {"settlementBatchId": "B1", "transactionType": "PAYMENT", "transactionId": "T3",
         "acquirerReferenceNo": 'say "hi", then\nleave', "pspName": "a\rb", "productCode": "c\r\nd"},
    ]
    check_round_trip(tmp_path, con, SD, "v1", "csv", rows)
    data = antom.write_report(SD, rows, variant="v1")
    assert b",0.001,KWD,-1,JPY," in data and b",-1234567.89,USD,0.00,USD," in data


def test_v2_fees_in_two_currencies_have_no_total(tmp_path: Path, con: Any) -> None:
    row = {"settlementBatchId": "B", "transactionType": "PAYMENT", "transactionId": "T", "settlementAmountValue": 5,
           "settlementCurrency": "USD", "taxFeeAmountValue": 7, "schemeFeeAmountValue": 11, "schemeFeeCurrency": "EUR"}
    with parse(tmp_path / "d.csv", antom.write_report(SD, [row], variant="v2"), SD, con) as parsed:
        assert parsed.ok, problems(parsed)
        [line] = parsed.lines_arrow().to_pylist()
        assert (line["fee_minor"], line["fee_currency"]) == (None, None)
    row["schemeFeeCurrency"] = "USD"
    with parse(tmp_path / "d.csv", antom.write_report(SD, [row], variant="v2"), SD, con) as parsed:
        [line] = parsed.lines_arrow().to_pylist()
        assert (line["fee_minor"], line["fee_currency"]) == (18, "USD")


# ---------------------------------------------------------------------------------------------
# File names (antom.md 2.2, 3)

# The documentation masks digits with '*' (e.g. 202*************234); the examples here fill them in.
DOCUMENTED_NAMES = [
    ("transactionItems_20181225_000.csv", TX, {"date": "20181225", "seq": "000"}),
    ("transactionItems_KRW_000.csv", TX, {"currency": "KRW", "seq": "000"}),
    ("settlementItems_USD_2021234567890123234_000.csv", SD,
     {"currency": "USD", "batch_id": "2021234567890123234", "seq": "000"}),
    ("settlementSummary_USD_2021234567890123234_000.csv", SS,
     {"currency": "USD", "batch_id": "2021234567890123234", "seq": "000"}),
    ("settlementItems_KaKaoPay_USD_2018122611021040123_000.csv", SD,
     {"method": "KaKaoPay", "currency": "USD", "batch_id": "2018122611021040123", "seq": "000"}),
    ("settlementSummary_KaKaoPay_USD_2018122611021040123_000.csv", SS,
     {"method": "KaKaoPay", "currency": "USD", "batch_id": "2018122611021040123", "seq": "000"}),
    ("settlementSummary_KaKaoPay_USD_0000000000000000000_000.csv", SS,
     {"method": "KaKaoPay", "currency": "USD", "batch_id": "0000000000000000000", "seq": "000"}),
    ("settlementItems_CONNECTWALLET_SGD_2C2PXXXXXX0101_012.xlsx", SD,
     {"method": "CONNECTWALLET", "currency": "SGD", "batch_id": "2C2PXXXXXX0101", "seq": "012"}),
    ("settlementItems_GCash_PHP_77_999.csv", SD,
     {"method": "GCash", "currency": "PHP", "batch_id": "77", "seq": "999"}),
    ("settlementItems_ALIPAY_HK_HKD_5_001.csv", SD,
     {"method": "ALIPAY_HK", "currency": "HKD", "batch_id": "5", "seq": "001"}),
    ("SETTLEMENT_DETAIL_202604271985548486_20260428.xlsx", SD, {"date": "20260428"}),
    ("SETTLEMENT_SUMMARY_202604271985548486_20260428.xlsx", SS, {"date": "20260428"}),
    ("TRANSACTION_DETAIL_202604271985548486_20260428.xlsx", TX, {"date": "20260428"}),
]


@pytest.mark.parametrize(("name", "report", "meta"), DOCUMENTED_NAMES)
def test_documented_file_names(name: str, report: str, meta: dict[str, str]) -> None:
    assert REPORT[report].name_meta(name) == meta
    for other in {TX, SD, SS} - {report}:
        assert REPORT[other].name_meta(name) is None


@pytest.mark.parametrize("name", [
    "transactionItems_2018122_000.csv", "transactionItems_20181225_00.csv", "transactionItems_20181225_000.txt",
    "settlementItems_usd_1_000.csv", "settlementItems_USD_000.csv", "settlementItems_USD_B-1_000.csv",
    "settlementSummary_USD_1_000.pdf",
])
def test_names_that_fit_no_report(name: str) -> None:
    assert all(r.name_meta(name) is None for r in antom.REPORTS)


def test_file_name_writer() -> None:
    assert antom.file_name(TX, date=date(2018, 12, 25)) == "transactionItems_20181225_000.csv"
    assert antom.file_name(TX, currency="KRW", seq=3, ext="xlsx") == "transactionItems_KRW_003.xlsx"
    assert (antom.file_name(SD, currency="USD", batch_id="2018122611021040123", method="KaKaoPay")
            == "settlementItems_KaKaoPay_USD_2018122611021040123_000.csv")
    assert antom.file_name(SS, currency="USD", batch_id="2C2P01", seq=999) == "settlementSummary_USD_2C2P01_999.csv"
    with pytest.raises(ValueError):
        antom.file_name(TX)
    with pytest.raises(ValueError):
        antom.file_name(SD, currency="USD")
    with pytest.raises(ValueError):
        antom.file_name(SS, currency="USD", batch_id="B", seq=1000)
    with pytest.raises(ValueError):
        antom.file_name(SD, currency="usd", batch_id="B")  # would not read back


def test_name_fields_compare_currency_and_batch() -> None:
    expected = {"currency": "settlement_currency", "batch_id": "settlement_batch_id"}
    assert antom.SETTLEMENT_DETAIL.name_checks() == expected
    assert antom.SETTLEMENT_SUMMARY.name_checks() == expected
    assert antom.TRANSACTION_DETAIL.name_checks() == {}


# ---------------------------------------------------------------------------------------------
# Detection (antom.md 13.1)


@pytest.mark.parametrize(("report", "variant"), GENERATIONS)
def test_registry_detects_by_name_and_header_and_by_header_alone(tmp_path: Path, report: str, variant: str) -> None:
    data = antom.write_report(report, [], variant=variant)
    documented = tmp_path / f"{NAMES[report]}.csv"
    documented.write_bytes(data)
    assert registry.detect(documented) is REPORT[report]
    custom = tmp_path / "merchant_custom_report_name.csv"
    custom.write_bytes(data)
    assert registry.detect(custom) is REPORT[report]
    assert REPORT[report].identify(documented.name, [list(antom.HEADERS[(report, variant)])]) == 3
    assert REPORT[report].identify(custom.name, [list(antom.HEADERS[(report, variant)])]) == 2


def test_registry_detects_documented_headers(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(f"{TX_2018_HEADER}\n<END>\n")
    (tmp_path / "b.csv").write_text(f"{SS_2023_HEADER}\n<END>\n")
    assert registry.detect(tmp_path / "a.csv") is antom.TRANSACTION_DETAIL
    assert registry.detect(tmp_path / "b.csv") is antom.SETTLEMENT_SUMMARY


def test_header_beats_name(tmp_path: Path) -> None:
    """A documented sample carries a summary header under a settlementItems_ name (antom.md 3)."""
    path = tmp_path / "settlementItems_USD_2018122611021040123_000.csv"
    path.write_text(f"{SS_2023_HEADER}\n<END>\n")
    assert registry.detect(path) is antom.SETTLEMENT_SUMMARY


def test_unknown_header_is_not_antom(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b,c\n<END>\n")
    with pytest.raises(errors.UnknownFormat):
        registry.detect(path)


@pytest.mark.parametrize(("header", "expected"), [
    (["transactionId", "transactionType", "transactionRequestId"], (TX, "v1")),
    (["transactionId", "transactionType", "orderDescription", "settlementAmountValue"], (TX, "v1")),
    (["transactionId", "transactionType", "status", "settlementBatchId"], (TX, "v2")),
    (["transactionId", "transactionType", "transactionCreationTime"], (TX, "v2")),
    (["settlementBatchId", "transactionId", "transactionType", "settlementAmountValue"], (SD, "v1")),
    (["settlementBatchId", "transactionId", "transactionType", "acquirer", "settlementTime"], (SD, "v1")),
    (["settlementBatchId", "transactionId", "TRANSACTIONTYPE", "psp", "settlementAmountValue"], (SD, "v2")),
    (["settlementBatchId", "transactionType", "settlementInitiatedDate"], (SD, "v2")),
    (["settlementBatchId", "summaryType", "count", "settlementAmountValue"], (SS, "v1")),
    (["settlementBatchId", "count", "settlementAmountValue", "PSP"], (SS, "v2")),
    (["settlementBatchId", "count", "settlementInitiatedDate"], (SS, "v2")),
    (["count", "total"], (None, "v1")),
    (["pspName", "paymentTime"], (None, "v1")),
])
def test_classify_header(header: list[str], expected: tuple[str | None, str]) -> None:
    assert antom.classify_header(header) == expected


def test_missing_required_column_is_named(tmp_path: Path, con: Any) -> None:
    header = [h for h in antom.HEADERS[(SD, "v2")] if h != "settlementBatchId"]
    parsed = parse(tmp_path / "d.csv", antom.write_report(SD, [], variant="v2", header=header), SD, con)
    assert parsed.variant == "v2"
    assert problems(parsed) == [("missing_column", 1, "settlementBatchId")]


def test_columns_without_a_canonical_field_stay_in_extras(tmp_path: Path, con: Any) -> None:
    """Each fee column as written reaches the warehouse (which stores lines, not parse-time fields)."""
    row = {"settlementBatchId": "B", "transactionType": "PAYMENT", "transactionId": "T", "settlementAmountValue": 5,
           "settlementCurrency": "USD", "feeAmountValue": -4, "taxFeeAmountValue": -3, "taxFeeCurrency": "KWD",
           "acquirer": "Hundsun"}
    with parse(tmp_path / "d.csv", antom.write_report(SD, [row]), SD, con) as parsed:
        [line] = parsed.lines_arrow().to_pylist()
    # feeAmountValue/feeCurrency are the canonical fee: not repeated
    assert extras_dict(line["extras"], parsed.extras_names) == {"acquirer": "Hundsun", "taxFeeAmountValue": "-0.003",
                                           "taxFeeCurrency": "KWD"}


def test_unknown_columns_are_kept(tmp_path: Path, con: Any) -> None:
    header = [*antom.HEADERS[(TX, "v1")], "merchantNote"]
    row = {"transactionType": "PAYMENT", "transactionId": "T", "transactionRequestId": "R", "merchantNote": "x"}
    with parse(tmp_path / "t.csv", antom.write_report(TX, [row], header=header), TX, con) as parsed:
        assert parsed.ok
        assert extras_dict(parsed.lines_arrow().to_pylist()[0]["extras"], parsed.extras_names) == {"merchantNote": "x"}


# ---------------------------------------------------------------------------------------------
# Summary figures (antom.md 6.4, 11)


def test_declared_figures_of_a_summary_with_total_default_and_fee_columns(tmp_path: Path, con: Any) -> None:
    header = [*antom.HEADERS[(SS, "v1")]]
    batch = "2C2PXXXXXX0101"
    rows = [  # documented order: TOTAL first; DEFAULT = correction line with an empty settlement (antom.md 11)
        {"settlementBatchId": batch, "summaryType": "TOTAL", "count": 3, "settlementAmountValue": 9100,
         "settlementCurrency": "USD", "feeAmountValue": -500, "feeCurrency": "USD", "taxFeeAmountValue": -50},
        {"settlementBatchId": batch, "summaryType": "capture", "count": 3, "settlementAmountValue": 9600,
         "settlementCurrency": "USD", "feeAmountValue": -495, "feeCurrency": "USD", "interchangeFeeAmountValue": 7,
         "interchangeFeeCurrency": "SGD"},
        {"settlementBatchId": batch, "summaryType": "DEFAULT", "feeAmountValue": -5, "feeCurrency": "USD"},
    ]
    with parse(tmp_path / f"settlementSummary_USD_{batch}_000.csv", antom.write_report(SS, rows, header=header),
               SS, con) as parsed:
        assert parsed.ok, problems(parsed)
        figures = {(d.scope, d.figure, d.value, d.currency, d.line_no) for d in parsed.declared}
        assert {d.batch_id for d in parsed.declared} == {batch}
    assert figures == {
        ("TOTAL", "count", 3, None, 2), ("TOTAL", "settlement", 9100, "USD", 2), ("TOTAL", "fee", -500, "USD", 2),
        ("TOTAL", "taxFeeAmountValue", -50, "USD", 2),  # no taxFeeCurrency: the settlement currency
        ("CAPTURE", "count", 3, None, 3), ("CAPTURE", "settlement", 9600, "USD", 3), ("CAPTURE", "fee", -495, "USD", 3),
        ("CAPTURE", "interchangeFeeAmountValue", 7, "SGD", 3),
        ("DEFAULT", "fee", -5, "USD", 4),
    }


def test_summary_without_summary_type_states_the_total(tmp_path: Path, con: Any) -> None:
    header = [h for h in antom.HEADERS[(SS, "v2")] if h != "summaryType"]
    row = {"settlementBatchId": "B9", "count": 2, "settlementAmountValue": 1000, "settlementCurrency": "JPY",
           "paymentMethodFeeAmountValue": -30, "taxFeeAmountValue": -3}
    with parse(tmp_path / "s.csv", antom.write_report(SS, [row], variant="v2", header=header), SS, con) as parsed:
        assert parsed.ok, problems(parsed)
        assert {(d.scope, d.figure, d.value, d.currency) for d in parsed.declared} == {
            ("TOTAL", "count", 2, None), ("TOTAL", "settlement", 1000, "JPY"), ("TOTAL", "fee", -33, "JPY"),
            ("TOTAL", "paymentMethodFeeAmountValue", -30, "JPY"), ("TOTAL", "taxFeeAmountValue", -3, "JPY"),
        }


# ---------------------------------------------------------------------------------------------
# "null" cells and enums


def test_null_cells_are_empty(tmp_path: Path, con: Any) -> None:
    row = {"settlementBatchId": "B", "transactionType": "PAYMENT", "transactionId": "T", "transactionRequestId": "null",
           "settlementAmountValue": "1.00", "settlementCurrency": "USD", "feeAmountValue": "null",
           "feeCurrency": "null", "paymentTime": "null", "quotePrice": "null", "pspName": "null"}
    with parse(tmp_path / "d.csv", antom.write_report(SD, [row]), SD, con) as parsed:
        assert parsed.ok, problems(parsed)
        [line] = parsed.lines_arrow().to_pylist()
    assert line["merchant_ref_id"] is None and line["fee_minor"] is None and line["fee_currency"] is None
    assert line["occurred_at"] is None and line["fx_rate"] is None
    assert line["settlement_minor"] == 100
    assert extras_dict(line["extras"], parsed.extras_names) == {}  # a null pspName is not kept as text


def test_unknown_type_is_kept_with_a_warning(tmp_path: Path, con: Any) -> None:
    row = {"transactionType": "Brand_New_Type", "transactionId": "T", "transactionRequestId": "R"}
    with parse(tmp_path / "t.csv", antom.write_report(TX, [row]), TX, con) as parsed:
        assert parsed.ok
        assert [(p.code, p.severity, p.line, p.column) for p in parsed.problems] == [
            ("unknown_value", "warning", 2, "transactionType")]
        [line] = parsed.lines_arrow().to_pylist()
        assert (line["record_type"], line["raw_type"]) == ("BRAND_NEW_TYPE", "Brand_New_Type")


def test_v1_names_are_unknown_in_v2(tmp_path: Path, con: Any) -> None:
    """COLLATERAL_WITHHOLDING is the v1 name; v2 says COLLATERAL_WITHHELD (antom.md 5, 8)."""
    row = {"settlementBatchId": "B", "transactionType": "COLLATERAL_WITHHOLDING", "transactionId": "T",
           "settlementAmountValue": -100, "settlementCurrency": "USD"}
    v1 = parse(tmp_path / "a.csv", antom.write_report(SD, [row], variant="v1"), SD, con)
    v2 = parse(tmp_path / "b.csv", antom.write_report(SD, [row], variant="v2"), SD, con)
    assert v1.problems == []
    assert [(p.code, p.column) for p in v2.problems] == [("unknown_value", "transactionType")]


def test_settlement_initiated_date_may_be_a_bare_date(tmp_path: Path, con: Any) -> None:
    row = {"settlementBatchId": "B", "transactionType": "PAYMENT", "transactionId": "T", "settlementAmountValue": 1,
           "settlementCurrency": "USD", "settlementInitiatedDate": "2026-01-01"}
    with parse(tmp_path / "d.csv", antom.write_report(SD, [row], variant="v2"), SD, con) as parsed:
        assert parsed.ok, problems(parsed)
        [line] = parsed.lines_arrow().to_pylist()
    assert line["settled_at"] == datetime(2025, 12, 31, 16, 0, tzinfo=UTC)
    assert line["settled_offset_min"] == 480


def test_xlsx_layout(tmp_path: Path) -> None:
    """First sheet, header in row 1, <END> in column A of the last row [inferred: antom.md gap 4]."""
    from python_calamine import CalamineWorkbook

    row = {"transactionType": "PAYMENT", "transactionId": "T", "transactionRequestId": "R",
           "transactionAmountValue": 150, "transactionCurrency": "JPY"}
    path = tmp_path / "t.xlsx"
    path.write_bytes(antom.write_report(TX, [row], fmt="xlsx"))
    sheet = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
    assert tuple(sheet[0]) == antom.HEADERS[(TX, "v1")]
    header = antom.HEADERS[(TX, "v1")]
    assert sheet[1][header.index("transactionAmountValue")] == "150"
    assert sheet[2][0] == "<END>"
    assert len(sheet) == 3


def test_csv_layout_is_lf_utf8_with_trailer() -> None:
    data = antom.write_report(TX, [{"transactionType": "PAYMENT", "transactionId": "T", "orderDescription": "café"}])
    assert data.endswith(b"\n<END>\n") and b"\r" not in data
    assert "café".encode() in data
    assert antom.write_report(TX, [], trailer=False).count(b"\n") == 1


def test_narrowed_fields_still_validate_every_column(tmp_path: Path, con: Any) -> None:
    """ParseOptions.fields stores less (one-shot reconcile) but every documented column is still checked."""
    rows = [{"settlementBatchId": "B1", "transactionType": "PAYMENT", "transactionId": "T1",
             "transactionRequestId": "R1", "transactionAmountValue": 150, "transactionCurrency": "USD",
             "settlementAmountValue": 147, "settlementCurrency": "USD", "settlementTime": "2023-02-30T10:00:00+08:00"}]
    options = ParseOptions(keep_extras=False, fields=frozenset({"merchant_ref_id", "amount_minor", "amount_currency"}))
    path = tmp_path / antom.file_name(SD, currency="USD", batch_id="B1")
    path.write_bytes(antom.write_report(SD, rows))
    with antom.SETTLEMENT_DETAIL.parse(path, con, options) as parsed:
        assert [(p.code, p.line, p.column) for p in parsed.problems] == [("bad_date", 2, "settlementTime")]
    rows[0]["settlementTime"] = "2023-02-28T10:00:00+08:00"
    path.write_bytes(antom.write_report(SD, rows))
    with antom.SETTLEMENT_DETAIL.parse(path, con, options) as parsed:
        assert parsed.ok
        [line] = parsed.lines_arrow().to_pylist()
        assert (line["merchant_ref_id"], line["amount_minor"], line["settlement_minor"], line["settled_at"]) == (
            "R1", 150, None, None)
