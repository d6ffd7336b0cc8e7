"""The sandbox SFTP server, tested through asyncssh's real client over loopback.

Each test starts the server on port 0 with a frozen simulated clock, moves time or switches a fault on,
and checks what a client sees: listings, bytes, errors, and the server's own counters.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from alirecon.clock import UTC8
from alirecon.sandbox.clock import SimClock
from alirecon.sandbox.model import WorldSpec
from alirecon.sandbox.sftp_server import (
    HOSTILE_CONTENT,
    HOSTILE_NAMES,
    Disconnect,
    ProviderTree,
    Republication,
    SandboxServer,
    ServerThread,
    default_start,
)
from alirecon.sandbox.world import World, build_world

from .serve_cli import serving

PASSWORD = "correct horse battery staple"
MPP_DIR = "v1/settlements/clearing/A1234567890/20261105"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"), WorldSpec(days=7))


@pytest.fixture(scope="module")
def client_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture
def sandbox(world: World, client_key: asyncssh.SSHKey) -> Iterator[SandboxServer]:
    server = SandboxServer(ProviderTree.from_world_dir(world.root), SimClock(default_start(world.root)),
                           users={"alice": PASSWORD},
                           authorized_keys={"bob": [client_key.export_public_key().decode()]})
    with ServerThread(server):
        yield server


def target(world: World, prefix: str = f"{MPP_DIR}/transactionItems_") -> tuple[str, bytes, datetime]:
    """(remote path, bytes on disk, publication time) of the one world file whose path starts with ``prefix``."""
    (rel,) = [r for r in world.publish if r.startswith(prefix)]
    return "/" + rel, (world.provider / rel).read_bytes(), world.publish[rel]


@asynccontextmanager
async def client(server: SandboxServer, user: str = "alice", **kwargs: Any) -> AsyncIterator[asyncssh.SFTPClient]:
    if "client_keys" not in kwargs:
        kwargs.setdefault("password", PASSWORD)
    kwargs.setdefault("known_hosts", asyncssh.import_known_hosts(server.known_hosts_line() + "\n"))
    async with asyncssh.connect(server.host, server.port, username=user, **kwargs) as conn, \
            conn.start_sftp_client() as sftp:
        yield sftp


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def walk(sftp: asyncssh.SFTPClient, directory: str = "/") -> set[str]:
    found: set[str] = set()
    for name in await sftp.readdir(directory):
        if name.filename in (".", ".."):
            continue
        path = directory.rstrip("/") + "/" + name.filename
        found |= await walk(sftp, path) if name.attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY else {path}
    return found


# ---------------------------------------------------------------------------------------------
# Simulated clock


def test_clock_frozen_set_advance_and_aware_only() -> None:
    start = datetime(2026, 11, 5, 8, 0, tzinfo=UTC8)
    clock = SimClock(start)
    assert clock.now() == start and clock.now().tzinfo == UTC
    assert clock.advance(timedelta(hours=30)) == start + timedelta(hours=30) == clock.now()
    clock.set(datetime(2026, 1, 1, tzinfo=UTC))
    assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="aware"):
        clock.set(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="speed"):
        SimClock(start, speed=-1)


def test_clock_runs_at_speed_and_is_thread_safe() -> None:
    fast = SimClock(datetime(2026, 1, 1, tzinfo=UTC), speed=10_000)
    first = fast.now()
    threading.Event().wait(0.01)
    assert fast.now() - first >= timedelta(seconds=100)  # 10 ms real at 10,000x

    clock = SimClock(datetime(2026, 1, 1, tzinfo=UTC))
    threads = [threading.Thread(target=lambda: [clock.advance(timedelta(seconds=1)) for _ in range(2000)])
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=16_000)


# ---------------------------------------------------------------------------------------------
# What is there, and when


def expected_visible(world: World, now: datetime) -> set[str]:
    """From publish.json and the documented rules: production files, plus the Alipay+ sandbox twins."""
    publish = {k: datetime.fromisoformat(v) for k, v in json.loads((world.root / "publish.json").read_text()).items()}
    out = set()
    for rel, at in publish.items():
        if at <= now < at + timedelta(days=7):
            out.add("/" + rel)
        if rel.startswith(("v1/settlements/clearing/", "v1/settlements/settlement/")):
            twin_at = datetime.combine(at.astimezone(UTC8).date(), time(1), UTC8)
            if twin_at <= now < twin_at + timedelta(days=7):
                out.add("/sandbox/" + rel[len("v1/"):])
    return out


def test_listing_shows_exactly_the_published_unexpired_files(sandbox: SandboxServer, world: World) -> None:
    async def check() -> None:
        async with client(sandbox) as sftp:
            for now in (default_start(world.root), datetime(2026, 11, 4, 12, tzinfo=UTC),
                        datetime(2026, 11, 12, 0, 30, tzinfo=UTC)):
                sandbox.clock.set(now)
                expected = expected_visible(world, now)
                assert expected, now
                assert await walk(sftp) == expected == set(sandbox.visible_files())
                # some files of the world are hidden at each of these times (unpublished or expired)
                assert len(expected) < len(world.files) * 2

    run(check())


def test_file_appears_at_publication_and_vanishes_after_retention(sandbox: SandboxServer, world: World) -> None:
    path, data, at = target(world)
    directory = path.rsplit("/", 1)[0]

    async def check() -> None:
        async with client(sandbox) as sftp:
            sandbox.clock.set(at - timedelta(seconds=1))
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.listdir(directory)  # no visible file yet: no directory either
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.stat(path)
            sandbox.clock.set(at)
            assert path.rsplit("/", 1)[1] in await sftp.listdir(directory)
            attrs = await sftp.stat(path)
            assert (attrs.size, attrs.mtime) == (len(data), int(at.timestamp()))
            sandbox.clock.set(at + timedelta(days=7) - timedelta(seconds=1))
            async with sftp.open(path, "rb") as f:
                assert await f.read() == data
            sandbox.clock.set(at + timedelta(days=7))
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.stat(path)
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.open(path, "rb")

    run(check())


def test_alipayplus_sandbox_tree_publishes_the_same_bytes_hours_earlier(sandbox: SandboxServer, world: World) -> None:
    path, data, at = target(world)
    twin = path.replace("/v1/settlements/", "/sandbox/settlements/")

    async def check() -> None:
        async with client(sandbox) as sftp:
            sandbox.clock.set(datetime(2026, 11, 5, 1, 0, tzinfo=UTC8))  # 01:00 UTC+8 on the directory date
            assert await sftp.exists(twin) and not await sftp.exists(path)
            async with sftp.open(twin, "rb") as f:
                assert await f.read() == data
            sandbox.clock.set(at)
            assert await sftp.exists(path)

    run(check())
    antom = [p for p in sandbox.visible_files() if "/1022188" in p]
    assert antom and not [p for p in antom if p.startswith("/sandbox/")]  # Antom has no sandbox tree


def test_every_visible_file_reads_back_exactly(sandbox: SandboxServer, world: World, tmp_path: Path) -> None:
    async def check() -> int:
        async with client(sandbox) as sftp:
            paths = sorted(await walk(sftp))
            for i, path in enumerate(paths):
                await sftp.get(path, tmp_path / str(i))
            return len(paths)

    count = run(check())
    assert count >= 20
    for i, path in enumerate(sorted(sandbox.visible_files())):
        rel = path.removeprefix("/").replace("sandbox/settlements/", "v1/settlements/", 1)
        assert hashlib.sha256((tmp_path / str(i)).read_bytes()).digest() == \
            hashlib.sha256((world.provider / rel).read_bytes()).digest(), path
    assert sandbox.stats.bytes_served == sum((tmp_path / str(i)).stat().st_size for i in range(count))


def test_read_only_and_confined_to_the_virtual_tree(sandbox: SandboxServer, world: World, tmp_path: Path) -> None:
    path, data, _ = target(world)
    local = tmp_path / "upload.csv"
    local.write_bytes(b"x")

    async def check() -> None:
        async with client(sandbox) as sftp:
            attempts = [sftp.put(local, path), sftp.put(local, "/new.csv"), sftp.remove(path),
                        sftp.rename(path, path + ".old"), sftp.posix_rename(path, "/x"), sftp.mkdir("/v1/new"),
                        sftp.rmdir("/v1/settlements"), sftp.chmod(path, 0o777), sftp.symlink(path, "/link"),
                        sftp.open(path, "ab"), sftp.open(path, "r+b"), sftp.setstat(path, asyncssh.SFTPAttrs(mtime=0))]
            for attempt in attempts:
                with pytest.raises(asyncssh.SFTPPermissionDenied):
                    await attempt
            for escape in ("/../../etc/passwd", "/etc/passwd", "../publish.json", "/v1/../../truth.json"):
                with pytest.raises(asyncssh.SFTPNoSuchFile):
                    await sftp.open(escape, "rb")
            assert await sftp.realpath("/v1/../../..") == "/"
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.listdir("/etc")

    run(check())
    assert sandbox.stats.refused_writes == 12
    assert (world.provider / path[1:]).read_bytes() == data
    assert not (world.provider / "new.csv").exists()


# ---------------------------------------------------------------------------------------------
# Faults


async def read_until_dropped(server: SandboxServer, path: str, block: int) -> bytes:
    """Sequential reads (one request in flight), so every byte the server answered is in hand."""
    got = b""
    async with client(server) as sftp, sftp.open(path, "rb") as f:
        try:
            while chunk := await f.read(block):
                got += chunk
        except (asyncssh.Error, OSError):
            return got
    raise AssertionError("the transfer was not interrupted")


def test_disconnect_once_at_an_offset(sandbox: SandboxServer, world: World, tmp_path: Path) -> None:
    path, data, _ = target(world)
    assert len(data) > 1500
    sandbox.faults.disconnects.append(Disconnect(path, 1000))

    async def pipelined() -> None:
        async with asyncssh.connect(sandbox.host, sandbox.port, username="alice", password=PASSWORD,
                                    known_hosts=None) as conn:
            sftp = await conn.start_sftp_client()
            with pytest.raises((asyncssh.Error, OSError)):
                await sftp.get(path, tmp_path / "broken", block_size=300)
            await asyncio.wait_for(conn.wait_closed(), 5)  # the connection itself is gone
        async with client(sandbox) as sftp:  # once: the next attempt gets every byte
            await sftp.get(path, tmp_path / "whole", block_size=300)

    run(pipelined())
    broken = (tmp_path / "broken").read_bytes()
    assert len(broken) <= 1000 and broken == data[:len(broken)]  # what the client kept is its own business
    assert (tmp_path / "whole").read_bytes() == data
    assert sandbox.stats.bytes_by_path[path] == 1000 + len(data)  # nothing past the offset was ever served
    assert sandbox.stats.disconnects == 1 and sandbox.faults.disconnects[0].fired == 1

    sandbox.faults.disconnects.append(Disconnect(path, 900))
    assert run(read_until_dropped(sandbox, path, 300)) == data[:900]
    assert sandbox.stats.disconnects == 2
    sandbox.faults.disconnects.append(Disconnect(path, 777))  # inside a request: answered short, up to 777
    assert run(read_until_dropped(sandbox, path, 300)) == data[:600]  # asyncssh drops the short 177 bytes...
    assert sandbox.stats.bytes_by_path[path] == 1000 + len(data) + 900 + 777  # ...which the server did send


def test_disconnect_every_time_defeats_restart_but_not_resume(sandbox: SandboxServer, world: World) -> None:
    path, data, _ = target(world)
    sandbox.faults.disconnects.append(Disconnect("*/transactionItems_A1234567890_*", 700, every_time=True))

    async def restart() -> bytes:
        got = b""
        async with client(sandbox) as sftp, sftp.open(path, "rb", block_size=256) as f:
            while chunk := await f.read(256):
                got += chunk
        return got

    async def resume(offset: int) -> bytes:
        async with client(sandbox) as sftp, sftp.open(path, "rb") as f:
            await f.seek(offset)
            return bytes(await f.read())

    for _ in range(2):
        with pytest.raises((asyncssh.Error, OSError)):
            run(restart())
    assert sandbox.stats.disconnects == 2
    head = run(read_until_dropped(sandbox, path, 100))
    assert head == data[:700]
    assert head + run(resume(len(head))) == data
    assert sandbox.stats.disconnects == 3


def test_slow_reads_counted_by_the_server(sandbox: SandboxServer, world: World) -> None:
    path, data, _ = target(world)
    other, other_data, _ = target(world, f"{MPP_DIR}/feeItems_")
    sandbox.faults.slow_reads[path] = 0.02

    async def check() -> None:
        async with client(sandbox) as sftp:
            for p, expected in ((path, data), (other, other_data)):
                async with sftp.open(p, "rb", block_size=512) as f:
                    got = b""
                    while chunk := await f.read(512):
                        got += chunk
                assert got == expected

    run(check())
    requests = sandbox.stats.reads_by_path[path]
    assert requests >= -(-len(data) // 512)  # at least one request per 512 bytes (plus the reads that hit EOF)
    assert sandbox.stats.reads_by_path[other] >= 1
    assert sandbox.stats.read_requests == requests + sandbox.stats.reads_by_path[other]
    assert sandbox.stats.delayed_reads == requests  # every request on the slow file, none on the other
    assert sandbox.stats.delay_seconds == pytest.approx(0.02 * requests)


def test_truncated_file(sandbox: SandboxServer, world: World) -> None:
    path, data, _ = target(world)
    sandbox.faults.truncate[path] = -40

    async def check() -> tuple[int, bytes]:
        async with client(sandbox) as sftp:
            size = (await sftp.stat(path)).size
            async with sftp.open(path, "rb") as f:
                return size, await f.read()

    size, got = run(check())
    assert size == len(got) == len(data) - 40
    assert got == data[:-40]
    sandbox.faults.truncate.clear()
    sandbox.faults.truncate["*/summary_*"] = 10
    assert all(v.size == 10 for p, v in sandbox.visible_files().items() if "/summary_" in p)


def test_late_publication(sandbox: SandboxServer, world: World) -> None:
    path, _, at = target(world)
    sibling, _, _ = target(world, f"{MPP_DIR}/feeItems_")
    sandbox.faults.late[path] = timedelta(hours=5)

    async def visible_at(now: datetime) -> tuple[bool, bool]:
        sandbox.clock.set(now)
        async with client(sandbox) as sftp:
            return await sftp.exists(path), await sftp.exists(sibling)

    assert run(visible_at(at)) == (False, True)
    assert run(visible_at(at + timedelta(hours=5) - timedelta(seconds=1))) == (False, True)
    assert run(visible_at(at + timedelta(hours=5))) == (True, True)
    # its retention starts from the late publication
    assert run(visible_at(at + timedelta(days=7, hours=1))) == (True, False)


def test_republished_with_new_bytes(sandbox: SandboxServer, world: World) -> None:
    path, data, at = target(world)
    new = data.replace(b"EUR", b"USD")
    again = at + timedelta(days=1, hours=3)
    sandbox.faults.republish.append(Republication(path, again, new))

    async def check() -> None:
        async with client(sandbox) as sftp:
            sandbox.clock.set(again - timedelta(seconds=1))
            old_handle = await sftp.open(path, "rb")
            assert (await sftp.stat(path)).size == len(data)
            sandbox.clock.set(again)
            attrs = await sftp.stat(path)
            assert (attrs.size, attrs.mtime) == (len(new), int(again.timestamp()))
            async with sftp.open(path, "rb") as f:
                assert await f.read() == new
            assert await old_handle.read() == data  # a handle keeps the version it opened
            await old_handle.close()
            sandbox.clock.set(again + timedelta(days=6))  # past the first version's retention
            async with sftp.open(path, "rb") as f:
                assert await f.read() == new
            sandbox.clock.set(again + timedelta(days=7))
            assert not await sftp.exists(path)

    assert new != data
    run(check())


def test_hostile_names_in_a_listing(sandbox: SandboxServer, world: World) -> None:
    directory = "/" + MPP_DIR
    sandbox.faults.hostile_dirs.append(directory)

    async def check() -> tuple[list[str], list[str], bytes]:
        async with client(sandbox) as sftp:
            names = await sftp.listdir(directory)
            plain = await sftp.listdir("/" + MPP_DIR.replace("20261105", "20261106"))
            async with sftp.open(directory + "/../x", "rb") as f:
                content = await f.read()
            return names, plain, content

    names, plain, content = run(check())
    for hostile in ("../x", "/etc/passwd", "..", *[n for n in HOSTILE_NAMES if "\x00" in n]):
        assert hostile in names
    assert any("\x00" in n for n in names)
    assert names.count("..") == 2  # the real parent entry and the hostile regular file
    assert len(names) == 2 + 3 + len(HOSTILE_NAMES)
    assert not [n for n in plain if n in ("../x", "/etc/passwd") or "\x00" in n]
    assert content == HOSTILE_CONTENT
    assert sandbox.stats.hostile_listings == 1 and sandbox.stats.hostile_opens == 1


def test_faults_switch_while_connected(sandbox: SandboxServer, world: World) -> None:
    path, data, _ = target(world)

    async def check() -> None:
        async with client(sandbox) as sftp:
            async with sftp.open(path, "rb") as f:
                assert await f.read() == data
            sandbox.faults.truncate[path] = 5
            async with sftp.open(path, "rb") as f:
                assert await f.read() == data[:5]
            sandbox.faults.truncate.clear()
            async with sftp.open(path, "rb") as f:
                assert await f.read() == data

    run(check())


# ---------------------------------------------------------------------------------------------
# Authentication and host key


def test_password_and_key_authentication(sandbox: SandboxServer, client_key: asyncssh.SSHKey) -> None:
    async def listing(**kwargs: Any) -> list[str]:
        async with client(sandbox, **kwargs) as sftp:
            return sorted(await sftp.listdir("/"))

    assert run(listing()) == [".", "..", "sandbox", "v1"]
    assert run(listing(user="bob", client_keys=[client_key])) == [".", "..", "sandbox", "v1"]
    with pytest.raises(asyncssh.PermissionDenied):
        run(listing(password="wrong"))
    with pytest.raises(asyncssh.PermissionDenied):
        run(listing(user="bob", client_keys=[asyncssh.generate_private_key("ssh-ed25519")]))
    with pytest.raises(asyncssh.PermissionDenied):
        run(listing(user="bob", password=PASSWORD))  # bob has a key, no password
    assert sandbox.stats.logins == 2
    assert sandbox.stats.auth_failures >= 2


def test_host_key_line_and_fingerprint(sandbox: SandboxServer, tmp_path: Path) -> None:
    kind, blob = sandbox.host_key_line.split()
    assert kind == "ssh-ed25519"
    digest = base64.b64encode(hashlib.sha256(base64.b64decode(blob)).digest()).decode().rstrip("=")
    assert sandbox.fingerprint == f"SHA256:{digest}"
    line = sandbox.known_hosts_line()
    assert line == f"[127.0.0.1]:{sandbox.port} {kind} {blob}"
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(line + "\n")

    async def connect(known: Any) -> list[str]:
        async with client(sandbox, known_hosts=known) as sftp:
            return await sftp.listdir("/")

    assert "v1" in run(connect(str(known_hosts)))
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
    known_hosts.write_text(f"[127.0.0.1]:{sandbox.port} {other[0]} {other[1]}\n")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        run(connect(str(known_hosts)))


def test_async_start_and_close(world: World) -> None:
    async def check() -> None:
        server = SandboxServer(ProviderTree.from_world_dir(world.root), SimClock(default_start(world.root)),
                               users={"alice": PASSWORD})
        port = await server.start()
        assert port > 0 and server.port == port
        conn = await asyncssh.connect("127.0.0.1", port, username="alice", password=PASSWORD, known_hosts=None)
        sftp = await conn.start_sftp_client()
        assert "v1" in await sftp.listdir("/")
        await server.close()
        await asyncio.wait_for(conn.wait_closed(), 5)  # open connections are closed too
        with pytest.raises(OSError):
            await asyncssh.connect("127.0.0.1", port, username="alice", password=PASSWORD, known_hosts=None)

    run(check())


def test_server_needs_credentials_and_safe_tree(world: World, tmp_path: Path) -> None:
    tree = ProviderTree.from_world_dir(world.root)
    with pytest.raises(ValueError, match="users or authorized keys"):
        SandboxServer(tree, SimClock())
    with pytest.raises(ValueError, match="escapes"):
        ProviderTree.from_publish(tmp_path, {"../outside.csv": datetime(2026, 1, 1, tzinfo=UTC)})


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_serve_prints_working_connection_details_and_stops_on_ctrl_c(world: World) -> None:
    with serving(world.root, "2026-11-06T09:30:00+08:00") as details:
        assert details["simulated_now"] == "2026-11-06T01:30:00+00:00"
        assert details["known_hosts"].startswith(f"[127.0.0.1]:{details['port']} ssh-ed25519 ")
        password_file = Path(details["password_from"])
        assert "password" not in details and password_file.stat().st_mode & 0o777 == 0o600
        password = password_file.read_text(encoding="utf-8").strip()
        assert password not in json.dumps(details)

        async def listing() -> set[str]:
            known = asyncssh.import_known_hosts(details["known_hosts"] + "\n")
            async with asyncssh.connect(details["host"], details["port"], username=details["user"],
                                        password=password, known_hosts=known) as conn, \
                    conn.start_sftp_client() as sftp:
                return await walk(sftp)

        now = datetime.fromisoformat(details["simulated_now"])
        assert run(listing()) == expected_visible(world, now)


def test_cli_serve_rejects_a_start_without_offset(world: World) -> None:
    from typer.testing import CliRunner

    from alirecon.cli import app

    result = CliRunner().invoke(app, ["sandbox", "serve", "--dir", str(world.root), "--start", "2026-11-06T09:30"])
    assert result.exit_code == 2
    assert "aware" in result.output
