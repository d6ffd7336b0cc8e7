"""Report vs ledger matching: every exception class and rule, the window, the tie gate, determinism."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alirecon.config import ReconcileConfig
from alirecon.recon.match import EXCEPTION_CLASSES, MatchResult, reconcile, reconcile_family
from alirecon.schema import EXCEPTION, LEDGER_LINE, REPORT_LINE

R_SHA = "a" * 64
L_SHA = "b" * 64
NOON = datetime(2024, 1, 1, 4, 0, tzinfo=UTC)  # 12:00 UTC+8 on 2024-01-01


def rline(key: str | None, amount: int | None, line: int, *, rt: str = "PAYMENT", ccy: str = "USD",
          file: str = "r1.csv", at: datetime | None = NOON, **extra: Any) -> dict[str, Any]:
    row = {"family": "antom", "report": "transaction_detail", "record_type": rt, "merchant_ref_id": key,
           "amount_minor": amount, "amount_currency": ccy, "occurred_at": at,
           "source_sha256": R_SHA if file == "r1.csv" else file[:2] * 32, "source_name": file, "line_no": line}
    row.update(extra)
    return row


def lrow(key: str | None, amount: int | None, row_no: int, *, rt: str = "PAYMENT", ccy: str = "USD",
         file: str = "ledger.csv", at: datetime | None = NOON, **extra: Any) -> dict[str, Any]:
    row = {"family": "antom", "record_type": rt, "merchant_ref_id": key, "amount_minor": amount,
           "amount_currency": ccy, "occurred_at": at, "source_sha256": L_SHA, "source_name": file,
           "ledger_row": row_no}
    row.update(extra)
    return row


def run(con, report: list[dict[str, Any]], ledger: list[dict[str, Any]], **kw: Any) -> tuple[MatchResult, list]:
    con.register("report_in", pa.Table.from_pylist(report, schema=REPORT_LINE))
    con.register("ledger_in", pa.Table.from_pylist(ledger, schema=LEDGER_LINE))
    kw.setdefault("family", "antom")
    kw.setdefault("report", "transaction_detail")
    result = reconcile(con, report_lines="report_in", ledger_lines="ledger_in", **kw)
    return result, result.arrow().to_pylist()


def brief(rows: list[dict[str, Any]]) -> list[tuple]:
    """(class, reason, key, type, report (file, line)s, ledger (file, row)s) per exception."""
    return [(r["exception_class"], r["reason_code"], r["match_key"], r["record_type"],
             [(x["name"], x["line"]) for x in r["report_lines"]], [(x["name"], x["line"]) for x in r["ledger_rows"]])
            for r in rows]


def test_all_agree(con):
    result, rows = run(con, [rline("A", 100, 2), rline("B", -50, 3, rt="REFUND")],
                       [lrow("A", 100, 2), lrow("B", -50, 3, rt="REFUND")])
    assert rows == []
    assert result.matched == 2
    assert result.counts == {**dict.fromkeys(EXCEPTION_CLASSES, 0), "matched": 2}
    assert result.window == (date(2024, 1, 1), date(2024, 1, 1))
    assert result.out_of_window == 0


def test_output_has_exactly_the_exception_schema(con):
    result, _ = run(con, [rline("A", 100, 2)], [])
    assert result.arrow().schema.equals(EXCEPTION, check_metadata=False)
    assert [d[0] for d in con.execute(f"DESCRIBE {result.table}").fetchall()] == EXCEPTION.names


def test_missing_on_either_side_with_values_and_lineage(con):
    result, rows = run(con, [rline("A", 1230, 2), rline("B", 100, 3)], [lrow("B", 100, 2), lrow("C", 5, 7)])
    assert brief(rows) == [
        ("missing_in_ledger", "NOT_IN_LEDGER", "A", "PAYMENT", [("r1.csv", 2)], []),
        ("missing_in_report", "NOT_IN_REPORT", "C", "PAYMENT", [], [("ledger.csv", 7)]),
    ]
    a, c = rows
    assert (a["report_amount_minor"], a["report_currency"], a["ledger_amount_minor"]) == (1230, "USD", None)
    assert a["report_lines"][0]["sha256"] == R_SHA and c["ledger_rows"][0]["sha256"] == L_SHA
    assert (c["ledger_amount_minor"], c["ledger_currency"], c["report_amount_minor"]) == (5, "USD", None)
    assert (a["family"], a["report"]) == ("antom", "transaction_detail")
    assert "12.30 USD" in a["detail"]
    assert result.counts["missing_in_ledger"] == 1 and result.counts["missing_in_report"] == 1
    assert result.matched == 1


def test_same_key_different_type_is_another_record(con):
    _, rows = run(con, [rline("A", 100, 2)], [lrow("A", -100, 2, rt="REFUND")])
    assert [(r["exception_class"], r["record_type"]) for r in rows] == [
        ("missing_in_ledger", "PAYMENT"), ("missing_in_report", "REFUND")]


def test_amount_settlement_and_fee_mismatches_one_per_reason(con):
    report = [rline("A", 1000, 2, settlement_minor=990, settlement_currency="USD", fee_minor=-10, fee_currency="USD"),
              rline("B", 500, 3, settlement_minor=495, settlement_currency="USD", fee_minor=-5, fee_currency="USD"),
              rline("C", 700, 4, fee_minor=-7, fee_currency="USD")]
    ledger = [lrow("A", 1001, 2, settlement_minor=980, settlement_currency="USD", fee_minor=-20, fee_currency="USD"),
              # B: the ledger writes the fee positive: magnitudes agree, no finding (antom.md 9)
              lrow("B", 500, 3, settlement_minor=495, settlement_currency="USD", fee_minor=5, fee_currency="USD"),
              # C: the ledger has no settlement figure: nothing to compare; fee differs
              lrow("C", 700, 4, fee_minor=-8, fee_currency="USD")]
    result, rows = run(con, report, ledger)
    assert [(r["exception_class"], r["reason_code"], r["match_key"]) for r in rows] == [
        ("amount_mismatch", "AMOUNT_MISMATCH", "A"),
        ("amount_mismatch", "FEE_MISMATCH", "A"),
        ("amount_mismatch", "SETTLEMENT_MISMATCH", "A"),
        ("amount_mismatch", "FEE_MISMATCH", "C"),
    ]
    assert all(r["report_lines"] and r["ledger_rows"] for r in rows)
    assert (rows[0]["report_amount_minor"], rows[0]["ledger_amount_minor"]) == (1000, 1001)
    assert "9.90 USD" in rows[2]["detail"] and "9.80 USD" in rows[2]["detail"]
    assert result.matched == 1  # only B


def test_settlement_currency_difference_is_a_settlement_mismatch(con):
    _, rows = run(con, [rline("A", 1000, 2, settlement_minor=150, settlement_currency="JPY")],
                  [lrow("A", 1000, 2, settlement_minor=150, settlement_currency="KRW")])
    assert [(r["exception_class"], r["reason_code"]) for r in rows] == [("amount_mismatch", "SETTLEMENT_MISMATCH")]


def test_currency_mismatch_stops_the_comparison(con):
    _, rows = run(con, [rline("A", 1000, 2, ccy="EUR")], [lrow("A", 999, 2, ccy="USD")])
    assert brief(rows) == [("currency_mismatch", "CURRENCY_MISMATCH", "A", "PAYMENT", [("r1.csv", 2)],
                            [("ledger.csv", 2)])]
    assert (rows[0]["report_currency"], rows[0]["ledger_currency"]) == ("EUR", "USD")


def test_status_rules(con):
    report = [rline("A", 100, 2),                        # no status: a success
              rline("B", 100, 3, status="FAIL"),         # v2 transaction details carry a status
              rline("C", 100, 4, status="FAIL"),
              rline("D", 100, 5, status="success"),      # compared case-insensitively
              rline("E", 100, 6, status="PROCESSING")]
    ledger = [lrow("A", 100, 2, status="FAILED"),
              lrow("B", 100, 3, status="SUCCESS"),
              lrow("D", 100, 4),                         # a ledger row without status is a success
              lrow("F", 100, 5, status="FAILED"),        # failed and absent from the report: fine
              lrow("E", 100, 6, status="CLOSED")]        # neither side successful: they agree
    result, rows = run(con, report, ledger)
    assert [(r["exception_class"], r["reason_code"], r["match_key"], r["report_status"], r["ledger_status"])
            for r in rows] == [
        ("status_mismatch", "LEDGER_NOT_SUCCESS", "A", None, "FAILED"),
        ("status_mismatch", "REPORT_NOT_SUCCESS", "B", "FAIL", "SUCCESS"),
    ]
    assert result.matched == 4  # C (failed, no ledger row), D, E, F


def test_custom_success_statuses(con):
    _, rows = run(con, [rline("A", 100, 2, status="PAID")], [lrow("A", 100, 2, status="paid")],
                  success_statuses=("PAID",))
    assert rows == []


def test_duplicate_in_report_lists_every_line_in_file_order_and_is_not_compared(con):
    report = [rline("A", 100, 9, file="r2.csv"), rline("A", 100, 4), rline("A", 999, 2),
              rline("B", 100, 3)]
    ledger = [lrow("A", 5, 8), lrow("B", 100, 3)]
    result, rows = run(con, report, ledger)
    assert brief(rows) == [("duplicate_in_report", "DUPLICATE_KEY", "A", "PAYMENT",
                            [("r1.csv", 2), ("r1.csv", 4), ("r2.csv", 9)], [("ledger.csv", 8)])]
    # the lines disagree on the amount: no value is picked
    assert (rows[0]["report_amount_minor"], rows[0]["report_currency"], rows[0]["ledger_amount_minor"]) == (
        None, "USD", 5)
    assert result.counts["duplicate_in_report"] == 1 and result.matched == 1


def test_duplicate_in_ledger_and_on_both_sides(con):
    report = [rline("A", 100, 2), rline("B", 100, 3), rline("B", 100, 4)]
    ledger = [lrow("A", 100, 5), lrow("A", 100, 2), lrow("B", 100, 3), lrow("B", 100, 4), lrow("C", 1, 6),
              lrow("C", 1, 7)]
    _, rows = run(con, report, ledger)
    assert brief(rows) == [
        ("duplicate_in_ledger", "DUPLICATE_KEY", "A", "PAYMENT", [("r1.csv", 2)],
         [("ledger.csv", 2), ("ledger.csv", 5)]),
        ("duplicate_in_ledger", "DUPLICATE_KEY", "B", "PAYMENT", [("r1.csv", 3), ("r1.csv", 4)],
         [("ledger.csv", 3), ("ledger.csv", 4)]),
        ("duplicate_in_ledger", "DUPLICATE_KEY", "C", "PAYMENT", [], [("ledger.csv", 6), ("ledger.csv", 7)]),
        ("duplicate_in_report", "DUPLICATE_KEY", "B", "PAYMENT", [("r1.csv", 3), ("r1.csv", 4)],
         [("ledger.csv", 3), ("ledger.csv", 4)]),
    ]
    assert rows[0]["ledger_amount_minor"] == 100  # the duplicates agree on it


def test_link_mismatch(con):
    report = [rline("P1", 1000, 2), rline("R1", -100, 3, rt="REFUND", original_merchant_ref_id="P1"),
              rline("R2", -100, 4, rt="REFUND", original_merchant_ref_id="P1")]
    ledger = [lrow("P1", 1000, 2), lrow("R1", -100, 3, rt="REFUND", original_merchant_ref_id="P9"),
              lrow("R2", -100, 4, rt="REFUND")]  # link not recorded: not evidence of a wrong link
    _, rows = run(con, report, ledger)
    assert brief(rows) == [("link_mismatch", "REFUND_ORIGINAL_MISMATCH", "R1", "REFUND", [("r1.csv", 3)],
                            [("ledger.csv", 3)])]
    assert "P1" in rows[0]["detail"] and "P9" in rows[0]["detail"]


def test_partial_and_multiple_refunds_within_the_payment_are_fine(con):
    report = [rline("P1", 1000, 2), rline("R1", -300, 3, rt="REFUND", original_merchant_ref_id="P1"),
              rline("R2", -700, 4, rt="REFUND", original_merchant_ref_id="P1"),  # exactly the payment in total
              rline("P2", 500, 5), rline("R3", -100, 6, rt="REFUND", original_merchant_ref_id="P2")]
    ledger = [lrow("P1", 1000, 2), lrow("R1", -300, 3, rt="REFUND", original_merchant_ref_id="P1"),
              lrow("R2", -700, 4, rt="REFUND", original_merchant_ref_id="P1"),
              lrow("P2", 500, 5), lrow("R3", -100, 6, rt="REFUND", original_merchant_ref_id="P2")]
    result, rows = run(con, report, ledger)
    assert rows == [] and result.matched == 5


def test_refunds_exceeding_the_payment(con):
    report = [rline("R2", -600, 4, rt="REFUND", original_merchant_ref_id="P1"),
              rline("P1", 1000, 2), rline("R1", -500, 3, rt="REFUND", original_merchant_ref_id="P1"),
              rline("R9", -5000, 5, rt="REFUND", original_merchant_ref_id="P1", ccy="JPY"),  # other currency
              rline("R8", -5000, 6, rt="REFUND", original_merchant_ref_id="P1", status="FAIL"),  # not successful
              rline("P2", 100, 7), rline("R3", -200, 8, rt="REFUND", original_merchant_ref_id="NOPE")]
    ledger = [lrow("P1", 1000, 2), lrow("R1", -500, 3, rt="REFUND", original_merchant_ref_id="P1"),
              lrow("R2", -600, 4, rt="REFUND", original_merchant_ref_id="P1"),
              lrow("R9", -5000, 5, rt="REFUND", original_merchant_ref_id="P1", ccy="JPY"),
              lrow("P2", 100, 7), lrow("R3", -200, 8, rt="REFUND", original_merchant_ref_id="NOPE")]
    result, rows = run(con, report, ledger)
    assert brief(rows) == [("refund_exceeds_payment", "REFUNDS_EXCEED_PAYMENT", "P1", "PAYMENT",
                            [("r1.csv", 2), ("r1.csv", 3), ("r1.csv", 4)], [("ledger.csv", 2)])]
    row = rows[0]
    assert (row["report_amount_minor"], row["ledger_amount_minor"]) == (1000, 1000)
    assert "11.00 USD" in row["detail"] and "10.00 USD" in row["detail"]
    assert result.counts["refund_exceeds_payment"] == 1


def test_duplicated_refund_key_is_left_out_of_the_refund_sum(con):
    report = [rline("P1", 1000, 2), rline("R1", -600, 3, rt="REFUND", original_merchant_ref_id="P1"),
              rline("R1", -600, 4, rt="REFUND", original_merchant_ref_id="P1")]
    ledger = [lrow("P1", 1000, 2), lrow("R1", -600, 3, rt="REFUND", original_merchant_ref_id="P1")]
    _, rows = run(con, report, ledger)
    assert [r["exception_class"] for r in rows] == ["duplicate_in_report"]


def test_lines_without_a_key(con):
    result, rows = run(con, [rline(None, 100, 2), rline("", 7, 3, status="FAIL")],
                       [lrow(None, 5, 4), lrow(None, 5, 5, status="FAILED")])
    assert brief(rows) == [
        ("missing_in_ledger", "NO_MATCH_KEY", None, "PAYMENT", [("r1.csv", 2)], []),
        ("missing_in_report", "NO_MATCH_KEY", None, "PAYMENT", [], [("ledger.csv", 4)]),
    ]
    assert result.matched == 2


def test_default_window_and_utc8_day_boundary(con):
    last_second = datetime(2024, 1, 1, 15, 59, 59, tzinfo=UTC)  # 23:59:59 UTC+8, still 2024-01-01
    next_day = datetime(2024, 1, 1, 16, 0, 0, tzinfo=UTC)  # 00:00:00 UTC+8 on 2024-01-02
    report = [rline("A", 100, 2, at=datetime(2023, 12, 31, 16, 0, tzinfo=UTC)), rline("B", 100, 3, at=last_second)]
    ledger = [lrow("A", 100, 2), lrow("B", 100, 3, at=last_second),
              lrow("C", 100, 4, at=last_second),       # in the window, not in the report
              lrow("D", 100, 5, at=next_day),          # outside: counted, not reported
              lrow("E", 100, 6, at=datetime(2023, 12, 31, 15, 59, 59, tzinfo=UTC)),  # 2023-12-31 UTC+8
              lrow("F", 100, 7, at=None)]              # undated: always in scope
    result, rows = run(con, report, ledger)
    assert result.window == (date(2024, 1, 1), date(2024, 1, 1))
    assert [(r["exception_class"], r["match_key"]) for r in rows] == [
        ("missing_in_report", "C"), ("missing_in_report", "F")]
    assert result.out_of_window == 2


def test_explicit_window(con):
    ledger = [lrow("A", 100, 2, at=datetime(2024, 1, 3, 4, tzinfo=UTC)),
              lrow("B", 100, 3, at=datetime(2024, 1, 5, 4, tzinfo=UTC))]
    result, rows = run(con, [], ledger, window=(date(2024, 1, 2), date(2024, 1, 4)))
    assert [(r["exception_class"], r["match_key"]) for r in rows] == [("missing_in_report", "A")]
    assert (result.window, result.out_of_window) == ((date(2024, 1, 2), date(2024, 1, 4)), 1)


def test_no_report_lines_and_no_window_compares_nothing_dated(con):
    result, rows = run(con, [], [lrow("A", 100, 2)])
    assert rows == [] and result.window is None and result.out_of_window == 1


def test_out_of_window_ledger_row_with_a_report_key_is_matched_not_reported(con):
    late_booking = datetime(2024, 1, 1, 16, 0, 1, tzinfo=UTC)  # booked 2 s after the provider's midnight
    report = [rline("A", 100, 2, at=datetime(2024, 1, 1, 15, 59, 59, tzinfo=UTC))]
    result, rows = run(con, report, [lrow("A", 100, 2, at=late_booking)])
    assert rows == [] and result.matched == 1 and result.out_of_window == 0


def test_only_the_family_and_report_take_part(con):
    report = [rline("A", 100, 2), rline("B", 100, 3, report="settlement_detail"),
              rline("C", 100, 4, family="alipayplus")]
    ledger = [lrow("A", 100, 2), lrow("D", 100, 3, family="alipayplus"), lrow("E", 100, 4, family=None)]
    _, rows = run(con, report, ledger)
    assert [(r["exception_class"], r["match_key"]) for r in rows] == [("missing_in_report", "E")]


def test_record_type_filter(con):
    report = [rline("A", 100, 2), rline(None, -3, 3, rt="SETTLEMENT_FEE")]
    _, rows = run(con, report, [lrow("A", 100, 2)], record_types=["payment", "REFUND"])
    assert rows == []


def test_provider_txn_id_key(con):
    report = [rline("x", 100, 2, provider_txn_id="T1"),
              rline("y", -200, 3, rt="REFUND", provider_txn_id="T2", original_provider_txn_id="T1")]
    ledger = [lrow("other", 100, 2, provider_txn_id="T1"),
              lrow("other2", -200, 3, rt="REFUND", provider_txn_id="T2", original_provider_txn_id="T1")]
    _, rows = run(con, report, ledger, key="provider_txn_id")
    assert [(r["exception_class"], r["match_key"]) for r in rows] == [("refund_exceeds_payment", "T1")]


def test_bad_arguments(con):
    with pytest.raises(ValueError, match="match key"):
        run(con, [], [], key="amount_minor")
    with pytest.raises(ValueError, match="window"):
        run(con, [], [], window=(date(2024, 1, 2), date(2024, 1, 1)))


def test_scratch_tables_are_dropped(con):
    before = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    result, _ = run(con, [rline("A", 1, 2), rline("A", 1, 3)], [lrow("B", 1, 2)])
    after = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert after - before == {result.table}
    result.close()
    assert {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()} == before


def test_works_on_a_connection_without_the_macros():
    import duckdb

    plain = duckdb.connect()
    plain.execute("SET TimeZone='UTC'")
    try:
        _, rows = run(plain, [rline("A", 1005, 2, ccy="KWD")], [])
        assert "1.005 KWD" in rows[0]["detail"]
    finally:
        plain.close()


MIXED_REPORT = [rline("A", 100, 2), rline("B", 100, 3), rline("B", 100, 4), rline("C", 300, 5),
                rline("D", 50, 6, ccy="EUR"), rline("R1", -60, 7, rt="REFUND", original_merchant_ref_id="A"),
                rline("R2", -60, 8, rt="REFUND", original_merchant_ref_id="A"), rline(None, 5, 9),
                rline("S", 1, 10, status="FAIL"), rline("B", 100, 1, file="r0.csv")]
MIXED_LEDGER = [lrow("A", 100, 2), lrow("B", 100, 3), lrow("C", 310, 4), lrow("D", 50, 5), lrow("E", 1, 6),
                lrow("F", 1, 7, status="FAILED"), lrow("R1", -60, 8, rt="REFUND", original_merchant_ref_id="X"),
                lrow("S", 1, 9), lrow("E", 1, 10), lrow(None, 3, 11)]


def test_shuffled_input_gives_identical_output(con):
    first, rows = run(con, MIXED_REPORT, MIXED_LEDGER)
    assert len(rows) == 10 and set(first.counts) == {*EXCEPTION_CLASSES, "matched"}
    rng = random.Random(7)
    for _ in range(5):
        report, ledger = list(MIXED_REPORT), list(MIXED_LEDGER)
        rng.shuffle(report)
        rng.shuffle(ledger)
        again, shuffled = run(con, report, ledger)
        assert shuffled == rows
        assert (again.counts, again.matched) == (first.counts, first.matched)
    stored = con.execute(f"SELECT * FROM {first.table}").fetchall()  # stored in order too
    assert [r[0] for r in stored] == [r["exception_class"] for r in rows]


def test_reconcile_family_unions_the_configured_reports(con):
    report = [rline("A", 100, 2), rline("A", 100, 2, report="settlement_detail", file="s1.csv"),
              rline("B", 7, 3, report="settlement_detail", file="s1.csv")]
    ledger = [lrow("A", 100, 2)]
    con.register("report_in", pa.Table.from_pylist(report, schema=REPORT_LINE))
    con.register("ledger_in", pa.Table.from_pylist(ledger, schema=LEDGER_LINE))
    result = reconcile_family(con, "report_in", "(SELECT * FROM ledger_in)", ReconcileConfig(), "antom")
    rows = result.arrow().to_pylist()
    assert [(r["report"], r["exception_class"], r["match_key"]) for r in rows] == [
        ("settlement_detail", "missing_in_ledger", "B")]
    assert set(result.parts) == {"transaction_detail", "settlement_detail"}
    assert result.matched == 2 and result.counts["missing_in_ledger"] == 1
    assert result.window == (date(2024, 1, 1), date(2024, 1, 1))
    result.close()
    assert not [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
                if t.startswith("_ar_")]
    empty = reconcile_family(con, "report_in", "ledger_in", ReconcileConfig(match_reports={}), "antom")
    assert empty.arrow().num_rows == 0 and empty.matched == 0


# ------------------------------------------------------------------------------------ property test

CURRENCIES = ("JPY", "USD", "KWD")
OPS = ("keep", "drop", "dup", "amount", "currency", "relink")


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list, list, set, int]:
    """A random ledger, a report derived from it with random changes, and the exceptions they must cause."""
    n_pay = draw(st.integers(1, 12))
    ledger: list[dict[str, Any]] = []
    report: list[dict[str, Any]] = []
    expected: set[tuple[str, str, str, str]] = set()
    day0 = datetime(2024, 3, 1, tzinfo=UTC) - timedelta(hours=8)  # 2024-03-01 00:00 UTC+8
    for p in range(n_pay):
        ccy = draw(st.sampled_from(CURRENCIES))
        amount = draw(st.integers(1000, 10**9))
        records = [("PAYMENT", f"P{p}", amount, None)]
        for q in range(draw(st.integers(0, 2))):  # refunds stay within half the payment
            records.append(("REFUND", f"P{p}R{q}", -draw(st.integers(1, amount // 4)), f"P{p}"))
        for rt, key, amt, link in records:
            at = day0 + timedelta(seconds=draw(st.integers(0, 3 * 86400 - 1)))
            row = lrow(key, amt, len(ledger) + 2, rt=rt, ccy=ccy, at=at, original_merchant_ref_id=link)
            ledger.append(row)
            op = draw(st.sampled_from(OPS if rt == "REFUND" else OPS[:5]))
            line = {**rline(key, amt, 0, rt=rt, ccy=ccy, at=at, original_merchant_ref_id=link)}
            if op == "drop":
                expected.add(("missing_in_report", "NOT_IN_REPORT", key, rt))
                continue
            if op == "amount":
                line["amount_minor"] = amt + draw(st.sampled_from([1, -1, 100]))
                expected.add(("amount_mismatch", "AMOUNT_MISMATCH", key, rt))
            elif op == "currency":
                line["amount_currency"] = next(c for c in CURRENCIES if c != ccy)
                expected.add(("currency_mismatch", "CURRENCY_MISMATCH", key, rt))
            elif op == "relink":
                line["original_merchant_ref_id"] = "ELSEWHERE"
                expected.add(("link_mismatch", "REFUND_ORIGINAL_MISMATCH", key, rt))
            report.append(line)
            if op == "dup":
                report.append(dict(line))
                expected.add(("duplicate_in_report", "DUPLICATE_KEY", key, rt))
    for x in range(draw(st.integers(0, 3))):  # lines the ledger never had
        report.append(rline(f"X{x}", draw(st.integers(1, 10**6)), 0, ccy="USD", at=day0 + timedelta(hours=1)))
        expected.add(("missing_in_ledger", "NOT_IN_LEDGER", f"X{x}", "PAYMENT"))
    outside = draw(st.integers(0, 3))
    for o in range(outside):  # ledger rows of another week: counted, never reported
        ledger.append(lrow(f"O{o}", 5, len(ledger) + 2, at=day0 + timedelta(days=10)))
    order = draw(st.permutations(range(len(report))))
    report = [{**report[i], "line_no": n + 2} for n, i in enumerate(order)]
    return report, ledger, expected, outside


@given(worlds())
def test_every_injected_change_is_found_exactly_once(con, world):
    report, ledger, expected, outside = world
    result, rows = run(con, report, ledger, window=(date(2024, 3, 1), date(2024, 3, 3)))
    result.close()
    found = [(r["exception_class"], r["reason_code"], r["match_key"], r["record_type"]) for r in rows]
    assert sorted(found) == sorted(expected)
    assert len(found) == len(set(found))
    assert result.out_of_window == outside
    assert sum(result.counts[c] for c in EXCEPTION_CLASSES) == len(rows)


# ------------------------------------------------------------------ the fast path's exactness (match.py _Run)


def test_keyless_refund_still_counts_against_its_payment(con):
    # the payment agrees with the ledger, so the key pass does not fetch it; the keyless refund must bring it in
    report = [rline("P1", 1000, 2), rline(None, -1500, 3, rt="REFUND", original_merchant_ref_id="P1"),
              rline("P2", 500, 4), rline("R2", -100, 5, rt="REFUND", original_merchant_ref_id="P2")]  # within P2
    ledger = [lrow("P1", 1000, 2), lrow("P2", 500, 4), lrow("R2", -100, 5, rt="REFUND", original_merchant_ref_id="P2")]
    result, rows = run(con, report, ledger)
    assert brief(rows) == [
        ("missing_in_ledger", "NO_MATCH_KEY", None, "REFUND", [("r1.csv", 3)], []),
        ("refund_exceeds_payment", "REFUNDS_EXCEED_PAYMENT", "P1", "PAYMENT", [("r1.csv", 2), ("r1.csv", 3)],
         [("ledger.csv", 2)]),
    ]
    assert "15.00 USD" in rows[1]["detail"]
    assert result.matched == 3


def test_ledger_rows_outside_the_window_take_part_only_with_a_report_key(con):
    outside = datetime(2024, 1, 5, 4, tzinfo=UTC)
    report = [rline("A", 100, 2)]
    ledger = [lrow("A", 100, 2), lrow("A", 100, 3, at=outside),   # the report has A: both rows count
              lrow("B", 100, 4), lrow("B", 100, 5, at=outside),   # B only in the ledger: the outside row does not
              lrow(None, 7, 6, at=outside), lrow("C", 9, 7, at=outside, status="FAILED")]
    result, rows = run(con, report, ledger)
    assert brief(rows) == [
        ("duplicate_in_ledger", "DUPLICATE_KEY", "A", "PAYMENT", [("r1.csv", 2)],
         [("ledger.csv", 2), ("ledger.csv", 3)]),
        ("missing_in_report", "NOT_IN_REPORT", "B", "PAYMENT", [], [("ledger.csv", 4)]),
    ]
    assert result.out_of_window == 3 and result.matched == 0


def _colliding(con, monkeypatch, macro: str) -> None:
    from alirecon.recon import match

    con.execute(f"CREATE OR REPLACE TEMP MACRO ar_test_hash(a, b) AS {macro}")
    monkeypatch.setattr(match._Run, "key_hash", "ar_test_hash")


@pytest.mark.parametrize("macro", ["CAST(42 AS UBIGINT)", "CAST(hash(a, b) % 3 AS UBIGINT)"])
def test_key_hash_collisions_change_nothing(con, monkeypatch, macro):
    # the key pass groups by a hash of the key; keys that collide must still be decided one by one
    refunds = [rline("P1", 1000, 11), rline("R5", -700, 12, rt="REFUND", original_merchant_ref_id="P1"),
               rline("R6", -400, 13, rt="REFUND", original_merchant_ref_id="P1")]
    report, ledger = [*MIXED_REPORT, *refunds], [*MIXED_LEDGER, lrow("P1", 1000, 12)]
    expected, expected_rows = run(con, report, ledger)
    assert {r["exception_class"] for r in expected_rows} >= {"refund_exceeds_payment", "duplicate_in_report"}
    _colliding(con, monkeypatch, macro)
    again, rows = run(con, report, ledger)
    assert rows == expected_rows
    assert (again.counts, again.matched, again.out_of_window) == (expected.counts, expected.matched,
                                                                  expected.out_of_window)


@pytest.mark.parametrize("keep_order", [True, False])
def test_the_callers_insertion_order_setting_is_restored(con, keep_order):
    con.execute(f"SET preserve_insertion_order = {str(keep_order).lower()}")
    run(con, [rline("A", 1, 2)], [lrow("B", 1, 2)])
    assert con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0] is keep_order
