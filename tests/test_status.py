"""``alirecon status`` over a simulated week of the sandbox world where one day's files were never ingested.

The oracle is the world itself: it publishes each file at the time its own generator chose (``World.publish``),
independently of ``schedule``, so every arrived report must carry exactly that due time and directory.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from alirecon.cli import app
from alirecon.clock import UTC8
from alirecon.config import AccountConfig, SftpConfig, WorkspaceConfig
from alirecon.demo import world_config
from alirecon.fetch import fetch_account
from alirecon.sandbox import sftp_server as sandbox
from alirecon.sandbox.clock import SimClock
from alirecon.sandbox.model import WorldSpec
from alirecon.sandbox.world import World, build_world
from alirecon.status import StatusReport, workspace_status
from alirecon.warehouse import Workspace

D = date.fromisoformat
MON, SUN = D("2026-11-02"), D("2026-11-08")  # WorldSpec's default week
ACQP = "alipayplus-acqp-1022ACQP00000001"
MPP = "alipayplus-mpp-A1234567890"
MERCHANT = "antom-merchant-1022188000000000001"
# The v2 merchant's xlsx files take about a second each to parse; the other three accounts cover both families.
SLOW = "1022188000000000002"
# The missed day: the ACQP's clearing files of cycle 2026-11-05 (generated 2026-11-06) were never ingested.
MISSED = "v1/settlements/clearing/1022ACQP00000001/20261106/"
MISSED_REPORTS = {(ACQP, report, D("2026-11-05"), "USD") for report in ("fee", "transaction_detail",
                                                                          "transaction_summary")}
NOW = datetime(2026, 11, 11, 12, 0, tzinfo=UTC8)


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, Path]:
    root = tmp_path_factory.mktemp("status")
    world = build_world(root / "world", WorldSpec(days=7, payments_per_day=2, inject=False))
    config = world_config(world)
    # the Alipay China merchant's bills come through the API, not SFTP: its status is tested with the fetch
    # (tests/sources/test_fetch_openapi.py)
    config.accounts = [a for a in config.accounts if a.account_id != SLOW and a.family != "alipay_cn"]
    with Workspace.init(root / "ws", config) as ws:
        ingest = ws.ingest([world.provider / rel for rel in world.files
                            if SLOW not in rel and not rel.startswith(MISSED)])
        assert ingest.ok and ingest.count("new") > 60
    return world, root / "ws"


@pytest.fixture
def ws(week: tuple[World, Path], tmp_path: Path) -> Iterator[Workspace]:
    """A private copy of the week's workspace (tests add manifest rows to it)."""
    shutil.copytree(week[1], tmp_path / "ws")
    with Workspace.open(tmp_path / "ws") as workspace:
        yield workspace


def states(report: StatusReport, *wanted: str) -> set[tuple[str, str, date, str | None]]:
    return {(r.expected.account, r.expected.report, r.expected.day, r.expected.currency) for r in report.rows
            if r.state in wanted}


def test_the_missed_day_is_late_and_every_other_report_arrived(week: tuple[World, Path], ws: Workspace) -> None:
    world = week[0]
    report = workspace_status(ws, now=NOW, since=MON, until=SUN)
    assert states(report, "late") == MISSED_REPORTS
    # 26 per Alipay+ account (7 x 3 clearing + 5 settlement dates), 17 for the merchant (7 + 5 x 2)
    assert report.counts() == {"expected": 69, "arrived": 66, "pending": 0, "due": 0, "late": 3, "at_risk": 0}
    assert not report.ok

    arrived: set[str] = set()
    for row in report.rows:
        if row.state != "arrived":
            assert row.files == ()
            continue
        (seen,) = row.files
        rel = str(Path(seen.path).relative_to(world.provider))
        assert world.publish[rel] == row.expected.due_at  # the world's own publication time
        assert Path(rel).parent.name == f"{row.expected.directory_date:%Y%m%d}"
        assert seen.state == "ingested" and rel not in arrived
        arrived.add(rel)
    unscheduled = {str(Path(s.path).relative_to(world.provider)) for s in report.unscheduled}
    delivered = {rel for rel in world.files if SLOW not in rel and not rel.startswith(MISSED)}
    assert arrived | unscheduled == delivered and not arrived & unscheduled
    # what no expectation asked for: the merchant's JPY batches (its configuration lists USD only)
    assert unscheduled and all(Path(r).name.startswith(("settlementItems_JPY_", "settlementSummary_JPY_"))
                               and MERCHANT.endswith(Path(r).parts[2]) for r in unscheduled)


def test_pending_then_due_then_late_after_the_grace(ws: Workspace) -> None:
    """Generated at 08:00 UTC+8 on 2026-11-06; late after the grace (120 minutes by default)."""
    def at(hour: int, minute: int = 0) -> StatusReport:
        return workspace_status(ws, now=datetime(2026, 11, 6, hour, minute, tzinfo=UTC8), since=MON, until=SUN)

    assert states(at(7, 59), "pending") >= MISSED_REPORTS
    assert states(at(8, 0), "due") == MISSED_REPORTS and at(8, 0).ok
    assert states(at(9, 59), "due") == MISSED_REPORTS
    assert states(at(10, 0), "late") == MISSED_REPORTS and not at(10, 0).ok
    ws.config = ws.config.model_copy(update={"schedule": ws.config.schedule.model_copy(update={"grace_minutes": 0})})
    assert states(at(8, 0), "late") == MISSED_REPORTS


def test_listed_but_not_fetched_close_to_retention_is_at_risk(week: tuple[World, Path], ws: Workspace) -> None:
    world = week[0]
    missed = [rel for rel in world.files if rel.startswith(MISSED)]
    listed = {}
    for rel in missed:
        path = world.provider / rel
        _, row = ws.remote_seen(ACQP, "sftp", "/" + rel, path.name, path.stat().st_size, world.publish[rel],
                                datetime(2026, 11, 9, 9, tzinfo=UTC8))
        listed[rel] = row.file_id
    # published 2026-11-06 08:00 UTC+8, removable 7 days later; at risk from 2 days before that
    removal = datetime(2026, 11, 13, 8, tzinfo=UTC8)
    before = workspace_status(ws, now=datetime(2026, 11, 11, 7, 59, tzinfo=UTC8), since=MON, until=SUN)
    assert states(before, "late") == MISSED_REPORTS  # listed, but two days of slack left
    report = workspace_status(ws, now=NOW, since=MON, until=SUN)
    assert states(report, "at_risk") == MISSED_REPORTS and not states(report, "late") and not report.ok
    for row in report.rows:
        if row.state == "at_risk":
            assert row.removal_at == removal and [f.state for f in row.files] == ["listed"]
    gone = workspace_status(ws, now=datetime(2026, 11, 13, 8, tzinfo=UTC8), since=MON, until=SUN)
    assert states(gone, "late") == MISSED_REPORTS
    assert all(r["past_retention"] for r in gone.to_dict()["reports"] if r["state"] == "late")

    # fetched into the archive (not ingested yet): arrived
    for rel, file_id in listed.items():
        put = ws.archive.put_file(world.provider / rel)
        ws.remote_fetched(file_id, put.sha256, put.size, world.publish[rel], datetime(2026, 11, 11, 13, tzinfo=UTC8))
    fetched = workspace_status(ws, now=NOW, since=MON, until=SUN)
    assert fetched.ok and fetched.count("arrived") == 69
    assert {f.state for r in fetched.rows if r.expected.day == D("2026-11-05") and r.expected.account == ACQP
            and r.expected.report != "settlement" for f in r.files} == {"archived"}


def test_a_fetched_file_that_was_also_ingested_counts_once(week: tuple[World, Path], ws: Workspace) -> None:
    world = week[0]
    rel = next(r for r in world.files if r.startswith("v1/settlements/settlement/A1234567890/20261110/"))
    path = world.provider / rel
    at = datetime(2026, 11, 10, 9, tzinfo=UTC8)
    _, row = ws.remote_seen(MPP, "sftp", "/" + rel, path.name, path.stat().st_size, world.publish[rel], at)
    put = ws.archive.put_file(path)
    ws.remote_fetched(row.file_id, put.sha256, put.size, world.publish[rel], at)
    report = workspace_status(ws, now=NOW, since=MON, until=SUN, accounts=[MPP])
    (settled,) = (r for r in report.rows if r.expected.report == "settlement" and r.expected.day == D("2026-11-10"))
    assert [f.state for f in settled.files] == ["ingested"] and settled.expected.cycles == (
        D("2026-11-06"), D("2026-11-07"), D("2026-11-08"))
    assert report.ok and {r.expected.account for r in report.rows} == {MPP}


def test_files_outside_the_directory_layout_are_placed_by_name_and_content(week: tuple[World, Path],
                                                                         tmp_path: Path) -> None:
    """Hand-downloaded files in one flat folder: Alipay+ by participantId + dates, Antom by its lines' customerId
    (two Antom accounts configured, so the family alone cannot tell)."""
    world = week[0]
    flat = tmp_path / "downloads"
    flat.mkdir()
    wanted = ("clearing/1022ACQP00000001/20261103/", "clearing/1022ACQP00000001/20261104/",
              "settlement/1022ACQP00000001/20261104/", "settlement/1022ACQP00000001/20261105/",
              "1022188000000000001/20261102/transactionItems", "1022188000000000001/20261103/transactionItems")
    for rel in world.files:
        if any(w in rel for w in wanted):
            shutil.copy(world.provider / rel, flat / Path(rel).name)
    assert len(list(flat.iterdir())) == 3 * 2 + 2 + 2
    config = world_config(world)
    config.accounts = [a for a in config.accounts if a.name == ACQP or a.family == "antom"]
    with Workspace.init(tmp_path / "ws", config) as ws:
        assert ws.ingest(sorted(flat.iterdir())).ok
        report = workspace_status(ws, now=NOW, since=MON, until=D("2026-11-03"))
    assert states(report, "arrived") == (
        {(ACQP, r, d, "USD") for r in ("fee", "transaction_detail", "transaction_summary")
         for d in (MON, D("2026-11-03"))}
        | {(ACQP, "settlement", D("2026-11-04"), "USD"), (ACQP, "settlement", D("2026-11-05"), "USD")}
        | {(MERCHANT, "transaction_detail", d, None) for d in (MON, D("2026-11-03"))})
    assert ("antom-merchant-1022188000000000002", "transaction_detail", MON, None) in states(report, "late")


def test_a_real_fetch_from_the_sandbox_server(week: tuple[World, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Fetched over SFTP at 2026-11-09 09:00 UTC+8: cycle 11-03's files were not published yet (a late
    provider), cycle 11-05's were listed but came with no bytes (fetched as incomplete, never complete)."""
    world = week[0]
    monkeypatch.setenv("ALIRECON_TEST_STATUS_PW", "pw")
    clock = SimClock(datetime(2026, 11, 9, 9, tzinfo=UTC8))
    faults = sandbox.Faults(truncate={"/" + MISSED + "*": 0},
                            late={"/v1/settlements/clearing/1022ACQP00000001/20261104/*": timedelta(days=30)})
    server = sandbox.SandboxServer(sandbox.ProviderTree.from_world(world, sandbox=False), clock,
                                   users={"u": "pw"}, faults=faults)
    with sandbox.ServerThread(server) as thread:
        sftp = SftpConfig(host="127.0.0.1", port=thread.port, username="u", password_env="ALIRECON_TEST_STATUS_PW",
                          timeout=5.0, retries=0)
        account = AccountConfig(name=ACQP, family="alipayplus", account_id="1022ACQP00000001", role="ACQP",
                                settlement_currencies=["USD"], sftp=sftp)
        (tmp_path / "ws").mkdir()
        (tmp_path / "ws" / "known_hosts").write_text(server.known_hosts_line() + "\n")
        with Workspace.init(tmp_path / "ws", WorkspaceConfig(accounts=[account])) as ws:
            fetch_account(ws, account, now=clock.now())
            then = workspace_status(ws, now=clock.now(), since=MON, until=SUN)
            report = workspace_status(ws, now=NOW, since=MON, until=SUN)
    not_published = {(ACQP, r, D("2026-11-03"), "USD") for _, r, _, _ in MISSED_REPORTS}
    assert states(then, "late") == MISSED_REPORTS | not_published
    assert states(then, "pending") == {(ACQP, "settlement", D("2026-11-10"), "USD")}
    assert states(report, "at_risk") == MISSED_REPORTS  # removable from 2026-11-13 08:00 UTC+8
    assert states(report, "late") == not_published | {(ACQP, "settlement", D("2026-11-10"), "USD")}
    assert report.count("arrived") == 26 - 7
    for row in report.rows:
        assert all(f.path.startswith("/v1/settlements/") for f in row.files)  # placed by the remote path
        if row.state == "arrived":
            assert [f.state for f in row.files] == ["ingested"]


def test_default_window_is_the_retention_before_yesterday(ws: Workspace) -> None:
    report = workspace_status(ws, now=datetime(2026, 11, 11, 0, 30, tzinfo=UTC8))  # 2026-11-10 16:30 UTC
    assert (report.since, report.until) == (D("2026-11-04"), D("2026-11-10"))
    assert report.now == datetime(2026, 11, 10, 16, 30, tzinfo=UTC)


runner = CliRunner()


def run(*args: str) -> tuple[int, Any]:
    result = runner.invoke(app, list(args))
    try:
        return result.exit_code, json.loads(result.stdout)
    except json.JSONDecodeError:
        return result.exit_code, result.stdout


def test_cli_json_table_and_exit_codes(ws: Workspace) -> None:
    root = str(ws.root)
    ws.close()  # the command opens the workspace itself
    window = ("--since", "2026-11-02", "--until", "2026-11-08", "--now", "2026-11-11T12:00:00+08:00")
    code, out = run("status", "-w", root, *window, "--json")
    assert code == 1 and out["ok"] is False
    assert out["counts"] == {"expected": 69, "arrived": 66, "pending": 0, "due": 0, "late": 3, "at_risk": 0}
    assert {(r["account"], r["report"], r["date"]) for r in out["reports"] if r["state"] == "late"} == {
        (a, r, d.isoformat()) for a, r, d, _ in MISSED_REPORTS}

    code, out = run("status", "-w", root, *window, "--account", "A1234567890", "--json")
    assert code == 0 and out["ok"] and {r["account"] for r in out["reports"]} == {MPP}

    code, text = run("status", "-w", root, *window)
    assert code == 1 and "69 expected, 66 arrived, 0 pending, 0 due, 3 late, 0 at risk" in text

    code, out = run("status", "-w", root, *window, "--account", "nobody", "--json")
    assert code == 2 and "nobody" in out["message"]
    code, out = run("status", "-w", root, "--now", "2026-11-11T12:00", "--json")  # no UTC offset
    assert code == 2 and "--now" in out["message"]
