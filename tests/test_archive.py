"""The raw-file archive: content addressing, atomic publication, never rewriting an object."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alirecon import archive as archive_mod
from alirecon.archive import Archive, ArchiveError


def _parts(root: Path) -> list[Path]:
    return sorted(root.rglob("*.part"))


def test_put_bytes_stores_under_its_sha256(tmp_path: Path) -> None:
    store = Archive(tmp_path / "a")
    data = b"header\nrow,1\n<END>\n"
    sha = hashlib.sha256(data).hexdigest()

    result = store.put_bytes(data)

    assert result == (sha, len(data), True)
    assert store.path_of(sha) == tmp_path / "a" / "sha256" / sha[:2] / sha
    assert store.exists(sha)
    with store.open(sha) as f:
        assert f.read() == data
    assert store.verify(sha)
    assert list(store) == [sha]
    assert _parts(tmp_path) == []


def test_put_file_streams_in_chunks_and_hashes_while_copying(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_mod, "CHUNK", 7)  # many chunks, last one partial
    data = bytes(range(256)) * 5 + b"tail"
    src = tmp_path / "report.csv"
    src.write_bytes(data)
    store = Archive(tmp_path / "a")

    sha, size, created = store.put_file(src)

    assert (sha, size, created) == (hashlib.sha256(data).hexdigest(), len(data), True)
    assert store.path_of(sha).read_bytes() == data
    assert _parts(tmp_path) == []


def test_second_put_is_recognised_and_never_rewrites(tmp_path: Path) -> None:
    store = Archive(tmp_path / "a")
    data = b"same bytes"
    src = tmp_path / "x.csv"
    src.write_bytes(data)
    sha = store.put_bytes(data).sha256
    obj = store.path_of(sha)
    before = os.stat(obj)

    again_bytes = store.put_bytes(data)
    again_file = store.put_file(src)

    assert again_bytes == (sha, len(data), False)
    assert again_file == (sha, len(data), False)
    after = os.stat(obj)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # objects are read-only, so an accidental open for writing fails loudly
    assert stat.S_IMODE(after.st_mode) & 0o222 == 0


def test_an_existing_object_is_left_alone_even_when_damaged(tmp_path: Path) -> None:
    store = Archive(tmp_path / "a")
    sha = store.put_bytes(b"original").sha256
    obj = store.path_of(sha)
    os.chmod(obj, 0o644)
    obj.write_bytes(b"tampered")

    assert store.put_bytes(b"original").created is False
    assert obj.read_bytes() == b"tampered"  # never overwritten by us
    assert store.verify(sha) is False  # but the damage is detectable


def test_empty_file(tmp_path: Path) -> None:
    src = tmp_path / "empty.csv"
    src.write_bytes(b"")
    store = Archive(tmp_path / "a")
    sha, size, created = store.put_file(src)
    assert (sha, size, created) == (hashlib.sha256(b"").hexdigest(), 0, True)
    assert store.path_of(sha).read_bytes() == b""


def test_a_file_changing_during_the_copy_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "growing.csv"
    src.write_bytes(b"first version\n")
    real_hash = archive_mod._hash_stream

    def hash_then_append(f):  # type: ignore[no-untyped-def]
        result = real_hash(f)
        with open(src, "ab") as g:  # the provider is still writing the file
            g.write(b"more rows\n")
        return result

    monkeypatch.setattr(archive_mod, "_hash_stream", hash_then_append)
    store = Archive(tmp_path / "a")
    with pytest.raises(ArchiveError, match="changed while it was being archived"):
        store.put_file(src)
    assert list(store) == []
    assert _parts(tmp_path) == []


def test_a_failed_write_leaves_no_part_and_no_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Archive(tmp_path / "a")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(archive_mod.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.put_bytes(b"will not fit")
    monkeypatch.undo()
    assert list(store) == []
    assert _parts(tmp_path) == []
    assert store.put_bytes(b"will not fit").created is True


def test_file_and_directory_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[bool] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(archive_mod.os, "fsync", spy)
    Archive(tmp_path / "a").put_bytes(b"durable")
    # (new shard directories are fsynced first;) the object's bytes, then its directory entry last
    assert False in synced
    assert synced[-1] is True
    assert synced.index(False) < len(synced) - 1


def test_concurrent_puts_of_the_same_bytes_create_it_once(tmp_path: Path) -> None:
    store = Archive(tmp_path / "a")
    data = os.urandom(1 << 20)
    src = tmp_path / "big.csv"
    src.write_bytes(data)
    n = 8
    barrier = threading.Barrier(n)
    results: list[archive_mod.PutResult] = []
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results.append(store.put_file(src) if i % 2 else store.put_bytes(data))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert failures == []
    sha = hashlib.sha256(data).hexdigest()
    assert {r.sha256 for r in results} == {sha}
    assert sum(r.created for r in results) == 1
    assert store.path_of(sha).read_bytes() == data
    assert _parts(tmp_path) == []


def test_without_hard_links_publication_falls_back_to_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError("hard links not supported here")

    monkeypatch.setattr(archive_mod.os, "link", no_links)
    store = Archive(tmp_path / "a")
    first = store.put_bytes(b"abc")
    second = store.put_bytes(b"abc")
    assert (first.created, second.created) == (True, False)
    assert store.path_of(first.sha256).read_bytes() == b"abc"
    assert _parts(tmp_path) == []


@pytest.mark.parametrize("bad", ["", "ABC", "0" * 63, "G" * 64, "../" + "0" * 61, "0" * 64 + "/x", "A" * 64])
def test_ids_are_checked(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ArchiveError):
        Archive(tmp_path).path_of(bad)


def test_open_of_a_missing_object(tmp_path: Path) -> None:
    store = Archive(tmp_path / "a")
    assert not store.exists("0" * 64)
    with pytest.raises(FileNotFoundError):
        store.open("0" * 64)


@given(blobs=st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_property_content_addressing(tmp_path_factory: pytest.TempPathFactory, blobs: list[bytes]) -> None:
    root = tmp_path_factory.mktemp("prop")
    store = Archive(root / "a")
    created = set()
    for i, blob in enumerate(blobs):
        if i % 2:
            src = root / f"f{i}"
            src.write_bytes(blob)
            res = store.put_file(src)
        else:
            res = store.put_bytes(blob)
        sha = hashlib.sha256(blob).hexdigest()
        assert res.sha256 == sha and res.size == len(blob)
        assert res.created == (sha not in created)
        created.add(sha)
        assert store.path_of(sha).read_bytes() == blob
    assert list(store) == sorted(created)
    assert _parts(root) == []


KILLED_PUT = """
import os, stat, sys, time
from alirecon import archive
fsync = os.fsync
def slow_fsync(fd):
    if stat.S_ISREG(os.fstat(fd).st_mode):  # the part's own fsync (directories are synced before it)
        print("writing", flush=True)
        time.sleep(60)  # killed here: the part is written, not yet published
    fsync(fd)
archive.os.fsync = slow_fsync
archive.Archive(sys.argv[1]).put_bytes(b"never published")
"""


def test_a_put_killed_midway_leaves_nothing_among_the_objects_and_its_part_is_swept(tmp_path: Path) -> None:
    root = tmp_path / "a"
    child = subprocess.Popen([sys.executable, "-c", KILLED_PUT, str(root)], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"writing\n"
    live = Archive(root).remove_stale_parts()  # its writer still runs: kept
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    store = Archive(root)
    objects = [p for p in store.objects.rglob("*") if p.is_file()] if store.objects.is_dir() else []
    parts = _parts(tmp_path)
    assert (live, objects, [p.parent.name for p in parts]) == ([], [], ["tmp"])
    mine = store._staged_path()
    mine.write_bytes(b"a live writer's part")
    assert store.remove_stale_parts() == [parts[0].name]
    assert _parts(tmp_path) == [mine] and list(store) == []
    assert store.put_bytes(b"never published").created is True
