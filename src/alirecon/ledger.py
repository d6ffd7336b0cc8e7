"""Reading the user's own records (CSV, XLSX, Parquet) through a column mapping.

Why: a ledger is one more table of columns, so it goes through the same declarative engine as every
provider report (``formats.engine``): a ``Layout`` is built from ``LedgerConfig.columns`` with Columns named
by the user's own headers, so a bad ledger cell gets exactly the typed error a bad report cell gets (file,
line, column), money is parsed exactly, and unknown columns are kept in ``extras``.

Conventions:

- Every mapped column must be in the header (``missing_column`` otherwise); ``amount``, its currency and
  ``record_type`` must be filled on every row. Identifiers may be empty (the matcher reports such rows).
- Canonical amounts are signed: PAYMENT +, REFUND -. ``refund_sign = "as_written"`` takes the ledger's signs;
  ``"negate_reverse_types"`` negates ``reverse_types`` rows (amount and settlement) and refuses a reverse row
  written negative (``bad_value``), since the two conventions cannot be told apart from the numbers.
  Fees are kept as written (their sign differs by provider: antom.md 9).
- ``ledger_row``: for CSV the physical line number of the record's first line (header = line 1, so a user
  opens the file at that line); for XLSX the sheet row; for Parquet the 1-based row index.
- ``occurred_at`` accepts ISO 8601 timestamps and bare ``yyyy-MM-dd`` dates (midnight); without an offset a
  value is taken in ``default_offset_minutes`` (UTC+8 by default, the providers' clearing zone).
- Parquet: DECIMAL, integer and VARCHAR money columns are read exactly (a DECIMAL's scale zeros are not
  "decimals written": ``DECIMAL(18,4) 100.0000`` JPY is 100); FLOAT/DOUBLE money columns are refused
  (``bad_column_type``): a float may already have lost the cent. ``TIMESTAMP WITH TIME ZONE`` values keep
  their instant (shown in the default offset; Parquet does not keep the writer's offset); naive
  ``TIMESTAMP`` values are taken in ``default_offset_minutes``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from . import errors
from .config import LEDGER_CURRENCY_FIELDS, LEDGER_MONEY_FIELDS, LEDGER_TEXT_FIELDS, LedgerConfig
from .formats.base import TableReport, Variant
from .formats.engine import (
    FAST_PATH_MIN_ROWS,
    BodyResult,
    Column,
    Compiled,
    Kind,
    Layout,
    ParsedFile,
    ParseOptions,
    SourceFile,
    _empty_select,
    _ident,
    _sql_str,
    _tmp_name,
    compile_layout,
    new_connection,
    resolve_header,
    rule_problems,
    schema_select,
    sort_problems,
)
from .money import MoneyError, exponent
from .schema import LEDGER_LINE

__all__ = ["ParsedLedger", "ledger_layout", "read_ledger"]

CSV_EXTENSIONS = (".csv", ".txt", ".xlsx")
PARQUET_EXTENSIONS = (".parquet", ".pq")
_FLOAT_TYPES = ("FLOAT", "DOUBLE", "REAL", "FLOAT4", "FLOAT8")
# hidden outputs: the raw text of a reverse-type amount written negative under negate_reverse_types
_NEGATIVE_REVERSE = {"amount": "__negative_reverse_amount", "settlement": "__negative_reverse_settlement"}


@dataclass
class ParsedLedger(errors.WithProblems):
    """One parsed ledger file: its problems and its rows (a DuckDB table) as ``schema.LEDGER_LINE``."""

    path: Path
    name: str
    ledger: str  # LedgerConfig.name
    sha256: str = ""
    size: int = 0
    header: list[str] = field(default_factory=list)
    row_count: int = 0
    problems: list[errors.FormatError] = field(default_factory=list)
    con: duckdb.DuckDBPyConnection | None = None
    table: str | None = None
    line_sql: str = "__line"  # SQL giving ``ledger_row`` for each row of ``table``
    columns: frozenset[str] = frozenset()  # LedgerLine fields present in ``table``
    extras_names: tuple[str, ...] = ()  # the header name of each element of a row's ``extras`` array
    constants: dict[str, str] = field(default_factory=dict)  # fields fixed by the configuration (SQL)
    _owned: list[str] = field(default_factory=list)
    _parsed: ParsedFile | None = None

    def lines_sql(self) -> str:
        """A SELECT giving the rows with exactly the ``schema.LEDGER_LINE`` columns."""
        if self.table is None:
            return _empty_select(LEDGER_LINE)
        constants = {**self.constants, "source_sha256": _sql_str(self.sha256), "source_name": _sql_str(self.name),
                     "ledger_row": self.line_sql}
        return schema_select(LEDGER_LINE, self.table, self.columns, constants)

    def lines_arrow(self) -> pa.Table:
        if self.con is None or self.table is None:
            return LEDGER_LINE.empty_table()
        return self.con.sql(self.lines_sql() + " ORDER BY ledger_row").to_arrow_table().cast(LEDGER_LINE)

    def close(self) -> None:
        if self._parsed is not None:
            self._parsed.close()
        if self.con is not None:
            for t in self._owned:
                self.con.execute(f"DROP TABLE IF EXISTS {t}")
        self._owned.clear()

    def __enter__(self) -> ParsedLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _mapping_sql(column_ref: str, mapping: dict[str, str]) -> str:
    """The user's value -> canonical value (case-insensitive); unmapped values upper-cased."""
    if not mapping:
        return f"upper({column_ref})"
    whens = " ".join(f"WHEN {_sql_str(k.lower())} THEN {_sql_str(v.upper())}" for k, v in sorted(mapping.items()))
    return f"(CASE lower({column_ref}) {whens} ELSE upper({column_ref}) END)"


def ledger_layout(config: LedgerConfig) -> Layout:
    """The engine layout of a ledger: Columns named by the user's headers, outputs = LedgerLine fields."""
    m = config.columns
    columns: dict[str, Column] = {}

    def add(column: Column) -> None:
        prev = columns.get(column.name)
        if prev is None:
            columns[column.name] = column
        elif prev.kind is not column.kind or prev.currency != column.currency:
            raise errors.ConfigError(f"ledger column {column.name!r} is mapped to fields of different kinds")
        elif column.nonempty and not prev.nonempty:
            columns[column.name] = column

    for fld in LEDGER_TEXT_FIELDS:
        if fld in m:
            add(Column(m[fld], Kind.TEXT, required=True, nonempty=fld == "record_type", source=f"ledger {fld}"))
    base_ccy = tuple([m["currency"]] if "currency" in m else []) + (
        (f"={config.currency}",) if config.currency is not None else ())
    for fld in LEDGER_CURRENCY_FIELDS:
        if fld in m:
            add(Column(m[fld], Kind.CURRENCY, required=True, nonempty=fld == "currency" and "amount" in m,
                       source=f"ledger {fld}"))
    for fld in LEDGER_MONEY_FIELDS:
        if fld in m:
            own = f"{fld}_currency"
            ccy = (m[own], *base_ccy) if own in m else base_ccy
            add(Column(m[fld], Kind.AMOUNT, required=True, nonempty=fld == "amount", currency=ccy,
                       unit=config.amount_unit, source=f"ledger {fld}"))
    if "occurred_at" in m:
        add(Column(m["occurred_at"], Kind.TIMESTAMP, required=True, date_ok=True, source="ledger occurred_at"))

    def ref(fld: str) -> str:
        return "{" + m[fld] + "}"

    outputs: dict[str, str] = {}
    if "family" in m:
        outputs["family"] = f"coalesce(lower({ref('family')}), {_sql_or_null(config.family)})"
    if "account_id" in m:
        outputs["account_id"] = f"coalesce({ref('account_id')}, {_sql_or_null(config.account_id)})"
    record_type = _mapping_sql(ref("record_type"), config.record_types) if "record_type" in m else None
    for fld in ("provider_txn_id", "merchant_ref_id", "order_id", "original_provider_txn_id",
                "original_merchant_ref_id"):
        if fld in m:
            outputs[fld] = ref(fld)
    if record_type is not None:
        outputs["record_type"] = record_type
    if "status" in m:
        outputs["status"] = _mapping_sql(ref("status"), config.statuses)
    negate = config.refund_sign == "negate_reverse_types" and record_type is not None
    reverse = ", ".join(_sql_str(t.upper()) for t in config.reverse_types) or "NULL"
    for fld in LEDGER_MONEY_FIELDS:
        if fld not in m:
            continue
        value = ref(fld)
        if negate and fld in _NEGATIVE_REVERSE:
            outputs[f"{fld}_minor"] = f"(CASE WHEN {record_type} IN ({reverse}) THEN -({value}) ELSE {value} END)"
            outputs[_NEGATIVE_REVERSE[fld]] = (
                f"(CASE WHEN {record_type} IN ({reverse}) AND {value} < 0 THEN {{{m[fld]}:raw}} END)"
            )
        else:
            outputs[f"{fld}_minor"] = value
        own = f"{fld}_currency" if fld != "amount" else "currency"
        currency = [ref(own)] if own in m else []
        if fld != "amount" and "currency" in m:
            currency.append(ref("currency"))
        if config.currency is not None:
            currency.append(_sql_str(config.currency))
        chosen = currency[0] if len(currency) == 1 else f"coalesce({', '.join(currency)})"
        outputs[f"{fld}_currency"] = f"(CASE WHEN {value} IS NOT NULL THEN {chosen} END)"
    if "occurred_at" in m:
        outputs["occurred_at"] = ref("occurred_at")
        outputs["occurred_offset_min"] = "{" + m["occurred_at"] + ":offset}"
    return Layout(
        name=f"ledger.{config.name}",
        columns=tuple(columns.values()),
        outputs=outputs,
        amount_unit=config.amount_unit,
        null_tokens=tuple(config.null_values),
        default_offset_minutes=config.default_offset_minutes,
    )


def ledger_constants(config: LedgerConfig) -> dict[str, str]:
    """LedgerLine fields the configuration fixes for every row (SQL literals): not stored per row."""
    out: dict[str, str] = {}
    if "family" not in config.columns and config.family is not None:
        out["family"] = _sql_str(config.family.lower())
    if "account_id" not in config.columns and config.account_id is not None:
        out["account_id"] = _sql_str(config.account_id)
    return out


def _sql_or_null(value: str | None) -> str:
    return "CAST(NULL AS VARCHAR)" if value is None else _sql_str(value)


def read_ledger(path: Path, config: LedgerConfig, con: duckdb.DuckDBPyConnection | None = None,
                options: ParseOptions | None = None, *, name: str | None = None) -> ParsedLedger:
    """Parse one ledger file (CSV/XLSX/Parquet by extension) into LedgerLine rows, collecting typed problems."""
    options = options or ParseOptions()
    con = con or new_connection(exponents=options.exponents)
    path = Path(path)
    name = name or path.name
    if config.currency is not None:
        try:
            exponent(config.currency, options.exponents)
        except MoneyError as exc:
            raise errors.ConfigError(f"ledger {config.name!r}: fixed currency: {exc}") from None
    layout = ledger_layout(config)
    suffix = path.suffix.lower()
    if suffix in PARQUET_EXTENSIONS:
        ledger = _read_parquet(path, layout, config, con, options, name)
    elif suffix in CSV_EXTENSIONS:
        ledger = _read_table(path, layout, config, con, options, name)
    else:
        facts = SourceFile.scan(path)
        ledger = ParsedLedger(path, name, config.name, facts.sha256, facts.size, con=con)
        ledger.problems.append(errors.UnknownFormat(
            f"a ledger must be .csv, .xlsx or .parquet, not {suffix or 'no extension'!r}", file=name,
            expected="csv, xlsx or parquet", found=suffix))
    ledger.constants = ledger_constants(config)
    if ledger.table is not None:
        ledger.problems.extend(_negative_reverse_problems(ledger, layout, config, options))
    ledger.problems = sort_problems(ledger.problems, options.max_problems)
    return ledger


def _read_table(path: Path, layout: Layout, config: LedgerConfig, con: duckdb.DuckDBPyConnection,
                options: ParseOptions, name: str) -> ParsedLedger:
    """CSV and XLSX go through the report driver itself (header checks, exact line numbers, rules)."""
    driver = TableReport(family="ledger", report=config.name, name_re=re.compile(r".*", re.DOTALL),
                         variants=(Variant("ledger", layout),), trailer="none",
                         extensions=CSV_EXTENSIONS, delimiter=config.csv_delimiter)
    parsed = driver.parse(path, con, options, name=name)
    ledger = ParsedLedger(path, name, config.name, parsed.sha256, parsed.size, list(parsed.header),
                          parsed.row_count, list(parsed.problems), con, _parsed=parsed)
    if parsed.body is not None:
        ledger.table, ledger.line_sql, ledger.columns = parsed.body.table, parsed.body.line_sql, parsed.body.columns
        ledger.extras_names = parsed.body.extras_names
    return ledger


def _parquet_text(column: str, duck_type: str, offset_minutes: int) -> str:
    """A Parquet value as the text the engine's rules expect (exact, never through float)."""
    c = _ident(column)
    t = duck_type.upper()
    if t.startswith("DECIMAL"):
        text = f"CAST({c} AS VARCHAR)"
        return f"(CASE WHEN contains({text}, '.') THEN rtrim(rtrim({text}, '0'), '.') ELSE {text} END)"
    if t.startswith("TIMESTAMP WITH TIME ZONE") or t == "TIMESTAMPTZ":
        sign = "-" if offset_minutes < 0 else "+"
        suffix = f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"
        shifted = f"make_timestamp(epoch_us({c}) + {offset_minutes * 60_000_000})"
        return f"(strftime({shifted}, '%Y-%m-%dT%H:%M:%S.%f') || {_sql_str(suffix)})"
    if t.startswith("TIMESTAMP"):
        return f"strftime(CAST({c} AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%f')"
    if t == "DATE":
        return f"strftime({c}, '%Y-%m-%d')"
    return f"CAST({c} AS VARCHAR)"


def _read_parquet(path: Path, layout: Layout, config: LedgerConfig, con: duckdb.DuckDBPyConnection,
                  options: ParseOptions, name: str) -> ParsedLedger:
    facts = SourceFile.scan(path)
    ledger = ParsedLedger(path, name, config.name, facts.sha256, facts.size, con=con)
    scan = f"read_parquet({_sql_str(str(path))}, file_row_number=true)"
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()
    except duckdb.Error as exc:
        ledger.problems.append(errors.FormatError(f"unreadable Parquet file: {exc}"[:300], file=name,
                                                  expected="a Parquet file"))
        return ledger
    columns = [(str(d[0]), str(d[1])) for d in described if d[0] != "file_row_number"]
    header = [c for c, _ in columns]
    ledger.header = header
    found, header_problems = resolve_header(layout, header)
    messages = {"missing_column": "mapped column {!r} is not in the file",
                "duplicate_column": "column {!r} appears more than once", "empty_header_cell": "a column has no name{}"}
    for code, col, idx in header_problems:
        ledger.problems.append(errors.problem_class(code)(
            messages.get(code, code + " {!r}").format(col), file=name, column=col or None,
            column_index=idx + 1 if idx >= 0 else None, expected="the mapped ledger columns", found=col))
    money = {c.name for c in layout.columns if c.kind is Kind.AMOUNT}
    for col_name, idx in sorted(found.items(), key=lambda kv: kv[1]):
        duck_type = columns[idx][1]
        if col_name in money and duck_type.upper() in _FLOAT_TYPES:
            ledger.problems.append(errors.BadColumnType(
                f"money column {header[idx]!r} is {duck_type}: a float cannot hold money exactly",
                file=name, column=header[idx], column_index=idx + 1,
                expected="DECIMAL, an integer type or VARCHAR", found=duck_type))
    if not ledger.ok:
        return ledger
    compiled = compile_layout(layout, header)
    texts = ", ".join(f"{_parquet_text(c, t, config.default_offset_minutes)} AS c{i}"
                      for i, (c, t) in enumerate(columns))
    source = f"(SELECT {texts}, file_row_number + 1 AS __line FROM {scan})"
    table = _tmp_name("ledger")
    rows = int(con.execute(f"SELECT count(*) FROM {scan}").fetchall()[0][0])  # from the metadata; every row is kept
    fast = rows >= FAST_PATH_MIN_ROWS
    con.execute(f"CREATE TEMP TABLE {table} AS {compiled.query(source, ('__line',), fast=fast)} ORDER BY __line")
    ledger._owned.append(table)
    ledger.table, ledger.line_sql, ledger.columns = table, "__line", compiled.outputs
    ledger.extras_names = compiled.extras_names
    ledger.row_count = rows
    ledger.problems.extend(_rule_problems(ledger, compiled, source, options))
    return ledger


def _rule_problems(ledger: ParsedLedger, compiled: Compiled, source: str,
                   options: ParseOptions) -> list[errors.FormatError]:
    """Detailed cell problems through the engine's ``rule_problems`` (only flagged rows are looked at)."""
    assert ledger.con is not None and ledger.table is not None
    con = ledger.con
    if not con.execute(f"SELECT count(*) FILTER (WHERE __bad IS NOT NULL OR __warn IS NOT NULL) "
                       f"FROM {ledger.table}").fetchall()[0][0]:
        return []

    def raw_source() -> str:
        # same order as the body table, so rowids line up (rule_problems reads cells by rowid)
        raw = _tmp_name("raw")
        columns = ", ".join(f"c{i}" for i in range(len(ledger.header)))
        con.execute(f"CREATE TEMP TABLE {raw} AS SELECT {columns} FROM {source} ORDER BY __line")
        ledger._owned.append(raw)
        return raw

    body = BodyResult(ledger.table, ledger.row_count, ledger.line_sql, [], ledger.columns)
    return rule_problems(con, body, compiled, raw_source, name=ledger.name, limit=options.max_problems)


def _negative_reverse_problems(ledger: ParsedLedger, layout: Layout, config: LedgerConfig,
                               options: ParseOptions) -> list[errors.FormatError]:
    """Under ``negate_reverse_types`` a reverse row written negative is ambiguous: refuse it, do not guess."""
    present = [(fld, col) for fld, col in _NEGATIVE_REVERSE.items() if col in ledger.columns]
    if not present or ledger.con is None or ledger.table is None:
        return []
    found, _ = resolve_header(layout, ledger.header)
    out: list[errors.FormatError] = []
    for fld, hidden in present:
        column = config.columns[fld]
        rows = ledger.con.execute(
            f"SELECT {ledger.line_sql}, {hidden} FROM {ledger.table} WHERE {hidden} IS NOT NULL "
            f"ORDER BY rowid LIMIT {options.max_problems}").fetchall()
        idx = found.get(column)
        out.extend(
            errors.BadValue(
                f"{column}: a {'/'.join(config.reverse_types)} row written negative while refund_sign is "
                "negate_reverse_types (the ledger would mix both sign conventions)",
                file=ledger.name, line=int(line), column=column, column_index=None if idx is None else idx + 1,
                expected="a positive amount (its type makes it negative)", found=str(raw))
            for line, raw in rows
        )
    return out

