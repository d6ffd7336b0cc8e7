"""The fast receive paths (bench/sftp_bench.py): small files in memory, large ones through a writer thread, one
send per event-loop turn, and the archive's group commit. Each keeps the guarantees of the slower path it
replaced: exact bytes and size, resumable prefixes, nothing half-written visible."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alirecon import fetch as fetch_module
from alirecon.archive import Archive, PutResult
from alirecon.sources import RemoteEntry, TransferError, sftp
from alirecon.sources.sftp import Downloaded, SftpSource, _CoalescingTransport, _PartFile, _PartWriter, _RangeReader
from alirecon.warehouse import Workspace

from .conftest import ANTOM, Served, sftp_config
from .test_sftp import ANTOM_DIR, antom_tx_path, expected_paths, fetch, server_bytes


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- reads in flight ------------------------------------------------------------------------------


class FakeRemote:
    """A remote file whose reads complete when the test says so (or at once), short when told to."""

    def __init__(self, data: bytes, *, short: int | None = None, hold: bool = False) -> None:
        self.data, self.short, self.hold = data, short, hold
        self.waiting: list[tuple[int, int, asyncio.Future[bytes]]] = []
        self.in_flight = self.peak = 0

    async def read(self, length: int, offset: int) -> bytes:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.short is not None:
                length = min(length, self.short)
            if self.hold:
                done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
                self.waiting.append((offset, length, done))
                return await done
            await asyncio.sleep(0)
            return self.data[offset:offset + length]
        finally:
            self.in_flight -= 1


def read_all(remote: FakeRemote, size: int, start: int = 0, block: int = 7, window: int = 3) -> dict[int, bytes]:
    got: dict[int, bytes] = {}
    answers = 0

    def answered() -> None:
        nonlocal answers
        answers += 1

    async def go() -> None:
        reader = _RangeReader(remote, size, block, window, on_answer=answered)  # type: ignore[arg-type]
        await reader.run(start, lambda at, data: got.__setitem__(at, data))

    asyncio.run(go())
    assert answers == len(got)
    return got


def joined(pieces: dict[int, bytes], start: int = 0) -> bytes:
    out, at = b"", start
    while at in pieces:
        out += pieces[at]
        at += len(pieces[at])
    assert at - start == sum(len(p) for p in pieces.values()), "pieces overlap or leave a gap"
    return out


@given(st.binary(min_size=0, max_size=300), st.integers(1, 40), st.integers(1, 6), st.data())
@settings(max_examples=60)
def test_range_reader_returns_every_byte_once_within_the_window(data: bytes, block: int, window: int,
                                                                 draw: st.DataObject) -> None:
    start = draw.draw(st.integers(0, len(data)))
    short = draw.draw(st.none() | st.integers(1, block))
    remote = FakeRemote(data, short=short)
    got = read_all(remote, len(data), start, block, window)
    assert joined(got, start) == data[start:]
    assert remote.peak <= window


def test_range_reader_takes_answers_in_any_order() -> None:
    data = os.urandom(100)
    remote = FakeRemote(data, hold=True)
    got: dict[int, bytes] = {}

    async def go() -> None:
        reader = _RangeReader(remote, len(data), 10, 4, on_answer=lambda: None)  # type: ignore[arg-type]
        task = asyncio.ensure_future(reader.run(0, lambda at, d: got.__setitem__(at, d)))
        while not task.done():
            await asyncio.sleep(0)
            if remote.waiting:  # answer the newest request first
                offset, length, done = remote.waiting.pop()
                done.set_result(data[offset:offset + length])
        await task

    asyncio.run(go())
    assert joined(got) == data


def test_range_reader_reports_a_file_that_ends_early() -> None:
    remote = FakeRemote(b"x" * 50)
    with pytest.raises(TransferError, match="ended at byte 50 of 80"):
        read_all(remote, 80, block=10, window=2)


def test_range_reader_cancels_what_is_in_flight_when_a_read_fails() -> None:
    remote = FakeRemote(b"y" * 100, hold=True)

    async def go() -> None:
        reader = _RangeReader(remote, 100, 10, 5, on_answer=lambda: None)  # type: ignore[arg-type]
        task = asyncio.ensure_future(reader.run(0, lambda at, d: None))
        while len(remote.waiting) < 5:
            await asyncio.sleep(0)
        remote.waiting[2][2].set_exception(ConnectionResetError("cut"))
        with pytest.raises(ConnectionResetError):
            await task
        assert all(done.done() for _, _, done in remote.waiting)
        assert remote.in_flight == 0  # every other request was cancelled and awaited: nothing orphaned

    asyncio.run(go())


# -- the part writer ------------------------------------------------------------------------------


def test_part_writer_appends_in_offset_order_and_hashes_what_it_wrote(tmp_path: Path) -> None:
    data = os.urandom(10_000)
    part = tmp_path / "x.part"
    remote = {"path": "/d/x", "size": len(data), "mtime": None}
    blocks = [(at, data[at:at + 1000]) for at in range(0, len(data), 1000)]
    order = blocks[1::2] + blocks[0::2]  # every early block arrives before the one it follows

    async def go() -> _PartFile:
        out = _PartFile.open(part, remote)
        writer = _PartWriter(out, asyncio.get_running_loop())
        for at, block in order:
            writer.put(at, block)
        await writer.close(sync=True)
        return out

    out = asyncio.run(go())
    assert part.read_bytes() == data and out.written == len(data) and out.digest.hexdigest() == sha(data)


def test_part_writer_keeps_the_received_prefix_when_the_transfer_breaks(tmp_path: Path) -> None:
    data = os.urandom(5000)
    part = tmp_path / "x.part"
    remote = {"path": "/d/x", "size": len(data), "mtime": None}

    async def go() -> None:
        writer = _PartWriter(_PartFile.open(part, remote), asyncio.get_running_loop())
        writer.put(0, data[:1000])
        writer.put(2000, data[2000:3000])  # the block before it never came
        await writer.close(sync=False)

    asyncio.run(go())
    assert part.read_bytes() == data[:1000]  # a prefix only: the resume point is the part's length
    start, digest = sftp._resume_point(part, remote)
    assert start == 1000 and digest.hexdigest() == sha(data[:1000])


def test_part_writer_holds_the_reads_back_while_the_disk_is_behind(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sftp, "_BACKLOG_MAX", 4000)
    gate = threading.Event()
    original = _PartFile.write

    def slow_write(self: _PartFile, data: bytes) -> None:
        gate.wait(5)
        original(self, data)

    monkeypatch.setattr(_PartFile, "write", slow_write)
    part = tmp_path / "x.part"

    async def go() -> list[str]:
        events: list[str] = []
        writer = _PartWriter(_PartFile.open(part, {"path": "/d/x", "size": 6000, "mtime": None}),
                             asyncio.get_running_loop())
        resumed = asyncio.Event()
        for i in range(4):
            writer.put(i * 1000, b"z" * 1000)
        events.append(f"full={writer.full(resumed.set)}")
        gate.set()  # the disk catches up: the writer calls back once the backlog is under half
        await asyncio.wait_for(resumed.wait(), 5)
        events.append("resumed")
        events.append(f"full={writer.full(resumed.set)}")
        await writer.close(sync=True)
        return events

    assert asyncio.run(go()) == ["full=True", "resumed", "full=False"]
    assert part.read_bytes() == b"z" * 4000


# -- one send per turn ----------------------------------------------------------------------------


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return f"info:{name}"


def test_writes_of_one_turn_go_out_together_in_order_and_close_flushes_first() -> None:
    async def go() -> RecordingTransport:
        inner = RecordingTransport()
        wrapped = _CoalescingTransport(inner, asyncio.get_running_loop())
        wrapped.write(b"a")
        wrapped.write(b"bc")
        assert inner.writes == []  # nothing sent inside the turn
        await asyncio.sleep(0)
        assert inner.writes == [b"abc"]
        wrapped.write(b"d")
        wrapped.write(b"e")
        wrapped.close()
        assert wrapped.get_extra_info("peername") == "info:peername"  # the rest is the transport's own
        return inner

    inner = asyncio.run(go())
    assert inner.writes == [b"abc", b"de"] and inner.closed


# -- small files in memory, and files that changed since they were listed -----------------------


def source(served: Served, tmp_path: Path, **overrides: object) -> SftpSource:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(served.server.known_hosts_line() + "\n", encoding="utf-8")
    return SftpSource(sftp_config(served.port, **overrides), account_id="x", family="antom", known_hosts=known_hosts)


def download(src: SftpSource, entry: RemoteEntry, part: Path) -> Downloaded:
    async def go() -> Downloaded:
        async with src:
            return await src.download(entry, part)

    return asyncio.run(go())


def test_a_small_file_is_received_in_memory_without_a_part_file(served: Served, tmp_path: Path,
                                                                password: str) -> None:
    path = antom_tx_path(served)
    data = server_bytes(served, path)
    assert len(data) <= sftp.IN_MEMORY_MAX
    part = tmp_path / "tmp" / "x.part"
    got = download(source(served, tmp_path), RemoteEntry(path, path.rsplit("/", 1)[1], len(data), None), part)
    assert got.data == data and got.part is None and got.sha256 == sha(data) and got.size == len(data)
    assert got.ends_with_newline == data.endswith(b"\n") and not part.exists()
    assert served.stats.opens == 1 and served.stats.read_requests == 2  # the bytes and the end, together


@pytest.mark.parametrize("listed_delta", [-10, +10], ids=["grew_since_listed", "shrank_since_listed"])
def test_a_small_file_that_changed_since_it_was_listed_is_taken_as_it_is_now(
        served: Served, tmp_path: Path, password: str, listed_delta: int) -> None:
    path = antom_tx_path(served)
    data = server_bytes(served, path)
    part = tmp_path / "tmp" / "x.part"
    entry = RemoteEntry(path, path.rsplit("/", 1)[1], len(data) + listed_delta, None)
    got = download(source(served, tmp_path), entry, part)
    # the listing's size is only a guess for a small file: the general path asks the server and verifies that
    assert got.size == len(data) and got.sha256 == sha(data) and got.attempts == 1
    assert got.data is None and got.part == part and part.read_bytes() == data


def test_a_large_file_goes_through_its_part_file(served: Served, tmp_path: Path, password: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sftp, "IN_MEMORY_MAX", 0)
    path = antom_tx_path(served)
    data = server_bytes(served, path)
    part = tmp_path / "tmp" / "x.part"
    got = download(source(served, tmp_path, block_size=1024, max_requests=4), RemoteEntry(path, "x", len(data), None),
                   part)
    assert got.data is None and got.part == part and part.read_bytes() == data and got.sha256 == sha(data)
    assert served.stats.read_requests >= len(data) // 1024


# -- the archive's group commit -------------------------------------------------------------------


@pytest.mark.parametrize("unnamed", [True, False], ids=["o_tmpfile", "named_parts"])
def test_put_many_stores_each_blob_once_read_only_and_leaves_no_part(tmp_path: Path, unnamed: bool) -> None:
    archive = Archive(tmp_path / "archive")
    archive._unnamed = unnamed  # False: as on a system without O_TMPFILE
    blobs = [os.urandom(100 + i) for i in range(20)]
    before = archive.put_bytes(blobs[0])
    results = archive.put_many([(b, None) for b in blobs] + [(blobs[3], sha(blobs[3]))])
    assert all(isinstance(r, PutResult) for r in results)
    assert [r.sha256 for r in results if isinstance(r, PutResult)] == [sha(b) for b in blobs] + [sha(blobs[3])]
    created = [r.created for r in results if isinstance(r, PutResult)]
    assert created == [False] + [True] * 19 + [False]  # already stored; the repeat in the batch links once
    assert before.created and sorted(archive) == sorted(sha(b) for b in blobs)
    for b in blobs:
        assert archive.verify(sha(b)) and archive.path_of(sha(b)).read_bytes() == b
        assert not archive.path_of(sha(b)).stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert [p.name for p in archive.root.rglob("*") if p.is_file() and len(p.name) != 64] == []


def test_put_many_reports_one_blobs_failure_without_failing_the_others(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "archive")
    good, bad = b"good bytes", b"bad bytes"
    shard = archive.path_of(sha(bad)).parent
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"")  # a file where the shard directory must go: that blob cannot be stored
    results = archive.put_many([(good, None), (bad, None)])
    assert isinstance(results[0], PutResult) and archive.path_of(sha(good)).read_bytes() == good
    assert isinstance(results[1], OSError)
    assert not archive.exists(sha(bad))


# -- batches that do not wait for company that is not coming -------------------------------------


def test_batches_are_written_as_soon_as_every_file_waits_on_them(ws: Workspace, served: Served,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # timers far longer than the test: only the "everyone is waiting" rule can complete the files
    monkeypatch.setattr(fetch_module._Recorder.__init__, "__defaults__", (256, 60.0))
    monkeypatch.setattr(fetch_module._Archiver.__init__, "__defaults__", (64, 60.0))
    started = time.monotonic()
    summary = fetch(ws, ANTOM, now=served.clock.now())
    assert time.monotonic() - started < 30
    want = expected_paths(served, ANTOM_DIR)
    assert summary.new == len(want) > 1 and summary.failed == 0
    assert all(r["state"] == "complete" for r in ws.remote_files(ANTOM).to_pylist())
