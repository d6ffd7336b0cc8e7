"""Decode one byte range of a GBK bill's table to UTF-8, TABs dropped: in this process or in a child.

Why a child process: Python's GB18030 codec holds the GIL (~0.75 s for a 200 MB 业务明细), so the table is cut in
two at a line break and a second process decodes one half while the parser decodes the other. This file is
stdlib only and is run by path (``python -S gbk_range.py ...``), so the child starts in ~20 ms without
importing alirecon, DuckDB or pyarrow. It reports only whether the range is plain table text; anything else (a
bad byte, an over-long line, a line starting with '#') sends the caller back to its one-pass decoder, which
names the exact line and column.
"""

from __future__ import annotations

import json
import sys
from typing import BinaryIO

CHUNK = 8 * 1024 * 1024


def decode_range(src: BinaryIO, start: int, end: int, out: BinaryIO, max_line_bytes: int) -> dict[str, int | bool]:
    """Decode ``[start, end)`` of ``src`` (a line start to a line end or the end of the file) into ``out``.

    Returns ``ok`` (false: a byte that is not GB18030, a line over ``max_line_bytes``, or a line starting with
    '#', which would end the table), the UTF-8 ``size`` written, the ``newlines`` and the ``last`` byte."""
    size = newlines = last = 0
    pos = start
    src.seek(start)
    carry = b""
    while pos < end:
        chunk = src.read(min(CHUNK, end - pos))
        if not chunk:
            break
        pos += len(chunk)
        buf = carry + chunk if carry else chunk
        cut = len(buf) if pos >= end else buf.rfind(b"\n") + 1
        if cut == 0:
            carry = buf
            if len(carry) > max_line_bytes:
                return {"ok": False}
            continue
        block, carry = buf[:cut], buf[cut:]
        table = block.replace(b"\t", b"")
        if table.startswith(b"#") or b"\n#" in table:
            return {"ok": False}
        try:
            data = table.decode("gb18030").encode("utf-8")
        except UnicodeDecodeError:
            return {"ok": False}
        out.write(data)
        size += len(data)
        newlines += block.count(b"\n")
        if data:
            last = data[-1]
    return {"ok": not carry, "size": size, "newlines": newlines, "last": last}


def main(argv: list[str]) -> None:
    """``gbk_range.py SRC START END OUT MAX_LINE_BYTES``: decode into OUT, print the result as JSON."""
    path, start, end, out_path, max_line_bytes = argv
    with open(path, "rb") as src, open(out_path, "wb") as out:
        result = decode_range(src, int(start), int(end), out, int(max_line_bytes))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
