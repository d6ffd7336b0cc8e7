"""The workspace: a folder holding the config, the raw-file archive and an embedded DuckDB warehouse.

Why this shape (DESIGN.md principles):
- *Raw bytes are sacred*: every offered file is archived before anything else, even a bad one, and
  parsing reads the archived bytes, so what was loaded is exactly what was stored.
- *Idempotent everywhere*: a file is known by its sha256; offering it again (under any name) records
  a delivery and changes nothing else, and parsed lines are persisted so nothing is re-parsed.
- *Nothing half-loaded*: a file's row in ``files``, its problems, lines and declared figures are
  written in one transaction; any failure rolls the whole file back and is recorded as its problem
  (``load_error``), and such a file is retried the next time it is offered - a failure followed by a
  re-run gives the same result as no failure.
- *Deterministic*: every query that hands rows to a caller has an ORDER BY.

One ``Workspace`` owns one DuckDB connection; it is not meant to be shared between threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa
import pydantic

from . import errors
from . import ledger as ledger_reader
from .archive import Archive
from .config import CONFIG_NAME, LedgerConfig, WorkspaceConfig
from .formats import registry
from .formats.engine import ParsedFile, ParseOptions, new_connection, scalar
from .ledger import ParsedLedger
from .schema import CHECK_RESULT, DECLARED, EXCEPTION, LEDGER_LINE, REPORT_LINE

__all__ = [
    "ARCHIVE_DIR",
    "DB_NAME",
    "FileOutcome",
    "IngestReport",
    "LedgerIngest",
    "LoadError",
    "RemoteFile",
    "Workspace",
]

DB_NAME = "alirecon.duckdb"
ARCHIVE_DIR = "archive"
TMP_DIR = "tmp"


class LoadError(errors.FormatError):
    """A file could not be archived or loaded for a reason outside its content (I/O, a bug).

    Recorded as the file's problem; unlike a content error it is retried when the file is offered again.
    """

    code = "load_error"


# ---------------------------------------------------------------------------------------------
# Tables. Columns are (name, DuckDB type, NOT NULL); tables mirroring schema.py take their columns
# from the Arrow schema so the two cannot drift, and columns added there later are added on open.

_Col = tuple[str, str, bool]

_PROBLEM_COLS: list[_Col] = [
    ("ord", "INTEGER", True),  # position in the file's sorted problem list
    ("code", "VARCHAR", True),
    ("severity", "VARCHAR", True),
    ("file", "VARCHAR", True),
    ("line", "BIGINT", False),
    ("column", "VARCHAR", False),
    ("column_index", "INTEGER", False),
    ("expected", "VARCHAR", False),
    ("found", "VARCHAR", False),
    ("message", "VARCHAR", True),
]
_PROBLEM_FIELDS = [c[0] for c in _PROBLEM_COLS if c[0] != "ord"]

_FILE_COLS: list[_Col] = [
    ("sha256", "VARCHAR PRIMARY KEY", True),
    ("first_name", "VARCHAR", True),
    ("size", "BIGINT", True),
    ("family", "VARCHAR", False),
    ("report", "VARCHAR", False),
    ("variant", "VARCHAR", False),
    ("meta", "JSON", False),
    ("status", "VARCHAR CHECK (status IN ('parsed', 'quarantined'))", True),
    ("reason", "VARCHAR", False),  # the first error, as text
    ("error_count", "INTEGER", True),
    ("warning_count", "INTEGER", True),
    ("row_count", "BIGINT", True),  # records parsed from the file; its lines are loaded only when 'parsed'
    ("ingested_at", "TIMESTAMPTZ", True),
    # JSON array: the header name of each element of its lines' ``extras`` arrays (engine.extras_dict). NULL on
    # files loaded before extras became arrays: their lines keep a JSON object of header -> text.
    ("extras_names", "VARCHAR", False),
]

_TABLES: dict[str, list[_Col]] = {
    "files": _FILE_COLS,
    "deliveries": [
        ("delivery_id", "BIGINT PRIMARY KEY DEFAULT nextval('delivery_seq')", True),
        ("sha256", "VARCHAR", True),
        ("name", "VARCHAR", True),
        ("source_path", "VARCHAR", True),
        ("seen_at", "TIMESTAMPTZ", True),
        ("duplicate", "BOOLEAN", True),
    ],
    "problems": [("sha256", "VARCHAR", True), *_PROBLEM_COLS],
    "ledger_files": [
        ("load_id", "BIGINT PRIMARY KEY", True),
        ("ledger_name", "VARCHAR", True),
        ("sha256", "VARCHAR", True),
        ("file_name", "VARCHAR", True),
        ("source_path", "VARCHAR", True),
        ("size", "BIGINT", True),
        ("config_sha256", "VARCHAR", True),  # the ledger mapping + parse settings the file was read with
        ("status", "VARCHAR CHECK (status IN ('current', 'replaced', 'quarantined'))", True),
        ("reason", "VARCHAR", False),
        ("error_count", "INTEGER", True),
        ("warning_count", "INTEGER", True),
        ("row_count", "BIGINT", True),
        ("ingested_at", "TIMESTAMPTZ", True),
        ("replaced_at", "TIMESTAMPTZ", False),
        ("extras_names", "VARCHAR", False),  # as files.extras_names, for ledger_lines.extras
    ],
    "ledger_problems": [("load_id", "BIGINT", True), *_PROBLEM_COLS],
    "runs": [
        ("run_id", "VARCHAR PRIMARY KEY", True),
        ("seq", "BIGINT", True),
        ("kind", "VARCHAR", True),
        ("started_at", "TIMESTAMPTZ", True),
        ("checks_saved_at", "TIMESTAMPTZ", False),
        ("check_count", "BIGINT", False),
        ("exceptions_saved_at", "TIMESTAMPTZ", False),
        ("exception_count", "BIGINT", False),
    ],
    # The fetch manifest: every file a source listed (SFTP) or offered (a folder), one row per version of its
    # bytes. A row that is not 'complete' is the path's open attempt (at most one per path); its version is
    # set when its bytes are complete. Parse outcomes are not copied here: join ``files`` on sha256.
    "remote_files": [
        ("file_id", "BIGINT PRIMARY KEY", True),
        ("account", "VARCHAR", False),  # AccountConfig.name; NULL for a folder import without an account
        # 'openapi' (Alipay China bill zips, issue 4): an older workspace's CHECK lacks it and is rebuilt on open
        # (_widen_source_check)
        ("source", "VARCHAR CHECK (source IN ('sftp', 'folder', 'openapi'))", True),
        ("remote_path", "VARCHAR", True),
        ("name", "VARCHAR", True),
        ("size", "BIGINT", True),  # as the source reported it; the bytes' size once complete
        ("mtime", "TIMESTAMPTZ", False),
        ("sha256", "VARCHAR", False),  # NULL until bytes arrived ('incomplete': the bytes that failed validation)
        ("version", "INTEGER", False),  # 1, 2, ... per (account, source, remote_path) once complete
        ("republished", "BOOLEAN", True),  # a version > 1: the same path came back with other bytes
        ("state", "VARCHAR CHECK (state IN ('listed', 'failed', 'incomplete', 'complete'))", True),
        ("reason", "VARCHAR", False),  # why the last attempt failed or was incomplete
        ("attempts", "INTEGER", True),  # failed attempts
        ("first_seen_at", "TIMESTAMPTZ", True),
        ("last_seen_at", "TIMESTAMPTZ", True),
        ("fetched_at", "TIMESTAMPTZ", False),
        ("ingested_at", "TIMESTAMPTZ", False),
    ],
}

# table -> (schema.py schema, extra columns)
_ARROW_TABLES: dict[str, tuple[pa.Schema, list[_Col]]] = {
    "report_lines": (REPORT_LINE, []),
    "declared": (DECLARED, []),
    "ledger_lines": (LEDGER_LINE, [("load_id", "BIGINT", True)]),
    "check_results": (CHECK_RESULT, [("run_id", "VARCHAR", True), ("ord", "BIGINT", True)]),
    "exceptions": (EXCEPTION, [("run_id", "VARCHAR", True), ("ord", "BIGINT", True)]),
}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _select_list(schema: pa.Schema) -> str:
    return ", ".join(_q(f.name) for f in schema)


def _arrow_columns(con: duckdb.DuckDBPyConnection, schema: pa.Schema) -> list[_Col]:
    """The DuckDB column types DuckDB itself gives an Arrow schema."""
    view = "_ar_schema_probe"
    con.register(view, schema.empty_table())
    try:
        described = con.execute(f"DESCRIBE {view}").fetchall()
    finally:
        con.unregister(view)
    nullable = {f.name: f.nullable for f in schema}
    return [(str(name), str(typ), not nullable[str(name)]) for name, typ, *_ in described]


def _ensure_table(con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[_Col]) -> None:
    defs = ", ".join(f"{_q(n)} {t}{' NOT NULL' if nn else ''}" for n, t, nn in columns)
    con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({defs})")
    have = {str(r[0]): str(r[1]) for r in con.execute(f"DESCRIBE {table}").fetchall()}
    for name, typ, _ in columns:
        if name not in have:  # a column added to schema.py after this workspace was created
            bare_type = re.split(r" (?:PRIMARY KEY|CHECK|DEFAULT)\b", typ)[0]
            con.execute(f"ALTER TABLE {table} ADD COLUMN {_q(name)} {bare_type}")
        elif have[name].startswith("MAP(") and typ == "VARCHAR":
            # ``extras`` was a MAP before it became JSON text: the same header -> text pairs, as a JSON object
            con.execute(f"ALTER TABLE {table} ALTER COLUMN {_q(name)} TYPE VARCHAR USING to_json({_q(name)})")


def _ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SEQUENCE IF NOT EXISTS delivery_seq")
    for table, columns in _TABLES.items():
        _ensure_table(con, table, columns)
    _widen_source_check(con)
    for table, (schema, extra) in _ARROW_TABLES.items():
        _ensure_table(con, table, [*_arrow_columns(con, schema), *extra])



def _widen_source_check(con: duckdb.DuckDBPyConnection) -> None:
    """A manifest made before the open-platform source existed refuses 'openapi' rows: DuckDB cannot alter a
    CHECK, so the table is rebuilt with today's definition, its rows unchanged, in one transaction."""
    checks = [str(t) for (t,) in con.execute(
        "SELECT expression FROM duckdb_constraints() WHERE table_name = 'remote_files' AND constraint_type = 'CHECK'"
    ).fetchall()]
    if not any('"source" IN' in t and "'openapi'" not in t for t in checks):
        return
    columns = _TABLES["remote_files"]
    names = ", ".join(_q(n) for n, _, _ in columns)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("ALTER TABLE remote_files RENAME TO remote_files_before_openapi")
        _ensure_table(con, "remote_files", columns)
        con.execute(f"INSERT INTO remote_files ({names}) SELECT {names} FROM remote_files_before_openapi")
        con.execute("DROP TABLE remote_files_before_openapi")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise

# ---------------------------------------------------------------------------------------------
# Results handed back to callers


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one offered file.

    ``status``: ``new`` (loaded), ``duplicate`` (these bytes were already known; nothing changed),
    ``quarantined`` (kept in the archive, not loaded; see ``problems``) or ``failed`` (could not even
    be read, so nothing was archived). ``rows``: lines loaded from the file (0 unless loaded).
    """

    name: str
    path: str
    sha256: str | None
    status: str
    family: str | None = None
    report: str | None = None
    variant: str | None = None
    rows: int = 0
    problems: tuple[errors.FormatError, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": self.path, "sha256": self.sha256, "status": self.status,
            "family": self.family, "report": self.report, "variant": self.variant, "rows": self.rows,
            "problems": [p.to_dict() for p in self.problems],
        }


@dataclass(frozen=True)
class IngestReport:
    """Per-file outcomes, in the order the files were offered."""

    files: tuple[FileOutcome, ...]

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def ok(self) -> bool:
        return all(f.status in ("new", "duplicate") for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        counts = {s: self.count(s) for s in ("new", "duplicate", "quarantined", "failed")}
        return {"counts": counts, "files": [f.to_dict() for f in self.files]}


@dataclass(frozen=True)
class LedgerIngest:
    """What happened to one ledger file.

    ``status``: ``new`` (now the ledger's current version), ``unchanged`` (the same bytes read with the
    same settings are already current), ``quarantined`` (not loaded; the previous version stays
    current) or ``failed`` (unreadable, nothing archived). ``replaced``: sha256 of the version(s) this
    one replaced.
    """

    ledger_name: str
    name: str
    sha256: str | None
    status: str
    rows: int = 0
    replaced: tuple[str, ...] = ()
    problems: tuple[errors.FormatError, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status in ("new", "unchanged")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ledger_name": self.ledger_name, "name": self.name, "sha256": self.sha256, "status": self.status,
            "rows": self.rows, "replaced": list(self.replaced), "problems": [p.to_dict() for p in self.problems],
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _first_error(problems: Sequence[errors.FormatError]) -> str | None:
    return next((str(p) for p in problems if p.severity == "error"), None)


def _names_json(names: Sequence[str]) -> str:
    return json.dumps(list(names), ensure_ascii=False)


def _counts(problems: Sequence[errors.FormatError]) -> tuple[int, int]:
    errs = sum(1 for p in problems if p.severity == "error")
    return errs, len(problems) - errs


# ---------------------------------------------------------------------------------------------


class Workspace:
    """``<root>/alirecon.toml`` + ``<root>/archive/`` + ``<root>/alirecon.duckdb``."""

    def __init__(self, root: Path, config: WorkspaceConfig, archive: Archive,
                 con: duckdb.DuckDBPyConnection) -> None:
        self.root = root
        self.config = config
        self.archive = archive
        self.con = con

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def init(cls, root: Path, config: WorkspaceConfig | None = None) -> Workspace:
        """Create the workspace, or open it when it exists (a different ``config`` is refused, not written)."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        cfg_path = root / CONFIG_NAME
        if cfg_path.exists():
            existing = _load_config(cfg_path)
            if config is not None and config != existing:
                raise errors.ConfigError(
                    f"{root} is already a workspace with a different configuration; edit {cfg_path} instead"
                )
        else:
            tmp = cfg_path.with_name(cfg_path.name + ".part")
            (config or WorkspaceConfig()).dump(tmp)
            os.replace(tmp, cfg_path)
        (root / ARCHIVE_DIR).mkdir(exist_ok=True)
        return cls.open(root)

    @classmethod
    def open(cls, root: Path) -> Workspace:
        root = Path(root)
        cfg_path = root / CONFIG_NAME
        if not cfg_path.is_file():
            raise errors.ConfigError(f"{root} is not an alirecon workspace (no {CONFIG_NAME}); run init first")
        config = _load_config(cfg_path)
        try:
            con = new_connection(str(root / DB_NAME), exponents=config.parse.exponent_overrides,
                                 threads=config.duckdb.threads, memory_limit=config.duckdb.memory_limit)
        except duckdb.Error as exc:
            raise errors.ConfigError(f"cannot open {root / DB_NAME}: {exc}") from exc
        try:
            _ensure_schema(con)
        except BaseException:
            con.close()
            raise
        archive = Archive(root / ARCHIVE_DIR)
        archive.remove_stale_parts()  # parts of a put killed earlier (never among the objects)
        return cls(root, config, archive, con)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.con.begin()
        try:
            yield
        except BaseException:
            self.con.rollback()
            raise
        self.con.commit()

    # -- provider reports -----------------------------------------------------------------------

    def ingest(self, paths: Iterable[Path], *,
               progress: Callable[[str, int], None] | None = None) -> IngestReport:
        """Archive, parse and load each file; one bad file never stops the others.

        ``progress(name, done)`` is called after each file with the number of files handled so far.
        """
        options = self.config.parse.to_options()
        outcomes: list[FileOutcome] = []
        for done, path in enumerate(paths, start=1):
            path = Path(path)
            outcomes.append(self._ingest_one(path, options))
            if progress is not None:
                progress(path.name, done)
        return IngestReport(tuple(outcomes))

    def _ingest_one(self, path: Path, options: ParseOptions) -> FileOutcome:
        name = path.name
        try:
            put = self.archive.put_file(path)
        except (OSError, errors.AlireconError) as exc:
            return FileOutcome(name, str(path), None, "failed",
                               problems=(LoadError(f"cannot archive the file: {exc}", file=name),))
        known = self.con.execute(
            "SELECT family, report, variant, status, row_count FROM files WHERE sha256 = ?", [put.sha256]
        ).fetchall()
        retry = bool(known) and self._has_load_error("problems", "sha256", put.sha256)
        if known and not retry:
            family, report, variant, status, row_count = known[0]
            self.con.execute("INSERT INTO deliveries (sha256, name, source_path, seen_at, duplicate) "
                             "VALUES (?, ?, ?, ?, true)", [put.sha256, name, str(path.absolute()), _now()])
            return FileOutcome(name, str(path), put.sha256, "duplicate", family, report, variant,
                               int(row_count) if status == "parsed" else 0)
        parsed: ParsedFile | None = None
        try:
            with self._archived_view(put.sha256, path) as view:
                parsed = registry.parse_file(view, con=self.con, options=options, name=name)
                if parsed.sha256 and parsed.sha256 != put.sha256:
                    raise LoadError(f"the parsed bytes (sha256 {parsed.sha256}) are not the archived ones",
                                    file=name)
                return self._load_report(parsed, put.size, path, replace=bool(known))
        except Exception as exc:  # any failure is this file's problem, never the other files'
            return self._record_failure(put.sha256, put.size, path, exc, replace=bool(known))
        finally:
            if parsed is not None:
                parsed.close()

    def _load_report(self, parsed: ParsedFile, size: int, path: Path, *, replace: bool) -> FileOutcome:
        sha = parsed.sha256
        problems = list(parsed.problems)
        status = "parsed" if parsed.ok else "quarantined"
        with self._transaction():
            if replace:
                self._forget_file(sha)
            self._insert_file(sha, path, size, status, problems, parsed=parsed)
            if parsed.ok:
                self.con.execute(f"INSERT INTO report_lines BY NAME {parsed.lines_sql()}")
                self._insert_arrow("declared", parsed.declared_arrow())
        return FileOutcome(path.name, str(path), sha, "new" if parsed.ok else "quarantined",
                           parsed.family or None, parsed.report or None, parsed.variant or None,
                           parsed.row_count if parsed.ok else 0, tuple(problems))

    def _record_failure(self, sha: str, size: int, path: Path, exc: Exception, *, replace: bool) -> FileOutcome:
        problem = exc if isinstance(exc, LoadError) else LoadError(
            f"loading failed, nothing was kept: {type(exc).__name__}: {exc}"[:500], file=path.name)
        try:
            with self._transaction():
                if replace:
                    self._forget_file(sha)
                self._insert_file(sha, path, size, "quarantined", [problem], parsed=None)
        except Exception as exc2:  # the database itself refuses: report, keep going with the other files
            note = LoadError(f"the failure could not be recorded: {type(exc2).__name__}: {exc2}"[:500],
                             file=path.name)
            return FileOutcome(path.name, str(path), sha, "failed", problems=(problem, note))
        return FileOutcome(path.name, str(path), sha, "quarantined", problems=(problem,))

    def _insert_file(self, sha: str, path: Path, size: int, status: str, problems: Sequence[errors.FormatError],
                     *, parsed: ParsedFile | None) -> None:
        now = _now()
        n_err, n_warn = _counts(problems)
        self.con.execute("INSERT INTO deliveries (sha256, name, source_path, seen_at, duplicate) "
                         "VALUES (?, ?, ?, ?, false)", [sha, path.name, str(path.absolute()), now])
        self.con.execute(
            "INSERT INTO files (sha256, first_name, size, family, report, variant, meta, status, reason, "
            "error_count, warning_count, row_count, ingested_at, extras_names) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [sha, path.name, size,
             (parsed.family or None) if parsed else None, (parsed.report or None) if parsed else None,
             (parsed.variant or None) if parsed else None,
             json.dumps(parsed.meta if parsed else {}, sort_keys=True, ensure_ascii=False),
             status, _first_error(problems), n_err, n_warn, parsed.row_count if parsed else 0, now,
             _names_json(parsed.extras_names if parsed else ())],
        )
        self._insert_problems("problems", "sha256", sha, problems)

    def _forget_file(self, sha: str) -> None:
        """Drop what a failed earlier load recorded, before loading the file again."""
        for table, col in (("report_lines", "source_sha256"), ("declared", "source_sha256"),
                           ("problems", "sha256"), ("files", "sha256")):
            self.con.execute(f"DELETE FROM {table} WHERE {col} = ?", [sha])

    def _insert_problems(self, table: str, key_col: str, key: Any, problems: Sequence[errors.FormatError]) -> None:
        if not problems:
            return
        rows = [{key_col: key, "ord": i, **p.to_dict()} for i, p in enumerate(problems)]
        self._insert_arrow(table, pa.Table.from_pylist(rows))

    def _insert_arrow(self, table: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        view = f"_ar_insert_{table}"
        self.con.register(view, data)
        try:
            self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {view}")
        finally:
            self.con.unregister(view)

    def _has_load_error(self, table: str, key_col: str, key: Any) -> bool:
        return bool(scalar(self.con, f"SELECT count(*) FROM {table} WHERE {key_col} = ? AND code = ?",
                           [key, LoadError.code]))

    @contextlib.contextmanager
    def _archived_view(self, sha: str, original: Path) -> Iterator[Path]:
        """A path carrying the original name (parsers look at the suffix) whose bytes are the archived ones.

        Falls back to the original path where symlinks are not allowed; callers compare the parsed
        sha256 with the archived one either way.
        """
        (self.root / TMP_DIR).mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="view-", dir=self.root / TMP_DIR))
        try:
            view = tmp / original.name
            try:
                os.symlink(self.archive.path_of(sha).absolute(), view)
            except OSError:
                view = original
            yield view
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def report_lines_sql(self, *, ordered: bool = True) -> str:
        """A SELECT of the ``schema.REPORT_LINE`` columns of every parsed file (wrap it in parentheses to
        use it as a relation). ``ordered=False`` skips the sort when the caller orders anyway."""
        order = " ORDER BY source_name, source_sha256, line_no" if ordered else ""
        return (f"SELECT {_select_list(REPORT_LINE)} FROM report_lines "
                f"WHERE source_sha256 IN (SELECT sha256 FROM files WHERE status = 'parsed'){order}")

    def files(self) -> pa.Table:
        """Every known file with its status, oldest first."""
        return self.con.sql("SELECT * FROM files ORDER BY ingested_at, sha256").to_arrow_table()

    def problems(self, sha256: str) -> list[errors.FormatError]:
        """The stored problems of one file, as typed errors."""
        return self._problems("problems", "sha256", sha256)

    def _problems(self, table: str, key_col: str, key: Any) -> list[errors.FormatError]:
        cols = ", ".join(_q(c) for c in _PROBLEM_FIELDS)
        out: list[errors.FormatError] = []
        for row in self.con.execute(f"SELECT {cols} FROM {table} WHERE {key_col} = ? ORDER BY ord", [key]).fetchall():
            d = dict(zip(_PROBLEM_FIELDS, row, strict=True))
            cls = errors.problem_class(d.pop("code"))
            out.append(cls(d.pop("message"), **d))
        return out

    # -- the user's ledger ----------------------------------------------------------------------

    def ingest_ledger(self, path: Path, ledger: LedgerConfig, *, name: str | None = None) -> LedgerIngest:
        """Load a ledger file as the current version of the ledger ``name``.

        ``name`` (default: ``ledger.name``) identifies the ledger across versions. The ledger is the
        user's current truth: a new version replaces the previous version's lines in one transaction;
        the same bytes read with the same settings change nothing; a bad version is quarantined and the
        previous one stays current.
        """
        path = Path(path)
        file_name = path.name
        ledger_name = name or ledger.name
        try:
            put = self.archive.put_file(path)
        except (OSError, errors.AlireconError) as exc:
            return LedgerIngest(ledger_name, file_name, None, "failed",
                                problems=(LoadError(f"cannot archive the file: {exc}", file=file_name),))
        fingerprint = hashlib.sha256(json.dumps(
            {"ledger": ledger.model_dump(mode="json"), "parse": self.config.parse.model_dump(mode="json")},
            sort_keys=True).encode("utf-8")).hexdigest()
        last = self.con.execute(
            "SELECT load_id, status, row_count FROM ledger_files WHERE ledger_name = ? AND sha256 = ? "
            "AND config_sha256 = ? ORDER BY load_id DESC LIMIT 1", [ledger_name, put.sha256, fingerprint]
        ).fetchall()
        if last:
            load_id, status, row_count = last[0]
            if status == "current":
                return LedgerIngest(ledger_name, file_name, put.sha256, "unchanged", int(row_count))
            if status == "quarantined" and not self._has_load_error("ledger_problems", "load_id", load_id):
                return LedgerIngest(ledger_name, file_name, put.sha256, "quarantined",
                                    problems=tuple(self._problems("ledger_problems", "load_id", load_id)))
        options = self.config.parse.to_options()
        record = _LedgerLoad(ledger_name, file_name, path, put.sha256, put.size, fingerprint)
        parsed: ParsedLedger | None = None
        try:
            with self._archived_view(put.sha256, path) as view:
                parsed = ledger_reader.read_ledger(view, ledger, self.con, options, name=file_name)
                if parsed.sha256 and parsed.sha256 != put.sha256:
                    raise LoadError(f"the parsed bytes (sha256 {parsed.sha256}) are not the archived ones",
                                    file=file_name)
                return self._load_ledger(record, parsed)
        except Exception as exc:
            problem = exc if isinstance(exc, LoadError) else LoadError(
                f"loading failed, nothing was kept: {type(exc).__name__}: {exc}"[:500], file=file_name)
            with self._transaction():
                self._insert_ledger_file(record, "quarantined", [problem], 0)
            return LedgerIngest(ledger_name, file_name, put.sha256, "quarantined", problems=(problem,))
        finally:
            if parsed is not None:
                parsed.close()

    def _load_ledger(self, record: _LedgerLoad, parsed: ParsedLedger) -> LedgerIngest:
        problems: list[errors.FormatError] = list(parsed.problems)
        if not parsed.ok:
            with self._transaction():
                self._insert_ledger_file(record, "quarantined", problems, 0)
            return LedgerIngest(record.ledger_name, record.file_name, record.sha256, "quarantined",
                                problems=tuple(problems))
        with self._transaction():
            previous = self.con.execute(
                "SELECT load_id, sha256 FROM ledger_files WHERE ledger_name = ? AND status = 'current' "
                "ORDER BY load_id", [record.ledger_name]).fetchall()
            for load_id, _ in previous:
                self.con.execute("DELETE FROM ledger_lines WHERE load_id = ?", [load_id])
                self.con.execute("UPDATE ledger_files SET status = 'replaced', replaced_at = ? WHERE load_id = ?",
                                 [_now(), load_id])
            load_id = self._next_load_id()
            self.con.execute(f"INSERT INTO ledger_lines BY NAME SELECT *, {load_id} AS load_id "
                             f"FROM ({parsed.lines_sql()})")
            rows = int(scalar(self.con, "SELECT count(*) FROM ledger_lines WHERE load_id = ?", [load_id]))
            self._insert_ledger_file(record, "current", problems, rows, load_id=load_id,
                                     extras_names=parsed.extras_names)
        return LedgerIngest(record.ledger_name, record.file_name, record.sha256, "new", rows,
                            tuple(sha for _, sha in previous), tuple(problems))

    def _next_load_id(self) -> int:
        return int(scalar(self.con, "SELECT coalesce(max(load_id), 0) + 1 FROM ledger_files"))

    def _insert_ledger_file(self, record: _LedgerLoad, status: str, problems: Sequence[errors.FormatError],
                            rows: int, *, load_id: int | None = None, extras_names: Sequence[str] = ()) -> None:
        load_id = self._next_load_id() if load_id is None else load_id
        n_err, n_warn = _counts(problems)
        self.con.execute(
            "INSERT INTO ledger_files (load_id, ledger_name, sha256, file_name, source_path, size, config_sha256, "
            "status, reason, error_count, warning_count, row_count, ingested_at, extras_names) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [load_id, record.ledger_name, record.sha256, record.file_name, str(record.path.absolute()),
             record.size, record.config_sha256, status, _first_error(problems), n_err, n_warn, rows, _now(),
             _names_json(extras_names)],
        )
        self._insert_problems("ledger_problems", "load_id", load_id, problems)

    def ledger_lines_sql(self, *, ordered: bool = True) -> str:
        """A SELECT of the ``schema.LEDGER_LINE`` columns of the current version of every ledger."""
        order = " ORDER BY source_name, source_sha256, ledger_row" if ordered else ""
        return (f"SELECT {_select_list(LEDGER_LINE)} FROM ledger_lines "
                f"WHERE load_id IN (SELECT load_id FROM ledger_files WHERE status = 'current'){order}")

    # -- runs, checks and exceptions ------------------------------------------------------------

    def new_run(self, kind: str) -> str:
        """A run id that sorts in creation order: ``<8-digit counter>-<UTC time>``."""
        now = _now()
        with self._transaction():
            seq = int(scalar(self.con, "SELECT coalesce(max(seq), 0) + 1 FROM runs"))
            run_id = f"{seq:08d}-{now:%Y%m%dT%H%M%S}Z"
            self.con.execute("INSERT INTO runs (run_id, seq, kind, started_at) VALUES (?, ?, ?, ?)",
                             [run_id, seq, kind, now])
        return run_id

    def save_checks(self, results: pa.Table, run_id: str) -> None:
        """Store a run's check results (``schema.CHECK_RESULT``); saving the same run again replaces them."""
        self._save_run_rows("check_results", CHECK_RESULT, results, run_id, "check")

    def save_exceptions(self, table: str | pa.Table, run_id: str) -> None:
        """Store a run's exceptions (``schema.EXCEPTION``), from an Arrow table or a table in ``con``."""
        self._save_run_rows("exceptions", EXCEPTION, table, run_id, "exception")

    def _save_run_rows(self, table: str, schema: pa.Schema, data: str | pa.Table, run_id: str, what: str) -> None:
        if not scalar(self.con, "SELECT count(*) FROM runs WHERE run_id = ?", [run_id]):
            raise errors.AlireconError(f"unknown run id {run_id!r}; create it with new_run()")
        if isinstance(data, str):
            # insertion order is the producer's (deterministic) order: DuckDB preserves it without ORDER BY
            data = self.con.sql(f"SELECT {_select_list(schema)} FROM {data}").to_arrow_table()
        rows = data.select(schema.names).cast(schema)
        rows = rows.append_column("run_id", pa.array([run_id] * rows.num_rows, pa.string()))
        rows = rows.append_column("ord", pa.array(range(rows.num_rows), pa.int64()))
        with self._transaction():
            self.con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            self._insert_arrow(table, rows)
            self.con.execute(f"UPDATE runs SET {what}s_saved_at = ?, {what}_count = ? WHERE run_id = ?",
                             [_now(), rows.num_rows, run_id])

    def latest_checks(self) -> pa.Table:
        """The check results of the latest run that saved any (``schema.CHECK_RESULT``, in saved order)."""
        return self._latest("check_results", CHECK_RESULT, "checks_saved_at")

    def latest_exceptions(self) -> pa.Table:
        """The exceptions of the latest run that saved any (``schema.EXCEPTION``, in saved order)."""
        return self._latest("exceptions", EXCEPTION, "exceptions_saved_at")

    def _latest(self, table: str, schema: pa.Schema, saved_col: str) -> pa.Table:
        run_id = scalar(self.con, f"SELECT run_id FROM runs WHERE {saved_col} IS NOT NULL ORDER BY seq DESC LIMIT 1")
        if run_id is None:
            return schema.empty_table()
        data = self.con.sql(f"SELECT {_select_list(schema)} FROM {table} WHERE run_id = ? ORDER BY ord",
                            params=[run_id]).to_arrow_table()
        return data.cast(schema)

    # -- the fetch manifest (remote_files) ------------------------------------------------------
    # Times are the caller's ``now`` so a simulated clock (sandbox, tests) sees a consistent history.

    def remote_seen(self, account: str | None, source: str, remote_path: str, name: str, size: int,
                    mtime: datetime | None, now: datetime) -> tuple[bool, RemoteFile]:
        """Record that a source lists this file; ``(True, row)`` when a complete version has the same size and
        mtime (nothing to fetch), else ``(False, open attempt row)``."""
        return self.remote_seen_many(account, source, [Listed(remote_path, name, size, mtime)], now)[0]

    def remote_unchanged(self, account: str | None, source: str, listed: Sequence[Listed]) -> set[str]:
        """The listed paths whose newest complete version has the same size and mtime (read only: what
        ``remote_seen_many`` would skip), so a caller can leave them unread."""
        newest: dict[str, RemoteFile] = {}
        for row in self._remote_rows("account IS NOT DISTINCT FROM ? AND source = ? AND state = 'complete' AND "
                                     "list_contains(?, remote_path)",
                                     [account, source, sorted({e.remote_path for e in listed})], order="version"):
            newest[row.remote_path] = row
        return {e.remote_path for e in listed if (r := newest.get(e.remote_path)) is not None
                and (r.size, r.mtime) == (e.size, e.mtime)}

    def remote_seen_many(self, account: str | None, source: str, listed: Sequence[Listed],
                         now: datetime) -> list[tuple[bool, RemoteFile]]:
        """``remote_seen`` for a whole listing in one transaction and a few set-wise statements: per-file
        statements made DuckDB's per-statement cost the limit of a fetch of many small files
        (bench/sftp_bench.py)."""
        out: list[tuple[bool, RemoteFile]] = []
        if not listed:
            return out
        with self._transaction():
            known: dict[str, list[RemoteFile]] = {}
            for row in self._remote_rows("account IS NOT DISTINCT FROM ? AND source = ? AND "
                                         "list_contains(?, remote_path)",
                                         [account, source, sorted({e.remote_path for e in listed})],
                                         order="version DESC NULLS FIRST"):
                known.setdefault(row.remote_path, []).append(row)
            touched: dict[int, RemoteFile] = {}  # file_id -> its row as it will be (complete rows seen again,
            inserted: set[int] = set()           # attempts refreshed, new attempts)
            next_id = int(scalar(self.con, "SELECT coalesce(max(file_id), 0) + 1 FROM remote_files"))
            for e in listed:
                rows = known.setdefault(e.remote_path, [])
                latest = next((r for r in rows if r.state == "complete"), None)
                if latest is not None and latest.size == e.size and latest.mtime == e.mtime:
                    touched[latest.file_id] = replace(latest, last_seen_at=now)
                    out.append((True, touched[latest.file_id]))
                    continue
                attempt = next((r for r in rows if r.state != "complete"), None)
                if attempt is None:
                    attempt = RemoteFile(next_id, account, source, e.remote_path, e.name, e.size, e.mtime, None, None,
                                         False, "listed", None, 0, now, now, None, None)
                    inserted.add(next_id)
                    rows.insert(0, attempt)
                    next_id += 1
                touched[attempt.file_id] = replace(attempt, name=e.name, size=e.size, mtime=e.mtime, last_seen_at=now)
                rows[rows.index(attempt)] = touched[attempt.file_id]
                out.append((False, touched[attempt.file_id]))
            self._remote_write([r for r in touched.values() if r.file_id in inserted],
                               [r for r in touched.values() if r.file_id not in inserted])
        return [(skip, touched[row.file_id]) for skip, row in out]

    def remote_failed(self, file_id: int, reason: str, now: datetime, *, sha256: str | None = None) -> RemoteFile:
        """An attempt failed (``sha256`` None) or brought bytes that are not complete yet (``sha256`` given)."""
        state = "failed" if sha256 is None else "incomplete"
        self.con.execute("UPDATE remote_files SET state = ?, reason = ?, sha256 = coalesce(?, sha256), "
                         "attempts = attempts + 1, last_seen_at = ? WHERE file_id = ? AND state <> 'complete'",
                         [state, reason, sha256, now, file_id])
        return self._remote_row(file_id)

    def remote_fetched(self, file_id: int, sha256: str, size: int, mtime: datetime | None,
                       now: datetime) -> tuple[str, RemoteFile]:
        """Complete the open attempt ``file_id`` with archived bytes: ``new`` (version 1), ``republished`` (other
        bytes than every earlier version: a new version) or ``unchanged`` (an earlier version's bytes: that row
        is refreshed and the attempt row dropped)."""
        return self.remote_fetched_many([Fetched(file_id, sha256, size, mtime)], now)[0]

    def remote_fetched_many(self, fetched: Sequence[Fetched], now: datetime) -> list[tuple[str, RemoteFile]]:
        """``remote_fetched`` for a batch of attempts in one transaction (see ``remote_seen_many`` for why)."""
        if not fetched:
            return []
        with self._transaction():
            attempts = {r.file_id: r for r in self._remote_rows("list_contains(?, file_id)",
                                                                 [[f.file_id for f in fetched]])}
            missing = [f.file_id for f in fetched if f.file_id not in attempts]
            if missing:
                raise errors.AlireconError(f"no remote file {missing[0]} in the manifest")
            versions: dict[tuple[str | None, str, str], list[RemoteFile]] = {}
            for row in self._remote_rows("state = 'complete' AND list_contains(?, remote_path)",
                                         [sorted({a.remote_path for a in attempts.values()})], order="version DESC"):
                versions.setdefault((row.account, row.source, row.remote_path), []).append(row)
            out: list[tuple[str, RemoteFile]] = []
            changed: dict[int, RemoteFile] = {}
            dropped: list[int] = []
            for f in fetched:
                attempt = changed.get(f.file_id, attempts[f.file_id])
                if attempt.state == "complete":  # already recorded (a re-run after a crash)
                    out.append(("unchanged", attempt))
                    continue
                earlier = versions.setdefault((attempt.account, attempt.source, attempt.remote_path), [])
                same = next((r for r in earlier if r.sha256 == f.sha256), None)
                if same is not None:
                    changed[same.file_id] = replace(same, size=f.size, mtime=f.mtime, last_seen_at=now)
                    earlier[earlier.index(same)] = changed[same.file_id]
                    dropped.append(f.file_id)
                    out.append(("unchanged", changed[same.file_id]))
                    continue
                version = (earlier[0].version or 0) + 1 if earlier else 1
                changed[f.file_id] = replace(attempt, sha256=f.sha256, size=f.size, mtime=f.mtime, version=version,
                                             republished=version > 1, state="complete", reason=None,
                                             last_seen_at=now, fetched_at=now)
                earlier.insert(0, changed[f.file_id])
                out.append(("new" if version == 1 else "republished", changed[f.file_id]))
            if dropped:
                self.con.execute("DELETE FROM remote_files WHERE list_contains(?, file_id)", [dropped])
            self._remote_write([], [r for r in changed.values() if r.file_id not in dropped])
        return out

    def remote_to_ingest(self, account: str | None = None, source: str | None = None) -> list[RemoteFile]:
        """Complete files not yet handed to ``ingest`` (a crash between fetch and ingest leaves some)."""
        return self._remote_rows("state = 'complete' AND ingested_at IS NULL AND (? IS NULL OR account = ?) "
                                 "AND (? IS NULL OR source = ?)", [account, account, source, source])

    def remote_ingested(self, file_ids: Sequence[int], now: datetime) -> None:
        if file_ids:
            self.con.execute("UPDATE remote_files SET ingested_at = ? WHERE list_contains(?, file_id)",
                             [now, list(file_ids)])

    def remote_files(self, account: str | None = None) -> pa.Table:
        """The manifest with each file's parse outcome (``parse_status``/``parse_reason`` from ``files``)."""
        return self.con.sql(
            "SELECT r.*, f.status AS parse_status, f.reason AS parse_reason FROM remote_files r "
            "LEFT JOIN files f ON f.sha256 = r.sha256 AND r.state = 'complete' "
            "WHERE $account IS NULL OR r.account = $account ORDER BY r.account, r.source, r.remote_path, r.file_id",
            params={"account": account}).to_arrow_table()

    def _remote_write(self, inserts: Sequence[RemoteFile], updates: Sequence[RemoteFile]) -> None:
        """Insert new manifest rows and overwrite existing ones (every column) from Arrow, set-wise."""
        names = [f.name for f in fields(RemoteFile)]
        for rows, statement in ((inserts, "INSERT INTO remote_files ({cols}) SELECT {cols} FROM _remote_rows_in"),
                                (updates, "UPDATE remote_files SET {sets} FROM _remote_rows_in u "
                                          "WHERE remote_files.file_id = u.file_id")):
            if not rows:
                continue
            table = pa.Table.from_pylist([{n: getattr(r, n) for n in names} for r in rows], schema=_REMOTE_ARROW)
            # no ``finally``: after a failed statement the transaction is aborted, an unregister would fail too
            # and hide why; the caller's rollback drops the registration with everything else
            self.con.register("_remote_rows_in", table)
            self.con.execute(statement.format(cols=", ".join(_q(n) for n in names),
                                              sets=", ".join(f"{_q(n)} = u.{_q(n)}" for n in names[1:])))
            self.con.unregister("_remote_rows_in")

    def _remote_row(self, file_id: int) -> RemoteFile:
        rows = self._remote_rows("file_id = ?", [file_id])
        if not rows:
            raise errors.AlireconError(f"no remote file {file_id} in the manifest")
        return rows[0]

    def _remote_rows(self, where: str, params: list[Any], *, order: str = "file_id") -> list[RemoteFile]:
        cols = ", ".join(_q(f.name) for f in fields(RemoteFile))
        rows = self.con.execute(f"SELECT {cols} FROM remote_files WHERE {where} ORDER BY {order}", params).fetchall()
        return [RemoteFile(*row) for row in rows]


@dataclass(frozen=True)
class RemoteFile:
    """One row of the fetch manifest (``remote_files``)."""

    file_id: int
    account: str | None
    source: str
    remote_path: str
    name: str
    size: int
    mtime: datetime | None
    sha256: str | None
    version: int | None
    republished: bool
    state: str
    reason: str | None
    attempts: int
    first_seen_at: datetime
    last_seen_at: datetime
    fetched_at: datetime | None
    ingested_at: datetime | None


_TS = pa.timestamp("us", tz="UTC")
_REMOTE_ARROW = pa.schema([("file_id", pa.int64()), ("account", pa.string()), ("source", pa.string()),
                           ("remote_path", pa.string()), ("name", pa.string()), ("size", pa.int64()),
                           ("mtime", _TS), ("sha256", pa.string()), ("version", pa.int32()),
                           ("republished", pa.bool_()), ("state", pa.string()), ("reason", pa.string()),
                           ("attempts", pa.int32()), ("first_seen_at", _TS), ("last_seen_at", _TS),
                           ("fetched_at", _TS), ("ingested_at", _TS)])


@dataclass(frozen=True)
class Listed:
    """A file as a source lists it (``remote_seen_many``)."""

    remote_path: str
    name: str
    size: int
    mtime: datetime | None


@dataclass(frozen=True)
class Fetched:
    """An attempt's bytes, archived (``remote_fetched_many``)."""

    file_id: int
    sha256: str
    size: int
    mtime: datetime | None


@dataclass(frozen=True)
class _LedgerLoad:
    ledger_name: str
    file_name: str
    path: Path
    sha256: str
    size: int
    config_sha256: str


def _load_config(path: Path) -> WorkspaceConfig:
    try:
        return WorkspaceConfig.load(path)
    except (OSError, tomllib.TOMLDecodeError, pydantic.ValidationError) as exc:
        raise errors.ConfigError(f"{path}: {exc}") from exc
