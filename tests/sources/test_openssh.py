"""Integration: fetching from a real OpenSSH ``sshd`` on loopback (issue 3, item 7).

Every other fetch test talks to the asyncssh sandbox server; this one checks that the client works with
the SFTP server most providers run: key authentication, a known_hosts line for its host key, listing the
providers' directory layouts, downloading, archiving and ingesting. ``sshd`` serves real files, so the
whole provider tree of a small world is published at once, under a folder of its own: the account's
directory templates are the spec defaults (``config.DEFAULT_DIRECTORIES``) under that folder, as a user
whose provider customised its paths would configure them.

Without ``sshd`` the tests are skipped on a developer's machine and fail in CI (``CI`` is set by
``.ci/run``, which installs openssh-server).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest

from alirecon.config import DEFAULT_DIRECTORIES, AccountConfig, SftpConfig, WorkspaceConfig
from alirecon.fetch import fetch_account
from alirecon.sandbox.openssh import OpenSshServer, find_sshd, write_key_pair
from alirecon.sandbox.world import ANTOM_MERCHANT, MPP, World
from alirecon.sources import AuthError, HostKeyChanged, UnknownHostKey
from alirecon.warehouse import Workspace

from .conftest import ALIPAYPLUS, ANTOM, archive_is_clean

ACCOUNTS = {ANTOM: ("antom", ANTOM_MERCHANT.account_id, "MERCHANT"), ALIPAYPLUS: ("alipayplus", MPP.account_id, "MPP")}


def sshd_or_skip() -> Path:
    """The sshd to run; a skip on a developer's machine without it, a failure in CI."""
    in_ci = bool(os.environ.get("CI"))
    sshd = find_sshd()
    if sshd is None:
        if in_ci:
            pytest.fail("OpenSSH sshd is missing but CI is set: .ci/run must install openssh-server")
        pytest.skip("OpenSSH sshd is not installed (apt-get install openssh-server); CI runs this test")
    if os.geteuid() != 0 and not in_ci:
        pytest.skip("sshd needs root for privilege separation (Debian); CI runs this test as root")
    return sshd


@dataclass
class Sshd:
    server: OpenSshServer
    tree: Path  # the served folder holding v1/...
    key_file: Path  # the client's private key, authorised by the server
    workdir: Path

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port


@pytest.fixture(scope="module")
def openssh(tmp_path_factory: pytest.TempPathFactory, small_world: World) -> Iterator[Sshd]:
    sshd = sshd_or_skip()
    root = tmp_path_factory.mktemp("openssh")
    tree = root / "provider"
    shutil.copytree(small_world.provider, tree)
    key_file = root / "client" / "id_ed25519"
    server = OpenSshServer(root / "sshd", [write_key_pair(key_file)], sshd=sshd)
    try:
        server.start()
        yield Sshd(server, tree, key_file, root)
    finally:
        server.stop()
    assert not server.running


def world_dates(world: World) -> tuple[date, date]:
    days = [datetime.strptime(m.group(1), "%Y%m%d").date() for rel in world.files
            if (m := re.search(r"/(\d{8})/", rel))]
    return min(days), max(days)


def expected_files(world: World, account: str) -> dict[str, str]:
    """{world-relative path: sha256} of the account's files in its dated directories (spec layouts,
    alipayplus.md 3 and antom.md 3), not the redelivered/ and partial/ extras below them."""
    family, account_id, _ = ACCOUNTS[account]
    dirs = "(clearing|settlement)/" if family == "alipayplus" else ""
    pattern = re.compile(rf"v1/settlements/{dirs}{account_id}/\d{{8}}/[^/]+")
    return {rel: hashlib.sha256((world.provider / rel).read_bytes()).hexdigest()
            for rel in world.files if pattern.fullmatch(rel)}


def workspace(root: Path, sshd: Sshd, known_hosts: str, key_file: Path | None = None) -> Workspace:
    accounts = []
    for name, (family, account_id, role) in ACCOUNTS.items():
        sftp = SftpConfig(host="127.0.0.1", port=sshd.port, username=sshd.server.user,
                          key_file=key_file or sshd.key_file, known_hosts=root.parent / f"{root.name}.known_hosts",
                          directories=[f"{sshd.tree}{t}" for t in DEFAULT_DIRECTORIES[(family, "production")]],
                          timeout=10.0, retries=1, backoff_initial=0.01, backoff_max=0.05)
        accounts.append(AccountConfig(name=name, family=family, account_id=account_id, role=role, sftp=sftp))
    (root.parent / f"{root.name}.known_hosts").write_text(known_hosts, encoding="ascii")
    return Workspace.init(root, WorkspaceConfig(accounts=accounts))


@pytest.mark.parametrize("account", [ANTOM, ALIPAYPLUS])
def test_every_file_arrives_exactly_and_is_ingested(tmp_path: Path, openssh: Sshd, small_world: World,
                                                    account: str) -> None:
    want = expected_files(small_world, account)
    assert len(want) >= 3
    since, until = world_dates(small_world)
    now = datetime.combine(until + timedelta(days=1), datetime.min.time(), UTC)
    with workspace(tmp_path / "ws", openssh, openssh.server.known_hosts_line() + "\n") as ws:
        first = fetch_account(ws, account, since=since, until=until, now=now)
        assert first.error is None and first.failed == 0 and first.notes == []
        assert {f.path: f.sha256 for f in first.files} == {f"{openssh.tree}/{rel}": s for rel, s in want.items()}
        assert first.new == len(want) and first.bytes == sum((small_world.provider / r).stat().st_size for r in want)
        rows = ws.remote_files(account).to_pylist()
        assert {r["remote_path"]: r["sha256"] for r in rows} == {f"{openssh.tree}/{r}": s for r, s in want.items()}
        assert all(r["state"] == "complete" and r["version"] == 1 for r in rows)
        assert first.ingest is not None and first.ingest.ok
        assert [(r["name"], r["parse_status"]) for r in rows if r["parse_status"] != "parsed" or not r["ingested_at"]] \
            == []
        assert archive_is_clean(ws) == [] and set(ws.archive) == set(want.values())
        # sshd reports real sizes and mtimes: a second run finds nothing new
        again = fetch_account(ws, account, since=since, until=until, now=now)
        assert again.skipped == len(want) and again.downloaded == 0 and again.failed == 0
    assert f"Accepted publickey for {openssh.server.user}" in openssh.server.log_tail(200)


def test_a_wrong_host_key_is_refused(tmp_path: Path, openssh: Sshd) -> None:
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode("ascii").split()
    line = f"[127.0.0.1]:{openssh.port} {impostor[0]} {impostor[1]}\n"
    with workspace(tmp_path / "ws", openssh, line) as ws:
        with pytest.raises(HostKeyChanged) as changed:
            fetch_account(ws, ANTOM, ingest=False)
        assert openssh.server.fingerprint in str(changed.value)
        assert ws.remote_files().num_rows == 0
    with workspace(tmp_path / "ws2", openssh, "") as ws:
        with pytest.raises(UnknownHostKey, match=re.escape(openssh.server.fingerprint)):
            fetch_account(ws, ANTOM, ingest=False)
        assert ws.remote_files().num_rows == 0


def test_a_key_sshd_does_not_authorise_is_refused(tmp_path: Path, openssh: Sshd) -> None:
    stranger = tmp_path / "stranger_key"
    write_key_pair(stranger)
    known = openssh.server.known_hosts_line() + "\n"
    with workspace(tmp_path / "ws", openssh, known, stranger) as ws, \
            pytest.raises(AuthError, match=f"{openssh.server.user}@127.0.0.1:{openssh.port}"):
        fetch_account(ws, ANTOM, ingest=False)
