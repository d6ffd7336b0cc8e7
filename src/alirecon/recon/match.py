"""Report lines vs the user's ledger: one set-based DuckDB pass, one typed exception per discrepancy.

Why set-based: a day of Antom or Alipay+ lines can be millions of rows; every step below is a join or a
GROUP BY over whole tables (no Python loop over rows). One pass over both sides finds the few keys that need a
closer look, and only their lines are then read again with their lineage (``_Run``), so 10M x 10M runs in about
the time of a bare DuckDB join (bench/match_bench.py; reconciliation-practice.md 5.2). Why these rules: a
finance team must see every disagreement once, with a reason code and the exact lines on both sides, and the
same input must give the same rows in the same order (DESIGN.md).

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
from datetime import date, datetime, time, timedelta

import duckdb
import pyarrow as pa

from ..clock import UTC8
from ..config import MATCH_KEYS, ReconcileConfig
from ..formats.engine import _duck_type, _sql_str, _tmp_name, scalar
from ..money import all_exponents
from ..schema import EXCEPTION

__all__ = ["EXCEPTION_CLASSES", "ORDER_BY", "MatchResult", "match_fields", "reconcile", "reconcile_family"]

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
# Lineage while it is being collected: the fields in rule 9's order (name, sha256, line), so that sorting a
# list of them is one list_sort (an ordered list() aggregate was the slowest step); cast to _LINEAGE_TYPE
# (by field name) once the list is built.
_SORTABLE_LINEAGE = "STRUCT(name VARCHAR, sha256 VARCHAR, line BIGINT)"
_UTC8_MICROS = int(UTC8.utcoffset(None).total_seconds()) * 1_000_000  # clearing days (alipayplus.md 8)
_DAY = timedelta(days=1)


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


def _lineage(line: str) -> str:
    """A line's lineage (schema.LINEAGE) as a sortable struct: its file, the file's sha256 and the line."""
    return f"CAST({{'name': source_name, 'sha256': source_sha256, 'line': {line}}} AS {_SORTABLE_LINEAGE}) AS lin"


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
    # Row order inside the scratch tables never matters (the result is ORDER BY'd); not keeping it saves time
    # and memory at 10M rows. The caller's setting is restored afterwards.
    keep_order = bool(scalar(con, "SELECT current_setting('preserve_insertion_order')"))
    con.execute("SET preserve_insertion_order = false")
    try:
        return run.execute(report_lines, ledger_lines, window)
    finally:
        con.execute(f"SET preserve_insertion_order = {str(keep_order).lower()}")
        run.drop()


@dataclass(frozen=True)
class _Rule:
    """Rule 6 or 7 on a key with at most one line per side: ``when`` is SQL over its report line ``r`` and
    ledger row ``l`` (either may be absent: ``k`` NULL), ``detail`` over the key's values (``r_*`` / ``l_*``)."""

    cls: str
    reason: str
    when: str
    detail: str


_BOTH = "r.k IS NOT NULL AND l.k IS NOT NULL"
_COMPARED = f"{_BOTH} AND r.ok AND l.ok"
_SAME_CCY = "r.ccy IS NOT DISTINCT FROM l.ccy"
# per key: the value all its lines agree on (rule 9); ``ok`` is ANDed instead
_AGREED = ("amt", "ccy", "status", "stl", "stl_ccy", "fee", "fee_ccy", "link")


class _Run:
    """One reconcile: the scratch tables it creates and the SQL that fills them.

    Why this shape (10M x 10M lines in about the time of a bare DuckDB join, under a 2 GB memory limit):

    1. ONE pass over every keyed line joins both sides on the key, tells for each pair whether any rule could
       fire, and counts the pairs per key *hash* (an integer group by: a fifth faster than grouping the string
       keys at 10M). It keeps only the hashes of keys that may have a finding (more than one pair, or a rule
       fired), of the report's refunds and of the payments they point at, plus a tally of the rest. Nothing is
       copied and no lineage is carried through it.
    2. Narrow passes pick the lines of those hashes (and the keyless ones) with their lineage: ~1% of the rows.
    3. Every rule is then decided exactly, per key, on those few rows, with the same rule SQL; a hash collision
       only brings in a key that turns out to agree, and is counted as matched.
    """

    # SQL function (a, b) -> UBIGINT that groups keys in the key pass; any function gives the same result
    # (colliding keys are told apart afterwards), a good one keeps the candidates few
    key_hash = "hash"

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

    def learn_exponents(self, *tables: str) -> None:
        """Exponents of the currencies in the few rows the details are written from (not of every line: that
        was a full pass per side), from the connection's ``ar_exp`` macro when it has one (it carries the
        workspace's exponent overrides), else from ISO 4217."""
        union = " UNION ".join(f"SELECT unnest([ccy, stl_ccy, fee_ccy]) AS c FROM {table}" for table in tables)
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

    def create(self, prefix: str, sql: str) -> str:
        name = _tmp_name(prefix)
        self.scratch.append(name)
        self.con.execute(f"CREATE TEMP TABLE {name} AS {sql}")
        return name

    def drop(self) -> None:
        for name in self.scratch:
            self.con.execute(f"DROP TABLE IF EXISTS {name}")

    def side(self, source: str, where: str, *extra: str) -> str:
        """The columns matching needs, normalised (empty key = no key, record_type upper-cased)."""
        columns = ", ".join((
            f"nullif({self.key}, '') AS k", "coalesce(upper(record_type), '') AS rt",
            f"nullif({self.link}, '') AS link", "upper(status) AS status",
            f"(status IS NULL OR list_contains({self.success}, upper(status))) AS ok", "amount_minor AS amt",
            "amount_currency AS ccy", "settlement_minor AS stl", "settlement_currency AS stl_ccy", "fee_minor AS fee",
            "fee_currency AS fee_ccy", *extra,
        ))
        return f"SELECT {columns} FROM {source} AS src WHERE {where}{self.type_filter}"

    def rules(self) -> list[_Rule]:
        """Rules 6 and 7 for a key with at most one line per side."""
        key, kr = self.key, "k || ' (' || rt || ')'"
        return [
            _Rule("missing_in_ledger", "NOT_IN_LEDGER", "l.k IS NULL AND r.ok",
                  f"'report ' || {self.money('r_amt', 'r_ccy')} || ' has no ledger row with {key} ' || {kr}"),
            _Rule("missing_in_report", "NOT_IN_REPORT", "r.k IS NULL AND l.ok",
                  f"'ledger ' || {self.money('l_amt', 'l_ccy')} || ' with {key} ' || {kr} || ' is not in "
                  f"{self.family}.{self.report}'"),
            _Rule("status_mismatch", "LEDGER_NOT_SUCCESS", f"{_BOTH} AND r.ok AND NOT l.ok",
                  f"'report status ' || {_text('r_status')} || ' (successful), ledger status ' || {_text('l_status')}"),
            _Rule("status_mismatch", "REPORT_NOT_SUCCESS", f"{_BOTH} AND NOT r.ok AND l.ok",
                  f"'report status ' || {_text('r_status')} || ', ledger status ' || {_text('l_status')} "
                  "|| ' (successful)'"),
            _Rule("currency_mismatch", "CURRENCY_MISMATCH", f"{_COMPARED} AND NOT ({_SAME_CCY})",
                  f"'currency: report ' || {_text('r_ccy')} || ', ledger ' || {_text('l_ccy')}"),
            _Rule("amount_mismatch", "AMOUNT_MISMATCH", f"{_COMPARED} AND {_SAME_CCY} AND r.amt IS DISTINCT FROM l.amt",
                  f"'amount: report ' || {self.money('r_amt', 'r_ccy')} || ', ledger ' "
                  f"|| {self.money('l_amt', 'l_ccy')}"),
            _Rule("amount_mismatch", "SETTLEMENT_MISMATCH",
                  f"{_COMPARED} AND {_SAME_CCY} AND r.stl IS NOT NULL AND l.stl IS NOT NULL "
                  "AND (r.stl <> l.stl OR r.stl_ccy IS DISTINCT FROM l.stl_ccy)",
                  f"'settlement: report ' || {self.money('r_stl', 'r_stl_ccy')} || ', ledger ' "
                  f"|| {self.money('l_stl', 'l_stl_ccy')}"),
            _Rule("amount_mismatch", "FEE_MISMATCH",
                  f"{_COMPARED} AND {_SAME_CCY} AND r.fee IS NOT NULL AND l.fee IS NOT NULL "
                  "AND (abs(r.fee) <> abs(l.fee) OR r.fee_ccy IS DISTINCT FROM l.fee_ccy)",
                  f"'fee (magnitude): report ' || {self.money('abs(r_fee)', 'r_fee_ccy')} || ', ledger ' "
                  f"|| {self.money('abs(l_fee)', 'l_fee_ccy')}"),
            _Rule("link_mismatch", "REFUND_ORIGINAL_MISMATCH",
                  f"{_COMPARED} AND r.rt = 'REFUND' AND r.link IS NOT NULL AND l.link IS NOT NULL "
                  "AND r.link <> l.link",
                  f"'refund of {self.link}: report ' || r_link || ', ledger ' || l_link"),
        ]

    def execute(self, report_lines: str, ledger_lines: str, window: tuple[date, date] | None) -> MatchResult:
        con = self.con
        fam, rep = _sql_str(self.family), _sql_str(self.report)
        report_where = f"family = {fam} AND report = {rep}"
        ledger_where = f"coalesce(family, {fam}) = {fam}"
        if window is None:  # the UTC+8 day grows with the instant: the days of the first and the last line
            first, last = _utc8_date("min(occurred_at)"), _utc8_date("max(occurred_at)")
            lo, hi = con.execute(
                f"SELECT {first}, {last} FROM {report_lines} AS src WHERE {report_where}{self.type_filter}"
            ).fetchall()[0]
            window = (lo, hi) if lo is not None else None
        in_window = "(occurred_at IS NULL) AS in_window"
        if window is not None:  # the window's UTC+8 days as instants: no date conversion per row
            start, end = (datetime.combine(day, time(0), UTC8).isoformat() for day in (window[0], window[1] + _DAY))
            in_window = (f"(occurred_at IS NULL OR (occurred_at >= TIMESTAMPTZ '{start}' "
                         f"AND occurred_at < TIMESTAMPTZ '{end}')) AS in_window")

        keys = self.key_pass(self.side(report_lines, report_where), self.side(ledger_lines, ledger_where, in_window))
        r_rows, refunds = self.fetch_report(keys, self.side(report_lines, report_where, _lineage("line_no")))
        r_keys = self.per_key(r_rows)
        over = self.create(
            "over",
            f"SELECT p.k, p.amt, p.ccy, p.status, sum(abs(f.amt)) AS total, count(*) AS lines_n "
            f"FROM {r_keys} AS p JOIN {refunds} AS f ON f.link = p.k AND f.ccy = p.ccy "
            "WHERE p.rt = 'PAYMENT' AND p.n = 1 AND p.ok AND p.amt IS NOT NULL "
            "GROUP BY p.k, p.amt, p.ccy, p.status HAVING sum(abs(f.amt)) > abs(p.amt)",
        )
        candidates = f"(SELECT h FROM {keys} WHERE candidate)"
        ledger_lin = self.side(ledger_lines, ledger_where, in_window, _lineage("ledger_row"))
        l_rows = self.create(  # the rows of the candidates, of the overpaid payments, and the keyless ones
            "lrows",
            f"SELECT * FROM ({ledger_lin}) WHERE k IS NULL "
            f"OR {self.key_hash}(k, rt) IN ({candidates} UNION SELECT {self.key_hash}(k, 'PAYMENT') FROM {over})",
        )
        # in scope (rule 3): every row of a key the report has, else the rows inside the window
        l_keys = self.per_key(f"(SELECT s.* FROM {l_rows} AS s LEFT JOIN {r_keys} AS r ON r.k = s.k AND r.rt = s.rt "
                              "WHERE s.in_window OR r.k IS NOT NULL)")
        found = self.decide(r_keys, l_keys, candidates)
        self.learn_exponents(r_rows, l_rows)

        parts = [self.key_exceptions(found), self.no_key_exceptions(r_rows, l_rows),
                 self.refund_exceptions(over, refunds, r_rows, l_keys)]
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
        passed, agreeing, r_no_key, l_no_key, outside, l_no_key_outside = con.execute(
            f"SELECT (SELECT coalesce(sum(keys), 0) FROM {keys} WHERE NOT outside AND NOT candidate), "
            f"(SELECT count(*) FROM {found} WHERE agree), "
            f"(SELECT count(*) FROM {r_rows} WHERE k IS NULL AND NOT ok), "
            f"(SELECT count(*) FROM {l_rows} WHERE k IS NULL AND NOT ok AND in_window), "
            f"(SELECT coalesce(sum(pairs), 0) FROM {keys} WHERE outside), "
            f"(SELECT count(*) FROM {l_rows} WHERE k IS NULL AND NOT in_window)"
        ).fetchall()[0]
        # rule 10: the keys the key pass let through, the candidates that agree, the non-successful keyless lines
        counts["matched"] = matched = int(passed + agreeing + r_no_key + l_no_key)
        return MatchResult(table, matched, counts, window, int(outside + l_no_key_outside), con)

    def key_pass(self, report_side: str, ledger_side: str) -> str:
        """The one pass over every keyed line (see the class docstring). One row per kept key hash ``h``:
        ``candidate`` (more than one pair: a duplicate, rule 5; or a rule may fire), ``refund`` (a report REFUND
        key) and ``paid`` (the hash of the payment its line points at, rule 8), with its ``pairs``. Then, with
        ``h`` NULL: one row whose ``keys`` counts every other key (one pair, nothing to look at), and one
        (``outside``) whose ``pairs`` counts the ledger rows outside the window whose key the report lacks."""
        hash_ = self.key_hash
        may_fire = " OR ".join(f"({rule.when})" for rule in self.rules())
        outside = "coalesce(r.k IS NULL AND NOT l.in_window, false)"
        joined = (
            f"SELECT CASE WHEN {outside} THEN NULL ELSE {hash_}(coalesce(r.k, l.k), coalesce(r.rt, l.rt)) END AS hk, "
            f"coalesce({may_fire}, false) AS fires, coalesce(r.rt = 'REFUND', false) AS refund, "
            f"CASE WHEN r.rt = 'REFUND' AND r.ok AND r.link IS NOT NULL THEN {hash_}(r.link, 'PAYMENT') END AS paid "
            f"FROM (SELECT * FROM ({report_side}) WHERE k IS NOT NULL) AS r "
            f"FULL OUTER JOIN (SELECT * FROM ({ledger_side}) WHERE k IS NOT NULL) AS l ON r.k = l.k AND r.rt = l.rt"
        )
        per_hash = (
            "SELECT hk, count(*) AS pairs, hk IS NOT NULL AND (count(*) > 1 OR bool_or(fires)) AS candidate, "
            f"hk IS NOT NULL AND bool_or(refund) AS refund, max(paid) AS paid FROM ({joined}) GROUP BY hk"
        )
        kept = "hk IS NULL OR candidate OR refund"
        return self.create(
            "keys",
            "SELECT h, outside, candidate, refund, paid, sum(pairs) AS pairs, count(*) AS keys FROM ("
            f"SELECT CASE WHEN {kept} THEN hk END AS h, hk IS NULL AS outside, candidate, refund, "
            f"CASE WHEN {kept} THEN paid END AS paid, pairs FROM ({per_hash})) GROUP BY ALL",
        )

    def fetch_report(self, keys: str, report_lin: str) -> tuple[str, str]:
        """The report lines of the candidate keys, of every refund and of the payments they point at, and the
        keyless ones (rule 6), with their lineage; and among them rule 8's refunds (successful, linked, their own
        key not duplicated: rule 5)."""
        hash_ = self.key_hash
        fetched = self.create(
            "fetched",
            f"SELECT h FROM {keys} WHERE candidate OR refund UNION SELECT paid FROM {keys} WHERE paid IS NOT NULL",
        )
        r_rows = self.create(
            "rrows", f"SELECT * FROM ({report_lin}) WHERE k IS NULL OR {hash_}(k, rt) IN (SELECT h FROM {fetched})",
        )
        refunds = self.create(
            "refunds",
            f"SELECT k, link, amt, ccy, lin FROM (SELECT *, count(*) OVER (PARTITION BY k) AS n FROM {r_rows} "
            "WHERE rt = 'REFUND') WHERE ok AND link IS NOT NULL AND (k IS NULL OR n = 1)",
        )
        # a keyless refund, or one whose key hash collided, may point at a payment not fetched yet: rare
        missing = f"SELECT link FROM {refunds} WHERE {hash_}(link, 'PAYMENT') NOT IN (SELECT h FROM {fetched})"
        if scalar(self.con, f"SELECT count(*) FROM ({missing})"):
            self.con.execute(
                f"INSERT INTO {r_rows} SELECT * FROM ({report_lin}) WHERE rt = 'PAYMENT' AND k IN ({missing})"
            )
        return r_rows, refunds

    def per_key(self, rows: str) -> str:
        """One row per key of ``rows``: how many lines, the values they all agree on (NULL where they differ)
        and the lineage list (rule 9). Most keys have one line: those are taken as they are, only the duplicated
        ones pay for the aggregation (a third of the time)."""
        def agreed(col: str) -> str:
            return f"CASE WHEN min({col}) = max({col}) AND count({col}) = count(*) THEN min({col}) END AS {col}"

        counted = f"(SELECT *, count(*) OVER (PARTITION BY k, rt) AS n FROM {rows} WHERE k IS NOT NULL)"
        return self.create(
            "perkey",
            f"SELECT k, rt, n, ok, {', '.join(_AGREED)}, CAST([lin] AS {_LINEAGE_TYPE}[]) AS lins FROM {counted} "
            f"WHERE n = 1 UNION ALL SELECT k, rt, count(*), bool_and(ok), {', '.join(agreed(c) for c in _AGREED)}, "
            f"CAST(list_sort(list(lin)) AS {_LINEAGE_TYPE}[]) FROM {counted} WHERE n > 1 GROUP BY k, rt",
        )

    def decide(self, r_keys: str, l_keys: str, candidates: str) -> str:
        """The exact decision for every candidate key: its values on both sides, whether it is duplicated
        (rule 5), which of rules 6-7 fire (``fired_<i>``), and ``agree`` when nothing does."""
        rules = self.rules()
        values = ", ".join(f"r.{c} AS r_{c}, l.{c} AS l_{c}" for c in ("n", *_AGREED))
        single = "coalesce(r.n, 0) <= 1 AND coalesce(l.n, 0) <= 1"
        fired = ", ".join(f"coalesce({single} AND {rule.when}, false) AS fired_{i}" for i, rule in enumerate(rules))
        any_fired = " OR ".join(f"fired_{i}" for i in range(len(rules)))
        side = "(SELECT * FROM {} WHERE " + f"{self.key_hash}(k, rt) IN {candidates})"
        return self.create(
            "found",
            f"SELECT *, NOT coalesce(r_n > 1 OR l_n > 1 OR {any_fired}, false) AS agree FROM ("
            f"SELECT coalesce(r.k, l.k) AS k, coalesce(r.rt, l.rt) AS rt, {values}, r.lins AS r_lins, "
            f"l.lins AS l_lins, {fired} FROM {side.format(r_keys)} AS r "
            f"FULL OUTER JOIN {side.format(l_keys)} AS l ON r.k = l.k AND r.rt = l.rt)",
        )

    def key_exceptions(self, found: str) -> str:
        """One row per rule that fired on a key, with both sides' values and lineage lists."""
        key, kr = self.key, "k || ' (' || rt || ')'"
        selects = [
            f"SELECT '{cls}' AS exception_class, 'DUPLICATE_KEY' AS reason_code, *, "
            f"{n} || ' {lines} share {key} ' || {kr} || '; not compared further' AS detail FROM {found} WHERE {n} > 1"
            for cls, n, lines in (("duplicate_in_report", "r_n", "report lines"),
                                  ("duplicate_in_ledger", "l_n", "ledger rows"))
        ]
        selects += [
            f"SELECT '{rule.cls}' AS exception_class, '{rule.reason}' AS reason_code, *, {rule.detail} AS detail "
            f"FROM {found} WHERE fired_{i}"
            for i, rule in enumerate(self.rules())
        ]
        return self.output("(" + " UNION ALL ".join(selects) + ")")

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

    def no_key_exceptions(self, r_rows: str, l_rows: str) -> str:
        """Successful lines/rows with an empty key field: each is its own exception (nothing to match on)."""
        key = self.key
        null = "CAST(NULL AS {})"
        lins = f"CAST([lin] AS {_LINEAGE_TYPE}[])"
        report = (
            "SELECT 'missing_in_ledger' AS exception_class, 'NO_MATCH_KEY' AS reason_code, k, rt, "
            f"amt AS r_amt, ccy AS r_ccy, status AS r_status, {null.format('BIGINT')} AS l_amt, "
            f"{null.format('VARCHAR')} AS l_ccy, {null.format('VARCHAR')} AS l_status, "
            f"'report ' || {self.money('amt', 'ccy')} || ' has no {key}: it cannot be matched' AS detail, "
            f"{lins} AS r_lins, NULL AS l_lins FROM {r_rows} WHERE k IS NULL AND ok"
        )
        ledger = (
            "SELECT 'missing_in_report' AS exception_class, 'NO_MATCH_KEY' AS reason_code, k, rt, "
            f"{null.format('BIGINT')} AS r_amt, {null.format('VARCHAR')} AS r_ccy, "
            f"{null.format('VARCHAR')} AS r_status, amt AS l_amt, ccy AS l_ccy, status AS l_status, "
            f"'ledger ' || {self.money('amt', 'ccy')} || ' has no {key}: it cannot be matched' AS detail, "
            f"NULL AS r_lins, {lins} AS l_lins FROM {l_rows} WHERE k IS NULL AND ok AND in_window"
        )
        return self.output(f"({report} UNION ALL {ledger})")

    def refund_exceptions(self, over: str, refunds: str, r_rows: str, l_keys: str) -> str:
        """Rule 8: the successful refunds of a payment add up to more than the payment."""
        members = (
            f"SELECT o.k, s.lin FROM {over} AS o JOIN {r_rows} AS s ON s.k = o.k AND s.rt = 'PAYMENT' "
            f"UNION ALL SELECT o.k, f.lin FROM {over} AS o JOIN {refunds} AS f ON f.link = o.k AND f.ccy = o.ccy"
        )
        r_lins = self.create(
            "olins",
            f"SELECT k, CAST(list_sort(list(lin)) AS {_LINEAGE_TYPE}[]) AS lins FROM ({members}) GROUP BY k",
        )
        detail = (
            f"o.lines_n || ' refund line(s) total ' || {self.money('o.total', 'o.ccy')} || ', more than the payment ' "
            f"|| {self.money('abs(o.amt)', 'o.ccy')}"
        )
        return self.output(
            "(SELECT 'refund_exceeds_payment' AS exception_class, 'REFUNDS_EXCEED_PAYMENT' AS reason_code, "
            "o.k AS k, 'PAYMENT' AS rt, o.amt AS r_amt, o.ccy AS r_ccy, o.status AS r_status, "
            f"l.amt AS l_amt, l.ccy AS l_ccy, l.status AS l_status, {detail} AS detail, "
            f"rl.lins AS r_lins, l.lins AS l_lins FROM {over} AS o "
            f"LEFT JOIN {l_keys} AS l ON l.k = o.k AND l.rt = 'PAYMENT' LEFT JOIN {r_lins} AS rl ON rl.k = o.k)"
        )


_MATCH_FIELDS = frozenset({"record_type", "status", "amount_minor", "amount_currency", "settlement_minor",
                           "settlement_currency", "fee_minor", "fee_currency", "occurred_at"})


def match_fields(config: ReconcileConfig) -> frozenset[str]:
    """The REPORT_LINE fields ``reconcile`` reads under ``config`` (keys and their refund links included)."""
    keys = set(config.match_key.values()) or {"merchant_ref_id"}
    return _MATCH_FIELDS | keys | {MATCH_KEYS[k] for k in keys}


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
