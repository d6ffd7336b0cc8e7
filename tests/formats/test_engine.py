"""The engine's clean-row fast path judges every row exactly as the full rule CASE does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alirecon.formats import engine
from alirecon.formats.engine import (
    Column,
    Kind,
    Layout,
    ParseOptions,
    _first_broken,
    compile_layout,
    extras_dict,
    new_connection,
)

COLUMNS = (
    Column("cny", Kind.AMOUNT, nonempty=True, currency=("=CNY",)),
    Column("jpy", Kind.AMOUNT, currency=("=JPY",)),
    Column("by_column", Kind.AMOUNT, currency=("ccy",)),
    Column("ccy", Kind.CURRENCY),
    Column("fen", Kind.AMOUNT, unit="minor", currency=("=CNY",), nonnegative=True),
    Column("count", Kind.INTEGER),
    Column("rate", Kind.DECIMAL),
    Column("at", Kind.TIMESTAMP, nonempty=True),
    Column("day", Kind.TIMESTAMP, date_ok=True),
    Column("note", Kind.TEXT, max_length=5),
)
LAYOUT = Layout("test.fast_path", COLUMNS, {"amount_minor": "{cny}"})
HEADER = [c.name for c in COLUMNS]

# Near-misses of every pattern: decimals, signs, digit counts at the DECIMAL(18,4) / BIGINT edges, times that
# match the regex but do not exist, the joining character itself, formulas.
NEAR_MISSES = [
    "0", "1.00", "1.005", "-1.5", "+2", "1.", ".5", "1e3", "-", "99999999999999.99", "999999999999999",
    "9999999999999.99999", "123456789012345678", "1234567890123456789", "9999999999999999999",
    "1.123456789012345678", "1.1234567890123456789", "CNY", "cny", "XXX", "JPY", "\x1f", "1\x1f2",
    "2026-09-03 10:00:00", "2026-02-30 10:00:00", "2026-09-03T10:00:00+08:00", "2026-09-03", "2026-09-03 24:00:00",
    "=1+1", "+cmd", "-1", "abcdef", "中文", "@x", " 1.00", "99999999999999.9999", "-99999999999999",
    "999999999999999999999", "12345678901234567890.5", "+1.00"
]
cells = st.one_of(st.none(), st.sampled_from(NEAR_MISSES), st.text(alphabet="0123456789.-+ :TZ", max_size=25))


def _first_broken_rules(con: duckdb.DuckDBPyConnection, rows: list[list[Any]], *, fast: bool) -> list[Any]:
    compiled = compile_layout(LAYOUT, HEADER)
    table = pa.table({"__i": pa.array(range(len(rows)), pa.int64()),
                      **{f"c{i}": pa.array([r[i] for r in rows], pa.string()) for i in range(len(HEADER))}})
    con.register("cells", table)
    errs = [r for r in compiled.rules if r.severity == "error"]
    bad = compiled.bad_fast_sql if fast else _first_broken(errs, compiled.rules)
    try:
        return [v for (v,) in con.execute(
            f"SELECT {bad} FROM {compiled.values('cells', ('__i',))} ORDER BY __i").fetchall()]
    finally:
        con.unregister("cells")


CLEAN = ["1.00", "5", "-2.50", "USD", "7", "12", "0.5", "2026-09-03 10:00:00", "2026-09-03", "ok"]


@st.composite
def rows_near_clean(draw: st.DrawFn) -> list[Any]:
    """A clean row with one or two cells replaced: a broken rule then decides the row alone."""
    row = list(CLEAN)
    for i in draw(st.lists(st.integers(0, len(HEADER) - 1), min_size=1, max_size=2)):
        row[i] = draw(cells)
    return row


@settings(max_examples=150)
@given(rows=st.lists(rows_near_clean(), min_size=1, max_size=20))
def test_fast_path_flags_exactly_the_rows_the_rules_flag(con: duckdb.DuckDBPyConnection, rows: list[list[Any]]) -> None:
    assert "regexp_full_match(concat(" in compile_layout(LAYOUT, HEADER).bad_fast_sql  # the fast path is in use
    assert _first_broken_rules(con, [CLEAN], fast=True) == [None]
    fast = _first_broken_rules(con, rows, fast=True)
    full = _first_broken_rules(con, rows, fast=False)
    assert [v is None for v in fast] == [v is None for v in full]


def test_fast_path_on_every_near_miss_in_every_column(con: duckdb.DuckDBPyConnection) -> None:
    rows = [[*CLEAN[:i], value, *CLEAN[i + 1:]] for i in range(len(HEADER)) for value in [None, *NEAR_MISSES]]
    fast = _first_broken_rules(con, rows, fast=True)
    full = _first_broken_rules(con, rows, fast=False)
    assert [v is None for v in fast] == [v is None for v in full]
    assert 0 < fast.count(None) < len(rows)


def test_an_exponent_override_is_honoured_by_the_fast_path() -> None:
    """The decimals bound of a constant currency assumes its ISO exponent; the guard sends rows to the full rules
    when the workspace overrides it (CNY with 3 decimals: 1.005 is then clean, 1.0005 is not)."""
    row = ["1.005", None, None, None, None, None, None, "2026-09-03 10:00:00", None, None]
    plain, override = new_connection(), new_connection(exponents={"CNY": 3})
    try:
        assert _first_broken_rules(plain, [row], fast=True) != [None]
        assert _first_broken_rules(override, [row], fast=True) == [None]
        assert _first_broken_rules(override, [[*row[:0], "1.0005", *row[1:]]], fast=True) != [None]
    finally:
        plain.close()
        override.close()


def test_extras_dict_pairs_the_array_with_the_file_names() -> None:
    assert extras_dict('["a", null, "c"]', ("x", "y", "z")) == {"x": "a", "z": "c"}
    assert extras_dict('["a", "b"]', ("x", "x")) == {"x": "b"}  # a header named twice: the later cell, as before
    assert extras_dict('{"x": "a", "y": null}', None) == {"x": "a"}  # loaded before extras became arrays
    assert extras_dict(None, ("x",)) == {}
    with pytest.raises(ValueError, match="2 texts need their 2 header names"):
        extras_dict('["a", "b"]', ("x",))
    with pytest.raises(ValueError, match="need their"):
        extras_dict('["a"]', None)


def test_compiled_extras_are_a_json_array_in_header_order() -> None:
    layout = Layout("test.extras", (Column("amount", Kind.AMOUNT, currency=("=CNY",)),), {"amount_minor": "{amount}"})
    header = ["memo", "amount", 'note "q"']
    compiled = compile_layout(layout, header)
    assert compiled.extras_names == ("memo", 'note "q"')
    con = new_connection()
    con.register("src", pa.table({"c0": ["a\tb", None], "c1": ["1.00", "2.00"], "c2": ['x"y\\', "中文"]}))
    got = [e for (e,) in con.execute(f"SELECT extras FROM ({compiled.query('src')})").fetchall()]
    assert got == ['["a\\tb","x\\"y\\\\"]', '[null,"中文"]']  # JSON escapes; an empty cell is null
    assert [extras_dict(e, compiled.extras_names) for e in got] == [
        {"memo": "a\tb", 'note "q"': 'x"y\\'}, {'note "q"': "中文"}]


def test_only_large_files_take_the_fast_path_and_both_flag_the_same_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path doubles a query's planning time (a tiny file: ~0.1 s -> ~0.3 s), so ``read_csv_body`` takes
    it from ``_SMALL_FILE`` bytes; a file read both ways gives the same flags."""
    rows = [CLEAN, *([*CLEAN[:k], miss, *CLEAN[k + 1:]] for k in range(len(HEADER)) for miss in ("1.005", "x"))]
    path = tmp_path / "t.csv"
    path.write_text(",".join(HEADER) + "\n" + "".join(",".join(r) + "\n" for r in rows))
    queries: list[str] = []
    create = engine.create_table
    monkeypatch.setattr(engine, "create_table", lambda con, table, query, *, small: (
        queries.append(query), create(con, table, query, small=small))[1])

    def flags() -> list[tuple[Any, Any]]:
        con = new_connection()
        body, _ = engine.read_csv_body(con, path, name=path.name, header=HEADER,
                                       compiled=compile_layout(LAYOUT, HEADER), header_lines=1, facts_thread=None,
                                       trailer_offset=None, options=ParseOptions())
        return con.execute(f"SELECT __bad, __warn FROM {body.table} ORDER BY rowid").fetchall()

    small = flags()
    monkeypatch.setattr(engine, "_SMALL_FILE", 0)
    large = flags()
    assert ["regexp_full_match(concat(" in q for q in queries] == [False, True]
    assert small == large and small[0] == (None, None) and sum(bad is not None for bad, _ in small) > len(HEADER)
