"""Fetching: list a source, download what is new, archive it, record it in the manifest, ingest it.

Why here and not in the sources: every source (SFTP, a folder) must be recorded the same way, and the
order of steps is what makes a crash harmless (DESIGN.md "Idempotent everywhere"):
1. ``remote_seen``: the listing is recorded first (``status`` can tell "on the server, not fetched");
2. the bytes are downloaded to a private part file (a small file: into memory), checked (size, then the
   format's structure: a missing ``<END>`` means the provider may still be writing, so the file is not
   complete and is fetched again next time), archived by sha256 (small files in groups, one fsync round
   for the group) and durable before the next step;
3. ``remote_fetched`` marks the version complete; only then
4. ``ingest`` parses it, and ``remote_ingested`` notes that it was handed over.
A crash between any two steps leaves a state the next run completes: an unfinished download resumes or
restarts, archived bytes are found by their hash, complete-but-not-ingested files are ingested.

``daily`` chains fetch + ingest + check + reconcile for every account under a workspace lock so cron may
start it every hour: a second run while one is in progress returns at once, and a run that finds nothing
new does not start new check/reconcile runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

from . import errors, pipeline
from .archive import PutResult
from .clock import UTC8
from .config import CONFIG_NAME, AccountConfig
from .errors import ConfigError
from .formats import registry
from .formats.base import TableReport
from .formats.engine import SourceFile, read_trailer
from .sources import AuthError, FetchError, HostKeyError, RemoteEntry
from .sources.billzip import BillZipError, extract_bill_zip
from .sources.openapi import (
    BillNotClosed,
    BillNotReady,
    BillPeriod,
    DownloadFailed,
    OpenApiClient,
    OpenApiConfigError,
    ResponseSignatureError,
    TransientApiError,
)
from .sources.sftp import Downloaded, SftpSource
from .warehouse import TMP_DIR, Fetched, FileOutcome, IngestReport, LedgerIngest, Listed, RemoteFile, Workspace

__all__ = [
    "DailySummary",
    "FetchProgress",
    "FetchSummary",
    "FileFetch",
    "WorkspaceBusy",
    "daily",
    "fetch_account",
    "fetch_openapi",
    "ingest_fetched",
    "is_bill_zip",
    "openapi_periods",
    "openapi_remote_path",
    "run_daily",
    "structural_problem",
    "workspace_lock",
]

LOCK_NAME = ".alirecon.lock"
PART_DIR = "tmp"  # under the archive root: same filesystem as the objects, invisible to Archive iteration


class WorkspaceBusy(errors.AlireconError):
    """Another fetch or daily run holds the workspace lock."""


class FetchProgress:
    """Hooks for showing a fetch as it happens (the CLI draws byte progress bars); the defaults do nothing."""

    def listed(self, account: str, files: int, to_fetch: int, total_bytes: int) -> None:
        """A listing is complete: ``files`` listed, ``to_fetch`` of them (``total_bytes``) will be downloaded."""

    def transfer(self, path: str, done: int, total: int) -> None:
        """``done`` of ``total`` bytes of ``path`` are in its part file."""

    def finished(self, outcome: FileFetch) -> None:
        """One file is settled (downloaded, skipped, failed, refused)."""


@dataclass(frozen=True)
class FileFetch:
    """What happened to one listed file.

    ``status``: ``new`` (first version archived), ``republished`` (the same path with other bytes: a new
    version), ``unchanged`` (downloaded again, same bytes as a known version), ``skipped`` (the manifest
    already has it with the same size and mtime), ``incomplete`` (archived, but its structure says the
    provider may still be writing it: fetched again next time), ``failed`` (no usable bytes after the
    retries) or ``refused`` (a hostile name: never touched the disk).
    """

    path: str
    name: str
    status: str
    size: int | None = None
    sha256: str | None = None
    version: int | None = None
    attempts: int = 0
    resumed_from: int = 0
    error: str | None = None
    code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "status": self.status, "size": self.size,
                "sha256": self.sha256, "version": self.version, "attempts": self.attempts,
                "resumed_from": self.resumed_from, "error": self.error, "code": self.code}


_DOWNLOADED = ("new", "republished", "unchanged", "incomplete")
_FAILED = ("failed", "refused", "incomplete")


@dataclass
class FetchSummary:
    """One account's fetch: counts, per-file outcomes and what the ingest made of the new files.

    ``bytes`` counts the sizes of the files downloaded in this run; ``notes`` are warnings the user must
    see (a host key recorded on first contact).
    """

    account: str
    source: str
    since: date | None = None
    until: date | None = None
    directories: list[str] = field(default_factory=list)
    files: list[FileFetch] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    ingest: IngestReport | None = None
    error: str | None = None  # the fetch could not run at all (host key, authentication, configuration)

    def finish(self, outcome: FileFetch, progress: FetchProgress) -> FileFetch:
        """Record one file's final outcome and tell the progress display."""
        self.files.append(outcome)
        progress.finished(outcome)
        return outcome

    def count(self, *statuses: str) -> int:
        return sum(1 for f in self.files if f.status in statuses)

    @property
    def listed(self) -> int:
        return self.count("new", "republished", "unchanged", "skipped", "incomplete", "failed")

    @property
    def new(self) -> int:
        return self.count("new", "republished")

    @property
    def downloaded(self) -> int:
        return self.count(*_DOWNLOADED)

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def failed(self) -> int:
        return self.count(*_FAILED)

    @property
    def bytes(self) -> int:
        return sum(f.size or 0 for f in self.files if f.status in _DOWNLOADED)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed and (self.ingest is None or self.ingest.ok)

    def to_dict(self) -> dict[str, Any]:
        return {
            "account": self.account, "source": self.source,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "listed": self.listed, "new": self.new, "downloaded": self.downloaded, "skipped": self.skipped,
            "failed": self.failed, "refused": self.count("refused"), "incomplete": self.count("incomplete"),
            "bytes": self.bytes, "seconds": round(self.seconds, 3), "error": self.error, "notes": list(self.notes),
            "directories": list(self.directories), "files": [f.to_dict() for f in self.files],
            "ingest": self.ingest.to_dict() if self.ingest is not None else None,
        }


# ---------------------------------------------------------------------------------------------
# Structure checks before a file counts as complete


def structural_problem(path: Path, name: str, size: int, ends_with_newline: bool) -> errors.FormatError | None:
    """Why these bytes cannot be the provider's finished file, or None.

    Asks the registry which report the file is and checks only what proves completeness: the required
    ``<END>`` trailer of Antom CSV files (antom.md 4), an xlsx file's zip directory (written last), a file
    with no bytes. Alipay+ documents no end marker (alipayplus.md 4), so its files rest on the size check.
    An unrecognised file is complete as far as fetching can tell; ingest quarantines it with its reason.
    """
    if size == 0:
        return errors.EmptyFile("the file has no bytes yet: the provider may still be writing it", file=name, line=1)
    if name.lower().endswith(".xlsx"):
        if not zipfile.is_zipfile(path):
            return errors.TruncatedFile("the xlsx (zip) file ends before its directory: it is incomplete", file=name)
        return None
    try:
        report = registry.detect(path, name)
    except errors.UnknownFormat:
        return None
    if isinstance(report, TableReport) and report.trailer == "required":
        facts = SourceFile(path, size=size, ends_with_newline=ends_with_newline)
        problems = read_trailer(path, facts, name=name, required=True, last_line_no=None).problems
        return problems[0] if problems else None
    return None


# ---------------------------------------------------------------------------------------------
# SFTP


def _account(ws: Workspace, account: AccountConfig | str) -> AccountConfig:
    if isinstance(account, AccountConfig):
        return account
    for acc in ws.config.accounts:
        if acc.name == account:
            return acc
    known = ", ".join(a.name for a in ws.config.accounts) or "none"
    raise ConfigError(f"no account named {account!r} in {ws.root / CONFIG_NAME} (accounts: {known})")


def _window(now: datetime, since: date | None, until: date | None, window_days: int) -> list[date]:
    """``until`` (default: today in UTC+8, the providers' day: alipayplus.md 8) and the ``window_days`` days
    before it: a file published on day D stays 7 days, so on day D+7 it may still be there (alipayplus.md 9)."""
    last = until or now.astimezone(UTC8).date()
    first = since or last - timedelta(days=window_days)
    if first > last:
        raise ConfigError(f"--since {first} is after --until {last}")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _part_path(ws: Workspace, *key: str) -> Path:
    """A part file named by a hash of where the bytes come from: no remote name ever reaches the disk."""
    digest = hashlib.sha256("\0".join(key).encode("utf-8", "surrogateescape")).hexdigest()[:40]
    return ws.archive.root / PART_DIR / f"{digest}.part"


def _discard(part: Path) -> None:
    for p in (part, part.with_suffix(".json")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def fetch_account(ws: Workspace, account: AccountConfig | str, *, since: date | None = None,
                  until: date | None = None, now: datetime | None = None, progress: FetchProgress | None = None,
                  accept_new_host_key: bool | None = None, ingest: bool = True) -> FetchSummary:
    """List the account's SFTP directories for the date window, download and archive what is new or
    changed, record everything in the manifest and (``ingest``) load the complete files.

    Raises a typed error when the fetch cannot run at all (``HostKeyError``, ``AuthError``,
    ``ConfigError``, or ``FetchError`` once the retries are spent); per-file failures are outcomes.
    ``now`` (default: the real time) picks the window and stamps the manifest.
    """
    acc = _account(ws, account)
    if acc.sftp is None and acc.openapi is not None:
        return fetch_openapi(ws, acc, since=since, until=until, now=now, progress=progress, ingest=ingest)
    if acc.sftp is None:
        raise ConfigError(f"account {acc.name!r} has no [accounts.sftp] or [accounts.openapi] settings")
    now = now or datetime.now(UTC)
    cfg = acc.sftp
    dates = _window(now, since, until, cfg.window_days)
    known_hosts = cfg.known_hosts or Path("known_hosts")
    source = SftpSource(cfg, account_id=acc.account_id, family=acc.family,
                        known_hosts=known_hosts if known_hosts.is_absolute() else ws.root / known_hosts,
                        key_root=ws.root, accept_new_host_key=accept_new_host_key)
    summary = FetchSummary(acc.name, "sftp", dates[0], dates[-1])
    started = time.perf_counter()
    try:
        asyncio.run(_fetch_sftp(ws, acc, source, dates, now, summary, progress or FetchProgress()))
    except asyncio.CancelledError as exc:  # pragma: no cover - interrupted from outside
        raise FetchError("the fetch was cancelled") from exc
    finally:
        summary.notes.extend(n for n in source.notes if n not in summary.notes)
        summary.seconds = time.perf_counter() - started
    if ingest:
        summary.ingest = ingest_fetched(ws, account=acc.name, source="sftp", now=now)
    return summary


async def _fetch_sftp(ws: Workspace, acc: AccountConfig, source: SftpSource, dates: Sequence[date], now: datetime,
                      summary: FetchSummary, progress: FetchProgress) -> None:
    cfg = acc.sftp
    assert cfg is not None
    async with source:
        listing = await source.listing(dates)
        summary.directories = listing.directories
        for bad in listing.refused:
            summary.finish(FileFetch(bad.file, bad.found or "", "refused", error=str(bad), code=bad.code), progress)
        todo = []
        seen = ws.remote_seen_many(acc.name, "sftp", [Listed(e.path, e.name, e.size, e.mtime)
                                                      for e in listing.entries], now)
        for entry, (skip, row) in zip(listing.entries, seen, strict=True):
            if skip:
                summary.finish(FileFetch(entry.path, entry.name, "skipped", row.size, row.sha256, row.version),
                               progress)
            else:
                todo.append((entry, row.file_id))
        progress.listed(acc.name, len(listing.entries), len(todo), sum(max(e.size, 0) for e, _ in todo))
        limit = asyncio.Semaphore(cfg.max_parallel)
        recorder = _Recorder(ws, now)
        archiver = _Archiver(ws)
        running = len(todo)

        def flush_if_all_wait() -> None:
            """When every file still running waits on a batch, no more company is coming: write them now (a timer
            would add its delay to the end of every fetch, 0.2 s for one large file)."""
            if running <= len(archiver.pending) + len(recorder.pending):
                archiver.flush()
                recorder.flush()

        recorder.added = archiver.added = flush_if_all_wait

        async def one(entry: RemoteEntry, file_id: int) -> FileFetch:
            nonlocal running
            try:
                return await settled(entry, file_id)
            finally:
                running -= 1
                flush_if_all_wait()

        async def settled(entry: RemoteEntry, file_id: int) -> FileFetch:
            async with limit:
                part = _part_path(ws, acc.name, f"{cfg.host}:{cfg.port}", entry.path)
                try:
                    got = await source.download(entry, part, progress.transfer)
                except Exception as exc:  # this file's failure, never the others'
                    reason = f"{type(exc).__name__}: {exc}"[:500]
                    ws.remote_failed(file_id, reason, now)
                    code = "host_key" if isinstance(exc, HostKeyError) else "auth" if isinstance(exc, AuthError) \
                        else "transfer"
                    failed = FileFetch(entry.path, entry.name, "failed", entry.size, error=reason, code=code)
                    progress.finished(failed)
                    return failed
            # checked, archived and recorded outside the bound: the next transfer starts meanwhile
            outcome = await _settle(ws, entry, file_id, got, part, now, archiver, recorder)
            progress.finished(outcome)
            return outcome

        try:
            summary.files.extend(await asyncio.gather(*(one(e, fid) for e, fid in todo)))
        finally:
            archiver.flush()
            recorder.flush()


_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


class _Batcher(Generic[_Item, _Result]):
    """Items gathered into batches, each item's result delivered through its own future. A batch runs when
    ``batch`` items wait, ``delay`` seconds after the first one, or on ``flush``; ``added`` is told of every item
    (the fetch flushes early once every running file waits on a batch). A failure of the whole batch fails each
    item's future; an item whose future is already done (cancelled) is skipped."""

    def __init__(self, batch: int, delay: float) -> None:
        self.batch, self.delay = batch, delay
        self.pending: list[tuple[_Item, asyncio.Future[_Result]]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.added: Callable[[], None] = lambda: None

    def submit(self, item: _Item) -> asyncio.Future[_Result]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[_Result] = loop.create_future()
        self.pending.append((item, done))
        if len(self.pending) >= self.batch:
            self.flush()
        elif self.timer is None:
            self.timer = loop.call_later(self.delay, self.flush)
        self.added()
        return done

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.pending = self.pending, []
        if batch:
            self._run(batch)

    def _run(self, batch: list[tuple[_Item, asyncio.Future[_Result]]]) -> None:
        raise NotImplementedError

    @staticmethod
    def _deliver(batch: list[tuple[_Item, asyncio.Future[_Result]]],
                 results: Sequence[_Result | BaseException]) -> None:
        for (_, done), result in zip(batch, results, strict=True):
            if done.done():
                continue
            if isinstance(result, BaseException):
                done.set_exception(result)
            else:
                done.set_result(result)


class _Recorder(_Batcher[Fetched, tuple[str, RemoteFile]]):
    """Completes manifest rows in batches (``Workspace.remote_fetched_many``): one transaction per batch instead of
    several statements per file, which bound the rate of a fetch of many small files (bench/sftp_bench.py).

    A row is recorded after its bytes are archived, so a crash before a batch is written loses no byte: the
    row stays open, the next run fetches the file again and the archive already has it.
    """

    def __init__(self, ws: Workspace, now: datetime, batch: int = 256, delay: float = 0.2) -> None:
        super().__init__(batch, delay)
        self.ws, self.now = ws, now

    def _run(self, batch: list[tuple[Fetched, asyncio.Future[tuple[str, RemoteFile]]]]) -> None:
        results: Sequence[tuple[str, RemoteFile] | BaseException]
        try:
            results = self.ws.remote_fetched_many([f for f, _ in batch], self.now)
        except Exception as exc:
            results = [exc] * len(batch)
        self._deliver(batch, results)


def _check_and_archive(ws: Workspace, name: str, got: Downloaded, part: Path) -> tuple[errors.FormatError | None,
                                                                                        PutResult]:
    """On a worker thread: the structure check, the archive's link and the part's clean-up (on this kind of
    machine each file-system call costs about as much as a small file's transfer)."""
    try:
        problem = structural_problem(part, name, got.size, got.ends_with_newline)
        return problem, ws.archive.put_file(part, move=True, sha256=got.sha256)  # linked, not copied
    finally:
        _discard(part)


_Archived = tuple[errors.FormatError | None, PutResult]


class _Archiver(_Batcher[tuple[str, Downloaded, Path], _Archived]):
    """Archives the downloads received in memory (small files) in groups, on a worker thread: one group
    commit (``Archive.put_many``: all fsyncs at once) per batch instead of two fsyncs in a row per file, which
    bound the rate of a fetch of many small files (bench/sftp_bench.py). Then the structure check, on the
    archived object (the same bytes). A file's future completes only once its bytes are durable, so the
    manifest never records a file the archive could still lose.
    """

    def __init__(self, ws: Workspace, batch: int = 64, delay: float = 0.01) -> None:
        super().__init__(batch, delay)
        self.ws = ws

    def _run(self, batch: list[tuple[tuple[str, Downloaded, Path], asyncio.Future[_Archived]]]) -> None:
        stored = asyncio.get_running_loop().run_in_executor(None, self._store, [item for item, _ in batch])

        def settle(stored: asyncio.Future[list[_Archived | Exception]]) -> None:
            failure = stored.exception()
            if failure is not None and not isinstance(failure, Exception):
                failure = RuntimeError(failure)
            self._deliver(batch, [failure] * len(batch) if failure is not None else stored.result())

        stored.add_done_callback(settle)

    def _store(self, items: list[tuple[str, Downloaded, Path]]) -> list[_Archived | Exception]:
        archive = self.ws.archive
        puts = archive.put_many([(got.data or b"", got.sha256) for _, got, _ in items])
        out: list[_Archived | Exception] = []
        for (name, got, part), put in zip(items, puts, strict=True):
            try:
                _discard(part)  # left over from an earlier run that received this file into a part file
                if isinstance(put, Exception):
                    raise put
                out.append((structural_problem(archive.path_of(put.sha256), name, got.size, got.ends_with_newline),
                            put))
            except Exception as exc:
                out.append(exc)
        return out


async def _settle(ws: Workspace, entry: RemoteEntry, file_id: int, got: Downloaded, part: Path, now: datetime,
                  archiver: _Archiver, recorder: _Recorder) -> FileFetch:
    """Check, archive and record a download; its part file is gone afterwards."""
    base = FileFetch(entry.path, entry.name, "failed", got.size, attempts=got.attempts, resumed_from=got.resumed_from)
    try:
        if got.data is not None:
            problem, put = await archiver.submit((entry.name, got, part))
        else:  # one trip to a worker thread for both (a trip costs about as much as a small file's own work)
            problem, put = await asyncio.to_thread(_check_and_archive, ws, entry.name, got, part)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        ws.remote_failed(file_id, reason, now)
        return replace(base, error=reason, code="archive")
    if problem is not None:
        ws.remote_failed(file_id, str(problem), now, sha256=put.sha256)
        return replace(base, status="incomplete", sha256=put.sha256, error=str(problem), code=problem.code)
    try:
        status, row = await recorder.submit(Fetched(file_id, put.sha256, got.size, got.mtime))
    except Exception as exc:
        return replace(base, error=f"{type(exc).__name__}: {exc}"[:500], code="manifest")
    return replace(base, status=status, sha256=put.sha256, version=row.version)


# ---------------------------------------------------------------------------------------------
# Alipay China open platform (alipay-cn.md 1.2, 2)

OPENAPI_EMPTY_SUFFIX = ".empty"  # the manifest name of a period recorded without a bill (no bytes to parse)


def openapi_periods(now: datetime, since: date | None, until: date | None, *, monthly: bool,
                    window_days: int = 7) -> list[BillPeriod]:
    """The CLOSED periods of the window (``since``..``until``, by default the last ``window_days`` days), days
    first, then (``monthly``) the months they touch: a period still open (today in UTC+8, this month) has no
    bill yet (alipay-cn.md 2.3), so it is not even asked for."""
    days = [BillPeriod(d, False) for d in _window(now, since, until, window_days)]
    months = sorted({BillPeriod.month(p.start.year, p.start.month) for p in days}, key=lambda p: p.start) \
        if monthly else []
    return [p for p in (*days, *months) if p.closes_at <= now]


def openapi_remote_path(bill_type: str, period: BillPeriod) -> str:
    """The manifest key of one bill: ``<bill_type>/<yyyy-MM-dd|yyyy-MM>``."""
    return f"{bill_type}/{period.text}"


def _complete_paths(ws: Workspace, account: str, source: str) -> set[str]:
    table = ws.remote_files(account)
    return {str(path) for path, src, state in zip(table.column("remote_path").to_pylist(),
                                                   table.column("source").to_pylist(),
                                                   table.column("state").to_pylist(), strict=True)
            if src == source and state == "complete"}


def _failure_code(exc: Exception) -> str:
    if isinstance(exc, OpenApiConfigError):
        return "config"
    if isinstance(exc, ResponseSignatureError):
        return "signature"
    if isinstance(exc, TransientApiError):
        return "transient"
    if isinstance(exc, DownloadFailed):
        return "download"
    return "transfer"


def fetch_openapi(ws: Workspace, account: AccountConfig | str, *, since: date | None = None,
                  until: date | None = None, now: datetime | None = None, progress: FetchProgress | None = None,
                  ingest: bool = True) -> FetchSummary:
    """Download every closed bill of the window (each ``openapi.bill_types``, daily and, when configured,
    monthly) that the manifest has no complete version of; archive the zip as received, record it (source
    ``openapi``, remote path ``<bill_type>/<date>``) and (``ingest``) load its CSV entries.

    Outcomes per bill: downloaded (``new``), ``pending`` (not generated yet: asked again next run; a note),
    an empty period recorded (no bill after the expected time plus the grace: alipay-cn.md 2.5 mapping,
    ``code`` ``not_ready``), ``failed`` (configuration refusal, bad response signature, network or download
    error: nothing archived). A period not closed yet is skipped silently. ``now`` is also the client's
    clock (the sandbox's simulated time); by default the real time.
    """
    acc = _account(ws, account)
    if acc.openapi is None:
        raise ConfigError(f"account {acc.name!r} has no [accounts.openapi] settings")
    cfg = acc.openapi
    clock: Callable[[], datetime] = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
    started_at = clock()
    progress = progress or FetchProgress()
    periods = openapi_periods(started_at, since, until, monthly=cfg.monthly, window_days=cfg.window_days)
    days = _window(started_at, since, until, cfg.window_days)
    summary = FetchSummary(acc.name, "openapi", days[0], days[-1], directories=list(cfg.bill_types))
    started = time.perf_counter()
    try:
        api = OpenApiClient(cfg, account=acc.name, key_root=ws.root, now=clock)
    except OpenApiConfigError as exc:  # its message names the setting, never the secret
        summary.error = f"{type(exc).__name__}: {exc}"
        summary.seconds = time.perf_counter() - started
        return summary
    with api:
        done = _complete_paths(ws, acc.name, "openapi")
        todo: list[tuple[str, BillPeriod]] = []
        for period in periods:
            for bill_type in cfg.bill_types:
                path = openapi_remote_path(bill_type, period)
                if path in done:
                    summary.files.append(FileFetch(path, path, "skipped"))
                else:
                    todo.append((bill_type, period))
        progress.listed(acc.name, len(periods) * len(cfg.bill_types), len(todo), 0)
        for bill_type, period in todo:
            outcome = _fetch_one_bill(ws, api, acc.name, bill_type, period, clock, summary)
            if outcome is not None:
                summary.finish(outcome, progress)
    summary.seconds = time.perf_counter() - started
    if ingest:
        summary.ingest = ingest_fetched(ws, account=acc.name, source="openapi", now=clock())
    return summary


def _fetch_one_bill(ws: Workspace, api: OpenApiClient, account: str, bill_type: str, period: BillPeriod,
                    clock: Callable[[], datetime], summary: FetchSummary) -> FileFetch | None:
    path = openapi_remote_path(bill_type, period)
    try:
        got = api.fetch_bill(bill_type, period)
    except BillNotClosed:
        return None  # asked too early (the gateway's day differs from ours): the next run asks again
    except BillNotReady as exc:
        if not exc.past_due:
            summary.notes.append(f"{path}: pending ({exc})")
            return FileFetch(path, path, "pending", error=str(exc), code=exc.reason)
        data, name, code = b"", f"{bill_type}_{period.compact}{OPENAPI_EMPTY_SUFFIX}", exc.reason
    except Exception as exc:  # this bill's failure, never the others' (configuration, signature, network, ...)
        now = clock()
        reason = f"{type(exc).__name__}: {exc}"[:500]
        _, row = ws.remote_seen(account, "openapi", path, path, 0, None, now)
        ws.remote_failed(row.file_id, reason, now)
        return FileFetch(path, path, "failed", error=reason, code=_failure_code(exc))
    else:
        empty = f"{bill_type}_{period.compact}{OPENAPI_EMPTY_SUFFIX}"
        data, name, code = got.data, got.file_name if got.data else empty, "empty" if got.empty else "bill"
    now = clock()
    _, row = ws.remote_seen(account, "openapi", path, name, len(data), None, now)
    put = ws.archive.put_bytes(data)  # the zip exactly as received (issue 4, item 2)
    status, row = ws.remote_fetched(row.file_id, put.sha256, put.size, None, now)
    return FileFetch(path, name, status, put.size, put.sha256, row.version, attempts=1, code=code)


# ---------------------------------------------------------------------------------------------
# Ingest of what was fetched


def _view_path(ws: Workspace, row: RemoteFile) -> Path:
    """Where ``row``'s bytes are offered to ``ingest``: a path carrying the remote name (parsers read the name
    and suffix), unique and stable per manifest row, so the delivery it leaves names the row (names were
    checked as plain names when listed)."""
    return ws.root / TMP_DIR / "fetched" / str(row.file_id) / row.name


def _make_view(ws: Workspace, row: RemoteFile) -> Path:
    view = _view_path(ws, row)
    view.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        view.unlink()
    try:
        os.symlink(ws.archive.path_of(row.sha256 or "").absolute(), view)
    except OSError:  # no symlinks here: a copy of the archived bytes
        shutil.copyfile(ws.archive.path_of(row.sha256 or ""), view)
    return view


def is_bill_zip(name: str) -> bool:
    """A zip is a container (an Alipay China bill, alipay-cn.md 4): its CSV entries are what ingest parses."""
    return name.lower().endswith(".zip")


def _zip_views(ws: Workspace, row: RemoteFile) -> list[Path]:
    """Each entry of an archived bill zip written under the row's view folder with its own (GBK-decoded, checked)
    name; ingest archives each entry by its own sha256, so every bill line's lineage is the entry + line."""
    entries = extract_bill_zip(ws.archive.path_of(row.sha256 or "").read_bytes(), row.name)
    views = []
    for i, entry in enumerate(entries):
        view = _view_path(ws, row).parent / str(i) / entry.basename
        view.parent.mkdir(parents=True, exist_ok=True)
        view.write_bytes(entry.data)
        views.append(view)
    return views


def ingest_fetched(ws: Workspace, *, account: str | None = None, source: str | None = None,
                   now: datetime | None = None) -> IngestReport:
    """Ingest every complete manifest file not yet ingested, oldest first (also those a crash left behind).

    A row whose delivery was recorded before a crash (same view path) is only marked, never offered twice.
    A file whose load failed for a reason outside its content (``load_error``) stays pending and is offered
    again next time, as ``Workspace.ingest`` retries such files. A zip row (an Alipay China bill) offers its
    entries and counts as ingested once all of them are; one that cannot be opened safely is reported
    ``quarantined`` with its ``BillZipError`` and not offered again (its bytes cannot change). A period the
    open platform had no bill for (no bytes) has nothing to ingest.
    """
    now = now or datetime.now(UTC)
    rows = ws.remote_to_ingest(account, source)
    nothing = [r.file_id for r in rows if r.size == 0 and r.name.endswith(OPENAPI_EMPTY_SUFFIX)]
    ws.remote_ingested(nothing, now)
    rows = [r for r in rows if r.file_id not in nothing]
    if not rows:
        return IngestReport(())
    plain = [r for r in rows if not is_bill_zip(r.name)]
    delivered = {str(p) for (p,) in ws.con.execute(
        "SELECT DISTINCT source_path FROM deliveries WHERE list_contains(?, source_path) "
        "AND sha256 NOT IN (SELECT sha256 FROM problems WHERE code = 'load_error')",
        [[str(_view_path(ws, r).absolute()) for r in plain]]).fetchall()}
    ws.remote_ingested([r.file_id for r in plain if str(_view_path(ws, r).absolute()) in delivered], now)
    rows = [r for r in rows if is_bill_zip(r.name) or str(_view_path(ws, r).absolute()) not in delivered]
    offers: list[tuple[RemoteFile, Path]] = []
    refused: list[FileOutcome] = []
    try:
        for r in rows:
            if not is_bill_zip(r.name):
                offers.append((r, _make_view(ws, r)))
                continue
            try:
                views = _zip_views(ws, r)
            except BillZipError as exc:
                refused.append(FileOutcome(r.name, r.remote_path, r.sha256, "quarantined", problems=(exc,)))
                ws.remote_ingested([r.file_id], now)
                continue
            offers.extend((r, view) for view in views)
            if not views:  # an empty bill file (EMPTY_DATA_WITH_BILL_FILE, alipay-cn.md 2.4): nothing to load
                ws.remote_ingested([r.file_id], now)
        report = ws.ingest(view for _, view in offers)
    finally:
        shutil.rmtree(ws.root / TMP_DIR / "fetched", ignore_errors=True)
    pending = {r.file_id for r, o in zip((r for r, _ in offers), report.files, strict=True)
               if o.status == "failed" or any(p.code == "load_error" for p in o.problems)}
    ws.remote_ingested(list(dict.fromkeys(r.file_id for r, _ in offers if r.file_id not in pending)), now)
    return IngestReport(report.files + tuple(refused))


# ---------------------------------------------------------------------------------------------
# The hourly job


@contextlib.contextmanager
def workspace_lock(root: Path) -> Iterator[None]:
    """Hold ``<root>/.alirecon.lock`` (an OS lock: released even when the process is killed).

    ``WorkspaceBusy`` when another fetch/daily holds it. Taken before the workspace is opened, because the
    database admits one writing process.
    """
    root = Path(root)
    if not (root / CONFIG_NAME).is_file():
        raise ConfigError(f"{root} is not an alirecon workspace (no {CONFIG_NAME}); run init first")
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkspaceBusy(f"another alirecon fetch or daily is running on {root}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {datetime.now(UTC).isoformat()}\n".encode())
        yield
    finally:
        os.close(fd)


@dataclass
class DailySummary:
    """One daily run: each account's fetch, the ledgers, and the check/reconcile run (new or the latest)."""

    fetches: list[FetchSummary] = field(default_factory=list)
    ledgers: list[LedgerIngest] = field(default_factory=list)
    run_id: str | None = None
    new_run: bool = False  # False: nothing changed since the latest daily run, whose results are reported
    check_failures: int = 0
    exceptions: int = 0
    busy: bool = False  # another run held the lock: nothing was done
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (all(f.ok for f in self.fetches) and all(x.ok for x in self.ledgers)
                and not self.check_failures and not self.exceptions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "busy": self.busy, "run_id": self.run_id, "new_run": self.new_run,
            "check_failures": self.check_failures, "exceptions": self.exceptions, "ok": self.ok,
            "seconds": round(self.seconds, 3), "fetches": [f.to_dict() for f in self.fetches],
            "ledgers": [x.to_dict() for x in self.ledgers],
        }


def _activity_since(ws: Workspace, started_at: datetime) -> bool:
    """Did anything the results depend on change after ``started_at``: a file, a ledger, the config?"""
    changed = ws.con.execute(
        "SELECT (SELECT count(*) FROM files WHERE ingested_at >= $t) + "
        "(SELECT count(*) FROM ledger_files WHERE ingested_at >= $t OR replaced_at >= $t)",
        {"t": started_at}).fetchall()[0][0]
    config_mtime = datetime.fromtimestamp((ws.root / CONFIG_NAME).stat().st_mtime, UTC)
    return bool(changed) or config_mtime >= started_at


def daily(ws: Workspace, now: datetime | None = None, *, progress: FetchProgress | None = None) -> DailySummary:
    """Fetch every account that has SFTP (or else open-platform) settings, ingest, then check and reconcile when
    anything changed.

    The caller holds ``workspace_lock`` (``run_daily`` does both). A failing account is recorded in its
    summary and never stops the others.
    """
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    out = DailySummary()
    for acc in ws.config.accounts:
        if acc.sftp is None and acc.openapi is None:
            continue
        try:
            out.fetches.append(fetch_account(ws, acc, now=now, progress=progress))
        except errors.AlireconError as exc:
            source = "sftp" if acc.sftp is not None else "openapi"
            out.fetches.append(FetchSummary(acc.name, source, error=f"{type(exc).__name__}: {exc}"))
    leftovers = ingest_fetched(ws, now=now)  # e.g. a folder import interrupted before its ingest
    if leftovers.files:
        out.fetches.append(FetchSummary("*", "manifest", ingest=leftovers))
    out.ledgers = pipeline.ingest_ledgers(ws)
    last = ws.con.execute("SELECT run_id, started_at FROM runs WHERE kind = 'daily' AND checks_saved_at IS NOT NULL "
                          "AND exceptions_saved_at IS NOT NULL ORDER BY seq DESC LIMIT 1").fetchall()
    if not last or _activity_since(ws, last[0][1]):
        run_id = ws.new_run("daily")
        check = pipeline.check(ws, run_id)
        rec = pipeline.reconcile(ws, run_id)
        out.run_id, out.new_run = run_id, True
        out.check_failures, out.exceptions = check.failures, rec.exceptions.num_rows
    else:
        out.run_id = str(last[0][0])
        checks = ws.latest_checks()
        out.check_failures = sum(1 for s in checks.column("status").to_pylist() if s == "fail")
        out.exceptions = ws.latest_exceptions().num_rows
    out.seconds = time.perf_counter() - started
    return out


def run_daily(root: Path, now: datetime | None = None, *, progress: FetchProgress | None = None) -> DailySummary:
    """``daily`` under the workspace lock; a run that finds the lock held returns ``busy`` at once."""
    try:
        with workspace_lock(root), Workspace.open(root) as ws:
            return daily(ws, now, progress=progress)
    except WorkspaceBusy:
        return DailySummary(busy=True)
