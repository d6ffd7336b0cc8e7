"""Checks of barcode (in-store) files against themselves and each other (barcode.md 9, BC-1, BC-2, BC-4).

Why: the family A transaction file states its record count on its ``Partner`` line, every settlement row
carries amount, fee and settlement, and the B1 settlement summary restates its details per type and
reference id; each is a cheap, exact proof that the files are complete before they meet the ledger.
Wrong widths, bad amounts and broken encodings are parse-time errors (``formats.barcode``).

Canonical signs (``formats.barcode``): settlement = amount + fee on every row whatever the type, so BC-2 is one
comparison. The B1 summary is compared as written: its settlementAmount / commission are signed (barcode.md 3.3)
and so are the details' canonical settlement and fee [inferred: no B1 detail sample carries them, gap 4].
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from ..formats.engine import _sql_str
from .checks import CheckContext, Result, _compare, _lineage, _rows, check

__all__: list[str] = []

FAMILY = "barcode"
_ROW_REPORTS = ("settlement", "hk_settlement", "settlement_detail")
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
       "barcode.md 2.3 (sample), 2.4, 4.1, 9 BC-2")
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
