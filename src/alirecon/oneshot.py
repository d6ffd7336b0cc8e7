"""Reconcile report files against a ledger without a workspace (``alirecon reconcile --report --ledger``).

Why: the quickest way to try alirecon on a day's files, and the path the benchmark measures. Everything
stays in one DuckDB connection (spilling to a temporary folder), nothing is copied through Python: each
parsed file is a table, the report lines are a view over them, the exceptions are written with COPY.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from .config import LedgerConfig, ReconcileConfig
from .formats.engine import ParsedFile, ParseOptions, _sql_str, new_connection
from .formats.registry import parse_file
from .ledger import read_ledger
from .recon.match import ORDER_BY, match_fields, reconcile_family

__all__ = ["OneShotResult", "print_result", "reconcile_files", "write_table"]


@dataclass
class OneShotResult:
    files: list[dict[str, Any]] = field(default_factory=list)
    ledger: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    exception_count: int = 0
    exceptions: list[dict[str, Any]] = field(default_factory=list)  # the first ones, for display
    out: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def problems(self) -> bool:
        return any(not f["ok"] for f in self.files) or not self.ledger.get("ok", True)

    @property
    def problems_fatal(self) -> bool:
        """Nothing could be compared: the ledger or every report was unusable."""
        return not self.ledger.get("ok", True) or (bool(self.files) and not any(f["ok"] for f in self.files))

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "ledger": self.ledger, "counts": self.counts,
                "exception_count": self.exception_count, "exceptions": self.exceptions, "out": self.out,
                "seconds": self.seconds}


def write_table(table: pa.Table, out: Path) -> None:
    """Exceptions to Parquet (lists kept) or CSV (lineage lists as JSON text)."""
    if out.suffix.lower() == ".parquet":
        pq.write_table(table, out)
        return
    import json

    cols = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_list(col.type):
            cols[name] = pa.array([json.dumps(v) for v in col.to_pylist()], pa.string())
        else:
            cols[name] = col
    pacsv.write_csv(pa.table(cols), out)


def reconcile_files(reports: list[Path], ledger_path: Path, ledger: LedgerConfig, *, out: Path | None = None,
                    keep_extras: bool = True, progress: Progress | None = None,
                    memory_limit: str | None = None, config: ReconcileConfig | None = None) -> OneShotResult:
    result = OneShotResult()
    config = config or ReconcileConfig()
    # Nothing here reads more than the match fields: store only those (every column is still validated).
    options = ParseOptions(keep_extras=keep_extras, fields=None if keep_extras else match_fields(config))
    tmp = tempfile.TemporaryDirectory(prefix="alirecon-spill-")
    con = new_connection(memory_limit=memory_limit)
    con.execute(f"SET temp_directory={_sql_str(tmp.name)}")
    task = progress.add_task("parsing reports", total=len(reports) + 2) if progress else None
    parsed_files: list[ParsedFile] = []
    try:
        t0 = time.perf_counter()
        for path in reports:
            parsed = parse_file(path, con, options)
            parsed_files.append(parsed)
            result.files.append({"file": parsed.name, "sha256": parsed.sha256, "family": parsed.family,
                                 "report": parsed.report, "rows": parsed.row_count, "ok": parsed.ok,
                                 "problems": [p.to_dict() for p in parsed.problems[:20]]})
            if progress and task is not None:
                progress.advance(task)
        good = [p for p in parsed_files if p.ok]
        lines = " UNION ALL ".join(f"({p.lines_sql()})" for p in good) or ParsedFile(
            Path("-"), "-", "", 0, "", "").lines_sql()
        con.execute(f"CREATE TEMP VIEW oneshot_lines AS {lines}")
        result.seconds["parse_reports"] = time.perf_counter() - t0
        if progress and task is not None:
            progress.update(task, description="reading the ledger")
        t0 = time.perf_counter()
        led = read_ledger(ledger_path, ledger, con, options)
        result.ledger = {"file": led.name, "sha256": led.sha256, "rows": led.row_count, "ok": led.ok,
                         "problems": [p.to_dict() for p in led.problems[:20]]}
        result.seconds["parse_ledger"] = time.perf_counter() - t0
        if progress and task is not None:
            progress.update(task, description="matching", advance=1)
        if not led.ok or not good:
            return result
        t0 = time.perf_counter()
        families = sorted({p.family for p in good if p.family in config.match_reports})
        if ledger.family:
            families = [f for f in families if f == ledger.family]
        tables = []
        for fam in families:
            res = reconcile_family(con, "(SELECT * FROM oneshot_lines)", f"({led.lines_sql()})", config, fam)
            result.counts[fam] = dict(res.counts)
            tables.append(res.table)
        union = " UNION ALL ".join(f"SELECT * FROM {t}" for t in tables)
        if union:
            con.execute(f"CREATE TEMP TABLE oneshot_exceptions AS SELECT * FROM ({union}) ORDER BY {ORDER_BY}")
            result.exception_count = int(con.execute("SELECT count(*) FROM oneshot_exceptions").fetchall()[0][0])
            result.exceptions = con.sql("SELECT * FROM oneshot_exceptions LIMIT 50").to_arrow_table().to_pylist()
            if out is not None:
                fmt = "PARQUET" if out.suffix.lower() == ".parquet" else "CSV"
                con.execute(f"COPY oneshot_exceptions TO {_sql_str(str(out))} (FORMAT {fmt})")
                result.out = str(out)
        result.seconds["match"] = time.perf_counter() - t0
        if progress and task is not None:
            progress.advance(task)
        return result
    finally:
        for p in parsed_files:
            p.close()
        con.close()
        tmp.cleanup()


def print_result(console: Console, result: OneShotResult) -> None:
    table = Table(title="Reports")
    for col in ("file", "report", "rows", "status"):
        table.add_column(col)
    for f in result.files:
        first = f["problems"][0]["message"] if f["problems"] else ""
        status = "ok" if f["ok"] else f"[red]{first}[/red]"
        table.add_row(f["file"], f"{f['family']}.{f['report']}", str(f["rows"]), status)
    console.print(table)
    led = result.ledger
    if led:
        console.print(f"ledger {led['file']}: {led['rows']} rows" + ("" if led["ok"] else
                      f" [red]{led['problems'][0]['message'] if led['problems'] else 'unusable'}[/red]"))
    t = Table(title="Result")
    for col in ("family", "class", "count"):
        t.add_column(col)
    for fam, counts in result.counts.items():
        for cls, n in counts.items():
            if n:
                t.add_row(fam, cls, str(n))
    console.print(t)
    if result.out:
        console.print(f"{result.exception_count} exceptions written to {result.out}")
