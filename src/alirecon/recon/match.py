"""Report lines vs the user's ledger: one set-based DuckDB pass, one typed exception per discrepancy.

Why set-based: a day of Antom or Alipay+ lines can be millions of rows; every step below is a join or a
GROUP BY over whole tables (no Python loop over rows), so 10M x 10M runs in seconds (reconciliation-practice.md
5.2). Why these rules: a finance team must see every disagreement once, with a reason code and the exact
lines on both sides, and the same input must give the same rows in the same order (DESIGN.md).

Semantics (the sandbox generator builds its truth file from exactly these):

1. **Taking part.** Report lines of the given ``family`` and ``report`` (and, when given, ``record_types``).
   Ledger rows whose ``family`` is that family or NULL (a ledger without a family takes part everywhere).
2. **Key** = (``key`` field, ``record_type``); ``key`` is ``merchant_ref_id`` (default: the merchant's
   request id = Antom ``transactionRequestId``, antom.md 7 / AN-8), ``provider_txn_id`` or ``order_id``.
3. **Window.** Ledger rows are in scope when the UTC+8 date (``clock.UTC8``, alipayplus.md 8) of their
   ``occurred_at`` lies in ``window`` (inclusive). Default window: [min, max] UTC+8 date of ``occurred_at`` of
   the report lines taking part; no report line with a time and no window given: no dated ledger row is.
   A ledger row without ``occurred_at`` is always in scope (nothing places it outside). A ledger row outside
   the window whose key appears among the report lines is in scope too [inferred]: the window bounds what
   may be called *missing in the report*, never what may be *matched*, so a payment at 23:59:59 booked by the
   ledger at 00:00:01 is not reported twice. Other ledger rows outside are counted in ``out_of_window``.
   Report lines are always in scope.
4. **Success.** A report line without status is successful (clearing files list successes only, alipayplus.md
   AP-D3). A ledger row without status is successful too (a ledger without a status column lists what the
   user considers done). Otherwise a status is successful when it is in ``success_statuses``
   (case-insensitive).
5. **Duplicates (tie gate).** A key on more than one report line gives ONE ``duplicate_in_report``
   (``DUPLICATE_KEY``) listing every report line and the key's ledger rows; on the ledger side one
   ``duplicate_in_ledger``. A duplicated key is not compared further (never pick among equal candidates).
6. **One side only.** A successful report line whose key has no ledger row: ``missing_in_ledger``
   (``NOT_IN_LEDGER``); a successful ledger row not in the report: ``missing_in_report`` (``NOT_IN_REPORT``).
   A non-successful line/row alone is not an exception (counted as matched). A line/row whose key field is
   empty cannot be matched: ``missing_in_ledger`` / ``missing_in_report`` with reason ``NO_MATCH_KEY``
   (when successful), one per line.
7. **Both sides.** Successful report, non-successful ledger: ``status_mismatch`` (``LEDGER_NOT_SUCCESS``);
   the reverse: ``status_mismatch`` (``REPORT_NOT_SUCCESS``); neither successful: agree. Both successful:
   currencies differ -> ``currency_mismatch`` (``CURRENCY_MISMATCH``) and nothing else is compared; else
   ``amount_mismatch`` once per differing figure: ``AMOUNT_MISMATCH`` (signed ``amount_minor``: both sides use
   PAYMENT +, REFUND -), ``SETTLEMENT_MISMATCH`` (only when both sides carry a settlement amount; amount or
   currency differ), ``FEE_MISMATCH`` (only when both carry a fee; magnitudes compared, since fee signs
   differ by provider: antom.md 9 [inferred]). A both-successful REFUND whose link (``original_<key>``;
   for ``order_id`` the order id itself) is filled on both sides and differs: ``link_mismatch``
   (``REFUND_ORIGINAL_MISMATCH``), in addition to any amount finding. A key without any finding is matched.
8. **Refunds vs payment.** For each successful, non-duplicated PAYMENT key on the report side, the
   successful REFUND lines linked to it (same currency; duplicated refund keys left out, rule 5) are summed
   by absolute value; a total above the payment's absolute amount gives one ``refund_exceeds_payment``
   (``REFUNDS_EXCEED_PAYMENT``, record_type PAYMENT) listing the payment line and the refund lines. Partial
   and multiple refunds within the payment are fine. A refund whose payment is not among the report lines
   is not judged.
9. **Values and lineage.** Every exception carries both sides' amount, currency and status where the side
   exists (for a duplicated key: the value all its lines agree on, else NULL), lineage lists
   (``report_lines``: sha256/name/line; ``ledger_rows``: sha256/name/row), each ordered by file name, sha256,
   line, and a short ``detail`` in major units.
10. **Order.** ``ORDER_BY``: exception_class, match_key, record_type, first report lineage, first ledger
    lineage, then reason_code and report as tie-breakers. ``matched`` counts keys (rule 6 lines/rows
    without a key count one each when non-successful).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import duckdb
import pyarrow as pa

from ..clock import UTC8
from ..config import MATCH_KEYS, ReconcileConfig
from ..formats.engine import _duck_type, _sql_str, _tmp_name, scalar
from ..money import all_exponents
from ..schema import EXCEPTION

__all__ = ["EXCEPTION_CLASSES", "ORDER_BY", "MatchResult", "reconcile", "reconcile_family"]

EXCEPTION_CLASSES = (
    "missing_in_report",
    "missing_in_ledger",
    "amount_mismatch",
    "currency_mismatch",
    "status_mismatch",
    "duplicate_in_report",
    "duplicate_in_ledger",
    "link_mismatch",
    "refund_exceeds_payment",
)

_FIRST = "{0}[1].name NULLS LAST, {0}[1].sha256 NULLS LAST, {0}[1].line NULLS LAST"
ORDER_BY = ", ".join([
    "exception_class",
    "match_key NULLS LAST",
    "record_type NULLS LAST",
    _FIRST.format("report_lines"),
    _FIRST.format("ledger_rows"),
    "reason_code",
    "report NULLS LAST",
])
_LINEAGE_TYPE = "STRUCT(sha256 VARCHAR, name VARCHAR, line BIGINT)"
_LINEAGE_ORDER = "lin.name, lin.sha256, lin.line"
_UTC8_MICROS = int(UTC8.utcoffset(None).total_seconds()) * 1_000_000  # clearing days (alipayplus.md 8)


@dataclass
class MatchResult:
    """Exceptions in a temp table with exactly ``schema.EXCEPTION`` columns, plus the counts."""

    table: str
    matched: int
    counts: dict[str, int]
    window: tuple[date, date] | None
    out_of_window: int
    con: duckdb.DuckDBPyConnection | None = None
    parts: dict[str, MatchResult] = field(default_factory=dict)  # reconcile_family: one result per report

    def arrow(self) -> pa.Table:
        """The exceptions in their deterministic order."""
        assert self.con is not None
        return self.con.sql(f"SELECT * FROM {self.table} ORDER BY {ORDER_BY}").to_arrow_table().cast(EXCEPTION)

    def close(self) -> None:
        """Drop the result tables (the caller owns them until then)."""
        if self.con is not None:
            for part in self.parts.values():
                part.close()
            self.con.execute(f"DROP TABLE IF EXISTS {self.table}")


def _sql_type(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return f"{_sql_type(t.value_type)}[]"
    if pa.types.is_struct(t):
        return "STRUCT(" + ", ".join(f"{f.name} {_sql_type(f.type)}" for f in t) + ")"
    return _duck_type(t)


def _utc8_date(column: str) -> str:
    """The clearing day of an instant: UTC+8 date, without relying on the session time zone."""
    return f"CAST(make_timestamp(epoch_us({column}) + {_UTC8_MICROS}) AS DATE)"


def _money_sql(minor: str, currency: str, exponents: Mapping[str, int]) -> str:
    """``12.30 USD`` from minor units, for the currencies present (a short CASE binds fast; the full ISO
    table as a MAP literal in every detail expression made planning the slow part)."""
    by_exp: dict[int, list[str]] = {}
    for code, exp in sorted(exponents.items()):
        if exp > 0:
            by_exp.setdefault(exp, []).append(_sql_str(code))
    digits = f"CAST({minor} AS VARCHAR)"
    whens = "".join(
        f" WHEN {currency} IN ({', '.join(codes)}) THEN (CASE WHEN {minor} < 0 THEN '-' ELSE '' END) || "
        f"CAST(abs({minor}) // {10**exp} AS VARCHAR) || '.' || lpad(CAST(abs({minor}) % {10**exp} AS VARCHAR), "
        f"{exp}, '0')"
        for exp, codes in sorted(by_exp.items())
    )
    major = f"(CASE{whens} ELSE {digits} END)" if whens else digits
    return f"(CASE WHEN {minor} IS NULL THEN 'no amount' ELSE {major} || ' ' || coalesce({currency}, '?') END)"


def _text(value: str) -> str:
    return f"coalesce(CAST({value} AS VARCHAR), 'none')"


def reconcile(con: duckdb.DuckDBPyConnection, *, report_lines: str, ledger_lines: str, family: str, report: str,
              key: str = "merchant_ref_id", success_statuses: Sequence[str] = ("SUCCESS",),
              window: tuple[date, date] | None = None,
              record_types: Sequence[str] | None = None) -> MatchResult:
    """Match one report's lines against the ledger; see the module docstring for the rules.

    ``report_lines`` / ``ledger_lines``: a table name or a parenthesised SELECT with the
    ``schema.REPORT_LINE`` / ``schema.LEDGER_LINE`` columns.
    """
    if key not in MATCH_KEYS:
        raise ValueError(f"match key must be one of {', '.join(MATCH_KEYS)}, not {key!r}")
    if window is not None and window[0] > window[1]:
        raise ValueError(f"window starts after it ends: {window}")
    run = _Run(con, key, family, report, success_statuses, record_types)
    try:
        return run.execute(report_lines, ledger_lines, window)
    finally:
        run.drop()


class _Run:
    """One reconcile: the scratch tables it creates and the SQL that fills them."""

    def __init__(self, con: duckdb.DuckDBPyConnection, key: str, family: str, report: str,
                 success_statuses: Sequence[str], record_types: Sequence[str] | None) -> None:
        self.con = con
        self.key = key
        self.link = MATCH_KEYS[key]
        self.family = family
        self.report = report
        statuses = ", ".join(_sql_str(s.upper()) for s in success_statuses)
        self.success = f"[{statuses}]::VARCHAR[]"
        self.type_filter = ""
        if record_types is not None:
            types = ", ".join(_sql_str(t.upper()) for t in record_types) or "NULL"
            self.type_filter = f" AND upper(record_type) IN ({types})"
        self.scratch: list[str] = []
        self.exponents: dict[str, int] = {}

    def money(self, minor: str, currency: str) -> str:
        return _money_sql(minor, currency, self.exponents)

    def learn_exponents(self, *sides: str) -> None:
        """Exponents of the currencies present, from the connection's ``ar_exp`` macro when it has one (it
        carries the workspace's exponent overrides), else from ISO 4217."""
        union = " UNION ".join(
            f"SELECT unnest([ccy, stl_ccy, fee_ccy]) AS c FROM {side}" for side in sides
        )
        codes = [str(c) for (c,) in self.con.execute(
            f"SELECT DISTINCT c FROM ({union}) WHERE c IS NOT NULL ORDER BY c").fetchall()]
        if not codes:
            return
        has_macro = scalar(self.con, "SELECT count(*) FROM duckdb_functions() WHERE function_name = 'ar_exp'")
        if has_macro:
            values = ", ".join(f"({_sql_str(c)})" for c in codes)
            rows = self.con.execute(f"SELECT c, ar_exp(c) FROM (VALUES {values}) AS t(c)").fetchall()
            self.exponents = {str(c): int(e) for c, e in rows if e is not None}
        else:
            iso = all_exponents()
            self.exponents = {c: iso[c] for c in codes if c in iso}

    def tmp(self, prefix: str) -> str:
        name = _tmp_name(prefix)
        self.scratch.append(name)
        return name

    def create(self, prefix: str, sql: str) -> str:
        name = self.tmp(prefix)
        self.con.execute(f"CREATE TEMP TABLE {name} AS {sql}")
        return name

    def drop(self) -> None:
        for name in self.scratch:
            self.con.execute(f"DROP TABLE IF EXISTS {name}")

    def release(self, name: str) -> None:
        """Drop a scratch table as soon as it is no longer needed (memory at 10M rows)."""
        self.con.execute(f"DROP TABLE IF EXISTS {name}")

    def side(self, source: str, line_column: str, where: str) -> str:
        """The columns matching needs, normalised (empty key = no key, record_type upper-cased)."""
        return (
            f"SELECT nullif({self.key}, '') AS k, coalesce(upper(record_type), '') AS rt, "
            f"nullif({self.link}, '') AS link, upper(status) AS status, "
            f"(status IS NULL OR list_contains({self.success}, upper(status))) AS ok, "
            "amount_minor AS amt, amount_currency AS ccy, settlement_minor AS stl, settlement_currency AS stl_ccy, "
            f"fee_minor AS fee, fee_currency AS fee_ccy, occurred_at, {_utc8_date('occurred_at')} AS day, "
            f"CAST({{'sha256': source_sha256, 'name': source_name, 'line': {line_column}}} AS {_LINEAGE_TYPE}) AS lin "
            f"FROM {source} AS src WHERE {where}{self.type_filter}"
        )

    def execute(self, report_lines: str, ledger_lines: str, window: tuple[date, date] | None) -> MatchResult:
        con = self.con
        fam, rep = _sql_str(self.family), _sql_str(self.report)
        r = self.create("r", self.side(report_lines, "line_no", f"family = {fam} AND report = {rep}"))
        if window is None:
            lo, hi = con.execute(f"SELECT min(day), max(day) FROM {r}").fetchall()[0]
            window = (lo, hi) if lo is not None else None
        in_window = (
            f"(occurred_at IS NULL OR day BETWEEN DATE '{window[0].isoformat()}' AND DATE '{window[1].isoformat()}')"
            if window is not None else "(occurred_at IS NULL)"
        )
        ledger_side = self.side(ledger_lines, "ledger_row", f"coalesce(family, {fam}) = {fam}")
        lall = self.create("lall", f"SELECT *, {in_window} AS in_window FROM ({ledger_side})")
        self.learn_exponents(r, lall)
        outside = int(scalar(con, f"SELECT count(*) FROM {lall} WHERE NOT in_window"))
        lines = lall
        if outside:
            lines = self.create(
                "l",
                f"SELECT * FROM {lall} WHERE in_window UNION ALL "
                f"SELECT l.* FROM {lall} AS l SEMI JOIN (SELECT DISTINCT k, rt FROM {r} WHERE k IS NOT NULL) AS rk "
                "ON l.k = rk.k AND l.rt = rk.rt WHERE NOT l.in_window",
            )
            self.release(lall)
        out_of_window = outside - int(scalar(con, f"SELECT count(*) FROM {lines} WHERE NOT in_window"))
        rg, lg = self.group(r), self.group(lines)
        flags = self.flags(rg, lg)
        parts = [self.key_exceptions(flags, r, lines), self.no_key_exceptions(r, lines),
                 self.refund_exceptions(r, rg, lg, lines)]
        table = _tmp_name("exceptions")
        columns = ", ".join(f"CAST({f.name} AS {_sql_type(f.type)}) AS {f.name}" for f in EXCEPTION)
        con.execute(
            f"CREATE TEMP TABLE {table} AS SELECT {columns} FROM ("
            + " UNION ALL ".join(parts)
            + f") ORDER BY {ORDER_BY}"
        )
        counts = dict.fromkeys(EXCEPTION_CLASSES, 0)
        for cls, n in con.execute(f"SELECT exception_class, count(*) FROM {table} GROUP BY 1").fetchall():
            counts[str(cls)] = int(n)
        matched = int(scalar(con, (
            f"SELECT (SELECT count(*) FROM {flags} WHERE NOT finding) "
            f"+ (SELECT count(*) FROM {r} WHERE k IS NULL AND NOT ok) "
            f"+ (SELECT count(*) FROM {lines} WHERE k IS NULL AND NOT ok)"
        )))
        counts["matched"] = matched
        return MatchResult(table, matched, counts, window, out_of_window, con)

    def group(self, side: str) -> str:
        """One row per key: how many lines, and the values all of them agree on (NULL where they differ).

        Most keys have one line: those rows are taken as they are; only the duplicated keys (few) pay for
        the min/max aggregation (twice as fast at 1M rows as aggregating every key)."""
        columns = ("amt", "ccy", "status", "stl", "stl_ccy", "fee", "fee_ccy", "link")

        def agreed(col: str) -> str:
            return f"CASE WHEN min({col}) = max({col}) AND count({col}) = count(*) THEN min({col}) END AS {col}"

        counts = self.create("n", f"SELECT k, rt, count(*) AS n FROM {side} WHERE k IS NOT NULL GROUP BY k, rt")
        grouped = self.create(
            "g",
            f"SELECT s.k, s.rt, CAST(1 AS BIGINT) AS n, s.ok, {', '.join('s.' + c for c in columns)} FROM {side} AS s "
            f"SEMI JOIN (SELECT k, rt FROM {counts} WHERE n = 1) AS c ON s.k = c.k AND s.rt = c.rt "
            f"UNION ALL SELECT s.k, s.rt, count(*) AS n, bool_and(s.ok) AS ok, {', '.join(agreed(c) for c in columns)} "
            f"FROM {side} AS s SEMI JOIN (SELECT k, rt FROM {counts} WHERE n > 1) AS c ON s.k = c.k AND s.rt = c.rt "
            "GROUP BY s.k, s.rt",
        )
        self.release(counts)
        return grouped

    def flags(self, rg: str, lg: str) -> str:
        """Join both sides per key and decide every rule once, as booleans."""
        pairs = ", ".join(f"r.{c} AS r_{c}, l.{c} AS l_{c}"
                          for c in ("n", "ok", "amt", "ccy", "status", "stl", "stl_ccy", "fee", "fee_ccy", "link"))
        joined = (f"SELECT coalesce(r.k, l.k) AS k, coalesce(r.rt, l.rt) AS rt, {pairs} "
                  f"FROM {rg} AS r FULL OUTER JOIN {lg} AS l ON r.k = l.k AND r.rt = l.rt")
        single = "coalesce(r_n, 0) <= 1 AND coalesce(l_n, 0) <= 1"
        compare = f"({single} AND r_n = 1 AND l_n = 1 AND r_ok AND l_ok)"
        same_ccy = "r_ccy IS NOT DISTINCT FROM l_ccy"
        rules = {
            "dup_r": "coalesce(r_n > 1, false)",
            "dup_l": "coalesce(l_n > 1, false)",
            "miss_l": f"({single} AND l_n IS NULL AND r_ok)",
            "miss_r": f"({single} AND r_n IS NULL AND l_ok)",
            "st_l": f"({single} AND r_n = 1 AND l_n = 1 AND r_ok AND NOT l_ok)",
            "st_r": f"({single} AND r_n = 1 AND l_n = 1 AND NOT r_ok AND l_ok)",
            "cur": f"({compare} AND NOT ({same_ccy}))",
            "amt": f"({compare} AND {same_ccy} AND r_amt IS DISTINCT FROM l_amt)",
            "stl": f"({compare} AND {same_ccy} AND r_stl IS NOT NULL AND l_stl IS NOT NULL "
                   "AND (r_stl <> l_stl OR r_stl_ccy IS DISTINCT FROM l_stl_ccy))",
            "fee": f"({compare} AND {same_ccy} AND r_fee IS NOT NULL AND l_fee IS NOT NULL "
                   "AND (abs(r_fee) <> abs(l_fee) OR r_fee_ccy IS DISTINCT FROM l_fee_ccy))",
            "link": f"({compare} AND rt = 'REFUND' AND r_link IS NOT NULL AND l_link IS NOT NULL "
                    "AND r_link <> l_link)",
        }
        decided = ", ".join(f"coalesce({sql}, false) AS {name}" for name, sql in rules.items())
        return self.create(
            "flags",
            f"SELECT *, ({' OR '.join(rules)}) AS finding FROM (SELECT *, {decided} FROM ({joined}))",
        )

    def key_exceptions(self, flags: str, r: str, lines: str) -> str:
        """One row per rule that fired on a key, with both sides' lineage lists."""
        key = self.key
        kr = "k || ' (' || rt || ')'"
        rules = [
            ("dup_r", "duplicate_in_report", "DUPLICATE_KEY",
             f"r_n || ' report lines share {key} ' || {kr} || '; not compared further'"),
            ("dup_l", "duplicate_in_ledger", "DUPLICATE_KEY",
             f"l_n || ' ledger rows share {key} ' || {kr} || '; not compared further'"),
            ("miss_l", "missing_in_ledger", "NOT_IN_LEDGER",
             f"'report ' || {self.money('r_amt', 'r_ccy')} || ' has no ledger row with {key} ' || {kr}"),
            ("miss_r", "missing_in_report", "NOT_IN_REPORT",
             f"'ledger ' || {self.money('l_amt', 'l_ccy')} || ' with {key} ' || {kr} || ' is not in "
             f"{self.family}.{self.report}'"),
            ("st_l", "status_mismatch", "LEDGER_NOT_SUCCESS",
             f"'report status ' || {_text('r_status')} || ' (successful), ledger status ' || {_text('l_status')}"),
            ("st_r", "status_mismatch", "REPORT_NOT_SUCCESS",
             f"'report status ' || {_text('r_status')} || ', ledger status ' || {_text('l_status')} "
             "|| ' (successful)'"),
            ("cur", "currency_mismatch", "CURRENCY_MISMATCH",
             f"'currency: report ' || {_text('r_ccy')} || ', ledger ' || {_text('l_ccy')}"),
            ("amt", "amount_mismatch", "AMOUNT_MISMATCH",
             f"'amount: report ' || {self.money('r_amt', 'r_ccy')} || ', ledger ' || {self.money('l_amt', 'l_ccy')}"),
            ("stl", "amount_mismatch", "SETTLEMENT_MISMATCH",
             f"'settlement: report ' || {self.money('r_stl', 'r_stl_ccy')} || ', ledger ' "
             f"|| {self.money('l_stl', 'l_stl_ccy')}"),
            ("fee", "amount_mismatch", "FEE_MISMATCH",
             f"'fee (magnitude): report ' || {self.money('abs(r_fee)', 'r_fee_ccy')} || ', ledger ' "
             f"|| {self.money('abs(l_fee)', 'l_fee_ccy')}"),
            ("link", "link_mismatch", "REFUND_ORIGINAL_MISMATCH",
             f"'refund of {self.link}: report ' || r_link || ', ledger ' || l_link"),
        ]
        found = " UNION ALL ".join(
            f"SELECT '{cls}' AS exception_class, '{reason}' AS reason_code, k, rt, r_amt, r_ccy, r_status, "
            f"l_amt, l_ccy, l_status, {detail} AS detail FROM {flags} WHERE {flag}"
            for flag, cls, reason, detail in rules
        )
        exc = self.create("kexc", found)
        keys = self.create("ekeys", f"SELECT DISTINCT k, rt FROM {exc}")
        r_lins = self.lineage(r, keys)
        l_lins = self.lineage(lines, keys)
        return self.output(
            f"(SELECT e.*, rl.lins AS r_lins, ll.lins AS l_lins FROM {exc} AS e "
            f"LEFT JOIN {r_lins} AS rl ON e.k = rl.k AND e.rt = rl.rt "
            f"LEFT JOIN {l_lins} AS ll ON e.k = ll.k AND e.rt = ll.rt)"
        )

    def lineage(self, side: str, keys: str) -> str:
        return self.create(
            "lins",
            f"SELECT s.k, s.rt, list(s.lin ORDER BY {_LINEAGE_ORDER.replace('lin.', 's.lin.')}) AS lins "
            f"FROM {side} AS s SEMI JOIN {keys} AS e ON s.k = e.k AND s.rt = e.rt GROUP BY s.k, s.rt",
        )

    def output(self, source: str) -> str:
        """Rows shaped like ``schema.EXCEPTION`` from a source with k, rt, r_*/l_* values and lineage lists."""
        empty = f"CAST([] AS {_LINEAGE_TYPE}[])"
        return (
            f"SELECT exception_class, reason_code, {_sql_str(self.family)} AS family, "
            f"{_sql_str(self.report)} AS report, "
            "k AS match_key, nullif(rt, '') AS record_type, r_amt AS report_amount_minor, r_ccy AS report_currency, "
            "r_status AS report_status, l_amt AS ledger_amount_minor, l_ccy AS ledger_currency, "
            f"l_status AS ledger_status, coalesce(r_lins, {empty}) AS report_lines, "
            f"coalesce(l_lins, {empty}) AS ledger_rows, detail FROM {source}"
        )

    def no_key_exceptions(self, r: str, lines: str) -> str:
        """Successful lines/rows with an empty key field: each is its own exception (nothing to match on)."""
        key = self.key
        null = "CAST(NULL AS {})"
        report = (
            "SELECT 'missing_in_ledger' AS exception_class, 'NO_MATCH_KEY' AS reason_code, k, rt, "
            f"amt AS r_amt, ccy AS r_ccy, status AS r_status, {null.format('BIGINT')} AS l_amt, "
            f"{null.format('VARCHAR')} AS l_ccy, {null.format('VARCHAR')} AS l_status, "
            f"'report ' || {self.money('amt', 'ccy')} || ' has no {key}: it cannot be matched' AS detail, "
            f"[lin] AS r_lins, NULL AS l_lins FROM {r} WHERE k IS NULL AND ok"
        )
        ledger = (
            "SELECT 'missing_in_report' AS exception_class, 'NO_MATCH_KEY' AS reason_code, k, rt, "
            f"{null.format('BIGINT')} AS r_amt, {null.format('VARCHAR')} AS r_ccy, "
            f"{null.format('VARCHAR')} AS r_status, amt AS l_amt, ccy AS l_ccy, status AS l_status, "
            f"'ledger ' || {self.money('amt', 'ccy')} || ' has no {key}: it cannot be matched' AS detail, "
            f"NULL AS r_lins, [lin] AS l_lins FROM {lines} WHERE k IS NULL AND ok"
        )
        return self.output(f"({report} UNION ALL {ledger})")

    def refund_exceptions(self, r: str, rg: str, lg: str, lines: str) -> str:
        """Rule 8: the successful refunds of a payment add up to more than the payment."""
        payments = f"(SELECT k, amt, ccy, status FROM {rg} WHERE rt = 'PAYMENT' AND n = 1 AND ok AND amt IS NOT NULL)"
        refunds = self.create(
            "refunds",
            f"SELECT f.* FROM {r} AS f ANTI JOIN (SELECT k, rt FROM {rg} WHERE n > 1) AS d "
            f"ON f.k = d.k AND f.rt = d.rt WHERE f.rt = 'REFUND' AND f.ok AND f.link IS NOT NULL",
        )
        over = self.create(
            "over",
            f"SELECT p.k, p.amt, p.ccy, p.status, sum(abs(f.amt)) AS total, count(*) AS lines_n "
            f"FROM {payments} AS p JOIN {refunds} AS f ON f.link = p.k AND f.ccy = p.ccy "
            "GROUP BY p.k, p.amt, p.ccy, p.status HAVING sum(abs(f.amt)) > abs(p.amt)",
        )
        members = (
            f"SELECT o.k, s.lin FROM {over} AS o JOIN {r} AS s ON s.k = o.k AND s.rt = 'PAYMENT' "
            f"UNION ALL SELECT o.k, f.lin FROM {over} AS o JOIN {refunds} AS f ON f.link = o.k AND f.ccy = o.ccy"
        )
        r_lins = self.create(
            "olins", f"SELECT k, list(lin ORDER BY {_LINEAGE_ORDER}) AS lins FROM ({members}) GROUP BY k",
        )
        l_lins = self.create(
            "olins",
            f"SELECT s.k, list(s.lin ORDER BY {_LINEAGE_ORDER.replace('lin.', 's.lin.')}) AS lins "
            f"FROM {lines} AS s SEMI JOIN {over} AS o ON s.k = o.k WHERE s.rt = 'PAYMENT' GROUP BY s.k",
        )
        detail = (
            f"o.lines_n || ' refund line(s) total ' || {self.money('o.total', 'o.ccy')} || ', more than the payment ' "
            f"|| {self.money('abs(o.amt)', 'o.ccy')}"
        )
        return self.output(
            "(SELECT 'refund_exceeds_payment' AS exception_class, 'REFUNDS_EXCEED_PAYMENT' AS reason_code, "
            "o.k AS k, 'PAYMENT' AS rt, o.amt AS r_amt, o.ccy AS r_ccy, o.status AS r_status, "
            f"lg.amt AS l_amt, lg.ccy AS l_ccy, lg.status AS l_status, {detail} AS detail, "
            f"rl.lins AS r_lins, ll.lins AS l_lins FROM {over} AS o "
            f"LEFT JOIN {lg} AS lg ON lg.k = o.k AND lg.rt = 'PAYMENT' "
            f"LEFT JOIN {r_lins} AS rl ON rl.k = o.k LEFT JOIN {l_lins} AS ll ON ll.k = o.k)"
        )


def reconcile_family(con: duckdb.DuckDBPyConnection, report_lines: str, ledger_lines: str,
                     config: ReconcileConfig, family: str, *,
                     window: tuple[date, date] | None = None) -> MatchResult:
    """``reconcile`` for each report ``config.match_reports`` names for ``family``, as one table.

    Counts, ``matched`` and ``out_of_window`` are summed over the reports; ``window`` is the span of the
    reports' windows; ``parts`` keeps each report's own result.
    """
    parts: dict[str, MatchResult] = {}
    for report in config.match_reports.get(family, []):
        parts[report] = reconcile(
            con, report_lines=report_lines, ledger_lines=ledger_lines, family=family, report=report,
            key=config.match_key.get(family, "merchant_ref_id"), success_statuses=config.success_statuses,
            window=window, record_types=config.match_record_types.get(family),
        )
    table = _tmp_name("exceptions")
    columns = ", ".join(f"CAST(NULL AS {_sql_type(f.type)}) AS {f.name}" for f in EXCEPTION)
    union = " UNION ALL ".join(f"SELECT * FROM {p.table}" for p in parts.values()) or f"SELECT {columns} WHERE false"
    con.execute(f"CREATE TEMP TABLE {table} AS SELECT * FROM ({union}) ORDER BY {ORDER_BY}")
    counts = dict.fromkeys((*EXCEPTION_CLASSES, "matched"), 0)
    for part in parts.values():
        for name, n in part.counts.items():
            counts[name] = counts.get(name, 0) + n
    windows = [p.window for p in parts.values() if p.window is not None]
    span = (min(w[0] for w in windows), max(w[1] for w in windows)) if windows else None
    return MatchResult(table, counts["matched"], counts, span, sum(p.out_of_window for p in parts.values()), con,
                       parts)
