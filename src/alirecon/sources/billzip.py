"""Reading and writing the zip files Alipay China delivers its bills in (alipay-cn.md section 4).

Why our own reader around ``zipfile``:
- Entry names are GBK bytes with the UTF-8 flag (general-purpose bit 11, 0x800) clear; ``zipfile`` decodes
  such names as cp437 (alipay-cn.md 4). We recover the stored bytes and decode them ourselves, per entry, so
  a name that is not GBK is a typed error for that entry, not a crash of the whole archive.
- A zip is untrusted input (it comes from a URL): before anything is inflated the central directory is
  checked for names that could escape a folder (``..``, absolute paths, drive letters), links and special
  files, directories used as files, duplicates, encryption and too many entries; while inflating, the bytes
  actually produced are counted against the size and ratio limits, so declared sizes are never trusted
  (a zip bomb is stopped after at most one chunk past the limit).
- ``write_bill_zip`` produces the same kind of archive deterministically (fixed dates, fixed attributes) so
  the sandbox serves byte-identical zips for the same bills.
"""

from __future__ import annotations

import io
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from ..errors import FormatError

__all__ = [
    "BillEntry",
    "BillZipError",
    "CorruptZip",
    "DuplicateZipEntry",
    "EncryptedZipEntry",
    "UnsafeZipEntry",
    "ZipLimits",
    "ZipTooLarge",
    "extract_bill_zip",
    "write_bill_zip",
]

UTF8_FLAG = 0x800  # general-purpose bit 11: the name is UTF-8 (APPNOTE 4.4.4)
ENCRYPTED_FLAG = 0x1
FIXED_DATE = (2000, 1, 1, 0, 0, 0)  # any fixed date: the sandbox's zips must not depend on when they were made
_CHUNK = 64 * 1024  # compressed bytes fed, and the most output taken, per step
_ALLOWED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_UNIX = 3  # ZipInfo.create_system of an archive made on Unix: external_attr's high 16 bits are st_mode


class BillZipError(FormatError):
    """A bill zip that cannot be used safely; ``entry`` names the offending entry when there is one."""

    code: ClassVar[str] = "bad_zip"

    def __init__(self, message: str, *, file: str, entry: str | None = None, expected: str | None = None,
                 found: str | None = None) -> None:
        self.entry = entry
        text = f"entry {entry!r}: {message}" if entry is not None else message
        super().__init__(text, file=file, expected=expected, found=found)


class CorruptZip(BillZipError):
    """The bytes are not a complete zip: truncated, damaged, a CRC that does not match."""

    code = "corrupt_zip"


class UnsafeZipEntry(BillZipError):
    """A name or type that could write outside the target folder (traversal, absolute, link, device)."""

    code = "unsafe_zip_entry"


class ZipTooLarge(BillZipError):
    """Too many entries, an entry or a total larger than the limits, or a compression ratio of a zip bomb."""

    code = "zip_too_large"


class EncryptedZipEntry(BillZipError):
    """An encrypted entry: Alipay's bills are never encrypted, and we hold no password."""

    code = "encrypted_zip_entry"


class DuplicateZipEntry(BillZipError):
    """Two entries with the same name (or names equal but for case): which one is the bill?"""

    code = "duplicate_zip_entry"


@dataclass(frozen=True)
class ZipLimits:
    """Refusal thresholds. Real bill zips hold 2-4 CSV files (alipay-cn.md 4); a large monthly bill can be
    hundreds of MB of GBK text that deflates 5-20x. Bombs reach ratios in the thousands."""

    max_entries: int = 100
    max_entry_bytes: int = 1024 * 1024 * 1024
    max_total_bytes: int = 2 * 1024 * 1024 * 1024
    max_ratio: float = 200.0
    # the ratio is judged only once an entry has produced this much: tiny files compress arbitrarily well
    ratio_grace_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class BillEntry:
    """One file of a bill zip: its decoded name (a safe relative path), the stored name bytes, its content."""

    name: str
    raw_name: bytes
    data: bytes
    utf8_flag: bool  # the name was flagged UTF-8 (else decoded as GBK)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def basename(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def __repr__(self) -> str:
        return f"BillEntry(name={self.name!r}, size={self.size})"


def _stored_name(info: zipfile.ZipInfo) -> bytes:
    """The name bytes as stored: ``zipfile`` decoded them as UTF-8 (flag set) or cp437 (a bijection)."""
    if info.flag_bits & UTF8_FLAG:
        return info.orig_filename.encode("utf-8")
    return info.orig_filename.encode("cp437")


def _decode_name(raw: bytes, utf8: bool, file: str) -> str:
    # GB18030 is a superset of GBK that decodes every GBK name identically (alipay-cn.md 5)
    encoding = "utf-8" if utf8 else "gb18030"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        shown = raw.decode(encoding, "replace")
        raise UnsafeZipEntry(f"the name is not valid {'UTF-8' if utf8 else 'GBK'}", file=file, entry=shown,
                             found=repr(raw)[:120]) from None


def _check_name(name: str, file: str) -> str:
    """``name`` as a relative path of plain components (``/``-separated); refuses anything that could escape."""
    why = None
    parts = name.replace("\\", "/").split("/")
    if not name:
        why = "an empty name"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        why = "a control character or NUL"
    elif name.startswith(("/", "\\")):
        why = "an absolute path"
    elif len(name) >= 2 and name[1] == ":" and name[0].isascii() and name[0].isalpha():
        why = "a drive letter"
    elif "\\" in name:
        why = "a backslash (a Windows path separator)"
    elif ".." in parts:
        why = "a parent-directory component '..'"
    elif any(p in ("", ".") for p in parts[:-1]):
        why = "an empty or '.' path component"
    if why:
        raise UnsafeZipEntry(f"refused a name with {why}", file=file, entry=name, expected="a relative file name")
    return name


def _check_type(info: zipfile.ZipInfo, name: str, file: str) -> None:
    if info.create_system != _UNIX:
        return  # only Unix-made archives record a file type (st_mode in the high 16 bits)
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise UnsafeZipEntry("refused a symbolic link", file=file, entry=name, expected="a regular file")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeZipEntry(f"refused a special file (mode {oct(mode)})", file=file, entry=name,
                             expected="a regular file")
    if kind == stat.S_IFDIR and not info.filename.endswith("/"):
        raise UnsafeZipEntry("a directory stored under a file name", file=file, entry=name)


def _inflate(data: bytes, info: zipfile.ZipInfo, raw_name: bytes, name: str, file: str, limits: ZipLimits,
             total_before: int) -> bytes:
    """The entry's bytes, inflated here (not by ``zipfile``) so that the bytes produced and the compressed bytes
    consumed so far are known at every step: the limits and the ratio are judged on them, never on declared
    sizes, and a bomb is stopped within one output block."""
    offset = info.header_offset
    header = data[offset:offset + 30]
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise CorruptZip("its local header is missing", file=file, entry=name)
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    if data[offset + 30:offset + 30 + name_length] != raw_name:
        raise CorruptZip("its local header names another file", file=file, entry=name)
    start = offset + 30 + name_length + extra_length
    if start + info.compress_size > len(data):
        raise CorruptZip("its data is cut short", file=file, entry=name)
    compressed = memoryview(data)[start:start + info.compress_size]
    out = io.BytesIO()
    produced = consumed = 0

    def take(block: bytes) -> None:
        nonlocal produced
        produced += len(block)
        if produced > limits.max_entry_bytes:
            raise ZipTooLarge(f"inflates to more than {limits.max_entry_bytes} bytes", file=file, entry=name,
                              expected=f"<= {limits.max_entry_bytes} bytes")
        if total_before + produced > limits.max_total_bytes:
            raise ZipTooLarge(f"the entries inflate to more than {limits.max_total_bytes} bytes in total",
                              file=file, entry=name, expected=f"<= {limits.max_total_bytes} bytes")
        if produced > limits.ratio_grace_bytes and produced / max(consumed, 1) > limits.max_ratio:
            raise ZipTooLarge(f"compression ratio above {limits.max_ratio:g} (a zip bomb?): {produced} bytes "
                              f"from {consumed}", file=file, entry=name, expected=f"ratio <= {limits.max_ratio:g}")
        out.write(block)

    if info.compress_type == zipfile.ZIP_STORED:
        consumed = len(compressed)
        take(bytes(compressed))
    else:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as in zip entries
        try:
            for at in range(0, len(compressed), _CHUNK):
                piece: bytes = bytes(compressed[at:at + _CHUNK])
                fed = at + len(piece)
                while piece and not inflater.eof:
                    block = inflater.decompress(piece, _CHUNK)
                    piece = inflater.unconsumed_tail
                    consumed = fed - len(piece)
                    take(block)
            take(inflater.flush())
        except zlib.error as exc:
            raise CorruptZip(f"its deflated data is damaged: {exc}", file=file, entry=name) from None
        if not inflater.eof:
            raise CorruptZip("its deflated data ends early", file=file, entry=name)
    content = out.getvalue()
    if zlib.crc32(content) != info.CRC:
        raise CorruptZip("its CRC-32 does not match its content", file=file, entry=name)
    return content


def extract_bill_zip(data: bytes, source_name: str, *, limits: ZipLimits | None = None) -> list[BillEntry]:
    """The files of a bill zip, in archive order; directories are skipped. Every refusal is a ``BillZipError``
    naming ``source_name`` and the entry. Find bills by name (``业务明细`` and not ``汇总``), never by position."""
    limits = limits or ZipLimits()
    file = source_name
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as exc:
        raise CorruptZip(f"not a readable zip: {exc}", file=file, expected="a complete zip archive") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise ZipTooLarge(f"{len(infos)} entries, more than the limit of {limits.max_entries}", file=file,
                              expected=f"<= {limits.max_entries} entries")
        planned: list[tuple[zipfile.ZipInfo, str, bytes, bool]] = []
        seen: dict[str, str] = {}
        directories: set[str] = set()
        for info in infos:
            utf8 = bool(info.flag_bits & UTF8_FLAG)
            raw = _stored_name(info)
            name = _check_name(_decode_name(raw, utf8, file), file)
            key = unicodedata.normalize("NFC", name.rstrip("/")).casefold()
            if key in seen:
                raise DuplicateZipEntry(f"the name repeats entry {seen[key]!r}", file=file, entry=name)
            seen[key] = name
            if info.flag_bits & ENCRYPTED_FLAG:
                raise EncryptedZipEntry("refused an encrypted entry", file=file, entry=name)
            _check_type(info, name, file)
            if name.endswith("/"):
                if info.file_size:  # (compressed bytes of a directory are never read)
                    raise UnsafeZipEntry("a directory entry with content", file=file, entry=name)
                directories.add(key)
                continue
            if info.compress_type not in _ALLOWED_METHODS:
                raise BillZipError(f"compression method {info.compress_type} is not supported", file=file,
                                   entry=name, expected="stored or deflated")
            planned.append((info, name, raw, utf8))
        # a file that is also a folder of another entry ("a" and "a/b"): extracting both cannot work
        for _, name, _, _ in planned:
            parts = unicodedata.normalize("NFC", name).casefold().split("/")
            directories.update("/".join(parts[:i]) for i in range(1, len(parts)))
        for _, name, _, _ in planned:
            if unicodedata.normalize("NFC", name).casefold() in directories:
                raise UnsafeZipEntry("the name is used both as a file and as a folder", file=file, entry=name)
        entries: list[BillEntry] = []
        total = 0
        for info, name, raw, utf8 in planned:
            content = _inflate(data, info, raw, name, file, limits, total)
            total += len(content)
            entries.append(BillEntry(name, raw, content, utf8))
    return entries


class _NamedZipInfo(zipfile.ZipInfo):
    """A ZipInfo whose name is stored as GBK with the UTF-8 flag clear, as Alipay's zips are (alipay-cn.md 4:
    ``zipfile`` has no public switch for this; the private ``_encodeFilenameFlags`` is the hook)."""

    name_encoding = "gbk"

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:  # zipfile's own (private) hook
        if self.name_encoding == "utf-8":
            return self.filename.encode("utf-8"), self.flag_bits | UTF8_FLAG
        return self.filename.encode(self.name_encoding), self.flag_bits & ~UTF8_FLAG


def write_bill_zip(entries: Iterable[tuple[str, bytes]], *, utf8_names: bool = False,
                   date_time: tuple[int, int, int, int, int, int] = FIXED_DATE) -> bytes:
    """A deflated zip of ``(name, content)`` pairs with GBK names and the UTF-8 flag clear (``utf8_names``:
    UTF-8 names with the flag set). The same entries always give the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in entries:
            info = _NamedZipInfo(name, date_time=date_time)
            info.name_encoding = "utf-8" if utf8_names else "gbk"
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 0  # MS-DOS: no Unix mode bits that differ between machines
            info.external_attr = 0
            zf.writestr(info, content, compresslevel=6)
    return buffer.getvalue()
