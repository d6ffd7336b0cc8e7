"""Writers: the same column tables that read a report also write it.

Why: the sandbox produces every provider file through these functions, so the reader and the writer
cannot drift apart (DESIGN.md). Values are Python objects (``int`` minor units, ``Stamp`` or aware
``datetime``, ``Decimal``); a ``str`` is written as given, which is how the sandbox injects bad cells.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from ..clock import Stamp
from ..money import format_major
from .engine import TRAILER, Column, Kind, Layout

__all__ = ["format_cell", "format_timestamp", "write_csv", "write_xlsx"]

XLSX_CREATED = datetime(2000, 1, 1)  # fixed document date so identical content gives identical bytes


def format_timestamp(value: Stamp | datetime, style: str = "iso", default_offset_minutes: int = 480) -> str:
    """``iso``: 2018-12-25T10:00:00+08:00; ``iso_space``: with a space; ``plain``: no offset, in the
    default offset (``yyyy-MM-dd HH:mm:ss``, UTC+8 unless stated). Fractions only when non-zero."""
    if isinstance(value, Stamp):
        local = value.local
    else:
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        local = value
    if style == "plain":
        local = local.astimezone(UTC).astimezone(timezone(timedelta(minutes=default_offset_minutes)))
    text = local.strftime("%Y-%m-%d %H:%M:%S" if style in ("plain", "iso_space") else "%Y-%m-%dT%H:%M:%S")
    if local.microsecond:
        frac = f"{local.microsecond:06d}"
        text += "." + (frac[:3] if frac.endswith("000") else frac)
    if style == "plain":
        return text
    off = local.utcoffset() or timedelta(0)
    minutes = int(off.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _currency_of(col: Column, row: Mapping[str, Any], meta: Mapping[str, str]) -> str | None:
    for ref in col.currency:
        if ref.startswith("="):
            return ref[1:]
        if ref.startswith("@"):
            if meta.get(ref[1:]):
                return meta[ref[1:]]
            continue
        val = row.get(ref)
        if isinstance(val, str) and val:
            return val
    return None


def format_cell(col: Column | None, value: Any, row: Mapping[str, Any], *, unit: str = "major",
                meta: Mapping[str, str] | None = None, ts_style: str = "iso",
                default_offset_minutes: int = 480) -> str:
    """Render one cell exactly as the provider would."""
    if value is None:
        return ""
    if isinstance(value, str) or col is None:
        return str(value)
    kind = col.kind
    if kind is Kind.AMOUNT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{col.name}: amounts are int minor units, got {type(value).__name__}")
        if (col.unit or unit) == "minor":
            return str(value)
        currency = _currency_of(col, row, meta or {})
        if currency is None:
            raise ValueError(f"{col.name}: no currency to format {value} with")
        return format_major(value, currency)
    if kind is Kind.TIMESTAMP:
        if isinstance(value, date) and not isinstance(value, datetime):
            return value.isoformat()
        return format_timestamp(value, ts_style, default_offset_minutes)
    if kind is Kind.DATE:
        return value.isoformat() if isinstance(value, date) else str(value)
    if kind is Kind.COMPACT_DATE:
        return value.strftime("%Y%m%d") if isinstance(value, date) else str(value)
    if kind is Kind.DECIMAL:
        return format(Decimal(value), "f")
    if kind is Kind.INTEGER:
        return str(int(value))
    return str(value)


def render_rows(layout: Layout, header: Sequence[str], rows: Sequence[Mapping[str, Any]], *,
                meta: Mapping[str, str] | None = None, ts_style: str = "iso") -> list[list[str]]:
    cols = {c.name: c for c in layout.columns}
    return [
        [
            format_cell(cols.get(h), row.get(h), row, unit=layout.amount_unit, meta=meta, ts_style=ts_style,
                        default_offset_minutes=layout.default_offset_minutes)
            for h in header
        ]
        for row in rows
    ]


def write_csv(header: Sequence[str], cells: Sequence[Sequence[str]], *, trailer: bool = True,
              newline: str = "\n", bom: bool = False, delimiter: str = ",",
              preamble: Sequence[Sequence[str]] = ()) -> bytes:
    """RFC 4180 (quotes only where needed), UTF-8; ``<END>`` last when ``trailer``."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, quotechar='"', lineterminator=newline, quoting=csv.QUOTE_MINIMAL)
    for line in preamble:
        if line:
            w.writerow(line)
        else:
            buf.write(newline)
    for row in (header, *cells):
        if "\r" in newline or "\r" not in "".join(row):
            w.writerow(row)
            continue
        # csv quotes a cell only for the characters of its own line terminator: a lone CR must be quoted
        # too, or readers see a broken line (DuckDB refuses the file).
        one = io.StringIO()
        csv.writer(one, delimiter=delimiter, quotechar='"', lineterminator="\r\n",
                   quoting=csv.QUOTE_MINIMAL).writerow(row)
        buf.write(one.getvalue()[:-2] + newline)
    if trailer:
        buf.write(TRAILER + newline)
    data = buf.getvalue().encode("utf-8")
    return (b"\xef\xbb\xbf" + data) if bom else data


def write_xlsx(header: Sequence[str], cells: Sequence[Sequence[str]], *, trailer: bool = True,
               sheet: str = "Sheet1") -> bytes:
    """One sheet, every cell a string (as the ``String(16)`` amounts are documented), fixed dates."""
    import xlsxwriter

    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True, "strings_to_numbers": False,
                                   "strings_to_formulas": False, "strings_to_urls": False})
    wb.set_properties({"created": XLSX_CREATED})
    ws = wb.add_worksheet(sheet)
    for j, name in enumerate(header):
        ws.write_string(0, j, name)
    for i, row in enumerate(cells, start=1):
        for j, text in enumerate(row):
            if text != "":
                ws.write_string(i, j, text)
    if trailer:
        ws.write_string(len(cells) + 1, 0, TRAILER)
    wb.close()
    return buf.getvalue()
