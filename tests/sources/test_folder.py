"""Importing a folder of hand-downloaded reports: detected by the registry, archived and recorded like fetched
files, re-imports skipped, changed bytes kept as a new version."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alirecon import errors
from alirecon.cli import app
from alirecon.sandbox.world import World
from alirecon.sources import folder
from alirecon.sources.folder import import_folder, list_folder
from alirecon.warehouse import Workspace

from .conftest import archive_is_clean


def portal_folder(world: World, dest: Path) -> list[Path]:
    """Antom v1 CSV reports under portal-style names in nested folders, plus files that are no report."""
    picked = [f for f in world.files if "1022188000000000001/2026110" in f and f.endswith(".csv")][:3]
    out = []
    for i, rel in enumerate(picked):
        target = dest / f"batch{i % 2}" / f"download ({i}) {Path(rel).name.replace('_', '-')}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(world.provider / rel, target)
        out.append(target)
    (dest / "README.txt").write_text("downloaded from the portal on Monday\n")
    (dest / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return out


def test_import_detects_archives_records_and_ingests(tmp_path: Path, small_world: World) -> None:
    reports = portal_folder(small_world, tmp_path / "downloads")
    with Workspace.init(tmp_path / "ws") as ws:
        summary = import_folder(ws, tmp_path / "downloads", account="antom-v1")
        by_name = {Path(f.path).name: f for f in summary.files}
        assert set(by_name) == {p.name for p in reports} | {"README.txt"}  # hidden files are not looked at
        assert by_name["README.txt"].status == "skipped" and by_name["README.txt"].code == "unknown_format"
        for p in reports:
            outcome = by_name[p.name]
            assert outcome.status == "new" and outcome.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
        rows = ws.remote_files("antom-v1").to_pylist()
        assert sorted(r["remote_path"] for r in rows) == sorted(str(p.absolute()) for p in reports)
        assert all(r["source"] == "folder" and r["parse_status"] == "parsed" for r in rows)
        assert summary.ingest is not None and summary.ingest.count("new") == len(reports)
        assert archive_is_clean(ws) == []

        again = import_folder(ws, tmp_path / "downloads", account="antom-v1")
        assert again.new == 0 and again.skipped == len(reports) + 1 and again.ingest is not None
        assert again.ingest.files == ()

        # a re-download with other bytes under the same name is a new version; bytes equal to a known
        # version are recognised after hashing
        changed = reports[0]
        changed.write_bytes(reports[1].read_bytes())
        os.utime(reports[2], (1_900_000_000, 1_900_000_000))  # touched, same bytes
        third = import_folder(ws, tmp_path / "downloads", account="antom-v1")
        statuses = {Path(f.path).name: f.status for f in third.files}
        assert statuses[changed.name] == "republished" and statuses[reports[2].name] == "unchanged"
        versions = [r["version"] for r in ws.remote_files("antom-v1").to_pylist()
                    if r["remote_path"] == str(changed.absolute())]
        assert sorted(versions) == [1, 2]


def test_a_truncated_portal_file_is_kept_and_quarantined_by_the_ingest(tmp_path: Path, small_world: World) -> None:
    rel = next(f for f in small_world.files if "transactionItems_" in f and f.endswith(".csv"))
    data = (small_world.provider / rel).read_bytes()
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / Path(rel).name).write_bytes(data[: data.rindex(b"<END>")])
    with Workspace.init(tmp_path / "ws") as ws:
        summary = import_folder(ws, folder)
        assert [f.status for f in summary.files] == ["new"]
        assert summary.ingest is not None and [o.status for o in summary.ingest.files] == ["quarantined"]
        row = ws.remote_files().to_pylist()[0]
        assert row["state"] == "complete" and row["account"] is None and row["parse_status"] == "quarantined"
        assert "missing_trailer" in row["parse_reason"]


def test_symlinks_are_not_followed_and_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "outside.csv").write_text("secret\n")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "link.csv").symlink_to(tmp_path / "outside.csv")
    assert list_folder(tmp_path / "in") == []
    with pytest.raises(errors.ConfigError):
        list_folder(tmp_path / "nope")


def test_fetch_command_imports_a_folder(tmp_path: Path, small_world: World) -> None:
    reports = portal_folder(small_world, tmp_path / "downloads")
    Workspace.init(tmp_path / "ws").close()
    result = CliRunner().invoke(app, ["fetch", "-w", str(tmp_path / "ws"), "--folder", str(tmp_path / "downloads"),
                                      "--json"])
    assert result.exit_code == 0, result.stdout
    out = json.loads(result.stdout)["accounts"][0]
    assert out["source"] == "folder" and out["new"] == len(reports) and out["skipped"] == 1


def test_a_reimport_reads_only_what_changed(tmp_path: Path, small_world: World,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Files recorded with their size and mtime are skipped unread; a touched one and files no report recognised
    (never recorded) are looked at again."""
    reports = portal_folder(small_world, tmp_path / "downloads")
    with Workspace.init(tmp_path / "ws") as ws:
        assert import_folder(ws, tmp_path / "downloads", account="antom-v1").new == len(reports)
        detected: list[str] = []
        detect = folder.detect_file
        monkeypatch.setattr(folder, "detect_file", lambda path, name: (detected.append(name), detect(path, name))[1])
        again = import_folder(ws, tmp_path / "downloads", account="antom-v1")
        assert (again.new, again.skipped, detected) == (0, len(reports) + 1, ["README.txt"])
        os.utime(reports[1], (1_900_000_000, 1_900_000_000))
        detected.clear()
        third = import_folder(ws, tmp_path / "downloads", account="antom-v1")
        assert sorted(detected) == sorted(["README.txt", reports[1].name])
        assert {Path(f.path).name: f.status for f in third.files}[reports[1].name] == "unchanged"
