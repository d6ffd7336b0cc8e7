"""Which report is this file? Name + first lines, scored by every known report.

Why: SFTP names can be customised per merchant (antom.md 2.1) and portal downloads carry other names,
so the header decides and the name only adds confidence. Ties are reported, never guessed.
"""

from __future__ import annotations

import csv
import importlib
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import duckdb

from .. import errors
from .base import ReportFormat
from .engine import ParsedFile, ParseOptions, new_connection

__all__ = ["FAMILIES", "all_reports", "detect", "get_report", "parse_file"]

FAMILIES = ("alipayplus", "antom", "alipay_cn", "barcode")


@cache
def all_reports() -> tuple[ReportFormat, ...]:
    out: list[ReportFormat] = []
    for family in FAMILIES:
        module = importlib.import_module(f"alirecon.formats.{family}")
        out.extend(module.REPORTS)
    return tuple(out)


def get_report(family: str, report: str) -> ReportFormat:
    for r in all_reports():
        if r.family == family and r.report == report:
            return r
    raise KeyError(f"{family}.{report}")


def _head(path: Path, max_lines: int = 12) -> list[list[str]]:
    if path.suffix.lower() == ".xlsx":
        try:
            from python_calamine import CalamineWorkbook

            rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
        except Exception:
            return []
        return [[str(c) if c is not None else "" for c in row] for row in rows[:max_lines]]
    with open(path, "rb") as f:
        data = f.read(64 * 1024)
    text = _decode_head(data)
    lines = text.splitlines()[:max_lines]
    out: list[list[str]] = []
    for line in lines:
        try:
            out.append(next(csv.reader([line]), []))
        except csv.Error:
            out.append(line.split(","))
    return out


def _decode_head(data: bytes) -> str:
    """UTF-8 (BOM stripped); bytes that are not UTF-8 as GB18030, the superset of the GBK that Alipay China
    bills are written in (alipay-cn.md 5), so their first line can be recognised."""
    complete = data[: data.rfind(b"\n") + 1] or data  # a read cut inside a character must not count
    try:
        complete.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("gb18030", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


def detect(path: Path, name: str | None = None, reports: Sequence[ReportFormat] | None = None) -> ReportFormat:
    """The one report that fits best; ``UnknownFormat`` when none or several fit equally."""
    path = Path(path)
    name = name or path.name
    head = _head(path)
    scored = sorted(((r.identify(name, head), i, r) for i, r in enumerate(reports or all_reports())),
                    key=lambda t: (-t[0], t[1]))
    if not scored or scored[0][0] == 0:
        raise errors.UnknownFormat("no known report recognises this file name and header", file=name, line=1)
    best = [r for s, _, r in scored if s == scored[0][0]]
    if len(best) > 1:
        raise errors.UnknownFormat("several reports fit equally: " + ", ".join(r.key() for r in best),
                                   file=name, line=1)
    return best[0]


def parse_file(path: Path, con: duckdb.DuckDBPyConnection | None = None, options: ParseOptions | None = None,
               *, name: str | None = None) -> ParsedFile:
    """Detect and parse; an unrecognised file comes back with an ``unknown_format`` problem."""
    path = Path(path)
    name = name or path.name
    options = options or ParseOptions()
    try:
        report = detect(path, name)
    except errors.UnknownFormat as exc:
        from .engine import SourceFile

        facts = SourceFile.scan(path)
        parsed = ParsedFile(path=path, name=name, sha256=facts.sha256, size=facts.size, family="", report="",
                            con=con)
        parsed.problems.append(exc if facts.size else errors.EmptyFile("the file is empty", file=name, line=1))
        return parsed
    return report.parse(path, con or new_connection(exponents=options.exponents), options, name=name)
