"""Checks of barcode (in-store) files against themselves and each other (barcode.md 9, BC-1 to BC-7).

Why: the family A transaction file states its record count on its ``Partner`` line, every settlement row (and
every family C row) carries amount, fee and settlement, and the B1 settlement summary restates its details per
type and reference id; each is a cheap, exact proof that the files are complete before they meet the ledger.
Wrong widths, bad amounts and broken encodings are parse-time errors (``formats.barcode``).

BC-3 to BC-7 follow the money further: the CNY columns of families A and C against the foreign amount and its
Rate, the AlipayHK batch file against its settle files, settlement against the transaction files (and cancels), and the
payment journal (``pay.ledger``, as the workspace's ledger: ``CheckContext.ledger``) against the files. A check
whose inputs are absent (no CNY columns, no batch file, no transaction file, no journal) yields nothing: the
sandbox world and real merchants receive only some of the families.

Canonical signs (``formats.barcode``): settlement = amount + fee on every row whatever the type, so BC-2 is one
comparison. The B1 summary is compared as written: its settlementAmount / commission are signed (barcode.md 3.3)
and so are the details' canonical settlement and fee [inferred: no B1 detail sample carries them, gap 4].
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from ..formats.engine import _sql_str
from .checks import CheckContext, Result, _compare, _lineage, _rows, check

__all__: list[str] = []

FAMILY = "barcode"
# reports whose rows carry amount, fee and settlement (family C's transaction file too: barcode.md 5, 9 BC-2)
_ROW_REPORTS = ("settlement", "hk_settlement", "settlement_detail", "hk_settlebatch", "forex_transaction")
_FIGURES = ("count", "settlement", "commission")


def _declared(ctx: CheckContext, report: str, where: str = "true") -> list[dict[str, Any]]:
    return _rows(ctx, f"SELECT * FROM {ctx.declared} WHERE family = '{FAMILY}' AND report = {_sql_str(report)} "
                      f"AND {where} ORDER BY source_name, source_sha256, line_no, figure")


# ---------------------------------------------------------------------------------------------
# BC-1: Total_count vs records


@check("BC-1", FAMILY, "Family A Partner line: Total_count = the number of records in the file",
       "barcode.md 2.2 (line 1), 9 BC-1 (a documented HK sample disagrees: fail, do not abort)")
def _bc_1(ctx: CheckContext) -> Iterator[Result]:
    for report in ("transaction", "settlement"):
        declared = _declared(ctx, report, "scope = 'file' AND figure = 'count'")
        if not declared:
            continue
        shas = ", ".join(_sql_str(d["source_sha256"]) for d in declared)
        counts = {r["sha"]: int(r["n"]) for r in _rows(
            ctx, f"SELECT source_sha256 AS sha, count(*) AS n FROM {ctx.lines} WHERE source_sha256 IN ({shas}) "
                 "GROUP BY 1")}
        for d in declared:
            sha, name = d["source_sha256"], d["source_name"]
            yield _compare("BC-1", "TOTAL_COUNT_MISMATCH", FAMILY, report, name, d["value"], counts.get(sha, 0),
                           None, [_lineage(sha, name, d["line_no"]), _lineage(sha, name)],
                           "records vs the Partner line's Total_count")


# ---------------------------------------------------------------------------------------------
# BC-2: settlement = amount - fee per row


@check("BC-2", FAMILY, "Per row: Settlement = Amount - Fee (refunds: the same, signed)",
       "barcode.md 2.3 (sample), 2.4, 4.1, 5, 9 BC-2")
def _bc_2(ctx: CheckContext) -> Iterator[Result]:
    reports = ", ".join(_sql_str(r) for r in _ROW_REPORTS)
    where = (f"family = '{FAMILY}' AND report IN ({reports}) AND settlement_minor IS NOT NULL AND amount_minor IS NOT "
             "NULL AND amount_currency = settlement_currency")
    totals = _rows(ctx, f"SELECT report, source_sha256 AS sha, any_value(source_name) AS name, count(*) AS n "
                        f"FROM {ctx.lines} WHERE {where} GROUP BY 1, 2 ORDER BY name, sha")
    failures = _rows(ctx, f"""
        SELECT report, source_sha256 AS sha, source_name AS name, line_no, merchant_ref_id, provider_txn_id,
               settlement_currency AS ccy, amount_minor + coalesce(fee_minor, 0) AS expected, settlement_minor
        FROM {ctx.lines} WHERE {where} AND settlement_minor <> amount_minor + coalesce(fee_minor, 0)
        ORDER BY source_name, line_no LIMIT {int(ctx.max_row_failures)}""")
    failed: dict[str, int] = defaultdict(int)
    for r in failures:
        failed[r["sha"]] += 1
        ref = r["merchant_ref_id"] or r["provider_txn_id"] or str(r["line_no"])
        yield Result("BC-2", "ROW_SETTLEMENT_MISMATCH", "fail", FAMILY, r["report"], f"{r['name']}/{ref}", r["ccy"],
                     r["expected"], r["settlement_minor"], [_lineage(r["sha"], r["name"], r["line_no"])],
                     f"amount - fee = {r['expected']}, settlement = {r['settlement_minor']} "
                     f"(difference {r['settlement_minor'] - r['expected']})")
    for t in totals:
        if not failed.get(t["sha"]):
            yield Result("BC-2", "ROW_SETTLEMENT_MISMATCH", "pass", FAMILY, t["report"], t["name"], None, None, None,
                         [_lineage(t["sha"], t["name"])], f"{t['n']} rows: settlement = amount - fee on each")


# ---------------------------------------------------------------------------------------------
# BC-4: B1 settlement summary: TOTAL row and details


def _summaries(ctx: CheckContext) -> dict[tuple[str, str, str], dict[str, dict[str, tuple[int | None, int]]]]:
    """(sha, name, referenceId) -> type -> figure -> (value, line) of every B1 summary file."""
    out: dict[tuple[str, str, str], dict[str, dict[str, tuple[int | None, int]]]] = defaultdict(
        lambda: defaultdict(dict))
    for d in _declared(ctx, "settlement_summary"):
        key = (d["source_sha256"], d["source_name"], d["batch_id"] or "")
        out[key][d["scope"]][d["figure"]] = (d["value"], d["line_no"])
    return out


@check("BC-4", FAMILY, "B1 settlement summary: TOTAL = the sum of the other rows; each row = its settlement details "
       "(same referenceId and type)", "barcode.md 3.3 (the sample's TOTAL does not add up), 9 BC-4")
def _bc_4(ctx: CheckContext) -> Iterator[Result]:
    summaries = _summaries(ctx)
    if not summaries:
        return
    details: dict[tuple[str, str], dict[str, Any]] = {
        (r["ref"], r["kind"]): r for r in _rows(ctx, f"""
            SELECT coalesce(settlement_batch_id, '') AS ref, coalesce(record_type, '') AS kind, count(*) AS n,
                   sum(settlement_minor) AS settlement, sum(fee_minor) AS fee,
                   count(settlement_minor) AS n_settlement, count(fee_minor) AS n_fee,
                   list(DISTINCT source_sha256) AS shas, any_value(source_name) AS name
            FROM {ctx.lines} WHERE family = '{FAMILY}' AND report = 'settlement_detail' GROUP BY 1, 2""")}
    refs_with_detail = {ref for ref, _ in details}
    for (sha, name, ref), kinds in sorted(summaries.items()):
        scope = f"{name}/{ref}"
        total = kinds.get("TOTAL")
        rows = {k: v for k, v in kinds.items() if k != "TOTAL"}
        if total is None:
            yield Result("BC-4", "SUMMARY_TOTAL_MISSING", "warn", FAMILY, "settlement_summary", scope, None, None,
                         None, [_lineage(sha, name)], "no TOTAL row for this referenceId")
        else:
            for figure in _FIGURES:
                value, line = total.get(figure, (None, 0))
                parts = [v.get(figure, (None, 0))[0] for v in rows.values()]
                actual = None if any(p is None for p in parts) else sum(p for p in parts if p is not None)
                yield _compare("BC-4", f"SUMMARY_TOTAL_{figure.upper()}_MISMATCH", FAMILY, "settlement_summary",
                               f"{scope}/TOTAL", value, actual, None,
                               [_lineage(sha, name, line)] + [_lineage(sha, name, v[figure][1]) for v in rows.values()
                                                              if figure in v],
                               f"TOTAL {figure} vs the sum of the other rows")
        if ref not in refs_with_detail:
            yield Result("BC-4", "SUMMARY_WITHOUT_DETAIL", "warn", FAMILY, "settlement_summary", scope, None, None,
                         None, [_lineage(sha, name)], "no settlement detail line carries this referenceId")
            continue
        for kind in sorted(set(rows) | {k for r, k in details if r == ref}):
            yield from _row_vs_detail(sha, name, ref, kind, rows.get(kind), details.get((ref, kind)))


def _row_vs_detail(sha: str, name: str, ref: str, kind: str, row: dict[str, tuple[int | None, int]] | None,
                   detail: dict[str, Any] | None) -> Iterator[Result]:
    scope = f"{name}/{ref}/{kind}"
    detail_lineage = [_lineage(s, detail["name"]) for s in detail["shas"]] if detail else []
    if row is None:
        assert detail is not None
        yield Result("BC-4", "DETAIL_WITHOUT_SUMMARY_ROW", "fail", FAMILY, "settlement_summary", scope, None, None,
                     int(detail["n"]), [_lineage(sha, name), *detail_lineage],
                     f"{detail['n']} {kind} detail lines, no {kind} row in the summary")
        return
    line = next(iter(row.values()))[1]
    lineage = [_lineage(sha, name, line), *detail_lineage]
    n = int(detail["n"]) if detail else 0
    yield _compare("BC-4", "SUMMARY_DETAIL_COUNT_MISMATCH", FAMILY, "settlement_summary", scope,
                   row.get("count", (None, 0))[0], n, None, lineage, "summary count vs detail lines")
    # amounts only where every detail line carries them (the columns after #15 are optional, barcode.md 3.2)
    for figure, column, present in (("settlement", "settlement", "n_settlement"), ("commission", "fee", "n_fee")):
        if detail and int(detail[present]) == n and n:
            yield _compare("BC-4", f"SUMMARY_DETAIL_{figure.upper()}_MISMATCH", FAMILY, "settlement_summary", scope,
                           row.get(figure, (None, 0))[0], int(detail[column]), None, lineage,
                           f"summary {figure} vs the sum of the detail lines")


# ---------------------------------------------------------------------------------------------
# BC-3: CNY columns = foreign x Rate


_CNY_REASON = {"rmb_amount": "CNY_AMOUNT_MISMATCH", "rmb_settlement": "CNY_SETTLEMENT_MISMATCH"}


@check("BC-3", FAMILY, "Per row: the CNY columns = the foreign amount x Rate, within a tolerance (fen)",
       "barcode.md 2.3 (sample: Rmb_amount exact, Rmb_settlement a few fen off), 2.4, 5, 9 BC-3 [tolerance "
       "configurable: checks.barcode_cny_tolerance_minor]")
def _bc_3(ctx: CheckContext) -> Iterator[Result]:
    """Family A non-HK settlement rows and family C rows (the barcode layouts with CNY columns; both declare the
    same ``row`` figures, so one query serves both). Exact decimals: amount (minor units of its currency) x Rate,
    scaled to fen and rounded half-even, against the written CNY cell."""
    rows = _rows(ctx, f"""
        SELECT l.report, l.source_sha256 AS sha, l.source_name AS name, l.line_no, l.merchant_ref_id,
               l.provider_txn_id, d.figure, d.value AS cny, l.fx_rate AS rate, l.amount_currency AS ccy,
               ar_exp(l.amount_currency) AS exp,
               CASE d.figure WHEN 'rmb_amount' THEN l.amount_minor ELSE l.settlement_minor END AS foreign_minor
        FROM {ctx.declared} d JOIN {ctx.lines} l ON l.source_sha256 = d.source_sha256 AND l.line_no = d.line_no
        WHERE d.family = '{FAMILY}' AND d.scope = 'row' AND d.figure IN ('rmb_amount', 'rmb_settlement')
          AND l.family = '{FAMILY}' AND l.fx_rate IS NOT NULL AND ar_exp(l.amount_currency) IS NOT NULL
        ORDER BY l.source_name, l.source_sha256, l.line_no, d.figure""")
    tolerance = int(ctx.cny_tolerance_minor)
    files: dict[tuple[str, str, str], int] = {}
    failed: set[str] = set()
    shown = 0
    for r in rows:
        files[(r["name"], r["sha"], r["report"])] = files.get((r["name"], r["sha"], r["report"]), 0) + 1
        if r["foreign_minor"] is None:
            continue
        # CNY has 2 decimals (ISO 4217): foreign minor units x Rate x 10^(2 - exponent of the foreign currency)
        expected = int((Decimal(r["foreign_minor"]) * r["rate"] * Decimal(1).scaleb(2 - int(r["exp"])))
                       .quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
        if abs(r["cny"] - expected) <= tolerance:
            continue
        failed.add(r["sha"])
        if shown >= ctx.max_row_failures:
            continue
        shown += 1
        ref = r["merchant_ref_id"] or r["provider_txn_id"] or str(r["line_no"])
        column = "Rmb_amount" if r["figure"] == "rmb_amount" else "Rmb_settlement"
        yield Result("BC-3", _CNY_REASON[r["figure"]], "fail", FAMILY, r["report"], f"{r['name']}/{ref}/{column}",
                     "CNY", expected, r["cny"], [_lineage(r["sha"], r["name"], r["line_no"])],
                     f"{r['foreign_minor']} {r['ccy']} minor x Rate {r['rate'].normalize()} = {expected} fen, "
                     f"{column} = {r['cny']} (difference {r['cny'] - expected}, tolerance {tolerance})")
    for (name, sha, report), n in sorted(files.items()):
        if sha not in failed:
            yield Result("BC-3", "CNY_AMOUNT_MISMATCH", "pass", FAMILY, report, name, "CNY", None, None,
                         [_lineage(sha, name)], f"{n} CNY cells within {tolerance} fen of the foreign amount x Rate")


# ---------------------------------------------------------------------------------------------
# BC-5: B2 batch file rows = their settle files


@check("BC-5", FAMILY, "B2 batch file: each batch row (Amount, Fee, Settlement) = the sum of the rows of its "
       "<PID>_settle_<date>_<BatchID>.csv file(s)", "barcode.md 4.2 (batch file), 9 BC-5 [inferred]")
def _bc_5(ctx: CheckContext) -> Iterator[Result]:
    """Signs are canonical on both sides (``formats.barcode``): the batch's Amount and Settlement as written and
    its Fee as charged (negative), the settle rows signed by type (Settlement as written), so a refund row
    lowers each total [inferred: the documented batch sample has no refund]."""
    batches = _rows(ctx, f"""
        SELECT l.source_sha256 AS sha, l.source_name AS name, l.line_no, l.settlement_batch_id AS batch,
               coalesce(l.account_id, '') AS account, l.amount_minor, l.fee_minor, l.settlement_minor,
               l.settlement_currency AS ccy, json_extract_string(f.meta, '$.name_date') AS day
        FROM {ctx.lines} l JOIN {ctx.files} f ON f.sha256 = l.source_sha256
        WHERE l.family = '{FAMILY}' AND l.report = 'hk_settlebatch' ORDER BY l.source_name, l.line_no""")
    if not batches:
        return
    details = {r["batch"]: r for r in _rows(ctx, f"""
        SELECT l.settlement_batch_id AS batch, count(*) AS n, sum(l.amount_minor) AS amount,
               sum(coalesce(l.fee_minor, 0)) AS fee, sum(l.settlement_minor) AS settlement,
               list(DISTINCT l.amount_currency ORDER BY l.amount_currency) AS currencies,
               list(DISTINCT l.source_sha256 || '|' || l.source_name ORDER BY l.source_sha256 || '|' || l.source_name)
                   AS files,
               any_value(coalesce(l.account_id, '')) AS account,
               any_value(json_extract_string(f.meta, '$.name_date')) AS day
        FROM {ctx.lines} l JOIN {ctx.files} f ON f.sha256 = l.source_sha256
        WHERE l.family = '{FAMILY}' AND l.report = 'hk_settlement' AND l.settlement_batch_id IS NOT NULL
        GROUP BY 1""")}
    for b in batches:
        scope = f"{b['name']}/{b['batch']}"
        d = details.get(b["batch"])
        lineage = [_lineage(b["sha"], b["name"], b["line_no"])]
        if d is None:
            yield Result("BC-5", "BATCH_WITHOUT_SETTLE_FILE", "fail", FAMILY, "hk_settlebatch", scope, b["ccy"], None,
                         None, lineage, f"no _settle_ file of batch {b['batch']} was received")
            continue
        lineage += [_lineage(*f.split("|", 1)) for f in d["files"]]
        if d["currencies"] != [b["ccy"]]:
            yield Result("BC-5", "BATCH_CURRENCY_MISMATCH", "fail", FAMILY, "hk_settlebatch", scope, b["ccy"], None,
                         None, lineage, f"batch currency {b['ccy']}, settle rows in {', '.join(d['currencies'])}")
            continue
        for figure, reason in (("amount", "BATCH_AMOUNT_MISMATCH"), ("fee", "BATCH_FEE_MISMATCH"),
                               ("settlement", "BATCH_SETTLEMENT_MISMATCH")):
            total = d[figure]
            yield _compare("BC-5", reason, FAMILY, "hk_settlebatch", f"{scope}/{figure}", b[f"{figure}_minor"],
                           None if total is None else int(total), b["ccy"], lineage,
                           f"batch row {figure} vs the sum of {d['n']} settle rows")
    listed = {b["batch"] for b in batches}
    with_batch_file = {(b["account"], b["day"]) for b in batches}
    for batch, d in sorted(details.items()):
        if batch not in listed and (d["account"], d["day"]) in with_batch_file:
            yield Result("BC-5", "SETTLE_FILE_NOT_IN_BATCH_FILE", "fail", FAMILY, "hk_settlement", batch, None, None,
                         int(d["n"]), [_lineage(*f.split("|", 1)) for f in d["files"]],
                         f"batch {batch} has settle rows but no row in the batch file of {d['day']}")


# ---------------------------------------------------------------------------------------------
# BC-6: settlement vs the transaction files

# settlement report -> (its transaction report, whether a cancelled payment is barred from settlement). Family A
# keeps cancelled transactions in its settlement file, keyed by transaction_id (barcode.md 2.3 #1, 2.4), so the
# cancel rule is family B's (payCancel, barcode.md 10.2).
_PAIRS = {"settlement": ("transaction", False), "settlement_detail": ("transaction_detail", True),
          "hk_settlement": ("hk_transaction", True)}
_UTC8_DAY = "strftime(timezone('UTC', {0}) + INTERVAL 8 HOUR, '%Y%m%d')"  # the UTC+8 day (barcode.md 8.7)
# the same payment: the same account and Alipay id, or the merchant's id when the settlement row has no Alipay id
_SAME_PAYMENT = ("coalesce(t.account_id, '') = coalesce(s.account_id, '') AND (t.provider_txn_id = s.provider_txn_id "
                 "OR (s.provider_txn_id IS NULL AND t.merchant_ref_id = s.merchant_ref_id))")


def _dated_lines(ctx: CheckContext, report: str, record_type: str) -> str:
    return (f"SELECT l.*, json_extract_string(f.meta, '$.name_date') AS file_day FROM {ctx.lines} l "
            f"JOIN {ctx.files} f ON f.sha256 = l.source_sha256 WHERE l.family = '{FAMILY}' "
            f"AND l.report = {_sql_str(report)} AND l.record_type = {_sql_str(record_type)}")


@check("BC-6", FAMILY, "Every settled payment is in an earlier or the same day's transaction file; a cancelled "
       "payment (family B) is never settled", "barcode.md 2.4, 9 BC-6, 10.2 payCancel")
def _bc_6(ctx: CheckContext) -> Iterator[Result]:
    """Days are the files' name dates (transaction day T, settlement day S). A settlement file whose transaction
    files were never received cannot be judged: nothing. A settled payment found in no transaction file: a failure
    when the file of its payment day (UTC+8) is there, else one warning per missing day."""
    for st, (tx, cancel_rule) in _PAIRS.items():
        has_tx = _rows(ctx, f"SELECT count(*) AS n FROM {ctx.lines} WHERE family = '{FAMILY}' AND report = '{tx}'")
        if not has_tx[0]["n"]:
            continue
        yield from _settled_in_transactions(ctx, st, tx)
        if cancel_rule:
            yield from _cancelled_not_settled(ctx, st, tx)


def _settled_in_transactions(ctx: CheckContext, st: str, tx: str) -> Iterator[Result]:
    rows = _rows(ctx, f"""
        WITH s AS ({_dated_lines(ctx, st, 'PAYMENT')}), t AS ({_dated_lines(ctx, tx, 'PAYMENT')}),
        days AS (SELECT DISTINCT coalesce(account_id, '') AS account, file_day FROM t)
        SELECT s.source_sha256 AS sha, s.source_name AS name, s.line_no, s.merchant_ref_id, s.provider_txn_id,
               s.file_day, {_UTC8_DAY.format('s.occurred_at')} AS pay_day,
               (SELECT min(t.file_day) FROM t WHERE {_SAME_PAYMENT}
                  AND (t.file_day IS NULL OR s.file_day IS NULL OR t.file_day <= s.file_day)) AS in_time,
               (SELECT min(t.file_day) FROM t WHERE {_SAME_PAYMENT} AND t.file_day > s.file_day) AS later,
               (SELECT min(t.source_name || '|' || t.source_sha256 || '|' || t.line_no) FROM t WHERE {_SAME_PAYMENT})
                  AS found_at,
               EXISTS (SELECT 1 FROM days WHERE days.account = coalesce(s.account_id, '')
                       AND days.file_day = {_UTC8_DAY.format('s.occurred_at')}) AS day_file
        FROM s ORDER BY s.source_name, s.source_sha256, s.line_no""")
    per_file: dict[tuple[str, str], int] = defaultdict(int)
    bad: set[str] = set()
    missing: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for r in rows:
        per_file[(r["name"], r["sha"])] += 1
        if r["in_time"] is not None:
            continue
        bad.add(r["sha"])
        ref = r["merchant_ref_id"] or r["provider_txn_id"] or str(r["line_no"])
        lineage = [_lineage(r["sha"], r["name"], r["line_no"])]
        if r["later"] is not None:
            name, sha, line = r["found_at"].split("|")
            yield Result("BC-6", "SETTLED_BEFORE_TRANSACTION_FILE", "fail", FAMILY, st, f"{r['name']}/{ref}", None,
                         None, None, [*lineage, _lineage(sha, name, int(line))],
                         f"settled in the file of {r['file_day']}, first in the transaction file of {r['later']}")
        elif r["day_file"]:
            yield Result("BC-6", "SETTLED_NOT_IN_TRANSACTION_FILE", "fail", FAMILY, st, f"{r['name']}/{ref}", None,
                         None, None, lineage, f"paid on {r['pay_day']}: not in that day's {tx} file")
        else:
            missing[(r["name"], r["sha"], r["pay_day"] or "unknown day")].append(r["line_no"])
    for (name, sha, day), lines in sorted(missing.items()):
        yield Result("BC-6", "TRANSACTION_FILE_MISSING", "warn", FAMILY, st, f"{name}/{day}", None, None, len(lines),
                     [_lineage(sha, name, line) for line in lines],
                     f"{len(lines)} settled payment(s) of {day}: no {tx} file of that day was received")
    for (name, sha), n in sorted(per_file.items()):
        if sha not in bad and not any(k[1] == sha for k in missing):
            yield Result("BC-6", "SETTLED_NOT_IN_TRANSACTION_FILE", "pass", FAMILY, st, name, None, None, None,
                         [_lineage(sha, name)], f"{n} settled payments, each in an earlier or the same day's {tx} file")


def _cancelled_not_settled(ctx: CheckContext, st: str, tx: str) -> Iterator[Result]:
    rows = _rows(ctx, f"""
        WITH s AS ({_dated_lines(ctx, st, 'PAYMENT')}), t AS ({_dated_lines(ctx, tx, 'CANCEL')})
        SELECT s.source_sha256 AS sha, s.source_name AS name, s.line_no, s.merchant_ref_id, s.provider_txn_id,
               t.source_sha256 AS t_sha, t.source_name AS t_name, t.line_no AS t_line
        FROM s JOIN t ON coalesce(t.account_id, '') = coalesce(s.account_id, '')
             AND (t.provider_txn_id = s.provider_txn_id OR t.merchant_ref_id = s.merchant_ref_id)
        ORDER BY s.source_name, s.line_no, t.source_name, t.line_no""")
    seen: set[tuple[str, int]] = set()
    for r in rows:
        if (r["sha"], r["line_no"]) in seen:
            continue
        seen.add((r["sha"], r["line_no"]))
        ref = r["merchant_ref_id"] or r["provider_txn_id"] or str(r["line_no"])
        yield Result("BC-6", "CANCELLED_IN_SETTLEMENT", "fail", FAMILY, st, f"{r['name']}/{ref}", None, None, None,
                     [_lineage(r["sha"], r["name"], r["line_no"]), _lineage(r["t_sha"], r["t_name"], r["t_line"])],
                     f"settled, but the {tx} file has its CANCEL row: a cancelled payment is never settled")


# ---------------------------------------------------------------------------------------------
# BC-7: the payment journal vs the files

_TX_REPORTS = ("transaction", "transaction_detail", "hk_transaction")
_ST_REPORTS = ("settlement", "settlement_detail", "hk_settlement")
_OPEN = ("UNKNOWN", "MANUAL")  # pay/ledger.py LEDGER_STATUS: unfinished and manual payments


def _found_at(rows: str, where: str) -> str:
    """The first line (``name|sha|line``) of ``rows`` matching ``where``, as a scalar subquery."""
    return f"(SELECT min(x.source_name || '|' || x.source_sha256 || '|' || x.line_no) FROM {rows} x WHERE {where})"


def _split_lineage(found: str) -> dict[str, Any]:
    name, sha, line = found.split("|")
    return _lineage(sha, name, int(line))


@check("BC-7", FAMILY, "Payment journal vs the files: SUCCESS in its day's transaction file; CANCELLED never settled "
       "(at most a cancel row); UNKNOWN / MANUAL resolved by the files", "barcode.md 9 BC-7, 10.2 payCancel, 10.5")
def _bc_7(ctx: CheckContext) -> Iterator[Result]:
    """The journal reaches the workspace as a ledger (``pay.ledger``: family barcode, PAYMENT rows keyed by
    merchantTransId, status SUCCESS / CANCELLED / FAILED / MANUAL / UNKNOWN); BC-7 reads those ledger rows.

    How it differs from the matcher (``recon.match``): the matcher pairs ledger rows with the lines of the configured
    match reports over the whole window and reports amount and status disagreements; it never reads settlement
    files, never asks which day's file a payment belongs to, and is silent about a non-successful row the report
    lacks. BC-7 compares no amounts; it judges each journal state against the file that settles it: SUCCESS must be
    in the transaction file of its own (UTC+8) day; CANCELLED must never be settled nor left as a PAYMENT without
    its cancel/reversal row; FAILED must not be charged; an open (UNKNOWN / MANUAL) payment is *resolved* (warn:
    record the outcome with ``alirecon pay manual --resolve``): charged when a transaction file lists it (the matcher
    calls the same row a status mismatch), not charged when its day's file is there without it. A payment whose
    day's transaction file was not received yet is not judged; without a journal ledger or any transaction file,
    nothing."""
    if ctx.ledger is None:
        return
    tx_in = ", ".join(_sql_str(r) for r in _TX_REPORTS)
    st_in = ", ".join(_sql_str(r) for r in _ST_REPORTS)
    has = _rows(ctx, f"SELECT count(*) AS n FROM {ctx.files} WHERE family = '{FAMILY}' AND report IN ({tx_in})")
    if not has[0]["n"]:
        return
    rows = _rows(ctx, f"""
        WITH j AS (
            SELECT source_sha256, source_name, ledger_row, merchant_ref_id AS k, upper(status) AS st,
                   {_UTC8_DAY.format('occurred_at')} AS day
            FROM {ctx.ledger} WHERE family = '{FAMILY}' AND upper(coalesce(record_type, 'PAYMENT')) = 'PAYMENT'
              AND merchant_ref_id IS NOT NULL),
        t AS (SELECT l.merchant_ref_id AS k, l.record_type AS rt, l.source_sha256, l.source_name, l.line_no,
                     json_extract_string(f.meta, '$.name_date') AS file_day
              FROM {ctx.lines} l JOIN {ctx.files} f ON f.sha256 = l.source_sha256
              WHERE l.family = '{FAMILY}' AND l.report IN ({tx_in})),
        s AS (SELECT merchant_ref_id AS k, source_sha256, source_name, line_no FROM {ctx.lines}
              WHERE family = '{FAMILY}' AND report IN ({st_in}) AND record_type = 'PAYMENT'),
        days AS (SELECT DISTINCT json_extract_string(meta, '$.name_date') AS day FROM {ctx.files}
                 WHERE family = '{FAMILY}' AND report IN ({tx_in}))
        SELECT j.*,
               {_found_at('t', "x.k = j.k AND x.rt = 'PAYMENT' AND x.file_day = j.day")} AS same_day,
               {_found_at('t', "x.k = j.k AND x.rt = 'PAYMENT'")} AS charged,
               {_found_at('t', "x.k = j.k AND x.rt IN ('CANCEL', 'REVERSAL')")} AS cancel_row,
               {_found_at('s', 'x.k = j.k')} AS settled,
               j.day IN (SELECT day FROM days) AS day_file
        FROM j ORDER BY j.source_name, j.source_sha256, j.ledger_row""")
    judged: dict[tuple[str, str], int] = defaultdict(int)
    failed: set[str] = set()
    for r in rows:
        finding = _journal_finding(r)
        if finding is None:
            continue
        judged[(r["source_name"], r["source_sha256"])] += 1
        status, reason, found, detail = finding
        if status == "pass":
            continue
        if status == "fail":
            failed.add(r["source_sha256"])
        lineage = [_lineage(r["source_sha256"], r["source_name"], r["ledger_row"])]
        lineage += [_split_lineage(f) for f in found if f]
        yield Result("BC-7", reason, status, FAMILY, "ledger", f"{r['source_name']}/{r['k']}", None, None, None,
                     lineage, f"journal {r['st']}: {detail}")
    for (name, sha), n in sorted(judged.items()):
        if sha not in failed:
            yield Result("BC-7", "JOURNAL_VS_FILES", "pass", FAMILY, "ledger", name, None, None, None,
                         [_lineage(sha, name)], f"{n} journaled payments judged: no final state contradicts the files")


_OK: tuple[str, str, list[str | None], str] = ("pass", "", [], "")


def _journal_finding(r: dict[str, Any]) -> tuple[str, str, list[str | None], str] | None:
    """(status, reason, lines found, detail); ``_OK`` when the files agree, None when they cannot tell yet."""
    state, charged, cancelled = r["st"], r["charged"], r["cancel_row"]
    day = r["day"] or "an unknown day"
    if state == "SUCCESS":
        if r["same_day"]:
            return _OK
        if charged:
            return ("warn", "JOURNAL_SUCCESS_IN_OTHER_DAY", [charged],
                    f"not in the transaction file of {day}, but in another day's")
        if r["day_file"]:
            return ("fail", "JOURNAL_SUCCESS_NOT_IN_TRANSACTION_FILE", [],
                    f"not in the transaction file of {day}: the provider did not record this payment")
        return None
    if state == "CANCELLED":
        if r["settled"]:
            return ("fail", "JOURNAL_CANCELLED_SETTLED", [r["settled"]],
                    "cancelled, but settled: a cancelled payment never appears in settlement (barcode.md 10.2)")
        if charged and not cancelled:
            return ("fail", "JOURNAL_CANCELLED_CHARGED", [charged],
                    "cancelled, but the transaction file lists the payment without its cancel/reversal row")
        return _OK if r["day_file"] or charged else None
    if state == "FAILED":
        if charged and not cancelled:
            return "fail", "JOURNAL_FAILED_CHARGED", [charged], "failed, but the transaction file lists the payment"
        return _OK if r["day_file"] or charged else None
    if state in _OPEN:
        if charged and not cancelled:
            return ("warn", "JOURNAL_OPEN_CHARGED", [charged],
                    "the files say charged: resolve it as SUCCESS (or refund it)")
        if cancelled or r["day_file"]:
            return ("warn", "JOURNAL_OPEN_NOT_CHARGED", [cancelled] if cancelled else [],
                    f"not charged (the transaction file of {day} does not list it as paid): resolve it as CANCELLED")
        return None
    return None
