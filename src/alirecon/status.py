"""What arrived, what is late, and what is about to be lost: the schedule against what the workspace holds.

Why: a report the provider deletes after 7 days before anyone fetched it is money nobody can explain
later (issue 3). ``alirecon status`` compares what each account should have received (``schedule``) with
what the workspace knows of: files ingested (``files`` + ``deliveries``) and files an SFTP fetch listed or
archived (the manifest, ``Workspace.remote_files``).

States of an expected report at ``now`` (each row has exactly one):

- ``arrived``: a matching file was ingested (parsed or quarantined) or at least archived by a fetch;
- ``pending``: not generated yet (now < due);
- ``due``: generated, not arrived, still within the grace period;
- ``late``: not arrived by due + grace;
- ``at_risk``: listed on the server, not fetched, and within ``at_risk_days`` of its removal (retention
  counted from the file's mtime, or from its due time when earlier). It wins over ``late``: fetch it now.

Files are placed on (account, report, day, currency) by their directory first (the account's directory
templates, ``config.SftpConfig.directory_templates`` / ``config.DEFAULT_DIRECTORIES``: the directory names
the account and the date), then by their file-name metadata (``files.meta``). A placed file no expectation
asked for is listed as ``unscheduled`` (e.g. a settlement currency the account does not list).
"""

from __future__ import annotations

import json
import re
import string
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from . import errors
from .clock import TimeError, clearing_date, parse_compact_date, parse_date
from .config import DEFAULT_DIRECTORIES, AccountConfig, WorkspaceConfig
from .formats.registry import all_reports
from .schedule import (
    BILL_TYPE_REPORTS,
    CYCLE_REPORTS,
    AccountSchedule,
    ExpectedReport,
    account_schedule,
    expected_reports,
    monthly_bills_in,
)
from .warehouse import Workspace

__all__ = ["STATES", "ReportStatus", "Sighting", "StatusReport", "workspace_status"]

STATES = ("arrived", "pending", "due", "late", "at_risk")
ARRIVED = ("ingested", "quarantined", "archived")  # Sighting.state values that count as arrived


@dataclass(frozen=True)
class Sighting:
    """One file the workspace knows of, placed on an account, report, day and currency where possible.

    ``state``: ``ingested`` / ``quarantined`` (in ``files``), ``archived`` (fetched, not ingested yet) or
    ``listed`` (seen on the server, bytes not fetched). ``at``: when it was ingested, fetched or last listed.
    """

    name: str
    path: str
    state: str
    sha256: str | None
    at: datetime | None
    mtime: datetime | None
    family: str | None
    report: str | None
    account: str | None
    day: date | None
    currency: str | None
    period: str = "daily"  # "monthly": an Alipay China monthly bill (``day``: the month's first day)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "state": self.state, "sha256": self.sha256,
                "at": _iso(self.at), "mtime": _iso(self.mtime), "account": self.account, "family": self.family,
                "report": self.report, "date": self.day.isoformat() if self.day else None, "currency": self.currency,
                "period": self.period}


@dataclass(frozen=True)
class ReportStatus:
    """One expected report at ``now``: its state and the files that match it."""

    expected: ExpectedReport
    state: str
    late_after: datetime  # due + grace
    removal_at: datetime  # when the server may delete it (due or mtime, + retention)
    files: tuple[Sighting, ...]

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {**self.expected.to_dict(), "state": self.state, "late_after": self.late_after.isoformat(),
                "removal_at": self.removal_at.isoformat(), "past_retention": now >= self.removal_at,
                "files": [f.to_dict() for f in self.files]}


@dataclass(frozen=True)
class StatusReport:
    now: datetime
    since: date
    until: date
    rows: tuple[ReportStatus, ...]
    unscheduled: tuple[Sighting, ...]

    def count(self, state: str) -> int:
        return sum(1 for r in self.rows if r.state == state)

    @property
    def ok(self) -> bool:
        """Nothing late and nothing at risk (``alirecon status`` exits 1 otherwise)."""
        return not (self.count("late") or self.count("at_risk"))

    def counts(self) -> dict[str, int]:
        return {"expected": len(self.rows), **{s: self.count(s) for s in STATES}}

    def to_dict(self) -> dict[str, Any]:
        return {"now": self.now.isoformat(), "since": self.since.isoformat(), "until": self.until.isoformat(),
                "ok": self.ok, "counts": self.counts(), "reports": [r.to_dict(self.now) for r in self.rows],
                "unscheduled": [s.to_dict() for s in self.unscheduled]}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _aware(value: datetime | None) -> datetime | None:
    """DuckDB hands TIMESTAMPTZ back in the local zone; compare everything in UTC."""
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# Placing files: directory templates first, then file-name metadata


@dataclass(frozen=True)
class _Template:
    """A directory template as a pattern over the end of a path's directory."""

    pattern: re.Pattern[str]
    date_format: str | None

    @classmethod
    def compile(cls, template: str) -> _Template:
        parts: list[str] = []
        date_format = None
        for literal, field, spec, _ in string.Formatter().parse(template.strip("/")):
            parts.append(re.escape(literal))
            if field == "account_id":
                parts.append("(?P<account_id>[^/]+)")
            elif field == "date":
                parts.append("(?P<date>[^/]+)")
                date_format = spec or "%Y-%m-%d"
            elif field is not None:  # SftpConfig validates templates; anything else matches one path segment
                parts.append("[^/]+")
        return cls(re.compile("(?:^|/)" + "".join(parts) + "$"), date_format)

    def match(self, directory: str, account_id: str) -> tuple[bool, date | None]:
        """Whether ``directory`` is this template for ``account_id``, and the date it names."""
        m = self.pattern.search(directory)
        if m is None or m.groupdict().get("account_id", account_id) != account_id:
            return False, None
        if self.date_format is None:
            return True, None
        try:
            return True, datetime.strptime(m.group("date"), self.date_format).date()
        except ValueError:
            return False, None


def _templates(account: AccountConfig) -> tuple[_Template, ...]:
    if account.sftp is not None:
        texts = account.sftp.directory_templates(account.family)
    else:  # ingested by hand: the production layout, if the files still sit in it
        texts = DEFAULT_DIRECTORIES.get((account.family, "production"), ())
    return tuple(_Template.compile(t) for t in texts)


def _compact_or_iso(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return parse_compact_date(text) if len(text) == 8 else parse_date(text)
    except TimeError:
        return None


def _meta_day(family: str, report: str, meta: dict[str, str]) -> date | None:
    """The report's day from its metadata, for files outside the account's directory layout."""
    if family == "alipayplus":
        if report == "transaction_summary":
            return _compact_or_iso(meta.get("clearing_date"))  # clearingDate, UTC+8 (alipayplus.md 8)
        if report == "settlement":
            # [inferred] valueDate is the settlement date (alipayplus.md 6.4 only says "pays before valueDate")
            return _compact_or_iso(meta.get("value_date"))
        # [inferred] clearing batch ids start with the cycle date (alipayplus.md 4)
        return _compact_or_iso((meta.get("batch_id") or "")[:8])
    if family == "antom" and report == "transaction_detail":
        return _compact_or_iso(meta.get("date"))  # transactionItems_<transactionDate>_<seq> (antom.md 3)
    if family == "alipay_cn" and meta.get("period") == "daily":
        return _compact_or_iso(meta.get("bill_date"))  # the period line of a daily bill (alipay-cn.md 6.1)
    if family == "alipay_cn" and meta.get("period") == "monthly":
        return _compact_or_iso(meta.get("bill_date", "") + "-01")  # yyyy-MM: the month's first day
    return None  # Antom settlement names carry no date, and batch ids need not start with it (antom.md 3)


def _name_facts(family: str | None, name: str) -> tuple[str | None, str | None, dict[str, str]]:
    """(family, report, name metadata) from the file name alone, when exactly one report kind fits."""
    fits = {(r.family, r.report): r.name_meta(name) for r in all_reports()
            if (family is None or r.family == family) and r.name_meta(name) is not None}
    if len(fits) != 1:
        return family, None, {}
    (fam, report), meta = next(iter(fits.items()))
    return fam, report, meta or {}


class _Placer:
    """Puts files on (account, day) using the accounts' directory templates and schedules."""

    def __init__(self, accounts: Sequence[AccountConfig], rules: dict[str, AccountSchedule]) -> None:
        self.accounts = list(accounts)
        self.rules = rules
        self.templates = {a.name: _templates(a) for a in self.accounts}

    def _candidates(self, account: str | None, family: str | None) -> list[AccountConfig]:
        return [a for a in self.accounts if (account is None or a.name == account)
                and (family is None or a.family == family)]

    def _by_directory(self, candidates: Sequence[AccountConfig], path: str) -> list[tuple[AccountConfig, date | None]]:
        directory = str(PurePosixPath(path.replace("\\", "/")).parent)
        out: list[tuple[AccountConfig, date | None]] = []
        for acc in candidates:
            for template in self.templates[acc.name]:
                ok, directory_date = template.match(directory, acc.account_id)
                if ok:
                    out.append((acc, directory_date))
                    break
        return out

    def in_layout(self, family: str | None, path: str) -> bool:
        """Whether ``path`` sits in exactly one account's directory layout."""
        return len(self._by_directory(self._candidates(None, family), path)) == 1

    def place(self, *, account: str | None, family: str | None, report: str | None, path: str,
              meta: dict[str, str], content_accounts: Sequence[str] | None = None) -> tuple[str | None, date | None]:
        """(account name, day) of a file, or None where it cannot be told. ``content_accounts``: the account
        ids its lines name, when known."""
        candidates = self._candidates(account, family)
        by_directory = self._by_directory(candidates, path)
        if len(by_directory) == 1:
            acc, directory_date = by_directory[0]
            if directory_date is not None and report is not None:
                return acc.name, self.rules[acc.name].day_of_directory(report, directory_date)
            return acc.name, _meta_day(acc.family, report, meta) if report else None
        # outside every layout: the file names the account (Alipay+ participantId), its lines do (Antom
        # customerId), or the family has one account
        named = meta.get("participant_id") or meta.get("account")  # Alipay China: the #账号 line
        narrowed = ([a for a in candidates if a.account_id == named] if named
                    else [a for a in candidates if a.account_id in content_accounts] if content_accounts is not None
                    else candidates)
        if len(narrowed) != 1:
            return None, None
        acc = narrowed[0]
        return acc.name, _meta_day(acc.family, report, meta) if report else None


# ---------------------------------------------------------------------------------------------


def _ingested(ws: Workspace, placer: _Placer) -> list[Sighting]:
    """Every delivery of every identified file (a file delivered under several paths is placed by each)."""
    rows = ws.con.execute(
        "SELECT f.sha256, d.name, d.source_path, f.family, f.report, f.status, f.ingested_at, f.meta "
        "FROM deliveries d JOIN files f USING (sha256) WHERE f.family IS NOT NULL AND f.report IS NOT NULL "
        "ORDER BY d.delivery_id").fetchall()
    # Antom file names carry no account: outside the directory layout, the customerId of their lines names it
    # (antom.md 3, 6)
    shas = sorted({r[0] for r in rows if r[3] == "antom" and not placer.in_layout(r[3], r[2])})
    owners: dict[str, list[str]] = defaultdict(list)
    if shas:
        for sha, account_id in ws.con.execute(
                "SELECT DISTINCT source_sha256, account_id FROM report_lines "
                "WHERE list_contains(?, source_sha256) AND account_id IS NOT NULL ORDER BY 1, 2", [shas]).fetchall():
            owners[str(sha)].append(str(account_id))
    out: list[Sighting] = []
    for sha, name, source_path, family, report, status, ingested_at, meta_text in rows:
        meta = {k: str(v) for k, v in json.loads(meta_text or "{}").items() if v is not None}
        account, day = placer.place(account=None, family=family, report=report, path=source_path, meta=meta,
                                    content_accounts=owners.get(sha, []) if family == "antom" else None)
        out.append(Sighting(name, source_path, "ingested" if status == "parsed" else "quarantined", sha,
                            _aware(ingested_at), None, family, report, account, day, meta.get("currency"),
                            "monthly" if meta.get("period") == "monthly" else "daily"))
    return out


def _manifest(ws: Workspace, placer: _Placer, known: dict[str, Sighting]) -> list[Sighting]:
    """The fetch manifest, placed by the remote path (a fetched file is ingested from a path outside the
    layout): complete files are ingested/quarantined as ``files`` says, else archived; the rest only listed."""
    out: list[Sighting] = []
    for row in ws.remote_files().to_pylist():
        if row["source"] == "openapi":
            out.extend(_bill_sightings(row))
            continue
        sha = row["sha256"] if row["state"] == "complete" else None
        account_family: str | None = next((a.family for a in placer.accounts if a.name == row["account"]), None)
        family, report, meta = _name_facts(account_family, row["name"])
        account, day = placer.place(account=row["account"], family=family, report=report,
                                    path=row["remote_path"], meta=meta)
        state = "listed" if sha is None else known[sha].state if sha in known else "archived"
        at = row["last_seen_at"] if sha is None else known[sha].at if sha in known else row["fetched_at"]
        out.append(Sighting(row["name"], row["remote_path"], state, sha, _aware(at), _aware(row["mtime"]), family,
                            report, account, day, meta.get("currency")))
    return out


def _bill_sightings(row: dict[str, Any]) -> list[Sighting]:
    """An open-platform manifest row (``<bill_type>/<yyyy-MM-dd>``, fetch.openapi_remote_path) stands for each
    report of its bill type that day: fetched, or a day the API has no bill for (an empty day, recorded by the
    fetch once past due: nothing is missing)."""
    bill_type, _, period = str(row["remote_path"]).partition("/")
    monthly = len(period) == 7  # yyyy-MM
    day = _compact_or_iso(period + "-01" if monthly else period) if len(period) in (7, 10) else None
    if row["state"] != "complete" or day is None:
        return []
    return [Sighting(row["name"], row["remote_path"], "archived", row["sha256"], _aware(row["fetched_at"]),
                     _aware(row["mtime"]), "alipay_cn", report, row["account"], day, None,
                     "monthly" if monthly else "daily")
            for report in BILL_TYPE_REPORTS.get(bill_type, ())]


def _state(exp: ExpectedReport, files: Sequence[Sighting], now: datetime, ws_config: WorkspaceConfig
           ) -> tuple[str, datetime, datetime]:
    cfg = ws_config.schedule
    late_after = exp.due_at + timedelta(minutes=cfg.grace_minutes)
    born = min([exp.due_at, *(f.mtime for f in files if f.mtime is not None)])
    removal_at = born + timedelta(days=cfg.retention_days)
    if any(f.state in ARRIVED for f in files):
        return "arrived", late_after, removal_at
    listed = any(f.state == "listed" for f in files)
    if listed and removal_at - timedelta(days=cfg.at_risk_days) <= now < removal_at:
        return "at_risk", late_after, removal_at
    if now < exp.due_at:
        return "pending", late_after, removal_at
    return ("due" if now < late_after else "late"), late_after, removal_at


def workspace_status(ws: Workspace, *, now: datetime | None = None, since: date | None = None,
                     until: date | None = None, accounts: Sequence[str] | None = None) -> StatusReport:
    """Expected / arrived / late / at-risk reports of the cycles ``since``..``until`` at ``now``.

    Defaults: ``now`` the real time; ``until`` the last closed cycle (yesterday, UTC+8); ``since`` the
    retention window before it. ``accounts``: names or account ids (default: every account).
    """
    if now is not None and now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    cfg = ws.config
    until = until or clearing_date(now) - timedelta(days=1)
    since = since or until - timedelta(days=cfg.schedule.retention_days - 1)
    if since > until:
        raise errors.ConfigError(f"--since {since} is after --until {until}")
    chosen = list(cfg.accounts)
    if accounts:
        chosen = [a for a in cfg.accounts if a.name in accounts or a.account_id in accounts]
        found = {a.name for a in chosen} | {a.account_id for a in chosen}
        missing = [a for a in accounts if a not in found]
        if missing:
            raise errors.ConfigError(f"no account {', '.join(map(repr, missing))} in the workspace configuration; "
                                     f"known: {', '.join(a.name for a in cfg.accounts) or 'none'}")
    rules = {a.name: account_schedule(a, cfg.schedule) for a in cfg.accounts}
    placer = _Placer(cfg.accounts, rules)  # every account: a file is placed among all of them
    ingested = _ingested(ws, placer)
    known = {s.sha256: s for s in ingested if s.sha256 is not None}
    sightings = _manifest(ws, placer, known) + ingested  # the remote path first: it is the better name

    by_slot: dict[tuple[str, str, date, str], list[Sighting]] = defaultdict(list)
    for s in sightings:
        if s.account is not None and s.report is not None and s.day is not None:
            by_slot[(s.account, s.report, s.day, s.period)].append(s)
    matched: set[int | str] = set()  # sightings (by id) and their bytes (by sha256)
    rows: list[ReportStatus] = []
    for acc in chosen:
        for exp in expected_reports(acc, cfg.schedule, since, until):
            files = [s for s in by_slot.get((exp.account, exp.report, exp.day, exp.period), [])
                     if exp.currency is None or s.currency == exp.currency]
            matched.update(id(s) for s in files)
            matched.update(s.sha256 for s in files if s.sha256 is not None)
            state, late_after, removal_at = _state(exp, files, now, cfg)
            rows.append(ReportStatus(exp, state, late_after, removal_at, tuple(_distinct(files))))
    chosen_names = {a.name for a in chosen}
    unscheduled = [s for s in sightings if id(s) not in matched and s.sha256 not in matched
                   and s.account in chosen_names
                   and s.report is not None and s.day is not None
                   and _in_window(rules[s.account], s, since, until)]
    unscheduled.sort(key=lambda s: (s.account or "", s.day or date.min, s.report or "", s.name, s.path))
    return StatusReport(now, since, until, tuple(rows), tuple(_distinct(unscheduled)))


def _in_window(rules: AccountSchedule, s: Sighting, since: date, until: date) -> bool:
    assert s.report is not None and s.day is not None
    if s.period == "monthly":
        return s.day in monthly_bills_in(since, until)
    if s.report in CYCLE_REPORTS.get(rules.account.family, ()):
        return since <= s.day <= until
    return rules.settlement_date(since) <= s.day <= rules.settlement_date(until)


def _distinct(files: Sequence[Sighting]) -> list[Sighting]:
    """One sighting per file: the same bytes delivered twice under one name count once."""
    seen: set[tuple[str | None, str]] = set()
    out: list[Sighting] = []
    for f in files:
        key = (f.sha256, f.name) if f.sha256 else (None, f.path)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
