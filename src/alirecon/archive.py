"""Content-addressed store of every raw file we ever received.

Why: providers delete files after 7 days (antom.md 2.1) and everything else can be rebuilt from the
raw bytes (DESIGN.md "Raw bytes are sacred"), so an object is written once, atomically, under its
sha256 and never modified or deleted by us. Layout: ``<root>/sha256/<first 2 hex>/<sha256>``.

Writing protocol: the bytes go to a private ``<root>/tmp/<pid>-<token>.part`` (under the same root, so the
same filesystem, and never among the objects), are flushed and fsynced, then published with ``os.link`` -
an atomic rename that refuses to overwrite, so of several concurrent puts of the same bytes exactly one
creates the object and none rewrites it - and finally the directory is fsynced. Where hard links are
not supported the publish falls back to ``os.replace`` (still atomic; a racing writer can then only
replace an object with identical bytes). The per-writer token keeps concurrent writers off each
other's ``.part`` file; a writer killed mid-put leaves its part in ``tmp``, never an unfinished file among
the objects, and ``remove_stale_parts`` (run when a workspace opens) deletes the parts of writers that are
gone. ``put_many`` (a fetch's many small files) runs the same protocol for a batch with one group commit of
the fsyncs, staging in unnamed ``O_TMPFILE`` files where the system has them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, NamedTuple, TypeVar

from .errors import AlireconError

__all__ = ["Archive", "ArchiveError", "PutResult"]

T = TypeVar("T")
CHUNK = 4 * 1024 * 1024
STAGING_DIR = "tmp"  # under the root, beside (never inside) the objects: the named parts of puts
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_STAGED_RE = re.compile(r"([0-9]+)-[0-9a-f]+\.part")  # <writer pid>-<token>.part (other files in tmp: not ours)
# Writes the object's bytes to the open ``.part`` file; returns the sha256 and size actually written.
_Writer = Callable[[BinaryIO], tuple[str, int]]


class ArchiveError(AlireconError):
    """The archive could not store or find an object (source changed mid-copy, bad id)."""


class PutResult(NamedTuple):
    sha256: str
    size: int
    created: bool  # False when the object was already there


class Archive:
    """Raw bytes by sha256: ``put_file`` / ``put_bytes`` in, ``open`` / ``path_of`` out."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "sha256"
        self._unnamed = True  # put_many stages unnamed (O_TMPFILE) files until the system refuses them

    def path_of(self, sha256: str) -> Path:
        if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
            raise ArchiveError(f"not a lowercase hex sha256: {sha256!r}")
        return self.objects / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def open(self, sha256: str) -> BinaryIO:
        """The stored bytes, read-only (``FileNotFoundError`` when the object is not stored)."""
        return open(self.path_of(sha256), "rb")

    def verify(self, sha256: str) -> bool:
        """Re-hash a stored object: True when its bytes still match its name."""
        with self.open(sha256) as f:
            return _hash_stream(f)[0] == sha256

    def put_bytes(self, data: bytes, *, sha256: str | None = None) -> PutResult:
        """Store ``data``; ``sha256``: its digest, when the caller computed it over these very bytes."""
        sha = sha256 or hashlib.sha256(data).hexdigest()
        if self.exists(sha):
            return PutResult(sha, len(data), False)

        def write(out: BinaryIO) -> tuple[str, int]:
            out.write(data)
            return sha, len(data)

        return self._publish(sha, write)

    def put_many(self, blobs: Sequence[tuple[bytes, str | None]]) -> list[PutResult | Exception]:
        """Store several objects (bytes, and their sha256 when the caller computed it over those bytes) with one
        group commit; each result is a ``PutResult`` or the exception that one object met.

        The same protocol as ``put_bytes`` (private file, fsync, link that refuses to overwrite, directory
        fsync), in phases: every file is written, then all are fsynced at once (the file system commits them
        together instead of one journal commit each), then linked, then each directory that gained an entry is
        fsynced once. Nothing is reported stored before its bytes and its name are durable. The private files
        have no name at all (``O_TMPFILE``) where the system allows it, so a crash at any point leaves nothing
        behind; elsewhere they are named parts under ``<root>/tmp``, never among the objects.
        """
        results: list[PutResult | Exception | None] = [None] * len(blobs)
        staged: list[tuple[int, str, int, int, Path | None, Path]] = []  # index, sha256, size, fd, named part, dest
        dirs: set[Path] = set()
        try:
            for i, (data, known) in enumerate(blobs):
                sha = known or hashlib.sha256(data).hexdigest()
                dest = self.path_of(sha)
                if dest.is_file():
                    results[i] = PutResult(sha, len(data), False)
                    continue
                try:
                    dirs.update(_makedirs(dest.parent, stop=self.root))
                    fd, named = self._stage(dest.parent)
                except OSError as exc:
                    results[i] = exc
                    continue
                staged.append((i, sha, len(data), fd, named, dest))
                try:
                    _write_all(fd, data)
                except OSError as exc:
                    results[i] = exc
            written = [s for s in staged if results[s[0]] is None]
            synced = _in_parallel(os.fsync, [fd for _, _, _, fd, _, _ in written])
            for (i, sha, size, fd, named, dest), error in zip(written, synced, strict=True):
                try:
                    if error is not None:
                        raise error
                    results[i] = PutResult(sha, size, self._link_staged(fd, named, dest, blobs[i][0]))
                    dirs.add(dest.parent)
                except OSError as exc:
                    results[i] = exc
        finally:
            for _, _, _, fd, named, _ in staged:
                os.close(fd)
                if named is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(named)
        _in_parallel(_fsync_dir, dirs)  # as in _publish: a directory that refuses fsync is not an error
        return [r if r is not None else ArchiveError("not stored") for r in results]

    def _stage(self, directory: Path) -> tuple[int, Path | None]:
        """A new private file for ``put_many`` on ``directory``'s file system: an open descriptor, and its name
        (None: it has none until linked)."""
        if self._unnamed:
            try:
                return os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o444), None
            except (AttributeError, OSError):  # no O_TMPFILE on this system or file system
                self._unnamed = False
        named = self._staged_path()
        return os.open(named, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444), named

    def _staged_path(self) -> Path:
        """A fresh private name for a part: ``<root>/tmp/<pid>-<token>.part``."""
        staging = self.root / STAGING_DIR
        staging.mkdir(parents=True, exist_ok=True)
        return staging / f"{os.getpid()}-{secrets.token_hex(8)}.part"

    def remove_stale_parts(self) -> list[str]:
        """Delete the staged parts whose writer process is gone (killed in the middle of a put); return their
        names. A part of a live writer, or of a process that reused a dead writer's pid, is left alone."""
        staging = self.root / STAGING_DIR
        if not staging.is_dir():
            return []
        removed = []
        for part in staging.iterdir():
            m = _STAGED_RE.fullmatch(part.name)
            if m is None or _process_alive(int(m.group(1))):
                continue
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
                removed.append(part.name)
        return sorted(removed)

    def _link_staged(self, fd: int, named: Path | None, dest: Path, data: bytes) -> bool:
        """Give a staged, fsynced file its object name (refusing to overwrite); False when it was already there."""
        if named is not None:
            return _link_no_clobber(named, dest)
        try:
            os.link(f"/proc/self/fd/{fd}", dest)  # linkat(AT_SYMLINK_FOLLOW): how an O_TMPFILE file gets a name
            return True
        except FileExistsError:
            return False
        except OSError:  # no /proc here: named parts from now on, and this object the usual way
            self._unnamed = False
            return self.put_bytes(data, sha256=dest.name).created

    def put_file(self, path: Path, *, move: bool = False, sha256: str | None = None) -> PutResult:
        """Store a file of any size, streaming in chunks.

        The file is hashed once to find its destination (an object already stored costs no write),
        then copied while hashed again; a file that changes between the two reads is refused rather
        than stored under a name that does not match its bytes.

        ``move``: ``path`` is the caller's own finished, fsynced file that nobody writes any more (a
        download's part file under ``<root>/tmp``). It is hashed once and published by hard-linking it
        into place (no copy, no second write of its bytes), then removed from ``path``; where it cannot
        be linked (another filesystem) it is copied as above and removed. ``sha256`` (with ``move``): the
        digest the caller computed over the very bytes it wrote to ``path`` (a download hashes while it
        writes), trusted to save reading the whole file again; the re-read would come from the page cache, so
        it could not catch a disk fault anyway, only another writer, and nobody else writes a part file.
        """
        path = Path(path)
        if move:
            result = self._link_in(path, sha256)
            if result is None:
                result = self.put_file(path)
            path.unlink(missing_ok=True)
            return result
        with open(path, "rb") as src:
            sha, size = _hash_stream(src)
            if self.exists(sha):
                return PutResult(sha, size, False)

            def copy(out: BinaryIO) -> tuple[str, int]:
                src.seek(0)
                h = hashlib.sha256()
                n = 0
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    n += len(chunk)
                return h.hexdigest(), n

            return self._publish(sha, copy, source=str(path))

    def _link_in(self, path: Path, known: str | None = None) -> PutResult | None:
        """Publish ``path`` itself under its sha256 (``put_file(move=True)``); None when it cannot be linked."""
        if known is not None:
            sha, size = known, path.stat().st_size
        else:
            with open(path, "rb") as src:
                sha, size = _hash_stream(src)
        dest = self.path_of(sha)
        if self.exists(sha):
            return PutResult(sha, size, False)
        _makedirs_durable(dest.parent, stop=self.root)
        os.chmod(path, 0o444)
        try:
            os.link(path, dest)  # atomic and refuses to overwrite, as in _publish
            created = True
        except FileExistsError:
            created = False
        except OSError:
            return None
        _fsync_dir(dest.parent)
        return PutResult(sha, size, created)

    def __iter__(self) -> Iterator[str]:
        """Every stored sha256, sorted."""
        if not self.objects.is_dir():
            return iter(())
        return iter(sorted(p.name for p in self.objects.glob("??/*") if _SHA256_RE.fullmatch(p.name)))

    def _publish(self, sha: str, write: _Writer, *, source: str = "<bytes>") -> PutResult:
        dest = self.path_of(sha)
        _makedirs_durable(dest.parent, stop=self.root)
        part = self._staged_path()
        try:
            with open(part, "xb") as out:
                got_sha, size = write(out)
                out.flush()
                os.fsync(out.fileno())
            if got_sha != sha:
                raise ArchiveError(f"{source} changed while it was being archived (sha256 {sha} -> {got_sha})")
            os.chmod(part, 0o444)
            created = _link_no_clobber(part, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
        _fsync_dir(dest.parent)
        return PutResult(sha, size, created)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # exists but is not ours to signal (EPERM), or cannot be asked: treat as alive
        return True
    return True


def _hash_stream(f: BinaryIO) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    while chunk := f.read(CHUNK):
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


def _link_no_clobber(part: Path, dest: Path) -> bool:
    """Publish ``part`` as ``dest`` atomically; False when ``dest`` already existed."""
    try:
        os.link(part, dest)
        return True
    except FileExistsError:
        return False
    except OSError:
        # No hard links on this filesystem: an atomic replace is the next best thing.
        if dest.exists():
            return False
        os.replace(part, dest)
        return True


def _makedirs(directory: Path, *, stop: Path) -> list[Path]:
    """Create ``directory`` and its missing parents up to ``stop``; the parents that gained an entry (for the
    caller to fsync before it relies on anything inside)."""
    missing: list[Path] = []
    d = directory
    while not d.exists():
        missing.append(d)
        if d == stop or d.parent == d:
            break
        d = d.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
    return [d.parent for d in missing]


def _makedirs_durable(directory: Path, *, stop: Path) -> None:
    """Create ``directory`` and fsync each parent that gained an entry, so a crash cannot lose it."""
    for parent in _makedirs(directory, stop=stop):
        _fsync_dir(parent)


_SYNC_THREADS = 16  # fsyncs in flight together: the file system commits them as one (measured: ~6x fewer ms each)
_sync_pool: ThreadPoolExecutor | None = None
_sync_pool_lock = threading.Lock()


def _in_parallel(fn: Callable[[T], None], items: Iterable[T]) -> list[Exception | None]:
    """``fn`` on every item at once on a shared pool of threads; each call's exception, or None."""
    global _sync_pool
    todo = list(items)
    if len(todo) <= 1:
        return [_error_of(fn, item) for item in todo]
    with _sync_pool_lock:
        if _sync_pool is None:
            _sync_pool = ThreadPoolExecutor(_SYNC_THREADS, thread_name_prefix="alirecon-fsync")
        pool = _sync_pool
    return list(pool.map(lambda item: _error_of(fn, item), todo))


def _error_of(fn: Callable[[T], None], item: T) -> Exception | None:
    try:
        fn(item)
    except Exception as exc:
        return exc
    return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)
