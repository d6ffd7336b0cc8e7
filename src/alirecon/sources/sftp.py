"""Fetching a provider's report directories over SFTP (asyncssh).

Why these choices (reconciliation-practice.md 5.3-5.4, issue 3):
- Reads are pipelined: up to ``max_requests`` reads of ``block_size`` in flight (asyncssh's defaults: the
  server's advertised read limit, 16-128 requests); one request at a time is latency-bound (5 MB/s against
  ~290 MB/s on loopback). Our own window (not ``read_parallel``) so that a broken connection leaves no
  orphaned request behind; the next read is sent from each answer's completion, so the window stays full
  whatever the disk does.
- Large files: the answers go to a writer thread that appends them in order to a private ``*.part`` file,
  hashes them and fdatasyncs every 32 MiB, so a broken transfer resumes from the part file's length when
  the remote file is unchanged (a sidecar records its size and mtime) and restarts otherwise; the part is
  fsynced and its size checked before anyone uses it.
- Small files (up to ``IN_MEMORY_MAX``) are received in memory and archived in groups by the caller: a part
  file, its sidecar and fsync cost more than the transfer. Their size is the listing's, confirmed by a read
  at that offset that must find the end of the file (sent with the others: no extra round trip); the bytes
  received before a disconnect are kept across the retries, as a part file's are.
- All writes of one event-loop turn leave in one ``send`` (``_CoalescingTransport``).
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
import io
import json
import logging
import os
import queue
import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

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
    """A verified download: every byte the server announced, in order, either fsynced in the ``*.part`` file
    ``part`` or (a small file) held in ``data`` with ``part`` None."""

    part: Path | None
    sha256: str
    size: int
    mtime: datetime | None
    ends_with_newline: bool
    attempts: int
    resumed_from: int  # bytes already received (part file or memory) when the successful attempt started
    data: bytes | None = None


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
            await self._close_locked(graceful=True)

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
            conn = await asyncssh.connect(
                cfg.host, cfg.port, username=cfg.username, known_hosts=self._known_hosts(),
                client_factory=lambda: _HostKeyCheck(self), config=None, agent_path=None,
                connect_timeout=cfg.timeout, login_timeout=cfg.timeout, ignore_encrypted=True,
                encryption_algs=_preferred_ciphers(), **creds)
            _coalesce_writes(conn)
            log.debug("connected to %s:%d, cipher %s", cfg.host, cfg.port, conn.get_extra_info("recv_cipher"))
            return conn
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

    async def _close_locked(self, *, graceful: bool = False) -> None:
        """Drop the connection: ``graceful`` (the end of a fetch) says goodbye so the server ends its session
        in order; a broken one is just cut."""
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            if graceful:
                conn.close()
            else:
                conn.abort()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.config.timeout):
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
        """``entry``'s bytes (in memory when small, else in ``part``, resumed when possible), retried on transient
        failures. A small file's received prefix is kept across the attempts, as a part file's is."""
        attempts = 0
        held = bytearray() if 0 <= entry.size <= IN_MEMORY_MAX else None

        async def once() -> Downloaded:
            nonlocal attempts, held
            attempts += 1

            async def op(sftp: asyncssh.SFTPClient) -> Downloaded:
                nonlocal held
                async with asyncio.timeout(self.config.timeout) as watchdog:  # pushed back on every answer
                    # block_size 0: each read() is exactly one request, so a short answer comes back to us
                    # (asyncssh's own reader would re-ask by itself and lose the partial block on a disconnect)
                    async with sftp.open(entry.path, "rb", block_size=0) as remote:
                        if held is not None:
                            got = await self._receive_small(sftp, remote, entry, held, progress, watchdog, attempts)
                            if got is not None:
                                return got
                            held = None  # not the file that was listed any more: the general path asks its size
                        return await self._receive_part(sftp, remote, entry, part, progress, watchdog, attempts)

            return await self._with_client(op)

        return await self._retrying(f"downloading {entry.path}", once)

    def _reader(self, sftp: asyncssh.SFTPClient, remote: asyncssh.SFTPClientFile, size: int,
                watchdog: asyncio.Timeout) -> _RangeReader:
        cfg = self.config
        block_size = cfg.block_size or sftp.limits.max_read_len or 16384  # asyncssh's default
        window = cfg.max_requests or max(16, min(asyncssh.sftp.MAX_SFTP_READ_LEN // block_size, 128))  # asyncssh's
        loop = asyncio.get_running_loop()
        return _RangeReader(remote, size, block_size, window,
                            on_answer=lambda: watchdog.reschedule(loop.time() + cfg.timeout))

    async def _receive_small(self, sftp: asyncssh.SFTPClient, remote: asyncssh.SFTPClientFile, entry: RemoteEntry,
                             held: bytearray, progress: ProgressFn | None, watchdog: asyncio.Timeout,
                             attempt: int) -> Downloaded | None:
        """A small file into memory without asking its size: the listing's size is read, and a one-byte read at
        that offset (sent with the others, so no extra round trip) must find the end of the file. None when
        the file is not that size any more (grown, cut), so the caller takes the general path."""
        size, start = entry.size, len(held)
        pieces: dict[int, bytes] = {}
        received = start

        def keep(at: int, data: bytes) -> None:
            nonlocal received
            pieces[at] = data
            received += len(data)
            if progress is not None:
                progress(entry.path, received, size)

        if progress is not None:
            progress(entry.path, start, size)
        reader = self._reader(sftp, remote, size, watchdog)
        probe = asyncio.ensure_future(remote.read(1, size))
        try:
            await reader.run(start, keep)
            beyond = await probe
        except TransferError:
            return None  # the file ended early: it was cut or re-written since the listing
        finally:
            _append_prefix(held, start, pieces)  # a broken attempt keeps what arrived: the retry resumes there
            if not probe.done():
                probe.cancel()
                await asyncio.gather(probe, return_exceptions=True)
        if beyond:
            return None
        data = bytes(held)
        last = data[-1:] if data else b"\n"
        return Downloaded(None, hashlib.sha256(data).hexdigest(), size, entry.mtime, last == b"\n", attempt, start,
                          data=data)

    async def _receive_part(self, sftp: asyncssh.SFTPClient, remote: asyncssh.SFTPClientFile, entry: RemoteEntry,
                            part: Path, progress: ProgressFn | None, watchdog: asyncio.Timeout,
                            attempt: int) -> Downloaded:
        """A file into its part file: the answers go to a writer thread (in order, hashed on the way) while the
        event loop keeps the reads in flight, so neither waits for the other."""
        attrs = await remote.stat()
        size = attrs.size if attrs.size is not None else entry.size
        mtime = _mtime(attrs)
        if size is None or size < 0:
            raise TransferError(f"{entry.path}: the server does not say how large the file is")
        loop = asyncio.get_running_loop()
        # the part file is opened (and its resume point found) on a worker thread: a slow disk must not stall
        # the event loop that every other transfer shares
        out = await asyncio.to_thread(_PartFile.open, part, {"path": entry.path, "size": size,
                                                             "mtime": mtime.isoformat() if mtime else None})
        writer = _PartWriter(out, loop)
        reader = self._reader(sftp, remote, size, watchdog)
        received = out.start
        if progress is not None:
            progress(entry.path, received, size)

        def keep(at: int, data: bytes) -> None:
            nonlocal received
            writer.put(at, data)
            received += len(data)
            if progress is not None:
                progress(entry.path, received, size)

        reader.throttle = writer
        ok = False
        try:
            await reader.run(out.start, keep)
            ok = True
        finally:
            # every block received is written before the part is closed, also when the transfer broke: the retry
            # resumes from there (a skipped block would make it ask again and, with a fault at a fixed offset, be
            # cut again)
            await writer.close(sync=ok)
        if out.written != size:
            raise TransferError(f"{entry.path}: received {out.written} of {size} bytes")
        return Downloaded(part, out.digest.hexdigest(), size, mtime, out.last == b"\n", attempt, out.start)


IN_MEMORY_MAX = 1 << 20  # files up to this size are received in memory: no part file, sidecar or writer thread
_SYNC_EVERY = 32 << 20  # bytes written between fdatasyncs of a part file: the final fsync has little left
_BACKLOG_MAX = 64 << 20  # bytes received but not yet on disk before the reads wait for the writer


def _append_prefix(held: bytearray, start: int, pieces: dict[int, bytes]) -> None:
    """Extend ``held`` (which ends at ``start``) with the contiguous run of ``pieces`` that follows it."""
    at = start
    while (piece := pieces.get(at)) is not None:
        held += piece
        at += len(piece)


class _RangeReader:
    """Reads ``start..size`` of a remote file with up to ``window`` requests of ``block`` bytes in flight.

    Each answer is handed to ``keep(offset, data)`` as it completes and the next request is sent from the
    same completion, so the window stays full whatever the consumer does (blocks usually complete in order,
    but nothing here relies on it). A short answer is asked again for its remainder; an empty one before
    ``size`` means the file shrank (a ``TransferError``, retried). ``throttle`` (the part writer) pauses new
    requests while too many received bytes wait for the disk. Every request still in flight is cancelled and
    awaited when the transfer stops, so a broken connection leaves no orphaned request behind.
    """

    def __init__(self, remote: asyncssh.SFTPClientFile, size: int, block: int, window: int,
                 on_answer: Callable[[], None]) -> None:
        self.remote, self.size, self.block, self.window = remote, size, block, window
        self.on_answer = on_answer
        self.throttle: _PartWriter | None = None
        self._pending: set[asyncio.Future[bytes]] = set()
        self._next = 0
        self._missing = 0
        self._done: asyncio.Future[None] | None = None
        self._keep: Callable[[int, bytes], None] = lambda at, data: None

    async def run(self, start: int, keep: Callable[[int, bytes], None]) -> None:
        loop = asyncio.get_running_loop()
        self._done, self._keep = loop.create_future(), keep
        self._next, self._missing = start, self.size - start
        try:
            if self._missing <= 0:
                return
            self._top_up()
            await self._done
        finally:
            pending, self._pending = list(self._pending), set()
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _request(self, at: int, length: int) -> None:
        task = cast("asyncio.Future[bytes]", asyncio.ensure_future(self.remote.read(length, at)))
        self._pending.add(task)
        task.add_done_callback(lambda t: self._answered(t, at, length))

    def _top_up(self) -> None:
        if self._done is None or self._done.done():
            return  # a writer's late call-back after the transfer ended: nothing more to ask
        if self.throttle is not None and self.throttle.full(self._top_up):
            return  # the writer calls back once it has caught up
        while self._next < self.size and len(self._pending) < self.window:
            length = min(self.block, self.size - self._next)
            self._request(self._next, length)
            self._next += length

    def _answered(self, task: asyncio.Future[bytes], at: int, length: int) -> None:
        done = self._done
        if task not in self._pending or task.cancelled() or done is None or done.done():
            return  # cancelled on the way out, or the transfer already failed (run() collects the rest)
        self._pending.discard(task)
        if (exc := task.exception()) is not None:
            done.set_exception(exc)
            return
        data = task.result()
        if not data:
            done.set_exception(TransferError(f"the file ended at byte {at} of {self.size}"))
            return
        self.on_answer()
        self._keep(at, data)
        self._missing -= len(data)
        if len(data) < length:
            self._request(at + len(data), length - len(data))
        if self._missing <= 0:
            done.set_result(None)
        else:
            self._top_up()


class _PartWriter:
    """A thread that appends the received blocks to a part file in offset order (holding early ones back) and
    hashes them on the way: the disk and sha256 work off the event loop, one hand-off per block, no waiting
    for it. ``close`` waits until every block handed over is written."""

    def __init__(self, out: _PartFile, loop: asyncio.AbstractEventLoop) -> None:
        self.out, self.loop = out, loop
        self._queue: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._backlog = 0
        self._resume: Callable[[], None] | None = None
        self._closed: asyncio.Future[None] = loop.create_future()
        self._error: BaseException | None = None
        self._sync = False
        self._thread = threading.Thread(target=self._run, name="alirecon-part-writer", daemon=True)
        self._thread.start()

    def put(self, at: int, data: bytes) -> None:
        with self._lock:
            self._backlog += len(data)
        self._queue.put((at, data))

    def full(self, resume: Callable[[], None]) -> bool:
        """True (and ``resume`` is called from the loop later) when the disk is behind by ``_BACKLOG_MAX``."""
        with self._lock:
            if self._backlog < _BACKLOG_MAX:
                return False
            self._resume = resume
            return True

    async def close(self, *, sync: bool) -> None:
        """Write what was handed over, fsync it when ``sync``, close the part; re-raise a write failure."""
        self._sync = sync
        self._queue.put(None)
        await asyncio.shield(self._closed)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        early: dict[int, bytes] = {}
        try:
            while (item := self._queue.get()) is not None:
                at, data = item
                if self._error is not None:
                    continue
                early[at] = data
                try:
                    while (block := early.pop(self.out.written, None)) is not None:
                        self.out.write(block)
                        self._written(len(block))
                except BaseException as exc:  # reported by close(); the bytes before it stay for a resume
                    self._error = exc
            if self._sync and self._error is None:
                try:
                    self.out.finish()
                except BaseException as exc:
                    self._error = exc
        finally:
            self.out.close()
            self.loop.call_soon_threadsafe(_set_done, self._closed)

    def _written(self, n: int) -> None:
        with self._lock:
            self._backlog -= n
            resume = self._resume if self._backlog < _BACKLOG_MAX // 2 else None
            if resume is not None:
                self._resume = None
        if resume is not None:
            self.loop.call_soon_threadsafe(resume)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _PartFile:
    """A part file being appended to: its sha256 and last byte follow every write (``Downloaded``).

    Written by one ``_PartWriter`` thread; unbuffered, so each write and hash releases the GIL.
    """

    def __init__(self, part: Path, start: int, digest: Any) -> None:
        self.start = self.written = start
        self.digest = digest
        self.last = b"\n" if start == 0 else _last_byte(part)
        self._file: io.FileIO | None = open(part, "r+b", buffering=0)  # noqa: SIM115 - closed by close()
        self._file.seek(start)
        self._synced = start

    @classmethod
    def open(cls, part: Path, remote: dict[str, Any]) -> _PartFile:
        start, digest = _resume_point(part, remote)
        return cls(part, start, digest)

    def write(self, data: bytes) -> None:
        assert self._file is not None
        view = memoryview(data)
        while view:
            view = view[self._file.write(view) or 0:]
        self.digest.update(data)
        self.written += len(data)
        self.last = data[-1:]
        if self.written - self._synced >= _SYNC_EVERY:  # the disk works while the network does
            os.fdatasync(self._file.fileno())
            self._synced = self.written

    def finish(self) -> None:
        assert self._file is not None
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _CoalescingTransport:
    """The connection's transport, with every write of one event-loop turn sent as one ``send``.

    asyncssh writes each SSH packet on its own, and puts an empty ignore packet before each one, so every
    SFTP request cost two ``send`` calls (and two wake-ups of sshd): 8 per small file. Requests sent in one
    turn (the reads of a window, the requests of parallel downloads) now share one (bench/sftp_bench.py
    counted 8,056 sends for 1,000 small files before, 824 after). Order is kept; everything else is the
    wrapped transport's own.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._buffer: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._buffer:
            self._loop.call_soon(self.flush)
        self._buffer.append(data)

    def flush(self) -> None:
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _coalesce_writes(conn: asyncssh.SSHClientConnection) -> None:
    """Install ``_CoalescingTransport`` on an open connection (asyncssh has no option for it: ``_transport`` is
    the attribute its ``_send`` writes to; left alone when a future version names it otherwise)."""
    transport = getattr(conn, "_transport", None)
    if isinstance(transport, asyncio.Transport):
        conn._transport = _CoalescingTransport(transport, asyncio.get_running_loop())  # type: ignore[assignment]


def _preferred_ciphers() -> list[str]:
    """asyncssh's default ciphers with AES-GCM first: it is one OpenSSL AEAD call per packet, where asyncssh's
    chacha20-poly1305 (its first choice) builds several cipher contexts per packet in Python, which made it the
    largest cost of a transfer (bench/sftp_bench.py). Every server that offers neither still gets the rest."""
    defaults = [alg.decode("ascii") for alg in asyncssh.encryption.get_default_encryption_algs()]
    first = [alg for alg in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") if alg in defaults]
    return first + [alg for alg in defaults if alg not in first]


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
