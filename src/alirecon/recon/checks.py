"""Checks: each report against itself and its siblings, each rule a named check with a reason code.

Why: before comparing anything with the user's ledger, the provider's own files must agree with each
other (details vs summary vs fees vs settlement). The rules are those of alipayplus.md section 11 and
antom.md section 11; inferred ones are marked and their tolerances configurable.

Inputs are SQL relations: ``files`` (sha256, name, family, report, meta JSON), ``lines``
(schema.REPORT_LINE) and ``declared`` (schema.DECLARED) of the parsed, not quarantined, files. Line
aggregates are computed in DuckDB (one GROUP BY per rule); the per-batch comparisons are small.
Every checked scope yields a ``pass`` or ``fail`` row, so a user sees what was verified, not only
what broke. Signs: Alipay+ figures are compared from the participant's perspective (CREDIT +,
DEBIT -); detail lines are signed in the transaction sense and turned by the role (ACQP +1, MPP -1).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from ..formats.engine import optimizers_disabled
from ..formats.registry import get_report
from ..schema import CHECK_RESULT

__all__ = ["CHECKS", "CheckContext", "run_checks"]


@dataclass(frozen=True)
class CheckSpec:
    check_id: str
    family: str
    title: str
    source: str


CHECKS: dict[str, CheckSpec] = {}


@dataclass
class CheckContext:
    con: duckdb.DuckDBPyConnection
    files: str
    lines: str
    declared: str
    roles: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (family, account id) -> ACQP|MPP|...
    # AN-5 tolerance in minor units: Antom's rounding rule is undocumented (antom.md 10)
    row_tolerance_minor: int = 1
    max_row_failures: int = 1000
    # BC-3: |CNY column - foreign x Rate| allowed, in fen (barcode.md 2.3: columns rounded independently)
    cny_tolerance_minor: int = 5
    # the user's ledger lines (schema.LEDGER_LINE) for checks that read them (BC-7); None: no ledger, such
    # checks yield nothing
    ledger: str | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # per-run results shared by several rules


T = TypeVar("T")


def shared(fn: Callable[[CheckContext], T]) -> Callable[[CheckContext], T]:
    """Compute a rule input once per run (several rules read the same batches)."""

    def wrapper(ctx: CheckContext) -> T:
        if fn.__name__ not in ctx.cache:
            ctx.cache[fn.__name__] = fn(ctx)
        result: T = ctx.cache[fn.__name__]
        return result

    return wrapper


@dataclass
class Result:
    check_id: str
    reason_code: str
    status: str
    family: str
    report: str
    scope: str
    currency: str | None = None
    expected: int | None = None
    actual: int | None = None
    lineage: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""


Rule = Callable[[CheckContext], Iterator[Result]]
_RULES: list[tuple[CheckSpec, Rule]] = []


def check(check_id: str, family: str, title: str, source: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        spec = CheckSpec(check_id, family, title, source)
        CHECKS[check_id] = spec
        _RULES.append((spec, fn))
        return fn

    return register


def _rows(ctx: CheckContext, sql: str) -> list[dict[str, Any]]:
    cur = ctx.con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _compare(check_id: str, reason: str, family: str, report: str, scope: str, expected: int | None,
             actual: int | None, currency: str | None, lineage: list[dict[str, Any]], what: str) -> Result:
    ok = expected == actual
    detail = f"{what}: expected {expected}, found {actual}"
    if not ok:
        detail += f" (difference {(actual or 0) - (expected or 0)})"
    return Result(check_id, reason, "pass" if ok else "fail", family, report, scope, currency, expected, actual,
                  lineage, detail)


def _signed(value: int | None, direction: str | None) -> int | None:
    if value is None:
        return None
    return -value if direction == "DEBIT" else value


def _lineage(sha: str, name: str, line: int | None = None) -> dict[str, Any]:
    return {"sha256": sha, "name": name, "line": line}


# ---------------------------------------------------------------------------------------------
# Alipay+


def _ap_files(ctx: CheckContext) -> str:
    """Alipay+ files with their batch key; the currency is the content's (AP-I8 compares it with the name)."""
    return f"""
        SELECT f.sha256, f.name, f.report,
               json_extract_string(f.meta, '$.participant_id') AS pid,
               json_extract_string(f.meta, '$.agreement_id') AS agr,
               json_extract_string(f.meta, '$.batch_id') AS batch,
               coalesce((SELECT any_value(d.currency) FROM {ctx.declared} d WHERE d.source_sha256 = f.sha256
                          AND d.figure IN ('settlement', 'fee') AND d.currency IS NOT NULL),
                        json_extract_string(f.meta, '$.currency')) AS ccy
        FROM {ctx.files} f WHERE f.family = 'alipayplus'"""


@dataclass
class _Batch:
    files: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    declared: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)

    def figure(self, report: str, figure: str) -> tuple[int | None, list[dict[str, Any]]]:
        """Sum of a declared figure over the seq files (signed by direction), with its lineage."""
        rows = self.declared.get((report, figure), [])
        if not rows:
            return None, []
        total = sum(_signed(r["value"], r["direction"]) or 0 for r in rows)
        return total, [_lineage(r["source_sha256"], r["source_name"], r["line_no"]) for r in rows]

    def count(self, report: str) -> tuple[int | None, list[dict[str, Any]]]:
        rows = self.declared.get((report, "count"), [])
        if not rows:
            return None, []
        return sum(r["value"] or 0 for r in rows), [_lineage(r["source_sha256"], r["source_name"], r["line_no"])
                                                    for r in rows]


@shared
def _ap_batches(ctx: CheckContext) -> dict[tuple[str, str, str, str], _Batch]:
    """Clearing and settlement sets keyed by (participant, agreement, currency, batch id)."""
    batches: dict[tuple[str, str, str, str], _Batch] = defaultdict(_Batch)
    files = _rows(ctx, _ap_files(ctx) + " ORDER BY f.name")
    key_of: dict[str, tuple[str, str, str, str]] = {}
    for f in files:
        key = (f["pid"], f["agr"], f["ccy"], f["batch"])
        key_of[f["sha256"]] = key
        batches[key].files[f["report"]].append(f)
    if not files:
        return batches
    for d in _rows(ctx, f"""SELECT d.*, f.report AS file_report FROM {ctx.declared} d JOIN {ctx.files} f
                            ON f.sha256 = d.source_sha256 WHERE f.family = 'alipayplus'
                            ORDER BY d.source_name, d.line_no, d.figure"""):
        batches[key_of[d["source_sha256"]]].declared[(d["file_report"], d["figure"])].append(d)
    for agg in _rows(ctx, f"""SELECT l.source_sha256 AS sha, l.report, count(*) AS n,
                                     sum(l.settlement_minor) AS settlement, sum(l.fee_minor) AS fee
                              FROM {ctx.lines} l WHERE l.family = 'alipayplus'
                              GROUP BY 1, 2 ORDER BY 1"""):
        b = batches[key_of[agg["sha"]]]
        cur = b.lines.setdefault(agg["report"], {"n": 0, "settlement": 0, "fee": 0})
        cur["n"] += agg["n"]
        cur["settlement"] += int(agg["settlement"] or 0)
        cur["fee"] += int(agg["fee"] or 0)
    return batches


def _role_sign(ctx: CheckContext, pid: str) -> int | None:
    role = ctx.roles.get(("alipayplus", pid))
    return {"ACQP": 1, "MPP": -1}.get(role or "")


def _scope(key: tuple[str, str, str, str]) -> str:
    return "/".join(k or "" for k in key)


def _files_lineage(b: _Batch, report: str) -> list[dict[str, Any]]:
    return [_lineage(f["sha256"], f["name"]) for f in b.files.get(report, [])]


@check("AP-I1", "alipayplus", "Transaction Detail summary totalCount = its detail lines (all seq files)",
       "alipayplus.md 11 AP-I1 [inferred]")
def _ap_i1(ctx: CheckContext) -> Iterator[Result]:
    for key, b in sorted(_ap_batches(ctx).items()):
        if "transaction_detail" not in b.files:
            continue
        declared, lin = b.count("transaction_detail")
        n = b.lines.get("transaction_detail", {}).get("n", 0)
        yield _compare("AP-I1", "TDR_COUNT_MISMATCH", "alipayplus", "transaction_detail", _scope(key), declared, n,
                       key[2], lin + _files_lineage(b, "transaction_detail"), "detail lines vs summary totalCount")


@check("AP-I2", "alipayplus", "Transaction Detail summary net = signed sum of its detail lines",
       "alipayplus.md 11 AP-I2 [inferred]")
def _ap_i2(ctx: CheckContext) -> Iterator[Result]:
    for key, b in sorted(_ap_batches(ctx).items()):
        if "transaction_detail" not in b.files:
            continue
        declared, lin = b.figure("transaction_detail", "settlement")
        total = b.lines.get("transaction_detail", {}).get("settlement", 0)
        sign = _role_sign(ctx, key[0])
        if sign is None:  # role unknown: compare magnitudes only (direction unverified)
            declared = abs(declared) if declared is not None else None
            actual = abs(total)
        else:
            actual = sign * total
        yield _compare("AP-I2", "TDR_NET_MISMATCH", "alipayplus", "transaction_detail", _scope(key), declared,
                       actual, key[2], lin + _files_lineage(b, "transaction_detail"),
                       "signed detail settlement sum vs summary net")


@check("AP-I3", "alipayplus", "Fee Report summary count and net = its fee lines", "alipayplus.md 11 AP-I3 [inferred]")
def _ap_i3(ctx: CheckContext) -> Iterator[Result]:
    for key, b in sorted(_ap_batches(ctx).items()):
        if "fee" not in b.files:
            continue
        agg = b.lines.get("fee", {"n": 0, "fee": 0})
        declared, lin = b.count("fee")
        yield _compare("AP-I3", "FR_COUNT_MISMATCH", "alipayplus", "fee", _scope(key), declared, agg["n"], key[2],
                       lin + _files_lineage(b, "fee"), "fee lines vs summary totalCount")
        net, lin = b.figure("fee", "fee")
        yield _compare("AP-I3", "FR_NET_MISMATCH", "alipayplus", "fee", _scope(key), net, agg["fee"], key[2],
                       lin + _files_lineage(b, "fee"), "signed fee sum vs summary net")


@check("AP-D1", "alipayplus", "TSR totalCount = TDR totalCount + FR totalCount", "seed 002; alipayplus.md 11 AP-D1")
def _ap_d1(ctx: CheckContext) -> Iterator[Result]:
    for key, b in sorted(_ap_batches(ctx).items()):
        if "transaction_summary" not in b.files:
            continue
        tsr, lin = b.count("transaction_summary")
        tdr, lin_t = b.count("transaction_detail")
        fr, lin_f = b.count("fee")
        parts = None if tdr is None or fr is None else tdr + fr
        res = _compare("AP-D1", "TSR_COUNT_MISMATCH", "alipayplus", "transaction_summary", _scope(key), parts, tsr,
                       key[2], lin + lin_t + lin_f, "TSR totalCount vs TDR + FR totalCount")
        if parts is None:
            res.detail = "the cycle's Transaction Detail or Fee Report is missing"
        yield res


@check("AP-I4", "alipayplus", "TSR net settlement = TDR net + FR net, with directions",
       "alipayplus.md 11 AP-I4 [inferred]")
def _ap_i4(ctx: CheckContext) -> Iterator[Result]:
    for key, b in sorted(_ap_batches(ctx).items()):
        if "transaction_summary" not in b.files:
            continue
        tsr, lin = b.figure("transaction_summary", "settlement")
        tdr, lin_t = b.figure("transaction_detail", "settlement")
        fr, lin_f = b.figure("fee", "fee")
        parts = None if tdr is None or fr is None else tdr + fr
        yield _compare("AP-I4", "TSR_NET_MISMATCH", "alipayplus", "transaction_summary", _scope(key), parts, tsr,
                       key[2], lin + lin_t + lin_f, "TSR net vs TDR net + FR net (CREDIT +, DEBIT -)")


@dataclass
class _Settlements:
    batches: dict[tuple[str, str, str, str], _Batch]
    lines: list[dict[str, Any]]  # SR clearing-batch lines, in file and line order
    by_file: dict[str, list[dict[str, Any]]]  # the same, per SR file sha256


@shared
def _settlements(ctx: CheckContext) -> _Settlements:
    batches = _ap_batches(ctx)
    sr_lines = _rows(ctx, f"""
        SELECT l.source_sha256, l.source_name, l.line_no, l.clearing_batch_id, l.settlement_minor,
               l.settlement_currency, l.occurred_at
        FROM {ctx.lines} l WHERE l.family = 'alipayplus' AND l.report = 'settlement'
        ORDER BY l.source_name, l.line_no""")
    by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ln in sr_lines:
        by_file[ln["source_sha256"]].append(ln)
    return _Settlements(batches, sr_lines, by_file)


@check("AP-I5", "alipayplus", "Settlement Report net = its listed clearing batches = their TSR nets",
       "alipayplus.md 11 AP-I5, AP-D5 [inferred]")
def _ap_i5(ctx: CheckContext) -> Iterator[Result]:
    sr = _settlements(ctx)
    batches, by_file = sr.batches, sr.by_file
    for key, b in sorted(batches.items()):
        for f in b.files.get("settlement", []):
            net, lin = b.figure("settlement", "settlement")
            listed = by_file.get(f["sha256"], [])
            yield _compare("AP-I5", "SR_NET_MISMATCH", "alipayplus", "settlement", _scope(key),
                           sum(int(ln["settlement_minor"] or 0) for ln in listed), net, key[2],
                           [*lin, _lineage(f["sha256"], f["name"])], "SR net vs the sum of its clearing batch lines")
            for ln in listed:
                ckey = (key[0], key[1], key[2], ln["clearing_batch_id"])
                cb = batches.get(ckey)
                tsr = cb.figure("transaction_summary", "settlement") if cb else (None, [])
                scope = f"{_scope(key)}/{ln['clearing_batch_id']}"
                lineage = [_lineage(ln["source_sha256"], ln["source_name"], ln["line_no"]), *tsr[1]]
                if tsr[0] is None:
                    yield Result("AP-I5", "SR_UNKNOWN_BATCH", "fail", "alipayplus", "settlement", scope, key[2], None,
                                 ln["settlement_minor"], lineage, "the SR lists a clearing batch with no TSR received")
                    continue
                yield _compare("AP-I5", "SR_BATCH_NET_MISMATCH", "alipayplus", "settlement", scope, tsr[0],
                               ln["settlement_minor"], key[2], lineage,
                               "SR clearing batch line vs that batch's TSR net")


@check("AP-D2", "alipayplus", "A settlement of exactly one clearing cycle equals that cycle's TSR net",
       "seed 002; alipayplus.md 11 AP-D2")
def _ap_d2(ctx: CheckContext) -> Iterator[Result]:
    sr = _settlements(ctx)
    batches, by_file = sr.batches, sr.by_file
    for key, b in sorted(batches.items()):
        for f in b.files.get("settlement", []):
            listed = by_file.get(f["sha256"], [])
            if len(listed) != 1:
                continue
            cb = batches.get((key[0], key[1], key[2], listed[0]["clearing_batch_id"]))
            if cb is None:
                continue
            tsr, lin_t = cb.figure("transaction_summary", "settlement")
            net, lin = b.figure("settlement", "settlement")
            yield _compare("AP-D2", "SR_TSR_MISMATCH", "alipayplus", "settlement", _scope(key), tsr, net, key[2],
                           lin + lin_t, "SR net vs the TSR net of its only clearing cycle")


@check("AP-I6", "alipayplus", "Every clearing batch is settled exactly once (once it is due)",
       "alipayplus.md 11 AP-D4, AP-I6")
def _ap_i6(ctx: CheckContext) -> Iterator[Result]:
    sr = _settlements(ctx)
    batches, sr_lines = sr.batches, sr.lines
    listed: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    sr_key = {f["sha256"]: k for k, b in batches.items() for f in b.files.get("settlement", [])}
    for ln in sr_lines:
        k = sr_key.get(ln["source_sha256"])
        if k is not None:
            listed[(k[0], k[1], k[2], ln["clearing_batch_id"])].append(ln)
    # A batch is due once a later batch of the same agreement has been settled (clearing batch ids start
    # with the cycle date: alipayplus.md 4 [inferred]); the newest cycles are simply not settled yet.
    latest: dict[tuple[str, str, str], str] = {}
    for k in listed:
        latest[k[:3]] = max(latest.get(k[:3], ""), k[3] or "")
    for key, b in sorted(batches.items()):
        if "transaction_summary" not in b.files:
            continue
        lines = listed.get(key, [])
        lineage = [_lineage(ln["source_sha256"], ln["source_name"], ln["line_no"]) for ln in lines]
        lineage += _files_lineage(b, "transaction_summary")
        if len(lines) > 1:
            yield Result("AP-I6", "BATCH_SETTLED_TWICE", "fail", "alipayplus", "settlement", _scope(key), key[2], 1,
                         len(lines), lineage, f"clearing batch listed in {len(lines)} settlement lines")
        elif not lines and (key[3] or "") < latest.get(key[:3], ""):
            yield Result("AP-I6", "BATCH_NOT_SETTLED", "fail", "alipayplus", "settlement", _scope(key), key[2], 1, 0,
                         lineage, "a later clearing batch is settled but this one is in no settlement report")
        elif lines:
            yield Result("AP-I6", "BATCH_SETTLED_TWICE", "pass", "alipayplus", "settlement", _scope(key), key[2], 1, 1,
                         lineage, "settled once")


# ---------------------------------------------------------------------------------------------
# File names vs content (AP-I8, AN-9)


def _name_checks(ctx: CheckContext, family: str, check_id: str, reason: str) -> Iterator[Result]:
    files = _rows(ctx, f"SELECT sha256, name, report, meta FROM {ctx.files} WHERE family = '{family}' ORDER BY name")
    for f in files:
        meta = json.loads(f["meta"] or "{}")
        try:
            mapping = get_report(family, f["report"]).name_checks()
        except KeyError:
            continue
        for meta_key, line_field in sorted(mapping.items()):
            if meta_key not in meta:
                continue
            found = [r["v"] for r in _rows(ctx, f"""
                SELECT DISTINCT {line_field} AS v FROM {ctx.lines} WHERE source_sha256 = '{f["sha256"]}'
                AND {line_field} IS NOT NULL ORDER BY 1""")]
            if line_field.endswith("_currency"):
                found += [r["v"] for r in _rows(ctx, f"""
                    SELECT DISTINCT currency AS v FROM {ctx.declared} WHERE source_sha256 = '{f["sha256"]}'
                    AND figure IN ('settlement', 'fee') AND currency IS NOT NULL ORDER BY 1""") if r["v"] not in found]
            if not found:
                continue
            bad = [v for v in found if v != meta[meta_key]]
            yield Result(check_id, reason, "fail" if bad else "pass", family, f["report"], f["name"], None, None, None,
                         [_lineage(f["sha256"], f["name"])],
                         f"file name {meta_key} {meta[meta_key]!r}, content {', '.join(map(str, found))}")


@check("AP-I8", "alipayplus", "The currency in the file name is the settlement currency inside",
       "alipayplus.md 11 AP-I8")
def _ap_i8(ctx: CheckContext) -> Iterator[Result]:
    yield from _name_checks(ctx, "alipayplus", "AP-I8", "NAME_CURRENCY_MISMATCH")


@check("AN-9", "antom", "File name currency and batch id = settlementCurrency / settlementBatchId inside",
       "antom.md 11 AN-9")
def _an_9(ctx: CheckContext) -> Iterator[Result]:
    yield from _name_checks(ctx, "antom", "AN-9", "NAME_MISMATCH")


# ---------------------------------------------------------------------------------------------
# Antom


@shared
def _an_summaries(ctx: CheckContext) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Settlement summary figures keyed by (customer, currency, batch): {scope: {figure: (value, lineage)}}."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    rows = _rows(ctx, f"""
        SELECT d.*, (SELECT any_value(l.account_id) FROM {ctx.lines} l WHERE l.source_sha256 = d.source_sha256)
               AS customer,
               (SELECT any_value(d2.currency) FROM {ctx.declared} d2 WHERE d2.source_sha256 = d.source_sha256
                AND d2.line_no = d.line_no AND d2.figure = 'settlement') AS row_ccy
        FROM {ctx.declared} d WHERE d.family = 'antom' AND d.report = 'settlement_summary'
        ORDER BY d.source_name, d.line_no, d.figure""")
    for r in rows:
        key = (r["customer"] or "", r["row_ccy"] or r["currency"] or "", r["batch_id"] or "")
        entry = out.setdefault(key, {"scopes": defaultdict(dict), "lineage": []})
        entry["scopes"][r["scope"]][r["figure"]] = (r["value"], _lineage(r["source_sha256"], r["source_name"],
                                                                        r["line_no"]))
    return out


@shared
def _an_details(ctx: CheckContext) -> dict[tuple[str, str, str], dict[str, Any]]:
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in _rows(ctx, f"""
        SELECT account_id, settlement_currency, settlement_batch_id, record_type, count(*) AS n,
               sum(settlement_minor) AS settlement, sum(fee_minor) AS fee,
               list(DISTINCT source_sha256 || '|' || source_name ORDER BY source_sha256 || '|' || source_name) AS files
        FROM {ctx.lines} WHERE family = 'antom' AND report = 'settlement_detail'
        GROUP BY ALL ORDER BY ALL"""):
        key = (r["account_id"] or "", r["settlement_currency"] or "", r["settlement_batch_id"] or "")
        entry = out.setdefault(key, {"types": {}, "files": set()})
        entry["types"][r["record_type"] or ""] = (r["n"], int(r["settlement"] or 0), int(r["fee"] or 0))
        entry["files"].update(r["files"])
    return out


def _detail_lineage(entry: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not entry:
        return []
    return [_lineage(*f.split("|", 1)) for f in sorted(entry["files"])]


def _total_fee(figures: Mapping[str, tuple[int | None, Any]]) -> int | None:
    """The row's fee: feeAmountValue (v1 'total of all fees') or, without it, the sum of the fee columns (v2)."""
    if "fee" in figures:
        return figures["fee"][0]
    fees = [v for k, (v, _) in figures.items() if k not in ("count", "settlement") and v is not None]
    return sum(fees) if fees else None


@check("AN-1", "antom", "Settlement details per batch and currency = the summary TOTAL (count and amount)",
       "antom.md 11 AN-1; seed 001 Table 3")
def _an_1(ctx: CheckContext) -> Iterator[Result]:
    sums, dets = _an_summaries(ctx), _an_details(ctx)
    for key in sorted(set(sums) | set(dets)):
        scope = "/".join(key)
        det = dets.get(key)
        total = sums.get(key, {}).get("scopes", {}).get("TOTAL")
        if total is None:
            yield Result("AN-1", "SS_MISSING", "fail", "antom", "settlement_summary", scope, key[1], None, None,
                         _detail_lineage(det), "settlement details without a summary TOTAL row")
            continue
        n = sum(t[0] for t in det["types"].values()) if det else 0
        amount = sum(t[1] for t in det["types"].values()) if det else 0
        lin = [total["settlement"][1]] if "settlement" in total else []
        yield _compare("AN-1", "SD_COUNT_MISMATCH", "antom", "settlement_summary", scope,
                       total.get("count", (None,))[0], n, key[1], lin + _detail_lineage(det),
                       "detail rows vs summary TOTAL count")
        yield _compare("AN-1", "SD_TOTAL_MISMATCH", "antom", "settlement_summary", scope,
                       total.get("settlement", (None,))[0], amount, key[1], lin + _detail_lineage(det),
                       "sum of detail settlementAmountValue vs summary TOTAL")


@check("AN-2", "antom", "Per transaction type: detail count and amount = the summary row of that type",
       "antom.md 11 AN-2")
def _an_2(ctx: CheckContext) -> Iterator[Result]:
    sums, dets = _an_summaries(ctx), _an_details(ctx)
    for key in sorted(set(sums) & set(dets)):
        scopes = sums[key]["scopes"]
        types = dets[key]["types"]
        for kind in sorted((set(scopes) - {"TOTAL", "DEFAULT"}) | set(types)):
            row = scopes.get(kind, {})
            n, amount, _ = types.get(kind, (0, 0, 0))
            exp_n, exp_a = row.get("count", (0,))[0], row.get("settlement", (0,))[0]
            ok = exp_n == n and exp_a == amount
            lin = [v[1] for v in row.values()][:1] + _detail_lineage(dets[key])
            yield Result("AN-2", "SD_TYPE_MISMATCH", "pass" if ok else "fail", "antom", "settlement_summary",
                         f"{'/'.join(key)}/{kind}", key[1], exp_a, amount, lin,
                         f"{kind}: summary {exp_n} rows / {exp_a}, details {n} rows / {amount}")


@check("AN-3", "antom", "Sum of the detail fees = the summary TOTAL fee", "antom.md 11 AN-3")
def _an_3(ctx: CheckContext) -> Iterator[Result]:
    sums, dets = _an_summaries(ctx), _an_details(ctx)
    for key in sorted(set(sums) & set(dets)):
        total = sums[key]["scopes"].get("TOTAL")
        if total is None:
            continue
        declared = _total_fee(total)
        if declared is None:
            continue
        fee = sum(t[2] for t in dets[key]["types"].values())
        lin = [v[1] for k, v in total.items() if k != "count"][:1] + _detail_lineage(dets[key])
        yield _compare("AN-3", "SD_FEE_MISMATCH", "antom", "settlement_summary", f"{'/'.join(key)}/fee", declared, fee,
                       key[1], lin, "sum of detail fees vs summary TOTAL fee")


@check("AN-4", "antom", "Summary TOTAL = sum of its other rows (count, settlement, fee; DEFAULT correction rule)",
       "antom.md 11 AN-4")
def _an_4(ctx: CheckContext) -> Iterator[Result]:
    for key, entry in sorted(_an_summaries(ctx).items()):
        scopes = entry["scopes"]
        total = scopes.get("TOTAL")
        others = {k: v for k, v in scopes.items() if k != "TOTAL"}
        if total is None or not others:
            continue
        default = others.get("DEFAULT", {})
        for figure in ("count", "settlement", "fee"):
            if figure == "fee":
                declared = _total_fee(total)
                parts = [_total_fee(v) for v in others.values()]
            else:
                declared = total.get(figure, (None,))[0]
                parts = [v.get(figure, (None,))[0] for v in others.values()]
            if declared is None:
                continue
            expected = sum(p or 0 for p in parts)
            if figure == "settlement" and default and default.get("settlement", (None,))[0] is None:
                # 2C2P correction line: its feeAmountValue adjusts the batch settlement (antom.md 11)
                expected += _total_fee(default) or 0
            lin = [v[1] for v in total.values()][:1]
            yield _compare("AN-4", "SS_TOTAL_INCONSISTENT", "antom", "settlement_summary", f"{'/'.join(key)}/{figure}",
                           expected, declared, key[1], lin, f"TOTAL {figure} vs the sum of the other summary rows")


@check("AN-5", "antom", "Per detail row: gross (converted with quotePrice) + fees = settlement",
       "antom.md 10, 11 AN-5 [tolerance configurable]")
def _an_5(ctx: CheckContext) -> Iterator[Result]:
    # The scale between currencies: 10^(settlement exponent - transaction exponent), exact decimals.
    # 10^(settlement exponent - transaction exponent) for the currency pairs present, as exact decimal
    # literals (the exponents come from the connection's ar_exp, which carries the workspace's overrides).
    pairs = ctx.con.execute(f"""SELECT DISTINCT amount_currency, settlement_currency FROM {ctx.lines}
        WHERE family = 'antom' AND report = 'settlement_detail' AND amount_currency IS NOT NULL
        AND settlement_currency IS NOT NULL ORDER BY 1, 2""").fetchall()
    codes = sorted({c for pair in pairs for c in pair})
    exps = dict(ctx.con.execute("SELECT c, ar_exp(c) FROM (SELECT unnest(?::VARCHAR[]) AS c)", [codes]).fetchall()
                ) if codes else {}
    whens = " ".join(
        f"WHEN amount_currency = '{a}' AND settlement_currency = '{b}' THEN "
        f"{Decimal(1).scaleb(exps[b] - exps[a])}::DECIMAL(38,6)"
        for a, b in pairs if exps.get(a) is not None and exps.get(b) is not None)
    scale = f"CASE {whens} END" if whens else "CAST(NULL AS DECIMAL(38,6))"
    # The converted gross in the settlement currency; multiply when the transaction currency is the pair's left
    # side, else divide (antom.md 10); rounded half-even to the settlement currency's unit.
    gross = f"""CASE
        WHEN amount_currency = settlement_currency OR fx_rate IS NULL THEN amount_minor
        WHEN split_part(fx_pair, '/', 1) = amount_currency
            THEN CAST(round_even(CAST(amount_minor AS DECIMAL(38,6)) * fx_rate * {scale}, 0) AS BIGINT)
        ELSE CAST(round_even(CAST(amount_minor AS DECIMAL(38,6)) / fx_rate * {scale}, 0) AS BIGINT) END"""
    where = """family = 'antom' AND report = 'settlement_detail' AND amount_minor IS NOT NULL
                AND amount_minor <> 0 AND settlement_minor IS NOT NULL"""
    # DuckDB 2.0's statistics propagation fails to bind this decimal CASE ("BindBuiltinScalarFunction did not
    # return a BoundFunctionExpression") when the source's statistics are narrow; the pass is off for it.
    with optimizers_disabled(ctx.con, "statistics_propagation"):
        failures = _rows(ctx, f"""
            SELECT * FROM (
                SELECT account_id, settlement_currency, settlement_batch_id, merchant_ref_id, provider_txn_id,
                       source_sha256, source_name, line_no, settlement_minor,
                       {gross} + coalesce(fee_minor, 0) AS expected
                FROM {ctx.lines} WHERE {where})
            WHERE abs(settlement_minor - expected) > {int(ctx.row_tolerance_minor)}
            ORDER BY source_name, line_no LIMIT {int(ctx.max_row_failures)}""")
    checked = ctx.con.execute(f"SELECT count(*) FROM {ctx.lines} WHERE {where}").fetchall()[0][0]
    for r in failures:
        ref = r["merchant_ref_id"] or r["provider_txn_id"] or str(r["line_no"])
        yield Result("AN-5", "SD_ROW_ARITHMETIC", "fail", "antom", "settlement_detail",
                     f"{r['account_id']}/{r['settlement_currency']}/{r['settlement_batch_id']}/{ref}",
                     r["settlement_currency"], r["expected"], r["settlement_minor"],
                     [_lineage(r["source_sha256"], r["source_name"], r["line_no"])],
                     f"gross + fees = {r['expected']}, settlementAmountValue = {r['settlement_minor']}")
    if checked and not failures:
        yield Result("AN-5", "SD_ROW_ARITHMETIC", "pass", "antom", "settlement_detail", "all rows", None, None,
                     None, [], f"{checked} rows add up within {ctx.row_tolerance_minor} minor unit(s)")


# ---------------------------------------------------------------------------------------------


def run_checks(ctx: CheckContext, families: set[str] | None = None) -> pa.Table:
    """Every registered check, in a deterministic order, as a ``schema.CHECK_RESULT`` table."""
    out: list[dict[str, Any]] = []
    for spec, rule in _RULES:
        if families is not None and spec.family not in families:
            continue
        for r in rule(ctx):
            out.append(r.__dict__)
    out.sort(key=lambda r: (r["check_id"], r["status"] != "fail", r["scope"], r["reason_code"]))
    return pa.Table.from_pylist(out, schema=CHECK_RESULT)


# Family modules register their checks on import (kept last: they import the helpers above).
from . import checks_alipay_cn, checks_barcode  # noqa: E402,F401
