"""``alirecon demo``: a synthetic world served over real SFTP, the whole pipeline, the verdict.

Why: one command shows what alirecon does on realistic files (six accounts, four families, several
currencies including JPY, KWD and CNY, weekend settlements, injected faults) and proves it found exactly what
was injected, with nothing extra. The provider's files are not read from disk: the sandbox SFTP server
publishes them on a simulated clock, the sandbox open-platform gateway hands out the Alipay China bills on
the same clock, and alirecon fetches every simulated morning as its hourly job would. The barcode merchant's
payments go through the payment flow and the sandbox payment gateway, with faults; what the gateway charged
comes back the next morning as B1 files on the same SFTP server (sandbox/world_barcode.py).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import pipeline
from .clock import UTC8
from .config import DEFAULT_DIRECTORIES, AccountConfig, LedgerConfig, WorkspaceConfig
from .fetch import FetchSummary, fetch_account
from .pipeline import CheckRun, ReconcileRun
from .sandbox.alipay_gateway import WORLD_APP_ID, WORLD_APP_KEY, AlipayGateway, world_gateway
from .sandbox.clock import SimClock
from .sandbox.model import WorldSpec
from .sandbox.pay_gateway import PayGateway
from .sandbox.sftp_server import ProviderTree, SandboxServer, ServerThread
from .sandbox.truth import TruthDiff, compare, load_truth
from .sandbox.world import ACCOUNTS, World, build_world
from .sandbox.world_barcode import PLAN, BarcodeDay, BarcodeMerchant
from .sandbox.world_cn import CN_MERCHANT
from .warehouse import FileOutcome, IngestReport, LedgerIngest, Workspace

DEMO_USER = "demo"
PASSWORD_ENV = "ALIRECON_DEMO_SFTP_PASSWORD"  # the sandbox's throwaway password, set for the run only

__all__ = ["DemoResult", "run_demo", "world_config"]


def world_config(world: World, sftp_port: int | None = None, gateway: AlipayGateway | None = None,
                 barcode: BarcodeMerchant | None = None) -> WorkspaceConfig:
    """The workspace configuration a user of these accounts would write (with ``sftp_port``: fetching from
    the sandbox server on loopback, the password in ``PASSWORD_ENV``; with ``gateway``: the Alipay China
    merchant's bills from that sandbox gateway, the app key in ``WORLD_APP_KEY``; with ``barcode``: the barcode
    merchant's pay profile, its journal as a ledger and its B1 files over SFTP)."""
    ledgers = [LedgerConfig.model_validate({**spec, "path": str(world.root / spec["path"])}) for spec in world.ledgers]
    sftp: dict[str, Any] | None = None
    if sftp_port is not None:
        sftp = {"host": "127.0.0.1", "port": sftp_port, "username": DEMO_USER, "password_env": PASSWORD_ENV,
                "retries": 2, "backoff_initial": 0.05}
    accounts = []
    for a in ACCOUNTS:
        data: dict[str, Any] = {"name": f"{a.family}-{a.role.lower()}-{a.account_id}", "family": a.family,
                                "account_id": a.account_id, "role": a.role,
                                # the world sends other currencies' settlement files only on days that settle
                                # them; status expects the account's every-day currency (antom.md 4)
                                "settlement_currencies": [a.settlement_currency]}
        if sftp is not None:
            # the world's v1 merchant also gets a re-delivery and a truncated re-publication in two folders
            # of their own: a provider's customised tree is configured, never guessed
            extra = [f"/v1/settlements/{{account_id}}/{folder}" for folder in ("redelivered", "partial")]
            directories = [*DEFAULT_DIRECTORIES[(a.family, "production")], *(extra if a.variant == "v1" and
                                                                             a.family == "antom" else [])]
            data["sftp"] = {**sftp, "directories": directories}
        accounts.append(AccountConfig.model_validate(data))
    cn: dict[str, Any] = {"name": f"alipay_cn-merchant-{CN_MERCHANT.account_id}", "family": "alipay_cn",
                          "account_id": CN_MERCHANT.account_id, "role": "MERCHANT", "settlement_currencies": ["CNY"]}
    if gateway is not None:
        # http on loopback: ``secure`` false asks the gateway for http download links (alipay-cn.md 2.3)
        cn["openapi"] = {"gateway": gateway.url, "app_id": WORLD_APP_ID, "secure": False, "monthly": True,
                         "private_key_file": str(world.root / WORLD_APP_KEY),
                         "alipay_public_key": gateway.alipay_public_key_pem, "retries": 1, "backoff_initial": 0.05}
    accounts.append(AccountConfig.model_validate(cn))
    if barcode is None:
        return WorkspaceConfig(ledgers=ledgers, accounts=accounts)
    accounts.append(barcode.account_config(sftp))
    return WorkspaceConfig(ledgers=[*ledgers, barcode.ledger_config()], accounts=accounts, pay=barcode.pay_config())


@dataclass
class DemoResult:
    root: Path
    ingest: IngestReport  # every file the fetches handed to ingest, over the whole simulated period
    ledgers: list[LedgerIngest]
    checks: CheckRun
    reconcile: ReconcileRun
    diff: TruthDiff
    truth: dict[str, Any]
    kept: bool = False
    fetches: list[FetchSummary] = field(default_factory=list)
    mornings: int = 0  # the simulated mornings the fetches ran on
    barcode: BarcodeDay | None = None  # the barcode merchant's payments: its day of faults, then ordinary days
    barcode_listed: dict[str, list[str]] = field(default_factory=dict)  # merchantTransId -> B1 reports listing it

    def barcode_payments(self) -> list[dict[str, Any]]:
        """Each barcode payment: its day, fault, the journal's final state, the next day's B1 reports that list it
        (as ingested from the SFTP server) and what reconcile said about it."""
        if self.barcode is None:
            return []
        found = {r["match_key"]: f"{r['exception_class']} {r['reason_code']}"
                 for r in self.reconcile.exceptions.to_pylist() if r["family"] == "barcode"}
        return [{"merchant_trans_id": p.merchant_trans_id, "day": p.at.date().isoformat(), "fault": p.fault,
                 "state": self.barcode.records[p.merchant_trans_id].state,
                 "reason": self.barcode.records[p.merchant_trans_id].reason,
                 "in_files": self.barcode_listed.get(p.merchant_trans_id, []),
                 "reconcile": found.get(p.merchant_trans_id)} for p in self.barcode.planned]

    def to_dict(self) -> dict[str, Any]:
        return {
            "workspace": str(self.root / "workspace") if self.kept else None,
            "files": {s: self.ingest.count(s) for s in ("new", "duplicate", "quarantined", "failed")},
            "fetched": {"fetches": len(self.fetches), "downloaded": sum(s.downloaded for s in self.fetches),
                        "incomplete": sum(s.count("incomplete") for s in self.fetches),
                        "bytes": sum(s.bytes for s in self.fetches)},
            "ledgers": [x.to_dict() for x in self.ledgers],
            "checks": {"run_id": self.checks.run_id, "results": self.checks.results.num_rows,
                       "failures": self.checks.failures},
            "exceptions": {"run_id": self.reconcile.run_id, "total": self.reconcile.exceptions.num_rows,
                           "by_class": {"/".join(k): n for k, n in
                                        pipeline.summary_counts(self.reconcile.exceptions).items()}},
            "truth": self.diff.to_dict(),
            "barcode": None if self.barcode is None else {
                "day": self.barcode.day.isoformat(), "by_state": self.barcode.by_state(),
                "files": sorted(self.barcode.files), "payments": self.barcode_payments()},
        }

    def _print_barcode(self, console: Console) -> None:
        if self.barcode is None:
            return
        day = self.barcode.day.isoformat()
        payments = self.barcode_payments()
        faulted = [p for p in payments if p["day"] == day]
        states = ", ".join(f"{sum(1 for p in faulted if p['state'] == s)} {s}"
                           for s in ("SUCCESS", "CANCELLED", "FAILED", "MANUAL"))
        console.print(f"barcode merchant, {day}: {len(faulted)} payments through the sandbox payment gateway with "
                      f"injected faults, every one final: {states}")
        table = Table(title="Barcode payments, settled by the next day's B1 files")
        for col in ("merchantTransId", "fault", "journal", "next day's files", "reconcile"):
            table.add_column(col)
        short = {"transaction_detail": "txn", "settlement_detail": "settled"}
        for p in faulted:
            table.add_row(p["merchant_trans_id"], PLAN[p["fault"]][0], p["state"],
                          "+".join(short.get(r, r) for r in p["in_files"]) or "absent",
                          p["reconcile"] or ("matched" if p["in_files"] else "agrees: not charged"))
        console.print(table)
        rest = [p for p in payments if p["day"] != day]
        if rest:
            settled = sum(1 for p in rest if p["state"] == "SUCCESS" and len(p["in_files"]) == 2 and not p["reconcile"])
            console.print(f"and {len(rest)} ordinary payments on the following days: {settled} paid, listed by their "
                          "next day's files and matched")

    def print(self, console: Console) -> None:
        sftp = sum(s.downloaded for s in self.fetches if s.source == "sftp")
        api = [f for s in self.fetches if s.source == "openapi" for f in s.files if f.status == "new"]
        bills = sum(1 for f in api if f.code == "bill")
        console.print(f"fetched from the sandbox: {sftp} files over SFTP and {bills} bill zips through the "
                      f"open-platform API ({len(api) - bills} days without a bill recorded), "
                      f"{sum(s.bytes for s in self.fetches):,} bytes, {len(self.fetches)} fetches over "
                      f"{self.mornings} simulated mornings")
        files = Table(title="Files from the provider")
        for col in ("new", "duplicate", "quarantined"):
            files.add_column(col)
        files.add_row(*(str(self.ingest.count(s)) for s in ("new", "duplicate", "quarantined")))
        console.print(files)
        for o in self.ingest.files:
            if o.status == "quarantined":
                console.print(f"  quarantined {o.path}: {o.problems[0] if o.problems else ''}")
        checks = Table(title="Checks (reports vs themselves and their siblings)")
        for col in ("check", "reason", "scope", "expected", "found"):
            checks.add_column(col)
        for r in self.checks.results.to_pylist():
            if r["status"] == "fail":
                checks.add_row(r["check_id"], r["reason_code"], r["scope"], str(r["expected"]), str(r["actual"]))
        console.print(checks)
        console.print(f"{self.checks.results.num_rows - self.checks.failures} checks passed, "
                      f"{self.checks.failures} failed")
        by_class = Table(title="Exceptions (reports vs ledgers)")
        for col in ("family", "report", "class", "count"):
            by_class.add_column(col)
        for (fam, rep, cls), n in pipeline.summary_counts(self.reconcile.exceptions).items():
            by_class.add_row(fam, rep, cls, str(n))
        console.print(by_class)
        matched = {f: c.get("matched", 0) for f, c in self.reconcile.counts.items()}
        console.print(f"matched: {matched}")
        self._print_barcode(console)
        verdict = Table(title="Against the truth file")
        for col in ("expected exceptions", "expected check failures", "missed", "unexpected", "verdict"):
            verdict.add_column(col)
        verdict.add_row(str(self.diff.expected_exceptions), str(self.diff.expected_check_failures),
                        str(len(self.diff.missed)), str(len(self.diff.unexpected)),
                        "[green]exact[/green]" if self.diff.exact else "[red]differs[/red]")
        console.print(verdict)
        for m in self.diff.missed[:20]:
            console.print(f"  [red]missed[/red] {m}")
        for u in self.diff.unexpected[:20]:
            console.print(f"  [red]unexpected[/red] {u}")
        if self.kept:
            console.print(f"workspace kept: alirecon exceptions -w {self.root / 'workspace'}")
        else:
            console.print("run `alirecon demo --keep DIR` to keep the world and the workspace for exploring")


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def fetch_mornings(world: World) -> list[datetime]:
    """09:00 UTC+8 of every day from the first publication to the last: when the hourly job finds the
    morning's files (published 08:00 UTC+8), well inside the 7-day retention; then the 4th of the next month,
    when the month's Alipay China bill is out (alipay-cn.md 1.1, 2.3)."""
    days = sorted({at.astimezone(UTC8).date() for at in world.publish.values()})
    first, last = days[0], days[-1]
    month_end = (world.spec.start + timedelta(days=world.spec.days - 1)).replace(day=28) + timedelta(days=4)
    return [*(datetime.combine(first + timedelta(days=n), time(9), UTC8) for n in range((last - first).days + 1)),
            datetime.combine(month_end.replace(day=4), time(9), UTC8)]


def run_demo(root: Path, *, seed: int = 42, days: int = 7,
             progress: Callable[[str, int, int], None] | None = None) -> DemoResult:
    """World under ``root/world`` served by the sandbox SFTP server, workspace under ``root/workspace``;
    fetch every simulated morning, then check and reconcile; the verdict against the truth.

    ``progress(account, morning number, mornings)`` is called before each account's fetch."""
    world = build_world(root / "world", WorldSpec(seed=seed, days=days))
    mornings = fetch_mornings(world)
    clock = SimClock(mornings[0])
    password = secrets.token_urlsafe(18)
    server = SandboxServer(ProviderTree.from_world(world, sandbox=False), clock, users={DEMO_USER: password})
    fetches: list[FetchSummary] = []
    ingested: list[FileOutcome] = []
    refused: list[dict[str, Any]] = []
    gateway, _ = world_gateway(world.root, clock, CN_MERCHANT.account_id)
    with gateway, PayGateway(clock) as pay_gateway, ServerThread(server) as thread, \
            _environment(PASSWORD_ENV, password):
        merchant = BarcodeMerchant(pay_gateway, root / "workspace")
        ws = Workspace.init(root / "workspace", world_config(world, thread.port, gateway, merchant))
        try:
            # the sandbox's host key, distributed out of band as a provider's would be
            (ws.root / "known_hosts").write_text(server.known_hosts_line() + "\n", encoding="utf-8")
            # the barcode merchant's first day, before the first morning's fetch: its B1 files appear the next
            # morning on the running server, its journal is its ledger (sandbox/world_barcode.py)
            last_day = world.spec.start + timedelta(days=world.spec.days - 1)
            barcode_day = merchant.run_day(world.spec.start, seed=seed, clock=clock, world_root=world.root,
                                           tree=server.tree, until=last_day)
            world.publish.update(barcode_day.files)
            world.files.extend(barcode_day.files)
            mornings = fetch_mornings(world)  # the same mornings unless its files outlast the others
            for n, morning in enumerate(mornings, start=1):
                clock.set(morning)
                for account in ws.config.accounts:
                    if progress:
                        progress(account.name, n, len(mornings))
                    # the API serves years of bills: ask for none before the world began
                    since = max(world.spec.start, morning.date() - timedelta(days=7)) if account.openapi else None
                    summary = fetch_account(ws, account, since=since, now=clock.now())
                    fetches.append(summary)
                    if summary.ingest is not None:
                        ingested.extend(summary.ingest.files)
                    # a file whose structure says it is not finished is refused and fetched again later
                    refused.extend({"path": f.path.lstrip("/"), "status": "quarantined",
                                    "problems": [{"code": f.code}]} for f in summary.files
                                   if f.status == "incomplete")
            ledgers = pipeline.ingest_ledgers(ws)
            checks = pipeline.check(ws)
            rec = pipeline.reconcile(ws)
            listed: dict[str, list[str]] = {}
            for ref, report in ws.con.execute(
                    f"SELECT merchant_ref_id, report FROM ({ws.report_lines_sql(ordered=False)}) "
                    "WHERE family = 'barcode' ORDER BY report DESC").fetchall():  # transaction first
                listed.setdefault(ref, []).append(report)
        finally:
            ws.close()
    truth = load_truth(world.root / "truth.json")
    remote_of: dict[tuple[str | None, str], str] = {(f.sha256, f.name): f.path.lstrip("/")
                                                    for s in fetches for f in s.files if f.sha256}
    outcomes = [{"path": remote_of.get((o.sha256, o.name), o.name), "status": o.status,
                 "problems": [p.to_dict() for p in o.problems]} for o in ingested]
    diff = compare(truth, rec.exceptions, checks.results, outcomes + _first(refused))
    return DemoResult(root, IngestReport(tuple(ingested)), ledgers, checks, rec, diff, truth, fetches=fetches,
                      mornings=len(mornings), barcode=barcode_day, barcode_listed=listed)


def _first(refused: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An unfinished file is refused at every fetch until it is complete: count it once."""
    seen: dict[str, dict[str, Any]] = {}
    for r in refused:
        seen.setdefault(r["path"], r)
    return list(seen.values())
