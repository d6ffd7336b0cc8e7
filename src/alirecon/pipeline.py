"""The stages over a workspace, one call each: ingest ledgers, check reports, reconcile.

Why a module of its own: the CLI, the demo and the tests run exactly the same steps; keeping them
here means an interface only chooses *what* to run and how to show it, never how it works.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from .config import LedgerConfig
from .formats.engine import _sql_str
from .recon.checks import CheckContext, run_checks
from .recon.match import reconcile_family
from .schema import EXCEPTION
from .warehouse import LedgerIngest, Workspace

__all__ = ["CheckRun", "ReconcileRun", "check", "ingest_ledgers", "reconcile"]

FILES_RELATION = ("(SELECT sha256, first_name AS name, family, report, CAST(meta AS VARCHAR) AS meta, "
                  "extras_names FROM files WHERE status = 'parsed')")
DECLARED_RELATION = "(SELECT * FROM declared WHERE source_sha256 IN (SELECT sha256 FROM files WHERE status = 'parsed'))"


@dataclass
class CheckRun:
    run_id: str
    results: pa.Table

    @property
    def failures(self) -> int:
        return sum(1 for s in self.results.column("status").to_pylist() if s == "fail")


@dataclass
class ReconcileRun:
    run_id: str
    exceptions: pa.Table
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # family -> class -> n (+ matched)
    out_of_window: dict[str, int] = field(default_factory=dict)


def _ledger_path(ws: Workspace, ledger: LedgerConfig) -> Path | None:
    if ledger.path is None:
        return None
    path = Path(ledger.path)
    return path if path.is_absolute() else ws.root / path


def ingest_ledgers(ws: Workspace, ledgers: Sequence[LedgerConfig] | None = None) -> list[LedgerIngest]:
    """Read every configured ledger that has a path (unchanged bytes change nothing)."""
    out = []
    for ledger in ledgers if ledgers is not None else ws.config.ledgers:
        path = _ledger_path(ws, ledger)
        if path is not None:
            out.append(ws.ingest_ledger(path, ledger))
    return out


def check_context(ws: Workspace) -> CheckContext:
    roles: dict[tuple[str, str], str] = {(a.family, a.account_id): a.role for a in ws.config.accounts}
    return CheckContext(con=ws.con, files=FILES_RELATION, lines=f"({ws.report_lines_sql(ordered=False)})",
                        declared=DECLARED_RELATION, roles=roles,
                        row_tolerance_minor=ws.config.checks.row_tolerance_minor,
                        cny_tolerance_minor=ws.config.checks.barcode_cny_tolerance_minor,
                        ledger=f"({ws.ledger_lines_sql(ordered=False)})")


def check(ws: Workspace, run_id: str | None = None) -> CheckRun:
    """Every check over every parsed file; results saved under a new run."""
    run_id = run_id or ws.new_run("check")
    results = run_checks(check_context(ws))
    ws.save_checks(results, run_id)
    return CheckRun(run_id, results)


def reconcile(ws: Workspace, run_id: str | None = None, families: Sequence[str] | None = None) -> ReconcileRun:
    """Report lines against the ledger, per family, through the configured match reports."""
    run_id = run_id or ws.new_run("reconcile")
    report_lines = f"({ws.report_lines_sql(ordered=False)}{_period_filter(ws.config.reconcile.match_periods)})"
    ledger_lines = f"({ws.ledger_lines_sql(ordered=False)})"
    fams = list(families) if families is not None else sorted(ws.config.reconcile.match_reports)
    tables: list[pa.Table] = []
    run = ReconcileRun(run_id, pa.table({}))
    for family in fams:
        result = reconcile_family(ws.con, report_lines, ledger_lines, ws.config.reconcile, family)
        try:
            tables.append(result.arrow())
            run.counts[family] = dict(result.counts)
            run.out_of_window[family] = result.out_of_window
        finally:
            result.close()
    run.exceptions = pa.concat_tables(tables) if tables else EXCEPTION.empty_table()
    ws.save_exceptions(run.exceptions, run_id)
    return run


def _period_filter(match_periods: Mapping[str, Sequence[str]]) -> str:
    """`` AND ...`` keeping, per family with an entry, only the lines of files of those periods (the file's
    ``period`` metadata: alipay_cn bills say daily or monthly)."""
    out = ""
    for family, periods in sorted(match_periods.items()):
        wanted = ", ".join(_sql_str(p) for p in periods) or "NULL"
        out += (f" AND NOT (family = {_sql_str(family)} AND source_sha256 IN (SELECT sha256 FROM files WHERE "
                f"coalesce(json_extract_string(meta, '$.period'), '') NOT IN ({wanted})))")
    return out


def summary_counts(exceptions: pa.Table) -> dict[tuple[str, str, str], int]:
    """(family, report, class) -> count, for tables and --json output."""
    out: dict[tuple[str, str, str], int] = {}
    for row in exceptions.select(["family", "report", "exception_class"]).to_pylist():
        key = (row["family"] or "", row["report"] or "", row["exception_class"])
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def jsonable(table: pa.Table) -> list[dict[str, Any]]:
    """Rows with timestamps/decimals rendered as text, for --json."""
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        for k, v in row.items():
            if hasattr(v, "isoformat"):
                row[k] = v.isoformat()
            elif v.__class__.__name__ == "Decimal":
                row[k] = str(v)
    return rows
