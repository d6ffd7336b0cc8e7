"""The one engine that reads every report: declarative columns in, validated canonical rows out.

Why this shape: a report is described by a table of ``Column`` s (name, kind, required, length,
allowed values, canonical field) and a mapping of canonical fields to expressions over those columns.
The engine compiles that description to a single DuckDB query, so a 10-million-line settlement file
is validated and normalised column-wise in one pass, while a two-line summary section goes through
exactly the same rules. Columns are found by header name; unknown columns are kept in ``extras``.

Every cell that breaks a rule becomes a typed ``FormatError`` with file, physical line and column.
Line numbers are exact: from the record index when the file has no quotes and no blank lines, else
from a pass of Python's ``csv`` module over the file that yields the physical start line of each
record (the same RFC 4180 record boundaries DuckDB uses).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import re
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from .. import errors
from ..clock import DATE_RE, TIMESTAMP_RE, UTC8_MINUTES
from ..money import all_exponents
from ..schema import DECLARED, REPORT_LINE

__all__ = [
    "TRAILER",
    "Column",
    "Declared",
    "Kind",
    "Layout",
    "ParseOptions",
    "ParsedFile",
    "SourceFile",
    "compile_layout",
    "convert_rows",
    "new_connection",
    "read_csv_body",
    "read_head_lines",
    "read_xlsx_rows",
    "resolve_header",
]

TRAILER = "<END>"
_MB = 1024 * 1024
_SPLIT_RE = re.compile(r"\{([^{}]+)\}")
_MAJOR_RE = r"[+-]?[0-9]+(\.[0-9]+)?"
_MINOR_RE = r"[+-]?[0-9]+"
_OFFSET_TAIL_RE = r"(Z|[+-][0-9]{2}:?[0-9]{2})$"
# A cell a spreadsheet would evaluate: =, @, tab/CR prefix, or +/- followed by something that is not
# a number ("-cmd|' /C calc'!A0"). Plain signed numbers stay legal.
_FORMULA_RE = r"^([=@\t\r]|[+-][^0-9. ])"


class Kind(StrEnum):
    TEXT = "text"
    INTEGER = "integer"
    AMOUNT = "amount"
    CURRENCY = "currency"
    TIMESTAMP = "timestamp"
    DATE = "date"
    COMPACT_DATE = "compact_date"
    DECIMAL = "decimal"
    ENUM = "enum"


@dataclass(frozen=True)
class Column:
    """One documented column.

    ``required``: must be in the header. ``nonempty``: every row must have a value. ``currency`` (for
    amounts): the column(s) holding the currency, tried in order, or ``@key`` for a value from the file
    name, or ``=XXX`` for a fixed code. ``unit``: ``major`` or ``minor``; ``None`` takes the layout's
    (configurable) default. ``strict``: an enum value outside ``allowed`` is an error, not a warning.
    ``source``: where the fact comes from (spec section), shown in docs and errors.
    """

    name: str
    kind: Kind = Kind.TEXT
    required: bool = False
    nonempty: bool = False
    max_length: int | None = None
    allowed: tuple[str, ...] = ()
    strict: bool = False
    currency: tuple[str, ...] = ()
    unit: str | None = None
    aliases: tuple[str, ...] = ()
    date_ok: bool = False  # TIMESTAMP columns only: a bare yyyy-MM-dd is midnight at the default offset
    source: str = ""
    nonnegative: bool = False  # AMOUNT/INTEGER: a minus sign is an error (the sign lives in another column)


@dataclass(frozen=True)
class Layout:
    """A table: its columns and how they become output fields.

    ``outputs`` maps an output field to a SQL template in which ``{col}`` is the converted value of a
    column (``NULL`` when the header lacks it), ``{col:raw}`` its text, ``{col:offset}`` the UTC offset
    in minutes of a timestamp and ``{@key}`` a value from the file name. A column an output reads leaves
    ``extras``, unless it is named in ``extras_keep`` (read for a side field, its text still worth keeping).
    ``lean_drop``: outputs not needed by checks or matching (e.g. texts kept only to rewrite a file exactly);
    they are left out when ``keep_extras`` is off, which saves memory on very large files.
    """

    name: str
    columns: tuple[Column, ...]
    outputs: Mapping[str, str]
    amount_unit: str = "major"
    null_tokens: tuple[str, ...] = ()
    default_offset_minutes: int = UTC8_MINUTES
    keep_extras: bool = True
    extras_keep: tuple[str, ...] = ()
    lean_drop: tuple[str, ...] = ()

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def with_options(self, *, amount_unit: str | None = None, aliases: Mapping[str, Sequence[str]] | None = None,
                     keep_extras: bool | None = None, fields: Collection[str] | None = None) -> Layout:
        """A copy with configuration applied (unit and header aliases are user-correctable facts).

        ``fields``: keep only these outputs (plus hidden ``col:`` fields other outputs are derived from);
        every column is still validated, only what is stored shrinks."""
        cols = self.columns
        if aliases:
            cols = tuple(
                Column(**{**c.__dict__, "aliases": (*c.aliases, *aliases.get(c.name, ()))}) for c in cols
            )
        keep = self.keep_extras if keep_extras is None else keep_extras
        outputs = self.outputs if keep else {k: v for k, v in self.outputs.items() if k not in self.lean_drop}
        if fields is not None:
            outputs = {k: v for k, v in outputs.items() if k in fields or k.startswith("col:")}
        return Layout(
            name=self.name,
            columns=cols,
            outputs=outputs,
            amount_unit=amount_unit or self.amount_unit,
            null_tokens=self.null_tokens,
            default_offset_minutes=self.default_offset_minutes,
            keep_extras=keep,
            extras_keep=self.extras_keep,
            lean_drop=self.lean_drop,
        )


@dataclass(frozen=True)
class ParseOptions:
    """User-tunable parsing limits and corrections (filled from the workspace config)."""

    max_line_bytes: int = 1 * _MB
    max_problems: int = 200
    exponents: Mapping[str, int] = field(default_factory=dict)
    # (family, report) -> "major" | "minor": the Antom amount unit is contradictory in the docs (antom.md 9)
    amount_units: Mapping[str, str] = field(default_factory=dict)
    # "family.report" -> {documented column: [header names used by this provider]}
    aliases: Mapping[str, Mapping[str, Sequence[str]]] = field(default_factory=dict)
    keep_extras: bool = True
    # "family.report" -> "by_type" | "as_written": refund/fee signs are undocumented (alipayplus.md 6.5 gap 4)
    amount_signs: Mapping[str, str] = field(default_factory=dict)
    # store only these canonical fields (a one-shot reconcile needs the match fields only); None = all
    fields: frozenset[str] | None = None


@dataclass
class Declared:
    """A figure the file states about itself; see ``schema.DECLARED``."""

    scope: str
    figure: str
    value: int | None
    line_no: int
    currency: str | None = None
    batch_id: str | None = None
    direction: str | None = None


def new_connection(database: str = ":memory:", *, exponents: Mapping[str, int] | None = None,
                   threads: int | None = None, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection in UTC with the alirecon SQL macros installed."""
    con = duckdb.connect(database)
    con.execute("SET TimeZone='UTC'")
    if threads:
        con.execute(f"SET threads={int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit='{memory_limit}'")
    install_macros(con, exponents)
    return con


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> Any:
    """The single value of a query (fetches everything, so the connection is free afterwards)."""
    rows = con.execute(sql, params).fetchall() if params is not None else con.execute(sql).fetchall()
    return rows[0][0] if rows else None


def extra_sql(name: str, names: Sequence[str] | None, column: str = "extras") -> str:
    """SQL for the text a line of a file kept in ``extras`` under the header ``name`` (NULL when the cell was
    empty or the file had no such column). ``names``: the file's ``extras_names`` (schema.REPORT_LINE); None
    for lines stored before extras became arrays (a JSON object of header -> text, read by its key)."""
    if names is None:
        path = '$."' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"json_extract_string({column}, {_sql_str(path)})"
    if name not in names:
        return "CAST(NULL AS VARCHAR)"
    return f"json_extract_string({column}, '$[{_last_index(names, name)}]')"


def extras_dict(value: str | None, names: Sequence[str] | None) -> dict[str, str]:
    """The filled cells a line kept in ``extras`` (header -> text): the JSON array paired with the file's
    ``extras_names``, or (lines stored before extras became arrays) the JSON object as it is."""
    if not value:
        return {}
    texts = json.loads(value)
    if isinstance(texts, dict):
        return {k: v for k, v in texts.items() if v is not None}
    if names is None or len(names) != len(texts):
        raise ValueError(f"extras of {len(texts)} texts need their {len(texts)} header names, got {names!r}")
    return {k: v for k, v in zip(names, texts, strict=True) if v is not None}


def _last_index(names: Sequence[str], name: str) -> int:
    """A header named twice: the later cell wins, as it did in a JSON object (and does in ``extras_dict``)."""
    return len(names) - 1 - list(reversed(names)).index(name)


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def install_macros(con: duckdb.DuckDBPyConnection, exponents: Mapping[str, int] | None = None) -> None:
    """SQL helpers shared by every compiled layout (same rules as ``money`` and ``clock``)."""
    table = all_exponents(exponents)
    # One MAP held in a variable: as fast per row as an IN-list CASE, and a small expression to plan (a CASE
    # over 180 codes, inlined at each of a v2 file's 23 currency columns, cost ~0.15 s of planning per file).
    entries = ", ".join(f"{_sql_str(code)}: {exp}" for code, exp in sorted(table.items()))
    con.execute(f"SET VARIABLE ar_exponents = MAP {{{entries}}}")
    con.execute("CREATE OR REPLACE TEMP MACRO ar_exp(c) AS getvariable('ar_exponents')[c]")
    con.execute(
        "CREATE OR REPLACE TEMP MACRO ar_pow10(e) AS "
        "CASE e WHEN 0 THEN 1 WHEN 1 THEN 10 WHEN 2 THEN 100 WHEN 3 THEN 1000 WHEN 4 THEN 10000 END"
    )
    # ``e``: the currency's exponent. Total: garbage gives NULL, never an error (rules flag the row).
    con.execute(
        "CREATE OR REPLACE TEMP MACRO ar_major(v, e) AS CAST(TRY_CAST(v AS DECIMAL(18,4)) * ar_pow10(e) AS BIGINT)"
    )
    # Timestamps that passed clock.TIMESTAMP_RE end in Z, +hh:mm, +hhmm or a digit (no offset: ``d``).
    # Substring tests instead of regular expressions: these run on every row of every time column.
    con.execute(
        "CREATE OR REPLACE TEMP MACRO ar_ts_has_offset(v) AS "
        "(right(v, 1) = 'Z' OR substr(v, -6, 1) IN ('+', '-') OR substr(v, -5, 1) IN ('+', '-'))"
    )
    con.execute(
        "CREATE OR REPLACE TEMP MACRO ar_ts(v, d) AS "
        "TRY_CAST(CASE WHEN ar_ts_has_offset(v) THEN v ELSE v || d END AS TIMESTAMPTZ)"
    )
    con.execute(
        "CREATE OR REPLACE TEMP MACRO ar_ts_offset(v, dm) AS CASE WHEN v IS NULL THEN NULL "
        "WHEN right(v, 1) = 'Z' THEN 0 "
        "WHEN substr(v, -6, 1) IN ('+', '-') THEN (CASE WHEN substr(v, -6, 1) = '-' THEN -1 ELSE 1 END) * "
        "(TRY_CAST(substr(v, -5, 2) AS INTEGER) * 60 + TRY_CAST(substr(v, -2, 2) AS INTEGER)) "
        "WHEN substr(v, -5, 1) IN ('+', '-') THEN (CASE WHEN substr(v, -5, 1) = '-' THEN -1 ELSE 1 END) * "
        "(TRY_CAST(substr(v, -4, 2) AS INTEGER) * 60 + TRY_CAST(substr(v, -2, 2) AS INTEGER)) "
        "ELSE dm END"
    )


# ---------------------------------------------------------------------------------------------
# Compiling a layout against a header


@dataclass(frozen=True)
class _Rule:
    column: str
    column_index: int  # 1-based position in the header
    code: str
    severity: str
    sql: str  # true when the rule is broken
    expected: str
    covered: bool = False  # never broken when the row matches its clean pattern (``_CleanRow``)


@dataclass
class Compiled:
    """A layout bound to one header: the SELECT list, the rules, and what was found where."""

    select: list[str]  # over the normalised values v0, v1, ... (see ``prelude``)
    outputs: frozenset[str]
    rules: list[_Rule]
    found: dict[str, int]  # documented column name -> 0-based header index
    extras: list[int]  # header indexes kept as extras
    extras_names: tuple[str, ...]  # the header name of each element of a row's ``extras`` array
    bad_sql: str  # index of the first broken error rule: one CASE over every rule
    warn_sql: str
    prelude: list[str]  # source cell c<i> -> v<i>: NULL for empty cells and null tokens, computed once
    exponents: list[str]  # v<i> -> x<i>: the exponent of each currency column, computed once
    null_tokens: tuple[str, ...]  # what reads as an empty cell ("" and the layout's tokens)
    clean: _CleanRow  # the clean-row fast path; its SQL is built only for the large inputs that use it

    @property
    def bad_fast_sql(self) -> str:
        """``bad_sql`` with the clean-row fast path in front."""
        return self.clean.first_broken([r for r in self.rules if r.severity == "error"], self.rules, self.bad_sql)

    @property
    def warn_fast_sql(self) -> str:
        return self.clean.first_broken([r for r in self.rules if r.severity != "error"], self.rules, self.warn_sql)

    def query(self, source: str, passthrough: Sequence[str] = (), *, nulls_done: bool = False,
              fast: bool = False) -> str:
        """SELECT the outputs plus ``__bad``/``__warn`` (index of the first broken rule) from ``source``,
        a relation with columns c0, c1, ... (and the ``passthrough`` columns, kept as they are).
        ``nulls_done``: the source already reads ``null_tokens`` as NULL (read_csv's ``nullstr``).
        ``fast``: check rows through the clean-row fast path; it saves ~40% of the rule time on a large file
        but roughly doubles the planning time (a tiny file: ~0.1 s -> ~0.3 s), so only large inputs use it."""
        bad, warn = (self.bad_fast_sql, self.warn_fast_sql) if fast else (self.bad_sql, self.warn_sql)
        outer = ", ".join([*self.select, f"{bad} AS __bad", f"{warn} AS __warn", *passthrough])
        return f"SELECT {outer} FROM {self.values(source, passthrough, nulls_done=nulls_done)}"

    def values(self, source: str, passthrough: Sequence[str] = (), *, nulls_done: bool = False) -> str:
        """A relation of the normalised values v<i> and exponents x<i> (what rules and outputs read)."""
        prelude = [f"c{i} AS v{i}" for i in range(len(self.prelude))] if nulls_done else self.prelude
        inner = f"(SELECT {', '.join([*prelude, *passthrough])} FROM {source})"
        if not self.exponents:
            return inner
        keep = [f"v{i}" for i in range(len(self.prelude))]
        return f"(SELECT {', '.join([*keep, *self.exponents, *passthrough])} FROM {inner})"


def resolve_header(layout: Layout, header: Sequence[str]) -> tuple[dict[str, int], list[tuple[str, str, int]]]:
    """Find each documented column in ``header``: exact name, then case-insensitive, then aliases.

    Returns the mapping and a list of header problems ``(code, name, index)``.
    """
    problems: list[tuple[str, str, int]] = []
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if name == "":
            problems.append(("empty_header_cell", name, i))
        elif name in seen:
            problems.append(("duplicate_column", name, i))
        else:
            seen[name] = i
    lower: dict[str, int] = {}
    for name, i in seen.items():
        lower.setdefault(name.lower(), i)
    found: dict[str, int] = {}
    taken: set[int] = set()
    for col in layout.columns:
        idx = seen.get(col.name)
        if idx is None:
            for candidate in (col.name, *col.aliases):
                idx = seen.get(candidate, lower.get(candidate.lower()))
                if idx is not None:
                    break
        if idx is not None and idx not in taken:
            found[col.name] = idx
            taken.add(idx)
        elif col.required:
            problems.append(("missing_column", col.name, -1))
    return found, problems


def compile_layout(layout: Layout, header: Sequence[str], meta: Mapping[str, str] | None = None,
                   *, has_extras: bool | None = None) -> Compiled:
    """Bind ``layout`` to ``header`` (source columns are named ``c0``, ``c1``, ...)."""
    meta = meta or {}
    found, _ = resolve_header(layout, header)
    nulls = ("", *layout.null_tokens)
    null_list = ", ".join(_sql_str(t) for t in nulls)

    def value(i: int) -> str:
        return f"v{i}"

    prelude = [f"CASE WHEN c{i} IN ({null_list}) THEN NULL ELSE c{i} END AS v{i}" for i in range(len(header))]
    # The exponent of every column that holds a currency, looked up once per row (x<i>).
    currency_cols = {found[c.name] for c in layout.columns if c.kind is Kind.CURRENCY and c.name in found}
    currency_cols |= {found[ref] for c in layout.columns if c.kind is Kind.AMOUNT and c.name in found
                      for ref in c.currency if ref in found}
    exponent_sql = [f"ar_exp(v{i}) AS x{i}" for i in sorted(currency_cols)]

    default_off = layout.default_offset_minutes
    sign = "-" if default_off < 0 else "+"
    default_off_text = _sql_str(f"{sign}{abs(default_off) // 60:02d}:{abs(default_off) % 60:02d}")

    def currency_expr(col: Column) -> tuple[str, str]:
        """The SQL of an amount's currency and of its exponent: the first of ``col.currency`` present."""
        parts: list[tuple[str, str]] = []
        for ref in col.currency:
            code = ref[1:] if ref.startswith("=") else meta.get(ref[1:]) if ref.startswith("@") else None
            if code:  # a constant: folded at planning time (ar_exp carries the workspace's exponent overrides)
                parts.append((_sql_str(code), f"ar_exp({_sql_str(code)})"))
            elif ref in found:
                parts.append((value(found[ref]), f"x{found[ref]}"))
        if not parts:
            return "CAST(NULL AS VARCHAR)", "CAST(NULL AS INTEGER)"
        if len(parts) == 1:
            return parts[0]
        ccy = f"COALESCE({', '.join(p[0] for p in parts)})"
        return ccy, "CASE " + " ".join(f"WHEN {c} IS NOT NULL THEN {e}" for c, e in parts) + " END"

    converted: dict[str, str] = {}
    offsets: dict[str, str] = {}
    raws: dict[str, str] = {}
    rules: list[_Rule] = []
    clean = _CleanRow()
    for col in layout.columns:
        if col.name not in found:
            continue
        i = found[col.name]
        v = value(i)
        raws[col.name] = v
        pos = i + 1

        def rule(code: str, sql: str, expected: str, severity: str = "error", *, covered: bool = False,
                 _col: Column = col, _pos: int = pos, _v: str = v) -> None:
            # Rules judge values; an empty cell is only wrong where ``nonempty`` says so.
            rules.append(_Rule(_col.name, _pos, code, severity, f"({_v} IS NOT NULL AND ({sql}))", expected,
                               covered))

        clean_value = _clean_pattern(col, currency_expr(col)[0] if col.kind is Kind.AMOUNT else None, layout)
        if clean_value is not None:
            clean.add(i, clean_value[0], empty_ok=not col.nonempty)
            if clean_value[1]:
                clean.guards.add(clean_value[1])
        if col.nonempty:
            rules.append(_Rule(col.name, pos, "missing_value", "error", f"{v} IS NULL", "a value",
                               clean_value is not None))
        if col.max_length:  # strlen (bytes, O(1)) first: only long values pay for counting characters
            rule("too_long", f"CASE WHEN strlen({v}) > {col.max_length} THEN length({v}) > {col.max_length} "
                 "ELSE false END", f"at most {col.max_length} characters")
        if col.kind in (Kind.TEXT, Kind.ENUM):
            rule("formula_cell", _formula_sql(v), "text, not a formula")
        if col.kind is Kind.TEXT:
            converted[col.name] = v
        elif col.kind is Kind.ENUM:
            converted[col.name] = f"upper({v})"
            if col.allowed:
                allowed = ", ".join(_sql_str(a.upper()) for a in col.allowed)
                rule(
                    "bad_value" if col.strict else "unknown_value",
                    f"upper({v}) NOT IN ({allowed})",
                    "one of " + "/".join(col.allowed),
                    "error" if col.strict else "warning",
                )
        elif col.kind is Kind.CURRENCY:
            converted[col.name] = v
            rule("unknown_currency", f"x{i} IS NULL", "an ISO 4217 currency code")
        elif col.kind is Kind.AMOUNT:
            unit = col.unit or layout.amount_unit
            cx, ex = currency_expr(col)
            if unit == "minor":
                rule("bad_number", f"NOT regexp_full_match({v}, {_sql_str(_MINOR_RE)})",
                     "an integer in minor units", covered=True)
                rule("bad_number", f"TRY_CAST({v} AS BIGINT) IS NULL", "an integer within range", covered=True)
                converted[col.name] = f"TRY_CAST({v} AS BIGINT)"
            else:
                known_exponent = clean_value is not None and bool(clean_value[1])
                rule("bad_number", f"NOT regexp_full_match({v}, {_sql_str(_MAJOR_RE)})",
                     "a decimal amount like -12.30 (no exponent, no thousands separator)", covered=True)
                rule("too_many_decimals",
                     f"(CASE WHEN instr({v}, '.') = 0 THEN 0 ELSE strlen({v}) - instr({v}, '.') END) > {ex}",
                     "no more decimals than the currency's ISO 4217 exponent", covered=known_exponent)
                rule("bad_number", f"TRY_CAST({v} AS DECIMAL(18,4)) IS NULL", "an amount within range",
                     covered=True)
                converted[col.name] = f"ar_major({v}, {ex})"
            rule("missing_value", f"{cx} IS NULL", "a currency for this amount")
        elif col.kind is Kind.INTEGER:
            rule("bad_number", f"NOT regexp_full_match({v}, {_sql_str(_MINOR_RE)})", "an integer", covered=True)
            rule("bad_number", f"TRY_CAST({v} AS BIGINT) IS NULL", "an integer within range", covered=True)
            converted[col.name] = f"TRY_CAST({v} AS BIGINT)"
        elif col.kind is Kind.DECIMAL:
            rule("bad_number", f"NOT regexp_full_match({v}, {_sql_str(_MAJOR_RE)})", "a decimal number",
                 covered=True)
            rule("bad_number", f"TRY_CAST({v} AS DECIMAL(38,18)) IS NULL",
                 "a decimal with at most 18 decimals", covered=True)
            converted[col.name] = f"TRY_CAST({v} AS DECIMAL(38,18))"
        elif col.kind is Kind.TIMESTAMP:
            pattern = f"{TIMESTAMP_RE}|{DATE_RE}" if col.date_ok else TIMESTAMP_RE
            ts = f"(CASE WHEN strlen({v}) = 10 THEN {v} || ' 00:00:00' ELSE {v} END)" if col.date_ok else v
            rule("bad_date", f"NOT regexp_full_match({v}, {_sql_str(pattern)})",
                 "an ISO 8601 timestamp like 2018-12-25T10:00:00+08:00", covered=True)
            rule("bad_date", f"ar_ts({ts}, {default_off_text}) IS NULL", "a timestamp that exists")
            converted[col.name] = f"ar_ts({ts}, {default_off_text})"
            offsets[col.name] = f"ar_ts_offset({ts}, {default_off})"
        elif col.kind is Kind.DATE:
            rule("bad_date", f"NOT regexp_full_match({v}, {_sql_str(DATE_RE)}) OR TRY_CAST({v} AS DATE) IS NULL",
                 "a date like 2022-04-19")
            converted[col.name] = f"TRY_CAST({v} AS DATE)"
        elif col.kind is Kind.COMPACT_DATE:
            rule("bad_date", f"NOT regexp_full_match({v}, '[0-9]{{8}}') OR try_strptime({v}, '%Y%m%d') IS NULL",
                 "a date like 20220419")
            converted[col.name] = f"CAST(try_strptime({v}, '%Y%m%d') AS DATE)"
        else:  # pragma: no cover - Kind is exhaustive
            raise AssertionError(col.kind)
        if col.nonnegative and col.kind in (Kind.AMOUNT, Kind.INTEGER):
            rule("bad_number", f"starts_with({v}, '-')", "a value without a minus sign (another column gives the sign)",
                 covered=clean_value is not None)

    # Columns the layout does not know are kept (and still checked for formulas).
    extra_idx = [i for i in range(len(header)) if i not in found.values()]
    for i in extra_idx:
        rules.append(_Rule(header[i], i + 1, "formula_cell", "error",
                           f"({value(i)} IS NOT NULL AND {_formula_sql(value(i))})", "text, not a formula"))

    used: set[str] = set()

    def substitute(template: str) -> str:
        def repl(m: re.Match[str]) -> str:
            key = m.group(1)
            if key.startswith("@"):
                val = meta.get(key[1:])
                return _sql_str(val) if val is not None else "CAST(NULL AS VARCHAR)"
            name, _, mode = key.partition(":")
            used.add(name)
            if mode == "raw":
                return raws.get(name, "CAST(NULL AS VARCHAR)")
            if mode == "offset":
                return offsets.get(name, "CAST(NULL AS INTEGER)")
            if mode:
                raise ValueError(f"unknown placeholder mode {key!r} in layout {layout.name}")
            return converted.get(name, "NULL")

        return _SPLIT_RE.sub(repl, template)

    select = [f"{substitute(tpl)} AS {_ident(out)}" for out, tpl in layout.outputs.items()]
    keep = layout.keep_extras if has_extras is None else has_extras
    extras_names: tuple[str, ...] = ()
    if keep:
        extra_cols = extra_idx + [found[c.name] for c in layout.columns
                                  if c.name in found and (c.name not in used or c.name in layout.extras_keep)]
        extra_cols.sort()
        if extra_cols:
            # A JSON array of the texts, their header names once per file (``extras_names``): a JSON object
            # repeats ~20 names on every row, and building it was the parse's largest cost (+0.7 s of ~3 s wall
            # and ~1 CPU-s per 1M-row 业务明细, bench/alipay_cn_bench.py; a MAP was 5-10x slower still). Empty
            # cells are JSON nulls, which ``extras_dict`` leaves out.
            texts = ", ".join(value(i) for i in extra_cols)
            select.append(f"CAST(to_json(list_value({texts})) AS VARCHAR) AS extras")
            extras_names = tuple(header[i] for i in extra_cols)
        else:
            select.append("CAST(NULL AS VARCHAR) AS extras")
    errs = [r for r in rules if r.severity == "error"]
    warns = [r for r in rules if r.severity != "error"]
    return Compiled(
        select=select,
        outputs=frozenset([*layout.outputs, *(["extras"] if keep else [])]),
        rules=rules,
        found=found,
        extras=extra_idx,
        extras_names=extras_names,
        bad_sql=_first_broken(errs, rules),
        warn_sql=_first_broken(warns, rules),
        prelude=prelude,
        exponents=exponent_sql,
        null_tokens=nulls,
        clean=clean,
    )


def _formula_sql(v: str) -> str:
    """A cell a spreadsheet would run (``_FORMULA_RE``); the first character is tested before the pattern."""
    return (f"CASE WHEN ord({v}) IN (61, 64, 43, 45, 9, 13) THEN regexp_matches({v}, {_sql_str(_FORMULA_RE)}) "
            "ELSE false END")


_SMALL_FILE = 4 * _MB
FAST_PATH_MIN_ROWS = 20_000  # inputs counted in rows (Parquet) take the clean-row fast path from here (~4 MB of CSV)


@contextmanager
def optimizers_disabled(con: duckdb.DuckDBPyConnection, *names: str) -> Iterator[None]:
    """Run the block with some DuckDB optimizer passes off (restored afterwards)."""
    if not names:
        yield
        return
    con.execute(f"SET disabled_optimizers = {_sql_str(','.join(names))}")
    try:
        yield
    finally:
        con.execute("RESET disabled_optimizers")


def create_table(con: duckdb.DuckDBPyConnection, table: str, query: str, *, small: bool) -> None:
    """CREATE TEMP TABLE ... AS ``query``. For small inputs the common-subexpression optimizer is skipped:
    on a wide layout it costs more planning time (~60 ms) than it could ever save on a few rows."""
    with optimizers_disabled(con, *(["common_subexpressions"] if small else [])):
        con.execute(f"CREATE TEMP TABLE {table} AS {query}")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _clean_pattern(col: Column, currency_sql: str | None, layout: Layout) -> tuple[str, str] | None:
    """The regex a clean, non-empty value of ``col`` fully matches, implying every rule of the column marked
    ``covered``, and the SQL guard it rests on ("" for none). None: the column keeps all its rules (texts:
    their one rule, no formula, tests the first character before any pattern, cheaper than joining them in)."""
    sign = "[+]?" if col.nonnegative else "[+-]?"
    if col.kind is Kind.INTEGER or (col.kind is Kind.AMOUNT and (col.unit or layout.amount_unit) == "minor"):
        return sign + "[0-9]{1,18}", ""
    if col.kind is Kind.DECIMAL:
        return sign + r"[0-9]{1,20}(?:\.[0-9]{1,18})?", ""
    if col.kind is Kind.AMOUNT:
        # The decimals bound needs the currency's exponent, known here for a constant currency only, and guarded
        # (a workspace's exponent override changes ``ar_exp``). At most 4 decimals: DECIMAL(18,4) holds 14
        # integer digits; more decimals round, so one digit less leaves room for the carry.
        const = re.fullmatch(r"'([A-Z]{3})'", currency_sql or "")
        exp = all_exponents().get(const.group(1)) if const else None
        decimals = 18 if exp is None else exp
        digits = 14 if decimals <= 4 else 13
        fraction = rf"(?:\.[0-9]{{1,{decimals}}})?" if decimals else ""
        guard = f"ar_exp({const.group(1)!r}) = {exp}" if const and exp is not None else ""
        return f"{sign}[0-9]{{1,{digits}}}{fraction}", guard
    if col.kind is Kind.TIMESTAMP:
        return f"(?:{TIMESTAMP_RE}|{DATE_RE})" if col.date_ok else TIMESTAMP_RE, ""
    return None


class _CleanRow:
    """A fast path for the first-broken-rule CASE: one regular expression over the row's number and time cells
    joined by U+001F. A row it matches breaks none of the rules marked ``covered`` (the patterns imply them), so
    only the other, cheap rules run on it; a row it misses (or with a U+001F in a cell) runs every rule. On a
    1M-row 业务明细 this checks the clean rows in ~0.55 s instead of ~0.95 s (12 cells in one pass instead of
    ~45 regex, cast and length tests)."""

    def __init__(self) -> None:
        self.cells: dict[int, str] = {}  # header index -> pattern of the cell ("" allowed or not)
        self.guards: set[str] = set()  # SQL facts the patterns assume (a currency's exponent)

    def add(self, index: int, pattern: str, *, empty_ok: bool) -> None:
        self.cells[index] = f"(?:{pattern})?" if empty_ok else f"(?:{pattern})"

    def first_broken(self, subset: list[_Rule], all_rules: list[_Rule], full: str) -> str:
        """``full`` (the CASE over every rule of ``subset``) behind the one-regex test for clean rows."""
        if not self.cells or not any(r.covered for r in subset):
            return full
        residual = _first_broken([r for r in subset if not r.covered], all_rules)
        order = sorted(self.cells)
        joined = ", chr(31), ".join(f"v{i}" for i in order)  # concat() reads NULL as ""
        regex = r"\x1f".join(self.cells[i] for i in order)
        test = " AND ".join([f"regexp_full_match(concat({joined}), {_sql_str(regex)})", *sorted(self.guards)])
        return f"CASE WHEN {test} THEN {residual} ELSE {full} END"


def _first_broken(subset: list[_Rule], all_rules: list[_Rule]) -> str:
    if not subset:
        return "CAST(NULL AS INTEGER)"
    number = {id(r): k for k, r in enumerate(all_rules)}  # by identity: list.index compared every field, O(n^2)
    whens = " ".join(f"WHEN {r.sql} THEN {number[id(r)]}" for r in subset)
    return f"CASE {whens} END"


# ---------------------------------------------------------------------------------------------
# Reading files


@dataclass
class SourceFile:
    """Facts about the raw bytes, gathered in one pass (run beside the DuckDB scan)."""

    path: Path
    sha256: str = ""
    size: int = 0
    newlines: int = 0  # LF bytes: compared with the records DuckDB read to prove line numbers need no map
    ends_with_newline: bool = True

    @property
    def lines(self) -> int:
        """Physical lines (a last line without its newline counts)."""
        return self.newlines + (0 if self.ends_with_newline else 1)

    @classmethod
    def scan(cls, path: Path) -> SourceFile:
        h = hashlib.sha256()
        size = newlines = 0
        last = b""
        with open(path, "rb") as f:
            while chunk := f.read(4 * _MB):
                h.update(chunk)
                size += len(chunk)
                newlines += chunk.count(b"\n")
                last = chunk[-1:]
        return cls(Path(path), h.hexdigest(), size, newlines, last in (b"\n", b""))


class _Scan(threading.Thread):
    """``SourceFile.scan`` in a thread: hashing releases the GIL, so it overlaps DuckDB's read."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.result: SourceFile | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = SourceFile.scan(self.path)
        except BaseException as exc:  # re-raised in join_result
            self.error = exc

    def join_result(self) -> SourceFile:
        self.join()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@dataclass
class HeadLine:
    line_no: int
    text: str
    offset: int  # byte offset of the line start


def read_head_lines(path: Path, *, max_lines: int, max_line_bytes: int, name: str,
                    problems: list[errors.FormatError]) -> list[HeadLine]:
    """Decode the first lines strictly as UTF-8 (BOM stripped); stops at the first bad line."""
    out: list[HeadLine] = []
    with open(path, "rb") as f:
        offset = 0
        for n in range(1, max_lines + 1):
            raw = f.readline(max_line_bytes + 2)
            if not raw:
                break
            start = offset
            offset += len(raw)
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                problems.append(errors.LineTooLong(
                    f"line longer than {max_line_bytes} bytes", file=name, line=n,
                    expected=f"at most {max_line_bytes} bytes"))
                break
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            body = raw.rstrip(b"\r\n")
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                col = body[: exc.start].count(b",") + 1
                problems.append(errors.BadEncoding(
                    f"byte 0x{body[exc.start]:02x} is not UTF-8", file=name, line=n, column_index=col,
                    expected="UTF-8", found=repr(body[exc.start:exc.start + 4])))
                break
            out.append(HeadLine(n, text, start))
    return out


def split_csv_line(text: str, delimiter: str = ",") -> list[str]:
    return next(csv.reader([text], delimiter=delimiter, quotechar='"', strict=True), [])


@dataclass
class Trailer:
    found: bool
    line_offset: int | None  # byte offset of the <END> line
    problems: list[errors.FormatError]


def read_trailer(path: Path, facts: SourceFile, *, name: str, required: bool, last_line_no: int | None) -> Trailer:
    """Check the ``<END>`` line (antom.md 4): last non-empty line, nothing but blanks after it."""
    with open(path, "rb") as f:
        tail_len = min(facts.size, 64 * 1024)
        f.seek(facts.size - tail_len)
        tail = f.read()
    base = facts.size - tail_len
    stripped = tail.rstrip(b"\r\n \t")
    cut = max(stripped.rfind(b"\n"), -1) + 1
    last = stripped[cut:].strip().rstrip(b",").strip()
    if last == TRAILER.encode():
        return Trailer(True, base + cut, [])
    if not required:
        return Trailer(False, None, [])
    if not facts.ends_with_newline:
        prob: errors.FormatError = errors.TruncatedFile(
            "the file ends in the middle of a line, without the <END> trailer", file=name,
            line=last_line_no, expected="a last line <END>", found=last[:40].decode("utf-8", "replace"))
    else:
        prob = errors.MissingTrailer("the last line is not <END>: the file may be incomplete", file=name,
                                     line=last_line_no, expected="<END>",
                                     found=last[:40].decode("utf-8", "replace"))
    return Trailer(False, None, [prob])


def lines_at(path: Path, offsets: Iterable[int]) -> dict[int, int]:
    """The 1-based line of each byte offset (a line start), in one pass over the file."""
    wanted = sorted(set(offsets))
    out: dict[int, int] = {}
    if not wanted:
        return out
    newlines = pos = 0
    i = 0
    with open(path, "rb") as f:
        while i < len(wanted) and (chunk := f.read(4 * _MB)):
            end = pos + len(chunk)
            while i < len(wanted) and wanted[i] <= end:
                out[wanted[i]] = newlines + chunk.count(b"\n", 0, wanted[i] - pos) + 1
                i += 1
            newlines += chunk.count(b"\n")
            pos = end
    for off in wanted[i:]:
        out[off] = newlines + 1
    return out


def _trailing_blank_lines(path: Path, size: int) -> int:
    """Empty lines after the last non-empty one (DuckDB skips them; they are not records)."""
    with open(path, "rb") as f:
        f.seek(max(0, size - 4096))
        tail = f.read()
    stripped = tail.rstrip(b"\r\n")
    return tail[len(stripped):].count(b"\n") - 1 if stripped and tail.endswith(b"\n") else 0


def count_lines(path: Path, upto: int | None = None) -> int:
    """Number of newline bytes before byte offset ``upto`` (whole file when None)."""
    n = 0
    remaining = upto
    with open(path, "rb") as f:
        while True:
            size = 4 * _MB if remaining is None else min(4 * _MB, remaining)
            if size <= 0:
                break
            chunk = f.read(size)
            if not chunk:
                break
            n += chunk.count(b"\n")
            if remaining is not None:
                remaining -= len(chunk)
    return n


def record_start_lines(path: Path, skip_lines: int, delimiter: str = ",") -> list[int]:
    """Physical start line of each non-blank record after ``skip_lines`` (slow path, exact)."""
    starts: list[int] = []
    if csv.field_size_limit() < os.path.getsize(path):  # no cell is larger than the file (default: 128 KiB)
        csv.field_size_limit(os.path.getsize(path))
    with open(path, "rb") as raw:
        # Lines split at LF only, as ``count_lines`` counts them: a text-mode file would also split at a
        # CR inside a quoted cell and shift every later line number. Other CRs cannot end a record; they
        # become spaces so that the csv module does not stop at one outside quotes (DuckDB reports it).
        f = (line.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", " ") for line in raw)
        if skip_lines:
            for _ in itertools.islice(f, skip_lines):
                pass
        reader = csv.reader(f, delimiter=delimiter, quotechar='"')
        prev = skip_lines
        for row in reader:
            if row:
                starts.append(prev + 1)
            prev = skip_lines + reader.line_num
    return starts


@dataclass
class BodyResult:
    table: str
    rows: int
    line_sql: str  # SQL expression giving the physical line of each row of ``table``
    problems: list[errors.FormatError]
    columns: frozenset[str] = frozenset()  # output fields present in ``table``
    extras_names: tuple[str, ...] = ()  # the header name of each element of a row's ``extras`` array


_counter = itertools.count()


def _tmp_name(prefix: str) -> str:
    return f"_ar_{prefix}_{os.getpid()}_{next(_counter)}"


def read_csv_body(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    name: str,
    header: Sequence[str],
    compiled: Compiled,
    header_lines: int,
    facts_thread: _Scan | None,
    trailer_offset: int | None,
    options: ParseOptions,
    delimiter: str = ",",
    trim_cells: str = "",
) -> tuple[BodyResult, SourceFile]:
    """Validate and convert the records after ``header_lines`` lines in one DuckDB pass.

    ``trim_cells``: characters stripped from both ends of every cell before any rule sees it (Alipay China
    bills: surrounding whitespace is padding, alipay-cn.md 5); a cell left empty reads as NULL."""
    ncols = len(header)
    table = _tmp_name("body")
    rej, rejscan = _tmp_name("rej"), _tmp_name("rejscan")
    cols = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(ncols))
    buffer = max(16 * _MB, 2 * options.max_line_bytes + 1)
    source = (
        f"read_csv({_sql_str(str(path))}, header=false, skip={header_lines}, auto_detect=false, "
        f"columns={{{cols}}}, delim={_sql_str(delimiter)}, quote='\"', escape='\"', strict_mode=true, "
        f"store_rejects=true, rejects_table={_sql_str(rej)}, rejects_scan={_sql_str(rejscan)}, "
        f"rejects_limit={options.max_problems * 4}, max_line_size={options.max_line_bytes}, "
        f"buffer_size={buffer}, encoding='utf-8', nullstr=[{', '.join(_sql_str(t) for t in compiled.null_tokens)}])"
    )
    if trim_cells:
        # Only cells that start or end with one of the characters pay for trim() (most have none).
        codes = ", ".join(str(ord(ch)) for ch in trim_cells)
        trimmed = ", ".join(
            f"CASE WHEN ord(c{i}) IN ({codes}) OR "
            + " OR ".join(f"ends_with(c{i}, {_sql_str(ch)})" for ch in trim_cells)
            + f" THEN trim(c{i}, {_sql_str(trim_cells)}) ELSE c{i} END AS c{i}"
            for i in range(ncols))
        source = f"(SELECT {trimmed} FROM {source})"
    large = os.path.getsize(path) >= _SMALL_FILE
    try:
        create_table(con, table, compiled.query(source, nulls_done=not trim_cells, fast=large), small=not large)
    except duckdb.InvalidInputException as exc:
        # DuckDB raises, instead of rejecting the line, for some malformed files (a bare CR in an unquoted
        # cell): report it as a typed problem with an empty body rather than crash.
        facts = facts_thread.join_result() if facts_thread else SourceFile.scan(path)
        con.execute(f"DROP TABLE IF EXISTS {rej}; DROP TABLE IF EXISTS {rejscan}")
        nothing = ", ".join(f"CAST(NULL AS VARCHAR) AS c{i}" for i in range(ncols))
        con.execute(f"CREATE TEMP TABLE {table} AS {compiled.query(f'(SELECT {nothing})')} WHERE false")
        return BodyResult(table, 0, "rowid", [_unreadable_csv(path, name, exc, header, delimiter)],
                          compiled.outputs), facts
    facts = facts_thread.join_result() if facts_thread else SourceFile.scan(path)
    problems: list[errors.FormatError] = []
    reject_lines: set[int] = set()
    rejects = con.execute(
        f"SELECT line_byte_position, min(column_idx), any_value(error_type), any_value(csv_line), "
        f"any_value(error_message) FROM {rej} GROUP BY line_byte_position ORDER BY line_byte_position"
    ).fetchall()
    con.execute(f"DROP TABLE IF EXISTS {rej}; DROP TABLE IF EXISTS {rejscan}")
    starts_of = {int(r[0]): _line_start(path, int(r[0])) for r in rejects}
    line_of = lines_at(path, starts_of.values())
    for duck_pos, col_idx, etype, csv_line, message in rejects:
        pos = starts_of[int(duck_pos)]
        line_no = line_of[pos]
        if trailer_offset is not None and pos == trailer_offset:
            continue
        reject_lines.add(line_no)
        problems.append(_reject_problem(path, name, line_no, pos, col_idx, str(etype), csv_line or "",
                                        message or "", ncols, options, header))
    rows = scalar(con, f"SELECT count(*) FROM {table}")
    first_line = header_lines + 1
    # One record per line, nothing skipped: the file's line count says so exactly (a quoted newline or a
    # blank line DuckDB skipped would add lines), and then line = first line + record index.
    expected = header_lines + rows + (trailer_offset is not None) + _trailing_blank_lines(path, facts.size)
    if facts.lines == expected and not reject_lines:
        line_sql = f"(rowid + {first_line})"
    else:
        starts = [s for s in record_start_lines(path, header_lines, delimiter) if s not in reject_lines]
        if trailer_offset is not None:
            trailer_line = lines_at(path, [trailer_offset])[trailer_offset]
            starts = [s for s in starts if s != trailer_line]
        starts = starts[:rows] + [0] * max(0, rows - len(starts))
        linemap = _tmp_name("lines")
        con.register(linemap + "_arrow", pa.table({"idx": pa.array(range(len(starts)), pa.int64()),
                                                   "line": pa.array(starts, pa.int64())}))
        con.execute(f"CREATE TEMP TABLE {linemap} AS SELECT * FROM {linemap}_arrow")
        con.unregister(linemap + "_arrow")
        con.execute(f"ALTER TABLE {table} ADD COLUMN __line BIGINT")
        con.execute(f"UPDATE {table} SET __line = {linemap}.line FROM {linemap} WHERE {linemap}.idx = {table}.rowid")
        con.execute(f"DROP TABLE {linemap}")
        line_sql = "__line"
    return BodyResult(table, rows, line_sql, problems, compiled.outputs, compiled.extras_names), facts


def _line_start(path: Path, duck_pos: int) -> int:
    """DuckDB reports 1-based line byte positions; find the real 0-based start of that line."""
    with open(path, "rb") as f:
        for candidate in (duck_pos - 1, duck_pos):
            if candidate <= 0:
                return 0
            f.seek(candidate - 1)
            if f.read(1) == b"\n":
                return candidate
    return max(duck_pos - 1, 0)


def _unreadable_csv(path: Path, name: str, exc: Exception, header: Sequence[str],
                    delimiter: str) -> errors.FormatError:
    """Locate the first CR that does not end a line (the known cause of DuckDB's raise)."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            body = raw.removesuffix(b"\n").removesuffix(b"\r")
            if b"\r" in body:
                col = body[: body.index(b"\r")].count(delimiter.encode()) + 1
                return errors.BadQuoting("a carriage return inside an unquoted cell", file=name, line=line_no,
                                         column=_header_name(header, col), column_index=col,
                                         expected="the cell in quotes", found=repr(body[:80]))
    return errors.BadQuoting(f"unreadable CSV: {str(exc).splitlines()[0][:200]}", file=name, line=None)


def _header_name(header: Sequence[str], column_index: int | None) -> str | None:
    if column_index is None or not 1 <= column_index <= len(header):
        return None
    return header[column_index - 1] or None


def _reject_problem(path: Path, name: str, line_no: int, pos: int, col_idx: int | None, etype: str,
                    csv_line: str, message: str, ncols: int, options: ParseOptions,
                    header: Sequence[str] = ()) -> errors.FormatError:
    found = csv_line[:80]
    if etype == "INVALID ENCODING":
        with open(path, "rb") as f:
            f.seek(pos)
            raw = f.readline(options.max_line_bytes)
        bad_at = 0
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_at = exc.start
        enc_col = raw[:bad_at].count(b",") + 1
        return errors.BadEncoding(f"byte 0x{raw[bad_at]:02x} is not UTF-8" if raw else "invalid UTF-8",
                                  file=name, line=line_no, column=_header_name(header, enc_col),
                                  column_index=enc_col,
                                  expected="UTF-8", found=repr(raw[bad_at:bad_at + 4]))
    if etype == "LINE SIZE OVER MAXIMUM":
        return errors.LineTooLong(f"line longer than {options.max_line_bytes} bytes", file=name, line=line_no,
                                  expected=f"at most {options.max_line_bytes} bytes")
    if etype in ("MISSING COLUMNS", "TOO MANY COLUMNS"):
        if csv_line.strip().rstrip(",").strip() == TRAILER:
            return errors.ContentAfterTrailer("<END> is followed by more records", file=name, line=line_no,
                                              found=TRAILER)
        try:
            got = len(split_csv_line(csv_line))
        except csv.Error:
            got = csv_line.count(",") + 1
        # The first missing or surplus cell; from the count, as DuckDB's column_idx is 0-based for missing
        # columns but 1-based for surplus ones.
        return errors.WrongColumnCount(f"{got} cells where the header has {ncols}", file=name, line=line_no,
                                       column_index=min(got, ncols) + 1,
                                       expected=f"{ncols} cells", found=f"{got} cells: {found}")
    if etype in ("UNQUOTED VALUE", "INVALID STATE"):
        # DuckDB's column_idx is 1-based for quoting errors
        return errors.BadQuoting(message.split("\n")[0][:200], file=name, line=line_no,
                                 column=_header_name(header, col_idx), column_index=col_idx, found=found)
    return errors.FormatError(f"{etype}: {message.splitlines()[0] if message else ''}", file=name, line=line_no,
                              found=found)


def convert_rows(
    con: duckdb.DuckDBPyConnection,
    rows: Sequence[tuple[int, Sequence[str | None]]],
    compiled: Compiled,
    ncols: int,
) -> BodyResult:
    """Validate and convert in-memory rows ``(line_no, cells)`` (xlsx sheets, small sections)."""
    data: dict[str, Any] = {f"c{i}": pa.array([r[1][i] if i < len(r[1]) else None for r in rows], pa.string())
                            for i in range(ncols)}
    data["__line"] = pa.array([r[0] for r in rows], pa.int64())
    src = _tmp_name("rows")
    table = _tmp_name("body")
    con.register(src, pa.table(data))
    try:
        create_table(con, table, compiled.query(src, ("__line",)) + " ORDER BY __line", small=True)
    finally:
        con.unregister(src)
    return BodyResult(table, len(rows), "__line", [], compiled.outputs, compiled.extras_names)


def rule_problems(
    con: duckdb.DuckDBPyConnection,
    body: BodyResult,
    compiled: Compiled,
    raw_source: Callable[[], str],
    *,
    name: str,
    limit: int,
) -> list[errors.FormatError]:
    """Detailed problems for the rows the one-pass scan flagged (only bad files pay for this)."""
    flagged = con.execute(
        f"SELECT rowid, {body.line_sql} FROM {body.table} WHERE __bad IS NOT NULL OR __warn IS NOT NULL "
        f"ORDER BY rowid LIMIT {limit}"
    ).fetchall()
    if not flagged:
        return []
    raw = raw_source()
    lines = {rid: ln for rid, ln in flagged}
    checks = ", ".join(f"CASE WHEN {r.sql} THEN {k} END" for k, r in enumerate(compiled.rules))
    ids = ", ".join(str(rid) for rid in lines)
    result = con.execute(
        f"SELECT __rid, list_filter([{checks}], lambda x: x IS NOT NULL) FROM "
        f"{compiled.values(f'(SELECT rowid AS __rid, * FROM {raw} WHERE rowid IN ({ids}))', ('__rid',))} "
        "ORDER BY __rid"
    ).fetchall()
    cells = {
        rid: row
        for rid, *row in con.execute(f"SELECT rowid, * FROM {raw} WHERE rowid IN ({ids})").fetchall()
    }
    out: list[errors.FormatError] = []
    for rid, broken in result:
        seen: set[tuple[int, str]] = set()
        for k in broken:
            r = compiled.rules[k]
            if (r.column_index, r.code) in seen:
                continue
            seen.add((r.column_index, r.code))
            found = cells[rid][r.column_index - 1] if r.column_index - 1 < len(cells[rid]) else None
            cls = errors.problem_class(r.code)
            out.append(cls(f"{r.column}: expected {r.expected}, found {found!r}", file=name, line=lines[rid],
                           column=r.column, column_index=r.column_index, expected=r.expected,
                           found=None if found is None else str(found)[:200], severity=r.severity))
    return out


def read_xlsx_rows(path: Path, *, name: str, problems: list[errors.FormatError]) -> list[tuple[int, list[str | None]]]:
    """First sheet of an xlsx as ``(sheet row, cells as text)``; empty rows dropped.

    Numeric cells arrive from the file as IEEE doubles; the shortest text that round-trips (what Excel
    displays) is used, so ``0.1`` stays ``0.1`` and a value needing more decimals than the currency
    allows is still caught by the amount rules.
    """
    from python_calamine import CalamineWorkbook

    try:
        wb = CalamineWorkbook.from_path(str(path))
        sheet = wb.get_sheet_by_index(0)
        start_row = (sheet.start or (0, 0))[0]
        data = sheet.to_python(skip_empty_area=False)
    except Exception as exc:  # calamine raises its own error types for broken zips and XML
        problems.append(errors.FormatError(f"unreadable xlsx: {type(exc).__name__}: {exc}"[:300], file=name, line=None))
        return []
    out: list[tuple[int, list[str | None]]] = []
    for i, row in enumerate(data):
        cells = [_xlsx_text(v) for v in row]
        while cells and cells[-1] is None:
            cells.pop()
        if cells:
            out.append((i + 1 if start_row == 0 else start_row + i + 1, cells))
    return out


def _xlsx_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return repr(value)
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


# ---------------------------------------------------------------------------------------------
# The result of parsing one file


@dataclass
class ParsedFile(errors.WithProblems):
    """One parsed file: metadata, problems, declared figures and its canonical lines (in DuckDB)."""

    path: Path
    name: str
    sha256: str
    size: int
    family: str
    report: str
    variant: str = ""
    meta: dict[str, str] = field(default_factory=dict)
    header: list[str] = field(default_factory=list)
    row_count: int = 0
    problems: list[errors.FormatError] = field(default_factory=list)
    declared: list[Declared] = field(default_factory=list)
    sections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    con: duckdb.DuckDBPyConnection | None = None
    body: BodyResult | None = None
    _tables: list[str] = field(default_factory=list)

    @property
    def extras_names(self) -> tuple[str, ...]:
        """The header name of each element of a line's ``extras`` array (``extras_dict`` pairs them)."""
        return self.body.extras_names if self.body is not None else ()

    def lines_sql(self) -> str:
        """A SELECT giving this file's lines with exactly the ``schema.REPORT_LINE`` columns."""
        if self.body is None:
            return _empty_select(REPORT_LINE)
        constants = {"family": _sql_str(self.family), "report": _sql_str(self.report),
                     "source_sha256": _sql_str(self.sha256), "source_name": _sql_str(self.name),
                     "line_no": self.body.line_sql}
        return schema_select(REPORT_LINE, self.body.table, self.body.columns, constants)

    def lines_arrow(self) -> pa.Table:
        if self.con is None or self.body is None:
            return REPORT_LINE.empty_table()
        return self.con.sql(self.lines_sql() + " ORDER BY line_no").to_arrow_table().cast(REPORT_LINE)

    def declared_arrow(self) -> pa.Table:
        rows = [
            {"family": self.family, "report": self.report, "scope": d.scope, "batch_id": d.batch_id,
             "figure": d.figure, "value": d.value, "currency": d.currency, "direction": d.direction,
             "source_sha256": self.sha256, "source_name": self.name, "line_no": d.line_no}
            for d in self.declared
        ]
        return pa.Table.from_pylist(rows, schema=DECLARED)

    def totals(self) -> dict[str, dict[str, int]]:
        """Signed sums per currency of the lines: amount, settlement, fee (minor units)."""
        if self.con is None or self.body is None:
            return {}
        out: dict[str, dict[str, int]] = {}
        for fld in ("amount", "settlement", "fee"):
            if f"{fld}_minor" not in self.body.columns:
                continue
            for ccy, total in self.con.execute(
                f"SELECT {fld}_currency, sum({fld}_minor) FROM {self.body.table} "
                f"WHERE {fld}_minor IS NOT NULL GROUP BY 1 ORDER BY 1"
            ).fetchall():
                out.setdefault(ccy or "", {"amount": 0, "settlement": 0, "fee": 0})[fld] = int(total)
        return out

    def by_type(self) -> dict[str, int]:
        if self.con is None or self.body is None:
            return {}
        return {
            str(t): int(n)
            for t, n in self.con.execute(
                f"SELECT coalesce(record_type, ''), count(*) FROM {self.body.table} GROUP BY 1 ORDER BY 1"
            ).fetchall()
        }

    def track(self, table: str) -> None:
        self._tables.append(table)

    def close(self) -> None:
        if self.con is not None:
            for t in self._tables:
                self.con.execute(f"DROP TABLE IF EXISTS {t}")
        self._tables.clear()

    def __enter__(self) -> ParsedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_string(t):
        return "VARCHAR"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_int16(t):
        return "SMALLINT"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ"
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    raise TypeError(t)


def schema_select(schema: pa.Schema, table: str, present: Collection[str], constants: Mapping[str, str]) -> str:
    """A SELECT of exactly ``schema``'s columns from ``table``: a constant (SQL) where given, the column
    where ``present``, else NULL; each cast to its schema type."""
    cols = []
    for f in schema:
        expr = constants.get(f.name) or (_ident(f.name) if f.name in present else "NULL")
        cols.append(f"CAST({expr} AS {_duck_type(f.type)}) AS {_ident(f.name)}")
    return f"SELECT {', '.join(cols)} FROM {table}"


def _empty_select(schema: pa.Schema) -> str:
    cols = ", ".join(f"CAST(NULL AS {_duck_type(f.type)}) AS {_ident(f.name)}" for f in schema)
    return f"SELECT {cols} WHERE false"


def sort_problems(problems: Iterable[errors.FormatError], limit: int) -> list[errors.FormatError]:
    ordered = sorted(problems, key=lambda p: p.sort_key())
    return ordered[:limit]


def text_lines(data: bytes) -> list[str]:
    """Helper for writers/tests: decode and split like the reader does."""
    return io.StringIO(data.decode("utf-8-sig")).read().splitlines()
