"""Reading the user's ledger: custom column names, exact money, both refund sign conventions, typed errors."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from alirecon import errors
from alirecon.config import LedgerConfig
from alirecon.formats.engine import extras_dict
from alirecon.formats.writer import write_csv, write_xlsx
from alirecon.ledger import read_ledger
from alirecon.money import format_major
from alirecon.schema import LEDGER_LINE

HEADER = ["Order No", "Kind", "Gross", "Ccy", "State", "Refund Of", "Booked At", "Memo"]
COLUMNS = {
    "merchant_ref_id": "Order No",
    "record_type": "Kind",
    "amount": "Gross",
    "currency": "Ccy",
    "status": "State",
    "original_merchant_ref_id": "Refund Of",
    "occurred_at": "Booked At",
}


def config(**overrides: object) -> LedgerConfig:
    base: dict[str, object] = {"name": "shop", "family": "antom", "columns": dict(COLUMNS)}
    base.update(overrides)
    return LedgerConfig.model_validate(base)


def write(tmp_path: Path, rows: list[list[str]], *, header: list[str] = HEADER, name: str = "ledger.csv",
          delimiter: str = ",") -> Path:
    path = tmp_path / name
    path.write_bytes(write_csv(header, rows, trailer=False, delimiter=delimiter))
    return path


def only_problem(parsed, cls: type[errors.FormatError]) -> errors.FormatError:
    assert not parsed.ok
    assert [type(p) for p in parsed.problems] == [cls], [str(p) for p in parsed.problems]
    return parsed.problems[0]


def test_csv_with_custom_names_major_units_jpy_kwd(tmp_path, con):
    path = write(tmp_path, [
        ["A1", "payment", "12.30", "USD", "ok", "", "2024-01-01 10:00:00", "first\nsecond"],
        ["A2", "PAYMENT", "1500", "JPY", "OK", "", "2024-01-01T23:59:59+08:00", ""],
        ["R1", "Refund", "-1.005", "KWD", "ok", "A0", "2024-01-02", "note"],
    ])
    parsed = read_ledger(path, config(statuses={"ok": "SUCCESS"}), con)
    assert parsed.ok, [str(p) for p in parsed.problems]
    assert parsed.row_count == 3
    rows = parsed.lines_arrow().to_pylist()
    picked = [(r["merchant_ref_id"], r["record_type"], r["amount_minor"], r["amount_currency"], r["status"],
               r["original_merchant_ref_id"], r["family"], r["ledger_row"]) for r in rows]
    # the first record spans lines 2-3 (quoted newline), so the next records start on lines 4 and 5
    assert picked == [
        ("A1", "PAYMENT", 1230, "USD", "SUCCESS", None, "antom", 2),
        ("A2", "PAYMENT", 1500, "JPY", "SUCCESS", None, "antom", 4),
        ("R1", "REFUND", -1005, "KWD", "SUCCESS", "A0", "antom", 5),
    ]
    utc8 = timedelta(hours=8)
    assert [r["occurred_at"] for r in rows] == [
        datetime(2024, 1, 1, 10, 0, tzinfo=UTC) - utc8,
        datetime(2024, 1, 1, 23, 59, 59, tzinfo=UTC) - utc8,
        datetime(2024, 1, 2, 0, 0, tzinfo=UTC) - utc8,  # a bare date is midnight in the default offset
    ]
    assert [r["occurred_offset_min"] for r in rows] == [480, 480, 480]
    assert extras_dict(rows[0]["extras"], parsed.extras_names) == {"Memo": "first\nsecond"}
    assert {r["source_sha256"] for r in rows} == {parsed.sha256} and len(parsed.sha256) == 64
    assert {r["source_name"] for r in rows} == {"ledger.csv"}


def test_lines_have_exactly_the_ledger_line_schema(tmp_path, con):
    path = write(tmp_path, [["A1", "PAYMENT", "1.00", "USD", "SUCCESS", "", "2024-01-01 00:00:00", ""]])
    parsed = read_ledger(path, config(), con)
    assert parsed.lines_arrow().schema.equals(LEDGER_LINE, check_metadata=False)
    described = con.execute(f"DESCRIBE {parsed.lines_sql()}").fetchall()
    assert [d[0] for d in described] == LEDGER_LINE.names


def test_minor_units(tmp_path, con):
    path = write(tmp_path, [
        ["A1", "PAYMENT", "1230", "USD", "SUCCESS", "", "2024-01-01 00:00:00", ""],
        ["A2", "PAYMENT", "7", "KWD", "SUCCESS", "", "2024-01-01 00:00:00", ""],
    ])
    parsed = read_ledger(path, config(amount_unit="minor"), con)
    assert parsed.ok
    assert [(r["amount_minor"], r["amount_currency"]) for r in parsed.lines_arrow().to_pylist()] == [
        (1230, "USD"), (7, "KWD")]
    bad = write(tmp_path, [["A1", "PAYMENT", "12.30", "USD", "SUCCESS", "", "2024-01-01 00:00:00", ""]],
                name="bad.csv")
    problem = only_problem(read_ledger(bad, config(amount_unit="minor"), con), errors.BadNumber)
    assert (problem.line, problem.column, problem.column_index) == (2, "Gross", 3)


def test_refunds_negated_by_type(tmp_path, con):
    path = write(tmp_path, [
        ["A1", "sale", "10.00", "USD", "SUCCESS", "", "2024-01-01 00:00:00", ""],
        ["R1", "rfd", "4.00", "USD", "SUCCESS", "A1", "2024-01-01 00:00:00", ""],
    ])
    cfg = config(refund_sign="negate_reverse_types", record_types={"SALE": "PAYMENT", "Rfd": "REFUND"})
    parsed = read_ledger(path, cfg, con)
    assert parsed.ok
    assert [(r["record_type"], r["amount_minor"]) for r in parsed.lines_arrow().to_pylist()] == [
        ("PAYMENT", 1000), ("REFUND", -400)]


def test_refunds_as_written_keep_their_sign(tmp_path, con):
    path = write(tmp_path, [
        ["A1", "PAYMENT", "10.00", "USD", "SUCCESS", "", "2024-01-01 00:00:00", ""],
        ["R1", "REFUND", "-4.00", "USD", "SUCCESS", "A1", "2024-01-01 00:00:00", ""],
    ])
    parsed = read_ledger(path, config(refund_sign="as_written"), con)
    assert [r["amount_minor"] for r in parsed.lines_arrow().to_pylist()] == [1000, -400]


def test_negative_refund_under_negate_is_refused(tmp_path, con):
    path = write(tmp_path, [
        ["A1", "PAYMENT", "10.00", "USD", "SUCCESS", "", "2024-01-01 00:00:00", ""],
        ["R1", "REFUND", "-4.00", "USD", "SUCCESS", "A1", "2024-01-01 00:00:00", ""],
    ])
    problem = only_problem(read_ledger(path, config(refund_sign="negate_reverse_types"), con), errors.BadValue)
    assert (problem.file, problem.line, problem.column, problem.column_index, problem.found) == (
        "ledger.csv", 3, "Gross", 3, "-4.00")


def test_unmapped_types_and_statuses_are_upper_cased(tmp_path, con):
    path = write(tmp_path, [["A1", "Capture", "1.00", "USD", "pending", "", "2024-01-01 00:00:00", ""]])
    parsed = read_ledger(path, config(statuses={"OK": "SUCCESS"}), con)
    assert [(r["record_type"], r["status"]) for r in parsed.lines_arrow().to_pylist()] == [("CAPTURE", "PENDING")]


def test_family_and_account_from_columns_or_constants(tmp_path, con):
    header = ["ref", "type", "amt", "ccy", "provider", "mid"]
    path = write(tmp_path, [["A1", "PAYMENT", "1.00", "USD", "Antom", "M1"],
                            ["A2", "PAYMENT", "1.00", "USD", "", ""]], header=header)
    cols = {"merchant_ref_id": "ref", "record_type": "type", "amount": "amt", "currency": "ccy",
            "family": "provider", "account_id": "mid"}
    parsed = read_ledger(path, LedgerConfig(columns=cols, family="alipayplus", account_id="M0"), con)
    assert [(r["family"], r["account_id"]) for r in parsed.lines_arrow().to_pylist()] == [
        ("antom", "M1"), ("alipayplus", "M0")]
    del cols["family"], cols["account_id"]
    parsed = read_ledger(path, LedgerConfig(columns=cols), con)
    assert [(r["family"], r["account_id"]) for r in parsed.lines_arrow().to_pylist()] == [(None, None)] * 2


def test_settlement_and_fee_with_their_own_currencies(tmp_path, con):
    header = ["ref", "type", "amt", "ccy", "net", "net_ccy", "fee"]
    path = write(tmp_path, [["A1", "REFUND", "10.00", "USD", "1500", "JPY", "-0.30"],
                            ["A2", "PAYMENT", "10.00", "USD", "", "", ""]], header=header)
    cols = {"merchant_ref_id": "ref", "record_type": "type", "amount": "amt", "currency": "ccy",
            "settlement": "net", "settlement_currency": "net_ccy", "fee": "fee"}
    parsed = read_ledger(path, LedgerConfig(columns=cols, refund_sign="negate_reverse_types"), con)
    assert parsed.ok, [str(p) for p in parsed.problems]
    got = [(r["amount_minor"], r["settlement_minor"], r["settlement_currency"], r["fee_minor"], r["fee_currency"])
           for r in parsed.lines_arrow().to_pylist()]
    # settlement is negated with the amount; the fee keeps its written sign (antom.md 9)
    assert got == [(-1000, -1500, "JPY", -30, "USD"), (1000, None, None, None, None)]


def test_semicolon_delimiter(tmp_path, con):
    path = write(tmp_path, [["A1", "PAYMENT", "1.00", "USD", "SUCCESS", "", "2024-01-01 00:00:00", "a,b"]],
                 delimiter=";")
    parsed = read_ledger(path, config(csv_delimiter=";"), con)
    assert parsed.ok, [str(p) for p in parsed.problems]
    row = parsed.lines_arrow().to_pylist()[0]
    assert (row["merchant_ref_id"], row["amount_minor"]) == ("A1", 100)
    assert extras_dict(row["extras"], parsed.extras_names) == {"Memo": "a,b"}


def test_xlsx_ledger_rows_are_sheet_rows(tmp_path, con):
    path = tmp_path / "ledger.xlsx"
    path.write_bytes(write_xlsx(HEADER, [["A1", "PAYMENT", "1.00", "USD", "SUCCESS", "", "2024-01-01 00:00:00", ""],
                                         ["A2", "PAYMENT", "2.5", "JPY", "SUCCESS", "", "2024-01-01 00:00:00", ""]],
                                trailer=False))
    parsed = read_ledger(path, config(), con)
    problem = only_problem(parsed, errors.TooManyDecimals)
    assert (problem.line, problem.column) == (3, "Gross")
    assert [(r["merchant_ref_id"], r["ledger_row"]) for r in parsed.lines_arrow().to_pylist()] == [
        ("A1", 2), ("A2", 3)]


@pytest.mark.parametrize(
    ("cell", "value", "cls", "column", "column_index"),
    [
        ("Gross", "12,30", errors.BadNumber, "Gross", 3),
        ("Gross", "1e3", errors.BadNumber, "Gross", 3),
        ("Gross", "12.305", errors.TooManyDecimals, "Gross", 3),
        ("Ccy", "XYZ", errors.UnknownCurrency, "Ccy", 4),
        ("Booked At", "2023-02-30 10:00:00", errors.BadDate, "Booked At", 7),
        ("Booked At", "yesterday", errors.BadDate, "Booked At", 7),
        ("Gross", "", errors.MissingValue, "Gross", 3),
    ],
)
def test_bad_cells_get_typed_errors_with_line_and_column(tmp_path, con, cell, value, cls, column, column_index):
    good = ["A1", "PAYMENT", "12.30", "USD", "SUCCESS", "", "2024-01-01 10:00:00", ""]
    bad = list(good)
    bad[HEADER.index(cell)] = value
    path = write(tmp_path, [good, good, bad, good])
    problem = only_problem(read_ledger(path, config(), con), cls)
    assert (problem.file, problem.line, problem.column, problem.column_index) == (
        "ledger.csv", 4, column, column_index)


def test_jpy_with_decimals_is_too_many(tmp_path, con):
    path = write(tmp_path, [["A1", "PAYMENT", "100.0", "JPY", "SUCCESS", "", "2024-01-01 10:00:00", ""]])
    problem = only_problem(read_ledger(path, config(), con, name="my-ledger.csv"), errors.TooManyDecimals)
    assert (problem.file, problem.line, problem.found) == ("my-ledger.csv", 2, "100.0")


def test_missing_mapped_column(tmp_path, con):
    header = [h for h in HEADER if h != "Ccy"]
    path = write(tmp_path, [["A1", "PAYMENT", "12.30", "SUCCESS", "", "2024-01-01 10:00:00", ""]], header=header)
    parsed = read_ledger(path, config(), con)
    missing = [p for p in parsed.problems if isinstance(p, errors.MissingColumn)]
    assert not parsed.ok
    assert [(p.line, p.column) for p in missing] == [(1, "Ccy")]


def test_header_matching_is_case_insensitive(tmp_path, con):
    header = [h.upper() for h in HEADER]
    path = write(tmp_path, [["A1", "PAYMENT", "1.00", "USD", "SUCCESS", "", "2024-01-01 10:00:00", ""]],
                 header=header)
    parsed = read_ledger(path, config(), con)
    assert parsed.ok
    assert parsed.lines_arrow().to_pylist()[0]["amount_minor"] == 100


def test_unknown_extension(tmp_path, con):
    path = tmp_path / "ledger.json"
    path.write_text("{}")
    problem = only_problem(read_ledger(path, config(), con), errors.UnknownFormat)
    assert problem.file == "ledger.json"


def test_config_refuses_unknown_fields_and_template_characters():
    with pytest.raises(ValidationError, match="unknown ledger field"):
        LedgerConfig(columns={"amount_minor": "x", "currency": "c"})
    with pytest.raises(ValidationError, match="without"):
        LedgerConfig(columns={"merchant_ref_id": "ref:id"})
    with pytest.raises(ValidationError, match="currency"):
        LedgerConfig(columns={"amount": "x"})
    with pytest.raises(ValidationError, match="record_type"):
        LedgerConfig(columns={"amount": "x", "currency": "c"}, refund_sign="negate_reverse_types")


def test_fixed_currency_for_a_ledger_without_currency_column(tmp_path, con):
    path = write(tmp_path, [["A1", "12"]], header=["ref", "amt"])
    parsed = read_ledger(path, LedgerConfig(columns={"merchant_ref_id": "ref", "amount": "amt"}, currency="JPY"), con)
    assert parsed.ok
    row = parsed.lines_arrow().to_pylist()[0]
    assert (row["amount_minor"], row["amount_currency"]) == (12, "JPY")
    with pytest.raises(errors.ConfigError, match="XYZ"):
        read_ledger(path, LedgerConfig(columns={"merchant_ref_id": "ref", "amount": "amt"}, currency="XYZ"), con)


# ---------------------------------------------------------------------------------------------- Parquet

PARQUET_COLUMNS = {"merchant_ref_id": "ref", "record_type": "kind", "amount": "gross", "currency": "ccy",
                   "occurred_at": "at", "fee": "fee"}


def write_parquet(tmp_path: Path, columns: dict[str, pa.Array], name: str = "ledger.parquet") -> Path:
    path = tmp_path / name
    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_decimal_integer_varchar_money_and_timestamps(tmp_path, con):
    path = write_parquet(tmp_path, {
        "ref": pa.array(["A1", "A2", "R1"]),
        "kind": pa.array(["PAYMENT", "payment", "REFUND"]),
        # DECIMAL scale zeros are not written decimals: 100.0000 JPY is 100 yen
        "gross": pa.array([Decimal("12.3000"), Decimal("100.0000"), Decimal("-1.2340")], pa.decimal128(18, 4)),
        "ccy": pa.array(["USD", "JPY", "KWD"]),
        "at": pa.array([datetime(2024, 1, 1, 16, 0, tzinfo=UTC), None, datetime(2024, 1, 1, 0, 0, 0, 123456, UTC)],
                       pa.timestamp("us", tz="UTC")),
        "fee": pa.array(["-30", None, "5"]),  # VARCHAR money, major units like the amount
        "score": pa.array([0.5, 1.5, 2.5]),  # a float that is not money is fine (kept in extras)
    })
    parsed = read_ledger(path, LedgerConfig(columns=PARQUET_COLUMNS, family="antom"), con)
    assert parsed.ok, [str(p) for p in parsed.problems]
    rows = parsed.lines_arrow().to_pylist()
    assert [(r["merchant_ref_id"], r["record_type"], r["amount_minor"], r["amount_currency"], r["fee_minor"],
             r["ledger_row"]) for r in rows] == [
        ("A1", "PAYMENT", 1230, "USD", -3000, 1),
        ("A2", "PAYMENT", 100, "JPY", None, 2),
        ("R1", "REFUND", -1234, "KWD", 5000, 3),
    ]
    assert [r["occurred_at"] for r in rows] == [datetime(2024, 1, 1, 16, 0, tzinfo=UTC), None,
                                                datetime(2024, 1, 1, 0, 0, 0, 123456, UTC)]
    assert extras_dict(rows[0]["extras"], parsed.extras_names) == {"score": "0.5"}


def test_parquet_integer_minor_units_and_naive_timestamps(tmp_path, con):
    path = write_parquet(tmp_path, {
        "ref": pa.array([1001, 1002], pa.int64()),
        "kind": pa.array(["PAYMENT", "PAYMENT"]),
        "gross": pa.array([1230, -5], pa.int64()),
        "ccy": pa.array(["USD", "USD"]),
        "at": pa.array([datetime(2024, 1, 1, 10, 0), datetime(2024, 1, 1, 23, 59, 59)], pa.timestamp("ms")),
        "day": pa.array([date(2024, 1, 1), date(2024, 1, 2)]),
    })
    cols = {"merchant_ref_id": "ref", "record_type": "kind", "amount": "gross", "currency": "ccy", "occurred_at": "at"}
    parsed = read_ledger(path, LedgerConfig(columns=cols, amount_unit="minor", default_offset_minutes=60), con)
    assert parsed.ok, [str(p) for p in parsed.problems]
    rows = parsed.lines_arrow().to_pylist()
    assert [(r["merchant_ref_id"], r["amount_minor"], r["occurred_at"], r["occurred_offset_min"]) for r in rows] == [
        ("1001", 1230, datetime(2024, 1, 1, 9, 0, tzinfo=UTC), 60),
        ("1002", -5, datetime(2024, 1, 1, 22, 59, 59, tzinfo=UTC), 60),
    ]
    cols["occurred_at"] = "day"  # a DATE column: midnight in the default offset
    parsed = read_ledger(path, LedgerConfig(columns=cols, amount_unit="minor"), con)
    assert [r["occurred_at"] for r in parsed.lines_arrow().to_pylist()] == [
        datetime(2023, 12, 31, 16, 0, tzinfo=UTC), datetime(2024, 1, 1, 16, 0, tzinfo=UTC)]


def test_parquet_double_money_column_is_refused(tmp_path, con):
    path = write_parquet(tmp_path, {"ref": pa.array(["A1"]), "kind": pa.array(["PAYMENT"]),
                                    "gross": pa.array([12.3], pa.float64()), "ccy": pa.array(["USD"]),
                                    "at": pa.array(["2024-01-01 10:00:00"])})
    parsed = read_ledger(path, LedgerConfig(columns={k: v for k, v in PARQUET_COLUMNS.items() if k != "fee"}), con)
    problem = only_problem(parsed, errors.BadColumnType)
    assert (problem.column, problem.column_index, problem.found) == ("gross", 3, "DOUBLE")
    assert parsed.lines_arrow().num_rows == 0  # nothing half-read


def test_parquet_bad_cells_name_the_row(tmp_path, con):
    path = write_parquet(tmp_path, {
        "ref": pa.array(["A1", "A2", "A3"]), "kind": pa.array(["PAYMENT"] * 3),
        "gross": pa.array([Decimal("1.000"), Decimal("1.234"), Decimal("2.000")], pa.decimal128(18, 3)),
        "ccy": pa.array(["USD", "USD", "ABC"]), "at": pa.array(["2024-01-01", "2024-01-01", "2024-02-30"]),
    })
    parsed = read_ledger(path, LedgerConfig(columns={k: v for k, v in PARQUET_COLUMNS.items() if k != "fee"}), con)
    got = {(type(p), p.line, p.column) for p in parsed.problems}
    assert not parsed.ok
    assert got == {(errors.TooManyDecimals, 2, "gross"), (errors.UnknownCurrency, 3, "ccy"), (errors.BadDate, 3, "at")}
    assert len(parsed.problems) == 3


def test_parquet_missing_mapped_column(tmp_path, con):
    path = write_parquet(tmp_path, {"ref": pa.array(["A1"]), "gross": pa.array(["1.00"]), "ccy": pa.array(["USD"])})
    parsed = read_ledger(path, LedgerConfig(columns={"merchant_ref_id": "ref", "record_type": "kind",
                                                     "amount": "gross", "currency": "ccy"}), con)
    problem = only_problem(parsed, errors.MissingColumn)
    assert (problem.column, problem.line) == ("kind", None)


def test_close_drops_the_tables(tmp_path, con):
    path = write(tmp_path, [["A1", "PAYMENT", "1.234", "USD", "SUCCESS", "", "2024-01-01 10:00:00", ""]])
    before = set(con.execute("SELECT table_name FROM duckdb_tables()").fetchall())
    with read_ledger(path, config(), con) as parsed:
        assert not parsed.ok
    assert set(con.execute("SELECT table_name FROM duckdb_tables()").fetchall()) == before


CURRENCIES = st.sampled_from(["JPY", "USD", "KWD", "EUR", "BHD"])


@given(st.lists(st.tuples(st.integers(-10**12, 10**12), CURRENCIES), min_size=1, max_size=20),
       st.sampled_from(["major", "minor"]))
def test_amounts_round_trip_exactly(tmp_path_factory, amounts, unit):
    from alirecon.formats.engine import new_connection

    tmp = tmp_path_factory.mktemp("ledger")
    cells = [[f"K{i}", "PAYMENT", format_major(m, c) if unit == "major" else str(m), c]
             for i, (m, c) in enumerate(amounts)]
    path = write(tmp, cells, header=["ref", "type", "amt", "ccy"])
    cfg = LedgerConfig(columns={"merchant_ref_id": "ref", "record_type": "type", "amount": "amt", "currency": "ccy"},
                       amount_unit=unit)
    con = new_connection()
    try:
        parsed = read_ledger(path, cfg, con)
        assert parsed.ok, [str(p) for p in parsed.problems]
        assert [(r["amount_minor"], r["amount_currency"]) for r in parsed.lines_arrow().to_pylist()] == amounts
    finally:
        con.close()
