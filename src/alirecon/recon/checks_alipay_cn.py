"""Checks of Alipay China bills against themselves and each other (alipay-cn.md 11, CN-3 to CN-8).

Why: a 业务明细 states its own totals in its footers, the 汇总 file restates the detail per store, the
账务明细 carries a running balance, and every settled trade must reach the account bill; each of these is a
cheap, exact proof that the files are complete and consistent before anything is compared with the ledger.
CN-1 (structure), CN-2 (row width) and CN-9 (amount decimals) are parse-time errors (``formats.alipay_cn``).

Files pair up by bill: the account and date of the file name (``<account20>_<date>_<kind>.csv``, spec 4),
else the ``#账号`` and period inside. Amounts are fen; texts the canonical fields do not carry (商家优惠,
门店编号, 账户余额, ...) are read from ``extras`` as written (their header names, built-in aliases included).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..formats.alipay_cn import ACCOUNT_DETAIL_COLUMNS, CURRENCY, TRADE_DETAIL_COLUMNS, name_date_of
from ..formats.engine import _sql_str, extra_sql
from .checks import CheckContext, Result, _compare, _lineage, _rows, check, shared

__all__ = ["BillFile", "bill_files"]

FAMILY = "alipay_cn"
_ALIASES = {c.name: (c.name, *c.aliases) for c in (*TRADE_DETAIL_COLUMNS, *ACCOUNT_DETAIL_COLUMNS)}


def _text(column: str, files: Sequence[BillFile]) -> str:
    """The written text of ``column`` (under its documented name or a built-in alias) from the ``extras`` of
    lines of ``files``: where it sits in the array depends on the file's header, so files that agree share
    one branch."""
    aliases = _ALIASES.get(column, (column,))
    by_names: dict[tuple[str, ...] | None, list[str]] = defaultdict(list)
    for f in files:
        by_names[f.extras_names].append(f.sha256)
    branches = {names: f"coalesce({', '.join(extra_sql(a, names) for a in aliases)})" for names in by_names}
    if len(branches) == 1:
        return next(iter(branches.values()))
    cases = " ".join(f"WHEN source_sha256 IN {_in(shas)} THEN {branches[names]}" for names, shas in by_names.items())
    return f"CASE {cases} END"


def _fen(column: str, files: Sequence[BillFile]) -> str:
    """The fen of an amount kept as text (validated at parse time: at most 2 decimals, so exact)."""
    return f"ar_major({_text(column, files)}, ar_exp({_sql_str(CURRENCY)}))"


@dataclass
class BillFile:
    sha256: str
    name: str
    report: str
    meta: dict[str, str]
    extras_names: tuple[str, ...] | None  # None: lines loaded with JSON-object extras (engine.extra_sql)

    @property
    def account(self) -> str | None:
        return self.meta.get("account")

    @property
    def period(self) -> tuple[str | None, str | None]:
        return self.meta.get("period_start"), self.meta.get("period_end")

    @property
    def key(self) -> tuple[str, str]:
        """(account, date) of the bill this file belongs to: the file name's, else the content's."""
        account = self.meta.get("name_account") or self.account or ""
        if "name_date" in self.meta:
            day = self.meta["name_date"]
        elif "bill_date" in self.meta:
            day = name_date_of(self.meta["bill_date"])
        else:
            day = "/".join(p or "" for p in self.period)
        return account, day

    def lineage(self, line: int | None = None) -> dict[str, Any]:
        return _lineage(self.sha256, self.name, line)


@shared
def bill_files(ctx: CheckContext) -> dict[tuple[str, str], dict[str, list[BillFile]]]:
    """Parsed Alipay China files grouped by bill key, then report (each list ordered by name)."""
    out: dict[tuple[str, str], dict[str, list[BillFile]]] = defaultdict(lambda: defaultdict(list))
    for f in _rows(ctx, f"SELECT sha256, name, report, meta, extras_names FROM {ctx.files} "
                        f"WHERE family = '{FAMILY}' ORDER BY name, sha256"):
        names = None if f["extras_names"] is None else tuple(json.loads(f["extras_names"]))
        bill = BillFile(f["sha256"], f["name"], f["report"], json.loads(f["meta"] or "{}"), names)
        out[bill.key][bill.report].append(bill)
    return out


def _scope(key: tuple[str, str], *rest: str) -> str:
    return "/".join([*key, *rest])


def _declared(ctx: CheckContext, sha: str) -> list[dict[str, Any]]:
    return _rows(ctx, f"SELECT scope, figure, value, line_no FROM {ctx.declared} WHERE source_sha256 = "
                      f"{_sql_str(sha)} ORDER BY line_no, figure")


def _in(shas: Sequence[str]) -> str:
    return "(" + ", ".join(_sql_str(s) for s in shas) + ")"


# ---------------------------------------------------------------------------------------------
# CN-3, CN-4: footers vs rows


def _footer_check(ctx: CheckContext, check_id: str, report: str, aggregates: Callable[[BillFile], str],
                  figures: dict[tuple[str, str], str]) -> Iterator[Result]:
    """Compare each declared (scope, figure) of every ``report`` file with ``aggregates(file)`` over its lines."""
    for key, reports in sorted(bill_files(ctx).items()):
        for f in reports.get(report, []):
            agg = _rows(ctx, f"SELECT {aggregates(f)} FROM {ctx.lines} "
                             f"WHERE source_sha256 = {_sql_str(f.sha256)}")[0]
            declared = {(d["scope"], d["figure"]): d for d in _declared(ctx, f.sha256)}
            for (scope, figure), column in figures.items():
                d = declared.get((scope, figure))
                if d is None:
                    continue  # the footer did not parse: a parse-time problem already says so
                reason = f"FOOTER_{figure.upper()}_MISMATCH"
                yield _compare(check_id, reason, FAMILY, report, _scope(key, f.name, scope), d["value"],
                               int(agg[column] or 0), None if figure == "count" else CURRENCY,
                               [f.lineage(d["line_no"]), f.lineage()], f"{scope} {figure}: rows vs footer")


@check("CN-3", FAMILY, "业务明细 footers: 交易 and 退款 counts and sums of 商家实收 and 商家优惠 = the rows",
       "alipay-cn.md 6.1 (footer meaning), 11 CN-3")
def _cn_3(ctx: CheckContext) -> Iterator[Result]:
    def aggregates(f: BillFile) -> str:
        return ", ".join(
            f"count(*) FILTER (WHERE raw_type = '{kind}') AS {scope}_count, "
            f"sum(settlement_minor) FILTER (WHERE raw_type = '{kind}') AS {scope}_settlement, "
            f"sum({_fen('商家优惠（元）', [f])}) FILTER (WHERE raw_type = '{kind}') AS {scope}_discount"
            for kind, scope in (("交易", "payment"), ("退款", "refund")))
    figures = {(scope.upper(), figure): f"{scope}_{col}" for scope in ("payment", "refund")
               for figure, col in (("count", "count"), ("settlement", "settlement"),
                                   ("merchant_discount", "discount"))}
    yield from _footer_check(ctx, "CN-3", "trade_detail", aggregates, figures)


@check("CN-4", FAMILY, "账务明细 footers: 收入 and 支出 counts and sums = the rows",
       "alipay-cn.md 8.1, 8.3 [inferred: a row counts where its amount is not zero], 11 CN-4")
def _cn_4(ctx: CheckContext) -> Iterator[Result]:
    def aggregates(f: BillFile) -> str:
        income, expense = _fen("收入金额（+元）", [f]), _fen("支出金额（-元）", [f])
        return (f"count(*) FILTER (WHERE {income} <> 0) AS income_count, sum({income}) AS income_amount, "
                f"count(*) FILTER (WHERE {expense} <> 0) AS expense_count, sum({expense}) AS expense_amount")
    figures = {(scope.upper(), figure): f"{scope}_{figure}" for scope in ("income", "expense")
               for figure in ("count", "amount")}
    yield from _footer_check(ctx, "CN-4", "account_detail", aggregates, figures)


# ---------------------------------------------------------------------------------------------
# CN-5: balance continuity


@check("CN-5", FAMILY, "账务明细 balance continuity: each balance = the previous one + income - expense, in file order",
       "alipay-cn.md 8.3, 11 CN-5")
def _cn_5(ctx: CheckContext) -> Iterator[Result]:
    files = [f for _, reports in sorted(bill_files(ctx).items()) for f in reports.get("account_detail", [])]
    if not files:
        return
    # Adjacent rows in file order: ``a`` above ``b``. Oldest first: b's balance = a's + b's movement; newest
    # first (the 2012 bill, spec 8.3): a's balance = b's + a's movement.
    pairs = f"""
        WITH l AS (SELECT source_sha256 AS sha, line_no, amount_minor AS m, occurred_at AS at,
                          {_fen('账户余额（元）', files)} AS bal,
                          row_number() OVER (PARTITION BY source_sha256 ORDER BY line_no) AS i
                   FROM {ctx.lines} WHERE source_sha256 IN {_in([f.sha256 for f in files])})
        SELECT a.sha, a.line_no AS line_a, b.line_no AS line_b, a.bal AS bal_a, b.bal AS bal_b, a.m AS m_a,
               b.m AS m_b, a.at AS at_a, b.at AS at_b
        FROM l a JOIN l b ON a.sha = b.sha AND b.i = a.i + 1"""
    stats = {r["sha"]: r for r in _rows(ctx, f"""
        SELECT sha, count(*) AS n, count(*) FILTER (WHERE bal_b = bal_a + m_b) AS oldest_ok,
               count(*) FILTER (WHERE bal_a = bal_b + m_a) AS newest_ok,
               arg_min(at_a, line_a) AS first_at, arg_max(at_b, line_b) AS last_at,
               count(*) FILTER (WHERE bal_a IS NULL OR bal_b IS NULL) AS unknown
        FROM ({pairs}) GROUP BY sha""")}
    for f in files:
        s = stats.get(f.sha256)
        if s is None:  # fewer than two rows: nothing to chain
            continue
        # Order: the one the balances follow on more pairs; on a tie (no movement decides) the times say it.
        newest_first = s["newest_ok"] > s["oldest_ok"] or (
            s["newest_ok"] == s["oldest_ok"] and s["first_at"] is not None and s["last_at"] is not None
            and s["first_at"] > s["last_at"])
        order = "newest first" if newest_first else "oldest first"
        if s["unknown"]:
            yield Result("CN-5", "BALANCE_UNKNOWN", "warn", FAMILY, "account_detail", f.name, CURRENCY, None, None,
                         [f.lineage()], f"{s['unknown']} row pairs without a readable 账户余额 (extras not kept?)")
            continue
        cond = "bal_a <> bal_b + m_a" if newest_first else "bal_b <> bal_a + m_b"
        breaks = _rows(ctx, f"SELECT * FROM ({pairs}) WHERE sha = {_sql_str(f.sha256)} AND {cond} "
                            f"ORDER BY line_a LIMIT {int(ctx.max_row_failures)}")
        for b in breaks:
            if newest_first:  # the later row is above
                expected, actual, line = b["bal_b"] + b["m_a"], b["bal_a"], b["line_a"]
            else:
                expected, actual, line = b["bal_a"] + b["m_b"], b["bal_b"], b["line_b"]
            yield Result("CN-5", "BALANCE_BREAK", "fail", FAMILY, "account_detail", f"{f.name}/line {line}",
                         CURRENCY, expected, actual, [f.lineage(b["line_a"]), f.lineage(b["line_b"])],
                         f"rows {order}: balance {actual} where the previous balance and the movement give "
                         f"{expected} (difference {actual - expected})")
        if not breaks:
            yield Result("CN-5", "BALANCE_BREAK", "pass", FAMILY, "account_detail", f.name, CURRENCY, None, None,
                         [f.lineage()], f"{s['n'] + 1} rows, {order}: every balance follows from the previous one")


# ---------------------------------------------------------------------------------------------
# CN-6: 汇总 vs detail


def _trade_aggregates(files: Sequence[BillFile]) -> dict[str, str]:
    return {
        "trade_count": "count(*) FILTER (WHERE raw_type = '交易')",
        "refund_count": "count(*) FILTER (WHERE raw_type = '退款')",
        "amount": "sum(amount_minor)",
        "settlement": "sum(settlement_minor)",
        "alipay_discount": f"sum({_fen('支付宝优惠（元）', files)})",
        "merchant_discount": f"sum({_fen('商家优惠（元）', files)})",
        "card": f"sum({_fen('卡消费金额（元）', files)})",
        "fee": "sum(__fee_written)",  # as written, like the summary's column
        "royalty": f"sum({_fen('分润（元）', files)})",
    }


def _account_aggregates(files: Sequence[BillFile]) -> dict[str, str]:
    income, expense = _fen("收入金额（+元）", files), _fen("支出金额（-元）", files)
    return {
        "income_count": f"count(*) FILTER (WHERE {income} <> 0)",
        "income": f"sum({income})",
        "expense_count": f"count(*) FILTER (WHERE {expense} <> 0)",
        "expense": f"sum({expense})",
        "total": f"sum(coalesce({income}, 0) + coalesce({expense}, 0))",
    }


def _store(files: Sequence[BillFile]) -> str:
    return f"coalesce({_text('门店编号', files)}, '')"


# summary report -> (detail report, group expression over the detail lines, scope prefix, aggregates); the
# expressions are built for the detail files at hand (their extras differ by header)
_PAIRS: dict[str, tuple[str, Callable[[Sequence[BillFile]], str], str,
                        Callable[[Sequence[BillFile]], dict[str, str]]]] = {
    "trade_summary": ("trade_detail", _store, "store", _trade_aggregates),
    "account_summary": ("account_detail", lambda files: "coalesce(raw_type, '')", "type", _account_aggregates),
}


@dataclass
class _Summary:
    figures: dict[str, dict[str, tuple[int, int]]] = field(default_factory=lambda: defaultdict(dict))

    def add(self, scope: str, figure: str, value: int, line: int) -> None:
        self.figures[scope][figure] = (value, line)


@check("CN-6", FAMILY, "汇总 files vs their detail: per store / type and 合计; same account and period",
       "alipay-cn.md 7, 9 (a public monthly checker), 11 CN-6 [inferred: amounts net of refunds]")
def _cn_6(ctx: CheckContext) -> Iterator[Result]:
    for key, reports in sorted(bill_files(ctx).items()):
        for summary_report, (detail_report, group, prefix, aggregates) in _PAIRS.items():
            details = reports.get(detail_report, [])
            for s in reports.get(summary_report, []):
                if not details:
                    yield Result("CN-6", "SUMMARY_WITHOUT_DETAIL", "warn", FAMILY, summary_report, _scope(key),
                                 None, None, None, [s.lineage()], f"no {detail_report} file of this bill was parsed")
                    continue
                yield from _same_bill(key, s, details)
                yield from _summary_vs_detail(ctx, key, s, details, group, prefix, aggregates)


def _same_bill(key: tuple[str, str], s: BillFile, details: list[BillFile]) -> Iterator[Result]:
    for d in details:
        lineage = [s.lineage(), d.lineage()]
        for what, a, b in (("ACCOUNT", s.account, d.account), ("PERIOD", s.period, d.period)):
            ok = a == b
            yield Result("CN-6", f"SUMMARY_{what}_MISMATCH", "pass" if ok else "fail", FAMILY, s.report,
                         _scope(key, d.name), None, None, None, lineage,
                         f"{what.lower()}: summary {a!r}, detail {b!r}")


def _summary_vs_detail(ctx: CheckContext, key: tuple[str, str], s: BillFile, details: list[BillFile],
                       group_of: Callable[[Sequence[BillFile]], str], prefix: str,
                       aggregates_of: Callable[[Sequence[BillFile]], dict[str, str]]) -> Iterator[Result]:
    group, aggregates = group_of(details), aggregates_of(details)
    summary = _Summary()
    for d in _declared(ctx, s.sha256):
        summary.add(d["scope"], d["figure"], int(d["value"]), int(d["line_no"]))
    cols = ", ".join(f"{sql} AS {name}" for name, sql in aggregates.items())
    # 服务费 as written: fee_minor turned back where the file was read with the by_type convention
    by_type = [d.sha256 for d in details if d.meta.get("fee_sign") == "by_type"] or [""]
    written = (f"CASE WHEN source_sha256 IN {_in(by_type)} AND record_type <> 'REFUND' THEN -fee_minor "
               "ELSE fee_minor END")
    source = f"(SELECT *, {written} AS __fee_written FROM {ctx.lines})"
    detail: dict[str, dict[str, int]] = {}
    for r in _rows(ctx, f"SELECT {group} AS g, {cols} FROM {source} "
                        f"WHERE source_sha256 IN {_in([d.sha256 for d in details])} GROUP BY 1 ORDER BY 1"):
        detail[f"{prefix}:{r['g']}"] = {k: int(r[k] or 0) for k in aggregates}
    detail_lineage = [d.lineage() for d in details]
    for scope in sorted((set(summary.figures) - {"TOTAL"}) | set(detail)):
        stated = summary.figures.get(scope)
        found = detail.get(scope, dict.fromkeys(aggregates, 0))
        if stated is None:
            yield Result("CN-6", "SUMMARY_GROUP_MISSING", "fail", FAMILY, s.report, _scope(key, scope), CURRENCY,
                         None, found.get("settlement", found.get("total")), [s.lineage(), *detail_lineage],
                         f"{scope} has detail rows but no summary row")
            continue
        yield from _figures("SUMMARY_DETAIL_MISMATCH", key, s, scope, stated, found, detail_lineage, "detail rows")
    total = summary.figures.get("TOTAL")
    if total is None:
        yield Result("CN-6", "SUMMARY_TOTAL_MISSING", "fail", FAMILY, s.report, _scope(key, "TOTAL"), None, None,
                     None, [s.lineage()], "the summary has no 合计 row")
        return
    groups = [v for k, v in summary.figures.items() if k != "TOTAL"]
    summed = {figure: sum(g[figure][0] for g in groups if figure in g) for figure in total}
    yield from _figures("SUMMARY_TOTAL_INCONSISTENT", key, s, "TOTAL", total, summed, [], "the summary's rows")


def _figures(reason: str, key: tuple[str, str], s: BillFile, scope: str, stated: dict[str, tuple[int, int]],
             found: dict[str, int], lineage: list[dict[str, Any]], what: str) -> Iterator[Result]:
    """One fail row per differing figure, else one pass row for the scope."""
    bad = [f for f in stated if f in found and stated[f][0] != found[f]]
    line = min(v[1] for v in stated.values())
    for figure in bad:
        yield _compare("CN-6", reason, FAMILY, s.report, _scope(key, scope, figure), stated[figure][0],
                       found[figure], None if figure.endswith("count") else CURRENCY,
                       [s.lineage(stated[figure][1]), *lineage], f"{scope} {figure}: {what} vs the summary")
    if not bad:
        compared = sorted(f for f in stated if f in found)
        yield Result("CN-6", reason, "pass", FAMILY, s.report, _scope(key, scope), CURRENCY, None, None,
                     [s.lineage(line), *lineage], f"{scope}: {', '.join(compared)} agree with {what}")


# ---------------------------------------------------------------------------------------------
# CN-7: trade bill vs account bill


@check("CN-7", FAMILY, "Each settled trade's 商家实收 and its fee appear as movements in the account bill",
       "alipay-cn.md 11 CN-7 [inferred: matched on 支付宝交易号 = 业务流水号, else 商户订单号]")
def _cn_7(ctx: CheckContext) -> Iterator[Result]:
    pairs = [(key, r["trade_detail"], r["account_detail"]) for key, r in sorted(bill_files(ctx).items())
             if r.get("trade_detail") and r.get("account_detail")]
    if not pairs:
        return
    bills = ", ".join(f"({_sql_str(f.sha256)}, {_sql_str(_scope(key))})"
                      for key, trades, accounts in pairs for f in (*trades, *accounts))
    # Expected movements: 商家实收 and the fee (negative = charged) of every trade row. Account rows link to a
    # trade by 业务流水号 = 支付宝交易号, else by 商户订单号. Equal amounts of one trade pair up one to one.
    missing_sql = f"""
        WITH bill(sha, k) AS (VALUES {bills}),
        t AS (SELECT l.*, bill.k FROM {ctx.lines} l JOIN bill ON l.source_sha256 = bill.sha
              WHERE l.report = 'trade_detail'),
        a AS (SELECT l.*, bill.k FROM {ctx.lines} l JOIN bill ON l.source_sha256 = bill.sha
              WHERE l.report = 'account_detail'),
        by_no AS (SELECT DISTINCT k, provider_txn_id AS tn FROM t WHERE provider_txn_id IS NOT NULL),
        by_ref AS (SELECT k, order_id, min(provider_txn_id) AS tn FROM t WHERE order_id IS NOT NULL GROUP BY ALL),
        linked AS (SELECT a.k, coalesce(n.tn, r.tn) AS tn, a.amount_minor AS amt,
                          row_number() OVER (PARTITION BY a.k, coalesce(n.tn, r.tn), a.amount_minor
                                             ORDER BY a.source_name, a.line_no) AS n
                   FROM a LEFT JOIN by_no n ON n.k = a.k AND n.tn = a.provider_txn_id
                   LEFT JOIN by_ref r ON r.k = a.k AND r.order_id = a.merchant_ref_id
                   WHERE coalesce(n.tn, r.tn) IS NOT NULL),
        expected AS (SELECT k, provider_txn_id AS tn, settlement_minor AS amt, 'settlement' AS what, source_sha256,
                            source_name, line_no FROM t WHERE coalesce(settlement_minor, 0) <> 0
                     UNION ALL
                     SELECT k, provider_txn_id, fee_minor, 'fee', source_sha256, source_name, line_no FROM t
                     WHERE coalesce(fee_minor, 0) <> 0),
        numbered AS (SELECT *, row_number() OVER (PARTITION BY k, tn, amt ORDER BY source_name, line_no, what) AS n
                     FROM expected)
        SELECT e.*, linked.k IS NOT NULL AS found FROM numbered e
        LEFT JOIN linked ON linked.k = e.k AND linked.tn IS NOT DISTINCT FROM e.tn AND linked.amt = e.amt
                         AND linked.n = e.n"""
    counts = {r["k"]: r for r in _rows(ctx, f"""SELECT k, count(*) AS n, count(*) FILTER (WHERE found) AS ok
                                               FROM ({missing_sql}) GROUP BY k""")}
    missing = _rows(ctx, f"SELECT * FROM ({missing_sql}) WHERE NOT found ORDER BY k, source_name, line_no, what "
                         f"LIMIT {int(ctx.max_row_failures)}")
    for m in missing:
        reason = "SETTLEMENT_MOVEMENT_MISSING" if m["what"] == "settlement" else "FEE_MOVEMENT_MISSING"
        yield Result("CN-7", reason, "fail", FAMILY, "trade_detail", f"{m['k']}/{m['tn']}/{m['what']}", CURRENCY,
                     m["amt"], None, [_lineage(m["source_sha256"], m["source_name"], m["line_no"])],
                     f"trade {m['tn']}: {m['what']} {m['amt']} fen has no movement of that amount in the account bill")
    for key, trades, accounts in pairs:
        c = counts.get(_scope(key))
        if c is not None and c["n"] == c["ok"]:
            yield Result("CN-7", "SETTLEMENT_MOVEMENT_MISSING", "pass", FAMILY, "trade_detail", _scope(key),
                         CURRENCY, c["n"], c["ok"], [f.lineage() for f in (*trades, *accounts)],
                         f"all {c['n']} trade settlements and fees are account movements")


# ---------------------------------------------------------------------------------------------
# CN-8: file name vs content


@check("CN-8", FAMILY, "The file name's account and date = the #账号 line and the period line",
       "alipay-cn.md 4, 11 CN-8")
def _cn_8(ctx: CheckContext) -> Iterator[Result]:
    for _key, reports in sorted(bill_files(ctx).items()):
        for files in reports.values():
            for f in files:
                meta = f.meta
                if "name_account" not in meta:
                    continue  # a name outside the convention says nothing
                content_date = name_date_of(meta["bill_date"]) if "bill_date" in meta else None
                for reason, named, content in (("NAME_ACCOUNT_MISMATCH", meta["name_account"], f.account),
                                               ("NAME_PERIOD_MISMATCH", meta["name_date"], content_date)):
                    yield Result("CN-8", reason, "pass" if named == content else "fail", FAMILY, f.report, f.name,
                                 None, None, None, [f.lineage()],
                                 f"file name {named!r}, content {content!r}")
