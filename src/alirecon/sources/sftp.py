"""Fetching a provider's report directories over SFTP (asyncssh).

Why these choices (reconciliation-practice.md 5.3-5.4, issue 3):
- Reads are pipelined: up to ``max_requests`` reads of ``block_size`` in flight (asyncssh's defaults: the
  server's advertised read limit, 16-128 requests); one request at a time is latency-bound (5 MB/s against
  ~290 MB/s on loopback). Our own window (not ``read_parallel``) so that a broken connection leaves no
  orphaned request behind and the blocks are consumed in order.
- Bytes are appended in order to a private ``*.part`` file and hashed on the way, so a broken transfer
  resumes from the part file's length when the remote file is unchanged (a sidecar records its size and
  mtime) and restarts otherwise; the part is fsynced and its size checked before anyone uses it.
- Disconnects, timeouts and short reads are retried with exponential back-off (tenacity); the shared
  connection is re-opened once however many transfers noticed it broke. Host-key and authentication
  failures are never retried.
- Host keys are checked against a known_hosts file by default; an unknown or changed key is refused with
  the host and the offered fingerprint. The explicit opt-out records a first-contact key and says so
  loudly; a changed key is refused whatever the setting.
- Remote names are untrusted: only plain names pass ``check_remote_name``, and no remote name is ever
  used to build a local path here (part files are named by a hash of the remote path).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import threading
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import asyncssh
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from ..config import SftpConfig
from ..errors import ConfigError
from . import (
    AuthError,
    BadRemoteName,
    FetchError,
    HostKeyChanged,
    HostKeyError,
    RemoteEntry,
    TransferError,
    UnknownHostKey,
    check_remote_name,
)

__all__ = ["Downloaded", "Listing", "SftpSource", "is_transient"]

log = logging.getLogger("alirecon.fetch")
T = TypeVar("T")
ProgressFn = Callable[[str, int, int], None]  # (remote path, bytes received, total bytes)

_CHUNK = 4 * 1024 * 1024
_SKIPPED_TYPES = {asyncssh.FILEXFER_TYPE_DIRECTORY, asyncssh.FILEXFER_TYPE_SYMLINK, asyncssh.FILEXFER_TYPE_SPECIAL,
                  asyncssh.FILEXFER_TYPE_SOCKET, asyncssh.FILEXFER_TYPE_CHAR_DEVICE,
                  asyncssh.FILEXFER_TYPE_BLOCK_DEVICE, asyncssh.FILEXFER_TYPE_FIFO}
_NETWORK_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNABORTED, errno.ETIMEDOUT, errno.ENETDOWN}


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying: the network or the server hiccuped; never a refusal of who we are."""
    if isinstance(exc, HostKeyError | AuthError | ConfigError | BadRemoteName):
        return False
    if isinstance(exc, asyncssh.HostKeyNotVerifiable | asyncssh.PermissionDenied):
        return False
    if isinstance(exc, asyncssh.SFTPNoSuchFile | asyncssh.SFTPPermissionDenied):
        return False  # the file went away (retention) or is not ours to read: retrying cannot help
    if isinstance(exc, TransferError | TimeoutError | ConnectionError | socket.gaierror):
        return True
    if isinstance(exc, asyncssh.DisconnectError | asyncssh.ChannelOpenError | asyncssh.SFTPError):
        return True
    return isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS


@dataclass
class Listing:
    """What the date window's directories hold: plain files, and the names refused as hostile."""

    directories: list[str]
    entries: list[RemoteEntry] = field(default_factory=list)
    refused: list[BadRemoteName] = field(default_factory=list)


@dataclass(frozen=True)
class Downloaded:
    """A verified ``*.part`` file: every byte the server announced, in order, fsynced."""

    part: Path
    sha256: str
    size: int
    mtime: datetime | None
    ends_with_newline: bool
    attempts: int
    resumed_from: int  # bytes already in the part file when the successful attempt started


def _mtime(attrs: asyncssh.SFTPAttrs) -> datetime | None:
    if attrs.mtime_ns is not None:
        return datetime.fromtimestamp(attrs.mtime_ns / 1e9, UTC)
    return datetime.fromtimestamp(attrs.mtime, UTC) if attrs.mtime is not None else None


class _HostKeyCheck(asyncssh.SSHClient):
    """asyncssh asks this about every key not already trusted by the known_hosts we gave it."""

    def __init__(self, source: SftpSource) -> None:
        self._source = source

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        return self._source._untrusted_key(host, addr, port, key)


class SftpSource:
    """One account's SFTP server: ``list`` a window of dated directories, ``download`` files to part files.

    Use as an async context manager (the connection is opened on first use and shared by concurrent
    downloads). ``accept_new_host_key`` overrides the config's setting (the CLI flag).
    """

    def __init__(self, config: SftpConfig, *, account_id: str, family: str, known_hosts: Path,
                 key_root: Path | None = None, accept_new_host_key: bool | None = None) -> None:
        self.config = config
        self.account_id = account_id
        self.family = family
        self.known_hosts = Path(known_hosts)
        self._key_root = key_root
        self.accept_new = config.accept_new_host_key if accept_new_host_key is None else accept_new_host_key
        self.notes: list[str] = []  # things the user must hear about (a recorded first-contact key)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._generation = 0
        self._lock = asyncio.Lock()
        self._refusal: HostKeyError | None = None

    async def __aenter__(self) -> SftpSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        async with self._lock:
            await self._close_locked()

    # -- connecting ------------------------------------------------------------------------------

    def _credentials(self) -> dict[str, Any]:
        cfg = self.config
        out: dict[str, Any] = {"password": None, "client_keys": None}
        if cfg.password_env is not None:
            password = os.environ.get(cfg.password_env)
            if password is None:
                raise ConfigError(f"sftp.password_env: the environment variable {cfg.password_env} is not set")
            out["password"] = password
        if cfg.key_file is not None:
            path = cfg.key_file
            if not path.is_absolute() and self._key_root is not None:
                path = self._key_root / path
            passphrase = None
            if cfg.key_passphrase_env is not None:
                passphrase = os.environ.get(cfg.key_passphrase_env)
                if passphrase is None:
                    raise ConfigError(f"sftp.key_passphrase_env: the environment variable {cfg.key_passphrase_env} "
                                      "is not set")
            try:
                out["client_keys"] = [asyncssh.read_private_key(path, passphrase)]
            except OSError as exc:
                raise ConfigError(f"sftp.key_file {path}: {exc.strerror or exc}") from None
            except asyncssh.KeyImportError as exc:  # fixed texts ("Incorrect passphrase"), never key material
                raise ConfigError(f"sftp.key_file {path}: {exc}") from None
        return out

    def _known_hosts(self) -> asyncssh.SSHKnownHosts:
        try:
            text = self.known_hosts.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        return asyncssh.import_known_hosts(text)

    def _host_pattern(self) -> str:
        return self.config.host if self.config.port == 22 else f"[{self.config.host}]:{self.config.port}"

    def _untrusted_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        """The server offered a key our known_hosts does not trust: record it (first contact, opted in) or refuse."""
        fingerprint = key.get_fingerprint("sha256")
        where = str(self.known_hosts)
        matched = asyncssh.match_known_hosts(self._known_hosts(), host, addr, None if port == 22 else port)
        if any(matched[:3]):  # the host has other keys on record: an impostor, or a re-keyed server
            self._refusal = HostKeyChanged(
                self.config.host, self.config.port, fingerprint, where,
                f"{where} records another key for it. Someone may be intercepting the connection; if the "
                "provider really changed its key, verify the new fingerprint with them and replace the line")
            return False
        if not self.accept_new:
            self._refusal = UnknownHostKey(
                self.config.host, self.config.port, fingerprint, where,
                f"it is not in {where}. Verify the fingerprint with the provider, then add the key to that file "
                "or fetch once with --accept-new-host-key (sftp.accept_new_host_key) to record it")
            return False
        algorithm, blob = key.export_public_key("openssh").decode("ascii").split()[:2]
        line = f"{self._host_pattern()} {algorithm} {blob}\n"
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(self.known_hosts, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        note = (f"first contact with {self.config.host}:{self.config.port}: its host key {fingerprint} was "
                f"NOT verified and has been recorded in {where}. Check this fingerprint with the provider.")
        log.warning(note)
        self.notes.append(note)
        return True

    async def _connect(self) -> asyncssh.SSHClientConnection:
        cfg = self.config
        creds = self._credentials()
        self._refusal = None
        try:
            return await asyncssh.connect(
                cfg.host, cfg.port, username=cfg.username, known_hosts=self._known_hosts(),
                client_factory=lambda: _HostKeyCheck(self), config=None, agent_path=None,
                connect_timeout=cfg.timeout, login_timeout=cfg.timeout, ignore_encrypted=True,
                encryption_algs=_preferred_ciphers(), **creds)
        except asyncssh.HostKeyNotVerifiable:
            raise (self._refusal or UnknownHostKey(cfg.host, cfg.port, "(unknown)", str(self.known_hosts),
                                                   "the key could not be verified")) from None
        except asyncssh.PermissionDenied:
            methods = " and ".join(m for m, v in (("password", creds["password"]), ("key", creds["client_keys"]))
                                   if v is not None)
            raise AuthError(f"{cfg.username}@{cfg.host}:{cfg.port} refused our {methods} credentials") from None

    async def _client(self) -> tuple[int, asyncssh.SFTPClient]:
        async with self._lock:
            if self._sftp is None:
                conn = await self._connect()
                try:
                    self._sftp = await conn.start_sftp_client()
                except BaseException:
                    conn.abort()
                    raise
                self._conn = conn
                self._generation += 1
            return self._generation, self._sftp

    async def _drop(self, generation: int) -> None:
        """Close the connection a failure was seen on (once, whichever transfer noticed it first)."""
        async with self._lock:
            if generation == self._generation:
                await self._close_locked()

    async def _close_locked(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.abort()
            with contextlib.suppress(Exception):
                await conn.wait_closed()

    async def _retrying(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        cfg = self.config

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.info("%s: %s (%s); retry %d of %d", what, type(exc).__name__, exc, state.attempt_number,
                     cfg.retries)

        retrying = AsyncRetrying(stop=stop_after_attempt(cfg.retries + 1), reraise=True,
                                 wait=wait_exponential(multiplier=cfg.backoff_initial, max=cfg.backoff_max)
                                 + wait_random(0, cfg.backoff_initial / 2),
                                 retry=retry_if_exception(is_transient), before_sleep=before_sleep)
        try:
            return await retrying(fn)
        except Exception as exc:
            if is_transient(exc):  # the retries are spent: one typed error that says so
                raise FetchError(f"{what} ({cfg.host}:{cfg.port}): gave up after {cfg.retries + 1} attempts: "
                                 f"{type(exc).__name__}: {exc}") from exc
            raise

    async def _with_client(self, op: Callable[[asyncssh.SFTPClient], Awaitable[T]]) -> T:
        generation, sftp = await self._client()
        try:
            return await op(sftp)
        except BaseException as exc:
            if is_transient(exc) or isinstance(exc, asyncio.CancelledError):
                await self._drop(generation)
            raise

    # -- listing ---------------------------------------------------------------------------------

    def directories(self, dates: Sequence[date]) -> list[str]:
        """The window's remote directories, in template order then date order, without repeats."""
        out: list[str] = []
        for template in self.config.directory_templates(self.family):
            for day in dates:
                path = template.format(account_id=self.account_id, date=day)
                if path not in out:
                    out.append(path)
        return out

    async def listing(self, dates: Sequence[date]) -> Listing:
        """Every plain file in the window's directories; hostile names are refused and reported, never used."""
        listing = Listing(self.directories(dates))
        for directory in listing.directories:

            async def read(d: str = directory) -> list[tuple[bytes, asyncssh.SFTPAttrs]]:
                return await self._with_client(lambda sftp: self._readdir(sftp, d))

            names = await self._retrying(f"listing {directory}", read)
            for raw_name, attrs in names:
                if raw_name in (b".", b"..") and attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                    continue
                try:
                    name = check_remote_name(raw_name, directory)
                except BadRemoteName as exc:
                    log.warning("%s", exc)
                    listing.refused.append(exc)
                    continue
                if attrs.type in _SKIPPED_TYPES:
                    continue
                size = attrs.size if attrs.size is not None else -1
                listing.entries.append(RemoteEntry(f"{directory.rstrip('/')}/{name}", name, size, _mtime(attrs)))
        listing.entries.sort(key=lambda e: e.path)
        return listing

    async def _readdir(self, sftp: asyncssh.SFTPClient, directory: str) -> list[tuple[bytes, asyncssh.SFTPAttrs]]:
        try:
            async with asyncio.timeout(self.config.timeout):
                entries = await sftp.readdir(directory.encode("utf-8"))  # bytes: names come back undecoded
        except asyncssh.SFTPNoSuchFile:
            return []  # no files for that day (yet, or any more)
        out = []
        for e in entries:
            name = e.filename if isinstance(e.filename, bytes) else str(e.filename).encode("utf-8", "surrogateescape")
            out.append((name, e.attrs))
        return out

    # -- downloading -----------------------------------------------------------------------------

    async def download(self, entry: RemoteEntry, part: Path, progress: ProgressFn | None = None) -> Downloaded:
        """``entry``'s bytes into ``part`` (resumed when possible), retried on transient failures."""
        attempts = 0

        async def once() -> Downloaded:
            nonlocal attempts
            attempts += 1
            return await self._with_client(lambda sftp: self._download_once(sftp, entry, part, progress, attempts))

        return await self._retrying(f"downloading {entry.path}", once)

    async def _download_once(self, sftp: asyncssh.SFTPClient, entry: RemoteEntry, part: Path,
                             progress: ProgressFn | None, attempt: int) -> Downloaded:
        cfg = self.config
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(cfg.timeout) as watchdog:  # rescheduled on every block: a stall times out
            # block_size 0: each read() is exactly one request, so a short answer comes back to us (asyncssh's
            # own reader would re-ask by itself and lose the partial block when the connection drops)
            async with sftp.open(entry.path, "rb", block_size=0) as remote:
                attrs = await remote.stat()
                size = attrs.size if attrs.size is not None else entry.size
                mtime = _mtime(attrs)
                if size is None or size < 0:
                    raise TransferError(f"{entry.path}: the server does not say how large the file is")
                # local files are opened, written and fsynced on a worker thread: a slow disk must not stall
                # the event loop that every other transfer shares (with small files, open/fsync dominate)
                out = await asyncio.to_thread(_PartFile.open, part, {"path": entry.path, "size": size,
                                                                     "mtime": mtime.isoformat() if mtime else None})
                writing: asyncio.Future[None] | None = None
                try:
                    received = out.start
                    if progress is not None:
                        progress(entry.path, received, size)
                    block_size = cfg.block_size or sftp.limits.max_read_len or 16384  # asyncssh's default
                    async with contextlib.aclosing(_pipelined(remote, out.start, size, block_size,
                                                              cfg.max_requests)) as blocks:
                        async for data in blocks:
                            watchdog.reschedule(loop.time() + cfg.timeout)
                            if writing is not None:  # one block on the disk while the next arrives, in order
                                await writing
                            writing = loop.run_in_executor(None, out.write, data)
                            received += len(data)
                            if progress is not None:
                                progress(entry.path, received, size)
                    if writing is not None:
                        await writing
                    await asyncio.to_thread(out.finish)
                finally:
                    await _keep_received(writing, out)
        if out.written != size:
            raise TransferError(f"{entry.path}: received {out.written} of {size} bytes")
        return Downloaded(part, out.digest.hexdigest(), size, mtime, out.last == b"\n", attempt, out.start)


_SYNC_EVERY = 32 << 20  # bytes written between fdatasyncs of a part file: the final fsync has little left


async def _keep_received(writing: asyncio.Future[None] | None, out: _PartFile) -> None:
    """Close the part after the last block handed to the disk is written: a broken transfer keeps every byte
    it received, so the retry resumes from there (a skipped block would make it ask again and, with a
    fault at a fixed offset, be cut again)."""
    try:
        if writing is not None:
            if not writing.done():
                await asyncio.wait([writing])
            if not writing.cancelled():
                writing.exception()  # retrieved: the transfer's own error is the one reported
    finally:
        out.close()


class _PartFile:
    """A part file being appended to: its sha256 and last byte follow every write (``Downloaded``).

    Written from worker threads one call at a time (the lock also makes ``close`` wait for a running write).
    """

    def __init__(self, part: Path, start: int, digest: Any) -> None:
        self.start = self.written = start
        self.digest = digest
        self.last = b"\n" if start == 0 else _last_byte(part)
        self._file: BinaryIO | None = open(part, "r+b")  # noqa: SIM115 - closed by close()
        self._file.seek(start)
        self._lock = threading.Lock()
        self._synced = start

    @classmethod
    def open(cls, part: Path, remote: dict[str, Any]) -> _PartFile:
        start, digest = _resume_point(part, remote)
        return cls(part, start, digest)

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._file is None:  # the transfer was abandoned while this write waited for a thread
                return
            self._file.write(data)
            self.digest.update(data)
            self.written += len(data)
            self.last = data[-1:]
            if self.written - self._synced >= _SYNC_EVERY:  # the disk works while the network does
                self._file.flush()
                os.fdatasync(self._file.fileno())
                self._synced = self.written

    def finish(self) -> None:
        with self._lock:
            assert self._file is not None
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _preferred_ciphers() -> list[str]:
    """asyncssh's default ciphers with AES-GCM first: it is one OpenSSL AEAD call per packet, where asyncssh's
    chacha20-poly1305 (its first choice) builds several cipher contexts per packet in Python, which made it the
    largest cost of a transfer (bench/sftp_bench.py). Every server that offers neither still gets the rest."""
    defaults = [alg.decode("ascii") for alg in asyncssh.encryption.get_default_encryption_algs()]
    first = [alg for alg in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") if alg in defaults]
    return first + [alg for alg in defaults if alg not in first]


async def _pipelined(remote: asyncssh.SFTPClientFile, start: int, size: int, block: int,
                     max_requests: int | None) -> AsyncGenerator[bytes]:
    """The bytes ``start..size`` in order, with up to ``max_requests`` reads of ``block`` bytes in flight.

    ``remote`` is opened with block_size 0, so each read is one SFTP request. A short answer is asked again
    for its remainder; an empty one before ``size`` means the file shrank (a ``TransferError``, retried).
    Every request still in flight is cancelled and awaited when the caller stops or the connection breaks.
    """
    # asyncssh's own default (sftp.py): 16-128 requests, fewer for larger blocks
    window = max_requests or max(16, min(asyncssh.sftp.MAX_SFTP_READ_LEN // block, 128))
    pending: deque[tuple[int, int, asyncio.Task[bytes]]] = deque()
    offset = start

    def request(at: int, length: int) -> tuple[int, int, asyncio.Task[bytes]]:
        return at, length, asyncio.ensure_future(remote.read(length, at))

    try:
        while offset < size or pending:
            while offset < size and len(pending) < window:
                length = min(block, size - offset)
                pending.append(request(offset, length))
                offset += length
            at, length, task = pending.popleft()
            data = await task
            if not data:
                raise TransferError(f"the file ended at byte {at} of {size}")
            if len(data) < length:
                pending.appendleft(request(at + len(data), length - len(data)))
            yield data
    finally:
        for _, _, task in pending:
            task.cancel()
        await asyncio.gather(*(t for _, _, t in pending), return_exceptions=True)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def _resume_point(part: Path, remote: dict[str, Any]) -> tuple[int, Any]:
    """Where to continue: the part file's length when it holds a prefix of this very remote file, else 0.

    The sidecar ``<part>.json`` says which remote file (path, size, mtime) the part belongs to; bytes are
    only ever appended in order, so the part's length is exactly the prefix received.
    """
    sidecar = part.with_suffix(".json")
    digest = hashlib.sha256()
    try:
        known = json.loads(sidecar.read_text(encoding="utf-8"))
        have = part.stat().st_size
    except (OSError, ValueError):
        known, have = None, 0
    if known == remote and 0 < have <= remote["size"]:
        with open(part, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        return have, digest
    part.parent.mkdir(parents=True, exist_ok=True)
    tmp = sidecar.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(remote), encoding="utf-8")
    os.replace(tmp, sidecar)
    with open(part, "wb"):
        pass
    return 0, digest
