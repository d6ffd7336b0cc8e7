"""Importing a folder of report files downloaded by hand (Alipay+ Partner Workspace, Antom/APO portal).

Why: when SFTP is not set up, or a file was deleted from the server after its 7 days (antom.md 2.1), the
portal is the only way to get it, under names the SFTP convention does not follow (antom.md 2.2). Such
files are recognised by the format registry (header first, name second), archived and recorded in the
manifest exactly like fetched ones, so ``status`` and the ingest treat both alike. Files no report
recognises (notes, screenshots) are listed as skipped and left alone; files recorded with the same size and
mtime are skipped without being read (a re-import of a large folder reads nothing it already has). A zip (an
Alipay China bill downloaded from the merchant console, alipay-cn.md 1.1 and 4) is taken when one of its entries
is a known report; it is archived as it is and its entries are ingested (``fetch.ingest_fetched``).
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from .. import errors
from ..fetch import FetchProgress, FetchSummary, FileFetch, ingest_fetched, is_bill_zip
from ..formats import registry
from ..warehouse import Listed, Workspace
from . import RemoteEntry
from .billzip import extract_bill_zip

__all__ = ["detect_file", "import_folder", "list_folder"]


def list_folder(folder: Path) -> list[RemoteEntry]:
    """Every regular file under ``folder`` (recursively, symlinks and hidden files left out), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise errors.ConfigError(f"not a folder: {folder}")
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_symlink() or not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        st = path.stat()
        out.append(RemoteEntry(str(path.absolute()), path.name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
    return out


def detect_file(path: Path, name: str) -> None:
    """Raise ``UnknownFormat`` unless a report recognises the file or (a zip) one of its entries. A zip that cannot
    be opened safely raises its ``BillZipError`` (a ``FormatError``)."""
    if not is_bill_zip(name):
        registry.detect(path, name)
        return
    entries = extract_bill_zip(path.read_bytes(), name)
    with tempfile.TemporaryDirectory() as tmp:
        for i, entry in enumerate(entries):
            view = Path(tmp) / str(i) / entry.basename  # the registry reads the entry's header and name
            view.parent.mkdir()
            view.write_bytes(entry.data)
            try:
                registry.detect(view, entry.basename)
            except errors.UnknownFormat:
                continue
            return
    raise errors.UnknownFormat("no entry of this zip is a known report", file=name, line=1)


def import_folder(ws: Workspace, folder: Path, *, account: str | None = None, now: datetime | None = None,
                  progress: FetchProgress | None = None, ingest: bool = True) -> FetchSummary:
    """Archive and record every recognised report file under ``folder``; then (``ingest``) load them.

    A file already recorded with the same size and mtime is skipped without being read; one whose bytes
    equal a known version of the same path is ``unchanged``; other bytes under a known path are a new,
    ``republished`` version. ``account`` (an AccountConfig name) is recorded with each file when given.
    """
    now = now or datetime.now(UTC)
    progress = progress or FetchProgress()
    started = time.perf_counter()
    summary = FetchSummary(account or "", "folder", directories=[str(Path(folder).absolute())])
    entries = list_folder(folder)
    listed = [Listed(e.path, e.name, e.size, e.mtime) for e in entries]
    unchanged = ws.remote_unchanged(account, "folder", listed)  # recorded as they are now: not read again
    reports = []
    for entry, item in zip(entries, listed, strict=True):
        if entry.path not in unchanged:
            try:
                detect_file(Path(entry.path), entry.name)
            except errors.FormatError as exc:
                summary.finish(FileFetch(entry.path, entry.name, "skipped", entry.size, error=str(exc),
                                         code=exc.code), progress)
                continue
        reports.append((entry, item))
    todo = []
    seen = ws.remote_seen_many(account, "folder", [item for _, item in reports], now)  # one transaction
    for (entry, _), (skip, row) in zip(reports, seen, strict=True):
        if skip:
            summary.finish(FileFetch(entry.path, entry.name, "skipped", row.size, row.sha256, row.version), progress)
        else:
            todo.append((entry, row.file_id))
    progress.listed(account or "", len(entries), len(todo), sum(e.size for e, _ in todo))
    for entry, file_id in todo:
        try:
            put = ws.archive.put_file(Path(entry.path))
        except (OSError, errors.AlireconError) as exc:
            reason = f"{type(exc).__name__}: {exc}"[:500]
            ws.remote_failed(file_id, reason, now)
            outcome = FileFetch(entry.path, entry.name, "failed", entry.size, error=reason, code="archive")
        else:
            # a hand-downloaded file will not grow by waiting: it is complete as it is, and ingest says
            # what is wrong with it (a truncated one is quarantined there)
            status, row = ws.remote_fetched(file_id, put.sha256, put.size, entry.mtime, now)
            outcome = FileFetch(entry.path, entry.name, status, put.size, put.sha256, row.version, attempts=1)
        summary.finish(outcome, progress)
    summary.seconds = time.perf_counter() - started
    if ingest:
        summary.ingest = ingest_fetched(ws, account=account, source="folder", now=now)
    return summary
