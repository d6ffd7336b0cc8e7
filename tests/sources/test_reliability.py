"""Reliability properties of fetching (issue 3, item 7): many downloads under random disconnects, and a fetch
killed with SIGKILL at random points, then re-run."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alirecon.archive import Archive
from alirecon.fetch import fetch_account
from alirecon.sandbox import sftp_server as sandbox
from alirecon.sandbox.world import ANTOM_MERCHANT, World
from alirecon.sources import sftp
from alirecon.warehouse import Workspace

from .conftest import ANTOM, archive_is_clean, serve, trust, workspace_config

NOW = datetime(2026, 11, 5, 1, tzinfo=UTC)
DAY_DIR = f"/v1/settlements/{ANTOM_MERCHANT.account_id}/20261104"


def random_tree(tmp: Path, rng: random.Random, count: int) -> tuple[sandbox.ProviderTree, dict[str, bytes]]:
    tmp.mkdir(parents=True, exist_ok=True)
    files, content = [], {}
    for i in range(count):
        data = rng.randbytes(rng.randint(1, 80_000))
        local = tmp / f"f{i:03d}.bin"
        local.write_bytes(data)
        path = f"{DAY_DIR}/f{i:03d}.bin"
        files.append(sandbox.RemoteFile(path, local, NOW - timedelta(hours=1), len(data)))
        content[path] = data
    return sandbox.ProviderTree(files), content


class ArchiveWatcher(threading.Thread):
    """Reads the archive the way any reader would, over and over, while a fetch writes to it: every object
    it can see must already hold exactly the bytes its name promises."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.archive = Archive(root)
        self.stop = threading.Event()
        self.checked = 0
        self.bad: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            for sha in list(self.archive):
                try:
                    with self.archive.open(sha) as f:
                        ok = hashlib.sha256(f.read()).hexdigest() == sha
                except FileNotFoundError:  # pragma: no cover - objects are never removed
                    ok = False
                self.checked += 1
                if not ok:
                    self.bad.append(sha)
            time.sleep(0.005)


# every file received in memory (the default for files this small), or every file through a part file
RECEIVE_PATHS = pytest.mark.parametrize("in_memory_max", [sftp.IN_MEMORY_MAX, 0], ids=["memory", "part_file"])


@RECEIVE_PATHS
def test_100_downloads_under_random_disconnects(tmp_path: Path, password: str, in_memory_max: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sftp, "IN_MEMORY_MAX", in_memory_max)
    rng = random.Random(20261105)
    tree, content = random_tree(tmp_path / "remote", rng, 100)
    paths = sorted(content)
    for s in serve(tree, NOW):
        rules = [sandbox.Disconnect(p, rng.randint(1, len(content[p])), every_time=False)
                 for p in rng.sample(paths, 30) if len(content[p]) > 1]
        rules += [sandbox.Disconnect(p, rng.randint(1, len(content[p])), every_time=True)
                  for p in rng.sample(paths, 3) if len(content[p]) > 1]
        s.faults.disconnects = rules
        cfg = workspace_config(s.port, retries=25, block_size=8192, max_requests=8, max_parallel=4)
        with Workspace.init(tmp_path / "ws", cfg) as ws:
            trust(ws.root, s)
            watcher = ArchiveWatcher(ws.archive.root)
            watcher.start()
            try:
                summary = fetch_account(ws, ANTOM, now=NOW, ingest=False)
            finally:
                watcher.stop.set()
                watcher.join()
            assert s.stats.disconnects >= 25  # the faults really fired (two rules on one file may fire once)
            assert watcher.checked > 0 and watcher.bad == []
            failed = [(f.path, f.error) for f in summary.files if f.status != "new"]
            assert failed == [] and summary.new == 100
            rows = ws.remote_files(ANTOM).to_pylist()
            assert {r["remote_path"]: r["sha256"] for r in rows} == \
                {p: hashlib.sha256(d).hexdigest() for p, d in content.items()}
            assert all(r["state"] == "complete" and r["version"] == 1 for r in rows)
            assert archive_is_clean(ws) == [] and sorted(ws.archive) == sorted(set(r["sha256"] for r in rows))
            assert list((ws.archive.root / "tmp").glob("*")) == []  # no part file left behind


KILLABLE = """
import sys
from datetime import datetime
from pathlib import Path
from alirecon.fetch import fetch_account
from alirecon.sources import sftp
from alirecon.warehouse import Workspace
sftp.IN_MEMORY_MAX = int(sys.argv[4])
with Workspace.open(Path(sys.argv[1])) as ws:
    print("fetching", flush=True)
    summary = fetch_account(ws, sys.argv[2], now=datetime.fromisoformat(sys.argv[3]))
print("finished", summary.new, flush=True)
"""


@RECEIVE_PATHS
def test_a_fetch_killed_at_random_points_completes_on_rerun(tmp_path: Path, password: str, small_world: World,
                                                           in_memory_max: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sftp, "IN_MEMORY_MAX", in_memory_max)
    rng = random.Random(7)
    tree, content = random_tree(tmp_path / "remote", rng, 20)
    files = list(tree.files.values())
    # and real reports, so ingest runs (and can be killed) too
    for rel in small_world.files:
        if rel.startswith(f"v1/settlements/{ANTOM_MERCHANT.account_id}/2026110") and "/transactionItems_" in rel:
            local = small_world.provider / rel
            path = f"{DAY_DIR}/{Path(rel).name}"
            if path not in content:
                content[path] = local.read_bytes()
                files.append(sandbox.RemoteFile(path, local, NOW - timedelta(hours=1), len(content[path])))
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    for s in serve(sandbox.ProviderTree(files), NOW):
        s.faults.slow_reads = {"*": 0.01}
        root = tmp_path / "ws"
        Workspace.init(root, workspace_config(s.port, block_size=4096, max_requests=4, max_parallel=3)).close()
        trust(root, s)
        kills = 0
        for _ in range(2):
            command = [sys.executable, str(script), str(root), ANTOM, NOW.isoformat(), str(in_memory_max)]
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert proc.stdout is not None and proc.stdout.readline() == b"fetching\n"  # imports done
            time.sleep(rng.uniform(0.1, 1.2))  # a full fetch takes ~3 s here: killed somewhere in it
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            proc.communicate(timeout=60)
        assert kills >= 1  # the fetch really was interrupted
        s.faults.slow_reads = {}
        with Workspace.open(root) as ws:
            settled = [r for r in ws.remote_files(ANTOM).to_pylist() if r["state"] == "complete" and r["ingested_at"]]
            assert len(settled) < len(content)  # ...with work left to do
            final = fetch_account(ws, ANTOM, now=NOW)
            assert final.failed == 0
            rows = ws.remote_files(ANTOM).to_pylist()
            # no missing file, no duplicate: one complete version per path, with the server's bytes
            assert sorted(r["remote_path"] for r in rows) == sorted(content)
            assert {r["remote_path"]: r["sha256"] for r in rows} == \
                {p: hashlib.sha256(d).hexdigest() for p, d in content.items()}
            assert all(r["state"] == "complete" and r["version"] == 1 and r["ingested_at"] for r in rows)
            assert ws.remote_to_ingest() == []
            assert archive_is_clean(ws) == []
            assert ws.con.execute("SELECT count(*) FROM (SELECT source_path FROM deliveries GROUP BY 1 "
                                  "HAVING count(*) > 1)").fetchall()[0][0] == 0
            known = {r[0] for r in ws.con.execute("SELECT sha256 FROM files").fetchall()}
            assert {r["sha256"] for r in rows} <= known
            parsed = [r for r in rows if str(r["name"]).endswith(".csv")]
            assert parsed and all(r["parse_status"] == "parsed" for r in parsed)
