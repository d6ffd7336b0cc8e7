"""Bad input gets a precise, typed error: class, physical line, column; the file is never ``ok``.

Every case starts from a valid Antom settlement-details file written by ``antom.write_report`` (as the
sandbox does) and corrupts it in one place. Lines: 1 header, 2-4 records, 5 ``<END>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alirecon import errors
from alirecon.formats import antom
from alirecon.formats.engine import ParsedFile, ParseOptions

REPORT = antom.SETTLEMENT_DETAIL
HEADER = antom.HEADERS[("settlement_detail", "v1")]
NAME = "settlementItems_USD_B1_000"
ROWS = [
    {"settlementBatchId": "B1", "customerId": "1022188000000000001", "transactionType": "PAYMENT",
     "transactionId": f"T{i}", "transactionRequestId": f"R{i}", "transactionAmountValue": 1000 + i,
     "transactionCurrency": "USD", "settlementAmountValue": 990 + i, "settlementCurrency": "USD",
     "feeAmountValue": -10, "feeCurrency": "USD"}
    for i in range(3)
]
BASE = antom.write_report("settlement_detail", ROWS)
LINES = BASE.split(b"\n")  # [header, row, row, row, <END>, b""]


def col(name: str) -> int:
    """1-based position of a column in the written header."""
    position: int = HEADER.index(name) + 1
    return position


def with_cell(line_no: int, column: str, text: bytes, data: bytes = BASE) -> bytes:
    """``data`` with one cell replaced (the base file has no quoted cells, so a split is exact)."""
    lines = data.split(b"\n")
    cells = lines[line_no - 1].split(b",")
    cells[col(column) - 1] = text
    lines[line_no - 1] = b",".join(cells)
    return b"\n".join(lines)


def with_line(line_no: int, text: bytes) -> bytes:
    lines = list(LINES)
    lines[line_no - 1] = text
    return b"\n".join(lines)


def parse(tmp_path: Path, con: Any, data: bytes, ext: str = "csv", options: ParseOptions | None = None) -> ParsedFile:
    path = tmp_path / f"{NAME}.{ext}"
    path.write_bytes(data)
    parsed = REPORT.parse(path, con, options)
    assert not parsed.ok
    return parsed


def found(parsed: ParsedFile) -> list[tuple[type[errors.FormatError], int | None, str | None, int | None]]:
    """Every problem as (exact class, line, column name, column position)."""
    return [(type(p), p.line, p.column, p.column_index) for p in parsed.problems]


def test_base_file_is_valid(tmp_path: Path, con: Any) -> None:
    path = tmp_path / f"{NAME}.csv"
    path.write_bytes(BASE)
    parsed = REPORT.parse(path, con)
    assert parsed.ok and parsed.problems == [] and parsed.row_count == 3
    assert LINES[4] == b"<END>" and b'"' not in BASE


def test_truncated_file(tmp_path: Path, con: Any) -> None:
    cells = LINES[2].split(b",")
    cut = b"\n".join([*LINES[:2], b",".join(cells[:12]) + b",PAY"])  # mid-row, no newline, no <END>
    parsed = parse(tmp_path, con, cut)
    assert found(parsed) == [
        (errors.TruncatedFile, 3, None, None),
        (errors.WrongColumnCount, 3, None, 14),  # 13 cells: the 14th is the first one missing
    ]


def test_missing_trailer(tmp_path: Path, con: Any) -> None:
    parsed = parse(tmp_path, con, b"\n".join(LINES[:4]) + b"\n")
    assert found(parsed) == [(errors.MissingTrailer, 4, None, None)]


def test_content_after_trailer(tmp_path: Path, con: Any) -> None:
    parsed = parse(tmp_path, con, BASE + LINES[1] + b"\n")
    assert found(parsed) == [
        (errors.ContentAfterTrailer, 5, None, None),  # the <END> that is not last
        (errors.MissingTrailer, 6, None, None),
    ]


def test_missing_required_column(tmp_path: Path, con: Any) -> None:
    drop = col("settlementAmountValue") - 1
    lines = [b",".join(c for i, c in enumerate(line.split(b",")) if i != drop) for line in LINES[:4]]
    parsed = parse(tmp_path, con, b"\n".join([*lines, *LINES[4:]]))
    assert found(parsed) == [(errors.MissingColumn, 1, "settlementAmountValue", None)]


def test_duplicated_header_column(tmp_path: Path, con: Any) -> None:
    parsed = parse(tmp_path, con, with_cell(1, "acquirer", b"customerId"))
    assert found(parsed) == [(errors.DuplicateColumn, 1, "customerId", col("acquirer"))]


def test_too_many_cells(tmp_path: Path, con: Any) -> None:
    parsed = parse(tmp_path, con, with_line(3, LINES[2] + b",surplus"))
    assert found(parsed) == [(errors.WrongColumnCount, 3, None, len(HEADER) + 1)]


def test_too_few_cells(tmp_path: Path, con: Any) -> None:
    parsed = parse(tmp_path, con, with_line(3, LINES[2].rsplit(b",", 2)[0]))
    assert found(parsed) == [(errors.WrongColumnCount, 3, None, len(HEADER) - 1)]


@pytest.mark.parametrize("text", [b"12a", b"1e5", b"1,000.00", b"--1", b".5", b"NaN"])
def test_bad_number(tmp_path: Path, con: Any, text: bytes) -> None:
    quoted = b'"' + text + b'"' if b"," in text else text
    parsed = parse(tmp_path, con, with_cell(3, "settlementAmountValue", quoted))
    assert found(parsed) == [(errors.BadNumber, 3, "settlementAmountValue", col("settlementAmountValue"))]


def test_unknown_currency(tmp_path: Path, con: Any) -> None:
    parsed = parse(tmp_path, con, with_cell(3, "settlementCurrency", b"XYZ"))
    assert found(parsed) == [(errors.UnknownCurrency, 3, "settlementCurrency", col("settlementCurrency"))]


def test_too_many_decimals_usd(tmp_path: Path, con: Any) -> None:
    parsed = parse(tmp_path, con, with_cell(3, "settlementAmountValue", b"9.901"))
    assert found(parsed) == [(errors.TooManyDecimals, 3, "settlementAmountValue", col("settlementAmountValue"))]


def test_too_many_decimals_jpy(tmp_path: Path, con: Any) -> None:
    jpy = with_cell(3, "transactionCurrency", b"JPY")
    parsed = parse(tmp_path, con, with_cell(3, "transactionAmountValue", b"1000.5", jpy))
    assert found(parsed) == [(errors.TooManyDecimals, 3, "transactionAmountValue", col("transactionAmountValue"))]


@pytest.mark.parametrize("text", [b"2023-02-30T10:00:00+08:00", b"yesterday", b"2023-01-09T25:00:00+08:00",
                                  b"2023-01-09"])
def test_bad_date(tmp_path: Path, con: Any, text: bytes) -> None:
    # paymentTime is a timestamp: a bare date is only accepted in v2 settlementInitiatedDate (antom.md 4)
    parsed = parse(tmp_path, con, with_cell(3, "paymentTime", text))
    assert found(parsed) == [(errors.BadDate, 3, "paymentTime", col("paymentTime"))]


def test_empty_file(tmp_path: Path, con: Any) -> None:
    parsed = parse(tmp_path, con, b"")
    assert found(parsed) == [(errors.EmptyFile, 1, None, None)]


def test_non_utf8_byte_names_its_column(tmp_path: Path, con: Any) -> None:
    parsed = parse(tmp_path, con, with_cell(3, "transactionRequestId", b"R\xff1"))
    assert found(parsed) == [(errors.BadEncoding, 3, "transactionRequestId", col("transactionRequestId"))]


@pytest.mark.parametrize("text", [b"=cmd|' /C calc'!A0", b"@SUM(1)", b"-cmd", b"+cmd"])
def test_formula_looking_cell(tmp_path: Path, con: Any, text: bytes) -> None:
    parsed = parse(tmp_path, con, with_cell(3, "transactionRequestId", text))
    assert found(parsed) == [(errors.FormulaCell, 3, "transactionRequestId", col("transactionRequestId"))]


def test_formula_in_an_unknown_column(tmp_path: Path, con: Any) -> None:
    data = with_cell(1, "funding", b"merchantNote")
    parsed = parse(tmp_path, con, with_cell(4, "funding", b"=1+1", data))
    assert found(parsed) == [(errors.FormulaCell, 4, "merchantNote", col("funding"))]


def test_line_longer_than_the_limit(tmp_path: Path, con: Any) -> None:
    options = ParseOptions(max_line_bytes=1024)
    parsed = parse(tmp_path, con, with_cell(3, "productCode", b"P" * 2000), options=options)
    assert found(parsed) == [(errors.LineTooLong, 3, None, None)]


def test_too_long_value(tmp_path: Path, con: Any) -> None:
    parsed = parse(tmp_path, con, with_cell(3, "transactionRequestId", b"R" * 65))  # String(64), antom.md 6.1
    assert found(parsed) == [(errors.TooLong, 3, "transactionRequestId", col("transactionRequestId"))]


def test_unclosed_quote(tmp_path: Path, con: Any) -> None:
    parsed = parse(tmp_path, con, with_cell(3, "transactionRequestId", b'"R1'))
    assert found(parsed) == [(errors.BadQuoting, 3, "transactionRequestId", col("transactionRequestId"))]
    assert parsed.row_count == 1  # the open quote swallows the rest of the file: only record 1 is kept


def test_text_after_a_closing_quote(tmp_path: Path, con: Any) -> None:
    parsed = parse(tmp_path, con, with_cell(3, "transactionRequestId", b'"R1"x'))
    assert found(parsed) == [(errors.BadQuoting, 3, "transactionRequestId", col("transactionRequestId"))]


def test_carriage_return_in_an_unquoted_cell(tmp_path: Path, con: Any) -> None:
    parsed = parse(tmp_path, con, with_cell(3, "productCode", b"P\r1"))
    assert found(parsed) == [(errors.BadQuoting, 3, "productCode", col("productCode"))]


def test_missing_value_in_a_mandatory_cell(tmp_path: Path, con: Any) -> None:
    parsed = parse(tmp_path, con, with_cell(4, "transactionType", b""))
    assert found(parsed) == [(errors.MissingValue, 4, "transactionType", col("transactionType"))]


def test_amount_without_a_currency(tmp_path: Path, con: Any) -> None:
    parsed = parse(tmp_path, con, with_cell(2, "transactionCurrency", b""))
    assert found(parsed) == [(errors.MissingValue, 2, "transactionAmountValue", col("transactionAmountValue"))]


def test_xlsx_that_is_not_a_zip(tmp_path: Path, con: Any) -> None:
    parsed = parse(tmp_path, con, BASE, ext="xlsx")
    assert found(parsed) == [(errors.FormatError, None, None, None)]
    assert "unreadable xlsx" in parsed.problems[0].message


def test_xlsx_bad_cell_names_its_sheet_row(tmp_path: Path, con: Any) -> None:
    rows = [dict(r) for r in ROWS]
    rows[1] |= {"settlementCurrency": "XYZ", "settlementAmountValue": "9.91"}  # a str is written as is
    parsed = parse(tmp_path, con, antom.write_report("settlement_detail", rows, fmt="xlsx"), ext="xlsx")
    assert found(parsed) == [(errors.UnknownCurrency, 3, "settlementCurrency", col("settlementCurrency"))]


def test_xlsx_rows_after_the_trailer(tmp_path: Path, con: Any) -> None:
    rows: list[dict[str, Any]] = [*ROWS[:2], {"settlementBatchId": "<END>"}, ROWS[2]]
    parsed = parse(tmp_path, con, antom.write_report("settlement_detail", rows, fmt="xlsx"), ext="xlsx")
    assert found(parsed) == [(errors.ContentAfterTrailer, 4, None, None)]
    assert [line["line_no"] for line in parsed.lines_arrow().to_pylist()] == [2, 3, 5]  # <END> is no record


def test_quoted_newlines_keep_physical_line_numbers(tmp_path: Path, con: Any) -> None:
    rows = [dict(r) for r in ROWS]
    rows[0]["acquirerReferenceNo"] = "two\nlines, and a \"quote\""
    rows[1]["productCode"] = "x\r\ny\nz"
    rows[2] |= {"settlementCurrency": "XYZ", "settlementAmountValue": "9.92"}
    data = antom.write_report("settlement_detail", rows)
    # record 1 spans lines 2-3, record 2 lines 4-6, so the bad record 3 is on line 7
    assert data.split(b"\n")[6].startswith(b"B1,")
    parsed = parse(tmp_path, con, data)
    assert found(parsed) == [(errors.UnknownCurrency, 7, "settlementCurrency", col("settlementCurrency"))]
    assert [line["line_no"] for line in parsed.lines_arrow().to_pylist()] == [2, 4, 7]


def test_a_bad_file_does_not_stop_the_next(tmp_path: Path, con: Any) -> None:
    for data in (b"", with_cell(3, "productCode", b"P\r1"), with_cell(3, "transactionRequestId", b'"R1')):
        parse(tmp_path, con, data)
    good = tmp_path / "good.csv"
    good.write_bytes(BASE)
    parsed = REPORT.parse(good, con)
    assert parsed.ok and parsed.row_count == 3


@pytest.mark.parametrize(("data", "line"), [
    # a blank line between records: DuckDB skips it, the reported line must not shift
    (with_cell(5, "transactionAmountValue", b"1e2", b"\n".join([*LINES[:2], b"", *LINES[2:]])), 5),
    # blank lines after <END> (and CRLF) change nothing
    (with_cell(4, "transactionAmountValue", b"1e2") + b"\n\n", 4),
    (with_cell(4, "transactionAmountValue", b"1e2").replace(b"\n", b"\r\n"), 4),
])
def test_line_numbers_survive_blank_lines_and_crlf(tmp_path: Path, con: Any, data: bytes, line: int) -> None:
    parsed = parse(tmp_path, con, data)
    assert found(parsed) == [(errors.BadNumber, line, "transactionAmountValue", col("transactionAmountValue"))]


def test_one_surplus_empty_trailing_cell_is_tolerated(tmp_path: Path, con: Any) -> None:
    """antom.md 4: a documented sample ends one record with an extra empty cell. DuckDB's reader accepts it
    (no warning is raised for it); the record keeps its values and its line."""
    data = with_line(3, LINES[2] + b",")
    path = tmp_path / f"{NAME}.csv"
    path.write_bytes(data)
    with REPORT.parse(path, con) as parsed:
        assert parsed.ok and parsed.problems == [] and parsed.row_count == 3
        lines = parsed.lines_arrow().to_pylist()
        assert [line["line_no"] for line in lines] == [2, 3, 4]
        assert [line["merchant_ref_id"] for line in lines] == ["R0", "R1", "R2"]
        assert lines[1]["fee_currency"] == "USD"  # the last documented cell before the surplus one
    # a surplus cell that holds a value remains an error (empty ones carry nothing and are read past)
    parsed = parse(tmp_path, con, with_line(3, LINES[2] + b",,x"))
    assert found(parsed) == [(errors.WrongColumnCount, 3, None, len(HEADER) + 1)]
