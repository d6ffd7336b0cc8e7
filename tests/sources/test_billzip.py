"""Bill zips: GBK names without the UTF-8 flag, deterministic writing, and every refusal of a hostile zip."""

from __future__ import annotations

import io
import stat
import struct
import tracemalloc
import warnings
import zipfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alirecon.sources.billzip import (
    BillZipError,
    CorruptZip,
    DuplicateZipEntry,
    EncryptedZipEntry,
    UnsafeZipEntry,
    ZipLimits,
    ZipTooLarge,
    extract_bill_zip,
    write_bill_zip,
)

ACCOUNT = "20887217759422330156"
DETAIL = f"{ACCOUNT}_20170818_业务明细.csv"
SUMMARY = f"{ACCOUNT}_20170818_业务明细(汇总).csv"
CSV = "#支付宝业务明细查询\r\n#账号：[20887217759422330156]\r\n".encode("gbk")


class RawNameInfo(zipfile.ZipInfo):
    """Writes ``raw`` as the stored name, flag as given: for names zipfile would never produce itself."""

    raw = b""
    utf8 = False

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:
        return self.raw, (self.flag_bits | 0x800) if self.utf8 else (self.flag_bits & ~0x800)


def hostile_zip(*entries: tuple[str | bytes, bytes], unix_mode: int | None = None,
                compress_type: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        for name, data in entries:
            if isinstance(name, bytes):
                info: zipfile.ZipInfo = RawNameInfo("x")
                info.raw = name  # type: ignore[attr-defined]
            else:
                info = zipfile.ZipInfo(name)
            info.compress_type = compress_type
            if unix_mode is not None:
                info.create_system = 3
                info.external_attr = unix_mode << 16
            zf.writestr(info, data)
    return buffer.getvalue()


def refusal(data: bytes, kind: type[BillZipError], limits: ZipLimits | None = None) -> BillZipError:
    with pytest.raises(kind) as info:
        extract_bill_zip(data, "bill.csv.zip", limits=limits)
    exc = info.value
    assert exc.file == "bill.csv.zip" and "bill.csv.zip" in str(exc)
    return exc


# -- names ------------------------------------------------------------------------------------------


def test_gbk_names_are_written_without_the_utf8_flag_and_read_back() -> None:
    data = write_bill_zip([(SUMMARY, CSV), (DETAIL, CSV + b"1")])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert [i.flag_bits & 0x800 for i in zf.infolist()] == [0, 0]
        # cp437 is what zipfile decodes flagless names as; undoing it gives the GBK bytes
        assert [i.filename.encode("cp437") for i in zf.infolist()] == [SUMMARY.encode("gbk"), DETAIL.encode("gbk")]
    # an independent reader (Python >= 3.11) agrees on the names
    with zipfile.ZipFile(io.BytesIO(data), metadata_encoding="gbk") as zf:
        assert zf.namelist() == [SUMMARY, DETAIL]
    entries = extract_bill_zip(data, "x.zip")
    assert [(e.name, e.raw_name, e.data, e.utf8_flag) for e in entries] == [
        (SUMMARY, SUMMARY.encode("gbk"), CSV, False), (DETAIL, DETAIL.encode("gbk"), CSV + b"1", False)]
    assert entries[1].basename == DETAIL and entries[1].size == len(CSV) + 1


def test_utf8_flagged_names_are_decoded_as_utf8() -> None:
    data = write_bill_zip([(DETAIL, CSV)], utf8_names=True)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.infolist()[0].flag_bits & 0x800
    [entry] = extract_bill_zip(data, "x.zip")
    assert entry.name == DETAIL and entry.raw_name == DETAIL.encode("utf-8") and entry.utf8_flag


def test_writing_is_deterministic() -> None:
    entries = [(DETAIL, CSV * 50), (SUMMARY, CSV)]
    assert write_bill_zip(entries) == write_bill_zip(list(entries))
    assert write_bill_zip(entries) != write_bill_zip(entries[::-1])
    with zipfile.ZipFile(io.BytesIO(write_bill_zip(entries))) as zf:
        assert {i.date_time for i in zf.infolist()} == {(2000, 1, 1, 0, 0, 0)}


_GBK_CHARS = st.characters(codec="gbk", exclude_characters="/\\:", exclude_categories=["Cc", "Cs", "Co"])


@given(st.dictionaries(st.text(_GBK_CHARS, min_size=1, max_size=12).filter(lambda s: s not in (".", "..")),
                       st.binary(max_size=300), min_size=1, max_size=5))
def test_any_gbk_name_and_content_round_trip(files: dict[str, bytes]) -> None:
    casefolded = {n.casefold() for n in files}
    if len(casefolded) != len(files):
        return  # names equal but for case are refused on purpose (test_duplicate_names_are_refused)
    entries = extract_bill_zip(write_bill_zip(list(files.items())), "x.zip")
    assert [(e.name, e.data) for e in entries] == list(files.items())


def test_a_name_that_is_not_gbk_is_refused_for_that_entry() -> None:
    exc = refusal(hostile_zip((DETAIL, CSV), (b"bill\xff.csv", b"x")), UnsafeZipEntry)
    assert "not valid GBK" in str(exc) and exc.entry == "bill\ufffd.csv"


# -- hostile names and types -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "why"), [
    ("../evil.csv", "'..'"),
    ("bills/../../evil.csv", "'..'"),
    ("/etc/passwd", "absolute"),
    ("C:/Windows/evil.csv", "drive letter"),
    ("C:evil.csv", "drive letter"),
    ("..\\..\\evil.csv", "backslash"),
    ("\\server\\share\\evil.csv", "absolute"),
    ("ok\x00.csv", "NUL"),
    ("a//b.csv", "empty or '.'"),
    ("./b.csv", "empty or '.'"),
])
def test_path_traversal_and_absolute_names_are_refused(name: str, why: str) -> None:
    exc = refusal(hostile_zip((DETAIL, CSV), (name.encode("gbk"), b"owned")), UnsafeZipEntry)
    assert why in str(exc) and exc.entry == name


def test_symlinks_and_special_files_are_refused() -> None:
    exc = refusal(hostile_zip(("link.csv", b"/etc/passwd"), unix_mode=stat.S_IFLNK | 0o777), UnsafeZipEntry)
    assert "symbolic link" in str(exc) and exc.entry == "link.csv"
    exc = refusal(hostile_zip(("fifo.csv", b""), unix_mode=stat.S_IFIFO | 0o644), UnsafeZipEntry)
    assert "special file" in str(exc)
    # a regular Unix file is fine
    [entry] = extract_bill_zip(hostile_zip(("ok.csv", b"1"), unix_mode=stat.S_IFREG | 0o644), "x.zip")
    assert entry.name == "ok.csv"


def test_directories_used_as_files_are_refused() -> None:
    exc = refusal(hostile_zip(("bills", b"a file"), ("bills/x.csv", b"1")), UnsafeZipEntry)
    assert "both as a file and as a folder" in str(exc) and exc.entry == "bills"
    exc = refusal(hostile_zip(("bills/", b"content in a directory")), UnsafeZipEntry)
    assert "directory entry with content" in str(exc)
    exc = refusal(hostile_zip(("bills", b""), unix_mode=stat.S_IFDIR | 0o755), UnsafeZipEntry)
    assert "directory stored under a file name" in str(exc)
    # a plain directory entry is skipped, its files kept
    entries = extract_bill_zip(hostile_zip(("bills/", b""), ("bills/x.csv", b"1")), "x.zip")
    assert [e.name for e in entries] == ["bills/x.csv"]


def test_duplicate_names_are_refused() -> None:
    exc = refusal(hostile_zip((DETAIL, CSV), (DETAIL, b"second")), DuplicateZipEntry)
    assert exc.entry == DETAIL
    exc = refusal(hostile_zip(("Bill.csv", b"1"), ("bill.CSV", b"2")), DuplicateZipEntry)
    assert exc.entry == "bill.CSV"


def test_encrypted_entries_are_refused() -> None:
    data = bytearray(write_bill_zip([(DETAIL, CSV)]))
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central headers
        data[data.index(signature) + flags_at] |= 0x1  # zipfile itself never writes the flag
    exc = refusal(bytes(data), EncryptedZipEntry)
    assert exc.entry == DETAIL


def test_unsupported_compression_is_refused() -> None:
    exc = refusal(hostile_zip((DETAIL, CSV), compress_type=zipfile.ZIP_BZIP2), BillZipError)
    assert "compression method 12" in str(exc)


# -- sizes and bombs ---------------------------------------------------------------------------------


def test_too_many_entries_are_refused_before_reading() -> None:
    data = write_bill_zip([(f"{i}.csv", b"x") for i in range(4)])
    assert len(extract_bill_zip(data, "x.zip", limits=ZipLimits(max_entries=4))) == 4
    exc = refusal(data, ZipTooLarge, ZipLimits(max_entries=3))
    assert "4 entries" in str(exc)


def test_entry_and_total_size_limits() -> None:
    data = write_bill_zip([("a.csv", b"a" * 1500), ("b.csv", b"b" * 1500)])
    exc = refusal(data, ZipTooLarge, ZipLimits(max_entry_bytes=1000))
    assert exc.entry == "a.csv"
    exc = refusal(data, ZipTooLarge, ZipLimits(max_total_bytes=2000))
    assert exc.entry == "b.csv" and "in total" in str(exc)
    assert len(extract_bill_zip(data, "x.zip", limits=ZipLimits(max_entry_bytes=1500, max_total_bytes=3000))) == 2


def test_zip_bomb_is_stopped_while_inflating() -> None:
    bomb = write_bill_zip([("bomb.csv", bytes(100 * 1024 * 1024))])  # 100 MB of zeros, ~100 KB deflated
    assert len(bomb) < 200_000
    tracemalloc.start()
    try:
        exc = refusal(bomb, ZipTooLarge)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "compression ratio" in str(exc) and exc.entry == "bomb.csv"
    assert peak < 8 * 1024 * 1024  # refused after a few MB of output, not after inflating 100 MB


def test_declared_sizes_are_not_trusted() -> None:
    """A bomb whose headers claim a size within the limits is refused on the bytes it really produces."""
    data = bytearray(write_bill_zip([("bomb.csv", bytes(5 * 1024 * 1024))]))
    central = data.rindex(b"PK\x01\x02")
    local = data.index(b"PK\x03\x04")
    struct.pack_into("<I", data, central + 24, 1000)  # central directory: uncompressed size
    struct.pack_into("<I", data, local + 22, 1000)  # local header: uncompressed size
    exc = refusal(bytes(data), ZipTooLarge, ZipLimits(max_entry_bytes=4096))
    assert exc.entry == "bomb.csv" and "more than 4096 bytes" in str(exc)


# -- damaged archives --------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.99])
def test_truncated_zip_is_corrupt(cut: float) -> None:
    data = write_bill_zip([(DETAIL, CSV * 100), (SUMMARY, CSV)])
    refusal(data[: int(len(data) * cut)], CorruptZip)


def test_garbage_and_empty_bytes_are_corrupt() -> None:
    assert "not a readable zip" in str(refusal(b"<html>expired</html>", CorruptZip))
    refusal(b"", CorruptZip)


def test_a_damaged_entry_names_the_entry() -> None:
    data = bytearray(write_bill_zip([(DETAIL, CSV * 200)]))
    start = data.index(b"PK\x03\x04") + 30 + len(DETAIL.encode("gbk"))
    data[start + 10] ^= 0xFF  # inside the deflated data
    exc = refusal(bytes(data), CorruptZip)
    assert exc.entry == DETAIL


def test_an_empty_zip_has_no_entries() -> None:
    assert extract_bill_zip(write_bill_zip([]), "empty.zip") == []
