"""The disconnect fault with several transfers in flight on one connection.

The race (reported by the client's author): the answer that reaches the cut-off offset was queued in the
SSH channel behind other files' answers (the client's receive window was full), the TCP connection was
aborted before it left, and the client never saw the bytes up to the offset. With ``every_time=True`` the
fault then fired again when the client resumed from what it really had, for ever. The server must drop
the connection only after that answer has left both the channel's and the transport's buffers.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest

from alirecon.sandbox.clock import SimClock
from alirecon.sandbox.sftp_server import Disconnect, ProviderTree, RemoteFile, SandboxServer, ServerThread

NOW = datetime(2026, 11, 5, 1, tzinfo=UTC)
PASSWORD = "race-test-password"
FILES = 4
SIZE = 768 * 1024
BLOCK = 32 * 1024
WINDOW = 64 * 1024  # the client's receive window: far less than the answers in flight, so they queue


@pytest.fixture
def tree(tmp_path: Path) -> tuple[ProviderTree, dict[str, bytes]]:
    rng = random.Random(3)
    files, content = [], {}
    for i in range(FILES):
        data = rng.randbytes(SIZE)
        local = tmp_path / f"f{i}.bin"
        local.write_bytes(data)
        path = f"/v1/settlements/race/20261104/f{i}.bin"
        files.append(RemoteFile(path, local, NOW - timedelta(hours=1), SIZE))
        content[path] = data
    return ProviderTree(files), content


async def read_all_at_once(server: SandboxServer, paths: list[str], starts: dict[str, int]) -> dict[str, bytes]:
    """Every block of every file requested at once on one connection; each file's contiguous prefix (from
    its start offset) that came back before the connection broke."""
    async with asyncssh.connect(server.host, server.port, username="u", password=PASSWORD, window=WINDOW,
                                known_hosts=asyncssh.import_known_hosts(server.known_hosts_line() + "\n")) as conn:
        sftp = await conn.start_sftp_client()
        handles = [await sftp.open(p, "rb", block_size=0) for p in paths]
        requests = {p: [(at, asyncio.ensure_future(h.read(BLOCK, at))) for at in range(starts[p], SIZE, BLOCK)]
                    for p, h in zip(paths, handles, strict=True)}
        await asyncio.gather(*(t for reqs in requests.values() for _, t in reqs), return_exceptions=True)
    got = {}
    for path, reqs in requests.items():
        prefix = b""
        for at, task in reqs:
            data = task.result() if not task.exception() else b""
            if at != starts[path] + len(prefix) or not data:
                break
            prefix += data
        got[path] = prefix
    return got


@pytest.mark.parametrize("cut", [300_000, 300_000 + BLOCK - 300_000 % BLOCK])  # inside a block, on a boundary
def test_the_answer_reaching_the_offset_arrives_before_the_drop(tree: tuple[ProviderTree, dict[str, bytes]],
                                                                 cut: int) -> None:
    provider, content = tree
    paths = sorted(content)
    target = paths[2]
    server = SandboxServer(provider, SimClock(NOW), users={"u": PASSWORD})
    server.faults.disconnects.append(Disconnect(target, cut, every_time=True))
    with ServerThread(server):
        first = asyncio.run(read_all_at_once(server, paths, dict.fromkeys(paths, 0)))
        assert server.stats.disconnects == 1
        # the backlog this test needs really was there: other answers were still owed when the fault fired
        assert sum(len(first[p]) for p in paths) < FILES * SIZE
        assert first[target] == content[target][:cut]  # every byte up to the offset, nothing after
        for path in paths:
            assert content[path].startswith(first[path])
        # resuming each file where its bytes stopped gets the rest; the fault never fires a second time
        resumed = asyncio.run(read_all_at_once(server, paths, {p: len(first[p]) for p in paths}))
    assert {p: first[p] + resumed[p] for p in paths} == content
    assert server.stats.disconnects == 1 and server.faults.disconnects[0].fired == 1
