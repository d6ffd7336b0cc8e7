"""The sandbox provider's SFTP server: a real asyncssh server on loopback, driven by a simulated clock.

Why: the fetcher must be tested against a real SSH/SFTP stack (handshake, host keys, pipelined reads,
broken connections), and against time: files appear at their publication time and vanish after the
retention. This server serves a synthetic world's provider tree (``root/provider`` + ``root/publish.json``,
written by ``sandbox.world.build_world``) read-only, and injects the faults a fetcher must survive.

Layout served (remote path = ``/`` + the world-relative path):

- production trees as the world writes them: Alipay+ ``/v1/settlements/clearing|settlement/<participantId>/
  <yyyyMMdd>/...`` and Antom ``/v1/settlements/<customerId>/<yyyyMMdd>/...`` (alipayplus.md section 3,
  antom.md section 3);
- the Alipay+ sandbox environment: the same clearing and settlement files under ``/sandbox/settlements/...``
  (alipayplus.md section 3). The spec says sandbox reports are "generated every hour" with the T+1 day as
  directory (alipayplus.md section 9); we keep it simple [inferred]: a sandbox copy is published at the
  first hourly run after its cycle closes, ``sandbox_hour`` (default 01:00) UTC+8 on its directory date,
  i.e. seven hours before the production copy. Antom documents no SFTP sandbox (antom.md section 2), so
  it has none here.

Visibility: a file is listed and readable only while ``publish_at <= clock.now() < publish_at + retention``
(7 days by default: alipayplus.md section 9, antom.md section 2.1). A directory exists only while it holds
a visible file (the root always exists); listing or opening anything else answers "no such file".
Every write, remove, rename, mkdir, setstat or link is refused with a permission error.

Faults (``Faults``, replaceable or mutable while the server runs) select files by ``fnmatch`` patterns
over the remote path (``*`` also matches ``/``; an exact path matches itself):

- ``disconnects``: a read request that would serve the byte at ``offset - 1`` from a matching file while
  starting below ``offset`` is answered with the bytes up to ``offset`` only, then the TCP connection is
  dropped without an SSH goodbye (like a network failure). ``every_time=False`` fires once. With
  ``every_time=True`` a client that restarts from byte 0 never gets through, one that resumes at ``offset``
  does: the difference between restart and resume.
- ``slow_reads``: seconds of delay before answering each read request (requests on one SFTP session are
  answered in order, so delays add up); counted in ``ServerStats.delayed_reads`` / ``delay_seconds``.
- ``truncate``: serve only the first N bytes (negative N: all but the last -N); the size reported by
  stat/listing is the truncated size, as on a server that holds a cut file.
- ``late``: extra delay added to a file's publication time.
- ``republish``: from ``at`` on, ``path`` holds other bytes (mtime = ``at``; retention counted from ``at``).
  A path the world does not hold becomes a new file.
- ``hostile_dirs``: listings of matching directories also carry ``hostile_names`` (``../x``, ``/etc/passwd``,
  a name with a NUL byte, ``..``) as regular files. Opening such a name the way a naive client would
  (``dir + "/" + name`` or ``posixpath.join(dir, name)``) serves ``HOSTILE_CONTENT``, so a client that writes
  it under that name really escapes its folder in a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import hmac
import json
import os
import posixpath
import stat
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import asyncssh

from ..clock import UTC8
from .clock import SimClock

if TYPE_CHECKING:
    from .world import World

__all__ = [
    "HOSTILE_CONTENT",
    "HOSTILE_NAMES",
    "RETENTION",
    "Disconnect",
    "Faults",
    "FileVersion",
    "ProviderTree",
    "RemoteFile",
    "Republication",
    "SandboxServer",
    "ServerStats",
    "ServerThread",
    "connection_details",
    "default_start",
    "ensure_world",
    "load_host_key",
]

RETENTION = timedelta(days=7)  # alipayplus.md section 9; antom.md section 2.1
SANDBOX_HOUR = 1  # [inferred] from "generated every hour" (alipayplus.md section 9): first run after 24:00 UTC+8
ALIPAYPLUS_PRODUCTION = ("v1/settlements/clearing/", "v1/settlements/settlement/")
ALIPAYPLUS_SANDBOX = "sandbox/settlements/"
HOSTILE_NAMES = ("../x", "/etc/passwd", "evil\x00name.csv", "..")
HOSTILE_CONTENT = b"hostile bytes from the sandbox server: this file must never be written outside the archive\n"

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# What the provider holds


@dataclass(frozen=True)
class RemoteFile:
    """One file of the provider tree: its remote path, where its bytes live, when it is published."""

    path: str  # absolute remote path, "/v1/settlements/..."
    local: Path
    publish_at: datetime  # aware
    size: int


@dataclass(frozen=True)
class FileVersion:
    """What a path holds at one moment: the bytes a client gets (after faults) and when they appeared."""

    path: str
    published: datetime
    size: int  # bytes served (a truncated file reports its truncated size)
    local: Path | None = None
    data: bytes | None = None


def _valid(f: RemoteFile) -> RemoteFile:
    if f.path != _normalize(f.path) or f.path == "/":
        raise ValueError(f"not a normalized absolute remote file path: {f.path!r}")
    if f.publish_at.tzinfo is None:
        raise ValueError(f"publication time of {f.path} has no time zone")
    return f


def _alipayplus_sandbox_copy(rel: str, production_at: datetime, hour: int) -> tuple[str, datetime] | None:
    """The sandbox-environment twin of an Alipay+ production file (see the module docstring)."""
    for prefix in ALIPAYPLUS_PRODUCTION:
        if rel.startswith(prefix):
            day = production_at.astimezone(UTC8).date()
            return ALIPAYPLUS_SANDBOX + rel[len("v1/settlements/"):], datetime.combine(day, time(hour), UTC8)
    return None


class ProviderTree:
    """The files a provider will ever publish, by remote path (time and faults are applied later).

    Fixed at start, except ``add``: a file the provider only produces while the server runs (the barcode
    merchant's next-day files, made from what the payment gateway charged)."""

    def __init__(self, files: Iterable[RemoteFile]) -> None:
        self.files: dict[str, RemoteFile] = {}
        self._lock = threading.Lock()
        for f in files:
            self.files[_valid(f).path] = f

    def add(self, file: RemoteFile) -> None:
        """Publish one more file (at its ``publish_at``; before then no client sees it). Copy-on-write under a
        lock: the server's loop reads ``files`` from its own thread and never sees a dict being changed."""
        with self._lock:
            if _valid(file).path in self.files:
                raise ValueError(f"{file.path} is already in the provider tree (a re-publication is a Faults entry)")
            self.files = {**self.files, file.path: file}

    @classmethod
    def from_publish(cls, provider_dir: Path, publish: Mapping[str, datetime | str], *, sandbox: bool = True,
                     sandbox_hour: int = SANDBOX_HOUR) -> ProviderTree:
        """Files under ``provider_dir`` named by ``publish`` ({relative path: publication time})."""
        provider_dir = Path(provider_dir)
        files: list[RemoteFile] = []
        for rel, when in sorted(publish.items()):
            at = datetime.fromisoformat(when) if isinstance(when, str) else when
            local = provider_dir / rel
            if posixpath.isabs(rel) or ".." in rel.split("/"):
                raise ValueError(f"publication entry escapes the provider folder: {rel!r}")
            size = local.stat().st_size
            files.append(RemoteFile("/" + rel, local, at, size))
            twin = _alipayplus_sandbox_copy(rel, at, sandbox_hour) if sandbox else None
            if twin is not None:
                files.append(RemoteFile("/" + twin[0], local, twin[1], size))
        return cls(files)

    @classmethod
    def from_world_dir(cls, root: Path, **kwargs: Any) -> ProviderTree:
        """A world written by ``build_world``: ``root/provider`` and ``root/publish.json``."""
        root = Path(root)
        publish = json.loads((root / "publish.json").read_text(encoding="utf-8"))
        return cls.from_publish(root / "provider", publish, **kwargs)

    @classmethod
    def from_world(cls, world: World, **kwargs: Any) -> ProviderTree:
        return cls.from_publish(world.provider, world.publish, **kwargs)


def default_start(root: Path) -> datetime:
    """A useful simulated 'now' for a world folder: 09:00 UTC+8 the morning after its last cycle.

    Then every cycle's clearing files are on the server and none has expired yet (a 7-day world).
    Without ``truth.json`` (a tree not built by ``build_world``): the latest publication time.
    """
    root = Path(root)
    truth = root / "truth.json"
    if truth.is_file():
        meta = json.loads(truth.read_text(encoding="utf-8"))
        last = datetime.fromisoformat(meta["start"]).date() + timedelta(days=int(meta["days"]))
        return datetime.combine(last, time(9), UTC8)
    publish = json.loads((root / "publish.json").read_text(encoding="utf-8"))
    return max(datetime.fromisoformat(v) for v in publish.values())


def ensure_world(root: Path, *, seed: int = 42, days: int = 7) -> Path:
    """``root`` if it already holds a world (``publish.json``), else a new world built there."""
    root = Path(root)
    if not (root / "publish.json").is_file():
        from .model import WorldSpec
        from .world import build_world

        build_world(root, WorldSpec(seed=seed, days=days))
    return root


def load_host_key(path: Path) -> asyncssh.SSHKey:
    """The host key kept in ``path`` (created, mode 0600, when missing) so known_hosts survives restarts."""
    path = Path(path)
    if path.is_file():
        return asyncssh.read_private_key(path)
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key("openssh"))
    return key


# ---------------------------------------------------------------------------------------------
# Faults and counters


@dataclass
class Disconnect:
    """Drop the connection when a read of a matching file reaches byte ``offset`` (module docstring)."""

    pattern: str
    offset: int
    every_time: bool = False
    fired: int = 0  # how often it fired (the server counts)

    def armed(self) -> bool:
        return self.every_time or not self.fired


@dataclass(frozen=True)
class Republication:
    """From ``at`` (aware) on, ``path`` (absolute remote path) holds ``data``."""

    path: str
    at: datetime
    data: bytes


@dataclass
class Faults:
    """Switchable faults; the server reads them on every request, so changes apply at once."""

    disconnects: list[Disconnect] = field(default_factory=list)
    slow_reads: dict[str, float] = field(default_factory=dict)  # pattern -> seconds per read request
    truncate: dict[str, int] = field(default_factory=dict)  # pattern -> bytes kept (negative: cut from the end)
    late: dict[str, timedelta] = field(default_factory=dict)  # pattern -> publication delay
    republish: list[Republication] = field(default_factory=list)
    hostile_dirs: list[str] = field(default_factory=list)  # directory patterns listing hostile names
    hostile_names: tuple[str, ...] = HOSTILE_NAMES


def _matching(table: Mapping[str, T], path: str) -> T | None:
    """The value of the first pattern matching ``path`` (an exact key wins)."""
    if path in table:
        return table[path]
    for pattern, value in table.items():
        if fnmatch.fnmatchcase(path, pattern):
            return value
    return None


@dataclass
class ServerStats:
    """The server's own counters, so tests assert on what it did rather than on wall time."""

    connections: int = 0
    logins: int = 0
    auth_failures: int = 0  # rejected passwords
    listings: int = 0
    opens: int = 0
    read_requests: int = 0
    bytes_served: int = 0
    delayed_reads: int = 0
    delay_seconds: float = 0.0
    disconnects: int = 0
    refused_writes: int = 0
    hostile_listings: int = 0
    hostile_opens: int = 0
    reads_by_path: Counter[str] = field(default_factory=Counter)
    bytes_by_path: Counter[str] = field(default_factory=Counter)


# ---------------------------------------------------------------------------------------------
# The SFTP session


def _normalize(path: str) -> str:
    """An absolute normalized remote path ("//a/../b" -> "/b"); the session's working directory is "/"."""
    return "/" + posixpath.normpath(posixpath.join("/", path)).lstrip("/")


def _decode(path: bytes) -> str:
    try:
        return path.decode("utf-8")
    except UnicodeDecodeError:
        raise asyncssh.SFTPNoSuchFile("no such file") from None


def _file_attrs(size: int, when: datetime) -> asyncssh.SFTPAttrs:
    mtime = int(when.timestamp())
    return asyncssh.SFTPAttrs(type=asyncssh.FILEXFER_TYPE_REGULAR, size=size, permissions=stat.S_IFREG | 0o444,
                              uid=0, gid=0, nlink=1, atime=mtime, mtime=mtime)


def _dir_attrs(when: datetime | None) -> asyncssh.SFTPAttrs:
    mtime = int(when.timestamp()) if when else 0
    return asyncssh.SFTPAttrs(type=asyncssh.FILEXFER_TYPE_DIRECTORY, permissions=stat.S_IFDIR | 0o555,
                              uid=0, gid=0, nlink=2, atime=mtime, mtime=mtime)


class _OpenFile:
    """An open handle: keeps the version it was opened on, as a real file system keeps the old inode."""

    def __init__(self, version: FileVersion) -> None:
        self.version = version
        self._fd = os.open(version.local, os.O_RDONLY) if version.local is not None else None

    def read(self, offset: int, size: int) -> bytes:
        size = max(0, min(size, self.version.size - offset))
        if not size:
            return b""
        if self._fd is not None:
            return os.pread(self._fd, size, offset)
        assert self.version.data is not None
        return self.version.data[offset:offset + size]

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Only for asyncssh's sparse-ranges extension: the file is one data range, no holes."""
        if whence == getattr(os, "SEEK_DATA", -1):
            if offset >= self.version.size:
                raise OSError(errno.ENXIO, "no data after this offset")
            return offset
        if whence == getattr(os, "SEEK_HOLE", -1):
            return self.version.size
        raise OSError(errno.EINVAL, "seek is not supported on sandbox files")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Session(asyncssh.SFTPServer):
    """One client's SFTP session over the virtual, time-driven, read-only provider tree."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], owner: SandboxServer) -> None:
        super().__init__(chan)
        self._owner = owner
        self._hostile: set[str] = set()  # raw paths a naive client builds from hostile names we listed
        self._dropping = False

    # Nothing may ever reach the real file system through asyncssh's default implementations.
    def map_path(self, path: bytes) -> bytes:
        raise asyncssh.SFTPPermissionDenied("read-only sandbox")

    def _refuse(self, *_: object) -> None:
        self._owner.stats.refused_writes += 1
        raise asyncssh.SFTPPermissionDenied("read-only: the provider's reports cannot be changed")

    write = remove = rename = posix_rename = mkdir = rmdir = setstat = lsetstat = fsetstat = _refuse  # type: ignore[assignment]
    symlink = link = _refuse  # type: ignore[assignment]

    def readlink(self, path: bytes) -> bytes:
        raise asyncssh.SFTPNoSuchFile("no symbolic links here")

    def statvfs(self, path: bytes) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported("statvfs not supported")

    def fstatvfs(self, file_obj: object) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported("fstatvfs not supported")

    def fsync(self, file_obj: object) -> None:
        return None

    def realpath(self, path: bytes) -> bytes:
        return _normalize(_decode(path)).encode("utf-8")

    def _attrs(self, raw: str) -> asyncssh.SFTPAttrs:
        if raw in self._hostile:
            return _file_attrs(len(HOSTILE_CONTENT), self._owner.clock.now())
        path = _normalize(raw)
        now = self._owner.clock.now()
        version = self._owner.version(path, now)
        if version is not None:
            return _file_attrs(version.size, version.published)
        if path == "/" or self._owner.dir_visible(path, now):
            return _dir_attrs(self._owner.dir_mtime(path, now))
        raise asyncssh.SFTPNoSuchFile(f"no such file: {path}")

    def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        return self._attrs(_decode(path))

    lstat = stat

    def fstat(self, file_obj: object) -> asyncssh.SFTPAttrs:
        assert isinstance(file_obj, _OpenFile)
        return _file_attrs(file_obj.version.size, file_obj.version.published)

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        owner = self._owner
        owner.stats.listings += 1
        directory = _normalize(_decode(path))
        now = owner.clock.now()
        entries = owner.listing(directory, now)
        if entries is None:
            raise asyncssh.SFTPNoSuchFile(f"no such directory: {directory}")
        here = _dir_attrs(owner.dir_mtime(directory, now))
        yield asyncssh.SFTPName(b".", attrs=here)
        yield asyncssh.SFTPName(b"..", attrs=here)
        for name, attrs in entries:
            yield asyncssh.SFTPName(name.encode("utf-8"), attrs=attrs)
        if any(fnmatch.fnmatchcase(directory, p) for p in owner.faults.hostile_dirs):
            owner.stats.hostile_listings += 1
            raw_dir = _decode(path)
            for name in owner.faults.hostile_names:
                self._hostile.update({raw_dir.rstrip("/") + "/" + name, posixpath.join(raw_dir, name)})
                yield asyncssh.SFTPName(name.encode("utf-8"), attrs=_file_attrs(len(HOSTILE_CONTENT), now))

    def _check_read_only(self, writes: bool) -> None:
        if writes:
            self._refuse()

    def _open(self, path: bytes) -> _OpenFile:
        raw = _decode(path)
        now = self._owner.clock.now()
        if raw in self._hostile:
            self._owner.stats.hostile_opens += 1
            return _OpenFile(FileVersion(raw, now, len(HOSTILE_CONTENT), data=HOSTILE_CONTENT))
        version = self._owner.version(_normalize(raw), now)
        if version is None:
            raise asyncssh.SFTPNoSuchFile(f"no such file: {_normalize(raw)}")
        self._owner.stats.opens += 1
        return _OpenFile(version)

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> _OpenFile:
        self._check_read_only(bool(pflags & ~asyncssh.FXF_READ))
        return self._open(path)

    def open56(self, path: bytes, desired_access: int, flags: int, attrs: asyncssh.SFTPAttrs) -> _OpenFile:
        writes = asyncssh.ACE4_WRITE_DATA | asyncssh.ACE4_APPEND_DATA | asyncssh.ACE4_WRITE_ATTRIBUTES
        disposition = flags & asyncssh.FXF_ACCESS_DISPOSITION
        self._check_read_only(bool(desired_access & writes) or disposition != asyncssh.FXF_OPEN_EXISTING)
        return self._open(path)

    def close(self, file_obj: object) -> None:
        assert isinstance(file_obj, _OpenFile)
        file_obj.close()

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        assert isinstance(file_obj, _OpenFile)
        owner, path = self._owner, file_obj.version.path
        if self._dropping:  # requests already queued behind a dropped read never get bytes
            raise asyncssh.SFTPConnectionLost("connection dropped by a sandbox fault")
        owner.stats.read_requests += 1
        owner.stats.reads_by_path[path] += 1
        faults = owner.faults
        delay = _matching(faults.slow_reads, path)
        if delay:
            owner.stats.delayed_reads += 1
            owner.stats.delay_seconds += delay
            await asyncio.sleep(delay)
        data = file_obj.read(offset, size)
        for rule in faults.disconnects:
            if rule.armed() and offset < rule.offset <= offset + len(data) \
                    and fnmatch.fnmatchcase(path, rule.pattern):
                rule.fired += 1
                owner.stats.disconnects += 1
                data = data[:rule.offset - offset]
                self._dropping = True
                asyncio.get_running_loop().call_soon(_drop_when_flushed, self.connection, self.channel, 0)
                break
        owner.stats.bytes_served += len(data)
        owner.stats.bytes_by_path[path] += len(data)
        return data


def _drop_when_flushed(conn: asyncssh.SSHServerConnection, chan: asyncssh.SSHServerChannel[bytes],
                       tries: int) -> None:
    """Abort the TCP connection (no SSH goodbye) once the last answer has left the process.

    The answer may wait in two places: the SSH channel's send buffer (when the client's receive window is
    full, e.g. several transfers in flight on one connection) and the transport's write buffer. ``abort``
    discards both, so without waiting the bytes just served would be lost and the fault would not sit at its
    offset (with ``every_time`` it would fire again at an offset the client never received). The channel
    keeps draining while we wait: the connection is alive and window adjustments still arrive. Give up
    waiting after ~2 s (a client that stopped reading).
    """
    transport = getattr(conn, "_transport", None)  # asyncssh has no public handle on its transport
    queued = chan.get_write_buffer_size() + (transport.get_write_buffer_size() if transport is not None else 0)
    if queued and tries < 400:
        asyncio.get_running_loop().call_later(0.005, _drop_when_flushed, conn, chan, tries + 1)
        return
    conn.abort()


# ---------------------------------------------------------------------------------------------
# The server


class _SSHServer(asyncssh.SSHServer):
    """Authentication (passwords and/or authorized keys) and connection bookkeeping."""

    def __init__(self, owner: SandboxServer) -> None:
        self._owner = owner
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._owner._connections.add(conn)
        self._owner.stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._owner._connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        keys = self._owner._authorized.get(username)
        if keys is not None and self._conn is not None:
            self._conn.set_authorized_keys(keys)
        return True

    def password_auth_supported(self) -> bool:
        return bool(self._owner._users)

    def validate_password(self, username: str, password: str) -> bool:
        expected = self._owner._users.get(username)
        ok = hmac.compare_digest((expected or "\0").encode(), password.encode()) and expected is not None
        if not ok:
            self._owner.stats.auth_failures += 1
        return ok

    def public_key_auth_supported(self) -> bool:
        return bool(self._owner._authorized)

    def auth_completed(self) -> None:
        self._owner.stats.logins += 1


def _public_line(key: str | asyncssh.SSHKey) -> str:
    if isinstance(key, asyncssh.SSHKey):
        return key.export_public_key("openssh").decode("ascii").strip()
    return key.strip()


class SandboxServer:
    """A read-only SFTP server over a ``ProviderTree``, on simulated time, with switchable ``Faults``.

    ``users`` maps user names to passwords; ``authorized_keys`` maps user names to public keys (SSHKey
    objects or OpenSSH public-key lines). At least one is required. ``host_key`` is generated (ed25519)
    when not given. Use ``await start()`` / ``await close()`` on a running loop, or ``ServerThread``.
    """

    def __init__(self, tree: ProviderTree, clock: SimClock, *, users: Mapping[str, str] | None = None,
                 authorized_keys: Mapping[str, Sequence[str | asyncssh.SSHKey]] | None = None,
                 host_key: asyncssh.SSHKey | None = None, retention: timedelta = RETENTION,
                 faults: Faults | None = None) -> None:
        if not users and not authorized_keys:
            raise ValueError("the sandbox server needs password users or authorized keys")
        self.tree = tree
        self.clock = clock
        self.retention = retention
        self.faults = faults or Faults()
        self.stats = ServerStats()
        self.host_key = host_key or asyncssh.generate_private_key("ssh-ed25519")
        self._users = dict(users or {})
        self._authorized = {user: asyncssh.import_authorized_keys("\n".join(_public_line(k) for k in keys) + "\n")
                            for user, keys in (authorized_keys or {}).items()}
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self.host = "127.0.0.1"
        self.port: int | None = None

    # -- identity --------------------------------------------------------------------------------

    @property
    def host_key_line(self) -> str:
        """The host's public key as an OpenSSH line: ``ssh-ed25519 AAAA...``."""
        text = self.host_key.export_public_key("openssh").decode("ascii").split()
        return f"{text[0]} {text[1]}"

    @property
    def fingerprint(self) -> str:
        """``SHA256:...``, as ``ssh-keygen -lf`` and OpenSSH clients print it."""
        return str(self.host_key.get_fingerprint("sha256"))

    def known_hosts_line(self, host: str | None = None, port: int | None = None) -> str:
        """A known_hosts line for this server (``[host]:port`` form unless the port is 22)."""
        host = host or self.host
        port = port if port is not None else self.port
        if port is None:
            raise RuntimeError("the server has not started: no port yet")
        pattern = host if port == 22 else f"[{host}]:{port}"
        return f"{pattern} {self.host_key_line}"

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0: any free port) and return the port."""
        if self._acceptor is not None:
            raise RuntimeError("the sandbox server is already running")
        self._acceptor = await asyncssh.listen(
            host, port, server_factory=lambda: _SSHServer(self), server_host_keys=[self.host_key],
            sftp_factory=lambda chan: _Session(chan, self), allow_scp=False, agent_forwarding=False,
            x11_forwarding=False)
        self.host, self.port = host, self._acceptor.get_port()
        return self.port

    async def close(self) -> None:
        """Stop listening and close every open connection."""
        if self._acceptor is None:
            return
        self._acceptor.close()
        await self._acceptor.wait_closed()
        self._acceptor = None
        conns = list(self._connections)
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5)

    # -- what a client sees at a given time ------------------------------------------------------

    def version(self, path: str, now: datetime) -> FileVersion | None:
        """What ``path`` holds at ``now`` (after late, republish and truncate faults), or None."""
        faults = self.faults
        candidates: list[FileVersion] = []
        base = self.tree.files.get(path)
        if base is not None:
            delay = _matching(faults.late, path) or timedelta(0)
            candidates.append(FileVersion(path, base.publish_at + delay, base.size, local=base.local))
        candidates += [FileVersion(path, r.at, len(r.data), data=r.data) for r in faults.republish if r.path == path]
        live = [v for v in candidates if v.published <= now]
        if not live:
            return None
        current = max(live, key=lambda v: v.published)
        if now >= current.published + self.retention:
            return None
        keep = _matching(faults.truncate, path)
        if keep is not None:
            size = max(0, keep if keep >= 0 else current.size + keep)
            current = FileVersion(path, current.published, min(size, current.size), current.local, current.data)
        return current

    def visible_files(self, now: datetime | None = None) -> dict[str, FileVersion]:
        """Every file a client can see at ``now`` (default: the clock's now), by remote path."""
        now = now or self.clock.now()
        paths = set(self.tree.files) | {r.path for r in self.faults.republish}
        found = {p: self.version(p, now) for p in sorted(paths)}
        return {p: v for p, v in found.items() if v is not None}

    def dir_visible(self, directory: str, now: datetime) -> bool:
        return self.listing(directory, now) is not None

    def dir_mtime(self, directory: str, now: datetime) -> datetime | None:
        prefix = directory.rstrip("/") + "/"
        times = [v.published for p, v in self.visible_files(now).items() if p.startswith(prefix)]
        return max(times) if times else None

    def listing(self, directory: str, now: datetime) -> list[tuple[str, asyncssh.SFTPAttrs]] | None:
        """The entries of ``directory`` at ``now`` (sorted), or None when it does not exist then."""
        prefix = directory.rstrip("/") + "/"
        children: dict[str, list[FileVersion]] = {}
        files: dict[str, FileVersion] = {}
        for path, version in self.visible_files(now).items():
            if not path.startswith(prefix):
                continue
            name, sep, _ = path[len(prefix):].partition("/")
            if sep:
                children.setdefault(name, []).append(version)
            else:
                files[name] = version
        if not children and not files and directory != "/":
            return None
        out = [(name, _dir_attrs(max(v.published for v in vs))) for name, vs in children.items()]
        out += [(name, _file_attrs(v.size, v.published)) for name, v in files.items()]
        return sorted(out, key=lambda e: e[0])


class ServerThread:
    """Runs a ``SandboxServer`` on its own event loop in a daemon thread, for synchronous callers."""

    def __init__(self, server: SandboxServer, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = server
        self._host, self._port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Start the loop thread and the server; return the port."""
        if self._thread is not None:
            raise RuntimeError("already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="alirecon-sandbox-sftp", daemon=True)
        self._thread.start()
        ready.wait()
        try:
            return asyncio.run_coroutine_threadsafe(self.server.start(self._host, self._port), loop).result(30)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Close the server and its connections, stop the loop and join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(self.server.close(), loop).result(30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            self._loop = self._thread = None

    @property
    def port(self) -> int | None:
        return self.server.port

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def connection_details(server: SandboxServer, user: str) -> dict[str, Any]:
    """What a client needs to connect to a started server (``alirecon sandbox serve`` prints it), except the
    password: output never carries a credential, not even the sandbox's throwaway one."""
    if server.port is None:
        raise RuntimeError("the server has not started")
    return {"host": server.host, "port": server.port, "user": user,
            "known_hosts": server.known_hosts_line(), "host_key": server.host_key_line,
            "fingerprint": server.fingerprint, "simulated_now": server.clock.now().isoformat(),
            "speed": server.clock.speed, "retention_days": server.retention / timedelta(days=1),
            "trees": {"alipayplus": "/v1/settlements/clearing|settlement/<participantId>/<yyyyMMdd>",
                      "alipayplus_sandbox": "/sandbox/settlements/clearing|settlement/<participantId>/<yyyyMMdd>",
                      "antom": "/v1/settlements/<customerId>/<yyyyMMdd>"}}
