"""Fetching over real SFTP from the sandbox server: what is fetched, skipped, refused, resumed and retried."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from alirecon.config import SftpConfig
from alirecon.fetch import FetchProgress, FetchSummary, fetch_account
from alirecon.sandbox import sftp_server as sandbox
from alirecon.sandbox.world import ANTOM_MERCHANT, World
from alirecon.sources import AuthError, BadRemoteName, HostKeyChanged, UnknownHostKey, check_remote_name
from alirecon.sources.sftp import _resume_point
from alirecon.warehouse import Workspace

from .conftest import (
    ALIPAYPLUS,
    ANTOM,
    PASSWORD,
    PASSWORD_ENV,
    USER,
    Served,
    archive_is_clean,
    serve,
    workspace_config,
)

ANTOM_DIR = f"/v1/settlements/{ANTOM_MERCHANT.account_id}/"


def fetch(ws: Workspace, account: str, *, ingest: bool = False, **kwargs: Any) -> FetchSummary:
    """Most tests look at the fetch alone: parsing is the ingest's business (and its time)."""
    return fetch_account(ws, account, ingest=ingest, **kwargs)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def server_bytes(served: Served, path: str) -> bytes:
    version = served.server.version(path, served.clock.now())
    assert version is not None, path
    data = version.data if version.data is not None else version.local.read_bytes()  # type: ignore[union-attr]
    return data[:version.size]


def expected_paths(served: Served, prefix: str) -> set[str]:
    """Files the server shows now in the account's dated directories (not the redelivered/partial extras)."""
    return {p for p in served.server.visible_files() if p.startswith(prefix) and p[len(prefix):][:8].isdigit()}


def manifest(ws: Workspace, account: str | None = None) -> list[dict[str, object]]:
    return ws.remote_files(account).to_pylist()


def antom_tx_path(served: Served) -> str:
    return sorted(p for p in expected_paths(served, ANTOM_DIR) if "/transactionItems_" in p)[0]


# ---------------------------------------------------------------------------------------------


def test_fetch_gets_every_file_once_with_exact_bytes_then_skips(ws: Workspace, served: Served) -> None:
    now = served.clock.now()
    first = fetch(ws, ANTOM, now=now, ingest=True)
    want = expected_paths(served, ANTOM_DIR)
    assert want and {f.path for f in first.files} == want
    assert first.new == first.downloaded == first.listed == len(want) and first.failed == 0
    rows = {r["remote_path"]: r for r in manifest(ws, ANTOM)}
    assert set(rows) == want
    for path, row in rows.items():
        assert row["state"] == "complete" and row["version"] == 1 and not row["republished"]
        assert row["sha256"] == sha(server_bytes(served, path))
        assert ws.archive.verify(str(row["sha256"]))
        assert row["parse_status"] == "parsed" and row["ingested_at"] is not None
    assert first.ingest is not None and first.ingest.count("new") == len(want)
    assert archive_is_clean(ws) == []

    served_before, deliveries = served.stats.bytes_served, ws.con.execute("SELECT count(*) FROM deliveries").fetchall()
    again = fetch(ws, ANTOM, now=now, ingest=True)
    assert again.skipped == again.listed == len(want) and again.downloaded == 0
    assert served.stats.bytes_served == served_before  # nothing was read again
    assert ws.con.execute("SELECT count(*) FROM deliveries").fetchall() == deliveries
    assert len(manifest(ws, ANTOM)) == len(want)


def test_alipayplus_account_lists_clearing_and_settlement_trees(ws: Workspace, served: Served) -> None:
    summary = fetch(ws, ALIPAYPLUS, now=served.clock.now())
    account_id = "A1234567890"
    want = expected_paths(served, f"/v1/settlements/clearing/{account_id}/") | \
        expected_paths(served, f"/v1/settlements/settlement/{account_id}/")
    assert {f.path for f in summary.files if f.status == "new"} == want
    assert any("/settlement/" in p for p in want) and any("/clearing/" in p for p in want)
    assert all(d.startswith("/v1/settlements/") for d in summary.directories)


def test_window_limits_the_directories(ws: Workspace, served: Served) -> None:
    day = datetime(2026, 11, 3).date()
    summary = fetch(ws, ANTOM, since=day, until=day, now=served.clock.now())
    assert summary.directories == [f"{ANTOM_DIR}20261103"]
    assert summary.files and all(f.path.startswith(f"{ANTOM_DIR}20261103/") for f in summary.files)


# -- host keys and credentials ------------------------------------------------------------------


def test_unknown_host_key_is_refused_naming_host_and_fingerprint(ws: Workspace, served: Served) -> None:
    (ws.root / "known_hosts").unlink()
    with pytest.raises(UnknownHostKey) as info:
        fetch(ws, ANTOM, now=served.clock.now())
    err = info.value
    assert err.fingerprint == served.server.fingerprint
    assert f"127.0.0.1:{served.port}" in str(err) and served.server.fingerprint in str(err)
    assert not (ws.root / "known_hosts").exists()
    assert manifest(ws) == [] and served.stats.logins == 0


def test_first_contact_opt_out_records_the_key_loudly(ws: Workspace, served: Served,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    (ws.root / "known_hosts").unlink()
    with caplog.at_level(logging.WARNING, logger="alirecon"):
        summary = fetch(ws, ANTOM, now=served.clock.now(), accept_new_host_key=True)
    assert summary.new > 0
    recorded = (ws.root / "known_hosts").read_text(encoding="utf-8").splitlines()
    assert recorded == [served.server.known_hosts_line()]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(served.server.fingerprint in w and "NOT verified" in w for w in warnings)
    assert any(served.server.fingerprint in n for n in summary.notes)
    # from now on the key is simply trusted: no opt-out needed, nothing appended
    fetch(ws, ANTOM, now=served.clock.now())
    assert (ws.root / "known_hosts").read_text(encoding="utf-8").splitlines() == recorded


def test_changed_host_key_is_refused_even_with_the_opt_out(ws: Workspace, served: Served) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().split()
    line = f"[127.0.0.1]:{served.port} {other[0]} {other[1]}\n"
    (ws.root / "known_hosts").write_text(line, encoding="utf-8")
    for opt_out in (False, True):
        with pytest.raises(HostKeyChanged) as info:
            fetch(ws, ANTOM, now=served.clock.now(), accept_new_host_key=opt_out)
        assert info.value.fingerprint == served.server.fingerprint and "CHANGED" in str(info.value)
    assert (ws.root / "known_hosts").read_text(encoding="utf-8") == line
    assert served.stats.logins == 0


def test_wrong_password_is_an_auth_error_without_retries(ws: Workspace, served: Served,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password-xyz")
    with pytest.raises(AuthError) as info:
        fetch(ws, ANTOM, now=served.clock.now())
    assert USER in str(info.value) and "not-the-password-xyz" not in str(info.value)
    assert served.stats.connections == 1 and served.stats.auth_failures >= 1


def test_missing_password_variable_is_a_config_error(ws: Workspace, served: Served,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from alirecon.errors import ConfigError

    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(ConfigError, match=PASSWORD_ENV):
        fetch(ws, ANTOM, now=served.clock.now())
    assert served.stats.connections == 0


def test_key_authentication_with_a_passphrase(tmp_path: Path, small_world: World,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    # PKCS#8: encrypted OpenSSH-format keys need bcrypt, which is not installed
    (tmp_path / "id_test").write_bytes(key.export_private_key("pkcs8-pem", passphrase="correct horse"))
    monkeypatch.setenv("ALIRECON_TEST_KEY_PASSPHRASE", "correct horse")
    tree = sandbox.ProviderTree.from_world(small_world)
    for s in serve(tree, sandbox.default_start(small_world.root), users={}, authorized_keys={USER: [key]}):
        cfg = workspace_config(s.port, password_env=None, key_file=str(tmp_path / "id_test"),
                               key_passphrase_env="ALIRECON_TEST_KEY_PASSPHRASE")
        with Workspace.init(tmp_path / "ws", cfg) as w:
            (w.root / "known_hosts").write_text(s.server.known_hosts_line() + "\n")
            summary = fetch(w, ANTOM, now=s.clock.now())
            assert summary.new > 0 and summary.failed == 0 and s.stats.logins == 1


# -- hostile names ------------------------------------------------------------------------------


def test_hostile_names_are_refused_and_never_touch_the_disk(tmp_path: Path, ws: Workspace, served: Served) -> None:
    served.faults.hostile_dirs = [f"{ANTOM_DIR}*"]
    summary = fetch(ws, ANTOM, now=served.clock.now())
    refused = [f for f in summary.files if f.status == "refused"]
    days = len([d for d in summary.directories if served.server.dir_visible(d, served.clock.now())])
    assert days > 0 and len(refused) == days * len(sandbox.HOSTILE_NAMES)
    assert {f.code for f in refused} == {"bad_remote_name"}
    assert served.stats.hostile_listings == days and served.stats.hostile_opens == 0
    assert summary.new == len(expected_paths(served, ANTOM_DIR))  # the real files still came
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert sandbox.HOSTILE_CONTENT not in path.read_bytes(), path
    assert not any("\0" in str(r["remote_path"]) or "/.." in str(r["remote_path"]) for r in manifest(ws))


@given(st.one_of(st.text(max_size=40), st.sampled_from(["..", ".", "../x", "/etc/passwd", "a\0b", "a/b", "..x",
                                                        "x\\..\\y", "ok_name.csv"])))
def test_an_accepted_remote_name_stays_one_path_component(name: str) -> None:
    base = Path("/archive/tmp/folder")
    try:
        checked = check_remote_name(name, "/remote/dir")
    except BadRemoteName as exc:
        assert exc.file == "/remote/dir" and exc.code == "bad_remote_name"
        return
    joined = base / checked
    assert joined.parent == base and joined.name == name and os.path.normpath(joined) == str(joined)
    assert "\0" not in name and not name.startswith("..")


def test_undecodable_remote_name_is_refused() -> None:
    with pytest.raises(BadRemoteName, match="UTF-8"):
        check_remote_name(b"caf\xe9.csv", "/d")


# -- broken transfers ---------------------------------------------------------------------------


def test_a_file_cut_every_time_at_the_same_offset_gets_through_by_resuming(ws: Workspace, served: Served) -> None:
    path = antom_tx_path(served)
    data = server_bytes(served, path)
    cut = len(data) // 2
    day = datetime.strptime(path.split("/")[-2], "%Y%m%d").date()
    served.faults.disconnects = [sandbox.Disconnect(path, cut, every_time=True)]
    # that file alone in flight: its cut answer is surely sent before the server drops the connection
    summary = fetch(ws, ANTOM, now=served.clock.now(), since=day, until=day)
    got = next(f for f in summary.files if f.path == path)
    assert got.status == "new" and got.sha256 == sha(data)
    assert got.attempts == 2 and got.resumed_from == cut  # a restart from 0 would be cut again, forever
    assert served.faults.disconnects[0].fired == 1 and served.stats.bytes_by_path[path] == len(data)
    assert summary.failed == 0 and archive_is_clean(ws) == []


def test_resume_only_from_a_part_of_the_same_remote_file(tmp_path: Path) -> None:
    part = tmp_path / "x.part"
    remote = {"path": "/d/f.csv", "size": 10, "mtime": "2026-11-03T00:00:00+00:00"}
    start, _ = _resume_point(part, remote)
    assert start == 0 and part.read_bytes() == b""
    part.write_bytes(b"abcd")
    start, digest = _resume_point(part, remote)
    assert start == 4 and digest.hexdigest() == sha(b"abcd")
    changed = remote | {"mtime": "2026-11-04T00:00:00+00:00"}  # re-published meanwhile: start over
    start, digest = _resume_point(part, changed)
    assert start == 0 and part.read_bytes() == b"" and digest.hexdigest() == sha(b"")
    assert json.loads(part.with_suffix(".json").read_text()) == changed
    part.write_bytes(b"x" * 11)  # longer than the remote file: not a prefix of it
    assert _resume_point(part, changed)[0] == 0


def test_a_stalled_read_times_out_and_is_retried_then_reported(tmp_path: Path, served: Served,
                                                               password: str) -> None:
    cfg = workspace_config(served.port, timeout=0.2, retries=1, max_parallel=1)
    with Workspace.init(tmp_path / "ws", cfg) as w:
        (w.root / "known_hosts").write_text(served.server.known_hosts_line() + "\n")
        path = antom_tx_path(served)
        served.faults.slow_reads = {path: 0.5}
        summary = fetch(w, ANTOM, now=served.clock.now())
        bad = next(f for f in summary.files if f.path == path)
        assert bad.status == "failed" and "TimeoutError" in (bad.error or "")
        # first try + one retry, each one read of the (small) file and one of its end, sent together
        assert served.stats.reads_by_path[path] == 2 * 2
        assert summary.new == len(expected_paths(served, ANTOM_DIR)) - 1
        row = next(r for r in manifest(w) if r["remote_path"] == path)
        assert row["state"] == "failed" and row["attempts"] == 1 and row["sha256"] is None
        served.faults.slow_reads = {}
        again = fetch(w, ANTOM, now=served.clock.now())
        assert [f.status for f in again.files if f.path == path] == ["new"]


def test_reads_are_pipelined_within_max_requests(tmp_path: Path, password: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    now = datetime(2026, 11, 5, 1, tzinfo=UTC)
    remote = f"{ANTOM_DIR}20261104/big.bin"
    tree = sandbox.ProviderTree([sandbox.RemoteFile(remote, local, now - timedelta(hours=1), len(data))])
    in_flight = peak = 0
    original = asyncssh.sftp.SFTPClientHandler.read

    async def counting_read(self: object, handle: bytes, offset: int, length: int) -> object:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await original(self, handle, offset, length)  # type: ignore[arg-type]
        finally:
            in_flight -= 1

    monkeypatch.setattr(asyncssh.sftp.SFTPClientHandler, "read", counting_read)
    for s in serve(tree, now):
        with Workspace.init(tmp_path / "ws", workspace_config(s.port, block_size=16384, max_requests=8)) as w:
            (w.root / "known_hosts").write_text(s.server.known_hosts_line() + "\n")
            summary = fetch(w, ANTOM, now=now)
            assert [f.sha256 for f in summary.files] == [sha(data)]
            assert s.stats.read_requests >= len(data) // 16384
    assert 1 < peak <= 8


def test_parallel_downloads_stay_within_max_parallel(tmp_path: Path, password: str) -> None:
    now = datetime(2026, 11, 5, 1, tzinfo=UTC)
    files = []
    for i in range(8):
        local = tmp_path / f"f{i}.bin"
        local.write_bytes(os.urandom(2000 + i))
        files.append(sandbox.RemoteFile(f"{ANTOM_DIR}20261104/f{i}.bin", local, now - timedelta(hours=1), 2000 + i))

    class InFlight(FetchProgress):
        def __init__(self) -> None:
            self.active: set[str] = set()
            self.peak = 0

        def transfer(self, path: str, done: int, total: int) -> None:
            # a transfer is in flight from its first progress call to its last byte (archiving and recording
            # happen outside the bound, so the next transfer may start meanwhile)
            if done < total:
                self.active.add(path)
                self.peak = max(self.peak, len(self.active))
            else:
                self.active.discard(path)

    for s in serve(sandbox.ProviderTree(files), now):
        s.faults.slow_reads = {"*": 0.05}
        with Workspace.init(tmp_path / "ws", workspace_config(s.port, max_parallel=3)) as w:
            (w.root / "known_hosts").write_text(s.server.known_hosts_line() + "\n")
            watch = InFlight()
            summary = fetch(w, ANTOM, now=now, progress=watch)
            assert summary.new == 8 and summary.bytes == sum(f.size for f in files)
            assert 2 <= watch.peak <= 3


# -- files that are not finished, late, re-published --------------------------------------------


def test_a_truncated_file_is_not_complete_and_is_fetched_again(ws: Workspace, served: Served) -> None:
    path = antom_tx_path(served)
    day = datetime.strptime(path.split("/")[-2], "%Y%m%d").date()  # that directory only: a quick ingest
    served.faults.truncate = {path: -8}  # the "<END>\n" trailer and a bit more are missing
    first = fetch(ws, ANTOM, now=served.clock.now(), since=day, until=day, ingest=True)
    cut = next(f for f in first.files if f.path == path)
    assert cut.status == "incomplete" and cut.code in ("missing_trailer", "truncated_file")
    row = next(r for r in manifest(ws) if r["remote_path"] == path)
    assert row["state"] == "incomplete" and row["version"] is None and row["ingested_at"] is None
    assert row["sha256"] == sha(server_bytes(served, path)) and ws.archive.exists(str(row["sha256"]))
    assert not ws.con.execute("SELECT count(*) FROM files WHERE sha256 = ?", [row["sha256"]]).fetchall()[0][0]

    served.faults.truncate = {}  # the provider finished writing it
    second = fetch(ws, ANTOM, now=served.clock.now(), since=day, until=day, ingest=True)
    done = next(f for f in second.files if f.path == path)
    assert done.status == "new" and done.version == 1 and done.sha256 == sha(server_bytes(served, path))
    rows = [r for r in manifest(ws) if r["remote_path"] == path]
    assert len(rows) == 1 and rows[0]["state"] == "complete" and rows[0]["parse_status"] == "parsed"
    assert second.skipped == len(first.files) - 1


def test_a_late_file_is_fetched_once_it_appears(ws: Workspace, served: Served) -> None:
    path = antom_tx_path(served)
    served.faults.late = {path: timedelta(days=30)}
    first = fetch(ws, ANTOM, now=served.clock.now())
    assert path not in {f.path for f in first.files}
    served.faults.late = {path: timedelta(hours=2)}
    served.clock.advance(timedelta(hours=3))
    second = fetch(ws, ANTOM, now=served.clock.now())
    assert [f.status for f in second.files if f.path == path] == ["new"]
    assert second.new == 1


def test_a_republished_file_is_kept_as_a_new_version(ws: Workspace, served: Served, small_world: World) -> None:
    path = antom_tx_path(served)
    original = server_bytes(served, path)
    fetch(ws, ANTOM, now=served.clock.now())
    other_day = sorted(p for p in expected_paths(served, ANTOM_DIR) if "/transactionItems_" in p)[1]
    new_bytes = server_bytes(served, other_day)  # valid content, other bytes
    at = served.clock.advance(timedelta(hours=1))
    served.faults.republish = [sandbox.Republication(path, at, new_bytes)]
    summary = fetch(ws, ANTOM, now=served.clock.now())
    assert [(f.status, f.version) for f in summary.files if f.path == path] == [("republished", 2)]
    rows = sorted((r for r in manifest(ws) if r["remote_path"] == path), key=lambda r: r["version"])  # type: ignore
    assert [(r["version"], r["republished"], r["sha256"]) for r in rows] == \
        [(1, False, sha(original)), (2, True, sha(new_bytes))]
    assert ws.archive.exists(sha(original)) and ws.archive.exists(sha(new_bytes))
    # the same bytes again under a newer mtime: downloaded, recognised, no third version
    served.faults.republish.append(sandbox.Republication(path, served.clock.advance(timedelta(hours=1)), new_bytes))
    third = fetch(ws, ANTOM, now=served.clock.now())
    assert [f.status for f in third.files if f.path == path] == ["unchanged"]
    assert len([r for r in manifest(ws) if r["remote_path"] == path]) == 2


def test_files_past_retention_disappear_from_listings_but_stay_in_the_manifest(ws: Workspace,
                                                                                served: Served) -> None:
    fetch(ws, ANTOM, now=served.clock.now())
    known = len(manifest(ws, ANTOM))
    later = served.clock.advance(timedelta(days=30))
    summary = fetch(ws, ANTOM, now=later)
    assert summary.listed == 0 and len(manifest(ws, ANTOM)) == known


# -- configuration ------------------------------------------------------------------------------


def test_sftp_config_refuses_secrets_and_bad_templates() -> None:
    base = {"host": "h", "username": "u", "password_env": "PW"}
    with pytest.raises(ValidationError, match="environment variable"):
        SftpConfig.model_validate(base | {"password_env": PASSWORD})
    with pytest.raises(ValidationError, match="password_env or key_file"):
        SftpConfig.model_validate({"host": "h", "username": "u"})
    with pytest.raises(ValidationError, match="absolute"):
        SftpConfig.model_validate(base | {"directories": ["v1/{account_id}"]})
    with pytest.raises(ValidationError, match="may only use"):
        SftpConfig.model_validate(base | {"directories": ["/v1/{participant}/{date:%Y%m%d}"]})
    with pytest.raises(ValidationError):
        SftpConfig.model_validate(base | {"password": "x"})  # no field may hold the secret itself
    cfg = SftpConfig.model_validate(base)
    assert cfg.known_hosts is None and not cfg.accept_new_host_key and cfg.window_days == 7
    assert cfg.directory_templates("antom") == ("/v1/settlements/{account_id}/{date:%Y%m%d}",)
    sandbox_cfg = SftpConfig.model_validate(base | {"environment": "sandbox"})
    assert all(t.startswith("/sandbox/settlements/") for t in sandbox_cfg.directory_templates("alipayplus"))


def test_sandbox_environment_fetches_the_sandbox_tree(tmp_path: Path, served: Served, password: str) -> None:
    with Workspace.init(tmp_path / "ws", workspace_config(served.port, environment="sandbox")) as w:
        (w.root / "known_hosts").write_text(served.server.known_hosts_line() + "\n")
        summary = fetch(w, ALIPAYPLUS, now=served.clock.now())
        assert summary.new > 0 and all(f.path.startswith("/sandbox/settlements/") for f in summary.files)


def test_an_unreachable_server_is_a_fetch_error_after_the_retries(tmp_path: Path, password: str) -> None:
    import socket

    from alirecon.sources import FetchError

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Workspace.init(tmp_path / "ws", workspace_config(port, retries=2)) as w:
        started = datetime.now(UTC)
        with pytest.raises(FetchError, match=rf"127\.0\.0\.1:{port}.*3 attempts.*ConnectionRefusedError"):
            fetch(w, ANTOM, now=datetime(2026, 11, 5, tzinfo=UTC))
        assert datetime.now(UTC) - started < timedelta(seconds=5)
        assert manifest(w) == []
