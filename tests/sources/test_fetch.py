"""The fetch orchestration: the manifest's versions, ingest after a crash, completeness checks, the hourly
``daily`` job and its lock, and the ``fetch`` / ``daily`` commands."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from alirecon import errors
from alirecon.cli import app
from alirecon.fetch import (
    WorkspaceBusy,
    daily,
    fetch_account,
    ingest_fetched,
    run_daily,
    structural_problem,
    workspace_lock,
)
from alirecon.formats import antom
from alirecon.sandbox.world import World
from alirecon.warehouse import Workspace

from .conftest import ANTOM, Served, trust, workspace_config

T0 = datetime(2026, 11, 5, 1, tzinfo=UTC)
runner = CliRunner()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the manifest -------------------------------------------------------------------------------


def test_manifest_versions_a_path_by_its_bytes(tmp_path: Path) -> None:
    with Workspace.init(tmp_path / "ws") as ws:
        a, b = ws.archive.put_bytes(b"first\n").sha256, ws.archive.put_bytes(b"second\n").sha256
        skip, row = ws.remote_seen("acc", "sftp", "/d/f.csv", "f.csv", 6, T0, T0)
        assert not skip and row.state == "listed" and row.version is None and row.attempts == 0
        assert ws.remote_failed(row.file_id, "TimeoutError", T0).state == "failed"
        skip, again = ws.remote_seen("acc", "sftp", "/d/f.csv", "f.csv", 6, T0, T0 + timedelta(hours=1))
        assert not skip and again.file_id == row.file_id and again.attempts == 1  # the same open attempt
        status, done = ws.remote_fetched(row.file_id, a, 6, T0, T0)
        assert (status, done.version, done.republished, done.state) == ("new", 1, False, "complete")
        assert ws.remote_seen("acc", "sftp", "/d/f.csv", "f.csv", 6, T0, T0)[0]  # same size and mtime: skip
        assert not ws.remote_seen("other", "sftp", "/d/f.csv", "f.csv", 6, T0, T0)[0]  # another account's path

        later = T0 + timedelta(days=1)
        skip, attempt = ws.remote_seen("acc", "sftp", "/d/f.csv", "f.csv", 7, later, later)
        assert not skip and attempt.file_id != row.file_id
        assert ws.remote_fetched(attempt.file_id, b, 7, later, later)[0] == "republished"
        _, touch = ws.remote_seen("acc", "sftp", "/d/f.csv", "f.csv", 6, later + timedelta(hours=1), later)
        status, same = ws.remote_fetched(touch.file_id, a, 6, later + timedelta(hours=1), later)
        assert status == "unchanged" and same.file_id == row.file_id  # version 1's bytes: no third version
        rows = ws.remote_files("acc").to_pylist()
        assert [(r["version"], r["republished"], r["sha256"]) for r in rows] == [(1, False, a), (2, True, b)]
        assert [r.file_id for r in ws.remote_to_ingest("acc")] == [row.file_id, attempt.file_id]


def test_incomplete_bytes_are_recorded_then_replaced_by_the_complete_ones(tmp_path: Path) -> None:
    with Workspace.init(tmp_path / "ws") as ws:
        cut, full = ws.archive.put_bytes(b"a,b\n1,").sha256, ws.archive.put_bytes(b"a,b\n1,2\n<END>\n").sha256
        _, row = ws.remote_seen("acc", "sftp", "/d/f.csv", "f.csv", 6, T0, T0)
        inc = ws.remote_failed(row.file_id, "missing_trailer", T0, sha256=cut)
        assert (inc.state, inc.sha256, inc.version) == ("incomplete", cut, None)
        assert ws.remote_to_ingest() == []
        _, again = ws.remote_seen("acc", "sftp", "/d/f.csv", "f.csv", 14, T0 + timedelta(hours=1), T0)
        assert again.file_id == row.file_id
        status, done = ws.remote_fetched(row.file_id, full, 14, T0 + timedelta(hours=1), T0)
        assert (status, done.version, done.sha256) == ("new", 1, full)  # completing is not re-publishing


def test_ingest_after_a_crash_neither_loses_nor_repeats_a_file(tmp_path: Path, small_world: World) -> None:
    rel = next(f for f in small_world.files if "transactionItems_" in f and f.endswith(".csv"))
    data = (small_world.provider / rel).read_bytes()
    with Workspace.init(tmp_path / "ws") as ws:
        put = ws.archive.put_bytes(data)
        _, row = ws.remote_seen("acc", "sftp", "/" + rel, Path(rel).name, len(data), T0, T0)
        ws.remote_fetched(row.file_id, put.sha256, len(data), T0, T0)
        # crash 1: complete in the manifest, never ingested -> the next run ingests it
        report = ingest_fetched(ws, now=T0)
        assert [o.status for o in report.files] == ["new"]
        assert ws.remote_to_ingest() == []
        # crash 2: ingested, but killed before the manifest noted it -> noted, not offered again
        ws.con.execute("UPDATE remote_files SET ingested_at = NULL")
        assert ingest_fetched(ws, now=T0).files == ()
        assert ws.remote_to_ingest() == []
        deliveries = ws.con.execute("SELECT count(*), count(DISTINCT source_path) FROM deliveries").fetchall()[0]
        assert deliveries == (1, 1)
        assert not (ws.root / "tmp" / "fetched").exists()


# -- completeness ------------------------------------------------------------------------------


def _check(tmp_path: Path, name: str, data: bytes) -> errors.FormatError | None:
    path = tmp_path / "f"
    path.write_bytes(data)
    return structural_problem(path, name, len(data), data.endswith(b"\n"))


def test_structure_decides_when_a_download_is_complete(tmp_path: Path) -> None:
    full = antom.write_report("transaction_detail", [], variant="v1")
    name = "transactionItems_20261102_000.csv"
    assert full.rstrip().endswith(b"<END>") and _check(tmp_path, name, full) is None
    missing = _check(tmp_path, name, full[: full.rindex(b"<END>")])
    assert missing is not None and missing.code == "missing_trailer"
    cut = _check(tmp_path, name, full[: full.rindex(b"<END>") - 3])
    assert cut is not None and cut.code in ("truncated_file", "missing_trailer")
    empty = _check(tmp_path, name, b"")
    assert empty is not None and empty.code == "empty_file"
    xlsx = antom.write_report("transaction_detail", [], variant="v2", fmt="xlsx")
    assert _check(tmp_path, "transactionItems_20261102_000.xlsx", xlsx) is None
    bad_xlsx = _check(tmp_path, "transactionItems_20261102_000.xlsx", xlsx[: len(xlsx) // 2])
    assert bad_xlsx is not None and bad_xlsx.code == "truncated_file"
    assert _check(tmp_path, "notes.txt", b"hello\n") is None  # unknown: ingest quarantines it


def test_alipayplus_files_without_a_trailer_are_complete(tmp_path: Path, small_world: World) -> None:
    rel = next(f for f in small_world.files if "/clearing/" in f and "summary_" in f)
    data = (small_world.provider / rel).read_bytes()
    assert b"<END>" not in data
    assert _check(tmp_path, Path(rel).name, data) is None


# -- daily and its lock -------------------------------------------------------------------------


def test_the_workspace_lock_admits_one_run(tmp_path: Path) -> None:
    Workspace.init(tmp_path / "ws").close()
    with workspace_lock(tmp_path / "ws"):
        with pytest.raises(WorkspaceBusy), workspace_lock(tmp_path / "ws"):
            pass
        assert run_daily(tmp_path / "ws").busy
        cli = Path(sys.executable).with_name("alirecon")  # another process, as cron would start it
        other = subprocess.run([str(cli), "daily", "-w", str(tmp_path / "ws"), "--json"], capture_output=True,
                               text=True, timeout=60)
        assert other.returncode == 0 and json.loads(other.stdout)["busy"] is True
    with workspace_lock(tmp_path / "ws"):  # released when the holder is done
        pass


def test_daily_is_idempotent_and_notices_new_files(tmp_path: Path, served: Served, password: str) -> None:
    day = datetime(2026, 11, 4, 9, tzinfo=UTC)  # window_days=0: the 20261104 directories only
    with Workspace.init(tmp_path / "ws", workspace_config(served.port, window_days=0)) as ws:
        trust(ws.root, served)
        served.faults.late = {"*settlementItems_*": timedelta(days=30)}
        first = daily(ws, day)
        assert first.new_run and first.run_id and all(f.error is None for f in first.fetches)
        fetched = sum(f.new for f in first.fetches)
        assert fetched > 0
        runs = ws.con.execute("SELECT count(*) FROM runs").fetchall()[0][0]
        second = daily(ws, day)
        assert not second.new_run and second.run_id == first.run_id
        assert sum(f.new for f in second.fetches) == 0 and sum(f.skipped for f in second.fetches) == fetched
        assert ws.con.execute("SELECT count(*) FROM runs").fetchall()[0][0] == runs
        assert (second.check_failures, second.exceptions) == (first.check_failures, first.exceptions)
        served.faults.late = {}  # the settlement details arrive
        third = daily(ws, day)
        assert third.new_run and third.run_id != first.run_id
        assert sum(f.new for f in third.fetches) > 0


def test_daily_records_a_failing_account_and_goes_on(tmp_path: Path, served: Served, password: str) -> None:
    with Workspace.init(tmp_path / "ws", workspace_config(served.port, window_days=0)) as ws:
        # no known_hosts: every account is refused with a typed error, and the run still completes
        result = daily(ws, datetime(2026, 11, 4, 9, tzinfo=UTC))
        assert len(result.fetches) == 2 and all("UnknownHostKey" in (f.error or "") for f in result.fetches)
        assert result.new_run and not result.ok


# -- the commands -------------------------------------------------------------------------------


def _cli(*args: str) -> tuple[int, Any, str]:
    result = runner.invoke(app, list(args))
    try:
        return result.exit_code, json.loads(result.stdout), result.stderr
    except json.JSONDecodeError:
        return result.exit_code, result.stdout, result.stderr


def test_fetch_command_json_summary_and_exit_codes(tmp_path: Path, served: Served, password: str) -> None:
    root = tmp_path / "ws"
    Workspace.init(root, workspace_config(served.port)).close()
    now = served.clock.now().isoformat()
    code, out, err = _cli("fetch", "-w", str(root), "--account", ANTOM, "--since", "2026-11-02",
                          "--until", "2026-11-02", "--now", now, "--json")
    assert code == 2 and out["accounts"][0]["error"].startswith("UnknownHostKey")
    assert served.server.fingerprint in out["accounts"][0]["error"]
    code, out, err = _cli("fetch", "-w", str(root), "--account", ANTOM, "--since", "2026-11-02",
                          "--until", "2026-11-02", "--now", now, "--accept-new-host-key", "--json")
    assert code == 0, out
    acc = out["accounts"][0]
    assert {k: acc[k] for k in ("listed", "new", "downloaded", "skipped", "failed")} == \
        {"listed": 1, "new": 1, "downloaded": 1, "skipped": 0, "failed": 0}
    assert acc["bytes"] == acc["files"][0]["size"] > 0 and acc["seconds"] >= 0
    assert acc["ingest"]["counts"]["new"] == 1 and served.server.fingerprint in acc["notes"][0]
    assert "NOT verified" in err  # said loudly on stderr as well
    code, out, _ = _cli("fetch", "-w", str(root), "--account", ANTOM, "--since", "2026-11-02",
                        "--until", "2026-11-02", "--now", now, "--json")
    assert code == 0 and out["accounts"][0]["skipped"] == 1
    code, out, _ = _cli("fetch", "-w", str(root), "--account", "nobody", "--json")
    assert code == 2 and "nobody" in out["message"]
    code, out, _ = _cli("fetch", "-w", str(root), "--since", "yesterday", "--json")
    assert code == 2 and "--since" in out["message"]


def test_fetch_command_reports_failures_with_exit_1(tmp_path: Path, served: Served, password: str) -> None:
    root = tmp_path / "ws"
    Workspace.init(root, workspace_config(served.port)).close()
    trust(root, served)
    served.faults.truncate = {"*transactionItems_20261102_000.csv": -8}
    code, out, _ = _cli("fetch", "-w", str(root), "--account", ANTOM, "--since", "2026-11-02", "--until",
                        "2026-11-02", "--now", served.clock.now().isoformat(), "--json")
    assert code == 1 and out["ok"] is False
    assert [f["status"] for f in out["accounts"][0]["files"]] == ["incomplete"]
    code, text, _ = _cli("fetch", "-w", str(root), "--account", ANTOM, "--since", "2026-11-02", "--until",
                         "2026-11-02", "--now", served.clock.now().isoformat())
    assert code == 1 and "incomplete" in text and "Fetched" in text


def test_daily_command(tmp_path: Path, served: Served, password: str) -> None:
    root = tmp_path / "ws"
    Workspace.init(root, workspace_config(served.port, window_days=0)).close()
    trust(root, served)
    code, out, _ = _cli("daily", "-w", str(root), "--now", "2026-11-04T09:00:00+08:00", "--json")
    assert code in (0, 1) and out["busy"] is False and out["new_run"] is True
    assert {f["account"] for f in out["fetches"]} == {"antom-v1", "alipayplus-mpp"}
    code2, out2, _ = _cli("daily", "-w", str(root), "--now", "2026-11-04T09:00:00+08:00", "--json")
    assert code2 == code and out2["new_run"] is False and out2["run_id"] == out["run_id"]


def test_fetch_window_defaults_to_the_last_window_days(tmp_path: Path, served: Served, password: str) -> None:
    with Workspace.init(tmp_path / "ws", workspace_config(served.port, window_days=2)) as ws:
        trust(ws.root, served)
        summary = fetch_account(ws, ANTOM, now=datetime(2026, 11, 5, 20, tzinfo=UTC), ingest=False)
        # 20:00 UTC on the 5th is the 6th in UTC+8: the 4th, 5th and 6th
        assert (summary.since, summary.until) == (datetime(2026, 11, 4).date(), datetime(2026, 11, 6).date())
        assert [d[-8:] for d in summary.directories] == ["20261104", "20261105", "20261106"]


def test_a_finished_part_file_is_moved_into_the_archive_not_copied(tmp_path: Path) -> None:
    with Workspace.init(tmp_path / "ws") as ws:
        tmp = ws.archive.root / "tmp"
        tmp.mkdir()
        part = tmp / "a.part"
        part.write_bytes(b"report bytes\n")
        inode = part.stat().st_ino
        put = ws.archive.put_file(part, move=True)
        assert put.created and put.sha256 == sha(b"report bytes\n") and not part.exists()
        stored = ws.archive.path_of(put.sha256)
        assert stored.stat().st_ino == inode and ws.archive.verify(put.sha256)  # the same file, linked
        assert stored.stat().st_mode & 0o222 == 0  # read-only like every object
        again = tmp / "b.part"
        again.write_bytes(b"report bytes\n")
        assert not ws.archive.put_file(again, move=True).created and not again.exists()
