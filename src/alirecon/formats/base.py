"""Report descriptions and the two drivers that parse them.

A family module (``alipayplus``, ``antom``, ...) declares each report as a ``TableReport`` (header +
records + optional ``<END>``, csv or xlsx) or a ``SectionedReport`` (small leading sections, then one
table of records), in the spirit of beangulp importers: each report can *identify* a file and
*extract* it, and ``registry`` picks the report.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from .. import errors
from .engine import (
    TRAILER,
    BodyResult,
    Column,
    Compiled,
    Declared,
    Layout,
    ParsedFile,
    ParseOptions,
    SourceFile,
    _Scan,
    _sql_str,
    _tmp_name,
    compile_layout,
    convert_rows,
    new_connection,
    read_csv_body,
    read_head_lines,
    read_trailer,
    read_xlsx_rows,
    resolve_header,
    rule_problems,
    scalar,
    sort_problems,
    split_csv_line,
)

__all__ = ["ReportFormat", "Section", "SectionedReport", "TableReport", "Variant"]

DeclareFn = Callable[[ParsedFile, duckdb.DuckDBPyConnection], list[Declared]]


@dataclass(frozen=True)
class Variant:
    """One schema generation of a report, recognised by marker columns in the header."""

    name: str
    layout: Layout
    markers: tuple[str, ...] = ()  # all must be present (case-insensitive)
    excludes: tuple[str, ...] = ()  # none may be present

    def matches(self, header: Sequence[str]) -> bool:
        names = {h.lower() for h in header}
        return all(m.lower() in names for m in self.markers) and not any(
            x.lower() in names for x in self.excludes
        )


class ReportFormat:
    """What the registry needs from a report."""

    family: str
    report: str
    name_re: re.Pattern[str]
    extensions: tuple[str, ...] = (".csv",)

    def name_meta(self, name: str) -> dict[str, str] | None:
        m = self.name_re.fullmatch(name)
        if not m:
            return None
        return {k: v for k, v in m.groupdict().items() if v is not None}

    def identify(self, name: str, head: Sequence[Sequence[str]]) -> int:
        """Score how well ``name`` and the first lines fit: 0 = not this report."""
        raise NotImplementedError

    def parse(self, path: Path, con: duckdb.DuckDBPyConnection | None = None,
              options: ParseOptions | None = None, *, name: str | None = None) -> ParsedFile:
        raise NotImplementedError

    def name_checks(self) -> Mapping[str, str]:
        """File-name metadata key -> line field that must carry the same value (AP-I8, AN-9)."""
        return {}

    def _start(self, path: Path, con: duckdb.DuckDBPyConnection | None, options: ParseOptions | None,
               name: str | None) -> tuple[ParsedFile, duckdb.DuckDBPyConnection, ParseOptions]:
        """The empty result every parse starts from (file-name metadata filled in)."""
        options = options or ParseOptions()
        con = con or new_connection(exponents=options.exponents)
        path = Path(path)
        parsed = ParsedFile(path=path, name=name or path.name, sha256="", size=0, family=self.family,
                            report=self.report, con=con)
        parsed.meta = self.name_meta(parsed.name) or {}
        return parsed, con, options

    def key(self) -> str:
        return f"{self.family}.{self.report}"


def _layout_for(report: ReportFormat, layout: Layout, options: ParseOptions, *, body: bool = False) -> Layout:
    """The layout with the user's corrections. Only the body of a report whose figures are not derived from
    its lines (no ``declare``) is narrowed to ``options.fields``."""
    narrow = body and getattr(report, "declare", None) is None
    return layout.with_options(
        amount_unit=options.amount_units.get(report.key()),
        aliases=options.aliases.get(report.key()),
        keep_extras=options.keep_extras,
        fields=options.fields if narrow else None,
    )


def _finish(parsed: ParsedFile, con: duckdb.DuckDBPyConnection, body: BodyResult, compiled: Compiled,
            raw_source: Callable[[], str], options: ParseOptions, declare: DeclareFn | None) -> ParsedFile:
    parsed.body = body
    parsed.row_count = body.rows
    parsed.track(body.table)
    parsed.problems.extend(body.problems)
    if scalar(con, f"SELECT count(*) FILTER (WHERE __bad IS NOT NULL OR __warn IS NOT NULL) FROM {body.table}"):
        parsed.problems.extend(rule_problems(con, body, compiled, raw_source, name=parsed.name,
                                             limit=options.max_problems))
    if declare is not None:
        parsed.declared = declare(parsed, con)
    parsed.problems = sort_problems(parsed.problems, options.max_problems)
    return parsed


def _header_problems(parsed: ParsedFile, layout: Layout, header: Sequence[str], line_no: int) -> None:
    _, probs = resolve_header(layout, header)
    for code, col, idx in probs:
        cls = errors.problem_class(code)
        if code == "missing_column":
            msg = f"required column {col!r} is not in the header"
        elif code == "duplicate_column":
            msg = f"column {col!r} appears more than once in the header"
        else:
            msg = "a header cell is empty"
        parsed.problems.append(cls(msg, file=parsed.name, line=line_no, column=col or None,
                                   column_index=idx + 1 if idx >= 0 else None,
                                   expected="the documented header", found=col))


def _empty(parsed: ParsedFile) -> ParsedFile:
    parsed.problems.append(errors.EmptyFile("the file has no header line", file=parsed.name, line=1,
                                            expected="a header line"))
    return parsed


@dataclass(frozen=True)
class TableReport(ReportFormat):
    """A header line, one record per line, then (``trailer``) ``<END>``: Antom's layout."""

    family: str
    report: str
    name_re: re.Pattern[str]
    variants: tuple[Variant, ...]
    trailer: str = "required"  # required | optional | none
    xlsx_trailer: str = "optional"  # antom.md gap 4: whether <END> is a row in xlsx is unknown
    extensions: tuple[str, ...] = (".csv", ".xlsx")
    declare: DeclareFn | None = None
    name_fields: Mapping[str, str] = field(default_factory=dict)
    name_bonus_only: bool = False  # identify by header alone is not enough (generic headers)
    delimiter: str = ","  # CSV only; user ledgers may use ';' (providers use ',')

    def name_checks(self) -> Mapping[str, str]:
        return self.name_fields

    def variant_for(self, header: Sequence[str]) -> Variant | None:
        for v in self.variants:
            if v.matches(header):
                return v
        return None

    def identify(self, name: str, head: Sequence[Sequence[str]]) -> int:
        if not any(name.lower().endswith(e) for e in self.extensions):
            return 0
        by_name = self.name_meta(name) is not None
        by_header = bool(head) and self.variant_for(head[0]) is not None
        if by_header:
            return 3 if by_name else (0 if self.name_bonus_only else 2)
        return 1 if by_name else 0

    def parse(self, path: Path, con: duckdb.DuckDBPyConnection | None = None,
              options: ParseOptions | None = None, *, name: str | None = None) -> ParsedFile:
        parsed, con, options = self._start(path, con, options, name)
        path, name = parsed.path, parsed.name
        if path.suffix.lower() == ".xlsx":
            return self._parse_xlsx(parsed, con, options)
        scan = _Scan(path)
        scan.start()
        head = read_head_lines(path, max_lines=1, max_line_bytes=options.max_line_bytes, name=name,
                               problems=parsed.problems)
        if not head or not head[0].text.strip():
            facts = scan.join_result()
            parsed.sha256, parsed.size = facts.sha256, facts.size
            return parsed if parsed.problems else _empty(parsed)
        try:
            header = split_csv_line(head[0].text, self.delimiter)
        except Exception as exc:
            facts = scan.join_result()
            parsed.sha256, parsed.size = facts.sha256, facts.size
            parsed.problems.append(errors.BadQuoting(f"header: {exc}", file=name, line=1))
            return parsed
        parsed.header = header
        variant = self.variant_for(header) or self.variants[0]
        parsed.variant = variant.name
        layout = _layout_for(self, variant.layout, options, body=True)
        _header_problems(parsed, layout, header, 1)
        size = os.path.getsize(path)
        trailer = read_trailer(path, SourceFile(path, size=size, ends_with_newline=_ends_with_newline(path, size)),
                               name=name, required=self.trailer == "required", last_line_no=None)
        if trailer.problems:
            for p in trailer.problems:
                p.line = _last_line_no(path)
            parsed.problems.extend(trailer.problems)
        compiled = compile_layout(layout, header, parsed.meta)
        body, facts = read_csv_body(con, path, name=name, header=header, compiled=compiled, header_lines=1,
                                    facts_thread=scan, trailer_offset=trailer.line_offset, options=options,
                                    delimiter=self.delimiter)
        parsed.sha256, parsed.size = facts.sha256, facts.size

        def raw_source() -> str:
            return _raw_csv_table(con, path, len(header), 1, options, parsed, self.delimiter)

        return _finish(parsed, con, body, compiled, raw_source, options, self.declare)

    def _parse_xlsx(self, parsed: ParsedFile, con: duckdb.DuckDBPyConnection, options: ParseOptions) -> ParsedFile:
        facts = SourceFile.scan(parsed.path)
        parsed.sha256, parsed.size = facts.sha256, facts.size
        rows = read_xlsx_rows(parsed.path, name=parsed.name, problems=parsed.problems)
        if parsed.problems:
            return parsed
        if not rows:
            return _empty(parsed)
        header_line, header_cells = rows[0]
        header = [c or "" for c in header_cells]
        parsed.header = header
        variant = self.variant_for(header) or self.variants[0]
        parsed.variant = variant.name
        layout = _layout_for(self, variant.layout, options, body=True)
        _header_problems(parsed, layout, header, header_line)
        data = rows[1:]
        if data and (data[-1][1][0] or "").strip() == TRAILER:
            data = data[:-1]
        elif self.xlsx_trailer == "required":
            parsed.problems.append(errors.MissingTrailer("the last row is not <END>", file=parsed.name,
                                                         line=rows[-1][0], expected=TRAILER))
        for line_no, cells in data:
            if (cells[0] or "").strip() == TRAILER:
                parsed.problems.append(errors.ContentAfterTrailer("<END> is followed by more rows",
                                                                  file=parsed.name, line=line_no))
            if len(cells) > len(header):
                parsed.problems.append(errors.WrongColumnCount(
                    f"{len(cells)} cells where the header has {len(header)}", file=parsed.name, line=line_no,
                    column_index=len(header) + 1, expected=f"{len(header)} cells", found=f"{len(cells)} cells"))
        # an early <END> row is reported above, not read as a record (as in CSV)
        data = [(line_no, cells) for line_no, cells in data if (cells[0] or "").strip() != TRAILER]
        compiled = compile_layout(layout, header, parsed.meta)
        body = convert_rows(con, data, compiled, len(header))

        def raw_source() -> str:
            return _raw_rows_table(con, data, len(header), parsed)

        return _finish(parsed, con, body, compiled, raw_source, options, self.declare)


def _ends_with_newline(path: Path, size: int) -> bool:
    if size == 0:
        return True
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1) == b"\n"


def _last_line_no(path: Path) -> int:
    from .engine import count_lines

    n = count_lines(path)
    return n if _ends_with_newline(path, os.path.getsize(path)) else n + 1


def _raw_csv_table(con: duckdb.DuckDBPyConnection, path: Path, ncols: int, header_lines: int,
                   options: ParseOptions, parsed: ParsedFile, delimiter: str = ",") -> str:
    """The file's cells as text with the same row order as the first pass (rowid-aligned)."""
    table = _tmp_name("raw")
    rej, rejscan = _tmp_name("rej"), _tmp_name("rejscan")
    cols = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(ncols))
    buffer = max(16 * 1024 * 1024, 2 * options.max_line_bytes + 1)
    con.execute(
        f"CREATE TEMP TABLE {table} AS SELECT * FROM read_csv({_sql_str(str(path))}, header=false, "
        f"skip={header_lines}, auto_detect=false, columns={{{cols}}}, delim={_sql_str(delimiter)}, "
        f"quote='\"', escape='\"', "
        f"strict_mode=true, store_rejects=true, rejects_table={_sql_str(rej)}, rejects_scan={_sql_str(rejscan)}, "
        f"max_line_size={options.max_line_bytes}, buffer_size={buffer}, encoding='utf-8')"
    )
    con.execute(f"DROP TABLE IF EXISTS {rej}; DROP TABLE IF EXISTS {rejscan}")
    parsed.track(table)
    return table


def _raw_rows_table(con: duckdb.DuckDBPyConnection, rows: Sequence[tuple[int, Sequence[str | None]]],
                    ncols: int, parsed: ParsedFile) -> str:
    import pyarrow as pa

    table = _tmp_name("raw")
    data = {f"c{i}": pa.array([r[1][i] if i < len(r[1]) else None for r in rows], pa.string())
            for i in range(ncols)}
    data["__line"] = pa.array([r[0] for r in rows], pa.int64())
    src = table + "_src"
    con.register(src, pa.table(data))
    con.execute(f"CREATE TEMP TABLE {table} AS SELECT * EXCLUDE (__line) FROM {src} ORDER BY __line")
    con.unregister(src)
    parsed.track(table)
    return table


# ---------------------------------------------------------------------------------------------
# Sectioned files (Alipay+: a summary section, then the detail records)


@dataclass(frozen=True)
class Section:
    """One section of a sectioned file. ``bulk`` marks the (last) section of records."""

    name: str
    layout: Layout
    bulk: bool = False
    required: bool = True
    max_rows: int | None = 1

    def is_header(self, cells: Sequence[str], layout: Layout | None = None, *, strict: bool = False) -> bool:
        """A line opens this section when it names the section's required columns (alipayplus.md 5).

        ``layout``: this section's layout with the user's header aliases applied (a required column may
        appear under an alias)."""
        layout = layout or self.layout
        known = {c.name.lower() for c in layout.columns} | {a.lower() for c in layout.columns for a in c.aliases}
        names = [c.strip().lower() for c in cells if c.strip()]
        needed = [{c.name.lower(), *(a.lower() for a in c.aliases)} for c in layout.columns if c.required]
        # Every required column present and most cells known: a provider's extra column (kept as an extra)
        # must not turn a header into a data row.
        # ``strict`` (identifying an unknown file): every cell must be known, so look-alike headers of
        # sibling reports stay apart.
        n_known = sum(n in known for n in names)
        enough = n_known == len(names) if strict else 2 * n_known > len(names)
        return bool(names) and enough and all(not alts.isdisjoint(names) for alts in needed)


@dataclass(frozen=True)
class SectionedReport(ReportFormat):
    """Leading small sections (each a header line + value lines), then a bulk section of records.

    The physical layout of Alipay+ sections is not documented (alipayplus.md 5): a line whose cells are
    all known column names opens a section, blank lines are skipped, a lone ``<END>`` may end the file.
    Summary sections are assumed to come before the records [inferred]; a file that puts them after
    gets precise wrong-column-count errors rather than silently wrong totals.
    """

    family: str
    report: str
    name_re: re.Pattern[str]
    sections: tuple[Section, ...]
    extensions: tuple[str, ...] = (".csv",)
    declare: DeclareFn | None = None
    name_fields: Mapping[str, str] = field(default_factory=dict)
    max_head_lines: int = 200

    def name_checks(self) -> Mapping[str, str]:
        return self.name_fields

    def _section_for(self, cells: Sequence[str], options: ParseOptions | None = None, *,
                     strict: bool = False) -> Section | None:
        for s in self.sections:
            if s.is_header(cells, _layout_for(self, s.layout, options) if options else None, strict=strict):
                return s
        return None

    def identify(self, name: str, head: Sequence[Sequence[str]]) -> int:
        if not any(name.lower().endswith(e) for e in self.extensions):
            return 0
        by_name = self.name_meta(name) is not None
        first = next((cells for cells in head if any(c.strip() for c in cells)), None)
        by_header = (first is not None and first[0:1] != [""]
                     and self._section_for(first, strict=True) is self.sections[0])
        if by_header:
            return 3 if by_name else 2
        return 1 if by_name else 0

    def parse(self, path: Path, con: duckdb.DuckDBPyConnection | None = None,
              options: ParseOptions | None = None, *, name: str | None = None) -> ParsedFile:
        parsed, con, options = self._start(path, con, options, name)
        path, name = parsed.path, parsed.name
        scan = _Scan(path)
        scan.start()
        head = read_head_lines(path, max_lines=self.max_head_lines, max_line_bytes=options.max_line_bytes,
                               name=name, problems=parsed.problems)
        if not any(h.text.strip() for h in head):
            facts = scan.join_result()
            parsed.sha256, parsed.size = facts.sha256, facts.size
            return parsed if parsed.problems else _empty(parsed)
        small: dict[str, tuple[int, list[str], list[tuple[int, list[str | None]]]]] = {}
        bulk = next(s for s in self.sections if s.bulk)
        current: str | None = None
        bulk_header: tuple[int, list[str]] | None = None
        for h in head:
            if not h.text.strip() or h.text.strip().rstrip(",") == TRAILER:
                continue
            try:
                cells = split_csv_line(h.text)
            except Exception as exc:
                parsed.problems.append(errors.BadQuoting(str(exc), file=name, line=h.line_no))
                break
            section = self._section_for(cells, options)
            if section is not None:
                if section.name in small or (section.bulk and bulk_header is not None):
                    parsed.problems.append(errors.BadSection(f"section {section.name!r} appears twice",
                                                             file=name, line=h.line_no))
                    break
                if section.bulk:
                    bulk_header = (h.line_no, cells)
                    break
                small[section.name] = (h.line_no, cells, [])
                current = section.name
                continue
            if current is None:
                parsed.problems.append(errors.BadSection(
                    "a record before any section header", file=name, line=h.line_no,
                    expected="a header line naming the section's columns", found=h.text[:80]))
                break
            small[current][2].append((h.line_no, list[str | None](cells)))
        for s in self.sections:
            if s.bulk:
                continue
            if s.name not in small:
                if s.required:
                    parsed.problems.append(errors.BadSection(f"the {s.name} section is missing", file=name,
                                                             line=1, expected=f"a {s.name} section"))
                continue
            hline, hcells, rows = small[s.name]
            layout = _layout_for(self, s.layout, options)
            _header_problems(parsed, layout, hcells, hline)
            if s.max_rows is not None and len(rows) > s.max_rows:
                parsed.problems.append(errors.BadSection(
                    f"the {s.name} section has {len(rows)} rows, expected at most {s.max_rows}",
                    file=name, line=rows[s.max_rows][0]))
            for line_no, row_cells in rows:
                if len(row_cells) != len(hcells):
                    parsed.problems.append(errors.WrongColumnCount(
                        f"{len(row_cells)} cells where the {s.name} header has {len(hcells)}", file=name,
                        line=line_no, expected=f"{len(hcells)} cells", found=f"{len(row_cells)} cells"))
            compiled = compile_layout(layout, hcells, parsed.meta, has_extras=False)
            res = convert_rows(con, rows, compiled, len(hcells))
            parsed.track(res.table)

            def section_raw(rows: list[tuple[int, list[str | None]]] = rows, n: int = len(hcells)) -> str:
                return _raw_rows_table(con, rows, n, parsed)

            probs = rule_problems(con, res, compiled, section_raw, name=name, limit=options.max_problems)
            parsed.problems.extend(probs)
            cur = con.execute(f"SELECT * EXCLUDE (__bad, __warn) FROM {res.table} ORDER BY __line")
            names = [d[0] for d in cur.description]
            parsed.sections[s.name] = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        if bulk_header is None:
            facts = scan.join_result()
            parsed.sha256, parsed.size = facts.sha256, facts.size
            if bulk.required:
                parsed.problems.append(errors.BadSection(f"the {bulk.name} section header is missing", file=name,
                                                         line=None, expected=f"a {bulk.name} header line"))
            if self.declare is not None and parsed.ok:
                parsed.declared = self.declare(parsed, con)
            parsed.problems = sort_problems(parsed.problems, options.max_problems)
            return parsed
        hline, header = bulk_header
        parsed.header = header
        layout = _layout_for(self, bulk.layout, options, body=True)
        _header_problems(parsed, layout, header, hline)
        size = os.path.getsize(path)
        trailer = read_trailer(path, SourceFile(path, size=size, ends_with_newline=_ends_with_newline(path, size)),
                               name=name, required=False, last_line_no=None)
        compiled = compile_layout(layout, header, parsed.meta)
        body, facts = read_csv_body(con, path, name=name, header=header, compiled=compiled, header_lines=hline,
                                    facts_thread=scan, trailer_offset=trailer.line_offset, options=options)
        parsed.sha256, parsed.size = facts.sha256, facts.size

        def raw_source() -> str:
            return _raw_csv_table(con, path, len(header), hline, options, parsed)

        return _finish(parsed, con, body, compiled, raw_source, options, self.declare)


def column_names(columns: Sequence[Column]) -> list[str]:
    return [c.name for c in columns]


def rows_of(con: duckdb.DuckDBPyConnection, parsed: ParsedFile, select: str) -> list[dict[str, Any]]:
    """Small helper for ``declare`` functions: rows of the body table as dicts, in line order."""
    assert parsed.body is not None
    cur = con.execute(f"SELECT {select}, {parsed.body.line_sql} AS __line_no FROM {parsed.body.table} ORDER BY rowid")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
