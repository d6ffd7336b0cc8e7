"""``alirecon demo``: a synthetic world, the whole pipeline over it, and the verdict against its truth.

Why: one command shows what alirecon does on realistic files (three accounts, two families, several
currencies including JPY and KWD, weekend settlements, injected faults) and proves it found exactly
what was injected, with nothing extra.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import pipeline
from .config import AccountConfig, LedgerConfig, WorkspaceConfig
from .pipeline import CheckRun, ReconcileRun
from .sandbox.model import WorldSpec
from .sandbox.truth import TruthDiff, compare, load_truth
from .sandbox.world import ACCOUNTS, World, build_world
from .warehouse import IngestReport, LedgerIngest, Workspace

__all__ = ["DemoResult", "run_demo", "world_config"]


def world_config(world: World) -> WorkspaceConfig:
    """The workspace configuration a user of these three accounts would write."""
    ledgers = [LedgerConfig.model_validate({**spec, "path": str(world.root / spec["path"])}) for spec in world.ledgers]
    accounts = [AccountConfig.model_validate({"name": f"{a.family}-{a.role.lower()}-{a.account_id}",
                                              "family": a.family, "account_id": a.account_id, "role": a.role,
                                              "settlement_currencies": [a.settlement_currency]})
                for a in ACCOUNTS]
    return WorkspaceConfig(ledgers=ledgers, accounts=accounts)


@dataclass
class DemoResult:
    root: Path
    ingest: IngestReport
    ledgers: list[LedgerIngest]
    checks: CheckRun
    reconcile: ReconcileRun
    diff: TruthDiff
    truth: dict[str, Any]
    kept: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "workspace": str(self.root / "workspace") if self.kept else None,
            "files": {s: self.ingest.count(s) for s in ("new", "duplicate", "quarantined", "failed")},
            "ledgers": [x.to_dict() for x in self.ledgers],
            "checks": {"run_id": self.checks.run_id, "results": self.checks.results.num_rows,
                       "failures": self.checks.failures},
            "exceptions": {"run_id": self.reconcile.run_id, "total": self.reconcile.exceptions.num_rows,
                           "by_class": {"/".join(k): n for k, n in
                                        pipeline.summary_counts(self.reconcile.exceptions).items()}},
            "truth": self.diff.to_dict(),
        }

    def print(self, console: Console) -> None:
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


def run_demo(root: Path, *, seed: int = 42, days: int = 7,
             progress: Callable[[str, int, int], None] | None = None) -> DemoResult:
    """World under ``root/world``, workspace under ``root/workspace``; the full pipeline; the verdict.

    ``progress(file name, done, total)`` is called as the provider's files are ingested."""
    world = build_world(root / "world", WorldSpec(seed=seed, days=days))
    ws = Workspace.init(root / "workspace", world_config(world))
    try:
        files = world.provider_files()
        report = ws.ingest(files, progress=(lambda name, done: progress(name, done, len(files))) if progress
                           else None)
        ledgers = pipeline.ingest_ledgers(ws)
        checks = pipeline.check(ws)
        rec = pipeline.reconcile(ws)
    finally:
        ws.close()
    truth = load_truth(world.root / "truth.json")
    outcomes = [{"path": str(Path(o.path).relative_to(world.provider)), "status": o.status,
                 "problems": [p.to_dict() for p in o.problems]} for o in report.files]
    diff = compare(truth, rec.exceptions, checks.results, outcomes)
    return DemoResult(root, report, ledgers, checks, rec, diff, truth)
