"""The ``alirecon`` command line: every command prints a table for people and ``--json`` for programs.

Exit codes: 0 = everything agrees, 1 = discrepancies (quarantined files, failed checks, exceptions),
2 = an error (bad arguments, unreadable workspace, a bug).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import errors
from .config import LedgerConfig, WorkspaceConfig
from .formats.engine import ParsedFile, new_connection
from .formats.registry import parse_file
from .warehouse import IngestReport, Workspace

if TYPE_CHECKING:  # the payment modules load only when a pay command runs
    from .pay.client import PayClient, PayResult
    from .pay.flow import FlowSettings, PayJournal

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reconcile Alipay+, Antom and Alipay payments: parse, check and match every report exactly.")
console = Console()
err_console = Console(stderr=True)

EXIT_OK, EXIT_DISCREPANCY, EXIT_ERROR = 0, 1, 2
F = TypeVar("F", bound=Callable[..., Any])

WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", envvar="ALIRECON_WORKSPACE",
                                            help="Workspace folder (config + archive + database).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def _emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def guarded(fn: F) -> F:
    """Turn alirecon errors into exit code 2 with a one-line message (JSON when --json)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (errors.AlireconError, OSError, ValueError) as exc:
            if kwargs.get("as_json"):
                _emit({"error": type(exc).__name__, "message": str(exc)})
            else:
                err_console.print(f"[red]error:[/red] {exc}")
            if os.environ.get("ALIRECON_DEBUG"):
                raise
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress]:
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err_console, transient=True, disable=not enabled)
    with progress:
        yield progress


@contextmanager
def _spinner(enabled: bool, label: str) -> Iterator[None]:
    """A spinner with elapsed time for a stage whose length is unknown (stderr; off with --json)."""
    with _progress(enabled) as progress:
        progress.add_task(label, total=None)
        yield


def _expand(paths: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file()))
        else:
            out.append(p)
    return out


def _ingest(ws: Workspace, paths: Sequence[Path], show: bool, label: str = "ingesting") -> IngestReport:
    files = _expand(paths)
    with _progress(show) as progress:
        task = progress.add_task(label, total=len(files))
        return ws.ingest(files, progress=lambda name, done: progress.update(task, completed=done,
                                                                          description=f"{label} {name}"))


@contextmanager
def _file_progress(show: bool, label: str) -> Iterator[Callable[[str, int, int], None]]:
    with _progress(show) as progress:
        task = progress.add_task(label, total=None)

        def update(name: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, description=f"{label} {name}")

        yield update


# ---------------------------------------------------------------------------------------------


@app.command()
@guarded
def init(path: Annotated[Path, typer.Argument(help="Folder to create.")] = Path("."), as_json: JsonOpt = False) -> None:
    """Create a workspace: alirecon.toml, archive/ and the DuckDB database."""
    ws = Workspace.init(path)
    ws.close()
    if as_json:
        _emit({"workspace": str(path.resolve())})
    else:
        console.print(f"workspace ready: {path.resolve()}  (edit {path / 'alirecon.toml'} to map your ledger)")


@app.command()
@guarded
def ingest(paths: Annotated[list[Path], typer.Argument(help="Files or folders (searched recursively).")],
           workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Archive, detect, parse and load report files; bad files are quarantined with their reasons."""
    with Workspace.open(workspace) as ws:
        report = _ingest(ws, paths, not as_json)
    if as_json:
        _emit(report.to_dict())
    else:
        _print_ingest(report)
    raise typer.Exit(EXIT_DISCREPANCY if report.count("quarantined") or report.count("failed") else EXIT_OK)


def _print_ingest(report: IngestReport, limit: int = 50) -> None:
    table = Table(title="Files")
    for col in ("file", "report", "status", "rows", "first problem"):
        table.add_column(col)
    for o in report.files[:limit]:
        first = str(o.problems[0]) if o.problems else ""
        style = {"quarantined": "red", "failed": "red", "duplicate": "yellow"}.get(o.status, "")
        table.add_row(o.name, f"{o.family}.{o.report}" if o.family else "?", f"[{style}]{o.status}[/]" if style
                      else o.status, str(o.rows), first[:90])
    console.print(table)
    counts = {s: report.count(s) for s in ("new", "duplicate", "quarantined", "failed")}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items()))


@app.command()
@guarded
def check(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Run every check of every report against itself and its siblings."""
    from . import pipeline

    with Workspace.open(workspace) as ws, _spinner(not as_json, "checking reports"):
        run = pipeline.check(ws)
    if as_json:
        _emit({"run_id": run.run_id, "failures": run.failures, "results": pipeline.jsonable(run.results)})
    else:
        _print_checks(run.results)
    raise typer.Exit(EXIT_DISCREPANCY if run.failures else EXIT_OK)


def _print_checks(results: Any, limit: int = 40) -> None:
    rows = results.to_pylist()
    by_check: dict[str, list[int]] = {}
    for r in rows:
        by_check.setdefault(r["check_id"], [0, 0])[0 if r["status"] == "pass" else 1] += 1
    table = Table(title="Checks")
    for col in ("check", "passed", "failed"):
        table.add_column(col)
    for cid, (ok, bad) in sorted(by_check.items()):
        table.add_row(cid, str(ok), f"[red]{bad}[/red]" if bad else "0")
    console.print(table)
    failed = [r for r in rows if r["status"] == "fail"]
    if failed:
        t = Table(title="Failed checks")
        for col in ("check", "reason", "scope", "expected", "found", "where"):
            t.add_column(col)
        for r in failed[:limit]:
            where = ", ".join(f"{x['name']}:{x['line']}" if x["line"] else x["name"] for x in r["lineage"][:2])
            t.add_row(r["check_id"], r["reason_code"], r["scope"], str(r["expected"]), str(r["actual"]), where)
        console.print(t)


def _pairs(items: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise errors.ConfigError(f"{option} takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _one_shot_ledger(ledger: Path, maps: list[str], types: list[str], statuses: list[str], family: str | None,
                     unit: str | None, currency: str | None, refund_sign: str | None) -> LedgerConfig:
    columns = _pairs(maps, "--map")
    data: dict[str, Any] = {"name": ledger.name, "path": ledger, "family": family,
                            "record_types": _pairs(types, "--type"), "statuses": _pairs(statuses, "--status")}
    if refund_sign:
        data["refund_sign"] = refund_sign
    if columns:
        data["columns"] = columns
    if unit:
        data["amount_unit"] = unit
    if currency:
        data["currency"] = currency
    return LedgerConfig.model_validate(data)


@app.command()
@guarded
def reconcile(
    workspace: WorkspaceOpt = Path("."),
    report: Annotated[list[Path] | None,
                      typer.Option("--report", help="One-shot: report file(s), no workspace.")] = None,
    ledger: Annotated[Path | None, typer.Option("--ledger", help="One-shot: the ledger (CSV or Parquet).")] = None,
    maps: Annotated[list[str] | None, typer.Option("--map", help="One-shot: FIELD=COLUMN of the ledger.")] = None,
    types: Annotated[list[str] | None, typer.Option("--type", help="One-shot: ledger VALUE=RECORD_TYPE.")] = None,
    statuses: Annotated[list[str] | None, typer.Option("--status", help="One-shot: ledger VALUE=STATUS.")] = None,
    refund_sign: Annotated[str | None, typer.Option(
        help="One-shot: as_written (refunds negative) or negate_reverse_types.")] = None,
    family: Annotated[str | None, typer.Option(help="One-shot: family of the ledger rows.")] = None,
    unit: Annotated[str | None, typer.Option(help="One-shot: ledger amount unit, major or minor.")] = None,
    currency: Annotated[str | None, typer.Option(help="One-shot: fixed ledger currency.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the exceptions to a .parquet or .csv file.")] = None,
    extras: Annotated[bool, typer.Option(help="Keep unknown report columns (off saves memory).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Match report lines against the ledger; every discrepancy gets a class, a reason and both sides' lines."""
    from . import oneshot, pipeline

    if report or ledger:
        if not report or not ledger:
            raise errors.ConfigError("one-shot mode needs both --report and --ledger")
        cfg = _one_shot_ledger(ledger, maps or [], types or [], statuses or [], family, unit, currency, refund_sign)
        with _progress(not as_json) as progress:
            result = oneshot.reconcile_files(_expand(report), ledger, cfg, out=out, keep_extras=extras,
                                             progress=progress)
        if as_json:
            _emit(result.to_dict())
        else:
            oneshot.print_result(console, result)
        raise typer.Exit(EXIT_ERROR if result.problems_fatal else
                         EXIT_DISCREPANCY if result.exception_count or result.problems else EXIT_OK)
    with Workspace.open(workspace) as ws:
        with _spinner(not as_json, "reading ledgers"):
            ledgers = pipeline.ingest_ledgers(ws)
        with _spinner(not as_json, "matching"):
            run = pipeline.reconcile(ws)
        if out is not None:
            oneshot.write_table(run.exceptions, out)
    bad_ledgers = [x for x in ledgers if not x.ok]
    if as_json:
        _emit({"run_id": run.run_id, "ledgers": [x.to_dict() for x in ledgers], "counts": run.counts,
               "out_of_window": run.out_of_window, "exceptions": pipeline.jsonable(run.exceptions)})
    else:
        for x in bad_ledgers:
            err_console.print(f"[red]ledger {x.name} quarantined:[/red] {x.problems[0] if x.problems else ''}")
        _print_exceptions(run.exceptions)
    raise typer.Exit(EXIT_DISCREPANCY if run.exceptions.num_rows or bad_ledgers else EXIT_OK)


def _print_exceptions(exceptions: Any, limit: int = 40) -> None:
    from .pipeline import summary_counts

    counts = summary_counts(exceptions)
    table = Table(title="Exceptions by class")
    for col in ("family", "report", "class", "count"):
        table.add_column(col)
    for (fam, rep, cls), n in counts.items():
        table.add_row(fam, rep, cls, str(n))
    console.print(table)
    rows = exceptions.to_pylist()[:limit]
    if rows:
        t = Table(title=f"Exceptions (first {len(rows)} of {exceptions.num_rows})")
        for col in ("class", "reason", "key", "report", "ledger", "report line", "ledger row"):
            t.add_column(col)
        for r in rows:
            rl = r["report_lines"][0] if r["report_lines"] else None
            lr = r["ledger_rows"][0] if r["ledger_rows"] else None
            t.add_row(r["exception_class"], r["reason_code"], r["match_key"] or "",
                      f"{r['report_amount_minor']} {r['report_currency'] or ''}" if rl else "",
                      f"{r['ledger_amount_minor']} {r['ledger_currency'] or ''}" if lr else "",
                      f"{rl['name']}:{rl['line']}" if rl else "", f"{lr['name']}:{lr['line']}" if lr else "")
        console.print(t)


@app.command()
@guarded
def exceptions(
    workspace: WorkspaceOpt = Path("."),
    cls: Annotated[str | None, typer.Option("--class", help="Only this exception class.")] = None,
    family: Annotated[str | None, typer.Option(help="Only this family.")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show in the table.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Show the exceptions of the latest reconcile run."""
    from . import pipeline

    with Workspace.open(workspace) as ws:
        table = ws.latest_exceptions()
    rows = [r for r in pipeline.jsonable(table)
            if (cls is None or r["exception_class"] == cls) and (family is None or r["family"] == family)]
    if as_json:
        _emit({"count": len(rows), "exceptions": rows})
    else:
        import pyarrow as pa

        _print_exceptions(pa.Table.from_pylist(rows, schema=table.schema) if rows else table.slice(0, 0), limit)
    raise typer.Exit(EXIT_DISCREPANCY if rows else EXIT_OK)


def parsed_summary(parsed: ParsedFile) -> dict[str, Any]:
    """The ``parse --json`` object: what the file holds, what it says about itself, what is wrong."""
    declared: dict[str, dict[str, int]] = {}
    count = None
    for d in parsed.declared:
        if d.scope not in ("TOTAL", "summary", "file"):
            continue
        if d.figure == "count":
            count = (count or 0) + (d.value or 0)
        elif d.figure in ("amount", "settlement", "fee") and d.value is not None:
            value = -d.value if d.direction == "DEBIT" else d.value
            slot = declared.setdefault(d.currency or "", {})
            slot[d.figure] = slot.get(d.figure, 0) + value
    return {
        "file": parsed.name, "sha256": parsed.sha256, "family": parsed.family, "report": parsed.report,
        "variant": parsed.variant, "meta": parsed.meta, "rows": parsed.row_count, "by_type": parsed.by_type(),
        "totals": parsed.totals(), "declared": declared, "declared_count": count,
        "declared_figures": [d.__dict__ for d in parsed.declared], "ok": parsed.ok,
        "problems": [p.to_dict() for p in parsed.problems],
    }


@app.command()
@guarded
def parse(path: Annotated[Path, typer.Argument(help="A report file.")], as_json: JsonOpt = False) -> None:
    """Parse one report and show its rows by type, its totals, its own declared totals and its problems."""
    if not path.is_file():
        raise errors.ConfigError(f"no such file: {path}")
    con = new_connection()
    with parse_file(path, con) as parsed:
        data = parsed_summary(parsed)
    if as_json:
        _emit(data)
    else:
        console.print(f"[bold]{data['file']}[/bold]: {data['family'] or '?'}.{data['report'] or '?'} "
                      f"{data['variant']}  {data['rows']} rows  sha256 {data['sha256'][:16]}")
        console.print(f"by type: {data['by_type']}\ntotals: {data['totals']}\ndeclared: {data['declared']}")
        for p in parsed.problems[:50]:
            console.print(f"[red]{p}[/red]" if p.severity == "error" else f"[yellow]{p}[/yellow]")
    raise typer.Exit(EXIT_OK if parsed.ok and not parsed.problems else EXIT_DISCREPANCY)


@app.command()
@guarded
def demo(
    seed: Annotated[int, typer.Option(help="Seed of the synthetic world.")] = 42,
    days: Annotated[int, typer.Option(help="Days of payments.", min=7)] = 7,
    keep: Annotated[Path | None, typer.Option(help="Keep the world and workspace in this folder.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a synthetic provider world, run ingest -> check -> reconcile, and grade it against the truth."""
    from .demo import run_demo

    label = "fetching from the sandbox SFTP server, morning by simulated morning:"
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        with _file_progress(not as_json, label) as progress:
            result = run_demo(keep, seed=seed, days=days, progress=progress)
        result.kept = True
    else:
        with tempfile.TemporaryDirectory(prefix="alirecon-demo-") as tmp, \
                _file_progress(not as_json, label) as progress:
            result = run_demo(Path(tmp), seed=seed, days=days, progress=progress)
    if as_json:
        _emit(result.to_dict())
    else:
        result.print(console)
    raise typer.Exit(EXIT_OK if result.diff.exact else EXIT_DISCREPANCY)


# --- alirecon sandbox: the offline provider -------------------------------------------------------

sandbox_app = typer.Typer(no_args_is_help=True, help="The offline provider: a synthetic world on real servers.")
app.add_typer(sandbox_app, name="sandbox")


SANDBOX_ALIPAY_PID = "2088000000000001"  # a 16-digit PID (2088...) for a world without Alipay China bills


@contextmanager
def _sandbox_gateway(root: Path, clock: Any, app_id: str | None, pid: str | None) -> Iterator[dict[str, str]]:
    """Start the Alipay China gateway on loopback over ``<root>/alipay_cn`` (``<pid>/<bill_type>/<date>.csv.zip``)
    with one app (``sandbox.alipay_gateway.world_gateway``); what is returned (and printed) holds no private key."""
    from .sandbox.alipay_gateway import WORLD_APP_ID, world_gateway

    app_id = app_id or WORLD_APP_ID
    bills = root / "alipay_cn"
    if pid is None:
        folders = sorted(p.name for p in bills.iterdir() if p.is_dir() and p.name.isdigit()) if bills.is_dir() else []
        pid = folders[0][:16] if folders else SANDBOX_ALIPAY_PID
    gateway, key_file = world_gateway(root, clock, pid, app_id)
    with gateway:
        yield {"gateway": gateway.url, "app_id": app_id, "pid": pid, "private_key_file": str(key_file.resolve()),
               "alipay_public_key": gateway.alipay_public_key_pem, "bills": str(bills.resolve())}


SANDBOX_PAY_KEY = "pay-client-key.pem"  # the barcode payment client's private key, in the world folder
SANDBOX_PAY_TOML = "pay.toml"  # the [pay] section a user pastes into alirecon.toml


@contextmanager
def _sandbox_pay(root: Path, clock: Any, tree: Any) -> Iterator[dict[str, str]]:
    """Start the barcode payment gateway on loopback with one client (the world's barcode merchant, a fresh RSA
    key in ``<root>/pay-client-key.pem``, mode 0600), write ``<root>/pay.toml`` and, while it runs, publish what
    the gateway keeps as the next day's B1 files on ``tree`` (``world_barcode.NextDayPublisher``). What is
    returned (and printed) holds no private key."""
    from .sandbox.pay_gateway import PayGateway
    from .sandbox.world_barcode import BarcodeMerchant, NextDayPublisher, pay_toml

    with PayGateway(clock) as gateway:
        merchant = BarcodeMerchant(gateway, root)
        key_file = merchant.write_key(root / SANDBOX_PAY_KEY).resolve()
        # a person's `alirecon pay` waits real seconds: the profile's and the flow's own defaults, not the demo's
        config = merchant.pay_config(key_file, timeout=None, flow=None)
        toml_file = root / SANDBOX_PAY_TOML
        toml_file.write_text(pay_toml(config), encoding="utf-8")
        profile = config.profile()
        with NextDayPublisher(gateway, profile.merchant_id, tree, root, clock):
            yield {"endpoint": str(profile.endpoint), "client_id": profile.client_id,
                   "merchant_id": profile.merchant_id, "private_key_file": str(key_file),
                   "alipay_public_key": gateway.alipay_public_key_pem, "config": str(toml_file.resolve())}


def _print_serve(details: dict[str, Any], as_json: bool) -> None:
    """What ``sandbox serve`` tells its user: where each server is and where its secrets are, never a secret."""
    if as_json:
        sys.stdout.write(json.dumps(details) + "\n")
        return
    alipay, pay = details["alipay"], details["pay"]
    for key in ("host", "port", "user", "password_from", "fingerprint", "simulated_now", "speed", "world"):
        console.print(f"{key:>14}: {details[key]}", highlight=False)
    console.print(f"    known_hosts: {details['known_hosts']}", highlight=False, soft_wrap=True)
    for key in ("gateway", "app_id", "pid", "private_key_file"):
        console.print(f"{'alipay ' + key:>14}: {alipay[key]}", highlight=False)
    console.print(f"alipay public key:\n{alipay['alipay_public_key']}", highlight=False, soft_wrap=True)
    for key in ("endpoint", "client_id", "merchant_id", "private_key_file", "config"):
        console.print(f"{'pay ' + key:>14}: {pay[key]}", highlight=False, soft_wrap=True)
    console.print(f"pay alipay public key:\n{pay['alipay_public_key']}", highlight=False, soft_wrap=True)
    console.print(f"sftp -P {details['port']} -o UserKnownHostsFile=<file with the line above> "
                  f"{details['user']}@{details['host']}   (Ctrl-C stops)", highlight=False, soft_wrap=True)


@sandbox_app.command("serve")
@guarded
def sandbox_serve(
    seed: Annotated[int, typer.Option(help="Seed of the synthetic world.")] = 42,
    days: Annotated[int, typer.Option(help="Days of payments.", min=1)] = 7,
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="World folder: served if it holds publish.json, else built there (default: temporary).")] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 0,
    start: Annotated[str | None, typer.Option(
        help="Simulated start, ISO 8601 with offset (default: 09:00 UTC+8 after the last cycle).")] = None,
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second (0 freezes time).", min=0)] = 1.0,
    user: Annotated[str, typer.Option(help="SFTP user name.")] = "alirecon",
    authorized_key: Annotated[list[Path] | None, typer.Option(
        help="Public key file(s) (.pub or authorized_keys) also accepted for the user.")] = None,
    host_key: Annotated[Path | None, typer.Option(
        help="Host private key file, created when missing (keeps known_hosts valid across runs).")] = None,
    password_env: Annotated[str | None, typer.Option(
        help="Environment variable holding the user's password (default: a generated one, written to "
             "<world>/sftp-password, mode 0600).")] = None,
    alipay_app_id: Annotated[str | None, typer.Option(
        help="The Alipay China gateway's app_id for the client (default: the sandbox world's).")] = None,
    alipay_pid: Annotated[str | None, typer.Option(
        help="PID (2088...) owning the app (default: the first folder under <world>/alipay_cn, else "
             f"{SANDBOX_ALIPAY_PID}).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve a synthetic provider world over SFTP on loopback, on simulated time, until Ctrl-C; beside it the
    Alipay China open-platform gateway (the same clock), serving the bill zips under <world>/alipay_cn, and the
    barcode payment gateway, whose kept payments become the next day's B1 files on the SFTP server (its client
    profile, ready to paste into alirecon.toml: <world>/pay.toml)."""
    import secrets
    import signal
    import time
    from contextlib import ExitStack, suppress
    from datetime import datetime

    from .sandbox import sftp_server as sftp
    from .sandbox.clock import SimClock

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    with ExitStack() as stack:
        root = directory or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="alirecon-sandbox-")))
        sftp.ensure_world(root, seed=seed, days=days)
        clock = SimClock(datetime.fromisoformat(start) if start else sftp.default_start(root), speed=speed)
        # a throwaway password, kept out of the terminal and --json (secrets never reach output): it is in a
        # file only its owner can read, or in the environment variable the caller named
        password = os.environ.get(password_env, "") if password_env else ""
        if password_env and not password:
            raise typer.BadParameter(f"the environment variable {password_env} is empty or unset",
                                     param_hint="--password-env")
        password_file = None
        if not password:
            password = secrets.token_urlsafe(18)
            password_file = root / "sftp-password"
            password_file.unlink(missing_ok=True)
            with os.fdopen(os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                out.write(password + "\n")
        keys = [line for p in authorized_key or [] for line in p.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
        tree = sftp.ProviderTree.from_world_dir(root)
        server = sftp.SandboxServer(tree, clock, users={user: password},
                                    authorized_keys={user: keys} if keys else None,
                                    host_key=sftp.load_host_key(host_key) if host_key else None)
        stack.enter_context(sftp.ServerThread(server, port=port))
        gateway = stack.enter_context(_sandbox_gateway(root, clock, alipay_app_id, alipay_pid))
        pay = stack.enter_context(_sandbox_pay(root, clock, tree))
        details = sftp.connection_details(server, user) | {
            "world": str(root.resolve()),
            "password_from": f"${password_env}" if password_file is None else str(password_file.resolve()),
            "alipay": gateway, "pay": pay}
        # Ctrl-C or SIGTERM (supervisors, tests) stops cleanly from here on, even while the details are printed
        previous = signal.signal(signal.SIGTERM, interrupt)
        try:
            with suppress(KeyboardInterrupt):
                _print_serve(details, as_json)
                sys.stdout.flush()
                while True:
                    time.sleep(3600)
        finally:
            signal.signal(signal.SIGTERM, previous)


# --- alirecon fetch / daily: getting the provider's files -----------------------------------------


def _fetch_logging() -> None:
    """Fetch warnings (a host key recorded on first contact) go to stderr, loudly, whatever --json says."""
    import logging

    from rich.logging import RichHandler

    logger = logging.getLogger("alirecon")
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        logger.addHandler(RichHandler(console=err_console, show_time=False, show_path=False, level=logging.WARNING))


def _when(text: str | None, option: str) -> Any:
    from datetime import date, datetime

    if text is None:
        return None
    try:
        if option == "--now":
            value = datetime.fromisoformat(text)
            if value.tzinfo is None:
                raise ValueError("no UTC offset")
            return value
        return date.fromisoformat(text)
    except ValueError as exc:
        raise errors.ConfigError(f"{option} {text!r}: {exc}") from None


@contextmanager
def _fetch_progress(enabled: bool) -> Iterator[Any]:
    """Byte progress bars: one per account (all its new bytes) and one per file in flight (stderr)."""
    from rich.progress import DownloadColumn, TransferSpeedColumn

    from .fetch import FetchProgress, FileFetch

    bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeElapsedColumn(), console=err_console, transient=True,
                    disable=not enabled)

    class Bars(FetchProgress):
        def __init__(self) -> None:
            self.overall: Any = None
            self.files: dict[str, tuple[Any, int]] = {}

        def listed(self, account: str, files: int, to_fetch: int, total_bytes: int) -> None:
            self.overall = bars.add_task(f"{account}: {to_fetch} of {files} files", total=total_bytes or None)

        def transfer(self, path: str, done: int, total: int) -> None:
            task, before = self.files.get(path, (None, 0))
            if task is None:
                task = bars.add_task(f"  {path.rsplit('/', 1)[-1][:60]}", total=total)
            bars.update(task, completed=done, total=total)
            self.files[path] = (task, done)
            if self.overall is not None:
                bars.advance(self.overall, done - before)

        def finished(self, outcome: FileFetch) -> None:
            task, _ = self.files.pop(outcome.path, (None, 0))
            if task is not None:
                bars.remove_task(task)

    with bars:
        yield Bars()


def _print_fetch(summaries: Sequence[Any]) -> None:
    table = Table(title="Fetched")
    for col in ("account", "listed", "new", "downloaded", "skipped", "failed", "bytes", "seconds", "ingested"):
        table.add_column(col)
    for s in summaries:
        ingested = ", ".join(f"{n} {k}" for k, n in s.ingest.to_dict()["counts"].items() if n) if s.ingest else ""
        table.add_row(s.account or "(folder)", "[red]error[/red]" if s.error else str(s.listed), str(s.new),
                      str(s.downloaded), str(s.skipped),
                      f"[red]{s.failed}[/red]" if s.failed else "0", f"{s.bytes:,}", f"{s.seconds:.1f}",
                      ingested or "-")
    console.print(table)
    for s in summaries:
        if s.error:
            err_console.print(f"[red]{s.account}: {s.error}[/red]", soft_wrap=True)
        for note in s.notes:
            console.print(f"  [yellow]{s.account}[/yellow]: {note}", highlight=False, soft_wrap=True)
        for f in s.files:
            if f.status in ("failed", "incomplete", "refused"):
                console.print(f"  [red]{f.status}[/red] {f.path}: {f.error}", highlight=False, soft_wrap=True)
        for o in (s.ingest.files if s.ingest else ()):
            if o.status in ("quarantined", "failed"):
                console.print(f"  [red]{o.status}[/red] {o.name}: {o.problems[0] if o.problems else ''}",
                              highlight=False, soft_wrap=True)


@app.command()
@guarded
def fetch(
    workspace: WorkspaceOpt = Path("."),
    account: Annotated[list[str] | None, typer.Option(
        help="Only this account (repeatable); default: all with sftp or openapi settings.")]
    = None,
    since: Annotated[str | None, typer.Option(help="First directory date, YYYY-MM-DD (default: until - window_days).")]
    = None,
    until: Annotated[str | None, typer.Option(help="Last directory date, YYYY-MM-DD (default: today, UTC+8).")] = None,
    accept_new_host_key: Annotated[bool, typer.Option(
        "--accept-new-host-key", help="First contact only: record an unknown host key (a changed key is refused).")]
    = False,
    folder: Annotated[Path | None, typer.Option(
        help="Import this folder of hand-downloaded files instead of fetching over SFTP.")] = None,
    now: Annotated[str | None, typer.Option(
        help="Pretend it is this time (ISO 8601 with offset), e.g. the sandbox server's simulated now.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Download new report files over SFTP or Alipay China bills through the open platform (or import a folder),
    archive them, record them and ingest them."""
    from .fetch import FetchSummary, fetch_account, workspace_lock
    from .sources.folder import import_folder

    _fetch_logging()
    first, last, at = _when(since, "--since"), _when(until, "--until"), _when(now, "--now")
    summaries: list[FetchSummary] = []
    with workspace_lock(workspace), Workspace.open(workspace) as ws, _fetch_progress(not as_json) as bars:
        if folder is not None:
            if account and len(account) > 1:
                raise errors.ConfigError("--folder takes at most one --account")
            summaries.append(import_folder(ws, folder, account=account[0] if account else None, now=at,
                                           progress=bars))
        else:
            chosen = [a for a in ws.config.accounts if (a.sftp is not None or a.openapi is not None)
                      and (not account or a.name in account)]
            missing = sorted(set(account or ()) - {a.name for a in chosen})
            if missing or not chosen:
                raise errors.ConfigError(
                    f"no account with [accounts.sftp] or [accounts.openapi] settings named {', '.join(missing)}"
                    if missing else "no account has [accounts.sftp] or [accounts.openapi] settings")
            for acc in chosen:
                try:
                    summaries.append(fetch_account(ws, acc, since=first, until=last, now=at, progress=bars,
                                                   accept_new_host_key=accept_new_host_key or None))
                except errors.AlireconError as exc:  # this account's problem; the others still run
                    source = "sftp" if acc.sftp is not None else "openapi"
                    summaries.append(FetchSummary(acc.name, source, error=f"{type(exc).__name__}: {exc}"))
    if as_json:
        _emit({"ok": all(s.ok for s in summaries), "accounts": [s.to_dict() for s in summaries]})
    else:
        _print_fetch(summaries)
    raise typer.Exit(EXIT_ERROR if any(s.error for s in summaries) else
                     EXIT_OK if all(s.ok for s in summaries) else EXIT_DISCREPANCY)


@app.command()
@guarded
def daily(
    workspace: WorkspaceOpt = Path("."),
    now: Annotated[str | None, typer.Option(help="Pretend it is this time (ISO 8601 with offset).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fetch + ingest + check + reconcile for every account; safe from cron every hour (one run at a time)."""
    from .fetch import run_daily

    _fetch_logging()
    with _fetch_progress(not as_json) as bars:
        result = run_daily(workspace, _when(now, "--now"), progress=bars)
    if as_json:
        _emit(result.to_dict())
    elif result.busy:
        console.print("another alirecon fetch or daily is running on this workspace: nothing to do")
    else:
        _print_fetch(result.fetches)
        console.print(f"run {result.run_id} ({'new' if result.new_run else 'nothing changed: latest results'}): "
                      f"{result.check_failures} failed checks, {result.exceptions} exceptions")
    errors_seen = any(f.error for f in result.fetches)
    raise typer.Exit(EXIT_OK if result.busy else EXIT_ERROR if errors_seen else
                     EXIT_OK if result.ok else EXIT_DISCREPANCY)


# --- alirecon status: what should have arrived, and what did ---------------------------------------


def _print_status(report: Any) -> None:
    """One line per account and date (the cycle, or the settlement date of a settlement report)."""
    from .clock import UTC8

    table = Table(title=f"Reports of cycles {report.since} .. {report.until}, at "
                        f"{report.now.astimezone(UTC8):%Y-%m-%d %H:%M} UTC+8")
    for col in ("account", "date", "expected", "arrived", "not yet due", "late", "at risk"):
        table.add_column(col)
    days: dict[tuple[str, str], list[Any]] = {}
    for row in report.rows:
        days.setdefault((row.expected.account, row.expected.label), []).append(row)

    def names(rows: list[Any], *states: str) -> str:
        return ", ".join(f"{r.expected.report} {r.expected.currency or ''}".strip() for r in rows if r.state in states)

    for (account, day), rows in days.items():
        arrived = sum(r.state == "arrived" for r in rows)
        table.add_row(account, day, str(len(rows)),
                      f"[green]{arrived}[/green]" if arrived == len(rows) else str(arrived),
                      names(rows, "pending", "due"), f"[red]{names(rows, 'late')}[/red]",
                      f"[bold red]{names(rows, 'at_risk')}[/bold red]")
    console.print(table)
    console.print(", ".join(f"{n} {state.replace('_', ' ')}" for state, n in report.counts().items()))
    for s in report.unscheduled:
        day = f"{s.day:%Y-%m} (month)" if s.period == "monthly" and s.day else s.day
        console.print(f"  [yellow]unscheduled[/yellow] {s.account} {s.report} {day} {s.currency or ''}: {s.path}",
                      highlight=False, soft_wrap=True)


@app.command()
@guarded
def status(
    workspace: WorkspaceOpt = Path("."),
    account: Annotated[list[str] | None, typer.Option(help="Only this account, by name or id (repeatable).")] = None,
    since: Annotated[str | None, typer.Option(help="First cycle day, YYYY-MM-DD (default: until - retention).")]
    = None,
    until: Annotated[str | None, typer.Option(help="Last cycle day, YYYY-MM-DD (default: yesterday, UTC+8).")] = None,
    now: Annotated[str | None, typer.Option(help="Pretend it is this time (ISO 8601 with offset).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per account and day: which reports are expected, arrived, late, or at risk of deletion on the server.

    A settlement report is shown when it settles one of the chosen cycle days. Exit 1 when anything is late
    or at risk."""
    from .status import workspace_status

    with Workspace.open(workspace) as ws:
        report = workspace_status(ws, now=_when(now, "--now"), since=_when(since, "--since"),
                                  until=_when(until, "--until"), accounts=account)
    if as_json:
        _emit(report.to_dict())
    else:
        _print_status(report)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_DISCREPANCY)



# --- alirecon pay: barcode payments (issue 5) ----------------------------------------------------

pay_app = typer.Typer(no_args_is_help=True,
                      help="Barcode (in-store) payments: pay with the provider's best-practice flow, query, "
                           "cancel, refund, resume after a crash, and the manual list. "
                           "Journal: <workspace>/pay_journal.sqlite.")
app.add_typer(pay_app, name="pay")

PAY_JOURNAL_NAME = "pay_journal.sqlite"
TransIdOpt = Annotated[str | None, typer.Option("--trans-id", help="merchantTransId: the payment's idempotency key.")]
AcquirementOpt = Annotated[str | None, typer.Option("--acquirement-id", help="Alipay's acquirementId.")]


@contextmanager
def _pay_session(workspace: Path) -> Iterator[tuple[PayClient, PayJournal, FlowSettings]]:
    """The active profile's client, the workspace's journal and the configured flow settings, closed after."""
    from .config import CONFIG_NAME
    from .pay.client import PayClient
    from .pay.flow import FlowSettings, PayJournal
    from .warehouse import _load_config

    cfg_path = workspace / CONFIG_NAME
    if not cfg_path.is_file():
        raise errors.ConfigError(f"{workspace} is not an alirecon workspace (no {CONFIG_NAME}); run init first")
    config = _load_config(cfg_path).pay
    if config is None:
        raise errors.ConfigError(f"{cfg_path} has no [pay] section (profiles: [pay.sandbox] / [pay.production])")
    settings = FlowSettings(**config.flow.overrides())
    with PayClient.from_config(config, key_root=workspace) as client, \
            PayJournal(workspace / PAY_JOURNAL_NAME) as journal:
        yield client, journal, settings


def _record_dict(record: Any) -> dict[str, Any]:
    """What a person or a program may see of a journaled payment: never the buyer's code (not in a record)."""
    from .money import format_major

    return {"merchant_trans_id": record.merchant_trans_id, "merchant_id": record.merchant_id,
            "state": record.state, "amount": format_major(record.amount, record.currency),
            "amount_minor": record.amount, "currency": record.currency, "acquirement_id": record.acquirement_id,
            "queries": record.queries, "cancels": record.cancels, "last_code": record.last_code,
            "reason": record.reason, "created_at": record.created_at.isoformat(),
            "updated_at": record.updated_at.isoformat()}


def _refund_dict(record: Any) -> dict[str, Any]:
    """A journaled refund as shown to a person or a program."""
    from .money import format_major

    return {"merchant_refund_id": record.merchant_refund_id, "acquirement_id": record.acquirement_id,
            "merchant_trans_id": record.merchant_trans_id, "merchant_id": record.merchant_id, "state": record.state,
            "amount": format_major(record.amount, record.currency), "amount_minor": record.amount,
            "currency": record.currency, "refund_id": record.refund_id, "attempts": record.attempts,
            "last_code": record.last_code, "reason": record.reason, "created_at": record.created_at.isoformat(),
            "updated_at": record.updated_at.isoformat()}


def _print_refunds(records: Sequence[Any], title: str) -> None:
    table = Table(title=title)
    for col in ("merchantRefundId", "acquirementId", "state", "amount", "refundId", "reason"):
        table.add_column(col)
    for r in records:
        d = _refund_dict(r)
        style = {"SUCCESS": "green", "MANUAL": "bold red"}.get(r.state, "yellow")
        table.add_row(r.merchant_refund_id, r.acquirement_id, f"[{style}]{r.state}[/]", f"{d['amount']} {r.currency}",
                      r.refund_id or "", r.reason or "")
    console.print(table)


def _result_dict(result: Any) -> dict[str, Any]:
    """One call's outcome: status, code, message and the ids of the verified body (never the request)."""
    out: dict[str, Any] = {"function": result.function, "status": result.status, "code": result.code,
                           "message": result.message}
    for name in ("acquirementId", "acquirementStatus", "merchantTransId", "refundId", "merchantRefundId"):
        if result.body.get(name):
            out[name] = str(result.body[name])
    return out


def _print_payments(records: Sequence[Any], title: str) -> None:
    table = Table(title=title)
    for col in ("merchantTransId", "state", "amount", "acquirementId", "reason"):
        table.add_column(col)
    for r in records:
        d = _record_dict(r)
        style = {"SUCCESS": "green", "MANUAL": "bold red"}.get(r.state, "yellow")
        table.add_row(r.merchant_trans_id, f"[{style}]{r.state}[/]", f"{d['amount']} {r.currency}",
                      r.acquirement_id or "", r.reason or "")
    console.print(table)


def _print_result(result: Any) -> None:
    d = _result_dict(result)
    style = {"S": "green", "F": "red"}.get(result.status, "yellow")
    console.print(f"{d.pop('function')}: [{style}]{d.pop('status')}[/] {d.pop('code')} {d.pop('message')}",
                  highlight=False, soft_wrap=True)
    for key, value in d.items():
        console.print(f"  {key}: {value}", highlight=False)


def _major_amount(text: str, currency: str, option: str) -> int:
    """A major-unit amount typed by a person, exactly in minor units (money.parse_major: no rounding)."""
    from .money import MoneyError, parse_major

    try:
        minor = parse_major(text, currency.upper())
    except MoneyError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None
    if minor <= 0:
        raise typer.BadParameter("must be positive", param_hint=option)
    return minor


def _payment_key(trans_id: str | None, acquirement_id: str | None) -> None:
    if not trans_id and not acquirement_id:
        raise typer.BadParameter("give --trans-id or --acquirement-id")


@pay_app.command("create")
@guarded
def pay_create(
    trans_id: Annotated[str, typer.Option(
        "--trans-id", help="merchantTransId: yours, unique per payment; a retry repeats it (a journaled one is "
                           "resumed, never paid again).")],
    amount: Annotated[str, typer.Option(help="Amount in major units, e.g. 12.30 (exact: no rounding).")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code, e.g. USD.")],
    buyer_code: Annotated[str, typer.Option("--buyer-code", envvar="ALIRECON_BUYER_CODE", show_envvar=True,
                                            help="The buyer's scanned payment code (never printed).")],
    title: Annotated[str, typer.Option(help="orderTitle.")],
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Pay one barcode payment and run the best-practice flow (query, cancel, manual) to a final state.
    Exit 0 SUCCESS, 1 CANCELLED / FAILED / MANUAL."""
    from .pay.flow import PayFlow, PaymentRequest

    minor = _major_amount(amount, currency, "--amount")
    with _pay_session(workspace) as (client, journal, settings):
        request = PaymentRequest(trans_id, minor, currency.upper(), buyer_code, order_title=title)
        record = PayFlow(client, journal, settings).pay(request)
    if as_json:
        _emit({"payment": _record_dict(record)})
    else:
        _print_payments([record], "Payment")
    raise typer.Exit(EXIT_OK if record.state == "SUCCESS" else EXIT_DISCREPANCY)


@pay_app.command("resume")
@guarded
def pay_resume(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Run every unfinished payment and refund of the active merchant to a final state: the command to run after a
    crash. Exit 0 when every resumed one succeeded (or none was unfinished), 1 otherwise."""
    from .pay.flow import PayFlow
    from .pay.refund import RefundFlow

    with _pay_session(workspace) as (client, journal, settings):
        records = PayFlow(client, journal, settings).resume_all()
        refunds = RefundFlow(client, journal, settings).resume_all()
    if as_json:
        _emit({"resumed": [_record_dict(r) for r in records], "refunds": [_refund_dict(r) for r in refunds]})
    else:
        if records:
            _print_payments(records, "Resumed payments")
        if refunds:
            _print_refunds(refunds, "Resumed refunds")
        if not records and not refunds:
            console.print("no unfinished payment or refund")
    ok = all(r.state == "SUCCESS" for r in records) and all(r.state == "SUCCESS" for r in refunds)
    raise typer.Exit(EXIT_OK if ok else EXIT_DISCREPANCY)


@pay_app.command("manual")
@guarded
def pay_manual(
    workspace: WorkspaceOpt = Path("."),
    resolve: Annotated[str | None, typer.Option(help="merchantTransId of a MANUAL payment a person settled.")] = None,
    state: Annotated[str | None, typer.Option(help="With --resolve: what support found, SUCCESS or CANCELLED.")]
    = None,
    note: Annotated[str | None, typer.Option(help="With --resolve: who decided and why (kept in the journal).")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """List the MANUAL payments and their reasons (exit 1 when any), or record a person's decision on one."""
    if resolve is None:
        if state is not None or note is not None:
            raise typer.BadParameter("--state and --note go with --resolve")
        with _pay_session(workspace) as (client, journal, _):
            records = [r for r in journal.payments("MANUAL") if r.merchant_id == client.merchant_id]
        if as_json:
            _emit({"manual": [_record_dict(r) for r in records]})
        elif records:
            _print_payments(records, "Payments waiting for a person (contact support, then --resolve)")
        else:
            console.print("no payment waits for a person")
        raise typer.Exit(EXIT_DISCREPANCY if records else EXIT_OK)
    if state not in ("SUCCESS", "CANCELLED"):
        raise typer.BadParameter("--resolve needs --state SUCCESS or --state CANCELLED", param_hint="--state")
    if not note or not note.strip():
        raise typer.BadParameter("--resolve needs --note (what support said, who decided)", param_hint="--note")
    with _pay_session(workspace) as (client, journal, _):
        record = journal.resolve_manual(client.merchant_id, resolve, "SUCCESS" if state == "SUCCESS" else "CANCELLED",
                                        note.strip())
    if as_json:
        _emit({"payment": _record_dict(record)})
    else:
        _print_payments([record], "Resolved")


def _answer(result: PayResult, as_json: bool) -> NoReturn:
    """The end of every single-call command: the answer, then exit 0 for S and 1 for F or unknown."""
    if as_json:
        _emit({"result": _result_dict(result)})
    else:
        _print_result(result)
    raise typer.Exit(EXIT_OK if result.status == "S" else EXIT_DISCREPANCY)


@pay_app.command("query")
@guarded
def pay_query(trans_id: TransIdOpt = None, acquirement_id: AcquirementOpt = None, workspace: WorkspaceOpt = Path("."),
              as_json: JsonOpt = False) -> None:
    """One payQuery. Exit 0 when answered S (see acquirementStatus), 1 for F or an unknown outcome."""
    _payment_key(trans_id, acquirement_id)
    with _pay_session(workspace) as (client, _, _settings):
        result = client.pay_query(trans_id, acquirement_id)
    _answer(result, as_json)


@pay_app.command("cancel")
@guarded
def pay_cancel(trans_id: TransIdOpt = None, acquirement_id: AcquirementOpt = None, workspace: WorkspaceOpt = Path("."),
               as_json: JsonOpt = False) -> None:
    """One payCancel (repeat it freely: same ids, same cancel). A journaled payment that had finished SUCCESS is
    marked CANCELLED in the journal when the cancel succeeds. Exit 0 when S, 1 for F or unknown (retry)."""
    _payment_key(trans_id, acquirement_id)
    with _pay_session(workspace) as (client, journal, _):
        result = client.pay_cancel(trans_id, acquirement_id)
        known = journal.get(client.merchant_id, trans_id) if trans_id else next(
            (p for p in journal.payments("SUCCESS") if p.acquirement_id == acquirement_id), None)
        if result.status == "S" and known is not None and known.state == "SUCCESS":
            # a cancel after the flow finished: the journal (the ledger) must not keep a charge that is gone
            journal.write(known, datetime.now(UTC), function="payCancel", phase="after", attempt=known.cancels + 1,
                          result=result, state="CANCELLED", reason="cancelled with alirecon pay cancel")
    _answer(result, as_json)


@pay_app.command("refund")
@guarded
def pay_refund(
    acquirement_id: Annotated[str, typer.Option("--acquirement-id", help="The paid payment's acquirementId.")],
    refund_id: Annotated[str, typer.Option("--refund-id", help="merchantRefundId: yours; repeat it on every retry "
                                                                "of this refund (a new id is a new refund).")],
    amount: Annotated[str, typer.Option(help="Refund amount in major units (partial refunds allowed).")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code of the payment.")],
    reason: Annotated[str | None, typer.Option(help="refundReason.")] = None,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """One refund, journaled (before and after each attempt) and retried with the same merchantRefundId while its
    outcome is unknown; refunds of a journaled payment may not exceed it. Running the same command again resumes
    it (never a second refund). Exit 0 SUCCESS; 1 FAILED, or MANUAL: then run the same command again later."""
    from .pay.refund import RefundFlow

    minor = _major_amount(amount, currency, "--amount")
    with _pay_session(workspace) as (client, journal, settings):
        record = RefundFlow(client, journal, settings).refund(acquirement_id, refund_id, minor, currency.upper(),
                                                              reason=reason)
    if as_json:
        _emit({"refund": _refund_dict(record)})
    else:
        _print_refunds([record], "Refund")
        if record.state == "MANUAL":
            console.print(f"outcome unknown: run the same command again (same --refund-id {refund_id})",
                          highlight=False)
    raise typer.Exit(EXIT_OK if record.state == "SUCCESS" else EXIT_DISCREPANCY)



@pay_app.command("ledger")
@guarded
def pay_ledger(
    out: Annotated[Path, typer.Option("--out", help="The ledger CSV to write (replaced atomically).")],
    workspace: WorkspaceOpt = Path("."),
    merchant_id: Annotated[str | None, typer.Option(help="Only this merchantId (default: every one).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the payment journal as a ledger CSV (family barcode, minor units; a PAYMENT row per payment, a REFUND row
    per journaled refund; UNKNOWN for unfinished ones, MANUAL for the manual list) and print the [[ledgers]] entry
    that reads it, so reconcile sees every payment and refund."""
    import tomli_w

    from .pay.flow import PayJournal
    from .pay.ledger import journal_rows, write_journal_ledger

    if out.suffix.lower() != ".csv":
        raise typer.BadParameter("the ledger is written as CSV: give a .csv file", param_hint="--out")
    journal_path = workspace / PAY_JOURNAL_NAME
    if not journal_path.is_file():
        raise errors.ConfigError(f"no payment journal at {journal_path} (alirecon pay create writes it)")
    with PayJournal(journal_path) as journal:
        rows = journal_rows(journal, merchant_id)
    config = write_journal_ledger(rows, out)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    entry = config.model_dump(mode="json", exclude_none=True)
    refunds = sum(1 for row in rows if row["record_type"] == "REFUND")
    if as_json:
        _emit({"out": str(out), "rows": len(rows), "refunds": refunds, "statuses": counts, "ledger": entry})
    else:
        console.print(f"{len(rows) - refunds} payments and {refunds} refunds written to {out}: "
                      + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"), highlight=False)
        console.print("add to alirecon.toml to reconcile them:", highlight=False)
        console.print(tomli_w.dumps({"ledgers": [entry]}), highlight=False, soft_wrap=True, markup=False)


def main() -> None:
    app()


__all__ = ["WorkspaceConfig", "app", "main"]
